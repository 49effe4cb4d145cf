//! `/v1/accounts`: validation, pagination, and reads through the cache, with store faults.

mod common;

use std::time::Duration;

use common::{spawn_app, spawn_app_with, Accounts};

use futures::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};
use steward::testing::{eventually, Reply, TestApp};

async fn create(app: &TestApp, name: &str, balance: i64) -> Value {
    let response = app.post_account(name, balance).await;
    assert_eq!(response.status, 201);
    response.body
}

#[actix_rt::test]
async fn create_and_read_an_account() {
    let app = spawn_app().await;
    let response = app.post_account("Ada Lovelace", 1500).await;
    assert_eq!(response.status, 201);
    let location = response.headers["location"].to_str().unwrap().to_owned();
    let account: Value = response.body;
    assert_eq!(location, format!("/v1/accounts/{}", account["id"]));
    assert_eq!(account["name"], "Ada Lovelace");
    assert_eq!(account["balance"], 1500);
    assert_eq!(account["initial_balance"], 1500);
    assert!(account["created_at"].as_str().unwrap().ends_with('Z'));

    let read: Value = app.get(&location).await.body;
    assert_eq!(read, account);
    let bypass = Reply::of(
        app.http()
            .get(app.url(&location))
            .header("cache-control", "no-cache"),
    )
    .await
    .body;
    assert_eq!(bypass, account);
}

