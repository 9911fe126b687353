//! Reading configuration from the environment, once per cold start.
//!
//! Each function builds its own typed `Config` from these helpers so a missing
//! variable fails the cold start with its name, not a request later.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing required environment variable {0}")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    /// Nothing configured for something production needs; names what to set.
    #[error("no {what} configured: set {set}")]
    Unconfigured {
        what: &'static str,
        set: &'static str,
    },
}

/// Running inside AWS Lambda (the runtime sets `AWS_LAMBDA_FUNCTION_NAME`).
/// Local conveniences (console output, loopback recordings) are off there.
pub fn in_lambda() -> bool {
    optional("AWS_LAMBDA_FUNCTION_NAME").is_some()
}

/// A configuration value that must never be printed: `Debug` shows a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for the one place that sends it to its provider.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A variable that must be set and non-empty.
pub fn required(name: &'static str) -> Result<String, ConfigError> {
    optional(name).ok_or(ConfigError::Missing(name))
}

/// A variable that may be absent; an empty value counts as absent, because
/// SAM passes unset optional parameters as "". A credential read from
/// Secrets Manager at cold start (`<NAME>_SECRET_ARN`) answers for `<NAME>`.
pub fn optional(name: &'static str) -> Option<String> {
    crate::base::secrets::get(name)
        .map(str::to_string)
        .or_else(|| std::env::var(name).ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

pub fn required_secret(name: &'static str) -> Result<Secret, ConfigError> {
    required(name).map(Secret::new)
}

pub fn optional_secret(name: &'static str) -> Option<Secret> {
    optional(name).map(Secret::new)
}

/// A parsed variable with a default when absent.
pub fn parsed_or<T>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match optional(name) {
        None => Ok(default),
        Some(raw) => raw.parse().map_err(|e: T::Err| ConfigError::Invalid {
            name,
            reason: e.to_string(),
        }),
    }
}

/// A base URL, without a trailing slash so paths can be appended.
pub fn base_url_or(name: &'static str, default: &str) -> Result<String, ConfigError> {
    let raw = optional(name).unwrap_or_else(|| default.to_string());
    url::Url::parse(&raw).map_err(|e| ConfigError::Invalid {
        name,
        reason: e.to_string(),
    })?;
    Ok(raw.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_never_shows_the_value() {
        let s = Secret::new("xoxb-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "xoxb-very-secret");
    }
}
