//! A running process's shards, run as the server runs them
//! (`runtime::host`): one `Node` per shard, holding the groups whose
//! namespaces hash to it (the metadata group on shard 0), and per shard two
//! bounded `LocalInbox`es, the shard crate's real ones:
//!
//! - the **inbound** inbox: a frame read on a connection (the connection of
//!   a peer lives on the shard the owner table names, a client's on
//!   `client_shard`) is routed by the real pump (`pump::dispatch`, the
//!   routers) into the inbox of the shard whose node runs its group, even
//!   when that is the connection's own shard, as the server's connection
//!   callback does; the shard's loop takes it (`pump::deliver` re-checks the
//!   route) and hands it to its node. A frame that arrives while the
//!   process is busy with its storage waits there and joins the turn that
//!   takes it.
//! - the **outbound** inbox: a frame a group sends through a connection
//!   another shard holds (to a peer, through the owner table; a reply to a
//!   client, through its connection's shard) hops into that shard's
//!   outbound inbox, which that shard writes to its connections at once (the
//!   server's outbound task, which never waits behind the shard's storage).
//!
//! Every rejection (`try_send` on a full or closed inbox, a route error, a
//! frame lost as it is taken) is counted in the `frame_drops_total` of a
//! shard. The world's shard faults act on these inboxes: a forced-full inbox
//! at a send (`LocalInbox::set_full`), a frame lost as it is taken (counted
//! `injected`), a shard panic that shuts the process down and closes them.
//! The shards of one process run one at a time on the process's clock.
//!
//! Accounting (`Cluster::check_frame_accounting`): every frame offered to an
//! inbox is delivered (to its group's node, or out on its connection), still
//! queued, or counted in `frame_drops_total` with a hop's reason.

use shoal_shard::channel::{INBOUND_FRAMES_MAX, LocalInbox, OUTBOUND_FRAMES_MAX, ShardSender};
use shoal_shard::frame::ShardFrame;
use shoal_shard::pump::{self, Delivery};
use shoal_vsr::marks;

use super::*;

/// Where every group of the cluster runs in a process: its shard (its
/// namespace's route) and its index in that shard's node. The same in every
/// process and every life (the simulator's groups are fixed at the start).
#[derive(Debug)]
pub(super) struct Placement {
    /// By group: its shard and its index in the shard's node.
    places: Vec<(ShardId, usize)>,
    /// By shard: its groups, in the order of its node.
    groups: Vec<Vec<usize>>,
}

impl Placement {
    pub(super) fn new(shard_of: &[ShardId], shard_count: ShardCount) -> Placement {
        let mut groups = vec![Vec::new(); usize::from(shard_count.get())];
        let places = shard_of
            .iter()
            .enumerate()
            .map(|(group, &shard)| {
                assert!(shard_count.contains(shard), "group {group} runs on a shard of the process");
                let on_shard = &mut groups[shard.index()];
                on_shard.push(group);
                (shard, on_shard.len() - 1)
            })
            .collect();
        Placement { places, groups }
    }

    pub(super) fn shard_count(&self) -> usize {
        self.groups.len()
    }

    /// Group `group`'s shard and its index in that shard's node.
    pub(super) fn place(&self, group: usize) -> (ShardId, usize) {
        self.places[group]
    }

    /// The cluster's index of the group at `local` in shard `shard`'s node.
    pub(super) fn group(&self, shard: ShardId, local: usize) -> usize {
        self.groups[shard.index()][local]
    }

    /// Split groups opened in group order into each shard's node's groups.
    fn split<T>(&self, groups: Vec<T>) -> Vec<Vec<T>> {
        assert_eq!(groups.len(), self.places.len(), "one of every group");
        let mut per_shard: Vec<Vec<T>> = (0..self.shard_count()).map(|_| Vec::new()).collect();
        for (group, opened) in groups.into_iter().enumerate() {
            let (shard, local) = self.places[group];
            assert_eq!(per_shard[shard.index()].len(), local, "groups come in their shard's order");
            per_shard[shard.index()].push(opened);
        }
        per_shard
    }
}

