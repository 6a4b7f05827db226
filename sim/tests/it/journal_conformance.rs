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

conformance_tests! {
    append_read_reopen,
    append_rejects_bad_prepares,
    slot_collision_requires_drain,
    drain_everything_keeps_the_chain,
    truncate_after_then_reopen,
    read_only_rejects_mutation,
    foreign_and_mismatched_files_are_rejected,
    damaged_files_give_typed_errors,
    corrupt_middle_is_reported_for_repair,
    torn_tail_is_truncated,
    stale_tmp_is_removed_on_open,
    run_all,
}
