//! `shoal-sim` over the fake simulator (`shoal_scenarios::fake`), whose
//! failures are known in advance: try the front end's failure paths
//! (sweep summaries, shrink, timelines of violations, determinism checks)
//! without a buggy cluster. Same arguments as `shoal-sim`:
//!
//! ```text
//! cargo run -p shoal-scenarios --example fake_sim -- sweep --seeds 0..200 --scenario partition-storm
//! cargo run -p shoal-scenarios --example fake_sim -- shrink --seed 1 --scenario partition-storm
//! ```
//! Set `FAKE_SIM_NONDETERMINISTIC=1` to make every run differ, and
//! `FAKE_SIM_HANG_SEED=N` to make seed N never finish.
#![allow(clippy::disallowed_methods)] // the hang is a wall-clock sleep, on purpose

use shoal_sim::{RunConfig, RunOutcome};

fn hang_or_run(config: &RunConfig) -> RunOutcome {
    let hang_seed = std::env::var("FAKE_SIM_HANG_SEED").ok().and_then(|seed| seed.parse::<u64>().ok());
    if hang_seed == Some(config.seed) {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    shoal_scenarios::fake::run(config)
}

fn main() {
    let runner: shoal_scenarios::runner::Runner<'_> = if std::env::var_os("FAKE_SIM_NONDETERMINISTIC").is_some() {
        &shoal_scenarios::fake::run_nondeterministic
    } else {
        &hang_or_run
    };
    let mut stdout = std::io::stdout().lock();
    std::process::exit(shoal_scenarios::cli::execute(std::env::args_os(), runner, &mut stdout));
}
