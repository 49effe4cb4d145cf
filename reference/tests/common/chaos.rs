//! Store faults under a steady mixed load, measured: what tests/faults.rs asserts on and
//! bench/chaos prints. One steward process runs with Redis and PostgreSQL behind TCP proxies;
//! clients loop over kv writes and reads, account reads, transfers, lock cycles and job
//! enqueues while a fault is applied and lifted, and a sampler polls `/health/ready`.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_postgres::NoTls;

use super::load::{open_accounts, settle_jobs, Load, Tally, OPENING_BALANCE};
use super::service;
use super::ADMIN_TOKEN;
use steward::testing::{database_url, redis_url, store_addr, via, Process, TcpProxy, TestDb};

/// The faults of the matrix, each applied for `Timing::fault` and then lifted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    RedisDown,
    RedisSlow,
    RedisReset,
    PostgresDown,
    PostgresSlow,
    PostgresReset,
    /// The PostgreSQL store actor panics, again as soon as it is back, past the restart
    /// intensity (test-only trigger `POST /test/crash/postgres`).
    StorePanics,
}

/// Latency the "slow" faults add to every round trip to the store.
pub const SLOW: Duration = Duration::from_millis(200);

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::RedisDown,
        Fault::RedisSlow,
        Fault::RedisReset,
        Fault::PostgresDown,
        Fault::PostgresSlow,
        Fault::PostgresReset,
        Fault::StorePanics,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::RedisDown => "redis down",
            Fault::RedisSlow => "redis +200ms",
            Fault::RedisReset => "redis resets",
            Fault::PostgresDown => "postgres down",
            Fault::PostgresSlow => "postgres +200ms",
            Fault::PostgresReset => "postgres resets",
            Fault::StorePanics => "db actor panics",
        }
    }

    /// Whether the fault is on Redis, where the job queue lives.
    pub fn hits_redis(self) -> bool {
        matches!(
            self,
            Fault::RedisDown | Fault::RedisSlow | Fault::RedisReset
        )
    }

    /// Whether readiness must leave "ready" while the fault lasts: an outage must show, while
    /// latency within the ping deadline and resets (the pools reconnect) need not.
    pub fn must_flip(self) -> bool {
        matches!(
            self,
            Fault::RedisDown | Fault::PostgresDown | Fault::StorePanics
        )
    }
}

/// How long each part of a run lasts.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Load before the fault, to see the steady state.
    pub before: Duration,
    pub fault: Duration,
    /// Longest wait for recovery (and for the queued jobs) after the fault is lifted.
    pub settle: Duration,
    /// Concurrent clients of the load.
    pub clients: usize,
    /// Restart intensity of the process (`supervisor.intensity.max_restarts`), so the panic
    /// fault can go past it.
    pub max_restarts: u32,
}

/// One run's figures.
#[derive(Debug, Default)]
pub struct Report {
    pub fault: &'static str,
    /// What the load saw.
    pub tally: Tally,
    /// From the fault's start until readiness left "ready" (sampled every 50 ms).
    pub flipped_after: Option<Duration>,
    /// From the fault's end until readiness is "ready" again and every kind of request has
    /// succeeded again.
    pub recovered_after: Option<Duration>,
    pub restarts: u64,
    /// Whether the steward process was still running at the end.
    pub alive: bool,
    /// The sum of all balances is what the accounts opened with.
    pub ledger_whole: bool,
    /// Transfers answered 201 that are not in the database.
    pub lost_transfers: usize,
    /// Jobs answered 202 that did not succeed by the end of the settle time.
    pub unfinished_jobs: usize,
    /// Jobs whose side effect ran more than once.
    pub repeated_jobs: usize,
}

impl Report {
    pub fn count(&self, status: u16) -> u64 {
        self.tally.count_in(status..status + 1)
    }

    pub fn count_in(&self, range: std::ops::Range<u16>) -> u64 {
        self.tally.count_in(range)
    }

    pub const HEADER: &'static str = "| fault | sent | 2xx | 4xx | 503 | 504 | 500 | no answer | ready flipped | recovered | restarts | alive | ledger | transfers lost/acked | jobs unfinished/repeated/acked |";

    /// The non-2xx answers by kind of request, as `kind status×count` pairs.
    pub fn refusals(&self) -> String {
        let pairs: Vec<String> = self
            .tally
            .refusals
            .iter()
            .map(|((kind, status), n)| format!("{kind} {status}×{n}"))
            .collect();
        format!("{}: {}", self.fault, pairs.join(", "))
    }

