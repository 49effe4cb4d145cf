//! `bench/overload`: failing fast and staying fast, on the release build, printed as Markdown
//! tables with the ratios issue 13 asks for.
//!
//! 1. **Redis refused** (a closed port): `GET /v1/kv/{key}` under 32 clients, with the store
//!    breaker on (the default) and off (every request then waits for the pool, as before).
//! 2. **PostgreSQL 500 ms slow** (a proxy that delays every round trip): `GET /v1/kv/{key}`
//!    under 32 clients while account reads arrive at a fixed rate, healthy and then slow.
//! 3. **Overload**: `/test/db-hold?ms=20` (a pooled connection held 20 ms: the route's capacity
//!    is the pool's 16 connections) driven open-loop at half and at four times its peak, with
//!    shedding on and off.
//! 4. **Recovery**: both stores behind proxies that reset every connection and refuse new ones
//!    for 3 s, under 8 clients of kv reads, account reads and transfers; what failed in the 2 s
//!    after readiness said "ready" again (three runs).
//!
//!   bash bench/overload
//!   bash bench/overload --only overload --secs 20

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use steward::testing::{closed_port, database_url, via, Process, TcpProxy, TestDb};
use steward_reference::migrations::MIGRATIONS;
use tokio::sync::Semaphore;

/// One answer: status (0 when the request failed or timed out at the client), latency, and
/// whether it carried `Retry-After`.
#[derive(Clone, Copy)]
struct Sample {
    status: u16,
    latency: Duration,
    retry_after: bool,
    /// Seconds from the start of the run at which it was sent.
    at: f64,
}

/// What a run shows.
struct Summary {
    secs: f64,
    samples: Vec<Sample>,
    /// Arrivals an open-loop run did not send because `MAX_IN_FLIGHT` were already waiting.
    skipped: usize,
}

/// Requests an open-loop run keeps waiting at once; past it, arrivals are counted as skipped
/// (a client that gave up), so a service that stops answering cannot exhaust the bench.
const MAX_IN_FLIGHT: usize = 4096;

impl Summary {
    fn count(&self, pick: impl Fn(&Sample) -> bool) -> usize {
        self.samples.iter().filter(|s| pick(s)).count()
    }

    fn rate(&self, pick: impl Fn(&Sample) -> bool) -> f64 {
        self.count(pick) as f64 / self.secs
    }

    /// The `q` quantile (0-1) of the latencies of the samples `pick` keeps, in ms.
    fn quantile(&self, q: f64, pick: impl Fn(&Sample) -> bool) -> f64 {
        let mut latencies: Vec<Duration> = self
            .samples
            .iter()
            .filter(|s| pick(s))
            .map(|s| s.latency)
            .collect();
        if latencies.is_empty() {
            return f64::NAN;
        }
        latencies.sort();
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1000.0
    }

    /// "200: 1234, 503: 56" and the skipped arrivals.
    fn answers(&self) -> String {
        let mut by_status = BTreeMap::new();
        for sample in &self.samples {
            *by_status.entry(sample.status).or_insert(0usize) += 1;
        }
        let mut text: Vec<String> = by_status
            .iter()
            .map(|(status, n)| match status {
                0 => format!("no answer: {n}"),
                _ => format!("{status}: {n}"),
            })
            .collect();
        if self.skipped > 0 {
            text.push(format!("not sent: {}", self.skipped));
        }
        text.join(", ")
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()
        .expect("an HTTP client")
}

async fn send(client: &reqwest::Client, url: &str, started: Instant) -> Sample {
    let at = started.elapsed().as_secs_f64();
    let sent = Instant::now();
    let (status, retry_after) = match client.get(url).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let _ = response.bytes().await;
            (status, retry_after)
        }
        Err(_) => (0, false),
    };
    Sample {
        status,
        latency: sent.elapsed(),
        retry_after,
        at,
    }
}

/// `clients` connections each sending the next request as soon as the last is answered.
async fn closed_loop(url: String, clients: usize, secs: f64) -> Summary {
    let client = client();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let workers = (0..clients).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < until {
                samples.push(send(&client, &url, started).await);
            }
            samples
        })
    });
    let mut samples = Vec::new();
    for worker in futures::future::join_all(workers).await {
        samples.extend(worker.expect("a client"));
    }
    Summary {
        secs: started.elapsed().as_secs_f64(),
        samples,
        skipped: 0,
    }
}

