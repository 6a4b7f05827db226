//! Shard ids, the checked shard count, and the replica owner table.
//!
//! Owns which shard holds the connection to each peer replica. Exactly one
//! shard owns a replica's connection; every other shard sends to that replica
//! through the owner. The table is shared by all shards of one process, so it
//! is a fixed array of atomics written only with compare-and-swap: a stamp
//! never overwrites another shard's claim, and a clear never erases one.
//!
//! Must not touch connections themselves: the shard that connects or
//! disconnects calls `stamp` / `clear`; the table only records the outcome.

use std::sync::atomic::{AtomicU16, Ordering};

use crate::wire::hello::Peer;

/// The slot value of a replica no shard is connected to.
pub const OWNER_NONE: u16 = u16::MAX;
/// The largest shard count: every shard id must differ from `OWNER_NONE`.
pub const SHARD_COUNT_MAX: usize = OWNER_NONE as usize - 1;
/// Peer replicas one table tracks (header `replica` is a `u8`).
pub const REPLICA_COUNT_MAX: usize = 32;

/// One shard (thread) of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct ShardId(pub u16);

impl ShardId {
    /// Shard 0 holds the metadata group and every frame not bound to a partition.
    pub const METADATA: ShardId = ShardId(0);

    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// How many shards this process runs: 1..=`SHARD_COUNT_MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShardCount(u16);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShardCountError {
    #[error("shard count is 0: set sharding.cpu_allocation to `all`, a CPU list such as `0-3`, or numa:N")]
    ShardsCountZero,
    #[error(
        "shard count {count} exceeds the owner table limit {max}: set sharding.cpu_allocation to at most {max} CPUs"
    )]
    ShardsCountOverflow { count: usize, max: usize },
}

impl ShardCount {
    pub fn new(count: usize) -> Result<ShardCount, ShardCountError> {
        if count == 0 {
            return Err(ShardCountError::ShardsCountZero);
        }
        if count > SHARD_COUNT_MAX {
            return Err(ShardCountError::ShardsCountOverflow { count, max: SHARD_COUNT_MAX });
        }
        Ok(ShardCount(count as u16))
    }

    pub fn get(self) -> u16 {
        self.0
    }

    pub fn contains(self, shard: ShardId) -> bool {
        shard.0 < self.0
    }

    /// Every shard id, in order.
    pub fn shards(self) -> impl Iterator<Item = ShardId> {
        (0..self.0).map(ShardId)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    #[error(
        "replica {replica} is not in the owner table (it tracks {replica_count}); check the cluster's replica count"
    )]
    UnknownReplica { replica: u8, replica_count: usize },
    #[error("shard {shard:?} is not a shard of this process ({shard_count} shards); this is a bug in the caller")]
    UnknownShard { shard: ShardId, shard_count: u16 },
    #[error("replica {replica} is already owned by shard {owner:?}; close the duplicate connection on shard {shard:?}")]
    AlreadyOwned { replica: u8, owner: ShardId, shard: ShardId },
    #[error("replica {replica} is owned by {owner:?}, not by shard {shard:?}; nothing was cleared")]
    NotOwner { replica: u8, owner: Option<ShardId>, shard: ShardId },
}

/// One `AtomicU16` per peer replica: the shard holding its connection, or `OWNER_NONE`.
#[derive(Debug)]
pub struct ReplicaOwnerTable {
    slots: Vec<AtomicU16>,
    shard_count: ShardCount,
}

impl ReplicaOwnerTable {
    pub fn new(replica_count: usize, shard_count: ShardCount) -> ReplicaOwnerTable {
        assert!(replica_count > 0 && replica_count <= REPLICA_COUNT_MAX, "replica count {replica_count}");
        ReplicaOwnerTable { slots: (0..replica_count).map(|_| AtomicU16::new(OWNER_NONE)).collect(), shard_count }
    }

    pub fn replica_count(&self) -> usize {
        self.slots.len()
    }

    fn slot(&self, replica: u8) -> Result<&AtomicU16, OwnerError> {
        self.slots
            .get(usize::from(replica))
            .ok_or(OwnerError::UnknownReplica { replica, replica_count: self.slots.len() })
    }

    fn check_shard(&self, shard: ShardId) -> Result<(), OwnerError> {
        if self.shard_count.contains(shard) {
            Ok(())
        } else {
            Err(OwnerError::UnknownShard { shard, shard_count: self.shard_count.get() })
        }
    }

