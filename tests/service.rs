//! The framework itself, through its public API only: what a service declares is what it
//! gets, and what it does not declare it neither needs nor shows.
//!
//! The stores these services do not use are pointed at closed ports: had steward connected to
//! them, readiness would say so.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_web::HttpResponse;
use serde_json::Value;
use steward::actors::supervisor::Shutdown;
use steward::actors::ShutdownReason;
use steward::config::Sources;
use steward::prelude::*;
use steward::{telemetry, Application, StartError};

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn sources(vars: &[(&str, &str)]) -> Sources {
    let redis =
        std::env::var("STEWARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut all: Vec<(String, String)> = vec![
        ("STEWARD__SERVER__PORT".into(), "0".into()),
        ("STEWARD__SERVER__WORKERS".into(), "1".into()),
        ("STEWARD__REDIS__URL".into(), redis),
        (
            "STEWARD__REDIS__KEY_PREFIX".into(),
            format!("steward-framework-test:{}:", std::process::id()),
        ),
        (
            "STEWARD__POSTGRES__URL".into(),
            format!("postgres://postgres@127.0.0.1:{}/none", closed_port()),
        ),
        ("STEWARD__SHUTDOWN__DRAIN_DELAY".into(), "0s".into()),
        ("STEWARD__LOG__LEVEL".into(), "error".into()),
    ];
    all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Sources {
        config_dir: "no-such-config-dir".into(),
        env_name: None,
        config_file: None,
        vars: all,
    }
}

fn start(service: Service, vars: &[(&str, &str)]) -> Result<Application, StartError> {
    let loaded = service.load_config(&sources(vars)).expect("valid config");
    let log = telemetry::init("error", loaded.settings.log.format);
    service.start(&loaded, log)
}