/// The shards of one running process: their nodes and inboxes.
#[derive(Debug)]
pub(super) struct ShardNodes {
    /// By shard; `None` while a call borrows it (`with_node`).
    nodes: Vec<Option<Node<SimIo>>>,
    placement: Rc<Placement>,
    /// By shard: frames for its groups, read on any shard's connections.
    inbound: Vec<LocalInbox>,
    /// By shard: frames other shards send out through its connections.
    outbound: Vec<LocalInbox>,
    /// By shard: when the `Drain` event for its inbound inbox is queued.
    drain_at_ns: Vec<Option<u64>>,
    /// By shard, while frames wait in its inbox for the process: the
    /// event sequence number its wait began with, its place in line. A
    /// drain that finds the process busy keeps it, so the shards of a
    /// process take turns in the order they began waiting; with a fresh
    /// number each time, a shard whose frames each kept the process busy
    /// (view changes of three groups on a slow disk, 15 ms each) always
    /// queued its next drain before a waiting shard re-queued its own, and
    /// that shard's group got no frame for 0.9 s (swarm-buggify seed 3522,
    /// session 35: a backup's normal timeout fired in a healthy cluster).
    drain_place: Vec<Option<u64>>,
}

impl ShardNodes {
    /// The shards of a process that starts over `groups` (every group of
    /// the cluster, in group order), each shard counting its drops in its
    /// own `drops`, and sending to peers through `owners`.
    pub(super) fn new(
        io: &SimIo,
        config: &NodeConfig,
        groups: Vec<Group<SimIo>>,
        placement: Rc<Placement>,
        owners: &Arc<ReplicaOwnerTable>,
        drops: &[Arc<FrameDrops>],
    ) -> ShardNodes {
        assert_eq!(drops.len(), placement.shard_count(), "one drop counter per shard");
        assert_eq!(usize::from(config.shard_count.get()), placement.shard_count());
        let nodes = placement
            .split(groups)
            .into_iter()
            .enumerate()
            .map(|(shard, groups)| {
                assert!(groups.iter().all(|g| g.shard().index() == shard), "a node holds its shard's groups only");
                Some(Node::new(io.clone(), config.clone(), groups, owners.clone(), drops[shard].clone()))
            })
            .collect();
        ShardNodes {
            nodes,
            placement,
            inbound: drops.iter().map(|d| LocalInbox::new(INBOUND_FRAMES_MAX, d.clone())).collect(),
            outbound: drops.iter().map(|d| LocalInbox::new(OUTBOUND_FRAMES_MAX, d.clone())).collect(),
            drain_at_ns: vec![None; drops.len()],
            drain_place: vec![None; drops.len()],
        }
    }

    /// Every group of the cluster (across the shards).
    pub(super) fn group_count(&self) -> usize {
        self.placement.places.len()
    }

    /// Group `group` (the cluster's index). Its shard's node must not be
    /// borrowed by a call.
    pub(super) fn group(&self, group: usize) -> &Group<SimIo> {
        self.try_group(group).expect("the group's node is not in a call")
    }

    /// Group `group`, unless a call borrows its shard's node.
    pub(super) fn try_group(&self, group: usize) -> Option<&Group<SimIo>> {
        let (shard, local) = self.placement.place(group);
        self.nodes[shard.index()].as_ref().map(|node| node.group(local))
    }

    pub(super) fn node(&self, shard: ShardId) -> Option<&Node<SimIo>> {
        self.nodes[shard.index()].as_ref()
    }

    pub(super) fn node_mut(&mut self, shard: ShardId) -> Option<&mut Node<SimIo>> {
        self.nodes[shard.index()].as_mut()
    }

    fn take(&mut self, shard: ShardId) -> Option<Node<SimIo>> {
        self.nodes[shard.index()].take()
    }

