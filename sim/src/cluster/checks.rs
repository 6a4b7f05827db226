//! The cluster's side of the checkers: what it observes of the nodes and
//! their disks (commits, views, promises against durable bytes, recovery,
//! reads, routing, availability, convergence) and hands to `Checkers`.

use super::*;

/// A restarted process serves nothing until its opens have read its disk
/// (~1,100 journal slots per group, each paying the disk's latency: 0.5-0.8
/// s for 9 groups on a slow disk, swarm seed 4979); its first event then is
/// a tick (`defer_until_idle`). The availability and quiet-period checkers
/// count it from there.
pub(super) fn still_opening(replica: &GroupReplica) -> bool {
    replica.ticks() == 0
}

impl Cluster {
    /// The owner table must name a shard for exactly the live connections:
    /// every peer while the process runs, none once it is down.
    pub(super) fn check_owner_table(&mut self, replica: u8) {
        let up = self.nodes[replica as usize].up;
        let slots = self.nodes[replica as usize].owners.snapshot();
        for (peer, slot) in slots.iter().enumerate() {
            let live = up && peer != replica as usize;
            if live != slot.is_some() {
                let detail =
                    format!("replica {replica}: owner slot of peer {peer} is {slot:?}, connection live: {live}");
                self.fail(Checker::Routing, detail);
            }
        }
    }

    /// A prepare of an op this replica promised with another checksum is
    /// about to be written: the old promise is void from here. The replica
    /// rewrites an op only once a durable newer log (its superblock's view
    /// headers, written first) names another prepare there, which a view
    /// change can choose only if the old one was not committed. From its
    /// staging on, the slot holds the old prepare, the new one, or a torn
    /// mix, and the new one is a promise only once its write is reported
    /// durable (`after_storage`): a crash in between (new prepare durable,
    /// its ring copy not yet) left the recovery checker holding the void
    /// promise (swarm seeds 12846 and 14860, `Recovery`).
    pub(super) fn before_storage(&mut self, replica: u8, group: usize, action: &Action) {
        let Action::WritePrepare { message } = action else { return };
        let acked = &mut self.nodes[replica as usize].acked[group];
        if acked.get(&message.header.op).is_some_and(|&checksum| checksum != message.header.checksum) {
            acked.remove(&message.header.op);
        }
    }

    /// Keep the recovery checker's list of promises in step with what the
    /// replica legitimately dropped.
    pub(super) fn after_storage(&mut self, replica: u8, group: usize, action: &Action, durable: bool) {
        if matches!(action, Action::Checkpoint { .. }) && durable {
            // Both copies were written whole again.
            self.checkpoint_rot.retain(|(r, g, _)| (*r, *g) != (replica, group));
        }
        if matches!(action, Action::WriteSuperblock { .. }) && durable {
            // Both copies were written whole again.
            self.superblock_rot.retain(|(r, g, _)| (*r, *g) != (replica, group));
        }
        let acked = &mut self.nodes[replica as usize].acked[group];
        match action {
            // Every prepare written and fsynced is a promise, acknowledged or
            // not (a primary acknowledges to itself): it must survive a crash.
            Action::WritePrepare { message } if durable => {
                acked.insert(message.header.op, message.header.checksum);
            }
            // A rewrite that failed may have torn the slot it replaced.
            Action::WritePrepare { message } => {
                acked.remove(&message.header.op);
            }
            Action::TruncateLog { after_op } => acked.retain(|op, _| op <= after_op),
            Action::Checkpoint { checkpoint } if durable => acked.retain(|op, _| *op > checkpoint.anchor.op),
            _ => {}
        }
    }

    /// A partition log comes back cut only where the fault model damaged it
    /// (rot or a latent sector error in a segment) or a read failed: every
    /// other cut is records a sync promised and the disk does not hold, so
    /// the log (or its recovery) trusted bytes that lived only in the page
    /// cache. Peers refill the cut, which hides the loss from every other
    /// checker until the last copy goes (swarm seed 18237: a marker read
    /// back after its failed fsync sealed a segment the next power loss
    /// took back, and with it 140 offsets).
    pub(super) fn check_salvage(&mut self, replica: u8, group: usize, salvage: Option<&Salvage>) {
        // The reads that failed since the group's storage open was checked:
        // the partition log's open and salvage.
        let failed_reads = self.nodes[replica as usize].io.disk().take_failed_reads();
        let Some(salvage) = salvage else { return };
        let dir = shoal_shard::node::partition_dir(Path::new(DATA_DIR), self.namespaces[group]);
        let process = &self.nodes[replica as usize];
        let explained = match &salvage.cut {
            SalvageCut::Segment { segment, places } => {
                let damaged = self.damaged_bytes(replica, std::slice::from_ref(segment), &failed_reads, false);
                places.iter().any(|place| damaged.overlaps(place))
            }
            // The salvage a crash stopped cut the damage from an earlier
            // segment; which one, the gap does not tell.
            SalvageCut::Gap { .. } => {
                process.sector_damage.keys().chain(failed_reads.keys()).any(|path| path.starts_with(&dir))
            }
            SalvageCut::Nothing => failed_reads.keys().any(|path| path.starts_with(&dir)),
        };
        if explained {
            return;
        }
        let label = self.group_label(group);
        self.fail(
            Checker::Recovery,
            format!(
                "replica {replica}{label} partition log came back cut at offset {} with no damage injected where \
                 the salvage found it ({:?}): {}",
                salvage.first_lost_offset, salvage.cut, salvage.damage
            ),
        );
    }

