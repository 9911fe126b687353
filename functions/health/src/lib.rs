//! `GET /health`: seed 001's health document. Reading the stats item doubles
//! as the database check.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::{Body, Response};
use serde::Serialize;
use shared::base::config;
use shared::store::stats::StatsStore;
use shared::wiring::Wiring;

pub struct Health {
    pub stats: Arc<dyn StatsStore>,
    pub transcription_enabled: bool,
    pub slack_enabled: bool,
}

#[derive(Serialize)]
struct HealthStats {
    total_processed: u64,
    successfully_posted: u64,
    failed: u64,
}

#[derive(Serialize)]
struct Services {
    transcription: &'static str,
    slack: &'static str,
}

#[derive(Serialize)]
struct HealthBody {
    status: &'static str,
    timestamp: String,
    database: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<HealthStats>,
    services: Services,
}

fn enabled(on: bool) -> &'static str {
    if on {
        "enabled"
    } else {
        "disabled"
    }
}

impl Health {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        // The template passes these flags; a local run derives them from the keys.
        let transcription_default = config::optional("ASSEMBLYAI_API_KEY").is_some();
        let slack_default = config::optional("SLACK_WEBHOOK_URL").is_some()
            || config::optional("SLACK_BOT_TOKEN").is_some();
        Ok(Self {
            stats: Wiring::load().await.stats()?,
            transcription_enabled: config::parsed_or::<bool>(
                "TRANSCRIPTION_ENABLED",
                transcription_default,
            )?,
            slack_enabled: config::parsed_or::<bool>("SLACK_ENABLED", slack_default)?,
        })
    }

    pub async fn handle(&self) -> Response<Body> {
        let services = Services {
            transcription: enabled(self.transcription_enabled),
            slack: enabled(self.slack_enabled),
        };
        let timestamp = shared::base::time::now_rfc3339();
        match self.stats.read().await {
            Ok(stats) => shared::api::json(
                StatusCode::OK,
                &HealthBody {
                    status: "healthy",
                    timestamp,
                    database: "connected",
                    stats: Some(HealthStats {
                        total_processed: stats.total_processed,
                        successfully_posted: stats.successfully_posted,
                        failed: stats.failed,
                    }),
                    services,
                },
            ),
            Err(err) => {
                tracing::error!(error = %err, "health check could not read the stats table");
                shared::api::json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &HealthBody {
                        status: "unhealthy",
                        timestamp,
                        database: "unreachable",
                        stats: None,
                        services,
                    },
                )
            }
        }
    }
}
