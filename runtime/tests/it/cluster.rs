//! Three real `shoal-server` processes on loopback, driven by the real client
//! through crashes (`kill -9`) and restarts, then checked from their data
//! dirs by a checker of this test's own: every acknowledged append is in
//! every replica's partition log, at its acknowledged offset, exactly once,
//! in acknowledgement order. (Not the simulator's checkers: this one reads
//! only the files the servers left.)

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use shoal_client::{Client, ClientError};
use shoal_runtime::DriverChoice;
use shoal_shard::namespace::Namespace;
use shoal_shard::node::partition_dir;
use shoal_shard::owner_table::{ShardCount, ShardId};
use shoal_shard::partition_log::{PartitionLog, PartitionLogConfig};
use shoal_shard::router::route_partition;

use crate::process::{Cluster, REPLICA_COUNT, sample};
use crate::support::with_io;

const PARTITIONS: u32 = 4;
/// How long replicas get to exchange what a restarted one missed before the
/// data dirs are read; checked again (bounded) if one still lags.
const SETTLE: Duration = Duration::from_secs(3);
const SETTLE_ROUNDS_MAX: usize = 4;
/// How long every replica's groups get to report a commit in their metrics
/// (a restarted replica catches up, its status is sampled every tick).
const CONVERGE: Duration = Duration::from_secs(30);

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

/// Start every replica, create stream 1 with topic 1 of `PARTITIONS`
/// partitions through an admin client, and return the appending client
/// (client 2) with no acknowledgements yet.
fn start_with_topic(cluster: &mut Cluster) -> (Client, Acks) {
    cluster.start_all();
    let mut admin = cluster.client(1);
    admin.create_stream(1, "orders").unwrap();
    admin.create_topic(1, 1, "events", PARTITIONS).unwrap();
    (cluster.client(2), Acks::new())
}

/// Let the replicas converge, stop them all, and check every acknowledged
/// append on each one's disk; a round that finds a lagging replica starts
/// the cluster again, up to `SETTLE_ROUNDS_MAX` rounds. Leaves it stopped.
fn settle_then_check_every_replica(cluster: &mut Cluster, acks: &Acks) {
    for round in 0..SETTLE_ROUNDS_MAX {
        std::thread::sleep(SETTLE);
        cluster.stop_all();
        let problems: Vec<String> = (0..usize::from(REPLICA_COUNT))
            .flat_map(|index| check_replica(index, &cluster.replicas[index].data_dir, acks))
            .collect();
        if problems.is_empty() {
            return;
        }
        assert!(round + 1 < SETTLE_ROUNDS_MAX, "after {SETTLE_ROUNDS_MAX} rounds:\n{}", problems.join("\n"));
        cluster.start_all();
    }
}

#[test]
fn three_replicas_keep_every_acknowledged_append_through_crashes_and_restarts() {
    let mut cluster = Cluster::format("cluster");
    let (mut client, mut acks) = start_with_topic(&mut cluster);
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

    settle_then_check_every_replica(&mut cluster, &acks);
}

/// A running replica's partition log takes damage behind its back (a
/// byte of its first record flipped through the file system, as rot or a
/// misdirected write would leave it): its scrubber (on by default) finds
/// it and the process stops with the typed error; restarted, it salvages
/// the log, fetches the rest from its peers, and holds every acknowledged
/// append again.
#[test]
fn a_replica_whose_running_partition_log_is_damaged_stops_and_comes_back_whole() {
    use shoal_shard::partition_log::{SEGMENT_HEADER_SIZE_BYTES, segment_file_name};
    /// How long the scrubber (1 MiB/s per shard, a group per tick) may take
    /// to reach the damaged record.
    const SCRUB_FINDS_WITHIN: Duration = Duration::from_secs(20);

    let mut cluster = Cluster::format("scrub");
    let (mut client, mut acks) = start_with_topic(&mut cluster);
    append_round(&mut client, &mut acks, "before", 24);
    let namespace = Namespace::partition(1, 1, 0).unwrap().raw();
    let segment = partition_dir(&cluster.replicas[2].data_dir, namespace).join(segment_file_name(0));
    let mut bytes = std::fs::read(&segment).expect("replica 2 wrote partition 0");
    let first_record_byte = SEGMENT_HEADER_SIZE_BYTES as usize + 30;
    assert!(bytes.len() > first_record_byte, "partition 0 holds records on replica 2");
    bytes[first_record_byte] ^= 1;
    std::fs::write(&segment, &bytes).unwrap();

    let status = cluster.wait_for_exit(2, SCRUB_FINDS_WITHIN).expect("the scrubber found the damage and stopped it");
    assert!(!status.success(), "a replica stopped by damage exits with an error: {status}");
    append_round(&mut client, &mut acks, "while-down", 8);
    cluster.start(2);
    append_round(&mut client, &mut acks, "after", 8);
    settle_then_check_every_replica(&mut cluster, &acks);
}