    fn put(&mut self, shard: ShardId, node: Node<SimIo>) {
        assert!(self.nodes[shard.index()].is_none(), "one node per shard");
        self.nodes[shard.index()] = Some(node);
    }

    /// Some shard's node has a flush's fsync running.
    pub(super) fn flushes_in_flight(&self) -> bool {
        self.nodes.iter().flatten().any(Node::flushes_in_flight)
    }

    /// Frames waiting in the inboxes.
    pub(super) fn queued(&self) -> u64 {
        self.inbound.iter().chain(&self.outbound).map(|inbox| inbox.len() as u64).sum()
    }

    /// The process is gone: close every inbox, and count each frame still
    /// queued as dropped `closed` (the inbox counts it), so that none is
    /// lost uncounted. Returns how many were.
    fn shut_down(&self) -> u64 {
        let mut dropped = 0;
        for inbox in self.inbound.iter().chain(&self.outbound) {
            inbox.close();
            while let Some(frame) = inbox.try_recv() {
                inbox.drops().bump(frame.variant(), DropReason::Closed);
                dropped += 1;
            }
        }
        debug_assert_eq!(self.queued(), 0);
        dropped
    }
}

/// A frame's body, as a `ShardFrame` carries it.
fn frame_body(message: &Message) -> Vec<u8> {
    message.body.to_vec()
}

/// A message again, from a frame a shard took from an inbox: its header and
/// body were sealed by the sender, as the server's connection decoder has
/// verified them before a frame enters an inbox.
fn frame_message(header: Header, body: Vec<u8>) -> Message {
    Message::from_verified_frame(header, Rc::from(body))
}

fn connection_id(client: u128) -> u64 {
    u64::try_from(client).expect("simulated client ids are small")
}

impl Cluster {
    /// A shard channel fault: only between the shards of a process of
    /// several (one shard has nothing to hop between).
    fn roll_shard_fault(&mut self, ppm: u32, kind: &str) -> bool {
        self.shard_count.get() > 1 && self.roll(ppm, kind)
    }

    /// A frame reached `replica` from `from` on the connection one of its
    /// shards holds: that shard's connection callback routes it (the real
    /// pump) into the inbound inbox of the shard whose node runs its group,
    /// which takes it now or, while the process is busy, once it is free.
    pub(super) fn hop_in(&mut self, replica: u8, from: Endpoint, message: Message) {
        let index = replica as usize;
        let (frame, arrival) = match from {
            Endpoint::Replica(peer) => {
                let arrival =
                    self.nodes[index].owners.owner(peer).expect("a running process is connected to every peer");
                (ShardFrame::Consensus { peer, header: message.header, body: frame_body(&message) }, arrival)
            }
            Endpoint::Client(client) => {
                let arrival = self.client_shard(client);
                let connection_id = connection_id(CLIENT_ID_BASE + u128::from(client));
                let body = frame_body(&message);
                (
                    ShardFrame::ClientForward { connection_id, origin_shard: arrival, header: message.header, body },
                    arrival,
                )
            }
        };
        let variant = frame.variant();
        let full = self.roll_shard_fault(self.config.faults.shard_inbox_full_ppm, "shard_inbox_full");
        self.frames_offered += 1;
        let process = &self.nodes[index];
        let shards = process.node.as_ref().expect("a frame reaches a running process only");
        for inbox in &shards.inbound {
            inbox.set_full(full);
        }
        // A rejection is counted by the inbox (its shard's drops), a route
        // error by the pump in the drops of the connection's shard.
        let dispatched = pump::dispatch(frame, &shards.inbound, self.shard_count, &process.drops[arrival.index()]);
        for inbox in &shards.inbound {
            inbox.set_full(false);
        }
        match dispatched {
            Ok(target) => {
                if target != arrival {
                    marks::hit(marks::SHARD_FRAME_CROSSED_IN);
                }
                if self.busy_until(replica).is_some() || self.nodes[index].paused_until_ns.is_some() {
                    marks::hit(marks::SHARD_FRAME_WAITED_IN_INBOX);
                }
                self.drain(replica, target);
            }
            Err(reason) => self.on_hop_dropped(replica, arrival, variant, reason),
        }
    }

