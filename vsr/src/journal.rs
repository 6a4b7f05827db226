//! Prepare journal: the write-ahead log of one VSR group.
//!
//! Owns the on-disk slot layout and crash recovery. Knows nothing of the
//! network, of shards or of the replica's protocol state; all I/O goes through
//! `Io`, so the simulator can crash it between any two storage calls.
//!
//! Layout of `journal-<namespace>.wal` (format version 5):
//! - bytes `0..FILE_HEADER_SIZE_BYTES`: the file header (magic, format
//!   version, cluster, namespace, slot count, message size, `snapshot_op` and
//!   the checksum of the prepare at `snapshot_op`, then its own checksum);
//! - then the header ring: one 256-byte copy of the header of the prepare in
//!   each slot, slot `s` at `FILE_HEADER_SIZE_BYTES + 256 * s`, the ring
//!   padded to a multiple of `HEADERS_ZONE_ALIGN_BYTES`;
//! - then `slot_count` fixed slots; op `n` lives in slot `n % slot_count`, as
//!   `[carried-copies region][256-byte header][body]`, padded to the slot
//!   size (`message_size_max` rounded up to whole pages); the region is one
//!   page of `COPIES_CARRIED_MAX` 256-byte entries (see "Carried copies"),
//!   so every region and every slot starts on a page (see "Whole pages");
//! - then, in the last `FILE_HEADER_SIZE_BYTES`, a second copy of the file
//!   header. The two are as far apart as the file allows: a misdirected
//!   write (the device puts a write at a wrong address of the same file)
//!   lands on at most one of them unless it is as long as the file. `open`
//!   reads the first copy and falls back to the second when the first does
//!   not decode; a writable open rewrites a damaged copy from the good one.
//!   Both are written together, before the fsync that makes a compacted
//!   file the journal, and read back before it may become one.
//!
//! Version 1 had no header ring (slots right after the file header);
//! version 2 had one copy of the file header; version 3 had no
//! carried-copies regions; version 4 rounded slots to sectors, not pages.
//! An older file is refused at open
//! (`UnsupportedVersion`, which tells the operator what to do).
//!
//! Next to it lives `journal-<namespace>.wal.tmp`, the spare: compaction's
//! scratch file, never read by recovery (see "What it costs").
//!
//! ## Torn or faulty: the header ring
//!
//! A prepare whose slot reads back invalid was either never fully written
//! (a crash tore it: nothing was promised for it, truncate it) or written,
//! made durable, perhaps acknowledged, and then damaged (rot, a misdirected
//! write, a read error: it is *faulty*, the replica must repair it from peers
//! and must not vote as if it held it). The slot alone cannot tell the two
//! apart, so each prepare's header is written a second time into the ring,
//! and only after the prepare itself is durable: `sync` fsyncs the prepares,
//! then writes the ring copies of the ops written since the last sync, then
//! fsyncs again. A crash at any point leaves one of:
//!
//! | prepare slot | ring copy | meaning | recovery |
//! |---|---|---|---|
//! | lost or torn | older op or empty | crash before the first fsync | torn: truncate (above the head) |
//! | valid | older op or empty | crash between the fsyncs | valid: keep it, rewrite the copy |
//! | valid | same header | fully written | valid |
//! | invalid, empty, or an older op | names this op | written, then damaged | faulty: repair from peers |
//! | valid | same op, other checksum | the prepare write went elsewhere | faulty |
//! | invalid | invalid | two faults on one slot | faulty (counts toward the head) |
//! | neither zeros nor its own header (filler, another slot's header, payload, rot); or a body sector holding filler or a header | none | damage: a misdirected write or rot | faulty (counts toward the head) |
//! | empty | none, but a place of it damaged | written elsewhere, copy lost | faulty below the head, else empty |
//!
//! Because `sync` returns only after the copy is durable, and the replica
//! acknowledges a prepare only after `sync`, an acknowledged prepare always
//! has its ring copy: damage to it is faulty, never torn. The copy of a
//! header fits in one sector, so it is itself never torn. `truncate_after`
//! clears the ring copies first (fsync), then the slots (fsync), so a crash
//! between the two cannot make a dropped prepare look faulty.
//!
//! Why a prepare and its own copy never share an fsync: the device writes
//! back a batch's sectors in any order, so a power loss during that fsync
//! can keep the copy and lose or tear the prepare. Recovery would then read
//! "invalid slot, copy names it": faulty, though it was never acknowledged.
//! That is not unsafe by itself (the replica repairs and will not nack it),
//! but it is exactly the torn-versus-rot distinction the ring exists for
//! lost for every crash during a flush: each torn tail would restart its
//! replica `Recovering`, waiting on a body that only it may ever have had,
//! and never nacking it (with one of three replicas down, the view change
//! could not truncate it). Group commit keeps the distinction at the cost
//! of latency, not throughput: `flush` writes the copies of the previous
//! batch with the current batch's prepares, one fsync per batch while
//! batches keep coming; a lone batch waits for two.
//!
//! A copy that reads back invalid (not empty, not a header of its slot) was
//! damaged, never torn, and with it went the evidence of what the slot held.
//! If the prepare is invalid too, the slot is `Unknown`: it may have held
//! an acknowledged prepare (rot of the prepare while the replica ran, then
//! rot of its copy while it was down: disk-rot seed 38131 lost op 1 that
//! way when such a slot was truncated as torn), so it is faulty and counts
//! toward the head, like a faulty slot. The op it is charged to is the one
//! the slot holds in the live window; when the damage was really to a slot
//! of an older, checkpointed op, the price is a replica that restarts
//! `Recovering` and fills the gap from peers, never an erased promise.
//!
//! ## Carried copies
//!
//! `flush` writing the ring copies of the previous batch costs a second
//! write to another place of the file under each fsync, and on a real disk
//! that is most of the gap to a plain pwrite+fdatasync loop at small
//! batches (issue 10: 0.77-0.89 of it). So the copies usually travel with
//! the next batch instead: the first prepare write of a batch also covers
//! the page before its slot's header, the carried-copies region, where
//! entry `j` holds the copy of the op `j + 1` before it. The copies the
//! previous flush made ready are the ops just before the batch, so one
//! contiguous write carries them with the first prepare, and the fsync has
//! nothing else to write. Each op's copy still has a fixed set of places
//! (the ring and one entry in each of the `copies_carried_max` regions
//! after its slot: `JournalConfig::header_copy_offsets`), so recovery
//! still tells "no copy" from "a copy that rotted".
//!
//! Every rule of the ring holds for a carried copy: it is written only
//! after its prepare's fsync succeeded (only `copies_ready` ops are
//! carried), never in the fsync of its own prepare, and is acknowledged
//! only after the fsync that makes it durable (`flush` reports it then).
//! A copy that does not fit (more ready copies than the region holds, a
//! batch that does not start just after them) goes to the ring as before.
//! Two rules keep a carried copy unambiguous:
//! - A write carries copies only when its first op is above
//!   `file_op_written_max`: no earlier write of this file filled that
//!   region, so whatever else it holds names no live op, and the entries
//!   it does not carry may be written as filler (below).
//! - Only the copy of a fresh op (written above `file_op_written_max`, so
//!   no copy of it is anywhere) is carried. A rewritten op's copy goes to
//!   the ring, and recovery trusts a ring copy that names a live op over
//!   any carried one: the ring is never older.
//!
//! Recovery reads the ring and the regions: a slot's copy is its ring copy
//! when that names a live op, else a carried one; it is `Unknown` (both the
//! slot and its evidence damaged) when no copy names it and the ring copy
//! or any of its carried entries is invalid; carried copies that name the
//! same op with different checksums read as faulty. `unvouch_copies`
//! poisons carried copies as it does ring copies, `truncate_after` clears
//! a dropped op's carried entries with its ring copy, and `drain` clears
//! the spare's regions that may name an op of the new window. Writable
//! recovery writes every valid prepare's copy to the ring, so after a
//! restart the ring names them all again.
//!
//! The price: a region of `COPIES_REGION_BYTES` (4 KiB) before each slot,
//! so two prepares are never adjacent. A batch of fresh ops (above
//! `file_op_written_max`) whose prepares fill their slots is still one
//! write: it covers the regions between its slots with filler, which by the
//! first rule above names no live op (the region of a fresh op's slot was
//! last filled, if ever, by the write of an op at least `slot_count`
//! before it, whose entries name ops below the window). Any other prepare
//! (a rewrite, one after a short prepare, one where the ring wraps) is its
//! own write, as in a plain loop of one pwrite per entry.
//!
//! ## Filler, not zeros
//!
//! A misdirected write must leave damage, never a slot that reads "never
//! written". Zeros would: the entries a carrier does not carry and the
//! regions inside a joined run are most of its sectors, and a slot header
//! that reads all zeros is empty. Disk-rot seed 6214 lost an acknowledged
//! op so: the write of ops 8-9, which carried op 7's only copy, landed over
//! op 7's slot and put zeros on its header; recovery found no prepare and
//! no copy of op 7 and called it a repair gap, which the replica could
//! nack. So those entries are written as filler (`FILLER_BYTE`): a copy
//! place holding filler is empty, but a slot header holding it does not
//! decode. A torn write keeps or loses whole sectors of its own slot, so
//! a slot header holds zeros or a header of that slot, never anything
//! else (filler, another slot's header, payload, a rotten header), and a
//! body sector never holds filler or a header (a body sector holds a body
//! or what was there before: an older body or zeros): only damage does,
//! and a misdirected write may have carried the only copy of the op it
//! destroyed (disk-rot seed 40812: op 17's write, carrying op 16's copy,
//! landed in op 16's body, and op 16 was the head; seed 61823: op 25's
//! write, carrying op 24's copy, started six sectors before op 24's
//! header and put op 25's payload on it). Such a slot reads `Unknown` (faulty, part
//! of the head) when nothing names its op, above the head too: with the
//! crash right after the carrier's fsync, nothing above op 7 names
//! anything, and a torn tail there would be cut off. Zeros written on
//! purpose (a torn slot cleared, a truncation, a compaction's sector over
//! a stale slot) stay zeros: those mean "nothing here".
//!
//! The same holds for a slot that reads empty while one of the places
//! its copy may be in is damaged: a prepare write that went elsewhere
//! leaves the slot as it was, so below the head it is faulty too (disk-rot
//! seed 13111: op 18's write went far away, then a read error took the
//! region that carried its copy).
//!
//! A carrier that lands on its own op with only payload over the op's
//! body and not its header cannot be: every journal write that carries a
//! copy starts with a header, filler or a copy, so a write that starts before the op's
//! header and reaches its body covers the header sector, and one that
//! starts inside the body puts its first sector there.
//!
//! Not closed: a prepare write that went elsewhere, whose copy place is
//! then damaged, with nothing above it named (two faults on one op).
//! Closing it needs a second, independent copy of each op's header before
//! its acknowledgement: a second write per fsync, which is what carried
//! copies removed.
//!
//! ## An unknown slot beyond a gap
//!
//! Counting every unknown slot toward the head has a price: a misdirected
//! write that lands far above the head makes the head uncertain, and the
//! replica waits `Recovering` instead of voting (disk-rot seed 115705: two
//! of three replicas parked so, and no view could form). Most such slots
//! cannot hide an acknowledged prepare. Above the log a view change
//! installed (the superblock's view headers), an op X is acknowledged only
//! with every op below it down to the commit point: a backup's
//! `send_prepare_ok` asks for that prefix, a primary prepares new ops in
//! order, and the node sends nothing before the journal writes issued ahead
//! of it are durable with their copies. So each of those slots now reads
//! named (valid or faulty), unknown, or empty with a damaged copy place; an
//! empty or torn one needs two faults on that one op (its slot zeroed or
//! rotted and its copy erased) on top of the fault on X. Below the view
//! headers' top the rule does not hold: a new primary counts its own copy
//! of an op it holds while it still repairs the body of an op below it.
//!
//! So `open_above` (given the highest op the superblock names, or the
//! durable checkpoint's anchor when that is higher: every op under it is
//! covered, disk-rot-sharded seed 4747) cuts off as
//! torn an unknown slot above a gap: a slot, over both that op and the
//! highest op a header names, that reads empty or torn. A run of unknown
//! slots right above the named head is kept (disk-rot seeds 40812, 61823).
//! `open`, which knows no superblock, keeps every unknown slot.
//!
//! ## A cut flush
//!
//! A flush's prepares reach the device in any order when the power goes
//! during its fsync, so a later op may survive a hole below it (swarm seed
//! 117597: fresh ops 16 and 17 in one flush, op 17 kept, op 16 torn). The
//! survivor is valid with no copy naming it ("crash between the fsyncs"),
//! the head, and the hole below it read as an op to repair: a lone replica
//! waited `Recovering` for a peer that does not exist. Above the
//! superblock's bound the prefix rule of the previous section settles it:
//! had any op of that tail been acknowledged, the hole's op would have
//! been durable with its copy, and a copy leaves only by damage (which
//! reads as faulty, unknown, or empty with a damaged copy place) or by the
//! poisoning before a rewrite (which above the bound only a repair of a
//! faulty op does: a second fault). So `open_above` cuts off as torn the
//! whole tail from the lowest hole above that bound when nothing from it
//! up is damaged and no copy names any of its prepares. Positive evidence
//! that the flush was cut (which write each prepare rode in) is not needed:
//! the absence of every copy of the tail, with nothing damaged, is the
//! evidence, and one copy anywhere in it keeps it all.
//!
//! ## Whole pages
//!
//! Linux writes a file through its page cache, 4 KiB at a time: a write
//! that covers a page only in part makes the kernel read that page first,
//! and when a latent sector error makes the page unreadable, the write
//! fails with EIO, at every try, while a write of the whole page needs no
//! read and lets the drive remap the sector. A journal that writes 256-byte
//! ring copies, one-sector clears and sector-rounded prepares into such a
//! page can never finish an open again: disk-rot-pages seeds (session 21)
//! stopped at "write header copies" (the ring copies of the valid ops),
//! "clear torn slot", and in a restart loop at every repair of a prepare
//! whose slot page held the bad sector. So, from format 5:
//! - a slot is whole pages and starts on one, with its region (one page)
//!   before it; a prepare's write covers its header and body padded to the
//!   end of its last page (zeros to the end of the last body sector, then
//!   `PADDING_BYTE`, which no recovery rule reads as "never written");
//!   the first write of a batch covers its whole region;
//! - clearing a slot (a torn one at open, a truncation, a compaction's
//!   stale or faulty slot) writes its whole first page;
//! - only copy places (ring entries, carried entries) are written in part,
//!   through `write_pages`: when such a write fails with EIO and the rest
//!   of a page it touches cannot be read, it becomes a write of whole
//!   pages, the rest as read, each unreadable copy place of a durable op
//!   holding that op's header again (from the index: the copy its
//!   acknowledgement rests on), any other unreadable byte poison (a
//!   damaged copy place, as it read before). The hot path never reads.
//!
//! A misdirected write is larger now (a carrier is two pages at least),
//! so it damages more places when it lands; it never leaves a zero
//! sector a prepare write did not mean (padding is not zeros).
//!
//! ## Recovery never trusts the page cache
//!
//! After a process crash (not a power loss) the kernel still holds written
//! but unsynced pages, and a read returns them as if they were durable.
//! `open` therefore fdatasyncs the journal file (and its directory) before
//! it reads a byte: whatever recovery then sees is durable, so the replica
//! never vouches for a prepare a later power loss would take back. We chose
//! this over O_DIRECT: one fdatasync at open costs nothing in steady state,
//! and keeps the `Io` trait free of alignment rules for every buffer.
//! The fsync cannot settle pages a failed fsync marked clean (Linux keeps
//! them readable, never writes them). Among them, the prepares are
//! self-checking: those whose ring copy does not name them, or was
//! poisoned before their rewrite, open rewrites (see "What it costs"), so
//! a valid prepare the cache still holds becomes durable rather than lost.
//! The rest is not: a slot a truncation zeroed reads empty while the device
//! still holds the dropped prepare, and a replica that acted on its absence
//! (it votes, it tells a view change its log ends below it) got it back at
//! the next power loss. So a writable open recovers twice: once on what
//! reads see (settling the prepares as above, with every ring copy), then,
//! after `IoFile::evict_clean_pages` (`POSIX_FADV_DONTNEED`) dropped the
//! clean pages, on what the device holds, which is the recovery it reports
//! (the simulator's `check_page_cache_settled` holds every group's open to
//! it: before the second pass it failed 69 of the first 300 fsync-steps
//! seeds). Linux may keep a page it cannot drop (mapped, locked); the first
//! pass already made every prepare durable, so that costs only the rule for
//! zeroed slots. An O_DIRECT read at open would need neither pass; it needs
//! an aligned read path in `Io` and the simulator.
//! Only a writable open syncs: a read-only open (another shard replaying
//! the metadata group) must not change what the disk keeps, or the
//! owner's crash outcomes would depend on whether someone happened to read
//! (its fsync made the owner's unsynced prepares durable behind the
//! owner's back). A read-only reader sees the page cache and vouches for
//! nothing; the owner's writable open settles the file before any vote.
//! O_DIRECT would still need the fsync for what a previous process left in
//! the page cache without O_DIRECT, and it would not save the fsync per
//! batch either: the device has a volatile write cache (and on the machine
//! we measure, no FUA), so a durable write still needs a cache flush. With
//! buffered writes a batch (with `flush`) is one `pwrite` per run of slots
//! into the page cache, one small ring write and one fdatasync: the device
//! work of a plain pwrite+fdatasync loop (`cargo xtask bench journal`
//! compares the two). O_DIRECT would add a copy into aligned buffers (an
//! owned `Vec<u8>` body is not aligned) for no durability gain; measured
//! (session 26, a probe with blocking O_DIRECT writes on the shard's
//! thread), every small write (a carried-copies page, a ring copy) then
//! waited for the device, and the journal bench lost a quarter to a third.
//!
//! ## What it costs
//!
//! - A prepare's write covers its header and body rounded up to whole
//!   pages, not its slot: a 100-byte message writes one 4 KiB page (the
//!   page cache's unit: a smaller write dirties the page all the same),
//!   and its ring copy 256 bytes (or a carried entry). Each prepare is one
//!   write, the first of a batch with the copies it carries (a body of
//!   `BODY_BORROWED_BYTES_MIN` or more is a part of that write as the
//!   caller holds it, `IoFile::write_all_parts_at`, not copied); slots are
//!   `message_size_max` rounded up to a page, so a 1 MiB `SendMessages`
//!   batch (`MESSAGE_SIZE_MAX_BYTES`) fits one slot.
//! - Files are preallocated (zero-filled, see `zero_fill`), so an append
//!   overwrites allocated blocks and its fdatasync commits no metadata.
//! - Compaction keeps its crash-safe rewrite, but into the spare: the file
//!   the previous compaction retired, exchanged (`Io::exchange`) rather
//!   than renamed over, so its blocks stay allocated and it becomes the
//!   next compaction's scratch file. A compaction writes the file header,
//!   the ring, the few live prepares and a zero page over each slot the
//!   spare may still hold a live-window prepare in (the first one after a
//!   start, when the spare's history is unknown: every slot of the window,
//!   in place, blocks kept; `Spare::Untrusted`; a node clears such a spare
//!   beforehand, beside its appends, with the checkpoint's work:
//!   `SpareClear`); then two fsyncs.
//!   The server checkpoints every half ring by default (the other half
//!   takes the appends while a checkpoint and its compaction run beside
//!   them); `JournalConfig::checkpoint_interval_ops_max` is the longest.
//! - None of it stalls the appends, and each op is written once. The
//!   compaction is staged (the spare written from the page cache: the live
//!   prepares, and their copy places byte for byte) once the checkpoint is
//!   durable, and from then on the spare is the journal's file: every write
//!   and flush goes to it alone (`Window`), while the retired file, which
//!   the directory names until the install's exchange is durable, keeps
//!   every op the checkpoint covers and every op reported before the stage.
//!   The install (the spare's fsync, the exchange, the directory's fsync)
//!   borrows no journal and runs beside the appends (`StagedDrain::install`,
//!   `end_drain`). What a flush in the window makes durable is durable in
//!   the spare alone, so it is held (`held_for_install`, not `is_durable`)
//!   and reported by `end_drain` once the exchange is durable: whichever
//!   file the directory names after a crash holds every prepare the
//!   journal reported durable above the checkpoint (the retired one every
//!   op reported before the stage; the spare the stage's copy before the
//!   install's fsync, and every later write before the fsync that made it
//!   durable). Three things follow:
//!   - a truncation in the window clears both files, and syncs both
//!     (`write_everywhere`): it is durable on return, and a crash before
//!     the exchange must not bring the dropped prepares back from the
//!     retired file;
//!   - a read of an op the checkpoint covers falls back to the retired
//!     file (the spare holds none, unless written since);
//!   - a failed install poisons the journal once anything was written or
//!     synced in the window (the retired file lacks it), and leaves it as
//!     it was otherwise (`drain`, whose halves run in a row).
//!
//!   Until session 24 the spare mirrored every write and fsync of the
//!   window instead, acknowledging at once: two page-cache writes and two
//!   fdatasyncs per flush, and at batch 64, where the window is half the
//!   run, 0.72-0.80 of a plain write+fsync loop (`cargo xtask bench
//!   journal`; with the window's writes to the spare alone 0.88-0.99,
//!   README, "Session 24"). The price now: what is appended in a window is
//!   acknowledged at the install's end, a few fsyncs later. The copy
//!   places are copied, not rebuilt from the index (a copy of an op whose
//!   own copy is still to be written would vouch for a prepare not yet
//!   durable), with one exception: a durable op whose ring entry does not
//!   name it (unreadable, or its copy carried in a region that may read no
//!   better) gets its ring copy from the index, so the compaction never
//!   drops the copy an acknowledgement rests on (disk-rot seed 348442).
//!   During the window `unvouch_copies` poisons a copy in the spare only:
//!   the rewrite goes there alone, and the retired file keeps the old
//!   prepare with its copy, as if the rewrite had never happened.
//!   A read-only journal opened before a compaction keeps reading the
//!   retired file, which the next compaction rewrites in place: its reads
//!   then fail the checksum check (`Corrupt`), never return another op's
//!   bytes; reopen it after a compaction.
//! - A writable `open` rewrites (used bytes, then one fsync) only the valid
//!   prepares whose ring copy does not name them: after a failed fsync the
//!   page cache may hold prepares the device never got, and only a rewrite
//!   makes them durable before the replica vouches for them. A matching
//!   copy proves the prepare reached the device: copies are written only
//!   after their prepare's fsync succeeded, and a slot is never rewritten
//!   while a copy names its op, in any version, until that copy is poisoned
//!   and the poison fsynced (`unvouch_copies`: a repair of a faulty op whose
//!   copy survived, a rewrite of a held prepare, a new version of an op
//!   after a restart or a view change; one extra fsync then, none
//!   on the append path, which reads a copy only when the file may already
//!   name its op: never for a new op past what the file held). So a restart after
//!   a clean stop rewrites the ring (`slot_count` x 256 bytes), not up to
//!   `slot_count` prepares, and reads every slot twice (the cache's pass,
//!   then the device's: "Recovery never trusts the page cache"). A slot's
//!   carried-copies region and its header are one read, and before each
//!   pass the device is asked to read them all at once (`IoFile::prefetch`,
//!   then the valid slots' bodies): read one at a time from the device they
//!   were a round trip each. `shoal-bench open`, 1,024 slots of 64 KiB,
//!   empty: writable 136-142 ms before session 30, 25-34 ms after; from a
//!   cold cache 256-280 ms, 36-47 ms. A format does not reopen its journal
//!   (the storage keeps the one `create` made).
//! - `sync` is two fsyncs (prepares, then their ring copies). `flush` is the
//!   same protocol as one step of group commit: one fsync per batch, each
//!   batch acknowledged after the next batch's fsync.
//!
//! Not covered yet (issue 10):
//! - Misdirected writes into the partition log (it has no redundancy of
//!   its own; the node salvages it from peers).
//!
//! The live window is `snapshot_op + 1 ..= snapshot_op + slot_count`: an op
//! past it would overwrite a live entry (`SlotCollision`), so the caller must
//! `drain` (compact after a checkpoint) first, or wait for a staged
//! compaction's end.
//!
//! Invariants:
//! - `snapshot_op` never names an op whose compaction is not durable.
//! - While a compaction is staged, the spare is the journal's file: it
//!   receives every write and fsync, the retired file only a truncation's,
//!   and nothing durable in the spare alone is reported before the
//!   install's exchange is durable. Nothing is truncated at or below its
//!   checkpoint.
//! - The in-memory index never names an op whose write failed (no phantom op).
//! - `append` and `write_repair` add only a prepare that chains to its
//!   indexed neighbours. Recovery indexes every valid prepare, chained or
//!   not (the replica's `write_prepare` may leave a break after a view
//!   change, and only the replica knows which side is stale).
//! - After an fsync or compaction failure whose effect on disk is unknown, the
//!   journal is poisoned: every later call fails until the replica restarts
//!   and recovers from what is durable (an fsync error may have dropped data).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::header::{Command, HEADER_SIZE_BYTES, Header, HeaderError, MESSAGE_SIZE_MAX_BYTES};
use crate::io::{Io, IoFile, OpenMode};

