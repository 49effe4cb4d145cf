//! One multiplexed Redis connection leased from the pool and shared by every command of an
//! actor, with Lua scripts run by hash.

use std::cell::RefCell;
use std::time::Duration;

use bb8::{Pool, PooledConnection};
use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;
use redis::{Cmd, FromRedisValue, ToRedisArgs};

use crate::error::StoreError;
use crate::pool::Evicting;

/// The Redis pool type every Redis-backed actor owns.
pub type RedisPool = Pool<Evicting<RedisConnectionManager>>;

type Leased = PooledConnection<'static, Evicting<RedisConnectionManager>>;

/// The connection an actor's commands share.
///
/// Why one leased connection: a Redis connection checked out per command carries one command
/// at a time, so Redis reads one command per socket read. Sharing one multiplexed connection
/// lets Redis read many per read, which is where the throughput is; bb8 still connects, checks
/// and replaces connections. A command that fails on the connection evicts it (flagged broken,
/// so the pool replaces it) and the next command leases a fresh one.
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
    ) -> Result<(MultiplexedConnection, u64), StoreError> {
        if let Some(conn) = &self.lease.borrow().conn {
            return Ok(((**conn).clone(), self.lease.borrow().generation));
        }
        let pooled = match actix_rt::time::timeout(self.timeout, pool.get_owned()).await {
            Ok(Ok(pooled)) => pooled,
            Ok(Err(error)) => return Err(StoreError::Unavailable(error.to_string())),
            Err(_) => return Err(StoreError::Timeout),
        };
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

    /// Runs `cmd` within the deadline.
    pub async fn run<T: FromRedisValue>(
        &self,
        pool: &RedisPool,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        let (mut conn, generation) = self.connection(pool).await?;
        match actix_rt::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
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
    ) -> Result<T, StoreError> {
        let build = |verb: &str, body: &str| {
            let mut cmd = redis::cmd(verb);
            cmd.arg(body).arg(keys.len()).arg(keys);
            for arg in args {
                arg.write_to(&mut cmd);
            }
            cmd
        };
        match self.run(pool, &build("EVALSHA", &script.hash)).await {
            Err(StoreError::NotFound) => self.run(pool, &build("EVAL", script.source)).await,
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
