//! A replica process's life: connections (owner table stamps), crash,
//! restart from what its disk kept, and the operator's reformat of a wiped
//! disk. Each start builds a new `Node` over the groups it opened.

use super::*;

impl Cluster {
    /// Stamp fresh connections from `replica` to every peer, each owned by a
    /// seeded shard of `replica`.
    pub(super) fn connect(&mut self, replica: u8) {
        for peer in 0..self.config.replica_count {
            if peer == replica {
                continue;
            }
            let shard = ShardId((self.rng.next_u64() % u64::from(self.shard_count.get())) as u16);
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
        // Everything the process held in memory is gone; its disk stays.
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
        if std::mem::take(&mut self.nodes[index].wipe_on_restart) {
            return self.restart_wiped(replica);
        }
        self.maybe_rot(replica);
        let io = self.nodes[index].io.clone();
        // The process starts now, or once the crashed life's clock (which
        // ran ahead with its last call) stopped: its opens take time too.
        io.set_now_ns(io.now_ns().max(self.now_ns));
        let mut faulty_groups = 0;
        let mut groups = Vec::new();
        for group in 0..self.namespaces.len() {
            let namespace = self.namespaces[group];
            let config = storage_config(replica, namespace);
            let opened = block_on_timed(
                &io,
                GroupStorage::open_or_rejoin(&io, Path::new(DATA_DIR), config, self.config.replica_count),
            );
            let (storage, recovered, damage) = match opened {
                Ok(opened) => opened,
                Err(error) => {
                    let label = self.group_label(group);
                    return self.fail(Checker::Recovery, format!("replica {replica}{label} cannot restart: {error}"));
                }
            };
            match damage {
                // The group lost its state here, as a wiped disk would: it
                // rejoins, and every promise the lost files held is void
                // (what the superblock kept, the new one holds again).
                Some(damage) => self.on_group_formatted_after_damage(replica, group, &damage),
                None => self.check_recovery(replica, group, &storage, &recovered),
            }
            faulty_groups += u64::from(recovered.journal_faulty);
            let seed = self.rng.next_u64();
            let config = replica_config(&self.config, replica, namespace, seed);
            let replay_from = recovered.checkpoint.as_ref().map_or(0, |c| c.anchor.op);
            let partition = match open_partition(&io, namespace, self.config.replica_count) {
                Ok(partition) => partition,
                Err(error) => {
                    let label = self.group_label(group);
                    return self.fail(Checker::Recovery, format!("replica {replica}{label} cannot restart: {error}"));
                }
            };
            match Replica::open(config, partition, recovered) {
                Ok(r) => {
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
        let detail = if faulty_groups > 0 { format!("{faulty_groups} faulty journal(s)") } else { String::new() };
        self.finish_restart(replica, groups, faulty_groups, detail);
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
        process.node =
            Some(Node::new(process.io.clone(), config, groups, process.owners.clone(), process.drops.clone()));
        self.nodes[index].up = true;
        self.nodes[index].corrupted = false;
        self.nodes[index].rotted_while_running = false;
        self.connect(replica);
        self.check_owner_table(replica);
        self.record(Some(replica), "restart", faulty_groups, 0, String::new);
        self.timeline(replica, TimelineKind::Restart, detail);
        // Drain the actions that recovery itself asked for.
        self.with_node(replica, |node, world, armed| {
            let io = node.io().clone();
            block_on_io(&io, node.start(world), armed)
        });
    }

    /// `replica`'s `group` came back formatted and rejoining after `damage`
    /// (both copies of its checkpoint or superblock): its files were all
    /// written again, and what its old journal held is no promise any more.
    fn on_group_formatted_after_damage(&mut self, replica: u8, group: usize, damage: &StorageDamage) {
        self.checkpoint_rot.retain(|(r, g, _)| (*r, *g) != (replica, group));
        self.superblock_rot.retain(|(r, g, _)| (*r, *g) != (replica, group));
        self.nodes[replica as usize].acked[group].clear();
        let label = self.group_label(group);
        let detail = format!("{damage}{label}");
        self.record(Some(replica), "rejoin_after_damage", group as u64, u64::from(damage.keeps_promises()), || {
            detail.clone()
        });
        self.timeline(replica, TimelineKind::Fault, detail);
    }

    /// The operator's answer to a lost disk: format it again and start the
    /// replica, which must rejoin the cluster before it may vote or ack.
    pub(super) fn restart_wiped(&mut self, replica: u8) {
        let index = replica as usize;
        let io = self.nodes[index].io.clone();
        io.set_now_ns(io.now_ns().max(self.now_ns));
        io.disk().wipe();
        self.checkpoint_rot.retain(|(r, _, _)| *r != replica);
        self.superblock_rot.retain(|(r, _, _)| *r != replica);
        let mut groups = Vec::new();
        for group in 0..self.namespaces.len() {
            let namespace = self.namespaces[group];
            let config = storage_config(replica, namespace);
            let storage = block_on_timed(&io, GroupStorage::format_rejoining(&io, Path::new(DATA_DIR), config))
                .expect("formatting a wiped disk works");
            let partition = open_partition(&io, namespace, self.config.replica_count)
                .expect("a wiped disk opens an empty partition log");
            let seed = self.rng.next_u64();
            let config = replica_config(&self.config, replica, namespace, seed);
            let replica_state = Replica::rejoin(config, partition);
            // Every promise of the old disk is gone with it.
            self.checkers[group].on_restart(replica, 0);
            self.nodes[index].acked[group].clear();
            groups.push(Group::new(namespace, self.shard_of[group], storage, replica_state));
        }
        // Before its first probe leaves: a plot lets the old primary answer.
        self.plot_on_wiped_restart(replica);
        self.finish_restart(replica, groups, 0, "disk wiped, reformatted".to_string());
    }
}
