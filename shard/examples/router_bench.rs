//! Router and shard-world throughput.
//!
//! 1. Frames routed per second by one shard thread: `route` + `LocalInbox`
//!    `try_send` / `try_recv` + `pump::deliver`, over a mixed frame set, for
//!    N = 1, 2, 4, 8 shards. Bounded iterations.
//! 2. Simulation speed of the shard world (`shoal_sim::shards`) with swarm
//!    faults: seeds per second and frames per second, for N = 1, 2, 4, 8.
//!
//! Run: `cargo run --release -p shoal-shard --example router_bench`.
//! Wall-clock time is what a benchmark measures, so the determinism bans are
//! lifted here (and only here).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::sync::Arc;
use std::time::Instant;

use shoal_shard::{FrameDrops, LocalInbox, Namespace, ShardCount, ShardFrame, ShardId, ShardSender, pump, route};
use shoal_vsr::{Command, Header, Operation};

const ROUTE_FRAMES_TOTAL: u64 = 4_000_000;
const FRAME_SET_SIZE: usize = 1024;
const INBOX_CAPACITY: usize = 1024;
const SIM_SEEDS_PER_ROW: u64 = 60;

fn frame_set() -> Vec<ShardFrame> {
    let commands = [
        Command::Prepare,
        Command::PrepareOk,
        Command::Commit,
        Command::StartViewChange,
        Command::DoViewChange,
        Command::StartView,
        Command::Ping,
    ];
    (0..FRAME_SET_SIZE)
        .map(|i| {
            let i = i as u32;
            let mut header = Header::new(commands[i as usize % commands.len()], 1);
            match i % 4 {
                0 => {
                    header.namespace = Namespace::METADATA.raw();
                }
                1 => {
                    header.namespace = 0;
                }
                _ => {
                    header.operation = Operation::SendMessages;
                    header.namespace = Namespace::partition(1 + i % 7, 1 + i % 3, i % 64).expect("valid ids").raw();
                }
            }
            if i.is_multiple_of(5) {
                header.command = Command::Request;
                ShardFrame::ClientForward {
                    connection_id: u64::from(i),
                    origin_shard: ShardId(0),
                    header,
                    body: Vec::new(),
                }
            } else {
                ShardFrame::Consensus { peer: 1, header, body: Vec::new() }
            }
        })
        .collect()
}

fn route_bench(shards: u16, frames: &[ShardFrame]) -> (u64, f64) {
    let count = ShardCount::new(usize::from(shards)).expect("shard count");
    let drops = Arc::new(FrameDrops::new());
    let inboxes: Vec<LocalInbox> = (0..shards).map(|_| LocalInbox::new(INBOX_CAPACITY, drops.clone())).collect();
    let mut delivered = 0u64;
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < ROUTE_FRAMES_TOTAL {
        for frame in frames {
            let shard = route(frame, count).expect("routable");
            if inboxes[shard.index()].try_send(frame.clone()).is_err() {
                // Full: drain this inbox like its pump would, then go on.
                while let Some(f) = inboxes[shard.index()].try_recv() {
                    if let pump::Delivery::Accepted(_) = pump::deliver(f, shard, count, &drops) {
                        delivered += 1;
                    }
                }
            }
            sent += 1;
        }
    }
    for (index, inbox) in inboxes.iter().enumerate() {
        while let Some(f) = inbox.try_recv() {
            if let pump::Delivery::Accepted(_) = pump::deliver(f, ShardId(index as u16), count, &drops) {
                delivered += 1;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(delivered + drops.total(), sent, "every frame delivered or counted");
    (sent, elapsed)
}

fn main() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info.to_string();
        if !text.contains("injected fault") {
            previous(info);
        }
    }));

    let frames = frame_set();
    println!("router: route + try_send + try_recv + deliver, one shard thread, {ROUTE_FRAMES_TOTAL} frames");
    println!("{:>3} | {:>12} | {:>10} | {:>16}", "N", "frames", "seconds", "frames/s/shard");
    for shards in [1u16, 2, 4, 8] {
        let (sent, seconds) = route_bench(shards, &frames);
        println!("{shards:>3} | {sent:>12} | {seconds:>10.3} | {:>16.0}", sent as f64 / seconds);
    }

    println!();
    println!("shard world simulation: swarm faults, {SIM_SEEDS_PER_ROW} seeds per row");
    println!(
        "{:>3} | {:>6} | {:>10} | {:>9} | {:>10} | {:>12} | {:>6}",
        "N", "seeds", "frames", "seconds", "seeds/s", "frames/s", "passed"
    );
    for shards in [1u16, 2, 4, 8] {
        let start = Instant::now();
        let mut frames_sent = 0u64;
        let mut passed = 0u64;
        for seed in 0..SIM_SEEDS_PER_ROW {
            let outcome = shoal_sim::run_shard_world(&shoal_sim::ShardWorldConfig::swarm(seed, shards));
            frames_sent += outcome.counters.frames_sent;
            passed += u64::from(outcome.passed());
        }
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "{shards:>3} | {SIM_SEEDS_PER_ROW:>6} | {frames_sent:>10} | {seconds:>9.3} | {:>10.1} | {:>12.0} | {passed:>6}",
            SIM_SEEDS_PER_ROW as f64 / seconds,
            frames_sent as f64 / seconds
        );
    }
}