    /// The bytes of `paths` on `replica`'s disk that damage the fault model
    /// injected may have taken (rot and latent sector errors: their damage
    /// units; misdirected writes: where each was aimed and where it
    /// landed) or that a read failed on (`failed_reads`, of the open being
    /// checked); with `lost_writes`, also the writes they lost since
    /// `lost_write_files` last forgot them (for files written in place,
    /// where a torn write costs a copy; elsewhere what a sync promised must
    /// be there).
    fn damaged_bytes(
        &self,
        replica: u8,
        paths: &[std::path::PathBuf],
        failed_reads: &BTreeMap<std::path::PathBuf, crate::disk::ByteRanges>,
        lost_writes: bool,
    ) -> crate::disk::ByteRanges {
        let process = &self.nodes[replica as usize];
        let lost = if lost_writes { Some(&process.lost_write_files) } else { None };
        let disk = process.io.disk();
        let mut damaged = crate::disk::ByteRanges::default();
        for path in paths {
            let recorded = [Some(&process.sector_damage), Some(failed_reads), lost];
            for ranges in recorded.into_iter().flatten().filter_map(|by_path| by_path.get(path)) {
                damaged.merge(ranges);
            }
            for &(offset, len) in disk.misdirected_ranges(path) {
                damaged.add(offset..offset + len);
            }
        }
        damaged
    }

    /// A group's open reads what its device holds: once its journal,
    /// superblock, checkpoint and partition log are open, none of them may
    /// still show a byte a failed fsync left in the page cache (marked
    /// clean, never to be written). The replica acts on what it read, and
    /// the next power loss takes it back: a slot a truncation cleared reads
    /// empty while the device still holds the dropped prepare (issue 10's
    /// "cleared slots read back as cleared"), a partition marker reads
    /// synced that is not (swarm seed 18237). Not for the journal's spare,
    /// which recovery never reads.
    pub(super) fn check_page_cache_settled(&mut self, replica: u8, group: usize) {
        let namespace = self.namespaces[group];
        let dir = Path::new(DATA_DIR);
        let io = self.nodes[replica as usize].io.clone();
        let disk = io.disk();
        let mut files = vec![
            shoal_vsr::journal::journal_path(dir, namespace),
            superblock_path(dir, namespace),
            checkpoint_path(dir, namespace),
        ];
        files.extend(disk.files_under(&shoal_shard::node::partition_dir(dir, namespace)));
        let stale: Vec<(std::path::PathBuf, u64)> = files
            .into_iter()
            .map(|path| {
                let bytes = disk.stale_cached_bytes(&path);
                (path, bytes)
            })
            .filter(|(_, bytes)| *bytes > 0)
            .collect();
        drop(disk);
        if stale.is_empty() {
            return;
        }
        let label = self.group_label(group);
        self.fail(
            Checker::Recovery,
            format!(
                "replica {replica}{label} opened reading bytes the device does not hold (pages a failed fsync \
                 left in the page cache; a power loss takes them back): {stale:?}"
            ),
        );
    }

    /// A group's open found its superblock, checkpoint or journal lost
    /// (`StorageDamage`: it is formatted to rejoin, and its peers bring its
    /// state back): every copy of what was lost must lie under damage the
    /// fault model injected into that file or a read that failed in this
    /// open (`damaged_bytes`), or, for the superblock and the journal,
    /// which are written in place, under a write the file lost (a torn
    /// copy); or an earlier format to rejoin was cut short (its superblock
    /// says rejoining). The copies: the superblock's two, the checkpoint's
    /// two halves (`checkpoint_size_bytes`, its size before the open; the
    /// whole file when that is not two aligned copies), the journal's two
    /// file header copies. A journal that is missing must have had damage
    /// or a lost write anywhere in it. Anything else is a file a sync
    /// promised and the disk does not hold, which the rejoin would hide
    /// from every other checker. (Until session 32 any damage to any of the
    /// three files, in any earlier life, or any failed read, excused it.)
    pub(super) fn check_group_damage(
        &mut self,
        replica: u8,
        group: usize,
        damage: &StorageDamage,
        failed_reads: &BTreeMap<std::path::PathBuf, crate::disk::ByteRanges>,
        checkpoint_size_bytes: Option<u64>,
        was_rejoining: bool,
    ) {
        if was_rejoining {
            return;
        }
        let (files, copies, lost_writes_count) = self.lost_copies(replica, group, damage, checkpoint_size_bytes);
        let damaged = self.damaged_bytes(replica, &files, failed_reads, lost_writes_count);
        if copies.iter().all(|copy| damaged.overlaps(copy)) {
            return;
        }
        let label = self.group_label(group);
        self.fail(
            Checker::Recovery,
            format!(
                "replica {replica}{label} lost a file with no damage injected over every copy of it (copies {copies:?} \
                 of {files:?}; damaged {damaged:?}): {damage}"
            ),
        );
    }

