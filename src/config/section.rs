//! A service's own config sections: typed, validated and reported exactly like steward's.

use std::any::{Any, TypeId};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use toml::Value;

/// A section of the config file that belongs to the service, such as `[hello]`.
///
/// Its keys and their defaults are the `[NAME]` table of the defaults the service hands to
/// `Service::defaults` (the list of known keys: any other key is an error). Like steward's own
/// sections it is layered (defaults, `config/<STEWARD_ENV>.toml`, `--config`, then
/// `STEWARD__<NAME>__<KEY>` variables), checked at start-up (a bad value exits 2 with a line
/// naming `<name>.<key>`, the value, where it came from and what was expected), and printed by
/// `check-config`.
///
/// ```
/// use serde::Deserialize;
/// use steward::config::{Invalid, Section};
///
/// #[derive(Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Hello {
///     greeting: String,
/// }
///
/// impl Section for Hello {
///     const NAME: &'static str = "hello";
///
///     fn validate(&self) -> Result<(), Invalid> {
///         if self.greeting.is_empty() {
///             return Err(Invalid::new("greeting", "a greeting of at least one character"));
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Section: DeserializeOwned + Send + Sync + 'static {
    /// The table's name: `hello` for `[hello]` and `STEWARD__HELLO__*`.
    const NAME: &'static str;

    /// Checks what types cannot say (ranges, consistency). The default accepts everything.
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
}

/// A value of a [`Section`] that cannot be used: which key, and what was expected instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The key inside the section (`greeting`, or `limits.max` for a nested table).
    pub key: String,
    /// What would have been accepted.
    pub expected: String,
}

impl Invalid {
    /// `key` (relative to the section) should have been `expected`.
    pub fn new(key: impl Into<String>, expected: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            expected: expected.into(),
        }
    }
}

/// Why a section's table did not become its type: the dotted path inside the section, and
/// what was expected.
pub(crate) type SectionError = (String, String);

/// Reads one section's table into its type.
type Parse = fn(Value) -> Result<Arc<dyn Any + Send + Sync>, SectionError>;

/// A declared section, with its type erased so the loader can hold several.
#[derive(Clone, Copy)]
pub(crate) struct Declared {
    pub name: &'static str,
    pub type_id: TypeId,
    pub parse: Parse,
}

impl Declared {
    pub fn of<T: Section>() -> Self {
        Self {
            name: T::NAME,
            type_id: TypeId::of::<T>(),
            parse: parse::<T>,
        }
    }
}

fn parse<T: Section>(table: Value) -> Result<Arc<dyn Any + Send + Sync>, SectionError> {
    let section: T = serde_path_to_error::deserialize(table).map_err(|error| {
        let path = error.path().to_string();
        (path, error.into_inner().message().trim().to_owned())
    })?;
    section
        .validate()
        .map_err(|invalid| (invalid.key, invalid.expected))?;
    Ok(Arc::new(section))
}
