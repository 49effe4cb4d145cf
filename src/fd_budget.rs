//! The file-descriptor budget: every connection the service may hold must fit under
//! `RLIMIT_NOFILE`, or past it each accept fails with "Too many open files" (logged every
//! half second by actix-server) while the pools cannot open connections either.
//!
//! At start-up the soft limit is raised to the hard one, then the budget is counted: the
//! HTTP connections (`server.max_connections` per worker), every pool at its largest, and a
//! reserve for the process itself (listeners, each worker thread's epoll and wake-up fds,
//! stdio, files it reads). What does not fit is clamped with a warning; a limit too small to
//! serve [`MIN_CONNECTIONS`] per worker refuses to start.

use crate::config::Settings;

/// Descriptors the process holds besides connections.
const RESERVE: u64 = 64;
/// Descriptors per thread with a runtime of its own (epoll, eventfd, timers).
const PER_THREAD: u64 = 4;
/// Fewest HTTP connections per worker worth starting with.
pub const MIN_CONNECTIONS: usize = 64;
/// Redis pools: the cache, the locks, the rate limiter and the job worker, each with a shared
/// multiplexed connection besides its pool.
const REDIS_POOLS: u64 = 4;

/// What the budget allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// The descriptor limit in force (after raising the soft limit).
    pub limit: u64,
    /// `server.max_connections`, or less when that does not fit.
    pub max_connections: usize,
    /// Whether `max_connections` was lowered.
    pub clamped: bool,
}

/// Why the connections cannot fit under the descriptor limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("cannot read the file descriptor limit: {0}")]
    Unreadable(String),
    #[error(
        "the file descriptor limit ({limit}) leaves room for {room} connections per HTTP worker \
         ({workers} workers, {pools} pooled store connections, {RESERVE} reserved); raise it \
         (ulimit -n, or the container's nofile limit) or lower server.workers and the pools' \
         max_size"
    )]
    TooLow {
        limit: u64,
        room: u64,
        workers: u64,
        pools: u64,
    },
}

/// HTTP worker threads the server starts (`server.workers`, 0 meaning actix-web's default).
pub fn http_workers(settings: &Settings) -> usize {
    match settings.server.workers {
        0 => std::thread::available_parallelism().map_or(2, usize::from),
        n => n,
    }
}

/// Raises the soft descriptor limit to the hard one and fits the settings under it.
pub fn fit(settings: &Settings) -> Result<Budget, BudgetError> {
    let limit = raise_nofile_limit()?;
    fit_under(settings, limit)
}

/// Fits the settings under a descriptor `limit`.
pub fn fit_under(settings: &Settings, limit: u64) -> Result<Budget, BudgetError> {
    let workers = http_workers(settings) as u64;
    let pools = REDIS_POOLS * (u64::from(settings.redis.pool.max_size) + 1)
        + u64::from(settings.postgres.pool.max_size)
        + 2;
    // The HTTP workers, the system arbiter and the metrics listener's worker.
    let fixed = RESERVE + PER_THREAD * (workers + 2) + pools;
    let wanted = settings.server.max_connections as u64;
    let room = limit.saturating_sub(fixed) / workers.max(1);
    if room >= wanted {
        return Ok(Budget {
            limit,
            max_connections: settings.server.max_connections,
            clamped: false,
        });
    }
    if room < MIN_CONNECTIONS as u64 {
        return Err(BudgetError::TooLow {
            limit,
            room,
            workers,
            pools,
        });
    }
    Ok(Budget {
        limit,
        max_connections: room as usize,
        clamped: true,
    })
}

/// Sets the soft `RLIMIT_NOFILE` to the hard limit; returns the limit now in force.
fn raise_nofile_limit() -> Result<u64, BudgetError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; setrlimit only reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(BudgetError::Unreadable(
                std::io::Error::last_os_error().to_string(),
            ));
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Ok(limit.rlim_cur)
}
