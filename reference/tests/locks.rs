//! `/v1/locks/{name}` on one instance: the lease cycle, waiting, bad input, release at shutdown.

mod common;

use std::time::{Duration, Instant};

use common::spawn_app;

use redis::AsyncCommands;
use serde_json::{json, Value};
use steward::actors::lock::{Acquire, Acquired, Holder, Inspect, Lease, LockName};
use steward::testing::{eventually, Reply, TestApp};

async fn acquire(app: &TestApp, name: &str, body: Value) -> reqwest::Response {
    app.http()
        .post(app.url(&format!("/v1/locks/{name}")))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn release(app: &TestApp, name: &str, token: &str) -> reqwest::Response {
    app.http()
        .delete(app.url(&format!("/v1/locks/{name}")))
        .header("lock-token", token)
        .send()
        .await
        .unwrap()
}

#[actix_rt::test]
async fn a_lease_is_granted_held_extended_and_released() {
    let app = spawn_app().await;
    let first = acquire(&app, "job.42", json!({"ttl_ms": 5000})).await;
    assert_eq!(first.status().as_u16(), 201);
    let lease: Value = first.json().await.unwrap();
    let token = lease["token"].as_str().unwrap().to_owned();
    let fence = lease["fencing_token"].as_i64().unwrap();
    assert!(lease["expires_at"].as_str().unwrap().ends_with('Z'));

    let second = acquire(&app, "job.42", json!({"ttl_ms": 5000})).await;
    let retry_after: u64 = second.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    assert_eq!(
        Reply::read(second).await.outcome(),
        (409, "lock_held".into())
    );

    let state: Value = app.get("/v1/locks/job.42").await.body;
    assert_eq!(state["held"], true);
    assert_eq!(state["fencing_token"], fence);
    assert!(state["expires_in_ms"].as_i64().unwrap() > 4000);
    assert!(state.get("token").is_none(), "the token is never shown");

    let extend = |token: &str| {
        app.http()
            .put(app.url("/v1/locks/job.42"))
            .json(&json!({"token": token, "ttl_ms": 20000}))
            .send()
    };
    assert_eq!(extend(&token).await.unwrap().status().as_u16(), 200);
    let state: Value = app.get("/v1/locks/job.42").await.body;
    assert!(state["expires_in_ms"].as_i64().unwrap() > 15000);
    assert_eq!(
        Reply::read(extend("not-the-token").await.unwrap())
            .await
            .outcome(),
        (409, "not_lock_owner".into())
    );
    let refused = "lock_operations_total{op=\"extend\",result=\"not_owner\"}";
    assert_eq!(
        app.metric(refused).await,
        1.0,
        "a wrong token is refused, not a lost lease"
    );

    assert_eq!(
        Reply::read(release(&app, "job.42", "not-the-token").await)
            .await
            .outcome(),
        (409, "not_lock_owner".into())
    );
    assert_eq!(release(&app, "job.42", &token).await.status().as_u16(), 204);
    let state: Value = app.get("/v1/locks/job.42").await.body;
    assert_eq!(state["held"], false);

    let again: Value = acquire(&app, "job.42", json!({"ttl_ms": 5000}))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        again["fencing_token"].as_i64().unwrap() > fence,
        "fencing tokens only grow"
    );
}

#[actix_rt::test]
async fn waiting_acquires_when_the_holder_lets_go() {
    let app = spawn_app().await;
    let held: Value = acquire(&app, "short", json!({"ttl_ms": 300}))
        .await
        .json()
        .await
        .unwrap();
    let started = Instant::now();
    let waited = acquire(&app, "short", json!({"ttl_ms": 1000, "wait_ms": 3000})).await;
    assert_eq!(waited.status().as_u16(), 201);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "it waited for the expiry"
    );
    let lease: Value = waited.json().await.unwrap();
    assert!(lease["fencing_token"].as_i64() > held["fencing_token"].as_i64());
}