/// Requests sent at `rate` a second whatever the answers do (arrivals do not wait for the
/// service, as real clients' do not), for `secs`.
async fn open_loop(url: String, rate: f64, secs: f64) -> Summary {
    let client = client();
    let room = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let started = Instant::now();
    let total = (rate * secs) as usize;
    let mut tasks = Vec::with_capacity(total);
    let mut skipped = 0;
    for n in 0..total {
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = Arc::clone(&room).try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let sample = send(&client, &url, started).await;
            drop(permit);
            sample
        }));
    }
    let mut samples = Vec::with_capacity(tasks.len());
    for task in tasks {
        samples.push(task.await.expect("a request"));
    }
    Summary {
        secs,
        samples,
        skipped,
    }
}

fn ok(sample: &Sample) -> bool {
    (200..300).contains(&sample.status)
}

fn any(_: &Sample) -> bool {
    true
}

/// The release binary with production-sized pools and workers, `vars` on top.
async fn start(db: Option<&TestDb>, vars: &[(&str, String)]) -> Process {
    let binary = std::env::var("STEWARD_BIN").unwrap_or_else(|_| "target/release/steward".into());
    let mut launch = Process::with(binary)
        // The kit waits for the "listening" line (info); the access log would cost CPU.
        .env(
            "STEWARD__LOG__LEVEL",
            "info,steward::access=warn,steward::jobs=error",
        )
        .env("STEWARD__SERVER__WORKERS", "2")
        .env("STEWARD__SHUTDOWN__DRAIN_DELAY", "0s");
    if let Some(db) = db {
        launch = launch.env("STEWARD__POSTGRES__URL", &db.url);
    }
    for (name, value) in vars {
        launch = launch.env(name, value);
    }
    let process = launch.start().await;
    process.until_ready().await;
    process
}

fn row(cells: &[String]) -> String {
    format!("| {} |", cells.join(" | "))
}

fn ms(value: f64) -> String {
    format!("{value:.1} ms")
}

async fn redis_refused(secs: f64) {
    println!("\n### Redis refused: GET /v1/kv/{{key}}, 32 clients, {secs} s\n");
    println!("| breaker | req/s | p50 | p99 | answers | with Retry-After |");
    println!("|---|---|---|---|---|---|");
    let db = TestDb::create(MIGRATIONS).await;
    let refused = format!("redis://127.0.0.1:{}", closed_port());
    for enabled in ["true", "false"] {
        let vars = [
            ("STEWARD__REDIS__URL", refused.clone()),
            ("STEWARD__BREAKER__ENABLED", enabled.to_owned()),
        ];
        let process = start(Some(&db), &vars).await;
        let run = closed_loop(process.url("/v1/kv/bench"), 32, secs).await;
        let cells = [
            if enabled == "true" { "on" } else { "off" }.to_owned(),
            format!("{:.0}", run.rate(any)),
            ms(run.quantile(0.5, any)),
            ms(run.quantile(0.99, any)),
            run.answers(),
            format!(
                "{:.0}%",
                100.0 * run.count(|s| s.retry_after) as f64 / run.samples.len() as f64
            ),
        ];
        println!("{}", row(&cells));
    }
}

