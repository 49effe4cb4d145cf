//! Background jobs as a service declares them: a [`Job`] type per kind, with a typed payload,
//! run by the worker of its queue and enqueued through [`Jobs`].
//!
//! The queue itself (Redis Streams, retries, dead letters, reclaiming, the drain) lives in
//! `steward_actors::jobs`; this module is the typed seam over it. A handler gets the
//! service's [`Context`], so a job reaches the same stores, config and actors as a route.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use steward_actors::jobs::{JobContext, JobHandler, JobWorker, Registry};
use steward_actors::{Slot, StoreError};

use crate::context::Context;
use crate::trace::Call;

pub use steward_actors::jobs::{Enqueue, Enqueued, JobError, JobStatus};

/// One kind of background job.
///
/// A job runs at least once: a worker can die after the work and before the acknowledgement,
/// and another worker then runs it again. Make [`Job::run`] idempotent by [`JobRun::id`].
///
/// ```
/// use steward::jobs::{Job, JobError, JobRun};
/// use steward::Context;
///
/// /// `greet`: logs a greeting.
/// struct Greet;
///
/// impl Job for Greet {
///     const KIND: &'static str = "greet";
///     type Payload = String;
///
///     async fn run(_ctx: Context, job: JobRun<String>) -> Result<serde_json::Value, JobError> {
///         log::info!("hello, {}", job.payload);
///         Ok(serde_json::json!({"greeted": job.payload}))
///     }
/// }
/// ```
pub trait Job: 'static {
    /// The kind, as clients and [`Jobs::enqueue`] name it; unique within the service.
    const KIND: &'static str;
    /// What the job is given. A payload that does not deserialize fails the job for good
    /// (straight to the dead letters): running it again cannot help.
    type Payload: Serialize + DeserializeOwned + 'static;

    /// Runs one attempt; the value becomes the job's `result`.
    fn run(
        ctx: Context,
        job: JobRun<Self::Payload>,
    ) -> impl Future<Output = Result<serde_json::Value, JobError>> + 'static;
}

/// One attempt of a job, as its handler gets it.
#[derive(Debug, Clone)]
pub struct JobRun<P> {
    /// The job's id: make the work idempotent by it.
    pub id: String,
    /// 1 on the first attempt.
    pub attempt: u32,
    /// The payload as enqueued.
    pub payload: P,
    /// The [`Principal`](crate::Principal) id of the request that enqueued the job (recorded
    /// at enqueue); `None` for scheduled jobs and jobs enqueued without one.
    pub principal: Option<String>,
    /// The end of this attempt (`workers.job_timeout` after its start): pass it in the store
    /// messages the job sends, as a route passes its [`RequestDeadline`](crate::RequestDeadline).
    pub deadline: steward_actors::Deadline,
}

/// A [`Job`] as the worker runs it: the payload deserialized, the context handed in.
pub(crate) struct Typed<J> {
    ctx: Context,
    kind: PhantomData<fn() -> J>,
}

impl<J: Job> Typed<J> {
    pub(crate) fn new(ctx: Context) -> Self {
        Self {
            ctx,
            kind: PhantomData,
        }
    }
}

impl<J: Job> JobHandler for Typed<J> {
    fn kind(&self) -> &'static str {
        J::KIND
    }

    fn run(&self, job: JobContext) -> LocalBoxFuture<'static, Result<serde_json::Value, JobError>> {
        let payload = match serde_json::from_value::<J::Payload>(job.payload) {
            Ok(payload) => payload,
            Err(error) => {
                let why = format!("bad payload for {}: {error}", J::KIND);
                return futures::future::ready(Err(JobError::Permanent(why))).boxed_local();
            }
        };
        let run = JobRun {
            id: job.id,
            attempt: job.attempt,
            payload,
            principal: job.principal,
            deadline: job.deadline,
        };
        J::run(self.ctx.clone(), run).boxed_local()
    }
}

/// How often a scheduled kind runs, read from the context (its config) at start-up.
pub(crate) type Interval = Box<dyn Fn(&Context) -> Duration>;

/// How a declared job kind is added to its queue's registry once the context exists.
pub(crate) type Register = Box<dyn Fn(Registry, &Context) -> Registry>;

/// A job kind as the service declared it.
pub(crate) struct Declared {
    /// Its queue; `None` is the default queue (`workers.queue`).
    pub queue: Option<String>,
    pub kind: &'static str,
    pub register: Register,
}

