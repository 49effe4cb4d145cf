//! `/v1/kv/{key}` against real Redis.

mod common;

use steward_reference::config::KvConfig;

use std::time::Duration;

use common::{spawn_app, spawn_app_with};

use redis::AsyncCommands;
use steward::testing::{eventually, Reply};

#[actix_rt::test]
async fn put_get_delete_round_trip_exact_bytes() {
    let app = spawn_app().await;
    let value: Vec<u8> = vec![0, 159, 146, 150, 255, b'\n', b'x'];
    let put = app
        .http()
        .put(app.url("/v1/kv/user:42.profile_v-1"))
        .body(value.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 204);

    let got = app.get("/v1/kv/user:42.profile_v-1").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["content-type"], "application/octet-stream");
    assert_eq!(got.bytes, value);

    // Stored under the configured prefix, in the kv namespace.
    let mut redis = app.redis_connection().await;
    let raw: Option<Vec<u8>> = redis
        .get(format!(
            "{}kv:user:42.profile_v-1",
            app.settings().redis.key_prefix
        ))
        .await
        .unwrap();
    assert_eq!(raw, Some(value));

    let deleted = app
        .http()
        .delete(app.url("/v1/kv/user:42.profile_v-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    assert_eq!(
        app.get("/v1/kv/user:42.profile_v-1").await.outcome(),
        (404, "key_not_found".into())
    );
    let again = app
        .http()
        .delete(app.url("/v1/kv/user:42.profile_v-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status().as_u16(),
        204,
        "deleting a missing key is fine"
    );
}

#[actix_rt::test]
async fn ttl_expires_values_and_is_validated() {
    let app = spawn_app().await;
    let put = app
        .http()
        .put(app.url("/v1/kv/short?ttl=1"))
        .body("soon gone")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 204);
    let mut redis = app.redis_connection().await;
    let ttl_ms: i64 = redis
        .pttl(format!("{}kv:short", app.settings().redis.key_prefix))
        .await
        .unwrap();
    assert!(
        (1..=1000).contains(&ttl_ms),
        "the TTL asked for, not jittered: {ttl_ms}"
    );
    eventually(Duration::from_secs(3), "the value expires", || async {
        app.get("/v1/kv/short").await.status == 404
    })
    .await;

    let default = app
        .http()
        .put(app.url("/v1/kv/long"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(default.status().as_u16(), 204);
    let ttl_ms: i64 = redis
        .pttl(format!("{}kv:long", app.settings().redis.key_prefix))
        .await
        .unwrap();
    let default_ms = app.context().config::<KvConfig>().default_ttl.as_millis() as i64;
    assert!(
        ttl_ms > default_ms - 5_000 && ttl_ms <= default_ms,
        "{ttl_ms}"
    );

    for (query, expected) in [
        ("ttl=0", "invalid_ttl"),
        ("ttl=99999999999", "invalid_ttl"),
        ("ttl=soon", "invalid_query"),
        ("tll=5", "invalid_query"),
    ] {
        let response = app
            .http()
            .put(app.url(&format!("/v1/kv/k?{query}")))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(
            Reply::read(response).await.outcome(),
            (400, expected.into()),
            "{query}"
        );
    }
}

#[actix_rt::test]
async fn bad_keys_and_oversized_values_are_refused_and_store_nothing() {
    let app = spawn_app_with(&[("STEWARD__KV__MAX_VALUE_SIZE", "16")]).await;
    let long = "k".repeat(201);
    for key in [
        long.as_str(),
        "has%20space",
        "semi;colon",
        "%C3%A9t%C3%A9",
        "%FF%FE",
    ] {
        let response = app
            .http()
            .put(app.url(&format!("/v1/kv/{key}")))
            .body("x")
            .send()
            .await
            .unwrap();
        let (status, _) = Reply::read(response).await.outcome();
        assert_eq!(status, 400, "{key}");
        assert_eq!(app.get(&format!("/v1/kv/{key}")).await.status, 400, "{key}");
    }
    let ok = "k".repeat(200);
    let response = app
        .http()
        .put(app.url(&format!("/v1/kv/{ok}")))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        204,
        "200 characters is the limit"
    );

    app.http()
        .put(app.url("/v1/kv/sized"))
        .body("small")
        .send()
        .await
        .unwrap();
    let big = app
        .http()
        .put(app.url("/v1/kv/sized"))
        .body(vec![b'x'; 17])
        .send()
        .await
        .unwrap();
    assert_eq!(
        Reply::read(big).await.outcome(),
        (413, "value_too_large".into())
    );
    let kept = app.get("/v1/kv/sized").await.text;
    assert_eq!(kept, "small", "a refused write leaves the old value");
}

#[actix_rt::test]
async fn a_redis_outage_answers_503_with_retry_after_and_recovers() {
    let app = spawn_app().await;
    let proxy = app.redis();
    app.http()
        .put(app.url("/v1/kv/during"))
        .body("before")
        .send()
        .await
        .unwrap();

    proxy.cut();
    let response = app.get("/v1/kv/during").await;
    assert!(response.headers.contains_key("retry-after"));
    let (status, code) = response.outcome();
    assert!(status == 503 || status == 504, "{status} {code}");
    let put = app
        .http()
        .put(app.url("/v1/kv/during"))
        .body("lost?")
        .send()
        .await
        .unwrap();
    assert!(
        put.status().as_u16() >= 503,
        "a write during the outage is refused, not faked"
    );

    proxy.restore();
    eventually(Duration::from_secs(5), "kv works again", || async {
        app.get("/v1/kv/during").await.status == 200
    })
    .await;
    assert_eq!(app.get("/v1/kv/during").await.text, "before");
}
