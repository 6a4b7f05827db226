//! Builders the storage stories share: one group's storage config and the
//! view headers a view change installs.

use std::path::Path;
use std::rc::Rc;

use shoal_shard::node::{GroupStorage, StorageConfig};
use shoal_sim::{SimIo, block_on_ready};
use shoal_vsr::checkpoint::write_checkpoint;
use shoal_vsr::header::{Command, Header};
use shoal_vsr::journal::conformance::{CLUSTER, Chain, NAMESPACE, config};
use shoal_vsr::message::Message;
use shoal_vsr::replica::{Action, Checkpoint, DurableState};

/// Replica 0's storage of the conformance group, with `slot_count` slots.
pub fn group_storage_config(slot_count: u64) -> StorageConfig {
    StorageConfig {
        cluster: CLUSTER,
        namespace: NAMESPACE,
        replica: 0,
        slot_count,
        message_size_max_bytes: config(slot_count).message_size_max_bytes,
    }
}

/// Prepare headers of `view` for `ops` in `cluster`'s group `namespace`,
/// as a view change installs them (empty bodies).
pub fn view_headers(cluster: u128, namespace: u64, view: u64, ops: std::ops::RangeInclusive<u64>) -> Vec<Header> {
    ops.map(|op| {
        let mut header = Header::new(Command::Prepare, cluster);
        header.namespace = namespace;
        header.view = view;
        header.op = op;
        header.set_checksums(&[]);
        header
    })
    .collect()
}

/// A formatted group in `dir` (replica 0 of the conformance group, with
/// `slot_count` slots) whose superblock holds `state`, with `prepares`
/// durable prepares of the conformance chain and a checkpoint at op 1 (a
/// 700-byte snapshot).
pub fn write_group(io: &SimIo, dir: &Path, slot_count: u64, state: DurableState, prepares: u64) {
    let mut storage = block_on_ready(GroupStorage::format(io, dir, group_storage_config(slot_count))).unwrap();
    block_on_ready(storage.execute(&Action::WriteSuperblock { state })).unwrap();
    let mut chain = Chain::new();
    for _ in 0..prepares {
        let (header, body) = chain.next_prepare();
        block_on_ready(storage.write_prepare(&Message::new(header, Rc::from(body)))).unwrap();
    }
    block_on_ready(storage.flush_prepares()).unwrap();
    drop(storage);
    let (anchor, _) = Chain::new().next_prepare();
    let checkpoint = Checkpoint { anchor, snapshot: vec![0x5A; 700] };
    block_on_ready(write_checkpoint(io, dir, NAMESPACE, &checkpoint)).unwrap();
}
