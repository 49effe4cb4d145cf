//! API keys: issued by an operator, sent as `X-Api-Key`, stored in Redis as keyed hashes.
//!
//! A key is `stw_<id>_<secret>`: 16 hex digits of id (public: it names the key in lists, logs
//! and the revoke route) and 64 hex digits (256 bits) of secret. Redis keeps, per id, the
//! key's name, scopes, creation time and the HMAC-SHA-256 of the whole key under
//! `auth.api_keys.hash_key`, in one hash (`<prefix>auth:api-keys`) bounded by
//! `auth.api_keys.max_keys`. A copy of Redis therefore holds no usable key, and without the
//! hash key not even a way to test guesses offline. The key itself is shown once, in the
//! answer that issues it, and never logged.
//!
//! `/admin/api-keys` issues, lists and revokes keys for operators; a service reaches the same
//! through [`Context::api_keys`](crate::Context::api_keys), for a route of its own (keys for its
//! own users, say). A revoke is seen at once by this process and within `auth.cache_ttl` by the
//! others.

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use steward_actors::cache::{CacheActor, Script};
use steward_actors::redis_conn::LuaScript;
use steward_actors::{Deadline, Slot, StoreError};
use utoipa::ToSchema;

use super::verified::VerifiedCache;
use super::Principal;
use crate::http::error::{codes, ApiError};
use crate::trace::Call;

/// The Redis hash of every key's record, under the service's key prefix.
const KEYS_HASH: &str = "auth:api-keys";
/// What every key starts with, so secret scanners can find leaked ones.
const KEY_PREFIX: &str = "stw_";
const ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;

static LOOKUP: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("return redis.call('HGET', KEYS[1], ARGV[1])"));
/// Adds a record unless `max_keys` (ARGV[3]) exist: 1 added, -1 full, 0 the id is taken
/// (64 random bits: not expected, but never an overwrite of another key).
static ISSUE: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
         return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])",
    )
});
static LIST: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("return redis.call('HVALS', KEYS[1])"));
static REVOKE: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("return redis.call('HDEL', KEYS[1], ARGV[1])"));

/// An API key as it is listed: everything but the key.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct KeyInfo {
    /// 16 hex digits; names the key in lists, logs and `DELETE /admin/api-keys/{id}`.
    pub id: String,
    /// The principal the key authenticates as is `key:<name>`; several keys may share a name
    /// (to rotate one without the caller losing what it owns).
    pub name: String,
    /// What the key may do.
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
}

/// A key just issued: the only time the key itself is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedKey {
    /// Its id.
    pub id: String,
    /// `stw_<id>_<secret>`, to send as `X-Api-Key`. Shown once; steward keeps only its hash.
    pub key: String,
    /// The name it was issued under.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
}

/// What Redis keeps per key.
#[derive(Deserialize, Serialize)]
struct Record {
    #[serde(flatten)]
    info: KeyInfo,
    /// Hex HMAC-SHA-256 of the whole key under the hash key.
    digest: String,
}

/// Why a key was not issued.
#[derive(Debug)]
pub enum IssueError {
    /// A name or a scope out of bounds: what is allowed.
    Invalid(String),
    /// `auth.api_keys.max_keys` keys exist.
    Full(usize),
    /// Redis did not do it.
    Store(StoreError),
}

/// The longest key name and scope.
const MAX_NAME: usize = 64;
/// Most scopes a key may hold.
const MAX_SCOPES: usize = 32;

/// The API keys of a service, in Redis through the cache actor. Cloning is cheap (a few
/// reference counts and the prepared HMAC state).
#[derive(Clone)]
pub struct ApiKeys {
    mac: Hmac<Sha256>,
    max_keys: usize,
    cache: Slot<CacheActor>,
    /// The edge's verified credentials, which a revoke here clears of the key.
    verified: std::sync::Arc<VerifiedCache>,
}

impl ApiKeys {
    /// Keys hashed under `hash_key`, at most `max_keys` of them, kept through `cache`.
    pub(crate) fn new(
        hash_key: &[u8],
        max_keys: usize,
        cache: Slot<CacheActor>,
        verified: std::sync::Arc<VerifiedCache>,
    ) -> Self {
        Self {
            mac: Hmac::new_from_slice(hash_key).expect("HMAC takes a key of any length"),
            max_keys,
            cache,
            verified,
        }
    }

