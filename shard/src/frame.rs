//! `ShardFrame`: everything one shard sends another over its inbox.
//!
//! Owns the frame variants and their names for metrics. Knows nothing of how
//! frames travel (see `channel`) or where they go (see `router`).

use shoal_vsr::Header;

use crate::owner_table::ShardId;

/// One message between shards of the same process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardFrame {
    /// A VSR message between this replica and peer replica `peer`: one
    /// that came in on `peer`'s connection, for the shard that runs its
    /// group; or one a group sends out, for the shard that holds `peer`'s
    /// connection (the owner table's). `peer` is the sender of what comes
    /// in (a header's `replica` is not always: a repaired prepare names its
    /// primary), the destination of what goes out.
    Consensus { peer: u8, header: Header, body: Vec<u8> },
    /// A client request received on `origin_shard`, for the shard that owns
    /// its namespace. The reply goes back as `ClientReply`.
    ClientForward { connection_id: u64, origin_shard: ShardId, header: Header, body: Vec<u8> },
    /// The reply to a `ClientForward`, for the shard holding the client's
    /// connection (`origin_shard`).
    ClientReply { connection_id: u64, origin_shard: ShardId, header: Header, body: Vec<u8> },
    /// Start-up and shutdown; broadcast to every shard rather than routed.
    Lifecycle(Lifecycle),
}

/// Process lifecycle events carried between shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// Shard 0's metadata snapshot bundle (`MetadataState::encode`), sent to
    /// every other shard once the metadata WAL is replayed.
    MetadataSnapshot(Vec<u8>),
    /// Stop: drain nothing more, close connections, return.
    Shutdown,
}

/// The variant of a frame, as a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrameVariant {
    Consensus,
    ClientForward,
    ClientReply,
    Lifecycle,
}

impl FrameVariant {
    pub const ALL: [FrameVariant; 4] =
        [FrameVariant::Consensus, FrameVariant::ClientForward, FrameVariant::ClientReply, FrameVariant::Lifecycle];
    pub const COUNT: usize = Self::ALL.len();

    pub fn name(self) -> &'static str {
        match self {
            FrameVariant::Consensus => "consensus",
            FrameVariant::ClientForward => "client_forward",
            FrameVariant::ClientReply => "client_reply",
            FrameVariant::Lifecycle => "lifecycle",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl ShardFrame {
    pub fn variant(&self) -> FrameVariant {
        match self {
            ShardFrame::Consensus { .. } => FrameVariant::Consensus,
            ShardFrame::ClientForward { .. } => FrameVariant::ClientForward,
            ShardFrame::ClientReply { .. } => FrameVariant::ClientReply,
            ShardFrame::Lifecycle(_) => FrameVariant::Lifecycle,
        }
    }

    /// The VSR header, for frames that carry one.
    pub fn header(&self) -> Option<&Header> {
        match self {
            ShardFrame::Consensus { header, .. }
            | ShardFrame::ClientForward { header, .. }
            | ShardFrame::ClientReply { header, .. } => Some(header),
            ShardFrame::Lifecycle(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_vsr::Command;

    #[test]
    fn variant_names_are_distinct_and_indexes_dense() {
        let names: std::collections::BTreeSet<_> = FrameVariant::ALL.iter().map(|v| v.name()).collect();
        assert_eq!(names.len(), FrameVariant::COUNT);
        for (i, variant) in FrameVariant::ALL.iter().enumerate() {
            assert_eq!(variant.index(), i);
        }
    }

    #[test]
    fn variant_and_header_follow_the_frame() {
        let header = Header::new(Command::Commit, 1);
        let frame = ShardFrame::Consensus { peer: 2, header, body: vec![] };
        assert_eq!(frame.variant(), FrameVariant::Consensus);
        assert_eq!(frame.header(), Some(&header));
        let frame = ShardFrame::Lifecycle(Lifecycle::Shutdown);
        assert_eq!(frame.variant().name(), "lifecycle");
        assert_eq!(frame.header(), None);
    }
}
