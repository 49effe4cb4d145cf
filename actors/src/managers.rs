//! The connection managers of the two stores, built from configuration.

use std::time::Duration;

use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::NoTls;

/// The manager of every Redis pool, named so that code outside this crate (a Redis store
/// backend's `Backend::Manager`) need not depend on bb8-redis itself.
pub use bb8_redis::RedisConnectionManager;

/// Why a store's connection settings cannot be used; it reads as what was expected, so that
/// configuration errors can name it after the key and value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagerError {
    /// The Redis URL does not parse.
    #[error("a Redis URL like redis://host:6379 ({0})")]
    RedisUrl(String),
    /// The PostgreSQL URL or connection string does not parse.
    #[error("a PostgreSQL URL like postgres://user@host:5432/db ({0})")]
    PostgresUrl(String),
}

/// A Redis manager for `url` (`redis://`, `rediss://` or `unix://`); an error says why the URL
/// is unusable. Nothing is connected yet.
pub fn redis_manager(url: &str) -> Result<RedisConnectionManager, ManagerError> {
    RedisConnectionManager::new(url).map_err(|e| ManagerError::RedisUrl(e.to_string()))
}

/// A PostgreSQL manager for `url`; `password`, when given, replaces the URL's. Every connection
/// attempt is bounded by `connect_timeout`, and every statement by `statement_timeout` on the
/// server, so a query whose caller has gone cannot run on past its deadline. Nothing is
/// connected yet.
pub fn postgres_manager(
    url: &str,
    password: Option<&str>,
    connect_timeout: Duration,
    statement_timeout: Duration,
) -> Result<PostgresConnectionManager<NoTls>, ManagerError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| ManagerError::PostgresUrl(e.to_string()))?;
    if let Some(password) = password {
        config.password(password);
    }
    config.connect_timeout(connect_timeout);
    config.application_name("steward");
    config.options(format!(
        "-c statement_timeout={}",
        statement_timeout.as_millis()
    ));
    Ok(PostgresConnectionManager::new(config, NoTls))
}
