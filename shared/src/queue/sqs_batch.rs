//! SQS batches processed message by message: each in its own task and span,
//! and only the messages that failed are reported back for redelivery.
//! Every message's work ends before the invocation's deadline: Lambda kills
//! an invocation that overruns, and then the whole batch comes back.

use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use tokio::time::Instant;
use tracing::Instrument;

/// Time kept free before the deadline to report the batch's failures.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// Lambda's longest timeout: the deadline of a run outside Lambda (tests, dev server).
pub const NO_DEADLINE: Duration = Duration::from_secs(15 * 60);

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (or deliberately moved elsewhere): delete it.
    Done,
    /// Leave it on the queue for another try; after `maxReceiveCount` it goes to the DLQ.
    Retry,
}

/// The Lambda context's deadline (epoch milliseconds) as an instant of the
/// runtime's clock; a deadline already past is now.
pub fn deadline_from_epoch_millis(deadline_ms: u64) -> Instant {
    let now_ms = u64::try_from(crate::base::time::epoch_millis()).unwrap_or(u64::MAX);
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

/// Runs `handle` on every message concurrently, without an invocation
/// deadline (see [`NO_DEADLINE`]).
pub async fn process<F, Fut>(event: SqsEvent, handle: F) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    process_until(event, Instant::now() + NO_DEADLINE, handle).await
}

/// Runs `handle` on every message concurrently, each under a timeout that
/// ends [`DEADLINE_MARGIN`] before `deadline`. A message that fails, panics,
/// runs out of time or is not started because the time is up counts as
/// failed on its own: one poison or slow message cannot fail its batch.
pub async fn process_until<F, Fut>(
    event: SqsEvent,
    deadline: Instant,
    handle: F,
) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let stop = deadline.checked_sub(DEADLINE_MARGIN).unwrap_or(deadline);
    let mut tasks = Vec::with_capacity(event.records.len());
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        if Instant::now() >= stop {
            tracing::warn!(message_id = %id, "not started: the invocation's deadline is near");
            tasks.push((id, None));
            continue;
        }
        let span = tracing::info_span!("sqs_message", message_id = %id);
        let work = tokio::time::timeout_at(stop, handle(message)).instrument(span);
        tasks.push((id, Some(tokio::spawn(work))));
    }
    let mut response = SqsBatchResponse::default();
    for (id, task) in tasks {
        let failed = match task {
            None => true,
            Some(task) => match task.await {
                Ok(Ok(Outcome::Done)) => false,
                Ok(Ok(Outcome::Retry)) => true,
                Ok(Err(_elapsed)) => {
                    tracing::warn!(message_id = %id, "stopped at the invocation's deadline; it will be redelivered");
                    true
                }
                Err(join_error) => {
                    tracing::error!(message_id = %id, error = %join_error, "message handler crashed");
                    true
                }
            },
        };
        if failed {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// [`process_until`] for a worker shared across the batch's tasks: each
/// message gets its own handle on the worker.
pub async fn process_with<W, F, Fut>(
    worker: &std::sync::Arc<W>,
    event: SqsEvent,
    deadline: Instant,
    handle: F,
) -> SqsBatchResponse
where
    W: ?Sized,
    F: Fn(std::sync::Arc<W>, SqsMessage) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    process_until(event, deadline, |message| {
        handle(std::sync::Arc::clone(worker), message)
    })
    .await
}

/// An SQS-triggered worker: what it does with one message. `handle_until`
/// runs a batch, each message in its own task, and reports only the failures.
pub trait Worker: Send + Sync + 'static {
    fn process(&self, message: SqsMessage) -> impl Future<Output = Outcome> + Send;

    /// A batch that must be answered before `deadline` (the Lambda context's).
    fn handle_until(
        self: &std::sync::Arc<Self>,
        event: SqsEvent,
        deadline: Instant,
    ) -> impl Future<Output = SqsBatchResponse> + Send
    where
        Self: Sized,
    {
        process_with(self, event, deadline, |worker, message| async move {
            worker.process(message).await
        })
    }

    /// A batch outside Lambda (tests, dev server): [`NO_DEADLINE`] from now.
    fn handle(
        self: &std::sync::Arc<Self>,
        event: SqsEvent,
    ) -> impl Future<Output = SqsBatchResponse> + Send
    where
        Self: Sized,
    {
        self.handle_until(event, Instant::now() + NO_DEADLINE)
    }
}

/// Runs one message's step inside its span; an error is logged and the
/// message left for SQS to deliver again.
pub async fn retry_on_error<F>(span: tracing::Span, what: &str, step: F) -> Outcome
where
    F: Future<Output = Result<Outcome, String>>,
{
    use tracing::Instrument;
    async {
        match step.await {
            Ok(outcome) => outcome,
            Err(reason) => {
                tracing::warn!(%reason, "{what} step failed; message will be retried");
                Outcome::Retry
            }
        }
    }
    .instrument(span)
    .await
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

    fn batch(bodies: &[(&str, &str)]) -> SqsEvent {
        let mut event = SqsEvent::default();
        event.records = bodies.iter().map(|(id, body)| message(id, body)).collect();
        event
    }

    fn failed_ids(response: &SqsBatchResponse) -> Vec<&str> {
        response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect()
    }

    /// Paused time: sleeps advance the clock instantly, so no test waits.
    #[tokio::test(start_paused = true)]
    async fn only_the_message_that_would_overrun_the_deadline_fails() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&finished);
        let response = process_until(
            batch(&[("fast", "1"), ("slow", "60"), ("also-fast", "7")]),
            deadline,
            move |m| {
                let counter = std::sync::Arc::clone(&counter);
                async move {
                    let secs: u64 = m.body.as_deref().unwrap().parse().unwrap();
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Outcome::Done
                }
            },
        )
        .await;
        assert_eq!(failed_ids(&response), vec!["slow"]);
        assert_eq!(finished.load(std::sync::atomic::Ordering::SeqCst), 2);
        // The batch was answered with the margin still free.
        assert!(Instant::now() <= deadline - DEADLINE_MARGIN);
    }

    #[tokio::test(start_paused = true)]
    async fn messages_are_not_started_once_the_deadline_is_near() {
        let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&started);
        // Less than the margin left: nothing may start.
        let deadline = Instant::now() + DEADLINE_MARGIN - Duration::from_millis(1);
        let response = process_until(batch(&[("a", ""), ("b", "")]), deadline, move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Outcome::Done }
        })
        .await;
        assert_eq!(failed_ids(&response), vec!["a", "b"]);
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_already_past_fails_the_whole_batch_unstarted() {
        let deadline = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        let response = process_until(batch(&[("a", "")]), deadline, |_| async {
            panic!("must not run")
        })
        .await;
        assert_eq!(failed_ids(&response), vec!["a"]);
    }

    #[test]
    fn a_lambda_deadline_becomes_the_time_left() {
        let in_five = crate::base::time::epoch_millis() as u64 + 5_000;
        let left = deadline_from_epoch_millis(in_five) - Instant::now();
        assert!(left <= Duration::from_secs(5), "{left:?}");
        let past = deadline_from_epoch_millis(0);
        assert!(past <= Instant::now());
    }
}