    /// Claim `replica` for `shard`. Succeeds when the slot was free or already
    /// ours (a reconnect on the same shard); fails when another shard owns it.
    pub fn stamp(&self, replica: u8, shard: ShardId) -> Result<(), OwnerError> {
        self.check_shard(shard)?;
        debug_assert_ne!(shard.0, OWNER_NONE);
        let slot = self.slot(replica)?;
        match slot.compare_exchange(OWNER_NONE, shard.0, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(()),
            Err(current) if current == shard.0 => Ok(()),
            Err(current) => Err(OwnerError::AlreadyOwned { replica, owner: ShardId(current), shard }),
        }
    }

    /// Release `replica` if `shard` owns it. A clear by a non-owner changes
    /// nothing and says who the owner is: a late disconnect on one shard must
    /// not erase a newer connection's claim on another.
    pub fn clear(&self, replica: u8, shard: ShardId) -> Result<(), OwnerError> {
        self.check_shard(shard)?;
        let slot = self.slot(replica)?;
        match slot.compare_exchange(shard.0, OWNER_NONE, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(()),
            Err(current) => Err(OwnerError::NotOwner { replica, owner: owner_of(current), shard }),
        }
    }

    /// A newer connection of `replica`, on shard `to`, replaces the one that
    /// `from` holds (the peer reconnected before the old connection's close
    /// was seen). Only from the owner the caller names: if the slot changed
    /// meanwhile, nothing changes and the error says who owns it. The old
    /// connection's later `clear` by `from` then fails with `NotOwner` and
    /// leaves the newer claim alone.
    pub fn take_over(&self, replica: u8, from: ShardId, to: ShardId) -> Result<(), OwnerError> {
        self.check_shard(from)?;
        self.check_shard(to)?;
        let slot = self.slot(replica)?;
        match slot.compare_exchange(from.0, to.0, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(()),
            Err(current) => Err(OwnerError::NotOwner { replica, owner: owner_of(current), shard: from }),
        }
    }

    /// The shard holding `replica`'s connection, if any (and `None` for a replica not in the table).
    pub fn owner(&self, replica: u8) -> Option<ShardId> {
        let slot = self.slots.get(usize::from(replica))?;
        owner_of(slot.load(Ordering::Acquire))
    }

    /// Every slot, in replica order; for the simulator's owner-table checker.
    pub fn snapshot(&self) -> Vec<Option<ShardId>> {
        self.slots.iter().map(|slot| owner_of(slot.load(Ordering::Acquire))).collect()
    }
}

fn owner_of(raw: u16) -> Option<ShardId> {
    if raw == OWNER_NONE { None } else { Some(ShardId(raw)) }
}

