//! {{name}} in-process on steward's test kit, against real Redis and PostgreSQL
//! (`STEWARD_TEST_REDIS_URL`, `STEWARD_TEST_DATABASE_URL`; default the local servers, which
//! `bash .ci/test` sets up): it greets, keeps greeting through a Redis outage, recovers from a
//! crash of its database actor, and shuts down in order.

use std::time::Duration;

use serde_json::json;
use steward::testing::{eventually, TestApp};

const WAIT: Duration = Duration::from_secs(10);

#[actix_rt::test]
async fn greets_counts_and_refuses_a_name_too_long() {
    let app = TestApp::spawn({{crate_name}}::service()).await;
    let first = app.post("/v1/greetings/ann", &json!(null)).await;
    assert_eq!(first.status, 200, "{}", first.text);
    // "by": the caller's principal; the test profile leaves auth.required off.
    let expected = json!({"greeting": "hello, ann", "count": 1, "by": "anonymous"});
    assert_eq!(first.body, expected);
    assert_eq!(
        app.post("/v1/greetings/ann", &json!(null)).await.body["count"],
        2
    );
    let long = format!("/v1/greetings/{}", "x".repeat(65));
    app.post(&long, &json!(null))
        .await
        .assert_error({{crate_name}}::INVALID_NAME);
}

#[actix_rt::test]
async fn survives_a_redis_outage_and_a_crash_then_shuts_down_in_order() {
    let app = TestApp::spawn({{crate_name}}::service()).await;

    // Redis cut: readiness reports it down but stays 200 (health.require_redis is off), and
    // greetings, which need PostgreSQL only, go on.
    app.redis().cut();
    eventually(WAIT, "readiness reports Redis down", || async {
        let ready = app.get("/health/ready").await;
        let down = ready.body["checks"]["redis"]["status"] == "down";
        if down && ready.body["status"] == "degraded" {
            Ok(())
        } else {
            Err(ready.body)
        }
    })
    .await;
    assert_eq!(
        app.post("/v1/greetings/bob", &json!(null)).await.status,
        200
    );
    app.redis().restore();
    eventually(WAIT, "readiness reports Redis up", || async {
        let ready = app.get("/health/ready").await;
        if ready.body["checks"]["redis"]["status"] == "up" {
            Ok(())
        } else {
            Err(ready.body)
        }
    })
    .await;

    // The database actor panics; its supervisor starts it again, and greetings go on.
    app.kill_child("postgres").await;
    app.until_restarted("postgres", 1).await;
    eventually(WAIT, "greetings after the restart", || async {
        let reply = app.post("/v1/greetings/cy", &json!(null)).await;
        if reply.status == 200 {
            Ok(())
        } else {
            Err(reply.text)
        }
    })
    .await;
    assert_eq!(
        app.metric(r#"actor_restarts_total{actor="postgres"}"#)
            .await,
        1.0
    );

    // SIGTERM's sequence: readiness off, HTTP drained, then the stores; exit code 0.
    let report = app.shutdown().await;
    assert_eq!(report.exit_code, 0, "{report:?}");
    let phases: Vec<&str> = report.steps.iter().map(|step| step.phase).collect();
    let at = |phase| phases.iter().position(|p| *p == phase);
    assert!(
        at("readiness") < at("http") && at("http") < at("stores"),
        "{phases:?}"
    );
}
