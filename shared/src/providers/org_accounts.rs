//! Organisations' own provider accounts (Twilio, ElevenLabs), read from their
//! secrets (`store::org_secrets`) on first use and kept per warm instance for
//! a short TTL, so a rotation takes effect without a cold start. The cache is
//! bounded; a read that fails is not cached (the next request tries again)
//! and touches only its organisation.
//!
//! What a Twilio secret must hold: `account_sid` (`AC` + 32 hex) and
//! `auth_token` always, because Twilio signs every callback with the
//! account's auth token, whatever credential placed the call; optionally an
//! API key pair (`api_key_sid` = `SK` + 32 hex, `api_key_secret`), which
//! then authenticates our REST requests instead of the auth token (revocable
//! on its own). An ElevenLabs secret holds `api_key`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use crate::api::ApiError;
use crate::base::config::Secret;
use crate::providers::elevenlabs::ElevenLabsClient;
use crate::providers::org_notifications::OrgNotificationRoutes;
use crate::providers::twilio::TwilioClient;
use crate::store::org_secrets::{OrgSecretError, OrgSecretStore, SecretKind};

/// Longest credential accepted in a secret (Twilio's are 32 characters).
const MAX_CREDENTIAL_CHARS: usize = 256;

/// An organisation's Twilio account. `Debug` shows the SIDs only.
#[derive(Clone, PartialEq, Eq)]
pub struct TwilioAccount {
    pub account_sid: String,
    /// Verifies the account's callbacks; authenticates REST requests when
    /// there is no API key.
    pub auth_token: Secret,
    /// `(api_key_sid, api_key_secret)`.
    pub api_key: Option<(String, Secret)>,
}

impl fmt::Debug for TwilioAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioAccount")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"***")
            .field("api_key_sid", &self.api_key.as_ref().map(|(sid, _)| sid))
            .finish()
    }
}

/// An organisation's ElevenLabs key. `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct ElevenLabsAccount {
    pub api_key: Secret,
}

impl fmt::Debug for ElevenLabsAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ElevenLabsAccount(***)")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TwilioDoc {
    account_sid: String,
    auth_token: String,
    #[serde(default)]
    api_key_sid: Option<String>,
    #[serde(default)]
    api_key_secret: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ElevenLabsDoc {
    api_key: String,
}

/// `prefix` followed by exactly 32 hex digits (Twilio's SIDs).
pub fn valid_sid(value: &str, prefix: &str) -> bool {
    value.len() == prefix.len() + 32
        && value.starts_with(prefix)
        && value[prefix.len()..].chars().all(|c| c.is_ascii_hexdigit())
}

/// A credential: 8-256 visible ASCII characters.
fn valid_credential(value: &str) -> bool {
    (8..=MAX_CREDENTIAL_CHARS).contains(&value.len()) && value.chars().all(|c| c.is_ascii_graphic())
}

/// Why a document is not an account; says which field, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAccount(pub String);

impl TwilioAccount {
    /// Parses and checks a Twilio account document (the admin route's body
    /// and the secret's value have the same shape).
    pub fn parse(json: &[u8]) -> Result<Self, InvalidAccount> {
        let doc: TwilioDoc = serde_json::from_slice(json).map_err(|e| {
            // serde's messages quote unknown field names, never values of known ones.
            InvalidAccount(format!(
                "expected {{\"account_sid\", \"auth_token\"}} and optionally \
                 \"api_key_sid\" with \"api_key_secret\" ({})",
                e.classify_message()
            ))
        })?;
        if !valid_sid(&doc.account_sid, "AC") {
            return Err(InvalidAccount(
                "account_sid must be AC followed by 32 hex digits".into(),
            ));
        }
        if !valid_credential(&doc.auth_token) {
            return Err(InvalidAccount(
                "auth_token must be 8-256 visible characters (it verifies the account's callbacks)"
                    .into(),
            ));
        }
        let api_key = match (doc.api_key_sid, doc.api_key_secret) {
            (None, None) => None,
            (Some(sid), Some(secret)) => {
                if !valid_sid(&sid, "SK") {
                    return Err(InvalidAccount(
                        "api_key_sid must be SK followed by 32 hex digits".into(),
                    ));
                }
                if !valid_credential(&secret) {
                    return Err(InvalidAccount(
                        "api_key_secret must be 8-256 visible characters".into(),
                    ));
                }
                Some((sid, Secret::new(secret)))
            }
            _ => {
                return Err(InvalidAccount(
                    "api_key_sid and api_key_secret go together".into(),
                ))
            }
        };
        Ok(Self {
            account_sid: doc.account_sid,
            auth_token: Secret::new(doc.auth_token),
            api_key,
        })
    }

