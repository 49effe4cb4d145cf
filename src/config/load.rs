//! Merging the configuration layers while remembering where every value came from.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::{Table, Value};

use super::{validate, ConfigError, Declared, Settings};
use crate::service::Backends;

/// steward's own defaults: every key of [`Settings`], with a comment. Compiled in, so a
/// service runs with nothing but its own config.
pub const STEWARD_DEFAULTS: &str = include_str!("default.toml");

/// What a service's configuration holds, besides steward's sections: its own defaults (the
/// list of its known keys), its sections' types, and the stores it uses (the sections of a
/// store it does not use are left out of `check-config`).
#[derive(Clone)]
pub struct Schema {
    /// The service's name, to say where its defaults came from.
    pub(crate) service: &'static str,
    /// The service's defaults (TOML), layered over steward's.
    pub(crate) defaults: Option<&'static str>,
    pub(crate) sections: Vec<Declared>,
    pub(crate) backends: Backends,
}

impl Schema {
    /// The sections that only matter with Redis, and with PostgreSQL.
    const REDIS_SECTIONS: [&'static str; 4] = ["redis", "cache", "locks", "workers"];
    const POSTGRES_SECTIONS: [&'static str; 1] = ["postgres"];

    /// Whether `section` is one of steward's that this service has no use for.
    fn unused(&self, section: &str) -> bool {
        (!self.backends.redis && Self::REDIS_SECTIONS.contains(&section))
            || (!self.backends.postgres && Self::POSTGRES_SECTIONS.contains(&section))
    }
}

/// The prefix of environment variables that override keys: `STEWARD__SERVER__PORT` sets
/// `server.port`.
const ENV_PREFIX: &str = "STEWARD__";

/// Keys whose values are secrets: never printed, and loadable from a `*_file` key.
const SECRETS: [(&str, &str); 4] = [
    ("postgres.password", "postgres.password_file"),
    ("admin.token", "admin.token_file"),
    ("auth.api_keys.hash_key", "auth.api_keys.hash_key_file"),
    ("auth.jwt.secret", "auth.jwt.secret_file"),
];

/// Keys holding URLs whose userinfo password is redacted when printed.
const URL_KEYS: [&str; 2] = ["redis.url", "postgres.url"];

/// Where the loader reads from.
///
/// The CLI fills it from the process ([`Sources::from_process`]); tests fill it themselves,
/// so they never touch the process environment and can run in parallel.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// The folder holding `default.toml` and the per-environment overlays.
    pub config_dir: PathBuf,
    /// `STEWARD_ENV`; `None` means "development", whose overlay file may be absent.
    pub env_name: Option<String>,
    /// The file given with `--config`.
    pub config_file: Option<PathBuf>,
    /// Environment variables; those starting with `STEWARD__` are read, and the `OTEL_*`
    /// variables of OpenTelemetry's specification that `[tracing]` has keys for.
    pub vars: Vec<(String, String)>,
    /// A compiled-in layer between the defaults and the files, with its name for error
    /// messages: `steward::testing` lays its test profile (port 0, fast health checks, short
    /// backoffs) here, so that a service's own `config/test.toml` still wins over it. Like a
    /// file, it may only set keys the defaults have.
    pub profile: Option<(&'static str, &'static str)>,
}

impl Sources {
    /// Reads `STEWARD_CONFIG_DIR` (default `config`), `STEWARD_ENV` and every `STEWARD__*`
    /// variable of this process.
    pub fn from_process(config_file: Option<PathBuf>) -> Self {
        Self {
            config_dir: std::env::var_os("STEWARD_CONFIG_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("config")),
            env_name: std::env::var("STEWARD_ENV").ok().filter(|e| !e.is_empty()),
            config_file,
            vars: std::env::vars()
                .filter(|(name, _)| name.starts_with(ENV_PREFIX) || name.starts_with("OTEL_"))
                .collect(),
            profile: None,
        }
    }
}

/// Where a value came from, as error messages and `check-config` name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A configuration file.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// Defaults compiled into a crate: steward's, or a service's (by name).
    Builtin(&'static str),
    /// A secret read from the file named by a `*_file` key.
    SecretFile {
        /// The `*_file` key that named the file.
        key: String,
        /// The file's path.
        path: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Builtin(name) => write!(f, "the built-in defaults of {name}"),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::SecretFile { key, path } => write!(f, "file {path} named by {key}"),
        }
    }
}

/// A validated configuration and the origin of each of its keys.
#[derive(Clone)]
pub struct Loaded {
    /// The validated settings.
    pub settings: Settings,
    /// The service's sections, parsed and validated, by type.
    pub(crate) sections: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    /// The service's sections as loaded, for `check-config`.
    tables: Vec<(&'static str, Value)>,
    /// steward's sections this service has no use for, left out of `check-config`.
    unused: Vec<&'static str>,
    origins: BTreeMap<String, Origin>,
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded")
            .field("settings", &self.settings)
            .field("sections", &self.tables)
            .finish_non_exhaustive()
    }
}

impl Loaded {
    /// The effective configuration as TOML, secrets and URL passwords redacted.
    pub fn redacted_toml(&self) -> String {
        let mut value = Value::try_from(&self.settings).expect("settings serialize to TOML");
        let table = value.as_table_mut().expect("settings are a table");
        for (secret, _) in SECRETS {
            if let Some(Value::String(text)) = lookup_mut(table, secret) {
                if !text.is_empty() {
                    *text = "<redacted>".to_owned();
                }
            }
        }
        for key in URL_KEYS {
            if let Some(Value::String(text)) = lookup_mut(table, key) {
                *text = redact_url(text);
            }
        }
        for section in &self.unused {
            table.remove(*section);
        }
        for (name, section) in &self.tables {
            table.insert((*name).to_owned(), section.clone());
        }
        toml::to_string_pretty(&value).expect("settings print as TOML")
    }

