//! Keyset pagination parameters shared by the list endpoints.

use serde::Deserialize;

use super::error::ApiError;

/// `?limit=&cursor=` as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// A validated page request: how many items, and the key to continue from.
pub struct PageRequest {
    pub limit: i64,
    pub after: Option<i64>,
}

impl PageQuery {
    /// `limit` 1-100 (default 20); `cursor` as returned in `next_cursor`.
    pub fn parse(&self) -> Result<PageRequest, ApiError> {
        let limit = page_limit(self.limit)?;
        let after = self.cursor.as_deref().map(decode).transpose()?;
        Ok(PageRequest { limit, after })
    }
}

/// A page size as asked for: 1-100, 20 when absent.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(20),
        Some(limit @ 1..=100) => Ok(limit),
        Some(_) => Err(ApiError::bad_request(
            "invalid_limit",
            "limit is from 1 to 100",
        )),
    }
}

/// Cursors are opaque to clients: they must only send back what they were given.
pub fn encode(key: i64) -> String {
    format!("c{key:x}")
}

fn decode(cursor: &str) -> Result<i64, ApiError> {
    cursor
        .strip_prefix('c')
        .and_then(|hex| i64::from_str_radix(hex, 16).ok())
        .filter(|key| *key >= 0)
        .ok_or_else(|| {
            ApiError::bad_request("invalid_cursor", "the cursor is not one this API returned")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        for key in [0, 1, 255, i64::MAX] {
            assert_eq!(decode(&encode(key)).ok(), Some(key));
        }
        for bad in ["", "c", "x10", "c-1", "czz", "10"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
