//! Superblock on `SimIo`: two-copy writes survive a crash at any storage
//! call, a torn or corrupt copy falls back to the other, bad files give
//! typed errors.

use std::path::Path;

use shoal_sim::{DiskFaults, SimIo, block_on_ready};
use shoal_vsr::io::OpenMode;
use shoal_vsr::superblock::{
    SUPERBLOCK_COPY_SIZE_BYTES, Superblock, SuperblockError, SuperblockState, superblock_copy_offset, superblock_path,
};

const CLUSTER: u128 = 77;
const NAMESPACE: u64 = 5;
const REPLICA: u8 = 2;
const DIR: &str = "/data/r2";

fn open(io: &SimIo) -> Result<Superblock<SimIo>, SuperblockError> {
    block_on_ready(Superblock::open(io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA, OpenMode::ReadWrite))
}

fn state(view: u64, log_view: u64, commit: u64) -> SuperblockState {
    SuperblockState { view, log_view, commit, view_headers: Vec::new(), rejoining: false, nack_floor: 0 }
}

#[test]
fn write_then_reopen_after_crash() {
    let io = SimIo::new(1);
    let mut superblock = block_on_ready(Superblock::create(&io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA)).unwrap();
    assert_eq!(superblock.state().clone(), SuperblockState::default());
    block_on_ready(superblock.write(state(3, 2, 10))).unwrap();
    drop(superblock);
    io.crash();
    let superblock = open(&io).unwrap();
    assert_eq!(superblock.state().clone(), state(3, 2, 10));
    assert_eq!(superblock.sequence(), 2);
}

#[test]
fn crash_at_every_step_of_a_write_keeps_old_or_new_state() {
    for seed in 0..16 {
        for steps in 0..6 {
            let io = SimIo::new(seed);
            io.disk().faults =
                DiskFaults { crash_lost_ppm: 400_000, crash_torn_ppm: 1_000_000, ..DiskFaults::default() };
            let mut superblock =
                block_on_ready(Superblock::create(&io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA)).unwrap();
            block_on_ready(superblock.write(state(1, 1, 5))).unwrap();
            io.disk().crash_after_steps(steps);
            let result = block_on_ready(superblock.write(state(2, 1, 9)));
            drop(superblock);
            io.crash();
            let recovered = open(&io).unwrap_or_else(|error| panic!("seed {seed} steps {steps}: {error}"));
            assert!(
                recovered.state().clone() == state(1, 1, 5) || recovered.state().clone() == state(2, 1, 9),
                "seed {seed} steps {steps}: {:?}",
                recovered.state().clone()
            );
            if result.is_ok() {
                assert_eq!(recovered.state().clone(), state(2, 1, 9), "an Ok write is durable");
            }
        }
    }
}

#[test]
fn a_corrupt_copy_falls_back_to_the_other() {
    let io = SimIo::new(2);
    let mut superblock = block_on_ready(Superblock::create(&io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA)).unwrap();
    block_on_ready(superblock.write(state(4, 4, 40))).unwrap();
    drop(superblock);
    let path = superblock_path(Path::new(DIR), NAMESPACE);
    // Copy A torn back to an older, still-valid image is covered above; here
    // copy A is garbage and copy B holds the state.
    io.disk().poke(&path, 10, &[0xFF; 40]).unwrap();
    assert_eq!(open(&io).unwrap().state().clone(), state(4, 4, 40));
    // Sticky read corruption of copy B too: no valid copy is left.
    io.disk().corrupt_sector(&path, superblock_copy_offset(1) + 20).unwrap();
    let error = open(&io).unwrap_err();
    assert!(matches!(error, SuperblockError::NoValidCopy), "{error}");
}