    /// The document stored in the secret.
    pub fn to_secret(&self) -> Secret {
        let mut doc = serde_json::json!({
            "account_sid": self.account_sid,
            "auth_token": self.auth_token.expose(),
        });
        if let Some((sid, secret)) = &self.api_key {
            doc["api_key_sid"] = sid.clone().into();
            doc["api_key_secret"] = secret.expose().into();
        }
        Secret::new(doc.to_string())
    }
}

/// `serde_json` messages without the echo of a string value.
trait Classify {
    fn classify_message(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_message(&self) -> &'static str {
        if self.is_syntax() || self.is_eof() {
            "the body is not JSON"
        } else {
            "a field is missing, unknown or not a string"
        }
    }
}

impl ElevenLabsAccount {
    pub fn parse(json: &[u8]) -> Result<Self, InvalidAccount> {
        let doc: ElevenLabsDoc = serde_json::from_slice(json).map_err(|e| {
            InvalidAccount(format!(
                "expected {{\"api_key\"}} ({})",
                e.classify_message()
            ))
        })?;
        if !valid_credential(&doc.api_key) {
            return Err(InvalidAccount(
                "api_key must be 8-256 visible characters".into(),
            ));
        }
        Ok(Self {
            api_key: Secret::new(doc.api_key),
        })
    }

    pub fn to_secret(&self) -> Secret {
        Secret::new(serde_json::json!({"api_key": self.api_key.expose()}).to_string())
    }
}

/// An organisation's account exists but cannot be used now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountError {
    pub org_id: String,
    pub kind: SecretKind,
    pub problem: AccountProblem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountProblem {
    /// Throttling or an outage: retry.
    Unavailable,
    /// The function may not read it (IAM), or what it holds is not an account.
    Unusable,
}

impl From<AccountError> for ApiError {
    /// Names the organisation and the setting, never a value.
    fn from(err: AccountError) -> Self {
        let what = format!("organisation {}'s {}", err.org_id, err.kind.label());
        match err.problem {
            AccountProblem::Unavailable => ApiError::ServiceUnavailable {
                code: "org_account_unavailable",
                detail: format!("{what} could not be read; retry shortly"),
            },
            AccountProblem::Unusable => ApiError::BadGateway {
                code: "org_account_unreadable",
                detail: format!(
                    "{what} could not be read; the operator must check it \
                     (PUT /organisations/{}/providers/{})",
                    err.org_id,
                    err.kind.as_str()
                ),
            },
        }
    }
}

/// Organisations' own accounts, cached per warm instance.
pub struct OrgAccounts {
    store: Arc<dyn OrgSecretStore>,
    ttl: Duration,
    capacity: usize,
    /// What new clients use (timeouts, base URLs): the deployment's.
    http: reqwest::Client,
    twilio_base_url: String,
    elevenlabs_base_url: String,
    /// `(org, kind)` -> when read, and the value (`None`: the org has none).
    entries: Mutex<HashMap<CacheKey, (Instant, Option<Secret>)>>,
}

/// An organisation and the kind of its secret.
type CacheKey = (String, SecretKind);

