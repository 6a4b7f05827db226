//! Three real `shoal-server` processes on loopback, driven by the real client
//! through crashes (`kill -9`) and restarts, then checked from their data
//! dirs by a checker of this test's own: every acknowledged append is in
//! every replica's partition log, at its acknowledged offset, exactly once,
//! in acknowledgement order. (Not the simulator's checkers: this one reads
//! only the files the servers left.)

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use shoal_client::Client;
use shoal_runtime::DriverChoice;
use shoal_shard::namespace::Namespace;
use shoal_shard::node::partition_dir;
use shoal_shard::partition_log::{PartitionLog, PartitionLogConfig};

use crate::process::{Cluster, REPLICA_COUNT};
use crate::support::with_io;

const PARTITIONS: u32 = 4;
/// How long replicas get to exchange what a restarted one missed before the
/// data dirs are read; checked again (bounded) if one still lags.
const SETTLE: Duration = Duration::from_secs(3);
const SETTLE_ROUNDS_MAX: usize = 4;

/// Acknowledged appends per partition, in acknowledgement order.
type Acks = BTreeMap<u32, Vec<(u64, Vec<u8>)>>;

fn append_round(client: &mut Client, acks: &mut Acks, round: &str, count: usize) {
    for i in 0..count {
        let partition = (i as u32) % PARTITIONS;
        let payload = format!("{round}-{i}").into_bytes();
        let offset = client
            .append(Namespace::partition(1, 1, partition).unwrap(), &payload)
            .unwrap_or_else(|error| panic!("append {round}-{i}: {error}"));
        acks.entry(partition).or_default().push((offset, payload));
    }
}

/// Every message of one partition log in a stopped replica's data dir.
fn read_log(data_dir: &Path, partition: u32) -> Vec<(u64, Vec<u8>)> {
    let namespace = Namespace::partition(1, 1, partition).unwrap().raw();
    let dir = partition_dir(data_dir, namespace);
    let messages = std::cell::RefCell::new(Vec::new());
    with_io(DriverChoice::Auto, |io| async {
        let log = PartitionLog::open(io, &dir, PartitionLogConfig::default()).await.unwrap();
        let mut read = Vec::new();
        loop {
            let batch = log.read(read.len() as u64, 1024).await.unwrap();
            if batch.is_empty() {
                break;
            }
            read.extend(batch);
        }
        *messages.borrow_mut() = read;
    });
    messages.into_inner()
}

/// What is wrong with one replica's logs against the acks (empty: nothing).
fn check_replica(index: usize, data_dir: &Path, acks: &Acks) -> Vec<String> {
    let mut problems = Vec::new();
    for (partition, acked) in acks {
        let log = read_log(data_dir, *partition);
        for window in acked.windows(2) {
            if window[0].0 >= window[1].0 {
                problems.push(format!("partition {partition}: acks out of order: {:?}", (window[0].0, window[1].0)));
            }
        }
        for (offset, payload) in acked {
            match log.get(*offset as usize) {
                Some((at, message)) if *at == *offset && message == payload => {}
                other => problems.push(format!(
                    "replica {index} partition {partition}: acked offset {offset} holds {:?}, not {:?}",
                    other.map(|(at, m)| (at, String::from_utf8_lossy(m).into_owned())),
                    String::from_utf8_lossy(payload)
                )),
            }
            let copies = log.iter().filter(|(_, message)| message == payload).count();
            if copies > 1 {
                problems.push(format!("replica {index} partition {partition}: {copies} copies of one append"));
            }
        }
    }
    problems
}

#[test]
fn three_replicas_keep_every_acknowledged_append_through_crashes_and_restarts() {
    let mut cluster = Cluster::format("cluster");
    cluster.start_all();
    let mut admin = cluster.client(1);
    admin.create_stream(1, "orders").unwrap();
    admin.create_topic(1, 1, "events", PARTITIONS).unwrap();

    let mut client = cluster.client(2);
    let mut acks = Acks::new();
    append_round(&mut client, &mut acks, "healthy", 16);
    let metrics = cluster.scrape(0);
    assert!(metrics.contains("shoal_commits_total"), "{metrics}");

    cluster.crash(2); // a backup of view 0
    append_round(&mut client, &mut acks, "backup-down", 16);
    cluster.start(2);
    cluster.crash(0); // the primary of view 0: a view change follows
    append_round(&mut client, &mut acks, "primary-down", 16);
    cluster.start(0);
    append_round(&mut client, &mut acks, "all-back", 16);

    cluster.stop_all();
    cluster.start_all();
    append_round(&mut client, &mut acks, "after-full-restart", 8);

    for round in 0..SETTLE_ROUNDS_MAX {
        std::thread::sleep(SETTLE);
        cluster.stop_all();
        let problems: Vec<String> = (0..usize::from(REPLICA_COUNT))
            .flat_map(|index| check_replica(index, &cluster.replicas[index].data_dir, &acks))
            .collect();
        if problems.is_empty() {
            return;
        }
        assert!(round + 1 < SETTLE_ROUNDS_MAX, "after {SETTLE_ROUNDS_MAX} rounds:\n{}", problems.join("\n"));
        cluster.start_all();
    }
}