/// Appends to one partition's group only, so that group's log runs ahead.
fn append_to_one_partition(client: &mut Client, acks: &mut Acks, partition: u32, round: &str, count: usize) {
    for i in 0..count {
        let payload = format!("{round}-{i}").into_bytes();
        let offset = client
            .append(Namespace::partition(1, 1, partition).unwrap(), &payload)
            .unwrap_or_else(|error| panic!("append {round}-{i}: {error}"));
        acks.entry(partition).or_default().push((offset, payload));
    }
}

/// The smallest message size the server accepts (4 KiB) leaves no room in
/// one frame for a view change's headers (up to 33 of 256 bytes) or for a
/// group's checkpoint: replicas must still change views (the do_view_change
/// and start_view frames may take `VIEW_FRAME_SIZE_MAX_BYTES`) and bring a
/// replica that fell a whole journal behind back by a chunked state
/// transfer, over real TCP.
#[test]
fn at_the_smallest_message_size_views_change_and_a_replica_a_journal_behind_catches_up() {
    let mut cluster = Cluster::format("small-frames");
    cluster.message_size_max_bytes = shoal_runtime::config::MESSAGE_SIZE_MIN_BYTES;
    let (mut client, mut acks) = start_with_topic(&mut cluster);
    append_round(&mut client, &mut acks, "healthy", 8);

    cluster.crash(2);
    // More ops in partition 0's group than its journal holds (128 slots,
    // a checkpoint every 64): replica 2 can only catch up from a checkpoint.
    append_to_one_partition(&mut client, &mut acks, 0, "ahead", 200);
    cluster.start(2);
    cluster.crash(0); // the primary of view 0: a view change at 4 KiB frames
    append_round(&mut client, &mut acks, "primary-down", 16);
    cluster.start(0);
    append_round(&mut client, &mut acks, "all-back", 8);

    settle_then_check_every_replica(&mut cluster, &acks);
}

/// A client set for larger requests than the replicas take (the default
/// 1 MiB against their 16 KiB) learns their limit from their hello: an
/// append past it is refused by the client at once, naming the replicas'
/// limit, where before it was sent, the replica closed the connection on
/// it, and the client resent it until it timed out (30 s here) with "the
/// cluster may have no quorum" (`bench server` with batches of 80 KiB
/// against 64 KiB replicas, session 35). The client goes on appending.
#[test]
fn a_request_past_the_replicas_message_size_max_is_refused_by_the_client_with_their_limit() {
    let mut cluster = Cluster::format("request-too-large");
    let (mut client, mut acks) = start_with_topic(&mut cluster);
    append_round(&mut client, &mut acks, "before", 4);
    let limit_bytes = cluster.message_size_max_bytes;
    assert!(limit_bytes < client_default_message_size_max(), "the client's own setting allows the request");
    let error =
        client.append_batch(Namespace::partition(1, 1, 0).unwrap(), &[vec![7u8; limit_bytes as usize]]).unwrap_err();
    assert!(matches!(error, ClientError::RequestTooLarge { max_bytes, .. } if max_bytes == limit_bytes), "{error}");
    append_round(&mut client, &mut acks, "after", 4);
    assert_eq!(acks.values().map(Vec::len).sum::<usize>(), 8);
}

fn client_default_message_size_max() -> u32 {
    shoal_client::ClientConfig::new(crate::process::CLUSTER, Vec::new()).message_size_max_bytes
}

/// The shard of a replica process that runs partition `partition`'s group.
fn partition_shard(partition: u32, shards: usize) -> ShardId {
    route_partition(Namespace::partition(1, 1, partition).unwrap(), ShardCount::new(shards).unwrap())
}

