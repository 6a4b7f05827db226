//! Superblock on `SimIo`: two-copy writes survive a crash at any storage
//! call, a torn or corrupt copy falls back to the other, bad files give
//! typed errors.

use std::path::Path;

use shoal_sim::{DiskFaults, SimIo, block_on_ready};
use shoal_vsr::header::Header;
use shoal_vsr::io::OpenMode;
use shoal_vsr::journal::settle_file;
use shoal_vsr::superblock::{
    SUPERBLOCK_COPY_SIZE_BYTES, Superblock, SuperblockError, SuperblockState, superblock_copy_offset, superblock_path,
};

const CLUSTER: u128 = 77;
const NAMESPACE: u64 = 5;
const REPLICA: u8 = 2;
const DIR: &str = "/data/r2";

fn open(io: &SimIo) -> Result<Superblock<SimIo>, SuperblockError> {
    block_on_ready(Superblock::open(io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA, OpenMode::ReadWrite))
}

fn state(view: u64, log_view: u64, commit: u64) -> SuperblockState {
    SuperblockState { view, log_view, commit, view_headers: Vec::new(), rejoining: false, nack_floor: 0 }
}

#[test]
fn write_then_reopen_after_crash() {
    let io = SimIo::new(1);
    let mut superblock = block_on_ready(Superblock::create(&io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA)).unwrap();
    assert_eq!(superblock.state().clone(), SuperblockState::default());
    block_on_ready(superblock.write(state(3, 2, 10))).unwrap();
    drop(superblock);
    io.crash();
    let superblock = open(&io).unwrap();
    assert_eq!(superblock.state().clone(), state(3, 2, 10));
    assert_eq!(superblock.sequence(), 2);
}

#[test]
fn crash_at_every_step_of_a_write_keeps_old_or_new_state() {
    for seed in 0..16 {
        for steps in 0..6 {
            let io = SimIo::new(seed);
            io.disk().faults =
                DiskFaults { crash_lost_ppm: 400_000, crash_torn_ppm: 1_000_000, ..DiskFaults::default() };
            let mut superblock =
                block_on_ready(Superblock::create(&io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA)).unwrap();
            block_on_ready(superblock.write(state(1, 1, 5))).unwrap();
            io.disk().crash_after_steps(steps);
            let result = block_on_ready(superblock.write(state(2, 1, 9)));
            drop(superblock);
            io.crash();
            let recovered = open(&io).unwrap_or_else(|error| panic!("seed {seed} steps {steps}: {error}"));
            assert!(
                recovered.state().clone() == state(1, 1, 5) || recovered.state().clone() == state(2, 1, 9),
                "seed {seed} steps {steps}: {:?}",
                recovered.state().clone()
            );
            if result.is_ok() {
                assert_eq!(recovered.state().clone(), state(2, 1, 9), "an Ok write is durable");
            }
        }
    }
}

#[test]
fn a_corrupt_copy_falls_back_to_the_other() {
    let io = SimIo::new(2);
    let mut superblock = block_on_ready(Superblock::create(&io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA)).unwrap();
    block_on_ready(superblock.write(state(4, 4, 40))).unwrap();
    drop(superblock);
    let path = superblock_path(Path::new(DIR), NAMESPACE);
    // Copy A torn back to an older, still-valid image is covered above; here
    // copy A is garbage and copy B holds the state.
    io.disk().poke(&path, 10, &[0xFF; 40]).unwrap();
    // Read only: a writable open would rewrite copy A from copy B (below).
    assert_eq!(open_read_only(&io).unwrap().state().clone(), state(4, 4, 40));
    // Sticky read corruption of copy B too: no valid copy is left.
    io.disk().corrupt_sector(&path, superblock_copy_offset(1) + 20).unwrap();
    let error = open_read_only(&io).unwrap_err();
    assert!(matches!(error, SuperblockError::NoValidCopy), "{error}");
}

fn open_read_only(io: &SimIo) -> Result<Superblock<SimIo>, SuperblockError> {
    block_on_ready(Superblock::open(io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA, OpenMode::ReadOnly))
}

#[test]
fn a_writable_open_rewrites_a_damaged_copy_from_the_valid_one() {
    let io = SimIo::new(8);
    let mut superblock = block_on_ready(Superblock::create(&io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA)).unwrap();
    block_on_ready(superblock.write(state(4, 4, 40))).unwrap();
    drop(superblock);
    let path = superblock_path(Path::new(DIR), NAMESPACE);
    io.disk().poke(&path, 10, &[0xFF; 40]).unwrap();
    assert_eq!(open(&io).unwrap().state().clone(), state(4, 4, 40));
    // Copy A was rewritten and made durable: losing copy B now loses nothing.
    io.power_loss();
    io.disk().poke(&path, superblock_copy_offset(1) + 10, &[0xFF; 40]).unwrap();
    assert_eq!(open_read_only(&io).unwrap().state().clone(), state(4, 4, 40));
}

