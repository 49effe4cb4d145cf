//! Hostile input: slow clients, oversized heads and bodies, invalid UTF-8, deeply nested JSON
//! and SQL metacharacters. Each gets its documented 4xx (in the JSON envelope where steward
//! answers, not actix-web's connection layer), bounded resources, and nothing stored wrongly.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::service;
use common::{spawn_app, Accounts};

use serde_json::{json, Value};
use steward::testing::{Process, Reply, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `head` on a raw connection, then `body` one byte at a time every `pause`, and returns
/// what the server answered (until it closed the connection) and when it closed.
async fn trickle(
    addr: SocketAddr,
    head: &[u8],
    body: &[u8],
    pause: Duration,
) -> (String, Duration) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    stream.write_all(head).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let body = body.to_vec();
    let sender = tokio::spawn(async move {
        for byte in body {
            tokio::time::sleep(pause).await;
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), reader.read_to_end(&mut answer));
    read.await
        .expect("the server closes a slow client's connection")
        .ok();
    sender.abort();
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

/// The status of `GET url`, to check what a refused request left stored.
async fn status(http: &reqwest::Client, url: String) -> u16 {
    http.get(url).send().await.unwrap().status().as_u16()
}

async fn account_count(app: &TestApp) -> i64 {
    app.sql()
        .await
        .query_one("SELECT COUNT(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0)
}

#[actix_rt::test]
async fn a_trickled_body_gets_a_json_408_closes_and_stores_nothing() {
    let app = spawn_app().await;
    let head = b"PUT /v1/kv/trickled HTTP/1.1\r\nHost: steward\r\nContent-Length: 100\r\n\r\n";
    let (answer, took) = trickle(app.addr(), head, &[b'x'; 100], Duration::from_millis(200)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(answer.contains(r#""code":"body_timeout""#), "{answer}");
    // body_timeout is 2 s in the test configuration; 100 bytes would have taken 20 s.
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(status(app.http(), app.url("/v1/kv/trickled")).await, 404);
}

/// The process's resident memory, from its own `/metrics`.
async fn resident_bytes(service: &Process) -> f64 {
    service
        .metrics()
        .await
        .value("process_resident_memory_bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_slow_clients_are_cut_off_and_cost_little_memory() {
    let service = service::start(&[]).await;
    let http = reqwest::Client::new();
    let before = resident_bytes(&service).await;
    // Half announce a 1 MiB body and trickle it, half never finish their head.
    let clients = (0..300).map(|n| {
        let addr = service.addr();
        tokio::spawn(async move {
            let (head, body): (&[u8], &[u8]) = if n % 2 == 0 {
                (
                    b"PUT /v1/kv/slow HTTP/1.1\r\nHost: s\r\nContent-Length: 1048576\r\n\r\n",
                    &[b'x'; 64],
                )
            } else {
                (
                    b"GET /v1/kv/slow HTTP/1.1\r\nHost: s\r\n",
                    b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                )
            };
            trickle(addr, head, body, Duration::from_millis(100)).await
        })
    });
    let mut slow_attack = futures::future::join_all(clients);
    // Meanwhile everyone else is served.
    let served = http.get(service.url("/version")).send().await.unwrap();
    assert_eq!(served.status().as_u16(), 200);
    let during = resident_bytes(&service).await;
    for outcome in (&mut slow_attack).await {
        let (answer, took) = outcome.unwrap();
        // body_timeout and client_request_timeout are 2 s in the test configuration; the
        // trickles would have taken 6.4 s.
        assert!(took < Duration::from_secs(6), "{took:?}: {answer}");
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    let grown = (during.max(resident_bytes(&service).await) - before) / 1_048_576.0;
    assert!(grown < 64.0, "300 slow clients cost {grown:.1} MiB");
    assert_eq!(status(&http, service.url("/v1/kv/slow")).await, 404);
}

#[actix_rt::test]
async fn a_trickled_head_is_cut_off() {
    let app = spawn_app().await;
    let head = b"GET /v1/kv/x HTTP/1.1\r\nHost: steward\r\n";
    let (answer, took) = trickle(
        app.addr(),
        head,
        b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        Duration::from_millis(200),
    )
    .await;
    // actix-web's own 408 (client_request_timeout, 2 s here): the head never completed, so no
    // handler or envelope ever saw the request.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[actix_rt::test]
async fn an_oversized_head_gets_a_json_431() {
    let app = spawn_app().await;
    let big = "a".repeat(20_000);
    let response = app
        .http()
        .get(app.url("/version"))
        .header("x-padding", &big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["connection"], "close");
    assert_eq!(
        Reply::read(response).await.outcome(),
        (431, "head_too_large".into())
    );
    let long_path = app.url(&format!("/v1/kv/{big}"));
    let response = app.http().get(long_path).send().await.unwrap();
    assert_eq!(
        Reply::read(response).await.outcome(),
        (431, "head_too_large".into())
    );
    // Under the limit, the same header is fine.
    let response = app
        .http()
        .get(app.url("/version"))
        .header("x-padding", "a".repeat(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[actix_rt::test]
async fn huge_bodies_are_refused_with_413_and_store_nothing() {
    let app = spawn_app().await;
    let huge = vec![b'v'; 2 << 20];
    let response = app
        .http()
        .put(app.url("/v1/kv/huge"))
        .body(huge.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(Reply::read(response).await.outcome().0, 413);
    // Chunked, with no Content-Length to refuse up front: counted while it streams.
    let chunks = futures::stream::iter(
        huge.chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let response = app
        .http()
        .put(app.url("/v1/kv/huge"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(Reply::read(response).await.outcome().0, 413);
    assert_eq!(status(app.http(), app.url("/v1/kv/huge")).await, 404);

    let name = "n".repeat(100_000);
    let response = app
        .http()
        .post(app.url("/v1/accounts"))
        .json(&json!({"name": name, "initial_balance": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(Reply::read(response).await.outcome().0, 413);
    assert_eq!(account_count(&app).await, 0);
}

#[actix_rt::test]
async fn invalid_utf8_in_keys_and_json_is_a_400() {
    let app = spawn_app().await;
    let response = app.get("/v1/kv/%FF%FE").await;
    assert_eq!(response.outcome(), (400, "invalid_key".into()));
    let response = app
        .http()
        .put(app.url("/v1/locks/%C3%28"))
        .json(&json!({"token": "t", "ttl_ms": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(Reply::read(response).await.outcome().0, 400);

    let mut body = br#"{"name": "caf"#.to_vec();
    body.extend_from_slice(&[0xFF, 0xFE]);
    body.extend_from_slice(br#"", "initial_balance": 5}"#);
    let response = app
        .http()
        .post(app.url("/v1/accounts"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(Reply::read(response).await.outcome().0, 400);
    assert_eq!(account_count(&app).await, 0);
}

#[actix_rt::test]
async fn deeply_nested_json_is_refused_not_a_crash() {
    let app = spawn_app().await;
    let depth = 20_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    // Where any JSON is allowed (a job's payload), the parser's depth limit refuses it (400);
    // where a string or an object is expected, the wrong type at the first bracket does (422).
    for (path, body, expected) in [
        (
            "/v1/jobs",
            format!(r#"{{"kind": "test.record", "payload": {nested}}}"#),
            (400, "invalid_json"),
        ),
        (
            "/v1/accounts",
            format!(r#"{{"name": {nested}, "initial_balance": 1}}"#),
            (422, "invalid_body"),
        ),
        ("/v1/transfers", nested.clone(), (422, "invalid_body")),
    ] {
        let response = app
            .http()
            .post(app.url(path))
            .header("content-type", "application/json")
            .header("idempotency-key", "nested")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            Reply::read(response).await.outcome(),
            (expected.0, expected.1.into()),
            "{path}"
        );
    }
    assert_eq!(app.get("/health/live").await.status, 200);
    assert_eq!(account_count(&app).await, 0);
}

/// Strings that break naive SQL, Lua or Redis command building.
const NASTY: [&str; 5] = [
    "Robert'); DROP TABLE accounts;--",
    "\" OR 1=1 --",
    "'; SELECT pg_sleep(10); --",
    "\\x00\\' UNION SELECT * FROM idempotency_keys --",
    "*\r\nFLUSHALL\r\n",
];

#[actix_rt::test]
async fn sql_metacharacters_are_stored_and_returned_as_data() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for name in NASTY {
        let response = app.post_account(name, 10).await;
        assert_eq!(response.status, 201, "{name}");
        let created: Value = response.body;
        let id = created["id"].as_i64().unwrap();
        let read: Value = app.get(&format!("/v1/accounts/{id}")).await.body;
        assert_eq!(read["name"], name);
        ids.push(id);
    }
    // Idempotency keys are visible ASCII: every printable metacharacter goes through as data.
    let key = "k'\";--)/*%_\\";
    for _ in 0..2 {
        let response = app
            .http()
            .post(app.url("/v1/transfers"))
            .header("idempotency-key", key)
            .json(&json!({"from": ids[0], "to": ids[1], "amount": 3}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
    }
    let job = app
        .http()
        .post(app.url("/v1/jobs"))
        .json(&json!({"kind": "test.record", "payload": {"note": NASTY}}))
        .send()
        .await
        .unwrap();
    assert_eq!(job.status().as_u16(), 202);
    let id = job.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown: Value = app.get(&format!("/v1/jobs/{id}")).await.body;
    assert_eq!(shown["payload"]["note"], json!(NASTY));
    for (path, code) in [
        ("/v1/kv/a';DROP", "invalid_key"),
        ("/v1/jobs/dead?cursor=0-0%20COUNT%201", "invalid_cursor"),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.outcome(), (400, code.into()), "{path}");
    }

    let sql = app.sql().await;
    let balances: Vec<i64> = sql
        .query("SELECT balance FROM accounts ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        balances,
        [7, 13, 10, 10, 10],
        "one transfer, replayed once, moved 3"
    );
}
