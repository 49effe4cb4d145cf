//! The built binary under signals: ordered, draining shutdown and exit codes.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::load::job_states;
use common::service::{self, binary};
use futures::StreamExt;
use steward::testing::{eventually, Process};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Waits until `/metrics` shows a request in flight besides the scrape itself.
async fn until_in_flight(service: &Process) {
    eventually(
        Duration::from_secs(5),
        "the slow request is in flight",
        || async {
            let in_flight = service.metrics().await.get("http_requests_in_flight");
            in_flight.filter(|n| *n == 2.0).ok_or(in_flight)
        },
    )
    .await;
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_stops_tiers_in_order() {
    let mut service = service::start(&[("STEWARD__SHUTDOWN__DRAIN_DELAY", "1s")]).await;
    let client = client();
    let slow = tokio::spawn(client.get(service.url("/test/slow?ms=2000")).send());
    until_in_flight(&service).await;

    service.signal(libc::SIGTERM);
    eventually(Duration::from_secs(1), "readiness turns 503", || async {
        let response = client
            .get(service.url("/health/ready"))
            .send()
            .await
            .unwrap();
        response.status().as_u16() == 503
    })
    .await;
    // Still served during drain_delay, but the connection is not kept alive.
    let during = client.get(service.url("/version")).send().await.unwrap();
    assert_eq!(during.status().as_u16(), 200);
    assert_eq!(during.headers()["connection"], "close");
    assert!(
        !service
            .log()
            .iter()
            .any(|l| l.contains("shutdown phase=http")),
        "readiness was 503 before the HTTP drain began"
    );

    let response = slow
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.unwrap(), r#"{"slept_ms":2000}"#);

    let status = service.exit_status(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", service.log().join("\n"));
    let phases = service.phases();
    let names: Vec<&str> = phases.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["readiness", "drain_delay", "http", "workers", "stores"]
    );
    assert!(
        phases.iter().all(|(_, outcome)| outcome == "ok"),
        "{phases:?}"
    );
    assert!(
        client
            .get(service.url("/health/live"))
            .send()
            .await
            .is_err(),
        "nothing listens after exit"
    );
}

#[tokio::test]
async fn a_phase_past_its_deadline_is_named_and_the_sequence_goes_on() {
    let mut service = service::start(&[("STEWARD__SHUTDOWN__HTTP_TIMEOUT", "1500ms")]).await;
    let client = client();
    let slow = tokio::spawn(client.get(service.url("/test/slow?ms=10000")).send());
    until_in_flight(&service).await;

    service.signal(libc::SIGTERM);
    let status = service.exit_status(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "the total deadline was kept");
    let phases = service.phases();
    assert!(
        phases.contains(&("http".into(), "timeout".into())),
        "{phases:?}"
    );
    assert!(
        phases.contains(&("stores".into(), "ok".into())),
        "{phases:?}"
    );
    let _ = slow.await;
}

#[tokio::test]
async fn a_second_signal_exits_at_once_with_130() {
    let mut service = service::start(&[
        ("STEWARD__SHUTDOWN__DRAIN_DELAY", "10s"),
        ("STEWARD__SHUTDOWN__TIMEOUT", "25s"),
        ("STEWARD__SHUTDOWN__ORCHESTRATOR_GRACE", "30s"),
    ])
    .await;
    service.signal(libc::SIGTERM);
    service.wait_for_line("starting the ordered shutdown").await;
    service.signal(libc::SIGINT);
    let status = service.exit_status(Duration::from_secs(3)).await;
    assert_eq!(status.code(), Some(130));
}

#[tokio::test]
async fn sigint_alone_is_a_graceful_stop() {
    let mut service = service::start(&[]).await;
    service.signal(libc::SIGINT);
    let status = service.exit_status(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0));
    service.wait_for_line("received SIGINT").await;
}