    /// Shard `shard` of `replica` takes the frames waiting in its inbound
    /// inbox, one at a time while the process is free (the server's shard
    /// loop); once it is busy with its storage the rest wait, a turn opens
    /// that they will join, and a `Drain` takes them when it is free.
    pub(super) fn drain(&mut self, replica: u8, shard: ShardId) {
        let index = replica as usize;
        loop {
            let process = &self.nodes[index];
            let Some(shards) = process.node.as_ref().filter(|_| process.up) else { return };
            if shards.inbound[shard.index()].is_empty() {
                return;
            }
            if let Some(until) = process.paused_until_ns {
                return self.schedule_drain(replica, shard, until.max(self.now_ns) + 1);
            }
            if let Some(until) = self.busy_until(replica) {
                self.open_turn_at(replica, shard, until);
                return self.schedule_drain(replica, shard, until + 1);
            }
            let frame = shards.inbound[shard.index()].try_recv().expect("the inbox holds a frame");
            // Served: a wait after this frame starts at the back of the line.
            if let Some(shards) = self.nodes[index].node.as_mut() {
                shards.drain_place[shard.index()] = None;
            }
            let variant = frame.variant();
            if self.delivery_dropped(replica, shard, variant) {
                continue;
            }
            let drops = self.nodes[index].drops[shard.index()].clone();
            match pump::deliver(frame, shard, self.shard_count, &drops) {
                Delivery::Accepted(frame) => {
                    self.frames_delivered += 1;
                    self.deliver_to_node(replica, shard, frame);
                }
                Delivery::Dropped(reason) => self.on_hop_dropped(replica, shard, variant, reason),
            }
        }
    }

    /// A `Drain` of `replica`'s shard `shard` at `at_ns`, unless one is
    /// queued no later (a drain that finds the process busy queues the next).
    fn schedule_drain(&mut self, replica: u8, shard: ShardId, at_ns: u64) {
        assert!(at_ns > self.now_ns, "a drain waits for something");
        let Some(shards) = self.nodes[replica as usize].node.as_mut() else { return };
        let queued = &mut shards.drain_at_ns[shard.index()];
        if queued.is_some_and(|queued_ns| queued_ns <= at_ns) {
            return;
        }
        *queued = Some(at_ns);
        let place = match shards.drain_place[shard.index()] {
            Some(place) => place,
            None => {
                self.sequence += 1;
                shards.drain_place[shard.index()] = Some(self.sequence);
                self.sequence
            }
        };
        // Unique: this shard's other queued drain, if any, is at another time.
        let replaced = self.queue.insert((at_ns, place), Event::Drain(replica, shard));
        debug_assert!(replaced.is_none(), "one drain per shard at a time");
    }

    /// The `Drain` event: the shard takes what waited for it.
    pub(super) fn on_drain(&mut self, replica: u8, shard: ShardId) {
        if let Some(shards) = self.nodes[replica as usize].node.as_mut() {
            shards.drain_at_ns[shard.index()] = None;
        }
        self.drain(replica, shard);
    }

    /// Hand a frame shard `shard` took from its inbox to its node.
    fn deliver_to_node(&mut self, replica: u8, shard: ShardId, frame: ShardFrame) {
        let index = replica as usize;
        let (source, arrival, header, body) = match frame {
            ShardFrame::Consensus { peer, header, body } => {
                // The connection's shard (the owner table's); it is this
                // life's, as every frame in this life's inboxes.
                let arrival = self.nodes[index].owners.owner(peer).unwrap_or(shard);
                (Source::Replica(peer), arrival, header, body)
            }
            ShardFrame::ClientForward { connection_id, origin_shard, header, body } => {
                (Source::Client(u128::from(connection_id)), origin_shard, header, body)
            }
            other => unreachable!("only frames read on connections enter an inbound inbox: {other:?}"),
        };
        let message = frame_message(header, body);
        self.maybe_begin_turn(replica, shard);
        let routed = self.with_node(replica, shard, |node, world, armed| {
            let io = node.io().clone();
            block_on_io(&io, node.on_frame(source, arrival, message, world), armed)
        });
        if let Some(Routed::NamespaceMiss { shard, consensus_control: true }) = routed {
            let detail = format!(
                "replica {replica}: VSR frame {:?} for namespace {:#x} reached shard {}, which runs no group for it; \
                 VSR would retransmit it the same way and the group would wedge",
                header.command, header.namespace, shard.0
            );
            self.fail(Checker::Routing, detail);
        }
    }

