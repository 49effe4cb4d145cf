//! The reference service's own config sections (`config/default.toml` lists their keys and
//! defaults); steward's own sections are the framework's.

use std::time::Duration;

use serde::Deserialize;
use steward::config::{Invalid, Section};

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

/// `[kv]`: the kv API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvConfig {
    /// TTL of a value whose request gives none.
    #[serde(with = "steward::actors::duration")]
    pub default_ttl: Duration,
    /// Largest value in bytes (413).
    pub max_value_size: usize,
}

impl Section for KvConfig {
    const NAME: &'static str = "kv";

    fn validate(&self) -> Result<(), Invalid> {
        within("default_ttl", self.default_ttl, SECOND, 30 * DAY)?;
        if !(1..=1 << 30).contains(&self.max_value_size) {
            return Err(Invalid::new(
                "max_value_size",
                "an integer from 1 to 1073741824",
            ));
        }
        Ok(())
    }
}

/// `[accounts]`: the accounts API and the ledger's jobs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsConfig {
    /// How long an account stays cached.
    #[serde(with = "steward::actors::duration")]
    pub cache_ttl: Duration,
    /// How long `ledger.statement` keeps a statement cached.
    #[serde(with = "steward::actors::duration")]
    pub statement_ttl: Duration,
}

impl Section for AccountsConfig {
    const NAME: &'static str = "accounts";

    fn validate(&self) -> Result<(), Invalid> {
        within("cache_ttl", self.cache_ttl, SECOND, DAY)?;
        within("statement_ttl", self.statement_ttl, SECOND, 30 * DAY)
    }
}

/// `[idempotency]`: how long transfers' idempotency keys are kept.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// How long a transfer's Idempotency-Key is kept.
    #[serde(with = "steward::actors::duration")]
    pub retention: Duration,
    /// How often the old keys are deleted.
    #[serde(with = "steward::actors::duration")]
    pub prune_interval: Duration,
}

impl Section for IdempotencyConfig {
    const NAME: &'static str = "idempotency";

    fn validate(&self) -> Result<(), Invalid> {
        within("retention", self.retention, MINUTE, 365 * DAY)?;
        within("prune_interval", self.prune_interval, SECOND, DAY)
    }
}

/// `key` is a duration from `min` to `max`.
fn within(key: &str, value: Duration, min: Duration, max: Duration) -> Result<(), Invalid> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    let shown = |d: Duration| steward::actors::duration::format(d);
    Err(Invalid::new(
        key,
        format!("a duration from {} to {}", shown(min), shown(max)),
    ))
}