    /// Where `key` got its value.
    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.origins.get(key)
    }
}

/// Loads, merges, deserializes and validates the configuration: steward's defaults, the
/// service's, `config/<STEWARD_ENV>.toml`, `--config`, then `STEWARD__*` variables.
pub fn load(sources: &Sources, schema: &Schema) -> Result<Loaded, ConfigError> {
    let mut merged = Table::new();
    let mut origins: BTreeMap<String, Origin> = BTreeMap::new();
    let builtin = [
        ("steward", Some(STEWARD_DEFAULTS)),
        (schema.service, schema.defaults),
    ];
    for (name, text) in builtin {
        let Some(text) = text else { continue };
        let layer = builtin_table(name, text)?;
        let mut values = BTreeMap::new();
        leaves(&layer, "", &mut values);
        for (key, value) in values {
            set(&mut merged, &key, value);
            origins.insert(key, Origin::Builtin(name));
        }
    }
    let mut known = BTreeMap::new();
    leaves(&merged, "", &mut known);
    if let Some((name, text)) = sources.profile {
        let layer = builtin_table(name, text)?;
        overlay(
            &mut merged,
            &mut origins,
            &known,
            layer,
            Origin::Builtin(name),
        )?;
    }

    let env_name = sources.env_name.as_deref().unwrap_or("development");
    let env_path = sources.config_dir.join(format!("{env_name}.toml"));
    if env_path.exists() {
        let origin = Origin::File(env_path.clone());
        overlay(
            &mut merged,
            &mut origins,
            &known,
            read_table(&env_path)?,
            origin,
        )?;
    } else if sources.env_name.is_some() {
        return Err(file_error(
            &env_path,
            "an overlay file for STEWARD_ENV (it does not exist)",
        ));
    }
    if let Some(path) = &sources.config_file {
        let origin = Origin::File(path.clone());
        overlay(&mut merged, &mut origins, &known, read_table(path)?, origin)?;
    }
    // OpenTelemetry's variables over the files, steward's own over them.
    for (name, raw) in &sources.vars {
        if let Some((key, value)) = otel_key(name, raw, &sources.vars) {
            apply_value(&mut merged, &mut origins, &known, &key, name, &value)?;
        }
    }
    for (name, raw) in &sources.vars {
        apply_env(&mut merged, &mut origins, &known, name, raw)?;
    }
    resolve_secret_files(&mut merged, &mut origins)?;

    let mut framework = merged.clone();
    let mut sections = HashMap::new();
    let mut tables = Vec::new();
    for declared in &schema.sections {
        let table = framework
            .remove(declared.name)
            .unwrap_or_else(|| Value::Table(Table::new()));
        tables.push((declared.name, table.clone()));
        let parsed = (declared.parse)(table).map_err(|(path, expected)| {
            let key = match path.as_str() {
                "" | "." => declared.name.to_owned(),
                path => format!("{}.{path}", declared.name),
            };
            ConfigError {
                value: lookup(&merged, &key).map(|v| shown(&key, v)),
                origin: origin_of(&origins, &key),
                expected: plain_types(&expected),
                key,
            }
        })?;
        sections.insert(declared.type_id, parsed);
    }
    let settings: Settings = serde_path_to_error::deserialize(Value::Table(framework.clone()))
        .map_err(|error| {
            let key = error.path().to_string();
            ConfigError {
                value: lookup(&framework, &key).map(|v| shown(&key, v)),
                origin: origin_of(&origins, &key),
                expected: plain_types(error.into_inner().message().trim()),
                key,
            }
        })?;
    let production = sources.env_name.as_deref() == Some("production");
    validate::validate(&settings, schema.backends, production, &|key| {
        origin_of(&origins, key)
    })?;
    let unused = Schema::REDIS_SECTIONS
        .iter()
        .chain(&Schema::POSTGRES_SECTIONS)
        .copied()
        .filter(|section| schema.unused(section))
        .collect();
    Ok(Loaded {
        settings,
        sections,
        tables,
        unused,
        origins,
    })
}