#[doc(hidden)]
pub mod conformance;
mod replica_io;

pub use replica_io::Scan;

/// Size of the file header region; one 4 KiB page so slots stay aligned.
pub const FILE_HEADER_SIZE_BYTES: u64 = 4096;
/// The unit of a torn write and of damage on the device (a page is whole
/// sectors: `PAGE_SIZE_BYTES`).
pub const SECTOR_SIZE_BYTES: u64 = 512;

/// Slots a journal keeps beyond a checkpoint interval: the view headers a
/// view change installs and a pipeline past the checkpoint
/// (`JournalConfig::checkpoint_interval_ops_max`).
pub const CHECKPOINT_RESERVED_SLOTS: u64 =
    (crate::replica::VIEW_HEADERS_MAX + crate::replica::PIPELINE_PREPARES_MAX) as u64;
/// Bound on the number of slots (and on the in-memory header index).
pub const SLOT_COUNT_MAX: u64 = 1 << 20;
/// "SHOALWAL", little-endian.
pub const JOURNAL_MAGIC: u64 = u64::from_le_bytes(*b"SHOALWAL");
/// 2: the header ring between the file header and the slots; 3: a second
/// copy of the file header at the end of the file; 4: a carried-copies
/// region before each slot (module doc, "Carried copies").
pub const JOURNAL_FORMAT_VERSION: u32 = 5;
/// Ring copies one prepare write can carry in the region before its slot:
/// the copies of the `COPIES_CARRIED_MAX` ops before it. A pipeline's worth,
/// so a turn's batch carries every copy the turn before it made ready.
pub const COPIES_CARRIED_MAX: u64 = 16;
/// The carried-copies region before each slot: one 256-byte entry per op
/// it may vouch for, entry `j` for the op `j + 1` before the slot's op,
/// placed so that entry 0 ends where the slot's header begins.
pub const COPIES_REGION_BYTES: u64 = COPIES_CARRIED_MAX * HEADER_SIZE_BYTES as u64;
const _: () = assert!(COPIES_CARRIED_MAX as usize >= crate::replica::PIPELINE_PREPARES_MAX);
const _: () = assert!(COPIES_REGION_BYTES.is_multiple_of(SECTOR_SIZE_BYTES), "slots stay sector-aligned");
/// The header ring is padded to this, so slots stay page-aligned.
pub const HEADERS_ZONE_ALIGN_BYTES: u64 = 4096;
/// The page cache's unit, and so the unit of every journal write (module
/// doc, "Whole pages"): a write that covers a page only in part makes the
/// kernel read the page first, and fails when the page cannot be read.
pub const PAGE_SIZE_BYTES: u64 = 4096;
const _: () = assert!(FILE_HEADER_SIZE_BYTES == PAGE_SIZE_BYTES && HEADERS_ZONE_ALIGN_BYTES == PAGE_SIZE_BYTES);
const _: () = assert!(COPIES_REGION_BYTES == PAGE_SIZE_BYTES, "a carried-copies region is one page");
/// Ring copies read per call during recovery (bounds the read buffer).
const HEADERS_ZONE_READ_COPIES_MAX: u64 = 1024;
/// What marks a slot header or ring copy as damaged on purpose: a compaction
/// that leaves out an op it cannot read writes it where the op's evidence
/// would be lost, so recovery reads the slot as `Unknown` (faulty). No
/// header decodes from it (its checksum cannot match).
const POISON_BYTE: u8 = 0xA5;
/// What a prepare write puts in the copies-region entries it does not
/// carry: an entry that holds no copy on purpose, read as empty where a
/// copy belongs, and as damage where a prepare header belongs (module doc,
/// "Filler, not zeros"). Distinct from zeros, from `POISON_BYTE`, never in
/// UTF-8 text, and no header decodes from it.
const FILLER_BYTE: u8 = 0xF5;
/// What a prepare write puts in the whole sectors between its last body
/// sector and the end of its last page (module doc, "Whole pages"): not
/// zeros, so that a misdirected write never leaves a zero sector on
/// another slot's header (which would read "never written"), and neither
/// filler nor a header, so that a torn write leaving it in an older body
/// reads as torn, not as overwritten.
const PADDING_BYTE: u8 = 0x5A;
/// Preallocation writes zeros in chunks of this size (bounds the buffer).
pub const ZERO_FILL_CHUNK_BYTES: u64 = 1 << 20;
const _: () = assert!(ZERO_FILL_CHUNK_BYTES.is_multiple_of(SECTOR_SIZE_BYTES));
/// With the largest message, a slot is exactly 1 MiB: a `SendMessages`
/// batch of up to `MESSAGE_SIZE_MAX_BYTES` (header included) fits one slot.
const _: () = assert!((MESSAGE_SIZE_MAX_BYTES as u64).is_multiple_of(SECTOR_SIZE_BYTES));
const _: () = assert!(HEADERS_ZONE_ALIGN_BYTES.is_multiple_of(SECTOR_SIZE_BYTES));
const _: () =
    assert!(SECTOR_SIZE_BYTES.is_multiple_of(HEADER_SIZE_BYTES as u64), "a ring copy never spans two sectors");

// File header field offsets.
const FH_MAGIC: usize = 0;
const FH_VERSION: usize = 8;
const FH_MESSAGE_SIZE_MAX: usize = 12;
const FH_CLUSTER: usize = 16;
const FH_NAMESPACE: usize = 32;
const FH_SLOT_COUNT: usize = 40;
const FH_SNAPSHOT_OP: usize = 48;
const FH_SNAPSHOT_CHECKSUM_KNOWN: usize = 56;
const FH_SNAPSHOT_CHECKSUM: usize = 64;
const FH_CHECKSUM: usize = 80;
const FH_ENCODED_BYTES: usize = 96;

/// What the journal needs to know about its group and its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalConfig {
    pub slot_count: u64,
    /// The largest prepare (header included) a slot must hold.
    pub message_size_max_bytes: u32,
    pub cluster: u128,
    pub namespace: u64,
}

impl JournalConfig {
    fn validate(&self) -> Result<(), JournalError> {
        if self.slot_count == 0 || self.slot_count > SLOT_COUNT_MAX {
            return Err(JournalError::InvalidConfig {
                reason: format!("slot_count {} is outside 1..={SLOT_COUNT_MAX}", self.slot_count),
            });
        }
        if (self.message_size_max_bytes as usize) < HEADER_SIZE_BYTES
            || self.message_size_max_bytes > MESSAGE_SIZE_MAX_BYTES
        {
            return Err(JournalError::InvalidConfig {
                reason: format!(
                    "message_size_max_bytes {} is outside {HEADER_SIZE_BYTES}..={MESSAGE_SIZE_MAX_BYTES}",
                    self.message_size_max_bytes
                ),
            });
        }
        Ok(())
    }

    /// `message_size_max` rounded up to whole pages, so that every slot,
    /// and every carried-copies region, starts on a page.
    pub fn slot_size_bytes(&self) -> u64 {
        pages_bytes(u64::from(self.message_size_max_bytes))
    }

    /// The longest checkpoint interval this geometry allows: a compaction
    /// rewrites the journal once per interval, so the longer the interval,
    /// the rarer the rewrite (the server runs half the ring by default, so
    /// that appends need not wait for a compaction beside them).
    /// `slot_count` must hold one interval of committed ops, the pipeline
    /// past the checkpoint and the view headers a view change installs
    /// (the replica asserts `checkpoint_interval_ops + VIEW_HEADERS_MAX <
    /// journal_slot_count`). With 1024 slots: 984 ops per rewrite.
    pub fn checkpoint_interval_ops_max(&self) -> u64 {
        assert!(
            self.slot_count > CHECKPOINT_RESERVED_SLOTS,
            "slot_count {} leaves no room for a checkpoint interval",
            self.slot_count
        );
        self.slot_count - CHECKPOINT_RESERVED_SLOTS
    }

    /// The header ring: one 256-byte copy per slot, padded.
    pub fn headers_zone_size_bytes(&self) -> u64 {
        (self.slot_count * HEADER_SIZE_BYTES as u64).div_ceil(HEADERS_ZONE_ALIGN_BYTES) * HEADERS_ZONE_ALIGN_BYTES
    }

    pub fn file_size_bytes(&self) -> u64 {
        self.file_header_copy_offset() + FILE_HEADER_SIZE_BYTES
    }

    /// Where the second copy of the file header lives: after the slots.
    pub fn file_header_copy_offset(&self) -> u64 {
        self.slots_offset() + self.slot_count * self.slot_stride_bytes()
    }

    fn slots_offset(&self) -> u64 {
        FILE_HEADER_SIZE_BYTES + self.headers_zone_size_bytes()
    }

    /// A slot with the carried-copies region before it.
    pub fn slot_stride_bytes(&self) -> u64 {
        COPIES_REGION_BYTES + self.slot_size_bytes()
    }

    /// Where the header of the prepare in `op`'s slot begins (its
    /// carried-copies region ends here).
    pub fn slot_offset(&self, op: u64) -> u64 {
        self.slots_offset() + (op % self.slot_count) * self.slot_stride_bytes() + COPIES_REGION_BYTES
    }

    /// Where the carried-copies region before `op`'s slot begins.
    pub fn copies_region_offset(&self, op: u64) -> u64 {
        self.slot_offset(op) - COPIES_REGION_BYTES
    }

    /// How far after an op a write may carry its copy: never as far as the
    /// op's own slot again, so each entry vouches for one slot.
    pub fn copies_carried_max(&self) -> u64 {
        COPIES_CARRIED_MAX.min(self.slot_count - 1)
    }

    /// Where the copy of the header of the prepare in `op`'s slot lives when
    /// the write of the slot `distance` (1..=copies_carried_max) after it
    /// carried it (module doc, "Carried copies").
    pub fn carried_copy_offset(&self, op: u64, distance: u64) -> u64 {
        assert!((1..=self.copies_carried_max()).contains(&distance));
        self.slot_offset(op + distance) - distance * HEADER_SIZE_BYTES as u64
    }

    /// Every place a copy of the header in `op`'s slot may live: the ring
    /// first, then each carrier's entry.
    pub fn header_copy_offsets(&self, op: u64) -> impl Iterator<Item = u64> + '_ {
        let carried = (1..=self.copies_carried_max()).map(move |distance| self.carried_copy_offset(op, distance));
        std::iter::once(self.header_copy_offset(op)).chain(carried)
    }

    /// The op whose copy lives at the copy place `offset` (a ring entry or a
    /// carried entry), in the live window that starts at `window_first`.
    pub fn copy_place_op(&self, offset: u64, window_first: u64) -> Option<u64> {
        let place_bytes = HEADER_SIZE_BYTES as u64;
        let window_op =
            |slot: u64| window_first + (slot + self.slot_count - window_first % self.slot_count) % self.slot_count;
        if !offset.is_multiple_of(place_bytes) || offset < FILE_HEADER_SIZE_BYTES {
            return None;
        }
        if offset < FILE_HEADER_SIZE_BYTES + self.slot_count * place_bytes {
            return Some(window_op((offset - FILE_HEADER_SIZE_BYTES) / place_bytes));
        }
        let into_slots = offset.checked_sub(self.slots_offset())?;
        let (carrier_slot, within) = (into_slots / self.slot_stride_bytes(), into_slots % self.slot_stride_bytes());
        if carrier_slot >= self.slot_count || within >= COPIES_REGION_BYTES {
            return None;
        }
        let distance = (COPIES_REGION_BYTES - within) / place_bytes;
        if distance > self.copies_carried_max() {
            return None;
        }
        Some(window_op((carrier_slot + self.slot_count - distance) % self.slot_count))
    }

    /// Where the ring copy of the header of the prepare in `op`'s slot lives.
    pub fn header_copy_offset(&self, op: u64) -> u64 {
        FILE_HEADER_SIZE_BYTES + (op % self.slot_count) * HEADER_SIZE_BYTES as u64
    }
}

/// What one prepare's slot write covers: its header and body, rounded up to
/// whole pages (never the whole slot: a 100-byte message costs one page,
/// not `message_size_max`). The padding is zeros to the end of the last
/// body sector, then `PADDING_BYTE`.
fn encode_prepare_pages(header: &Header, body: &[u8]) -> Vec<u8> {
    let mut buffer = Vec::new();
    push_prepare_pages(&mut buffer, header, body);
    buffer
}

/// Append `header` and `body` to `buffer`, padded to whole pages: one copy
/// of the body, straight into the write buffer (a run's body of
/// `BODY_BORROWED_BYTES_MIN` or more is not copied at all:
/// `PrepareRun::push_prepare`).
fn push_prepare_pages(buffer: &mut Vec<u8>, header: &Header, body: &[u8]) {
    let begin = buffer.len();
    debug_assert!((begin as u64).is_multiple_of(PAGE_SIZE_BYTES), "a prepare starts on a page");
    // Room for the padded slot first: growing while extending by the body
    // and then by the padding would copy a large body twice more (a
    // reallocation each time). The first prepare of a run gets exactly its
    // size; later ones grow the run amortized.
    buffer.reserve(pages_bytes((HEADER_SIZE_BYTES + body.len()) as u64) as usize);
    buffer.extend_from_slice(&header.encode());
    buffer.extend_from_slice(body);
    pad_prepare(buffer, begin);
}

/// Pad the prepare that starts at `begin` of `buffer` (and ends at its end)
/// to whole pages: zeros to its last sector's end, then `PADDING_BYTE`.
fn pad_prepare(buffer: &mut Vec<u8>, begin: usize) {
    push_prepare_padding(buffer, (buffer.len() - begin) as u64);
}

/// Append the padding of a prepare of `size_bytes` (header and body) that
/// ends where `buffer` ends: zeros to its last sector's end, then
/// `PADDING_BYTE` to its last page's end.
fn push_prepare_padding(buffer: &mut Vec<u8>, size_bytes: u64) {
    let (zeros, padding) =
        (sectors_bytes(size_bytes) - size_bytes, pages_bytes(size_bytes) - sectors_bytes(size_bytes));
    buffer.resize(buffer.len() + zeros as usize, 0);
    buffer.resize(buffer.len() + padding as usize, PADDING_BYTE);
}

/// A prepare as read back (header and body), as its slot write covers it.
fn pad_prepare_bytes(mut bytes: Vec<u8>) -> Vec<u8> {
    pad_prepare(&mut bytes, 0);
    bytes
}

/// A body at least this large travels to the write as it is, a part of
/// its own (`IoFile::write_all_parts_at`); a shorter one is copied into the
/// run's bytes, where one more part would cost more than the copy.
const BODY_BORROWED_BYTES_MIN: usize = 16 * 1024;

/// One part of a run's write: bytes the journal made (headers, carried
/// copies, filler, padding), or a prepare's body as the caller holds it.
enum RunPart<'a> {
    Made(Vec<u8>),
    Body(&'a [u8]),
}

impl RunPart<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            RunPart::Made(bytes) => bytes,
            RunPart::Body(body) => body,
        }
    }
}

/// One write: where it goes, its parts (the bytes written are their
/// concatenation), and how many prepares it holds.
struct PrepareRun<'a> {
    offset: u64,
    parts: Vec<RunPart<'a>>,
    count: usize,
}

impl<'a> PrepareRun<'a> {
    fn new(offset: u64) -> PrepareRun<'a> {
        PrepareRun { offset, parts: Vec::new(), count: 0 }
    }

    fn len_bytes(&self) -> usize {
        self.parts.iter().map(|part| part.bytes().len()).sum()
    }

    fn slices(&self) -> Vec<&[u8]> {
        self.parts.iter().map(RunPart::bytes).collect()
    }

    /// The bytes the journal is making at the run's end (a new part after
    /// a body).
    fn made_tail(&mut self) -> &mut Vec<u8> {
        if !matches!(self.parts.last(), Some(RunPart::Made(_))) {
            self.parts.push(RunPart::Made(Vec::new()));
        }
        match self.parts.last_mut() {
            Some(RunPart::Made(bytes)) => bytes,
            _ => unreachable!("a made part was just pushed"),
        }
    }

    /// Append `header` and `body`, padded to whole pages (as
    /// `push_prepare_pages`): a large body as a part of its own, not
    /// copied.
    fn push_prepare(&mut self, header: &Header, body: &'a [u8]) {
        let begin = self.len_bytes();
        debug_assert!((begin as u64).is_multiple_of(PAGE_SIZE_BYTES), "a prepare starts on a page");
        if body.len() < BODY_BORROWED_BYTES_MIN {
            push_prepare_pages(self.made_tail(), header, body);
            return;
        }
        self.made_tail().extend_from_slice(&header.encode());
        self.parts.push(RunPart::Body(body));
        let size_bytes = (HEADER_SIZE_BYTES + body.len()) as u64;
        push_prepare_padding(self.made_tail(), size_bytes);
        debug_assert_eq!((self.len_bytes() - begin) as u64, pages_bytes(size_bytes));
    }

    /// The bytes written, joined (tests read them).
    #[cfg(test)]
    fn bytes(&self) -> Vec<u8> {
        self.slices().concat()
    }
}

/// The writes of prepares of ascending ops, each covering only the pages
/// its prepare uses. The first also carries `carried` (ascending ops, each
/// at most `copies_carried_max` before it): its whole carried-copies region
/// (one page), entries it does not carry filled (`FILLER_BYTE`), so its
/// copies and the prepare are one contiguous write (module doc, "Carried
/// copies"). A prepare joins the
/// write of the one before it when that one filled its slot, it is the next
/// op, its slot is the next slot (not where the ring wraps), and it is above
/// `fresh_above`: then only its carried-copies region lies between the two,
/// and the write covers that region with filler. Filler there is safe only
/// for an op above `file_op_written_max` (no earlier write of this file
/// filled that region, so it names no live op: the rule that lets the
/// first write fill the entries it does not carry), so a caller passes
/// `file_op_written_max` as `fresh_above`, or `u64::MAX` for one write per
/// prepare. A fresh batch of full slots is one write, as in a plain loop
/// whose entries are adjacent.
fn prepare_runs<'a>(
    config: &JournalConfig,
    carried: &[Header],
    fresh_above: u64,
    prepares: impl IntoIterator<Item = (&'a Header, &'a [u8])>,
) -> Vec<PrepareRun<'a>> {
    let mut runs: Vec<PrepareRun<'a>> = Vec::new();
    // The op of the last prepare written, and whether it filled its slot.
    let mut previous: Option<(u64, bool)> = None;
    for (header, body) in prepares {
        let joins = previous.is_some_and(|(op, filled)| {
            filled && header.op == op + 1 && !header.op.is_multiple_of(config.slot_count) && header.op > fresh_above
        });
        if joins {
            let run = runs.last_mut().expect("a prepare joins the run of the one before it");
            // The region before this slot names no live op (fresh): filler.
            let tail = run.made_tail();
            tail.resize(tail.len() + COPIES_REGION_BYTES as usize, FILLER_BYTE);
            assert_eq!(run.offset + run.len_bytes() as u64, config.slot_offset(header.op), "a run is contiguous");
            run.push_prepare(header, body);
            run.count += 1;
            crate::marks::hit(crate::marks::JOURNAL_PREPARES_JOINED);
        } else {
            runs.push(prepare_write(config, if runs.is_empty() { carried } else { &[] }, header, body));
        }
        let filled = pages_bytes((HEADER_SIZE_BYTES + body.len()) as u64) == config.slot_size_bytes();
        previous = Some((header.op, filled));
    }
    runs
}

