//! Quick developer sweep of the `FaultMix::stormy` mix:
//! `cargo run --release -p shoal-sim --example sweep -- FROM TO`
//! (`REPLICAS=5`, `SHARDS=4`, `STEADY=1` change the cluster or turn faults off).
fn main() {
    let mut args = std::env::args().skip(1);
    let from: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let to: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
    let mut failures = 0;
    std::panic::set_hook(Box::new(|_| {}));
    for seed in from..to {
        let faults =
            if std::env::var("STEADY").is_ok() { shoal_sim::FaultMix::none() } else { shoal_sim::FaultMix::stormy() };
        let mut config = shoal_sim::RunConfig::developer(seed, faults);
        config.replica_count = std::env::var("REPLICAS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
        config.shards_per_replica = std::env::var("SHARDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
        match std::panic::catch_unwind(|| shoal_sim::run(&config)) {
            Ok(outcome) if outcome.verdict == shoal_sim::Verdict::Pass => {}
            Ok(outcome) => {
                failures += 1;
                println!("seed {seed}: {:?}", outcome.verdict);
            }
            Err(panic) => {
                failures += 1;
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                println!("seed {seed}: panic {message:?}");
            }
        }
    }
    println!("{failures} failures in {} seeds", to - from);
}
