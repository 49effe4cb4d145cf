//! Exponential backoff with jitter, shared by restarts and reconnects.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Delay before the n-th consecutive retry: `min * 2^n`, capped at `max`, with "equal jitter"
/// (half fixed, half random).
///
/// Why jitter: after a shared store comes back, every replica's reconnect (and every restarted
/// actor) would otherwise retry in lockstep. Why only half random: a fully random delay can be
/// near zero, which turns a crash loop into a busy loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// The first delay.
    #[serde(with = "crate::duration")]
    pub min: Duration,
    /// The longest delay, however many attempts came before.
    #[serde(with = "crate::duration")]
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let ceiling = self.min.saturating_mul(factor).min(self.max);
        let half = ceiling / 2;
        let spread = half.as_nanos().min(u64::MAX as u128) as u64;
        half + Duration::from_nanos(rand::rng().random_range(0..=spread))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_bounds() {
        let backoff = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for attempt in 0..40 {
            let ceiling = (Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(20)))
                .min(Duration::from_secs(2));
            let delay = backoff.delay(attempt);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{attempt}: {delay:?}"
            );
        }
    }
}
