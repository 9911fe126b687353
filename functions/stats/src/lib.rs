//! `GET /stats`: the processing counters, read from one item (never a scan).

use std::sync::Arc;

use http::StatusCode;
use lambda_http::{Body, Response};
use serde::Serialize;
use shared::api::ApiError;
use shared::store::stats::{Stats, StatsStore};
use shared::wiring::Wiring;

pub struct StatsEndpoint {
    pub stats: Arc<dyn StatsStore>,
}

#[derive(Serialize)]
struct StatsBody {
    #[serde(flatten)]
    stats: Stats,
    timestamp: String,
}

impl StatsEndpoint {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        Ok(Self {
            stats: Wiring::load().await.stats()?,
        })
    }

    pub async fn handle(&self) -> Response<Body> {
        let result = self.stats.read().await.map_err(|err| {
            tracing::error!(error = %err, "stats not readable");
            ApiError::Unavailable
        });
        shared::api::respond(result.map(|stats| {
            (
                StatusCode::OK,
                StatsBody {
                    stats,
                    timestamp: shared::base::time::now_rfc3339(),
                },
            )
        }))
    }
}
