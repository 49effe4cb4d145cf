//! Three instances sharing one Redis: locks exclude across them, fencing tokens only grow, an
//! abandoned lease passes to another instance, and a global limit holds in total.

mod common;

use std::cell::{Cell, RefCell};
use std::time::Duration;

use common::spawn_app_with;

use futures::future::join_all;
use serde_json::{json, Value};
use steward::testing::{Reply, TestApp};

/// Three instances with one key prefix, so they share locks and limits.
async fn replicas(vars: &[(&str, &str)]) -> Vec<TestApp> {
    let prefix = format!("steward-replicas:{}:", uuid::Uuid::new_v4().simple());
    let mut all = vec![("STEWARD__REDIS__KEY_PREFIX", prefix.as_str())];
    all.extend_from_slice(vars);
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(spawn_app_with(&all).await);
    }
    apps
}

#[actix_rt::test]
async fn locks_exclude_across_replicas_and_fencing_tokens_grow() {
    let apps = replicas(&[]).await;
    let counter = Cell::new(0u64);
    let fences = RefCell::new(Vec::new());
    let worker = |n: usize| {
        let (app, counter, fences) = (&apps[n % 3], &counter, &fences);
        async move {
            let response = app
                .http()
                .post(app.url("/v1/locks/shared-counter"))
                .json(&json!({"ttl_ms": 10000, "wait_ms": 30000}))
                .send()
                .await
                .unwrap();
            if response.status().as_u16() != 201 {
                return false;
            }
            let lease: Value = response.json().await.unwrap();
            fences
                .borrow_mut()
                .push(lease["fencing_token"].as_i64().unwrap());
            // A read-modify-write that other holders would break if they overlapped.
            let seen = counter.get();
            tokio::time::sleep(Duration::from_millis(2)).await;
            counter.set(seen + 1);
            let released = app
                .http()
                .delete(app.url("/v1/locks/shared-counter"))
                .header("lock-token", lease["token"].as_str().unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(released.status().as_u16(), 204);
            true
        }
    };
    let acquired = join_all((0..150).map(worker))
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    assert_eq!(
        counter.get() as usize,
        acquired,
        "no two holders overlapped"
    );
    assert!(acquired > 0);
    let fences = fences.into_inner();
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens strictly increase: {fences:?}"
    );
}

#[actix_rt::test]
async fn an_abandoned_lease_passes_to_another_replica_with_a_larger_fence() {
    let apps = replicas(&[]).await;
    let first = Reply::of(
        apps[0]
            .http()
            .post(apps[0].url("/v1/locks/abandoned"))
            .json(&json!({"ttl_ms": 300})),
    )
    .await
    .body;
    // The holder never renews nor releases.
    let second = apps[1]
        .http()
        .post(apps[1].url("/v1/locks/abandoned"))
        .json(&json!({"ttl_ms": 1000, "wait_ms": 5000}))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status().as_u16(), 201);
    let second: Value = second.json().await.unwrap();
    assert!(second["fencing_token"].as_i64() > first["fencing_token"].as_i64());
    let stale = apps[0]
        .http()
        .put(apps[0].url("/v1/locks/abandoned"))
        .json(&json!({"token": first["token"], "ttl_ms": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stale.status().as_u16(),
        409,
        "the old holder cannot extend what it lost"
    );
}

#[actix_rt::test]
async fn a_global_limit_admits_exactly_n_across_replicas() {
    let policy = r#"[{name = "global", prefix = "/version", limit = 10, period = "60s"}]"#;
    let apps = replicas(&[("STEWARD__RATELIMIT__POLICIES", policy)]).await;
    let requests = (0..30).map(|n| {
        let app = &apps[n % 3];
        async move { app.get("/version").await.status }
    });
    let statuses = join_all(requests).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 20);
}
