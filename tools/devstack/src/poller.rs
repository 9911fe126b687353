//! SQS delivery to a worker the way Lambda's event source mapping does it:
//! receive a batch, hand it over as an `SqsEvent`, delete what succeeded and
//! leave the reported failures for redelivery (and, after `maxReceiveCount`,
//! the dead-letter queue).

use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollReport {
    pub received: usize,
    pub deleted: usize,
    /// Message ids the worker reported as failed.
    pub failed: Vec<String>,
    /// Bodies handed to the worker, in order.
    pub bodies: Vec<String>,
}

pub struct QueuePoller {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub batch_size: i32,
    /// Long-poll wait; zero returns at once when the queue is empty.
    pub wait: Duration,
    /// Visibility given to failed messages so they come back after this long
    /// (Lambda leaves them for the queue's full visibility timeout).
    pub retry_after: Duration,
}

impl QueuePoller {
    pub async fn poll_once<F, Fut>(&self, worker: F) -> Result<PollReport, String>
    where
        F: FnOnce(SqsEvent) -> Fut,
        Fut: Future<Output = SqsBatchResponse>,
    {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(self.batch_size.clamp(1, 10))
            .wait_time_seconds(self.wait.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
        let messages = received.messages.unwrap_or_default();
        let mut report = PollReport {
            received: messages.len(),
            ..PollReport::default()
        };
        if messages.is_empty() {
            return Ok(report);
        }
        let mut event = SqsEvent::default();
        let mut handles = Vec::new();
        for message in &messages {
            let mut record = SqsMessage::default();
            record.message_id = message.message_id.clone();
            record.receipt_handle = message.receipt_handle.clone();
            record.body = message.body.clone();
            record.attributes = message
                .attributes
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                .collect();
            record.event_source = Some("aws:sqs".into());
            report.bodies.push(message.body.clone().unwrap_or_default());
            handles.push((
                message.message_id.clone().unwrap_or_default(),
                message.receipt_handle.clone(),
            ));
            event.records.push(record);
        }
        let response = worker(event).await;
        report.failed = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        // One DeleteMessageBatch for the batch's successes, as Lambda's
        // event source does.
        let mut deletes = Vec::new();
        for (id, receipt) in handles {
            let Some(receipt) = receipt else { continue };
            if report.failed.contains(&id) {
                let result = self
                    .sqs
                    .change_message_visibility()
                    .queue_url(&self.queue_url)
                    .receipt_handle(receipt)
                    .visibility_timeout(self.retry_after.as_secs() as i32)
                    .send()
                    .await;
                match result {
                    Ok(_) => {}
                    // The worker outlasted the visibility timeout and the
                    // message was received again (another lane has it) or
                    // is visible already: it comes back either way, as
                    // Lambda's event source lets such a message be.
                    Err(err)
                        if matches!(
                            aws_sdk_sqs::error::ProvideErrorMetadata::code(&err),
                            Some("ReceiptHandleIsInvalid" | "MessageNotInflight")
                        ) => {}
                    Err(err) => {
                        return Err(aws_sdk_sqs::error::DisplayErrorContext(err).to_string())
                    }
                }
            } else {
                deletes.push(
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(format!("m{}", deletes.len()))
                        .receipt_handle(receipt)
                        .build()
                        .map_err(|e| e.to_string())?,
                );
            }
        }
        if !deletes.is_empty() {
            let count = deletes.len();
            let out = self
                .sqs
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(deletes))
                .send()
                .await
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
            // A stale handle (received again after the worker outlasted the
            // visibility timeout) leaves the message to its next receiver.
            if let Some(failed) = out
                .failed
                .iter()
                .find(|f| f.code != "ReceiptHandleIsInvalid")
            {
                return Err(format!("delete failed: {failed:?}"));
            }
            report.deleted += count - out.failed.len();
        }
        Ok(report)
    }
}

/// Messages visible plus in flight plus delayed: what is left to do.
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<usize, String> {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?
        .attributes
        .unwrap_or_default();
    Ok(attributes
        .values()
        .filter_map(|v| v.parse::<usize>().ok())
        .sum())
}
