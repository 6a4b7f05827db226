//! A full pipeline holds requests instead of dropping them.

use shoal_vsr::header::Command;

use crate::harness::{Cluster, client};

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
