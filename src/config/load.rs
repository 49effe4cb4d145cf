//! Merging the configuration layers while remembering where every value came from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{validate, ConfigError, Settings};

/// The prefix of environment variables that override keys: `STEWARD__SERVER__PORT` sets
/// `server.port`.
const ENV_PREFIX: &str = "STEWARD__";

/// Keys whose values are secrets: never printed, and loadable from a `*_file` key.
const SECRETS: [(&str, &str); 2] = [
    ("postgres.password", "postgres.password_file"),
    ("admin.token", "admin.token_file"),
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
    /// Environment variables; only those starting with `STEWARD__` are read.
    pub vars: Vec<(String, String)>,
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
                .filter(|(name, _)| name.starts_with(ENV_PREFIX))
                .collect(),
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
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::SecretFile { key, path } => write!(f, "file {path} named by {key}"),
        }
    }
}

/// A validated configuration and the origin of each of its keys.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The validated settings.
    pub settings: Settings,
    origins: BTreeMap<String, Origin>,
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
        toml::to_string_pretty(&value).expect("settings print as TOML")
    }

    /// Where `key` got its value.
    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.origins.get(key)
    }
}

/// Loads, merges, deserializes and validates the configuration.
pub fn load(sources: &Sources) -> Result<Loaded, ConfigError> {
    let default_path = sources.config_dir.join("default.toml");
    let mut merged = read_table(&default_path)?;
    let mut known = BTreeMap::new();
    leaves(&merged, "", &mut known);
    let mut origins: BTreeMap<String, Origin> = known
        .keys()
        .map(|key| (key.clone(), Origin::File(default_path.clone())))
        .collect();

    let env_name = sources.env_name.as_deref().unwrap_or("development");
    let env_path = sources.config_dir.join(format!("{env_name}.toml"));
    if env_path.exists() {
        overlay(
            &mut merged,
            &mut origins,
            &known,
            read_table(&env_path)?,
            &env_path,
        )?;
    } else if sources.env_name.is_some() {
        return Err(file_error(
            &env_path,
            "an overlay file for STEWARD_ENV (it does not exist)",
        ));
    }
    if let Some(path) = &sources.config_file {
        overlay(&mut merged, &mut origins, &known, read_table(path)?, path)?;
    }
    for (name, raw) in &sources.vars {
        apply_env(&mut merged, &mut origins, &known, name, raw)?;
    }
    resolve_secret_files(&mut merged, &mut origins)?;

    let settings: Settings = serde_path_to_error::deserialize(Value::Table(merged.clone()))
        .map_err(|error| {
            let key = error.path().to_string();
            ConfigError {
                value: lookup(&merged, &key).map(|v| shown(&key, v)),
                origin: origin_of(&origins, &key),
                expected: plain_types(error.into_inner().message().trim()),
                key,
            }
        })?;
    validate::validate(&settings, &|key| origin_of(&origins, key))?;
    Ok(Loaded { settings, origins })
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

fn overlay(
    merged: &mut Table,
    origins: &mut BTreeMap<String, Origin>,
    known: &BTreeMap<String, Value>,
    layer: Table,
    path: &Path,
) -> Result<(), ConfigError> {
    let mut values = BTreeMap::new();
    leaves(&layer, "", &mut values);
    for (key, value) in values {
        let origin = Origin::File(path.to_owned());
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
        expected: "a known key (config/default.toml lists every key)".to_owned(),
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
        .unwrap_or_else(|| Origin::File(PathBuf::from("config/default.toml")))
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
