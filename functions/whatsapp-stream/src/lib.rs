//! The WhatsApp table's stream, filtered to the first watch entry of each
//! new incoming message (template.yaml, `NewIncomingMessages`): its reply
//! job is queued (`shared::flows::whatsapp::NewIncomingMessages`). Failed
//! records are reported by sequence number, so Lambda retries from the
//! first of them.

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use shared::flows::whatsapp::NewIncomingMessages;
use shared::queue::stream_batch::{changes_of, failed_records};
use shared::wiring::Wiring;

pub struct WhatsAppStream {
    pub dispatcher: NewIncomingMessages,
}

impl WhatsAppStream {
    /// `WHATSAPP_REPLY_QUEUE_URL`.
    pub async fn from_env() -> Result<Self, lambda_runtime::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            dispatcher: NewIncomingMessages {
                reply_queue: aws.whatsapp_reply_queue()?,
            },
        })
    }

    pub async fn handle(&self, event: Event) -> DynamoDbEventResponse {
        failed_records(self.dispatcher.handle(changes_of(event)).await)
    }
}
