//! Quick developer sweep: `cargo run --release -p shoal-sim --example sweep -- FROM TO`.
fn main() {
    let mut args = std::env::args().skip(1);
    let from: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let to: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
    let mut failures = 0;
    std::panic::set_hook(Box::new(|_| {}));
    for seed in from..to {
        let mut faults = shoal_sim::FaultMix::none();
        if std::env::var("STEADY").is_err() {
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
            shards_per_replica: std::env::var("SHARDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1),
            client_count: 4,
            safety_time_ns: 4_000_000_000,
            liveness_time_ns: 4_000_000_000,
            faults,
            fault_budget: None,
            record_trace: false,
            script: Vec::new(),
        };
        match std::panic::catch_unwind(|| shoal_sim::run(&config)) {
            Ok(outcome) if outcome.verdict == shoal_sim::Verdict::Pass => {}
            Ok(outcome) => {
                failures += 1;
                println!("seed {seed}: {:?}", outcome.verdict);
            }
            Err(panic) => {
                failures += 1;
                let message = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                println!("seed {seed}: panic {message:?}");
            }
        }
    }
    println!("{failures} failures in {} seeds", to - from);
}
