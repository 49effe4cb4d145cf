//! The queue's Redis layout and every state change, each one atomic (a Lua script).
//!
//! Keys, under the configured prefix: `jobs:<queue>:stream` (ready jobs, consumer group
//! `workers`), `jobs:<queue>:delayed` (sorted by due time), `jobs:<queue>:dead` (dead letters),
//! `jobs:<queue>:finished` (finished jobs by finishing time), `job:<id>` (the status document)
//! and `jobs:idem:<key>` (idempotency keys).
//!
//! Every part is bounded, so no client can grow Redis without limit: a payload is at most
//! `max_payload_size` bytes; at most `max_queued` jobs wait (ready, delayed or retrying) and
//! an enqueue past that is refused with [`StoreError::Full`]; a finished job's document is kept
//! for `status_ttl` and only for the newest `max_finished` finished jobs (the oldest document,
//! and its dead letter, go first). A waiting job's document has no TTL: it lives until the job
//! has run, however long its delay.

use std::collections::HashMap;
use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use serde::Serialize;

use super::WorkerConfig;
use crate::deadline::Deadline;
use crate::error::StoreError;
use crate::redis_conn::{LuaScript, RedisPool, SharedConnection, ToRedisArgsDyn};

const GROUP: &str = "workers";

/// Creates the job and queues it (or schedules it), unless its idempotency key names a job;
/// `{-1, ''}` when `max_queued` (ARGV[6]) jobs already wait.
const ENQUEUE: &str = r#"
if ARGV[7] ~= '' then
  local existing = redis.call('GET', KEYS[4])
  if existing then return {0, existing} end
end
if redis.call('XLEN', KEYS[2]) + redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[6]) then
  return {-1, ''}
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local delay = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'kind', ARGV[2], 'payload', ARGV[3],
  'max_attempts', ARGV[4], 'attempts', 0, 'status', 'queued', 'created_at', now,
  'updated_at', now, 'run_at', now + delay)
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'principal', ARGV[8]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'trace', ARGV[9]) end
if delay > 0 then
  redis.call('ZADD', KEYS[3], now + delay, ARGV[1])
else
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[1])
end
if ARGV[7] ~= '' then redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[7]) end
return {1, ARGV[1]}
"#;

/// Moves due delayed jobs into the stream; atomic, so two workers never both move one.
const PROMOTE: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])
for _, id in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'id', id)
  redis.call('ZREM', KEYS[1], id)
end
return #due
"#;

/// Marks the job running and counts the attempt; nil when its document is gone.
const START: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local t = redis.call('TIME')
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'updated_at', t[1] * 1000 + math.floor(t[2] / 1000))
local job = redis.call('HMGET', KEYS[1], 'kind', 'payload', 'max_attempts', 'principal', 'trace')
return {job[1], job[2], tostring(attempts), job[3], job[4] or '', job[5] or ''}
"#;

/// Records the outcome and acknowledges the delivery in one step. ARGV[3] is the status;
/// `retrying` also schedules the next attempt, `dead` also writes the dead letter. A finished
/// job (succeeded or dead) gets its document's TTL and a place in the finished index, which
/// is then cut back to `max_finished` (ARGV[8]) by dropping the oldest documents (and their
/// dead letters): at most 8 a call, so a lowered bound is reached over a few calls.
const FINISH: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local status = ARGV[3]
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'status', status, 'updated_at', now)
  if status == 'succeeded' then
    redis.call('HSET', KEYS[1], 'result', ARGV[4])
    redis.call('HDEL', KEYS[1], 'last_error')
  else
    redis.call('HSET', KEYS[1], 'last_error', ARGV[4])
  end
  if status == 'retrying' then
    local at = now + tonumber(ARGV[5])
    redis.call('HSET', KEYS[1], 'run_at', at)
    redis.call('ZADD', KEYS[3], at, ARGV[6])
  else
    if status == 'dead' then
      local entry = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[8], '*', 'id', ARGV[6], 'error', ARGV[4])
      redis.call('HSET', KEYS[1], 'dead_entry', entry)
    end
    redis.call('EXPIRE', KEYS[1], ARGV[7])
    redis.call('ZADD', KEYS[5], now, ARGV[6])
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - tonumber(ARGV[7]) * 1000)
    local over = redis.call('ZCARD', KEYS[5]) - tonumber(ARGV[8])
    if over > 0 then
      local popped = redis.call('ZPOPMIN', KEYS[5], math.min(over, 8))
      for i = 1, #popped, 2 do
        local doc = ARGV[9] .. popped[i]
        local entry = redis.call('HGET', doc, 'dead_entry')
        if entry then redis.call('XDEL', KEYS[4], entry) end
        redis.call('DEL', doc)
      end
    end
  end
