//! The one error type every store actor answers with.

use thiserror::Error;

/// What went wrong talking to a store, in terms the HTTP edge can map to a status code in one
/// place (503, 504, 409, 404, 422, 500).
///
/// The `String` payloads are for the log: the HTTP edge never echoes `Unavailable` or `Internal`
/// details to a client, because they carry backend messages (hosts, SQL, driver errors).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store (or the actor in front of it) cannot be reached right now; retrying later may
    /// work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer within its own timeout.
    #[error("store timed out")]
    Timeout,
    /// No pooled connection came free in time: every connection was busy with other calls.
    /// The store answers, just not fast enough for the load, so unlike `Timeout` it does not
    /// count against the store's breaker (shedding load is the edge's work).
    #[error("no pooled connection came free in time")]
    PoolTimeout,
    /// The caller's deadline (see [`Deadline`](crate::deadline::Deadline)) ran out before the
    /// store answered, or before the call could start. Unlike `Timeout` it says nothing about
    /// the store, so it does not count against the store's breaker.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The store's [`Breaker`](crate::breaker::Breaker) is open: the store failed repeatedly and
    /// calls fail at once instead of waiting for it, until a probe finds it back.
    #[error("store {store} is failing (breaker open): {cause}")]
    BreakerOpen {
        /// The breaker's store name.
        store: &'static str,
        /// When the next probe may go through: what `Retry-After` tells a client.
        retry_in: std::time::Duration,
        /// The last failure seen, for the log.
        cause: String,
    },
    /// The operation conflicts with the current state (lock held, version mismatch, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store aborted the operation because of concurrent work (serialization failure,
    /// deadlock); running it again may succeed.
    #[error("contention: {0}")]
    Contention(String),
    /// The thing asked for does not exist.
    #[error("not found")]
    NotFound,
    /// The request itself cannot be carried out (bad argument for the store).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The request carries more than the store accepts in one item (a job's payload).
    #[error("too large: {0}")]
    TooLarge(String),
    /// The store holds as much as it is allowed to (a bounded queue); retrying later may work.
    #[error("full: {0}")]
    Full(String),
    /// A bug or an unexpected answer from the store.
    #[error("internal store error: {0}")]
    Internal(String),
}

impl From<actix::MailboxError> for StoreError {
    /// A closed mailbox means the actor is between incarnations (it crashed and the supervisor
    /// is restarting it): that is unavailability, not a bug.
    fn from(error: actix::MailboxError) -> Self {
        match error {
            actix::MailboxError::Closed => StoreError::Unavailable("actor is restarting".into()),
            actix::MailboxError::Timeout => StoreError::Timeout,
        }
    }
}
