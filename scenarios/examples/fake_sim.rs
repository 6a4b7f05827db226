//! `shoal-sim` over the fake simulator (`shoal_scenarios::fake`), whose
//! failures are known in advance: try the front end's failure paths
//! (sweep summaries, shrink, timelines of violations, determinism checks)
//! without a buggy cluster. Same arguments as `shoal-sim`:
//!
//! ```text
//! cargo run -p shoal-scenarios --example fake_sim -- sweep --seeds 0..200 --scenario partition-storm
//! cargo run -p shoal-scenarios --example fake_sim -- shrink --seed 1 --scenario partition-storm
//! ```
//! Set `FAKE_SIM_NONDETERMINISTIC=1` to make every run differ.

fn main() {
    let runner: shoal_scenarios::runner::Runner<'_> = if std::env::var_os("FAKE_SIM_NONDETERMINISTIC").is_some() {
        &shoal_scenarios::fake::run_nondeterministic
    } else {
        &shoal_scenarios::fake::run
    };
    let mut stdout = std::io::stdout().lock();
    std::process::exit(shoal_scenarios::cli::execute(std::env::args_os(), runner, &mut stdout));
}
