//! Namespaces: the `u64` that names one VSR group.
//!
//! Owns the bit layout of a namespace and its checked constructors. Knows
//! nothing of shards or routing (see `router`): it only says what a number
//! means.
//!
//! Layout: `METADATA = 1 << 63` is the metadata group. A partition group is
//! `stream_id << 40 | topic_id << 20 | partition_id` with the top bit clear:
//! 23 bits of stream id, 20 of topic id, 20 of partition id.
//!
//! Stream id 0 is not a stream: a header whose namespace field was never set
//! reads as 0, and treating that as "stream 0, topic 0, partition 0" is how a
//! control frame gets hashed to a shard that has no consensus for it. So a
//! partition namespace always has `stream_id >= 1`, and the raw value 0 is
//! `NamespaceKind::Unbound`.

use std::fmt;

pub const STREAM_ID_BITS: u32 = 23;
pub const TOPIC_ID_BITS: u32 = 20;
pub const PARTITION_ID_BITS: u32 = 20;

pub const STREAM_ID_MAX: u32 = (1 << STREAM_ID_BITS) - 1;
pub const TOPIC_ID_MAX: u32 = (1 << TOPIC_ID_BITS) - 1;
pub const PARTITION_ID_MAX: u32 = (1 << PARTITION_ID_BITS) - 1;

const STREAM_SHIFT: u32 = TOPIC_ID_BITS + PARTITION_ID_BITS;
const TOPIC_SHIFT: u32 = PARTITION_ID_BITS;

const _: () = assert!(STREAM_ID_BITS + TOPIC_ID_BITS + PARTITION_ID_BITS == 63);

/// One VSR group's name, as carried in `Header::namespace`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Namespace(pub u64);

/// What a raw namespace value means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceKind {
    /// The metadata group (streams, topics, client sessions), on shard 0.
    Metadata,
    /// A partition group.
    Partition { stream_id: u32, topic_id: u32, partition_id: u32 },
    /// 0: a header that is not bound to any group (pings, registers, …).
    Unbound,
    /// Top bit set but not `METADATA`, or stream id 0 with other bits set
    /// (`Namespace::partition` never makes one): no group has this name.
    Invalid,
}

/// A partition id that does not fit its bits. Each message names the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceError {
    #[error("stream id 0 is reserved (it is the unset namespace); stream ids start at 1")]
    StreamIdZero,
    #[error("stream id {stream_id} exceeds {STREAM_ID_MAX} (23 bits); use a smaller stream id")]
    StreamIdOverflow { stream_id: u32 },
    #[error("topic id {topic_id} exceeds {TOPIC_ID_MAX} (20 bits); use a smaller topic id")]
    TopicIdOverflow { topic_id: u32 },
    #[error("partition id {partition_id} exceeds {PARTITION_ID_MAX} (20 bits); use fewer partitions")]
    PartitionIdOverflow { partition_id: u32 },
}

impl Namespace {
    pub const METADATA: Namespace = Namespace(1 << 63);
    pub const UNBOUND: Namespace = Namespace(0);

    /// The namespace of one partition, checking every id against its bits.
    pub fn partition(stream_id: u32, topic_id: u32, partition_id: u32) -> Result<Namespace, NamespaceError> {
        if stream_id == 0 {
            return Err(NamespaceError::StreamIdZero);
        }
        if stream_id > STREAM_ID_MAX {
            return Err(NamespaceError::StreamIdOverflow { stream_id });
        }
        if topic_id > TOPIC_ID_MAX {
            return Err(NamespaceError::TopicIdOverflow { topic_id });
        }
        if partition_id > PARTITION_ID_MAX {
            return Err(NamespaceError::PartitionIdOverflow { partition_id });
        }
        let raw =
            (u64::from(stream_id) << STREAM_SHIFT) | (u64::from(topic_id) << TOPIC_SHIFT) | u64::from(partition_id);
        let namespace = Namespace(raw);
        debug_assert!(namespace.is_partition());
        Ok(namespace)
    }

    pub fn raw(self) -> u64 {
        self.0
    }

    pub fn kind(self) -> NamespaceKind {
        if self == Namespace::METADATA {
            NamespaceKind::Metadata
        } else if self.0 == 0 {
            NamespaceKind::Unbound
        } else if self.0 >> 63 != 0 || self.0 >> STREAM_SHIFT == 0 {
            // Stream ids start at 1: a namespace with stream id 0 names no
            // partition, and routing it by hash would send it to a shard
            // with no group for it (found by the frame_route fuzz target).
            NamespaceKind::Invalid
        } else {
            NamespaceKind::Partition {
                stream_id: (self.0 >> STREAM_SHIFT) as u32,
                topic_id: ((self.0 >> TOPIC_SHIFT) as u32) & TOPIC_ID_MAX,
                partition_id: (self.0 as u32) & PARTITION_ID_MAX,
            }
        }
    }

