//! `GET /stats`: the processing counters, read from one item (never a scan).
//! Without a key, the deployment's counters (as always); with an
//! organisation's API key, that organisation's calls only.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use shared::api::{access, ApiError};
use shared::store::api_keys::{ApiKeyStore, KeyPurpose};
use shared::store::stats::{Stats, StatsStore};
use shared::wiring::Wiring;

pub struct StatsEndpoint {
    pub stats: Arc<dyn StatsStore>,
    pub api_keys: Arc<dyn ApiKeyStore>,
}

#[derive(Serialize)]
struct StatsBody {
    #[serde(flatten)]
    stats: Stats,
    timestamp: String,
}

impl StatsEndpoint {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            stats: aws.stats()?,
            api_keys: aws.api_keys()?,
        })
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        shared::api::respond(self.counters(&request).await.map(|stats| {
            (
                StatusCode::OK,
                StatsBody {
                    stats,
                    timestamp: shared::base::time::now_rfc3339(),
                },
            )
        }))
    }

    /// The deployment's counters, or an organisation's for its API key. A
    /// presented API key must be valid: a bad one is 401, never the
    /// deployment's numbers.
    async fn counters(&self, request: &Request) -> Result<Stats, ApiError> {
        let unreadable = |err: shared::store::StoreError| {
            tracing::error!(error = %err, "stats not readable");
            ApiError::Unavailable
        };
        let presents_api_key = access::presented_key(request.headers())
            .is_some_and(|key| key.starts_with(KeyPurpose::Api.prefix()));
        if !presents_api_key {
            return self.stats.read().await.map_err(unreadable);
        }
        let tenant = access::authenticate_tenant(self.api_keys.as_ref(), request.headers()).await?;
        self.stats
            .read_org(&tenant.org_id)
            .await
            .map_err(unreadable)
    }
}
