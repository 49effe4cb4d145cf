//! The steady mixed load the resilience tests and bench/chaos put on steward: clients loop over
//! kv writes and reads, account reads, transfers, lock cycles and job enqueues, and count what
//! came back, including the transfers and jobs the service acknowledged, so a run can check
//! afterwards that none of them was lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use steward::testing::redis_url;

/// Each account starts with this much; transfers move 1, so none is ever refused for funds.
pub const OPENING_BALANCE: i64 = 1_000_000;
/// Enough accounts that transfers between random pairs rarely touch the same row at once:
/// with 32, about one transfer in a few hundred met a conflict on each of its nine attempts
/// (SERIALIZABLE) and was answered 503 "contention", an honest answer that is not what these
/// runs measure.
const ACCOUNTS: usize = 128;

/// Opens the accounts the load moves money between, through the API at `base`.
pub async fn open_accounts(http: &reqwest::Client, base: &str) -> Vec<i64> {
    let open = (0..ACCOUNTS).map(|n| async move {
        let response = http
            .post(format!("{base}/v1/accounts"))
            .json(&json!({"name": format!("load-{n}"), "initial_balance": OPENING_BALANCE}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201, "open an account");
        response.json::<Value>().await.unwrap()["id"]
            .as_i64()
            .unwrap()
    });
    futures::future::join_all(open).await
}

/// Waits (until `deadline`) for every job in `ids` to succeed; returns how many did not and
/// how many ran their side effect more than once.
pub async fn settle_jobs(prefix: &str, ids: &[String], deadline: Instant) -> (usize, usize) {
    loop {
        let states = job_states(prefix, ids).await;
        let unfinished = states.iter().filter(|(s, _)| s != "succeeded").count();
        if unfinished == 0 || Instant::now() > deadline {
            let repeated = states.iter().filter(|(_, done)| *done > 1).count();
            return (unfinished, repeated);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Job statuses straight from Redis, and how often `test.record` completed each job.
pub async fn job_states(prefix: &str, ids: &[String]) -> Vec<(String, u64)> {
    let client = redis::Client::open(redis_url().as_str()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let mut states = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("HGET")
                .arg(format!("{prefix}job:{id}"))
                .arg("status");
            pipe.cmd("GET").arg(format!("{prefix}test:done:{id}"));
        }
        let replies: Vec<Option<String>> = pipe.query_async(&mut redis).await.unwrap();
        states.extend(replies.chunks(2).map(|pair| {
            let done = pair[1].as_deref().map_or(0, |v| v.parse().unwrap());
            (pair[0].clone().unwrap_or_default(), done)
        }));
    }
    states
}

/// The kinds of request the load sends, in turn.
const KINDS: [&str; 6] = ["kv.put", "kv.get", "account.get", "transfer", "lock", "job"];

/// What the load saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: u64,
    pub statuses: BTreeMap<u16, u64>,
    /// Answers other than 2xx, by kind of request and status (0: no answer).
    pub refusals: BTreeMap<(&'static str, u16), u64>,
    /// Requests without an HTTP answer: refused connections included.
    pub transport_errors: u64,
    /// Of those, connections refused (nothing was sent: the service had stopped listening).
    pub refused: u64,
    /// The `X-Request-Id`s of the others (reset or closed without an answer), so a run can
    /// check in the service's access log whether it had accepted them.
    pub unanswered: Vec<String>,
    /// 503 and 504 answers without `Retry-After`.
    pub unavailable_without_retry_after: u64,
    /// The first few 5xx answers, for the report: kind, status, body and request id.
    pub samples: Vec<String>,
    /// Ids of transfers answered 201.
    pub transfers: Vec<i64>,
    /// Ids of jobs answered 202.
    pub jobs: Vec<String>,
    /// Per kind, when its latest successful request started.
    last_success: BTreeMap<&'static str, Instant>,
}

impl Tally {
    /// Answers with a status in `range`.
    pub fn count_in(&self, range: std::ops::Range<u16>) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| range.contains(status))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The mixed load: `clients` tasks, each looping over `KINDS`, sending to whatever address
/// `target` holds when a request starts (a rolling restart moves it).
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(
        http: reqwest::Client,
        target: Arc<RwLock<String>>,
        accounts: Arc<Vec<i64>>,
        clients: usize,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let sequence = Arc::new(AtomicU64::new(0));
        let tasks = (0..clients)
            .map(|client_no| {
                let client = Client {
                    http: http.clone(),
                    target: Arc::clone(&target),
                    accounts: Arc::clone(&accounts),
                    client_no,
                    sequence: Arc::clone(&sequence),
                };
                let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
                tokio::spawn(async move {
                    let mut turn = client_no;
                    while !stop.load(Ordering::Relaxed) {
                        let kind = KINDS[turn % KINDS.len()];
                        turn += 1;
                        client.send(kind, &tally).await;
                    }
                })
            })
            .collect();
        Self { stop, tally, tasks }
    }

    /// The latest of the kinds' first successes after `since`, once every kind has one.
    pub fn all_kinds_succeeded_since(&self, since: Instant) -> Option<Instant> {
        let tally = self.tally.lock().unwrap();
        KINDS
            .iter()
            .map(|kind| {
                tally
                    .last_success
                    .get(kind)
                    .copied()
                    .filter(|at| *at >= since)
            })
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }

    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        Arc::try_unwrap(self.tally)
            .expect("every client stopped")
            .into_inner()
            .unwrap()
    }
}

/// One load client.
struct Client {
    http: reqwest::Client,
    target: Arc<RwLock<String>>,
    accounts: Arc<Vec<i64>>,
    client_no: usize,
    sequence: Arc<AtomicU64>,
}

impl Client {
    async fn send(&self, kind: &'static str, tally: &Mutex<Tally>) {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let base = self.target.read().unwrap().clone();
        // A random pair of distinct accounts.
        let count = self.accounts.len();
        let from = rand::random_range(0..count);
        let to = (from + rand::random_range(1..count)) % count;
        let (from, to) = (self.accounts[from], self.accounts[to]);
        let key = format!("{}/v1/kv/chaos-{}", base, n % 64);
        let lock = format!("{}/v1/locks/chaos-{}", base, self.client_no);
        let request = match kind {
            "kv.put" => self.http.put(&key).body(format!("value {n}")),
            "kv.get" => self.http.get(&key),
            "account.get" => self.http.get(format!("{}/v1/accounts/{}", base, from)),
            "transfer" => self
                .http
                .post(format!("{}/v1/transfers", base))
                .header(
                    "idempotency-key",
                    format!("chaos-{}", uuid::Uuid::new_v4().simple()),
                )
                .json(&json!({"from": from, "to": to, "amount": 1})),
            "lock" => self.http.post(&lock).json(&json!({"ttl_ms": 5000})),
            _ => self
                .http
                .post(format!("{}/v1/jobs", base))
                .json(&json!({"kind": "test.record"})),
        };
        let Some(body) = record(kind, request, tally).await else {
            return;
        };
        match kind {
            "transfer" => {
                if let Some(id) = body["id"].as_i64() {
                    tally.lock().unwrap().transfers.push(id);
                }
            }
            "job" => {
                if let Some(id) = body["id"].as_str() {
                    tally.lock().unwrap().jobs.push(id.to_owned());
                }
            }
            "lock" => {
                // A lock cycle: the lease just granted is given back.
                if let Some(token) = body["token"].as_str() {
                    let release = self.http.delete(&lock).header("lock-token", token);
                    record("lock", release, tally).await;
                }
            }
            _ => {}
        }
    }
}

/// Sends one request and counts its outcome; the body of a 2xx answer comes back.
async fn record(
    kind: &'static str,
    request: reqwest::RequestBuilder,
    tally: &Mutex<Tally>,
) -> Option<Value> {
    let started = Instant::now();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let response = match request.header("x-request-id", &id).send().await {
        Ok(response) => response,
        Err(error) => {
            {
                let mut tally = tally.lock().unwrap();
                tally.sent += 1;
                tally.transport_errors += 1;
                tally.refused += u64::from(error.is_connect());
                if !error.is_connect() {
                    tally.unanswered.push(id);
                }
                *tally.refusals.entry((kind, 0)).or_default() += 1;
            }
            // No busy loop against a closed port.
            tokio::time::sleep(Duration::from_millis(10)).await;
            return None;
        }
    };
    let status = response.status().as_u16();
    let success = response.status().is_success();
    {
        let mut tally = tally.lock().unwrap();
        tally.sent += 1;
        *tally.statuses.entry(status).or_default() += 1;
        if !success {
            *tally.refusals.entry((kind, status)).or_default() += 1;
        }
        if matches!(status, 503 | 504) && !response.headers().contains_key("retry-after") {
            tally.unavailable_without_retry_after += 1;
        }
        // kv.get may answer 404 (a key not written yet, or expired): the store answered.
        if success || (kind == "kv.get" && status == 404) {
            tally.last_success.insert(kind, started);
        }
    }
    if !success {
        if status >= 500 {
            let body = response.text().await.unwrap_or_default();
            let mut tally = tally.lock().unwrap();
            if tally.samples.len() < 5 {
                tally
                    .samples
                    .push(format!("{kind}: {status} {body} (request {id})"));
            }
        }
        return None;
    }
    Some(response.json().await.unwrap_or_default())
}
