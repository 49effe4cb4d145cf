//! Where the store actors currently are: what job handlers and embedding code are handed.

use crate::cache::CacheActor;
use crate::db::DbActor;
use crate::lock::LockActor;
use crate::ratelimit::LimiterActor;
use crate::slot::Slot;

/// The slots of the store actors (each holds the live incarnation's address).
#[derive(Clone, Default)]
pub struct Stores {
    pub cache: Slot<CacheActor>,
    pub db: Slot<DbActor>,
    pub locks: Slot<LockActor>,
    pub limiter: Slot<LimiterActor>,
}
