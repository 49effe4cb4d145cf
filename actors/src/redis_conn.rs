//! One multiplexed Redis connection leased from the pool and shared by every command of an
//! actor, with Lua scripts run by hash.

use std::cell::RefCell;
use std::time::Duration;

use bb8::PooledConnection;
use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;
use redis::{Cmd, FromRedisValue, ToRedisArgs};

use crate::deadline::Deadline;
use crate::error::StoreError;
use crate::pool::{Evicting, StorePool};
use crate::trace;

/// The Redis pool type every Redis-backed actor owns (with the Redis breaker).
pub type RedisPool = StorePool<RedisConnectionManager>;

type Leased = PooledConnection<'static, Evicting<RedisConnectionManager>>;

/// The connection an actor's commands share.
///
/// Why one leased connection: a Redis connection checked out per command carries one command
/// at a time, so Redis reads one command per socket read. Sharing one multiplexed connection
/// lets Redis read many per read, which is where the throughput is; bb8 still connects, checks
/// and replaces connections. A command that fails on the connection evicts it (flagged broken,
/// so the pool replaces it) and the next command leases a fresh one; so does the first command
/// after the store's breaker saw a fault (the lease predates it and is checked before reuse).
///
/// Every command goes through the pool's [`Breaker`](crate::breaker::Breaker): while it is
/// open, commands fail at once with `BreakerOpen`.
pub struct SharedConnection {
    lease: RefCell<Lease>,
    /// Deadline of one command, including leasing a connection.
    timeout: Duration,
}

#[derive(Default)]
struct Lease {
    conn: Option<Leased>,
    generation: u64,
}

impl SharedConnection {
    /// A slot for the shared connection, with `timeout` on every command.
    pub fn new(timeout: Duration) -> Self {
        Self {
            lease: RefCell::default(),
            timeout,
        }
    }

    async fn connection(
        &self,
        pool: &RedisPool,
        wait: std::time::Duration,
    ) -> Result<(MultiplexedConnection, u64), StoreError> {
        {
            let mut lease = self.lease.borrow_mut();
            match &lease.conn {
                Some(conn) if conn.stale(pool.breaker()) => {
                    // Back to the pool, which checks it before anyone gets it again.
                    lease.conn = None;
                }
                Some(conn) => return Ok(((**conn).clone(), lease.generation)),
                None => {}
            }
        }
        let pooled = pool.checkout(wait).await?;
        let conn = (**pooled).clone();
        let mut lease = self.lease.borrow_mut();
        if lease.conn.is_none() {
            lease.generation += 1;
            lease.conn = Some(pooled);
        }
        Ok((conn, lease.generation))
    }

    fn evict(&self, generation: u64) {
        let mut lease = self.lease.borrow_mut();
        if lease.generation == generation {
            if let Some(mut conn) = lease.conn.take() {
                conn.mark_broken();
            }
        }
    }

    /// Runs `cmd` within the command timeout or what remains of `deadline`, whichever is
    /// shorter; never starts it once the deadline has passed or while the breaker is open.
    pub async fn run<T: FromRedisValue>(
        &self,
        pool: &RedisPool,
        cmd: &Cmd,
        deadline: Deadline,
    ) -> Result<T, StoreError> {
        deadline.bound(self.timeout)?;
        let span = trace::redis_span(cmd);
        let result = match pool.breaker().permit() {
            Ok(permit) => {
                let result = self.attempt(pool, cmd, deadline).await;
                permit.record(&result);
                result
            }
            Err(refused) => Err(refused),
        };
        span.record(&result);
        result
    }

    async fn attempt<T: FromRedisValue>(
        &self,
        pool: &RedisPool,
        cmd: &Cmd,
        deadline: Deadline,
    ) -> Result<T, StoreError> {
        let (wait, callers) = deadline.bound(self.timeout)?;
        let (mut conn, generation) = match self.connection(pool, wait).await {
            Err(StoreError::PoolTimeout) if callers => return Err(StoreError::DeadlineExceeded),
            leased => leased?,
        };
        let (wait, callers) = deadline.bound(self.timeout)?;
        match actix_rt::time::timeout(wait, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                if error.is_io_error()
                    || error.is_connection_dropped()
                    || error.is_unrecoverable_error()
                {
                    self.evict(generation);
                    Err(StoreError::Unavailable(error.to_string()))
                } else if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
                {
                    Err(StoreError::NotFound)
                } else {
                    Err(StoreError::Internal(error.to_string()))
                }
            }
            // The caller's budget ran out, not the store's: the connection is fine.
            Err(_) if callers => Err(StoreError::DeadlineExceeded),
            Err(_) => {
                self.evict(generation);
                Err(StoreError::Timeout)
            }
        }
    }

    /// Runs a Lua script by its hash, loading it on the first `NOSCRIPT`.
    pub async fn eval<T: FromRedisValue>(
        &self,
        pool: &RedisPool,
        script: &LuaScript,
        keys: &[&str],
        args: &[&dyn ToRedisArgsDyn],
        deadline: Deadline,
    ) -> Result<T, StoreError> {
        let build = |verb: &str, body: &str| {
            let mut cmd = redis::cmd(verb);
            cmd.arg(body).arg(keys.len()).arg(keys);
            for arg in args {
                arg.write_to(&mut cmd);
            }
            cmd
        };
        match self
            .run(pool, &build("EVALSHA", &script.hash), deadline)
            .await
        {
            Err(StoreError::NotFound) => {
                self.run(pool, &build("EVAL", script.source), deadline)
                    .await
            }
            other => other,
        }
    }
}

/// A Lua script and its SHA1, as Redis caches it.
pub struct LuaScript {
    source: &'static str,
    hash: String,
}

impl LuaScript {
    /// A script from its Lua source; its digest is computed once.
    pub fn new(source: &'static str) -> Self {
        Self {
            source,
            hash: redis::Script::new(source).get_hash().to_owned(),
        }
    }
}

/// A script argument of any type `redis` can send.
pub trait ToRedisArgsDyn {
    /// Appends the value to a command's arguments.
    fn write_to(&self, cmd: &mut Cmd);
}

impl<T: ToRedisArgs> ToRedisArgsDyn for T {
    fn write_to(&self, cmd: &mut Cmd) {
        cmd.arg(self);
    }
}
