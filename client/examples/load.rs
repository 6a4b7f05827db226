//! A quick loopback load: `clients` threads, each its own `Client` (one
//! session, one request in flight), append `batches` batches of `batch`
//! messages of `size` bytes to partition `1/1/(thread % partitions)`; prints
//! messages/s and per-request latency percentiles. The cluster must already
//! run and have stream 1, topic 1 (the first client creates them).
//!
//! cargo run --release -p shoal-client --example load -- \
//!     ADDR0,ADDR1,ADDR2 CLUSTER CLIENTS BATCHES BATCH SIZE PARTITIONS
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a load generator is the real world

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shoal_client::{Client, ClientConfig, ClientError};
use shoal_shard::namespace::Namespace;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addresses, cluster, clients, batches, batch, size, partitions] = &args[..] else {
        eprintln!("usage: load ADDR,... CLUSTER CLIENTS BATCHES BATCH SIZE PARTITIONS");
        std::process::exit(1);
    };
    let addresses: Vec<SocketAddr> = addresses.split(',').map(|a| a.parse().expect("host:port")).collect();
    let cluster: u128 = cluster.parse().expect("cluster id");
    let (clients, batches, batch, size, partitions): (u64, u64, usize, usize, u32) = (
        clients.parse().unwrap(),
        batches.parse().unwrap(),
        batch.parse().unwrap(),
        size.parse().unwrap(),
        partitions.parse().unwrap(),
    );
    let config = || {
        let mut config = ClientConfig::new(cluster, addresses.clone());
        config.tick = Duration::from_millis(2);
        config.retry_timeout_ticks = 500;
        config.request_timeout_ticks = 5_000;
        config
    };
    // Every client draws a random id: a reused one would start its request
    // numbers again inside a session the cluster still holds.
    let mut admin = Client::new(config()).unwrap();
    match admin.create_stream(1, "load") {
        Ok(()) | Err(ClientError::Rejected { .. }) => {}
        Err(error) => panic!("create stream: {error}"),
    }
    match admin.create_topic(1, 1, "load", partitions) {
        Ok(()) | Err(ClientError::Rejected { .. }) => {}
        Err(error) => panic!("create topic: {error}"),
    }
    // The partition groups open on every replica once the topic commits.
    std::thread::sleep(Duration::from_millis(500));
    // The clock starts once every client registered (registration after a
    // cluster starts can take seconds of view changes).
    let ready = std::sync::Arc::new(std::sync::Barrier::new(clients as usize));
    let threads: Vec<_> = (0..clients)
        .map(|index| {
            let config = config();
            let ready = ready.clone();
            std::thread::spawn(move || {
                let mut client = Client::new(config).unwrap();
                let partition = Namespace::partition(1, 1, (index % u64::from(partitions)) as u32).unwrap();
                let messages: Vec<Vec<u8>> = (0..batch).map(|i| vec![(i % 251) as u8; size]).collect();
                // Warm up: register the session.
                client.append_batch(partition, &messages[..1]).unwrap();
                ready.wait();
                let started = Instant::now();
                let mut latencies = Vec::with_capacity(batches as usize);
                for _ in 0..batches {
                    let sent = Instant::now();
                    client.append_batch(partition, &messages).unwrap();
                    latencies.push(sent.elapsed());
                }
                (latencies, started.elapsed())
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut elapsed = Duration::ZERO;
    for thread in threads {
        let (mine, took) = thread.join().unwrap();
        latencies.extend(mine);
        elapsed = elapsed.max(took);
    }
    latencies.sort();
    let percentile = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let messages = clients * batches * batch as u64;
    println!(
        "{clients} clients x {batches} batches x {batch} msgs x {size} B: {messages} msgs in {:.2} s = {:.0} msg/s, \
         {:.1} MB/s; request latency p50 {:?} p99 {:?} max {:?}",
        elapsed.as_secs_f64(),
        messages as f64 / elapsed.as_secs_f64(),
        (messages as f64 * size as f64) / elapsed.as_secs_f64() / 1e6,
        percentile(0.50),
        percentile(0.99),
        latencies.last().unwrap()
    );
}
