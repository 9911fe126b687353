//! Who may call a route: API keys (presented in `X-API-Key` or as a bearer
//! token, checked in constant time) and a per-key request limit.

use http::HeaderMap;

use crate::api::ApiError;
use crate::store::api_keys::{self, key_id, ApiKeyRecord, ApiKeyStore, KeyPurpose};
use crate::store::rate_limits::RateLimiter;

/// The key from `X-API-Key` or `Authorization: Bearer`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::trim)
}

/// Checks the request's key: known, not revoked, and matching in constant time.
pub async fn authenticate(
    store: &dyn ApiKeyStore,
    headers: &HeaderMap,
) -> Result<ApiKeyRecord, ApiError> {
    let presented = presented_key(headers).ok_or(ApiError::Unauthorized)?;
    let id = key_id(presented).ok_or(ApiError::Unauthorized)?;
    let record = store
        .find(id)
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "API key store unavailable");
            ApiError::Unavailable
        })?
        .ok_or(ApiError::Unauthorized)?;
    // A webhook token is never an API key, whatever it matches.
    if !api_keys::accepts(&record, presented, KeyPurpose::Api) {
        return Err(ApiError::Unauthorized);
    }
    Ok(record)
}

/// What `organisation-create` accepts as an id: 1-64 letters, digits, `-`, `_`.
pub fn valid_org_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// Who is calling: a valid key and the organisation it belongs to. Routes
/// that read or spend an organisation's calls take this, never a bare key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub key_id: String,
    pub org_id: String,
}

impl Tenant {
    /// A key made before keys had organisations is refused with how to fix it.
    pub fn of(record: &ApiKeyRecord) -> Result<Self, ApiError> {
        let org_id = record
            .org_id
            .clone()
            .ok_or_else(|| ApiError::NotPermitted {
                code: "api_key_without_organisation",
                detail: format!(
                    "API key {} belongs to no organisation; assign one with \
                 `callops-admin api-keys assign {} --org <org_id>`",
                    record.key_id, record.key_id
                ),
            })?;
        Ok(Self {
            key_id: record.key_id.clone(),
            org_id,
        })
    }
}

/// A valid key that belongs to an organisation.
pub async fn authenticate_tenant(
    store: &dyn ApiKeyStore,
    headers: &HeaderMap,
) -> Result<Tenant, ApiError> {
    Tenant::of(&authenticate(store, headers).await?)
}

/// Refuses the request once `key` has made more than `per_minute` this minute.
pub async fn enforce(
    limiter: &dyn RateLimiter,
    key: &str,
    per_minute: u64,
) -> Result<(), ApiError> {
    let hits = limiter.hit(key).await.map_err(|err| {
        tracing::error!(error = %err, "rate limiter unavailable");
        ApiError::Unavailable
    })?;
    if hits > per_minute {
        return Err(ApiError::TooManyRequests {
            code: "rate_limited",
            detail: format!(
                "Rate limit exceeded: at most {per_minute} requests per minute for this API key"
            ),
        });
    }
    Ok(())
}

/// API-key access with a per-key request limit, as the outbound-call routes use it.
pub struct KeyedAccess {
    pub api_keys: std::sync::Arc<dyn crate::store::api_keys::ApiKeyStore>,
    pub rate_limiter: std::sync::Arc<dyn RateLimiter>,
    /// Requests per window per key (`CALLS_RATE_LIMIT_PER_MINUTE`).
    pub per_window: u64,
}

impl KeyedAccess {
    /// The caller's organisation, once its key is valid and within its limit.
    pub async fn admit(&self, headers: &http::HeaderMap) -> Result<Tenant, ApiError> {
        let tenant = authenticate_tenant(self.api_keys.as_ref(), headers).await?;
        enforce(self.rate_limiter.as_ref(), &tenant.key_id, self.per_window).await?;
        Ok(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails the test if the request gets as far as a lookup.
    struct UntouchableStore;

    #[async_trait::async_trait]
    impl ApiKeyStore for UntouchableStore {
        async fn find(&self, _: &str) -> Result<Option<ApiKeyRecord>, crate::store::StoreError> {
            panic!("an over-long key reached the key store")
        }
        async fn insert(&self, _: &ApiKeyRecord) -> Result<(), crate::store::StoreError> {
            unreachable!()
        }
        async fn revoke(&self, _: &str) -> Result<bool, crate::store::StoreError> {
            unreachable!()
        }
        async fn assign(&self, _: &str, _: &str) -> Result<bool, crate::store::StoreError> {
            unreachable!()
        }
        async fn list(&self) -> Result<Vec<ApiKeyRecord>, crate::store::StoreError> {
            unreachable!()
        }
    }

    #[tokio::test]
    async fn over_long_keys_are_refused_before_the_store() {
        for key in [
            format!("cok_abcdef123456_{}", "s".repeat(300)),
            format!("cok_{}_secret", "a".repeat(40)),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("x-api-key", key.parse().unwrap());
            assert!(matches!(
                authenticate(&UntouchableStore, &headers).await,
                Err(ApiError::Unauthorized)
            ));
        }
    }

    #[test]
    fn keys_come_from_either_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_key(&headers), None);
        headers.insert("authorization", "Bearer cok_a_b".parse().unwrap());
        assert_eq!(presented_key(&headers), Some("cok_a_b"));
        headers.insert("x-api-key", "cok_c_d".parse().unwrap());
        assert_eq!(presented_key(&headers), Some("cok_c_d"));
    }
}
