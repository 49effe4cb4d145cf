//! Lock acquire + release cycles per second against a running steward, for `bench/run`:
//! `lock_cycles <base-url> <concurrency> <seconds>`. Each task cycles its own lock name, so
//! the figure is the lock path's throughput, not contention on one name.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:18181".into());
    let concurrency: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(64);
    let seconds: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(10);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks = (0..concurrency).map(|task| {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            let url = format!("{base}/v1/locks/bench-{task}");
            let (mut cycles, mut failures) = (0u64, 0u64);
            while Instant::now() < deadline {
                let acquired = client
                    .post(&url)
                    .json(&json!({"ttl_ms": 10000}))
                    .send()
                    .await;
                let Ok(response) = acquired else {
                    failures += 1;
                    continue;
                };
                if response.status().as_u16() != 201 {
                    failures += 1;
                    continue;
                }
                let lease: Value = response.json().await.unwrap_or_default();
                let token = lease["token"].as_str().unwrap_or_default().to_owned();
                match client.delete(&url).header("lock-token", token).send().await {
                    Ok(r) if r.status().as_u16() == 204 => cycles += 1,
                    _ => failures += 1,
                }
            }
            (cycles, failures)
        })
    });
    let mut cycles = 0;
    let mut failures = 0;
    for task in tasks.collect::<Vec<_>>() {
        let (c, f) = task.await.expect("task");
        cycles += c;
        failures += f;
    }
    let rate = cycles as f64 / started.elapsed().as_secs_f64();
    println!("{rate:.2} {failures}");
}
