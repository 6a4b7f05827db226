//! A replica process's life: connections (owner table stamps), crash,
//! restart from what its disk kept, and the operator's reformat of a wiped
//! disk. Each start builds a new `Node` per shard over the groups it opened
//! that hash to that shard, and new inboxes between them.

use super::lost_vote::LostVoteRestart;
use super::*;
use crate::disk::MutationFault;
use shoal_shard::handoff::{MetadataReplay, replay_metadata_group};
use shoal_shard::owner_table::connection_shard;
use shoal_vsr::superblock::SuperblockError;

/// The stream the test hook adds to a tampered replay's catalogue: the
/// highest valid id, which no admin client creates.
const TAMPERED_STREAM_ID: u32 = shoal_shard::namespace::STREAM_ID_MAX;

impl Cluster {
    /// Stamp fresh connections from `replica` to every peer, each owned by
    /// the shard the server's rule names (`connection_shard`).
    pub(super) fn connect(&mut self, replica: u8) {
        for peer in 0..self.config.replica_count {
            if peer == replica {
                continue;
            }
            let shard = connection_shard(replica, Peer::Replica(peer), self.shard_count);
            let owners = &self.nodes[replica as usize].owners;
            if let Some(old) = owners.owner(peer) {
                owners.clear(peer, old).expect("the owner clears its own slot");
            }
            owners.stamp(peer, shard).expect("a cleared slot takes a stamp");
        }
    }

    pub(super) fn crash(&mut self, replica: u8, why: &str) {
        let delay = if self.phase == Phase::Safety { 1 + self.rng.next_u64() % RESTART_DELAY_MAX_NS } else { TICK_NS };
        self.crash_for(replica, why, delay);
    }

    pub(super) fn crash_for(&mut self, replica: u8, why: &str, down_ns: u64) {
        let index = replica as usize;
        if !self.nodes[index].up {
            return;
        }
        self.nodes[index].up = false;
        // A crash between two of the node's calls with a flush's fsync
        // running beside it: its writes are pending, lost or torn below.
        if self.nodes[index].node.as_ref().is_some_and(|node| node.flushes_in_flight()) {
            shoal_vsr::marks::hit(shoal_vsr::marks::CRASH_FSYNC_IN_FLIGHT);
        }
        // Everything the process held in memory is gone; its disk stays.
        // What waited in its shards' inboxes is dropped, and counted.
        self.shut_down_shards(replica);
        self.nodes[index].node = None;
        // Its connections die with it: every owner slot is cleared.
        let owners = &self.nodes[index].owners;
        for peer in 0..self.config.replica_count {
            if let Some(shard) = owners.owner(peer) {
                owners.clear(peer, shard).expect("the owner clears its own slot");
            }
        }
        self.nodes[index].paused_until_ns = None;
        self.nodes[index].crash_armed = None;
        self.nodes[index].io.crash();
        let why = why.to_string();
        self.record(Some(replica), "crash", 0, 0, || why.clone());
        self.timeline(replica, TimelineKind::Crash, why);
        self.check_owner_table(replica);
        self.schedule(down_ns.max(1), Event::Restart(replica));
    }

