//! Readiness against real stores: up with both, 503 naming a store that is down, and recovery
//! by itself when the store comes back (faults injected through the test's TCP proxy).

mod common;

use std::time::Duration;

use common::{spawn_app, spawn_app_unchecked};

use serde_json::Value;
use steward::testing::{closed_port, eventually, TcpProxy, TestApp};

#[actix_rt::test]
async fn ready_when_both_stores_answer() {
    let app = spawn_app().await;
    let response = app.get("/health/ready").await;
    assert_eq!(response.status, 200);
    let body: Value = response.body;
    assert_eq!(body["status"], "ready");
    for store in ["redis", "postgres"] {
        assert_eq!(body["checks"][store]["status"], "up", "{body}");
        assert!(body["checks"][store]["latency_ms"].as_f64().is_some());
    }
}

#[actix_rt::test]
async fn not_ready_naming_postgres_on_a_closed_port_while_live() {
    let url = format!("postgres://postgres@127.0.0.1:{}/steward", closed_port());
    let app = spawn_app_unchecked(&[("STEWARD__POSTGRES__URL", url.as_str())]).await;
    assert_eq!(
        app.get("/health/live").await.status,
        200,
        "liveness ignores stores"
    );

    let response = app.get("/health/ready").await;
    assert_eq!(response.status, 503);
    assert!(response.headers.contains_key("retry-after"));
    let body: Value = response.body;
    let error = &body["error"];
    assert_eq!(error["code"], "not_ready");
    assert!(
        error["message"].as_str().unwrap().contains("postgres"),
        "{body}"
    );
    assert_eq!(error["details"]["checks"]["postgres"]["status"], "down");
    assert_eq!(error["details"]["checks"]["redis"]["status"], "up");
}

#[actix_rt::test]
async fn redis_down_is_degraded_not_unready_unless_required() {
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let app = spawn_app_unchecked(&[("STEWARD__REDIS__URL", url.as_str())]).await;
    let ready = |status: &'static str| {
        let app = &app;
        move || async move {
            let response = app.get("/health/ready").await;
            let code = response.status;
            let body: Value = response.body;
            code == 200 && body["status"] == status && body["checks"]["redis"]["status"] == "down"
        }
    };
    eventually(
        Duration::from_secs(5),
        "degraded, still ready",
        ready("degraded"),
    )
    .await;

    let required = spawn_app_unchecked(&[
        ("STEWARD__REDIS__URL", url.as_str()),
        ("STEWARD__HEALTH__REQUIRE_REDIS", "true"),
    ])
    .await;
    let response = required.get("/health/ready").await;
    assert_eq!(response.status, 503);
    let body: Value = response.body;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("redis"),
        "{body}"
    );
}

/// Runs `app` with `store` behind `proxy`: ready through the proxy; while it is cut, the
/// readiness answer `down` (status code and body status) naming the store, still live; ready
/// again without a restart once it is restored.
async fn outage_and_recovery(
    app: &TestApp,
    proxy: &TcpProxy,
    store: &str,
    down: (u16, &'static str),
) {
    let ready = |expected: (u16, &'static str)| {
        move || async move {
            let reply = app.get("/health/ready").await;
            let status = reply.body["status"].as_str().or(reply.code()).unwrap_or("");
            if (reply.status, status) == expected {
                Ok(())
            } else {
                Err(reply.body)
            }
        }
    };
    eventually(
        Duration::from_secs(5),
        "ready through the proxy",
        ready((200, "ready")),
    )
    .await;

    proxy.cut();
    eventually(
        Duration::from_secs(5),
        "the cut shows in readiness",
        ready(down),
    )
    .await;
    let body: Value = app.get("/health/ready").await.body;
    let checks = body["checks"]
        .as_object()
        .or(body["error"]["details"]["checks"].as_object())
        .unwrap();
    // The lock and rate-limit actors use the same Redis as the cache.
    let redis_users = ["redis", "locks", "ratelimit"];
    for (name, check) in checks {
        let down = name == store || (store == "redis" && redis_users.contains(&name.as_str()));
        let expected = if down { "down" } else { "up" };
        assert_eq!(check["status"], expected, "{name}: {body}");
    }
    assert_eq!(app.get("/health/live").await.status, 200);

    proxy.restore();
    eventually(
        Duration::from_secs(5),
        "ready again once the store is back",
        ready((200, "ready")),
    )
    .await;
    assert_eq!(
        app.child(store).await.restarts,
        0,
        "recovered without a restart"
    );
}

#[actix_rt::test]
async fn postgres_outage_is_reported_and_recovered_from_by_itself() {
    let app = spawn_app().await;
    outage_and_recovery(&app, app.postgres(), "postgres", (503, "not_ready")).await;
}

#[actix_rt::test]
async fn redis_outage_is_reported_and_recovered_from_by_itself() {
    let app = spawn_app().await;
    outage_and_recovery(&app, app.redis(), "redis", (200, "degraded")).await;
}

#[actix_rt::test]
async fn store_metrics_follow_the_checks() {
    let app = spawn_app().await;
    eventually(Duration::from_secs(5), "store_up gauges", || async {
        let text = app.get("/metrics").await.text;
        text.contains("store_up{store=\"redis\"} 1")
            && text.contains("store_up{store=\"postgres\"} 1")
    })
    .await;
    let text = app.get("/metrics").await.text;
    assert!(
        text.contains("pool_connections{pool=\"postgres\",state=\"idle\"}"),
        "{text}"
    );
}