#[actix_rt::test]
async fn bad_lock_requests_get_the_documented_4xx() {
    let app = spawn_app().await;
    let cases = [
        (json!({"ttl_ms": 99}), 422, "invalid_ttl"),
        (json!({"ttl_ms": 600001}), 422, "invalid_ttl"),
        (
            json!({"ttl_ms": 1000, "wait_ms": 30001}),
            422,
            "invalid_wait",
        ),
        (json!({"ttl_ms": "1000"}), 422, "invalid_body"),
        (json!({"ttl_ms": 1000, "owner": "me"}), 422, "invalid_body"),
        (json!({"wait_ms": 10}), 422, "invalid_body"),
    ];
    for (body, status, code) in cases {
        assert_eq!(
            Reply::read(acquire(&app, "x", body.clone()).await)
                .await
                .outcome(),
            (status, code.into()),
            "{body}"
        );
    }
    let malformed = app
        .http()
        .post(app.url("/v1/locks/x"))
        .header("content-type", "application/json")
        .body("{\"ttl_ms\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(
        Reply::read(malformed).await.outcome(),
        (400, "invalid_json".into())
    );
    assert_eq!(
        Reply::read(acquire(&app, "bad name!", json!({"ttl_ms": 1000})).await)
            .await
            .outcome(),
        (400, "invalid_key".into())
    );

    let no_token = app
        .http()
        .delete(app.url("/v1/locks/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        Reply::read(no_token).await.outcome(),
        (400, "missing_lock_token".into())
    );
    assert_eq!(
        Reply::read(release(&app, "never-taken", "abc").await)
            .await
            .outcome(),
        (409, "not_lock_owner".into())
    );
    let state: Value = app.get("/v1/locks/never-taken").await.body;
    assert_eq!(state["held"], false);
}

/// Acquires a lock of the service's own namespace through the lock actor, as code inside the
/// process does.
async fn hold(app: &TestApp, name: &str, ttl: Duration, keep_alive: Option<Duration>) -> Lease {
    let acquire = Acquire {
        name: LockName::service(name),
        ttl,
        wait: Duration::ZERO,
        holder: Holder::Process { keep_alive },
    };
    match app
        .context()
        .stores()
        .locks
        .get()
        .unwrap()
        .send(acquire)
        .await
        .unwrap()
        .unwrap()
    {
        Acquired::Granted(lease) => lease,
        other => panic!("not granted: {other:?}"),
    }
}

/// Whether the service's own lock `name` is held.
async fn service_lock_held(app: &TestApp, name: &str) -> bool {
    let inspect = Inspect {
        name: LockName::service(name),
    };
    let locks = app.context().stores().locks.get().unwrap();
    locks.send(inspect).await.unwrap().unwrap().held
}

#[actix_rt::test]
async fn a_kept_alive_lease_outlives_its_ttl_until_the_cap() {
    let app = spawn_app().await;
    hold(
        &app,
        "kept",
        Duration::from_millis(300),
        Some(Duration::from_millis(1200)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        service_lock_held(&app, "kept").await,
        "renewed past its 300 ms ttl"
    );
    eventually(
        Duration::from_secs(3),
        "the lease runs out after the cap",
        || async { !service_lock_held(&app, "kept").await },
    )
    .await;
}

#[actix_rt::test]
async fn locks_this_process_holds_are_released_at_shutdown_and_clients_locks_are_not() {
    let app = spawn_app().await;
    hold(&app, "process-lock", Duration::from_secs(600), None).await;
    let client = acquire(&app, "client-lock", json!({"ttl_ms": 600000})).await;
    assert_eq!(client.status().as_u16(), 201);
    let key = |name: &str| app.key(&format!("lock:{name}"));
    let mut redis = app.redis_connection().await;

    assert_eq!(app.shutdown().await.exit_code, 0);
    assert!(
        !redis
            .exists::<_, bool>(key("s:process-lock"))
            .await
            .unwrap(),
        "released, not left to expire"
    );
    assert!(
        redis.exists::<_, bool>(key("c:client-lock")).await.unwrap(),
        "a client's lease is the client's"
    );
}
