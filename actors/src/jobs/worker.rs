//! The worker actor of one queue: fetches while it has free slots, runs handlers, records
//! outcomes, promotes delayed jobs, reclaims abandoned ones, and drains at shutdown without
//! acknowledging anything unfinished.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bb8_redis::RedisConnectionManager;

use super::queue::{Delivery, NewJob, Outcome, Queue};
use super::{DeadJob, JobContext, JobError, JobStatus, Registry, WorkerConfig};
use crate::breaker::Breaker;
use crate::child::{start_actor, Stop};
use crate::deadline::Deadline;
use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::pool::build_pool;
use crate::slot::Slot;
use crate::spec::{ChildSpec, SupervisorConfig, Tier};
use crate::store::PoolConfig;
use crate::stores::Stores;
use crate::trace::{self, TracedActor};
use opentelemetry::KeyValue;
use prometheus::Histogram;

/// A fresh job id: 32 hex digits, what `GET /v1/jobs/{id}` accepts.
fn new_job_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Attempts of a scheduled job; the next interval brings a new one anyway.
const SCHEDULED_ATTEMPTS: u32 = 3;
/// How often delayed jobs are promoted and abandoned ones looked for.
const MAINTENANCE: Duration = Duration::from_millis(250);

/// Runs the jobs of one queue.
pub struct JobWorker {
    queue: Rc<Queue>,
    config: WorkerConfig,
    registry: Registry,
    stores: Stores,
    /// Unique per process and stable while it lives: deliveries pending under a consumer that
    /// no longer runs are reclaimed by the others.
    consumer: String,
    metrics: Arc<Metrics>,
    in_flight: usize,
    /// The stream entries of the deliveries running here: touched every `claim_idle / 3` so
    /// that no worker (this one included) takes over a job that is still running, however
    /// long it runs.
    running: HashSet<String>,
    /// When the running deliveries were last touched.
    touched: Instant,
    fetching: bool,
    stopping: bool,
    /// The interval each scheduled kind was last enqueued for.
    scheduled: HashMap<&'static str, u64>,
    /// This worker's `actor_mailbox_wait_seconds{actor="jobs"}`.
    mailbox_wait: Histogram,
}

/// Queues a job. `idempotency_key`: the same key returns the same job.
#[derive(Message)]
#[rtype(result = "Result<Enqueued, StoreError>")]
pub struct Enqueue {
    /// A registered kind.
    pub kind: String,
    /// Handed to the handler as is; at most `max_payload_size` bytes of JSON.
    pub payload: serde_json::Value,
    /// Runs allowed before the job goes to the dead letters.
    pub max_attempts: u32,
    /// How long to wait before the first run.
    pub delay: Duration,
    /// Scoped by the caller (a client's keys must not meet another's).
    pub idempotency_key: Option<String>,
    /// Who asked for the job (`Principal::id` at the HTTP edge): kept in its document and
    /// handed to its runs, so a handler acts for that principal and a status route can refuse
    /// to show the job to anyone else. `None` for jobs nobody in particular asked for.
    pub principal: Option<String>,
}

/// The job an enqueue created or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id.
    pub id: String,
    /// False when the idempotency key named an existing job.
    pub created: bool,
}

/// Asks for a job's status document; `None` when it does not exist or has expired.
#[derive(Message)]
#[rtype(result = "Result<Option<JobStatus>, StoreError>")]
pub struct GetJob {
    /// The job's id.
    pub id: String,
}

/// Dead letters after the cursor `after`, oldest first.
#[derive(Message)]
#[rtype(result = "Result<Vec<DeadJob>, StoreError>")]
pub struct ListDead {
    /// The `entry` of the last dead letter of the previous page.
    pub after: Option<String>,
    /// Most dead letters answered.
    pub limit: usize,
}

/// Queues a dead job again; `Ok(false)` when it is not dead.
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct RetryDead {
    /// The job's id.
    pub id: String,
}

impl JobWorker {
    /// Counts an enqueue refused for `reason`.
    fn rejected(metrics: &Metrics, queue: &str, reason: &str) {
        metrics
            .jobs_rejected_total
            .with_label_values(&[queue, reason])
            .inc();
    }

    fn free(&self) -> usize {
        self.config.concurrency.saturating_sub(self.in_flight)
    }

