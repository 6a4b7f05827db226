//! Run one seed of the standard cluster: `cargo run -p shoal-sim --example one -- SEED [faults]`.
fn main() {
    let mut args = std::env::args().skip(1);
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let faulty = args.next().is_some();
    let mut faults = shoal_sim::FaultMix::none();
    if faulty {
        faults.network_drop_ppm = 20_000;
        faults.network_duplicate_ppm = 10_000;
        faults.network_delay_max_ns = 20_000_000;
        faults.network_partition_ppm = 5_000;
        faults.network_clog_ppm = 2_000;
        faults.replica_crash_ppm = 1_000;
        faults.replica_pause_ppm = 1_000;
        faults.storage_torn_write_ppm = 1_000;
        faults.storage_write_error_ppm = 500;
        faults.storage_read_corruption_ppm = 300_000;
    }
    let config = shoal_sim::RunConfig {
        seed,
        scenario: "dev".into(),
        replica_count: std::env::var("REPLICAS").ok().and_then(|r| r.parse().ok()).unwrap_or(3),
        shards_per_replica: 1,
        client_count: 4,
        safety_time_ns: 4_000_000_000,
        liveness_time_ns: 4_000_000_000,
        faults,
        fault_budget: None,
        record_trace: std::env::var("TRACE").is_ok(),
        script: Vec::new(),
    };
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