/// Prepare headers of `view` for `ops`, as a view change installs them.
fn view_headers(view: u64, ops: std::ops::RangeInclusive<u64>) -> Vec<Header> {
    crate::fixtures::view_headers(CLUSTER, NAMESPACE, view, ops)
}

/// crash-loop seed 230 (Agreement checker: "replica 0 was offered a
/// canonical log that contradicts ops it committed"), with storage latency
/// and crashes in flight. A superblock write failed between its copies: an
/// fsync EIO after copy A, so copy B still held the state before. The
/// restart settled the file (copy A durable) and the replica acted on copy
/// A's log_view: it acknowledged prepares of view 1. Its next write (view
/// 2) tore copy A in a power loss, and open fell back to copy B, log_view
/// 0: the replica's do_view_change disowned view 1's log, and the new
/// primary started view 2 without ops the replica had helped commit.
/// A writable open now rewrites the copy a failed write left behind.

#[test]
fn a_write_failed_between_copies_is_finished_before_the_next_write_can_tear_copy_a() {
    let dir = Path::new(DIR);
    let path = superblock_path(dir, NAMESPACE);
    let io = SimIo::new(7);
    let mut superblock = block_on_ready(Superblock::create(&io, dir, CLUSTER, NAMESPACE, REPLICA)).unwrap();
    block_on_ready(superblock.write(state(1, 0, 16))).unwrap();
    // The write of log_view 1: copy A reaches the page cache, its fsync
    // fails (Linux drops it from the device's future), copy B is not written.
    io.disk().fail_next_sync();
    assert!(block_on_ready(superblock.write(state(1, 1, 16))).is_err());
    drop(superblock);
    // The replica crashes on the storage error; the page cache survives.
    io.crash_process();
    // The restart settles the file: what reads see (copy A's log_view 1) is
    // rewritten and fsynced, so it is durable.
    block_on_ready(settle_file(&io, &path)).unwrap();
    let mut superblock = open(&io).unwrap();
    assert_eq!(superblock.state().clone(), state(1, 1, 16));
    // The replica acts on log_view 1, then enters view 2: the power fails
    // while copy A's write is in flight, and only its first sector lands.
    // Its view headers span sectors, so a tear that keeps only the first
    // sector leaves copy A invalid (the record's checksum is in sector 0).
    let view_2 = SuperblockState { view_headers: view_headers(1, 55..=57), ..state(2, 1, 57) };
    io.disk().crash_after_steps(1);
    assert!(block_on_ready(superblock.write(view_2)).is_err(), "the fsync after copy A halts");
    let torn_sector = io.disk().contents(&path).unwrap()[..512].to_vec();
    drop(superblock);
    io.disk().faults = DiskFaults { crash_lost_ppm: 1_000_000, ..DiskFaults::default() };
    io.power_loss();
    io.disk().poke(&path, 0, &torn_sector).unwrap();
    // Copy A is torn; copy B must hold log_view 1, not the state before it.
    let recovered = open(&io).unwrap();
    assert_eq!(recovered.state().clone(), state(1, 1, 16), "the state the replica acted on");
}

#[test]
fn bad_files_give_typed_errors() {
    let io = SimIo::new(3);
    assert!(matches!(open(&io), Err(SuperblockError::Missing { .. })));
    drop(block_on_ready(Superblock::create(&io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA)).unwrap());
    assert!(matches!(
        block_on_ready(Superblock::create(&io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA)),
        Err(SuperblockError::AlreadyExists { .. })
    ));
    assert!(matches!(
        block_on_ready(Superblock::open(&io, Path::new(DIR), CLUSTER + 1, NAMESPACE, REPLICA, OpenMode::ReadWrite)),
        Err(SuperblockError::WrongOwner { found: CLUSTER, .. })
    ));
    assert!(matches!(
        block_on_ready(Superblock::open(&io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA + 1, OpenMode::ReadWrite)),
        Err(SuperblockError::WrongOwner { found_replica: REPLICA, .. })
    ));
    let mut reader =
        block_on_ready(Superblock::open(&io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA, OpenMode::ReadOnly)).unwrap();
    assert!(matches!(block_on_ready(reader.write(state(1, 0, 0))), Err(SuperblockError::ReadOnly)));
    let mut writer = open(&io).unwrap();
    assert!(matches!(block_on_ready(writer.write(state(1, 2, 0))), Err(SuperblockError::InvalidState { .. })));
    let path = superblock_path(Path::new(DIR), NAMESPACE);
    io.disk().poke_len(&path, 0).unwrap();
    assert!(matches!(open(&io), Err(SuperblockError::NoValidCopy)));
}

