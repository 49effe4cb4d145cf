//! Stopping steward under load, measured: what tests/rollout.rs asserts on and bench/chaos
//! prints. Every process runs on one database and one Redis key prefix, as the replicas of a
//! deployment do, so a job one process acknowledged can be finished by the next.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::load::{open_accounts, settle_jobs, Load, Tally};
use super::service;
use steward::testing::{Process, TestDb};

/// The phases of an ordered shutdown, as the `shutdown phase=...` lines name them.
pub const PHASES: [&str; 5] = ["readiness", "drain_delay", "http", "workers", "stores"];

/// One stopped process.
#[derive(Debug)]
pub struct Stop {
    pub exit_code: Option<i32>,
    /// From SIGTERM to exit.
    pub took: Duration,
    /// `(phase, outcome)` in the order the log gave them.
    pub phases: Vec<(String, String)>,
    /// Its log: the access log tells which requests it accepted.
    pub log: Vec<String>,
}

impl Stop {
    /// All five phases, in order, each "ok".
    pub fn orderly(&self) -> bool {
        self.phases.iter().map(|(name, _)| name.as_str()).eq(PHASES)
            && self.phases.iter().all(|(_, outcome)| outcome == "ok")
    }
}

/// What a run of stops and starts under load saw.
pub struct Outcome {
    pub stops: Vec<Stop>,
    pub tally: Tally,
    /// Requests without an answer that a process's access log shows it accepted: a process
    /// that read a request must answer it.
    pub accepted_unanswered: u64,
    /// Acknowledged jobs not succeeded once a fresh process had time to run them.
    pub unfinished_jobs: usize,
    /// Acknowledged jobs whose side effect ran more than once.
    pub repeated_jobs: usize,
}

impl Outcome {
    /// Requests that went wrong: a 5xx, or no answer to a request a process had accepted.
    /// A refused connection is not a failure: the process had stopped listening, which is what
    /// a client (or a load balancer) must see after the stop. Neither is a connection the
    /// kernel completed but the process never accepted: closing the listener resets those, and
    /// the request on it was never read (the access log does not show it).
    pub fn failed(&self) -> u64 {
        self.tally.count_in(500..600) + self.accepted_unanswered
    }

    /// The processes' log lines about the sampled 5xx answers, to say why they happened.
    pub fn log_of_samples(&self) -> Vec<&str> {
        let ids: Vec<&str> = self
            .tally
            .samples
            .iter()
            .filter_map(|sample| sample.rsplit("(request ").next()?.strip_suffix(')'))
            .collect();
        self.stops
            .iter()
            .flat_map(|stop| &stop.log)
            .filter(|line| ids.iter().any(|id| line.contains(id)))
            .map(String::as_str)
            .collect()
    }

    /// Connections reset before the process read their request.
    pub fn reset_unread(&self) -> u64 {
        self.tally.transport_errors - self.tally.refused - self.accepted_unanswered
    }

    pub const HEADER: &'static str = "| run | stops | sent | 2xx | 4xx | 5xx | refused | reset unread | failed | orderly stops | exit codes | longest stop | jobs unfinished/repeated/acked |";

