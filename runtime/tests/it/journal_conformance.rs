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

/// Allocated bytes of the file at `path` (what the file system reserved,
/// not its length).
fn allocated_bytes(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat").blocks() * 512
}

/// The first compaction after a restart clears the spare in place (the
/// spare's history is unknown then): the file it exchanges in keeps every
/// block `create` preallocated, so the appends after it allocate nothing
/// and their fdatasyncs commit no file-system metadata, and nothing of the
/// spare's previous life comes back. Until session 23 that compaction
/// truncated the spare and resized it sparse: 30-100 ms inline on a 64 MiB
/// spare in `cargo xtask bench server` (measured with a probe build), then
/// a lap of appends into a sparse journal.
/// A spare lost since the last start (removed by hand, or a file system
/// that could not exchange) is preallocated by the clear a node runs beside
/// its appends, so the journal it becomes is not sparse either.
#[test]
fn a_missing_spare_is_preallocated_by_its_clear_beside_the_journal() {
    use shoal_vsr::io::OpenMode;
    use shoal_vsr::journal::conformance::append_n;
    use shoal_vsr::journal::{PrepareJournal, journal_path, journal_path_tmp};

    const SLOTS: u64 = 64;
    let dir = TempDir::new("spare-cleared-beside");
    let journal_dir = dir.path().join("journal");
    with_io(DRIVERS[0], |io| async move {
        let config = conformance::config(SLOTS);
        let size_bytes = config.file_size_bytes();
        let tmp = journal_path_tmp(&journal_dir, conformance::NAMESPACE);
        let mut chain = conformance::Chain::new();
        let mut journal = PrepareJournal::create(&io, &journal_dir, config).await.unwrap();
        append_n(&mut journal, &mut chain, 40).await;
        drop(journal);
        std::fs::remove_file(&tmp).unwrap();

        let (mut journal, _) = PrepareJournal::open(&io, &journal_dir, config, OpenMode::ReadWrite).await.unwrap();
        let clear = journal.spare_clearer().expect("a new process does not trust its spare");
        let cleared = clear.run().await;
        assert!(cleared.error().is_none(), "{:?}", cleared.error());
        journal.end_spare_clear(&cleared);
        assert!(allocated_bytes(&tmp) >= size_bytes, "the clear preallocates a missing spare");
        journal.drain(30).await.unwrap();
        let path = journal_path(&journal_dir, conformance::NAMESPACE);
        assert!(allocated_bytes(&path) >= size_bytes, "the journal exchanged in keeps the clear's blocks");
        drop(journal);
        let (journal, recovery) = PrepareJournal::open(&io, &journal_dir, config, OpenMode::ReadWrite).await.unwrap();
        assert_eq!(journal.snapshot_op(), 30);
        assert_eq!(recovery.ops_recovered, (31..=40).collect::<Vec<_>>());
    });
}

#[test]
fn a_compaction_after_a_restart_keeps_the_spare_preallocated() {
    use shoal_vsr::io::OpenMode;
    use shoal_vsr::journal::conformance::append_n;
    use shoal_vsr::journal::{PrepareJournal, journal_path, journal_path_tmp};

    const SLOTS: u64 = 64;
    let dir = TempDir::new("spare-preallocated");
    let journal_dir = dir.path().join("journal");
    with_io(DRIVERS[0], |io| async move {
        let config = conformance::config(SLOTS);
        let size_bytes = config.file_size_bytes();
        let path = journal_path(&journal_dir, conformance::NAMESPACE);
        let tmp = journal_path_tmp(&journal_dir, conformance::NAMESPACE);
        let mut chain = conformance::Chain::new();
        let mut journal = PrepareJournal::create(&io, &journal_dir, config).await.unwrap();
        // Ops 1..=40 in the spare's previous life as the journal: a first
        // compaction retires the file that holds them.
        append_n(&mut journal, &mut chain, 40).await;
        journal.drain(30).await.unwrap();
        append_n(&mut journal, &mut chain, 20).await;
        drop(journal);
        assert!(allocated_bytes(&tmp) >= size_bytes, "create preallocates the spare");

        let (mut journal, recovery) =
            PrepareJournal::open(&io, &journal_dir, config, OpenMode::ReadWrite).await.unwrap();
        assert_eq!(recovery.ops_recovered, (31..=60).collect::<Vec<_>>());
        // A view change drops ops 51..=60, which the spare does not hold,
        // and the restart left the spare's history unknown.
        journal.truncate_after(50).await.unwrap();
        journal.drain(45).await.unwrap();
        assert!(
            allocated_bytes(&path) >= size_bytes,
            "the journal exchanged in (the spare) keeps its blocks: {} of {size_bytes} bytes allocated",
            allocated_bytes(&path)
        );
        drop(journal);
        let (journal, recovery) = PrepareJournal::open(&io, &journal_dir, config, OpenMode::ReadWrite).await.unwrap();
        assert_eq!(journal.snapshot_op(), 45);
        assert_eq!(recovery.ops_recovered, (46..=50).collect::<Vec<_>>(), "nothing of the spare's past comes back");
    });
}
