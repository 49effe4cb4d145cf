//! The built steward binary as a child process (`steward::testing::Process`), with the
//! reference service's test configuration (`STEWARD_ENV=test`, the repository's `config/`).

use std::path::PathBuf;

use steward::testing::{Launch, Process};
use steward_reference::migrations::MIGRATIONS;

/// The binary to run: the one cargo built for these tests, or (for bench/ programs, which cargo
/// gives no such path) `STEWARD_BIN`, default the release build.
pub fn binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_steward") {
        Some(path) => PathBuf::from(path),
        None => std::env::var_os("STEWARD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| super::manifest_dir().join("target/release/steward")),
    }
}

/// steward on a fresh database of its own, with `vars`.
pub async fn start(vars: &[(&str, &str)]) -> Process {
    super::ensure_stores().await;
    launch(vars).database(MIGRATIONS).start().await
}

/// steward on the database at `db_url`, which the caller keeps (several processes may share
/// it, or reach it through a proxy).
pub async fn start_on(db_url: &str, vars: &[(&str, &str)]) -> Process {
    launch(vars)
        .env("STEWARD__POSTGRES__URL", db_url)
        .start()
        .await
}

fn launch(vars: &[(&str, &str)]) -> Launch {
    let launch = Process::with(binary())
        .current_dir(super::manifest_dir())
        .env("STEWARD_ENV", "test");
    vars.iter()
        .fold(launch, |launch, (name, value)| launch.env(name, value))
}
