//! Bad input from the network: dropped with a counted reason, never applied,
//! never a panic.

use std::rc::Rc;

use proptest::prelude::*;
use shoal_vsr::header::{Command, Header, Operation};
use shoal_vsr::message::Message;
use shoal_vsr::replica::{Replica, ReplicaConfig, Source};
use shoal_vsr::state_machine::AppendLog;

const CLUSTER: u128 = 77;
const NAMESPACE: u64 = (1 << 40) | (1 << 20) | 1;

fn backup() -> Replica<AppendLog> {
    let config = ReplicaConfig {
        cluster: CLUSTER,
        namespace: NAMESPACE,
        replica: 1,
        replica_count: 3,
        journal_slot_count: 64,
        checkpoint_interval_ops: 16,
        seed: 1,
        client_sessions_max: shoal_vsr::sessions::CLIENT_SESSIONS_MAX,
        message_size_max_bytes: shoal_vsr::header::MESSAGE_SIZE_MAX_BYTES,
        pipeline_prepares_max: shoal_vsr::replica::PIPELINE_PREPARES_MAX,
        checkpoint_chunks_per_answer_max: shoal_vsr::state_transfer::CHECKPOINT_CHUNKS_PER_ANSWER_MAX,
    };
    Replica::new(config, AppendLog::default())
}

fn prepare_from_primary(op: u64) -> Message {
    let mut header = Header::new(Command::Prepare, CLUSTER);
    header.namespace = NAMESPACE;
    header.replica = 0;
    header.op = op;
    header.operation = Operation::SendMessages;
    header.client = 5;
    header.request = 1;
    Message::new(header, Rc::from(b"payload".to_vec()))
}

fn drops(replica: &Replica<AppendLog>, reason: &str) -> u64 {
    replica.stats().drops.get(reason).copied().unwrap_or(0)
}

fn assert_untouched(replica: &mut Replica<AppendLog>) {
    assert_eq!(replica.op(), 0);
    assert_eq!(replica.commit_min(), 0);
    assert!(replica.take_committed().is_empty());
}

#[test]
fn corrupt_body_is_dropped_as_bad_checksum() {
    let mut replica = backup();
    let mut message = prepare_from_primary(1);
    let mut body = message.body.to_vec();
    body[0] ^= 1;
    message.body = shoal_vsr::message::Body::from(body);
    replica.on_message(Source::Replica(0), message);
    assert_eq!(drops(&replica, "bad_checksum"), 1);
    assert_untouched(&mut replica);
}

#[test]
fn another_clusters_message_is_dropped() {
    let mut replica = backup();
    let mut header = prepare_from_primary(1).header;
    header.cluster = CLUSTER + 1;
    replica.on_message(Source::Replica(0), Message::new(header, Rc::from(b"payload".to_vec())));
    assert_eq!(drops(&replica, "wrong_cluster"), 1);
    assert_untouched(&mut replica);
}

#[test]
fn a_client_posing_as_a_replica_is_dropped() {
    let mut replica = backup();
    replica.on_message(Source::Client(5), prepare_from_primary(1));
    assert_eq!(drops(&replica, "client_posing_as_replica"), 1);
    assert_untouched(&mut replica);
}

#[test]
fn a_replica_index_out_of_range_is_dropped() {
    let mut replica = backup();
    let mut header = Header::new(Command::Commit, CLUSTER);
    header.namespace = NAMESPACE;
    header.replica = 9;
    header.commit = 1;
    replica.on_message(Source::Replica(9), Message::empty(header));
    assert_eq!(drops(&replica, "replica_id_mismatch"), 1);
    assert_untouched(&mut replica);
}

#[test]
fn impossible_ops_are_dropped() {
    let mut replica = backup();
    replica.on_message(Source::Replica(0), prepare_from_primary(0));
    assert_eq!(drops(&replica, "impossible_op"), 1);
    // Far past the journal, with no chain to vouch for it.
    replica.on_message(Source::Replica(0), prepare_from_primary(1_000_000));
    assert_eq!(drops(&replica, "prepare_not_vouched"), 1);
    assert_untouched(&mut replica);
}

#[test]
fn a_commit_from_a_future_view_is_not_applied() {
    let mut replica = backup();
    let mut header = Header::new(Command::Commit, CLUSTER);
    header.namespace = NAMESPACE;
    header.replica = 0;
    header.view = 3;
    header.commit = 50;
    replica.on_message(Source::Replica(0), Message::empty(header));
    assert_untouched(&mut replica);
    assert_eq!(replica.view(), 0, "a commit alone never moves the view");
}

fn arbitrary_message() -> impl Strategy<Value = (u8, Header, Vec<u8>)> {
    (
        0u8..4,
        prop::sample::select(Command::ALL),
        prop::sample::select(Operation::ALL),
        any::<[u64; 6]>(),
        0u8..4,
        prop::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(from, command, operation, words, replica, mut body)| {
            let lists_headers =
                matches!(command, Command::StartView | Command::DoViewChange | Command::Checkpoint | Command::Headers);
            if lists_headers && !body.is_empty() {
                // Well-formed header lists, so the view change paths run.
                let headers: Vec<Header> = body
                    .iter()
                    .take(4)
                    .map(|byte| {
                        let mut prepare = Header::new(Command::Prepare, CLUSTER);
                        prepare.namespace = NAMESPACE;
                        prepare.op = u64::from(*byte % 40);
                        prepare.parent = u128::from(*byte);
                        prepare.set_checksums(&[]);
                        prepare
                    })
                    .collect();
                body = shoal_vsr::message::encode_headers(&headers);
            }
            let mut header = Header::new(command, CLUSTER);
            header.namespace = NAMESPACE;
            header.operation = operation;
            header.view = words[0] % 8;
            header.op = words[1] % 200;
            header.commit = words[2] % 200;
            header.context = words[3] % 8;
            header.parent = u128::from(words[4]);
            header.client = u128::from(words[5] % 3);
            header.replica = replica;
            (from, header, body)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]
    /// Whatever a peer or client sends (well-formed checksums, arbitrary
    /// fields and bodies), a replica never panics and keeps its invariants.
    #[test]
    fn arbitrary_messages_never_panic(messages in prop::collection::vec(arbitrary_message(), 1..40)) {
        let mut replica = backup();
        let mut now_ns = 0;
        for (from, header, body) in messages {
            let source = if from == 3 { Source::Client(header.client.max(1)) } else { Source::Replica(from) };
            replica.on_message(source, Message::new(header, Rc::from(body)));
            now_ns += 10_000_000;
            replica.tick(now_ns);
            let _ = replica.take_actions();
            prop_assert!(replica.commit_min() <= replica.commit_max());
        }
    }
}

/// A packed prepare whose checksums are right but whose body breaks the
/// packed layout (a buggy or hostile primary) is refused with a counted
/// reason before it reaches the log: `apply` never meets it.
#[test]
fn a_malformed_packed_prepare_is_dropped() {
    use shoal_vsr::packed::{self, PackedRequest};

    let requests = [
        PackedRequest { client: 5, session: 1, request: 1, operation: Operation::SendMessages, body: b"a" },
        PackedRequest { client: 6, session: 1, request: 1, operation: Operation::SendMessages, body: b"b" },
    ];
    let mut body = packed::encode(&requests);
    body.pop();
    let mut header = prepare_from_primary(1).header;
    header.operation = Operation::Packed;
    header.client = 0;
    let mut replica = backup();
    replica.on_message(Source::Replica(0), Message::new(header, Rc::from(body)));
    assert_eq!(drops(&replica, "malformed_packed_prepare"), 1);
    assert_untouched(&mut replica);
}
