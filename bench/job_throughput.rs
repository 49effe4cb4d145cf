//! No-op job throughput against a running steward (bench-routes build), for `bench/run`:
//! `job_throughput <base-url> <jobs> <concurrency>`. Enqueues the jobs through the API and
//! prints jobs per second from the first enqueue until `jobs_total` counts them all done.

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::json;

const DONE: &str = "jobs_total{kind=\"bench.noop\",outcome=\"succeeded\",queue=\"default\"}";

async fn done(client: &reqwest::Client, base: &str) -> u64 {
    let Ok(response) = client.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(DONE)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:18181".into());
    let jobs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let concurrency: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(64);
    let client = reqwest::Client::new();
    let before = done(&client, &base).await;
    let started = Instant::now();
    let failed = stream::iter(0..jobs)
        .map(|_| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let enqueue = client
                    .post(format!("{base}/v1/jobs"))
                    .json(&json!({"kind": "bench.noop"}));
                !matches!(enqueue.send().await, Ok(r) if r.status().as_u16() == 202)
            }
        })
        .buffer_unordered(concurrency)
        .filter(|failed| futures::future::ready(*failed))
        .count()
        .await;
    let enqueued = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while done(&client, &base).await < before + jobs - failed as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = started.elapsed();
    let completed = done(&client, &base).await - before;
    println!(
        "{:.2} {:.2} {completed} {failed}",
        completed as f64 / total.as_secs_f64(),
        jobs as f64 / enqueued.as_secs_f64()
    );
}
