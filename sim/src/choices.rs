//! The choices a simulated node would make at random (which peer to ask for
//! state data), drawn from the seed on a stream of their own.
//!
//! Own stream: how many choices a node makes depends on timing, and drawing
//! them from the fault stream would shift every later fault of the seed
//! whenever the code under test makes one more or one fewer choice. With a
//! stream of their own, a seed keeps its fault schedule across such changes
//! and still explores the choices.
//!
//! Skewed per seed: a uniform draw almost never asks the same peer many
//! times in a row, which is exactly what an unlucky server does (and what
//! hid view-churn seed 588 while the peer came from the fault stream). So
//! each seed picks a favourite draw and a bias toward it: some seeds draw
//! uniformly, others mostly (never only: a peer holding nothing must not
//! wedge state transfer forever) take the favourite.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// Mixed into the seed so this stream is not the fault stream.
const STREAM_SALT: u64 = 0x5EED_C401_CE5E_ED01;
/// The biases a seed may draw, in parts per million: uniform, mostly the
/// favourite, almost always the favourite.
const BIASES_PPM: [u32; 3] = [0, 750_000, 950_000];
const PPM_MAX: u32 = 1_000_000;

#[derive(Debug)]
pub struct NodeChoices {
    rng: ChaCha8Rng,
    bias_ppm: u32,
    favourite: u64,
}

impl NodeChoices {
    pub fn from_seed(seed: u64) -> NodeChoices {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ STREAM_SALT);
        let bias_ppm = BIASES_PPM[(rng.next_u64() % BIASES_PPM.len() as u64) as usize];
        let favourite = rng.next_u64();
        NodeChoices { rng, bias_ppm, favourite }
    }

    /// A draw in `0..bound`.
    pub fn draw(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "a draw needs at least one choice");
        let roll = (self.rng.next_u64() % u64::from(PPM_MAX)) as u32;
        let draw = if roll < self.bias_ppm { self.favourite % bound } else { self.rng.next_u64() % bound };
        debug_assert!(draw < bound);
        draw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_in_bounds_and_replay_from_the_seed() {
        for seed in 0..64 {
            let mut a = NodeChoices::from_seed(seed);
            let mut b = NodeChoices::from_seed(seed);
            for bound in 1..20 {
                let draw = a.draw(bound);
                assert!(draw < bound);
                assert_eq!(draw, b.draw(bound), "the same seed draws the same choices");
            }
        }
    }

    #[test]
    fn seeds_differ_in_bias_and_a_biased_seed_still_draws_every_choice() {
        let biases: std::collections::BTreeSet<u32> =
            (0..64).map(|seed| NodeChoices::from_seed(seed).bias_ppm).collect();
        assert_eq!(biases.len(), BIASES_PPM.len(), "sweeps explore every bias");
        let seed = (0..64).find(|&seed| NodeChoices::from_seed(seed).bias_ppm == 950_000).expect("some seed is biased");
        let mut choices = NodeChoices::from_seed(seed);
        let drawn: std::collections::BTreeSet<u64> = (0..2_000).map(|_| choices.draw(4)).collect();
        assert_eq!(drawn.len(), 4, "a biased seed still reaches every peer");
    }
}