fn read_table(path: &Path) -> Result<Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| file_error(path, &format!("a readable TOML file ({e})")))?;
    text.parse::<Table>()
        .map_err(|e| file_error(path, &format!("valid TOML: {}", e.to_string().trim())))
}

fn file_error(path: &Path, expected: &str) -> ConfigError {
    ConfigError {
        key: String::new(),
        value: None,
        origin: Origin::File(path.to_owned()),
        expected: expected.to_owned(),
    }
}

/// Collects every leaf (non-table value) of `table` under its dotted key.
fn leaves(table: &Table, prefix: &str, out: &mut BTreeMap<String, Value>) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            Value::Table(inner) => leaves(inner, &key, out),
            leaf => {
                out.insert(key, leaf.clone());
            }
        }
    }
}

/// A compiled-in layer, parsed.
fn builtin_table(name: &'static str, text: &str) -> Result<Table, ConfigError> {
    text.parse::<Table>().map_err(|e| ConfigError {
        key: String::new(),
        value: None,
        origin: Origin::Builtin(name),
        expected: format!("valid TOML: {}", e.to_string().trim()),
    })
}

fn overlay(
    merged: &mut Table,
    origins: &mut BTreeMap<String, Origin>,
    known: &BTreeMap<String, Value>,
    layer: Table,
    origin: Origin,
) -> Result<(), ConfigError> {
    let mut values = BTreeMap::new();
    leaves(&layer, "", &mut values);
    for (key, value) in values {
        let origin = origin.clone();
        if !known.contains_key(&key) {
            return Err(unknown_key(key, Some(shown("", &value)), origin));
        }
        set(merged, &key, value);
        origins.insert(key, origin);
    }
    Ok(())
}

fn apply_env(
    merged: &mut Table,
    origins: &mut BTreeMap<String, Origin>,
    known: &BTreeMap<String, Value>,
    name: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    let Some(path) = name.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    let key = path
        .to_lowercase()
        .split("__")
        .collect::<Vec<_>>()
        .join(".");
    apply_value(merged, origins, known, &key, name, raw)
}

/// The `[tracing]` key an OpenTelemetry variable sets, and its value in steward's terms
/// (milliseconds become durations). `OTEL_TRACES_SAMPLER_ARG` counts only with the ratio
/// samplers (or no `OTEL_TRACES_SAMPLER`), since steward's sampler is parent-based by ratio.
fn otel_key(name: &str, raw: &str, vars: &[(String, String)]) -> Option<(String, String)> {
    let millis = |raw: &str| raw.trim().parse::<u64>().ok().map(|ms| format!("{ms}ms"));
    let (key, value) = match name {
        "OTEL_SDK_DISABLED" if raw.trim().eq_ignore_ascii_case("true") => {
            ("enabled", "false".to_owned())
        }
        "OTEL_SERVICE_NAME" => ("service_name", raw.to_owned()),
        "OTEL_EXPORTER_OTLP_ENDPOINT" => ("endpoint", raw.to_owned()),
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => ("traces_endpoint", raw.to_owned()),
        "OTEL_EXPORTER_OTLP_TIMEOUT" => ("export_timeout", millis(raw)?),
        "OTEL_BSP_SCHEDULE_DELAY" => ("batch_delay", millis(raw)?),
        "OTEL_BSP_MAX_QUEUE_SIZE" => ("queue_size", raw.to_owned()),
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" => ("batch_size", raw.to_owned()),
        "OTEL_TRACES_SAMPLER_ARG" => {
            let sampler = vars
                .iter()
                .find(|(n, _)| n == "OTEL_TRACES_SAMPLER")
                .map(|(_, v)| v.as_str());
            match sampler {
                None | Some("traceidratio" | "parentbased_traceidratio") => {
                    ("sample_ratio", raw.to_owned())
                }
                Some(_) => return None,
            }
        }
        _ => return None,
    };
    Some((format!("tracing.{key}"), value))
}