async fn postgres_slow(secs: f64) {
    println!("\n### PostgreSQL 500 ms slow: GET /v1/kv/{{key}} under 32 clients, account reads at 200/s beside it, {secs} s\n");
    println!("| PostgreSQL | kv req/s | kv p99 | kv answers | account reads answers |");
    println!("|---|---|---|---|---|");
    let db = TestDb::create(MIGRATIONS).await;
    let proxy = TcpProxy::start(steward::testing::store_addr(&database_url()));
    let vars = [("STEWARD__POSTGRES__URL", via(&db.url, proxy.addr))];
    let process = start(None, &vars).await;
    let put = reqwest::Client::new()
        .put(process.url("/v1/kv/bench"))
        .body(vec![b'v'; 100])
        .send()
        .await
        .expect("seed the key");
    assert_eq!(put.status(), 204, "seed the key");
    let mut figures = Vec::new();
    for (label, delay) in [
        ("healthy", None),
        ("500 ms late", Some(Duration::from_millis(500))),
    ] {
        match delay {
            Some(delay) => proxy.delay(delay),
            None => proxy.restore(),
        }
        let kv = closed_loop(process.url("/v1/kv/bench"), 32, secs);
        let reads = open_loop(process.url("/v1/accounts?limit=1"), 200.0, secs);
        let (kv, reads) = tokio::join!(kv, reads);
        let cells = [
            label.to_owned(),
            format!("{:.0}", kv.rate(ok)),
            ms(kv.quantile(0.99, ok)),
            kv.answers(),
            reads.answers(),
        ];
        println!("{}", row(&cells));
        figures.push((kv.rate(ok), kv.quantile(0.99, ok)));
    }
    let ((healthy_rate, healthy_p99), (slow_rate, slow_p99)) = (figures[0], figures[1]);
    println!(
        "\nkv with PostgreSQL slow vs healthy: throughput {:.2}x (target >= 0.9x), p99 {:.2}x (target <= 2x)",
        slow_rate / healthy_rate,
        slow_p99 / healthy_p99
    );
}

async fn overload(secs: f64) {
    println!("\n### Overload: /test/db-hold?ms=20 (pool of 16), open loop, {secs} s a run\n");
    let db = TestDb::create(MIGRATIONS).await;
    let route = |process: &Process| process.url("/test/db-hold?ms=20");
    let warm = [("STEWARD__POSTGRES__POOL__MIN_IDLE", "16".to_owned())];
    let process = start(Some(&db), &warm).await;
    let unloaded = closed_loop(route(&process), 1, 3.0).await;
    let unloaded_p99 = unloaded.quantile(0.99, ok);
    // Twice as many clients as connections: the pool is never idle, whatever each client's
    // own time between requests.
    let peak = closed_loop(route(&process), 32, 5.0).await;
    let peak_rate = peak.rate(ok);
    println!(
        "unloaded (1 client): p50 {}, p99 {}; peak (32 clients on the 16 connections): {peak_rate:.0} req/s\n",
        ms(unloaded.quantile(0.5, ok)),
        ms(unloaded_p99),
    );
    println!("| shedding | offered | goodput | goodput / peak | admitted p50 | admitted p99 | p99 / unloaded p99 | admitted p99 after 2 s | answers |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let off = start(
        Some(&db),
        &[
            warm[0].clone(),
            ("STEWARD__SHEDDING__ENABLED", "false".to_owned()),
        ],
    )
    .await;
    for (label, target, factor) in [
        ("on", &process, 0.5),
        ("on", &process, 4.0),
        ("off", &off, 4.0),
    ] {
        let rate = peak_rate * factor;
        let run = open_loop(route(target), rate, secs).await;
        let p99 = run.quantile(0.99, ok);
        let settled = run.quantile(0.99, |s| ok(s) && s.at >= 2.0);
        let cells = [
            label.to_owned(),
            format!("{rate:.0}/s ({factor}x)"),
            format!("{:.0}/s", run.rate(ok)),
            format!("{:.2}x", run.rate(ok) / peak_rate),
            ms(run.quantile(0.5, ok)),
            ms(p99),
            format!("{:.2}x", p99 / unloaded_p99),
            ms(settled),
            run.answers(),
        ];
        println!("{}", row(&cells));
    }
}

/// One request of the recovery mix: a kv read, an account read (past the cache) or a transfer
/// between the client's own two accounts (so that transfers never contend with each other).
async fn mixed(
    client: &reqwest::Client,
    base: &str,
    n: u64,
    accounts: [i64; 2],
) -> (&'static str, u16, String) {
    let (route, request) = match n % 3 {
        0 => ("kv read", client.get(format!("{base}/v1/kv/bench"))),
        1 => (
            "account read",
            client
                .get(format!("{base}/v1/accounts/{}", accounts[0]))
                .header("Cache-Control", "no-cache"),
        ),
        _ => (
            "transfer",
            client
                .post(format!("{base}/v1/transfers"))
                .header(
                    "Idempotency-Key",
                    format!("recovery-{n}-{}", rand::random::<u64>()),
                )
                .json(&serde_json::json!({"from": accounts[0], "to": accounts[1], "amount": 1})),
        ),
    };
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (route, status, code)
        }
        Err(_) => (route, 0, "no answer".to_owned()),
    }
}

