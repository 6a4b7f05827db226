//! Builders the storage stories share: one group's storage config and the
//! view headers a view change installs.

use shoal_shard::node::StorageConfig;
use shoal_vsr::header::{Command, Header};
use shoal_vsr::journal::conformance::{CLUSTER, NAMESPACE, config};

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