    /// Fetches as many jobs as there are free slots; with none free it waits for a job to
    /// finish (backpressure: nothing is fetched that cannot run now).
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.fetching || self.free() == 0 {
            return;
        }
        self.fetching = true;
        let (queue, consumer, free) = (Rc::clone(&self.queue), self.consumer.clone(), self.free());
        let fetch = async move { queue.fetch(&consumer, free).await };
        ctx.spawn(fetch.into_actor(self).map(|fetched, act, ctx| {
            act.fetching = false;
            match fetched {
                Ok(deliveries) if !deliveries.is_empty() => {
                    for delivery in deliveries {
                        act.run(delivery, ctx);
                    }
                    act.pump(ctx);
                }
                Ok(_) => {
                    ctx.run_later(act.config.poll_interval, |act, ctx| act.pump(ctx));
                }
                Err(error) => {
                    log::warn!(target: "steward::jobs", "fetching jobs failed: {error}");
                    // The group may not exist yet (Redis was down at start, or was emptied):
                    // creating it is idempotent.
                    let queue = Rc::clone(&act.queue);
                    let retry = async move { queue.ensure_group().await };
                    ctx.spawn(retry.into_actor(act).map(|_, _, ctx| {
                        ctx.run_later(Duration::from_secs(1), |act, ctx| act.pump(ctx));
                    }));
                }
            }
        }));
    }

    fn run(&mut self, delivery: Delivery, ctx: &mut Context<Self>) {
        let entry = delivery.entry.clone();
        if !self.running.insert(entry.clone()) {
            // Reclaimed while it runs here (a touch came too late): one run is enough.
            return;
        }
        self.in_flight += 1;
        self.metrics
            .jobs_in_flight
            .with_label_values(&[&self.config.queue])
            .inc();
        let (queue, registry, stores, config) = (
            Rc::clone(&self.queue),
            self.registry.clone(),
            self.stores.clone(),
            self.config.clone(),
        );
        let metrics = Arc::clone(&self.metrics);
        let work = async move {
            let started = Instant::now();
            let job = match queue.start(&delivery.job).await {
                Ok(Some(job)) => job,
                // The document expired: nothing to run, drop the delivery.
                Ok(None) => {
                    return queue
                        .finish(&delivery, Outcome::Dead("job document expired".into()))
                        .await
                }
                // Left pending: reclaimed later.
                Err(error) => return Err(error),
            };
            let span = trace::job_span(&delivery.job, &job.kind, job.attempt, job.trace.as_deref());
            let outcome = match registry.get(&job.kind) {
                None => Outcome::Dead(format!("no handler for kind {}", job.kind)),
                Some(handler) => {
                    let context = JobContext {
                        id: delivery.job.clone(),
                        kind: job.kind.clone(),
                        payload: job.payload,
                        attempt: job.attempt,
                        principal: job.principal,
                        stores,
                        deadline: Deadline::after(config.job_timeout),
                    };
                    let ran = span
                        .in_scope(actix_rt::time::timeout(
                            config.job_timeout,
                            handler.run(context),
                        ))
                        .await;
                    match ran.unwrap_or_else(|_| Err(JobError::Retryable("timed out".into()))) {
                        Ok(result) => Outcome::Succeeded(result),
                        Err(JobError::Retryable(error)) if job.attempt < job.max_attempts => {
                            Outcome::Retrying {
                                error,
                                after: config.retry_backoff.delay(job.attempt.saturating_sub(1)),
                            }
                        }
                        Err(JobError::Retryable(error) | JobError::Permanent(error)) => {
                            Outcome::Dead(error)
                        }
                    }
                }
            };
            let label = match &outcome {
                Outcome::Succeeded(_) => "succeeded",
                Outcome::Retrying { .. } => "retried",
                Outcome::Dead(_) => "dead",
            };
            span.set_attribute(KeyValue::new("steward.job.outcome", label));
            if !matches!(outcome, Outcome::Succeeded(_)) {
                span.fail(label);
            }
            drop(span);
            queue.finish(&delivery, outcome).await?;
            metrics
                .jobs_total
                .with_label_values(&[&config.queue, &job.kind, label])
                .inc();
            metrics
                .job_duration_seconds
                .with_label_values(&[&job.kind])
                .observe(started.elapsed().as_secs_f64());
            Ok(())
        };
        ctx.spawn(work.into_actor(self).map(move |outcome, act, ctx| {
            if let Err(error) = outcome {
                log::warn!(target: "steward::jobs", "a job was left pending for another try: {error}");
            }
            act.running.remove(&entry);
            act.in_flight -= 1;
            act.metrics.jobs_in_flight.with_label_values(&[&act.config.queue]).dec();
            if act.stopping && act.in_flight == 0 {
                ctx.stop();
            } else {
                act.pump(ctx);
            }
        }));
    }

    /// Promotes due delayed jobs, takes over abandoned deliveries, updates the gauges.
    fn maintain(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let (queue, consumer, free, idle) = (
            Rc::clone(&self.queue),
            self.consumer.clone(),
            self.free(),
            self.config.claim_idle,
        );
        let work = async move {
            queue.promote(1000).await?;
            let claimed = if free > 0 {
                queue.claim(&consumer, idle, free).await?
            } else {
                Vec::new()
            };
            let depth = queue.depth().await?;
            Ok::<_, StoreError>((claimed, depth))
        };
        self.schedule(ctx);
        self.touch(ctx);
        ctx.spawn(work.into_actor(self).map(|outcome, act, ctx| match outcome {
            Ok((claimed, (depth, pending))) => {
                let queue = act.config.queue.clone();
                act.metrics.queue_depth.with_label_values(&[&queue]).set(depth as i64);
                act.metrics.queue_pending.with_label_values(&[&queue]).set(pending as i64);
                for delivery in claimed {
                    log::info!(target: "steward::jobs", "reclaimed job {} left by another worker", delivery.job);
                    act.run(delivery, ctx);
                }
            }
            Err(error) => log::debug!(target: "steward::jobs", "queue maintenance failed: {error}"),
        }));
    }
}