    /// The files `damage` names, the byte ranges of each copy it lost
    /// (each must be damaged), and whether lost writes may explain them
    /// (files written in place; the checkpoint is replaced atomically).
    fn lost_copies(
        &self,
        replica: u8,
        group: usize,
        damage: &StorageDamage,
        checkpoint_size_bytes: Option<u64>,
    ) -> (Vec<std::path::PathBuf>, Vec<std::ops::Range<u64>>, bool) {
        use shoal_vsr::superblock::{SUPERBLOCK_COPIES, SUPERBLOCK_COPY_SIZE_BYTES, superblock_copy_offset};
        let namespace = self.namespaces[group];
        let dir = Path::new(DATA_DIR);
        match damage {
            StorageDamage::Superblock(_) => {
                let copies = (0..SUPERBLOCK_COPIES)
                    .map(|copy| superblock_copy_offset(copy)..superblock_copy_offset(copy) + SUPERBLOCK_COPY_SIZE_BYTES)
                    .collect();
                (vec![superblock_path(dir, namespace)], copies, true)
            }
            StorageDamage::Checkpoint(_) => {
                use shoal_vsr::checkpoint::{COPIES_COUNT, COPY_ALIGN_BYTES};
                let copies = match checkpoint_size_bytes {
                    Some(size) if size > 0 && size.is_multiple_of(COPIES_COUNT * COPY_ALIGN_BYTES) => {
                        let copy_size = size / COPIES_COUNT;
                        (0..COPIES_COUNT).map(|copy| copy * copy_size..(copy + 1) * copy_size).collect()
                    }
                    _ => std::iter::once(0..u64::MAX).collect(),
                };
                (vec![checkpoint_path(dir, namespace)], copies, false)
            }
            StorageDamage::Journal(error) => {
                use shoal_vsr::journal::JournalError;
                let files = vec![
                    shoal_vsr::journal::journal_path(dir, namespace),
                    shoal_vsr::journal::journal_path_tmp(dir, namespace),
                ];
                let copies = if matches!(error, JournalError::FileHeaderCorrupt) {
                    journal_file_header_copies(&storage_config(replica, namespace).journal()).to_vec()
                } else {
                    std::iter::once(0..u64::MAX).collect()
                };
                (files, copies, true)
            }
        }
    }

    /// A journal that comes back with faulty ops (written, then damaged)
    /// must have each faulty op under a read that failed in this open, or
    /// under damage the fault model injected (rot, a latent sector error: a
    /// whole damage unit; a misdirected write: where it was aimed and where
    /// it landed, `SimDisk::misdirected_ranges`) or under a write it lost since a
    /// start last found it whole (a power loss tore or dropped it, a failed
    /// fsync dropped it: a torn rewrite leaves a slot its older copy
    /// contradicts). A faulty op's places are its slot (with the
    /// carried-copies region before it) and every place its header copy
    /// may be in (`JournalConfig::header_copy_offsets`); damage or a lost
    /// write over a file header copy excuses every op (it moves the
    /// window). Anything else is a prepare a sync promised that the disk
    /// does not hold: the recovery check excuses ops the journal names
    /// faulty, and the peers' repair would hide the loss. A whole journal
    /// clears its lost writes. (Until session 31 any damage, lost write or
    /// failed read of the journal file excused every faulty op: a bug that
    /// damaged a slot in a life that also lost an unrelated write went
    /// unseen.)
    pub(super) fn check_journal_damage(
        &mut self,
        replica: u8,
        group: usize,
        journal: &shoal_vsr::journal::JournalConfig,
        recovered: &shoal_vsr::replica::Recovered,
        failed_reads: &BTreeMap<std::path::PathBuf, crate::disk::ByteRanges>,
    ) {
        let namespace = self.namespaces[group];
        if !recovered.journal_faulty() {
            let process = &mut self.nodes[replica as usize];
            process.lost_write_files.retain(|path, _| !is_journal_file(path, namespace));
            return;
        }
        // The journal and its spare exchange names at every compaction, at
        // the same geometry: a write either lost, a sector either took, or
        // a misdirected write either was aimed at or landed on, counts for
        // both.
        let dir = std::path::Path::new(DATA_DIR);
        let files =
            [shoal_vsr::journal::journal_path(dir, namespace), shoal_vsr::journal::journal_path_tmp(dir, namespace)];
        let explaining = self.damaged_bytes(replica, &files, failed_reads, true);
        let unexplained: Vec<u64> =
            recovered.faulty_ops.iter().copied().filter(|op| !damage_explains(journal, &explaining, *op)).collect();
        if unexplained.is_empty() {
            return;
        }
        let label = self.group_label(group);
        let detail = if explaining.is_empty() {
            "no damage injected into it and no write of it lost"
        } else {
            "no damage injected and no write lost over their slots or copies"
        };
        self.fail(
            Checker::Recovery,
            format!(
                "replica {replica}{label} journal came back with faulty ops {unexplained:?} (of {:?}) with {detail}",
                recovered.faulty_ops
            ),
        );
    }

