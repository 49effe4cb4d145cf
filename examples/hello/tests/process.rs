//! hello as a process, against a real Redis: what only the real binary shows (the command
//! line, configuration errors and their exit code, SIGTERM and the exit status). Everything
//! else is tested in-process, in `app.rs`.
//!
//! Redis: `STEWARD_TEST_REDIS_URL`, default the local server (`bash .ci/stores.sh` starts one).

use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const TOKEN: &str = "hello-test-admin-token";

/// The hello binary, started on port 0 with a key prefix of its own.
struct Hello {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    log: Vec<String>,
    base: String,
    http: reqwest::Client,
}

fn command(vars: &[(&str, &str)]) -> Command {
    let redis =
        std::env::var("STEWARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("hello-test:{}:", uuid::Uuid::new_v4().simple());
    let mut command = Command::new(env!("CARGO_BIN_EXE_hello"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("STEWARD_ENV")
        .env("STEWARD__SERVER__PORT", "0")
        .env("STEWARD__REDIS__URL", redis)
        .env("STEWARD__REDIS__KEY_PREFIX", prefix)
        .env("STEWARD__ADMIN__TOKEN", TOKEN)
        .env("STEWARD__SHUTDOWN__DRAIN_DELAY", "0s")
        .env("STEWARD__SUPERVISOR__BACKOFF__MIN", "10ms")
        .env("STEWARD__SUPERVISOR__BACKOFF__MAX", "50ms");
    for (name, value) in vars {
        command.env(name, value);
    }
    command
}

impl Hello {
    async fn start() -> Self {
        let mut child =
            command(&[]).stderr(Stdio::piped()).kill_on_drop(true).spawn().expect("start hello");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = tx.send(line);
            }
        });
        let mut hello = Self {
            child,
            lines,
            log: Vec::new(),
            base: String::new(),
            http: reqwest::Client::new(),
        };
        let line = hello.wait_for("listening addr=").await;
        let addr = line.rsplit("addr=").next().expect("an address").trim();
        hello.base = format!("http://{addr}");
        hello.until_ready().await;
        hello
    }

    /// The first log line containing `text`, waiting at most 20 s for it.
    async fn wait_for(&mut self, text: &str) -> String {
        if let Some(line) = self.log.iter().find(|line| line.contains(text)) {
            return line.clone();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.log.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                _ => panic!("no log line with {text:?}; the log:\n{}", self.log.join("\n")),
            }
        }
    }

    async fn until_ready(&self) {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(response) = self.http.get(self.url("/health/ready")).send().await {
                if response.status() == 200 {
                    return;
                }
                last = response.text().await.unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("hello never became ready; last answer: {last}");
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

#[tokio::test]
async fn sigterm_runs_the_ordered_shutdown_and_exits_0() {
    let mut hello = Hello::start().await;
    let request = hello.http.post(hello.url("/hello/ann"));
    assert_eq!(request.send().await.expect("request").status(), 200);

    // SIGTERM: the ordered shutdown runs the service's task in its phase, and exits 0.
    let pid = Pid::from_raw(hello.child.id().expect("pid") as i32);
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let task = hello.wait_for("task=farewell").await;
    assert!(task.contains("shutdown phase=after_http task=farewell outcome=ok"), "{task}");
    hello.wait_for("hello says goodbye").await;
    let status = tokio::time::timeout(Duration::from_secs(20), hello.child.wait())
        .await
        .expect("hello exits")
        .expect("wait");
    // The rest of the log, up to the end of stderr.
    while let Ok(Some(line)) =
        tokio::time::timeout(Duration::from_secs(5), hello.lines.recv()).await
    {
        hello.log.push(line);
    }
    assert_eq!(status.code(), Some(0), "log:\n{}", hello.log.join("\n"));
    let http = hello.log.iter().position(|line| line.contains("phase=http "));
    let task = hello.log.iter().position(|line| line.contains("task=farewell"));
    let workers = hello.log.iter().position(|line| line.contains("phase=workers "));
    assert!(http < task && task < workers, "phases out of order:\n{}", hello.log.join("\n"));
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
