//! Who dials whom, and how soon to retry.
//!
//! Rule: replica i dials every replica j > i and accepts connections from
//! every replica j < i. Exactly one connection per pair is then ever
//! attempted, so two replicas never race two connections into one owner slot
//! and neither needs a tie-break.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// The first reconnect delay.
pub const RECONNECT_DELAY_MIN_MS: u64 = 50;
/// Reconnect delays double up to this bound.
pub const RECONNECT_DELAY_MAX_MS: u64 = 5_000;
const _: () = assert!(RECONNECT_DELAY_MIN_MS > 0 && RECONNECT_DELAY_MIN_MS <= RECONNECT_DELAY_MAX_MS);

/// The replicas `local` dials, in order.
pub fn replicas_to_dial(local: u8, replica_count: u8) -> impl Iterator<Item = u8> {
    assert!(local < replica_count);
    (local + 1)..replica_count
}

/// Whether `local` accepts a connection from replica `remote`.
pub fn accepts_from(local: u8, remote: u8) -> bool {
    remote < local
}

/// Jittered exponential backoff for one peer. The PRNG is seeded by the
/// caller, so a test (or the simulator) replays the same delays.
#[derive(Debug)]
pub struct Backoff {
    attempts: u32,
    prng: ChaCha8Rng,
}

impl Backoff {
    pub fn new(seed: u64) -> Backoff {
        Backoff { attempts: 0, prng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// The delay before the next attempt, in `[ceiling / 2, ceiling]` where the
    /// ceiling doubles per failure up to `RECONNECT_DELAY_MAX_MS`. The jitter
    /// keeps a restarted cluster's replicas from redialling in lockstep.
    pub fn next_delay_ms(&mut self) -> u64 {
        let ceiling = RECONNECT_DELAY_MIN_MS.saturating_mul(1u64 << self.attempts.min(20)).min(RECONNECT_DELAY_MAX_MS);
        self.attempts = self.attempts.saturating_add(1);
        let floor = ceiling / 2;
        let delay = floor + self.prng.next_u64() % (ceiling - floor + 1);
        debug_assert!(delay <= RECONNECT_DELAY_MAX_MS);
        delay
    }

    /// A connection completed its handshake: start again from the minimum.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_is_dialed_exactly_once_by_the_lower_index() {
        for count in [1u8, 3, 5] {
            let mut pairs = Vec::new();
            for local in 0..count {
                for remote in replicas_to_dial(local, count) {
                    assert!(accepts_from(remote, local));
                    assert!(!accepts_from(local, remote));
                    pairs.push((local, remote));
                }
            }
            assert_eq!(pairs.len(), usize::from(count) * usize::from(count.saturating_sub(1)) / 2);
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_is_bounded_and_replays_from_its_seed() {
        let mut backoff = Backoff::new(42);
        let delays: Vec<u64> = (0..12).map(|_| backoff.next_delay_ms()).collect();
        assert!(delays[0] >= RECONNECT_DELAY_MIN_MS / 2 && delays[0] <= RECONNECT_DELAY_MIN_MS);
        assert!(delays.iter().all(|delay| *delay <= RECONNECT_DELAY_MAX_MS));
        assert!(delays[11] >= RECONNECT_DELAY_MAX_MS / 2, "{delays:?}");
        let mut again = Backoff::new(42);
        assert_eq!((0..12).map(|_| again.next_delay_ms()).collect::<Vec<_>>(), delays);
        backoff.reset();
        assert!(backoff.next_delay_ms() <= RECONNECT_DELAY_MIN_MS);
    }
}
