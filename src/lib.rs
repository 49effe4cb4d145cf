//! steward: the reference REST service built on the `steward-actors` framework.
//!
//! `main.rs` only calls [`cli::run`]; everything else lives here so the integration tests can
//! start the same application in-process (see [`app::Application`]).

#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod config;
mod fd_budget;
mod healthcheck;
pub mod http;
pub mod jobs;
pub mod ledger;
mod listener;
mod memory;
pub mod migrations;
mod signals;
pub mod state;
pub mod telemetry;
