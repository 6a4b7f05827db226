//! Packed prepares: a primary whose pipeline is full packs the queued
//! requests of several clients into one op, and each request is applied
//! (or filtered by its session) and answered exactly as if it were alone.

use shoal_vsr::header::{Command, Operation};
use shoal_vsr::packed;

use crate::harness::{Cluster, client, register_clients};

/// The clients of each packed prepare in `r`'s journal, by op.
fn packed_prepares(cluster: &Cluster, r: u8) -> Vec<(u64, Vec<u128>)> {
    cluster.disks[r as usize]
        .journal
        .values()
        .filter(|(header, _)| header.operation == Operation::Packed)
        .map(|(header, body)| {
            let requests = packed::decode(body).expect("a journaled packed prepare decodes");
            (header.op, requests.iter().map(|request| request.client).collect())
        })
        .collect()
}

fn replies_to(cluster: &Cluster, client: u128, request: u64) -> Vec<u64> {
    cluster
        .replies
        .iter()
        .filter(|(c, h)| *c == client && h.request == request && h.command == Command::Reply)
        .map(|(_, h)| h.op)
        .collect()
}

#[test]
fn queued_requests_of_four_clients_commit_in_one_prepare_each_with_its_own_reply() {
    let mut cluster = Cluster::with_pipeline(3, 64, 2);
    register_clients(&mut cluster, 0, 6);
    for index in 0..6 {
        cluster.append(client(index), 0, 1, format!("m{index}").as_bytes());
    }
    // Two fill the pipeline; the other four wait in the queue.
    cluster.deliver_where(|e| e.command() == Command::Request);
    assert_eq!(cluster.replica(0).pipeline_len(), 2);
    cluster.deliver_all();
    let packs = packed_prepares(&cluster, 0);
    assert_eq!(packs.len(), 1, "{packs:?}");
    let (op, clients) = &packs[0];
    assert_eq!(clients, &(2..6).map(client).collect::<Vec<_>>(), "packed in queue order");
    for index in 0..6 {
        let ops = replies_to(&cluster, client(index), 1);
        assert_eq!(ops.len(), 1, "client {index}: one reply, not {ops:?}");
        if index >= 2 {
            assert_eq!(ops[0], *op, "client {index} is answered from the packed op");
        }
    }
    // Every message once, in prepare order, on every replica.
    cluster.run(&[0, 1, 2], 10);
    let expected: Vec<Vec<u8>> = (0..6).map(|index| format!("m{index}").into_bytes()).collect();
    for r in 0..3 {
        assert_eq!(cluster.replica(r).state_machine().messages, expected, "replica {r}");
    }
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}

/// A register packed before another client's request can evict that
/// client: the request after it in the same op is then not applied, as it
/// would not be in an op of its own, and its client learns of the eviction.
#[test]
fn a_request_packed_after_the_register_that_evicts_its_client_is_not_applied() {
    let mut cluster = Cluster::with_pipeline(3, 2, 1);
    let (a, b, c) = (client(0), client(1), client(2));
    register_clients(&mut cluster, 0, 2);
    // B's request makes A the least recently committed session.
    cluster.append(b, 0, 1, b"b1");
    cluster.deliver_all();
    // B's next request fills the pipeline; C's register and A's request queue.
    cluster.append(b, 0, 2, b"b2");
    cluster.deliver_where(|e| e.command() == Command::Request);
    cluster.register(c, 0);
    cluster.append(a, 0, 1, b"a1");
    cluster.deliver_where(|e| e.command() == Command::Request);
    cluster.deliver_all();
    assert_eq!(
        packed_prepares(&cluster, 0).iter().map(|(_, clients)| clients.clone()).collect::<Vec<_>>(),
        [vec![c, a]]
    );
    assert!(cluster.replica(0).sessions().get(a).is_none(), "C's register evicted A");
    assert!(cluster.replica(0).sessions().get(c).is_some());
    assert!(replies_to(&cluster, a, 1).is_empty(), "A's request was not applied, so not answered");
    assert_eq!(cluster.replica(0).state_machine().messages, [b"b1".to_vec(), b"b2".to_vec()]);
    // A retries: the primary tells it its session is gone.
    cluster.append(a, 0, 1, b"a1");
    cluster.deliver_all();
    assert!(cluster.replies.iter().any(|(to, h)| *to == a && h.command == Command::Eviction && h.request == 1));
}