/// Settings of [`OrgAccounts`] (wiring reads them).
pub struct OrgAccountSettings {
    /// `ORG_SECRETS_TTL_SECONDS`: how long a read value is used.
    pub ttl: Duration,
    /// `ORG_SECRETS_CACHE_SIZE`: most organisation secrets kept.
    pub capacity: usize,
    pub http: reqwest::Client,
    pub twilio_base_url: String,
    pub elevenlabs_base_url: String,
}

impl OrgAccounts {
    pub fn new(store: Arc<dyn OrgSecretStore>, settings: OrgAccountSettings) -> Self {
        Self {
            store,
            ttl: settings.ttl,
            capacity: settings.capacity.max(1),
            http: settings.http,
            twilio_base_url: settings.twilio_base_url,
            elevenlabs_base_url: settings.elevenlabs_base_url,
            entries: Mutex::default(),
        }
    }

    fn cached(&self, key: &CacheKey) -> Option<Option<Secret>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(read_at, _)| read_at.elapsed() < self.ttl)
            .map(|(_, value)| value.clone())
    }

    fn remember(&self, key: CacheKey, value: Option<Secret>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if !entries.contains_key(&key) && entries.len() >= self.capacity {
            // Expired ones first; else the oldest read.
            entries.retain(|_, (read_at, _)| read_at.elapsed() < self.ttl);
            if entries.len() >= self.capacity {
                if let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (read_at, _))| *read_at)
                    .map(|(k, _)| k.clone())
                {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(key, (Instant::now(), value));
    }

    /// How many secrets are held now.
    pub fn cached_len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    async fn secret(&self, org_id: &str, kind: SecretKind) -> Result<Option<Secret>, AccountError> {
        let key = (org_id.to_string(), kind);
        if let Some(value) = self.cached(&key) {
            return Ok(value);
        }
        match self.store.read(org_id, kind).await {
            Ok(value) => {
                self.remember(key, value.clone());
                Ok(value)
            }
            Err(err) => {
                tracing::error!(org_id, kind = kind.as_str(), error = %err, "organisation's provider account unreadable");
                let problem = match err {
                    OrgSecretError::Forbidden { .. } => AccountProblem::Unusable,
                    OrgSecretError::Unavailable { .. } => AccountProblem::Unavailable,
                };
                Err(AccountError {
                    org_id: org_id.to_string(),
                    kind,
                    problem,
                })
            }
        }
    }

    fn unusable(org_id: &str, kind: SecretKind, err: &InvalidAccount) -> AccountError {
        tracing::error!(org_id, kind = kind.as_str(), problem = %err, "organisation's provider secret is malformed");
        AccountError {
            org_id: org_id.to_string(),
            kind,
            problem: AccountProblem::Unusable,
        }
    }

    /// `org_id`'s own Twilio account, or `None` when it has none.
    pub async fn twilio(&self, org_id: &str) -> Result<Option<TwilioAccount>, AccountError> {
        let kind = SecretKind::Twilio;
        let Some(value) = self.secret(org_id, kind).await? else {
            return Ok(None);
        };
        TwilioAccount::parse(value.expose().as_bytes())
            .map(Some)
            .map_err(|err| Self::unusable(org_id, kind, &err))
    }

    /// `org_id`'s own ElevenLabs key, or `None` when it has none.
    pub async fn elevenlabs(
        &self,
        org_id: &str,
    ) -> Result<Option<ElevenLabsAccount>, AccountError> {
        let kind = SecretKind::ElevenLabs;
        let Some(value) = self.secret(org_id, kind).await? else {
            return Ok(None);
        };
        ElevenLabsAccount::parse(value.expose().as_bytes())
            .map(Some)
            .map_err(|err| Self::unusable(org_id, kind, &err))
    }

    /// Where `org_id`'s own notifications go, or `None` when it has no
    /// routes of its own (the deployment's apply).
    pub async fn notifications(
        &self,
        org_id: &str,
    ) -> Result<Option<OrgNotificationRoutes>, AccountError> {
        let kind = SecretKind::Notifications;
        let Some(value) = self.secret(org_id, kind).await? else {
            return Ok(None);
        };
        OrgNotificationRoutes::parse(value.expose().as_bytes())
            .map(Some)
            .map_err(|err| Self::unusable(org_id, kind, &err))
    }

    /// A client for `org_id`'s own Twilio account, if it has one.
    pub async fn twilio_client(&self, org_id: &str) -> Result<Option<TwilioClient>, AccountError> {
        Ok(self.twilio(org_id).await?.map(|account| TwilioClient {
            http: self.http.clone(),
            base_url: self.twilio_base_url.clone(),
            account_sid: account.account_sid,
            auth_token: account.auth_token,
            api_key: account.api_key,
        }))
    }

    /// A client for `org_id`'s own ElevenLabs key, if it has one.
    pub async fn elevenlabs_client(
        &self,
        org_id: &str,
    ) -> Result<Option<ElevenLabsClient>, AccountError> {
        Ok(self
            .elevenlabs(org_id)
            .await?
            .map(|account| ElevenLabsClient {
                http: self.http.clone(),
                base_url: self.elevenlabs_base_url.clone(),
                api_key: account.api_key,
            }))
    }
}

