//! Rate limiting on one instance: exact counts, headers, costs, windows, dry run, identities,
//! trusted proxies, and each on_store_error mode while Redis is cut.

mod common;

use std::time::Duration;

use common::{spawn_app_with, Caller};

use steward::testing::{eventually, Reply, TestApp};

/// An app whose `/version` is limited by one policy; `extra` adds policy fields (TOML).
async fn limited(limit: u32, period: &str, extra: &str, vars: &[(&str, &str)]) -> TestApp {
    let policy = format!(
        r#"[{{name = "t", prefix = "/version", limit = {limit}, period = "{period}"{extra}}}]"#
    );
    let mut all = vec![("STEWARD__RATELIMIT__POLICIES", policy.as_str())];
    all.extend_from_slice(vars);
    spawn_app_with(&all).await
}

async fn version(app: &TestApp, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.http().get(app.url("/version"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// How many of `n` requests pass.
async fn passes(app: &TestApp, n: usize, headers: &[(&str, &str)]) -> usize {
    let mut passed = 0;
    for _ in 0..n {
        if version(app, headers).await.status().as_u16() == 200 {
            passed += 1;
        }
    }
    passed
}

#[actix_rt::test]
async fn exactly_the_limit_passes_and_the_next_gets_429_with_headers() {
    let app = limited(5, "10s", "", &[]).await;
    for remaining in (0..5).rev() {
        let response = version(&app, &[]).await;
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.headers()["ratelimit-policy"], "\"t\";q=5;w=10");
        let state = response.headers()["ratelimit"].to_str().unwrap().to_owned();
        assert!(
            state.starts_with(&format!("\"t\";r={remaining};t=")),
            "{state}"
        );
    }
    let limited = version(&app, &[]).await;
    let headers = limited.headers().clone();
    assert_eq!(
        Reply::read(limited).await.outcome(),
        (429, "rate_limited".into())
    );
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    let t: u64 = headers["ratelimit"]
        .to_str()
        .unwrap()
        .rsplit("t=")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry_after >= t && retry_after >= 1,
        "Retry-After {retry_after} is not before t={t}"
    );
    assert!(
        retry_after <= 3,
        "one emission interval (2 s), not the whole period: {retry_after}"
    );
    assert_eq!(
        app.get("/health/live").await.status,
        200,
        "routes outside the prefix are not limited"
    );
    assert_eq!(
        app.metric("ratelimit_decisions_total{decision=\"deny\",policy=\"t\"}")
            .await,
        1.0
    );
}

#[actix_rt::test]
async fn a_request_can_cost_more_than_one() {
    let app = limited(10, "10s", ", cost = 2", &[]).await;
    assert_eq!(passes(&app, 8, &[]).await, 5);
}

#[actix_rt::test]
async fn the_quota_comes_back_after_the_period_in_every_algorithm() {
    for algorithm in ["gcra", "fixed_window", "sliding_window"] {
        let extra = format!(r#", algorithm = "{algorithm}""#);
        let app = limited(3, "1s", &extra, &[]).await;
        assert_eq!(passes(&app, 5, &[]).await, 3, "{algorithm}");
        // The sliding window weighs the last window in: wait two periods to be whole.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(passes(&app, 5, &[]).await, 3, "{algorithm} after the reset");
    }
}

#[actix_rt::test]
async fn dry_run_counts_but_does_not_reject() {
    let app = limited(2, "10s", ", dry_run = true", &[]).await;
    assert_eq!(passes(&app, 5, &[]).await, 5);
    assert_eq!(
        app.metric("ratelimit_decisions_total{decision=\"deny\",policy=\"t\"}")
            .await,
        3.0
    );
}

/// Each authenticated principal has a quota of its own, and callers without credentials share
/// their address's; a made-up X-Api-Key is refused, not counted as a new client.
#[actix_rt::test]
async fn principals_and_addresses_are_limited_separately() {
    let policy = r#"[{name = "t", prefix = "/v1/accounts", limit = 1, period = "10s"}]"#;
    let app = spawn_app_with(&[("STEWARD__RATELIMIT__POLICIES", policy)]).await;
    let (alpha, beta) = (
        Caller::issue(&app, "alpha", &[]).await,
        Caller::issue(&app, "beta", &[]).await,
    );
    for caller in [&alpha, &beta] {
        assert_eq!(caller.get("/v1/accounts").await.status, 200);
        assert_eq!(caller.get("/v1/accounts").await.status, 429);
    }
    assert_eq!(
        app.get("/v1/accounts").await.status,
        200,
        "no key: the address"
    );
    assert_eq!(app.get("/v1/accounts").await.status, 429);
    let made_up = app
        .request(reqwest::Method::GET, "/v1/accounts")
        .header("x-api-key", "gamma");
    assert_eq!(Reply::of(made_up).await.status, 401);
    let mut redis = app.redis_connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}rl:*", app.settings().redis.key_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        keys.iter()
            .all(|k| !k.contains("alpha") && !k.contains("beta")),
        "principals are hashed: {keys:?}"
    );
}

