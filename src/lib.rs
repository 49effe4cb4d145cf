//! steward: an actor-based service framework on actix-web, Redis and PostgreSQL.
//!
#![doc = include_str!("../docs/guide.md")]
#![warn(missing_docs)]

mod app;
pub mod auth;
mod cli;
pub mod config;
mod context;
mod doctor;
mod fd_budget;
mod healthcheck;
pub mod http;
pub mod jobs;
mod listener;
mod memory;
mod openapi;
mod service;
mod signals;
mod state;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;

pub use app::{Application, StartError};
pub use auth::Principal;
pub use cli::EXIT_CONFIG;
pub use context::Context;
pub use http::deadline::RequestDeadline;
pub use http::error::{codes, ApiError, ErrorCode};
pub use service::{Backends, Criticality, Service, TaskOutcome};
pub use steward_actors::{Breaker, Deadline};

/// The pieces most services use, in one import: `use steward::prelude::*;`.
pub mod prelude {
    pub use crate::config::{Invalid, Section};
    pub use crate::jobs::{Job, JobError, JobRun};
    pub use crate::{
        ApiError, Backends, Context, Criticality, Deadline, ErrorCode, Principal, RequestDeadline,
        Service,
    };
    pub use actix_web::{web, HttpResponse};
    pub use serde_json::{json, Value};
    pub use steward_actors::{Phase, Restart, Stop, Tier};
}

/// The actors crate, re-exported so a service needs one dependency: the supervisor and child
/// specs, the store actors and their messages, the job queue.
pub use steward_actors as actors;