end
redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[2], ARGV[1])
return 1
"#;

/// Queues a dead job again with fresh attempts; 0 when it is not dead, -1 when `max_queued`
/// (ARGV[2]) jobs already wait.
const RETRY_DEAD: &str = r#"
if redis.call('HGET', KEYS[1], 'status') ~= 'dead' then return 0 end
if redis.call('XLEN', KEYS[3]) + redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[2]) then
  return -1
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local entry = redis.call('HGET', KEYS[1], 'dead_entry')
if entry then redis.call('XDEL', KEYS[2], entry) end
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempts', 0, 'updated_at', now, 'run_at', now)
redis.call('HDEL', KEYS[1], 'dead_entry')
redis.call('PERSIST', KEYS[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[3], '*', 'id', ARGV[1])
return 1
"#;

/// A job's status document, as `GET /v1/jobs/{id}` shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct JobStatus {
    /// 32 hex digits.
    pub id: String,
    /// The registered kind that runs it.
    pub kind: String,
    /// queued, running, succeeded, retrying or dead.
    pub status: String,
    /// Runs started so far.
    pub attempts: u32,
    /// Runs allowed before the job goes to the dead letters.
    pub max_attempts: u32,
    /// As enqueued.
    pub payload: serde_json::Value,
    /// What the handler returned, once it has succeeded.
    pub result: Option<serde_json::Value>,
    /// The error of the last failed run.
    pub last_error: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds of the last change.
    pub updated_at: i64,
    /// Unix milliseconds before which the job does not run.
    pub run_at: i64,
    /// The principal that enqueued it ([`Enqueue::principal`](super::Enqueue::principal));
    /// absent when none was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

/// A dead letter.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DeadJob {
    /// The job's id.
    pub id: String,
    /// Why its last run failed.
    pub error: String,
    /// The dead-letter entry, which pages through them.
    #[serde(skip)]
    pub entry: String,
}

/// A job to create.
pub(crate) struct NewJob<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    /// JSON text.
    pub payload: &'a str,
    pub max_attempts: u32,
    pub delay: Duration,
    pub idempotency_key: Option<&'a str>,
    /// Who asked for it; empty for nobody in particular.
    pub principal: &'a str,
    /// The `traceparent` of the span that enqueued it; empty outside a trace.
    pub trace: &'a str,
}

/// A delivery: the stream entry and the job it carries.
pub(crate) struct Delivery {
    pub entry: String,
    pub job: String,
}

/// A job marked running.
pub(crate) struct Started {
    pub kind: String,
    pub payload: serde_json::Value,
    pub attempt: u32,
    pub max_attempts: u32,
    pub principal: Option<String>,
    /// The enqueuer's `traceparent`, if it was in a trace.
    pub trace: Option<String>,
}

/// How a run ended, as the queue records it.
pub(crate) enum Outcome {
    Succeeded(serde_json::Value),
    Retrying { error: String, after: Duration },
    Dead(String),
}

/// One queue's keys, scripts and connection.
pub(crate) struct Queue {
    stream: String,
    delayed: String,
    dead: String,
    finished: String,
    prefix: String,
    conn: SharedConnection,
    pool: RedisPool,
    scripts: Scripts,
    status_ttl: Duration,
    idempotency_ttl: Duration,
    max_queued: u64,
    max_finished: u64,
}

struct Scripts {
    enqueue: LuaScript,
    promote: LuaScript,
    start: LuaScript,
    finish: LuaScript,
    retry_dead: LuaScript,
}

impl Queue {
    pub fn new(prefix: &str, config: &WorkerConfig, pool: RedisPool) -> Self {
        let base = format!("{prefix}jobs:{}:", config.queue);
        Self {
            stream: format!("{base}stream"),
            delayed: format!("{base}delayed"),
            dead: format!("{base}dead"),
            finished: format!("{base}finished"),
            prefix: prefix.to_owned(),
            conn: SharedConnection::new(config.redis_timeout),
            pool,
            scripts: Scripts {
                enqueue: LuaScript::new(ENQUEUE),
                promote: LuaScript::new(PROMOTE),
                start: LuaScript::new(START),
                finish: LuaScript::new(FINISH),
                retry_dead: LuaScript::new(RETRY_DEAD),
            },
            status_ttl: config.status_ttl,
            idempotency_ttl: config.idempotency_ttl,
            max_queued: config.max_queued,
            max_finished: config.max_finished,
        }
    }

