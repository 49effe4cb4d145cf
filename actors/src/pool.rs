//! The pools of the store actors: bb8 pools whose connections can be flagged broken, that
//! check connections once after a fault, and that stop waiting when the store's breaker opens.

use std::fmt::Display;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use bb8::{ManageConnection, Pool, PooledConnection};
use futures::future::{select, Either};

use crate::breaker::Breaker;
use crate::error::StoreError;
use crate::store::PoolConfig;

/// Wraps a bb8 manager so that a connection seen failing can be flagged, connections made
/// before the last fault are checked once before reuse, and failed connection attempts reach
/// the store's [`Breaker`].
///
/// Why flags: bb8 asks the manager's `has_broken` when a connection is returned, and
/// bb8-redis always answers "no" (a multiplexed connection cannot tell synchronously).
///
/// Why generations: bb8's `test_on_check_out` costs a round trip (`PING`, an empty query) on
/// every checkout, so steward does not pay it in steady state; but without any check, an idle
/// connection that an outage broke is handed to the first request after the store is back, and
/// that request fails for an outage that is over. Each connection remembers the breaker's
/// generation it was last known good in; the generation advances when the breaker opens and
/// when a health check fails. A checkout of a connection from an older generation runs the
/// real check first (and bb8 drops it when that fails); any other checkout costs one atomic
/// load.
#[derive(Clone)]
pub struct Evicting<M> {
    inner: M,
    breaker: Breaker,
}

impl<M> Evicting<M> {
    /// Wraps `inner`, reporting to `breaker`.
    pub fn new(inner: M, breaker: Breaker) -> Self {
        Self { inner, breaker }
    }
}

/// A pooled connection with a broken flag and the generation it was last known good in.
/// Derefs to the driver's connection.
pub struct Tracked<C> {
    conn: C,
    broken: bool,
    generation: u64,
}

impl<C> Tracked<C> {
    /// Marks the connection broken: it is closed when returned to the pool.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Whether the connection predates the breaker's last fault (a shared lease drops it then).
    pub fn stale(&self, breaker: &Breaker) -> bool {
        self.generation != breaker.generation()
    }
}

impl<C> Deref for Tracked<C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.conn
    }
}

impl<C> DerefMut for Tracked<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.conn
    }
}

impl<M: ManageConnection<Error: Display>> Evicting<M> {
    /// Always runs the driver's check (the health checks use this), and renews the
    /// connection's generation when it passes.
    pub async fn validate(&self, conn: &mut Tracked<M::Connection>) -> Result<(), M::Error> {
        let generation = self.breaker.generation();
        self.inner.is_valid(&mut conn.conn).await?;
        conn.generation = generation;
        Ok(())
    }
}

impl<M: ManageConnection<Error: Display>> ManageConnection for Evicting<M> {
    type Connection = Tracked<M::Connection>;
    type Error = M::Error;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let generation = self.breaker.generation();
        match self.inner.connect().await {
            Ok(conn) => Ok(Tracked {
                conn,
                broken: false,
                generation,
            }),
            Err(error) => {
                self.breaker.connect_failed(error.to_string());
                Err(error)
            }
        }
    }

    /// Free unless the connection predates the last fault.
    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        if !conn.stale(&self.breaker) {
            return Ok(());
        }
        self.validate(conn).await
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.broken || self.inner.has_broken(&mut conn.conn)
    }
}

/// A store's pool and its breaker. Derefs to the bb8 pool.
pub struct StorePool<M: ManageConnection<Error: Display>> {
    pool: Pool<Evicting<M>>,
    breaker: Breaker,
}

impl<M: ManageConnection<Error: Display>> Clone for StorePool<M> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            breaker: self.breaker.clone(),
        }
    }
}

impl<M: ManageConnection<Error: Display>> Deref for StorePool<M> {
    type Target = Pool<Evicting<M>>;

    fn deref(&self) -> &Self::Target {
        &self.pool
    }
}

impl<M: ManageConnection<Error: Display>> StorePool<M> {
    /// The breaker of the pool's store.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// A connection within `wait`: `PoolTimeout` past it, `Unavailable` with the driver's words
    /// when connecting failed, and `BreakerOpen` at once if the breaker opens meanwhile (a
    /// request queued behind a store that just went away stops queueing).
    pub async fn checkout(
        &self,
        wait: Duration,
    ) -> Result<PooledConnection<'static, Evicting<M>>, StoreError> {
        let opened = std::pin::pin!(self.breaker.opened());
        let get = std::pin::pin!(actix_rt::time::timeout(wait, self.pool.get_owned()));
        match select(get, opened).await {
            Either::Left((Ok(Ok(conn)), _)) => Ok(conn),
            Either::Left((Ok(Err(bb8::RunError::User(error))), _)) => {
                Err(StoreError::Unavailable(error.to_string()))
            }
            Either::Left((Ok(Err(bb8::RunError::TimedOut)), _)) | Either::Left((Err(_), _)) => {
                Err(StoreError::PoolTimeout)
            }
            Either::Right(((), _)) => Err(self.breaker.refused()),
        }
    }
}

/// A pool built without connecting (the service must start while a store is down), with the
/// settings every store shares, reporting to `breaker`.
pub fn build_pool<M: ManageConnection<Error: Display>>(
    manager: M,
    config: &PoolConfig,
    breaker: Breaker,
) -> StorePool<M> {
    let pool = bb8::Pool::builder()
        .max_size(config.max_size)
        .min_idle(Some(config.min_idle))
        .connection_timeout(config.connection_timeout)
        .max_lifetime(Some(config.max_lifetime))
        .idle_timeout(Some(config.idle_timeout))
        // Free in steady state: `Evicting::is_valid` checks only connections older than the
        // last fault.
        .test_on_check_out(true)
        // The owners retry with their own backoff and report the outage; bb8 retrying inside
        // `connection_timeout` would only hide it.
        .retry_connection(false)
        .build_unchecked(Evicting::new(manager, breaker.clone()));
    StorePool { pool, breaker }
}
