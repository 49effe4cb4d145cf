//! Logging: env_logger behind a handle that can change the filter at run time, in text or
//! JSON lines, plus a panic hook that sends panics through the same logger.
//!
//! Three rules sit on top of the filter, whatever it says:
//! - the audit trail ([`AUDIT`]) is always written: no filter can silence the record of who
//!   changed what, including the change of the filter itself;
//! - crates that log what they are handed (`QUIET_TARGETS`: `tokio_postgres` logs query
//!   parameters at debug) stay at `info` at most unless the filter names them;
//! - what actix-http reports at ERROR or WARN about a malformed request is the client's
//!   doing, not the service's, and is written at INFO.
//!
//! A line written while a request, an actor message sent with `call` or a job run is being
//! handled carries its `trace_id` and `span_id` (see [`crate::trace`]).

use std::fmt::Write as _;
use std::io::Write;
use std::sync::{OnceLock, RwLock};
use std::time::SystemTime;

use log::kv::{Key, Value, VisitSource};
use log::{Log, Metadata, Record};

use crate::config::LogFormat;

/// The process's logger. `log` accepts one logger per process, installed once; the filter
/// inside it can be replaced (`PUT /admin/log-level`).
static LOGGER: OnceLock<ReloadableLogger> = OnceLock::new();

/// The log target of the audit trail: admin actions, who made them and from where. Always
/// written, whatever the filter.
pub const AUDIT: &str = "steward::audit";

/// Dependency crates kept at `info` at most unless the filter names them: at debug they log
/// query parameters and commands, which carry client data.
const QUIET_TARGETS: [&str; 4] = ["tokio_postgres", "postgres_protocol", "redis", "bb8"];

/// Crates whose errors and warnings about a request are the client's doing.
const CLIENT_FAULT_TARGETS: [&str; 1] = ["actix_http"];

struct ReloadableLogger {
    format: LogFormat,
    inner: RwLock<env_logger::Logger>,
    /// Writes the audit trail, with a filter of its own.
    audit: env_logger::Logger,
}

impl Log for ReloadableLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.target() == AUDIT || self.read().enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if record.target() == AUDIT {
            return self.audit.log(record);
        }
        let client_fault = record.level() <= log::Level::Warn
            && CLIENT_FAULT_TARGETS
                .iter()
                .any(|t| record.target().starts_with(t));
        if client_fault {
            let args = *record.args();
            let relevelled = Record::builder()
                .args(args)
                .level(log::Level::Info)
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .key_values(record.key_values())
                .build();
            return self.read().log(&relevelled);
        }
        self.read().log(record);
    }

    fn flush(&self) {
        self.read().flush();
    }
}

impl ReloadableLogger {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, env_logger::Logger> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Changes the log filter of the running process.
#[derive(Clone, Copy, Debug)]
pub struct LogControl;

impl LogControl {
    /// Replaces the filter (`"debug"`, `"info,steward=trace"`); errors leave it unchanged.
    pub fn set_filter(&self, filter: &str) -> Result<(), String> {
        validate_filter(filter)?;
        let Some(logger) = LOGGER.get() else {
            return Err("logging is not initialised".into());
        };
        let replacement = build(filter, logger.format);
        log::set_max_level(max_level(&replacement));
        *logger.inner.write().unwrap_or_else(|e| e.into_inner()) = replacement;
        Ok(())
    }
}

/// Installs the logger (once per process; later calls keep the first one) and the panic hook.
/// `RUST_LOG`, when set, wins over `filter`.
pub fn init(filter: &str, format: LogFormat) -> LogControl {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| validate_filter(f).is_ok())
        .unwrap_or_else(|| filter.to_owned());
    let mut installed = false;
    let logger = LOGGER.get_or_init(|| {
        installed = true;
        ReloadableLogger {
            format,
            inner: RwLock::new(build(&filter, format)),
            audit: build(&format!("off,{AUDIT}=trace"), format),
        }
    });
    if installed && log::set_logger(logger).is_ok() {
        log::set_max_level(max_level(&logger.read()));
        std::panic::set_hook(Box::new(|info| {
            log::error!(target: "panic", "{info}");
        }));
    }
    LogControl
}

/// Flushes buffered log output; called before the process exits.
pub fn flush() {
    log::logger().flush();
}

/// Checks an env_logger filter (`level` or `target=level`, comma-separated), which env_logger
/// itself would accept silently, ignoring the bad parts.
pub fn validate_filter(filter: &str) -> Result<(), String> {
    const EXPECTED: &str =
        "a level (off, error, warn, info, debug, trace) or a filter like \"info,steward=debug\"";
    if filter.trim().is_empty() {
        return Err(EXPECTED.to_owned());
    }
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        // A bare word must be a level: env_logger would read "loud" as a module name.
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if level.parse::<log::LevelFilter>().is_err() {
            return Err(EXPECTED.to_owned());
        }
    }
    Ok(())
}