/// The shard of replica `local`'s process that holds its connection to
/// `peer`, in the server and in the simulator alike: the pair of replicas
/// `a`, `b` on shard `(a + b) % shards` at both ends (symmetric, so both
/// ends hold their one connection on the same shard index, and a cluster's
/// pairs spread over the shards); a client on shard `id % shards`, a pure
/// function, so replies need no table.
pub fn connection_shard(local: u8, peer: Peer, shard_count: ShardCount) -> ShardId {
    let key = match peer {
        Peer::Replica(remote) => u128::from(local) + u128::from(remote),
        Peer::Client(id) => id,
    };
    let shard = ShardId(u16::try_from(key % u128::from(shard_count.get())).expect("below the shard count"));
    debug_assert!(shard_count.contains(shard));
    shard
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_replica_pair_shares_one_shard_index_and_clients_spread_by_id() {
        let shards = super::ShardCount::new(2).unwrap();
        for (a, b) in [(0, 1), (0, 2), (1, 2)] {
            assert_eq!(
                super::connection_shard(a, crate::wire::hello::Peer::Replica(b), shards),
                super::connection_shard(b, crate::wire::hello::Peer::Replica(a), shards),
                "both ends of {a}-{b} hold it on one shard index"
            );
        }
        // Three replicas' pairs land on both shards.
        let pairs: Vec<u16> = [(0, 1), (0, 2), (1, 2)]
            .iter()
            .map(|&(a, b)| super::connection_shard(a, crate::wire::hello::Peer::Replica(b), shards).0)
            .collect();
        assert_eq!(pairs, [1, 0, 1]);
        assert_eq!(super::connection_shard(2, crate::wire::hello::Peer::Client(6), shards), super::ShardId(0));
        assert_eq!(super::connection_shard(2, crate::wire::hello::Peer::Client(7), shards), super::ShardId(1));
        let one = super::ShardCount::new(1).unwrap();
        assert_eq!(super::connection_shard(2, crate::wire::hello::Peer::Client(u128::MAX), one), super::ShardId(0));
    }

    #[test]
    fn a_replaced_connection_cannot_clear_its_successor() {
        let table = super::ReplicaOwnerTable::new(3, super::ShardCount::new(4).unwrap());
        let (old, new) = (super::ShardId(1), super::ShardId(2));
        table.stamp(1, old).unwrap();
        table.take_over(1, old, new).unwrap();
        assert_eq!(table.owner(1), Some(new));
        assert_eq!(
            table.clear(1, old),
            Err(super::OwnerError::NotOwner { replica: 1, owner: Some(new), shard: old }),
            "the old connection's disconnect leaves the newer claim"
        );
        assert_eq!(table.owner(1), Some(new));
        assert_eq!(
            table.take_over(1, old, super::ShardId(3)),
            Err(super::OwnerError::NotOwner { replica: 1, owner: Some(new), shard: old }),
            "a take-over names the owner it replaces"
        );
        table.clear(1, new).unwrap();
        assert_eq!(table.owner(1), None);
    }

    use super::*;

    fn table() -> ReplicaOwnerTable {
        ReplicaOwnerTable::new(3, ShardCount::new(4).unwrap())
    }

    #[test]
    fn shard_count_zero_and_overflow_are_distinct_errors() {
        assert_eq!(ShardCount::new(0), Err(ShardCountError::ShardsCountZero));
        assert_eq!(
            ShardCount::new(usize::from(OWNER_NONE)),
            Err(ShardCountError::ShardsCountOverflow { count: 65535, max: 65534 })
        );
        assert_eq!(ShardCount::new(SHARD_COUNT_MAX).unwrap().get(), 65534);
        let message = ShardCountError::ShardsCountZero.to_string();
        assert!(message.contains("sharding.cpu_allocation"), "{message}");
    }

    #[test]
    fn stamp_then_owner_then_clear() {
        let table = table();
        assert_eq!(table.owner(1), None);
        table.stamp(1, ShardId(2)).unwrap();
        assert_eq!(table.owner(1), Some(ShardId(2)));
        table.clear(1, ShardId(2)).unwrap();
        assert_eq!(table.owner(1), None);
    }

    #[test]
    fn second_shard_cannot_steal_a_replica() {
        let table = table();
        table.stamp(0, ShardId(1)).unwrap();
        assert_eq!(
            table.stamp(0, ShardId(3)),
            Err(OwnerError::AlreadyOwned { replica: 0, owner: ShardId(1), shard: ShardId(3) })
        );
        assert_eq!(table.owner(0), Some(ShardId(1)));
        // Re-stamping by the owner is idempotent.
        table.stamp(0, ShardId(1)).unwrap();
    }

    #[test]
    fn late_clear_by_a_non_owner_keeps_the_owner() {
        let table = table();
        table.stamp(2, ShardId(0)).unwrap();
        assert_eq!(
            table.clear(2, ShardId(3)),
            Err(OwnerError::NotOwner { replica: 2, owner: Some(ShardId(0)), shard: ShardId(3) })
        );
        assert_eq!(table.owner(2), Some(ShardId(0)));
        table.clear(2, ShardId(0)).unwrap();
        assert_eq!(
            table.clear(2, ShardId(0)),
            Err(OwnerError::NotOwner { replica: 2, owner: None, shard: ShardId(0) })
        );
    }

    #[test]
    fn unknown_replica_and_shard_are_typed_errors() {
        let table = table();
        assert_eq!(table.stamp(3, ShardId(0)), Err(OwnerError::UnknownReplica { replica: 3, replica_count: 3 }));
        assert_eq!(table.stamp(0, ShardId(4)), Err(OwnerError::UnknownShard { shard: ShardId(4), shard_count: 4 }));
        assert_eq!(table.owner(200), None);
        assert_eq!(table.snapshot(), vec![None, None, None]);
    }
}
