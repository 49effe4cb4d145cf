//! The reference service's job kinds: typed [`Job`]s, declared on the service.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use steward::actors::cache::Set;
use steward::actors::db::{Param, Query};
use steward::actors::lock::{Acquire, Acquired, Holder, LockName, Release};
use steward::actors::StoreError;
use steward::jobs::{Job, JobError, JobRun};
use steward::trace::Call;
use steward::{Context, Service};

use crate::config::{AccountsConfig, IdempotencyConfig};

/// Adds the reference's job kinds, and its scheduled prune, to `service`.
pub fn declare(service: Service) -> Service {
    let service = service
        .job::<Reconcile>()
        .job::<Statement>()
        .every::<PruneIdempotencyKeys>(|ctx| ctx.config::<IdempotencyConfig>().prune_interval);
    #[cfg(feature = "test-hooks")]
    let service = service.job::<test_kinds::Record>();
    #[cfg(feature = "bench-routes")]
    let service = service.job::<Noop>();
    service
}

/// `bench.noop`: does nothing, for bench/run's job throughput.
#[cfg(feature = "bench-routes")]
struct Noop;

#[cfg(feature = "bench-routes")]
impl Job for Noop {
    const KIND: &'static str = "bench.noop";
    type Payload = Value;

    async fn run(_: Context, _: JobRun<Value>) -> Result<Value, JobError> {
        Ok(Value::Null)
    }
}

/// A store failure is worth another attempt.
fn retryable(error: StoreError) -> JobError {
    JobError::Retryable(error.to_string())
}

/// `ledger.reconcile`: under the cluster-wide lock `ledger.reconcile`, checks that the sum of
/// balances equals the sum of initial balances, and records the outcome as the job's result.
struct Reconcile;

impl Job for Reconcile {
    const KIND: &'static str = "ledger.reconcile";
    /// Ignored.
    type Payload = Value;

    async fn run(ctx: Context, job: JobRun<Value>) -> Result<Value, JobError> {
        let locks = ctx.locks().map_err(retryable)?;
        let acquire = Acquire {
            name: LockName::service("ledger.reconcile"),
            ttl: Duration::from_secs(30),
            wait: Duration::ZERO,
            holder: Holder::Process {
                keep_alive: Some(Duration::from_secs(300)),
            },
        };
        let lease = match locks
            .call(acquire)
            .await
            .map_err(|e| retryable(e.into()))?
            .map_err(retryable)?
        {
            Acquired::Granted(lease) => lease,
            Acquired::Held { .. } => {
                return Err(JobError::Retryable("another reconcile is running".into()))
            }
        };
        // Summed as numeric: two balances near i64::MAX already overflow a bigint sum,
        // which would let two requests disable this check for good.
        let sums = Query {
                name: "ledger_sums",
                sql: "SELECT coalesce(sum(balance), 0)::numeric::text, coalesce(sum(initial_balance), 0)::numeric::text, count(*) FROM accounts",
                params: Vec::new(),
                deadline: job.deadline,
            };
        let outcome = match ctx.db() {
            Ok(db) => db
                .call(sums)
                .await
                .map_err(|e| retryable(e.into()))
                .and_then(|r| r.map_err(retryable)),
            Err(error) => Err(retryable(error)),
        };
        let release = Release {
            name: lease.name.clone(),
            token: lease.token.clone(),
        };
        match locks.call(release).await {
            Ok(Ok(true)) => {}
            // The lease stays tracked (and renewed) by the lock actor until it is released
            // at shutdown or its keep-alive cap runs out; the next reconcile waits for it.
            Ok(Ok(false)) => {
                log::warn!(target: "steward::jobs", "reconcile: lock {} was no longer held at release", lease.name)
            }
            Ok(Err(error)) => {
                log::warn!(target: "steward::jobs", "reconcile: could not release lock {}: {error}", lease.name)
            }
            Err(error) => {
                log::warn!(target: "steward::jobs", "reconcile: could not release lock {}: {error}", lease.name)
            }
        }
        let rows = outcome?;
        let row = rows
            .first()
            .ok_or_else(|| JobError::Retryable("no sums".into()))?;
        let (balances, initial, accounts): (String, String, i64) =
            (row.get(0), row.get(1), row.get(2));
        let holds = balances == initial;
        if !holds {
            log::error!(target: "steward::jobs", "ledger invariant broken: balances {balances} != initial {initial}");
        }
        // The sums are decimal strings: they can exceed what a JSON number holds exactly.
        Ok(json!({
            "holds": holds,
            "sum_balances": balances,
            "sum_initial_balances": initial,
            "accounts": accounts,
            "fencing_token": lease.fencing_token,
        }))
    }
}

