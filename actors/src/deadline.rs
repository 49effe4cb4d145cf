//! The moment by which a caller needs its answer, carried inside the store messages.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::StoreError;

/// When the caller of a store message stops waiting: a request's deadline (its route's
/// `[deadlines]` entry, lowered by a client's `Request-Timeout`), or a job run's end.
///
/// Why it travels inside the message: an actor handles a message in its own task, so nothing
/// of the caller's (a task-local, a dropped future) reaches it. With the deadline in the
/// message, a store call whose caller has already given up is never started, and one that is
/// running is bounded by whichever is shorter, the store's own timeout or what remains of the
/// caller's budget. `Deadline::NONE` leaves the store's own timeout alone.
///
/// ```
/// use std::time::Duration;
/// use steward_actors::deadline::Deadline;
///
/// let deadline = Deadline::after(Duration::from_millis(50));
/// // A store whose own timeout is 250 ms waits at most what remains of the 50 ms.
/// let (wait, callers) = deadline.bound(Duration::from_millis(250)).unwrap();
/// assert!(wait <= Duration::from_millis(50) && callers);
/// assert_eq!(Deadline::NONE.bound(Duration::from_millis(250)).unwrap().0, Duration::from_millis(250));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline: the store's own timeout alone bounds the call.
    pub const NONE: Deadline = Deadline(None);

    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self(Instant::now().checked_add(budget))
    }

    /// A deadline at `instant`.
    pub fn at(instant: Instant) -> Self {
        Self(Some(instant))
    }

    /// The instant, if there is one.
    pub fn instant(self) -> Option<Instant> {
        self.0
    }

    /// What remains of the budget (zero once it passed); `None` without a deadline.
    pub fn remaining(self) -> Option<Duration> {
        self.0
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed.
    pub fn expired(self) -> bool {
        self.remaining().is_some_and(|left| left.is_zero())
    }

    /// The earlier of the two.
    pub fn min(self, other: Deadline) -> Deadline {
        match (self.0, other.0) {
            (Some(a), Some(b)) => Deadline(Some(a.min(b))),
            (a, b) => Deadline(a.or(b)),
        }
    }

    /// How long a store call with its own `timeout` may take: the shorter of the two, and
    /// whether that is the caller's budget (`true`) rather than the store's timeout. An expired
    /// deadline is `Err(DeadlineExceeded)`: the call must not start.
    pub fn bound(self, timeout: Duration) -> Result<(Duration, bool), StoreError> {
        match self.remaining() {
            Some(left) if left.is_zero() => Err(StoreError::DeadlineExceeded),
            Some(left) if left < timeout => Ok((left, true)),
            _ => Ok((timeout, false)),
        }
    }

    /// Runs `work` within the shorter of `timeout` and the remaining budget. Running out of
    /// the store's timeout is `Timeout` (the store was slow: it counts against the store's
    /// breaker); running out of the caller's budget is `DeadlineExceeded` (it does not).
    pub async fn run<T>(
        self,
        timeout: Duration,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let (wait, callers) = self.bound(timeout)?;
        match actix_rt::time::timeout(wait, work).await {
            Ok(result) => result,
            Err(_) if callers => Err(StoreError::DeadlineExceeded),
            Err(_) => Err(StoreError::Timeout),
        }
    }
}
