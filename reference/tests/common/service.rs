//! The built steward binary as a child process: started against a fresh database, its log
//! lines collected as they arrive, signalled, and awaited for its exit status.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use steward::testing::{redis_url, TestDb};

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

/// A steward process with its log lines collected as they arrive.
pub struct Service {
    child: Child,
    pub addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    /// The thread collecting `lines`; joined on exit, so the log is complete by then.
    reader: Option<std::thread::JoinHandle<()>>,
    /// The database it owns, dropped with it; `None` when it runs on one the caller owns.
    _db: Option<TestDb>,
}

impl Service {
    /// Starts on a fresh database of its own.
    pub async fn start(vars: &[(&str, &str)]) -> Self {
        super::ensure_stores().await;
        let db = super::test_db().await;
        let mut service = Self::start_on(&db.url, vars).await;
        service._db = Some(db);
        service
    }

    /// Starts on the database at `db_url`, which the caller keeps (several processes may share
    /// it, or reach it through a proxy).
    pub async fn start_on(db_url: &str, vars: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary());
        command
            .current_dir(super::manifest_dir())
            .env("STEWARD_ENV", "test")
            .env_remove("RUST_LOG")
            .env("STEWARD__LOG__LEVEL", "info")
            .env("STEWARD__REDIS__URL", redis_url())
            .env("STEWARD__POSTGRES__URL", db_url)
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start steward");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let collected = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        let mut service = Self {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            lines,
            reader: Some(reader),
            _db: None,
        };
        let line = service.wait_for_line("listening addr=").await;
        // Text or JSON, the address follows "listening addr=".
        let rest = line.rsplit("listening addr=").next().unwrap();
        let addr: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        service.addr = addr.parse().expect("listening address");
        service
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first log line containing `needle`; fails with the whole log after 10 s.
    pub async fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.log().into_iter().find(|line| line.contains(needle)) {
                return line;
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line with {needle:?} within 10 s; the log:\n{}",
                    self.log().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self, http: &reqwest::Client) -> String {
        let response = http.get(self.url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// Waits (up to 10 s) until `/health/ready` answers 200.
    pub async fn until_ready(&self, http: &reqwest::Client) {
        let ready = self.url("/health/ready");
        steward::testing::eventually(Duration::from_secs(10), "steward is ready", || async {
            let response = http.get(&ready).send().await;
            response.is_ok_and(|r| r.status().is_success())
        })
        .await;
    }

    /// Whether the process has not exited yet.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal");
    }

    pub async fn exit_status(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The last lines (the final shutdown phases) may still be in the pipe.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "steward did not exit within {within:?}:\n{}",
                    self.log().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The phase names of the `shutdown phase=...` lines, in order, with their outcomes.
    pub fn phases(&self) -> Vec<(String, String)> {
        self.log()
            .iter()
            .filter_map(|line| {
                let rest = line.split("shutdown phase=").nth(1)?;
                let mut words = rest.split_whitespace();
                let phase = words.next()?.to_owned();
                let outcome = words.next()?.strip_prefix("outcome=")?.to_owned();
                Some((phase, outcome))
            })
            .collect()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
