//! The reference API's own error codes. Each is answered with its status and listed in the
//! OpenAPI document (`x-error-codes`) with steward's, from this one list.

use steward::ErrorCode;

/// A kv key outside the allowed alphabet or length.
pub const INVALID_KEY: ErrorCode = ErrorCode::new(
    400,
    "invalid_key",
    "keys are 1-200 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'",
);
/// A TTL out of range.
pub const INVALID_TTL: ErrorCode = ErrorCode::new(400, "invalid_ttl", "the TTL is out of range");
/// A kv value over `kv.max_value_size`.
pub const VALUE_TOO_LARGE: ErrorCode = ErrorCode::new(
    413,
    "value_too_large",
    "the value is larger than kv.max_value_size",
);
/// No value under the key.
pub const KEY_NOT_FOUND: ErrorCode =
    ErrorCode::new(404, "key_not_found", "no value under this key");
/// No such account.
pub const ACCOUNT_NOT_FOUND: ErrorCode =
    ErrorCode::new(404, "account_not_found", "the account does not exist");
/// An account name that is empty, too long or holds NUL.
pub const INVALID_NAME: ErrorCode = ErrorCode::new(
    422,
    "invalid_name",
    "name is 1-100 characters, none of them NUL",
);
/// A negative initial balance.
pub const INVALID_BALANCE: ErrorCode =
    ErrorCode::new(422, "invalid_balance", "initial_balance is an integer >= 0");
/// A transfer without `Idempotency-Key`.
pub const MISSING_IDEMPOTENCY_KEY: ErrorCode = ErrorCode::new(
    400,
    "missing_idempotency_key",
    "transfers need an Idempotency-Key header",
);
/// The same `Idempotency-Key` with another request.
pub const IDEMPOTENCY_KEY_REUSED: ErrorCode = ErrorCode::new(
    422,
    "idempotency_key_reused",
    "this Idempotency-Key was used with a different request",
);
/// A transfer amount that is not positive.
pub const INVALID_AMOUNT: ErrorCode =
    ErrorCode::new(422, "invalid_amount", "amount is an integer > 0");
/// A transfer from an account to itself.
pub const SAME_ACCOUNT: ErrorCode = ErrorCode::new(422, "same_account", "from and to must differ");
/// The source account holds less than the amount.
pub const INSUFFICIENT_FUNDS: ErrorCode = ErrorCode::new(
    409,
    "insufficient_funds",
    "the source account holds less than the amount",
);
/// The target's balance would overflow.
pub const AMOUNT_OVERFLOW: ErrorCode = ErrorCode::new(
    422,
    "amount_overflow",
    "the target account cannot hold that much",
);
/// A lock TTL out of range.
pub const INVALID_LOCK_TTL: ErrorCode =
    ErrorCode::new(422, "invalid_ttl", "ttl_ms is from 100 to 600000");
/// A lock wait out of range.
pub const INVALID_WAIT: ErrorCode =
    ErrorCode::new(422, "invalid_wait", "wait_ms is from 0 to 30000");
/// Another holder has the lock.
pub const LOCK_HELD: ErrorCode = ErrorCode::new(409, "lock_held", "another holder has this lock");
/// The token does not hold the lock.
pub const NOT_LOCK_OWNER: ErrorCode =
    ErrorCode::new(409, "not_lock_owner", "this token does not hold the lock");
/// A release without `Lock-Token`.
pub const MISSING_LOCK_TOKEN: ErrorCode = ErrorCode::new(
    400,
    "missing_lock_token",
    "send the lock's token in Lock-Token",
);
/// A job kind nobody registered.
pub const UNKNOWN_JOB_KIND: ErrorCode = ErrorCode::new(
    422,
    "unknown_job_kind",
    "no handler is registered for this kind",
);
/// `max_attempts` out of range.
pub const INVALID_MAX_ATTEMPTS: ErrorCode =
    ErrorCode::new(422, "invalid_max_attempts", "max_attempts is from 1 to 25");
/// `delay_ms` out of range.
pub const INVALID_DELAY: ErrorCode =
    ErrorCode::new(422, "invalid_delay", "delay_ms is from 0 to a week");
/// The job queue holds `workers.max_queued` jobs.
pub const QUEUE_FULL: ErrorCode =
    ErrorCode::new(503, "queue_full", "the job queue is full; retry later");
/// No such job.
pub const JOB_NOT_FOUND: ErrorCode = ErrorCode::new(404, "job_not_found", "no such job");
/// No such dead job.
pub const DEAD_JOB_NOT_FOUND: ErrorCode =
    ErrorCode::new(404, "dead_job_not_found", "no dead job with this id");

/// Every code of the reference API.
pub const ALL: &[ErrorCode] = &[
    INVALID_KEY,
    INVALID_TTL,
    VALUE_TOO_LARGE,
    KEY_NOT_FOUND,
    ACCOUNT_NOT_FOUND,
    INVALID_NAME,
    INVALID_BALANCE,
    MISSING_IDEMPOTENCY_KEY,
    IDEMPOTENCY_KEY_REUSED,
    INVALID_AMOUNT,
    SAME_ACCOUNT,
    INSUFFICIENT_FUNDS,
    AMOUNT_OVERFLOW,
    INVALID_LOCK_TTL,
    INVALID_WAIT,
    LOCK_HELD,
    NOT_LOCK_OWNER,
    MISSING_LOCK_TOKEN,
    UNKNOWN_JOB_KIND,
    INVALID_MAX_ATTEMPTS,
    INVALID_DELAY,
    QUEUE_FULL,
    JOB_NOT_FOUND,
    DEAD_JOB_NOT_FOUND,
];

/// The code named `name` with `status`, as a stored answer recorded it (a transfer's
/// refusal is stored with the idempotency key and replayed from there).
pub fn find(status: u16, name: &str) -> Option<ErrorCode> {
    ALL.iter()
        .chain(steward::codes::ALL)
        .find(|code| code.code == name && code.status == status)
        .copied()
}