#[actix_rt::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let trusting = limited(
        1,
        "10s",
        "",
        &[("STEWARD__RATELIMIT__TRUSTED_PROXIES", r#"["127.0.0.0/8"]"#)],
    )
    .await;
    assert_eq!(
        passes(&trusting, 2, &[("x-forwarded-for", "203.0.113.5")]).await,
        1
    );
    assert_eq!(
        passes(&trusting, 1, &[("x-forwarded-for", "203.0.113.6")]).await,
        1,
        "another client"
    );
    let forged = [("x-forwarded-for", "198.51.100.1, 203.0.113.5")];
    assert_eq!(
        passes(&trusting, 1, &forged).await,
        0,
        "the right-most untrusted hop counts, not what the client wrote"
    );

    let untrusting = limited(1, "10s", "", &[]).await;
    assert_eq!(
        passes(&untrusting, 1, &[("x-forwarded-for", "203.0.113.7")]).await,
        1
    );
    assert_eq!(
        passes(&untrusting, 1, &[("x-forwarded-for", "203.0.113.8")]).await,
        0,
        "the peer's address counts"
    );
}

/// An app limited to 2 per 10 s whose rate limiter reaches Redis through a proxy.
async fn with_mode(on_store_error: &str) -> TestApp {
    let extra = format!(r#", on_store_error = "{on_store_error}""#);
    limited(2, "10s", &extra, &[]).await
}

#[actix_rt::test]
async fn while_redis_is_cut_each_mode_does_what_it_says_and_recovers() {
    let allow = with_mode("allow").await;
    let deny = with_mode("deny").await;
    let local = with_mode("local").await;
    for app in [&allow, &deny, &local] {
        app.redis().cut();
    }
    assert_eq!(
        passes(&allow, 5, &[]).await,
        5,
        "allow: unlimited while Redis is out"
    );
    let refused = version(&deny, &[]).await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        Reply::read(refused).await.outcome(),
        (503, "rate_limiter_unavailable".into())
    );
    assert_eq!(
        passes(&local, 5, &[]).await,
        2,
        "local: the same limit, in this process"
    );
    assert!(
        local
            .metric("ratelimit_decisions_total{decision=\"error\",policy=\"t\"}")
            .await
            >= 1.0
    );

    local.redis().restore();
    let errors = || async {
        local
            .metric("ratelimit_decisions_total{decision=\"error\",policy=\"t\"}")
            .await
    };
    eventually(
        Duration::from_secs(5),
        "decisions come from Redis again",
        || async {
            let before = errors().await;
            version(&local, &[]).await;
            errors().await == before
        },
    )
    .await;
}

/// Far from the limit, units are reserved in batches; the total still never exceeds what GCRA
/// allows (the burst, plus what drips back in during the run: one unit per 50 ms here).
#[actix_rt::test]
async fn batched_reservations_never_admit_more_than_the_limit() {
    use futures::stream::{self, StreamExt};
    let app = limited(1200, "60s", "", &[]).await;
    let started = std::time::Instant::now();
    let statuses: Vec<u16> = stream::iter(0..1300)
        .map(|_| async { version(&app, &[]).await.status().as_u16() })
        .buffer_unordered(16)
        .collect()
        .await;
    let dripped = (started.elapsed().as_millis() / 50) as usize + 1;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        admitted <= 1200 + dripped,
        "{admitted} admitted, {dripped} dripped in"
    );
    assert!(
        admitted + 2 * 16 >= 1200,
        "at most a batch or two lapsed: {admitted}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        1300 - admitted
    );
}