    pub(super) fn restart(&mut self, replica: u8) {
        let index = replica as usize;
        if self.nodes[index].up {
            return;
        }
        // A process starts once its last life ended on its own clock, which
        // ran ahead of the simulator's with that life's opens: a start cut
        // short at once by a fault (or a crash at its first protocol step)
        // ended ~0.6 s after its event on a slow disk. Starting the next life
        // at the event instead drew that life's faults by the simulator's
        // phase while they landed on the process's clock after the heal
        // (swarm seed 1228: three starts of one replica chained 1.78 s ->
        // 2.47 s -> 3.08 s -> 3.66 s of its clock, an EIO and a crash landing
        // past the heal at 2.0 s, and the cluster converged 0.1 s too late).
        let life_ended_ns = self.nodes[index].io.now_ns();
        if life_ended_ns > self.now_ns {
            return self.schedule(life_ended_ns - self.now_ns, Event::Restart(replica));
        }
        if self.nodes[index].wipe_on_restart {
            return self.restart_wiped(replica);
        }
        // Rot lands once per down time, not once per attempt to start: a
        // second one could take the other copy of what the first damaged.
        if self.nodes[index].restart_faults_in_a_row == 0 {
            match self.lost_vote_on_restart(replica) {
                LostVoteRestart::NotPlotted => self.maybe_rot(replica),
                LostVoteRestart::Rotted => {}
                LostVoteRestart::Deferred => {
                    return self.schedule(super::lost_vote::LOST_VOTE_DOWN_NS, Event::Restart(replica));
                }
            }
        }
        let io = self.nodes[index].io.clone();
        // The process starts now, or once the crashed life's clock (which
        // ran ahead with its last call) stopped: its opens take time too.
        io.set_now_ns(io.now_ns().max(self.now_ns));
        let fault = self.arm_restart_fault(replica);
        // As the server's shard 0 (`shard_zero_start`): the metadata group
        // is replayed writable before any group opens, with this start's
        // faults live; a replay that fails stops the start.
        let metadata_replay = match self.replay_metadata_at_start(replica) {
            Ok(replay) => replay,
            Err((group, what)) => return self.group_start_stopped(replica, group, fault, what),
        };
        for (path, ranges) in io.disk().take_lost_writes() {
            self.nodes[index].lost_write_files.entry(path).or_default().merge(&ranges);
        }
        let mut faulty_groups = 0;
        let mut groups = Vec::new();
        for group in 0..self.namespaces.len() {
            let namespace = self.namespaces[group];
            let config = storage_config(replica, namespace);
            let superblock = superblock_path(Path::new(DATA_DIR), namespace);
            let before = SuperblockLook::of(&io, &superblock);
            let checkpoint_size_bytes = io.disk().length_of(&checkpoint_path(Path::new(DATA_DIR), namespace));
            drop(io.disk().take_failed_reads());
            let opened = block_on_timed(
                &io,
                GroupStorage::open_or_rejoin(&io, Path::new(DATA_DIR), config, self.config.replica_count),
            );
            if opened.is_err() && before.formatted_since(&io, &superblock) {
                // The open found damage and its format wrote the rejoining
                // superblock, then a fault stopped it (disk-rot-sharded
                // seed 11239: the checkpoint removed, the journal's fsync
                // at open failed): the next start opens a rejoining group
                // with nothing to report, so the lost files' promises are
                // void from here, as if the format had finished.
                let what = "the group's open found it damaged and began its format to rejoin, in";
                let kept = io.disk().inode(&superblock) == before.inode;
                self.forget_group_after_format(replica, group, what.to_string(), kept);
            }
            // Reads that failed since the open began, the damage checks' excuse.
            let failed_reads = io.disk().take_failed_reads();
            let (storage, recovered, damage) = match opened {
                Ok(opened) => opened,
                // As the server's start (`host::open_group`): no superblock
                // means the group was never formatted (a new cluster's
                // format that a crash cut short): format it, new.
                Err(StorageError::Superblock(SuperblockError::Missing { .. })) => {
                    match self.format_new_group(replica, group) {
                        Ok(new) => {
                            groups.push(new);
                            continue;
                        }
                        Err(error) => {
                            let what = format!("its new group's format: {error}");
                            return self.group_start_stopped(replica, group, fault, what);
                        }
                    }
                }
                Err(error) => return self.group_start_stopped(replica, group, fault, error.to_string()),
            };
            let damaged = damage.is_some();
            match damage {
                // The group lost its state here, as a wiped disk would: it
                // rejoins, and every promise the lost files held is void
                // (what the superblock kept, the new one holds again).
                Some(damage) => {
                    self.check_group_damage(
                        replica,
                        group,
                        &damage,
                        &failed_reads,
                        checkpoint_size_bytes,
                        before.rejoining,
                    );
                    self.on_group_formatted_after_damage(replica, group, &damage);
                }
                None => {
                    let journal = storage.journal().config();
                    self.check_journal_damage(replica, group, journal, &recovered, &failed_reads);
                    self.check_recovery(replica, group, &storage, &recovered);
                }
            }
            faulty_groups += u64::from(recovered.journal_faulty());
            let seed = self.rng.next_u64();
            let config = replica_config(&self.config, replica, namespace, seed);
            let replay_from = recovered.checkpoint.as_ref().map_or(0, |c| c.anchor.op);
            let partition = match open_partition(&io, namespace, &self.config) {
                Ok((partition, salvage)) => {
                    self.check_salvage(replica, group, salvage.as_ref());
                    self.check_page_cache_settled(replica, group);
                    partition
                }
                Err(error) => return self.group_start_stopped(replica, group, fault, error.to_string()),
            };
            match Replica::open(config, partition, recovered) {
                Ok(r) => {
                    // A group open that found damage the replay did not (a
                    // read error that outlasted its retries on the last good
                    // copy) formatted the group: the replica holds nothing
                    // to compare the handed-on catalogue with.
                    if let Some(replay) = metadata_replay.as_ref().filter(|_| !damaged)
                        && namespace == METADATA_NAMESPACE
                    {
                        self.check_metadata_replay(replica, group, replay, &r);
                    }
                    // Replay re-commits from the checkpoint on: the checkers
                    // see those commits again and hold them to agreement.
                    self.checkers[group].on_restart(replica, replay_from);
                    self.checkers[group].on_view(replica, r.view());
                    groups.push(Group::new(namespace, self.shard_of[group], storage, r));
                }
                Err(error) => {
                    let label = self.group_label(group);
                    return self.fail(
                        Checker::Recovery,
                        format!("replica {replica}{label} checkpoint is unreadable: {error}"),
                    );
                }
            }
        }
        if self.restart_fault_stopped_it(replica) {
            return self.restart_stopped(replica, fault, format!("replica {replica}: the disk halted"));
        }
        let detail = if faulty_groups > 0 { format!("{faulty_groups} faulty journal(s)") } else { String::new() };
        self.finish_restart(replica, groups, faulty_groups, detail);
    }

