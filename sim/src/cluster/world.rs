//! The node's world: how a simulated process runs the `Node` of each of its
//! shards (the library code the server runs on each shard thread) with this
//! cluster as its `NodeBus` and `NodeHooks`.
//!
//! A shard's node is taken out of its process for each call, so the hooks
//! may touch the rest of the cluster; a node that stops is crashed once it
//! is back. A send through a connection another shard holds hops through
//! that shard's outbound inbox (`inboxes`).

use super::*;

impl Cluster {
    /// Run `f` on the node of `replica`'s shard `shard` with this cluster as
    /// its world. The node is taken out for the call, so the world's hooks
    /// may touch everything else; a node that stops is crashed here (the
    /// whole process, as the server's shard failure shuts it down), once it
    /// is back. `None` when the process is down or the node stopped.
    ///
    /// The call runs on the process's own clock (`block_on_io`, which `f`
    /// uses with the armed crash it is handed): it starts now (or when the
    /// process's last call ended, if later) and takes the virtual time its
    /// storage calls take; until it ends the process is busy, and the events
    /// for it wait (`busy_until`), as frames wait in a server shard's inbox
    /// while its loop awaits the disk. An armed crash that lands drops the
    /// call mid-flight and crashes the process with its I/O in flight.
    pub(super) fn with_node<R>(
        &mut self,
        replica: u8,
        shard: ShardId,
        f: impl FnOnce(&mut Node<SimIo>, &mut SimWorld<'_>, &mut Option<u32>) -> Driven<Result<R, NodeStop>>,
    ) -> Option<R> {
        let index = replica as usize;
        if !self.nodes[index].up {
            return None;
        }
        self.keep_partition_misdirect_placeable(replica);
        let mut node = self.take_node(replica, shard)?;
        let io = self.nodes[index].io.clone();
        io.set_now_ns(io.now_ns().max(self.now_ns));
        let mut armed = self.nodes[index].crash_armed.take();
        let mut world = SimWorld { cluster: self, replica, shard, crash: None };
        let driven = f(&mut node, &mut world, &mut armed);
        let crash = world.crash.take();
        self.put_node(replica, shard, node);
        self.nodes[index].crash_armed = armed;
        self.nodes[index].busy_until_ns = io.now_ns();
        if matches!(driven, Driven::Done(Ok(_))) {
            self.schedule_flush_poll(replica);
        }
        let result = match driven {
            Driven::Done(result) => result,
            Driven::Crashed(in_flight) => {
                self.crash_in_flight(replica, in_flight);
                return None;
            }
        };
        match result {
            Ok(value) => Some(value),
            Err(stop) => {
                self.on_node_stop(replica, stop, crash);
                None
            }
        }
    }

    /// The node of `replica` left fsyncs running beside it: poll them when
    /// the earliest can have ended on the process's clock (its earliest
    /// storage timer: nothing else waits on one between calls), or right
    /// after this call when none has drawn its latency yet (it yielded).
    fn schedule_flush_poll(&mut self, replica: u8) {
        let index = replica as usize;
        let Some(node) = self.nodes[index].node.as_ref() else { return };
        if !node.flushes_in_flight() {
            return;
        }
        let io = &self.nodes[index].io;
        let at_ns = io.executor().next_timer_ns().unwrap_or_else(|| io.now_ns()).max(self.now_ns);
        if self.nodes[index].flush_poll_at_ns.is_some_and(|queued| queued <= at_ns) {
            return;
        }
        self.nodes[index].flush_poll_at_ns = Some(at_ns);
        self.schedule(at_ns - self.now_ns, Event::FlushPoll(replica));
    }

    /// An armed crash landed while `replica`'s storage calls were in flight
    /// (the node's call was dropped there): the disk crashes with them.
    fn crash_in_flight(&mut self, replica: u8, in_flight: IoInFlight) {
        if in_flight.writes > 0 {
            shoal_vsr::marks::hit(shoal_vsr::marks::CRASH_WRITE_IN_FLIGHT);
        }
        if in_flight.syncs > 0 {
            shoal_vsr::marks::hit(shoal_vsr::marks::CRASH_FSYNC_IN_FLIGHT);
        }
        let why = format!(
            "with storage in flight ({} writes, {} fsyncs, {} reads)",
            in_flight.writes, in_flight.syncs, in_flight.reads
        );
        self.crash(replica, &why);
    }

    /// When the process's current call ends, if it is up and still busy
    /// (its events wait until then).
    pub(super) fn busy_until(&self, replica: u8) -> Option<u64> {
        let process = &self.nodes[replica as usize];
        (process.up && process.node.is_some() && process.busy_until_ns > self.now_ns).then_some(process.busy_until_ns)
    }

    /// Queue `event` again for when `replica`'s current call ends: a tick
    /// then, every other event a nanosecond later, so the tick runs first.
    /// A server shard checks its timer after every turn; a tick queued
    /// behind the frames that waited would wait for each of them in turn
    /// (swarm seed 254: a primary's commit heartbeats stopped for 400 ms
    /// while it repaired, and a backup started a view change).
    pub(super) fn defer_until_idle(&mut self, until_ns: u64, event: Event) {
        assert!(until_ns > self.now_ns, "only a busy process defers");
        let at_ns = if matches!(event, Event::ReplicaTick(_)) { until_ns } else { until_ns + 1 };
        self.sequence += 1;
        self.queue.insert((at_ns, self.sequence), event);
    }

    /// The node stopped: a storage or partition log error (fail-stop), or a
    /// crash the fault injector asked for at a protocol moment.
    pub(super) fn on_node_stop(&mut self, replica: u8, stop: NodeStop, crash: Option<String>) {
        match stop {
            NodeStop::Halted => {
                let why = crash.expect("only the simulator's hooks halt a node, and they say why");
                if self.nodes[replica as usize].wipe_on_restart {
                    // A plot's wipe: back soon, while the plot still runs.
                    let down_ns = 1 + self.rng.next_u64() % plot::PLOT_WIPE_DOWN_MAX_NS;
                    return self.crash_for(replica, &why, down_ns);
                }
                self.crash(replica, &why);
            }
            NodeStop::Storage { error, .. } => self.on_self_stop(replica, &error.to_string(), "storage error"),
            NodeStop::PartitionLog(error) => self.on_self_stop(replica, &error.to_string(), "partition log error"),
        }
    }

    /// Write the partition's applied messages to its log (the node's own
    /// write; a failure stops the node like any other).
    pub(super) fn persist_partition(&mut self, replica: u8, group: usize) {
        let (shard, local) = self.placement.place(group);
        self.with_node(replica, shard, |node, _, _| {
            let io = node.io().clone();
            Driven::Done(io.instant(|| block_on_ready(node.group_mut(local).write_partition())))
        });
    }

    /// Every message of the group's partition log on `replica`, by offset.
    pub(super) fn read_partition(&mut self, replica: u8, group: usize) -> Vec<Vec<u8>> {
        self.persist_partition(replica, group);
        let mut messages = Vec::new();
        let Some(r) = self.group_replica(replica, group) else { return messages };
        let io = self.nodes[replica as usize].io.clone();
        loop {
            let chunk = io.instant(|| block_on_ready(r.state_machine().read(messages.len() as u64, 1024)));
            if chunk.is_empty() {
                break;
            }
            messages.extend(chunk.into_iter().map(|(_, message)| message));
        }
        // A checkpoint running beside the node keeps what its group applied
        // meanwhile in memory (the log's sync covers the log as it was), as
        // a crash would keep it in the journal: both are the replica's.
        // Completing the checkpoint here instead ran storage calls after the
        // run, where an injected fault could stop the node (disk-rot 239443).
        for (offset, message) in r.state_machine().pending() {
            if offset == messages.len() as u64 {
                messages.push(message);
            }
        }
        messages
    }
}

/// The world one shard's node runs in during one call: this cluster's
/// network, fault policy and checkers, seen through the node's two narrow
/// traits. The node names its groups by their index in it; the world by the
/// cluster's (`SimWorld::group`).
pub(super) struct SimWorld<'a> {
    cluster: &'a mut Cluster,
    replica: u8,
    shard: ShardId,
    /// Why a hook stopped the node (a crash at a protocol moment); the
    /// cluster crashes the process once the node is back in its slot.
    crash: Option<String>,
}

