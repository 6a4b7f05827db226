//! RealIo against a real directory, under both drivers.

use std::io::ErrorKind;

use shoal_runtime::DriverChoice;
use shoal_vsr::io::{Io, IoFile, OpenMode};

use crate::support::{DRIVERS, TempDir, with_io};

#[test]
fn write_sync_read_round_trip_at_offsets() {
    for driver in DRIVERS {
        let dir = TempDir::new("roundtrip");
        let path = dir.path().join("wal");
        with_io(driver, |io| async move {
            let file = io.open(&path, OpenMode::ReadWriteCreate).await.unwrap();
            let first: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
            let (result, returned) = file.write_all_at(first.clone(), 0).await;
            result.unwrap();
            assert_eq!(returned, first, "the buffer comes back unchanged");
            let (result, _) = file.write_all_at(vec![0xAB; 100], 8192).await;
            result.unwrap();
            file.sync_data().await.unwrap();
            assert_eq!(file.size_bytes().await.unwrap(), 8292);

            // A buffer with spare capacity must still be filled to its length only.
            let mut buf = Vec::with_capacity(16_384);
            buf.resize(4096, 0);
            let (result, buf) = file.read_exact_at(buf, 0).await;
            result.unwrap();
            assert_eq!(buf, first);

            let (result, hole) = file.read_exact_at(vec![1; 10], 5000).await;
            result.unwrap();
            assert_eq!(hole, vec![0; 10], "a hole reads as zeros");

            let (result, tail) = file.read_exact_at(vec![0; 100], 8192).await;
            result.unwrap();
            assert_eq!(tail, vec![0xAB; 100]);
        });
        assert_eq!(std::fs::read(dir.path().join("wal")).unwrap().len(), 8292, "driver {driver:?}");
    }
}

/// Dropping the clean cached pages (what an open does after its fsync, so
/// that it reads the device) never drops a dirty page: a write not yet
/// synced reads back after the eviction, and so does what was synced,
/// through a writable and a read-only handle.
#[test]
fn evicting_clean_pages_keeps_every_byte_a_read_sees() {
    for driver in DRIVERS {
        let dir = TempDir::new("evict");
        let path = dir.path().join("wal");
        let opened = path.clone();
        with_io(driver, |io| async move {
            let file = io.open(&opened, OpenMode::ReadWriteCreate).await.unwrap();
            let synced: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
            file.write_all_at(synced.clone(), 0).await.0.unwrap();
            file.sync_data().await.unwrap();
            file.write_all_at(vec![0xCD; 4096], 8192).await.0.unwrap();
            file.evict_clean_pages().await.unwrap();
            let (result, read) = file.read_exact_at(vec![0; 12_288], 0).await;
            result.unwrap();
            assert_eq!(read[..8192], synced[..], "synced pages read back from the device");
            assert_eq!(read[8192..], [0xCD; 4096][..], "the dirty page stayed");
            let reader = io.open(&opened, OpenMode::ReadOnly).await.unwrap();
            reader.evict_clean_pages().await.unwrap();
            let (result, again) = reader.read_exact_at(vec![0; 12_288], 0).await;
            result.unwrap();
            assert_eq!(again, read);
        });
        assert_eq!(std::fs::read(&path).unwrap().len(), 12_288, "driver {driver:?}");
    }
}

/// A prefetch hint changes nothing a read sees: after an eviction, hinted
/// ranges (in the file, past its end, of zero length, and a position no
/// offset can hold) read back the bytes written, dirty and synced, through
/// a writable and a read-only handle.
#[test]
fn a_prefetch_hint_changes_nothing_a_read_sees() {
    for driver in DRIVERS {
        let dir = TempDir::new("prefetch");
        let path = dir.path().join("wal");
        with_io(driver, |io| async move {
            let file = io.open(&path, OpenMode::ReadWriteCreate).await.unwrap();
            let synced: Vec<u8> = (0..16_384u32).map(|i| (i % 251) as u8).collect();
            file.write_all_at(synced.clone(), 0).await.0.unwrap();
            file.sync_data().await.unwrap();
            file.write_all_at(vec![0xAB; 4096], 4096).await.0.unwrap();
            file.evict_clean_pages().await.unwrap();
            let reader = io.open(&path, OpenMode::ReadOnly).await.unwrap();
            for handle in [&file, &reader] {
                for (position, len_bytes) in [(0, 4096), (8192, 8192), (1 << 30, 4096), (0, 0), (u64::MAX, 1)] {
                    handle.prefetch(position, len_bytes);
                }
                let (result, read) = handle.read_exact_at(vec![0; 16_384], 0).await;
                result.unwrap();
                assert_eq!(read[..4096], synced[..4096]);
                assert_eq!(read[4096..8192], [0xAB; 4096][..], "the dirty page");
                assert_eq!(read[8192..], synced[8192..]);
            }
        });
    }
}

#[test]
fn short_read_is_unexpected_eof_and_keeps_the_buffer_length() {
    for driver in DRIVERS {
        let dir = TempDir::new("eof");
        let path = dir.path().join("short");
        std::fs::write(&path, [7u8; 10]).unwrap();
        with_io(driver, |io| async move {
            let file = io.open(&path, OpenMode::ReadOnly).await.unwrap();
            let (result, buf) = file.read_exact_at(vec![0; 20], 0).await;
            assert_eq!(result.unwrap_err().kind(), ErrorKind::UnexpectedEof);
            assert_eq!(buf.len(), 20);
            let (result, _) = file.read_exact_at(vec![0; 1], 10).await;
            assert_eq!(result.unwrap_err().kind(), ErrorKind::UnexpectedEof, "read at end of file");
        });
    }
}

