//! Where the fault model may take a replica's whole state of a group (a disk
//! wipe, or both copies of its superblock or checkpoint rotting): only where
//! the protocol can still finish every op some log names, so a failed seed
//! is a protocol bug and never a loss beyond the fault model.
//!
//! Losing a replica's state takes two things from the cluster: the copies it
//! held (bodies, and ops it applied), and its nacks (a replica rejoining
//! after the loss may have acknowledged anything its disk held, so it nacks
//! nothing up to its rejoin floor). An op survives the loss if a peer holds
//! its body (or applied it), or if enough peers can still nack it for a view
//! change to truncate it (it then provably was never committed).
//!
//! Swarm seed 4877 is why the second half exists: R0 (view 0's primary)
//! committed op 35 with R2's acknowledgement and answered the client. R2's
//! disk was wiped (the wiped-acker plot); it rejoined view 1, whose log
//! held op 35's header from its own do_view_change, but never repaired the
//! body. Then a random wipe took R0, the last copy: the old rule checked
//! only ops above the victim's own commit point (R0 had applied 35), and no
//! peer knew 35 was committed. Op 35 was gone, an acknowledged write; R1
//! alone could nack it (R2's rejoin floor covered it), one short of the nack
//! quorum, so every view change kept it and waited for its body forever.

use std::collections::{BTreeMap, BTreeSet};

use shoal_vsr::replica::VIEW_HEADERS_MAX;

use super::GroupReplica;

/// What one replica holds of one group, as the fault model sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holding {
    /// Applied through here: the state holds every op at or below.
    pub applied: u64,
    /// Known committed through here.
    pub commit_known: u64,
    /// Its do_view_change nacks nothing at or below this op.
    pub nack_floor: u64,
    /// The head of its log.
    pub head: u64,
    /// The log above `applied`: op to (checksum, body held).
    pub entries: BTreeMap<u64, (u128, bool)>,
}

impl Holding {
    /// A running replica's holding.
    pub fn of_replica(replica: &GroupReplica) -> Holding {
        let applied = replica.commit_min();
        let entries = (applied + 1..=replica.op())
            .filter_map(|op| replica.header(op).map(|h| (op, (h.checksum, replica.has_body(op)))))
            .collect();
        Holding {
            applied,
            commit_known: replica.commit_max(),
            nack_floor: replica.do_view_change_nack_floor(),
            head: replica.op(),
            entries,
        }
    }

    fn holds_body(&self, op: u64, checksum: u128) -> bool {
        self.entries.get(&op) == Some(&(checksum, true))
    }

    /// Holds `op` at all: applied it, or holds some body at it.
    fn holds_op(&self, op: u64) -> bool {
        op <= self.applied || self.entries.get(&op).is_some_and(|(_, body)| *body)
    }

    /// Its next do_view_change would nack this prepare (mirrors
    /// `DoViewChange::nacks`: above its floor and its known commit, within
    /// the view headers it sends, and not held with this checksum).
    fn can_nack(&self, op: u64, checksum: u128) -> bool {
        op > self.nack_floor
            && op > self.commit_known
            && op + VIEW_HEADERS_MAX as u64 > self.head
            && !self.holds_body(op, checksum)
    }
}

/// Why a loss would leave the cluster unable to finish (for tests and traces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unrecoverable {
    /// A committed op whose only copy is the lost one.
    LastCommittedCopy { op: u64 },
    /// A prepare no peer holds and too few peers can nack: no view change
    /// may truncate it, and nobody can repair it.
    NeitherHeldNorNackable { op: u64, nackers: usize },
}

