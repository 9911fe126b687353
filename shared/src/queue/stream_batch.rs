//! DynamoDB stream batches as Lambda's event source mapping delivers them:
//! the changes a consumer reads, and the `ReportBatchItemFailures` answer
//! naming the ones that failed (Lambda retries from the lowest of them).

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};

/// One change from a stream, as much of it as the consumers read.
#[derive(Debug, Clone)]
pub struct StreamChange {
    /// The record's `SequenceNumber`: its identifier in a failure report.
    pub sequence_number: String,
    /// `INSERT`, `MODIFY` or `REMOVE`.
    pub event_name: String,
    pub new_image: serde_dynamo::Item,
}

impl StreamChange {
    /// A string attribute of the new image.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.new_image.get(name) {
            Some(serde_dynamo::AttributeValue::S(s)) => Some(s.as_str()),
            _ => None,
        }
    }

    /// A number attribute of the new image.
    pub fn number(&self, name: &str) -> Option<i64> {
        match self.new_image.get(name) {
            Some(serde_dynamo::AttributeValue::N(n)) => n.parse().ok(),
            _ => None,
        }
    }
}

/// The changes of one batch, in stream order.
pub fn changes_of(event: Event) -> Vec<StreamChange> {
    event.records.into_iter().map(change).collect()
}

fn change(record: EventRecord) -> StreamChange {
    StreamChange {
        sequence_number: record.change.sequence_number.unwrap_or_default(),
        event_name: record.event_name,
        new_image: record.change.new_image,
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