    /// One Markdown table row; `HEADER` and a separator go above it.
    pub fn row(&self) -> String {
        let ms =
            |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{} ms", d.as_millis()));
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {}/{}/{} |",
            self.fault,
            self.tally.sent,
            self.count_in(200..300),
            self.count_in(400..500),
            self.count(503),
            self.count(504),
            self.count(500),
            self.tally.transport_errors,
            ms(self.flipped_after),
            ms(self.recovered_after),
            self.restarts,
            if self.alive { "yes" } else { "NO" },
            if self.ledger_whole { "whole" } else { "BROKEN" },
            self.lost_transfers,
            self.tally.transfers.len(),
            self.unfinished_jobs,
            self.repeated_jobs,
            self.tally.jobs.len(),
        )
    }
}

/// A steward process whose stores are reached through proxies the run controls.
pub struct Rig {
    pub service: Process,
    _db: TestDb,
    pub redis: TcpProxy,
    pub postgres: TcpProxy,
    pub prefix: String,
    db_url: String,
    client: reqwest::Client,
}

impl Rig {
    /// Starts steward (the binary of `service::binary`) on a fresh database, both stores behind
    /// proxies, with `vars` layered over the test configuration.
    pub async fn start(vars: &[(&str, &str)]) -> Self {
        super::ensure_stores().await;
        let db = super::test_db().await;
        let db_url = db.url.clone();
        let redis = TcpProxy::start(store_addr(&redis_url()));
        let postgres = TcpProxy::start(store_addr(&database_url()));
        let through = via(&db_url, postgres.addr);
        let prefix = format!("steward-chaos:{}:", uuid::Uuid::new_v4().simple());
        let redis_through = via(&redis_url(), redis.addr);
        let mut all = vec![
            ("STEWARD__REDIS__URL", redis_through.as_str()),
            ("STEWARD__POSTGRES__URL", through.as_str()),
            ("STEWARD__REDIS__KEY_PREFIX", prefix.as_str()),
            ("STEWARD__ADMIN__TOKEN", ADMIN_TOKEN),
        ];
        all.extend_from_slice(vars);
        let service = service::start_on(&through, &all).await;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        service.until_ready().await;
        Self {
            service,
            _db: db,
            redis,
            postgres,
            prefix,
            db_url,
            client,
        }
    }

    fn url(&self, path: &str) -> String {
        self.service.url(path)
    }

