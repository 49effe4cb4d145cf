//! Supervision inside the running service: a store actor that panics is restarted while the
//! process keeps serving, and a crash loop escalates as configured.

mod common;

use std::time::Duration;

use common::{eventually, spawn_app_with, TestApp};

async fn crash(app: &TestApp, store: &str) {
    let response = app
        .client
        .post(app.url(&format!("/test/crash/{store}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
}

/// Waits until `store` has been restarted `restarts` times and runs again.
async fn restarted(app: &TestApp, store: &str, restarts: u64) {
    eventually(Duration::from_secs(5), "the child runs again", || async {
        let child = app.child(store).await;
        child["restarts"] == restarts && child["state"] == "running"
    })
    .await;
}

#[actix_rt::test]
async fn a_panicking_store_actor_is_restarted_while_the_service_serves() {
    let app = spawn_app_with(&[]).await;
    crash(&app, "redis").await;
    assert_eq!(app.status("/health/live").await, 200);
    restarted(&app, "redis", 1).await;

    let child = app.child("redis").await;
    assert!(
        child["last_error"]
            .as_str()
            .unwrap()
            .contains("crashed on request of a test hook"),
        "{child}"
    );
    eventually(
        Duration::from_secs(5),
        "ready with the new incarnation",
        || async { app.status("/health/ready").await == 200 },
    )
    .await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("actor_restarts_total{actor=\"redis\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        app.child("postgres").await["restarts"],
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
    crash(&app, "postgres").await;
    restarted(&app, "postgres", 1).await;
    assert_eq!(app.child("postgres").await["degraded"], false);

    crash(&app, "postgres").await;
    eventually(
        Duration::from_secs(2),
        "degraded after the second crash",
        || async { app.child("postgres").await["degraded"] == true },
    )
    .await;
    let response = app.get("/health/ready").await;
    assert_eq!(response.status().as_u16(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["details"]["degraded"][0], "postgres",
        "{body}"
    );
    assert_eq!(
        app.status("/health/live").await,
        200,
        "still live: no restart by the orchestrator"
    );

    restarted(&app, "postgres", 2).await;
    eventually(
        Duration::from_secs(10),
        "ready once the child stayed up",
        || async { app.status("/health/ready").await == 200 },
    )
    .await;
    assert_eq!(app.child("postgres").await["degraded"], false);
}

#[actix_rt::test]
async fn exceeding_the_intensity_under_exit_shuts_down_with_code_70() {
    let app = spawn_app_with(&[
        ("STEWARD__SUPERVISOR__ESCALATION", "exit"),
        ("STEWARD__SUPERVISOR__INTENSITY__MAX_RESTARTS", "0"),
    ])
    .await;
    crash(&app, "redis").await;
    let code = tokio::time::timeout(Duration::from_secs(10), app.app.stopped())
        .await
        .expect("the service shuts down");
    assert_eq!(code, 70);
    let refused = reqwest::get(format!("http://{}/health/live", app.addr)).await;
    assert!(refused.is_err(), "no longer listening");
}
