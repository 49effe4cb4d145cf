//! hello as a process, against a real Redis: what only the real binary shows (the command
//! line, configuration errors and their exit code, SIGTERM and the exit status), on
//! `steward::testing::Process`. Everything else is tested in-process, in `app.rs`.
//!
//! Redis: `STEWARD_TEST_REDIS_URL`, default the local server (`bash .ci/stores.sh` starts one).

use std::time::Duration;

use steward::testing::{redis_url, Process};
use tokio::process::Command;

const TOKEN: &str = "hello-test-admin-token";

/// hello's command line, for the subcommands that print and exit.
fn command(vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hello"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("STEWARD_ENV")
        .env("STEWARD__REDIS__URL", redis_url())
        .env("STEWARD__ADMIN__TOKEN", TOKEN);
    for (name, value) in vars {
        command.env(name, value);
    }
    command
}

#[tokio::test]
async fn sigterm_runs_the_ordered_shutdown_and_exits_0() {
    let mut hello = Process::with(env!("CARGO_BIN_EXE_hello"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("STEWARD__SHUTDOWN__DRAIN_DELAY", "0s")
        .start()
        .await;
    hello.until_ready().await;
    let greeted = reqwest::Client::new().post(hello.url("/hello/ann")).send().await;
    assert_eq!(greeted.expect("a response").status(), 200);

    // SIGTERM: the ordered shutdown runs hello's task in its phase, and exits 0.
    hello.terminate();
    let status = hello.exit_status(Duration::from_secs(20)).await;
    let log = hello.log().join("\n");
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    assert!(log.contains("shutdown phase=after_http task=farewell outcome=ok"), "{log}");
    assert!(log.contains("hello says goodbye"), "{log}");
    let phases: Vec<String> = hello.phases().into_iter().map(|(phase, _)| phase).collect();
    let at = |name: &str| phases.iter().position(|phase| phase == name);
    assert!(at("http") < at("after_http") && at("after_http") < at("workers"), "{phases:?}");
}

#[tokio::test]
async fn a_wrong_hello_value_exits_2_naming_the_key() {
    let output = command(&[("STEWARD__HELLO__EXCLAIM", "loud")])
        .arg("check-config")
        .output()
        .await
        .expect("run hello check-config");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "hello.exclaim = \"loud\" (from environment variable STEWARD__HELLO__EXCLAIM)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("an integer from 0 to 255"), "{stderr}");

    // serve refuses it the same way, before listening.
    let output = command(&[("STEWARD__HELLO__EXCLAIM", "300")]).output().await.expect("run hello");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("hello.exclaim = 300"));
}

#[tokio::test]
async fn check_config_shows_only_what_hello_has() {
    let output = command(&[]).arg("check-config").output().await.expect("run hello check-config");
    assert_eq!(output.status.code(), Some(0));
    let printed: toml::Table = String::from_utf8_lossy(&output.stdout).parse().expect("TOML");
    assert_eq!(printed["hello"]["exclaim"].as_integer(), Some(1));
    assert!(printed.contains_key("redis"));
    assert!(!printed.contains_key("postgres"), "hello uses no database: {printed:?}");
    assert!(!printed["admin"]["token"].as_str().unwrap().contains(TOKEN), "the token is redacted");
}
