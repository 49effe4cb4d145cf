//! Background jobs on Redis Streams: at-least-once delivery through a consumer group, retries
//! with backoff through a delayed set, dead letters, reclaiming what crashed consumers left,
//! and a drain that never acknowledges unfinished work.

mod queue;
mod worker;

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use serde::Serialize;

use crate::backoff::Backoff;
use crate::stores::Stores;

pub use queue::{DeadJob, JobStatus};
pub use worker::{
    job_worker_child, Enqueue, Enqueued, GetJob, JobWorker, ListDead, RetryDead, WorkerSettings,
};

/// What a handler is given: the job and the stores.
pub struct JobContext {
    /// The job's id: handlers use it to be idempotent.
    pub id: String,
    /// The kind the job was enqueued as.
    pub kind: String,
    /// The payload as enqueued (`null` when none was given).
    pub payload: serde_json::Value,
    /// 1 on the first run.
    pub attempt: u32,
    /// The principal that enqueued the job ([`Enqueue::principal`]), recorded at enqueue.
    pub principal: Option<String>,
    /// The store actors, to reach Redis and PostgreSQL.
    pub stores: Stores,
    /// The end of this run (`workers.job_timeout` from its start): pass it in the store
    /// messages, so no store call outlives the run that made it.
    pub deadline: crate::deadline::Deadline,
}

/// Why a job failed, which decides whether it runs again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum JobError {
    /// Worth another attempt (a store was down, a lock was held).
    Retryable(String),
    /// Will fail the same way again (bad payload): straight to the dead letters.
    Permanent(String),
}

/// Runs one kind of job. Handlers must be idempotent by job id: a job can run more than once
/// (a worker can die after the work and before the acknowledgement).
pub trait JobHandler {
    /// The kind this handler runs, as clients name it when they enqueue.
    fn kind(&self) -> &'static str;
    /// Runs one attempt; the value becomes the job's `result`.
    fn run(&self, job: JobContext) -> LocalBoxFuture<'static, Result<serde_json::Value, JobError>>;
}

/// The handlers a service registers, by kind, and the kinds it runs on a schedule.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<&'static str, Rc<dyn JobHandler>>,
    periodic: Vec<(&'static str, Duration)>,
}

impl Registry {
    /// Adds `handler` for its kind (replacing one registered for the same kind).
    pub fn with(mut self, handler: impl JobHandler + 'static) -> Self {
        self.handlers.insert(handler.kind(), Rc::new(handler));
        self
    }

    /// Runs `handler` once every `interval` (payload `null`) across all replicas: each
    /// replica's worker enqueues it when a new interval begins, under an idempotency key named
    /// after the interval, so one job is queued however many replicas run. Jobs of a schedule
    /// must tolerate running twice (the key expires with `workers.idempotency_ttl`).
    pub fn every(mut self, interval: Duration, handler: impl JobHandler + 'static) -> Self {
        self.periodic.push((handler.kind(), interval));
        self.with(handler)
    }

    /// The scheduled kinds and their intervals.
    pub fn periodic(&self) -> &[(&'static str, Duration)] {
        &self.periodic
    }

    /// The handler of `kind`, if one is registered.
    pub fn get(&self, kind: &str) -> Option<Rc<dyn JobHandler>> {
        self.handlers.get(kind).cloned()
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<_> = self.handlers.keys().copied().collect();
        kinds.sort_unstable();
        kinds
    }
}

/// `[workers]` settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The queue's name, in keys and metric labels.
    pub queue: String,
    /// Jobs run at once; fetching stops while every slot is busy.
    pub concurrency: usize,
    /// A job left pending this long by another consumer is taken over.
    pub claim_idle: Duration,
    /// Pause between fetches while the queue is empty.
    pub poll_interval: Duration,
    /// Deadline of one run of a handler.
    pub job_timeout: Duration,
    /// How long a finished job's status document is kept.
    pub status_ttl: Duration,
    /// Most jobs waiting (ready, delayed or retrying); an enqueue past it is refused.
    pub max_queued: u64,
    /// Most finished jobs whose status documents are kept; the oldest go first.
    pub max_finished: u64,
    /// Largest payload, in bytes of JSON text; a larger one is refused.
    pub max_payload_size: usize,
    /// How long an idempotency key maps to its job.
    pub idempotency_ttl: Duration,
    /// Delay before the next attempt of a retryable failure.
    pub retry_backoff: Backoff,
    /// Deadline of one Redis command.
    pub redis_timeout: Duration,
}
