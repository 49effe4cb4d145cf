//! What probing the service as an attacker found (issue 10), one test per finding: each failed
//! before its fix.

mod common;

use std::time::Duration;

use common::service;
use common::{spawn_app_with, Accounts, Caller};

use redis::AsyncCommands;
use serde_json::{json, Value};
use steward::testing::{eventually, Reply, TestApp};

/// Every spelling of a rate-limited route that the router still routes is limited: the
/// policy matches the decoded, normalised path, not the raw one.
#[actix_rt::test]
async fn percent_encoded_and_dotted_paths_do_not_skip_the_rate_limit() {
    let policy = r#"[{name = "api", prefix = "/v1/", limit = 3, period = "1m"}]"#;
    let app = spawn_app_with(&[("STEWARD__RATELIMIT__POLICIES", policy)]).await;
    for _ in 0..3 {
        let response = app.get("/v1/kv/x").await;
        assert!(response.headers.contains_key("ratelimit"));
    }
    for spelling in [
        "/v1/kv/x",
        "/%761/kv/x",
        "/v%31/kv/x",
        "/%76%31/kv/x",
        "/%56%31/kv/x",
        "/v1/%6bv/x",
        "/v1/%6Bv/x",
        "/v1/kv/%78",
        "//v1/kv/x",
        "/v1//kv/x",
        "/./v1/kv/x",
        "/v1/./kv/x",
        "/v1/kv/./x",
        "/a/../v1/kv/x",
        "/%2e/v1/kv/x",
        "/%2fv1/kv/x",
    ] {
        let response = app.get(spelling).await;
        let (status, code) = response.outcome();
        // Either limited, or not a route at all (nothing behind it to protect).
        assert!(
            status == 429 || (status == 404 && code == "not_found"),
            "{spelling}: {status} {code}"
        );
        if [
            "/%761/kv/x",
            "/v%31/kv/x",
            "/%76%31/kv/x",
            "/v1/%6bv/x",
            "/v1/kv/%78",
        ]
        .contains(&spelling)
        {
            assert_eq!(
                status, 429,
                "{spelling} routes to /v1/kv/x and must be limited"
            );
        }
    }
    // HEAD is counted as the GET it is answered as.
    let head = app.http().head(app.url("/%761/kv/x")).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 429);
    // The job route too, where the probe found the same hole.
    let post = app
        .http()
        .post(app.url("/%761/jobs"))
        .json(&json!({"kind": "test.record"}))
        .send()
        .await
        .unwrap();
    assert_eq!(Reply::read(post).await.outcome().0, 429);
}

