//! SQS batches processed message by message: each in its own task and span,
//! and only the messages that failed are reported back for redelivery.

use std::future::Future;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use tracing::Instrument;

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (or deliberately moved elsewhere): delete it.
    Done,
    /// Leave it on the queue for another try; after `maxReceiveCount` it goes to the DLQ.
    Retry,
}

/// Runs `handle` on every message concurrently. A message whose task panics
/// counts as failed on its own, so one poison message cannot fail its batch.
pub async fn process<F, Fut>(event: SqsEvent, handle: F) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let mut tasks = Vec::with_capacity(event.records.len());
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let span = tracing::info_span!("sqs_message", message_id = %id);
        tasks.push((id, tokio::spawn(handle(message).instrument(span))));
    }
    let mut response = SqsBatchResponse::default();
    for (id, task) in tasks {
        let failed = match task.await {
            Ok(Outcome::Done) => false,
            Ok(Outcome::Retry) => true,
            Err(join_error) => {
                tracing::error!(message_id = %id, error = %join_error, "message handler crashed");
                true
            }
        };
        if failed {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// [`process`] for a worker shared across the batch's tasks: each message
/// gets its own handle on the worker.
pub async fn process_with<W, F, Fut>(
    worker: &std::sync::Arc<W>,
    event: SqsEvent,
    handle: F,
) -> SqsBatchResponse
where
    W: ?Sized,
    F: Fn(std::sync::Arc<W>, SqsMessage) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    process(event, |message| {
        handle(std::sync::Arc::clone(worker), message)
    })
    .await
}

/// An SQS-triggered worker: what it does with one message. `handle` runs a
/// batch, each message in its own task, and reports only the failures.
pub trait Worker: Send + Sync + 'static {
    fn process(&self, message: SqsMessage) -> impl Future<Output = Outcome> + Send;

    fn handle(
        self: &std::sync::Arc<Self>,
        event: SqsEvent,
    ) -> impl Future<Output = SqsBatchResponse> + Send
    where
        Self: Sized,
    {
        process_with(self, event, |worker, message| async move {
            worker.process(message).await
        })
    }
}

/// How many times SQS has delivered this message (1 on the first delivery).
pub fn receive_count(message: &SqsMessage) -> u32 {
    message
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, body: &str) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.into());
        m.body = Some(body.into());
        m
    }

    #[tokio::test]
    async fn only_failed_and_crashed_messages_are_reported() {
        let mut event = SqsEvent::default();
        event.records = vec![
            message("1", "ok"),
            message("2", "retry"),
            message("3", "panic"),
            message("4", "ok"),
        ];
        let response = process(event, |m| async move {
            match m.body.as_deref() {
                Some("retry") => Outcome::Retry,
                Some("panic") => panic!("simulated crash"),
                _ => Outcome::Done,
            }
        })
        .await;
        let failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, vec!["2", "3"]);
    }
}
