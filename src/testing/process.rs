//! A service's built binary as a child process, for what only a process shows: signals, exit
//! codes, log lines, the descriptor limit. Same stores and cleanup as [`TestApp`](super::TestApp).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use steward_actors::migrations::Migration;

use super::stores::{delete_prefixed, redis_url};
use super::{Metrics, Reply, TestDb};

/// How long [`Process::wait_for_line`] and [`Process::until_ready`] wait.
const WAIT: Duration = Duration::from_secs(10);

/// Options for starting a [`Process`]: made by [`Process::with`].
pub struct Launch {
    binary: PathBuf,
    dir: Option<PathBuf>,
    vars: Vec<(String, String)>,
    migrations: Option<&'static [Migration]>,
}

impl Launch {
    /// Sets an environment variable of the process (`STEWARD__…` keys, `STEWARD_ENV`); wins
    /// over what the kit sets.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.vars.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The working directory (where `config/` is looked for).
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Runs it on a database of its own holding `migrations` (`&[]`: an empty one, which the
    /// service migrates itself), dropped with the process.
    pub fn database(mut self, migrations: &'static [Migration]) -> Self {
        self.migrations = Some(migrations);
        self
    }

    /// Starts the process and waits (10 s at most) for its `listening addr=` line.
    pub async fn start(self) -> Process {
        let db = match self.migrations {
            Some(migrations) => Some(TestDb::create(migrations).await),
            None => None,
        };
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("process-test:{unique}:");
        let token = format!("test-admin-{unique}");
        let mut command = Command::new(&self.binary);
        command
            .env_remove("RUST_LOG")
            .env("STEWARD__SERVER__PORT", "0")
            .env("STEWARD__LOG__LEVEL", "info")
            .env("STEWARD__REDIS__URL", redis_url())
            .env("STEWARD__REDIS__KEY_PREFIX", &prefix)
            .env("STEWARD__ADMIN__TOKEN", &token)
            // The test profile's: the binary's own production settings need one to start.
            .env("STEWARD__AUTH__API_KEYS__HASH_KEY", super::TEST_HASH_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(db) = &db {
            command.env("STEWARD__POSTGRES__URL", &db.url);
        }
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        command.envs(self.vars.iter().map(|(k, v)| (k, v)));
        let owns_prefix = !self
            .vars
            .iter()
            .any(|(k, _)| k == "STEWARD__REDIS__KEY_PREFIX");
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("a piped stderr");
        let collected = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                collected
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line);
            }
        });
        let mut process = Process {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
            lines,
            reader: Some(reader),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
            token,
            owned_prefix: owns_prefix.then_some(prefix),
            _db: db,
        };
        let line = process.wait_for_line("listening addr=").await;
        // Text or JSON, the address follows "listening addr=".
        let rest = line.rsplit("listening addr=").next().unwrap_or_default();
        let addr: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        process.addr = addr.parse().expect("a listening address");
        process
    }
}

/// A service's binary running as a child process, its log lines collected as they arrive;
/// killed when dropped, its database dropped and its keys deleted.
pub struct Process {
    child: Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    /// The thread collecting `lines`; joined on exit, so the log is complete by then.
    reader: Option<std::thread::JoinHandle<()>>,
    http: reqwest::Client,
    token: String,
    owned_prefix: Option<String>,
    _db: Option<TestDb>,
}

impl Process {
    /// Options for running `binary` (for a binary of the crate under test:
    /// `env!("CARGO_BIN_EXE_<name>")`). It gets port 0, the test Redis under a key prefix of
    /// its own, an admin token of its own and `info` logs; add a database with
    /// [`Launch::database`].
    pub fn with(binary: impl Into<PathBuf>) -> Launch {
        Launch {
            binary: binary.into(),
            dir: None,
            vars: Vec::new(),
            migrations: None,
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

    /// The admin token it was started with (unless the test set its own).
    pub fn admin_token(&self) -> &str {
        &self.token
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        Reply::of(self.http.get(self.url(path))).await
    }

    /// One reading of its `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        Metrics::parse(&self.get("/metrics").await.text)
    }

    /// Waits until `/health/ready` answers 200; fails with its last answer after 10 s.
    pub async fn until_ready(&self) {
        super::until_ready(&self.http, &self.url("/health/ready")).await;
    }

    /// Every log line so far (stderr).
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The first log line containing `needle`; fails with the whole log after 10 s.
    pub async fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.log().into_iter().find(|line| line.contains(needle)) {
                return line;
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line with {needle:?} within {WAIT:?}; the log:\n{}",
                    self.log().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it has not exited yet.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (`libc::SIGTERM`, `libc::SIGINT`, `libc::SIGKILL`, …).
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) with a pid this process started and still owns (not yet reaped).
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            sent,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// SIGTERM, as an orchestrator stops it.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits for it to exit, with the rest of its log collected; kills it and fails the test
    /// after `within`.
    pub async fn exit_status(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the process") {
                // The last lines (the final shutdown phases) may still be in the pipe.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the process did not exit within {within:?}:\n{}",
                    self.log().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `(phase, outcome)` of each `shutdown phase=… outcome=…` line, in order (a task's
    /// line counts under its phase).
    pub fn phases(&self) -> Vec<(String, String)> {
        self.log()
            .iter()
            .filter_map(|line| {
                let rest = line.split("shutdown phase=").nth(1)?;
                let mut words = rest.split_whitespace();
                let phase = words.next()?.to_owned();
                let outcome = words
                    .find_map(|word| word.strip_prefix("outcome="))?
                    .to_owned();
                Some((phase, outcome))
            })
            .collect()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(prefix) = &self.owned_prefix {
            delete_prefixed(prefix);
        }
    }
}