    /// A group on shard `from` of `replica` sends `frame` out through the
    /// connection shard `via` holds (`via != from`): it hops into `via`'s
    /// outbound inbox (a reply by the pump's route, its origin shard; a
    /// peer's frame straight to the owner table's shard), and `via` writes
    /// it to its connection at once.
    pub(super) fn hop_out(&mut self, replica: u8, from: ShardId, via: ShardId, frame: ShardFrame) {
        assert_ne!(from, via, "a frame for the sending shard's own connection does not hop");
        let index = replica as usize;
        let variant = frame.variant();
        let full = self.roll_shard_fault(self.config.faults.shard_inbox_full_ppm, "shard_inbox_full");
        self.frames_offered += 1;
        let process = &self.nodes[index];
        let shards = process.node.as_ref().expect("a running process sends");
        let inbox = &shards.outbound[via.index()];
        inbox.set_full(full);
        let sent = match frame {
            reply @ ShardFrame::ClientReply { .. } => {
                pump::dispatch(reply, &shards.outbound, self.shard_count, &process.drops[from.index()])
            }
            frame => inbox.try_send(frame).map(|()| via).map_err(|error| error.reason()),
        };
        inbox.set_full(false);
        match sent {
            Ok(shard) => {
                assert_eq!(shard, via, "a frame goes out through the connection's shard");
                marks::hit(marks::SHARD_FRAME_CROSSED_OUT);
                self.drain_outbound(replica, via);
            }
            Err(reason) => self.on_hop_dropped(replica, via, variant, reason),
        }
    }

    /// Shard `via` writes the frames other shards handed it to its
    /// connections (the server's outbound task: it runs beside the shard's
    /// storage, so at once).
    fn drain_outbound(&mut self, replica: u8, via: ShardId) {
        let index = replica as usize;
        loop {
            let Some(shards) = self.nodes[index].node.as_ref() else { return };
            let Some(frame) = shards.outbound[via.index()].try_recv() else { return };
            let variant = frame.variant();
            if self.delivery_dropped(replica, via, variant) {
                continue;
            }
            let drops = self.nodes[index].drops[via.index()].clone();
            match frame {
                ShardFrame::Consensus { peer, header, body } => {
                    if self.nodes[index].owners.owner(peer) != Some(via) {
                        drops.bump(variant, DropReason::ConsensusMisroute);
                        self.on_hop_dropped(replica, via, variant, DropReason::ConsensusMisroute);
                        continue;
                    }
                    self.frames_delivered += 1;
                    self.send(Endpoint::Replica(replica), Endpoint::Replica(peer), frame_message(header, body));
                }
                reply @ ShardFrame::ClientReply { .. } => match pump::deliver(reply, via, self.shard_count, &drops) {
                    Delivery::Accepted(ShardFrame::ClientReply { connection_id, header, body, .. }) => {
                        self.frames_delivered += 1;
                        let client = u128::from(connection_id) - CLIENT_ID_BASE;
                        let client = u32::try_from(client).expect("simulated client ids are small");
                        self.send(Endpoint::Replica(replica), Endpoint::Client(client), frame_message(header, body));
                    }
                    Delivery::Accepted(other) => unreachable!("the pump hands back the frame it took: {other:?}"),
                    Delivery::Dropped(reason) => self.on_hop_dropped(replica, via, variant, reason),
                },
                other => unreachable!("only a group's sends enter an outbound inbox: {other:?}"),
            }
        }
    }

