//! A test kit for services built on steward: the `testing` feature, for dev-dependencies
//! (`steward = { …, features = ["testing"] }` under `[dev-dependencies]`).
//!
//! [`TestApp::spawn`] starts a service in-process, on port 0, in the test's actix `System`,
//! against real Redis and PostgreSQL (`STEWARD_TEST_REDIS_URL`, `STEWARD_TEST_DATABASE_URL`;
//! default the local servers), with
//!
//! - a database of its own, copied from a template that holds the service's migrations;
//! - a Redis key prefix of its own;
//! - a [`TcpProxy`] in front of each store, for faults: [`TestApp::redis`]`().cut()`,
//!   `delay(…)`, `reset()`, `restore()`;
//! - an admin token of its own, used by [`TestApp::admin`];
//! - the test profile ([`TEST_PROFILE`]: one HTTP worker, small pools, fast health checks
//!   and backoffs, no drain delay) under the service's own `config/test.toml`, when it has one.
//!
//! and cleans all of it up when dropped, which also happens when the test fails or panics:
//! the database is dropped and the keys under the prefix deleted.
//!
//! What only a process shows (signals, exit codes, log lines) is tested on the built binary
//! with [`Process`], which gets the same stores, prefix, token and cleanup.
//!
//! A test of a service that cannot serve without Redis (this example runs, against the test
//! stores, with the crate's tests):
//!
//! ```
//! use std::time::Duration;
//! use steward::prelude::*;
//! use steward::testing::{eventually, TestApp};
//!
//! fn service() -> Service {
//!     Service::new("hello")
//!         .backends(Backends::REDIS)
//!         .get("/hi", || async { HttpResponse::Ok().json(json!({"hi": true})) })
//! }
//!
//! // In a test file: #[actix_rt::test] async fn hello_needs_redis() { … }
//! # actix_rt::System::new().block_on(async {
//! let app = TestApp::with(service())
//! #   .config_dir("the-example-has-no-config-folder")
//!     .env("STEWARD__HEALTH__REQUIRE_REDIS", "true")
//!     .spawn()
//!     .await; // ready when it returns
//! assert_eq!(app.get("/hi").await.body, json!({"hi": true}));
//!
//! app.redis().cut();
//! eventually(Duration::from_secs(5), "not ready without Redis", || async {
//!     let reply = app.get("/health/ready").await;
//!     if reply.status == 503 { Ok(()) } else { Err(reply.body) }
//! })
//! .await;
//! app.redis().restore();
//! app.until_ready().await;
//!
//! let report = app.shutdown().await;
//! assert_eq!(report.exit_code, 0);
//! assert!(report.step("http", None).is_some());
//! # });
//! ```

mod database;
mod process;
mod proxy;
mod reply;
mod stores;
mod wait;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use actix::Addr;
use serde_json::Value;
use steward_actors::supervisor::{Kill, ListChildren, Shutdown};
use steward_actors::{ChildInfo, ShutdownReason, ShutdownReport, Supervisor};
use tokio_postgres::NoTls;

pub use database::TestDb;
pub use process::{Launch, Process};
pub use proxy::TcpProxy;
pub use reply::{Metrics, Reply};
pub use stores::{
    closed_port, database_url, ensure_stores, redis_url, store_addr, via, with_database,
};
pub use wait::{eventually, Settled};

use crate::app::StartError;
use crate::config::{Settings, Sources};
use crate::{telemetry, Application, Context, Service};

/// The settings every test app starts from, under the service's `config/test.toml`: one HTTP
/// worker on port 0, small pools that give up fast, health checks every 200 ms, short
/// backoffs, and a shutdown without a drain delay.
pub const TEST_PROFILE: &str = r#"
[server]
port = 0
workers = 1
client_request_timeout = "2s"
body_timeout = "2s"

[redis.pool]
max_size = 4
min_idle = 0
connection_timeout = "1s"

