//! The cache actor against real Redis: coalescing, invalidation during a load, TTL jitter.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use futures::future::join_all;
use futures::FutureExt;
use steward_actors::cache::{Cache, CacheActor, CacheConfig, Delete, GetOrLoad, Loader};
use steward_actors::managers::redis_manager;
use steward_actors::store::{HealthConfig, StoreSettings};
use steward_actors::{
    start_actor, Backoff, Breaker, BreakerConfig, Deadline, Metrics, PoolConfig, StoreActor,
};

fn redis_url() -> String {
    std::env::var("STEWARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn cache(metrics: &Arc<Metrics>) -> (Addr<CacheActor>, String) {
    let prefix = format!("steward-actors-test:{}:", rand::random::<u64>());
    let pool = PoolConfig {
        max_size: 4,
        min_idle: 0,
        connection_timeout: Duration::from_secs(1),
        max_lifetime: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
    };
    let health = HealthConfig {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        backoff: Backoff {
            min: Duration::from_millis(50),
            max: Duration::from_millis(200),
        },
    };
    let config = CacheConfig {
        timeout: Duration::from_secs(1),
        ttl_jitter: 0.1,
        negative_ttl: Duration::from_secs(5),
    };
    let manager = redis_manager(&redis_url()).unwrap();
    let backend = Cache::new(prefix.clone(), config, metrics);
    let settings = StoreSettings {
        pool,
        health,
        metrics: Arc::clone(metrics),
        breaker: Breaker::new("redis", BreakerConfig::default(), metrics),
    };
    let actor = StoreActor::new("redis", manager, &settings, backend);
    let (addr, _running) = start_actor(actor);
    (addr, prefix)
}

/// A loader that takes 100 ms, counts its runs and answers `value`.
fn slow_loader(runs: &Arc<AtomicUsize>, value: &'static [u8]) -> Loader {
    let runs = Arc::clone(runs);
    Box::new(move || {
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            actix_rt::time::sleep(Duration::from_millis(100)).await;
            Ok(Some(value.to_vec()))
        }
        .boxed()
    })
}

async fn redis_pttl(key: &str) -> i64 {
    let client = redis::Client::open(redis_url().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[actix_rt::test]
async fn concurrent_misses_run_the_loader_once() {
    let metrics = Arc::new(Metrics::new().unwrap());
    let (cache, _) = cache(&metrics);
    let runs = Arc::new(AtomicUsize::new(0));
    let loads = (0..20).map(|_| {
        cache.send(GetOrLoad {
            key: "hot".into(),
            ttl: Duration::from_secs(60),
            loader: slow_loader(&runs, b"value"),
            deadline: Deadline::NONE,
        })
    });
    for answer in join_all(loads).await {
        assert_eq!(answer.unwrap().unwrap().as_deref(), Some(&b"value"[..]));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(metrics.cache_loader_coalesced_total.get(), 19);
}

#[actix_rt::test]
async fn a_delete_during_a_load_keeps_the_stale_value_out() {
    let metrics = Arc::new(Metrics::new().unwrap());
    let (cache, _) = cache(&metrics);
    let runs = Arc::new(AtomicUsize::new(0));
    let ttl = Duration::from_secs(60);
    let first = cache.send(GetOrLoad {
        key: "acct".into(),
        ttl,
        loader: slow_loader(&runs, b"old"),
        deadline: Deadline::NONE,
    });
    actix_rt::time::sleep(Duration::from_millis(30)).await;
    cache
        .send(Delete {
            key: "acct".into(),
            deadline: Deadline::NONE,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.await.unwrap().unwrap().as_deref(), Some(&b"old"[..]));

    let next = cache.send(GetOrLoad {
        key: "acct".into(),
        ttl,
        loader: slow_loader(&runs, b"new"),
        deadline: Deadline::NONE,
    });
    assert_eq!(
        next.await.unwrap().unwrap().as_deref(),
        Some(&b"new"[..]),
        "the old load was not cached"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[actix_rt::test]
async fn loaded_values_get_jittered_ttls() {
    let metrics = Arc::new(Metrics::new().unwrap());
    let (cache, prefix) = cache(&metrics);
    let runs = Arc::new(AtomicUsize::new(0));
    let mut ttls = Vec::new();
    for n in 0..20 {
        let key = format!("k{n}");
        let loader = slow_loader(&runs, b"v");
        cache
            .send(GetOrLoad {
                key: key.clone(),
                ttl: Duration::from_secs(100),
                loader,
                deadline: Deadline::NONE,
            })
            .await
            .unwrap()
            .unwrap();
        ttls.push(redis_pttl(&format!("{prefix}{key}")).await);
    }
    assert!(
        ttls.iter().all(|t| (89_000..=110_000).contains(t)),
        "{ttls:?}"
    );
    let distinct: std::collections::HashSet<_> = ttls.iter().map(|t| t / 100).collect();
    assert!(distinct.len() > 5, "spread, not one TTL: {ttls:?}");
}