    /// Every prepare this replica acknowledged is back after the crash, or the
    /// journal names its op faulty: the replica then votes only if its log
    /// reaches that op, and never claims or nacks it (`Replica::start`).
    pub(super) fn check_recovery(
        &mut self,
        replica: u8,
        group: usize,
        storage: &GroupStorage<SimIo>,
        recovered: &shoal_vsr::replica::Recovered,
    ) {
        let checkpoint_op = recovered.checkpoint.as_ref().map_or(0, |c| c.anchor.op);
        if storage.journal().snapshot_op() > checkpoint_op {
            self.fail(
                Checker::Recovery,
                format!(
                    "replica {replica}: journal snapshot_op {} is past the durable checkpoint {checkpoint_op}",
                    storage.journal().snapshot_op()
                ),
            );
        }
        let acked = self.nodes[replica as usize].acked[group].clone();
        for (op, checksum) in acked {
            if op <= checkpoint_op {
                continue;
            }
            let present = recovered.entries.iter().any(|(h, _)| h.op == op && h.checksum == checksum);
            if !present && !recovered.faulty_ops.contains(&op) {
                let label = self.group_label(group);
                self.fail(
                    Checker::Recovery,
                    format!("replica {replica}{label} acknowledged op {op} before the crash and lost it unnamed"),
                );
                return;
            }
        }
        if recovered.journal_faulty() {
            // A replica whose journal came back corrupt vouches for nothing it
            // lost (it nacks none of it and claims no body): those promises
            // are void from here on (peers hold the ops; the cluster repairs
            // them).
            let entries = &recovered.entries;
            self.nodes[replica as usize].acked[group]
                .retain(|op, checksum| entries.iter().any(|(h, _)| h.op == *op && h.checksum == *checksum));
        }
    }

    /// A read of an acknowledged batch's offsets returns each of its
    /// messages at its own offset on every replica that serves them (one
    /// that has not applied or persisted that far yet serves fewer or none,
    /// which is no answer there, not a wrong one).
    pub(super) fn check_reads(&mut self, group: usize, offset: u64, messages: &[Vec<u8>]) {
        // Observation only: no persist here, so checking changes nothing
        // the run does; what a replica serves is what it made durable.
        for replica in 0..self.config.replica_count {
            let Some(r) = self.group_replica(replica, group) else { continue };
            let io = self.nodes[replica as usize].io.clone();
            let read = io.instant(|| block_on_ready(r.state_machine().read(offset, messages.len())));
            for (index, (at, message)) in read.iter().enumerate() {
                if *at != offset + index as u64 || message != &messages[index] {
                    let label = self.group_label(group);
                    let detail = format!(
                        "replica {replica}{label}: a read of acknowledged offset {} returned offset {at} with another \
                         message",
                        offset + index as u64
                    );
                    self.checkers[group].fail(Checker::Linearizability, detail);
                    return;
                }
            }
        }
    }

    /// Every replica ended with the same catalogue, holding everything an
    /// admin client was told was applied.
    pub(super) fn check_final_metadata(&mut self, group: usize) {
        let mut catalogues = Vec::new();
        for replica in 0..self.config.replica_count {
            let Some(metadata) = self.group_replica(replica, group).and_then(|r| r.state_machine().metadata()) else {
                return;
            };
            catalogues.push(metadata.encode());
            for applied in &self.metadata_applied {
                let present = match applied {
                    MetadataRequest::CreateStream { stream_id, .. } => metadata.stream(*stream_id).is_some(),
                    MetadataRequest::CreateTopic { stream_id, topic_id, .. } => {
                        metadata.topic(*stream_id, *topic_id).is_some()
                    }
                    MetadataRequest::DeleteStream { .. }
                    | MetadataRequest::DeleteTopic { .. }
                    | MetadataRequest::LookupPartition { .. } => true,
                };
                if !present {
                    let detail = format!("replica {replica} lost the acknowledged metadata change {applied:?}");
                    return self.checkers[group].fail(Checker::AckedWritesDurable, detail);
                }
            }
        }
        if catalogues.windows(2).any(|w| w[0] != w[1]) {
            self.checkers[group].fail(Checker::Agreement, "replicas ended with different catalogues".into());
        }
    }

    /// Converged: every replica up, in normal status in one view, and every
    /// replica applied the same ops, with no client request left in flight.
    pub(super) fn check_convergence(&mut self) {
        for group in 0..self.namespaces.len() {
            let mut views = Vec::new();
            let mut commits = Vec::new();
            for replica in 0..self.config.replica_count {
                let Some(r) = self.group_replica(replica, group) else { return };
                if r.status() != Status::Normal || r.state_machine().missing().is_some() {
                    return;
                }
                views.push(r.view());
                commits.push((r.commit_min(), r.commit_max(), r.op()));
            }
            let same_view = views.windows(2).all(|w| w[0] == w[1]);
            let same_commit =
                commits.windows(2).all(|w| w[0].0 == w[1].0) && commits.iter().all(|c| c.0 == c.1 && c.0 == c.2);
            if !same_view || !same_commit {
                return;
            }
        }
        if self.clients.iter().all(|c| c.in_flight.is_none()) && self.scrub_passes_done() {
            self.converged = true;
        }
    }

    /// At the heal, with the scrubber on: every running replica's partition
    /// groups must finish two more passes (the second begins after the
    /// heal, so it reads whatever damage landed before it).
    pub(super) fn scrub_passes_needed_at_heal(&mut self) {
        if self.config.partition_scrub_bytes_per_tick == 0 {
            return;
        }
        for replica in 0..self.config.replica_count {
            for group in self.partition_groups() {
                if let Some(passes) = self.scrub_passes_completed(replica, group) {
                    self.scrub_passes_needed.insert((replica, group), passes + 2);
                }
            }
        }
    }