impl JobWorker {
    /// Resets the idle time of the deliveries running here, every `claim_idle / 3`: a
    /// delivery goes idle past `claim_idle` only when its worker is gone, so a job that runs
    /// longer than `claim_idle` is not taken over and run twice.
    fn touch(&mut self, ctx: &mut Context<Self>) {
        if self.running.is_empty() || self.touched.elapsed() < self.config.claim_idle / 3 {
            return;
        }
        self.touched = Instant::now();
        let (queue, consumer) = (Rc::clone(&self.queue), self.consumer.clone());
        let entries: Vec<String> = self.running.iter().cloned().collect();
        let touch = async move { queue.touch(&consumer, &entries).await };
        ctx.spawn(touch.into_actor(self).map(|outcome, _, _| {
            if let Err(error) = outcome {
                log::warn!(target: "steward::jobs", "could not touch the running jobs: {error}");
            }
        }));
    }

    /// Enqueues each scheduled kind whose next interval has begun (see [`Registry::every`]).
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        for &(kind, interval) in self.registry.periodic() {
            let slot = (now.as_millis() / interval.as_millis().max(1)) as u64;
            if self.scheduled.get(kind) == Some(&slot) {
                continue;
            }
            self.scheduled.insert(kind, slot);
            let queue = Rc::clone(&self.queue);
            let enqueue = async move {
                let id = new_job_id();
                let key = format!("schedule:{kind}:{slot}");
                let job = NewJob {
                    id: &id,
                    kind,
                    payload: "null",
                    max_attempts: SCHEDULED_ATTEMPTS,
                    delay: Duration::ZERO,
                    idempotency_key: Some(&key),
                    principal: "",
                    trace: "",
                };
                queue.enqueue(&job).await
            };
            ctx.spawn(enqueue.into_actor(self).map(move |outcome, act, _| match outcome {
                Ok(_) => {}
                // A full queue skips this interval: the next one brings the job again.
                Err(StoreError::Full(_)) => {
                    log::warn!(target: "steward::jobs", "{kind} skipped this interval: the queue is full");
                }
                Err(error) => {
                    // Tried again at the next maintenance tick (four a second: at debug, like
                    // the maintenance's own failures; the store actors report Redis down).
                    log::debug!(target: "steward::jobs", "could not schedule {kind}: {error}");
                    act.scheduled.remove(kind);
                }
            }));
        }
    }
}

impl Actor for JobWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        let queue = Rc::clone(&self.queue);
        let setup = async move { queue.ensure_group().await };
        ctx.wait(setup.into_actor(self).map(|outcome, act, ctx| {
            if let Err(error) = outcome {
                // Fetching fails until Redis answers; its error path creates the group then.
                log::warn!(target: "steward::jobs", "cannot create the consumer group yet: {error}");
            }
            act.pump(ctx);
            ctx.run_interval(MAINTENANCE, |act, ctx| act.maintain(ctx));
        }));
    }
}

impl Handler<Stop> for JobWorker {
    type Result = ();

    /// Stops fetching; the actor ends when the running jobs have finished. Whatever is still
    /// running when the shutdown phase's deadline passes is never acknowledged, so another
    /// worker reclaims it.
    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        self.stopping = true;
        log::info!(target: "steward::jobs", "draining: {} jobs running", self.in_flight);
        if self.in_flight == 0 {
            ctx.stop();
        }
    }
}

impl TracedActor for JobWorker {
    fn mailbox(&self) -> (&'static str, Histogram) {
        ("jobs", self.mailbox_wait.clone())
    }
}

// Sent with `call`, an enqueue records the sender's trace in the job.
crate::traced_messages!(JobWorker: Enqueue, GetJob, ListDead, RetryDead);

impl Handler<Enqueue> for JobWorker {
    type Result = ResponseFuture<Result<Enqueued, StoreError>>;

