//! Test helpers: real stores, a fresh database per test, the app started in-process on port 0,
//! a TCP proxy the test controls, and polling instead of sleeping.
#![allow(dead_code)] // each test binary uses its own subset

pub mod chaos;
pub mod load;
pub mod proxy;
pub mod rollout;
pub mod service;

use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use steward::actors::migrations::migrate;
use steward::config::{self, Loaded, Settings, Sources};
use steward::{telemetry, Application};
use steward_reference::migrations::MIGRATIONS;
use tokio_postgres::NoTls;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Redis for the tests: `STEWARD_TEST_REDIS_URL`, default the local server.
pub fn redis_url() -> String {
    std::env::var("STEWARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A PostgreSQL database the tests may create databases from: `STEWARD_TEST_DATABASE_URL`,
/// default the local server's `postgres` database.
pub fn database_url() -> String {
    std::env::var("STEWARD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The repository root (the workspace, above the reference service's crate).
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

pub fn config_dir() -> PathBuf {
    manifest_dir().join("config")
}

/// Fails the test with instructions when a store is not reachable: a missing store must never
/// look like a passing (or silently skipped) test.
pub async fn ensure_stores() {
    let redis = redis_url();
    let reachable = async {
        let client = redis::Client::open(redis.as_str()).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    };
    if tokio::time::timeout(Duration::from_secs(5), reachable)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        panic!(
            "Redis is not reachable at {redis} (STEWARD_TEST_REDIS_URL). \
             Start it with `bash .ci/stores.sh`, or point STEWARD_TEST_REDIS_URL at a server."
        );
    }
    let postgres = database_url();
    let connected = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_postgres::connect(&postgres, NoTls),
    )
    .await;
    if !matches!(connected, Ok(Ok(_))) {
        panic!(
            "PostgreSQL is not reachable at {postgres} (STEWARD_TEST_DATABASE_URL). \
             Start it with `bash .ci/stores.sh`, or point STEWARD_TEST_DATABASE_URL at a server."
        );
    }
}

/// A database of its own for one test, copied from a migrated template, dropped when the
/// test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

/// The template every test database is copied from, named after the migrations it holds so a
/// new migration makes a new template. Built once per test process.
static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

async fn admin_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&database_url(), NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let mut hasher = DefaultHasher::new();
            for migration in MIGRATIONS {
                (migration.version, migration.sql).hash(&mut hasher);
            }
            let name = format!("steward_template_{:016x}", hasher.finish());
            let admin = admin_client().await;
            // Test binaries running at once must not build the same template twice.
            admin
                .execute("SELECT pg_advisory_lock(7357)", &[])
                .await
                .unwrap();
            let exists = admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .unwrap()
                .is_some();
            if !exists {
                let building = format!("{name}_building_{}", uuid::Uuid::new_v4().simple());
                admin
                    .batch_execute(&format!("CREATE DATABASE {building}"))
                    .await
                    .unwrap();
                let url = with_database(&database_url(), &building);
                let (mut client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
                let connection = tokio::spawn(connection);
                migrate(&mut client, MIGRATIONS)
                    .await
                    .expect("migrate the template");
                drop(client);
                let _ = connection.await;
                admin
                    .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
                    .await
                    .unwrap();
            }
            admin
                .execute("SELECT pg_advisory_unlock(7357)", &[])
                .await
                .unwrap();
            name
        })
        .await
}

