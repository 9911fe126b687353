//! Provider events from SQS: Twilio status callbacks and ElevenLabs
//! post-call webhooks, acknowledged by their routes and applied here with
//! SQS's retries (`shared::flows::provider_events`). A failure is retried
//! and reaches the DLQ after 5 receives; nothing the sender was told 200
//! about is dropped.

use aws_lambda_events::event::sqs::SqsMessage;
use shared::flows::provider_events::{Applied, ProviderEventProcessor};
use shared::queue::jobs::ProviderEvent;
use shared::queue::sqs_batch::{Outcome, Worker};
use shared::wiring::{self, Wiring};
use tracing::{error, info, warn};

pub struct ProviderEventsWorker {
    pub processor: ProviderEventProcessor,
}

impl ProviderEventsWorker {
    pub async fn from_env() -> Result<Self, lambda_runtime::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            processor: ProviderEventProcessor {
                calls: aws.outbound_calls()?,
                dedup: aws.dedup()?,
                bodies: aws.event_bodies()?,
                notification_queue: aws.notification_queue()?,
                lease: wiring::dedup_lease()?,
                sessions: Some(std::sync::Arc::new(aws.session_lifecycle(false)?)),
                tenancy: aws.tenancy()?,
                default_org: shared::base::config::optional("INBOUND_ORG_ID"),
            },
        })
    }
}

impl Worker for ProviderEventsWorker {
    async fn process(&self, message: SqsMessage) -> Outcome {
        let event: ProviderEvent = match serde_json::from_str(message.body.as_deref().unwrap_or(""))
        {
            Ok(event) => event,
            Err(err) => {
                // Only our routes write here; left for the DLQ and its alarm.
                error!(error = %err, "unreadable provider event");
                return Outcome::Retry;
            }
        };
        match self.processor.apply(&event).await {
            Ok(Applied::Done(result)) => {
                info!(%result, "provider event applied");
                Outcome::Done
            }
            Ok(Applied::Duplicate) => {
                info!("provider event already applied");
                Outcome::Done
            }
            Ok(Applied::Ignored(kind)) => {
                info!(%kind, "provider event ignored");
                Outcome::Done
            }
            Err(reason) => {
                warn!(%reason, "provider event not applied; message will be retried");
                Outcome::Retry
            }
        }
    }
}
