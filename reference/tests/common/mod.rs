//! What the reference service's tests add to `steward::testing`: the service with its
//! `config/test.toml`, and helpers that speak its API (accounts). Everything generic (fresh
//! databases, store proxies, replies, metrics, `eventually`) is the kit's.
#![allow(dead_code)] // each test binary uses its own subset

pub mod chaos;
pub mod load;
pub mod otlp;
pub mod rollout;
pub mod service;

use std::path::PathBuf;

use steward::testing::{Reply, TestApp, TestDb};
use steward::Backends;
use steward_reference::migrations::MIGRATIONS;

/// The admin token of the processes the tests start (in-process apps have one of their own).
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The repository root (the workspace, above the reference service's crate).
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The reference service's configuration folder (its `test.toml` lies over the kit's profile).
pub fn config_dir() -> PathBuf {
    manifest_dir().join("config")
}

/// Fails with instructions when Redis or PostgreSQL does not answer.
pub async fn ensure_stores() {
    steward::testing::ensure_stores(Backends::ALL).await;
}

/// A fresh database holding the reference service's migrations.
pub async fn test_db() -> TestDb {
    TestDb::create(MIGRATIONS).await
}

/// The reference service, ready.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// The reference service with extra `STEWARD__*` settings, ready.
pub async fn spawn_app_with(vars: &[(&str, &str)]) -> TestApp {
    spawn(vars).spawn().await
}

/// The reference service, without waiting for readiness: for tests that break a store on
/// purpose.
pub async fn spawn_app_unchecked(vars: &[(&str, &str)]) -> TestApp {
    spawn(vars).unready().spawn().await
}

fn spawn(vars: &[(&str, &str)]) -> steward::testing::Spawn {
    let service = steward_reference::service();
    let spawn = TestApp::with(service).config_dir(config_dir());
    vars.iter()
        .fold(spawn, |spawn, (name, value)| spawn.env(name, value))
}

/// The reference service's own API, for tests.
#[allow(async_fn_in_trait)] // only these tests call it, on one thread: no Send bound needed
pub trait Accounts {
    /// `POST /v1/accounts` with a name and an initial balance.
    async fn post_account(&self, name: &str, initial_balance: i64) -> Reply;
    /// Creates an account and returns its id.
    async fn account(&self, initial_balance: i64) -> i64;
}

impl Accounts for TestApp {
    async fn post_account(&self, name: &str, initial_balance: i64) -> Reply {
        let body = serde_json::json!({"name": name, "initial_balance": initial_balance});
        self.post("/v1/accounts", &body).await
    }

    async fn account(&self, initial_balance: i64) -> i64 {
        let reply = self.post_account("holder", initial_balance).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply.body["id"].as_i64().expect("an account id")
    }
}

/// Requests made as the principal of an API key (`key:<name>`), issued through the admin API.
pub struct Caller<'a> {
    pub app: &'a TestApp,
    pub key: String,
}

impl<'a> Caller<'a> {
    /// Issues a key named `name` with `scopes` on `app`.
    pub async fn issue(app: &'a TestApp, name: &str, scopes: &[&str]) -> Self {
        let key = app.api_key(name, scopes).await;
        Self { app, key }
    }

    /// A request carrying the key.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.app
            .request(method, path)
            .header("x-api-key", &self.key)
    }

    pub async fn get(&self, path: &str) -> Reply {
        Reply::of(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Reply {
        Reply::of(self.request(reqwest::Method::POST, path).json(body)).await
    }

    /// Opens an account and returns its id.
    pub async fn account(&self, initial_balance: i64) -> i64 {
        let body = serde_json::json!({"name": "holder", "initial_balance": initial_balance});
        let reply = self.post("/v1/accounts", &body).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply.body["id"].as_i64().expect("an account id")
    }

    /// `POST /v1/transfers` with `Idempotency-Key: idempotency_key`.
    pub async fn transfer(&self, idempotency_key: &str, body: &serde_json::Value) -> Reply {
        let request = self
            .request(reqwest::Method::POST, "/v1/transfers")
            .header("idempotency-key", idempotency_key)
            .json(body);
        Reply::of(request).await
    }
}