impl SimWorld<'_> {
    /// The cluster's index of group `local` of this shard's node.
    fn group(&self, local: usize) -> usize {
        self.cluster.placement.group(self.shard, local)
    }
}

impl NodeBus for SimWorld<'_> {
    /// Out on the connection shard `via` holds: this shard's own, or a hop
    /// through `via`'s outbound inbox (the server's `send_out`).
    fn send_to_replica(&mut self, via: ShardId, to: u8, message: Message) {
        if let Some(group) = self.cluster.namespaces.iter().position(|&ns| ns == message.header.namespace) {
            self.cluster.checkers[group].on_send(self.replica, &message);
        }
        if via == self.shard {
            return self.cluster.send(Endpoint::Replica(self.replica), Endpoint::Replica(to), message);
        }
        let frame = ShardFrame::Consensus { peer: to, header: message.header, body: message.body.to_vec() };
        self.cluster.hop_out(self.replica, self.shard, via, frame);
    }

    fn reply_to_client(&mut self, via: ShardId, client: u128, message: Message) {
        if via == self.shard {
            let index = u32::try_from(client - CLIENT_ID_BASE).expect("simulated client ids are small");
            return self.cluster.send(Endpoint::Replica(self.replica), Endpoint::Client(index), message);
        }
        let connection_id = u64::try_from(client).expect("simulated client ids are small");
        let body = message.body.to_vec();
        let frame = ShardFrame::ClientReply { connection_id, origin_shard: via, header: message.header, body };
        self.cluster.hop_out(self.replica, self.shard, via, frame);
    }

    fn client_shard(&self, client: u128) -> ShardId {
        let index = u32::try_from(client - CLIENT_ID_BASE).expect("simulated client ids are small");
        self.cluster.client_shard(index)
    }
}

