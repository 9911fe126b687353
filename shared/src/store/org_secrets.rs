//! Per-organisation provider credentials in AWS Secrets Manager: one secret
//! per organisation and kind, named `<ORG_SECRETS_PREFIX>/<org_id>/<kind>`
//! (the prefix is stack-scoped, `callops/<stack>/org` in the template, so
//! IAM grants one prefix: writers Create/Put/Describe/Delete, readers Get).
//!
//! Values are JSON documents whose shape belongs to their kind
//! (`providers::org_accounts` parses them); this module only moves text and
//! never prints it: errors carry the secret's name and the service's error
//! code, never a value.

use async_trait::async_trait;

use crate::base::config::Secret;

#[cfg(feature = "secrets")]
mod secrets_manager;
#[cfg(feature = "secrets")]
pub use secrets_manager::SecretsManagerOrgSecrets;

/// What an organisation's secret holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretKind {
    /// `{"account_sid", "auth_token"}` (+ optional `api_key_sid`, `api_key_secret`).
    Twilio,
    /// `{"api_key"}`.
    ElevenLabs,
    /// Where the organisation's notifications go: a Slack incoming webhook
    /// URL or bot token and channel, and/or an email address.
    Notifications,
}

impl SecretKind {
    pub const ALL: [SecretKind; 3] = [Self::Twilio, Self::ElevenLabs, Self::Notifications];

    /// The last segment of the secret's name, and the `{provider}` of the admin routes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Twilio => "twilio",
            Self::ElevenLabs => "elevenlabs",
            Self::Notifications => "notifications",
        }
    }

    /// How people call it, in error details.
    pub fn label(self) -> &'static str {
        match self {
            Self::Twilio => "Twilio account",
            Self::ElevenLabs => "ElevenLabs API key",
            Self::Notifications => "notification settings",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == value)
    }
}

/// The secret's name: `<prefix>/<org_id>/<kind>`. Organisation ids are
/// checked (letters, digits, `-`, `_`) before they get here, so a caller
/// cannot name another prefix.
pub fn secret_name(prefix: &str, org_id: &str, kind: SecretKind) -> String {
    format!(
        "{}/{org_id}/{}",
        prefix.trim_end_matches('/'),
        kind.as_str()
    )
}

/// Why a secret could not be read or written. Names and codes only.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OrgSecretError {
    /// The function's role may not (AccessDenied); an operator must fix IAM.
    #[error("not permitted on secret {name}: {code}")]
    Forbidden { name: String, code: String },
    /// Throttling, an outage, a timeout: worth a retry.
    #[error("secret {name} unavailable: {reason}")]
    Unavailable { name: String, reason: String },
}

/// One organisation's secrets, by kind.
#[async_trait]
pub trait OrgSecretStore: Send + Sync {
    /// The value, or `None` when the organisation has no such secret.
    async fn read(&self, org_id: &str, kind: SecretKind) -> Result<Option<Secret>, OrgSecretError>;
    /// Creates the secret, or stores a new version of it.
    async fn write(
        &self,
        org_id: &str,
        kind: SecretKind,
        value: &Secret,
    ) -> Result<(), OrgSecretError>;
    /// When the value last changed (RFC 3339), or `None` when there is none.
    async fn changed_at(
        &self,
        org_id: &str,
        kind: SecretKind,
    ) -> Result<Option<String>, OrgSecretError>;
    /// Deletes it at once (no recovery window, so it can be set again);
    /// `false` when there was none.
    async fn delete(&self, org_id: &str, kind: SecretKind) -> Result<bool, OrgSecretError>;
}

/// Secrets in memory, for unit tests of what reads them.
#[cfg(test)]
pub mod memory {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    pub struct MemoryOrgSecrets {
        pub values: Mutex<HashMap<(String, SecretKind), (Secret, String)>>,
        /// Organisations whose reads fail (an outage or a denial).
        pub failing: Mutex<Vec<String>>,
        pub reads: Mutex<usize>,
    }

    #[async_trait]
    impl OrgSecretStore for MemoryOrgSecrets {
        async fn read(
            &self,
            org_id: &str,
            kind: SecretKind,
        ) -> Result<Option<Secret>, OrgSecretError> {
            *self.reads.lock().unwrap() += 1;
            if self.failing.lock().unwrap().iter().any(|o| o == org_id) {
                return Err(OrgSecretError::Unavailable {
                    name: format!("{org_id}/{}", kind.as_str()),
                    reason: "ThrottlingException".into(),
                });
            }
            Ok(self
                .values
                .lock()
                .unwrap()
                .get(&(org_id.to_string(), kind))
                .map(|(v, _)| v.clone()))
        }

        async fn write(
            &self,
            org_id: &str,
            kind: SecretKind,
            value: &Secret,
        ) -> Result<(), OrgSecretError> {
            self.values.lock().unwrap().insert(
                (org_id.to_string(), kind),
                (value.clone(), crate::base::time::now_rfc3339()),
            );
            Ok(())
        }

        async fn changed_at(
            &self,
            org_id: &str,
            kind: SecretKind,
        ) -> Result<Option<String>, OrgSecretError> {
            Ok(self
                .values
                .lock()
                .unwrap()
                .get(&(org_id.to_string(), kind))
                .map(|(_, at)| at.clone()))
        }

        async fn delete(&self, org_id: &str, kind: SecretKind) -> Result<bool, OrgSecretError> {
            Ok(self
                .values
                .lock()
                .unwrap()
                .remove(&(org_id.to_string(), kind))
                .is_some())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefix_org_kind() {
        assert_eq!(
            secret_name("callops/prod/org/", "acme", SecretKind::Twilio),
            "callops/prod/org/acme/twilio"
        );
        assert_eq!(
            SecretKind::parse("elevenlabs"),
            Some(SecretKind::ElevenLabs)
        );
        assert_eq!(SecretKind::parse("exotel"), None);
    }
}