    pub fn is_metadata(self) -> bool {
        self == Namespace::METADATA
    }

    /// True for a well-formed partition namespace (top bit clear, stream >= 1).
    pub fn is_partition(self) -> bool {
        matches!(self.kind(), NamespaceKind::Partition { .. })
    }

    pub fn stream_id(self) -> Option<u32> {
        match self.kind() {
            NamespaceKind::Partition { stream_id, .. } => Some(stream_id),
            _ => None,
        }
    }

    pub fn topic_id(self) -> Option<u32> {
        match self.kind() {
            NamespaceKind::Partition { topic_id, .. } => Some(topic_id),
            _ => None,
        }
    }

    pub fn partition_id(self) -> Option<u32> {
        match self.kind() {
            NamespaceKind::Partition { partition_id, .. } => Some(partition_id),
            _ => None,
        }
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            NamespaceKind::Metadata => write!(f, "Namespace(metadata)"),
            NamespaceKind::Partition { stream_id, topic_id, partition_id } => {
                write!(f, "Namespace({stream_id}/{topic_id}/{partition_id})")
            }
            NamespaceKind::Unbound => write!(f, "Namespace(unbound)"),
            NamespaceKind::Invalid => write!(f, "Namespace(invalid {:#x})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn metadata_is_top_bit_only() {
        assert_eq!(Namespace::METADATA.raw(), 1 << 63);
        assert_eq!(Namespace::METADATA.kind(), NamespaceKind::Metadata);
        assert!(!Namespace::METADATA.is_partition());
    }

    #[test]
    fn layout_matches_the_design() {
        let ns = Namespace::partition(3, 5, 7).unwrap();
        assert_eq!(ns.raw(), (3 << 40) | (5 << 20) | 7);
        assert_eq!((ns.stream_id(), ns.topic_id(), ns.partition_id()), (Some(3), Some(5), Some(7)));
    }

    #[test]
    fn largest_ids_fit_and_one_more_overflows() {
        let ns = Namespace::partition(STREAM_ID_MAX, TOPIC_ID_MAX, PARTITION_ID_MAX).unwrap();
        assert_eq!(ns.raw(), (1 << 63) - 1);
        assert_eq!(
            Namespace::partition(STREAM_ID_MAX + 1, 0, 0),
            Err(NamespaceError::StreamIdOverflow { stream_id: STREAM_ID_MAX + 1 })
        );
        assert_eq!(
            Namespace::partition(1, TOPIC_ID_MAX + 1, 0),
            Err(NamespaceError::TopicIdOverflow { topic_id: TOPIC_ID_MAX + 1 })
        );
        assert_eq!(
            Namespace::partition(1, 0, PARTITION_ID_MAX + 1),
            Err(NamespaceError::PartitionIdOverflow { partition_id: PARTITION_ID_MAX + 1 })
        );
    }

    #[test]
    fn zero_is_unbound_not_a_partition() {
        assert_eq!(Namespace(0).kind(), NamespaceKind::Unbound);
        assert_eq!(Namespace::partition(0, 1, 1), Err(NamespaceError::StreamIdZero));
    }

    #[test]
    fn stream_id_zero_with_topic_or_partition_bits_is_invalid_not_a_partition() {
        for raw in [1, 1 << 20, (1 << 40) - 1] {
            assert_eq!(Namespace(raw).kind(), NamespaceKind::Invalid, "{raw:#x}");
            assert!(!Namespace(raw).is_partition());
        }
    }

    #[test]
    fn top_bit_with_other_bits_is_invalid() {
        assert_eq!(Namespace((1 << 63) | 1).kind(), NamespaceKind::Invalid);
        assert_eq!(Namespace(u64::MAX).stream_id(), None);
    }

    proptest! {
        #[test]
        fn partition_round_trip(stream in 1..=STREAM_ID_MAX, topic in 0..=TOPIC_ID_MAX, partition in 0..=PARTITION_ID_MAX) {
            let ns = Namespace::partition(stream, topic, partition).unwrap();
            prop_assert!(ns.raw() >> 63 == 0);
            prop_assert_eq!(ns.kind(), NamespaceKind::Partition { stream_id: stream, topic_id: topic, partition_id: partition });
        }

        #[test]
        fn every_raw_value_has_exactly_one_meaning(raw in any::<u64>()) {
            let ns = Namespace(raw);
            if let NamespaceKind::Partition { stream_id, topic_id, partition_id } = ns.kind() {
                prop_assert_eq!(Namespace::partition(stream_id, topic_id, partition_id), Ok(ns));
            } else {
                prop_assert!(raw == 0 || raw >> 63 == 1);
            }
        }
    }
}
