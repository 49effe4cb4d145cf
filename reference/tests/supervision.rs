//! Supervision inside the running service: a store actor that panics is restarted while the
//! process keeps serving, and a crash loop escalates as configured. The panics are real ones,
//! raised inside the actors' tasks by `TestApp::kill_child`.

mod common;

use std::time::Duration;

use common::spawn_app_with;

use steward::testing::eventually;

#[actix_rt::test]
async fn a_panicking_store_actor_is_restarted_while_the_service_serves() {
    let app = spawn_app_with(&[]).await;
    app.kill_child("redis").await;
    assert_eq!(app.get("/health/live").await.status, 200);
    app.until_restarted("redis", 1).await;

    let child = app.child("redis").await;
    let error = child.last_error.unwrap_or_default();
    assert!(error.contains("killed on purpose"), "{error}");
    eventually(
        Duration::from_secs(5),
        "ready with the new incarnation",
        || async { app.get("/health/ready").await.status == 200 },
    )
    .await;
    assert_eq!(
        app.metric(r#"actor_restarts_total{actor="redis"}"#).await,
        1.0
    );
    assert_eq!(
        app.child("postgres").await.restarts,
        0,
        "siblings are untouched"
    );
}

#[actix_rt::test]
async fn exceeding_the_intensity_under_degrade_means_not_ready_until_stable() {
    let app = spawn_app_with(&[
        ("STEWARD__SUPERVISOR__ESCALATION", "degrade"),
        ("STEWARD__SUPERVISOR__INTENSITY__MAX_RESTARTS", "1"),
        ("STEWARD__SUPERVISOR__RESET_AFTER", "3s"),
    ])
    .await;
    app.kill_child("postgres").await;
    app.until_restarted("postgres", 1).await;
    assert!(!app.child("postgres").await.degraded);

    app.kill_child("postgres").await;
    eventually(
        Duration::from_secs(2),
        "degraded after the second crash",
        || async { app.child("postgres").await.degraded },
    )
    .await;
    let response = app.get("/health/ready").await;
    assert_eq!(response.status, 503);
    let body: serde_json::Value = response.body;
    assert_eq!(
        body["error"]["details"]["degraded"][0], "postgres",
        "{body}"
    );
    assert_eq!(
        app.get("/health/live").await.status,
        200,
        "still live: no restart by the orchestrator"
    );

    app.until_restarted("postgres", 2).await;
    eventually(
        Duration::from_secs(10),
        "ready once the child stayed up",
        || async { app.get("/health/ready").await.status == 200 },
    )
    .await;
    assert!(!app.child("postgres").await.degraded);
}

#[actix_rt::test]
async fn exceeding_the_intensity_under_exit_shuts_down_with_code_70() {
    let app = spawn_app_with(&[
        ("STEWARD__SUPERVISOR__ESCALATION", "exit"),
        ("STEWARD__SUPERVISOR__INTENSITY__MAX_RESTARTS", "0"),
    ])
    .await;
    app.kill_child("redis").await;
    let report = app.finished().await;
    assert_eq!(report.exit_code, 70, "{report:?}");
    assert!(report.reason.contains("escalation"), "{report:?}");
    let refused = reqwest::get(app.url("/health/live")).await;
    assert!(refused.is_err(), "no longer listening");
}