    /// The id a presented key claims, if it is shaped like a key at all.
    pub(crate) fn id_of(presented: &str) -> Option<&str> {
        let rest = presented.strip_prefix(KEY_PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        (hex_of_len(id, ID_HEX) && hex_of_len(secret, SECRET_HEX)).then_some(id)
    }

    fn digest(&self, key: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(key.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    async fn script(
        &self,
        script: &'static LuaScript,
        args: Vec<Vec<u8>>,
        deadline: Deadline,
    ) -> Result<redis::Value, StoreError> {
        let cache = self
            .cache
            .get()
            .ok_or_else(|| StoreError::Unavailable("the cache actor is restarting".into()))?;
        cache
            .call(Script {
                script,
                keys: vec![KEYS_HASH.to_owned()],
                args,
                deadline,
            })
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    /// The principal of `presented`; `Ok(None)` when it is not a live key.
    pub(crate) async fn verify(
        &self,
        presented: &str,
        deadline: Deadline,
    ) -> Result<Option<Principal>, StoreError> {
        let Some(id) = Self::id_of(presented) else {
            return Ok(None);
        };
        let reply = self.script(&LOOKUP, vec![id.into()], deadline).await?;
        let Some(raw) = redis::from_redis_value::<Option<Vec<u8>>>(reply)
            .map_err(|e| StoreError::Internal(e.to_string()))?
        else {
            return Ok(None);
        };
        let record: Record = serde_json::from_slice(&raw)
            .map_err(|e| StoreError::Internal(format!("a malformed API key record: {e}")))?;
        let mut mac = self.mac.clone();
        mac.update(presented.as_bytes());
        let matches = unhex(&record.digest).is_some_and(|d| mac.verify_slice(&d).is_ok());
        Ok(matches.then(|| Principal::api_key(&record.info.name, id, record.info.scopes)))
    }

    /// A new key for the principal `key:<name>` with `scopes`. A name is 1-64 of
    /// `A-Z a-z 0-9 . _ -`; at most 32 scopes, each 1-64 of those and `:`.
    pub async fn issue(&self, name: String, scopes: Vec<String>) -> Result<IssuedKey, IssueError> {
        let word = |text: &str, extra: &[u8]| {
            (1..=MAX_NAME).contains(&text.len())
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b) || extra.contains(&b))
        };
        if !word(&name, b"") {
            let message = format!("name is 1 to {MAX_NAME} of A-Z a-z 0-9 . _ -");
            return Err(IssueError::Invalid(message));
        }
        if scopes.len() > MAX_SCOPES || !scopes.iter().all(|s| word(s, b":")) {
            let message = format!(
                "scopes are at most {MAX_SCOPES}, each 1 to {MAX_NAME} of A-Z a-z 0-9 : . _ -"
            );
            return Err(IssueError::Invalid(message));
        }
        let mut random = [0u8; ID_HEX / 2 + SECRET_HEX / 2];
        rand::rng().fill(&mut random[..]);
        let (id, secret) = (hex(&random[..ID_HEX / 2]), hex(&random[ID_HEX / 2..]));
        let key = format!("{KEY_PREFIX}{id}_{secret}");
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let info = KeyInfo {
            id: id.clone(),
            name,
            scopes,
            created_at,
        };
        let record = Record {
            digest: self.digest(&key),
            info,
        };
        let json = serde_json::to_vec(&record).expect("a record is JSON");
        let args = vec![id.clone().into(), json, self.max_keys.to_string().into()];
        let reply = self
            .script(&ISSUE, args, Deadline::NONE)
            .await
            .map_err(IssueError::Store)?;
        match redis::from_redis_value::<i64>(reply) {
            Ok(1) => {}
            Ok(-1) => return Err(IssueError::Full(self.max_keys)),
            _ => {
                let taken = StoreError::Internal(format!("API key id {id} exists; issue again"));
                return Err(IssueError::Store(taken));
            }
        }
        let Record { info, .. } = record;
        Ok(IssuedKey {
            id,
            key,
            name: info.name,
            scopes: info.scopes,
            created_at: info.created_at,
        })
    }

    /// Every live key, oldest first (never the keys themselves).
    pub async fn list(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let reply = self.script(&LIST, Vec::new(), Deadline::NONE).await?;
        let raw: Vec<Vec<u8>> =
            redis::from_redis_value(reply).map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut keys: Vec<KeyInfo> = raw
            .iter()
            .filter_map(|r| serde_json::from_slice::<Record>(r).ok())
            .map(|r| r.info)
            .collect();
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    /// Deletes key `id`; `false` when there is none. It fails at once in this process, and
    /// within `auth.cache_ttl` in the others.
    pub async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        if !hex_of_len(id, ID_HEX) {
            return Ok(false);
        }
        let reply = self
            .script(&REVOKE, vec![id.into()], Deadline::NONE)
            .await?;
        let revoked = redis::from_redis_value::<i64>(reply).unwrap_or(0) > 0;
        if revoked {
            self.verified.forget_key(id);
        }
        Ok(revoked)
    }
}

/// 422 `invalid` for a name or scope out of bounds, 409 `conflict` when `max_keys` exist, and a
/// store failure as every store failure is answered.
impl From<IssueError> for ApiError {
    fn from(error: IssueError) -> Self {
        match error {
            IssueError::Invalid(message) => ApiError::new(codes::INVALID, message),
            IssueError::Full(max) => ApiError::new(
                codes::CONFLICT,
                format!("{max} keys exist (auth.api_keys.max_keys): revoke one first"),
            ),
            IssueError::Store(error) => error.into(),
        }
    }
}

/// Whether `text` is `len` hex digits: the shape of a key's id and secret.
fn hex_of_len(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_key_shaped_strings_have_an_id() {
        let key = format!("stw_{}_{}", "a1".repeat(8), "0f".repeat(32));
        assert_eq!(ApiKeys::id_of(&key), Some("a1a1a1a1a1a1a1a1"));
        for bad in [
            "",
            "stw_",
            "stw_a1a1a1a1a1a1a1a1",
            &key[..key.len() - 1],
            &format!("{key}0"),
            &key.replace("stw_", "sk_"),
            &key.replace("a1", "g1"),
        ] {
            assert_eq!(ApiKeys::id_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xff];
        assert_eq!(unhex(&hex(&bytes)).as_deref(), Some(&bytes[..]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