#[actix_rt::test]
async fn bad_account_input_gets_the_documented_4xx_and_stores_nothing() {
    let app = spawn_app().await;
    let post = |body: String, content_type: &'static str| {
        app.http()
            .post(app.url("/v1/accounts"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let long_name = "n".repeat(101);
    let cases = [
        (
            json!({"name": "", "initial_balance": 1}).to_string(),
            422,
            "invalid_name",
        ),
        (
            json!({"name": long_name, "initial_balance": 1}).to_string(),
            422,
            "invalid_name",
        ),
        (
            json!({"name": "x", "initial_balance": -1}).to_string(),
            422,
            "invalid_balance",
        ),
        (json!({"name": "x"}).to_string(), 422, "invalid_body"),
        (
            json!({"name": "x", "initial_balance": 1.5}).to_string(),
            422,
            "invalid_body",
        ),
        (
            r#"{"name": "x", "initial_balance": 99999999999999999999}"#.to_owned(),
            422,
            "invalid_body",
        ),
        (
            json!({"name": "x", "initial_balance": 1, "admin": true}).to_string(),
            422,
            "invalid_body",
        ),
        (r#"{"name": "x", "#.to_owned(), 400, "invalid_json"),
        (
            "{\"name\": \"\u{0}'; DROP TABLE accounts; --\", \"initial_balance\": 1".to_owned(),
            400,
            "invalid_json",
        ),
    ];
    for (body, status, code) in cases {
        let response = post(body.clone(), "application/json").await.unwrap();
        assert_eq!(
            Reply::read(response).await.outcome(),
            (status, code.to_owned()),
            "{body}"
        );
    }
    let wrong_type = post("{}".into(), "text/plain").await.unwrap();
    assert_eq!(Reply::read(wrong_type).await.outcome().0, 415);

    // SQL metacharacters are data, stored as given.
    let odd = "Robert'); DROP TABLE accounts; --";
    let account = create(&app, odd, 0).await;
    assert_eq!(account["name"], odd);
    let count: i64 = app
        .sql()
        .await
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1, "only the valid account was stored");

    assert_eq!(
        app.get("/v1/accounts/999999").await.outcome(),
        (404, "account_not_found".into())
    );
    assert_eq!(
        app.get("/v1/accounts/abc").await.outcome(),
        (400, "invalid_path".into())
    );
    assert_eq!(
        app.get("/v1/accounts/99999999999999999999").await.status,
        400
    );
}

#[actix_rt::test]
async fn accounts_page_by_keyset() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            create(&app, &format!("acct {n}"), n).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let mut seen = Vec::new();
    let mut path = "/v1/accounts?limit=2".to_owned();
    loop {
        let page: Value = app.get(&path).await.body;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|a| a["id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/accounts?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let all: Value = app.get("/v1/accounts").await.body;
    assert_eq!(all["items"].as_array().unwrap().len(), 5);
    assert_eq!(all["next_cursor"], Value::Null);

    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=101", "invalid_limit"),
        ("cursor=42", "invalid_cursor"),
        ("cursor=c-1", "invalid_cursor"),
        ("limit=x", "invalid_query"),
    ] {
        assert_eq!(
            app.get(&format!("/v1/accounts?{query}")).await.outcome(),
            (400, code.to_owned()),
            "{query}"
        );
    }
}

#[actix_rt::test]
async fn concurrent_misses_run_one_database_read() {
    let app = spawn_app().await;
    let id = create(&app, "popular", 10).await["id"].as_i64().unwrap();
    let path = format!("/v1/accounts/{id}");
    let reads = (0..32).map(|_| app.get(&path));
    for response in join_all(reads).await {
        assert_eq!(response.status, 200);
    }
    let loads = app
        .metric("db_query_duration_seconds_count{query=\"account_by_id\"}")
        .await;
    assert_eq!(loads, 1.0, "32 concurrent reads, one load");
    let hits = app
        .metric("cache_requests_total{op=\"get\",result=\"hit\"}")
        .await;
    let coalesced = app.metric("cache_loader_coalesced_total").await;
    assert_eq!(hits + coalesced, 31.0, "hits {hits}, coalesced {coalesced}");
}

#[actix_rt::test]
async fn unknown_accounts_are_cached_briefly_as_not_found() {
    let app = spawn_app().await;
    for _ in 0..3 {
        assert_eq!(app.get("/v1/accounts/424242").await.status, 404);
    }
    let loads = app
        .metric("db_query_duration_seconds_count{query=\"account_by_id\"}")
        .await;
    assert_eq!(loads, 1.0, "negative caching spares the database");
}

#[actix_rt::test]
async fn reads_fall_back_to_the_database_while_redis_is_cut() {
    let app = spawn_app().await;
    let proxy = app.redis();
    let id = create(&app, "steady", 7).await["id"].as_i64().unwrap();
    let path = format!("/v1/accounts/{id}");
    assert_eq!(app.get(&path).await.status, 200);

    proxy.cut();
    for _ in 0..5 {
        let response = app.get(&path).await;
        assert_eq!(response.status, 200, "served from PostgreSQL");
        let account: Value = response.body;
        assert_eq!(account["balance"], 7);
    }
    assert_eq!(app.metric("cache_degraded").await, 1.0);
    // The reads failed over at once (the breaker): readiness may still serve its last answer.
    eventually(
        Duration::from_secs(5),
        "readiness to show Redis down",
        || async {
            let ready: Value = app.get("/health/ready").await.body;
            (ready["status"] == "degraded").then_some(()).ok_or(ready)
        },
    )
    .await;

    proxy.restore();
    eventually(
        Duration::from_secs(5),
        "the cache is used again",
        || async {
            let hits = r#"cache_requests_total{op="get",result="hit"}"#;
            let before = app.metrics().await.get(hits).unwrap_or(0.0);
            app.get(&path).await;
            app.metrics().await.get(hits).unwrap_or(0.0) > before
        },
    )
    .await;
    assert_eq!(app.metric("cache_degraded").await, 0.0);
}

#[actix_rt::test]
async fn a_postgres_outage_answers_503_not_500_and_recovers() {
    let app = spawn_app().await;
    let proxy = app.postgres();
    let id = create(&app, "durable", 3).await["id"].as_i64().unwrap();

    proxy.cut();
    let bypass = app
        .http()
        .get(app.url(&format!("/v1/accounts/{id}")))
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert!(bypass.headers().contains_key("retry-after"));
    let (status, code) = Reply::read(bypass).await.outcome();
    assert!(status == 503 || status == 504, "{status} {code}");
    let (status, code) = app.post_account("later", 1).await.outcome();
    assert!(status == 503 || status == 504, "{status} {code}");

    proxy.restore();
    eventually(Duration::from_secs(10), "writes work again", || async {
        let response = app.post_account("later", 1).await;
        response.status == 201
    })
    .await;
}

/// Waits until no `pg_sleep` statement of `app`'s database runs on the server.
async fn until_no_sleep_runs(app: &TestApp) {
    let sql = app.sql().await;
    eventually(Duration::from_secs(2), "the statement is gone from the server", || async {
        let running: i64 = sql
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'SELECT pg_sleep%' AND state = 'active'",
                &[&app.database().name],
            )
            .await
            .unwrap()
            .get(0);
        running == 0
    })
    .await;
}

#[actix_rt::test]
async fn a_query_past_its_deadline_answers_504_and_stops_on_the_server() {
    let app = spawn_app_with(&[("STEWARD__POSTGRES__QUERY_TIMEOUT", "300ms")]).await;
    let started = std::time::Instant::now();
    let response = app.get("/test/db-sleep?ms=5000").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at the deadline"
    );
    assert!(response.headers.contains_key("retry-after"));
    assert_eq!(response.outcome(), (504, "timeout".into()));
    until_no_sleep_runs(&app).await;
    assert_eq!(
        app.get("/v1/accounts?limit=1").await.status,
        200,
        "the shared connection still works"
    );
}

/// A client's `Request-Timeout` reaches the database: the statement (on the shared reader
/// connection) and the transaction (on a pooled connection of its own) are cancelled on the
/// server when the request's deadline passes, long before `query_timeout` (5 s here).
#[actix_rt::test]
async fn a_clients_request_timeout_cancels_statements_and_transactions_on_the_server() {
    let app = spawn_app().await;
    for route in ["/test/db-sleep?ms=5000", "/test/db-hold?ms=5000"] {
        let request = app
            .request(Method::GET, route)
            .header("Request-Timeout", "300");
        let started = std::time::Instant::now();
        let response = Reply::of(request).await;
        response.assert_error(steward::codes::TIMEOUT);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{route}: answered at the deadline"
        );
        until_no_sleep_runs(&app).await;
    }
    assert_eq!(
        app.post_account("after", 1).await.status,
        201,
        "the pool still serves"
    );
    assert_eq!(
        app.get("/v1/accounts?limit=1").await.status,
        200,
        "and the reader too"
    );
    let breaker = app.metric(r#"store_breaker_state{store="postgres"}"#).await;
    assert_eq!(
        breaker, 0.0,
        "a client's short deadline says nothing about PostgreSQL"
    );
}