    /// One Markdown table row under `HEADER`.
    pub fn row(&self, run: &str) -> String {
        let codes: Vec<String> = self
            .stops
            .iter()
            .map(|stop| stop.exit_code.map_or("signal".into(), |c| c.to_string()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let longest = self.stops.iter().map(|s| s.took).max().unwrap_or_default();
        format!(
            "| {run} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {} | {} ms | {}/{}/{} |",
            self.stops.len(),
            self.tally.sent,
            self.tally.count_in(200..300),
            self.tally.count_in(400..500),
            self.tally.count_in(500..600),
            self.tally.refused,
            self.reset_unread(),
            self.failed(),
            self.stops.iter().filter(|s| s.orderly()).count(),
            self.stops.len(),
            codes.join(","),
            longest.as_millis(),
            self.unfinished_jobs,
            self.repeated_jobs,
            self.tally.jobs.len(),
        )
    }
}

/// Processes of one deployment, started and stopped under load.
pub struct Fleet {
    db: TestDb,
    prefix: String,
    vars: Vec<(String, String)>,
    http: reqwest::Client,
}

impl Fleet {
    /// `vars` are layered over the test configuration of every process; `drain_delay` 1 s
    /// (with none, nothing retires keep-alive connections before the HTTP phase closes them).
    pub async fn new(vars: &[(&str, &str)]) -> Self {
        super::ensure_stores().await;
        let prefix = format!("steward-rollout:{}:", uuid::Uuid::new_v4().simple());
        let all: Vec<(String, String)> = [
            ("STEWARD__REDIS__KEY_PREFIX", prefix.as_str()),
            ("STEWARD__SHUTDOWN__DRAIN_DELAY", "1s"),
            // Hundreds of clients on two shared cores: the test configuration's pool (4
            // connections, 1 s wait) sheds transfers with 503 "timed out waiting for a
            // connection", which is right under overload but not what these runs measure.
            ("STEWARD__POSTGRES__POOL__MAX_SIZE", "10"),
            ("STEWARD__POSTGRES__POOL__CONNECTION_TIMEOUT", "5s"),
        ]
        .into_iter()
        .chain(vars.iter().copied())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Self {
            db: super::test_db().await,
            prefix,
            vars: all,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    }

    async fn launch(&self) -> Process {
        let vars: Vec<(&str, &str)> = self
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let service = service::start_on(&self.db.url, &vars).await;
        service.until_ready().await;
        service
    }

    async fn stop(&self, mut service: Process) -> Stop {
        let sent = Instant::now();
        service.signal(libc::SIGTERM);
        let status = service.exit_status(Duration::from_secs(30)).await;
        Stop {
            exit_code: status.code(),
            took: sent.elapsed(),
            phases: service.phases(),
            log: service.log(),
        }
    }

    /// `clients` connections of mixed load on one process, SIGTERM in the middle, and load
    /// still sent at its address after it exited (those connections must be refused).
    pub async fn stop_under_load(&self, clients: usize) -> Outcome {
        let service = self.launch().await;
        let base = service.url("");
        let accounts = Arc::new(open_accounts(&self.http, &base).await);
        let target = Arc::new(RwLock::new(base));
        let load = Load::start(self.http.clone(), target, accounts, clients);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stop = self.stop(service).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.outcome(vec![stop], load.stop().await).await
    }

    /// A rolling restart, `rounds` times: start a new process, move the load to it (as a
    /// load balancer does when the old pod is deleted), SIGTERM the old one. The old process
    /// still serves for `drain_delay`, so requests that were already on their way get answers.
    pub async fn roll(&self, rounds: usize, clients: usize) -> Outcome {
        let mut current = self.launch().await;
        let accounts = Arc::new(open_accounts(&self.http, &current.url("")).await);
        let target = Arc::new(RwLock::new(current.url("")));
        let load = Load::start(self.http.clone(), Arc::clone(&target), accounts, clients);
        let mut stops = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let next = self.launch().await;
            *target.write().unwrap() = next.url("");
            let old = std::mem::replace(&mut current, next);
            stops.push(self.stop(old).await);
        }
        let tally = load.stop().await;
        stops.push(self.stop(current).await);
        self.outcome(stops, tally).await
    }

    /// Starts a fresh process to finish the queue, and checks every acknowledged job.
    async fn outcome(&self, stops: Vec<Stop>, tally: Tally) -> Outcome {
        let finisher = self.launch().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let (unfinished_jobs, repeated_jobs) =
            settle_jobs(&self.prefix, &tally.jobs, deadline).await;
        drop(finisher);
        let accepted_unanswered = tally
            .unanswered
            .iter()
            .filter(|id| {
                stops
                    .iter()
                    .any(|stop| stop.log.iter().any(|line| line.contains(id.as_str())))
            })
            .count() as u64;
        Outcome {
            stops,
            tally,
            accepted_unanswered,
            unfinished_jobs,
            repeated_jobs,
        }
    }
}