[postgres.pool]
max_size = 4
min_idle = 0
connection_timeout = "1s"

[workers]
concurrency = 8
claim_idle = "1s"
poll_interval = "10ms"

[workers.retry_backoff]
min = "20ms"
max = "100ms"

[health]
interval = "200ms"
timeout = "500ms"

[health.reconnect]
min = "50ms"
max = "200ms"

[supervisor]
reset_after = "2s"

[supervisor.backoff]
min = "20ms"
max = "200ms"

[shutdown]
drain_delay = "0s"
http_timeout = "5s"
workers_timeout = "2s"
stores_timeout = "2s"
timeout = "12s"

[auth]
# Open, as in development: a test that is about authentication turns it on.
required = false

[auth.api_keys]
hash_key = "test-only-hash-key-not-a-secret-000000"
"#;

/// The API-key hash key of test instances (in [`TEST_PROFILE`], and given to a [`Process`]).
pub const TEST_HASH_KEY: &str = "test-only-hash-key-not-a-secret-000000";

/// How long [`TestApp::spawn`] and [`TestApp::until_ready`] wait for `/health/ready`.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Waits until `url` (a `/health/ready`) answers 200; fails with its last answer (or the
/// connection error) after 10 s. Shared by [`TestApp`] and [`Process`].
async fn until_ready(http: &reqwest::Client, url: &str) {
    eventually(READY_WITHIN, &format!("{url} to answer 200"), || async {
        match http.get(url).send().await {
            Ok(response) if response.status() == 200 => Ok(()),
            Ok(response) => Err(Reply::read(response).await.text),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
}

/// Options for starting a [`TestApp`]: made by [`TestApp::with`].
pub struct Spawn {
    service: Service,
    vars: Vec<(String, String)>,
    config_dir: PathBuf,
    wait_until_ready: bool,
}

impl Spawn {
    /// Sets a key as its `STEWARD__<SECTION>__<KEY>` variable would (without touching the
    /// process environment, so tests stay parallel-safe). Wins over everything else.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.vars.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The folder holding `test.toml` (default `config` of the crate under test, which is
    /// where cargo runs its tests).
    pub fn config_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config_dir = dir.into();
        self
    }

    /// Returns as soon as the app listens, without waiting for `/health/ready`: for a test
    /// that starts it with a store down on purpose.
    pub fn unready(mut self) -> Self {
        self.wait_until_ready = false;
        self
    }

    /// Starts the app; panics when it cannot start.
    pub async fn spawn(self) -> TestApp {
        self.try_spawn()
            .await
            .unwrap_or_else(|error| panic!("the app starts: {error}"))
    }

    /// Starts the app, or says why it could not (its configuration, its declarations).
    /// Panics when a store it uses is not reachable: that is the test machine's fault.
    pub async fn try_spawn(self) -> Result<TestApp, StartError> {
        let backends = self.service.backends;
        ensure_stores(backends).await;
        let db = match backends.postgres {
            true => Some(TestDb::create(self.service.migrations).await),
            false => None,
        };
        let redis_proxy = backends
            .redis
            .then(|| TcpProxy::start(stores::store_addr(&redis_url())));
        let postgres_proxy = db
            .as_ref()
            .map(|_| TcpProxy::start(stores::store_addr(&database_url())));
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("{}-test:{unique}:", self.service.name);
        let mut vars = vec![
            ("STEWARD__REDIS__KEY_PREFIX".to_owned(), prefix.clone()),
            (
                "STEWARD__ADMIN__TOKEN".to_owned(),
                format!("test-admin-{unique}"),
            ),
        ];
        if let Some(proxy) = &redis_proxy {
            vars.push((
                "STEWARD__REDIS__URL".into(),
                stores::via(&redis_url(), proxy.addr),
            ));
        }
        if let (Some(proxy), Some(db)) = (&postgres_proxy, &db) {
            vars.push((
                "STEWARD__POSTGRES__URL".into(),
                stores::via(&db.url, proxy.addr),
            ));
        }
        vars.extend(self.vars);
        let has_test_overlay = self.config_dir.join("test.toml").exists();
        let sources = Sources {
            config_dir: self.config_dir,
            env_name: has_test_overlay.then(|| "test".to_owned()),
            config_file: None,
            vars,
            profile: Some(("steward::testing", TEST_PROFILE)),
        };
        let loaded = self.service.load_config(&sources)?;
        let level = std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into());
        let log = telemetry::init(&level, loaded.settings.log.format);
        let app = self.service.start(&loaded, log)?;
        let settings = loaded.settings;
        let test_app = TestApp {
            addr: app.addr,
            context: app.context.clone(),
            supervisor: app.supervisor.clone(),
            app: RefCell::new(Some(app)),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
            owned_prefix: (settings.redis.key_prefix == prefix).then_some(prefix),
            settings,
            redis_proxy,
            postgres_proxy,
            db,
        };
        if self.wait_until_ready {
            test_app.until_ready().await;
        }
        Ok(test_app)
    }
}

/// A service started in-process for one test, with stores of its own behind proxies the test
/// controls; see the [module documentation](self).
pub struct TestApp {
    addr: SocketAddr,
    context: Context,
    supervisor: Addr<Supervisor>,
    /// Taken by [`TestApp::shutdown`].
    app: RefCell<Option<Application>>,
    http: reqwest::Client,
    settings: Settings,
    redis_proxy: Option<TcpProxy>,
    postgres_proxy: Option<TcpProxy>,
    db: Option<TestDb>,
    /// The key prefix to clean up: the one it made, unless the test chose another.
    owned_prefix: Option<String>,
}

impl TestApp {
    /// Starts `service` with the defaults and waits until it is ready.
    pub async fn spawn(service: Service) -> Self {
        Self::with(service).spawn().await
    }

    /// Starts `service` with options: `TestApp::with(service).env(…, …).spawn().await`.
    pub fn with(service: Service) -> Spawn {
        Spawn {
            service,
            vars: Vec::new(),
            config_dir: PathBuf::from("config"),
            wait_until_ready: true,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The HTTP client the helpers use (10 s timeout), for requests they do not cover.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What its handlers get: to call its actors or enqueue jobs from the test.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// A request to `path`, to add headers or a body to, then [`Reply::of`] or `.send()`.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// A request to `path` with the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.request(method, path)
            .bearer_auth(&self.settings.admin.token)
    }

    /// Issues an API key named `name` with `scopes` through `POST /admin/api-keys` and returns
    /// it, to send as `X-Api-Key` to a service whose routes need credentials (spawn it with
    /// `.env("STEWARD__AUTH__REQUIRED", "true")`). Its principal is `key:<name>`.
    pub async fn api_key(&self, name: &str, scopes: &[&str]) -> String {
        let reply = Reply::of(
            self.admin(reqwest::Method::POST, "/admin/api-keys")
                .json(&serde_json::json!({"name": name, "scopes": scopes})),
        )
        .await;
        assert_eq!(reply.status, 201, "issuing an API key: {}", reply.text);
        reply.body["key"]
            .as_str()
            .expect("the issued key")
            .to_owned()
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        Reply::of(self.request(reqwest::Method::GET, path)).await
    }

    /// `POST path` with `body` as JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        Reply::of(self.request(reqwest::Method::POST, path).json(body)).await
    }

    /// One reading of `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        Metrics::parse(&self.get("/metrics").await.text)
    }

    /// The value of one series of `/metrics` (`name{label="value",…}` exactly as exposed);
    /// fails the test when the series does not exist.
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics().await.value(series)
    }

    /// Waits until `/health/ready` answers 200; fails with its last answer after 10 s.
    pub async fn until_ready(&self) {
        until_ready(&self.http, &self.url("/health/ready")).await;
    }

    /// The proxy in front of Redis; panics when the service does not use Redis.
    pub fn redis(&self) -> &TcpProxy {
        self.redis_proxy
            .as_ref()
            .expect("the service uses Redis (Backends::REDIS)")
    }

    /// The proxy in front of PostgreSQL; panics when the service does not use it.
    pub fn postgres(&self) -> &TcpProxy {
        self.postgres_proxy
            .as_ref()
            .expect("the service uses PostgreSQL (Backends::POSTGRES)")
    }

    /// Its database, for checks: its name and its direct URL.
    pub fn database(&self) -> &TestDb {
        self.db
            .as_ref()
            .expect("the service uses PostgreSQL (Backends::POSTGRES)")
    }

    /// A connection of the test's own to its database, past the proxy: to check what the
    /// service stored, whatever the proxy is doing.
    pub async fn sql(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.database().url, NoTls)
            .await
            .expect("connect to the test database");
        actix_rt::spawn(connection);
        client
    }

    /// A connection of the test's own to Redis, past the proxy. Its keys are under
    /// [`TestApp::key`].
    pub async fn redis_connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url())
            .expect("a Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis")
    }

    /// `name` under the app's key prefix: where the service keeps it in Redis.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.settings.redis.key_prefix)
    }

    /// The supervisor's view of the child `name`; panics when there is none.
    pub async fn child(&self, name: &str) -> ChildInfo {
        let children = self
            .supervisor
            .send(ListChildren)
            .await
            .expect("the supervisor answers");
        let names: Vec<String> = children.iter().map(|child| child.name.clone()).collect();
        children
            .into_iter()
            .find(|child| child.name == name)
            .unwrap_or_else(|| panic!("no child {name}; the children: {names:?}"))
    }

    /// Makes the running child `name` panic inside its own task, as a bug would: the
    /// supervisor restarts it by its spec (backoff, restart counter, intensity). Fails the test
    /// when it cannot (no such child, not running, not an actor).
    pub async fn kill_child(&self, name: &str) {
        self.supervisor
            .send(Kill(name.to_owned()))
            .await
            .expect("the supervisor answers")
            .unwrap_or_else(|why| panic!("kill_child: {why}"));
    }

    /// Waits until the child `name` has been restarted `restarts` times and runs again.
    pub async fn until_restarted(&self, name: &str, restarts: u64) -> ChildInfo {
        eventually(
            Duration::from_secs(10),
            &format!("{name} restarted"),
            || async {
                let child = self.child(name).await;
                let running = child.state == steward_actors::supervisor::ChildState::Running;
                if child.restarts >= restarts && running {
                    Ok(child)
                } else {
                    Err(child)
                }
            },
        )
        .await
    }

    /// Runs the ordered shutdown, as SIGTERM would, and returns its report: each step with
    /// its outcome and duration, and the exit code the process would end with.
    pub async fn shutdown(&self) -> ShutdownReport {
        self.supervisor
            .do_send(Shutdown(ShutdownReason::Signal("test")));
        self.finished().await
    }

    /// Waits for a shutdown the app started itself (an escalation) or that the test asked
    /// for, and returns its report; fails when none finishes within `shutdown.timeout` and
    /// 5 s more.
    pub async fn finished(&self) -> ShutdownReport {
        let app = self
            .app
            .borrow_mut()
            .take()
            .expect("the app is shut down once");
        let within = self.settings.shutdown.timeout + Duration::from_secs(5);
        tokio::time::timeout(within, app.finished())
            .await
            .unwrap_or_else(|_| panic!("no shutdown finished within {within:?}"))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Whatever the app still does cannot write any more: cut it off, then clean up.
        for proxy in [&self.redis_proxy, &self.postgres_proxy]
            .into_iter()
            .flatten()
        {
            proxy.cut();
        }
        if let Some(prefix) = &self.owned_prefix {
            stores::delete_prefixed(prefix);
        }
    }
}
