//! The `shoal-sim` binary: the CLI of `shoal_scenarios::cli` over the real
//! simulator, `shoal_sim::run`. Everything else lives in the library.

fn main() {
    let mut stdout = std::io::stdout().lock();
    let code = shoal_scenarios::cli::execute(std::env::args_os(), &shoal_sim::run, &mut stdout);
    std::process::exit(code);
}
