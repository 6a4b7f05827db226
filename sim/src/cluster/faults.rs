//! The fault policy: seeded rolls against the scenario's `FaultMix`, the
//! fault budget, scripted faults, and where storage rot and disk wipes may
//! land so that the cluster stays recoverable.

use super::loss::{self, Holding};
use super::*;

impl Cluster {
    /// Roll for a fault: false in the liveness phase or once the budget is spent.
    /// Roll for a fault: false in the liveness phase or once the budget is
    /// spent. The draw happens either way, so a budget-limited run follows
    /// the same random path as the unlimited one up to where it stops.
    pub(super) fn roll(&mut self, ppm: u32, kind: &str) -> bool {
        if self.phase != Phase::Safety {
            return false;
        }
        // Drawn even for a fault kind that is off, so that switching one off
        // (as the shrinker does) does not shift every later draw.
        let draw = self.rng.next_u64() % PPM_MAX;
        if draw >= u64::from(ppm) || self.fault_budget == Some(0) {
            return false;
        }
        self.spend_fault(kind);
        true
    }

    pub(super) fn spend_fault(&mut self, kind: &str) {
        if let Some(budget) = &mut self.fault_budget {
            *budget = budget.saturating_sub(1);
        }
        *self.faults.entry(kind.to_string()).or_default() += 1;
    }