async fn get(app: &Application, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("http://{}{path}", app.addr))
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `/health/ready` once it answers 200, failing after 10 s with the last answer.
async fn ready(app: &Application) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = get(app, "/health/ready").await;
        if status == 200 {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never ready: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop(app: Application) -> i32 {
    app.supervisor
        .do_send(Shutdown(ShutdownReason::Signal("test")));
    tokio::time::timeout(Duration::from_secs(20), app.stopped())
        .await
        .expect("the service stops")
}

const TEAPOT: ErrorCode = ErrorCode::new(418, "teapot", "this service only makes tea");

#[actix_rt::test]
async fn a_service_that_uses_no_store_needs_none() {
    let service = Service::new("bare")
        .get("/tea", || async {
            HttpResponse::Ok().json(json!({"tea": true}))
        })
        .get("/coffee", || async {
            Err::<HttpResponse, _>(ApiError::from(TEAPOT))
        })
        .errors(&[TEAPOT]);
    let app = start(service, &[("STEWARD__REDIS__URL", "redis://127.0.0.1:1")]).unwrap();
    let body = ready(&app).await;
    assert_eq!(body["checks"], json!({}), "no store is checked: {body}");
    assert_eq!(get(&app, "/tea").await, (200, json!({"tea": true})));
    let (status, body) = get(&app, "/coffee").await;
    assert_eq!((status, &body["error"]["code"]), (418, &json!("teapot")));
    let (_, document) = get(&app, "/openapi.json").await;
    let codes = &document["components"]["schemas"]["ErrorEnvelope"]["x-error-codes"];
    let status = |name: &str| {
        let codes = codes.as_array().expect("a list");
        let entry = codes.iter().find(|code| code["code"] == name);
        entry.map(|code| code["status"].clone())
    };
    assert_eq!(status("teapot"), Some(json!(418)), "{codes}");
    assert_eq!(status("unavailable"), Some(json!(503)), "steward's own too");
    assert_eq!(document["info"]["title"], "bare");
    assert_eq!(stop(app).await, 0);
}

#[actix_rt::test]
async fn a_redis_service_is_ready_without_postgres() {
    let service = Service::new("cache-only")
        .backends(Backends::REDIS)
        .readiness("always", Criticality::Optional, |_| async {
            Err::<(), _>("an optional check that fails")
        });
    let app = start(service, &[]).unwrap();
    let body = ready(&app).await;
    let checks = body["checks"].as_object().expect("checks");
    assert!(checks.contains_key("redis"), "{body}");
    assert!(!checks.contains_key("postgres"), "{body}");
    assert_eq!(
        body["status"], "degraded",
        "an optional check only shows: {body}"
    );
    assert_eq!(checks["always"]["error"], "an optional check that fails");
    assert_eq!(stop(app).await, 0);
}

#[actix_rt::test]
async fn a_failing_critical_check_makes_the_instance_not_ready() {
    let service = Service::new("picky").readiness("never", Criticality::Critical, |_| async {
        Err::<(), _>("not today")
    });
    let app = start(service, &[]).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = get(&app, "/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "not_ready");
    assert_eq!(
        body["error"]["details"]["checks"]["never"]["error"],
        "not today"
    );
    assert_eq!(stop(app).await, 0);
}

struct Nothing;

impl Job for Nothing {
    const KIND: &'static str = "nothing";
    type Payload = ();

    async fn run(_: Context, _: JobRun<()>) -> Result<Value, JobError> {
        Ok(Value::Null)
    }
}

#[actix_rt::test]
async fn what_a_service_uses_must_be_declared() {
    let jobs_without_redis = Service::new("no-redis").job::<Nothing>();
    assert!(matches!(
        start(jobs_without_redis, &[]),
        Err(StartError::Declaration(why)) if why.contains("Redis")
    ));
    let twice = Service::new("twice")
        .backends(Backends::REDIS)
        .job::<Nothing>()
        .job_on::<Nothing>("elsewhere");
    assert!(matches!(
        start(twice, &[]),
        Err(StartError::Declaration(why)) if why.contains("twice")
    ));
}

#[actix_rt::test]
async fn shutdown_tasks_must_fit_in_shutdown_timeout() {
    let slow = Service::new("slow").on_shutdown(
        Phase::AfterWorkers,
        "flush",
        Duration::from_secs(30),
        |_| async {},
    );
    match start(slow, &[]) {
        Err(StartError::Config(error)) => {
            assert_eq!(error.key, "shutdown.timeout");
            assert!(error.expected.contains("shutdown tasks"), "{error}");
        }
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("a 30 s task fits in no 25 s shutdown"),
    }
}

#[test]
#[should_panic(expected = "config section [server] is taken")]
fn a_section_cannot_take_a_name_of_steward() {
    #[derive(serde::Deserialize)]
    struct Mine {}
    impl Section for Mine {
        const NAME: &'static str = "server";
    }
    let _ = Service::new("clash").config::<Mine>();
}

/// `echo`: its result is its payload.
struct Echo;

impl Job for Echo {
    const KIND: &'static str = "echo";
    type Payload = String;

    async fn run(_: Context, job: JobRun<String>) -> Result<Value, JobError> {
        Ok(json!(job.payload))
    }
}

#[actix_rt::test]
async fn kinds_run_on_the_queue_they_were_declared_on() {
    let service = Service::new("queues")
        .backends(Backends::REDIS)
        .job::<Nothing>()
        .job_on::<Echo>("slow-lane");
    let app = start(service, &[]).unwrap();
    ready(&app).await;
    let jobs = app.context.jobs();
    assert_eq!(jobs.kinds(), ["echo", "nothing"]);
    let echo = jobs.enqueue::<Echo>("hi".into()).await.expect("enqueued");
    let nothing = jobs.enqueue::<Nothing>(()).await.expect("enqueued");
    let status = |queue: Option<&'static str>, id: String| {
        let jobs = jobs.clone();
        async move {
            let worker = jobs.worker(queue).expect("a worker");
            let get = steward::actors::jobs::GetJob { id };
            worker.send(get).await.unwrap().unwrap().map(|s| s.status)
        }
    };
    let started = Instant::now();
    loop {
        let echoed = status(Some("slow-lane"), echo.id.clone()).await;
        let done = status(None, nothing.id.clone()).await;
        if echoed.as_deref() == Some("succeeded") && done.as_deref() == Some("succeeded") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "echo: {echoed:?}, nothing: {done:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Job documents are found by id from any queue's worker.
    assert_eq!(
        status(None, echo.id.clone()).await.as_deref(),
        Some("succeeded")
    );
    let metrics = reqwest::get(format!("http://{}/metrics", app.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"jobs_total{kind="echo",outcome="succeeded",queue="slow-lane"} 1"#),
        "{metrics}"
    );
    assert_eq!(stop(app).await, 0);
}