    /// The metadata group's index among the run's groups, if it has one
    /// (only with more than one shard per replica).
    fn metadata_group(&self) -> Option<usize> {
        self.namespaces.iter().position(|&namespace| namespace == METADATA_NAMESPACE)
    }

    /// The server's start-up replay of the metadata group
    /// (`replay_metadata_group`, run by `shard_zero_start` at every start),
    /// on `replica`'s disk and clock, before any group opens: it settles
    /// the group's files, finishes an interrupted drain, cuts a torn tail,
    /// and formats a damaged group to rejoin, then rebuilds the catalogue
    /// shard 0 hands to the other shards. `Ok(None)`: the run has no
    /// metadata group. `Err`: the metadata group and why the replay failed
    /// (the server's process stops there).
    fn replay_metadata_at_start(&mut self, replica: u8) -> Result<Option<MetadataReplay>, (usize, String)> {
        let Some(group) = self.metadata_group() else { return Ok(None) };
        let io = self.nodes[replica as usize].io.clone();
        let dir = Path::new(DATA_DIR);
        let metadata = metadata_group(&self.config, replica);
        // A format after a lost superblock replaces the superblock file
        // (`Superblock::replace`, a rename); a format after a lost
        // checkpoint or journal keeps the superblock and writes it in place,
        // rejoining (disk-rot-sharded seed 22: the metadata checkpoint lost,
        // the replay formatted the group, and the group's open then found
        // nothing to report while the checker still held its promises).
        let superblock = superblock_path(dir, METADATA_NAMESPACE);
        let before = SuperblockLook::of(&io, &superblock);
        let replayed = block_on_timed(&io, replay_metadata_group(&io, dir, metadata, ShardId::METADATA));
        let formatted = before.formatted_since(&io, &superblock);
        let rejoined = formatted && !replayed.as_ref().is_ok_and(|replay| replay.created);
        if rejoined {
            // The replay found the group damaged (every copy of its
            // superblock or checkpoint, or its journal file) and formatted
            // it to rejoin, as the group's open would have: that open now
            // finds a formatted group and no damage to report, so the
            // promises of the lost files are dropped here, even when the
            // replay failed after the format (the next start finds it).
            let what = "the start-up replay found the metadata group damaged and formatted it to rejoin, in";
            self.forget_group_after_format(replica, group, what.to_string(), false);
        }
        let mut replay =
            replayed.map_err(|error| (group, format!("shard 0 cannot replay the metadata WAL: {error}")))?;
        self.metadata_replays += 1;
        shoal_vsr::marks::hit(shoal_vsr::marks::METADATA_REPLAYED_AT_START);
        let detail = format!(
            "commit {}, checkpoint {}, {} ops replayed, journal faulty {}, created {}, rejoined {rejoined}",
            replay.commit, replay.checkpoint_op, replay.ops_replayed, replay.journal_faulty, replay.created
        );
        self.record(Some(replica), "metadata_replay", replay.commit, u64::from(rejoined), || detail.clone());
        if std::mem::take(&mut self.tamper_next_metadata_replay) {
            let request = MetadataRequest::CreateStream { stream_id: TAMPERED_STREAM_ID, name: "tampered".into() };
            replay.state.apply(&request).expect("the tampered stream is new");
        }
        Ok(Some(replay))
    }

