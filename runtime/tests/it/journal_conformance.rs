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

shoal_vsr::journal_conformance_cases!(conformance_tests);
