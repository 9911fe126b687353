//! The calls table's stream, filtered to new recording-pipeline records
//! (template.yaml, `NewCallRecords`): each one's transcription is queued and
//! the new calls counted (`shared::flows::call_stream`). Failed records are
//! reported by sequence number, so Lambda retries from the first of them.

use std::time::Duration;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use shared::base::config;
use shared::flows::call_stream::{NewCallRecords, StreamChange};
use shared::wiring::Wiring;

pub struct CallsStream {
    pub dispatcher: NewCallRecords,
}

impl CallsStream {
    /// `TRANSCRIPTION_QUEUE_URL`, `STATS_TABLE`, `TRANSCRIPTION_DEADLINE_SECONDS`.
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
            },
        })
    }

    pub async fn handle(&self, event: Event) -> DynamoDbEventResponse {
        let changes = event.records.into_iter().map(change).collect();
        failed_records(self.dispatcher.handle(changes).await)
    }
}

/// The answer that names `sequences` as failed: Lambda retries from the
/// lowest of them.
pub fn failed_records(sequences: Vec<String>) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures = sequences
        .into_iter()
        .map(|sequence| {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(sequence);
            failure
        })
        .collect();
    response
}

fn change(record: EventRecord) -> StreamChange {
    StreamChange {
        sequence_number: record.change.sequence_number.unwrap_or_default(),
        event_name: record.event_name,
        new_image: record.change.new_image,
    }
}