    /// The catalogue the start-up replay hands on must be the state the
    /// metadata replica recovered in the same start: both read the same
    /// disk (the replay settled it first, so the group's open finds nothing
    /// left to settle) through the same recovery (`Replica::open`), so they
    /// reach the same commit, and the encoded states are equal. This holds
    /// for a faulty journal too (both see the same faulty ops and stop
    /// below the first lost committed op: the replay hands on that prefix,
    /// `MetadataReplay::repair_from`, swarm seed 295) and for
    /// a group the replay formatted to rejoin (both hold the empty catalogue
    /// at commit 0). The one case that differs legitimately is left out by
    /// the caller: the group's own open found damage the replay did not
    /// and formatted the group (its replica then holds nothing).
    fn check_metadata_replay(&mut self, replica: u8, group: usize, replay: &MetadataReplay, opened: &GroupReplica) {
        let GroupMachine::Metadata(state) = opened.state_machine() else {
            unreachable!("the metadata group's machine is the catalogue")
        };
        let commit = opened.commit_min();
        if replay.commit == commit && replay.state.encode() == state.encode() {
            return;
        }
        let label = self.group_label(group);
        let streams = |state: &shoal_shard::state_machine::MetadataState| state.streams().len();
        self.fail(
            Checker::Recovery,
            format!(
                "replica {replica}{label}: the start-up replay hands on the catalogue at commit {} ({} streams, \
                 journal faulty {}, created {}), but the metadata replica opened in the same start recovered commit \
                 {commit} ({} streams)",
                replay.commit,
                streams(&replay.state),
                replay.journal_faulty,
                replay.created,
                streams(state),
            ),
        );
    }

    /// Format `group` of `replica` as a new group (its superblock is
    /// missing: the first start's format did not finish), as the server's
    /// start does, with a new replica over its partition log.
    fn format_new_group(&mut self, replica: u8, group: usize) -> Result<Group<SimIo>, String> {
        let io = self.nodes[replica as usize].io.clone();
        let namespace = self.namespaces[group];
        let config = storage_config(replica, namespace);
        let storage = block_on_timed(&io, GroupStorage::format(&io, Path::new(DATA_DIR), config))
            .map_err(|error| error.to_string())?;
        let (partition, salvage) = open_partition(&io, namespace, &self.config)?;
        self.check_salvage(replica, group, salvage.as_ref());
        self.check_page_cache_settled(replica, group);
        let seed = self.rng.next_u64();
        let config = replica_config(&self.config, replica, namespace, seed);
        self.checkers[group].on_restart(replica, 0);
        self.record(Some(replica), "format_new_group", group as u64, 0, String::new);
        Ok(Group::new(namespace, self.shard_of[group], storage, Replica::new(config, partition)))
    }

