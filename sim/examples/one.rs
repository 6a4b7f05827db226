//! Run one seed of the developer cluster: `cargo run -p shoal-sim --example one -- SEED [f]`
//! (`f`: the `FaultMix::stormy` mix; `TRACE=1` prints the trace, `ALL=1` with deliveries).
fn main() {
    let mut args = std::env::args().skip(1);
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let faulty = args.next().is_some();
    let faults = if faulty { shoal_sim::FaultMix::stormy() } else { shoal_sim::FaultMix::none() };
    let mut config = shoal_sim::RunConfig::developer(seed, faults);
    config.replica_count = std::env::var("REPLICAS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    config.record_trace = std::env::var("TRACE").is_ok();
    config.shards_per_replica = std::env::var("SHARDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let outcome = shoal_sim::run(&config);
    for event in &outcome.trace {
        if event.kind != "deliver" || std::env::var("ALL").is_ok() {
            println!("{:>12} {:?} {} {}", event.time_ns, event.replica, event.kind, event.detail);
        }
    }
    println!(
        "seed {seed}: {:?} ops {} views {} faults {} events {} t={}ms hash {:016x}",
        outcome.verdict,
        outcome.ops_committed,
        outcome.view_changes,
        outcome.faults_injected_total,
        outcome.events_processed,
        outcome.virtual_time_ns / 1_000_000,
        outcome.trace_hash
    );
}
