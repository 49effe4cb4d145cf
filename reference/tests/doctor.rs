//! `steward doctor` as operators run it: one line per check, ✓ or ✗ with the fix, exit 1 on
//! any ✗. Against the local stores, a Redis of its own that may evict anything, a PostgreSQL
//! that is not there, and manifests with a good and a short grace period.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::service::binary;
use steward::testing::{closed_port, redis_url, TestDb};

/// A pod template whose timing fits config/test.toml (drain_delay 0 s, timeout 12 s,
/// orchestrator_grace 15 s) with `grace` as its grace period.
fn manifest(dir: &Path, grace: u64) -> std::path::PathBuf {
    let path = dir.join(format!("deployment-{grace}.yaml"));
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: steward\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: steward\nspec:\n  template:\n    spec:\n\
         \x20     terminationGracePeriodSeconds: {grace}\n      containers:\n        - name: steward\n\
         \x20         livenessProbe:\n            httpGet: {{path: /health/live, port: 8080}}\n\
         \x20         readinessProbe:\n            httpGet: {{path: /health/ready, port: 8080}}\n"
    );
    std::fs::write(&path, yaml).expect("write the manifest");
    path
}

fn doctor(vars: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(binary())
        .current_dir(common::manifest_dir())
        .env("STEWARD_ENV", "test")
        .env("STEWARD__REDIS__URL", redis_url())
        .envs(vars.iter().copied())
        .arg("doctor")
        .args(args)
        .output()
        .expect("run steward doctor");
    let printed = String::from_utf8_lossy(&stdout).into_owned();
    (
        status.code(),
        format!("{printed}{}", String::from_utf8_lossy(&stderr)),
    )
}

/// The line that starts with `mark` and contains `text`, or a failure showing all of them.
fn line<'a>(printed: &'a str, mark: &str, text: &str) -> &'a str {
    printed
        .lines()
        .find(|line| line.starts_with(mark) && line.contains(text))
        .unwrap_or_else(|| panic!("no {mark} line with {text:?} in:\n{printed}"))
}

#[tokio::test]
async fn a_healthy_setup_passes_every_check() {
    common::ensure_stores().await;
    let db = common::test_db().await;
    let dir = tempdir();
    let good = manifest(&dir, 15);
    let (code, printed) = doctor(
        &[("STEWARD__POSTGRES__URL", &db.url)],
        &["--manifest", good.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{printed}");
    assert!(!printed.contains('✗'), "{printed}");
    line(&printed, "✓", "configuration loads");
    line(&printed, "✓", "Redis ");
    line(&printed, "✓", "maxmemory-policy");
    line(&printed, "✓", "clock");
    line(&printed, "✓", "PostgreSQL ");
    line(&printed, "✓", "migrations: all");
    line(&printed, "✓", "terminationGracePeriodSeconds 15 s");
}

#[tokio::test]
async fn pending_migrations_and_a_short_grace_period_are_named() {
    common::ensure_stores().await;
    let empty = TestDb::create(&[]).await;
    let dir = tempdir();
    let short = manifest(&dir, 10);
    let (code, printed) = doctor(
        &[("STEWARD__POSTGRES__URL", &empty.url)],
        &["--manifest", short.to_str().unwrap()],
    );
    assert_eq!(code, Some(1), "{printed}");
    line(&printed, "✗", "migrations pending: 1 ");
    let grace = line(&printed, "✗", "terminationGracePeriodSeconds 10 s");
    assert!(grace.contains("at least 17"), "{grace}");
    line(&printed, "✗", "orchestrator_grace");
}

#[tokio::test]
async fn an_unreachable_postgres_fails_with_the_fix() {
    let url = format!("postgres://postgres@127.0.0.1:{}/steward", closed_port());
    let (code, printed) = doctor(&[("STEWARD__POSTGRES__URL", &url)], &[]);
    assert_eq!(code, Some(1), "{printed}");
    let failed = line(&printed, "✗", "PostgreSQL does not answer");
    assert!(failed.contains("refused"), "{failed}");
    assert!(failed.contains("fix: "), "{failed}");
    line(&printed, "✓", "Redis ");
}

/// A Redis server of the test's own on a spare port, stopped when dropped.
struct OwnRedis {
    child: Child,
    url: String,
}

impl OwnRedis {
    fn start(args: &[&str]) -> Self {
        let port = closed_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (bash .ci/stores.sh installs it)");
        let url = format!("redis://127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, url }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_redis_that_may_evict_anything_names_the_keys_at_risk() {
    common::ensure_stores().await;
    let redis = OwnRedis::start(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    let db = common::test_db().await;
    let (code, printed) = doctor(
        &[
            ("STEWARD__REDIS__URL", &redis.url),
            ("STEWARD__POSTGRES__URL", &db.url),
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{printed}");
    let policy = line(&printed, "✗", "maxmemory-policy allkeys-lru");
    for at_risk in ["lock:*", "rl:*", "jobs:*"] {
        assert!(policy.contains(at_risk), "{at_risk} in {policy}");
    }
    assert!(policy.contains("volatile-lru"), "{policy}");
}

/// A folder of its own under the system's temporary folder.
fn tempdir() -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("steward-doctor-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create a temporary folder");
    dir
}
