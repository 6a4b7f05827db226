//! A replica whose state machine cannot yet hold every applied op (a
//! partition whose log has a state-transfer hole: the messages after it wait
//! in memory) must not make a checkpoint durable: the checkpoint lets the
//! journal forget those ops, and a crash would then lose acknowledged
//! messages on this replica (disk-rot seeds 3788, 3859, 4313: two replicas
//! with such holes checkpointed past messages kept only in memory, the third
//! was down, all crashed, and no disk held offsets 241..336 any more).

use std::cell::Cell;
use std::rc::Rc;

use shoal_vsr::header::{Command, Header, Operation};
use shoal_vsr::message::Message;
use shoal_vsr::replica::{Action, Replica, Source};
use shoal_vsr::state_machine::{AppendLog, SnapshotError, StateMachine};

use crate::harness::{CHECKPOINT_INTERVAL_OPS, CLUSTER, NAMESPACE, client, config};

/// An `AppendLog` whose durable storage has a hole until `ready` is set.
struct Gated {
    log: AppendLog,
    ready: Rc<Cell<bool>>,
}

impl StateMachine for Gated {
    fn apply(&mut self, op: u64, operation: Operation, body: &[u8], timestamp: u64) -> Vec<u8> {
        self.log.apply(op, operation, body, timestamp)
    }
    fn snapshot(&self) -> Vec<u8> {
        self.log.snapshot()
    }
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        self.log.restore(snapshot)
    }
    fn checkpoint_ready(&self) -> bool {
        self.ready.get()
    }
}

/// A one-replica cluster: every request commits once its prepare is durable.
struct Solo {
    replica: Replica<Gated>,
    session: u64,
    checkpoints: Vec<u64>,
}

impl Solo {
    fn request(&mut self, request: u64, operation: Operation, body: &[u8]) {
        let mut header = Header::new(Command::Request, CLUSTER);
        header.namespace = NAMESPACE;
        header.client = client(0);
        header.context = self.session;
        header.request = request;
        header.operation = operation;
        self.replica.on_message(Source::Client(client(0)), Message::new(header, Rc::from(body.to_vec())));
        self.drain();
    }

    fn drain(&mut self) {
        for _ in 0..64 {
            let actions = self.replica.take_actions();
            self.replica.take_committed();
            if actions.is_empty() {
                return;
            }
            for action in actions {
                match action {
                    Action::WritePrepare { message } => {
                        self.replica.on_prepare_durable(message.header.op, message.header.checksum)
                    }
                    Action::Reply { message, .. } if message.header.operation == Operation::Register => {
                        self.session = message.header.context;
                    }
                    Action::Checkpoint { checkpoint } => {
                        self.checkpoints.push(checkpoint.anchor.op);
                        self.replica.on_checkpoint_durable(checkpoint.anchor.op);
                    }
                    _ => {}
                }
            }
        }
        panic!("the replica kept asking for actions");
    }
}

#[test]
fn a_replica_defers_its_checkpoint_while_its_state_cannot_hold_the_ops() {
    let ready = Rc::new(Cell::new(false));
    let gated = Gated { log: AppendLog::default(), ready: ready.clone() };
    let mut solo = Solo { replica: Replica::new(config(0, 1, 1), gated), session: 0, checkpoints: Vec::new() };
    for _ in 0..8 {
        solo.replica.tick(0);
        solo.drain();
    }
    solo.request(0, Operation::Register, &[]);
    assert_ne!(solo.session, 0, "registered");
    // Past the checkpoint interval, with the state unable to hold the ops.
    for request in 1..=CHECKPOINT_INTERVAL_OPS + 4 {
        solo.request(request, Operation::SendMessages, b"m");
    }
    assert!(solo.replica.commit_min() > CHECKPOINT_INTERVAL_OPS, "the ops committed");
    assert_eq!(solo.checkpoints, Vec::<u64>::new(), "no checkpoint over ops the state cannot hold");
    assert_eq!(solo.replica.checkpoint_op(), 0, "the journal keeps every op since the last checkpoint");
    // A full journal: the next request is refused, so no commit retries
    // the checkpoint; the tick must.
    let held_through = solo.replica.commit_min();
    let mut refused = None;
    for request in CHECKPOINT_INTERVAL_OPS + 5..64 {
        let before = solo.replica.commit_min();
        solo.request(request, Operation::SendMessages, b"m");
        if solo.replica.commit_min() == before {
            refused = Some(request);
            break;
        }
    }
    let refused = refused.expect("the journal fills up");
    let full = solo.replica.commit_min();
    assert!(full < 64, "the journal bounds the ops kept past the checkpoint: {full}");
    ready.set(true);
    solo.replica.tick(0);
    solo.drain();
    assert_eq!(solo.checkpoints, vec![full], "the tick makes the deferred checkpoint");
    solo.checkpoints.clear();
    assert!(full > held_through);
    // Requests are taken again.
    solo.request(refused, Operation::SendMessages, b"m");
    assert!(solo.replica.commit_min() > full, "the journal has room again");
}
