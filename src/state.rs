//! What every HTTP handler can reach.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use steward_actors::managers::{PostgresStore, RedisStore};
use steward_actors::{Metrics, Probe, Readiness, Slot, Supervisor};

use crate::telemetry::LogControl;

/// Shared state of the HTTP edge, cloned into every actix-web worker (it is all handles:
/// `Arc`s, slots and actor addresses).
#[derive(Clone)]
pub struct AppState {
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
    pub supervisor: Addr<Supervisor>,
    pub redis: Slot<RedisStore>,
    pub postgres: Slot<PostgresStore>,
    pub log: LogControl,
    /// `None` when no admin token is configured: the admin routes are then not mounted.
    pub admin_token: Option<Arc<str>>,
    /// Deadline of each store ping behind `/health/ready`.
    pub ping_timeout: Duration,
}

impl AppState {
    /// Every store `/health/ready` checks, by name.
    pub fn probes(&self) -> [(&'static str, &dyn Probe); 2] {
        [("redis", &self.redis), ("postgres", &self.postgres)]
    }
}