    /// The fault injector loses the frame `shard` just took from an inbox
    /// (the *delivery drop* fault): counted `injected` on that shard.
    fn delivery_dropped(&mut self, replica: u8, shard: ShardId, variant: FrameVariant) -> bool {
        if !self.roll_shard_fault(self.config.faults.shard_delivery_drop_ppm, "shard_delivery_drop") {
            return false;
        }
        self.nodes[replica as usize].drops[shard.index()].bump(variant, DropReason::Injected);
        self.on_hop_dropped(replica, shard, variant, DropReason::Injected);
        true
    }

    /// A hop dropped a frame on its way to shard `shard` (already counted
    /// in `frame_drops_total`). A VSR frame dropped for any reason but a
    /// full or closed inbox or an injected loss would be dropped the same
    /// way again at every retransmission: the group wedges.
    fn on_hop_dropped(&mut self, replica: u8, shard: ShardId, variant: FrameVariant, reason: DropReason) {
        self.record(Some(replica), "frame_drop", u64::from(shard.0), reason as u64, || {
            format!("{} frame for shard {}: {}", variant.name(), shard.0, reason.name())
        });
        if !matches!(reason, DropReason::InboxFull | DropReason::Closed | DropReason::Injected) {
            let detail = format!(
                "replica {replica}: a {} frame was dropped on its hop to shard {} ({}); only a full or closed \
                 inbox or an injected fault may drop one",
                variant.name(),
                shard.0,
                reason.name()
            );
            self.fail(Checker::Routing, detail);
        }
    }

    /// `replica`'s process is gone: its shards' inboxes close, and what
    /// waited in them is counted as dropped.
    pub(super) fn shut_down_shards(&mut self, replica: u8) {
        let Some(shards) = self.nodes[replica as usize].node.as_ref() else { return };
        let dropped = shards.shut_down();
        if dropped > 0 {
            self.record(Some(replica), "inboxes_closed", dropped, 0, String::new);
        }
    }

    /// Every frame offered to an inbox was delivered, is still queued, or
    /// is counted in `frame_drops_total` with a hop's reason (every reason
    /// but those of the node itself: a namespace its shard does not run, a
    /// peer no shard is connected to).
    pub(super) fn check_frame_accounting(&mut self) {
        let hop_dropped: u64 = self
            .nodes
            .iter()
            .flat_map(|process| &process.drops)
            .flat_map(|drops| drops.snapshot())
            .filter(|((_, reason), _)| !matches!(reason, DropReason::NamespaceMiss | DropReason::UnknownReplica))
            .map(|(_, count)| count)
            .sum();
        let queued: u64 = self
            .nodes
            .iter()
            .filter(|process| process.up)
            .filter_map(|process| process.node.as_ref())
            .map(ShardNodes::queued)
            .sum();
        if self.frames_offered != self.frames_delivered + hop_dropped + queued {
            let detail = format!(
                "frame accounting: {} frames offered to shard inboxes, {} delivered, {queued} still queued, but \
                 frame_drops_total counts {hop_dropped} dropped on a hop (expected {})",
                self.frames_offered,
                self.frames_delivered,
                self.frames_offered.saturating_sub(self.frames_delivered + queued)
            );
            self.fail(Checker::Routing, detail);
        }
    }
}

impl Cluster {
    /// Run `f` on shard `shard`'s node of `replica` with this cluster as its
    /// world (see `world::with_node`): the node is taken out of its slot
    /// for the call and put back after.
    pub(super) fn take_node(&mut self, replica: u8, shard: ShardId) -> Option<Node<SimIo>> {
        self.nodes[replica as usize].node.as_mut()?.take(shard)
    }

    pub(super) fn put_node(&mut self, replica: u8, shard: ShardId, node: Node<SimIo>) {
        self.nodes[replica as usize].node.as_mut().expect("a process stays up during its node's call").put(shard, node);
    }
}