    async fn restarts(&self) -> u64 {
        let Ok(response) = self
            .client
            .get(self.url("/admin/actors"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
        else {
            return 0;
        };
        let body: Value = response.json().await.unwrap_or_default();
        body["children"]
            .as_array()
            .map(|children| children.iter().filter_map(|c| c["restarts"].as_u64()).sum())
            .unwrap_or(0)
    }

    /// Applies `fault` and returns when it has lasted `timing.fault` (the crash loop: when it
    /// has gone past the intensity, or after `timing.fault` at most).
    async fn apply(&self, fault: Fault, timing: Timing) {
        match fault {
            Fault::RedisDown => self.redis.cut(),
            Fault::RedisSlow => self.redis.delay(SLOW),
            Fault::PostgresDown => self.postgres.cut(),
            Fault::PostgresSlow => self.postgres.delay(SLOW),
            Fault::RedisReset | Fault::PostgresReset => {
                // Resets keep coming for the whole fault: one every 500 ms.
                let proxy = if fault == Fault::RedisReset {
                    &self.redis
                } else {
                    &self.postgres
                };
                let until = Instant::now() + timing.fault;
                while Instant::now() < until {
                    proxy.reset();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                return;
            }
            Fault::StorePanics => {
                // Past the intensity, each crash sent once the previous incarnation is back.
                let until = Instant::now() + timing.fault;
                let mut crashes = 0;
                while crashes <= timing.max_restarts + 1 && Instant::now() < until {
                    let before = self.restarts().await;
                    let _ = self
                        .client
                        .post(self.url("/test/crash/postgres"))
                        .send()
                        .await;
                    crashes += 1;
                    while self.restarts().await == before && Instant::now() < until {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                return;
            }
        }
        tokio::time::sleep(timing.fault).await;
    }

    fn lift(&self) {
        self.redis.restore();
        self.postgres.restore();
    }

    /// Runs `fault` under load and collects the figures.
    pub async fn run(&mut self, fault: Fault, timing: Timing) -> Report {
        let accounts = Arc::new(open_accounts(&self.client, &self.url("")).await);
        let restarts_before = self.restarts().await;
        let target = Arc::new(RwLock::new(self.url("")));
        let load = Load::start(
            self.client.clone(),
            target,
            Arc::clone(&accounts),
            timing.clients,
        );
        let sampler = Readiness::start(self.url("/health/ready"));

        tokio::time::sleep(timing.before).await;
        let fault_start = Instant::now();
        self.apply(fault, timing).await;
        self.lift();
        let fault_end = Instant::now();

        // Recovered: readiness "ready" and every kind of request succeeding again, both seen
        // after the fault ended.
        let deadline = fault_end + timing.settle;
        let mut recovered_after = None;
        while Instant::now() < deadline {
            let ready = sampler.first_ready_since(fault_end);
            let kinds = load.all_kinds_succeeded_since(fault_end);
            if let (Some(ready), Some(kinds)) = (ready, kinds) {
                recovered_after = Some(ready.max(kinds) - fault_end);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A second of steady state after recovery, then stop the load.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let tally = load.stop().await;
        let flipped_after = sampler
            .stop()
            .await
            .into_iter()
            .find(|(at, state)| *at >= fault_start && *state != "ready")
            .map(|(at, _)| at - fault_start);

        let mut report = Report {
            fault: fault.name(),
            flipped_after,
            recovered_after,
            restarts: self.restarts().await.saturating_sub(restarts_before),
            ..Report::default()
        };
        self.check_ledger(&accounts, &tally.transfers, &mut report)
            .await;
        let jobs_deadline = deadline.max(Instant::now() + Duration::from_secs(5));
        (report.unfinished_jobs, report.repeated_jobs) =
            settle_jobs(&self.prefix, &tally.jobs, jobs_deadline).await;
        report.alive = self.service.running();
        report.tally = tally;
        report
    }

    async fn check_ledger(&self, accounts: &[i64], transfers: &[i64], report: &mut Report) {
        let (client, connection) = tokio_postgres::connect(&self.db_url, NoTls).await.unwrap();
        tokio::spawn(connection);
        let total: i64 = client
            .query_one(
                "SELECT COALESCE(SUM(balance), 0)::BIGINT FROM accounts WHERE id = ANY($1)",
                &[&accounts],
            )
            .await
            .unwrap()
            .get(0);
        report.ledger_whole = total == OPENING_BALANCE * accounts.len() as i64;
        let found: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM transfers WHERE id = ANY($1)",
                &[&transfers],
            )
            .await
            .unwrap()
            .get(0);
        report.lost_transfers = transfers.len() - found as usize;
    }
}

/// Polls `/health/ready` every 50 ms and keeps what it saw: "ready", "degraded", "not_ready"
/// (503) or "unreachable".
struct Readiness {
    samples: Arc<Mutex<Vec<(Instant, &'static str)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Readiness {
    fn start(url: String) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&samples);
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            loop {
                let at = Instant::now();
                let state = match http.get(&url).send().await {
                    Ok(response) if response.status().is_success() => {
                        let body: Value = response.json().await.unwrap_or_default();
                        if body["status"] == "ready" {
                            "ready"
                        } else {
                            "degraded"
                        }
                    }
                    Ok(_) => "not_ready",
                    Err(_) => "unreachable",
                };
                seen.lock().unwrap().push((at, state));
                tokio::time::sleep_until((at + Duration::from_millis(50)).into()).await;
            }
        });
        Self { samples, task }
    }

    fn first_ready_since(&self, since: Instant) -> Option<Instant> {
        let samples = self.samples.lock().unwrap();
        // The first "ready" after which no sample said otherwise.
        let last_bad = samples
            .iter()
            .rev()
            .find(|(_, state)| *state != "ready")
            .map(|(at, _)| *at);
        samples
            .iter()
            .find(|(at, state)| {
                *at >= since && *state == "ready" && last_bad.is_none_or(|bad| *at > bad)
            })
            .map(|(at, _)| *at)
    }

    async fn stop(self) -> Vec<(Instant, &'static str)> {
        self.task.abort();
        let _ = self.task.await;
        Arc::try_unwrap(self.samples)
            .map(|samples| samples.into_inner().unwrap())
            .unwrap_or_else(|shared| shared.lock().unwrap().clone())
    }
}
