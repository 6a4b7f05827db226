//! A full pipeline holds requests instead of dropping them.

use shoal_vsr::header::Command;

use crate::harness::{Cluster, client, register_clients};

#[test]
fn a_request_behind_a_full_pipeline_waits_and_commits_without_a_retry() {
    let mut cluster = Cluster::new(3);
    let clients = 9;
    for index in 0..clients {
        cluster.register(client(index), 0);
        cluster.deliver_all();
    }
    // Every client's append reaches the primary before any prepare_ok comes
    // back: eight fill the pipeline, the ninth waits behind them.
    for index in 0..clients {
        cluster.append(client(index), 0, 1, format!("m{index}").as_bytes());
    }
    cluster.deliver_where(|e| e.command() == Command::Request);
    let drops = &cluster.replica(0).stats().drops;
    assert_eq!(drops.get("pipeline_full"), None, "{drops:?}");
    assert_eq!(drops.get("request_queue_full"), None, "{drops:?}");
    assert!(!cluster.replied(client(clients - 1), 1));
    // The pipeline drains; the queued request is prepared and committed
    // with no retry from its client.
    cluster.deliver_all();
    for index in 0..clients {
        assert!(cluster.replied(client(index), 1), "client {index} got its reply");
    }
}

/// Past the queue bound the primary says "busy" at once (the client need
/// not wait out its retry timeout), and the same request, sent again once
/// the pipeline drained, commits once.
#[test]
fn past_the_request_queue_bound_the_primary_answers_busy_and_the_same_request_commits_later() {
    use shoal_vsr::header::Refusal;
    use shoal_vsr::replica::{PIPELINE_PREPARES_MAX, REQUEST_QUEUE_MAX};

    let clients = (PIPELINE_PREPARES_MAX + REQUEST_QUEUE_MAX + 1) as u32;
    let mut cluster = Cluster::with_sessions(3, clients as usize);
    register_clients(&mut cluster, 0, clients);
    for index in 0..clients {
        cluster.append(client(index), 0, 1, format!("m{index}").as_bytes());
    }
    cluster.deliver_where(|e| e.command() == Command::Request);
    let last = client(clients - 1);
    let refusals: Vec<_> = cluster.replies.iter().filter(|(_, h)| h.command == Command::Refused).collect();
    assert_eq!(refusals.len(), 1, "only the request past the bound is refused: {refusals:?}");
    let (refused_client, refusal) = refusals[0];
    assert_eq!((*refused_client, refusal.request), (last, 1));
    assert_eq!(Refusal::from_code(refusal.context), Some(Refusal::Busy));
    assert_eq!(cluster.replica(0).stats().drops.get("request_queue_full"), Some(&1));
    cluster.deliver_all();
    assert!(!cluster.replied(last, 1), "a refused request is not prepared");
    cluster.append(last, 0, 1, b"m-last");
    cluster.deliver_all();
    assert!(cluster.replied(last, 1), "the same request number commits once the queue has room");
    for index in 0..clients - 1 {
        assert!(cluster.replied(client(index), 1), "client {index} got its reply");
    }
}