/// A retry of a request that already committed is answered from the
/// session table when it leaves the queue: it never enters a pack.
#[test]
fn a_queued_retry_of_a_committed_request_gets_the_cached_reply_and_is_not_packed() {
    let mut cluster = Cluster::with_pipeline(3, 64, 1);
    register_clients(&mut cluster, 0, 4);
    cluster.append(client(0), 0, 1, b"first");
    cluster.deliver_all();
    // Client 1 fills the pipeline; client 0's retry and clients 2, 3 queue.
    cluster.append(client(1), 0, 1, b"m1");
    cluster.deliver_where(|e| e.command() == Command::Request);
    cluster.append(client(0), 0, 1, b"first");
    cluster.append(client(2), 0, 1, b"m2");
    cluster.append(client(3), 0, 1, b"m3");
    cluster.deliver_where(|e| e.command() == Command::Request);
    cluster.deliver_all();
    let packs: Vec<Vec<u128>> = packed_prepares(&cluster, 0).into_iter().map(|(_, clients)| clients).collect();
    assert_eq!(packs, [vec![client(2), client(3)]]);
    let first = replies_to(&cluster, client(0), 1);
    assert_eq!(first.len(), 2, "the original reply and the resent one");
    assert_eq!(first[0], first[1], "the resent reply names the op that applied it");
    let expected: Vec<Vec<u8>> = [&b"first"[..], b"m1", b"m2", b"m3"].iter().map(|m| m.to_vec()).collect();
    assert_eq!(cluster.replica(0).state_machine().messages, expected);
}

/// Requests that arrive in one turn of the driver share one op even with
/// room in the pipeline: the first no longer takes an op of its own.
#[test]
fn requests_of_one_turn_are_packed_into_one_prepare_though_the_pipeline_has_room() {
    let mut cluster = Cluster::with_pipeline(3, 64, 4);
    register_clients(&mut cluster, 0, 5);
    let op_before = cluster.replica(0).op();
    cluster.begin_turn(0);
    for index in 0..5 {
        cluster.append(client(index), 0, 1, format!("m{index}").as_bytes());
    }
    cluster.deliver_where(|e| e.command() == Command::Request);
    assert_eq!(cluster.replica(0).pipeline_len(), 0, "nothing is prepared inside the turn");
    assert_eq!(cluster.replica(0).request_queue_len(), 5);
    cluster.end_turn(0);
    assert_eq!(cluster.replica(0).op(), op_before + 1, "one op for the turn's five requests");
    assert_eq!(cluster.replica(0).request_queue_len(), 0);
    cluster.deliver_all();
    let packs = packed_prepares(&cluster, 0);
    assert_eq!(packs, vec![(op_before + 1, (0..5).map(client).collect::<Vec<_>>())], "in arrival order");
    for index in 0..5 {
        assert_eq!(replies_to(&cluster, client(index), 1), vec![op_before + 1], "client {index}");
    }
    cluster.run(&[0, 1, 2], 10);
    let expected: Vec<Vec<u8>> = (0..5).map(|index| format!("m{index}").into_bytes()).collect();
    for r in 0..3 {
        assert_eq!(cluster.replica(r).state_machine().messages, expected, "replica {r}");
    }
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
}

/// A backup's turn defers nothing it could prepare: a request that reaches
/// it is dropped (it is not the primary) and the queue stays empty.
#[test]
fn a_turn_on_a_backup_queues_nothing() {
    let mut cluster = Cluster::with_pipeline(3, 64, 4);
    register_clients(&mut cluster, 0, 1);
    cluster.begin_turn(1);
    cluster.append(client(0), 1, 1, b"to a backup");
    cluster.deliver_where(|e| e.command() == Command::Request);
    cluster.end_turn(1);
    assert_eq!(cluster.replica(1).request_queue_len(), 0);
    assert!(!cluster.replica(1).requests_deferred());
    assert!(!cluster.replied(client(0), 1));
}