    /// Charge the faults the network model just injected to the budget; once
    /// it is spent the network heals for good. Messages lost to a partition
    /// are its consequence, not faults of their own.
    pub(super) fn spend_network_faults(&mut self, before: &BTreeMap<&'static str, u64>) {
        if self.network.counters == *before {
            return;
        }
        let increased: Vec<(&'static str, u64)> = self
            .network
            .counters
            .iter()
            .map(|(kind, count)| (*kind, count - before.get(kind).copied().unwrap_or(0)))
            .filter(|(kind, delta)| *delta > 0 && *kind != "network_partition_drop")
            .collect();
        for (kind, delta) in increased {
            for _ in 0..delta {
                self.spend_fault(kind);
            }
        }
        if self.fault_budget == Some(0) {
            self.network.suppress();
        }
    }

    /// Before a storage action: maybe make it fail, or misdirect it.
    pub(super) fn arm_storage_fault(&mut self, replica: u8) {
        let index = replica as usize;
        if replica == self.rot_replica && self.config.replica_count >= 3 {
            self.maybe_misdirect(replica);
        }
        if self.roll(self.config.faults.storage_write_error_ppm, "storage_write_error") {
            self.nodes[index].io.disk().fail_next_write();
        } else if self.roll(self.config.faults.storage_torn_write_ppm, "storage_torn_write")
            || self.roll(self.config.faults.storage_lost_write_ppm, "storage_lost_write")
        {
            // The write lands in the page cache and the fsync fails:
            // the crash that follows loses or tears it, as the seed says.
            self.nodes[index].io.disk().fail_next_sync();
        } else {
            // Drawn only when on (it came last): older runs keep their path.
            let ppm = self.config.faults.storage_second_sync_error_ppm;
            if ppm > 0 && self.roll(ppm, "storage_second_sync_error") {
                self.nodes[index].io.disk().fail_second_sync();
            }
        }
        // Drawn only when on, last: older runs keep their path. On the rot
        // replica only: its restarts are the ones that rot (`maybe_rot`).
        let ppm = self.config.faults.storage_partition_sync_error_ppm;
        if ppm > 0 && replica == self.rot_replica && self.roll(ppm, "storage_partition_sync_error") {
            self.nodes[index].io.disk().fail_next_sync_under(&format!("{DATA_DIR}/partition-"));
        }
    }

    /// Scripted targets are resolved in the first group.
    pub(super) fn resolve(&self, target: Target) -> Option<u8> {
        let running = || (0..self.config.replica_count).filter_map(|i| self.group_replica(i, 0).map(|r| (i, r)));
        let primary = running()
            .filter(|(_, r)| r.status() == Status::Normal && r.is_primary())
            .max_by_key(|(_, r)| r.view())
            .map(|(i, _)| i);
        match target {
            Target::Replica(replica) => Some(replica),
            Target::Primary => primary,
            Target::Backup => running().map(|(i, _)| i).find(|i| Some(*i) != primary),
        }
    }

    pub(super) fn scripted(&mut self, index: usize, attempts: u32) {
        const ATTEMPTS_MAX: u32 = 2_000;
        let fault = self.config.script[index].clone();
        let retry = |cluster: &mut Cluster| {
            if attempts < ATTEMPTS_MAX {
                // Jittered, so the retry does not stay in phase with the clients.
                let delay = 1 + cluster.rng.next_u64() % 1_000_000;
                cluster.schedule(delay, Event::Scripted { index, attempts: attempts + 1 });
            }
        };
        match fault {
            ScriptedFault::Crash { target, down_ns, .. } => {
                let Some(replica) = self.resolve(target) else { return retry(self) };
                let busy = self.group_replica(replica, 0).is_some_and(|r| r.pipeline_len() > 0);
                if target == Target::Primary && !busy {
                    return retry(self);
                }
                self.spend_fault("scripted_crash");
                self.crash_for(replica, "scripted", down_ns);
            }
            ScriptedFault::CrashAll { down_ns, .. } => {
                self.spend_fault("scripted_crash_all");
                for replica in 0..self.config.replica_count {
                    self.crash_for(replica, "scripted (all)", down_ns);
                }
            }
            ScriptedFault::Isolate { target, until_ns, .. } => {
                let Some(replica) = self.resolve(target) else { return retry(self) };
                self.spend_fault("scripted_isolate");
                let kind = PartitionKind::Isolate { node: NodeId::from(replica) };
                let detail = format!("isolate replica {replica}");
                self.record(Some(replica), "network", 0, 0, || detail.clone());
                self.timeline(replica, TimelineKind::PartitionStart, detail);
                self.network.force_partition(Partition { kind, until_ns });
            }
            ScriptedFault::CorruptSlot { target, .. } => {
                let Some(replica) = self.resolve(target) else { return retry(self) };
                self.spend_fault("scripted_corrupt_slot");
                self.crash_for(replica, "scripted (corrupt slot)", TICK_NS);
                self.rot(replica);
            }
        }
    }

    /// A wipe is drawn only while every other replica runs in normal status
    /// with no journal damage it has not yet found (a misdirected write or
    /// running rot this life: its next open makes it `Recovering`), so the
    /// wiped one is the only replica without its state: losing one
    /// replica's whole disk must never lose a committed op. Swarm seed 5530:
    /// R1's journal write was misdirected at 559 ms, R0 was wiped at 562 ms
    /// while R1 still ran Normal; R1 restarted with a faulty journal, and
    /// with R0 rejoining both were `Recovering`, so R2 alone could never
    /// complete a view change (two impaired replicas of three).
    ///
    /// It may take the only copy of an *uncommitted* prepare: a view change
    /// may already have made that op part of the canonical log, and the
    /// protocol must then truncate it (nacks in the do_view_change) rather
    /// than wait for its body forever. Before the nack protocol this rule
    /// refused such wipes, which hid the wedge (view-churn seed 1783). But
    /// only where enough peers can still nack it (`loss`): an op a wiped
    /// peer acknowledged earlier may be committed, and then the victim's
    /// copy is the last (swarm seed 4877).
    pub(super) fn wipe_is_recoverable(&self, replica: u8) -> bool {
        let others_up = self.nodes.iter().enumerate().all(|(j, node)| {
            j == replica as usize
                || (node.up
                    && !node.wipe_on_restart
                    && !node.rotted_while_running
                    && node.node.as_ref().is_some_and(|n| (0..n.group_count()).all(|g| holds_its_log(n, g))))
        });
        others_up && (0..self.namespaces.len()).all(|group| self.wipe_of_group_is_recoverable(replica, group))
    }

    /// Losing `replica`'s state of `group` (it runs: a wipe) leaves the
    /// protocol able to finish every op some log names (`loss`).
    pub(super) fn wipe_of_group_is_recoverable(&self, replica: u8, group: usize) -> bool {
        let Some(victim) = self.group_replica(replica, group) else { return true };
        self.loss_is_recoverable(replica, group, &Holding::of_replica(victim))
    }

    /// `loss::loss_is_recoverable` against the running peers of `replica`
    /// in `group`; false unless every peer runs (the callers also ask that
    /// they run in normal status).
    fn loss_is_recoverable(&self, replica: u8, group: usize, lost: &Holding) -> bool {
        let peers: Vec<&GroupReplica> = (0..self.config.replica_count)
            .filter(|j| *j != replica)
            .filter_map(|j| self.group_replica(j, group))
            .collect();
        if peers.len() + 1 < usize::from(self.config.replica_count) {
            return false;
        }
        let nack_quorum = peers[0].nack_quorum_count();
        let peers: Vec<Holding> = peers.into_iter().map(Holding::of_replica).collect();
        loss::loss_is_recoverable(lost, &peers, nack_quorum).is_ok()
    }

    /// The next write to one journal (or, one time in four, superblock; or,
    /// `storage_partition_misdirect_ppm`, a partition's active segment) of
    /// the rot replica lands at another offset of the file (a misdirected
    /// write): it damages whatever is
    /// there and leaves the intended range as it was. Placed like rot: only
    /// on the one replica whose disk may be damaged, and only with peers
    /// (3 or more replicas), so every op it can damage is held elsewhere
    /// once committed; the journal's ring copies and two file header copies
    /// must turn the damage into faulty slots, never into a silently
    /// shorter log or a journal that cannot open. At most one per journal
    /// file per process life, as rot takes at most one copy of anything:
    /// the journal's redundancy is pairs (two file header copies, a slot
    /// and its ring copy), and a writable open repairs the damaged half.
    ///
    /// Off, it draws nothing (unlike `roll`'s other callers): a run without
    /// misdirected writes keeps the random path it had before they existed.
    pub(super) fn maybe_misdirect(&mut self, replica: u8) {
        let ppm = self.config.faults.storage_misdirected_write_ppm;
        if ppm == 0 || !self.roll(ppm, "storage_misdirected_write") {
            return;
        }
        let group = (self.rng.next_u64() % self.namespaces.len() as u64) as usize;
        let partition = self.config.faults.storage_partition_misdirect_ppm > 0
            && self.roll(self.config.faults.storage_partition_misdirect_ppm, "storage_partition_misdirect");
        let path = if partition {
            let Some(path) = self.active_segment_to_misdirect(replica, group) else { return };
            path
        } else if self.rng.next_u64().is_multiple_of(4) {
            shoal_vsr::superblock::superblock_path(std::path::Path::new(DATA_DIR), self.namespaces[group])
        } else {
            shoal_vsr::journal::journal_path(std::path::Path::new(DATA_DIR), self.namespaces[group])
        };
        // One per file per life: a second one could take the other copy
        // of what the first damaged before the restart's open repairs it
        // (disk-rot seed 1094: both file header copies in one life). Nor on
        // a file that holds rot or a latent sector error no write covered
        // yet: the misdirected write may be meant for, or land on, the
        // other copy of what that damage took (disk-rot-sharded seed
        // 19255: a read EIO took op 1's slot while its ring copy was
        // pending; that copy's write then went elsewhere, and the
        // acknowledged op came back lost and unnamed).
        let damaged = {
            let disk = self.nodes[replica as usize].io.disk();
            disk.misdirected_this_life(&path) || disk.holds_sector_damage(&path)
        };
        if damaged || self.another_is_impaired(replica) {
            return;
        }
        self.nodes[replica as usize].io.disk().misdirect_next_write_to(&path);
        self.nodes[replica as usize].rotted_while_running = true;
        self.nodes[replica as usize].partition_misdirect_armed = partition.then(|| (group, path.clone()));
        let label = self.group_label(group);
        let what = if partition { "partition segment" } else { "journal" };
        self.record(Some(replica), "misdirect", group as u64, 0, || format!("next {what} write{label}"));
    }

    /// A partition misdirect waits for the segment's next write within it
    /// (its next marker), which may come long after it was armed: it may
    /// land only while the rule that placed it still holds, every peer up
    /// and holding its partition log and none impaired. Checked before
    /// each of `replica`'s node calls (the write lands inside one); past the
    /// rule it is taken back (partition-misdirect seed 1032: armed while
    /// every peer held its log, it landed after replica 2 crashed with its
    /// partition's fsync failed, and replica 0 then installed a checkpoint
    /// from the damaged replica: the only copies left of 20 committed
    /// offsets were the damaged ones).
    pub(super) fn keep_partition_misdirect_placeable(&mut self, replica: u8) {
        let index = replica as usize;
        let Some((group, path)) = self.nodes[index].partition_misdirect_armed.clone() else { return };
        if !self.nodes[index].io.disk().misdirect_armed_for(&path) {
            self.nodes[index].partition_misdirect_armed = None;
            return;
        }
        if self.peers_hold_their_partition_logs(replica, group) && !self.another_is_impaired(replica) {
            return;
        }
        self.nodes[index].io.disk().disarm_misdirect();
        self.nodes[index].partition_misdirect_armed = None;
        let label = self.group_label(group);
        self.record(Some(replica), "misdirect_disarmed", group as u64, 0, || {
            format!("partition segment{label}: a peer no longer holds its log")
        });
    }

    /// The newest segment of `group`'s partition log on `replica` (the one
    /// its next sync writes a marker into), when a misdirected write may
    /// land there: a partition group of a cluster of 3 or more whose peers
    /// all hold their partition logs (as `rot_partition` asks: a peer still
    /// filling may wait for exactly these records).
    fn active_segment_to_misdirect(&self, replica: u8, group: usize) -> Option<std::path::PathBuf> {
        let namespace = self.namespaces[group];
        if namespace == shoal_shard::node::METADATA_NAMESPACE
            || self.config.replica_count < 3
            || !self.peers_hold_their_partition_logs(replica, group)
        {
            return None;
        }
        let dir = shoal_shard::node::partition_dir(std::path::Path::new(DATA_DIR), namespace);
        let io = &self.nodes[replica as usize].io;
        let files = io.instant(|| block_on_ready(shoal_vsr::io::Io::list_dir(io, &dir))).ok()?;
        files.into_iter().filter(|path| path.extension().is_some_and(|ext| ext == "log")).max()
    }

    /// Corrupt one journal slot below the head of the rot replica while it is
    /// down: recovery must notice and the cluster must repair it.
    pub(super) fn maybe_rot(&mut self, replica: u8) {
        if replica != self.rot_replica
            || !self.roll(self.config.faults.storage_read_corruption_ppm, "storage_read_corruption")
        {
            return;
        }
        self.rot(replica);
    }

    /// A journal sector of a running replica goes bad: the next read of that
    /// slot, by a checkpoint's drain or a restart, sees a flipped bit or,
    /// one damage in `READ_EIO_SHARE_OF`, fails with EIO (a latent sector
    /// error) until a write covers it. Placed like `rot`: never on the only
    /// copy of an op.
    pub(super) fn rot_running(&mut self, replica: u8) {
        let index = replica as usize;
        let group = (self.rng.next_u64() % self.namespaces.len() as u64) as usize;
        let draw = self.rng.next_u64();
        let Some(node) = self.nodes[index].node.as_ref() else { return };
        let journal = node.group(group).storage().journal();
        let Some(head) = journal.op_max() else { return };
        let low = journal.snapshot_op() + 1;
        if head < low {
            return;
        }
        // The head included: a rotten head slot must not pass for a torn one.
        let op = low + draw % (head - low + 1);
        let offset = Self::rot_offset(journal, op, self.rng.next_u64(), false);
        let checksum = journal.header(op).map(|header| header.checksum);
        let only_copy = !self.held_elsewhere(index, group, op);
        let path = shoal_vsr::journal::journal_path(std::path::Path::new(DATA_DIR), self.namespaces[group]);
        // A misdirect armed for this file and not landed yet may take the
        // other copy of the op this damage takes (`maybe_misdirect`).
        if (only_copy && !self.only_copy_may_rot(replica, group, op, checksum))
            || self.misdirect_touched(index, group, op)
            || self.nodes[index].io.disk().misdirect_armed_for(&path)
            || self.another_is_impaired(replica)
        {
            return;
        }
        if self.sector_shares_misdirected_evidence(index, group, journal.snapshot_op(), offset) {
            return;
        }
        let eio = damage_is_read_eio(draw);
        if self.damage_sector(index, &path, offset, eio) {
            self.nodes[index].rotted_while_running = true;
            self.record_journal_rot(replica, group, op, JournalRot { eio, only_copy, running: true });
        }
    }

    /// Trace, timeline and mark of a journal slot's damage that landed.
    fn record_journal_rot(&mut self, replica: u8, group: usize, op: u64, rot: JournalRot) {
        let label = self.group_label(group);
        let how = if rot.eio { "read EIO" } else { "rot" };
        let kind = match (rot.only_copy, rot.running) {
            (false, false) => "rot",
            (false, true) => "rot_running",
            (true, false) => "rot_only_copy",
            (true, true) => "rot_only_copy_running",
        };
        if rot.only_copy {
            shoal_vsr::marks::hit(shoal_vsr::marks::ROT_ONLY_COPY);
        }
        self.record(Some(replica), kind, op, group as u64, || format!("journal slot of op {op} ({how}){label}"));
        let when = if rot.running { " (running)" } else { "" };
        self.timeline(replica, TimelineKind::Fault, format!("{how} op {op}{when}"));
    }

    /// Another replica than `replica` is down to be wiped, `Recovering` in
    /// some group (rejoining after a wipe, or with a faulty journal), or
    /// voting with faulty slots it has not repaired yet:
    /// damaging `replica`'s disk now would make two impaired replicas, more
    /// than the fault model's one of three (swarm seed 2953: misdirects on
    /// the rot replica while a plot-wiped replica rejoined wedged a group).
    fn another_is_impaired(&self, replica: u8) -> bool {
        (0..self.config.replica_count).filter(|r| *r != replica).any(|r| {
            self.nodes[r as usize].wipe_on_restart
                || (0..self.namespaces.len()).any(|group| self.group_replica(r, group).is_some_and(impaired))
        })
    }

    /// A misdirected write was meant for, or landed on, `op`'s slot or its
    /// ring copy on this replica: one of its two copies may already be gone,
    /// so rot must not take the other (disk-rot seed 2686: op 1's ring copy
    /// write went elsewhere, then its slot rotted, and the acknowledged op
    /// read back as a torn write).
    pub(super) fn misdirect_touched(&self, index: usize, group: usize, op: u64) -> bool {
        let path = shoal_vsr::journal::journal_path(std::path::Path::new(DATA_DIR), self.namespaces[group]);
        let config = storage_config(index as u8, self.namespaces[group]).journal();
        let ranges = evidence_ranges(&config, op);
        let disk = self.nodes[index].io.disk();
        disk.misdirected_ranges(&path)
            .iter()
            .any(|&(offset, len)| ranges.iter().any(|&range| overlaps(range, (offset, offset + len))))
    }

    /// Damage to the sector at `offset` would take evidence of an op of the
    /// journal's window (from `snapshot_op`) that a misdirected write
    /// touched: a second fault on that one op, which the fault model never
    /// places. A sector holds more than the op a rot is aimed at (two ring
    /// copies share one): disk-rot seed 264061 aimed a read EIO at op 2's
    /// ring copy, and the sector also held op 3's, whose prepare write had
    /// gone elsewhere, so op 3 lost both its prepare and its copy. With
    /// page-sized damage (`disk-rot-pages`) a read error takes the whole
    /// page, sixteen ring copies: disk-rot-pages seed 14783 aimed one at op
    /// 6's ring copy, and the page held op 8's, whose prepare write had gone
    /// elsewhere. So the unit is the disk's damage unit, for a flipped bit
    /// too (the check comes before the draw of which it is).
    fn sector_shares_misdirected_evidence(&self, index: usize, group: usize, snapshot_op: u64, offset: u64) -> bool {
        let config = storage_config(index as u8, self.namespaces[group]).journal();
        let unit = self.nodes[index].io.disk().damage_unit_bytes();
        let start = offset / unit * unit;
        let damaged = (start, start + unit);
        // Bounded by the window: one op per slot.
        (snapshot_op + 1..=snapshot_op + config.slot_count).any(|op| {
            evidence_ranges(&config, op).iter().any(|&range| overlaps(range, damaged))
                && self.misdirect_touched(index, group, op)
        })
    }

    /// Every other replica runs and holds `op` of `group` (or checkpointed
    /// past it), so damaging it on `index` never destroys the last copy.
    pub(super) fn held_elsewhere(&self, index: usize, group: usize, op: u64) -> bool {
        self.nodes.len() > 1
            && (0..self.config.replica_count)
                .filter(|j| usize::from(*j) != index)
                .all(|j| self.group_replica(j, group).is_some_and(|r| r.has_body(op) || op <= r.checkpoint_op()))
    }

    /// `op` (with `checksum`) may rot on `replica` although no peer holds it
    /// (issue 10: rot "with a rule only that at least one replica keeps a
    /// good copy of every committed op"): losing it leaves the protocol able
    /// to finish, because a nack quorum of running peers can prove it was
    /// never committed and a view change truncates it (`loss`, with the
    /// lost holding just this op; the rotten replica's own nacks are not
    /// counted, as its restart raises its nack floor to its head). The trace
    /// names such a rot `rot_only_copy` (`rot_only_copy_running`).
    fn only_copy_may_rot(&self, replica: u8, group: usize, op: u64, checksum: Option<u128>) -> bool {
        let Some(checksum) = checksum else { return false };
        if self.config.replica_count < 3 || self.another_is_impaired(replica) {
            return false;
        }
        let commit_known = self.group_replica(replica, group).map_or(0, |r| r.commit_max());
        let lost = Holding {
            applied: 0,
            commit_known,
            nack_floor: 0,
            head: op,
            entries: std::iter::once((op, (checksum, true))).collect(),
        };
        self.loss_is_recoverable(replica, group, &lost)
    }

    /// A byte anywhere in what `op` uses on disk: header and body sectors
    /// alike (a journal that skipped the body checksum must fail), or its
    /// header ring copy.
    pub(super) fn rot_offset(
        journal: &shoal_vsr::journal::PrepareJournal<SimIo>,
        op: u64,
        draw: u64,
        ring: bool,
    ) -> u64 {
        let config = journal.config();
        if ring {
            return config.header_copy_offset(op) + (draw >> 2) % shoal_vsr::header::HEADER_SIZE_BYTES as u64;
        }
        let used_bytes = journal.header(op).map_or(shoal_vsr::header::HEADER_SIZE_BYTES as u64, |h| u64::from(h.size));
        config.slot_offset(op) + (draw >> 2) % used_bytes
    }

    /// A byte of the copy of `op`'s header that recovery would read: the
    /// ring's when it names `op`, else the carried one that does (a write
    /// after it carried it), else the ring's.
    fn copy_rot_offset(io: &SimIo, path: &Path, config: &shoal_vsr::journal::JournalConfig, op: u64, draw: u64) -> u64 {
        let size = shoal_vsr::header::HEADER_SIZE_BYTES;
        let names_op = |offset: u64| {
            let bytes = io.disk().contents_durable_range(path, offset, size);
            bytes
                .and_then(|bytes| shoal_vsr::header::Header::decode(&bytes).ok())
                .is_some_and(|header| header.command == shoal_vsr::header::Command::Prepare && header.op == op)
        };
        let offset = config.header_copy_offsets(op).find(|&offset| names_op(offset));
        offset.unwrap_or(config.header_copy_offset(op)) + (draw >> 2) % size as u64
    }

    /// What `replica`'s disk (the replica down) holds of `group`: its
    /// group storage, opened to inspect, and what losing the group's state
    /// there would take from the cluster. None when the files do not open.
    fn inspect_group(&self, replica: u8, group: usize) -> Option<(GroupStorage<SimIo>, DiskHolding)> {
        let io = self.nodes[replica as usize].io.clone();
        let config = storage_config(replica, self.namespaces[group]);
        let inspected = io.instant(|| block_on_ready(GroupStorage::open_to_inspect(&io, Path::new(DATA_DIR), config)));
        let (storage, recovered) = inspected.ok()?;
        // The newest op this disk holds in the group (checkpoint or journal).
        let checkpoint_op = recovered.checkpoint.as_ref().map_or(0, |c| c.anchor.op);
        let disk_head = storage.journal().op_max().unwrap_or(0).max(checkpoint_op);
        let holding = Holding {
            applied: checkpoint_op,
            commit_known: recovered.durable.commit,
            nack_floor: recovered.durable.nack_floor,
            head: disk_head,
            entries: recovered
                .entries
                .iter()
                .filter(|(header, _)| header.op > checkpoint_op)
                .map(|(header, _)| (header.op, (header.checksum, true)))
                .collect(),
        };
        Some((storage, DiskHolding { holding, view: recovered.durable.view }))
    }

    /// `inspect_group` without the storage.
    pub(super) fn disk_holding(&self, replica: u8, group: usize) -> Option<DiskHolding> {
        self.inspect_group(replica, group).map(|(_, held)| held)
    }

    pub(super) fn rot(&mut self, replica: u8) {
        let index = replica as usize;
        let group = (self.rng.next_u64() % self.namespaces.len() as u64) as usize;
        let namespace = self.namespaces[group];
        let io = self.nodes[index].io.clone();
        let Some((storage, DiskHolding { holding: disk, .. })) = self.inspect_group(replica, group) else {
            return;
        };
        // One rot in eight lands on the checkpoint file instead, unless this
        // down time already rotted something.
        if self.rng.next_u64().is_multiple_of(8) && !self.nodes[index].corrupted {
            drop(storage);
            self.rot_checkpoint(replica, group, &disk, false);
            return;
        }
        // One in eight of the rest lands on a superblock copy.
        if self.rng.next_u64().is_multiple_of(8) && !self.nodes[index].corrupted {
            drop(storage);
            return self.rot_superblock(replica, group, &disk);
        }
        // One in eight of the rest lands on a partition segment (sealed or
        // open) when the scenario rots partitions.
        if self.config.faults.storage_partition_rot_ppm > 0
            && self.rng.next_u64() % PPM_MAX < u64::from(self.config.faults.storage_partition_rot_ppm)
        {
            drop(storage);
            return self.rot_partition(replica, group);
        }
        let journal = storage.journal();
        let Some(head) = journal.op_max() else { return };
        let low = journal.snapshot_op() + 1;
        if head < low {
            return;
        }
        // The head included: a rotten head slot must not pass for a torn one.
        let op = low + self.rng.next_u64() % (head - low + 1);
        // Placed so the cluster stays recoverable: every other running
        // replica holds this op (or checkpointed past it), so corrupting it
        // here never destroys the last copy; or this is its only copy and
        // the peers can prove by nacks that it was never committed.
        let checksum = journal.header(op).map(|header| header.checksum);
        let only_copy = !self.held_elsewhere(index, group, op);
        if (only_copy && !self.only_copy_may_rot(replica, group, op, checksum))
            || self.misdirect_touched(index, group, op)
        {
            return;
        }
        // While down, one rot in four lands on the op's header ring copy
        // (recovery must rewrite it from the valid prepare); at most one rot
        // per slot per down time, so never both copies of one op.
        let draw = self.rng.next_u64();
        let path = shoal_vsr::journal::journal_path(std::path::Path::new(DATA_DIR), namespace);
        let offset = if draw.is_multiple_of(4) {
            Self::copy_rot_offset(&io, &path, journal.config(), op, draw)
        } else {
            Self::rot_offset(journal, op, draw, false)
        };
        if self.sector_shares_misdirected_evidence(index, group, journal.snapshot_op(), offset) {
            return;
        }
        drop(storage);
        let eio = damage_is_read_eio(draw);
        if self.damage_sector(index, &path, offset, eio) {
            self.nodes[index].corrupted = true;
            self.record_journal_rot(replica, group, op, JournalRot { eio, only_copy, running: false });
        }
    }

    /// Rot a byte anywhere in one partition segment file of `group` on a
    /// replica that is down. Only the rot replica's disk is ever damaged, so
    /// every peer keeps its own good copy of every message it persisted,
    /// and the restart must salvage the intact prefix and refill the rest
    /// from them (`GroupMachine::open_in_cluster`). Never the metadata
    /// group (it has no peers' partition logs to refill from: it replays).
    pub(super) fn rot_partition(&mut self, replica: u8, group: usize) {
        let index = replica as usize;
        let namespace = self.namespaces[group];
        if namespace == shoal_shard::node::METADATA_NAMESPACE
            || self.config.replica_count < 3
            || !self.peers_hold_their_partition_logs(replica, group)
        {
            return;
        }
        let dir = shoal_shard::node::partition_dir(std::path::Path::new(DATA_DIR), namespace);
        let io = self.nodes[index].io.clone();
        let Ok(mut files) = io.instant(|| block_on_ready(shoal_vsr::io::Io::list_dir(&io, &dir))) else { return };
        files.retain(|path| path.extension().is_some_and(|ext| ext == "log"));
        if files.is_empty() {
            return;
        }
        // Half the time, when a failed fsync left pages in a segment that
        // reads see and the device never got, the damage lands past where
        // they begin: the records before it are then read from the page
        // cache, and whatever the restart keeps of them (a salvage, a
        // recovery) it must write again before it promises them (disk-rot
        // seed 392). Only where partition fsyncs are made to fail
        // (partition-fsync), and only then does it draw: other scenarios
        // keep their path.
        let stale: Vec<(std::path::PathBuf, u64)> = if self.config.faults.storage_partition_sync_error_ppm > 0 {
            files.iter().filter_map(|path| Some((path.clone(), io.disk().first_stale_cached_offset(path)?))).collect()
        } else {
            Vec::new()
        };
        let past_stale = !stale.is_empty() && self.rng.next_u64().is_multiple_of(2);
        let (path, stale_from) = if past_stale {
            let (path, from) = stale[(self.rng.next_u64() % stale.len() as u64) as usize].clone();
            (path, Some(from))
        } else {
            (files[(self.rng.next_u64() % files.len() as u64) as usize].clone(), None)
        };
        let Some(size_bytes) = io.disk().length_of(&path) else { return };
        if size_bytes == 0 {
            return;
        }
        let draw = self.rng.next_u64();
        let offset = match stale_from {
            Some(from) if from < size_bytes => from + draw % (size_bytes - from),
            _ => draw % size_bytes,
        };
        let eio = damage_is_read_eio(draw);
        if self.damage_sector(index, &path, offset, eio) {
            self.nodes[index].corrupted = true;
            let label = self.group_label(group);
            let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
            let how = if eio { "read EIO" } else { "rot" };
            let place = if past_stale { ", past a failed fsync's leftovers" } else { "" };
            self.record(Some(replica), "rot", offset, group as u64, || {
                format!("partition {name} byte {offset} ({how}{place}){label}")
            });
            self.timeline(replica, TimelineKind::Fault, format!("{how} partition {name}"));
        }
    }

    /// Every peer of `replica` runs, is Normal in `group` and holds every
    /// message its state machine counts: a peer still filling its log after
    /// a state transfer may be waiting for exactly the messages this
    /// replica's segment holds (disk-rot seed 5353 with large appends: a
    /// read EIO on the last copy of offsets 144..150 left every replica
    /// missing them for good).
    fn peers_hold_their_partition_logs(&self, replica: u8, group: usize) -> bool {
        self.nodes.iter().enumerate().all(|(j, node)| {
            j == replica as usize
                || (node.up && !node.wipe_on_restart && node.node.as_ref().is_some_and(|n| holds_its_log(n, group)))
        })
    }

    /// Rot a byte of one superblock copy of `group` on a replica that is
    /// down: the replica must restart from the other copy with every promise
    /// it made (each write puts the same state in both copies, and a
    /// promise leaves only once both are durable). Not in a file a
    /// misdirected write touched (that may have taken the other copy
    /// already). The last good copy too, and one time in four both copies
    /// at once, when the cluster can spare the group's state on this
    /// replica (`group_loss_is_recoverable`): its promises are then gone,
    /// and it must rejoin from its peers as a wiped replica does.
    pub(super) fn rot_superblock(&mut self, replica: u8, group: usize, held: &Holding) {
        use shoal_vsr::superblock::{SUPERBLOCK_COPIES, SUPERBLOCK_COPY_SIZE_BYTES, superblock_copy_offset};
        let index = replica as usize;
        let path = shoal_vsr::superblock::superblock_path(std::path::Path::new(DATA_DIR), self.namespaces[group]);
        let disk = self.nodes[index].io.disk();
        let Some(size_bytes) = disk.length_of(&path) else { return };
        if !disk.misdirected_ranges(&path).is_empty() {
            return;
        }
        drop(disk);
        let copy = self.rng.next_u64() % SUPERBLOCK_COPIES;
        let draw = self.rng.next_u64();
        let offset_in_copy = draw % SUPERBLOCK_COPY_SIZE_BYTES;
        let others_rotten = (0..SUPERBLOCK_COPIES)
            .filter(|other| *other != copy)
            .all(|other| self.superblock_rot.contains(&(replica, group, other)));
        if superblock_copy_offset(SUPERBLOCK_COPIES - 1) + SUPERBLOCK_COPY_SIZE_BYTES > size_bytes {
            return;
        }
        let copies: Vec<u64> = if others_rotten {
            if !self.group_loss_is_recoverable(replica, group, held) {
                return;
            }
            vec![copy]
        } else if (draw >> 32).is_multiple_of(4) && self.group_loss_is_recoverable(replica, group, held) {
            (0..SUPERBLOCK_COPIES).collect()
        } else {
            vec![copy]
        };
        let last = others_rotten || copies.len() as u64 == SUPERBLOCK_COPIES;
        let eio = damage_is_read_eio(draw);
        for copy in copies {
            let offset = superblock_copy_offset(copy) + offset_in_copy;
            if self.damage_sector(index, &path, offset, eio) {
                self.superblock_rot.insert((replica, group, copy));
                self.nodes[index].corrupted = true;
                let label = self.group_label(group);
                let kind = if last { "rot_last_copy" } else { "rot" };
                let how = if eio { "read EIO" } else { "rot" };
                self.record(Some(replica), kind, offset, group as u64, || {
                    format!("superblock copy {copy} byte {offset} ({how}){label}")
                });
                self.timeline(replica, TimelineKind::Fault, format!("{how} superblock copy {copy} byte {offset}"));
            }
        }
    }

    /// Rot a byte anywhere in the checkpoint file of `group` on a replica
    /// that is down: the replica must still restart (it keeps two copies).
    /// The last good copy too, and one time in four both copies at once,
    /// when the cluster can spare the group's state on this replica
    /// (`group_loss_is_recoverable`): the replica must then rebuild it from
    /// its peers (swarm seed 37515 rotted both copies between two
    /// checkpoint writes, when no replica could, and it could not restart).
    ///
    /// `every_copy` (a plot's): every copy at once, or nothing. True: some
    /// copy was damaged.
    pub(super) fn rot_checkpoint(&mut self, replica: u8, group: usize, held: &Holding, every_copy: bool) -> bool {
        use shoal_vsr::checkpoint::COPIES_COUNT;
        let index = replica as usize;
        let path = shoal_vsr::checkpoint::checkpoint_path(std::path::Path::new(DATA_DIR), self.namespaces[group]);
        let Some(size_bytes) = self.nodes[index].io.disk().length_of(&path) else {
            return false;
        };
        if size_bytes == 0 {
            return false;
        }
        let draw = self.rng.next_u64();
        let offset = draw % size_bytes;
        let copy_size_bytes = (size_bytes / COPIES_COUNT).max(1);
        let copy = offset / copy_size_bytes;
        let others_rotten = (0..COPIES_COUNT)
            .filter(|other| *other != copy)
            .all(|other| self.checkpoint_rot.contains(&(replica, group, other)));
        let offsets: Vec<(u64, u64)> = if others_rotten && !every_copy {
            if !self.group_loss_is_recoverable(replica, group, held) {
                return false;
            }
            vec![(copy, offset)]
        } else if (every_copy || (draw >> 32).is_multiple_of(4))
            && size_bytes >= COPIES_COUNT
            && self.group_loss_is_recoverable(replica, group, held)
        {
            // The same byte of every copy (a file of one copy has one).
            let within = offset % copy_size_bytes;
            (0..COPIES_COUNT).map(|copy| (copy, copy * copy_size_bytes + within)).collect()
        } else if every_copy {
            return false;
        } else {
            vec![(copy, offset)]
        };
        let last = others_rotten || offsets.len() as u64 == COPIES_COUNT;
        let eio = damage_is_read_eio(draw);
        let mut damaged = false;
        for (copy, offset) in offsets {
            if self.damage_sector(index, &path, offset, eio) {
                damaged = true;
                self.checkpoint_rot.insert((replica, group, copy));
                self.nodes[index].corrupted = true;
                let label = self.group_label(group);
                let kind = if last { "rot_last_copy" } else { "rot" };
                let how = if eio { "read EIO" } else { "rot" };
                self.record(Some(replica), kind, offset, group as u64, || {
                    format!("checkpoint byte {offset} ({how}){label}")
                });
                self.timeline(replica, TimelineKind::Fault, format!("{how} checkpoint byte {offset}"));
            }
        }
        damaged
    }

    /// Damage the sector holding `offset` of `path` on `index`'s disk: a
    /// latent sector error (every read through it fails with EIO until a
    /// write covers it) when `eio`, else rot (a flipped bit). Either loses
    /// the copy it lands in; placed by the same rules.
    pub(super) fn damage_sector(&mut self, index: usize, path: &std::path::Path, offset: u64, eio: bool) -> bool {
        let mut disk = self.nodes[index].io.disk();
        let damaged = if eio { disk.fail_sector_reads(path, offset) } else { disk.corrupt_sector(path, offset) };
        let unit_bytes = disk.damage_unit_bytes();
        drop(disk);
        if damaged.is_ok() {
            let unit_start = offset / unit_bytes * unit_bytes;
            let node = &mut self.nodes[index];
            node.sector_damage.entry(path.to_path_buf()).or_default().add(unit_start..unit_start + unit_bytes);
        }
        damaged.is_ok()
    }

    /// May `replica` (down) lose its whole state of `group`, as a wiped
    /// disk loses it? Only as the one impaired replica (the fault model's
    /// one of three), with 3 or more replicas (a rejoin needs a quorum of
    /// peers), every peer up and Normal in the group, and the protocol
    /// still able to finish every op some log names without what `disk`
    /// holds (`loss`).
    pub(super) fn group_loss_is_recoverable(&self, replica: u8, group: usize, disk: &Holding) -> bool {
        if self.config.replica_count < 3 || self.another_is_impaired(replica) {
            return false;
        }
        let peers_normal = (0..self.config.replica_count)
            .filter(|j| *j != replica)
            .all(|j| self.group_replica(j, group).is_some_and(|r| r.status() == Status::Normal));
        peers_normal && self.loss_is_recoverable(replica, group, disk)
    }
}

/// What a down replica's disk holds of one group (`Cluster::disk_holding`).
pub(super) struct DiskHolding {
    pub(super) holding: Holding,
    /// The view its superblock voted for.
    pub(super) view: u64,
}

/// Where `op`'s evidence lives in its journal: its slot, and every place
/// its copy may be (the ring and the carried entries), as `(start, end)`.
fn evidence_ranges(config: &shoal_vsr::journal::JournalConfig, op: u64) -> Vec<(u64, u64)> {
    let slot = (config.slot_offset(op), config.slot_offset(op) + config.slot_size_bytes());
    let copies =
        config.header_copy_offsets(op).map(|offset| (offset, offset + shoal_vsr::header::HEADER_SIZE_BYTES as u64));
    std::iter::once(slot).chain(copies).collect()
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// A journal slot's damage, as its trace names it.
struct JournalRot {
    /// A latent sector error, not a flipped bit.
    eio: bool,
    /// The op's only copy in the cluster (`only_copy_may_rot`).
    only_copy: bool,
    /// The replica runs (`rot_running`), rather than being down.
    running: bool,
}

/// One damage in `READ_EIO_SHARE_OF` of a down replica's disk (a journal
/// slot or ring copy, a partition segment, a superblock or checkpoint copy)
/// is a latent sector error rather than rot (from bits of a draw the placement
/// already made, so the schedule's other draws stay as they were).
const READ_EIO_SHARE_OF: u64 = 3;

fn damage_is_read_eio(draw: u64) -> bool {
    (draw >> 48).is_multiple_of(READ_EIO_SHARE_OF)
}

/// `node` is Normal in `group` and its partition log holds every message its
/// state machine counts. A peer still filling its log after a state transfer
/// holds neither the ops nor the messages below its checkpoint, so a wipe or
/// a partition rot elsewhere may take the last copy of those messages (the
/// plot test with random wipes, seed 5: every replica ended missing offsets
/// 0..1356; disk-rot seed 5353 with a partition rot).
fn holds_its_log(node: &ShardNodes, group: usize) -> bool {
    let replica = node.group(group).replica();
    replica.status() == Status::Normal && replica.state_machine().missing().is_none()
}

/// A group replica that cannot stand for its own state yet: `Recovering`
/// (rejoining after a wipe, or with a journal that lost an op above its
/// head), or voting with faulty slots it has not repaired. The fault model
/// damages no second replica while one is.
pub(super) fn impaired(replica: &GroupReplica) -> bool {
    replica.status() == shoal_vsr::replica::Status::Recovering || replica.repairing_faulty_slots()
}
