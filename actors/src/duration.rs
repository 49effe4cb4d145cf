//! Serde support for human-readable durations ("250ms", "5s", "2m") in configuration files.
//!
//! Configuration is written by people; `5s` says what it means where `5000` would need a unit in
//! the key name. Used with `#[serde(with = "steward_actors::duration")]`.

use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serializer};

/// Parses "250ms", "5s", "1m 30s" and the like; a bare number is rejected so that a unit is
/// never guessed.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("a duration like \"250ms\" or \"5s\" ({e})"))
}

/// Formats a duration the way [`parse`] reads it back.
pub fn format(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// Reads a duration written with a unit (`"250ms"`, `"5s"`).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(|expected| {
        de::Error::invalid_value(de::Unexpected::Str(&text), &expected.as_str())
    })
}

/// Writes a duration with a unit, as configuration files hold it.
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse(" 5s ").unwrap(), Duration::from_secs(5));
        assert_eq!(
            parse(&format(Duration::from_millis(1500))).unwrap(),
            Duration::from_millis(1500)
        );
        assert!(parse("5").is_err(), "a bare number has no unit");
        assert!(parse("soon").is_err());
    }
}
