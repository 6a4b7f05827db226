//! The journal's generic conformance suite (`shoal_vsr::journal::conformance`)
//! on the simulated disk, one test per case so a failure names its case.

use std::path::Path;

use shoal_sim::{SimIo, block_on_ready};
use shoal_vsr::journal::conformance;

macro_rules! conformance_tests {
    ($($name:ident,)*) => {$(
        #[test]
        fn $name() {
            for seed in 0..4 {
                let io = SimIo::new(seed);
                block_on_ready(conformance::$name(&io, Path::new("/data/journal")));
            }
        }
    )*};
}

shoal_vsr::journal_conformance_cases!(conformance_tests);

#[test]
fn run_all() {
    let io = SimIo::new(0);
    block_on_ready(conformance::run_all(&io, Path::new("/data/all")));
}