    /// `replica`'s first start crashed inside the format of its new
    /// groups (`Cluster::new`): it is down, and its next start finds what
    /// the format left.
    pub(super) fn on_first_format_crashed(&mut self, replica: u8) {
        shoal_vsr::marks::hit(shoal_vsr::marks::CRASH_DURING_RESTART);
        self.nodes[replica as usize].restart_faults_in_a_row = 1;
        let why = "during its first format".to_string();
        self.record(Some(replica), "crash", 0, 0, || why.clone());
        self.timeline(replica, TimelineKind::Crash, why);
        let delay = 1 + self.rng.next_u64() % RESTART_DELAY_MAX_NS;
        self.schedule(delay, Event::Restart(replica));
    }

    /// Maybe inject a fault into the start of `replica` that begins now:
    /// a crash (the disk halts) or an EIO at one of its first calls that
    /// change the disk, drawn per group it opens. Only in the safety phase
    /// and for at most `RESTART_FAULTS_IN_A_ROW_MAX` starts in a row.
    fn arm_restart_fault(&mut self, replica: u8) -> Option<MutationFault> {
        let index = replica as usize;
        let (crash_ppm, error_ppm) =
            (self.config.faults.restart_crash_ppm, self.config.faults.restart_storage_error_ppm);
        if self.nodes[index].restart_faults_in_a_row >= RESTART_FAULTS_IN_A_ROW_MAX {
            return None;
        }
        let fault = if self.roll(crash_ppm, "restart_crash") {
            MutationFault::Halt
        } else if self.roll(error_ppm, "restart_storage_error") {
            MutationFault::Eio
        } else {
            return None;
        };
        let mutations_max = start_mutations_max(&self.namespaces);
        let count = 1 + self.rng.next_u64() % mutations_max;
        self.nodes[index].io.disk().arm_mutation_fault(count, fault);
        self.record(Some(replica), "restart_fault_armed", count, fault as u64, || {
            format!("{fault:?} at mutation {count}")
        });
        Some(fault)
    }

    /// The start's storage calls are over: did the fault armed for it land
    /// in a way that stops it (a halt, even after the last call: the node
    /// could not write)? Disarms a fault that never landed.
    fn restart_fault_stopped_it(&mut self, replica: u8) -> bool {
        let mut disk = self.nodes[replica as usize].io.disk();
        disk.disarm_mutation_fault();
        disk.is_halted()
    }

    /// A start of `replica` failed in `group` (`what`): `restart_stopped`,
    /// with the group named.
    fn group_start_stopped(&mut self, replica: u8, group: usize, fault: Option<MutationFault>, what: String) {
        let label = self.group_label(group);
        self.restart_stopped(replica, fault, format!("replica {replica}{label}: {what}"));
    }

    /// A start of `replica` failed (`why`). If a fault injected into it
    /// landed, that is what an operator sees: the process stopped with a
    /// typed storage error (or crashed), and its supervisor starts it again
    /// later, maybe after a power loss. With nothing injected the disk was
    /// good, and a replica that cannot start on a good disk is a recovery
    /// bug.
    fn restart_stopped(&mut self, replica: u8, fault: Option<MutationFault>, why: String) {
        let index = replica as usize;
        let io = self.nodes[index].io.clone();
        let landed = fault.is_some() && !io.disk().mutation_fault_armed();
        io.disk().disarm_mutation_fault();
        let Some(fault) = fault.filter(|_| landed) else {
            return self.fail(Checker::Recovery, format!("{why}: it cannot restart"));
        };
        shoal_vsr::marks::hit(match fault {
            MutationFault::Halt => shoal_vsr::marks::CRASH_DURING_RESTART,
            MutationFault::Eio => shoal_vsr::marks::STORAGE_ERROR_DURING_RESTART,
        });
        self.nodes[index].restart_faults_in_a_row += 1;
        // The process is gone with whatever its start left in flight; its
        // machine may lose power before the next start.
        io.crash();
        let detail = format!("start stopped by {fault:?}: {why}");
        self.record(Some(replica), "restart_stopped", fault as u64, 0, || detail.clone());
        self.timeline(replica, TimelineKind::Crash, detail);
        let delay = if self.phase == Phase::Safety { 1 + self.rng.next_u64() % RESTART_DELAY_MAX_NS } else { TICK_NS };
        self.schedule(delay, Event::Restart(replica));
    }