/// Callback tokens of organisations' own Twilio accounts: the tenancy store
/// says which organisation owns `twilio#<AccountSid>`, its secret gives the
/// auth token. A claim whose organisation's secret is missing or holds
/// another account (a stale claim) is no account: the request is refused.
pub struct OrgTwilioTokens {
    pub tenancy: Arc<dyn crate::store::tenancy::TenancyStore>,
    pub orgs: Arc<OrgAccounts>,
}

#[async_trait::async_trait]
impl crate::providers::twilio::AccountTokens for OrgTwilioTokens {
    async fn token_for(&self, account_sid: &str) -> Result<Option<(String, Secret)>, ApiError> {
        let key = crate::store::tenancy::Kind::Twilio.key(account_sid);
        let owner = self.tenancy.owner(&key).await.map_err(|err| {
            tracing::error!(error = %err, "tenancy store unavailable: Twilio request not checked");
            ApiError::Unavailable
        })?;
        let Some(org_id) = owner else {
            return Ok(None);
        };
        let account = self.orgs.twilio(&org_id).await?;
        Ok(account
            .filter(|account| account.account_sid == account_sid)
            .map(|account| (org_id, account.auth_token)))
    }
}

/// The Twilio client for one organisation's calls, messages and hang-ups:
/// its own account when it has one, else the deployment's (`None` when
/// neither exists). Without `orgs` (no `ORG_SECRETS_PREFIX`) every
/// organisation uses the deployment's.
pub async fn twilio_for(
    orgs: Option<&OrgAccounts>,
    deployment: Option<&TwilioClient>,
    org_id: Option<&str>,
) -> Result<Option<TwilioClient>, ApiError> {
    if let (Some(orgs), Some(org_id)) = (orgs, org_id) {
        if let Some(own) = orgs.twilio_client(org_id).await? {
            return Ok(Some(own));
        }
    }
    Ok(deployment.cloned())
}

/// The deployment's Twilio client and the organisations' own accounts: what
/// a route or worker that sends Twilio traffic for many organisations holds.
#[derive(Clone)]
pub struct TwilioAccounts {
    pub deployment: TwilioClient,
    /// `None`: every organisation uses the deployment's account.
    pub orgs: Option<Arc<OrgAccounts>>,
}

impl From<TwilioClient> for TwilioAccounts {
    fn from(deployment: TwilioClient) -> Self {
        Self {
            deployment,
            orgs: None,
        }
    }
}

