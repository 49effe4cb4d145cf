//! Keyset pagination for list routes: `?limit=&cursor=` in, `{items, next_cursor}` out, with
//! cursors opaque to clients.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{codes, ApiError};

/// `?limit=&cursor=` as sent.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1-100; 20 when absent.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page; the first page when absent.
    #[param(pattern = "^c[0-9a-f]{1,16}$")]
    cursor: Option<String>,
}

/// One page of a list: its items, and the cursor of the next page (absent on the last).
#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    /// The items of this page, in the list's order.
    pub items: Vec<T>,
    /// Where the next page starts; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The page of a keyset query that fetched `limit + 1` rows: the extra row only tells that
    /// a next page exists, which continues after the `key` of the last item kept.
    pub fn keyset(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Self {
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if more { items.last().map(key) } else { None };
        Self { items, next_cursor }
    }
}

/// A validated page request: how many items, and the key to continue from.
pub struct PageRequest {
    /// Items per page, 1-100.
    pub limit: i64,
    /// The key the page continues after; `None` for the first page.
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
        Some(_) => Err(codes::INVALID_LIMIT.into()),
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
        .ok_or_else(|| ApiError::from(codes::INVALID_CURSOR))
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