    pub(super) fn finish_restart(
        &mut self,
        replica: u8,
        groups: Vec<Group<SimIo>>,
        faulty_groups: u64,
        detail: String,
    ) {
        let index = replica as usize;
        let process = &mut self.nodes[index];
        let config = node_config(&self.config, replica, self.shard_count);
        let shards =
            ShardNodes::new(&process.io, &config, groups, self.placement.clone(), &process.owners, &process.drops);
        process.node = Some(shards);
        process.flush_poll_at_ns = None;
        self.nodes[index].up = true;
        self.scrub_passes_needed_after_restart(replica);
        self.nodes[index].restart_faults_in_a_row = 0;
        self.nodes[index].corrupted = false;
        self.nodes[index].rotted_while_running = false;
        self.connect(replica);
        self.check_owner_table(replica);
        // The opens ran ahead on the process's own clock: the node serves
        // nothing until it catches up (`busy_until`).
        let open_ns = self.nodes[index].io.now_ns().saturating_sub(self.now_ns);
        self.extend_liveness_to_serve_from(replica, self.nodes[index].io.now_ns());
        self.record(Some(replica), "restart", faulty_groups, 0, || {
            format!("storage open takes {:.1} ms", open_ns as f64 / 1e6)
        });
        self.timeline(replica, TimelineKind::Restart, detail);
        // Drain the actions that recovery itself asked for, shard by shard.
        for shard in self.shard_count.shards() {
            self.with_node(replica, shard, |node, world, armed| {
                let io = node.io().clone();
                block_on_io(&io, node.start(world), armed)
            });
        }
    }

    /// The liveness bound runs from the moment every replica serves: a
    /// replica whose start (pulled in at the heal, or whose last life ran
    /// on its disk's clock past the heal) finishes its storage opens at
    /// `serving_from_ns` gets the whole bound from then. Bounded: no fault
    /// stops a start in the liveness phase, a running node that stops itself
    /// there more than `LIVENESS_SELF_STOPS_MAX` times ends the run
    /// (`on_self_stop`), and whatever else restarts a replica
    /// (a scripted crash) moves the deadline at most
    /// `LIVENESS_EXTENSIONS_PER_REPLICA_MAX` times.
    fn extend_liveness_to_serve_from(&mut self, replica: u8, serving_from_ns: u64) {
        let Phase::Liveness { deadline_ns } = &mut self.phase else { return };
        let process = &mut self.nodes[replica as usize];
        if process.liveness_extensions >= LIVENESS_EXTENSIONS_PER_REPLICA_MAX {
            return;
        }
        process.liveness_extensions += 1;
        *deadline_ns = (*deadline_ns).max(serving_from_ns + self.config.liveness_time_ns);
    }

    /// A running node stopped itself on `why` (a storage or partition log
    /// error, `what`): the process is gone, as the server's would be. In the
    /// liveness phase nothing is injected: past `LIVENESS_SELF_STOPS_MAX`
    /// such stops, the replica is in a restart loop, and the run ends with
    /// that as its liveness verdict.
    pub(super) fn on_self_stop(&mut self, replica: u8, why: &str, what: &str) {
        self.record(Some(replica), "storage_error", 0, 0, || why.to_string());
        self.crash(replica, what);
        if self.phase == Phase::Safety {
            return;
        }
        let process = &mut self.nodes[replica as usize];
        process.liveness_self_stops += 1;
        let stops = process.liveness_self_stops;
        self.record(Some(replica), "liveness_self_stop", u64::from(stops), 0, || why.to_string());
        if stops > LIVENESS_SELF_STOPS_MAX && self.availability_failure.is_none() {
            self.availability_failure = Some(format!(
                "restart loop: replica {replica} stopped itself {stops} times in the liveness phase with no fault \
                 injected (at most {LIVENESS_SELF_STOPS_MAX}); the last time on: {why}"
            ));
        }
    }

