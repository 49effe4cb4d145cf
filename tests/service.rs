//! The framework itself, through its public API only, on its own test kit: what a service
//! declares is what it gets, and what it does not declare it neither needs nor shows.
//!
//! The stores these services do not use are pointed at closed ports: had steward connected to
//! them, readiness would say so.

use std::time::Duration;

use actix_web::HttpResponse;
use serde_json::Value;
use steward::actors::Outcome;
use steward::prelude::*;
use steward::testing::{closed_port, eventually, Spawn, TestApp};
use steward::StartError;

/// `service` with the stores it does not use on closed ports, and no config folder.
fn with(service: Service) -> Spawn {
    let backends = service.uses();
    let mut spawn = TestApp::with(service).config_dir("no-such-config-dir");
    if !backends.redis {
        spawn = spawn.env(
            "STEWARD__REDIS__URL",
            &format!("redis://127.0.0.1:{}", closed_port()),
        );
    }
    if !backends.postgres {
        let url = format!("postgres://postgres@127.0.0.1:{}/none", closed_port());
        spawn = spawn.env("STEWARD__POSTGRES__URL", &url);
    }
    spawn
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
    let app = with(service).spawn().await;
    let ready = app.get("/health/ready").await;
    assert_eq!(
        ready.body["checks"],
        json!({}),
        "no store is checked: {}",
        ready.text
    );
    assert_eq!(app.get("/tea").await.body, json!({"tea": true}));
    app.get("/coffee").await.assert_error(TEAPOT);
    let document = app.get("/openapi.json").await.body;
    let codes = &document["components"]["schemas"]["ErrorEnvelope"]["x-error-codes"];
    let status = |name: &str| {
        let codes = codes.as_array().expect("a list");
        let entry = codes.iter().find(|code| code["code"] == name);
        entry.map(|code| code["status"].clone())
    };
    assert_eq!(status("teapot"), Some(json!(418)), "{codes}");
    assert_eq!(status("unavailable"), Some(json!(503)), "steward's own too");
    assert_eq!(document["info"]["title"], "bare");
    let report = app.shutdown().await;
    assert_eq!(report.exit_code, 0);
    let phases: Vec<&str> = report.steps.iter().map(|step| step.phase).collect();
    assert_eq!(
        phases,
        ["readiness", "drain_delay", "http"],
        "no store, no stores phase"
    );
}

#[actix_rt::test]
async fn a_redis_service_is_ready_without_postgres() {
    let service = Service::new("cache-only")
        .backends(Backends::REDIS)
        .readiness("always", Criticality::Optional, |_| async {
            Err::<(), _>("an optional check that fails")
        });
    let app = with(service).spawn().await;
    let body = app.get("/health/ready").await.body;
    let checks = body["checks"].as_object().expect("checks");
    assert!(checks.contains_key("redis"), "{body}");
    assert!(!checks.contains_key("postgres"), "{body}");
    assert_eq!(
        body["status"], "degraded",
        "an optional check only shows: {body}"
    );
    assert_eq!(checks["always"]["error"], "an optional check that fails");
    assert_eq!(app.shutdown().await.exit_code, 0);
}

