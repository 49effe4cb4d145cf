//! Failing fast and staying fast, through the public API: store breakers, load shedding and
//! request deadlines, on services declared here. No assertion is timed; what is checked is
//! which answer comes, not how fast (the figures are `bench/overload`'s).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpResponse;
use steward::actors::cache::Get;
use steward::actors::StoreError;
use steward::codes;
use steward::prelude::*;
use steward::testing::{closed_port, eventually, Reply, Spawn, TestApp};
use tokio::sync::Semaphore;

const WITHIN: Duration = Duration::from_secs(10);

/// A Redis-only service whose `/read/{key}` reads the cache within the request's deadline.
fn reader() -> Service {
    Service::new("reader").backends(Backends::REDIS).get(
        "/read/{key}",
        |ctx: Context, deadline: RequestDeadline, key: web::Path<String>| async move {
            let get = Get {
                key: format!("resilience:{key}"),
                deadline: *deadline,
            };
            match ctx.cache()?.send(get).await?? {
                Some(value) => Ok(HttpResponse::Ok().body(value)),
                None => Err(ApiError::from(codes::NOT_FOUND)),
            }
        },
    )
}

fn spawn(service: Service) -> Spawn {
    TestApp::with(service).config_dir("no-such-config-dir")
}

/// The state of `/admin/actors`' breaker of `store`.
async fn breaker(app: &TestApp, store: &str) -> serde_json::Value {
    let actors = Reply::of(app.admin(reqwest::Method::GET, "/admin/actors")).await;
    let breakers = actors.body["breakers"]
        .as_array()
        .expect("breakers")
        .clone();
    breakers
        .into_iter()
        .find(|b| b["store"] == store)
        .unwrap_or_else(|| panic!("no breaker of {store}: {}", actors.text))
}