    /// A node started in the liveness phase counts its passes from zero:
    /// its first pass begins at its start.
    pub(super) fn scrub_passes_needed_after_restart(&mut self, replica: u8) {
        if self.config.partition_scrub_bytes_per_tick == 0 || !matches!(self.phase, Phase::Liveness { .. }) {
            return;
        }
        for group in self.partition_groups() {
            self.scrub_passes_needed.insert((replica, group), 1);
        }
    }

    fn scrub_passes_done(&self) -> bool {
        self.scrub_passes_needed.iter().all(|(&(replica, group), &needed)| {
            self.scrub_passes_completed(replica, group).is_some_and(|passes| passes >= needed)
        })
    }

    fn scrub_passes_completed(&self, replica: u8, group: usize) -> Option<u64> {
        let shards = self.nodes[replica as usize].node.as_ref()?;
        shards.try_group(group).map(|g| g.scrub_passes_completed())
    }

    fn partition_groups(&self) -> Vec<usize> {
        (0..self.namespaces.len()).filter(|group| self.namespaces[*group] != METADATA_NAMESPACE).collect()
    }

    /// The promises checker: what this message promises must already be on
    /// the replica's disk in durable bytes, not only in its memory.
    pub(super) fn check_promise(&mut self, replica: u8, group: usize, header: &Header) {
        let Some(promise) = Promise::of(header) else { return };
        let namespace = self.namespaces[group];
        let dir = std::path::Path::new(DATA_DIR);
        let config = storage_config(replica, namespace).journal();
        let (result, damaged_this_life) = {
            let disk = self.nodes[replica as usize].io.disk();
            let journal = journal_path(dir, namespace);
            let files = DurableFiles {
                journal: |offset, len| disk.contents_durable_range(&journal, offset, len),
                superblock: || disk.contents_durable(&superblock_path(dir, namespace)),
                checkpoint: || disk.contents_durable(&checkpoint_path(dir, namespace)),
            };
            // The checker reads the file the durable directory names; after
            // an exchange whose directory fsync is to come that is not the
            // one open at the path, and a misdirect may have hit either.
            let damaged = disk.misdirected_this_life(&journal)
                || disk.misdirected_this_life_durable(&journal)
                || self.nodes[replica as usize].rotted_while_running;
            (promises::check(promise, &config, files), damaged)
        };
        if damaged_this_life && result.as_ref().is_err_and(|why| why.contains(promises::COMMITTED_OP_NOT_DURABLE)) {
            // A committed op a misdirected write or rot took since it was
            // written: recovery reads it faulty and repairs it; the ok's
            // promise was kept when the op was written.
            return;
        }
        if result.is_err() && self.misdirected_over_slot(replica, group, &promise) {
            // A prepare write went elsewhere, or another write landed on
            // this slot, and the device said all was well: the promise is
            // the disk's lie, not the replica's; the ring copy makes the
            // slot read as faulty at the next open.
            return;
        }
        if let Err(why) = result {
            let label = self.group_label(group);
            let detail = format!(
                "replica {replica}{label} sent {:?} (view {}, op {}) before its promise was durable: {why}",
                header.command, header.view, header.op
            );
            self.checkers[group].fail(Checker::Promises, detail);
        }
    }

    /// A misdirected write was meant for, or landed on, the journal bytes
    /// `promise` rests on (a prepare's slot or its ring copy).
    fn misdirected_over_slot(&self, replica: u8, group: usize, promise: &Promise) -> bool {
        let config = storage_config(replica, self.namespaces[group]).journal();
        let path = journal_path(std::path::Path::new(DATA_DIR), self.namespaces[group]);
        let disk = self.nodes[replica as usize].io.disk();
        let ranges = promise.journal_ranges(&config);
        disk.misdirected_ranges(&path)
            .iter()
            .chain(disk.misdirected_ranges_durable(&path))
            .any(|&(offset, len)| ranges.iter().any(|&(start, length)| offset < start + length && start < offset + len))
    }

    /// Once per network tick: for each group, could it commit now (a quorum
    /// up, unpaused and pairwise connected) and should it (a client waits)?
    pub(super) fn sample_availability(&mut self) {
        let quorum = usize::from(self.config.replica_count) / 2 + 1;
        for group in 0..self.namespaces.len() {
            let waiting = self.clients.iter().any(|c| c.group == group && c.in_flight.is_some());
            let running = self.running_replicas(group);
            let newest_view = running.iter().map(|(_, replica)| replica.view()).max().unwrap_or(0);
            let primary = (newest_view % u64::from(self.config.replica_count)) as u8;
            let primary_runs = running.iter().any(|(r, _)| *r == primary);
            let up = self.availability_roles(&running, newest_view);
            // A plot that cut off every copy of a committed op leaves the
            // connected quorum nothing it may commit before the op returns.
            let could = waiting
                && !self.plot_blocks(group)
                && connected_quorum(&up, quorum, |a, b| self.network.connected(a, b));
            self.availability.sample(self.now_ns, group, could, newest_view);
            if !primary_runs {
                self.availability.primary_down(group, newest_view);
            }
        }
        if self.availability_failure.is_none()
            && let Some(violation) = self.availability.violation(self.now_ns)
        {
            let window = violation.window;
            self.availability_failure = Some(format!(
                "availability: group {} had a connected quorum and a waiting client but committed nothing from \
                 {:.3} s to {:.3} s, over the bound of {:.3} s (AVAILABILITY_WINDOW_MAX_NS, plus one view change \
                 for each of the {} views doomed by a down primary: {:?})",
                window.group,
                window.start_ns as f64 / 1e9,
                window.end_ns as f64 / 1e9,
                violation.bound_ns as f64 / 1e9,
                violation.doomed_views.len(),
                violation.doomed_views,
            ));
        }
    }