/// A policy prefix that could never match a canonical path is refused at start-up.
#[test]
fn a_policy_prefix_must_be_canonical() {
    let (dir, db) = (common::config_dir(), "postgres://postgres@127.0.0.1/x");
    for prefix in ["/%761/", "/v1//", "/./v1/"] {
        let policy = format!(r#"[{{name = "p", prefix = "{prefix}", limit = 1, period = "1s"}}]"#);
        let error = steward_reference::service()
            .load_config(&steward::config::Sources {
                config_dir: dir.clone(),
                env_name: Some("test".into()),
                config_file: None,
                vars: vec![
                    ("STEWARD__RATELIMIT__POLICIES".into(), policy),
                    ("STEWARD__POSTGRES__URL".into(), db.into()),
                ],
                profile: None,
            })
            .expect_err(prefix);
        assert_eq!(error.key, "ratelimit.policies", "{prefix}");
    }
}

async fn enqueue(app: &TestApp, body: Value) -> reqwest::Response {
    app.http()
        .post(app.url("/v1/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `max_queued` bounds the waiting jobs and `max_payload_size` each payload; both refusals
/// are counted.
#[actix_rt::test]
async fn the_job_queue_and_its_payloads_are_bounded() {
    let app = spawn_app_with(&[
        ("STEWARD__WORKERS__MAX_QUEUED", "5"),
        ("STEWARD__WORKERS__MAX_PAYLOAD_SIZE", "100"),
    ])
    .await;
    let delayed = json!({"kind": "test.record", "delay_ms": 3_600_000});
    for _ in 0..5 {
        assert_eq!(enqueue(&app, delayed.clone()).await.status().as_u16(), 202);
    }
    let full = enqueue(&app, delayed.clone()).await;
    assert_eq!(full.headers()["retry-after"], "5");
    assert_eq!(
        Reply::read(full).await.outcome(),
        (503, "queue_full".into())
    );

    let big = json!({"kind": "test.record", "payload": {"pad": "x".repeat(100)}});
    assert_eq!(
        Reply::read(enqueue(&app, big).await).await.outcome(),
        (413, "payload_too_large".into())
    );
    let rejected =
        |reason: &str| format!("jobs_rejected_total{{queue=\"default\",reason=\"{reason}\"}}");
    assert_eq!(app.metric(&rejected("queue_full")).await, 1.0);
    assert_eq!(app.metric(&rejected("payload_too_large")).await, 1.0);
}

async fn job_status(app: &TestApp, id: &str) -> (u16, Value) {
    let response = app.get(&format!("/v1/jobs/{id}")).await;
    let status = response.status;
    (status, response.body)
}

async fn enqueued_id(app: &TestApp, body: Value) -> String {
    let response = enqueue(app, body).await;
    assert_eq!(response.status().as_u16(), 202);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// Enqueues `body`, waits until the job has succeeded, and returns its status document.
async fn run_to_success(app: &TestApp, body: Value) -> Value {
    let id = enqueued_id(app, body).await;
    eventually(Duration::from_secs(10), "the job succeeded", || async {
        job_status(app, &id).await.1["status"] == "succeeded"
    })
    .await;
    job_status(app, &id).await.1
}

/// A job delayed past `status_ttl` still runs: its document lives until it has run.
#[actix_rt::test]
async fn a_job_delayed_past_the_status_ttl_still_runs() {
    let app = spawn_app_with(&[("STEWARD__WORKERS__STATUS_TTL", "1s")]).await;
    run_to_success(&app, json!({"kind": "test.record", "delay_ms": 2500})).await;
}

/// Finished jobs keep their documents only for the newest `max_finished`; the dead letters of
/// dropped ones go with them.
#[actix_rt::test]
async fn finished_job_documents_are_bounded() {
    let app = spawn_app_with(&[("STEWARD__WORKERS__MAX_FINISHED", "3")]).await;
    let mut ids = Vec::new();
    for n in 0..7 {
        // Alternate successes and dead letters; run one at a time so the order is known.
        let payload = if n % 2 == 0 {
            json!({})
        } else {
            json!({"fail_times": 1, "permanent": true})
        };
        let id = enqueued_id(&app, json!({"kind": "test.record", "payload": payload})).await;
        eventually(Duration::from_secs(10), "the job finished", || async {
            let status = job_status(&app, &id).await.1["status"].clone();
            status == "succeeded" || status == "dead"
        })
        .await;
        ids.push(id);
    }
    for (n, id) in ids.iter().enumerate() {
        let expected = if n < 4 { 404 } else { 200 };
        assert_eq!(job_status(&app, id).await.0, expected, "job {n}");
    }
    let dead = Reply::of(app.http().get(app.url("/v1/jobs/dead")))
        .await
        .body;
    let dead_ids: Vec<&str> = dead["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(dead_ids, vec![ids[5].as_str()], "only the kept dead letter");
}

/// What one waiting job of the largest payload costs Redis, measured with MEMORY USAGE on
/// this test's own keys: SECURITY.md quotes it to size `max_queued`.
#[actix_rt::test]
async fn a_waiting_job_costs_about_its_payload_in_redis() {
    let app = spawn_app_with(&[]).await;
    let size = app.settings().workers.max_payload_size;
    // {"pad":"..."} of exactly max_payload_size bytes.
    let pad = "x".repeat(size - 10);
    let jobs = 50;
    for _ in 0..jobs {
        let body = json!({"kind": "test.record", "payload": {"pad": pad}, "delay_ms": 3_600_000});
        assert_eq!(enqueue(&app, body).await.status().as_u16(), 202);
    }
    let mut redis = app.redis_connection().await;
    let keys: Vec<String> = redis
        .keys(format!("{}*", app.settings().redis.key_prefix))
        .await
        .unwrap();
    let mut bytes = 0u64;
    for key in keys {
        let usage: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut redis)
            .await
            .unwrap();
        bytes += usage.unwrap_or(0);
    }
    let per_job = bytes / jobs;
    println!("one waiting job of a {size}-byte payload: {per_job} bytes in Redis");
    assert!(per_job >= size as u64, "{per_job}");
    // The allocator rounds a value up to its size class: at most a quarter more, here.
    assert!(per_job <= size as u64 * 5 / 4 + 1024, "{per_job}");
}

/// Client lock names live in a namespace of their own: they cannot reach the fencing
/// counter, collide with each other's keys, or take the service's own locks.
#[actix_rt::test]
async fn lock_names_cannot_reach_internal_keys_or_the_services_locks() {
    let app = spawn_app_with(&[]).await;
    let take = |name: &str| {
        app.http()
            .post(app.url(&format!("/v1/locks/{name}")))
            .json(&json!({"ttl_ms": 600000}))
            .send()
    };
    for name in [
        "colA",
        "colA:fence",
        "fence",
        "c:colA",
        "s:ledger.reconcile",
    ] {
        assert_eq!(take(name).await.unwrap().status().as_u16(), 201, "{name}");
        let state = Reply::of(app.http().get(app.url(&format!("/v1/locks/{name}"))))
            .await
            .body;
        assert_eq!(state["held"], true, "{name}: {state}");
    }
    // Fencing tokens of different locks come from one counter: strictly increasing.
    let a = app
        .post("/v1/locks/t1", &json!({"ttl_ms": 1000}))
        .await
        .body;
    let b = app
        .post("/v1/locks/t2", &json!({"ttl_ms": 1000}))
        .await
        .body;
    assert!(b["fencing_token"].as_i64() > a["fencing_token"].as_i64());

    // A client holding "ledger.reconcile" does not stop the reconcile job.
    assert_eq!(
        take("ledger.reconcile").await.unwrap().status().as_u16(),
        201
    );
    run_to_success(&app, json!({"kind": "ledger.reconcile"})).await;

    // No key per lock name outlives its lock: besides the locks, one counter.
    let mut redis = app.redis_connection().await;
    let prefix = &app.settings().redis.key_prefix;
    let keys: Vec<String> = redis.keys(format!("{prefix}lock:*")).await.unwrap();
    let others: Vec<&String> = keys
        .iter()
        .filter(|k| !k.starts_with(&format!("{prefix}lock:c:")))
        .collect();
    assert_eq!(others, vec![&format!("{prefix}lock:fence")]);
}

/// Balances near the top of a bigint do not break the reconcile: it sums in numeric.
#[actix_rt::test]
async fn huge_balances_do_not_disable_the_ledger_check() {
    let app = spawn_app_with(&[]).await;
    for balance in [i64::MAX, i64::MAX - 7] {
        assert_eq!(app.post_account("big", balance).await.status, 201);
    }
    let done = run_to_success(&app, json!({"kind": "ledger.reconcile"})).await;
    let result = &done["result"];
    assert_eq!(result["holds"], true);
    assert_eq!(result["sum_balances"], "18446744073709551607");
}

/// One principal's Idempotency-Key neither replays to another principal nor can be squatted
/// by one; jobs' keys are scoped the same way.
#[actix_rt::test]
async fn idempotency_keys_are_scoped_to_the_principal() {
    let app = spawn_app_with(&[]).await;
    let (victim, attacker) = (
        Caller::issue(&app, "victim", &[]).await,
        Caller::issue(&app, "attacker", &[]).await,
    );
    let (mine, theirs, b) = (
        victim.account(1000).await,
        attacker.account(1000).await,
        app.account(0).await,
    );
    let body = json!({"from": mine, "to": b, "amount": 10});
    let first = victim.transfer("order-42", &body).await;
    assert_eq!(
        (first.status, first.header("idempotent-replayed")),
        (201, Some("false"))
    );
    // The same key from another principal is its own: not the victim's answer.
    let own = attacker
        .transfer("order-42", &json!({"from": theirs, "to": b, "amount": 10}))
        .await;
    assert_eq!(
        (own.status, own.header("idempotent-replayed")),
        (201, Some("false"))
    );
    assert_ne!(own.body["id"], first.body["id"]);
    // The victim's very request, sent by the attacker: neither a replay nor the victim's
    // money.
    let copied = attacker.transfer("order-44", &body).await;
    assert_eq!(copied.header("idempotent-replayed"), Some("false"));
    copied.assert_error(steward_reference::errors::ACCOUNT_NOT_FOUND);
    // The victim's own retry still replays.
    let again = victim.transfer("order-42", &body).await;
    assert_eq!(
        (
            again.status,
            again.header("idempotent-replayed"),
            &again.body["id"]
        ),
        (201, Some("true"), &first.body["id"])
    );
    // A key squatted with another body by one principal stays free for another.
    let other = json!({"from": theirs, "to": b, "amount": 1});
    assert_eq!(attacker.transfer("order-43", &other).await.status, 201);
    assert_eq!(victim.transfer("order-43", &body).await.status, 201);

    let job = |caller: &Caller| {
        caller
            .request(reqwest::Method::POST, "/v1/jobs")
            .header("idempotency-key", "job-1")
            .json(&json!({"kind": "test.record"}))
    };
    let first = Reply::of(job(&victim)).await.body;
    let second = Reply::of(job(&attacker)).await.body;
    assert_eq!(second["created"], true);
    assert_ne!(first["id"], second["id"]);
}

/// Idempotency keys older than `idempotency.retention` are deleted by the scheduled prune
/// job, without anyone enqueuing it.
#[actix_rt::test]
async fn old_idempotency_keys_are_pruned_on_schedule() {
    let app = spawn_app_with(&[("STEWARD__IDEMPOTENCY__PRUNE_INTERVAL", "1s")]).await;
    let sql = app.sql().await;
    sql.batch_execute(
        "INSERT INTO idempotency_keys (key, fingerprint, status, response, created_at) VALUES
           ('old', 'f', 201, '{}', now() - interval '25 hours'),
           ('new', 'f', 201, '{}', now() - interval '23 hours')",
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "the old key is pruned", || async {
        let rows = sql
            .query("SELECT key FROM idempotency_keys ORDER BY key", &[])
            .await
            .unwrap();
        let keys: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        keys == ["new"]
    })
    .await;
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

const TOKEN: &str = "security-test-admin-token";

/// Admin actions are in the audit trail before they take effect, with who and from where,
/// and a filter of "off" silences neither itself nor what comes after it.
#[actix_rt::test]
async fn admin_actions_are_audited_even_when_they_turn_the_log_off() {
    let service = service::start(&[("STEWARD__ADMIN__TOKEN", TOKEN)]).await;
    let http = http();
    let off = http
        .put(service.url("/admin/log-level"))
        .bearer_auth(TOKEN)
        .header("x-request-id", "audit-me")
        .json(&json!({"level": "off"}))
        .send()
        .await
        .unwrap();
    assert_eq!(off.status().as_u16(), 200);
    let line = service.wait_for_line("log filter set to \"off\"").await;
    for field in [
        "steward::audit",
        "peer=127.0.0.1",
        "request_id=audit-me",
        "token_id=",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    let read = http
        .get(service.url("/admin/actors"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 200);
    service
        .wait_for_line("admin request GET /admin/actors")
        .await;
    assert!(
        !service
            .log()
            .iter()
            .any(|l| l.contains("steward::access") && l.contains("/admin/actors")),
        "the access log is off"
    );
}

/// The token is compared as digests in constant time, failures are throttled per address and
/// logged with it, and the scheme is case-insensitive.
#[actix_rt::test]
async fn wrong_admin_tokens_are_throttled_and_logged() {
    let service = service::start(&[("STEWARD__ADMIN__TOKEN", TOKEN)]).await;
    let http = http();
    let actors = |authorization: String| {
        http.get(service.url("/admin/actors"))
            .header("authorization", authorization)
            .send()
    };
    for scheme in ["bearer", "BEARER"] {
        let response = actors(format!("{scheme} {TOKEN}")).await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{scheme}");
    }
    let mut statuses = Vec::new();
    for n in 0..20 {
        let response = actors(format!("Bearer guess-{n}")).await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status().as_u16() == 429 {
            assert!(response.headers().contains_key("retry-after"));
            assert_eq!(
                Reply::read(response).await.outcome().1,
                "too_many_auth_failures"
            );
        }
    }
    assert_eq!(&statuses[..5], &[401; 5]);
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // While throttled, even the right token is not looked at.
    assert_eq!(
        actors(format!("Bearer {TOKEN}"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        429
    );
    let failures: Vec<String> = service
        .log()
        .into_iter()
        .filter(|l| l.contains("admin authentication failed"))
        .collect();
    assert_eq!(
        failures.len(),
        5,
        "one line per refused attempt, none per throttled one"
    );
    assert!(failures
        .iter()
        .all(|l| l.contains("WARN") && l.contains("peer=127.0.0.1")));
    let metrics = service.get("/metrics").await.text;
    assert!(metrics.contains("admin_auth_failures_total{outcome=\"rejected\"} 5"));
}

/// A short admin token is refused at start-up without being printed.
#[test]
fn a_short_admin_token_is_refused() {
    let output = steward(&["check-config"], &[("STEWARD__ADMIN__TOKEN", "x")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("admin.token = <redacted>"), "{stderr}");
    assert!(stderr.contains("at least 16 bytes"), "{stderr}");
}

/// At debug, dependency crates do not log query parameters (an account's name) unless the
/// filter names them.
#[actix_rt::test]
async fn debug_logs_do_not_carry_query_parameters() {
    let service = service::start(&[("STEWARD__LOG__LEVEL", "debug")]).await;
    let http = http();
    service.until_ready().await;
    let created = http
        .post(service.url("/v1/accounts"))
        .json(&json!({"name": "Secret-Name-7f3a", "initial_balance": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    service.wait_for_line("POST /v1/accounts 201").await;
    let leaked: Vec<String> = service
        .log()
        .into_iter()
        .filter(|l| l.contains("Secret-Name-7f3a"))
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
}

fn steward(args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(common::service::binary())
        .current_dir(common::manifest_dir())
        .env("STEWARD_ENV", "test")
        .envs(vars.iter().copied())
        .args(args)
        .output()
        .unwrap()
}

/// No form of a store password reaches check-config's output or a configuration error.
#[test]
fn passwords_are_redacted_in_every_form_and_output() {
    for (key, url) in [
        (
            "STEWARD__POSTGRES__URL",
            "postgres://u:pa/ss-sekrit@127.0.0.1/db",
        ),
        (
            "STEWARD__POSTGRES__URL",
            "postgres://u@127.0.0.1/db?password=sekrit",
        ),
        (
            "STEWARD__POSTGRES__URL",
            "host=127.0.0.1 password=sekrit user=u",
        ),
        (
            "STEWARD__POSTGRES__URL",
            "host=127.0.0.1 password='se krit' user=u",
        ),
        ("STEWARD__REDIS__URL", "redis://user:sekrit@127.0.0.1:6379"),
    ] {
        let output = steward(&["check-config"], &[(key, url)]);
        let printed = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{url}: {printed}");
        assert!(!printed.contains("krit"), "{url}: {printed}");
    }
    for (key, url) in [
        ("STEWARD__REDIS__URL", "redis://user:sekrit@host:99999"),
        ("STEWARD__REDIS__URL", "redis://user:pa/sekrit@host"),
        (
            "STEWARD__POSTGRES__URL",
            "postgres://u:sekrit@h:notaport/db",
        ),
        ("STEWARD__POSTGRES__URL", "host=h port=x password=sekrit"),
    ] {
        let output = steward(&["check-config"], &[(key, url)]);
        let printed = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url}: {printed}");
        assert!(!printed.contains("sekrit"), "{url}: {printed}");
    }
}

/// Client input that reached PostgreSQL or Redis as it was became a 500: it is a 4xx now.
#[actix_rt::test]
async fn bad_client_input_is_a_4xx_not_a_500() {
    let app = spawn_app_with(&[]).await;
    let nul = app.post_account("nul\u{0}name", 1).await;
    assert_eq!(nul.outcome(), (422, "invalid_name".into()));
    for cursor in [
        "99999999999999999999999-1",
        "1-99999999999999999999999",
        "1-",
        "-1",
    ] {
        let dead = app.get(&format!("/v1/jobs/dead?cursor={cursor}")).await;
        assert_eq!(dead.outcome(), (400, "invalid_cursor".into()), "{cursor}");
    }
    assert_eq!(
        app.get("/v1/jobs/dead?cursor=18446744073709551615-0")
            .await
            .status,
        200
    );
}

/// Every GET route answers HEAD as it answers GET, without a body.
#[actix_rt::test]
async fn every_get_route_answers_head() {
    let app = spawn_app_with(&[]).await;
    let account = app.account(5).await;
    for path in [
        "/health/live".to_owned(),
        "/health/ready".to_owned(),
        "/version".to_owned(),
        "/metrics".to_owned(),
        "/openapi.json".to_owned(),
        "/v1/kv/missing".to_owned(),
        "/v1/accounts".to_owned(),
        format!("/v1/accounts/{account}"),
        format!("/v1/accounts/{account}/transfers"),
        "/v1/jobs/dead".to_owned(),
        format!("/v1/jobs/{}", "0".repeat(32)),
        "/v1/locks/free".to_owned(),
    ] {
        let get = app.get(&path).await;
        let head = app.http().head(app.url(&path)).send().await.unwrap();
        assert_eq!(head.status(), get.status, "{path}");
        assert!(head.headers().contains_key("x-request-id"), "{path}");
        assert!(head.bytes().await.unwrap().is_empty(), "{path}");
    }
}

/// Malformed request heads are the client's fault: answered 4xx, logged at most at INFO.
#[actix_rt::test]
async fn malformed_requests_are_not_logged_as_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let service = service::start(&[]).await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70 * 1024));
    for request in [
        "GARBAGE\r\n\r\n".to_owned(),
        "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".to_owned(),
        "GET / HTTP/9.9\r\n\r\n".to_owned(),
        long_uri,
    ] {
        let mut stream = tokio::net::TcpStream::connect(service.addr())
            .await
            .unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    }
    // Each refusal is logged, at INFO: wait for the four lines, then look at their levels.
    eventually(
        Duration::from_secs(10),
        "four parse errors logged",
        || async {
            let lines = service.log();
            lines
                .iter()
                .filter(|l| l.contains("request parse error"))
                .count()
                == 4
        },
    )
    .await;
    let errors: Vec<String> = service
        .log()
        .into_iter()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

/// `/health/ready` pings the stores at most once per `health.ready_cache`, however often it
/// is asked.
#[actix_rt::test]
async fn readiness_does_not_amplify_requests_onto_the_stores() {
    let app = spawn_app_with(&[("STEWARD__HEALTH__READY_CACHE", "3s")]).await;
    let before = app.metric("readiness_checks_total").await;
    let probes = (0..200).map(|_| app.get("/health/ready"));
    for response in futures::future::join_all(probes).await {
        assert_eq!(response.status, 200);
    }
    // One round at most: the cached one may have run out during the burst.
    let rounds = app.metric("readiness_checks_total").await - before;
    assert!(rounds <= 1.0, "{rounds} rounds of pings for 200 probes");
}

/// `/metrics` can move to a listener of its own, or stay behind the admin token.
#[actix_rt::test]
async fn metrics_can_be_kept_from_clients() {
    let service = service::start(&[("STEWARD__METRICS__LISTEN", "127.0.0.1:0")]).await;
    let http = http();
    let line = service.wait_for_line("metrics listener addr=").await;
    let addr: String = line
        .rsplit("metrics listener addr=")
        .next()
        .unwrap()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    let main = http.get(service.url("/metrics")).send().await.unwrap();
    assert_eq!(Reply::read(main).await.outcome(), (404, "not_found".into()));
    let own = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status().as_u16(), 200);
    assert!(own.text().await.unwrap().contains("http_requests_total"));

    let app = spawn_app_with(&[("STEWARD__METRICS__REQUIRE_TOKEN", "true")]).await;
    assert_eq!(
        app.get("/metrics").await.outcome(),
        (401, "unauthorized".into())
    );
    let with_token = app
        .admin(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status().as_u16(), 200);
}

/// The steward binary with its descriptor limit (soft and hard) set to `nofile`.
fn with_nofile_limit(nofile: u64, vars: &[(&str, &str)]) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(common::service::binary());
    command
        .current_dir(common::manifest_dir())
        .env("STEWARD_ENV", "test")
        .env("STEWARD__SERVER__WORKERS", "2")
        .env("STEWARD__REDIS__URL", "redis://127.0.0.1:1")
        .env(
            "STEWARD__POSTGRES__URL",
            "postgres://postgres@127.0.0.1:1/x",
        )
        .envs(vars.iter().copied())
        .arg("serve");
    // SAFETY: setrlimit is async-signal-safe and touches only this child.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A service that started runs until told to stop: give it a moment, then SIGTERM.
    std::thread::sleep(Duration::from_millis(1500));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    child.wait_with_output().unwrap()
}

/// Connections that cannot fit under the descriptor limit are clamped at start-up, and a
/// limit too small to serve refuses to start, instead of failing every accept later.
#[test]
fn the_connection_budget_fits_the_descriptor_limit() {
    let clamped = with_nofile_limit(2000, &[]);
    let log = String::from_utf8_lossy(&clamped.stderr);
    assert!(
        log.contains("server.max_connections lowered from 4096 to"),
        "{log}"
    );
    let refused = with_nofile_limit(200, &[]);
    let log = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{log}");
    assert!(log.contains("file descriptor limit (200)"), "{log}");
}

/// `server.backlog` reaches listen(2) (std's bind always used 128).
#[actix_rt::test]
async fn the_configured_backlog_is_the_listeners() {
    let service = service::start(&[("STEWARD__SERVER__BACKLOG", "77")]).await;
    let output = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", service.addr().port())])
        .output()
        .expect("ss (iproute2) is installed by .ci/test");
    let table = String::from_utf8_lossy(&output.stdout);
    // State, Recv-Q, Send-Q (the backlog of a listening socket), ...
    let columns: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(columns.get(2), Some(&"77"), "{table}");
}