    /// `replica`'s `group` came back formatted and rejoining after `damage`
    /// (both copies of its checkpoint or superblock): its files were all
    /// written again, and what its old journal held is no promise any more.
    fn on_group_formatted_after_damage(&mut self, replica: u8, group: usize, damage: &StorageDamage) {
        self.forget_group_after_format(replica, group, damage.to_string(), damage.keeps_promises());
    }

    /// `replica`'s `group` was formatted to rejoin (`what`): the rot it
    /// held is gone with its files, and so are its acknowledgements.
    fn forget_group_after_format(&mut self, replica: u8, group: usize, what: String, keeps_promises: bool) {
        self.checkpoint_rot.retain(|(r, g, _)| (*r, *g) != (replica, group));
        self.superblock_rot.retain(|(r, g, _)| (*r, *g) != (replica, group));
        self.nodes[replica as usize].acked[group].clear();
        let label = self.group_label(group);
        let detail = format!("{what}{label}");
        self.record(Some(replica), "rejoin_after_damage", group as u64, u64::from(keeps_promises), || detail.clone());
        self.timeline(replica, TimelineKind::Fault, detail);
    }

    /// The operator's answer to a lost disk: format it again and start the
    /// replica, which must rejoin the cluster before it may vote or ack. A
    /// format that a crash or a storage error stopped is run again by the
    /// next start over what it left (the operator's retry), not wiped again.
    pub(super) fn restart_wiped(&mut self, replica: u8) {
        let index = replica as usize;
        let io = self.nodes[index].io.clone();
        io.set_now_ns(io.now_ns().max(self.now_ns));
        if !std::mem::replace(&mut self.nodes[index].wiped, true) {
            io.disk().wipe();
            self.nodes[index].sector_damage.clear();
            self.nodes[index].lost_write_files.clear();
            drop(io.disk().take_lost_writes());
            self.checkpoint_rot.retain(|(r, _, _)| *r != replica);
            self.superblock_rot.retain(|(r, _, _)| *r != replica);
            // Every promise of the old disk is gone with it.
            for acked in &mut self.nodes[index].acked {
                acked.clear();
            }
        }
        let fault = self.arm_restart_fault(replica);
        let mut groups = Vec::new();
        for group in 0..self.namespaces.len() {
            let namespace = self.namespaces[group];
            let config = storage_config(replica, namespace);
            let storage = match block_on_timed(&io, GroupStorage::format_rejoining(&io, Path::new(DATA_DIR), config)) {
                Ok(storage) => storage,
                Err(error) => {
                    let what = format!("the format of its wiped disk: {error}");
                    return self.group_start_stopped(replica, group, fault, what);
                }
            };
            let partition = match open_partition(&io, namespace, &self.config) {
                Ok((partition, salvage)) => {
                    self.check_salvage(replica, group, salvage.as_ref());
                    self.check_page_cache_settled(replica, group);
                    partition
                }
                Err(error) => return self.group_start_stopped(replica, group, fault, error.to_string()),
            };
            // The server formats the metadata group of a dir formatted to
            // rejoin before its start-up replay (`format_metadata_rejoining`),
            // which then hands on the rejoining group's empty catalogue.
            let metadata_replay = if namespace == METADATA_NAMESPACE {
                match self.replay_metadata_at_start(replica) {
                    Ok(replay) => replay,
                    Err((group, what)) => return self.group_start_stopped(replica, group, fault, what),
                }
            } else {
                None
            };
            let seed = self.rng.next_u64();
            let config = replica_config(&self.config, replica, namespace, seed);
            let replica_state = Replica::rejoin(config, partition);
            if let Some(replay) = &metadata_replay {
                self.check_metadata_replay(replica, group, replay, &replica_state);
            }
            self.checkers[group].on_restart(replica, 0);
            groups.push(Group::new(namespace, self.shard_of[group], storage, replica_state));
        }
        if self.restart_fault_stopped_it(replica) {
            return self.restart_stopped(replica, fault, format!("replica {replica}: the disk halted"));
        }
        self.nodes[index].wipe_on_restart = false;
        self.nodes[index].wiped = false;
        // Before its first probe leaves: a plot lets the old primary answer.
        self.plot_on_wiped_restart(replica);
        self.finish_restart(replica, groups, 0, "disk wiped, reformatted".to_string());
    }
}