    /// The members of `group` whose process runs and can take part: up,
    /// not paused, their storage open.
    fn running_replicas(&self, group: usize) -> Vec<(u8, &GroupReplica)> {
        (0..self.config.replica_count)
            .filter(|&r| {
                let node = &self.nodes[r as usize];
                node.up && node.paused_until_ns.is_none()
            })
            .filter_map(|r| self.group_replica(r, group).map(|member| (r, member)))
            .filter(|(_, member)| !still_opening(member))
            .collect()
    }

    /// What each running member of a group (`up`, from `running_replicas`;
    /// the newest of their views `view_max`) can do toward a commit
    /// (`Role`). A rejoining replica (wiped disk) also needs a quorum of
    /// other replicas to answer its probe before it accepts a start_view,
    /// so it counts only if it reaches that many.
    fn availability_roles(&self, up: &[(u8, &GroupReplica)], view_max: u64) -> Vec<(u32, Role)> {
        let quorum = usize::from(self.config.replica_count) / 2 + 1;
        up.iter()
            .filter(|(r, replica)| {
                !replica.is_rejoining()
                    || up
                        .iter()
                        .filter(|(peer, other)| {
                            peer != r
                                && !other.is_rejoining()
                                && self.network.connected(NodeId::from(*r), NodeId::from(*peer))
                        })
                        .count()
                        >= quorum
            })
            .map(|(r, replica)| {
                let role = match replica.status() {
                    Status::Recovering => Role::Joiner,
                    Status::Normal if replica.is_primary() && replica.view() == view_max => Role::Leader,
                    Status::Normal | Status::ViewChange => Role::Voter,
                };
                (NodeId::from(*r), role)
            })
            .collect()
    }

    /// Commits of `group` on `replica`, checked before the replies that
    /// announce them go out.
    pub(super) fn observe_committed(&mut self, replica: u8, group: usize, committed: &[Committed]) {
        let last = committed.last().map(|c| c.op).unwrap_or(0);
        self.record(Some(replica), "commit", last, committed.len() as u64, || format!("through op {last}"));
        if last.is_multiple_of(25) {
            self.timeline(replica, TimelineKind::Commit, format!("op {last}"));
        }
        let before = self.checkers[group].ops_committed();
        self.checkers[group].on_committed(replica, committed);
        self.plot_on_committed(replica, group, committed);
        if self.checkers[group].ops_committed() > before {
            self.availability.progress(self.now_ns, group);
        }
    }

    pub(super) fn observe_view(&mut self, replica: u8, group: usize, view: u64, status: Status) {
        self.view_changes += 1;
        let label = self.group_label(group);
        self.record(Some(replica), "view", view, status as u64, || format!("view {view} {status:?}{label}"));
        self.timeline(replica, TimelineKind::ViewChange, format!("view {view}{label}"));
    }

    /// At the end of a run that did not converge: an offset that every
    /// replica has applied (so committed) and none holds or has fetched (each
    /// still asks a peer for it) can never be filled again. That is a
    /// lost committed write, not slowness, acknowledged or not: the client's
    /// retry would be answered from its session with that offset (swarm
    /// seed 9620 lost committed offset 32 this way and was reported as
    /// liveness). A replica that is down may still hold it on disk, so
    /// every replica must be up.
    pub(super) fn check_no_committed_offset_held_nowhere(&mut self) {
        for group in 0..self.namespaces.len() {
            if self.namespaces[group] == METADATA_NAMESPACE {
                continue;
            }
            let mut lost: Option<std::ops::Range<u64>> = None;
            for replica in 0..self.config.replica_count {
                let missing = self.group_replica(replica, group).map(|r| r.state_machine().to_fetch());
                let Some(Some(range)) = missing else {
                    lost = None;
                    break;
                };
                lost = Some(match lost {
                    None => range,
                    Some(held) => held.start.max(range.start)..held.end.min(range.end),
                });
            }
            let Some(lost) = lost.filter(|range| !range.is_empty()) else { continue };
            let acked =
                self.checkers[group].acks().iter().find(|ack| ack.offset < lost.end && ack.last_offset() >= lost.start);
            let acked = match acked {
                Some(ack) => format!("acknowledged to client {} request {} at op {}", ack.client, ack.request, ack.op),
                None => "not acknowledged".to_string(),
            };
            let label = self.group_label(group);
            let detail = format!(
                "no replica holds committed offsets {lost:?}{label} ({acked}): every replica applied past them and \
                 lacks them in its partition log"
            );
            self.checkers[group].fail(Checker::AckedWritesDurable, detail);
        }
    }