    fn handle(&mut self, msg: Enqueue, _: &mut Self::Context) -> Self::Result {
        if self.registry.get(&msg.kind).is_none() {
            let kind = msg.kind;
            return Box::pin(async move {
                Err(StoreError::Invalid(format!("unknown job kind {kind}")))
            });
        }
        let payload = msg.payload.to_string();
        let limit = self.config.max_payload_size;
        if payload.len() > limit {
            Self::rejected(&self.metrics, &self.config.queue, "payload_too_large");
            let error =
                StoreError::TooLarge(format!("a job payload is at most {limit} bytes of JSON"));
            return Box::pin(async move { Err(error) });
        }
        let queue = Rc::clone(&self.queue);
        let (metrics, queue_name) = (Arc::clone(&self.metrics), self.config.queue.clone());
        Box::pin(async move {
            let id = new_job_id();
            // Read here, not before the future: a `Traced` message's context is current
            // while its reply is polled. Kept only when spans are recorded, the one use of it
            // (the run's link): otherwise it would be ~110 bytes of Redis per job for nothing.
            let trace = match trace::enabled() {
                true => trace::current_traceparent(),
                false => String::new(),
            };
            trace::annotate(|| KeyValue::new("steward.job.id", id.clone()));
            let job = NewJob {
                id: &id,
                kind: &msg.kind,
                payload: &payload,
                max_attempts: msg.max_attempts,
                delay: msg.delay,
                idempotency_key: msg.idempotency_key.as_deref(),
                principal: msg.principal.as_deref().unwrap_or_default(),
                trace: &trace,
            };
            let (created, id) = queue.enqueue(&job).await.inspect_err(|error| {
                if matches!(error, StoreError::Full(_)) {
                    Self::rejected(&metrics, &queue_name, "queue_full");
                }
            })?;
            Ok(Enqueued { id, created })
        })
    }
}

impl Handler<GetJob> for JobWorker {
    type Result = ResponseFuture<Result<Option<JobStatus>, StoreError>>;

    fn handle(&mut self, msg: GetJob, _: &mut Self::Context) -> Self::Result {
        let queue = Rc::clone(&self.queue);
        Box::pin(async move { queue.status(&msg.id).await })
    }
}

impl Handler<ListDead> for JobWorker {
    type Result = ResponseFuture<Result<Vec<DeadJob>, StoreError>>;

    fn handle(&mut self, msg: ListDead, _: &mut Self::Context) -> Self::Result {
        let queue = Rc::clone(&self.queue);
        Box::pin(async move { queue.dead(msg.after.as_deref(), msg.limit).await })
    }
}

impl Handler<RetryDead> for JobWorker {
    type Result = ResponseFuture<Result<bool, StoreError>>;

    fn handle(&mut self, msg: RetryDead, _: &mut Self::Context) -> Self::Result {
        let queue = Rc::clone(&self.queue);
        Box::pin(async move { queue.retry_dead(&msg.id).await })
    }
}

/// Everything a worker child needs.
pub struct WorkerSettings {
    /// The queue's settings.
    pub config: WorkerConfig,
    /// The key prefix every queue key starts with.
    pub prefix: String,
    /// Connects the worker's own pool.
    pub manager: RedisConnectionManager,
    /// The worker's pool.
    pub pool: PoolConfig,
    /// The Redis breaker, shared with the Redis store actors.
    pub breaker: Breaker,
    /// The handlers, by kind, and the scheduled kinds.
    pub registry: Registry,
    /// Handed to every handler.
    pub stores: Stores,
    /// Where the worker counts runs, rejections and depth.
    pub metrics: Arc<Metrics>,
    /// This process's consumer name.
    pub consumer: String,
}

/// Declares the worker of one queue as a child of the workers tier.
pub fn job_worker_child(
    settings: WorkerSettings,
    slot: Slot<JobWorker>,
    supervisor: &SupervisorConfig,
) -> ChildSpec {
    let name = format!("jobs:{}", settings.config.queue);
    ChildSpec::new(name, Tier::Workers, supervisor, move || {
        let pool = build_pool(
            settings.manager.clone(),
            &settings.pool,
            settings.breaker.clone(),
        );
        let queue = Queue::new(&settings.prefix, &settings.config, pool);
        let worker = JobWorker {
            queue: Rc::new(queue),
            config: settings.config.clone(),
            registry: settings.registry.clone(),
            stores: settings.stores.clone(),
            consumer: settings.consumer.clone(),
            metrics: Arc::clone(&settings.metrics),
            in_flight: 0,
            running: HashSet::new(),
            touched: Instant::now(),
            fetching: false,
            stopping: false,
            scheduled: HashMap::new(),
            mailbox_wait: settings
                .metrics
                .actor_mailbox_wait_seconds
                .with_label_values(&["jobs"]),
        };
        let (addr, running) = start_actor(worker);
        slot.set(addr);
        Ok(running)
    })
}
