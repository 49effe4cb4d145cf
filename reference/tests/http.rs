//! The HTTP contract of the edge: request ids, the error envelope, headers, metrics, admin.

mod common;

use common::{spawn_app, spawn_app_with};

use reqwest::Method;
use serde_json::{json, Value};
use steward::codes;
use steward::testing::Reply;

#[actix_rt::test]
async fn request_id_is_echoed_when_well_formed_and_generated_otherwise() {
    let app = spawn_app().await;
    let kept = app
        .http()
        .get(app.url("/health/live"))
        .header("x-request-id", "abc-123.trace:1")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "abc-123.trace:1");

    let replaced = app
        .http()
        .get(app.url("/health/live"))
        .header("x-request-id", "not a valid id!")
        .send()
        .await
        .unwrap();
    let generated = replaced.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(generated, "not a valid id!");
    assert_eq!(generated.len(), 32, "a fresh uuid: {generated}");

    let error = app
        .http()
        .get(app.url("/nowhere"))
        .header("x-request-id", "err-42")
        .send()
        .await
        .unwrap();
    assert_eq!(error.headers()["x-request-id"], "err-42");
    let body: Value = error.json().await.unwrap();
    assert_eq!(body["error"]["request_id"], "err-42");
}

#[actix_rt::test]
async fn every_error_is_the_json_envelope() {
    let app = spawn_app_with(&[("STEWARD__SERVER__MAX_JSON_SIZE", "64")]).await;

    app.get("/no/such/route")
        .await
        .assert_error(codes::NOT_FOUND);

    let wrong_method = app
        .http()
        .post(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    Reply::read(wrong_method)
        .await
        .assert_error(codes::METHOD_NOT_ALLOWED);

    let put = |body: &'static str, content_type: &'static str| {
        app.admin(Method::PUT, "/admin/log-level")
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let malformed = put("{\"level\": ", "application/json").await.unwrap();
    Reply::read(malformed)
        .await
        .assert_error(codes::INVALID_JSON);

    let wrong_shape = put("{\"lvl\": \"info\"}", "application/json")
        .await
        .unwrap();
    Reply::read(wrong_shape)
        .await
        .assert_error(codes::INVALID_BODY);

    let oversized = Box::leak(format!("{{\"level\": \"{}\"}}", "x".repeat(200)).into_boxed_str());
    let too_large = put(oversized, "application/json").await.unwrap();
    Reply::read(too_large)
        .await
        .assert_error(codes::PAYLOAD_TOO_LARGE);

    let wrong_type = put("level=info", "text/plain").await.unwrap();
    Reply::read(wrong_type)
        .await
        .assert_error(codes::UNSUPPORTED_MEDIA_TYPE);
}

#[actix_rt::test]
async fn responses_carry_security_headers() {
    let app = spawn_app().await;
    let json = app.get("/version").await;
    assert_eq!(json.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(json.header("x-frame-options"), Some("DENY"));
    assert_eq!(json.header("referrer-policy"), Some("no-referrer"));
    assert!(json.header("content-security-policy").is_none());

    let text = app.get("/metrics").await;
    assert!(text
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'none'"));
}

#[actix_rt::test]
async fn version_names_the_build() {
    let app = spawn_app().await;
    let body: Value = app.get("/version").await.body;
    assert_eq!(body["name"], "steward");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["git_commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(body["build_time"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
}

/// The value of `http_requests_total` for one label set, 0 when absent.
async fn requests_total(app: &steward::testing::TestApp, route: &str, status: &str) -> u64 {
    let text = app.get("/metrics").await.text;
    let needle =
        format!("http_requests_total{{method=\"GET\",route=\"{route}\",status=\"{status}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&needle))
        .map_or(0, |value| value.trim().parse().unwrap())
}

#[actix_rt::test]
async fn metrics_count_requests_by_route_pattern() {
    let app = spawn_app().await;
    let before = requests_total(&app, "/version", "200").await;
    for _ in 0..3 {
        assert_eq!(app.get("/version").await.status, 200);
    }
    assert_eq!(requests_total(&app, "/version", "200").await, before + 3);

    // Unknown paths share one label, so clients cannot create time series.
    app.get("/random/a1").await;
    app.get("/random/b2").await;
    assert_eq!(requests_total(&app, "unmatched", "404").await, 2);

    let text = app.get("/metrics").await.text;
    assert!(text.contains("http_request_duration_seconds_bucket{method=\"GET\",route=\"/version\""));
    assert!(text.contains("http_requests_in_flight"));
    assert!(
        text.contains("process_resident_memory_bytes"),
        "process metrics"
    );
    assert!(!text.contains("/random/a1"));
}

#[actix_rt::test]
async fn admin_routes_need_the_token() {
    let app = spawn_app().await;
    let anonymous = app.get("/admin/actors").await;
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    anonymous.assert_error(codes::UNAUTHORIZED);

    let wrong = app
        .http()
        .get(app.url("/admin/actors"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    Reply::read(wrong).await.assert_error(codes::UNAUTHORIZED);

    let body = Reply::of(app.admin(Method::GET, "/admin/actors"))
        .await
        .body;
    let names: Vec<&str> = body["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "redis",
            "locks",
            "ratelimit",
            "postgres",
            "jobs:default",
            "http"
        ]
    );
    let http = &body["children"][5];
    assert_eq!(http["tier"], "http");
    assert_eq!(http["state"], "running");
    assert_eq!(http["restarts"], 0);
}

#[actix_rt::test]
async fn admin_routes_are_absent_without_a_token() {
    let app = spawn_app_with(&[("STEWARD__ADMIN__TOKEN", "")]).await;
    let response = app
        .admin(Method::GET, "/admin/actors")
        .send()
        .await
        .unwrap();
    Reply::read(response).await.assert_error(codes::NOT_FOUND);
}

#[actix_rt::test]
async fn log_level_changes_at_run_time_and_rejects_nonsense() {
    let app = spawn_app().await;
    let bad = app
        .admin(Method::PUT, "/admin/log-level")
        .json(&serde_json::json!({"level": "loud"}))
        .send()
        .await
        .unwrap();
    Reply::read(bad)
        .await
        .assert_error(codes::INVALID_LOG_LEVEL);

    let good = app
        .admin(Method::PUT, "/admin/log-level")
        .json(&serde_json::json!({"level": "error,steward=error"}))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status().as_u16(), 200);
    assert!(log::log_enabled!(target: "steward", log::Level::Error));
    assert!(!log::log_enabled!(target: "steward", log::Level::Warn));
}

#[actix_rt::test]
async fn the_openapi_document_describes_routes_that_exist() {
    let app = spawn_app().await;
    let document: Value = app.get("/openapi.json").await.body;
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        // Fill every {parameter} with something well-formed.
        let concrete = path
            .replace("{key}", "k")
            .replace("{name}", "n")
            .replace("{id}", "1");
        for method in ["get", "put", "post", "delete"] {
            let Some(operation) = item.get(method) else {
                continue;
            };
            operations += 1;
            let response = app
                .http()
                .request(method.to_uppercase().parse().unwrap(), app.url(&concrete))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or_default();
            assert_ne!(
                (status, body["error"]["code"].as_str()),
                (404, Some("not_found")),
                "{method} {path} is documented but not routed"
            );
            assert_ne!(status, 405, "{method} {path}: method not routed");
            for status in ["400", "503"] {
                assert!(
                    operation["responses"].get(status).is_some(),
                    "{method} {path} does not document {status}"
                );
            }
        }
    }
    // Every route of steward's (/admin/api-keys too) and reference/src/http/mod.rs's but the
    // document itself (test hooks are not documented).
    assert_eq!(operations, 25, "{:?}", paths.keys().collect::<Vec<_>>());
    // Every error code, the framework's and the service's, with the status it is sent with.
    let listed = &document["components"]["schemas"]["ErrorEnvelope"]["x-error-codes"];
    for code in steward::codes::ALL
        .iter()
        .chain(steward_reference::errors::ALL)
    {
        let entry =
            json!({"code": code.code, "status": code.status, "description": code.description});
        assert!(
            listed.as_array().unwrap().contains(&entry),
            "{entry} not in {listed}"
        );
    }
}
