//! The building blocks every module's configuration uses: [`ConfigError`], which names the
//! key at fault, and secrets given inline or as a file. A leaf: it knows no module's config.

use std::path::PathBuf;

use crate::secret::Secret;

/// A configuration that could not be loaded; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file given with `--config` does not exist or cannot be read.
    #[error("cannot read config file '{path}': {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A key has the wrong type, an unknown name, or cannot be parsed.
    #[error("{0}")]
    Parse(String),
    /// A key parsed but its value is not acceptable.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// Why the value is rejected.
        reason: String,
    },
}

impl ConfigError {
    /// Shorthand for [`ConfigError::Invalid`].
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// A secret given inline (`<name>`) or as a file (`<name>_file`, trailing newline removed).
/// `key` is the config path of the entry; the error names the key at fault.
pub fn from_value_or_file(
    key: &str,
    name: &str,
    value: Option<&Secret>,
    file: Option<&std::path::Path>,
) -> Result<Option<Secret>, ConfigError> {
    match (value, file) {
        (None, None) => Ok(None),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|s| Some(Secret::new(s.trim_end_matches(['\r', '\n']))))
            .map_err(|e| {
                ConfigError::invalid(
                    format!("{key}.{name}_file"),
                    format!("cannot read '{}': {e}", path.display()),
                )
            }),
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            format!("{key}.{name}"),
            format!("give {name} or {name}_file, not both"),
        )),
    }
}