#[actix_rt::test]
async fn a_failing_critical_check_makes_the_instance_not_ready() {
    let service = Service::new("picky").readiness("never", Criticality::Critical, |_| async {
        Err::<(), _>("not today")
    });
    let app = with(service).unready().spawn().await;
    let reply = app.get("/health/ready").await;
    reply.assert_error(steward::codes::NOT_READY);
    let body = &reply.body;
    assert_eq!(
        body["error"]["details"]["checks"]["never"]["error"],
        "not today"
    );
    assert_eq!(app.shutdown().await.exit_code, 0);
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
        with(jobs_without_redis).try_spawn().await,
        Err(StartError::Declaration(why)) if why.contains("Redis")
    ));
    let twice = Service::new("twice")
        .backends(Backends::REDIS)
        .job::<Nothing>()
        .job_on::<Nothing>("elsewhere");
    assert!(matches!(
        with(twice).try_spawn().await,
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
    match with(slow).try_spawn().await {
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
    let app = with(service).spawn().await;
    let jobs = app.context().jobs();
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
    eventually(Duration::from_secs(10), "both jobs succeeded", || async {
        let echoed = status(Some("slow-lane"), echo.id.clone()).await;
        let done = status(None, nothing.id.clone()).await;
        let succeeded = Some("succeeded");
        if echoed.as_deref() == succeeded && done.as_deref() == succeeded {
            Ok(())
        } else {
            Err((echoed, done))
        }
    })
    .await;
    // Job documents are found by id from any queue's worker.
    assert_eq!(
        status(None, echo.id.clone()).await.as_deref(),
        Some("succeeded")
    );
    let succeeded = r#"jobs_total{kind="echo",outcome="succeeded",queue="slow-lane"}"#;
    assert_eq!(app.metric(succeeded).await, 1.0);
    assert_eq!(app.shutdown().await.exit_code, 0);
}

/// A shutdown task that fails, for the report.
async fn broken_flush(_: Context) -> Result<(), String> {
    Err("the sink is gone".into())
}

#[actix_rt::test]
async fn the_shutdown_report_names_each_task_and_its_outcome() {
    let service = Service::new("tasks")
        .on_shutdown(
            Phase::BeforeDrain,
            "announce",
            Duration::from_secs(1),
            |_| async {},
        )
        .on_shutdown(
            Phase::AfterHttp,
            "flush",
            Duration::from_secs(1),
            broken_flush,
        )
        .on_shutdown(
            Phase::AfterStores,
            "slow",
            Duration::from_millis(50),
            |_| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
            },
        );
    let app = with(service).spawn().await;
    let report = app.shutdown().await;
    assert_eq!(
        report.exit_code, 0,
        "task failures do not fail the shutdown: {report:?}"
    );
    let outcome = |phase, task| report.step(phase, Some(task)).map(|step| step.outcome);
    assert_eq!(outcome("before_drain", "announce"), Some(Outcome::Ok));
    assert_eq!(outcome("after_http", "flush"), Some(Outcome::Failed));
    assert_eq!(outcome("after_stores", "slow"), Some(Outcome::Timeout));
    let phases: Vec<&str> = report.steps.iter().map(|step| step.phase).collect();
    assert!(
        !phases.contains(&"stores"),
        "no store, no stores phase: {phases:?}"
    );
}

#[actix_rt::test]
async fn only_actors_can_be_killed() {
    let app = with(Service::new("kill")).spawn().await;
    let refused =
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(app.kill_child("http")))
            .await
            .expect_err("the HTTP server is no actor");
    let message = refused
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("cannot be killed"), "{message}");
    assert_eq!(app.child("http").await.restarts, 0);
}

#[actix_rt::test]
#[should_panic(expected = r#"no series http_requests_total{route="/nope"}"#)]
async fn a_missing_series_fails_instead_of_reading_zero() {
    let app = with(Service::new("metrics")).spawn().await;
    app.metric(r#"http_requests_total{route="/nope"}"#).await;
}

#[actix_rt::test]
#[should_panic(expected = "waiting for: a reply of 201; last seen: 404")]
async fn eventually_says_what_it_last_saw() {
    let app = with(Service::new("waiting")).spawn().await;
    eventually(Duration::from_millis(100), "a reply of 201", || async {
        let status = app.get("/nothing-here").await.status;
        if status == 201 {
            Ok(())
        } else {
            Err(status)
        }
    })
    .await;
}

/// What a test that panics leaves behind: nothing. The app is dropped by the unwinding, which
/// drops its database and deletes its keys.
#[actix_rt::test]
async fn a_failing_test_leaves_no_database_and_no_keys() {
    let service = || Service::new("mess").backends(Backends::ALL);
    let left = std::cell::RefCell::new(None);
    let failing = async {
        let app = with(service()).spawn().await;
        let mut redis = app.redis_connection().await;
        let key = app.key("left-behind");
        let _: () = redis::AsyncCommands::set(&mut redis, &key, "x")
            .await
            .unwrap();
        *left.borrow_mut() = Some((app.database().name.clone(), app.key("")));
        panic!("the test fails");
    };
    let failed = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(failing)).await;
    assert!(failed.is_err());
    let (database, prefix) = left.take().expect("the app had started");

    let checker = with(service()).spawn().await;
    let sql = checker.sql().await;
    let row = sql
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await
        .unwrap();
    assert!(row.is_none(), "database {database} was dropped");
    let mut redis = checker.redis_connection().await;
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut redis, format!("{prefix}*"))
        .await
        .unwrap();
    assert!(
        keys.is_empty(),
        "keys under {prefix} were deleted: {keys:?}"
    );
}
