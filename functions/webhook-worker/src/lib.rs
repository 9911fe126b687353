//! Webhook jobs from SQS, on two queues served by this one function: the
//! main queue (events to fan out, first attempts) and the slow lane
//! (retries, and first attempts to endpoints that were slow to answer).
//! The work is `shared::flows::webhooks::dispatch::Dispatcher`.

use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsMessage;
use shared::base::time::SystemClock;
use shared::flows::webhooks::dispatch::{DeliverySettings, Dispatcher, Lane};
use shared::flows::webhooks::sender::{HttpSender, UrlPolicy};
use shared::flows::webhooks::WebhookJob;
use shared::queue::sqs_batch::{self, Outcome, Worker};
use shared::wiring::Wiring;
use tracing::error;

pub struct WebhookWorker {
    pub dispatcher: Dispatcher,
}

impl WebhookWorker {
    pub async fn from_env() -> Result<Self, lambda_runtime::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            dispatcher: Dispatcher {
                store: aws.webhooks()?,
                sender: Arc::new(HttpSender::new(UrlPolicy::from_env()?)?),
                main_queue: aws.queue("WEBHOOK_QUEUE_URL")?,
                slow_queue: aws.queue("WEBHOOK_SLOW_QUEUE_URL")?,
                notification_queue: Some(aws.notification_queue()?),
                clock: Arc::new(SystemClock),
                settings: DeliverySettings::default(),
            },
        })
    }
}

impl Worker for WebhookWorker {
    async fn process(&self, message: SqsMessage) -> Outcome {
        let body = message.body.unwrap_or_default();
        let job: WebhookJob = match serde_json::from_str(&body) {
            Ok(job) => job,
            Err(err) => {
                // Retried until the queue's DLQ takes it, where the alarm sees it.
                error!(error = %err, "unreadable webhook job");
                return Outcome::Retry;
            }
        };
        let span = tracing::info_span!("webhook_job");
        // The lane is in the job (`slow`); a job without it is a main-lane job.
        sqs_batch::retry_on_error(span, "webhook", self.dispatcher.handle(job, Lane::Main)).await
    }
}