#[actix_rt::test]
async fn a_refused_store_is_reported_as_refused_and_fails_fast_with_503() {
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let app = spawn(reader())
        .env("STEWARD__REDIS__URL", &url)
        .spawn()
        .await;
    eventually(
        WITHIN,
        "readiness to say the connection was refused",
        || async {
            let ready = app.get("/health/ready").await;
            let error = ready.body["checks"]["redis"]["error"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            error.to_lowercase().contains("refused").then_some(error)
        },
    )
    .await;
    eventually(WITHIN, "the Redis breaker to open", || async {
        app.metric(r#"store_breaker_state{store="redis"}"#).await == 1.0
    })
    .await;
    let reply = app.get("/read/x").await;
    reply.assert_error(codes::UNAVAILABLE);
    let retry: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(retry >= 1, "{retry}");
    let open = breaker(&app, "redis").await;
    assert_eq!(open["state"], "open", "{open}");
    let cause = open["last_error"].as_str().unwrap_or("").to_lowercase();
    assert!(cause.contains("refused"), "{open}");
    assert!(
        app.metric(r#"store_breaker_transitions_total{state="open",store="redis"}"#)
            .await
            >= 1.0
    );
    // The store it does not use has no breaker.
    assert!(app
        .metrics()
        .await
        .get(r#"store_breaker_state{store="postgres"}"#)
        .is_none());
}

#[actix_rt::test]
async fn a_store_that_comes_back_closes_its_breaker_and_no_request_fails_for_the_outage() {
    let app = spawn(reader()).spawn().await;
    app.get("/read/nothing")
        .await
        .assert_error(codes::NOT_FOUND);
    app.redis().cut();
    eventually(WITHIN, "the Redis breaker to open", || async {
        breaker(&app, "redis").await["state"] == "open"
    })
    .await;
    app.get("/read/nothing")
        .await
        .assert_error(codes::UNAVAILABLE);
    app.redis().restore();
    eventually(WITHIN, "the breaker to close again", || async {
        let state = breaker(&app, "redis").await["state"].clone();
        let read = app.get("/read/nothing").await;
        (state == "closed" && read.status == 404)
            .then_some(())
            .ok_or((state, read.outcome()))
    })
    .await;
    let closed = r#"store_breaker_transitions_total{state="closed",store="redis"}"#;
    assert!(app.metric(closed).await >= 1.0, "{closed}");
    // Connections the outage broke were checked before reuse: none reaches a request.
    for _ in 0..30 {
        let read = app.get("/read/nothing").await;
        assert_eq!(read.status, 404, "after the outage: {}", read.text);
    }
}

/// A route that holds each request until the test lets it go, counting those inside.
struct Gate {
    inside: AtomicUsize,
    open: Semaphore,
}

fn gate() -> Arc<Gate> {
    Arc::new(Gate {
        inside: AtomicUsize::new(0),
        open: Semaphore::new(0),
    })
}

fn gated(name: &'static str, gate: &Arc<Gate>) -> Service {
    let held = Arc::clone(gate);
    Service::new(name).get("/held", move || {
        let gate = Arc::clone(&held);
        async move {
            gate.inside.fetch_add(1, Ordering::SeqCst);
            gate.open.acquire().await.expect("open").forget();
            HttpResponse::Ok().finish()
        }
    })
}

/// Every route's concurrency limit pinned at one request.
fn one_at_a_time(spawn: Spawn) -> Spawn {
    spawn
        .env("STEWARD__SHEDDING__INITIAL_LIMIT", "1")
        .env("STEWARD__SHEDDING__MIN_LIMIT", "1")
        .env("STEWARD__SHEDDING__MAX_LIMIT", "1")
}

#[actix_rt::test]
async fn a_route_at_its_limit_sheds_but_health_metrics_and_admin_answer() {
    let gate = gate();
    let app = one_at_a_time(spawn(gated("shedding", &gate))).spawn().await;
    let first = actix_rt::spawn(Reply::of(app.request(reqwest::Method::GET, "/held")));
    eventually(WITHIN, "the first request to be inside", || async {
        gate.inside.load(Ordering::SeqCst) == 1
    })
    .await;
    let shed = app.get("/held").await;
    shed.assert_error(codes::OVERLOADED);
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert_eq!(
        gate.inside.load(Ordering::SeqCst),
        1,
        "the shed request cost nothing"
    );
    for path in [
        "/health/live",
        "/health/ready",
        "/metrics",
        "/version",
        "/openapi.json",
    ] {
        assert_eq!(app.get(path).await.status, 200, "{path} is never shed");
    }
    let actors = Reply::of(app.admin(reqwest::Method::GET, "/admin/actors")).await;
    assert_eq!(actors.status, 200, "{}", actors.text);
    assert_eq!(
        app.metric(r#"http_requests_shed_total{route="/held"}"#)
            .await,
        1.0
    );
    assert_eq!(
        app.metric(r#"http_concurrency_limit{route="/held"}"#).await,
        1.0
    );
    gate.open.add_permits(10);
    assert_eq!(first.await.expect("the first request").status, 200);
    assert_eq!(app.get("/held").await.status, 200, "the slot came back");
}

#[actix_rt::test]
async fn shedding_switched_off_admits_everything() {
    let gate = gate();
    let app = one_at_a_time(spawn(gated("unshed", &gate)))
        .env("STEWARD__SHEDDING__ENABLED", "false")
        .spawn()
        .await;
    let held: Vec<_> = (0..3)
        .map(|_| actix_rt::spawn(Reply::of(app.request(reqwest::Method::GET, "/held"))))
        .collect();
    eventually(WITHIN, "all three requests to be inside", || async {
        gate.inside.load(Ordering::SeqCst) == 3
    })
    .await;
    gate.open.add_permits(3);
    for request in held {
        assert_eq!(request.await.expect("a request").status, 200);
    }
    assert!(app
        .metrics()
        .await
        .get(r#"http_requests_shed_total{route="/held"}"#)
        .is_none());
}

/// How much of its deadline a request has left when its handler runs, in milliseconds; and a
/// route that waits for something that never comes, within its deadline.
fn budget() -> Service {
    Service::new("budget")
        .get("/budget/{any}", |deadline: RequestDeadline| async move {
            let left = deadline.remaining().map(|left| left.as_millis() as u64);
            HttpResponse::Ok().json(json!({ "left_ms": left }))
        })
        .get("/forever/{any}", |deadline: RequestDeadline| async move {
            let never = futures::future::pending::<Result<(), StoreError>>();
            deadline.run(Duration::from_secs(3600), never).await?;
            Ok::<_, ApiError>(HttpResponse::Ok().finish())
        })
}

async fn left_ms(app: &TestApp, path: &str, asked: Option<&str>) -> Reply {
    let mut request = app.request(reqwest::Method::GET, path);
    if let Some(asked) = asked {
        request = request.header("Request-Timeout", asked);
    }
    Reply::of(request).await
}

#[actix_rt::test]
async fn a_clients_request_timeout_lowers_the_routes_deadline_and_never_raises_it() {
    let routes = r#"[{prefix = "/budget/short", timeout = "2s"}, {prefix = "/forever/", timeout = "300ms"}]"#;
    let app = spawn(budget())
        .env("STEWARD__DEADLINES__DEFAULT", "20s")
        .env("STEWARD__DEADLINES__ROUTES", routes)
        .spawn()
        .await;
    let left = |reply: Reply| reply.body["left_ms"].as_u64().expect("a deadline");
    let default = left(left_ms(&app, "/budget/any", None).await);
    assert!(
        (15_000..=20_000).contains(&default),
        "the default: {default}"
    );
    let route = left(left_ms(&app, "/budget/short", None).await);
    assert!(
        (1_000..=2_000).contains(&route),
        "the longest prefix wins: {route}"
    );
    let lowered = left(left_ms(&app, "/budget/short", Some("500")).await);
    assert!(lowered <= 500, "lowered by the client: {lowered}");
    let capped = left(left_ms(&app, "/budget/short", Some("600000")).await);
    assert!((1_000..=2_000).contains(&capped), "never raised: {capped}");
    for bad in ["soon", "0", "-5", "1.5"] {
        left_ms(&app, "/budget/any", Some(bad))
            .await
            .assert_error(codes::INVALID_REQUEST_TIMEOUT);
    }
    // Waiting within the deadline ends with it: 504 in the envelope.
    for asked in ["100000", "50"] {
        let late = left_ms(&app, "/forever/x", Some(asked)).await;
        late.assert_error(codes::TIMEOUT);
    }
}

#[actix_rt::test]
async fn an_expired_deadline_never_reaches_the_store() {
    let app = spawn(reader()).spawn().await;
    let cache = app.context().cache().expect("the cache actor");
    let expired = Get {
        key: "resilience:x".into(),
        deadline: Deadline::after(Duration::ZERO),
    };
    let answer = cache.send(expired).await.expect("the actor answers");
    assert_eq!(answer, Err(steward::actors::StoreError::DeadlineExceeded));
    let reads = r#"cache_requests_total{op="get",result="error"}"#;
    assert_eq!(app.metric(reads).await, 0.0, "no command was sent");
    assert_eq!(
        breaker(&app, "redis").await["state"],
        "closed",
        "nor counted against Redis"
    );
}

#[actix_rt::test]
async fn a_dependency_of_the_services_own_gets_a_breaker_like_the_stores() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let service =
        Service::new("pricing")
            .breaker("pricing")
            .get("/quote", |ctx: Context| async move {
                let pricing = ctx.breaker("pricing").expect("declared");
                let down = async {
                    CALLS.fetch_add(1, Ordering::SeqCst);
                    Err::<u64, _>(StoreError::Unavailable("connection refused".into()))
                };
                let price = pricing.call(down).await?;
                Ok::<_, ApiError>(HttpResponse::Ok().json(json!({ "price": price })))
            });
    let app = spawn(service).spawn().await;
    for _ in 0..5 {
        app.get("/quote").await.assert_error(codes::UNAVAILABLE);
    }
    let open = breaker(&app, "pricing").await;
    assert_eq!(open["state"], "open", "{open}");
    let refused = app.get("/quote").await;
    refused.assert_error(codes::UNAVAILABLE);
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        CALLS.load(Ordering::SeqCst),
        5,
        "the sixth call never went out"
    );
    assert_eq!(
        app.metric(r#"store_breaker_state{store="pricing"}"#).await,
        1.0
    );
}
