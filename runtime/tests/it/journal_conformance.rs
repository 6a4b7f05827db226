//! The journal's generic conformance suite (`shoal_vsr::journal::conformance`)
//! on the real disk through `RealIo`, under both compio drivers, one test per
//! case so a failure names its case.

use shoal_vsr::journal::conformance;

use crate::support::{DRIVERS, TempDir, with_io};

macro_rules! conformance_tests {
    ($($name:ident,)*) => {$(
        #[test]
        fn $name() {
            for driver in DRIVERS {
                let dir = TempDir::new(stringify!($name));
                let journal_dir = dir.path().join("journal");
                with_io(driver, |io| async move {
                    conformance::$name(&io, &journal_dir).await;
                });
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
}