    pub(super) fn liveness_report(&self) -> String {
        let replicas: Vec<String> = (0..self.config.replica_count)
            .flat_map(|index| (0..self.namespaces.len()).map(move |group| (index, group)))
            .map(|(index, group)| match self.group_replica(index, group) {
                None => format!("r{index}/g{group}: down"),
                Some(r) => format!(
                    "r{index}/g{group}: {:?} view {} op {} commit {}/{} pipeline {:?} missing bodies {:?} missing partition \
                     offsets {:?} drops {:?}",
                    r.status(),
                    r.view(),
                    r.op(),
                    r.commit_min(),
                    r.commit_max(),
                    r.pipeline_summary(),
                    (r.commit_min() + 1..=r.op()).filter(|op| !r.has_body(*op)).collect::<Vec<_>>(),
                    r.state_machine().missing(),
                    r.stats().drops
                ),
            })
            .collect();
        let in_flight = self.clients.iter().filter(|c| c.in_flight.is_some()).count();
        format!(
            "no convergence within {} ms after the heal and every replica serving: {}; {in_flight} client requests in flight",
            self.config.liveness_time_ns / 1_000_000,
            replicas.join(", ")
        )
    }
}

/// Something that happened to `damaged` of the journal's bytes (a lost
/// write, damage, a misdirected write, a failed read) may have made `op`
/// read faulty: it covered a file header copy (the window), the op's slot
/// with its carried-copies region, or a place of the op's header copy.
fn damage_explains(journal: &shoal_vsr::journal::JournalConfig, damaged: &crate::disk::ByteRanges, op: u64) -> bool {
    use shoal_vsr::header::HEADER_SIZE_BYTES;
    let file_headers = journal_file_header_copies(journal);
    let slot = journal.copies_region_offset(op)..journal.slot_offset(op) + journal.slot_size_bytes();
    file_headers.iter().any(|range| damaged.overlaps(range))
        || damaged.overlaps(&slot)
        || journal.header_copy_offsets(op).any(|place| damaged.overlaps(&(place..place + HEADER_SIZE_BYTES as u64)))
}

/// The bytes of the journal's two file header copies: the first page and
/// the page after the slots.
fn journal_file_header_copies(journal: &shoal_vsr::journal::JournalConfig) -> [std::ops::Range<u64>; 2] {
    use shoal_vsr::journal::FILE_HEADER_SIZE_BYTES;
    let copy = journal.file_header_copy_offset();
    [0..FILE_HEADER_SIZE_BYTES, copy..copy + FILE_HEADER_SIZE_BYTES]
}

