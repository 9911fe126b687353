//! Amazon SES v2: email notifications.

use async_trait::async_trait;
use aws_sdk_sesv2::error::ProvideErrorMetadata;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message as SesMessage};

use super::channel::{ChannelKind, NotificationChannel, Part, SendError, Sent};

/// Amazon SES v2 (`NOTIFICATION_EMAIL`).
pub struct SesEmailChannel {
    pub client: aws_sdk_sesv2::Client,
    pub from: String,
    pub to: String,
}

#[async_trait]
impl NotificationChannel for SesEmailChannel {
    fn name(&self) -> &'static str {
        "email"
    }

    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    async fn send(&self, part: &Part) -> Result<Sent, SendError> {
        let content = |text: &str| Content::builder().data(text).charset("UTF-8").build();
        let subject = content(&part.subject).map_err(|e| SendError::Permanent(e.to_string()))?;
        let text = content(&part.text).map_err(|e| SendError::Permanent(e.to_string()))?;
        let result = self
            .client
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(&self.to).build())
            .content(
                EmailContent::builder()
                    .simple(
                        SesMessage::builder()
                            .subject(subject)
                            .body(Body::builder().text(text).build())
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(Sent::default()),
            Err(err) => {
                let code = err.code().unwrap_or("").to_string();
                let reason = format!("SES {}", aws_sdk_sesv2::error::DisplayErrorContext(&err));
                match code.as_str() {
                    "TooManyRequestsException" | "LimitExceededException" | "Throttling" | "" => {
                        Err(SendError::Temporary(reason))
                    }
                    _ => Err(SendError::Permanent(reason)),
                }
            }
        }
    }
}