impl NodeHooks for SimWorld<'_> {
    fn before_storage(&mut self, group: usize, action: &Action) {
        let group = self.group(group);
        self.cluster.before_storage(self.replica, group, action);
        self.cluster.arm_storage_fault(self.replica);
    }

    fn after_storage(&mut self, group: usize, action: &Action, error: Option<&StorageError>) -> Flow {
        let group = self.group(group);
        self.cluster.after_storage(self.replica, group, action, error.is_none());
        if error.is_none() && self.cluster.roll(self.cluster.config.faults.protocol_crash_ppm, "protocol_crash") {
            self.crash = Some(format!("right after {} completed", action_name(action)));
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn before_send(&mut self, group: usize, header: &Header) {
        let group = self.group(group);
        self.cluster.check_promise(self.replica, group, header);
    }

    fn after_promise_sent(&mut self, _group: usize, command: Command) -> Flow {
        if self.cluster.plot_after_promise(self.replica, command) {
            self.crash = Some(format!("plot: right after sending {command:?}, disk to be wiped"));
            return Flow::Stop;
        }
        if self.cluster.roll(self.cluster.config.faults.protocol_crash_ppm, "protocol_crash") {
            self.crash = Some(format!("right after sending {command:?}"));
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn on_committed(&mut self, group: usize, committed: &[Committed]) {
        let group = self.group(group);
        self.cluster.observe_committed(self.replica, group, committed);
    }

    fn on_view(&mut self, group: usize, view: u64, status: Status) {
        let group = self.group(group);
        self.cluster.checkers[group].on_view(self.replica, view);
        self.cluster.observe_view(self.replica, group, view, status);
    }

    fn on_committed_conflict(&mut self, group: usize, why: &str) {
        let group = self.group(group);
        let label = self.cluster.group_label(group);
        let detail = format!(
            "replica {}{label} was offered a canonical log that contradicts ops it committed ({why})",
            self.replica
        );
        self.cluster.checkers[group].fail(Checker::Agreement, detail);
    }

    /// As the server's world: the real hops run around the node (a frame
    /// came in through this shard's inbound inbox, a send goes out through
    /// the connection shard's outbound inbox), so the node only ever hops
    /// from or to its own shard. Any other hop is a misroute.
    fn hop(&mut self, from: ShardId, to: ShardId, variant: FrameVariant) -> Result<(), DropReason> {
        if from == self.shard || to == self.shard {
            return Ok(());
        }
        let detail = format!(
            "replica {}: shard {}'s node hopped a {} frame from shard {} to shard {}",
            self.replica,
            self.shard.0,
            variant.name(),
            from.0,
            to.0
        );
        self.cluster.fail(Checker::Routing, detail);
        Err(DropReason::ConsensusMisroute)
    }

    fn draw(&mut self, bound: u64) -> Option<u64> {
        Some(self.cluster.choices.draw(bound))
    }

    fn on_state_data_filled(&mut self, _group: usize, offset: u64, count: usize) {
        self.cluster.record(Some(self.replica), "state_data", offset, count as u64, String::new);
    }
}