async fn recovery() {
    println!("\n### Recovery: both stores reset and refused for 3 s, 8 clients of kv reads, account reads and transfers\n");
    println!(
        "| run | ready again after the fault | requests in the 2 s after | failed | failures |"
    );
    println!("|---|---|---|---|---|");
    for run in 1..=3 {
        let db = TestDb::create(MIGRATIONS).await;
        let postgres = TcpProxy::start(steward::testing::store_addr(&database_url()));
        let redis = TcpProxy::start(steward::testing::store_addr(&steward::testing::redis_url()));
        let vars = [
            ("STEWARD__POSTGRES__URL", via(&db.url, postgres.addr)),
            (
                "STEWARD__REDIS__URL",
                via(&steward::testing::redis_url(), redis.addr),
            ),
            ("STEWARD__HEALTH__INTERVAL", "200ms".to_owned()),
            ("STEWARD__HEALTH__READY_CACHE", "0s".to_owned()),
        ];
        let process = start(None, &vars).await;
        let client = client();
        let base = process.url("");
        let base = base.trim_end_matches('/').to_owned();
        let mut accounts = Vec::new();
        for _ in 0..16 {
            let created: serde_json::Value = client
                .post(format!("{base}/v1/accounts"))
                .json(&serde_json::json!({"name": "recovery", "initial_balance": 1_000_000}))
                .send()
                .await
                .expect("open an account")
                .json()
                .await
                .expect("an account");
            accounts.push(created["id"].as_i64().expect("an id"));
        }
        client
            .put(format!("{base}/v1/kv/bench"))
            .body("v")
            .send()
            .await
            .expect("seed");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        type Answers = Vec<(Instant, &'static str, u16, String)>;
        let log: Arc<std::sync::Mutex<Answers>> = Arc::default();
        let clients: Vec<_> = (0..8u64)
            .map(|c| {
                let (client, base, stop, log, accounts) = (
                    client.clone(),
                    base.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&log),
                    accounts.clone(),
                );
                tokio::spawn(async move {
                    let mut n = c;
                    let own = [accounts[2 * c as usize], accounts[2 * c as usize + 1]];
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let (route, status, code) = mixed(&client, &base, n, own).await;
                        log.lock()
                            .unwrap()
                            .push((Instant::now(), route, status, code));
                        n += 8;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        postgres.cut();
        redis.cut();
        tokio::time::sleep(Duration::from_secs(3)).await;
        postgres.restore();
        redis.restore();
        let lifted = Instant::now();
        let ready = loop {
            let ready = client.get(format!("{base}/health/ready")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        futures::future::join_all(clients).await;
        let log = log.lock().unwrap();
        let after: Vec<_> = log
            .iter()
            .filter(|(at, ..)| *at >= ready && *at < ready + Duration::from_secs(2))
            .collect();
        let mut failures: BTreeMap<String, usize> = BTreeMap::new();
        for (_, route, status, code) in &after {
            if *status == 0 || *status >= 500 {
                *failures
                    .entry(format!("{route}: {status} {code}"))
                    .or_default() += 1;
            }
        }
        let failed: usize = failures.values().sum();
        let failures: Vec<String> = failures
            .iter()
            .map(|(what, n)| format!("{what} x{n}"))
            .collect();
        let cells = [
            run.to_string(),
            ms(ready.duration_since(lifted).as_secs_f64() * 1000.0),
            after.len().to_string(),
            failed.to_string(),
            failures.join(", "),
        ];
        println!("{}", row(&cells));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut only = None;
    let mut secs = 10.0;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--only" => only = Some(value),
            "--secs" => secs = value.parse().expect("--secs: a number"),
            _ => panic!("unknown flag {flag}; see bench/overload.rs"),
        }
    }
    steward::testing::ensure_stores(steward::Backends::ALL).await;
    let wanted = |part: &str| only.as_deref().is_none_or(|only| only == part);
    if wanted("refused") {
        redis_refused(secs / 2.0).await;
    }
    if wanted("slow") {
        postgres_slow(secs).await;
    }
    if wanted("overload") {
        overload(secs).await;
    }
    if wanted("recovery") {
        recovery().await;
    }
}