impl TwilioAccounts {
    /// The client for `org_id`'s traffic: its own account when it has one,
    /// else the deployment's (also for traffic of no organisation).
    pub async fn account_for(&self, org_id: Option<&str>) -> Result<TwilioClient, ApiError> {
        Ok(
            twilio_for(self.orgs.as_deref(), Some(&self.deployment), org_id)
                .await?
                .unwrap_or_else(|| self.deployment.clone()),
        )
    }
}

/// [`twilio_for`] for ElevenLabs.
pub async fn elevenlabs_for(
    orgs: Option<&OrgAccounts>,
    deployment: Option<&ElevenLabsClient>,
    org_id: Option<&str>,
) -> Result<Option<ElevenLabsClient>, ApiError> {
    if let (Some(orgs), Some(org_id)) = (orgs, org_id) {
        if let Some(own) = orgs.elevenlabs_client(org_id).await? {
            return Ok(Some(own));
        }
    }
    Ok(deployment.cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::org_secrets::memory::MemoryOrgSecrets;

    const SID_A: &str = "AC0123456789abcdef0123456789abcdef";
    const TOKEN_A: &str = "token-of-account-a-0123456789abcd";

    fn doc(sid: &str, token: &str) -> Secret {
        Secret::new(serde_json::json!({"account_sid": sid, "auth_token": token}).to_string())
    }

    fn accounts(store: Arc<MemoryOrgSecrets>, ttl: Duration, capacity: usize) -> OrgAccounts {
        OrgAccounts::new(
            store,
            OrgAccountSettings {
                ttl,
                capacity,
                http: reqwest::Client::new(),
                twilio_base_url: "http://twilio.invalid".into(),
                elevenlabs_base_url: "http://elevenlabs.invalid".into(),
            },
        )
    }

    #[test]
    fn twilio_documents_are_checked_field_by_field_without_echoing_values() {
        let ok = TwilioAccount::parse(doc(SID_A, TOKEN_A).expose().as_bytes()).unwrap();
        assert_eq!(ok.account_sid, SID_A);
        assert_eq!(ok.api_key, None);
        let debug = format!("{ok:?}");
        assert!(!debug.contains(TOKEN_A), "{debug}");

        let bad_sid = TwilioAccount::parse(doc("AC123", TOKEN_A).expose().as_bytes()).unwrap_err();
        assert!(bad_sid.0.contains("account_sid"), "{bad_sid}");
        let key_without_secret = serde_json::json!({
            "account_sid": SID_A, "auth_token": TOKEN_A,
            "api_key_sid": "SK0123456789abcdef0123456789abcdef"
        });
        let err = TwilioAccount::parse(key_without_secret.to_string().as_bytes()).unwrap_err();
        assert!(err.0.contains("go together"), "{err}");
        let with_key = serde_json::json!({
            "account_sid": SID_A, "auth_token": TOKEN_A,
            "api_key_sid": "SK0123456789abcdef0123456789abcdef",
            "api_key_secret": "key-secret-value-123"
        });
        let parsed = TwilioAccount::parse(with_key.to_string().as_bytes()).unwrap();
        assert_eq!(
            TwilioAccount::parse(parsed.to_secret().expose().as_bytes()).unwrap(),
            parsed
        );
        assert!(!format!("{parsed:?}").contains("key-secret-value-123"));
        // No auth token: refused, callbacks could not be verified.
        let err = TwilioAccount::parse(
            serde_json::json!({"account_sid": SID_A, "api_key_sid": "SK0123456789abcdef0123456789abcdef", "api_key_secret": "key-secret-value-123"})
                .to_string()
                .as_bytes(),
        )
        .unwrap_err();
        assert!(!err.0.contains("key-secret-value-123"), "{err}");
        let long = "x".repeat(300);
        assert!(TwilioAccount::parse(doc(SID_A, &long).expose().as_bytes()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn values_are_read_once_per_ttl_and_rotation_shows_after_it() {
        let store = Arc::new(MemoryOrgSecrets::default());
        store
            .write("acme", SecretKind::Twilio, &doc(SID_A, TOKEN_A))
            .await
            .unwrap();
        let orgs = accounts(Arc::clone(&store), Duration::from_secs(60), 10);
        let first = orgs.twilio("acme").await.unwrap().unwrap();
        assert_eq!(first.auth_token.expose(), TOKEN_A);
        store
            .write(
                "acme",
                SecretKind::Twilio,
                &doc(SID_A, "rotated-token-0123456789"),
            )
            .await
            .unwrap();
        let cached = orgs.twilio("acme").await.unwrap().unwrap();
        assert_eq!(cached.auth_token.expose(), TOKEN_A, "within the TTL");
        assert_eq!(*store.reads.lock().unwrap(), 1);
        tokio::time::advance(Duration::from_secs(61)).await;
        let fresh = orgs.twilio("acme").await.unwrap().unwrap();
        assert_eq!(fresh.auth_token.expose(), "rotated-token-0123456789");
        // An organisation without a secret has none (and that is cached too).
        assert_eq!(orgs.twilio("globex").await.unwrap(), None);
        assert_eq!(orgs.twilio("globex").await.unwrap(), None);
        assert_eq!(*store.reads.lock().unwrap(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_is_bounded() {
        let store = Arc::new(MemoryOrgSecrets::default());
        let orgs = accounts(Arc::clone(&store), Duration::from_secs(60), 2);
        for org in ["a", "b", "c", "d"] {
            orgs.twilio(org).await.unwrap();
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(orgs.cached_len(), 2);
        // The newest stay: "d" is served from memory, "a" is read again.
        let reads = *store.reads.lock().unwrap();
        orgs.twilio("d").await.unwrap();
        assert_eq!(*store.reads.lock().unwrap(), reads);
        orgs.twilio("a").await.unwrap();
        assert_eq!(*store.reads.lock().unwrap(), reads + 1);
    }

    #[tokio::test]
    async fn an_unreadable_account_fails_its_organisation_only_and_names_the_setting() {
        let store = Arc::new(MemoryOrgSecrets::default());
        store
            .write("acme", SecretKind::Twilio, &doc(SID_A, TOKEN_A))
            .await
            .unwrap();
        store
            .write("globex", SecretKind::Twilio, &doc(SID_A, TOKEN_A))
            .await
            .unwrap();
        store.failing.lock().unwrap().push("acme".into());
        let orgs = accounts(Arc::clone(&store), Duration::ZERO, 10);
        let deployment = TwilioClient {
            http: reqwest::Client::new(),
            base_url: "http://twilio.invalid".into(),
            account_sid: "ACffffffffffffffffffffffffffffffff".into(),
            auth_token: Secret::new("deployment-token"),
            api_key: None,
        };
        let err = twilio_for(Some(&orgs), Some(&deployment), Some("acme"))
            .await
            .unwrap_err();
        assert_eq!(err.status(), 503);
        assert_eq!(err.code(), "org_account_unavailable");
        assert_eq!(
            err.detail(),
            "organisation acme's Twilio account could not be read; retry shortly"
        );
        assert!(!err.detail().contains(TOKEN_A));
        let other = twilio_for(Some(&orgs), Some(&deployment), Some("globex"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(other.account_sid, SID_A);
        let none = twilio_for(Some(&orgs), Some(&deployment), Some("initech"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(none.account_sid, deployment.account_sid, "the deployment's");
        // A malformed secret: 502 naming the setting, never its text.
        store
            .write(
                "initech",
                SecretKind::Twilio,
                &Secret::new("{\"account_sid\": \"oops-secret\"}"),
            )
            .await
            .unwrap();
        let err = twilio_for(Some(&orgs), Some(&deployment), Some("initech"))
            .await
            .unwrap_err();
        assert_eq!(err.status(), 502);
        assert!(
            err.detail().contains("initech's Twilio account"),
            "{}",
            err.detail()
        );
        assert!(!err.detail().contains("oops-secret"));
    }
}
