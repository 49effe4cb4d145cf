//! hello in-process on `steward::testing`: what a service built on steward gets without
//! asking (the envelope, request ids, metrics by route, supervision, the job queue, readiness,
//! the ordered shutdown), and how it behaves when Redis goes away and comes back.
//!
//! Redis: `STEWARD_TEST_REDIS_URL`, default the local server (`bash .ci/stores.sh` starts one).

use std::time::Duration;

use serde_json::json;
use steward::codes;
use steward::testing::{eventually, TestApp};

const WAIT: Duration = Duration::from_secs(10);

#[actix_rt::test]
async fn hello_gets_the_whole_framework() {
    let app = TestApp::spawn(hello::service()).await;

    // A route answering JSON, with a request id.
    let reply = app.post("/hello/ann", &json!(null)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["greeting"], "hello, ann!");
    assert_eq!(reply.body["count"], 1);
    assert!(reply.request_id().is_some());
    let job = reply.body["job"].as_str().expect("a job id").to_owned();

    // A typed error of hello's own, and the edge's own errors, in one envelope.
    let nobody = steward::ErrorCode::new(404, "nobody", "there is nobody to greet here");
    let error = app.get("/nobody").await.assert_error(nobody).clone();
    assert_eq!(error["message"], "there is nobody to greet here");
    app.get("/no/such/route").await.assert_error(codes::NOT_FOUND);

    // The actor panics on a request, and again when the test kills it; it is restarted each
    // time, and hello goes on serving with a fresh one.
    assert_eq!(app.post("/boom", &json!(null)).await.status, 202);
    let tally = app.until_restarted("tally", 1).await;
    assert_eq!(tally.last_error.as_deref(), Some("panicked: boom"));
    app.kill_child("tally").await;
    let tally = app.until_restarted("tally", 2).await;
    assert!(tally.last_error.unwrap().contains("killed"), "the kill is a real panic");
    let reply = app.post("/hello/bob", &json!(null)).await;
    assert_eq!(reply.body["count"], 1, "a fresh actor counts from 0: {}", reply.text);

    // The job ran to `succeeded`; the routes show by pattern in /metrics.
    let succeeded = r#"jobs_total{kind="greet",outcome="succeeded",queue="default"}"#;
    eventually(WAIT, &format!("job {job} succeeded"), || async {
        app.metrics().await.get(succeeded).filter(|n| *n >= 2.0).ok_or(job.clone())
    })
    .await;
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value(r#"http_requests_total{method="POST",route="/hello/{name}",status="200"}"#),
        2.0
    );
    assert_eq!(
        metrics.value(r#"http_requests_total{method="GET",route="/nobody",status="404"}"#),
        1.0
    );
    assert_eq!(metrics.value(r#"actor_restarts_total{actor="tally"}"#), 2.0);

    // Readiness shows hello's own check beside the store it declared, and no other.
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.body["checks"]["tally"]["status"], "up", "{}", ready.text);
    assert!(ready.body["checks"].get("postgres").is_none(), "hello uses no database");

    // The ordered shutdown runs hello's task after HTTP and before the workers, and exits 0.
    let report = app.shutdown().await;
    assert_eq!(report.exit_code, 0, "{report:?}");
    let order: Vec<&str> = report.steps.iter().map(|step| step.phase).collect();
    assert_eq!(order, ["readiness", "drain_delay", "http", "after_http", "workers", "stores"]);
    let farewell = report.step("after_http", Some("farewell")).expect("the farewell task ran");
    assert_eq!(farewell.outcome, steward::actors::Outcome::Ok);
}

#[actix_rt::test]
async fn hello_degrades_without_redis_and_recovers_with_it() {
    let app = TestApp::spawn(hello::service()).await;

    app.redis().cut();
    // Readiness reports Redis down; it stays 200 unless `health.require_redis` is set, so
    // that a cache outage does not take every replica out of rotation.
    let degraded = eventually(WAIT, "readiness reports Redis down", || async {
        let reply = app.get("/health/ready").await;
        let down = reply.body["checks"]["redis"]["status"] == "down";
        if down {
            Ok(reply)
        } else {
            Err(reply.body)
        }
    })
    .await;
    assert_eq!(degraded.body["status"], "degraded", "{}", degraded.text);
    // Greeting enqueues a job: without Redis it fails fast, in the envelope, with no backend
    // detail.
    let reply = app.post("/hello/cut", &json!(null)).await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert!(!reply.text.to_lowercase().contains("redis"), "no backend detail: {}", reply.text);

    app.redis().restore();
    eventually(WAIT, "readiness reports Redis up again", || async {
        let reply = app.get("/health/ready").await;
        if reply.body["checks"]["redis"]["status"] == "up" {
            Ok(())
        } else {
            Err(reply.body)
        }
    })
    .await;
    // The queue's own connections were reset by the cut; they are replaced on use.
    eventually(WAIT, "greetings served again", || async {
        let reply = app.post("/hello/back", &json!(null)).await;
        if reply.status == 200 {
            Ok(())
        } else {
            Err(reply.text)
        }
    })
    .await;
    assert_eq!(app.shutdown().await.exit_code, 0);
}

#[actix_rt::test]
async fn with_auth_required_hello_needs_a_key_except_on_its_public_route() {
    let app = TestApp::with(hello::service()).env("STEWARD__AUTH__REQUIRED", "true").spawn().await;
    app.post("/hello/ann", &json!(null)).await.assert_error(codes::UNAUTHENTICATED);
    let nobody = steward::ErrorCode::new(404, "nobody", "there is nobody to greet here");
    app.get("/nobody").await.assert_error(nobody); // public: hello's own 404, not a 401

    let key = app.api_key("greeter", &[]).await;
    let request = app.request(reqwest::Method::POST, "/hello/ann").header("x-api-key", key);
    let reply = steward::testing::Reply::of(request).await;
    assert_eq!((reply.status, &reply.body["by"]), (200, &json!("key:greeter")), "{}", reply.text);
}