/// Why replica `index`'s groups have not all reached `commit_min` on the
/// shard each hashes to (empty: they have), from one metrics scrape.
fn lagging_groups(cluster: &Cluster, index: usize, shard_of: &BTreeMap<u32, ShardId>, commit_min: u64) -> Vec<String> {
    let scrape = match cluster.try_scrape(index) {
        Ok(scrape) => scrape,
        Err(error) => return vec![format!("replica {index}: no metrics yet ({error})")],
    };
    let mut lagging = Vec::new();
    for (partition, shard) in shard_of {
        let namespace = Namespace::partition(1, 1, *partition).unwrap().raw();
        let series = format!("shoal_group_commit{{namespace=\"{namespace:#x}\",shard=\"{}\"}}", shard.0);
        match sample(&scrape, &series) {
            Some(commit) if commit >= commit_min => {}
            other => lagging.push(format!("replica {index}: {series} is {other:?}, want >= {commit_min}")),
        }
    }
    for shard in 0..cluster.shards {
        let series = format!("shoal_shard_commits_total{{shard=\"{shard}\"}}");
        if sample(&scrape, &series).unwrap_or(0) == 0 {
            lagging.push(format!("replica {index}: {series} is 0"));
        }
    }
    lagging
}

fn wait_for_commits(cluster: &Cluster, shard_of: &BTreeMap<u32, ShardId>, commit_min: u64) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let lagging: Vec<String> = (0..usize::from(REPLICA_COUNT))
            .flat_map(|index| lagging_groups(cluster, index, shard_of, commit_min))
            .collect();
        if lagging.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "after {CONVERGE:?}:\n{}", lagging.join("\n"));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Replica connections each replica's two shards hold by the pair rule
/// (`host::connection_shard`: the pair a-b on shard (a + b) % 2 at both
/// ends): replica 0 holds 0-2 on shard 0 and 0-1 on shard 1, replica 1
/// both of its pairs on shard 1, replica 2 0-2 on shard 0 and 1-2 on shard 1.
const REPLICA_CONNECTIONS_BY_SHARD: [[u64; 2]; 3] = [[1, 1], [0, 2], [1, 1]];

/// How replica connections, and the clients on primary 0 (client ids 2
/// and 3: shards 0 and 1 by `id % 2`), differ from the pair rule (empty:
/// they match), from one scrape per replica.
fn connection_gaps(cluster: &Cluster) -> Vec<String> {
    let mut gaps = Vec::new();
    for (index, expected) in REPLICA_CONNECTIONS_BY_SHARD.iter().enumerate() {
        let scrape = match cluster.try_scrape(index) {
            Ok(scrape) => scrape,
            Err(error) => {
                gaps.push(format!("replica {index}: no metrics ({error})"));
                continue;
            }
        };
        for (shard, want) in expected.iter().enumerate() {
            let series = format!("shoal_shard_connections{{shard=\"{shard}\",peer=\"replica\"}}");
            let held = sample(&scrape, &series).unwrap_or(0);
            if held != *want {
                gaps.push(format!("replica {index}: {series} is {held}, want {want}"));
            }
            let series = format!("shoal_shard_connections{{shard=\"{shard}\",peer=\"client\"}}");
            if index == 0 && sample(&scrape, &series).unwrap_or(0) == 0 {
                gaps.push(format!("replica 0: {series} is 0, want a client"));
            }
        }
    }
    gaps
}