/// May the cluster lose `lost` (one replica's whole state of a group) while
/// `peers` (every other replica, all up and in normal status) keep theirs?
pub fn loss_is_recoverable(lost: &Holding, peers: &[Holding], nack_quorum: usize) -> Result<(), Unrecoverable> {
    assert!(nack_quorum >= 1 && nack_quorum <= peers.len(), "a nack quorum of peers exists");
    // What a peer applied, a lagging replica gets by state transfer.
    let peers_applied = peers.iter().map(|p| p.applied).max().unwrap_or(0);
    let commit_known = peers.iter().chain([lost]).map(|h| h.commit_known).max().unwrap_or(0);
    // Committed ops: the ground truth the sweeps check against, held
    // without relying on any protocol bookkeeping.
    for op in peers_applied + 1..=lost.head.max(lost.applied).min(commit_known) {
        if lost.holds_op(op) && !peers.iter().any(|p| p.holds_op(op)) {
            return Err(Unrecoverable::LastCommittedCopy { op });
        }
    }
    // Every prepare some log names above what a peer applied, committed or
    // not (an op a quorum acknowledged is committed whether or not anyone
    // learnt it yet): a peer holds it, or a nack quorum of peers proves it
    // never was committed. The lost replica nacks nothing after its loss.
    let named: BTreeSet<(u64, u128)> = peers
        .iter()
        .chain([lost])
        .flat_map(|h| h.entries.iter().map(|(&op, &(checksum, _))| (op, checksum)))
        .filter(|&(op, _)| op > peers_applied)
        .collect();
    for (op, checksum) in named {
        if peers.iter().any(|p| p.holds_body(op, checksum)) {
            continue;
        }
        let nackers = peers.iter().filter(|p| p.can_nack(op, checksum)).count();
        if nackers < nack_quorum {
            return Err(Unrecoverable::NeitherHeldNorNackable { op, nackers });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(applied: u64, commit_known: u64, nack_floor: u64, entries: &[(u64, u128, bool)]) -> Holding {
        let head = entries.iter().map(|e| e.0).max().unwrap_or(applied).max(applied);
        let entries = entries.iter().map(|&(op, checksum, body)| (op, (checksum, body))).collect();
        Holding { applied, commit_known, nack_floor, head, entries }
    }

    /// Swarm seed 4877 at R0's wipe (1.08 s): R0 applied op 35 (committed
    /// with R2's acknowledgement, client answered); R1 and R2 hold its
    /// header without the body, and R2's rejoin floor (42, the head R0
    /// reported to its rejoin probe) covers it. R0's copy is the last.
    #[test]
    fn the_last_copy_of_an_op_its_holder_applied_is_not_lost_though_no_peer_knows_it_committed() {
        let r0 = holding(35, 35, 0, &[(36, 0xa36, true)]);
        let r1 = holding(34, 34, 0, &[(35, 0x35, false)]);
        let r2 = holding(34, 34, 42, &[(35, 0x35, false)]);
        assert_eq!(loss_is_recoverable(&r0, &[r1, r2], 2), Err(Unrecoverable::LastCommittedCopy { op: 35 }));
    }

    /// The same op before R0 learnt the acknowledgement (nobody knows it
    /// committed, but a quorum holds it durably): R1 alone can nack it, so
    /// no view change may truncate it; R0's copy is the last.
    #[test]
    fn the_last_copy_of_an_op_a_wiped_peer_acknowledged_is_not_lost() {
        let r0 = holding(34, 34, 0, &[(35, 0x35, true)]);
        let r1 = holding(34, 34, 0, &[(35, 0x35, false)]);
        let r2 = holding(34, 34, 35, &[(35, 0x35, false)]);
        assert_eq!(
            loss_is_recoverable(&r0, &[r1, r2], 2),
            Err(Unrecoverable::NeitherHeldNorNackable { op: 35, nackers: 1 })
        );
    }

    /// An op only the lost primary prepared (no peer acknowledged it): both
    /// peers nack it, a view change truncates it. The nack protocol must
    /// be exercised, so such a loss stays allowed.
    #[test]
    fn the_only_copy_of_an_op_no_peer_acknowledged_may_be_lost() {
        let r0 = holding(34, 34, 0, &[(35, 0x35, true), (36, 0x36, true)]);
        let r1 = holding(34, 34, 0, &[(35, 0x35, false)]);
        let r2 = holding(34, 34, 0, &[]);
        assert_eq!(loss_is_recoverable(&r0, &[r1, r2], 2), Ok(()));
    }

    /// The lost replica held nothing, but its nack was needed: the op's
    /// only holder was lost before, and one peer alone cannot truncate it.
    #[test]
    fn a_loss_that_takes_a_needed_nack_is_refused() {
        let r0 = holding(34, 34, 0, &[]);
        let r1 = holding(34, 34, 0, &[(35, 0x35, false)]);
        let r2 = holding(34, 34, 40, &[(35, 0x35, false)]);
        assert_eq!(
            loss_is_recoverable(&r0, &[r1, r2], 2),
            Err(Unrecoverable::NeitherHeldNorNackable { op: 35, nackers: 1 })
        );
    }

    /// Ops a peer holds or applied survive, whatever the floors.
    #[test]
    fn a_loss_of_copies_peers_hold_is_recoverable() {
        let r0 = holding(30, 35, 50, &[(31, 0x31, true), (35, 0x35, true)]);
        let r1 = holding(33, 35, 50, &[(34, 0x34, true), (35, 0x35, true)]);
        let r2 = holding(30, 35, 50, &[(31, 0x31, true), (35, 0x35, false)]);
        assert_eq!(loss_is_recoverable(&r0, &[r1, r2], 2), Ok(()));
    }
}
