//! The calls table's stream, filtered to new recording-pipeline records and
//! call starts (template.yaml, `NewCallRecords`): each call's transcription
//! is queued and the new calls counted, each start carried out and its
//! notification queued (`shared::flows::call_stream`). Failed records are
//! reported by sequence number, so Lambda retries from the first of them.

use std::time::Duration;

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use shared::base::config;
use shared::flows::call_stream::NewCallRecords;
use shared::queue::stream_batch::changes_of;
pub use shared::queue::stream_batch::failed_records;
use shared::wiring::Wiring;

pub struct CallsStream {
    pub dispatcher: NewCallRecords,
}

impl CallsStream {
    /// `TRANSCRIPTION_QUEUE_URL`, `STATS_TABLE`, `TRANSCRIPTION_DEADLINE_SECONDS`,
    /// `CALLS_TABLE` (sessions), `NOTIFICATION_QUEUE_URL`, `CAMPAIGNS_TABLE`
    /// and `ORGANISATIONS_TABLE` (campaign attempts and their slots).
    pub async fn from_env() -> Result<Self, lambda_runtime::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            dispatcher: NewCallRecords {
                transcription_queue: aws.queue("TRANSCRIPTION_QUEUE_URL")?,
                stats: aws.stats()?,
                transcription_deadline: Duration::from_secs(config::parsed_or(
                    "TRANSCRIPTION_DEADLINE_SECONDS",
                    3600,
                )?),
                starts: aws.started_calls()?,
                notification_queue: aws.notification_queue()?,
                campaign_calls: shared::flows::campaign_calls::CampaignCallEnds {
                    store: aws.campaigns()?,
                    clock: std::sync::Arc::new(shared::base::time::SystemClock),
                },
            },
        })
    }

    pub async fn handle(&self, event: Event) -> DynamoDbEventResponse {
        failed_records(self.dispatcher.handle(changes_of(event)).await)
    }
}
