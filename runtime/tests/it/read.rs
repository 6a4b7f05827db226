//! Reads over the wire from three real `shoal-server` processes: every
//! acknowledged append is read back from each replica, at its acknowledged
//! offset, in order, exactly once; and the typed answers for what cannot be
//! read (no such partition, an offset past the committed end).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shoal_client::{Client, ClientConfig, ClientError, READS_IN_FLIGHT_MAX, ReadAnswer};
use shoal_shard::namespace::Namespace;

use crate::process::{CLUSTER, Cluster, REPLICA_COUNT};

const PARTITIONS: u32 = 2;
const BATCHES: usize = 24;
/// How long a replica may lag behind the acknowledgements before the test
/// gives up on it (a backup learns of commits from the next prepare or the
/// primary's commit heartbeat).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);

fn partition(index: u32) -> Namespace {
    Namespace::partition(1, 1, index).unwrap()
}

/// Read `partition` from `replica`, from offset 0 until `end`, waiting for a
/// lagging replica to commit; every message with its offset, as read.
fn read_all(client: &mut Client, replica: u8, partition: Namespace, end: u64) -> Vec<(u64, Vec<u8>)> {
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    let mut read = Vec::new();
    while (read.len() as u64) < end {
        let offset = read.len() as u64;
        match client.read(partition, replica, offset, 1000).unwrap() {
            ReadAnswer::Messages { first_offset, committed_end, messages } => {
                assert_eq!(first_offset, offset, "replica {replica} answered from the offset asked");
                assert!(first_offset + messages.len() as u64 <= committed_end);
                for (index, message) in messages.into_iter().enumerate() {
                    read.push((first_offset + index as u64, message));
                }
            }
            ReadAnswer::OffsetBeyondEnd { committed_end } | ReadAnswer::Unavailable { committed_end } => {
                assert!(Instant::now() < deadline, "replica {replica} stays at committed end {committed_end} < {end}");
                std::thread::sleep(Duration::from_millis(20));
            }
            // A backup that lags may not have committed the topic's creation,
            // or may still be opening its partitions (a journal open reads
            // every slot twice: the page cache's pass, then the device's).
            ReadAnswer::PartitionMissing => {
                assert!(Instant::now() < deadline, "replica {replica} never opened partition {partition:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!("replica {replica} answered {other:?} for offset {offset}"),
        }
    }
    read
}

#[test]
fn every_acknowledged_append_reads_back_from_each_replica_in_order_exactly_once() {
    let mut cluster = Cluster::format("read");
    cluster.start_all();
    let mut admin = cluster.client(1);
    admin.create_stream(1, "orders").unwrap();
    admin.create_topic(1, 1, "events", PARTITIONS).unwrap();

    let mut client = cluster.client(2);
    let mut acks: BTreeMap<u32, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    for batch in 0..BATCHES {
        let index = batch as u32 % PARTITIONS;
        // Sizes vary so that one read answer holds some, not all.
        let messages: Vec<Vec<u8>> = (0..1 + batch % 7)
            .map(|m| format!("b{batch}-m{m}-{}", "x".repeat(batch * 97 % 3000)).into_bytes())
            .collect();
        let reply = client.append_batch(partition(index), &messages).unwrap();
        for (offset, message) in reply.offsets().zip(messages) {
            acks.entry(index).or_default().push((offset, message));
        }
        // Read-your-write: the primary that acknowledged it serves it at once.
        let (offset, message) = acks[&index].last().unwrap().clone();
        let primary = (0..REPLICA_COUNT)
            .find(|&replica| {
                matches!(client.read(partition(index), replica, offset, 1).unwrap(), ReadAnswer::Messages { .. })
            })
            .expect("some replica has committed an acknowledged append");
        let ReadAnswer::Messages { messages, .. } = client.read(partition(index), primary, offset, 1).unwrap() else {
            unreachable!()
        };
        assert_eq!(messages, [message]);
    }

    for (index, acked) in &acks {
        assert!(acked.windows(2).all(|w| w[0].0 + 1 == w[1].0), "acks are dense and in order: {acked:?}");
        let end = acked.last().unwrap().0 + 1;
        for replica in 0..REPLICA_COUNT {
            let read = read_all(&mut client, replica, partition(*index), end);
            assert_eq!(read.len(), acked.len(), "replica {replica} partition {index}");
            for ((offset, message), (read_offset, read_message)) in acked.iter().zip(&read) {
                assert_eq!(offset, read_offset);
                assert!(message == read_message, "replica {replica} partition {index} offset {offset} differs");
            }
            match client.read(partition(*index), replica, end, 10).unwrap() {
                ReadAnswer::OffsetBeyondEnd { committed_end } => assert_eq!(committed_end, end),
                other => panic!("past the end: {other:?}"),
            }
        }
    }
    for replica in 0..REPLICA_COUNT {
        assert_eq!(client.read(partition(PARTITIONS + 5), replica, 0, 10).unwrap(), ReadAnswer::PartitionMissing);
    }

    // Many reads in flight at once: each answer pairs with its own read.
    let acked = &acks[&0];
    let in_flight = acked.len().min(READS_IN_FLIGHT_MAX);
    let mut sent = BTreeMap::new();
    for (offset, message) in acked.iter().take(in_flight).rev() {
        let read_id = client.send_read(partition(0), 1, *offset, 1).unwrap();
        sent.insert(read_id, (*offset, message.clone()));
    }
    if in_flight == READS_IN_FLIGHT_MAX {
        assert!(matches!(client.send_read(partition(0), 1, 0, 1), Err(ClientError::ReadsInFlightFull { .. })));
    }
    while client.reads_in_flight() > 0 {
        let (read_id, answer) = client.next_read_answer().unwrap();
        let (offset, message) = sent.remove(&read_id).expect("an answer names a read sent");
        match answer {
            ReadAnswer::Messages { first_offset, messages, .. } => {
                assert_eq!((first_offset, messages), (offset, vec![message]));
            }
            other => panic!("read {read_id} of offset {offset}: {other:?}"),
        }
    }
    assert!(sent.is_empty(), "every read was answered once");

    // An append to a partition that does not exist is refused once a
    // majority kept saying so for the partition-missing wait (a replica
    // behind the topic's creation says the same), not left to the request
    // timeout (30 s here).
    let config = cluster.client_config(2);
    let missing_wait = config.tick * u32::try_from(config.partition_missing_wait_ticks).unwrap();
    let started = Instant::now();
    match client.append(partition(PARTITIONS + 5), b"nowhere") {
        Err(ClientError::PartitionMissing { .. }) => {}
        other => panic!("an append to a missing partition: {other:?}"),
    }
    let refused_after = started.elapsed();
    assert!(refused_after >= missing_wait, "refused in {refused_after:?}, before the wait of {missing_wait:?}");
    assert!(refused_after < missing_wait + Duration::from_secs(5), "refused in {refused_after:?}");

    // Clients with the default config draw their ids: a new one after
    // another is not mistaken for it (a reused id used to hang).
    let mut first = Client::new(ClientConfig::new(CLUSTER, cluster.client_addresses.clone())).unwrap();
    first.append(partition(0), b"first").unwrap();
    let mut second = Client::new(ClientConfig::new(CLUSTER, cluster.client_addresses.clone())).unwrap();
    assert_ne!(first.id(), second.id());
    let started = Instant::now();
    second.append(partition(0), b"second").unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "appended in {:?}", started.elapsed());
    cluster.stop_all();
}