/// The superblock file's newest valid copy says the group rejoins: read
/// from the disk's bytes as a read would see them, without a read's faults
/// (the simulator looking, not the process).
fn superblock_rejoining(io: &SimIo, path: &Path) -> bool {
    let Some(bytes) = io.disk().contents(path) else { return false };
    matches!(shoal_vsr::superblock::decode_file(&bytes), Ok(Some((_, state))) if state.rejoining)
}

/// A group's superblock as the simulator saw it before a call that may
/// format the group to rejoin (a start-up replay, a group's open).
struct SuperblockLook {
    inode: Option<u64>,
    rejoining: bool,
}

impl SuperblockLook {
    fn of(io: &SimIo, path: &Path) -> SuperblockLook {
        let inode = io.disk().inode(path);
        SuperblockLook { inode, rejoining: superblock_rejoining(io, path) }
    }

    /// The call formatted the group since: a format after a lost superblock
    /// replaces the file (`Superblock::replace`, a rename); one after a
    /// lost checkpoint or journal keeps it and writes it in place,
    /// rejoining, before it touches the other files.
    fn formatted_since(&self, io: &SimIo, path: &Path) -> bool {
        let inode = io.disk().inode(path);
        inode != self.inode || (!self.rejoining && superblock_rejoining(io, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{FaultMix, RunConfig, Verdict};

    /// Steps a run may take in the test below; the run it drives ends in
    /// far fewer with the self-stop bound, and in none without it (each
    /// start moved the liveness deadline on).
    const STEPS_MAX: u64 = 3_000_000;

    /// A replica whose every life after the heal stops itself on a storage
    /// error (its first write fails, as a disk whose damage the node
    /// cannot get past) is a restart loop: the run ends with that as its
    /// liveness verdict, in virtual time. Before, each start moved the
    /// liveness deadline on and the run never ended (disk-rot seed 44036
    /// on tree 984de2e).
    #[test]
    fn a_replica_that_stops_itself_in_every_life_after_the_heal_ends_the_run_as_a_restart_loop() {
        let config = RunConfig::developer(7, FaultMix::none());
        let mut cluster = Cluster::new(&config);
        let mut life_armed = false;
        let mut steps = 0;
        while cluster.step() {
            steps += 1;
            assert!(steps < STEPS_MAX, "the run did not end at {} ms of virtual time", cluster.now_ns / 1_000_000);
            let up = cluster.nodes[0].up;
            if up && !life_armed && matches!(cluster.phase, Phase::Liveness { .. }) {
                let mut disk = cluster.nodes[0].io.disk();
                disk.allow_faults_after_heal();
                disk.fail_next_write();
                life_armed = true;
            }
            life_armed &= up;
        }
        let Phase::Liveness { deadline_ns } = cluster.phase else { panic!("the run ended in its safety phase") };
        let outcome = cluster.finish();
        let Verdict::LivenessViolation { message } = &outcome.verdict else {
            panic!("expected a restart loop, got {:?}", outcome.verdict)
        };
        assert!(message.starts_with("restart loop: replica 0 stopped itself 3 times"), "{message}");
        let bound_ns =
            config.safety_time_ns + (1 + u64::from(LIVENESS_EXTENSIONS_PER_REPLICA_MAX)) * config.liveness_time_ns;
        assert!(deadline_ns <= bound_ns, "the deadline moved to {deadline_ns} ns, past {bound_ns} ns");
    }
}