/// The write of one prepare, carrying `carried` in the region before it.
fn prepare_write<'a>(config: &JournalConfig, carried: &[Header], header: &Header, body: &'a [u8]) -> PrepareRun<'a> {
    let mut run = PrepareRun::new(config.slot_offset(header.op));
    if let Some(farthest) = carried.first() {
        // The whole region (one page), entries it does not carry filled.
        let region_bytes = COPIES_REGION_BYTES;
        assert!(header.op - farthest.op <= config.copies_carried_max());
        run.offset -= region_bytes;
        let bytes = run.made_tail();
        bytes.resize(region_bytes as usize, FILLER_BYTE);
        for copy in carried {
            let distance = header.op - copy.op;
            assert!((1..=config.copies_carried_max()).contains(&distance));
            let at = (region_bytes - distance * HEADER_SIZE_BYTES as u64) as usize;
            bytes[at..at + HEADER_SIZE_BYTES].copy_from_slice(&copy.encode());
        }
    }
    run.push_prepare(header, body);
    run.count = 1;
    debug_assert!(run.len_bytes() as u64 <= COPIES_REGION_BYTES + config.slot_size_bytes());
    run
}

/// Do the sectors of a prepare after its header (they start
/// `HEADER_SIZE_BYTES` into the slot's first sector) hold, in one of the
/// slot's later sectors, what only
/// a misdirected write puts there: a 256-byte half of filler or of a
/// header that decodes? A prepare's body sits in its own slot only, and
/// copies and filler are written between slots, so a landed carrier, ring
/// or prepare write shows one of them at a sector boundary (misdirected
/// writes are sector-aligned). A user payload that holds a whole header or
/// a run of filler at such a place reads as overwritten too: the price is
/// a faulty slot, never a lost one.
fn body_holds_misdirected_sector(sectors: &[u8]) -> bool {
    let half = HEADER_SIZE_BYTES;
    let first_sector_start = SECTOR_SIZE_BYTES as usize - half;
    sectors
        .get(first_sector_start..)
        .unwrap_or_default()
        .chunks_exact(half)
        .any(|chunk| chunk.iter().all(|&b| b == FILLER_BYTE) || Header::decode(chunk).is_ok())
}

fn sectors_bytes(size_bytes: u64) -> u64 {
    size_bytes.div_ceil(SECTOR_SIZE_BYTES) * SECTOR_SIZE_BYTES
}

fn pages_bytes(size_bytes: u64) -> u64 {
    size_bytes.div_ceil(PAGE_SIZE_BYTES) * PAGE_SIZE_BYTES
}

/// Write `bytes` at `offset` of `file` so that an unreadable page cannot
/// stop it (module doc, "Whole pages"). A write that covers its first or
/// last page only in part makes the kernel read that page first, and fails
/// with EIO when a latent sector error makes the page unreadable, at every
/// try. So when such a write fails with a media error, the rest of each
/// page is read (sector by sector where a read fails), and if a sector of
/// it cannot be read, the write becomes one of whole pages: the rest as
/// read, and for each copy place in an unreadable sector what `known` says
/// belongs there (the header of a durable op, whose copy the device held
/// and no read could show), else `POISON_BYTE`, which every copy place
/// reads as damaged, as it read before. When the rest reads whole, the
/// page was not the cause, and the write's own error stands. Only copy
/// places (ring entries, carried entries) are written in part: prepares and
/// cleared slots are whole pages of their own slot, and never need this.
async fn write_pages<F: IoFile>(
    file: &F,
    bytes: Vec<u8>,
    offset: u64,
    known: &impl Fn(u64) -> Option<Header>,
) -> io::Result<()> {
    let end = offset + bytes.len() as u64;
    let (page_start, page_end) = (offset / PAGE_SIZE_BYTES * PAGE_SIZE_BYTES, pages_bytes(end));
    let whole_pages = page_start == offset && page_end == end;
    let (result, bytes) = file.write_all_at(bytes, offset).await;
    let error = match result {
        Err(error) if crate::io::is_media_error(&error) && !whole_pages && !bytes.is_empty() => error,
        other => return other,
    };
    let (before, before_whole) = page_rest_bytes(file, page_start, offset, known).await?;
    let (after, after_whole) = page_rest_bytes(file, end, page_end, known).await?;
    if before_whole && after_whole {
        return Err(error);
    }
    crate::marks::hit(crate::marks::JOURNAL_WRITE_PAGE_COMPLETED);
    let mut pages = before;
    pages.reserve((page_end - page_start) as usize - pages.len());
    pages.extend_from_slice(&bytes);
    pages.extend(after);
    debug_assert_eq!(pages.len() as u64, page_end - page_start);
    file.write_all_at(pages, page_start).await.0
}

/// The bytes `start..end` of `file` (part of one page), as `write_pages`
/// must write them back: as read, and for a sector that cannot be (its
/// retries spent) each copy place's `known` header, or poison; and whether
/// every sector read.
async fn page_rest_bytes<F: IoFile>(
    file: &F,
    start: u64,
    end: u64,
    known: &impl Fn(u64) -> Option<Header>,
) -> io::Result<(Vec<u8>, bool)> {
    debug_assert!(end - start < PAGE_SIZE_BYTES);
    if start == end {
        return Ok((Vec::new(), true));
    }
    let (result, bytes) = crate::io::read_exact_retrying(file, vec![0; (end - start) as usize], start).await;
    match result {
        Ok(()) => return Ok((bytes, true)),
        Err(error) if crate::io::is_media_error(&error) => {}
        Err(error) => return Err(error),
    }
    let mut rest = Vec::with_capacity((end - start) as usize);
    let mut whole = true;
    let mut position = start;
    // Bounded: one read per sector of less than a page.
    while position < end {
        let next = ((position / SECTOR_SIZE_BYTES + 1) * SECTOR_SIZE_BYTES).min(end);
        let (result, bytes) = crate::io::read_exact_retrying(file, vec![0; (next - position) as usize], position).await;
        match result {
            Ok(()) => rest.extend_from_slice(&bytes),
            Err(error) if crate::io::is_media_error(&error) => {
                crate::marks::hit(crate::marks::JOURNAL_WRITE_POISONED_UNREADABLE_PAGE_REST);
                rest.extend(unreadable_sector_bytes(position, next, known));
                whole = false;
            }
            Err(error) => return Err(error),
        }
        position = next;
    }
    Ok((rest, whole))
}

/// What `write_pages` writes over the unreadable bytes `start..end`: the
/// `known` header of each whole copy place in them, poison elsewhere.
fn unreadable_sector_bytes(start: u64, end: u64, known: &impl Fn(u64) -> Option<Header>) -> Vec<u8> {
    let mut bytes = vec![POISON_BYTE; (end - start) as usize];
    let place_bytes = HEADER_SIZE_BYTES as u64;
    let mut place = start.div_ceil(place_bytes) * place_bytes;
    while place + place_bytes <= end {
        if let Some(header) = known(place) {
            crate::marks::hit(crate::marks::JOURNAL_WRITE_UNREADABLE_COPY_REBUILT);
            let at = (place - start) as usize;
            bytes[at..at + HEADER_SIZE_BYTES].copy_from_slice(&header.encode());
        }
        place += place_bytes;
    }
    bytes
}

/// No copy place's header is known (a spare being written from scratch).
fn nothing_known(_offset: u64) -> Option<Header> {
    None
}

/// Hint the device to read what recovery reads first, all at once: the
/// header ring, and each slot's carried-copies region with its header
/// (`read_carried_copies`). Read one after another from the device, those
/// are one request at a time, a device round trip each: 145-169 ms for a
/// 64 KiB-slot journal of 1,024 slots (`shoal-bench open`, cold cache).
/// Bodies are not hinted: only valid slots' are read, and their size is
/// known only from the header.
fn prefetch_recovery_reads<F: IoFile>(file: &F, config: &JournalConfig) {
    file.prefetch(config.header_copy_offset(0), config.slot_count * HEADER_SIZE_BYTES as u64);
    for slot in 0..config.slot_count {
        let region_offset = config.copies_region_offset(slot);
        file.prefetch(region_offset, COPIES_REGION_BYTES + HEADER_SIZE_BYTES as u64);
    }
}

/// What `read_carried_copies` read: each slot's carried copies, the highest
/// op a carrier holding a live or damaged copy would hold, and the header
/// bytes of every slot whose region and header were read together (at most
/// one header per slot: bounded like the ring).
struct CarriedRead {
    copies: BTreeMap<u64, Vec<HeaderCopy>>,
    carriers_named_max: u64,
    slot_headers: BTreeMap<u64, Vec<u8>>,
}

/// Which view of the file a writable open's recovery reads (`open_inner`):
/// first what reads see (the page cache, which may hold pages a failed
/// fsync marked clean), then, once those are dropped, what the device holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecoveryPass {
    Cache,
    Device,
}

/// Size `file` to `size_bytes` and write zeros over every byte, then fsync.
///
/// Writing, not only `fallocate`: fallocate leaves *unwritten* extents, and
/// the first write into one converts it, a metadata change that every
/// later fdatasync must commit through the file system's journal. Measured
/// on ext4 (2-core VM, virtio disk): 4 KiB pwrite + fdatasync ran at 5.1k/s
/// into a sparse file, 5.9k/s into a fallocated one, 9.9k/s into a
/// zero-filled one. Done once per file: compaction recycles the file it
/// retires (`drain`), so appends never allocate a block.
async fn zero_fill<F: IoFile>(file: &F, size_bytes: u64) -> Result<(), JournalError> {
    file.set_len(size_bytes).await.map_err(io_error("preallocate"))?;
    let mut chunk = vec![0u8; ZERO_FILL_CHUNK_BYTES.min(size_bytes) as usize];
    let mut offset = 0;
    while offset < size_bytes {
        let length = ZERO_FILL_CHUNK_BYTES.min(size_bytes - offset) as usize;
        chunk.resize(length, 0);
        let (result, back) = file.write_all_at(chunk, offset).await;
        result.map_err(io_error("preallocate"))?;
        chunk = back;
        offset += length as u64;
    }
    file.sync_data().await.map_err(io_error("fsync preallocated"))
}

/// The journal file of `namespace` inside `dir`.
pub fn journal_path(dir: &Path, namespace: u64) -> PathBuf {
    dir.join(format!("journal-{namespace:016x}.wal"))
}

/// The spare of `namespace`'s journal inside `dir` (compaction's scratch
/// file, never read by recovery).
pub fn journal_path_tmp(dir: &Path, namespace: u64) -> PathBuf {
    dir.join(format!("journal-{namespace:016x}.wal.tmp"))
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {operation} failed: {source}; check the disk, then restart the replica")]
    Io { operation: &'static str, source: io::Error },
    #[error("journal is open read-only: only the owning shard may write it")]
    ReadOnly,
    #[error("journal is poisoned by an earlier fsync or compaction failure: restart the replica to recover from disk")]
    Poisoned,
    #[error("journal config is invalid: {reason}")]
    InvalidConfig { reason: String },
    #[error("journal {path} already exists: open it instead of creating it")]
    AlreadyExists { path: PathBuf },
    #[error("journal {path} does not exist: create it first (or restore it from a peer)")]
    Missing { path: PathBuf },
    #[error("journal file is {size_bytes} bytes, expected {expected_bytes}: it was truncated; restore it from a peer")]
    Truncated { size_bytes: u64, expected_bytes: u64 },
    #[error("journal file header is zero-filled: the file was never initialised; remove it and recreate the replica")]
    ZeroFilled,
    #[error("journal file has no shoal journal magic: this is not a shoal journal, check the data directory")]
    BadMagic,
    #[error("journal file header checksum mismatch: the header is corrupt; restore the journal from a peer")]
    FileHeaderCorrupt,
    #[error(
        "journal format version {found} is not this shoal's {JOURNAL_FORMAT_VERSION} (version 5 aligned the slots to \
         4 KiB pages): run the shoal version that wrote it, or move this replica's data directory aside and start it \
         with `shoal-server format --rejoin` so it rejoins from its peers"
    )]
    UnsupportedVersion { found: u32 },
    #[error("journal belongs to cluster {found:#x}, not {expected:#x}: check the data directory")]
    WrongCluster { expected: u128, found: u128 },
    #[error("journal belongs to namespace {found:#x}, not {expected:#x}: check the data directory")]
    WrongNamespace { expected: u64, found: u64 },
    #[error("journal {field} is {found}, config says {expected}: keep the journal geometry fixed")]
    ConfigMismatch { field: &'static str, expected: u64, found: u64 },
    #[error("prepare op {op} is out of order: the journal expects op {expected}")]
    OpOutOfOrder { op: u64, expected: u64 },
    #[error(
        "prepare op {op} does not chain to the previous prepare (parent checksum mismatch): it belongs to another log"
    )]
    ParentMismatch { op: u64 },
    #[error("prepare op {op} is invalid: {source}")]
    BadPrepare { op: u64, source: HeaderError },
    #[error("prepare op {op} is not a prepare of this cluster and namespace")]
    WrongGroup { op: u64 },
    #[error("prepare op {op} is {size_bytes} bytes, over the slot limit {max_bytes}")]
    MessageTooLarge { op: u64, size_bytes: u32, max_bytes: u32 },
    #[error("op {op} would overwrite live op {live_op} in slot {slot}: drain (checkpoint) first")]
    SlotCollision { op: u64, slot: u64, live_op: u64 },
    #[error("op {op} is not in the journal")]
    NotFound { op: u64 },
    #[error("op {op} is corrupt on disk: repair it from a peer")]
    Corrupt { op: u64 },
    #[error("cannot drain through op {through_op}: the journal head is {op_max:?}")]
    DrainBeyondHead { through_op: u64, op_max: Option<u64> },
    #[error("cannot truncate after op {op}: ops through {snapshot_op} are checkpointed")]
    TruncateBelowSnapshot { op: u64, snapshot_op: u64 },
    #[error("op {op} is not awaiting repair")]
    NotMissing { op: u64 },
}

fn io_error(operation: &'static str) -> impl FnOnce(io::Error) -> JournalError {
    move |source| JournalError::Io { operation, source }
}

/// The `snapshot_op` a journal file's bytes declare (checkers compare it
/// with the in-memory value: it must never be ahead of what is durable).
/// `bytes` is the file's start or the whole file; with the whole file, a
/// first copy that does not decode falls back to the second, as `open` does.
#[doc(hidden)]
pub fn decode_file_snapshot_op(bytes: &[u8]) -> Result<u64, JournalError> {
    let size = FILE_HEADER_SIZE_BYTES as usize;
    if bytes.len() < size {
        return Err(JournalError::Truncated { size_bytes: bytes.len() as u64, expected_bytes: FILE_HEADER_SIZE_BYTES });
    }
    match FileHeader::decode(bytes) {
        Ok(header) => Ok(header.snapshot_op),
        Err(error) if bytes.len() >= 2 * size => {
            FileHeader::decode(&bytes[bytes.len() - size..]).map(|header| header.snapshot_op).map_err(|_| error)
        }
        Err(error) => Err(error),
    }
}

/// Write both copies of the file header (not durable until fsync).
async fn write_file_header<F: IoFile>(file: &F, config: &JournalConfig, header: &FileHeader) -> io::Result<()> {
    for offset in [0, config.file_header_copy_offset()] {
        let (result, _) = file.write_all_at(header.encode(), offset).await;
        result?;
    }
    Ok(())
}

