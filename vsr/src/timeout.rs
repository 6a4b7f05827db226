//! Timeouts counted in replica ticks: started, stopped, reset, fired, and
//! backed off with jitter.
//!
//! Owns only counting; the randomness for jitter comes in from the replica's
//! seeded PRNG, so a timeout is as deterministic as the replica. Must not
//! read a clock: time reaches the replica only through `tick`.
//!
//! Why backoff: two replicas whose view-change timeouts fire together start
//! competing view changes (each votes for the view it started), time out
//! together again, and can duel for as long as their timeouts stay in phase.
//! A jitter window that grows with every failed attempt spreads them out;
//! a bound on the growth keeps a healed cluster's recovery time bounded.

/// The jitter window grows to `jitter_ticks << BACKOFF_EXPONENT_MAX` at most.
pub const BACKOFF_EXPONENT_MAX: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeout {
    name: &'static str,
    /// The wait with no backoff and no jitter.
    base_ticks: u64,
    /// The jitter window of the first attempt (0: no jitter).
    jitter_ticks: u64,
    /// The wait of the current attempt: `base_ticks` plus jitter.
    after_ticks: u64,
    /// Backoffs since the last `start`.
    attempts: u32,
    /// Ticks since the last start, reset or backoff.
    ticks: u64,
    ticking: bool,
}

impl Timeout {
    pub fn new(name: &'static str, base_ticks: u64, jitter_ticks: u64) -> Timeout {
        assert!(base_ticks > 0, "timeout {name} must wait at least one tick");
        Timeout { name, base_ticks, jitter_ticks, after_ticks: base_ticks, attempts: 0, ticks: 0, ticking: false }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn is_ticking(&self) -> bool {
        self.ticking
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The wait of the current attempt, in ticks.
    pub fn after_ticks(&self) -> u64 {
        self.after_ticks
    }

    /// Start from scratch: no backoff, a fresh jitter draw.
    pub fn start(&mut self, random: u64) {
        self.attempts = 0;
        self.ticks = 0;
        self.ticking = true;
        self.after_ticks = self.base_ticks + self.jitter(random);
    }

    pub fn stop(&mut self) {
        self.ticking = false;
        self.ticks = 0;
        self.attempts = 0;
    }

    /// Wait the current attempt's time again (e.g. the primary was heard).
    pub fn reset(&mut self) {
        assert!(self.ticking, "reset of stopped timeout {}", self.name);
        self.ticks = 0;
    }

    pub fn tick(&mut self) {
        if self.ticking {
            self.ticks += 1;
        }
    }

    pub fn fired(&self) -> bool {
        self.ticking && self.ticks >= self.after_ticks
    }

    /// The attempt failed: wait again, with a jitter window twice as wide
    /// (up to `BACKOFF_EXPONENT_MAX` doublings).
    pub fn backoff(&mut self, random: u64) {
        assert!(self.ticking, "backoff of stopped timeout {}", self.name);
        self.attempts = self.attempts.saturating_add(1);
        self.ticks = 0;
        self.after_ticks = self.base_ticks + self.jitter(random);
        debug_assert!(self.after_ticks < self.base_ticks + (self.jitter_ticks.max(1) << BACKOFF_EXPONENT_MAX));
    }

    fn jitter(&self, random: u64) -> u64 {
        if self.jitter_ticks == 0 {
            return 0;
        }
        let window = self.jitter_ticks << self.attempts.min(BACKOFF_EXPONENT_MAX);
        random % window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_after_its_ticks_and_not_when_stopped() {
        let mut timeout = Timeout::new("t", 3, 0);
        timeout.tick();
        assert!(!timeout.fired(), "a stopped timeout never fires");
        timeout.start(0);
        timeout.tick();
        timeout.tick();
        assert!(!timeout.fired());
        timeout.tick();
        assert!(timeout.fired());
        timeout.reset();
        assert!(!timeout.fired());
        timeout.stop();
        for _ in 0..10 {
            timeout.tick();
        }
        assert!(!timeout.fired());
    }

    #[test]
    fn backoff_widens_the_jitter_window_up_to_its_cap() {
        let mut timeout = Timeout::new("view_change", 60, 20);
        timeout.start(u64::MAX);
        assert!(timeout.after_ticks() < 80);
        let mut widest = 0;
        for attempt in 1..10 {
            timeout.backoff(u64::MAX - 1);
            assert_eq!(timeout.attempts(), attempt);
            let window = 20 << attempt.min(BACKOFF_EXPONENT_MAX);
            assert_eq!(timeout.after_ticks(), 60 + (u64::MAX - 1) % window);
            widest = widest.max(timeout.after_ticks());
        }
        assert!(widest < 60 + (20 << BACKOFF_EXPONENT_MAX), "the backoff is bounded");
        timeout.start(0);
        assert_eq!(timeout.attempts(), 0);
        assert_eq!(timeout.after_ticks(), 60);
    }

    #[test]
    fn different_draws_spread_competing_timeouts() {
        let mut a = Timeout::new("view_change", 60, 20);
        let mut b = a.clone();
        a.start(3);
        b.start(17);
        assert_ne!(a.after_ticks(), b.after_ticks());
    }
}
