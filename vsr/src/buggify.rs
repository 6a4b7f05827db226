//! Buggify: chosen points in the code under test where the simulator may
//! take another path that is just as correct but rarely taken (a short
//! read answer, a smaller fill part, a copy sent the long way), so the
//! code around it meets the rare case in ordinary seeds (FoundationDB's
//! `BUGGIFY`).
//!
//! Owns a per-thread switch and nothing else: off unless a simulated run
//! turns it on (`enable`), so in the server every `buggify!` is false and
//! changes nothing. On, each site is on or off for the whole run (drawn
//! from the run's seed and the site's name: one in `SITE_ON_ONE_IN`), and
//! an on site fires with the run's `fire_ppm`. Every draw comes from the
//! seed and the order of calls, which one simulated run (one thread)
//! makes the same way each time: a seed replays bit for bit.
//!
//! A site must offer only a path the protocol allows (what a slow peer, a
//! full queue or a size bound could also cause): buggify widens what the
//! checkers see, it never injects a fault.

use std::cell::RefCell;

/// A site is on in one run of this many.
pub const SITE_ON_ONE_IN: u64 = 2;

/// What every site's name starts with.
pub const SITE_PREFIX: &str = "buggify_";

/// Every site, by name: the coverage marks (`crate::marks::MARKS`, where
/// each site is listed once and counted when it fires) with the prefix.
pub fn sites() -> impl Iterator<Item = &'static str> {
    crate::marks::MARKS.iter().copied().filter(|name| name.starts_with(SITE_PREFIX))
}

/// A backup does not keep a prepare that arrived ahead of its parent (it
/// asks again a repair round later, as before `Replica::ahead`).
pub const AHEAD_NOT_KEPT: &str = "buggify_ahead_not_kept";
/// A replica answers a catch-up request with one checkpoint chunk (the
/// rest is asked for piece by piece).
pub const CHECKPOINT_ANSWER_ONE_CHUNK: &str = "buggify_checkpoint_answer_one_chunk";
/// A prepare written while its group's checkpoint runs beside the node
/// waits for the checkpoint's end, as one past the bytes its compaction
/// may copy does.
pub const CHECKPOINT_FINISHED_EARLY: &str = "buggify_checkpoint_finished_early";
/// A node appends no state-transfer fill part this tick.
pub const FILL_PART_DEFERRED: &str = "buggify_fill_part_deferred";
/// A fill part appends one message.
pub const FILL_PART_ONE_MESSAGE: &str = "buggify_fill_part_one_message";
/// The journal writes the ring copies of the previous flush to the ring,
/// not carried with the next write.
pub const JOURNAL_COPIES_NOT_CARRIED: &str = "buggify_journal_copies_not_carried";
/// A primary prepares one queued request, not a pack of several.
pub const PACK_OF_ONE: &str = "buggify_pack_of_one";
/// A read is answered with one message (a reply bound could cut it so).
pub const READ_ANSWER_SHORT: &str = "buggify_read_answer_short";
/// A replica answers a read it could serve as unavailable (as one whose
/// log a state transfer left short does; the reader asks another).
pub const READ_UNAVAILABLE: &str = "buggify_read_unavailable";
/// A replica answers a peer's state data request with one message.
pub const STATE_DATA_ANSWER_SHORT: &str = "buggify_state_data_answer_short";
/// A primary refuses a request it would have queued, as if its queue were
/// full (the client backs off and sends it again).
pub const REQUEST_REFUSED_BUSY: &str = "buggify_request_refused_busy";

struct Switch {
    seed: u64,
    fire_ppm: u32,
    draws: u64,
}

thread_local! {
    static SWITCH: RefCell<Option<Switch>> = const { RefCell::new(None) };
}

/// Turn buggify on for this thread's run: sites chosen from `seed`, each
/// on site firing with `fire_ppm` (per million calls).
pub fn enable(seed: u64, fire_ppm: u32) {
    assert!(fire_ppm <= 1_000_000, "a chance is at most a million ppm");
    SWITCH.with(|switch| *switch.borrow_mut() = Some(Switch { seed, fire_ppm, draws: 0 }));
}

/// Turn it off (the server's state; a run's end).
pub fn disable() {
    SWITCH.with(|switch| *switch.borrow_mut() = None);
}

/// Whether `site` takes its other path now. Always false while off.
pub fn fire(site: &'static str) -> bool {
    debug_assert!(
        site.starts_with(SITE_PREFIX) && crate::marks::MARKS.contains(&site),
        "{site} is a buggify mark listed in MARKS"
    );
    let fired = SWITCH.with(|switch| {
        let mut switch = switch.borrow_mut();
        let Some(switch) = switch.as_mut() else { return false };
        if !site_on(switch.seed, site) {
            return false;
        }
        switch.draws += 1;
        mix(switch.seed ^ switch.draws.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % 1_000_000 < u64::from(switch.fire_ppm)
    });
    if fired {
        crate::marks::hit(site);
    }
    fired
}

/// Whether `site` is on for the run of `seed`.
fn site_on(seed: u64, site: &str) -> bool {
    // FNV-1a over the name: stable across builds and platforms.
    let name_hash = site
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3));
    mix(seed ^ name_hash).is_multiple_of(SITE_ON_ONE_IN)
}

/// splitmix64's finaliser.
fn mix(mut value: u64) -> u64 {
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// `buggify!(SITE)`: whether the site takes its other path now (see `fire`).
#[macro_export]
macro_rules! buggify {
    ($site:expr) => {
        $crate::buggify::fire($site)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_never_fires_and_on_fires_at_about_its_rate_on_the_sites_it_chose() {
        disable();
        assert!(sites().all(|site| !fire(site)), "off: no site fires");
        let seed = 7;
        enable(seed, 250_000);
        for site in sites() {
            let fired = (0..4_000).filter(|_| fire(site)).count();
            if site_on(seed, site) {
                assert!((800..1_200).contains(&fired), "{site}: {fired} of 4000 at 25 %");
            } else {
                assert_eq!(fired, 0, "{site} is off this run");
            }
        }
        disable();
        assert!(sites().all(|site| !fire(site)), "off again: no site fires");
        let _ = crate::marks::take();
    }

    #[test]
    fn one_seed_fires_the_same_calls_and_chooses_about_half_the_sites() {
        let sites: Vec<&str> = sites().collect();
        assert!(sites.len() > 1, "the marks list the sites: {sites:?}");
        let draw = |seed| {
            enable(seed, 100_000);
            let fired: Vec<bool> = (0..200).map(|i| fire(sites[i % sites.len()])).collect();
            disable();
            fired
        };
        assert_eq!(draw(11), draw(11), "the same seed, the same calls");
        let on: usize = (0..1000u64).map(|seed| sites.iter().filter(|site| site_on(seed, site)).count()).sum();
        let expected = 1000 * sites.len() / SITE_ON_ONE_IN as usize;
        assert!(on.abs_diff(expected) < expected / 10, "{on} sites on over 1000 seeds, about {expected}");
        let _ = crate::marks::take();
    }
}