#[test]
fn bad_files_give_typed_errors() {
    let io = SimIo::new(3);
    assert!(matches!(open(&io), Err(SuperblockError::Missing { .. })));
    drop(block_on_ready(Superblock::create(&io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA)).unwrap());
    assert!(matches!(
        block_on_ready(Superblock::create(&io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA)),
        Err(SuperblockError::AlreadyExists { .. })
    ));
    assert!(matches!(
        block_on_ready(Superblock::open(&io, Path::new(DIR), CLUSTER + 1, NAMESPACE, REPLICA, OpenMode::ReadWrite)),
        Err(SuperblockError::WrongOwner { found: CLUSTER, .. })
    ));
    assert!(matches!(
        block_on_ready(Superblock::open(&io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA + 1, OpenMode::ReadWrite)),
        Err(SuperblockError::WrongOwner { found_replica: REPLICA, .. })
    ));
    let mut reader =
        block_on_ready(Superblock::open(&io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA, OpenMode::ReadOnly)).unwrap();
    assert!(matches!(block_on_ready(reader.write(state(1, 0, 0))), Err(SuperblockError::ReadOnly)));
    let mut writer = open(&io).unwrap();
    assert!(matches!(block_on_ready(writer.write(state(1, 2, 0))), Err(SuperblockError::InvalidState { .. })));
    let path = superblock_path(Path::new(DIR), NAMESPACE);
    io.disk().poke_len(&path, 0).unwrap();
    assert!(matches!(open(&io), Err(SuperblockError::NoValidCopy)));
}

#[test]
#[should_panic(expected = "view never goes back")]
fn view_never_goes_back() {
    let io = SimIo::new(4);
    let mut superblock = block_on_ready(Superblock::create(&io, Path::new(DIR), CLUSTER, NAMESPACE, REPLICA)).unwrap();
    block_on_ready(superblock.write(state(5, 5, 0))).unwrap();
    let _ = block_on_ready(superblock.write(state(4, 4, 0)));
}

/// disk-rot seed 366 (with misdirected superblock writes): the write of
/// copy B went to another sector of the file, after copy A was written.
/// With the copies adjacent, a copy-sized write landing between them
/// corrupted the new copy A and the old copy B at once, and the replica
/// could not restart. A copy's size apart, any landing spot leaves one
/// valid copy: the new state, or the one before it.
#[test]
fn a_misdirected_copy_write_leaves_one_valid_copy_wherever_it_lands() {
    let dir = Path::new(DIR);
    // The bytes copy B's write carried: copy A of the same write.
    let model = SimIo::new(5);
    let mut superblock = block_on_ready(Superblock::create(&model, dir, CLUSTER, NAMESPACE, REPLICA)).unwrap();
    block_on_ready(superblock.write(state(1, 1, 1))).unwrap();
    block_on_ready(superblock.write(state(2, 2, 2))).unwrap();
    let path = superblock_path(dir, NAMESPACE);
    let copy_bytes = model.disk().contents(&path).unwrap()[..SUPERBLOCK_COPY_SIZE_BYTES as usize].to_vec();
    let file_size_bytes = shoal_vsr::superblock::superblock_file_size_bytes();
    let sectors = (file_size_bytes - SUPERBLOCK_COPY_SIZE_BYTES) / 512;
    for landing in (1..=sectors).map(|sector| sector * 512).filter(|&at| at != superblock_copy_offset(1)) {
        let io = SimIo::new(6);
        let mut superblock = block_on_ready(Superblock::create(&io, dir, CLUSTER, NAMESPACE, REPLICA)).unwrap();
        block_on_ready(superblock.write(state(1, 1, 1))).unwrap();
        drop(superblock);
        // Copy A of the next write landed; copy B's landed at `landing`.
        io.disk().poke(&path, 0, &copy_bytes).unwrap();
        io.disk().poke(&path, landing, &copy_bytes).unwrap();
        let reopened = open(&io).unwrap_or_else(|error| panic!("landing at {landing}: {error}"));
        assert!([state(1, 1, 1), state(2, 2, 2)].contains(reopened.state()), "landing at {landing}");
    }
}
