//! Reconnect backoff: kube-runtime's defaults (800 ms doubling to 30 s, jittered), so many
//! senders do not reconnect in lockstep. kube-runtime resets after a healthy period; the
//! link resets after a session that worked (the receiver acknowledged data in it) or lasted
//! [`HEALTHY_AFTER`], so a receiver restarted after a short session is met with the first
//! delay, not with what earlier failures built up. A receiver that accepts and drops every
//! session before acknowledging anything still backs the sender off.

use std::time::Duration;

use rand::Rng;

/// First delay.
pub const INITIAL: Duration = Duration::from_millis(800);
/// Largest delay.
pub const MAX: Duration = Duration::from_secs(30);
/// A session that lasted this long resets the backoff.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// Exponential backoff with jitter: the n-th delay is uniformly random in `[d/2, d]` where
/// `d = min(800 ms × 2ⁿ, 30 s)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    /// A fresh backoff.
    pub fn new() -> Self {
        Backoff { next: INITIAL }
    }

    /// The ceiling of the next delay (before jitter).
    pub fn ceiling(&self) -> Duration {
        self.next
    }

    /// The next delay, jittered; doubles the ceiling up to [`MAX`].
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(MAX);
        let half = d / 2;
        half + half.mul_f64(rand::rng().random_range(0.0..=1.0))
    }

    /// Back to [`INITIAL`] after a healthy period.
    pub fn reset(&mut self) {
        self.next = INITIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_the_cap_with_jitter_below_the_ceiling() {
        let mut b = Backoff::new();
        let mut ceiling = INITIAL;
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} vs {ceiling:?}");
            ceiling = (ceiling * 2).min(MAX);
        }
        assert_eq!(b.ceiling(), MAX);
        b.reset();
        assert_eq!(b.ceiling(), INITIAL);
    }

    #[test]
    fn jitter_spreads_senders() {
        let delays: Vec<Duration> = (0..20).map(|_| Backoff::new().next_delay()).collect();
        assert!(delays.iter().any(|d| *d != delays[0]), "{delays:?}");
    }
}