/// `path` is one of `namespace`'s journal files: the journal or its spare
/// (a compaction exchanges the two, so damage and lost writes follow the
/// file under either name).
fn is_journal_file(path: &Path, namespace: u64) -> bool {
    let dir = Path::new(DATA_DIR);
    path == shoal_vsr::journal::journal_path(dir, namespace)
        || path == shoal_vsr::journal::journal_path_tmp(dir, namespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{FaultMix, RunConfig, Verdict};

    /// A lost write excuses the faulty ops whose slot, region or copy
    /// places it covered, and no other (session 28's "coarse excuse").
    #[test]
    fn a_lost_write_excuses_only_the_ops_whose_places_it_covered() {
        let journal = shoal_vsr::journal::JournalConfig {
            slot_count: 64,
            message_size_max_bytes: 4096,
            cluster: 1,
            namespace: 1,
        };
        let op = 70;
        let mut lost = crate::disk::ByteRanges::default();
        lost.add(journal.slot_offset(op)..journal.slot_offset(op) + 512);
        assert!(damage_explains(&journal, &lost, op), "its own slot's header");
        assert!(!damage_explains(&journal, &lost, op + 1), "the next slot: untouched");
        assert!(!damage_explains(&journal, &lost, op - 30), "far below: untouched");
        // The write of op + 1 (its region carries op's copy) was lost.
        let mut carrier = crate::disk::ByteRanges::default();
        carrier.add(journal.copies_region_offset(op + 1)..journal.slot_offset(op + 1) + 512);
        assert!(damage_explains(&journal, &carrier, op), "a carried copy of op");
        assert!(damage_explains(&journal, &carrier, op + 1));
        assert!(!damage_explains(&journal, &carrier, op + 20), "past the copies a region carries");
        // A file header copy moves the window: every op.
        let mut header = crate::disk::ByteRanges::default();
        header.add(0..512);
        assert!(damage_explains(&journal, &header, op + 20));
    }

    /// Damage is planted this far into the run: checkpoints and partition
    /// records exist by then.
    const PLANT_AT_NS: u64 = 2_000_000_000;
    /// The damaged replica stays down this long.
    const DOWN_NS: u64 = 50_000_000;
    /// A byte inside the first record's payload (sync slots, then the
    /// record's 28-byte header).
    const PARTITION_RECORD_BYTE: u64 = 1024 + 30;

    /// A byte each checkpoint copy's checksum covers (its start: a copy is
    /// padded, and a flip in the padding damages nothing).
    const CHECKPOINT_COPY_BYTE: u64 = 20;

    /// A byte of a prepare's header (its checksum covers it).
    const JOURNAL_SLOT_BYTE: u64 = 20;
    /// The planted journal damage takes the op this far below the head
    /// (once its copy is durable, so that the journal names it faulty).
    const JOURNAL_OPS_BELOW_HEAD: u64 = 2;

    #[derive(Debug, Clone, Copy)]
    enum Plant {
        BothCheckpointCopies,
        PartitionRecord,
        JournalSlot { op: u64 },
    }

    /// The offsets of `plant` on replica 1's disk (down), or None while the
    /// file does not hold them yet.
    fn places(cluster: &Cluster, group: usize, plant: Plant) -> Option<(std::path::PathBuf, Vec<u64>)> {
        let namespace = cluster.namespaces[group];
        let dir = Path::new(DATA_DIR);
        let disk = cluster.nodes[1].io.disk();
        match plant {
            Plant::BothCheckpointCopies => {
                let path = checkpoint_path(dir, namespace);
                let size_bytes = disk.length_of(&path)?;
                let copy_size_bytes = size_bytes / shoal_vsr::checkpoint::COPIES_COUNT;
                (copy_size_bytes > 0).then(|| {
                    let copies = 0..shoal_vsr::checkpoint::COPIES_COUNT;
                    (path, copies.map(|copy| copy * copy_size_bytes + CHECKPOINT_COPY_BYTE).collect())
                })
            }
            Plant::JournalSlot { op } => {
                let config = storage_config(1, namespace).journal();
                Some((
                    shoal_vsr::journal::journal_path(dir, namespace),
                    vec![config.slot_offset(op) + JOURNAL_SLOT_BYTE],
                ))
            }
            Plant::PartitionRecord => {
                let path = shoal_shard::node::partition_dir(dir, namespace)
                    .join(shoal_shard::partition_log::segment_file_name(0));
                let size_bytes = disk.length_of(&path)?;
                (size_bytes > PARTITION_RECORD_BYTE).then(|| (path, vec![PARTITION_RECORD_BYTE]))
            }
        }
    }

    /// Run a quiet cluster; at `PLANT_AT_NS` crash replica 1 and damage
    /// `plant` on its disk: its first `through_fault_model` places through
    /// the fault model (which records the bytes), the rest behind its back
    /// (a planted durability bug: bytes a sync promised that the disk does
    /// not hold).
    fn run_with(plant: Plant, through_fault_model: usize) -> Verdict {
        let config = RunConfig::developer(3, FaultMix::none());
        let mut cluster = Cluster::new(&config);
        let group = cluster.namespaces.iter().position(|namespace| *namespace == NAMESPACE).expect("a partition group");
        let mut planted = false;
        while cluster.step() {
            if planted || cluster.now_ns < PLANT_AT_NS || !cluster.nodes[1].up {
                continue;
            }
            let plant = match plant {
                Plant::JournalSlot { .. } => {
                    let shards = cluster.nodes[1].node.as_ref().expect("replica 1 runs");
                    let g = shards.try_group(group).expect("replica 1 runs the group");
                    let op = g.replica().op().saturating_sub(JOURNAL_OPS_BELOW_HEAD);
                    // Only an op above the checkpoint (its slot is read at
                    // the start) whose ring copy is durable (a torn one is
                    // truncated, rightly): which op that is depends on the
                    // run's timing.
                    if op <= g.replica().checkpoint_op() || !g.storage().journal().is_durable(op) {
                        continue;
                    }
                    Plant::JournalSlot { op }
                }
                other => other,
            };
            cluster.crash_for(1, "test", DOWN_NS);
            let Some((path, offsets)) = places(&cluster, group, plant) else { continue };
            for (index, offset) in offsets.into_iter().enumerate() {
                if index < through_fault_model {
                    assert!(cluster.damage_sector(1, &path, offset, false), "{plant:?} at {offset} is damaged");
                } else {
                    let mut disk = cluster.nodes[1].io.disk();
                    let byte = disk.contents(&path).expect("the file exists")[offset as usize];
                    disk.poke(&path, offset, &[byte ^ 1]).expect("the byte is there");
                }
            }
            planted = true;
        }
        assert!(planted, "{plant:?}: the run never held the file to damage");
        cluster.finish().verdict
    }

    /// A start that finds a lost checkpoint, a cut partition log or a
    /// faulty journal slot fails the seed unless the fault model damaged
    /// that file: the rejoin, the refill or the repair from peers would
    /// otherwise hide a durability bug from
    /// every other checker until the last copy went (swarm 18237).
    #[test]
    fn a_start_that_finds_damage_nobody_injected_fails_the_seed() {
        for plant in [Plant::BothCheckpointCopies, Plant::PartitionRecord, Plant::JournalSlot { op: 0 }] {
            let verdict = run_with(plant, 0);
            let Verdict::SafetyViolation { checker: Checker::Recovery, message, .. } = &verdict else {
                panic!("{plant:?} behind the fault model's back: expected a Recovery failure, got {verdict:?}")
            };
            assert!(message.contains("with no damage injected"), "{plant:?}: {message}");
            let verdict = run_with(plant, usize::MAX);
            assert!(matches!(verdict, Verdict::Pass), "{plant:?} through the fault model: {verdict:?}");
        }
    }

    /// The checkpoint keeps two copies, so its loss needs damage over both:
    /// one copy rotted by the fault model does not excuse the other lost
    /// behind its back (until session 32 damage anywhere in the group's
    /// superblock, checkpoint or journal, in any life, excused the loss).
    #[test]
    fn a_lost_checkpoint_needs_injected_damage_over_each_copy() {
        let verdict = run_with(Plant::BothCheckpointCopies, 1);
        let Verdict::SafetyViolation { checker: Checker::Recovery, message, .. } = &verdict else {
            panic!("one checkpoint copy behind the fault model's back: expected a Recovery failure, got {verdict:?}")
        };
        assert!(message.contains("no damage injected over every copy"), "{message}");
    }
}