#[test]
#[should_panic(expected = "view never goes back")]
fn view_never_goes_back() {
    let io = SimIo::new(4);
    let mut superblock = block_on_ready(Superblock::create(&io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA)).unwrap();
    block_on_ready(superblock.write(state(5, 5, 0))).unwrap();
    let _ = block_on_ready(superblock.write(state(4, 4, 0)));
}

/// disk-rot seed 366 (with misdirected superblock writes): the write of
/// copy B went to another sector of the file, after copy A was written.
/// With the copies adjacent, a copy-sized write landing between them
/// corrupted the new copy A and the old copy B at once, and the replica
/// could not restart. A copy's size apart, any landing spot leaves one
/// valid copy: the new state, or the one before it.
#[test]
fn a_misdirected_copy_write_leaves_one_valid_copy_wherever_it_lands() {
    let dir = Path::new(DIR);
    // The bytes copy B's write carried: copy A of the same write.
    let model = SimIo::new(5);
    let mut superblock = block_on_ready(Superblock::create(&model, dir, CLUSTER, NAMESPACE, REPLICA)).unwrap();
    block_on_ready(superblock.write(state(1, 1, 1))).unwrap();
    block_on_ready(superblock.write(state(2, 2, 2))).unwrap();
    let path = superblock_path(dir, NAMESPACE);
    let copy_bytes = model.disk().contents(&path).unwrap()[..SUPERBLOCK_COPY_SIZE_BYTES as usize].to_vec();
    let file_size_bytes = shoal_vsr::superblock::superblock_file_size_bytes();
    let sectors = (file_size_bytes - SUPERBLOCK_COPY_SIZE_BYTES) / 512;
    for landing in (1..=sectors).map(|sector| sector * 512).filter(|&at| at != superblock_copy_offset(1)) {
        let io = SimIo::new(6);
        let mut superblock = block_on_ready(Superblock::create(&io, dir, CLUSTER, NAMESPACE, REPLICA)).unwrap();
        block_on_ready(superblock.write(state(1, 1, 1))).unwrap();
        drop(superblock);
        // Copy A of the next write landed; copy B's landed at `landing`.
        io.disk().poke(&path, 0, &copy_bytes).unwrap();
        io.disk().poke(&path, landing, &copy_bytes).unwrap();
        let reopened = open(&io).unwrap_or_else(|error| panic!("landing at {landing}: {error}"));
        assert!([state(1, 1, 1), state(2, 2, 2)].contains(reopened.state()), "landing at {landing}");
    }
}

/// Issue 10: superblock sequences were reused after a fall-back. A write
/// of sequence 3 (view 2) tore copy A in a power loss; open fell back to
/// copy B (sequence 2, view 1) and went on from sequence 3, so the next
/// write (view 3) put sequence 3 on the disk again with another state,
/// against the field's promise that a sequence names one state. Open now
/// starts above a sequence a torn copy shows, and its repair writes the
/// state it fell back to under a fresh sequence.
#[test]
fn a_sequence_a_torn_write_lost_is_never_written_again_with_another_state() {
    let dir = Path::new(DIR);
    let path = superblock_path(dir, NAMESPACE);
    let io = SimIo::new(12);
    let mut superblock = block_on_ready(Superblock::create(&io, dir, CLUSTER, NAMESPACE, REPLICA)).unwrap();
    block_on_ready(superblock.write(state(1, 1, 5))).unwrap();
    assert_eq!(superblock.sequence(), 2);
    // Sequence 3: copy A's write reaches the page cache, the power fails
    // before its fsync, and only its first sector lands.
    let view_2 = SuperblockState { view_headers: view_headers(2, 6..=8), ..state(2, 2, 8) };
    io.disk().crash_after_steps(1);
    assert!(block_on_ready(superblock.write(view_2)).is_err());
    let torn_sector = io.disk().contents(&path).unwrap()[..512].to_vec();
    drop(superblock);
    io.disk().faults = DiskFaults { crash_lost_ppm: 1_000_000, ..DiskFaults::default() };
    io.power_loss();
    io.disk().poke(&path, 0, &torn_sector).unwrap();
    let mut superblock = open(&io).unwrap();
    assert_eq!(superblock.state().clone(), state(1, 1, 5), "open falls back to copy B");
    assert!(superblock.sequence() > 3, "the fallen-back state is not written again under sequence 3");
    block_on_ready(superblock.write(state(3, 3, 9))).unwrap();
    let (sequence, written) = shoal_vsr::superblock::decode_file(&io.disk().contents(&path).unwrap()).unwrap().unwrap();
    assert_eq!(written, state(3, 3, 9));
    assert!(sequence > 3, "sequence 3 named view 2 (lost in a torn copy); view 3 got {sequence}");
}
