//! Recovery from arbitrary damage: random byte runs written anywhere in a
//! journal file (file header, slot headers, bodies, padding) give a typed
//! error or a recovery whose ops are all ones that were appended, never a
//! panic.

use std::path::Path;

use proptest::prelude::*;
use shoal_sim::{SimIo, block_on_ready};
use shoal_vsr::io::OpenMode;
use shoal_vsr::journal::conformance::{Chain, config};
use shoal_vsr::journal::{PrepareJournal, journal_path};

const SLOT_COUNT: u64 = 8;

proptest! {
    #[test]
    fn damaged_journal_never_panics(
        seed in any::<u64>(),
        ops in 0u64..8,
        damage in prop::collection::vec((0u64..40_000, prop::collection::vec(any::<u8>(), 1..64)), 1..6),
    ) {
        let io = SimIo::new(seed);
        let dir = Path::new("/data/bad");
        let mut journal = block_on_ready(PrepareJournal::create(&io, dir, config(SLOT_COUNT))).unwrap();
        let mut chain = Chain::new();
        let mut appended = Vec::new();
        for _ in 0..ops {
            let (header, body) = chain.next_prepare();
            block_on_ready(journal.append(&header, &body)).unwrap();
            appended.push(header);
        }
        block_on_ready(journal.sync()).unwrap();
        drop(journal);
        let path = journal_path(dir, config(SLOT_COUNT).namespace);
        let size_bytes = config(SLOT_COUNT).file_size_bytes();
        for (offset, bytes) in &damage {
            let offset = offset % size_bytes;
            let end = (offset + bytes.len() as u64).min(size_bytes);
            io.disk().poke(&path, offset, &bytes[..(end - offset) as usize]).unwrap();
        }
        match block_on_ready(PrepareJournal::open(&io, dir, config(SLOT_COUNT), OpenMode::ReadWrite)) {
            Err(error) => prop_assert!(!error.to_string().is_empty()),
            Ok((journal, recovery)) => {
                for op in &recovery.ops_recovered {
                    prop_assert_eq!(journal.header(*op), Some(&appended[*op as usize - 1]));
                }
                for op in &recovery.ops_recovered {
                    prop_assert!(*op >= 1 && *op <= ops);
                }
                // Damage to both a slot and its ring copy leaves a slot whose
                // history is unknown: it awaits repair even if it was never
                // written (it might have been acknowledged), so repair ops
                // are bounded by the live window, not by what was appended.
                for op in &recovery.repair_ops {
                    prop_assert!(*op >= 1 && *op <= SLOT_COUNT);
                }
            }
        }
    }
}
