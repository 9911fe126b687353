//! SQS consumer of `CampaignDialQueue`: places each claimed campaign
//! attempt as an ordinary outbound call, once
//! (`shared::flows::campaigns::engine::CampaignDialer`). The do-not-call
//! list, the calling window and the campaign's state are checked at dial
//! time; a spent budget pauses the campaign and notifies the organisation.

use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsMessage;
use shared::flows::campaigns::engine::CampaignDialer;
use shared::queue::sqs_batch::{Outcome, Worker};
use shared::wiring::Wiring;

pub struct CampaignDialWorker {
    pub dialer: CampaignDialer,
}

impl CampaignDialWorker {
    /// `CAMPAIGNS_TABLE`, the directory, the providers (`TWILIO_*`,
    /// `PUBLIC_BASE_URL`), `NOTIFICATION_QUEUE_URL`.
    pub async fn from_env() -> Result<Self, lambda_runtime::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            dialer: CampaignDialer {
                store: aws.campaigns()?,
                placement: aws.placement()?,
                notifications: aws.notification_queue()?,
                clock: Arc::new(shared::base::time::SystemClock),
            },
        })
    }
}

impl Worker for CampaignDialWorker {
    async fn process(&self, message: SqsMessage) -> Outcome {
        self.dialer
            .process(message.body.as_deref().unwrap_or(""))
            .await
    }
}
