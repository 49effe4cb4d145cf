//! Routes compiled only with the `bench-routes` feature, for `bench/run`: the kv read without
//! the actor hop, so the benchmark can put a figure on what the hop costs.

use std::sync::OnceLock;

use bb8::{Pool, PooledConnection};
use bb8_redis::RedisConnectionManager;
use tokio::sync::OnceCell;

use actix_web::HttpResponse;
use steward::config::Settings;
use steward::{ApiError, Context};

use super::kv::{cache_key, valid_key, value_response};

/// A Redis pool used straight from the handler, with the same connection strategy as the
/// cache actor (one multiplexed connection leased from the pool and shared), so that the two
/// routes differ by the actor hop alone.
pub struct Direct {
    pool: Pool<RedisConnectionManager>,
    lease: OnceCell<PooledConnection<'static, RedisConnectionManager>>,
    prefix: String,
}

impl Direct {
    /// A pool of its own, built like the cache actor's and not yet connected.
    fn new(settings: &Settings) -> Result<Self, steward::actors::managers::ManagerError> {
        let manager = steward::actors::managers::redis_manager(&settings.redis.url)?;
        let pool = Pool::builder()
            .max_size(settings.redis.pool.max_size)
            .test_on_check_out(false)
            .build_unchecked(manager);
        Ok(Self {
            pool,
            lease: OnceCell::new(),
            prefix: settings.redis.key_prefix.clone(),
        })
    }
}

/// `GET /bench/kv-direct/{key}`: what `GET /v1/kv/{key}` does, minus the actor.
pub async fn kv_get(
    ctx: Context,
    key: actix_web::web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    valid_key(&key)?;
    let unavailable = |e: String| {
        ApiError::new(steward::codes::UNAVAILABLE, "redis is unavailable")
            .retry_after(1)
            .with_cause(e)
    };
    let direct = direct(&ctx).map_err(|e| unavailable(e.to_string()))?;
    let lease = direct
        .lease
        .get_or_try_init(|| direct.pool.get_owned())
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let mut conn = (**lease).clone();
    let value: Option<Vec<u8>> = redis::cmd("GET")
        .arg(format!("{}{}", direct.prefix, cache_key(&key)))
        .query_async(&mut conn)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    value_response(value)
}

/// The process's one [`Direct`], built on first use from the service's settings.
fn direct(ctx: &Context) -> Result<&'static Direct, steward::actors::managers::ManagerError> {
    static DIRECT: OnceLock<Direct> = OnceLock::new();
    if let Some(direct) = DIRECT.get() {
        return Ok(direct);
    }
    let built = Direct::new(ctx.settings())?;
    Ok(DIRECT.get_or_init(|| built))
}
