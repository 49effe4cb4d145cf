//! Failed authentications per client address, so credentials cannot be guessed at speed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed authentications per client address: each address may fail `burst` times, then once
/// every `refill`; past that it is answered 429 without its credentials being looked at. At
/// most [`Self::MAX_ADDRESSES`] addresses are tracked; while that many are throttled at once,
/// new addresses are throttled too (failing closed). The admin token and the service's
/// credentials each have one.
pub struct FailureThrottle {
    burst: f64,
    refill: Duration,
    addresses: Mutex<HashMap<IpAddr, Allowance>>,
}

struct Allowance {
    failures_left: f64,
    at: Instant,
}

impl FailureThrottle {
    const MAX_ADDRESSES: usize = 10_000;

    /// `burst` failures at once, then one per `refill`.
    pub fn new(burst: u32, refill: Duration) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            refill: refill.max(Duration::from_millis(1)),
            addresses: Mutex::default(),
        }
    }

    fn refilled(&self, allowance: &Allowance, now: Instant) -> f64 {
        let earned = now.duration_since(allowance.at).as_secs_f64() / self.refill.as_secs_f64();
        (allowance.failures_left + earned).min(self.burst)
    }

    /// How long `address` must wait before trying again; `None` when it may try now.
    pub fn wait(&self, address: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        if !addresses.contains_key(&address) && addresses.len() >= Self::MAX_ADDRESSES {
            addresses.retain(|_, a| self.refilled(a, now) < self.burst);
            if addresses.len() >= Self::MAX_ADDRESSES {
                return Some(self.refill);
            }
        }
        let left = addresses.get(&address).map(|a| self.refilled(a, now))?;
        (left < 1.0).then(|| self.refill.mul_f64(1.0 - left))
    }

    /// Spends one of `address`'s failures.
    pub fn failed(&self, address: IpAddr) {
        let now = Instant::now();
        let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        let left = addresses
            .get(&address)
            .map_or(self.burst, |a| self.refilled(a, now));
        addresses.insert(
            address,
            Allowance {
                failures_left: (left - 1.0).max(0.0),
                at: now,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_throttled_after_its_burst_and_others_are_not() {
        let throttle = FailureThrottle::new(3, Duration::from_secs(60));
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        for _ in 0..3 {
            assert!(throttle.wait(a).is_none());
            throttle.failed(a);
        }
        let wait = throttle.wait(a).expect("throttled after 3 failures");
        assert!(wait <= Duration::from_secs(60));
        assert!(throttle.wait(b).is_none());
    }
}