/// `ledger.prune_idempotency_keys` (scheduled every `idempotency.prune_interval`): deletes the
/// idempotency keys of transfers older than `idempotency.retention`, in batches, so the table
/// holds about one retention period of keys whatever clients send.
struct PruneIdempotencyKeys;

/// Keys deleted by one statement: short enough not to hold locks for long.
const PRUNE_BATCH: i64 = 5_000;
/// Batches of one run; what is left waits for the next run.
const PRUNE_BATCHES: usize = 200;

impl Job for PruneIdempotencyKeys {
    const KIND: &'static str = "ledger.prune_idempotency_keys";
    /// Ignored.
    type Payload = Value;

    async fn run(ctx: Context, job: JobRun<Value>) -> Result<Value, JobError> {
        let retention = ctx.config::<IdempotencyConfig>().retention.as_secs() as i64;
        let db = ctx.db().map_err(retryable)?;
        let mut deleted = 0i64;
        for _ in 0..PRUNE_BATCHES {
            let prune = Query {
                name: "idempotency_prune",
                sql: "WITH gone AS (
                            DELETE FROM idempotency_keys WHERE ctid IN (
                              SELECT ctid FROM idempotency_keys
                              WHERE created_at < now() - make_interval(secs => $1::bigint)
                              LIMIT $2::bigint)
                            RETURNING 1)
                          SELECT count(*) FROM gone",
                params: vec![Box::new(retention), Box::new(PRUNE_BATCH)],
                deadline: job.deadline,
            };
            let rows = db
                .call(prune)
                .await
                .map_err(|e| retryable(e.into()))?
                .map_err(retryable)?;
            let batch: i64 = rows.first().map_or(0, |row| row.get(0));
            deleted += batch;
            if batch < PRUNE_BATCH {
                break;
            }
        }
        if deleted > 0 {
            log::info!(target: "steward::jobs", "pruned {deleted} idempotency keys older than {retention}s");
        }
        Ok(json!({"deleted": deleted}))
    }
}

/// `ledger.statement`: an account's transfers in a period, totalled, kept in the cache.
struct Statement;

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct StatementRequest {
    account_id: i64,
    /// RFC 3339; the period is [from, to).
    from: String,
    to: String,
}

impl Job for Statement {
    const KIND: &'static str = "ledger.statement";
    type Payload = StatementRequest;