impl TestDb {
    pub async fn create() -> Self {
        let template = template().await;
        let name = format!("steward_test_{}", uuid::Uuid::new_v4().simple());
        let admin = admin_client().await;
        let create = format!("CREATE DATABASE {name} TEMPLATE {template}");
        let mut attempts = 0;
        // Copies of one template started at the same instant may collide; try again.
        while let Err(error) = admin.batch_execute(&create).await {
            attempts += 1;
            assert!(attempts < 50, "create the test database: {error}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let url = Self::url_of(&name);
        Self { name, url }
    }

    /// The URL of database `name` on the test server.
    pub fn url_of(name: &str) -> String {
        with_database(&database_url(), name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = database_url();
        let name = self.name.clone();
        // Drop runs outside any async context we could borrow; use a small runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok((client, connection)) = tokio_postgres::connect(&admin, NoTls).await {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// `postgres://u@h:5432/postgres?x=y` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// The settings a test app runs with: `config/test.toml`, the test stores, a fresh key
/// prefix, the admin token, then `vars` (later entries win).
pub fn test_settings(db: &TestDb, vars: &[(&str, &str)]) -> Result<Loaded, config::ConfigError> {
    let prefix = format!("steward-test:{}:", uuid::Uuid::new_v4().simple());
    let mut all: Vec<(String, String)> = vec![
        ("STEWARD__REDIS__URL".into(), redis_url()),
        ("STEWARD__POSTGRES__URL".into(), db.url.clone()),
        ("STEWARD__REDIS__KEY_PREFIX".into(), prefix),
        ("STEWARD__ADMIN__TOKEN".into(), ADMIN_TOKEN.into()),
    ];
    all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    steward_reference::service().load_config(&Sources {
        config_dir: config_dir(),
        env_name: Some("test".into()),
        config_file: None,
        vars: all,
    })
}

/// One steward instance started in this test's actix System.
pub struct TestApp {
    pub app: Application,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub db: TestDb,
    pub settings: Settings,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the app with extra `STEWARD__*` settings and waits until it is ready.
pub async fn spawn_app_with(vars: &[(&str, &str)]) -> TestApp {
    let app = spawn_app_unchecked(vars).await;
    eventually(Duration::from_secs(10), "the app is ready", || async {
        app.status("/health/ready").await == 200
    })
    .await;
    app
}

/// Starts the app without waiting for readiness: for tests that break a store on purpose.
pub async fn spawn_app_unchecked(vars: &[(&str, &str)]) -> TestApp {
    ensure_stores().await;
    let db = TestDb::create().await;
    let loaded = test_settings(&db, vars).expect("test configuration is valid");
    let level = std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into());
    let log = telemetry::init(&level, loaded.settings.log.format);
    let app = steward_reference::service()
        .start(&loaded, log)
        .expect("the app starts");
    let addr = app.addr;
    TestApp {
        app,
        addr,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
        db,
        settings: loaded.settings,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// A request with the admin bearer token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN)
    }

    pub async fn status(&self, path: &str) -> u16 {
        self.get(path).await.status().as_u16()
    }

    /// `POST /v1/accounts` with a name and an initial balance.
    pub async fn post_account(&self, name: &str, initial_balance: i64) -> reqwest::Response {
        self.client
            .post(self.url("/v1/accounts"))
            .json(&serde_json::json!({"name": name, "initial_balance": initial_balance}))
            .send()
            .await
            .expect("request")
    }

    /// Creates an account and returns its id.
    pub async fn account(&self, initial_balance: i64) -> i64 {
        let response = self.post_account("holder", initial_balance).await;
        assert_eq!(response.status().as_u16(), 201);
        let body: serde_json::Value = response.json().await.unwrap();
        body["id"].as_i64().unwrap()
    }

    /// A direct connection to this test's database, to check what the API stored.
    pub async fn sql(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.db.url, NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(connection);
        client
    }

    /// A direct connection to Redis, to check what the API stored under this app's prefix.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url().as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis")
    }

    /// The value of a counter or gauge in `/metrics` (0 when the series is absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }

    /// `/admin/actors`' entry for `name`.
    pub async fn child(&self, name: &str) -> serde_json::Value {
        let body: serde_json::Value = self
            .admin(reqwest::Method::GET, "/admin/actors")
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        body["children"]
            .as_array()
            .expect("children")
            .iter()
            .find(|child| child["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no child {name} in {body}"))
    }
}

/// The status and `error.code` of an error response (the code is empty for a success).
pub async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    let code = body["error"]["code"].as_str().unwrap_or_default();
    (status, code.to_owned())
}

/// Sends `request` and reads its JSON body.
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    let response = request.send().await.expect("request");
    response.json().await.expect("a JSON body")
}

/// Polls `condition` every 20 ms until it holds; fails the test after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A local port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}
