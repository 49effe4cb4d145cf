//! A bb8 manager wrapper that lets the user of a connection say "this one is broken".

use std::ops::{Deref, DerefMut};

use bb8::ManageConnection;

use crate::store::PoolConfig;

/// Wraps a bb8 manager so that a connection seen failing can be flagged, and bb8 then drops
/// it instead of putting it back into the pool.
///
/// Why: bb8 asks the manager's `has_broken` when a connection is returned, and bb8-redis
/// always answers "no" (a multiplexed connection cannot tell synchronously). With
/// `test_on_check_out` off (one round trip less per command), a Redis connection whose socket
/// died would be handed out again and again and the pool would never recover by itself.
#[derive(Clone, Debug)]
pub struct Evicting<M>(pub M);

/// A pooled connection with a broken flag. Derefs to the driver's connection.
pub struct Tracked<C> {
    conn: C,
    broken: bool,
}

impl<C> Tracked<C> {
    /// Marks the connection broken: it is closed when returned to the pool.
    pub fn mark_broken(&mut self) {
        self.broken = true;
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

impl<M: ManageConnection> ManageConnection for Evicting<M> {
    type Connection = Tracked<M::Connection>;
    type Error = M::Error;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let conn = self.0.connect().await?;
        Ok(Tracked {
            conn,
            broken: false,
        })
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        self.0.is_valid(&mut conn.conn).await
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.broken || self.0.has_broken(&mut conn.conn)
    }
}

/// A pool built without connecting (the service must start while a store is down), with the
/// settings every store shares.
pub fn build_pool<M: ManageConnection>(manager: M, config: &PoolConfig) -> bb8::Pool<Evicting<M>> {
    bb8::Pool::builder()
        .max_size(config.max_size)
        .min_idle(Some(config.min_idle))
        .connection_timeout(config.connection_timeout)
        .max_lifetime(Some(config.max_lifetime))
        .idle_timeout(Some(config.idle_timeout))
        // bb8's default PINGs on every checkout: a second round trip per command. Broken
        // connections are found by health checks and by the commands themselves (`Evicting`).
        .test_on_check_out(false)
        // The owners retry with their own backoff and report the outage; bb8 retrying inside
        // `connection_timeout` would only hide it.
        .retry_connection(false)
        .build_unchecked(Evicting(manager))
}
