//! Where the store actors currently are: what job handlers and embedding code are handed.

use crate::cache::CacheActor;
use crate::db::DbActor;
use crate::lock::LockActor;
use crate::ratelimit::LimiterActor;
use crate::slot::Slot;

/// The slots of the store actors (each holds the live incarnation's address).
#[derive(Clone, Default)]
pub struct Stores {
    /// Redis through the cache actor.
    pub cache: Slot<CacheActor>,
    /// PostgreSQL through the database actor.
    pub db: Slot<DbActor>,
    /// Distributed locks.
    pub locks: Slot<LockActor>,
    /// The rate limiter.
    pub limiter: Slot<LimiterActor>,
}
