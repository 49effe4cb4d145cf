//! Polling instead of sleeping: [`eventually`] waits for a condition and, when it times out,
//! says what it last saw.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// What a probe given to [`eventually`] answers: done (with a value), or not yet (with what it
/// saw, for the timeout message).
///
/// `bool` works for a plain condition; a `Result` or an `Option` says more when it fails:
/// answer `Err(what you saw)` while waiting, and the timeout message shows the last one.
pub trait Settled {
    /// What the wait returns once the probe is done.
    type Value;
    /// `Ok(value)` when done; `Err(what was seen)` while not yet.
    fn settled(self) -> Result<Self::Value, String>;
}

impl Settled for bool {
    type Value = ();

    fn settled(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("false".into())
        }
    }
}

impl<T, E: Debug> Settled for Result<T, E> {
    type Value = T;

    fn settled(self) -> Result<T, String> {
        self.map_err(|seen| format!("{seen:?}"))
    }
}

impl<T> Settled for Option<T> {
    type Value = T;

    fn settled(self) -> Result<T, String> {
        self.ok_or_else(|| "None".into())
    }
}

/// Runs `probe` every 20 ms until it is done and returns its value; fails the test after
/// `within` with `what` and the last thing the probe saw.
///
/// ```
/// use std::cell::Cell;
/// use std::time::Duration;
/// use steward::testing::eventually;
/// # actix_rt::System::new().block_on(async {
/// let polls = Cell::new(0);
/// // On a timeout it would panic with
/// // "timed out after 1s waiting for: the third poll; last seen: 2".
/// let seen = eventually(Duration::from_secs(1), "the third poll", || async {
///     polls.set(polls.get() + 1);
///     if polls.get() >= 3 { Ok(polls.get()) } else { Err(polls.get()) }
/// })
/// .await;
/// assert_eq!(seen, 3);
/// # });
/// ```
pub async fn eventually<F, Fut>(
    within: Duration,
    what: &str,
    mut probe: F,
) -> <Fut::Output as Settled>::Value
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Settled,
{
    let deadline = Instant::now() + within;
    loop {
        let seen = match probe().await.settled() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}; last seen: {seen}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