    fn job_key(&self, id: &str) -> String {
        format!("{}job:{id}", self.prefix)
    }

    async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &LuaScript,
        keys: &[&str],
        args: &[&dyn ToRedisArgsDyn],
    ) -> Result<T, StoreError> {
        self.conn
            .eval(&self.pool, script, keys, args, Deadline::NONE)
            .await
    }

    /// Creates the consumer group (and the stream) if they do not exist yet. The group starts
    /// at the beginning, so jobs enqueued before any worker ran are delivered too.
    pub async fn ensure_group(&self) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&self.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
        match self.conn.run::<()>(&self.pool, &cmd, Deadline::NONE).await {
            Err(StoreError::Internal(error)) if error.contains("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Returns whether the job was created (false: the idempotency key named one) and its id;
    /// [`StoreError::Full`] when `max_queued` jobs already wait.
    pub async fn enqueue(&self, job: &NewJob<'_>) -> Result<(bool, String), StoreError> {
        let idem_key = job
            .idempotency_key
            .map(|k| format!("{}jobs:idem:{k}", self.prefix))
            .unwrap_or_default();
        let idem_ttl = match job.idempotency_key {
            Some(_) => self.idempotency_ttl.as_secs().max(1).to_string(),
            None => String::new(),
        };
        let key = self.job_key(job.id);
        let delay_ms = job.delay.as_millis() as u64;
        let (created, id): (i64, String) = self
            .eval(
                &self.scripts.enqueue,
                &[&key, &self.stream, &self.delayed, &idem_key],
                &[
                    &job.id,
                    &job.kind,
                    &job.payload,
                    &job.max_attempts,
                    &delay_ms,
                    &self.max_queued,
                    &idem_ttl,
                    &job.principal,
                    &job.trace,
                ],
            )
            .await?;
        if created < 0 {
            return Err(self.full());
        }
        Ok((created == 1, id))
    }

    /// New deliveries for `consumer`, at most `count`; never blocks.
    pub async fn fetch(&self, consumer: &str, count: usize) -> Result<Vec<Delivery>, StoreError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">");
        let reply: Option<StreamReadReply> =
            self.conn.run(&self.pool, &cmd, Deadline::NONE).await?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .filter_map(delivery)
            .collect())
    }

    /// Takes over deliveries other consumers left pending longer than `idle`.
    pub async fn claim(
        &self,
        consumer: &str,
        idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&self.stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count);
        let reply: StreamAutoClaimReply = self.conn.run(&self.pool, &cmd, Deadline::NONE).await?;
        Ok(reply.claimed.into_iter().filter_map(delivery).collect())
    }

    /// Resets the idle time of `entries`, which `consumer` is running, without counting a
    /// delivery (`XCLAIM … JUSTID`); entries acknowledged meanwhile are left alone.
    pub async fn touch(&self, consumer: &str, entries: &[String]) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&self.stream).arg(GROUP).arg(consumer).arg(0);
        for entry in entries {
            cmd.arg(entry);
        }
        cmd.arg("JUSTID");
        let _: Vec<String> = self.conn.run(&self.pool, &cmd, Deadline::NONE).await?;
        Ok(())
    }

    /// Moves due delayed jobs to the stream.
    pub async fn promote(&self, limit: usize) -> Result<u64, StoreError> {
        self.eval(
            &self.scripts.promote,
            &[&self.delayed, &self.stream],
            &[&limit],
        )
        .await
    }

    /// Marks the job running; `None` when its document expired.
    pub async fn start(&self, job: &str) -> Result<Option<Started>, StoreError> {
        let key = self.job_key(job);
        let reply: Option<(String, String, String, String, String, String)> =
            self.eval(&self.scripts.start, &[&key], &[]).await?;
        Ok(reply.map(
            |(kind, payload, attempt, max_attempts, principal, trace)| Started {
                principal: Some(principal).filter(|p| !p.is_empty()),
                trace: Some(trace).filter(|t| !t.is_empty()),
                kind,
                payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                attempt: attempt.parse().unwrap_or(1),
                max_attempts: max_attempts.parse().unwrap_or(1),
            },
        ))
    }

    /// Records how a delivery ended and acknowledges it.
    pub async fn finish(&self, delivery: &Delivery, outcome: Outcome) -> Result<(), StoreError> {
        let key = self.job_key(&delivery.job);
        let (status, detail, after) = match outcome {
            Outcome::Succeeded(result) => ("succeeded", result.to_string(), 0),
            Outcome::Retrying { error, after } => ("retrying", error, after.as_millis() as u64),
            Outcome::Dead(error) => ("dead", error, 0),
        };
        let doc_prefix = self.job_key("");
        self.eval::<i64>(
            &self.scripts.finish,
            &[
                &key,
                &self.stream,
                &self.delayed,
                &self.dead,
                &self.finished,
            ],
            &[
                &delivery.entry,
                &GROUP,
                &status,
                &detail,
                &after,
                &delivery.job,
                &self.status_ttl.as_secs().max(1),
                &self.max_finished,
                &doc_prefix,
            ],
        )
        .await
        .map(drop)
    }

    pub async fn status(&self, id: &str) -> Result<Option<JobStatus>, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.job_key(id));
        let fields: HashMap<String, String> =
            self.conn.run(&self.pool, &cmd, Deadline::NONE).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let text = |name: &str| fields.get(name).cloned();
        let number = |name: &str| {
            fields
                .get(name)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let json = |name: &str| fields.get(name).and_then(|v| serde_json::from_str(v).ok());
        Ok(Some(JobStatus {
            id: id.to_owned(),
            kind: text("kind").unwrap_or_default(),
            status: text("status").unwrap_or_default(),
            attempts: number("attempts") as u32,
            max_attempts: number("max_attempts") as u32,
            payload: json("payload").unwrap_or(serde_json::Value::Null),
            result: json("result"),
            last_error: text("last_error"),
            created_at: number("created_at"),
            updated_at: number("updated_at"),
            run_at: number("run_at"),
            principal: text("principal"),
        }))
    }

    /// Dead letters after the entry `after`, oldest first.
    pub async fn dead(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadJob>, StoreError> {
        let start = after.map_or_else(|| "-".to_owned(), |entry| format!("({entry}"));
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&self.dead)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit);
        let entries: redis::streams::StreamRangeReply =
            self.conn.run(&self.pool, &cmd, Deadline::NONE).await?;
        Ok(entries
            .ids
            .into_iter()
            .map(|entry| DeadJob {
                id: field(&entry, "id").unwrap_or_default(),
                error: field(&entry, "error").unwrap_or_default(),
                entry: entry.id,
            })
            .collect())
    }

    /// Queues a dead job again; false when it is not dead, [`StoreError::Full`] when
    /// `max_queued` jobs already wait.
    pub async fn retry_dead(&self, id: &str) -> Result<bool, StoreError> {
        let key = self.job_key(id);
        let retried: i64 = self
            .eval(
                &self.scripts.retry_dead,
                &[
                    &key,
                    &self.dead,
                    &self.stream,
                    &self.finished,
                    &self.delayed,
                ],
                &[&id, &self.max_queued],
            )
            .await?;
        if retried < 0 {
            return Err(self.full());
        }
        Ok(retried == 1)
    }

    fn full(&self) -> StoreError {
        StoreError::Full(format!("{} jobs already wait", self.max_queued))
    }

    /// Entries in the stream (ready or delivered and not yet acknowledged), and of those the
    /// delivered ones.
    pub async fn depth(&self) -> Result<(u64, u64), StoreError> {
        let mut len = redis::cmd("XLEN");
        len.arg(&self.stream);
        let depth: u64 = self.conn.run(&self.pool, &len, Deadline::NONE).await?;
        let mut pending = redis::cmd("XPENDING");
        pending.arg(&self.stream).arg(GROUP);
        let summary: (u64, Option<String>, Option<String>, redis::Value) =
            self.conn.run(&self.pool, &pending, Deadline::NONE).await?;
        Ok((depth, summary.0))
    }
}

fn field(entry: &StreamId, name: &str) -> Option<String> {
    entry.get(name)
}

fn delivery(entry: StreamId) -> Option<Delivery> {
    let job = field(&entry, "id")?;
    Some(Delivery {
        entry: entry.id,
        job,
    })
}