/// Sets `key` from the variable `name`, read as the type the key has in the defaults.
fn apply_value(
    merged: &mut Table,
    origins: &mut BTreeMap<String, Origin>,
    known: &BTreeMap<String, Value>,
    key: &str,
    name: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    let key = key.to_owned();
    let origin = Origin::Env(name.to_owned());
    let Some(default) = known.get(&key) else {
        return Err(unknown_key(key, None, origin));
    };
    // Environment variables are text; read them as the type the key has in default.toml.
    // Text that does not parse stays a string, so the type error names this variable.
    let value = match default {
        Value::String(_) => Value::String(raw.to_owned()),
        _ => format!("v = {raw}")
            .parse::<Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| Value::String(raw.to_owned())),
    };
    set(merged, &key, value);
    origins.insert(key, origin);
    Ok(())
}

fn unknown_key(key: String, value: Option<String>, origin: Origin) -> ConfigError {
    ConfigError {
        key,
        value,
        origin,
        expected: "a known key (the defaults, steward's and the service's, list every key)"
            .to_owned(),
    }
}

/// Replaces each secret by the content of its `*_file` when that key is set.
fn resolve_secret_files(
    merged: &mut Table,
    origins: &mut BTreeMap<String, Origin>,
) -> Result<(), ConfigError> {
    for (secret, file_key) in SECRETS {
        let Some(Value::String(path)) = lookup(merged, file_key).cloned() else {
            continue;
        };
        if path.is_empty() {
            continue;
        }
        let file_origin = origin_of(origins, file_key);
        if matches!(lookup(merged, secret), Some(Value::String(s)) if !s.is_empty()) {
            return Err(ConfigError {
                key: file_key.to_owned(),
                value: Some(format!("{path:?}")),
                origin: file_origin,
                expected: format!("either {secret} or {file_key}, not both"),
            });
        }
        let content = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            key: file_key.to_owned(),
            value: Some(format!("{path:?}")),
            origin: file_origin.clone(),
            expected: format!("a readable file ({e})"),
        })?;
        set(
            merged,
            secret,
            Value::String(content.trim_end_matches(['\r', '\n']).to_owned()),
        );
        origins.insert(
            secret.to_owned(),
            Origin::SecretFile {
                key: file_key.to_owned(),
                path,
            },
        );
    }
    Ok(())
}

/// serde names Rust types ("expected u16"); operators need the range.
fn plain_types(message: &str) -> String {
    [
        ("expected u8", "expected an integer from 0 to 255"),
        ("expected u16", "expected an integer from 0 to 65535"),
        ("expected u32", "expected an integer from 0 to 4294967295"),
        ("expected usize", "expected a non-negative integer"),
    ]
    .iter()
    .fold(message.to_owned(), |text, (rust, plain)| {
        text.replace(rust, plain)
    })
}

fn origin_of(origins: &BTreeMap<String, Origin>, key: &str) -> Origin {
    // An error inside an array ("ratelimit.policies[0].limit") belongs to the array's key.
    let key = key.split('[').next().unwrap_or(key);
    origins
        .get(key)
        .cloned()
        .unwrap_or(Origin::Builtin("steward"))
}

/// A value as error messages show it; secrets never appear.
fn shown(key: &str, value: &Value) -> String {
    if SECRETS.iter().any(|(secret, _)| *secret == key) {
        return "<redacted>".to_owned();
    }
    match value {
        Value::String(text) if URL_KEYS.contains(&key) => format!("{:?}", redact_url(text)),
        other => other.to_string(),
    }
}

fn lookup<'a>(table: &'a Table, key: &str) -> Option<&'a Value> {
    let (parents, last) = split_key(key);
    let mut current = table;
    for part in parents {
        current = current.get(part)?.as_table()?;
    }
    current.get(last)
}

fn lookup_mut<'a>(table: &'a mut Table, key: &str) -> Option<&'a mut Value> {
    let (parents, last) = split_key(key);
    let mut current = table;
    for part in parents {
        current = current.get_mut(part)?.as_table_mut()?;
    }
    current.get_mut(last)
}

