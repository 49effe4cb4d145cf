//! Credentials verified recently, so a key costs one Redis lookup and a token one signature
//! check per `auth.cache_ttl`, not one per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::Principal;

/// Verified credentials by the SHA-256 of what was presented (so neither keys nor tokens are
/// kept, and a lookup compares digests an attacker cannot steer), each until its deadline.
/// Bounded: at `capacity` expired entries are dropped, and if none had expired the new one is
/// not kept (its credential is verified again next time).
pub(crate) struct VerifiedCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

struct Entry {
    principal: Principal,
    until: Instant,
}

impl VerifiedCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: Mutex::default(),
        }
    }

    /// The digest a credential is remembered by; `scheme` keeps schemes apart.
    pub fn digest(scheme: &[u8], credential: &str) -> [u8; 32] {
        Sha256::new()
            .chain_update(scheme)
            .chain_update(credential.as_bytes())
            .finalize()
            .into()
    }

    pub fn get(&self, digest: &[u8; 32]) -> Option<Principal> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(digest)?;
        (entry.until > Instant::now()).then(|| entry.principal.clone())
    }

    /// Remembers `principal` for the ttl, or until `expires` when that is sooner.
    pub fn insert(&self, digest: [u8; 32], principal: Principal, expires: Option<Instant>) {
        if self.ttl.is_zero() || self.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let until = expires.map_or(now + self.ttl, |e| e.min(now + self.ttl));
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            entries.retain(|_, entry| entry.until > now);
            if entries.len() >= self.capacity {
                return;
            }
        }
        entries.insert(digest, Entry { principal, until });
    }

    /// Forgets every credential of API key `key_id` (revoked here).
    pub fn forget_key(&self, key_id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, entry| entry.principal.key_id() != Some(key_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(key_id: &str) -> Principal {
        Principal::api_key("svc", key_id, vec![])
    }

    #[test]
    fn entries_expire_are_bounded_and_forgotten_on_revoke() {
        let cache = VerifiedCache::new(Duration::from_secs(60), 2);
        let (a, b, c) = (
            VerifiedCache::digest(b"k", "a"),
            VerifiedCache::digest(b"k", "b"),
            VerifiedCache::digest(b"k", "c"),
        );
        cache.insert(a, principal("1"), None);
        cache.insert(b, principal("2"), Some(Instant::now()));
        assert!(cache.get(&a).is_some());
        assert!(cache.get(&b).is_none(), "expired with its token");
        cache.insert(c, principal("3"), None);
        assert!(cache.get(&c).is_some(), "the expired entry made room");
        cache.insert(VerifiedCache::digest(b"k", "d"), principal("4"), None);
        assert!(
            cache.get(&VerifiedCache::digest(b"k", "d")).is_none(),
            "full"
        );
        cache.forget_key("1");
        assert!(cache.get(&a).is_none());
        assert_ne!(
            VerifiedCache::digest(b"k", "a"),
            VerifiedCache::digest(b"j", "a")
        );
    }
}