/// Both copies read back as `header`: a lost or misdirected header write
/// would leave an older header in place.
async fn file_header_reads_back<F: IoFile>(
    file: &F,
    config: &JournalConfig,
    header: &FileHeader,
) -> Result<bool, JournalError> {
    for offset in [0, config.file_header_copy_offset()] {
        let (result, bytes) =
            crate::io::read_exact_retrying(file, vec![0; FILE_HEADER_SIZE_BYTES as usize], offset).await;
        result.map_err(io_error("read back file header"))?;
        if FileHeader::decode(&bytes).ok().as_ref() != Some(header) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Why `settle_file` failed.
#[derive(Debug, thiserror::Error)]
pub enum SettleFileError {
    /// Open, stat or read: nothing was rewritten; the file's own open reads
    /// it again and reports what it finds.
    #[error("{operation} failed: {source}")]
    Unreadable { operation: &'static str, source: io::Error },
    /// The write-back or its fsync: what reads of the file see may live
    /// only in the page cache, so nothing may trust it.
    #[error("{operation} failed: {source}")]
    NotDurable { operation: &'static str, source: io::Error },
}

/// The unit `settle_file` falls back to when its whole-file read fails
/// with EIO: the smallest logical sector devices report, so one latent
/// sector error costs only the bytes it covers.
pub const SETTLE_SECTOR_SIZE_BYTES: u64 = 512;

/// Make what reads of `path` see durable, before it is trusted at open.
///
/// An fdatasync is not enough: after a failed fsync Linux marks the dirty
/// pages clean, so a restarted process still reads them from the page cache
/// while no later fsync will write them. Rewriting the file's bytes as read
/// dirties them again, so the fsync writes exactly what recovery will see.
/// Meant for small files (superblock, checkpoint); the journal does the same
/// for the slots it cannot vouch for (see the module doc).
///
/// A sector that keeps failing with EIO (a latent sector error) is left as
/// it is, and only it: every other sector is still rewritten (mark
/// `settle_skipped_unreadable_sector`). Skipping the whole file for one bad
/// sector let recovery trust a copy elsewhere in the file that lived only
/// in the page cache, and a power loss then took it back.
pub async fn settle_file<I: Io>(io: &I, path: &Path) -> Result<(), SettleFileError> {
    let unreadable = |operation| move |source| SettleFileError::Unreadable { operation, source };
    let not_durable = |operation| move |source| SettleFileError::NotDurable { operation, source };
    let file = io.open(path, OpenMode::ReadWrite).await.map_err(unreadable("open"))?;
    let size_bytes = file.size_bytes().await.map_err(unreadable("stat"))?;
    let (result, bytes) = crate::io::read_exact_retrying(&file, vec![0; size_bytes as usize], 0).await;
    match result {
        Ok(()) => {
            let (result, _) = file.write_all_at(bytes, 0).await;
            result.map_err(not_durable("write back"))?;
        }
        Err(error) if crate::io::is_media_error(&error) => {
            settle_readable_sectors(&file, size_bytes).await.map_err(not_durable("write back"))?;
        }
        Err(error) => return Err(unreadable("read")(error)),
    }
    file.sync_data().await.map_err(not_durable("fsync"))
}

/// `settle_file`'s write-back, sector by sector: every sector that reads is
/// written back as read; one that fails with EIO after its retries is left.
async fn settle_readable_sectors<F: IoFile>(file: &F, size_bytes: u64) -> io::Result<()> {
    let mut position = 0;
    while position < size_bytes {
        let len = SETTLE_SECTOR_SIZE_BYTES.min(size_bytes - position);
        let (result, bytes) = crate::io::read_exact_retrying(file, vec![0; len as usize], position).await;
        match result {
            Ok(()) => {
                let (result, _) = file.write_all_at(bytes, position).await;
                result?;
            }
            Err(error) if crate::io::is_media_error(&error) => {
                crate::marks::hit(crate::marks::SETTLE_SKIPPED_UNREADABLE_SECTOR);
            }
            Err(error) => return Err(error),
        }
        position += len;
    }
    Ok(())
}

/// What recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Live ops with a valid header and body, ascending.
    pub ops_recovered: Vec<u64>,
    /// Slots after the head that held an invalid entry the header ring does
    /// not name (a torn write: never fully written, so never acknowledged);
    /// they are cleared (in writable mode) and not part of the log.
    pub torn_tail_truncated: Vec<u64>,
    /// Ops between `snapshot_op` and the head (the highest op a valid prepare
    /// or a ring copy names) that are missing or corrupt: the replica must
    /// fetch them from peers (`write_repair`).
    pub repair_ops: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileHeader {
    cluster: u128,
    namespace: u64,
    slot_count: u64,
    message_size_max_bytes: u32,
    snapshot_op: u64,
    snapshot_checksum: Option<u128>,
}

impl FileHeader {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; FILE_HEADER_SIZE_BYTES as usize];
        out[FH_MAGIC..FH_MAGIC + 8].copy_from_slice(&JOURNAL_MAGIC.to_le_bytes());
        out[FH_VERSION..FH_VERSION + 4].copy_from_slice(&JOURNAL_FORMAT_VERSION.to_le_bytes());
        out[FH_MESSAGE_SIZE_MAX..FH_MESSAGE_SIZE_MAX + 4].copy_from_slice(&self.message_size_max_bytes.to_le_bytes());
        out[FH_CLUSTER..FH_CLUSTER + 16].copy_from_slice(&self.cluster.to_le_bytes());
        out[FH_NAMESPACE..FH_NAMESPACE + 8].copy_from_slice(&self.namespace.to_le_bytes());
        out[FH_SLOT_COUNT..FH_SLOT_COUNT + 8].copy_from_slice(&self.slot_count.to_le_bytes());
        out[FH_SNAPSHOT_OP..FH_SNAPSHOT_OP + 8].copy_from_slice(&self.snapshot_op.to_le_bytes());
        out[FH_SNAPSHOT_CHECKSUM_KNOWN] = u8::from(self.snapshot_checksum.is_some());
        out[FH_SNAPSHOT_CHECKSUM..FH_SNAPSHOT_CHECKSUM + 16]
            .copy_from_slice(&self.snapshot_checksum.unwrap_or(0).to_le_bytes());
        let checksum = crate::header::checksum(&out[..FH_CHECKSUM]);
        out[FH_CHECKSUM..FH_CHECKSUM + 16].copy_from_slice(&checksum.to_le_bytes());
        debug_assert_eq!(FileHeader::decode(&out).ok(), Some(*self));
        out
    }

    fn decode(bytes: &[u8]) -> Result<FileHeader, JournalError> {
        let bytes = &bytes[..FH_ENCODED_BYTES];
        let u64_at = |offset: usize| u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap());
        let u128_at = |offset: usize| u128::from_le_bytes(bytes[offset..offset + 16].try_into().unwrap());
        if bytes.iter().all(|&b| b == 0) {
            return Err(JournalError::ZeroFilled);
        }
        if u64_at(FH_MAGIC) != JOURNAL_MAGIC {
            return Err(JournalError::BadMagic);
        }
        if crate::header::checksum(&bytes[..FH_CHECKSUM]) != u128_at(FH_CHECKSUM) {
            return Err(JournalError::FileHeaderCorrupt);
        }
        let version = u32::from_le_bytes(bytes[FH_VERSION..FH_VERSION + 4].try_into().unwrap());
        if version != JOURNAL_FORMAT_VERSION {
            return Err(JournalError::UnsupportedVersion { found: version });
        }
        let known = bytes[FH_SNAPSHOT_CHECKSUM_KNOWN];
        if known > 1 {
            return Err(JournalError::FileHeaderCorrupt);
        }
        Ok(FileHeader {
            cluster: u128_at(FH_CLUSTER),
            namespace: u64_at(FH_NAMESPACE),
            slot_count: u64_at(FH_SLOT_COUNT),
            message_size_max_bytes: u32::from_le_bytes(
                bytes[FH_MESSAGE_SIZE_MAX..FH_MESSAGE_SIZE_MAX + 4].try_into().unwrap(),
            ),
            snapshot_op: u64_at(FH_SNAPSHOT_OP),
            snapshot_checksum: (known == 1).then(|| u128_at(FH_SNAPSHOT_CHECKSUM)),
        })
    }

    fn check(&self, config: &JournalConfig) -> Result<(), JournalError> {
        if self.cluster != config.cluster {
            return Err(JournalError::WrongCluster { expected: config.cluster, found: self.cluster });
        }
        if self.namespace != config.namespace {
            return Err(JournalError::WrongNamespace { expected: config.namespace, found: self.namespace });
        }
        if self.slot_count != config.slot_count {
            return Err(JournalError::ConfigMismatch {
                field: "slot_count",
                expected: config.slot_count,
                found: self.slot_count,
            });
        }
        if self.message_size_max_bytes != config.message_size_max_bytes {
            return Err(JournalError::ConfigMismatch {
                field: "message_size_max_bytes",
                expected: u64::from(config.message_size_max_bytes),
                found: u64::from(self.message_size_max_bytes),
            });
        }
        Ok(())
    }
}

/// What a slot's prepare held at recovery.
// Transient, one per slot read during recovery: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
enum Slot {
    Empty,
    Valid(Header),
    Invalid,
    /// The header sector holds what no write of this slot leaves there:
    /// neither zeros nor a header of this slot, but filler, another slot's
    /// header, payload (a misdirected write) or a rotten header (a torn
    /// write keeps or loses whole sectors of its own slot, so it never
    /// does); or a body sector holds filler or a header. Whatever the slot
    /// held is gone, evidence or not.
    Overwritten,
}

/// What the header ring held for a slot.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy)]
enum HeaderCopy {
    Empty,
    Valid(Header),
    Invalid,
}

/// A slot judged from its prepare and its ring copy (see the module doc).
#[allow(clippy::large_enum_variant)]
enum SlotState {
    Empty,
    /// A valid prepare; `copy_stale` when its ring copy must be rewritten;
    /// `copy_damaged` when a place of its copy reads damaged (a copy of it
    /// may have been there).
    Valid {
        header: Header,
        copy_stale: bool,
        copy_damaged: bool,
    },
    /// Written and then damaged: the ring names `op`, the slot lost it.
    /// `named`: the copy's header, when nothing in the slot contradicts it
    /// (the replica may keep it in its log, bodiless, and repair the body).
    Faulty {
        op: u64,
        named: Option<Header>,
    },
    /// Invalid with nothing naming it: torn (or, below the head, missing).
    Torn {
        op: u64,
    },
    /// Both the prepare and its ring copy are invalid: what the slot held
    /// is lost with its evidence, so it is faulty too (module doc).
    Unknown {
        op: u64,
    },
    /// Empty, with a copy place of it damaged: a prepare written elsewhere
    /// whose copy was lost may have been here. Faulty below the head; above
    /// it nothing says it was written, and there is nothing to cut off.
    EmptyCopyDamaged {
        op: u64,
    },
}

/// A staged compaction as the journal runs it (`stage_drain_keeping_faulty`
/// .. `end_drain`), its window: from the stage the spare is the journal's
/// file, which every write and flush goes to alone, and the file it
/// retired stays, untouched but by a truncation, as the one the directory
/// names until the install's exchange is durable (module doc, "What it
/// costs").
#[derive(Debug)]
struct Window<F> {
    /// The file the stage retired: it holds every op the checkpoint covers
    /// and every op reported durable before the stage.
    retired: Rc<F>,
    /// The highest op a header of the retired file may name (no window
    /// write reaches it), for the next compaction's clearing of it.
    retired_op_written_max: u64,
    /// What the window's fsyncs of the spare reported, for the install.
    syncs: Rc<SpareSyncs>,
    through_op: u64,
    snapshot_checksum: Option<u128>,
    /// Ops a flush in the window made durable with their copy: in the spare
    /// alone, so acknowledged only once the exchange is durable
    /// (`end_drain` returns them).
    held: BTreeSet<u64>,
    /// Something was written to the spare or synced in it since the stage:
    /// a failed install then leaves no file that holds it all.
    changed: std::cell::Cell<bool>,
}

/// A compaction whose spare is written (not yet durable) and takes every
/// journal write from now on: its second half, which makes the spare
/// durable and the journal (`StagedDrain::install`), borrows no journal, so
/// it runs beside the appends; `PrepareJournal::end_drain` takes its
/// outcome. Only once the
/// checkpoint it follows is durable (`PrepareJournal::stage_drain_to`).
#[derive(Debug)]
pub struct StagedDrain<I: Io> {
    io: I,
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    config: JournalConfig,
    file_header: FileHeader,
    spare: Rc<I::File>,
    /// Another handle of the spare, for the install's own fsync.
    spare_own: I::File,
    spare_syncs: Rc<SpareSyncs>,
}

/// How a compaction's install ended (`StagedDrain::install`).
#[derive(Debug)]
pub struct InstalledDrain {
    outcome: Result<bool, DrainInstallError>,
}

#[derive(Debug)]
struct DrainInstallError {
    error: JournalError,
    /// The directory may name either file: the journal is poisoned.
    past_exchange: bool,
}

impl<I: Io> StagedDrain<I> {
    /// The compaction's second half (steps 2 to 4 of `drain`): fsync the
    /// spare and check its file header, exchange it with the journal
    /// (rename where unsupported), fsync the directory, reopen and check.
    /// The journal goes on appending meanwhile, to both files.
    pub async fn install(self) -> InstalledDrain {
        let before = |error| InstalledDrain { outcome: Err(DrainInstallError { error, past_exchange: false }) };
        let after = |error| InstalledDrain { outcome: Err(DrainInstallError { error, past_exchange: true }) };
        // Through its own handle, opened before any window fsync: on Linux
        // (4.13 on) every open file sees each writeback error once, so a
        // flush's fsync of the spare that reported one first does not hide
        // it here.
        if let Err(source) = self.spare_own.sync_data().await {
            return before(JournalError::Io { operation: "fsync tmp", source });
        }
        // And a window fsync that failed before this one ended dropped what
        // it covered: this one then found nothing to write and succeeded
        // (`SpareSyncs`). Checked with no await since: a window fsync
        // failing from here on fails only writes issued after the ones this
        // fsync made durable (the stage's among them), and poisons the
        // journal, so none of those is ever acknowledged.
        if self.spare_syncs.failed.get() {
            crate::marks::hit(crate::marks::COMPACTION_SPARE_SYNC_FAILED);
            return before(JournalError::Io {
                operation: "fsync tmp",
                source: io::Error::other("an fsync of the spare failed: its pages may never reach the device"),
            });
        }
        // The spare held a valid file header of its own (an older
        // `snapshot_op`): a lost or misdirected header write would leave it
        // in place, and the exchange would then make an older snapshot
        // durable. Check before the exchange, while the journal is intact.
        match file_header_reads_back(&*self.spare, &self.config, &self.file_header).await {
            Ok(true) => {}
            Ok(false) => return before(JournalError::FileHeaderCorrupt),
            Err(error) => return before(error),
        }
        let exchanged = match self.io.exchange(&self.tmp, &self.path).await {
            Ok(()) => true,
            Err(error) if error.kind() == io::ErrorKind::Unsupported => {
                if let Err(source) = self.io.rename(&self.tmp, &self.path).await {
                    return after(JournalError::Io { operation: "rename", source });
                }
                false
            }
            Err(source) => return after(JournalError::Io { operation: "exchange", source }),
        };
        if let Err(source) = self.io.sync_dir(&self.dir).await {
            return after(JournalError::Io { operation: "fsync dir", source });
        }
        // Reopen by name and check the directory names what we wrote.
        let file = match self.io.open(&self.path, OpenMode::ReadWrite).await {
            Ok(file) => file,
            Err(source) => return after(JournalError::Io { operation: "reopen", source }),
        };
        match file_header_reads_back(&file, &self.config, &self.file_header).await {
            Ok(true) => InstalledDrain { outcome: Ok(exchanged) },
            Ok(false) => after(JournalError::FileHeaderCorrupt),
            Err(error) => after(error),
        }
    }
}

/// `copy` (a copy place's bytes) is a valid copy of exactly `header`.
fn names_prepare(copy: &[u8], header: &Header) -> bool {
    Header::decode(copy).is_ok_and(|copy| copy.checksum == header.checksum)
}

/// A journal flush whose fdatasync is still to run (`PrepareJournal::flush_begin`):
/// a handle of the journal's file, so the fsync borrows no journal.
#[derive(Debug)]
pub struct FlushInFlight<F> {
    file: Rc<F>,
    /// In a compaction's window the file is its spare: the record of the
    /// spare's fsyncs its install reads.
    spare_syncs: Option<Rc<SpareSyncs>>,
    /// `PrepareJournal::drains_installed` when the flush began.
    drains_installed: u64,
    /// The flush wrote ring copies (for the error's wording).
    copies: bool,
}

impl<F: IoFile> FlushInFlight<F> {
    /// The fdatasync to run: the journal's file (in a window, the spare,
    /// whose failure the install must learn).
    pub fn syncer(&self) -> impl Future<Output = io::Result<()>> + 'static + use<F> {
        let (file, syncs) = (self.file.clone(), self.spare_syncs.clone());
        async move { sync_recorded(&*file, syncs.as_deref()).await }
    }
}

/// The fsyncs of a staged compaction's spare that the journal runs (its
/// window's flushes, truncations and poisonings), as its install must see
/// them: after a failed fsync
/// Linux marks the dirty pages clean and the next fsync of that file
/// reports success for bytes the device never got (fsyncgate), so the
/// install's own fsync proves nothing if one of these failed, or was in
/// flight while it ran (disk-rot seed 2011: a window flush's fsync of the
/// spare failed, the install's fsync then succeeded, the exchange made a
/// spare whose file header never reached the device the journal, and the
/// replica could not restart).
#[derive(Debug, Default)]
pub struct SpareSyncs {
    failed: std::cell::Cell<bool>,
}

/// fdatasync `file`; a failure is recorded in `syncs` when `file` is a
/// staged compaction's spare (its install must learn it: `SpareSyncs`).
async fn sync_recorded<F: IoFile>(file: &F, syncs: Option<&SpareSyncs>) -> io::Result<()> {
    let synced = file.sync_data().await;
    if let (Err(_), Some(syncs)) = (&synced, syncs) {
        syncs.failed.set(true);
    }
    synced
}