    async fn run(ctx: Context, job: JobRun<StatementRequest>) -> Result<Value, JobError> {
        let ttl = ctx.config::<AccountsConfig>().statement_ttl;
        let request = job.payload;
        for bound in [&request.from, &request.to] {
            humantime::parse_rfc3339_weak(bound)
                .map_err(|e| JobError::Permanent(format!("bad timestamp {bound:?}: {e}")))?;
        }
        let params: Vec<Param> = vec![
            Box::new(request.account_id),
            Box::new(request.from.clone()),
            Box::new(request.to.clone()),
        ];
        let totals = Query {
                name: "account_statement",
                sql: "SELECT count(*),
                        coalesce(sum(amount) FILTER (WHERE to_account = $1), 0)::bigint,
                        coalesce(sum(amount) FILTER (WHERE from_account = $1), 0)::bigint
                      FROM transfers
                      WHERE (from_account = $1 OR to_account = $1)
                        AND created_at >= $2::text::timestamptz AND created_at < $3::text::timestamptz",
                params,
                deadline: job.deadline,
            };
        let db = ctx.db().map_err(retryable)?;
        let rows = db
            .call(totals)
            .await
            .map_err(|e| retryable(e.into()))?
            .map_err(retryable)?;
        let row = rows
            .first()
            .ok_or_else(|| JobError::Retryable("no totals".into()))?;
        let (count, credits, debits): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let statement = json!({
            "account_id": request.account_id,
            "from": request.from,
            "to": request.to,
            "transfers": count,
            "credits": credits,
            "debits": debits,
            "net": credits - debits,
        });
        let key = format!(
            "statement:{}:{}:{}",
            request.account_id, request.from, request.to
        );
        let cache = ctx.cache().map_err(retryable)?;
        let set = Set {
            key,
            value: statement.to_string().into_bytes(),
            ttl,
            deadline: job.deadline,
        };
        cache
            .call(set)
            .await
            .map_err(|e| retryable(e.into()))?
            .map_err(retryable)?;
        Ok(statement)
    }
}

/// Job kinds for the test suite: they record their side effect in Redis by job id, so tests
/// can check that every job ran to completion exactly once.
#[cfg(feature = "test-hooks")]
mod test_kinds {
    use super::*;
    use steward::actors::cache::{Get, Set};

    /// Sends a cache message again while the cache fails, up to 20 times 50 ms apart.
    async fn persist<T, F, Fut>(mut send: F) -> Result<T, JobError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Result<T, StoreError>, actix::MailboxError>>,
    {
        let mut tries = 0;
        loop {
            match send().await.map_err(StoreError::from).and_then(|r| r) {
                Ok(value) => return Ok(value),
                Err(error) if tries >= 20 => return Err(retryable(error)),
                Err(_) => {
                    tries += 1;
                    actix_rt::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// `test.record {"sleep_ms"?, "fail_times"?, "permanent"?}`: sleeps, fails (retryably, or
    /// permanently) its first `fail_times` attempts, then counts one completion under
    /// `test:done:<id>` in the cache.
    pub struct Record;

    #[derive(Deserialize, serde::Serialize, Default)]
    #[serde(default)]
    pub struct Plan {
        sleep_ms: u64,
        fail_times: u32,
        permanent: bool,
    }

    impl Job for Record {
        const KIND: &'static str = "test.record";
        /// `null` runs the default plan.
        type Payload = Option<Plan>;

        async fn run(ctx: Context, job: JobRun<Option<Plan>>) -> Result<Value, JobError> {
            let plan = job.payload.unwrap_or_default();
            actix_rt::time::sleep(Duration::from_millis(plan.sleep_ms)).await;
            if job.attempt <= plan.fail_times {
                let error = format!("planned failure {}", job.attempt);
                return Err(if plan.permanent {
                    JobError::Permanent(error)
                } else {
                    JobError::Retryable(error)
                });
            }
            let cache = ctx.cache().map_err(retryable)?;
            let key = format!("test:done:{}", job.id);
            // The count is read once and then written until a write is confirmed: a write
            // that timed out but landed is written again with the same value, so a slow
            // cache (a loaded test machine) neither fails the attempt — which would run
            // the whole job again — nor counts one completion twice.
            let seen = persist(|| {
                cache.call(Get {
                    key: key.clone(),
                    deadline: job.deadline,
                })
            })
            .await?;
            let count = seen
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            let value = count.to_string().into_bytes();
            persist(|| {
                cache.call(Set {
                    key: key.clone(),
                    value: value.clone(),
                    ttl: Duration::from_secs(600),
                    deadline: job.deadline,
                })
            })
            .await?;
            Ok(json!({"attempt": job.attempt}))
        }
    }
}
