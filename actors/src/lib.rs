//! steward-actors: the supervisor, the store actors and the job workers of steward.
//!
//! This crate knows actix and the stores (Redis through bb8-redis, PostgreSQL through
//! bb8-postgres) but not actix-web, so any actix service can reuse it: declare children with a
//! [`ChildSpec`], hand them to a [`Supervisor`], and shut them down in tier order with one
//! [`Shutdown`](supervisor::Shutdown) message.

#![warn(missing_docs)]

pub mod backoff;
pub mod breaker;
pub mod cache;
pub mod child;
pub mod db;
pub mod deadline;
pub mod duration;
pub mod error;
pub mod jobs;
pub mod lock;
pub mod managers;
pub mod metrics;
pub mod migrations;
pub mod pool;
pub mod ratelimit;
pub mod readiness;
pub mod redis_conn;
pub mod shutdown;
pub mod slot;
pub mod spec;
pub mod store;
pub mod stores;
pub mod supervisor;
pub mod trace;

pub use backoff::Backoff;
pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use child::{start_actor, start_plain_actor, Exit, Running, Stop};
pub use deadline::Deadline;
pub use error::StoreError;
pub use metrics::Metrics;
pub use readiness::Readiness;
pub use shutdown::{
    Outcome, Phase, ShutdownPlan, ShutdownReason, ShutdownReport, ShutdownTask, Step,
};
pub use slot::Slot;
pub use spec::{ChildSpec, Escalation, Intensity, Restart, StartFailure, SupervisorConfig, Tier};
pub use store::{Backend, PingReport, PoolConfig, Probe, StoreActor};
pub use supervisor::{ChildInfo, Supervisor, Terminated};
