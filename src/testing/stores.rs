//! The stores tests run against: where they are (`STEWARD_TEST_*`), whether they answer, and
//! store URLs rewritten to go through a proxy or to another database.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use redis::Commands;
use tokio_postgres::NoTls;

use crate::Backends;

/// Redis for the tests: `STEWARD_TEST_REDIS_URL`, default the local server.
pub fn redis_url() -> String {
    std::env::var("STEWARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A PostgreSQL database the tests may create databases from (the role needs `CREATEDB`):
/// `STEWARD_TEST_DATABASE_URL`, default the local server's `postgres` database.
pub fn database_url() -> String {
    std::env::var("STEWARD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A local port nothing listens on (bound, then released): a store that is down.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    listener.local_addr().expect("its address").port()
}

/// Fails the test with instructions when a store it needs does not answer within 5 s: a
/// missing store must never look like a passing (or silently skipped) test.
pub async fn ensure_stores(backends: Backends) {
    let within = Duration::from_secs(5);
    if backends.redis {
        let url = redis_url();
        let ping = async {
            let client = redis::Client::open(url.as_str()).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .ok()
        };
        if tokio::time::timeout(within, ping)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            panic!(
                "Redis is not reachable at {url} (STEWARD_TEST_REDIS_URL): start one, or point \
                 STEWARD_TEST_REDIS_URL at a server"
            );
        }
    }
    if backends.postgres {
        let url = database_url();
        let connected = tokio::time::timeout(within, tokio_postgres::connect(&url, NoTls)).await;
        if !matches!(connected, Ok(Ok(_))) {
            panic!(
                "PostgreSQL is not reachable at {url} (STEWARD_TEST_DATABASE_URL): start one, \
                 or point STEWARD_TEST_DATABASE_URL at a server"
            );
        }
    }
}

/// Where the `host:port` of `url` starts and ends (after the scheme and any userinfo).
fn authority(url: &str) -> (usize, usize) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    // The userinfo ends at the last `@` of the authority (a password may hold one).
    let host = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    (host, end)
}

/// The address a store URL connects to (resolved; a store URL always names a TCP host).
pub fn store_addr(url: &str) -> SocketAddr {
    let (start, end) = authority(url);
    let host_port = &url[start..end];
    let default_port = if url.starts_with("postgres") {
        5432
    } else {
        6379
    };
    let with_port = if host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| panic!("cannot resolve the store address in {url}"))
}

/// A store URL with its `host:port` replaced by `addr`: the same store through a proxy.
pub fn via(url: &str, addr: SocketAddr) -> String {
    let (start, end) = authority(url);
    format!("{}{addr}{}", &url[..start], &url[end..])
}

/// `postgres://u@h:5432/postgres?x=y` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (_, end) = authority(url);
    let rest = &url[end..];
    let query = rest.find(['?', '#']).map_or("", |i| &rest[i..]);
    format!("{}/{name}{query}", &url[..end])
}

/// Deletes every key under `prefix` (test keys must not pile up in a shared Redis).
/// Blocking, for `Drop`.
pub(crate) fn delete_prefixed(prefix: &str) {
    let Ok(client) = redis::Client::open(redis_url()) else {
        return;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
        return;
    };
    let pattern = format!("{}*", escape_glob(prefix));
    let keys: Vec<String> = match conn.scan_match::<_, String>(&pattern) {
        Ok(keys) => keys.filter_map(Result::ok).collect(),
        Err(_) => return,
    };
    for batch in keys.chunks(500) {
        let _ = redis::cmd("UNLINK").arg(batch).exec(&mut conn);
    }
}

/// `text` with Redis' glob characters escaped, to match it literally.
fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_rewritten_around_their_authority() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let pg = "postgres://u:p@ss@db.local:5432/app?sslmode=disable";
        assert_eq!(
            via(pg, addr),
            "postgres://u:p@ss@127.0.0.1:4000/app?sslmode=disable"
        );
        assert_eq!(
            with_database(pg, "t1"),
            "postgres://u:p@ss@db.local:5432/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
        assert_eq!(
            via("redis://127.0.0.1:6379", addr),
            "redis://127.0.0.1:4000"
        );
        assert_eq!(
            via("redis://:pw@127.0.0.1/2", addr),
            "redis://:pw@127.0.0.1:4000/2"
        );
        assert_eq!(
            store_addr("redis://127.0.0.1"),
            "127.0.0.1:6379".parse().unwrap()
        );
        assert_eq!(escape_glob("a*b[1]"), "a\\*b\\[1\\]");
    }
}
