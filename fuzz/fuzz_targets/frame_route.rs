//! Frame routing on arbitrary headers: never panics, always names a shard
//! below the shard count, and sends every frame not bound to a partition
//! namespace (VSR-reserved operations, replica-level control, unset or
//! malformed namespaces) to shard 0.
//!
//! Random bytes almost never carry a valid checksum, so when `decode` fails
//! the target builds a header from the bytes instead (command, operation,
//! namespace, replica), seals it, and checks the encode/decode round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_shard::namespace::Namespace;
use shoal_shard::router::{partition_binding, route, route_consensus_control, route_partition};
use shoal_shard::{ShardCount, ShardFrame, ShardId};
use shoal_vsr::{Command, Header, Operation};

fn header_from(data: &[u8]) -> Option<Header> {
    if let Ok(header) = Header::decode(data) {
        return Some(header);
    }
    let [command, operation, replica, rest @ ..] = data else {
        return None;
    };
    let mut namespace = [0u8; 8];
    let take = rest.len().min(8);
    namespace[..take].copy_from_slice(&rest[..take]);
    let mut header = Header::new(Command::ALL[usize::from(*command) % Command::ALL.len()], 1);
    header.operation = Operation::ALL[usize::from(*operation) % Operation::ALL.len()];
    header.replica = *replica;
    header.namespace = u64::from_le_bytes(namespace);
    header.set_checksums(&[]);
    let decoded = Header::decode(&header.encode()).expect("a sealed header decodes");
    assert_eq!(decoded, header);
    Some(header)
}

fuzz_target!(|data: &[u8]| {
    let Some(header) = header_from(data) else {
        return;
    };
    for n in 1..=8usize {
        let shard_count = ShardCount::new(n).expect("1..=8 shards");
        let shard = route_consensus_control(&header, shard_count);
        assert!(shard.index() < n);
        match partition_binding(&header) {
            Some(namespace) => assert_eq!(shard, route_partition(namespace, shard_count)),
            None => assert_eq!(shard, ShardId(0)),
        }
        let namespace = Namespace(header.namespace);
        if header.operation.is_reserved() && !namespace.is_partition() {
            assert_eq!(shard, ShardId(0), "reserved frame off shard 0: {header:?}");
        }
        let frame = ShardFrame::Consensus {
            header,
            body: Vec::new(),
        };
        assert_eq!(route(&frame, shard_count), Ok(shard));
        let forward = ShardFrame::ClientForward {
            connection_id: 1,
            origin_shard: ShardId(0),
            header,
            body: Vec::new(),
        };
        if let Ok(target) = route(&forward, shard_count) {
            assert!(target.index() < n);
        }
    }
});
