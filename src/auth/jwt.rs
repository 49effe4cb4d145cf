//! Bearer tokens: JWTs signed by an identity provider, checked against configured keys.

use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::Principal;
use crate::config::JwtSettings;

/// The longest `sub` accepted: it becomes part of every owner a service records.
const MAX_SUBJECT: usize = 256;
/// Most scopes a token may carry.
const MAX_SCOPES: usize = 64;

/// Verifies bearer tokens: the signature with the configured key (its algorithm fixed by the
/// key, never taken from the token, so an `alg: none` or an HS256 token signed with a public
/// key is refused), then `exp`, `nbf` (with the leeway), `iss` and `aud`, all required.
pub(crate) struct JwtVerifier {
    keys: Vec<Key>,
    validation: Validation,
}

/// One verification key and the one algorithm it verifies.
struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithm: Algorithm,
}

/// The claims steward reads; the signature and the registered claims are checked by
/// `jsonwebtoken` before these are looked at.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    scope: Option<String>,
}

/// A token that verified: its principal and when it expires (Unix seconds).
pub(crate) struct Verified {
    pub principal: Principal,
    pub expires_at: u64,
}

impl JwtVerifier {
    /// The verifier `[auth.jwt]` describes; on a key that cannot be loaded, the config key to
    /// blame and what is wrong.
    pub fn new(settings: &JwtSettings) -> Result<Self, (&'static str, String)> {
        let keys = if !settings.key_file.is_empty() {
            let pem = std::fs::read(&settings.key_file)
                .map_err(|e| ("auth.jwt.key_file", format!("a readable PEM file ({e})")))?;
            vec![pem_key(&pem).ok_or((
                "auth.jwt.key_file",
                "a PEM public key: RSA, EC P-256 or Ed25519".to_owned(),
            ))?]
        } else if !settings.jwks_file.is_empty() {
            let text = std::fs::read_to_string(&settings.jwks_file)
                .map_err(|e| ("auth.jwt.jwks_file", format!("a readable JWKS file ({e})")))?;
            let set: JwkSet = serde_json::from_str(&text)
                .map_err(|e| ("auth.jwt.jwks_file", format!("a JWKS document ({e})")))?;
            let keys: Vec<Key> = set.keys.iter().filter_map(jwk_key).collect();
            if keys.is_empty() {
                let expected = "at least one RSA, EC (P-256, P-384) or OKP (Ed25519) key";
                return Err(("auth.jwt.jwks_file", expected.to_owned()));
            }
            keys
        } else {
            let key = DecodingKey::from_secret(settings.secret.as_bytes())
                .map_err(|e| ("auth.jwt.secret", format!("an HS256 secret ({e})")))?;
            vec![Key {
                kid: None,
                key,
                algorithm: Algorithm::HS256,
            }]
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = settings.leeway.as_secs();
        Ok(Self { keys, validation })
    }

    /// The token's principal, or why it is refused (for the log; the client is told less).
    pub fn verify(&self, token: &str) -> Result<Verified, String> {
        let header = decode_header(token).map_err(|e| format!("malformed token ({e})"))?;
        let key = match &header.kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
        .ok_or_else(|| format!("no key for kid {:?}", header.kid))?;
        if header.alg != key.algorithm {
            return Err(format!(
                "alg {:?} where the key verifies {:?}",
                header.alg, key.algorithm
            ));
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![key.algorithm];
        let claims = decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| format!("{:?}", e.kind()))?
            .claims;
        let subject_ok = (1..=MAX_SUBJECT).contains(&claims.sub.len())
            && !claims.sub.chars().any(char::is_control);
        if !subject_ok {
            return Err(format!("sub of 1 to {MAX_SUBJECT} printable characters"));
        }
        let scopes: Vec<String> = claims
            .scope
            .as_deref()
            .unwrap_or_default()
            .split_ascii_whitespace()
            .map(str::to_owned)
            .collect();
        if scopes.len() > MAX_SCOPES {
            return Err(format!("more than {MAX_SCOPES} scopes"));
        }
        Ok(Verified {
            principal: Principal::jwt(&claims.sub, scopes),
            expires_at: claims.exp,
        })
    }
}

/// A PEM public key, its algorithm told by its type.
fn pem_key(pem: &[u8]) -> Option<Key> {
    let key = |key, algorithm| Key {
        kid: None,
        key,
        algorithm,
    };
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Some(key(k, Algorithm::EdDSA));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Some(key(k, Algorithm::ES256));
    }
    DecodingKey::from_rsa_pem(pem)
        .ok()
        .map(|k| key(k, Algorithm::RS256))
}

/// A JWKS entry with the algorithm its `alg` names, else its type's usual one. Symmetric keys
/// are skipped: a JWKS is public.
fn jwk_key(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Key> {
    let usual = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => Algorithm::ES384,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let algorithm = match &jwk.common.key_algorithm {
        Some(named) => Algorithm::from_str(&format!("{named:?}")).ok()?,
        None => usual,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    (key.family() == algorithm.family()).then(|| Key {
        kid: jwk.common.key_id.clone(),
        key,
        algorithm,
    })
}
