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
                let reason = format!("SES {}", aws_sdk_sesv2::error::DisplayErrorContext(&err));
                Err(classify(err.code().unwrap_or(""), reason))
            }
        }
    }
}

/// SES error codes that clear up by themselves: its own faults and
/// throttling. No code at all is a transport failure (timeout, connection).
/// Everything else (bad address, unverified sender, paused account) needs a
/// person, so it goes to the DLQ at once.
fn classify(code: &str, reason: String) -> SendError {
    match code {
        ""
        | "InternalFailure"
        | "InternalServerError"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "RequestTimeout"
        | "RequestTimeoutException"
        | "TooManyRequestsException"
        | "Throttling"
        | "ThrottlingException"
        | "LimitExceededException" => SendError::Temporary(reason),
        _ => SendError::Permanent(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ses_faults_and_throttling_are_temporary_the_rest_permanent() {
        for code in [
            "",
            "InternalFailure",
            "ServiceUnavailable",
            "TooManyRequestsException",
            "Throttling",
            "LimitExceededException",
        ] {
            assert!(
                matches!(classify(code, code.into()), SendError::Temporary(_)),
                "{code} should be temporary"
            );
        }
        for code in [
            "MessageRejected",
            "MailFromDomainNotVerifiedException",
            "AccountSuspendedException",
            "SendingPausedException",
            "BadRequestException",
            "NotFoundException",
        ] {
            assert!(
                matches!(classify(code, code.into()), SendError::Permanent(_)),
                "{code} should be permanent"
            );
        }
    }
}