#[test]
fn read_only_file_rejects_writes_and_set_len() {
    let dir = TempDir::new("readonly");
    let path = dir.path().join("ro");
    std::fs::write(&path, [1u8; 8]).unwrap();
    let opened = path.clone();
    with_io(DriverChoice::Auto, |io| async move {
        let file = io.open(&opened, OpenMode::ReadOnly).await.unwrap();
        let (result, _) = file.write_all_at(vec![2; 4], 0).await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::PermissionDenied);
        assert_eq!(file.set_len(0).await.unwrap_err().kind(), ErrorKind::PermissionDenied);
        assert_eq!(file.size_bytes().await.unwrap(), 8);
    });
    assert_eq!(std::fs::read(&path).unwrap(), vec![1u8; 8]);
}

#[test]
fn open_modes_respect_existence() {
    let dir = TempDir::new("modes");
    let missing = dir.path().join("missing");
    with_io(DriverChoice::Auto, |io| async move {
        assert_eq!(io.open(&missing, OpenMode::ReadWrite).await.unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(io.open(&missing, OpenMode::ReadOnly).await.unwrap_err().kind(), ErrorKind::NotFound);
        io.open(&missing, OpenMode::ReadWriteCreate).await.unwrap();
        io.open(&missing, OpenMode::ReadWrite).await.unwrap();
    });
}

#[test]
fn set_len_truncates_and_extends() {
    for driver in DRIVERS {
        let dir = TempDir::new("setlen");
        let path = dir.path().join("f");
        with_io(driver, |io| async move {
            let file = io.open(&path, OpenMode::ReadWriteCreate).await.unwrap();
            let (result, _) = file.write_all_at(vec![9; 1000], 0).await;
            result.unwrap();
            file.set_len(100).await.unwrap();
            assert_eq!(file.size_bytes().await.unwrap(), 100);
            let (result, _) = file.read_exact_at(vec![0; 101], 0).await;
            assert_eq!(result.unwrap_err().kind(), ErrorKind::UnexpectedEof);
            file.set_len(1 << 20).await.unwrap();
            file.sync_data().await.unwrap();
            assert_eq!(file.size_bytes().await.unwrap(), 1 << 20);
            let (result, tail) = file.read_exact_at(vec![5; 8], (1 << 20) - 8).await;
            result.unwrap();
            assert_eq!(tail, vec![0; 8]);
        });
    }
}

#[test]
fn rename_remove_sync_dir_and_sorted_listing() {
    for driver in DRIVERS {
        let dir = TempDir::new("dirops");
        let root = dir.path().join("nested/deeper");
        with_io(driver, |io| async move {
            io.create_dir_all(&root).await.unwrap();
            io.create_dir_all(&root).await.unwrap(); // idempotent
            for name in ["c", "a", "b.tmp"] {
                let file = io.open(&root.join(name), OpenMode::ReadWriteCreate).await.unwrap();
                let (result, _) = file.write_all_at(name.as_bytes().to_vec(), 0).await;
                result.unwrap();
                file.sync_data().await.unwrap();
            }
            std::fs::create_dir(root.join("subdir")).unwrap();
            io.sync_dir(&root).await.unwrap();
            assert_eq!(io.list_dir(&root).await.unwrap(), vec![root.join("a"), root.join("b.tmp"), root.join("c")]);

            // tmp → rename over an existing file → fsync the directory.
            io.rename(&root.join("b.tmp"), &root.join("c")).await.unwrap();
            io.sync_dir(&root).await.unwrap();
            assert_eq!(std::fs::read(root.join("c")).unwrap(), b"b.tmp");
            io.remove(&root.join("a")).await.unwrap();
            io.sync_dir(&root).await.unwrap();
            assert_eq!(io.list_dir(&root).await.unwrap(), vec![root.join("c")]);
            assert_eq!(io.remove(&root.join("a")).await.unwrap_err().kind(), ErrorKind::NotFound);
            assert!(io.sync_dir(&root.join("nope")).await.is_err());
        });
    }
}

#[test]
fn clock_sleeps_forward_and_entropy_varies() {
    for driver in DRIVERS {
        with_io(driver, |io| async move {
            let before = io.now_ns();
            io.sleep(5_000_000).await;
            let after = io.now_ns();
            assert!(after - before >= 5_000_000, "slept {} ns", after - before);
            let draws: Vec<u64> = (0..8).map(|_| io.entropy_u64()).collect();
            let mut unique = draws.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), draws.len());
        });
    }
}

#[test]
fn spawned_tasks_join_and_panics_become_task_failed() {
    with_io(DriverChoice::Auto, |io| async move {
        let shared = std::rc::Rc::new(std::cell::Cell::new(0));
        let seen = shared.clone();
        let sleeper = io.clone();
        let task = io.spawn(async move {
            sleeper.sleep(1_000_000).await;
            seen.set(42);
        });
        task.await.unwrap();
        assert_eq!(shared.get(), 42);

        let failed = io.spawn(async { panic!("shard task blew up") }).await.unwrap_err();
        assert!(failed.reason.contains("shard task blew up"), "{failed}");
    });
}

#[test]
fn the_driver_in_use_is_reported() {
    with_io(DriverChoice::Polling, |io| async move {
        assert_eq!(io.driver_name(), "polling");
    });
    with_io(DriverChoice::Auto, |io| async move {
        let name = io.driver_name();
        assert!(name == "io_uring" || name == "polling", "{name}");
        eprintln!("RealIo driver under Auto on this machine: {name}");
    });
}