/// fdatasync the `retired` file and a compaction's `spare` at once (both
/// issued before either is awaited, so the device works on both): the
/// first error is the answer. A failure of the spare's is recorded for the
/// install (`SpareSyncs`).
async fn sync_both<F: IoFile>(retired: &F, spare: &F, syncs: &SpareSyncs) -> io::Result<()> {
    let mut first = std::pin::pin!(retired.sync_data());
    let mut second = std::pin::pin!(sync_recorded(spare, Some(syncs)));
    let (mut first_done, mut second_done) = (None, None);
    std::future::poll_fn(|cx| {
        if first_done.is_none()
            && let std::task::Poll::Ready(result) = first.as_mut().poll(cx)
        {
            first_done = Some(result);
        }
        if second_done.is_none()
            && let std::task::Poll::Ready(result) = second.as_mut().poll(cx)
        {
            second_done = Some(result);
        }
        if first_done.is_some() && second_done.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    first_done.expect("polled to completion").and(second_done.expect("polled to completion"))
}

/// The write-ahead log of one VSR group.
#[derive(Debug)]
pub struct PrepareJournal<I: Io> {
    io: I,
    dir: PathBuf,
    path: PathBuf,
    config: JournalConfig,
    writable: bool,
    poisoned: bool,
    /// Shared so that an fdatasync may run while the journal is not
    /// borrowed (`flush_begin`: the node keeps handling frames meanwhile).
    file: Rc<I::File>,
    /// The staged compaction's window, if any: `file` is its spare, every
    /// write and flush goes to it alone, and what a flush makes durable is
    /// acknowledged only once the install's exchange is durable (module
    /// doc, "What it costs").
    window: Option<Window<I::File>>,
    /// Compactions installed in this life: a flush that began before one
    /// was staged synced the retired file only, and the install's fsync of
    /// the spare (after the stage copied what that flush wrote) made the
    /// same bytes durable in the file that is now the journal.
    drains_installed: u64,
    /// A flush's fdatasync is running (`flush_begin`..`flush_end`): nothing
    /// may be written to the file until it ends, so what it makes durable
    /// is exactly what was written before it began.
    flush_in_flight: bool,
    snapshot_op: u64,
    /// Checksum of the prepare at `snapshot_op`; `None` on a fresh journal
    /// (the first prepare may chain to any root).
    snapshot_checksum: Option<u128>,
    /// The highest op in the log (present or awaiting repair); `None` when
    /// nothing after `snapshot_op` is in the log.
    op_head: Option<u64>,
    /// Headers of the live ops present on disk (bounded by `slot_count`).
    headers: BTreeMap<u64, Header>,
    /// Live ops at or below `op_head` that are missing or corrupt.
    missing: BTreeSet<u64>,
    /// Ops written since the last fsync: neither the prepare nor its ring
    /// copy is durable.
    copies_pending: BTreeSet<u64>,
    /// Ops whose prepare an fsync made durable but whose ring copy is not
    /// written yet: the next `flush` writes them (the copy must never be
    /// durable before its prepare: module doc).
    copies_ready: BTreeSet<u64>,
    /// Ops whose copy a prepare write carried (module doc, "Carried
    /// copies") and that the next fsync makes durable with it, as if
    /// `flush` had written it to the ring.
    copies_carried: BTreeSet<u64>,
    /// Ops of `copies_pending` and `copies_ready` written while no byte of
    /// the file named them (above `file_op_written_max`): no copy of them
    /// is anywhere, so a later write may carry theirs.
    copies_fresh: BTreeSet<u64>,
    /// Bound on the op any header of the current file, in a slot or the
    /// ring, may name (what this process wrote, or the whole window when
    /// the file's history is unknown). When `drain` retires the file as the
    /// spare, this says which of its stale slots the next compaction must
    /// clear; `unvouch_copies` reads no copy of an op above it.
    file_op_written_max: u64,
    /// What is known of the file at the tmp path (the spare).
    spare: Spare,
}

/// What the journal knows of the file at the tmp path: the spare, the file
/// the last compaction retired, which the next one rewrites in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spare {
    /// No slot header in it names an op above this (this process wrote
    /// all of it): only the slots of ops up to here need clearing.
    Known { op_written_max: u64 },
    /// Written by an earlier process (after open), or a compaction into it
    /// failed in this life: any of its slots, carried-copies regions or
    /// ring entries may name an op of the next compaction's window, and
    /// after a failed fsync (in this life or the one before a process
    /// crash) its cached pages may differ from the device, with no later
    /// fsync writing them. The next compaction clears it in place: a zero
    /// page over every slot of the new window it does not carry, every
    /// carried-copies region and the whole ring, each page written whole
    /// (dirty again, so the install's fsync writes it), and nothing of the
    /// spare is read. Recovery reads no byte of a slot past a header page
    /// that reads zeros, so what the rest of such a slot holds, on the
    /// device or in the cache, is never vouched for.
    ///
    /// Until session 23 it was truncated and resized instead (which drops
    /// those pages): on a 64 MiB spare that stalled the node 30-100 ms at
    /// the first compaction after every start, inline (`drain_write_tmp`
    /// runs in the stage), and left the file sparse, so for a whole lap
    /// every append allocated blocks and every fdatasync committed that
    /// metadata (`zero_fill`: 5.1k against 9.9k fsyncs a second).
    ///
    /// A node clears it beside its appends before that compaction instead
    /// (`spare_clearer`, `Clearing`): inline in the stage, the clear stalled
    /// the node 6.7-24 ms per group once per start on the server's 64 MiB
    /// journals (session 23).
    Untrusted,
    /// A `SpareClear` is clearing it beside the journal: nothing else
    /// writes it until `end_spare_clear` takes the outcome.
    Clearing,
}

/// How many writes a `SpareClear` makes between two yields to whoever
/// polls it (each write one slot's region and first page: 8 KiB).
pub const SPARE_CLEAR_WRITES_PER_YIELD: u64 = 16;

/// The clear of an untrusted spare (`Spare::Untrusted`), run beside the
/// journal by a future that borrows nothing of it
/// (`PrepareJournal::spare_clearer`, `run`, then
/// `PrepareJournal::end_spare_clear`): every slot's first page and its
/// carried-copies region and the whole ring written with zeros, each page
/// whole, then one fsync. Nothing of the spare is read. Afterwards no byte
/// of it names an op, on the device as in the cache, so the next
/// compaction's stage clears nothing of it. A spare that is missing or of
/// another size is preallocated instead (`zero_fill`), so the journal it
/// becomes is not sparse. The spare is scratch that recovery never reads:
/// a crash or an error halfway leaves it untrusted, nothing more.
#[derive(Debug)]
pub struct SpareClear<I: Io> {
    io: I,
    tmp: PathBuf,
    config: JournalConfig,
}

/// How a `SpareClear` ended, for `PrepareJournal::end_spare_clear`.
#[derive(Debug)]
pub struct SpareCleared {
    outcome: Result<(), JournalError>,
}

impl SpareCleared {
    /// The clear's error, if it failed (the next stage then clears the
    /// spare inline, as without it).
    pub fn error(&self) -> Option<&JournalError> {
        self.outcome.as_ref().err()
    }
}

impl<I: Io> SpareClear<I> {
    /// Clear the spare; yields every `SPARE_CLEAR_WRITES_PER_YIELD` writes.
    pub async fn run(self) -> SpareCleared {
        SpareCleared { outcome: self.clear().await }
    }

    async fn clear(&self) -> Result<(), JournalError> {
        let config = self.config;
        let file = self.io.open(&self.tmp, OpenMode::ReadWriteCreate).await.map_err(io_error("create tmp"))?;
        if file.size_bytes().await.map_err(io_error("stat tmp"))? != config.file_size_bytes() {
            return zero_fill(&file, config.file_size_bytes()).await;
        }
        let ring = vec![0; config.headers_zone_size_bytes() as usize];
        let result = write_pages(&file, ring, config.header_copy_offset(0), &nothing_known).await;
        result.map_err(io_error("clear tmp ring"))?;
        for slot in 0..config.slot_count {
            if slot % SPARE_CLEAR_WRITES_PER_YIELD == 0 {
                crate::io::yield_once().await;
            }
            // The slot's carried-copies region and its header page: adjacent.
            let (offset, length) = (config.copies_region_offset(slot), COPIES_REGION_BYTES + PAGE_SIZE_BYTES);
            let result = write_pages(&file, vec![0; length as usize], offset, &nothing_known).await;
            result.map_err(io_error("clear tmp slot"))?;
        }
        file.sync_data().await.map_err(io_error("fsync cleared tmp"))
    }
}

impl<I: Io> PrepareJournal<I> {
    /// Create an empty journal. Durable when this returns Ok: file header and
    /// slots are fsynced and so is the directory entry.
    pub async fn create(io: &I, dir: &Path, config: JournalConfig) -> Result<Self, JournalError> {
        config.validate()?;
        let path = journal_path(dir, config.namespace);
        // The dir durable in its parent first: a file in a dir whose entry
        // is not durable vanishes with it at a power loss, synced or not.
        crate::io::create_dir_durable(io, dir).await.map_err(io_error("create_dir"))?;
        let file = io.open(&path, OpenMode::ReadWriteCreate).await.map_err(io_error("create"))?;
        if file.size_bytes().await.map_err(io_error("stat"))? != 0 {
            return Err(JournalError::AlreadyExists { path });
        }
        let file_header = FileHeader {
            cluster: config.cluster,
            namespace: config.namespace,
            slot_count: config.slot_count,
            message_size_max_bytes: config.message_size_max_bytes,
            snapshot_op: 0,
            snapshot_checksum: None,
        };
        // Preallocate both files compaction alternates between, so neither
        // appends nor a compaction ever allocate a block (`zero_fill`).
        zero_fill(&file, config.file_size_bytes()).await?;
        let spare = io.open(&journal_path_tmp(dir, config.namespace), OpenMode::ReadWriteCreate).await;
        let spare = spare.map_err(io_error("create spare"))?;
        spare.set_len(0).await.map_err(io_error("truncate spare"))?;
        zero_fill(&spare, config.file_size_bytes()).await?;
        drop(spare);
        write_file_header(&file, &config, &file_header).await.map_err(io_error("write file header"))?;
        file.sync_data().await.map_err(io_error("fsync"))?;
        if !file_header_reads_back(&file, &config, &file_header).await? {
            return Err(JournalError::FileHeaderCorrupt);
        }
        io.sync_dir(dir).await.map_err(io_error("fsync dir"))?;
        Ok(PrepareJournal {
            io: io.clone(),
            dir: dir.to_path_buf(),
            path,
            config,
            writable: true,
            poisoned: false,
            file: Rc::new(file),
            window: None,
            drains_installed: 0,
            flush_in_flight: false,
            snapshot_op: 0,
            snapshot_checksum: None,
            op_head: None,
            headers: BTreeMap::new(),
            missing: BTreeSet::new(),
            copies_pending: BTreeSet::new(),
            copies_ready: BTreeSet::new(),
            copies_carried: BTreeSet::new(),
            copies_fresh: BTreeSet::new(),
            file_op_written_max: 0,
            spare: Spare::Known { op_written_max: 0 },
        })
    }

    /// Open and recover an existing journal: verify every slot, rebuild the
    /// header index, truncate a torn tail, and report
    /// corrupt or missing ops in the middle for repair from peers.
    /// Every unknown slot counts toward the head: without the superblock,
    /// nothing bounds what this replica acknowledged (`open_above`).
    pub async fn open(
        io: &I,
        dir: &Path,
        config: JournalConfig,
        mode: OpenMode,
    ) -> Result<(Self, Recovery), JournalError> {
        Self::open_inner(io, dir, config, mode, None).await
    }

    /// `open` for a replica whose superblock names ops up to
    /// `durable_log_op_max` (its view headers' top, its commit, its durable
    /// checkpoint's anchor): an unknown
    /// slot above a gap over that op is cut off as torn (module doc, "An
    /// unknown slot beyond a gap").
    pub async fn open_above(
        io: &I,
        dir: &Path,
        config: JournalConfig,
        mode: OpenMode,
        durable_log_op_max: u64,
    ) -> Result<(Self, Recovery), JournalError> {
        Self::open_inner(io, dir, config, mode, Some(durable_log_op_max)).await
    }

    async fn open_inner(
        io: &I,
        dir: &Path,
        config: JournalConfig,
        mode: OpenMode,
        durable_log_op_max: Option<u64>,
    ) -> Result<(Self, Recovery), JournalError> {
        config.validate()?;
        let path = journal_path(dir, config.namespace);
        let writable = mode.writable();
        let file_mode = if writable { OpenMode::ReadWrite } else { OpenMode::ReadOnly };
        let file = match io.open(&path, file_mode).await {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(JournalError::Missing { path }),
            Err(error) => return Err(JournalError::Io { operation: "open", source: error }),
        };
        // Never trust the page cache (module doc): what a crashed process
        // wrote but never synced must be durable before recovery reads it,
        // or the replica would vouch for a prepare a power loss takes back.
        // Read-only: no fsync, a reader must not change what the disk keeps.
        if writable {
            file.sync_data().await.map_err(io_error("fsync at open"))?;
            io.sync_dir(dir).await.map_err(io_error("fsync dir at open"))?;
        }
        let size_bytes = file.size_bytes().await.map_err(io_error("stat"))?;
        if size_bytes < FILE_HEADER_SIZE_BYTES {
            return Err(JournalError::Truncated { size_bytes, expected_bytes: config.file_size_bytes() });
        }
        let file_header = Self::read_file_header(&file, &config, size_bytes, writable).await?;
        file_header.check(&config)?;
        if size_bytes != config.file_size_bytes() {
            return Err(JournalError::Truncated { size_bytes, expected_bytes: config.file_size_bytes() });
        }
        // A file at the tmp path is the spare (the file the last compaction
        // retired) or what is left of a compaction that crashed before its
        // exchange was durable. Either way the journal file is
        // authoritative and the tmp file is never read: the next `drain`
        // overwrites everything of it that recovery could look at, so it is
        // kept, blocks allocated, as that compaction's scratch file.
        let file = Rc::new(file);
        let fresh = || PrepareJournal {
            io: io.clone(),
            dir: dir.to_path_buf(),
            path: path.clone(),
            config,
            writable,
            poisoned: false,
            file: file.clone(),
            window: None,
            drains_installed: 0,
            flush_in_flight: false,
            snapshot_op: file_header.snapshot_op,
            snapshot_checksum: file_header.snapshot_checksum,
            op_head: None,
            headers: BTreeMap::new(),
            missing: BTreeSet::new(),
            copies_pending: BTreeSet::new(),
            copies_ready: BTreeSet::new(),
            copies_carried: BTreeSet::new(),
            copies_fresh: BTreeSet::new(),
            // Unknown history until recovery has read every header: any
            // slot may hold one naming an op of the window (garbage of an
            // old torn write included). `recover` lowers it to what it read.
            file_op_written_max: file_header.snapshot_op + config.slot_count,
            spare: Spare::Untrusted,
        };
        let mut journal = fresh();
        // Cold after a reboot, what reads see comes from the device too.
        prefetch_recovery_reads(&*file, &config);
        let cache_recovery = journal.recover(durable_log_op_max, RecoveryPass::Cache).await?;
        if !writable {
            return Ok((journal, cache_recovery));
        }
        // Recovery made every valid prepare it read durable (rewriting the
        // ones a failed fsync may have left in the cache alone) with its
        // ring copy. What else a failed fsync left cached is not
        // self-checking: a slot a truncation zeroed reads empty while the
        // device holds the dropped prepare, and a power loss would bring it
        // back under a replica that acted on its absence. So the clean
        // pages go (Linux may keep one it cannot drop: the first pass
        // already made every prepare it vouches for durable), and recovery
        // runs again on what the device holds. The first pass's view is
        // dropped but for the torn slots it cleared (durably), which the
        // second finds empty.
        file.evict_clean_pages().await.map_err(io_error("evict cached pages at open"))?;
        prefetch_recovery_reads(&*file, &config);
        drop(journal);
        let mut journal = fresh();
        let mut recovery = journal.recover(durable_log_op_max, RecoveryPass::Device).await?;
        if (&recovery.ops_recovered, &recovery.repair_ops)
            != (&cache_recovery.ops_recovered, &cache_recovery.repair_ops)
        {
            crate::marks::hit(crate::marks::JOURNAL_OPEN_DEVICE_DIFFERED);
        }
        let mut torn: BTreeSet<u64> = cache_recovery.torn_tail_truncated.into_iter().collect();
        torn.extend(recovery.torn_tail_truncated.iter().copied());
        torn.retain(|op| !recovery.ops_recovered.contains(op) && !recovery.repair_ops.contains(op));
        recovery.torn_tail_truncated = torn.into_iter().collect();
        Ok((journal, recovery))
    }

    /// The file header: the first copy, or the second when the first does
    /// not decode (a misdirected write or rot; module doc). In writable
    /// mode a copy that does not decode is rewritten from the other and
    /// synced, so one more fault later still leaves a good copy. Neither
    /// decoding is the first copy's error.
    async fn read_file_header(
        file: &I::File,
        config: &JournalConfig,
        size_bytes: u64,
        writable: bool,
    ) -> Result<FileHeader, JournalError> {
        let read = |offset| async move {
            let (result, bytes) =
                crate::io::read_exact_retrying(file, vec![0; FILE_HEADER_SIZE_BYTES as usize], offset).await;
            result.map_err(io_error("read file header")).and_then(|()| FileHeader::decode(&bytes))
        };
        let first = read(0).await;
        // The second copy is only where the geometry says when the file is
        // whole; a file of another size is refused as `Truncated` anyway.
        let second_offset = config.file_header_copy_offset();
        let whole = size_bytes == config.file_size_bytes();
        let second = if whole { Some(read(second_offset).await) } else { None };
        let (header, damaged_offset) = match (first, second) {
            (Ok(header), Some(Err(_))) => (header, Some(second_offset)),
            (Ok(header), _) => (header, None),
            (Err(_), Some(Ok(header))) => (header, Some(0)),
            (Err(error), _) => return Err(error),
        };
        if let (Some(offset), true) = (damaged_offset, writable) {
            let (result, _) = file.write_all_at(header.encode(), offset).await;
            result.map_err(io_error("rewrite file header copy"))?;
            file.sync_data().await.map_err(io_error("fsync file header copy"))?;
        }
        Ok(header)
    }

    /// A read error is an invalid slot, not a failed recovery: the header
    /// ring tells whether it is faulty (repair from peers) or torn.
    async fn read_slot(&self, slot: u64, header_read: Option<Vec<u8>>) -> Slot {
        let offset = self.config.slot_offset(slot);
        let bytes = match header_read {
            Some(bytes) => bytes,
            None => {
                let (result, bytes) =
                    crate::io::read_exact_retrying(&*self.file, vec![0; HEADER_SIZE_BYTES], offset).await;
                if result.is_err() {
                    return Slot::Invalid;
                }
                bytes
            }
        };
        debug_assert_eq!(bytes.len(), HEADER_SIZE_BYTES);
        if bytes.iter().all(|&b| b == 0) {
            return Slot::Empty;
        }
        let Some(header) = self.decode_slot_header(slot, &bytes) else {
            // Neither zeros nor a header of this slot: no write of this
            // slot leaves that, torn or not (module doc, "Filler, not
            // zeros"; disk-rot seed 61823 put a carrier's payload here).
            return Slot::Overwritten;
        };
        if header.op <= self.snapshot_op {
            // Checkpointed before the last compaction: not part of the log.
            return Slot::Empty;
        }
        if header.op > self.snapshot_op + self.config.slot_count {
            return Slot::Invalid;
        }
        // Whole sectors: a misdirected write shows at a sector boundary,
        // and the last one may hold only a few bytes of the body.
        let sectors_after_header = sectors_bytes(u64::from(header.size)) as usize - HEADER_SIZE_BYTES;
        let (result, sectors) = crate::io::read_exact_retrying(
            &*self.file,
            vec![0; sectors_after_header],
            offset + HEADER_SIZE_BYTES as u64,
        )
        .await;
        if result.is_err() {
            return Slot::Invalid;
        }
        if header.valid_body(&sectors[..header.body_size_bytes()]).is_err() {
            // A torn write leaves old body sectors (an older op's payload
            // or zeros); filler or a header in one is a misdirected write
            // that landed there, perhaps the one that carried this op's
            // only copy (disk-rot seed 40812: op 17's write, carrying op
            // 16's copy, landed in op 16's body; op 16 was the head).
            return if body_holds_misdirected_sector(&sectors) { Slot::Overwritten } else { Slot::Invalid };
        }
        Slot::Valid(header)
    }

    /// A prepare header of this group that belongs in `slot`, or `None`.
    fn decode_slot_header(&self, slot: u64, bytes: &[u8]) -> Option<Header> {
        let header = Header::decode(bytes).ok()?;
        let fits = header.command == Command::Prepare
            && header.cluster == self.config.cluster
            && header.namespace == self.config.namespace
            && header.op % self.config.slot_count == slot
            && header.size >= HEADER_SIZE_BYTES as u32
            && header.size <= self.config.message_size_max_bytes;
        fits.then_some(header)
    }

    /// The whole header ring, one entry per slot. A read error makes the
    /// copies it covers invalid (never a failed open), and only those: a
    /// chunk whose read fails is read again copy by copy, so one latent
    /// sector error costs the copies in its sector. Invalidating the whole
    /// chunk (the whole ring: 64 slots in the simulator) lost an
    /// acknowledged op (disk-rot seed 1814, Recovery: a read EIO placed at
    /// op 3 with 16 ops committed, and replica 0 lost op 18; the seed
    /// passes with this per-copy read; the exact path is not pinned by a
    /// story yet).
    async fn read_header_copies(&self) -> Vec<HeaderCopy> {
        let slot_count = self.config.slot_count;
        let mut copies = Vec::with_capacity(slot_count as usize);
        let mut first = 0;
        while first < slot_count {
            let count = HEADERS_ZONE_READ_COPIES_MAX.min(slot_count - first);
            let buffer = vec![0; (count as usize) * HEADER_SIZE_BYTES];
            let (result, bytes) =
                crate::io::read_exact_retrying(&*self.file, buffer, self.config.header_copy_offset(first)).await;
            for (index, copy) in bytes.chunks_exact(HEADER_SIZE_BYTES).enumerate() {
                let slot = first + index as u64;
                copies.push(if result.is_err() {
                    self.read_header_copy(slot).await
                } else {
                    self.judge_header_copy(slot, copy)
                });
            }
            first += count;
        }
        debug_assert_eq!(copies.len() as u64, slot_count);
        copies
    }

    /// One ring copy read on its own (after its chunk's read failed).
    async fn read_header_copy(&self, slot: u64) -> HeaderCopy {
        let offset = self.config.header_copy_offset(slot);
        let (result, bytes) = crate::io::read_exact_retrying(&*self.file, vec![0; HEADER_SIZE_BYTES], offset).await;
        if result.is_err() { HeaderCopy::Invalid } else { self.judge_header_copy(slot, &bytes) }
    }

    fn judge_header_copy(&self, slot: u64, copy: &[u8]) -> HeaderCopy {
        if copy.iter().all(|&b| b == 0) || copy.iter().all(|&b| b == FILLER_BYTE) {
            HeaderCopy::Empty
        } else {
            self.decode_slot_header(slot, copy).map_or(HeaderCopy::Invalid, HeaderCopy::Valid)
        }
    }

    /// The carried copies of the slots whose live-window op is in
    /// `first..=last`, by slot: every entry that may vouch for it, in the
    /// regions of the `copies_carried_max` slots after it (each region read
    /// once, with its slot's header, in one read). A read error makes a
    /// region's entries invalid.
    /// Also returns the highest live-window op of a slot whose region holds
    /// a live or an invalid entry: that slot's prepare write carried it, even
    /// when the prepare itself was torn away (its region sector kept), so a
    /// later write of that slot must not count it as holding nothing live.
    async fn read_carried_copies(&self, first: u64, last: u64) -> CarriedRead {
        let slot_count = self.config.slot_count;
        let carried_max = self.config.copies_carried_max();
        let live = |op: u64| op > self.snapshot_op && op <= self.snapshot_op + slot_count;
        let mut carriers_named_max = self.snapshot_op;
        let mut copies: BTreeMap<u64, Vec<HeaderCopy>> = BTreeMap::new();
        let mut slot_headers: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let carrier_last = (last + carried_max).min(first + slot_count);
        for carrier in first + 1..=carrier_last {
            let carrier_slot = carrier % slot_count;
            let region_offset = self.config.copies_region_offset(carrier);
            // The region and the header right after it in one read: one
            // device request per slot, not two, when a start reads the file
            // from the device (`RecoveryPass::Device`, a start after a
            // reboot). A failed read is read again as the two parts, so a
            // bad sector costs only what it held.
            let (result, mut bytes) = crate::io::read_exact_retrying(
                &*self.file,
                vec![0; (COPIES_REGION_BYTES as usize) + HEADER_SIZE_BYTES],
                region_offset,
            )
            .await;
            let (result, region) = if result.is_ok() {
                slot_headers.insert(carrier_slot, bytes.split_off(COPIES_REGION_BYTES as usize));
                (result, bytes)
            } else {
                crate::io::read_exact_retrying(&*self.file, vec![0; COPIES_REGION_BYTES as usize], region_offset).await
            };
            for distance in 1..=carried_max {
                let slot = (carrier_slot + slot_count - distance) % slot_count;
                let window_op = self.window_op(slot);
                if window_op < first || window_op > last {
                    continue;
                }
                let at = (COPIES_REGION_BYTES - distance * HEADER_SIZE_BYTES as u64) as usize;
                let entry = &region[at..at + HEADER_SIZE_BYTES];
                let copy = if result.is_err() { HeaderCopy::Invalid } else { self.judge_header_copy(slot, entry) };
                if matches!(copy, HeaderCopy::Invalid) || matches!(copy, HeaderCopy::Valid(header) if live(header.op)) {
                    carriers_named_max = carriers_named_max.max(self.window_op(carrier_slot));
                }
                copies.entry(slot).or_default().push(copy);
            }
        }
        CarriedRead { copies, carriers_named_max, slot_headers }
    }

    /// Hint the device to read the bodies `read_slot` will read after these
    /// headers (`prefetch_recovery_reads`): every one that decodes as a
    /// prepare of its slot.
    fn prefetch_bodies(&self, slot_headers: &BTreeMap<u64, Vec<u8>>) {
        for (&slot, bytes) in slot_headers {
            if let Some(header) = self.decode_slot_header(slot, bytes) {
                let body_bytes = sectors_bytes(u64::from(header.size)) - HEADER_SIZE_BYTES as u64;
                self.file.prefetch(self.config.slot_offset(slot) + HEADER_SIZE_BYTES as u64, body_bytes);
            }
        }
    }

    /// The op `slot` would hold in the live window.
    fn window_op(&self, slot: u64) -> u64 {
        let slot_count = self.config.slot_count;
        let first = self.snapshot_op + 1;
        first + (slot + slot_count - first % slot_count) % slot_count
    }

    /// Judge every slot from its prepare and its ring copy (module doc table).
    /// Also returns the highest op any header of the window's slots, ring
    /// copies and carried copies names: the window's end when one of them
    /// does not decode (it may have named anything), so that bound is a
    /// sound `file_op_written_max` after open.
    async fn slot_states(&self) -> (Vec<SlotState>, u64) {
        self.slot_states_named(self.snapshot_op + 1, self.snapshot_op + self.config.slot_count).await
    }

    async fn slot_states_of(&self, first: u64, last: u64) -> Vec<SlotState> {
        self.slot_states_named(first, last).await.0
    }

    /// `slot_states` of the slots whose live-window op is in `first..=last`
    /// (every state a slot can have names that op), in slot order.
    async fn slot_states_named(&self, first: u64, last: u64) -> (Vec<SlotState>, u64) {
        let window_last = self.snapshot_op + self.config.slot_count;
        let copies = self.read_header_copies().await;
        let CarriedRead { copies: mut carried, carriers_named_max, mut slot_headers } =
            self.read_carried_copies(first, last).await;
        self.prefetch_bodies(&slot_headers);
        let mut named_max = carriers_named_max;
        let mut name = |copy: &HeaderCopy| match copy {
            HeaderCopy::Empty => {}
            HeaderCopy::Valid(header) => named_max = named_max.max(header.op),
            HeaderCopy::Invalid => named_max = window_last,
        };
        let mut states = Vec::with_capacity(copies.len());
        let live = |op: u64| op > self.snapshot_op && op <= self.snapshot_op + self.config.slot_count;
        let live_copy = |copy: &HeaderCopy| match *copy {
            HeaderCopy::Valid(copy) if live(copy.op) => Some(copy),
            _ => None,
        };
        for (slot, copy) in (0..self.config.slot_count).zip(copies) {
            let window_op = self.window_op(slot);
            if window_op < first || window_op > last {
                continue;
            }
            // The ring copy when it names a live op (it is never older than
            // a carried one: `copies_to_carry`), else a carried one. Carried
            // copies that disagree are evidence of damage, never a torn write.
            let carried = carried.remove(&slot).unwrap_or_default();
            let carried_live: Vec<Header> = carried.iter().filter_map(live_copy).collect();
            let disagree = carried_live.windows(2).any(|pair| pair[0] != pair[1]);
            let ring_live = live_copy(&copy);
            let copy_op = ring_live.or(carried_live.first().copied());
            let any_invalid =
                matches!(copy, HeaderCopy::Invalid) || carried.iter().any(|copy| matches!(copy, HeaderCopy::Invalid));
            let slot_read = self.read_slot(slot, slot_headers.remove(&slot)).await;
            name(&copy);
            carried.iter().for_each(&mut name);
            name(&match &slot_read {
                Slot::Empty => HeaderCopy::Empty,
                Slot::Valid(header) => HeaderCopy::Valid(*header),
                Slot::Invalid | Slot::Overwritten => HeaderCopy::Invalid,
            });
            let state = match (slot_read, copy_op) {
                (Slot::Valid(header), _) if self.headers.get(&header.op) == Some(&header) => {
                    // Written in this life and indexed: its copy may still be
                    // pending until the next sync.
                    SlotState::Valid { header, copy_stale: false, copy_damaged: any_invalid }
                }
                // Copies that disagree, or a slot holding another version of
                // the op: which header is the op's is not known.
                (_, Some(copy)) if disagree && ring_live.is_none() => SlotState::Faulty { op: copy.op, named: None },
                (Slot::Valid(header), Some(copy)) if copy.op > header.op => {
                    SlotState::Faulty { op: copy.op, named: Some(copy) }
                }
                (Slot::Valid(header), Some(copy)) if copy.op == header.op && copy.checksum != header.checksum => {
                    SlotState::Faulty { op: header.op, named: None }
                }
                (Slot::Valid(header), copy) => SlotState::Valid {
                    header,
                    copy_stale: copy.is_none_or(|copy| copy != header),
                    copy_damaged: any_invalid,
                },
                (Slot::Empty | Slot::Invalid | Slot::Overwritten, Some(copy)) => {
                    if ring_live.is_none() {
                        crate::marks::hit(crate::marks::JOURNAL_CARRIED_COPY_NAMES_FAULTY);
                    }
                    SlotState::Faulty { op: copy.op, named: Some(copy) }
                }
                // An empty slot whose copy places are damaged may be a
                // prepare write that went elsewhere (the slot kept what it
                // had) whose only copy rotted: below the head it is no
                // repair gap but faulty (disk-rot seed 13111: op 18's write
                // misdirected far away, then a read error on the region
                // carrying its copy). Above the head nothing says it was
                // written, and an empty slot is not cut off as torn (the
                // journal_recovery fuzz model's rule for an invalid copy).
                (Slot::Empty, None) if any_invalid => SlotState::EmptyCopyDamaged { op: window_op },
                (Slot::Empty, None) => SlotState::Empty,
                // Overwritten by a misdirected write: the op it held may
                // have been acknowledged with its only copy in that very
                // write (module doc, "Filler, not zeros"), so above the head
                // too it is faulty and counts toward the head.
                (Slot::Overwritten, None) => {
                    crate::marks::hit(crate::marks::JOURNAL_SLOT_OVERWRITTEN_UNKNOWN);
                    SlotState::Unknown { op: window_op }
                }
                (Slot::Invalid, None) if any_invalid => SlotState::Unknown { op: window_op },
                (Slot::Invalid, None) => SlotState::Torn { op: window_op },
            };
            states.push(state);
        }
        (states, named_max.min(window_last))
    }

    async fn recover(&mut self, durable_log_op_max: Option<u64>, pass: RecoveryPass) -> Result<Recovery, JournalError> {
        let (states, named_max) = self.slot_states().await;
        // What this file's bytes name bounds what a later write may find
        // in it: a clean file (after a format or a clean stop) lets the
        // next appends carry copies at once (module doc, "Carried copies").
        // With damage found, the whole window, as before: the evidence of a
        // faulty op may sit in a region a fresh write would zero.
        let damaged = states.iter().any(|state| matches!(state, SlotState::Faulty { .. } | SlotState::Unknown { .. }));
        self.file_op_written_max = if damaged { self.snapshot_op + self.config.slot_count } else { named_max };
        let mut valid: BTreeMap<u64, Header> = BTreeMap::new();
        let mut faulty: BTreeSet<u64> = BTreeSet::new();
        // Both the prepare and its ring copy invalid: faulty, head included.
        let mut unknown: BTreeSet<u64> = BTreeSet::new();
        let mut torn_ops: BTreeSet<u64> = BTreeSet::new();
        let mut copy_damaged_ops: BTreeSet<u64> = BTreeSet::new();
        // Valid prepares a place of whose copy reads damaged.
        let mut valid_copy_damaged: BTreeSet<u64> = BTreeSet::new();
        let mut copies_stale: Vec<Header> = Vec::new();
        for state in states {
            match state {
                // Below the head it is missing like any slot without a valid
                // prepare (the loop below); above it, nothing.
                SlotState::Empty => {}
                SlotState::EmptyCopyDamaged { op } => {
                    copy_damaged_ops.insert(op);
                }
                SlotState::Valid { header, copy_stale, copy_damaged } => {
                    if copy_damaged {
                        valid_copy_damaged.insert(header.op);
                    }
                    let previous = valid.insert(header.op, header);
                    assert!(previous.is_none(), "op maps to exactly one slot");
                    if copy_stale {
                        copies_stale.push(header);
                    }
                }
                SlotState::Faulty { op, .. } => {
                    faulty.insert(op);
                }
                SlotState::Torn { op } => {
                    torn_ops.insert(op);
                }
                SlotState::Unknown { op } => {
                    unknown.insert(op);
                }
            }
        }
        let beyond_gap = durable_log_op_max
            .map(|floor| self.unknowns_beyond_a_gap(floor, &valid, &faulty, &unknown, &copy_damaged_ops))
            .unwrap_or_default();
        for op in beyond_gap {
            crate::marks::hit(crate::marks::JOURNAL_UNKNOWN_BEYOND_GAP_TORN);
            unknown.remove(&op);
            torn_ops.insert(op);
        }
        let cut_from = durable_log_op_max.and_then(|floor| {
            let stale: BTreeSet<u64> = copies_stale.iter().map(|header| header.op).collect();
            let damaged =
                faulty.iter().chain(&unknown).chain(&copy_damaged_ops).chain(&valid_copy_damaged).copied().collect();
            self.uncopied_tail_above_a_hole(floor, &valid, &stale, &damaged)
        });
        if let Some(cut_from) = cut_from {
            crate::marks::hit(crate::marks::JOURNAL_UNCOPIED_TAIL_TORN);
            let cut: Vec<u64> = valid.range(cut_from..).map(|(&op, _)| op).collect();
            for op in cut {
                valid.remove(&op);
                torn_ops.insert(op);
            }
            copies_stale.retain(|header| header.op < cut_from);
        }
        let mut recovery = Recovery::default();
        // The head is the highest op the disk says was (or may have been)
        // written: a faulty or unknown op counts, so a rotten head is never
        // cut off as a torn tail (module doc).
        let head = valid.keys().chain(faulty.iter()).chain(unknown.iter()).max().copied();
        if let Some(head) = head {
            // Every valid prepare is indexed, chained to its neighbour or
            // not. A break in the chain is no damage: after a view change the
            // replica overwrites ops in any order (`write_prepare`), so a
            // durable prepare of the new view may sit after a stale one of
            // the old view until that one is replaced. Which side is stale
            // only the replica knows (its view headers); the journal, which
            // cannot tell, must not drop either. Until swarm seeds 244, 281,
            // 477 and 798 this loop kept the *later* op out of the index
            // (missing, `is_durable` false) while `scan` returned it valid,
            // and in those seeds the later op was the canonical one.
            for op in self.snapshot_op + 1..=head {
                match valid.get(&op) {
                    Some(header) => {
                        recovery.ops_recovered.push(op);
                        self.headers.insert(op, *header);
                    }
                    None => {
                        recovery.repair_ops.push(op);
                        self.missing.insert(op);
                    }
                }
            }
            self.op_head = Some(head);
        }
        let tail_first = head.unwrap_or(self.snapshot_op) + 1;
        // Only slots whose ring copy is empty or names an older op: never
        // one that may have held an acknowledged prepare.
        let torn: Vec<u64> = torn_ops.range(tail_first..).copied().collect();
        if self.writable {
            // A valid prepare may live only in the page cache: after a
            // failed fsync Linux marks the pages clean, a process crash keeps
            // them readable, and the fsync at open has nothing to flush.
            // Rewriting what we read makes the pages dirty again, so this
            // fsync makes the prepare durable (or fails open). Only those
            // whose ring copy does not name them: a copy is written only
            // after its prepare's fsync succeeded, and a slot is never
            // rewritten while a copy names its op until that copy is
            // durably poisoned (`unvouch_copies`), so a matching copy proves
            // the slot's bytes reached the device (disk-rot seed 2393: a
            // repair over a faulty op's intact copy, whose fsync failed,
            // read back "fully written" from the cache).
            debug_assert!(copies_stale.iter().all(|header| valid.get(&header.op) == Some(header)));
            for header in &copies_stale {
                let offset = self.config.slot_offset(header.op);
                let (result, bytes) =
                    crate::io::read_exact_retrying(&*self.file, vec![0; header.size as usize], offset).await;
                result.map_err(io_error("reread prepare"))?;
                let result = self.write_at(pad_prepare_bytes(bytes), offset).await;
                result.map_err(io_error("rewrite prepare"))?;
            }
            if !copies_stale.is_empty() {
                self.sync_file().await.map_err(io_error("fsync"))?;
            }
            // Now every valid prepare is durable, so its ring copy may be
            // written: from here on, damage to it reads as faulty, never
            // torn. On the cache's pass all of them, not only the stale
            // ones: a copy read from the page cache after a failed fsync may
            // not be durable either. On the device's pass the ring holds
            // what it reads, so only the copies it lacks.
            let copies: Vec<Header> = match pass {
                RecoveryPass::Cache => valid.values().copied().collect(),
                RecoveryPass::Device => copies_stale.clone(),
            };
            self.write_header_copies(&copies).await?;
            for &op in &torn {
                let result = self.write_at(vec![0; PAGE_SIZE_BYTES as usize], self.config.slot_offset(op)).await;
                result.map_err(io_error("clear torn slot"))?;
            }
            if !valid.is_empty() || !torn.is_empty() {
                self.sync_file().await.map_err(io_error("fsync"))?;
            }
        }
        recovery.torn_tail_truncated = torn;
        debug_assert!(self.headers.len() as u64 <= self.config.slot_count);
        debug_assert!(self.op_head.is_none_or(|head| head <= self.snapshot_op + self.config.slot_count));
        debug_assert!(faulty.iter().chain(unknown.iter()).all(|op| self.missing.contains(op)));
        Ok(recovery)
    }

    /// The unknown ops that cannot hide an acknowledged prepare: those
    /// above a slot that reads empty or torn, over both `durable_log_op_max`
    /// and the highest op a header names (module doc, "An unknown slot
    /// beyond a gap").
    fn unknowns_beyond_a_gap(
        &self,
        durable_log_op_max: u64,
        valid: &BTreeMap<u64, Header>,
        faulty: &BTreeSet<u64>,
        unknown: &BTreeSet<u64>,
        copy_damaged: &BTreeSet<u64>,
    ) -> Vec<u64> {
        let named_max = valid.keys().chain(faulty).max().copied().unwrap_or(0);
        let mut reach = named_max.max(durable_log_op_max).max(self.snapshot_op);
        // Bounded by the window: each step is a distinct slot's op.
        while unknown.contains(&(reach + 1)) || copy_damaged.contains(&(reach + 1)) {
            reach += 1;
        }
        debug_assert!(unknown.range(reach + 1..).all(|&op| op <= self.snapshot_op + self.config.slot_count));
        unknown.range(reach + 1..).copied().collect()
    }

    /// The first op of a tail that cannot hold an acknowledged prepare
    /// (module doc, "A cut flush"): the lowest op above `durable_log_op_max`
    /// with no valid prepare, below a valid one, when nothing from it up is
    /// damaged (`damaged`: faulty, unknown, or a slot with a damaged copy
    /// place) or named by a copy (every valid prepare there is in `stale`).
    fn uncopied_tail_above_a_hole(
        &self,
        durable_log_op_max: u64,
        valid: &BTreeMap<u64, Header>,
        stale: &BTreeSet<u64>,
        damaged: &BTreeSet<u64>,
    ) -> Option<u64> {
        let floor = durable_log_op_max.max(self.snapshot_op);
        let valid_max = *valid.keys().next_back()?;
        // Bounded by the window: `valid_max` is a live op.
        let hole = (floor + 1..valid_max).find(|op| !valid.contains_key(op))?;
        let nothing_damaged = damaged.range(hole..).next().is_none();
        let nothing_named = valid.range(hole..).all(|(op, _)| stale.contains(op));
        (nothing_damaged && nothing_named).then_some(hole)
    }

    /// Write a run of prepares (`prepare_runs`) like `write_at`: whole
    /// pages, so an unreadable page never stops it (`write_pages` has
    /// nothing to complete), and its parts go to the file as they are.
    async fn write_run(&self, run: &PrepareRun<'_>) -> io::Result<()> {
        debug_assert!(
            run.offset.is_multiple_of(PAGE_SIZE_BYTES) && (run.len_bytes() as u64).is_multiple_of(PAGE_SIZE_BYTES),
            "a run is whole pages"
        );
        self.note_window_write();
        self.file.write_all_parts_at(&run.slices(), run.offset).await
    }

    /// Write `bytes` at `offset` of the journal's file: in a compaction's
    /// window, the spare alone (each op written once; module doc, "What it
    /// costs").
    async fn write_at(&self, bytes: Vec<u8>, offset: u64) -> io::Result<()> {
        self.note_window_write();
        let known = |place: u64| self.durable_copy_at(place);
        write_pages(&*self.file, bytes, offset, &known).await
    }

    /// A write goes to the journal's file: in a compaction's window, the
    /// window learns it changed.
    fn note_window_write(&self) {
        if let Some(window) = &self.window {
            crate::marks::hit(crate::marks::JOURNAL_WINDOW_WRITE);
            window.changed.set(true);
        }
    }

    /// `write_at`, and in a compaction's window the retired file too: a
    /// truncation must hold in whichever file the directory names after a
    /// crash (else a crash before the exchange brings the dropped prepares
    /// back from the retired file).
    async fn write_everywhere(&self, bytes: Vec<u8>, offset: u64) -> io::Result<()> {
        if let Some(window) = &self.window {
            crate::marks::hit(crate::marks::JOURNAL_WINDOW_TRUNCATION);
            let known = |place: u64| self.durable_copy_at(place);
            write_pages(&*window.retired, bytes.clone(), offset, &known).await?;
        }
        self.write_at(bytes, offset).await
    }

    /// The header a copy place at `offset` may hold for sure: that of the
    /// durable op whose ring entry or carried entry it is (its copy is
    /// durable, so writing it again vouches for nothing new).
    fn durable_copy_at(&self, offset: u64) -> Option<Header> {
        let config = &self.config;
        let op = config.copy_place_op(offset, self.snapshot_op + 1)?;
        let header = self.headers.get(&op).filter(|_| self.is_durable(op))?;
        debug_assert!(config.header_copy_offsets(op).any(|place| place == offset));
        Some(*header)
    }

    /// fdatasync the journal's file (in a compaction's window the spare,
    /// its outcome recorded for the install).
    async fn sync_file(&self) -> io::Result<()> {
        let syncs = self.window.as_ref().map(|window| {
            window.changed.set(true);
            &*window.syncs
        });
        sync_recorded(&*self.file, syncs).await
    }

    /// `sync_file` and, in a compaction's window, the retired file too:
    /// after `write_everywhere` (a truncation).
    async fn sync_everywhere(&self) -> io::Result<()> {
        match &self.window {
            Some(window) => {
                window.changed.set(true);
                sync_both(&*window.retired, &*self.file, &window.syncs).await
            }
            None => self.file.sync_data().await,
        }
    }

    fn check_writable(&self) -> Result<(), JournalError> {
        // Every change of the file begins here: none while a flush's fsync
        // runs (`flush_begin`), or that fsync would make durable more, or
        // less, than the flush reports.
        assert!(!self.flush_in_flight, "nothing changes the journal while a flush's fsync runs");
        self.check_usable()
    }

    /// Writable and not poisoned. A compaction's stage checks only this: it
    /// writes the spare, not the journal's file, so it may run while a
    /// flush's fsync does (that flush syncs the journal's file alone; the
    /// install's fsync makes the spare durable before it can be the journal).
    fn check_usable(&self) -> Result<(), JournalError> {
        if !self.writable {
            return Err(JournalError::ReadOnly);
        }
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        Ok(())
    }

    /// The checksum the next appended prepare must name as its parent;
    /// `None` when unknown (fresh journal, or the head awaits repair).
    fn head_checksum(&self) -> Option<u128> {
        match self.op_head {
            None => self.snapshot_checksum,
            Some(head) => self.headers.get(&head).map(|header| header.checksum),
        }
    }

    fn check_prepare(&self, header: &Header, body: &[u8]) -> Result<(), JournalError> {
        self.check_prepare_with(header, || header.valid_body(body))
    }

    /// `check_prepare`, with the body's check given: a message whose body
    /// was verified when it was built or decoded need not be hashed again
    /// (up to a MiB per prepare, on every replica's commit path).
    fn check_prepare_with(
        &self,
        header: &Header,
        valid_body: impl FnOnce() -> Result<(), HeaderError>,
    ) -> Result<(), JournalError> {
        let op = header.op;
        if !header.valid_checksum() {
            return Err(JournalError::BadPrepare { op, source: HeaderError::BadChecksum });
        }
        valid_body().map_err(|source| JournalError::BadPrepare { op, source })?;
        if header.command != Command::Prepare
            || header.cluster != self.config.cluster
            || header.namespace != self.config.namespace
        {
            return Err(JournalError::WrongGroup { op });
        }
        if header.size > self.config.message_size_max_bytes {
            return Err(JournalError::MessageTooLarge {
                op,
                size_bytes: header.size,
                max_bytes: self.config.message_size_max_bytes,
            });
        }
        Ok(())
    }

    /// Write a prepare into its slot. Not durable until `sync`.
    pub async fn append(&mut self, header: &Header, body: &[u8]) -> Result<(), JournalError> {
        self.check_writable()?;
        self.check_prepare(header, body)?;
        let op = header.op;
        let expected = self.op_head.unwrap_or(self.snapshot_op) + 1;
        if op != expected {
            return Err(JournalError::OpOutOfOrder { op, expected });
        }
        if self.head_checksum().is_some_and(|checksum| checksum != header.parent) {
            return Err(JournalError::ParentMismatch { op });
        }
        if op > self.snapshot_op + self.config.slot_count {
            return Err(JournalError::SlotCollision {
                op,
                slot: op % self.config.slot_count,
                live_op: op - self.config.slot_count,
            });
        }
        self.unvouch_copies(&[header]).await?;
        let result = self.write_at(encode_prepare_pages(header, body), self.config.slot_offset(op)).await;
        // Update the index only after the write succeeded: a failed append
        // leaves no phantom op, and the next append retries the same op.
        result.map_err(io_error("write prepare"))?;
        self.headers.insert(op, *header);
        self.note_written(op);
        self.op_head = Some(op);
        debug_assert_eq!(self.head_checksum(), Some(header.checksum));
        debug_assert!(self.headers.len() as u64 <= self.config.slot_count);
        Ok(())
    }

    /// Append consecutive prepares. Each write covers only the sectors its
    /// prepares use; consecutive fresh prepares that fill their slots share
    /// one write, zeros over the regions between them (`prepare_runs`: a run
    /// ends after a prepare shorter than its slot, where the batch wraps the
    /// ring, and before a rewritten op), so a fresh batch of full slots costs one write
    /// and, with `sync`, its fsyncs. The same checks as `append`; nothing is
    /// indexed unless every write succeeded (no phantom ops).
    pub async fn append_batch(&mut self, prepares: &[(Header, &[u8])]) -> Result<(), JournalError> {
        self.check_writable()?;
        let slot_count = self.config.slot_count;
        let first_expected = self.op_head.unwrap_or(self.snapshot_op) + 1;
        let mut parent = self.head_checksum();
        for (expected, (header, body)) in (first_expected..).zip(prepares) {
            self.check_prepare(header, body)?;
            let op = header.op;
            if op != expected {
                return Err(JournalError::OpOutOfOrder { op, expected });
            }
            if parent.is_some_and(|checksum| checksum != header.parent) {
                return Err(JournalError::ParentMismatch { op });
            }
            if op > self.snapshot_op + slot_count {
                return Err(JournalError::SlotCollision { op, slot: op % slot_count, live_op: op - slot_count });
            }
            parent = Some(header.checksum);
        }
        self.unvouch_copies(&prepares.iter().map(|(header, _)| header).collect::<Vec<_>>()).await?;
        let carried = prepares.first().map_or_else(Vec::new, |(header, _)| self.copies_to_carry(header.op));
        let fresh_above = self.file_op_written_max;
        let prepares_iter = prepares.iter().map(|(header, body)| (header, *body));
        for run in prepare_runs(&self.config, &carried, fresh_above, prepares_iter) {
            let result = self.write_run(&run).await;
            result.map_err(io_error("write prepares"))?;
        }
        self.note_carried(&carried);
        for (header, _) in prepares {
            self.headers.insert(header.op, *header);
            self.note_written(header.op);
        }
        if let Some((last, _)) = prepares.last() {
            self.op_head = Some(last.op);
        }
        debug_assert!(self.headers.len() as u64 <= slot_count);
        Ok(())
    }

    /// Make every earlier write durable, with its header ring copy: fsync
    /// the prepares, then write their ring copies, then fsync again (the copy
    /// must never be durable before its prepare: module doc). Two fsyncs in
    /// a row: the price of telling a torn prepare from a rotten one on the
    /// replica's own disk. A driver with a stream of batches halves it with
    /// `flush`. A failure poisons the journal: after a failed fsync the
    /// kernel may have dropped the dirty pages, so only a restart and
    /// recovery know what is on disk.
    pub async fn sync(&mut self) -> Result<(), JournalError> {
        self.flush().await?;
        if !self.copies_ready.is_empty() {
            self.flush().await?;
        }
        debug_assert!(self.copies_pending.is_empty() && self.copies_ready.is_empty());
        Ok(())
    }

    /// One step of group commit, one fsync: write the ring copies of the
    /// prepares the previous `flush` made durable, then fsync, which makes
    /// those copies and every prepare written since durable. Returns the
    /// ops that are now durable with their ring copy, ascending: only those
    /// may be acknowledged. Called once per batch while batches keep
    /// coming, each batch is acknowledged one fsync after its own, and the
    /// journal costs one fsync per batch, as a plain write+fsync loop does;
    /// the ordering (copy after its prepare is durable) is the same as in
    /// `sync`, so recovery sees no new states. A failure poisons the
    /// journal, as in `sync`.
    pub async fn flush(&mut self) -> Result<Vec<u64>, JournalError> {
        let in_flight = self.flush_begin().await?;
        let synced = in_flight.syncer().await;
        self.flush_end(in_flight, synced)
    }

    /// `flush` in two halves, for a driver that keeps working while the
    /// fdatasync runs: write the ring copies of the prepares the previous
    /// flush made durable, and hand back the fsync to run (`FlushInFlight`,
    /// which owns a handle of the file and borrows nothing). Until
    /// `flush_end` nothing may be written to the journal (asserted), so the
    /// fsync makes durable exactly what was written before it began.
    pub async fn flush_begin(&mut self) -> Result<FlushInFlight<I::File>, JournalError> {
        self.check_writable()?;
        assert!(!self.flush_in_flight, "one flush at a time per journal");
        let ready: Vec<Header> = self
            .copies_ready
            .iter()
            .map(|op| *self.headers.get(op).expect("a ready copy names an indexed op"))
            .collect();
        if let Err(error) = self.write_header_copies(&ready).await {
            self.poisoned = true;
            return Err(error);
        }
        self.flush_in_flight = true;
        if let Some(window) = &self.window {
            window.changed.set(true);
        }
        Ok(FlushInFlight {
            file: self.file.clone(),
            spare_syncs: self.window.as_ref().map(|window| window.syncs.clone()),
            drains_installed: self.drains_installed,
            copies: !ready.is_empty(),
        })
    }

    /// The second half of `flush`: the fdatasync `in_flight` ran ended
    /// with `synced`. Returns the ops now durable with their ring copy,
    /// ascending; a failure poisons the journal, as in `flush`.
    pub fn flush_end(
        &mut self,
        in_flight: FlushInFlight<I::File>,
        synced: io::Result<()>,
    ) -> Result<Vec<u64>, JournalError> {
        assert!(self.flush_in_flight, "flush_end ends the flush flush_begin began");
        // The flush synced the journal's file; or it began before a stage,
        // which copied what it wrote into the spare (the install's fsync
        // makes that durable before the exchange), and synced the file the
        // stage retired (or the install since ended).
        let before_stage = self.window.as_ref().is_some_and(|window| Rc::ptr_eq(&in_flight.file, &window.retired));
        assert!(
            Rc::ptr_eq(&in_flight.file, &self.file)
                || before_stage
                || in_flight.drains_installed < self.drains_installed,
            "the flush synced this journal's file"
        );
        self.flush_in_flight = false;
        if let Err(source) = synced {
            self.poisoned = true;
            let operation = if in_flight.copies { "fsync header copies" } else { "fsync" };
            return Err(JournalError::Io { operation, source });
        }
        let mut durable = std::mem::replace(&mut self.copies_ready, std::mem::take(&mut self.copies_pending));
        durable.append(&mut self.copies_carried);
        debug_assert!(durable.iter().all(|op| !self.copies_ready.contains(op)));
        // Only a copy still to be written may be carried.
        self.copies_fresh.retain(|op| self.copies_ready.contains(op));
        // In a window, durable in the spare alone: the directory names the
        // retired file until the install's exchange is durable.
        if let Some(window) = self.window.as_mut().filter(|_| !before_stage) {
            if !durable.is_empty() {
                crate::marks::hit(crate::marks::JOURNAL_WINDOW_ACK_HELD);
            }
            window.held.append(&mut durable);
        }
        Ok(durable.into_iter().collect())
    }

    /// A flush's fdatasync is running (`flush_begin`..`flush_end`).
    pub fn flush_in_flight(&self) -> bool {
        self.flush_in_flight
    }

    /// The ready copies a write whose first prepare is `first_op` may carry
    /// (module doc, "Carried copies"), ascending. None unless the region
    /// before `first_op`'s slot names no live op: `first_op` above
    /// `file_op_written_max`, so no earlier write of this file carried
    /// copies into it. Only fresh ops' copies: a copy of an op that was
    /// ever named elsewhere in the file goes to the ring, so a live ring
    /// copy is always at least as new as a carried one (recovery prefers
    /// the ring).
    fn copies_to_carry(&self, first_op: u64) -> Vec<Header> {
        if first_op <= self.file_op_written_max || crate::buggify!(crate::buggify::JOURNAL_COPIES_NOT_CARRIED) {
            return Vec::new();
        }
        let farthest = first_op.saturating_sub(self.config.copies_carried_max());
        self.copies_ready
            .range(farthest..first_op)
            .filter(|op| self.copies_fresh.contains(op))
            .map(|op| *self.headers.get(op).expect("a ready copy names an indexed op"))
            .collect()
    }

    /// A prepare write carrying `carried` succeeded: the next fsync makes
    /// those copies durable, and `flush` need not write them to the ring.
    fn note_carried(&mut self, carried: &[Header]) {
        if !carried.is_empty() {
            crate::marks::hit(crate::marks::JOURNAL_COPIES_CARRIED);
        }
        for header in carried {
            let was_ready = self.copies_ready.remove(&header.op);
            assert!(was_ready, "only a ready copy is carried");
            self.copies_fresh.remove(&header.op);
            self.copies_carried.insert(header.op);
        }
    }

    /// `op` was written to its slot (not durable yet): its ring copy waits
    /// for the fsync that makes this write durable, even if an earlier
    /// write of the same op was already durable.
    fn note_written(&mut self, op: u64) {
        assert!(!self.flush_in_flight, "nothing is written to the journal while a flush's fsync runs");
        if let Some(window) = &mut self.window {
            window.held.remove(&op);
        }
        self.copies_ready.remove(&op);
        self.copies_carried.remove(&op);
        self.copies_pending.insert(op);
        if op > self.file_op_written_max {
            self.copies_fresh.insert(op);
        } else {
            self.copies_fresh.remove(&op);
        }
        self.file_op_written_max = self.file_op_written_max.max(op);
    }

    /// Durable with its ring copy: may be acknowledged.
    pub fn is_durable(&self, op: u64) -> bool {
        self.headers.contains_key(&op)
            && !self.copies_pending.contains(&op)
            && !self.copies_ready.contains(&op)
            && !self.copies_carried.contains(&op)
            && !self.held_for_install(op)
    }

    /// A flush in a compaction's window made `op` durable with its copy in
    /// the spare alone: it may be acknowledged once the install ended
    /// (`end_drain` returns it).
    pub fn held_for_install(&self, op: u64) -> bool {
        self.window.as_ref().is_some_and(|window| window.held.contains(&op))
    }

    /// Before `headers` are written to their slots: a copy (ring or
    /// carried) that already names one of their ops, in any version, is
    /// poisoned and the poison fsynced first.
    /// - The same version (a repair of a faulty op whose copy survived, a
    ///   rewrite of a held prepare): if the slot write's fsync failed
    ///   (Linux marks the pages clean, the cache keeps them) and the process
    ///   died, the next open would read the cached prepare with a matching
    ///   copy and take it as durable while the device holds the old,
    ///   damaged bytes. With the copy poisoned, open rewrites it (module
    ///   doc); were the slot lost instead, both invalid read as `Unknown`,
    ///   faulty, never torn.
    /// - Another version (the replica's log moved on after a restart or a
    ///   view change): a crash before the new prepare's copy is durable
    ///   would leave the new prepare under a copy of the old one, which
    ///   recovery must read as faulty (a misdirected write of the new
    ///   prepare leaves the same pair the other way round), so no benign
    ///   crash could restart a lone replica without it waiting `Recovering`
    ///   for a peer (swarm seed 61204).
    ///
    /// `headers` are ascending ops; one read per run of adjacent copies. A
    /// read error counts as a match (poison it: safe).
    ///
    /// Only ops up to `file_op_written_max` are read: no byte of the file
    /// names an op above it (every header this process writes, to a slot
    /// or the ring, is of an op it wrote, and an op of the file's earlier
    /// history is in the window `open` assumes; a misdirected write moves
    /// bytes this process wrote). So an append of a new op, the steady
    /// state, reads nothing.
    async fn unvouch_copies(&mut self, headers: &[&Header]) -> Result<(), JournalError> {
        let headers: Vec<&Header> =
            headers.iter().copied().filter(|header| header.op <= self.file_op_written_max).collect();
        // In a window only the spare: the rewrite goes there alone, and the
        // retired file keeps the old prepare with its copy (what a crash
        // before the exchange recovers, as if the rewrite never happened).
        let matching = self.copies_naming(&self.file, &headers).await;
        if matching.is_empty() {
            return Ok(());
        }
        for &offset in &matching {
            let result = self.write_at(vec![POISON_BYTE; HEADER_SIZE_BYTES], offset).await;
            if let Err(source) = result {
                self.poisoned = true;
                return Err(JournalError::Io { operation: "poison header copy", source });
            }
        }
        if let Err(source) = self.sync_file().await {
            self.poisoned = true;
            return Err(JournalError::Io { operation: "fsync poisoned header copies", source });
        }
        Ok(())
    }

    /// The offsets of the copies (ring or carried) in `file` that name
    /// the op of one of `headers` (ascending ops, up to
    /// `file_op_written_max`); one read per run of adjacent ring copies. A
    /// read error counts as naming it (poisoning it is safe).
    async fn copies_naming(&self, file: &I::File, headers: &[&Header]) -> Vec<u64> {
        let slot_count = self.config.slot_count;
        let mut matching: Vec<u64> = Vec::new();
        let names_it = |header: &Header, copy: &[u8]| Header::decode(copy).is_ok_and(|copy| copy.op == header.op);
        let mut index = 0;
        while index < headers.len() {
            let first = index;
            while index + 1 < headers.len()
                && headers[index + 1].op == headers[index].op + 1
                && !(headers[index].op + 1).is_multiple_of(slot_count)
            {
                index += 1;
            }
            index += 1;
            let run = &headers[first..index];
            let buffer = vec![0; run.len() * HEADER_SIZE_BYTES];
            let (result, bytes) =
                crate::io::read_exact_retrying(file, buffer, self.config.header_copy_offset(run[0].op)).await;
            for (header, copy) in run.iter().zip(bytes.chunks_exact(HEADER_SIZE_BYTES)) {
                if result.is_err() || names_it(header, copy) {
                    matching.push(self.config.header_copy_offset(header.op));
                }
            }
        }
        // A carried copy lives in the region of a slot written after its
        // op: only carriers up to `file_op_written_max` were written.
        for header in headers {
            let carriers = self.config.copies_carried_max().min(self.file_op_written_max - header.op);
            for distance in 1..=carriers {
                let offset = self.config.carried_copy_offset(header.op, distance);
                let (result, copy) = crate::io::read_exact_retrying(file, vec![0; HEADER_SIZE_BYTES], offset).await;
                if result.is_err() || names_it(header, &copy) {
                    matching.push(offset);
                }
            }
        }
        matching
    }

    /// Write the ring copies of `headers` (ascending ops), one write per run
    /// of consecutive slots: a batch costs one write. Not durable until fsync.
    async fn write_header_copies(&self, headers: &[Header]) -> Result<(), JournalError> {
        let slot_count = self.config.slot_count;
        let mut index = 0;
        while index < headers.len() {
            let first_op = headers[index].op;
            let mut buffer = Vec::new();
            let mut slot_next = first_op % slot_count;
            while index < headers.len() && headers[index].op % slot_count == slot_next {
                buffer.extend_from_slice(&headers[index].encode());
                slot_next += 1;
                index += 1;
            }
            let result = self.write_at(buffer, self.config.header_copy_offset(first_op)).await;
            result.map_err(io_error("write header copies"))?;
        }
        Ok(())
    }

    /// Read a live prepare and verify it against the index.
    pub async fn read(&self, op: u64) -> Result<(Header, Vec<u8>), JournalError> {
        let read = self.read_from(&self.file, op).await;
        // In a window the spare holds no op its checkpoint covers (unless
        // written since): those are in the retired file.
        match (&self.window, read) {
            (Some(window), Err(JournalError::Corrupt { .. } | JournalError::Io { .. })) if op <= window.through_op => {
                self.read_from(&window.retired, op).await
            }
            (_, read) => read,
        }
    }

    async fn read_from(&self, file: &I::File, op: u64) -> Result<(Header, Vec<u8>), JournalError> {
        let indexed = self.headers.get(&op).ok_or(JournalError::NotFound { op })?;
        let (result, bytes) =
            crate::io::read_exact_retrying(file, vec![0; indexed.size as usize], self.config.slot_offset(op)).await;
        result.map_err(io_error("read prepare"))?;
        let header = Header::decode(&bytes).map_err(|_| JournalError::Corrupt { op })?;
        if header.checksum != indexed.checksum {
            return Err(JournalError::Corrupt { op });
        }
        let body = bytes[HEADER_SIZE_BYTES..].to_vec();
        header.valid_body(&body).map_err(|_| JournalError::Corrupt { op })?;
        Ok((header, body))
    }

    /// The header of a live op present in the journal.
    pub fn header(&self, op: u64) -> Option<&Header> {
        self.headers.get(&op)
    }

    /// The highest op in the log (its header may await repair).
    pub fn op_max(&self) -> Option<u64> {
        self.op_head
    }

    pub fn snapshot_op(&self) -> u64 {
        self.snapshot_op
    }

    /// The checksum of the op at `snapshot_op`, which the next op's parent
    /// must equal, when the compaction knew it.
    pub fn snapshot_checksum(&self) -> Option<u128> {
        self.snapshot_checksum
    }

    /// Live ops at or below `op_max` that are missing or corrupt.
    pub fn repair_ops(&self) -> Vec<u64> {
        self.missing.iter().copied().collect()
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    pub fn config(&self) -> &JournalConfig {
        &self.config
    }

    /// Write a prepare fetched from a peer into the slot of a missing op.
    /// It must chain with its present neighbours. Not durable until `sync`.
    pub async fn write_repair(&mut self, header: &Header, body: &[u8]) -> Result<(), JournalError> {
        self.check_writable()?;
        self.check_prepare(header, body)?;
        let op = header.op;
        if !self.missing.contains(&op) {
            return Err(JournalError::NotMissing { op });
        }
        let parent_expected = if op == self.snapshot_op + 1 {
            self.snapshot_checksum
        } else {
            self.headers.get(&(op - 1)).map(|previous| previous.checksum)
        };
        if parent_expected.is_some_and(|checksum| checksum != header.parent)
            || self.headers.get(&(op + 1)).is_some_and(|next| next.parent != header.checksum)
        {
            return Err(JournalError::ParentMismatch { op });
        }
        self.unvouch_copies(&[header]).await?;
        let result = self.write_at(encode_prepare_pages(header, body), self.config.slot_offset(op)).await;
        result.map_err(io_error("write repaired prepare"))?;
        self.missing.remove(&op);
        self.headers.insert(op, *header);
        self.note_written(op);
        Ok(())
    }

    /// Compact after a checkpoint: drop ops `..= through_op` from the log so
    /// their slots can be reused.
    ///
    /// Durability sequence: write the spare (new file header with the new
    /// `snapshot_op`, then the live entries after `through_op`) → fsync it →
    /// exchange it with the journal (a rename that keeps the retired file
    /// at the tmp path) → fsync the parent directory → reopen. The
    /// in-memory `snapshot_op` advances only after all of it succeeded: until
    /// the directory fsync, a crash can bring the old file back with the old
    /// `snapshot_op`, and a later append that passed the slot-collision check
    /// against an early-advanced `snapshot_op` would evict a live entry.
    ///
    /// A failure before the exchange leaves the journal as it was (usable). A
    /// failure from the exchange on poisons it: which file the directory
    /// names after a crash is unknown until recovery.
    ///
    /// Cheap by construction: the tmp file is the spare, the journal file
    /// the previous compaction retired, already sized and with its blocks
    /// allocated (`create` preallocates both). The rewrite writes the file
    /// header, the header ring, the live prepares (a pipeline's worth after
    /// a checkpoint), the carried-copies regions of the live slots and a
    /// zero page over each slot that may still hold a prepare of the live
    /// window from the spare's previous life; two fsyncs (tmp, directory).
    /// Where the file system cannot exchange, a rename replaces the journal
    /// and the next compaction starts from a fresh sparse file (correct,
    /// only slower).
    ///
    /// `drain` runs both halves in a row; a node runs the second beside its
    /// appends (`stage_drain_to`, `StagedDrain::install`, `end_drain`).
    pub async fn drain(&mut self, through_op: u64) -> Result<(), JournalError> {
        self.drain_keeping_faulty(through_op, None, &BTreeMap::new()).await
    }

    /// `drain`, first half: the spare written and the journal's file from
    /// now on (`stage_drain_keeping_faulty`); `StagedDrain::install` and
    /// `end_drain` finish it.
    pub async fn stage_drain(&mut self, through_op: u64) -> Result<Option<StagedDrain<I>>, JournalError> {
        self.stage_drain_keeping_faulty(through_op, None, &BTreeMap::new()).await
    }

    /// `drain`, and the compacted file keeps the evidence that each op of
    /// `faulty` (live, left out because it reads back corrupt) was written
    /// and damaged: its ring copy when the header is known (the slot then
    /// reads faulty), else a poisoned slot header and ring copy (unknown,
    /// also faulty). Without it a crash before the repair reopened a clean,
    /// shorter journal whose replica voted without an op it had
    /// acknowledged (disk-rot seed 1120).
    async fn drain_keeping_faulty(
        &mut self,
        through_op: u64,
        anchor_checksum: Option<u128>,
        faulty: &BTreeMap<u64, Option<Header>>,
    ) -> Result<(), JournalError> {
        match self.stage_drain_keeping_faulty(through_op, anchor_checksum, faulty).await? {
            Some(staged) => {
                let installed = staged.install().await;
                let released = self.end_drain(installed)?;
                debug_assert!(released.is_empty(), "nothing is flushed between the halves of a drain");
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// A compaction, first half: write the compacted file into the spare
    /// (step 1 of `drain`, without its fsync) and from now on write and
    /// flush the spare alone (the compaction's window: `Window`), holding
    /// back what its flushes make durable until the install's end, while
    /// appends go on. The returned `StagedDrain` makes it durable and the journal
    /// (`install`, which borrows no journal); `end_drain` takes its
    /// outcome. Stage only once the checkpoint that covers `through_op` is
    /// durable: from the exchange on, a crash recovers from the spare,
    /// which no longer holds the ops it covers. `None`: nothing to compact.
    /// `anchor_checksum`: the checksum of op `through_op` as the checkpoint
    /// knows it, which the compacted file records as its snapshot's;
    /// without it, what the journal holds of that op or the op after it.
    ///
    /// The spare copies the journal's bytes of every copy place of the live
    /// ops (ring entries, carried-copies regions), not copies made up from
    /// the index: a copy of an op whose own copy is still to be written, or
    /// one in another place than the journal's, would outlive the
    /// `unvouch_copies` that poisons the journal's copy before a rewrite,
    /// and recovery would read the rewritten slot under a stale copy.
    pub(crate) async fn stage_drain_keeping_faulty(
        &mut self,
        through_op: u64,
        anchor_checksum: Option<u128>,
        faulty: &BTreeMap<u64, Option<Header>>,
    ) -> Result<Option<StagedDrain<I>>, JournalError> {
        self.check_usable()?;
        assert!(self.window.is_none(), "one compaction at a time");
        assert!(
            self.spare != Spare::Clearing,
            "a compaction is staged only once its spare's clear ended (end_spare_clear)"
        );
        assert!(faulty.keys().all(|&op| op > through_op && !self.headers.contains_key(&op)));
        if through_op <= self.snapshot_op {
            return Ok(None);
        }
        let head = self
            .op_head
            .filter(|&head| head >= through_op)
            .ok_or(JournalError::DrainBeyondHead { through_op, op_max: self.op_head })?;
        // The checkpoint's anchor first: the journal may hold a stale
        // version of the op (after a state transfer), or neither it nor the
        // op after it (both faulty).
        let snapshot_checksum = anchor_checksum
            .or_else(|| self.headers.get(&through_op).map(|header| header.checksum))
            .or_else(|| self.headers.get(&(through_op + 1)).map(|next| next.parent));
        let file_header = FileHeader {
            cluster: self.config.cluster,
            namespace: self.config.namespace,
            slot_count: self.config.slot_count,
            message_size_max_bytes: self.config.message_size_max_bytes,
            snapshot_op: through_op,
            snapshot_checksum,
        };
        let tmp = journal_path_tmp(&self.dir, self.config.namespace);

        // 1. Write the tmp file. Failures here leave the journal as it was;
        //    the tmp file is scratch that the next drain rewrites (half
        //    written, it may name anything: clear every slot then).
        let (spare, carried) = match self.drain_write_tmp(&tmp, &file_header, head, faulty).await {
            Ok(written) => written,
            Err(error) => {
                self.spare = Spare::Untrusted;
                return Err(error);
            }
        };
        debug_assert!(self.headers.range(through_op + 1..).all(|(op, _)| carried.contains(op)));
        // A faulty op left out is one to repair from now on, in either file.
        self.missing.extend(faulty.keys().copied());
        let spare_own = match self.io.open(&tmp, OpenMode::ReadWrite).await {
            Ok(file) => file,
            Err(source) => {
                self.spare = Spare::Untrusted;
                return Err(JournalError::Io { operation: "open tmp", source });
            }
        };
        let spare = Rc::new(spare);
        let spare_syncs = Rc::new(SpareSyncs::default());
        // From here every write and flush goes to the spare alone.
        let retired = std::mem::replace(&mut self.file, spare.clone());
        self.window = Some(Window {
            retired,
            retired_op_written_max: self.file_op_written_max,
            syncs: spare_syncs.clone(),
            through_op,
            snapshot_checksum,
            held: BTreeSet::new(),
            changed: std::cell::Cell::new(false),
        });
        Ok(Some(StagedDrain {
            io: self.io.clone(),
            dir: self.dir.clone(),
            path: self.path.clone(),
            tmp,
            config: self.config,
            file_header,
            spare,
            spare_own,
            spare_syncs,
        }))
    }

    /// The clear of the spare, to run beside the journal before the next
    /// compaction (`SpareClear`), when the spare is untrusted and no
    /// compaction runs; `None` otherwise. Until `end_spare_clear` takes its
    /// outcome no compaction may be staged (asserted).
    pub fn spare_clearer(&mut self) -> Option<SpareClear<I>> {
        if self.spare != Spare::Untrusted || self.window.is_some() || self.check_usable().is_err() {
            return None;
        }
        self.spare = Spare::Clearing;
        Some(SpareClear {
            io: self.io.clone(),
            tmp: journal_path_tmp(&self.dir, self.config.namespace),
            config: self.config,
        })
    }

    /// A `SpareClear` ended: on success the spare names no op (the next
    /// stage clears nothing of it), else it stays untrusted (the next stage
    /// clears it inline). Its error is the caller's to log: the spare is
    /// scratch, and a disk that fails there fails the stage too.
    pub fn end_spare_clear(&mut self, cleared: &SpareCleared) {
        assert!(self.spare == Spare::Clearing, "end_spare_clear ends the clear spare_clearer began");
        self.spare = match cleared.outcome {
            Ok(()) => {
                crate::marks::hit(crate::marks::COMPACTION_SPARE_CLEARED_BESIDE);
                Spare::Known { op_written_max: 0 }
            }
            Err(_) => Spare::Untrusted,
        };
    }

    /// A staged compaction is running (`stage_drain_keeping_faulty` ..
    /// `end_drain`): its window, writes go to its spare alone.
    pub fn drain_in_flight(&self) -> bool {
        self.window.is_some()
    }

    /// A compaction, second half's outcome (`StagedDrain::install`): on
    /// success the spare (the journal's file since the stage) is the one
    /// the directory names; the journal forgets the ops the checkpoint
    /// covers and returns the ops its window's flushes made durable
    /// (`held_for_install`), ascending: those may be acknowledged now. A
    /// flush whose fsync runs may end after this (it synced the spare, or
    /// began before the stage). A failure before the exchange with nothing
    /// written or synced in the window leaves the journal as it was (the
    /// retired file its file again); any other failure poisons it: the
    /// directory may name a file that lacks the window's writes.
    pub fn end_drain(&mut self, installed: InstalledDrain) -> Result<Vec<u64>, JournalError> {
        let Window { retired, retired_op_written_max, through_op, snapshot_checksum, held, changed, .. } =
            self.window.take().expect("end_drain ends a staged compaction");
        let exchanged = match installed.outcome {
            Ok(exchanged) => exchanged,
            Err(DrainInstallError { error, past_exchange }) => {
                if past_exchange || changed.get() {
                    self.poisoned = true;
                } else {
                    self.file = retired;
                }
                self.spare = Spare::Untrusted;
                return Err(error);
            }
        };
        // Only now is the compaction durable: advance snapshot_op. The
        // retired file is the spare now (the exchange is durable, so it is
        // no longer the journal after any crash).
        self.drains_installed += 1;
        self.snapshot_op = through_op;
        self.snapshot_checksum = snapshot_checksum;
        self.spare = if exchanged {
            Spare::Known { op_written_max: retired_op_written_max }
        } else {
            Spare::Untrusted // nothing at the tmp path: the next drain creates it
        };
        drop(retired);
        // The spare holds every op the index names above `through_op` (the
        // stage's copies and the writes since), with the same copy places:
        // the copy bookkeeping carries over, less what it covers.
        self.file_op_written_max = self.file_op_written_max.max(through_op);
        self.headers.retain(|&op, _| op > through_op);
        for copies in
            [&mut self.copies_pending, &mut self.copies_ready, &mut self.copies_carried, &mut self.copies_fresh]
        {
            copies.retain(|&op| op > through_op);
        }
        if self.op_head.is_some_and(|head| head <= through_op) {
            self.op_head = None;
        }
        let head = self.op_head.unwrap_or(through_op);
        self.missing = (through_op + 1..=head).filter(|op| !self.headers.contains_key(op)).collect();
        debug_assert!(self.headers.keys().all(|&op| op > self.snapshot_op));
        let released: Vec<u64> = held.into_iter().filter(|&op| op > through_op).collect();
        debug_assert!(released.iter().all(|&op| self.is_durable(op)), "a held op is durable once released");
        Ok(released)
    }

    /// Write the compacted file into the spare (or a fresh file), not yet
    /// durable; returns it and the ops it carries. What it writes is bounded
    /// by the ops it carries and the stale ops it clears, never by the size
    /// of the file.
    async fn drain_write_tmp(
        &self,
        tmp: &Path,
        file_header: &FileHeader,
        head: u64,
        faulty: &BTreeMap<u64, Option<Header>>,
    ) -> Result<(I::File, BTreeSet<u64>), JournalError> {
        let config = self.config;
        let through_op = file_header.snapshot_op;
        let file = self.io.open(tmp, OpenMode::ReadWriteCreate).await.map_err(io_error("create tmp"))?;
        let size_bytes = file.size_bytes().await.map_err(io_error("stat tmp"))?;
        // The highest op a stale slot header of the spare may name.
        let stale_op_max = match self.spare {
            _ if size_bytes != config.file_size_bytes() => {
                // Missing (the file system could not exchange) or of another
                // size (a crash while `create` made it): start it over,
                // sparse; it holds nothing stale.
                file.set_len(0).await.map_err(io_error("truncate tmp"))?;
                file.set_len(config.file_size_bytes()).await.map_err(io_error("size tmp"))?;
                through_op
            }
            Spare::Known { op_written_max } => op_written_max,
            Spare::Untrusted => {
                // Any slot, region or ring entry may name an op of the new
                // window: clear them all in place (see `Spare::Untrusted`).
                crate::marks::hit(crate::marks::COMPACTION_SPARE_CLEARED_IN_PLACE);
                through_op + config.slot_count
            }
            Spare::Clearing => unreachable!("checked by the stage"),
        };
        write_file_header(&file, &config, file_header).await.map_err(io_error("write tmp header"))?;
        let mut carried = BTreeMap::new();
        let live: Vec<u64> =
            self.headers.range(through_op + 1..).map(|(&op, _)| op).take_while(|&op| op <= head).collect();
        let mut prepares = Vec::with_capacity(live.len());
        for op in live {
            // A live prepare that reads back corrupt fails the drain: left
            // out, its slot would read as never written after a restart
            // (not as faulty), the log would be cut below it, and the
            // replica would keep vouching for a prepare it no longer holds.
            // The old file is untouched, so the restart finds the damage and
            // repairs it from peers.
            let (header, body) = self.read(op).await?;
            carried.insert(op, header);
            prepares.push((header, body));
        }
        // One write per prepare, with the journal's carried-copies region
        // before its slot (it holds the carried copies of live ops below
        // it; the region of `through_op + 1` names only checkpointed ops).
        for (header, body) in &prepares {
            let (mut offset, mut bytes) = (config.slot_offset(header.op), Vec::new());
            if header.op >= through_op + 2 {
                offset -= COPIES_REGION_BYTES;
                bytes = self.copy_place_bytes(offset, COPIES_REGION_BYTES).await;
            }
            bytes.extend_from_slice(&encode_prepare_pages(header, body));
            let result = write_pages(&file, bytes, offset, &nothing_known).await;
            result.map_err(io_error("write tmp prepare"))?;
        }
        // A slot header or ring copy of the spare's previous life that names
        // an op of the new live window would be recovered as a live prepare
        // (a truncated one resurrected) or as a faulty one: clear each such
        // slot's first page and its copy. Ops at or below `through_op`
        // read as checkpointed, so this ends at what the spare can hold.
        let clear_last = stale_op_max.min(through_op + config.slot_count);
        for op in (through_op + 1..=clear_last).filter(|op| !carried.contains_key(op) && !faulty.contains_key(op)) {
            let result =
                write_pages(&file, vec![0; PAGE_SIZE_BYTES as usize], config.slot_offset(op), &nothing_known).await;
            result.map_err(io_error("clear tmp slot"))?;
        }
        // The other carried-copies regions: the journal's own for the live
        // slots whose prepare was left out (faulty), zeros for the slots
        // above the head whose region the spare's previous life may have
        // filled with copies of ops of the new live window (each region once).
        let carrier_last = stale_op_max.max(head).min(through_op + 1 + config.slot_count);
        for carrier in (through_op + 2..=carrier_last).filter(|carrier| !carried.contains_key(carrier)) {
            let offset = config.copies_region_offset(carrier);
            let region = if carrier <= head {
                self.copy_place_bytes(offset, COPIES_REGION_BYTES).await
            } else {
                vec![0; COPIES_REGION_BYTES as usize]
            };
            let result = write_pages(&file, region, offset, &nothing_known).await;
            result.map_err(io_error("write tmp carried copies"))?;
        }
        // A faulty op's slot never reads as its prepare: zeros when the ring
        // copy names it, poison when nothing can (module doc, `Unknown`).
        for (&op, header) in faulty {
            let fill = if header.is_some() { 0 } else { POISON_BYTE };
            let result =
                write_pages(&file, vec![fill; PAGE_SIZE_BYTES as usize], config.slot_offset(op), &nothing_known).await;
            result.map_err(io_error("mark tmp slot faulty"))?;
        }
        // Ring copies, one write per run of adjacent entries: the journal's
        // own entries for the live ops (a faulty one's evidence made
        // explicit), zeros above the head. A durable op whose entry does
        // not name it gets its header from the index instead: the device
        // holds a copy of it (a ring entry no read can show, or a carried
        // copy, whose region may read no better), and its acknowledgement
        // rests on one in whichever file the directory names (disk-rot seed
        // 348442: a latent sector error under ring copies the restart had
        // rewritten with writes smaller than the sector; the stage wrote
        // poison, and the compacted journal vouched for none of four ops
        // the replica had acknowledged). `unvouch_copies` reads the
        // spare's copy places too, so such a copy never outlives a rewrite.
        // They go with the same fsync as their prepares: the tmp file is not
        // the journal until its exchange is durable, after that fsync.
        let ring_last = faulty.keys().max().copied().unwrap_or(through_op).max(clear_last).max(head);
        let mut run: Vec<u8> = Vec::new();
        let mut run_first = through_op + 1;
        // The journal's ring entries of the live ops, one read per run of
        // adjacent entries (the ring wraps at most once).
        let mut journal_ring: Vec<u8> = Vec::new();
        let mut live_first = through_op + 1;
        while live_first <= head {
            let lap_last = head.min(live_first + config.slot_count - 1 - live_first % config.slot_count);
            journal_ring.extend(self.ring_entries_bytes(live_first, lap_last).await);
            live_first = lap_last + 1;
        }
        for op in through_op + 1..=ring_last {
            match faulty.get(&op) {
                Some(Some(header)) => run.extend_from_slice(&header.encode()),
                Some(None) => run.resize(run.len() + HEADER_SIZE_BYTES, POISON_BYTE),
                None if op <= head => {
                    let start = (op - through_op - 1) as usize * HEADER_SIZE_BYTES;
                    let entry = &journal_ring[start..start + HEADER_SIZE_BYTES];
                    match self.headers.get(&op) {
                        Some(header) if self.is_durable(op) && !names_prepare(entry, header) => {
                            crate::marks::hit(crate::marks::COMPACTION_RING_COPY_REBUILT);
                            run.extend_from_slice(&header.encode());
                        }
                        _ => run.extend_from_slice(entry),
                    }
                }
                None => run.resize(run.len() + HEADER_SIZE_BYTES, 0),
            }
            if op == ring_last || (op + 1).is_multiple_of(config.slot_count) {
                let (bytes, offset) = (std::mem::take(&mut run), config.header_copy_offset(run_first));
                let result = write_pages(&file, bytes, offset, &nothing_known).await;
                result.map_err(io_error("write tmp header ring"))?;
                run_first = op + 1;
            }
        }
        Ok((file, carried.into_keys().collect()))
    }

    /// The journal's bytes of the ring entries of ops `first..=last` (in one
    /// lap of the ring), as the spare must hold them: one read, or where it
    /// fails one read per entry (a read error poisons only the entries it
    /// takes; the stage then rebuilds those of durable ops).
    async fn ring_entries_bytes(&self, first: u64, last: u64) -> Vec<u8> {
        let offset = self.config.header_copy_offset(first);
        let length = (last - first + 1) * HEADER_SIZE_BYTES as u64;
        let (result, bytes) = crate::io::read_exact_retrying(&*self.file, vec![0; length as usize], offset).await;
        if result.is_ok() {
            return bytes;
        }
        let mut entries = Vec::with_capacity(length as usize);
        for entry in (offset..offset + length).step_by(HEADER_SIZE_BYTES) {
            entries.extend(self.copy_place_bytes(entry, HEADER_SIZE_BYTES as u64).await);
        }
        entries
    }

    /// The journal's bytes of a copy place (a ring entry or a region), as
    /// the spare must hold them; poison where they cannot be read (a read
    /// error takes a copy place's evidence with it: it reads as damaged).
    async fn copy_place_bytes(&self, offset: u64, length: u64) -> Vec<u8> {
        let (result, bytes) = crate::io::read_exact_retrying(&*self.file, vec![0; length as usize], offset).await;
        match result {
            Ok(()) => bytes,
            Err(_) => vec![POISON_BYTE; length as usize],
        }
    }

    /// The byte ranges `(offset, length)` of every copy that may name an op
    /// of `op + 1..=head`: their ring copies, and in each region written
    /// since (carriers up to `file_op_written_max`) the contiguous entries
    /// of those ops. No entry of a kept op is among them: the ops of the
    /// live window have distinct slots.
    fn dropped_copies(&self, op: u64, head: u64) -> Vec<(u64, u64)> {
        let mut ranges: Vec<(u64, u64)> = (op + 1..=head)
            .map(|dropped| (self.config.header_copy_offset(dropped), HEADER_SIZE_BYTES as u64))
            .collect();
        let carried_max = self.config.copies_carried_max();
        let carrier_last = (head + carried_max).min(self.file_op_written_max);
        for carrier in op + 2..=carrier_last {
            // Entries of dropped ops `nearest..=farthest` before `carrier`.
            let farthest = (op + 1).max(carrier.saturating_sub(carried_max));
            let nearest = head.min(carrier - 1);
            if farthest > nearest {
                continue;
            }
            let offset = self.config.carried_copy_offset(farthest, carrier - farthest);
            ranges.push((offset, (nearest - farthest + 1) * HEADER_SIZE_BYTES as u64));
        }
        ranges
    }

    /// Drop the uncommitted suffix after `op` (view change). Durable when this
    /// returns Ok, so a crash cannot resurrect a prepare of an older view. A
    /// failure poisons the journal.
    pub async fn truncate_after(&mut self, op: u64) -> Result<(), JournalError> {
        self.check_writable()?;
        // A staged compaction's checkpoint counts as the snapshot already:
        // the spare holds nothing at or below it to truncate.
        let snapshot_op = self.window.as_ref().map_or(self.snapshot_op, |window| window.through_op);
        if op < snapshot_op {
            return Err(JournalError::TruncateBelowSnapshot { op, snapshot_op });
        }
        let Some(head) = self.op_head.filter(|&head| head > op) else { return Ok(()) };
        // Copies first (ring and carried), durably, then the slots: a crash
        // in between leaves a valid prepare without its copy (resurrected,
        // as any unfinished truncation), never a dropped prepare that looks
        // faulty.
        let copies = self.dropped_copies(op, head);
        let slots: Vec<(u64, u64)> =
            (op + 1..=head).map(|dropped| (self.config.slot_offset(dropped), PAGE_SIZE_BYTES)).collect();
        for (ranges, operation) in [(copies, "clear header copy"), (slots, "clear slot")] {
            for (offset, length) in ranges {
                let result = self.write_everywhere(vec![0; length as usize], offset).await;
                if let Err(source) = result {
                    self.poisoned = true;
                    return Err(JournalError::Io { operation, source });
                }
            }
            if let Err(source) = self.sync_everywhere().await {
                self.poisoned = true;
                return Err(JournalError::Io { operation: "fsync", source });
            }
        }
        self.copies_pending.retain(|&live| live <= op);
        self.copies_ready.retain(|&live| live <= op);
        self.copies_carried.retain(|&live| live <= op);
        self.copies_fresh.retain(|&live| live <= op);
        if let Some(window) = &mut self.window {
            window.held.retain(|&live| live <= op);
        }
        self.headers.retain(|&live, _| live <= op);
        self.missing.retain(|&live| live <= op);
        self.op_head = (op > self.snapshot_op).then_some(op);
        debug_assert!(self.headers.keys().all(|&live| live <= op));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file_header() -> impl Strategy<Value = FileHeader> {
        (any::<u128>(), any::<u64>(), 1..=SLOT_COUNT_MAX, any::<u32>(), any::<u64>(), any::<Option<u128>>()).prop_map(
            |(cluster, namespace, slot_count, message_size_max_bytes, snapshot_op, snapshot_checksum)| FileHeader {
                cluster,
                namespace,
                slot_count,
                message_size_max_bytes,
                snapshot_op,
                snapshot_checksum,
            },
        )
    }

    proptest! {
        #[test]
        fn file_header_round_trips(header in file_header()) {
            let bytes = header.encode();
            prop_assert_eq!(bytes.len() as u64, FILE_HEADER_SIZE_BYTES);
            prop_assert_eq!(FileHeader::decode(&bytes).unwrap(), header);
            prop_assert_eq!(decode_file_snapshot_op(&bytes).unwrap(), header.snapshot_op);
        }

        #[test]
        fn file_header_bit_flip_is_detected(header in file_header(), bit in 0usize..FH_ENCODED_BYTES * 8) {
            let mut bytes = header.encode();
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(FileHeader::decode(&bytes).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_file_snapshot_op(&bytes);
        }
    }

    /// The first write of a batch carries the ready copies in its slot's
    /// region, the whole page of it, the entries it does not carry filler;
    /// the others are one write each. Every write is whole pages, padded.
    #[test]
    fn a_batch_carries_copies_in_its_first_write_only() {
        // Two pages a slot: an empty prepare does not fill its slot, so
        // op 11 does not join op 10's write.
        let config = JournalConfig { slot_count: 64, message_size_max_bytes: 8192, cluster: 1, namespace: 2 };
        let header = |op: u64| {
            let mut header = Header::new(Command::Prepare, 1);
            header.namespace = 2;
            header.op = op;
            header.set_checksums(&[]);
            header
        };
        let (seven, nine, ten, eleven) = (header(7), header(9), header(10), header(11));
        let prepares = [(&ten, &[][..]), (&eleven, &[][..])];
        let runs = prepare_runs(&config, &[seven, nine], 0, prepares);
        assert_eq!(runs.len(), 2);
        let region = COPIES_REGION_BYTES as usize;
        assert_eq!(runs[0].offset, config.copies_region_offset(10), "starts at its region");
        assert_eq!(runs[0].offset % PAGE_SIZE_BYTES, 0);
        assert_eq!(runs[0].offset + (region - 3 * 256) as u64, config.carried_copy_offset(7, 3));
        assert_eq!(&runs[0].bytes()[region - 768..region - 512], &seven.encode()[..], "op 7 at distance 3");
        assert_eq!(&runs[0].bytes()[region - 256..region], &nine.encode()[..], "op 9 at distance 1");
        let first = runs[0].bytes();
        let not_carried = first[..region - 768].iter().chain(&first[region - 512..region - 256]);
        assert!(not_carried.into_iter().all(|&b| b == FILLER_BYTE));
        assert_eq!(&runs[0].bytes()[region..region + 256], &ten.encode()[..]);
        assert!(runs[0].bytes()[region + 256..region + 512].iter().all(|&b| b == 0), "zeros to the sector's end");
        assert!(runs[0].bytes()[region + 512..].iter().all(|&b| b == PADDING_BYTE), "padding to the page's end");
        assert_eq!(runs[0].len_bytes(), region + PAGE_SIZE_BYTES as usize);
        assert_eq!((runs[1].offset, runs[1].len_bytes()), (config.slot_offset(11), PAGE_SIZE_BYTES as usize));
    }

    /// A large body travels to the write as a part of its own, not copied;
    /// the run's bytes are exactly what a joined buffer would hold (the
    /// copying encoder's), small bodies stay in the made bytes.
    #[test]
    fn a_large_body_is_written_as_it_is_and_the_bytes_are_the_same() {
        let config = JournalConfig { slot_count: 8, message_size_max_bytes: 1 << 20, cluster: 1, namespace: 2 };
        let header_over = |op: u64, body: &[u8]| {
            let mut header = Header::new(Command::Prepare, 1);
            header.namespace = 2;
            header.op = op;
            header.set_checksums(body);
            header
        };
        let (large, small) = (vec![9u8; BODY_BORROWED_BYTES_MIN + 100], vec![3u8; 100]);
        let (first, second) = (header_over(1, &large), header_over(2, &small));
        let runs = prepare_runs(&config, &[], 0, [(&first, &large[..]), (&second, &small[..])]);
        assert_eq!(runs.len(), 2, "the large prepare does not fill its slot: the small one writes apart");
        assert!(
            matches!(runs[0].parts[..], [RunPart::Made(_), RunPart::Body(body), RunPart::Made(_)] if body.as_ptr() == large.as_ptr())
        );
        assert_eq!(runs[0].bytes(), encode_prepare_pages(&first, &large));
        assert!(matches!(runs[1].parts[..], [RunPart::Made(_)]), "a small body is copied");
        assert_eq!(runs[1].bytes(), encode_prepare_pages(&second, &small));
    }

    /// A fresh batch of full prepares is one write: the first carries its
    /// copies, the regions between the slots are filler. A rewritten op (at
    /// or below `fresh_above`) is its own write, and where the ring wraps a
    /// new write begins.
    #[test]
    fn a_fresh_batch_of_full_prepares_is_one_write() {
        let config = JournalConfig { slot_count: 8, message_size_max_bytes: 4096, cluster: 1, namespace: 2 };
        let body = vec![7u8; 4096 - HEADER_SIZE_BYTES];
        let header = |op: u64| {
            let mut header = Header::new(Command::Prepare, 1);
            header.namespace = 2;
            header.op = op;
            header.set_checksums(&body);
            header
        };
        let headers: Vec<Header> = (1..=7).map(header).collect();
        let prepares = || headers[1..].iter().map(|header| (header, &body[..]));
        // Ops 2..=7, op 1's copy carried: one write from op 2's region on.
        let runs = prepare_runs(&config, &headers[..1], 1, prepares());
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].count, 6);
        assert_eq!(runs[0].offset, config.carried_copy_offset(1, 1) + 256 - COPIES_REGION_BYTES, "op 2's region");
        let stride = config.slot_stride_bytes() as usize;
        assert_eq!(runs[0].len_bytes(), 6 * stride);
        let entry_one = COPIES_REGION_BYTES as usize - 256;
        assert!(runs[0].bytes()[..entry_one].iter().all(|&b| b == FILLER_BYTE), "op 2's region: not carried");
        assert_eq!(&runs[0].bytes()[entry_one..entry_one + 256], &headers[0].encode()[..]);
        for (index, header) in headers[1..].iter().enumerate() {
            let at = (config.slot_offset(header.op) - runs[0].offset) as usize;
            assert_eq!(&runs[0].bytes()[at..at + HEADER_SIZE_BYTES], &header.encode()[..]);
            if index > 0 {
                let region = &runs[0].bytes()[at - COPIES_REGION_BYTES as usize..at];
                assert!(region.iter().all(|&b| b == FILLER_BYTE), "op {}'s region is filler", header.op);
            }
        }
        // Ops 2..=4 were written before: ops 3 and 4 start writes of their
        // own (their regions may hold live copies); 5.. join op 4's write.
        let runs = prepare_runs(&config, &[], 4, prepares());
        let counts: Vec<usize> = runs.iter().map(|run| run.count).collect();
        assert_eq!(counts, [1, 1, 4]);
        // Nothing fresh: one write per prepare.
        assert_eq!(prepare_runs(&config, &[], u64::MAX, prepares()).len(), 6);
        // Ops 7..=9 wrap at op 8 (slot 0): two writes.
        let wrapping: Vec<Header> = (7..=9).map(header).collect();
        let runs = prepare_runs(&config, &[], 6, wrapping.iter().map(|header| (header, &body[..])));
        let counts: Vec<usize> = runs.iter().map(|run| run.count).collect();
        assert_eq!(counts, [1, 2]);
    }

    #[test]
    fn slot_geometry_is_page_aligned() {
        let config = JournalConfig { slot_count: 4, message_size_max_bytes: 1000, cluster: 1, namespace: 2 };
        assert_eq!(config.slot_size_bytes(), PAGE_SIZE_BYTES);
        assert_eq!(config.headers_zone_size_bytes(), HEADERS_ZONE_ALIGN_BYTES);
        assert_eq!(config.header_copy_offset(5), FILE_HEADER_SIZE_BYTES + 256);
        let stride = COPIES_REGION_BYTES + PAGE_SIZE_BYTES;
        assert_eq!(config.slot_stride_bytes(), stride);
        let slots = FILE_HEADER_SIZE_BYTES + HEADERS_ZONE_ALIGN_BYTES;
        assert_eq!(config.slot_offset(5), slots + stride + COPIES_REGION_BYTES);
        assert_eq!(config.file_header_copy_offset(), slots + 4 * stride);
        assert_eq!(config.file_size_bytes(), 2 * FILE_HEADER_SIZE_BYTES + HEADERS_ZONE_ALIGN_BYTES + 4 * stride);
        for op in 0..4 {
            assert_eq!(config.slot_offset(op) % PAGE_SIZE_BYTES, 0, "every slot starts a page");
        }
        assert_eq!(JournalConfig { message_size_max_bytes: 4097, ..config }.slot_size_bytes(), 2 * PAGE_SIZE_BYTES);
        // Every copy place names the op of the window it vouches for.
        for window_first in [1, 6, 9] {
            for op in window_first..window_first + 4 {
                for place in config.header_copy_offsets(op) {
                    assert_eq!(config.copy_place_op(place, window_first), Some(op), "place {place}");
                }
            }
        }
        assert_eq!(config.copy_place_op(config.slot_offset(5), 5), None, "a slot header is no copy place");
        assert_eq!(config.copy_place_op(FILE_HEADER_SIZE_BYTES + 100, 5), None, "not a place's start");
        assert_eq!(config.copy_place_op(config.file_header_copy_offset(), 5), None);
        // With 4 slots an op's copy rides at most 3 slots ahead (never in a
        // region of its own slot); entry 1 ends where the next header begins.
        assert_eq!(config.copies_carried_max(), 3);
        assert_eq!(config.carried_copy_offset(5, 1), config.slot_offset(6) - 256);
        assert_eq!(config.carried_copy_offset(5, 3), config.slot_offset(8) - 3 * 256);
        assert_eq!(config.header_copy_offsets(5).count(), 4);
        assert_eq!(JournalConfig { slot_count: 1024, ..config }.copies_carried_max(), COPIES_CARRIED_MAX);
        let wide = JournalConfig { slot_count: 17, ..config };
        assert_eq!(wide.headers_zone_size_bytes(), 2 * HEADERS_ZONE_ALIGN_BYTES, "17 copies spill into a second page");
        assert!(matches!(
            JournalConfig { message_size_max_bytes: 100, ..config }.validate(),
            Err(JournalError::InvalidConfig { .. })
        ));
        assert!(matches!(
            JournalConfig { slot_count: SLOT_COUNT_MAX + 1, ..config }.validate(),
            Err(JournalError::InvalidConfig { .. })
        ));
    }
}