fn set(table: &mut Table, key: &str, value: Value) {
    let (parents, last) = split_key(key);
    let mut current = table;
    for part in parents {
        current = current
            .entry(part)
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .expect("known keys have tables as parents");
    }
    current.insert(last.to_owned(), value);
}

fn split_key(key: &str) -> (Vec<&str>, &str) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or_default();
    (parts, last)
}

/// A connection string as it may be shown: every password in it replaced by `***`.
///
/// Both stores accept passwords in more places than the userinfo of a URL, and every one must
/// go: `scheme://user:secret@host` (also when the secret holds `/`, `?` or `@`: the userinfo
/// ends at the last `@`), `?password=secret` and `sslpassword=` in the query, and libpq's
/// key-value form `host=h password=secret` or `password='a \'quoted\' secret'`.
pub(crate) fn redact_url(text: &str) -> String {
    match text.find("://") {
        Some(scheme_end) => redact_url_form(text, scheme_end + 3),
        None => redact_key_values(text),
    }
}

const PASSWORD_KEYS: [&str; 2] = ["password", "sslpassword"];

fn redact_url_form(url: &str, authority_start: usize) -> String {
    let rest = &url[authority_start..];
    let (mut out, after_userinfo) = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let shown = if user.len() < userinfo.len() {
                format!("{user}:***")
            } else {
                userinfo.to_owned()
            };
            (
                format!("{}{shown}@", &url[..authority_start]),
                &rest[at + 1..],
            )
        }
        None => (url[..authority_start].to_owned(), rest),
    };
    let Some((location, query)) = after_userinfo.split_once('?') else {
        out.push_str(after_userinfo);
        return out;
    };
    out.push_str(location);
    out.push('?');
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if PASSWORD_KEYS.contains(&name.to_ascii_lowercase().as_str()) => {
                format!("{name}=***")
            }
            _ => param.to_owned(),
        })
        .collect();
    out.push_str(&params.join("&"));
    out
}

/// libpq's `key = value` form: values are bare words or single-quoted with `\\` escapes.
fn redact_key_values(text: &str) -> String {
    let bytes = text.as_bytes();
    let skip_space = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let key_start = skip_space(i);
        out.push_str(&text[i..key_start]);
        let mut key_end = key_start;
        while key_end < bytes.len()
            && bytes[key_end] != b'='
            && !bytes[key_end].is_ascii_whitespace()
        {
            key_end += 1;
        }
        let equals = skip_space(key_end);
        if equals >= bytes.len() || bytes[equals] != b'=' {
            // Not `key = value`: copy the word as it is.
            out.push_str(&text[key_start..key_end]);
            i = key_end;
            continue;
        }
        let value_start = skip_space(equals + 1);
        let mut value_end = value_start;
        if value_end < bytes.len() && bytes[value_end] == b'\'' {
            value_end += 1;
            while value_end < bytes.len() && bytes[value_end] != b'\'' {
                value_end += if bytes[value_end] == b'\\' { 2 } else { 1 };
            }
            value_end = (value_end + 1).min(bytes.len());
        } else {
            while value_end < bytes.len() && !bytes[value_end].is_ascii_whitespace() {
                value_end += 1;
            }
        }
        out.push_str(&text[key_start..value_start]);
        let key = text[key_start..key_end].to_ascii_lowercase();
        if PASSWORD_KEYS.contains(&key.as_str()) {
            out.push_str("***");
        } else {
            out.push_str(&text[value_start..value_end]);
        }
        i = value_end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_every_password_form() {
        for (given, shown) in [
            ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
            ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),
            ("postgres://u:pa/ss@h/db", "postgres://u:***@h/db"),
            ("postgres://u:pa?ss@h/db", "postgres://u:***@h/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("redis://h:6379", "redis://h:6379"),
            (
                "postgres://u@h/db?sslmode=require&password=sekrit",
                "postgres://u@h/db?sslmode=require&password=***",
            ),
            (
                "postgres://h/db?PassWord=sekrit",
                "postgres://h/db?PassWord=***",
            ),
            (
                "host=h password=sekrit user=u",
                "host=h password=*** user=u",
            ),
            ("host=h password = sekrit", "host=h password = ***"),
            (
                r"host=h password='se \'kr it' user=u",
                "host=h password=*** user=u",
            ),
            ("host=h sslpassword=sekrit", "host=h sslpassword=***"),
        ] {
            let redacted = redact_url(given);
            assert_eq!(redacted, shown, "{given}");
            assert!(!redacted.contains("sekrit") && !redacted.contains("kr it"));
        }
    }
}
