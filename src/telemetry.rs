//! Logging: env_logger behind a handle that can change the filter at run time, in text or
//! JSON lines, plus a panic hook that sends panics through the same logger.

use std::io::Write;
use std::sync::{OnceLock, RwLock};
use std::time::SystemTime;

use log::kv::{Key, Value, VisitSource};
use log::{Log, Metadata, Record};

use crate::config::LogFormat;

/// The process's logger. `log` accepts one logger per process, installed once; the filter
/// inside it can be replaced (`PUT /admin/log-level`).
static LOGGER: OnceLock<ReloadableLogger> = OnceLock::new();

struct ReloadableLogger {
    format: LogFormat,
    inner: RwLock<env_logger::Logger>,
}

impl Log for ReloadableLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.read().enabled(metadata)
    }

    fn log(&self, record: &Record) {
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
        log::set_max_level(replacement.filter());
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
        }
    });
    if installed && log::set_logger(logger).is_ok() {
        log::set_max_level(logger.read().filter());
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

fn build(filter: &str, format: LogFormat) -> env_logger::Logger {
    let mut builder = env_logger::Builder::new();
    builder
        .parse_filters(filter)
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
            writeln!(buf, "{}", fields.0)
        }),
    };
    builder.build()
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
    use super::validate_filter;

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