fn wait_for_connections(cluster: &Cluster) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let gaps = connection_gaps(cluster);
        if gaps.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "after {CONVERGE:?}:\n{}", gaps.join("\n"));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_shards_per_replica_each_hold_connections_and_commit_the_partition_groups_hashed_to_them() {
    let mut cluster = Cluster::format("shards");
    cluster.shards = 2;
    let shard_of: BTreeMap<u32, ShardId> = (0..PARTITIONS).map(|p| (p, partition_shard(p, cluster.shards))).collect();
    for shard in [ShardId(0), ShardId(1)] {
        assert!(shard_of.values().any(|&s| s == shard), "the topic's partitions cover both shards: {shard_of:?}");
    }
    // Client 2 lands on shard 0 of each replica, client 3 on shard 1: the
    // replies of every partition group reach both, so they hop both ways.
    let (mut even, mut acks) = start_with_topic(&mut cluster);
    let mut odd = cluster.client(3);
    // Every group, on whichever shard it runs, commits on every replica:
    // two registers and 4 appends each.
    append_round(&mut even, &mut acks, "healthy", 2 * PARTITIONS as usize);
    append_round(&mut odd, &mut acks, "healthy-odd", 2 * PARTITIONS as usize);
    wait_for_commits(&cluster, &shard_of, 6);
    wait_for_connections(&cluster);

    // kill -9: the survivors' connections to it close (the gauges fall),
    // and the restarted process dials and is dialled on the same shards,
    // reopens each shard's groups from its disk and catches up on both.
    cluster.crash(2);
    append_round(&mut even, &mut acks, "backup-down", 2 * PARTITIONS as usize);
    append_round(&mut odd, &mut acks, "backup-down-odd", 2 * PARTITIONS as usize);
    cluster.start(2);
    append_round(&mut even, &mut acks, "all-back", 2 * PARTITIONS as usize);
    append_round(&mut odd, &mut acks, "all-back-odd", 2 * PARTITIONS as usize);
    wait_for_commits(&cluster, &shard_of, 14);
    wait_for_connections(&cluster);

    cluster.stop_all();
    let problems: Vec<String> = (0..usize::from(REPLICA_COUNT))
        .flat_map(|index| check_replica(index, &cluster.replicas[index].data_dir, &acks))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Wait (bounded) until each of `replicas` reports every partition group
/// on its shard in its metrics.
fn wait_for_groups(cluster: &Cluster, replicas: &[usize], shard_of: &BTreeMap<u32, ShardId>) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let missing: Vec<String> = replicas
            .iter()
            .flat_map(|&index| {
                let scrape = cluster.try_scrape(index).unwrap_or_default();
                shard_of
                    .iter()
                    .map(|(partition, shard)| {
                        let namespace = Namespace::partition(1, 1, *partition).unwrap().raw();
                        format!("shoal_group_commit{{namespace=\"{namespace:#x}\",shard=\"{}\"}}", shard.0)
                    })
                    .filter(|series| sample(&scrape, series).is_none())
                    .map(|series| format!("replica {index}: no {series}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "after {CONVERGE:?}:\n{}", missing.join("\n"));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How long a stale replica and a wiped one run alone before the third
/// returns: several view-change timeouts, so two voters would have elected
/// a view by then.
const ALONE: Duration = Duration::from_secs(3);

#[test]
fn a_replica_whose_disk_was_lost_rejoins_and_cannot_deny_what_it_acknowledged() {
    let mut cluster = Cluster::format("rejoin");
    let shard_of: BTreeMap<u32, ShardId> = (0..PARTITIONS).map(|p| (p, partition_shard(p, cluster.shards))).collect();
    let (mut client, mut acks) = start_with_topic(&mut cluster);
    append_round(&mut client, &mut acks, "all-up", 4 * PARTITIONS as usize);

    // Replica 1 misses a round that replicas 0 and 2 acknowledge; then 2
    // loses its disk (the only other copy) and is formatted again for the
    // existing cluster.
    cluster.crash(1);
    append_round(&mut client, &mut acks, "one-down", 4 * PARTITIONS as usize);
    cluster.crash(0);
    cluster.crash(2);
    cluster.wipe_and_format_rejoining(2);
    // The stale replica and the wiped one alone: had 2 come back as a voter
    // with an empty log, they would elect a view without "one-down" and the
    // acknowledged appends would be overwritten. Rejoining, 2 waits.
    cluster.start(1);
    cluster.start(2);
    std::thread::sleep(ALONE);
    cluster.start(0);
    // A replica answers "no such partition" until its metadata group has
    // committed the topic again, and the client takes that answer from a
    // majority as final: wait until 0 and 1 host every partition group.
    wait_for_groups(&cluster, &[0, 1], &shard_of);
    append_round(&mut client, &mut acks, "all-back", 4 * PARTITIONS as usize);
    // Every group of the wiped replica (metadata, then each partition its
    // catalogue names, formatted rejoining) catches up: a register and 12
    // appends per partition.
    wait_for_commits(&cluster, &shard_of, 13);

    // Now it is needed for a quorum: the cluster keeps committing with it.
    cluster.crash(1);
    append_round(&mut client, &mut acks, "needs-rejoined", 2 * PARTITIONS as usize);
    cluster.start(1);

    // A topic created after the rejoin is new on every replica, the wiped
    // one too: created and written while replica 0 (view 0's primary of
    // every new group) is down, its groups need a view change between 1
    // and 2. Had 2 formatted them rejoining, it would take no part in it
    // and no append below would commit.
    cluster.crash(0);
    let mut admin = cluster.client(4);
    admin.create_topic(1, 2, "later", PARTITIONS).unwrap();
    for partition in 0..PARTITIONS {
        let namespace = Namespace::partition(1, 2, partition).unwrap();
        admin
            .append(namespace, b"after-the-rejoin")
            .unwrap_or_else(|error| panic!("append to topic 2 partition {partition}: {error}"));
    }
    cluster.start(0);

    settle_then_check_every_replica(&mut cluster, &acks);
}

/// The metadata group's commit on `index`'s disk (its superblock's).
fn metadata_commit_on_disk(cluster: &Cluster, index: usize) -> u64 {
    let dir = cluster.replicas[index].data_dir.clone();
    let commit = std::rc::Rc::new(std::cell::Cell::new(0));
    let read = commit.clone();
    with_io(DriverChoice::Auto, |io| async move {
        let namespace = Namespace::METADATA.raw();
        let mode = shoal_vsr::io::OpenMode::ReadOnly;
        let superblock =
            shoal_vsr::superblock::Superblock::open(&io, &dir, crate::process::CLUSTER, namespace, index as u8, mode)
                .await
                .unwrap();
        read.set(superblock.state().commit);
    });
    commit.get()
}

/// Swarm seed 295 (session 17): a replica whose metadata journal lost a
/// committed op refused every start (shard 0's start-up replay stopped the
/// server with "must repair its metadata group from peers"), while its
/// peers held the op. Now it starts with the committed prefix below the
/// loss, its metadata group repairs the op from the peers, its catalogue
/// catches up and its shards host every partition again, and the cluster
/// commits with it when it is needed for a quorum.
#[test]
fn a_replica_whose_metadata_journal_lost_a_committed_op_starts_and_repairs_it() {
    let mut cluster = Cluster::format("metadata-loss");
    let shard_of: BTreeMap<u32, ShardId> = (0..PARTITIONS).map(|p| (p, partition_shard(p, cluster.shards))).collect();
    let (mut client, mut acks) = start_with_topic(&mut cluster);
    append_round(&mut client, &mut acks, "all-up", 2 * PARTITIONS as usize);
    // View changes write the voters' superblocks with their commit: the
    // metadata ops (register, stream, topic) end up committed on a disk.
    for (round, down) in [0usize, 1, 2].into_iter().enumerate() {
        cluster.crash(down);
        let name = format!("after-view-change-{round}");
        cluster.client(5 + round as u128).create_stream(2 + round as u32, &name).unwrap();
        cluster.start(down);
        wait_for_groups(&cluster, &[down], &shard_of);
    }
    cluster.stop_all();
    let commits: Vec<u64> =
        (0..usize::from(REPLICA_COUNT)).map(|index| metadata_commit_on_disk(&cluster, index)).collect();
    let damaged = commits.iter().position(|&commit| commit >= 2).unwrap_or_else(|| {
        panic!("no replica's superblock has committed metadata op 2 (commits {commits:?}): the story needs one")
    });
    // Op 2 (the stream's creation) loses its slot there; its ring copy
    // still names it, so it is a faulty op below the commit.
    let journal = shoal_vsr::journal::journal_path(&cluster.replicas[damaged].data_dir, Namespace::METADATA.raw());
    let offset = shoal_shard::handoff::metadata_journal_config(crate::process::CLUSTER).slot_offset(2) as usize;
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[offset..offset + 512].fill(0);
    std::fs::write(&journal, bytes).unwrap();
    cluster.start_all();
    wait_for_groups(&cluster, &[damaged], &shard_of);
    // It is needed for a quorum now: the cluster commits with it.
    let other = (damaged + 1) % usize::from(REPLICA_COUNT);
    cluster.crash(other);
    append_round(&mut client, &mut acks, "needs-the-damaged-replica", 2 * PARTITIONS as usize);
    cluster.start(other);
    settle_then_check_every_replica(&mut cluster, &acks);
}