impl Declared {
    /// `J` on `queue`, run on demand, or every `interval` when one is given.
    pub fn new<J: Job>(queue: Option<String>, interval: Option<Interval>) -> Self {
        let register: Register = match interval {
            None => Box::new(|registry, ctx| registry.with(Typed::<J>::new(ctx.clone()))),
            Some(interval) => Box::new(move |registry, ctx| {
                registry.every(interval(ctx), Typed::<J>::new(ctx.clone()))
            }),
        };
        Self {
            queue,
            kind: J::KIND,
            register,
        }
    }
}

/// The service's job queues: enqueue by kind, follow a job, reach a queue's worker.
///
/// Cheap to clone; part of [`Context`]. Every kind belongs to one queue (the default one,
/// `workers.queue`, unless declared with `Service::job_on`), and an enqueue goes to the
/// queue of its kind.
#[derive(Clone, Default)]
pub struct Jobs {
    inner: Arc<JobsInner>,
}

#[derive(Default)]
struct JobsInner {
    /// Each queue's name and worker.
    queues: Vec<(String, Slot<JobWorker>)>,
    /// Each kind's queue, as an index into `queues`.
    kinds: HashMap<&'static str, usize>,
    /// The default queue's name (`workers.queue`).
    default_queue: String,
    /// Attempts of a job that asks for none (`workers.max_attempts`).
    default_attempts: u32,
}

impl Jobs {
    /// `queues`, the index of each kind's queue in it, and which queue is the default.
    pub(crate) fn new(
        queues: Vec<(String, Slot<JobWorker>)>,
        kinds: HashMap<&'static str, usize>,
        default_queue: String,
        default_attempts: u32,
    ) -> Self {
        Self {
            inner: Arc::new(JobsInner {
                queues,
                kinds,
                default_queue,
                default_attempts,
            }),
        }
    }

    /// Every declared kind, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<_> = self.inner.kinds.keys().copied().collect();
        kinds.sort_unstable();
        kinds
    }

    /// Whether `kind` was declared.
    pub fn knows(&self, kind: &str) -> bool {
        self.inner.kinds.contains_key(kind)
    }

    /// Attempts of a job that asks for none (`workers.max_attempts`).
    pub fn default_attempts(&self) -> u32 {
        self.inner.default_attempts
    }

    /// Queues `payload` as a job of kind `J`, to run as soon as a worker is free, with the
    /// default number of attempts.
    pub async fn enqueue<J: Job>(&self, payload: J::Payload) -> Result<Enqueued, StoreError> {
        let payload = serde_json::to_value(payload)
            .map_err(|e| StoreError::Invalid(format!("the payload is not JSON: {e}")))?;
        self.submit(Enqueue {
            kind: J::KIND.to_owned(),
            payload,
            max_attempts: self.inner.default_attempts,
            delay: Duration::ZERO,
            idempotency_key: None,
            principal: None,
        })
        .await
    }

    /// Queues a job described in full (delay, attempts, idempotency key) on its kind's queue.
    /// An undeclared kind is [`StoreError::Invalid`].
    pub async fn submit(&self, job: Enqueue) -> Result<Enqueued, StoreError> {
        let Some(index) = self.inner.kinds.get(job.kind.as_str()) else {
            return Err(StoreError::Invalid(format!(
                "unknown job kind {}",
                job.kind
            )));
        };
        let worker = current(&self.inner.queues[*index].1)?;
        worker.call(job).await?
    }

    /// The worker of `queue` (`None`: the default queue), to follow jobs or handle dead
    /// letters; unavailable before its first start, or when no such queue was declared.
    pub fn worker(&self, queue: Option<&str>) -> Result<Addr<JobWorker>, StoreError> {
        let name = queue.unwrap_or(&self.inner.default_queue);
        match self.inner.queues.iter().find(|(q, _)| q == name) {
            Some((_, slot)) => current(slot),
            None => Err(StoreError::Unavailable(format!("no job queue {name}"))),
        }
    }
}

/// The address in `slot`, or unavailable before its first start.
#[inline]
pub(crate) fn current<A: actix::Actor>(slot: &Slot<A>) -> Result<Addr<A>, StoreError> {
    slot.get()
        .ok_or_else(|| StoreError::Unavailable("starting".to_owned()))
}