#[tokio::test]
async fn healthcheck_subcommand_reports_liveness() {
    let service = service::start(&[]).await;
    let run = |port: u16| {
        Command::new(binary())
            .arg("healthcheck")
            .current_dir(common::manifest_dir())
            .env("STEWARD_ENV", "test")
            .env("STEWARD__SERVER__PORT", port.to_string())
            .output()
            .expect("run healthcheck")
    };
    assert_eq!(run(service.addr().port()).status.code(), Some(0));
    let down = run(steward::testing::closed_port());
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("unhealthy"));
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_the_request_id() {
    let mut service = service::start(&[("STEWARD__LOG__FORMAT", "json")]).await;
    let response = client()
        .get(service.url("/version"))
        .header("x-request-id", "json-log-check")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let access = service.wait_for_line("json-log-check").await;
    let access: serde_json::Value = serde_json::from_str(&access).expect("a JSON line");
    assert_eq!(access["target"], "steward::access");
    assert_eq!(access["level"], "INFO");
    assert_eq!(access["request_id"], "json-log-check");
    assert_eq!(access["route"], "/version");
    assert_eq!(access["status"], 200);
    assert!(
        access["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')),
        "{access}"
    );
    assert!(access["msg"].as_str().is_some(), "{access}");

    service.signal(libc::SIGTERM);
    assert_eq!(
        service.exit_status(Duration::from_secs(15)).await.code(),
        Some(0)
    );
    for line in service.log() {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(&line);
        assert!(
            parsed.is_ok_and(|v| v.is_object()),
            "not a JSON object: {line}"
        );
    }
}

/// `steward migrate` on an empty database, twice at once: both succeed, each migration is
/// recorded once, and a later run finds nothing to do.
#[tokio::test]
async fn migrate_subcommand_is_safe_to_run_concurrently() {
    common::ensure_stores().await;
    // A database without any migration, dropped at the end however the test ends.
    let db = steward::testing::TestDb::create(&[]).await;
    let url = db.url.clone();
    let migrate = || {
        Command::new(binary())
            .arg("migrate")
            .current_dir(common::manifest_dir())
            .env("STEWARD_ENV", "test")
            .env("STEWARD__LOG__LEVEL", "info")
            .env("STEWARD__POSTGRES__URL", &url)
            .stderr(Stdio::piped())
            .spawn()
            .expect("run steward migrate")
    };
    let (first, second) = (migrate(), migrate());
    for child in [first, second] {
        let output = child.wait_with_output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM steward_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let expected: Vec<i32> = steward_reference::migrations::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, expected);
    drop(client);

    let again = migrate().wait_with_output().unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to apply"));
}

async fn enqueue_record(client: &reqwest::Client, service: &Process, sleep_ms: u64) -> String {
    let response = client
        .post(service.url("/v1/jobs"))
        .json(&serde_json::json!({"kind": "test.record", "payload": {"sleep_ms": sleep_ms}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_job_whose_worker_was_killed_is_reclaimed_and_completed_elsewhere() {
    let prefix = format!("steward-crash:{}:", uuid::Uuid::new_v4().simple());
    let shared = ("STEWARD__REDIS__KEY_PREFIX", prefix.as_str());
    let mut doomed = service::start(&[shared, ("STEWARD__WORKERS__CONCURRENCY", "1")]).await;
    let client = client();
    let id = enqueue_record(&client, &doomed, 3000).await;
    eventually(Duration::from_secs(5), "the job is running", || async {
        job_states(&prefix, std::slice::from_ref(&id)).await[0].0 == "running"
    })
    .await;
    doomed.signal(libc::SIGKILL);
    doomed.exit_status(Duration::from_secs(5)).await;

    let rescuer = service::start(&[shared]).await;
    let last = std::cell::RefCell::new(Default::default());
    let completed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let state = job_states(&prefix, std::slice::from_ref(&id)).await[0].clone();
            if state == ("succeeded".to_owned(), 1) {
                return;
            }
            *last.borrow_mut() = state;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        completed.is_ok(),
        "another worker did not complete job {id} within 20 s; last (status, completions): {:?}; \
         the rescuer's log:\n{}",
        last.borrow(),
        rescuer.log().join("\n")
    );
}

#[tokio::test]
async fn a_drain_loses_no_job_and_runs_none_twice() {
    let prefix = format!("steward-drain:{}:", uuid::Uuid::new_v4().simple());
    let shared = ("STEWARD__REDIS__KEY_PREFIX", prefix.as_str());
    let mut first = service::start(&[shared]).await;
    let client = client();
    let ids: Vec<String> = futures::stream::iter(0..1000)
        .map(|_| enqueue_record(&client, &first, 20))
        .buffer_unordered(32)
        .collect()
        .await;
    eventually(Duration::from_secs(10), "work is under way", || async {
        job_states(&prefix, &ids)
            .await
            .iter()
            .filter(|(s, _)| s == "succeeded")
            .count()
            >= 50
    })
    .await;
    first.signal(libc::SIGTERM);
    assert_eq!(
        first.exit_status(Duration::from_secs(15)).await.code(),
        Some(0)
    );
    let after_drain = job_states(&prefix, &ids).await;
    assert!(
        after_drain.iter().all(|(s, _)| s != "running"),
        "nothing was left half-done"
    );

    let _second = service::start(&[shared]).await;
    eventually(Duration::from_secs(60), "every job succeeded", || async {
        job_states(&prefix, &ids)
            .await
            .iter()
            .all(|(s, _)| s == "succeeded")
    })
    .await;
    let states = job_states(&prefix, &ids).await;
    assert!(
        states.iter().all(|(_, done)| *done == 1),
        "each side effect recorded exactly once"
    );
}