/// What `log` lets through to the logger: what the filter wants, and the audit trail.
fn max_level(logger: &env_logger::Logger) -> log::LevelFilter {
    logger.filter().max(log::LevelFilter::Info)
}

/// `filter` with every quiet target it does not name capped at `info` (or at the filter's
/// default level, when that is lower).
fn with_quiet_targets(filter: &str) -> String {
    let directives: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    let default = directives
        .iter()
        .filter(|d| !d.contains('='))
        .filter_map(|d| d.parse::<log::LevelFilter>().ok())
        .next_back()
        .unwrap_or(log::LevelFilter::Off);
    let cap = default.min(log::LevelFilter::Info);
    let named = |target: &str| {
        directives.iter().any(|d| {
            d.split_once('=')
                .is_some_and(|(t, _)| t == target || t.starts_with(&format!("{target}::")))
        })
    };
    let mut out = filter.to_owned();
    for target in QUIET_TARGETS.iter().filter(|t| !named(t)) {
        out.push_str(&format!(",{target}={cap}"));
    }
    out
}

fn build(filter: &str, format: LogFormat) -> env_logger::Logger {
    let mut builder = env_logger::Builder::new();
    builder
        .parse_filters(&with_quiet_targets(filter))
        .target(env_logger::Target::Stderr);
    match format {
        LogFormat::Json => builder.format(|buf, record| {
            let mut line = serde_json::Map::new();
            line.insert("ts".into(), timestamp().into());
            line.insert("level".into(), record.level().as_str().into());
            line.insert("target".into(), record.target().into());
            line.insert("msg".into(), record.args().to_string().into());
            let mut fields = JsonFields(&mut line);
            let _ = record.key_values().visit(&mut fields);
            if let Some((trace_id, span_id)) = current_trace() {
                line.insert("trace_id".into(), trace_id.into());
                line.insert("span_id".into(), span_id.into());
            }
            writeln!(buf, "{}", serde_json::Value::Object(line))
        }),
        LogFormat::Text => builder.format(|buf, record| {
            write!(
                buf,
                "{} {:<5} {} {}",
                timestamp(),
                record.level(),
                record.target(),
                record.args()
            )?;
            let mut fields = TextFields(String::new());
            let _ = record.key_values().visit(&mut fields);
            if let Some((trace_id, span_id)) = current_trace() {
                let _ = write!(fields.0, " trace_id={trace_id} span_id={span_id}");
            }
            writeln!(buf, "{}", fields.0)
        }),
    };
    builder.build()
}

/// The trace and span of the work being done on this thread (a request, an actor message
/// sent with `call`, a job run), which every line written for it carries.
fn current_trace() -> Option<(String, String)> {
    steward_actors::trace::current_ids()
        .map(|ids| (ids.trace_id.to_string(), ids.span_id.to_string()))
}

fn timestamp() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Adds a record's key-values (`request_id`, `status`, ...) to a JSON line.
struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let json = if let Some(n) = value.to_u64() {
            n.into()
        } else if let Some(n) = value.to_i64() {
            n.into()
        } else if let Some(n) = value.to_f64() {
            n.into()
        } else {
            value.to_string().into()
        };
        self.0.insert(key.as_str().to_owned(), json);
        Ok(())
    }
}

/// Appends a record's key-values as ` key=value` to a text line.
struct TextFields(String);

impl<'kvs> VisitSource<'kvs> for TextFields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0.push_str(&format!(" {key}={value}"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{validate_filter, with_quiet_targets};

    #[test]
    fn quiet_targets_stay_at_info_unless_named() {
        let debug = with_quiet_targets("debug");
        assert!(debug.contains(",tokio_postgres=INFO"), "{debug}");
        let low = with_quiet_targets("warn,steward=debug");
        assert!(low.contains(",tokio_postgres=WARN"), "{low}");
        let named = with_quiet_targets("debug,tokio_postgres=trace");
        assert!(!named.contains("tokio_postgres=INFO"), "{named}");
        assert!(named.contains(",redis=INFO"), "{named}");
    }

    #[test]
    fn accepts_levels_and_directives_only() {
        for good in ["info", "warn,steward=debug", "steward::http=trace", "OFF"] {
            assert!(validate_filter(good).is_ok(), "{good}");
        }
        for bad in ["", "loud", "steward=loud", "info,,=x"] {
            assert!(validate_filter(bad).is_err(), "{bad}");
        }
    }
}
