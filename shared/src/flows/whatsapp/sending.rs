//! `/whatsapp/send`: a tenant's message to a number it names. Built with
//! the `phone` feature (the number is checked with libphonenumber).

use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::not_sent;
use crate::api::ApiError;
use crate::base::{mask, phone};
use crate::flows::tenancy::{may_send_from, numbers_of, registry_number, Channel};
use crate::providers::twilio::{self, MessageContent, NewMessage, SentMessage, TwilioClient};
use crate::store::tenancy::TenancyStore;
use crate::store::whatsapp::{conversation_key, Direction, StoredMessage, WhatsAppStore};

/// `to` of `/whatsapp/send` (`whatsapp:+E164` or `+E164`) as Twilio's
/// `whatsapp:+E164` and its WhatsApp id.
pub fn normalise_to(to: &str) -> Result<(String, String), ApiError> {
    let trimmed = to.trim();
    let number = trimmed.strip_prefix("whatsapp:").unwrap_or(trimmed);
    let e164 = phone::e164(number).map_err(|err| ApiError::Unprocessable {
        code: err.code(),
        detail: format!("to: {}", err.detail()),
    })?;
    let id = e164.trim_start_matches('+').to_string();
    Ok((twilio::whatsapp_address(&e164), id))
}

/// `/whatsapp/send`: a tenant's message through Twilio, recorded in its conversation.
pub struct WhatsAppSender {
    pub store: Arc<dyn WhatsAppStore>,
    pub twilio: TwilioClient,
    /// `whatsapp:+E164` of the deployment's number (`TWILIO_WHATSAPP_NUMBER`),
    /// the default organisation's sender.
    pub from: String,
    pub status_callback: Option<String>,
    pub twilio_timeout: Duration,
    /// The number registry: the WhatsApp senders each organisation owns.
    pub tenancy: Arc<dyn TenancyStore>,
    /// `INBOUND_ORG_ID`: the organisation that owns `from`.
    pub default_org: Option<String>,
}

fn sender_not_owned() -> ApiError {
    ApiError::NotPermitted {
        code: "sender_not_owned",
        detail: "from must be a WhatsApp sender your organisation owns (POST \
                 /organisations/{org_id}/numbers with channel whatsapp); ask an admin to assign it"
            .into(),
    }
}

/// What a tenant sends.
pub enum Outgoing {
    Text(String),
    Template {
        content_sid: String,
        variables: Option<serde_json::Value>,
    },
}

impl WhatsAppSender {
    /// The sender for `org_id`: `requested` if it owns it (or it is the
    /// default organisation's default), else the default organisation's
    /// default or the organisation's first sender; 403 when none.
    async fn sender(&self, org_id: &str, requested: Option<&str>) -> Result<String, ApiError> {
        let default_org = self.default_org.as_deref();
        if let Some(from) = requested {
            let number = registry_number(from).ok_or_else(|| {
                ApiError::unprocessable(
                    "invalid_from",
                    "from must be whatsapp:+<E.164> or +<E.164>",
                )
            })?;
            let allowed = may_send_from(
                self.tenancy.as_ref(),
                Channel::WhatsApp,
                org_id,
                number,
                Some(&self.from),
                default_org,
            )
            .await
            .map_err(crate::api::unavailable)?;
            return allowed
                .then(|| twilio::whatsapp_address(number))
                .ok_or_else(sender_not_owned);
        }
        if default_org == Some(org_id) {
            return Ok(self.from.clone());
        }
        numbers_of(self.tenancy.as_ref(), Channel::WhatsApp, org_id)
            .await
            .map_err(crate::api::unavailable)?
            .first()
            .map(|number| twilio::whatsapp_address(number))
            .ok_or_else(sender_not_owned)
    }

    pub async fn send(
        &self,
        org_id: &str,
        from: Option<&str>,
        to: &str,
        outgoing: &Outgoing,
    ) -> Result<SentMessage, ApiError> {
        let (address, id) = normalise_to(to)?;
        let sender = match self.sender(org_id, from).await {
            Ok(sender) => sender,
            Err(err) => {
                tracing::warn!(%org_id, from = %from.map(mask::phone).unwrap_or_default(), "WhatsApp sender refused");
                return Err(err);
            }
        };
        let content = match outgoing {
            Outgoing::Text(text) => MessageContent::Text(text),
            Outgoing::Template {
                content_sid,
                variables,
            } => MessageContent::Template {
                content_sid,
                variables: variables.as_ref(),
            },
        };
        let sent = self
            .twilio
            .send_message(
                &NewMessage {
                    from: &sender,
                    to: &address,
                    content,
                    status_callback: self.status_callback.as_deref(),
                },
                self.twilio_timeout,
            )
            .await
            .map_err(not_sent)?;
        let (body, content_sid) = match outgoing {
            Outgoing::Text(text) => (text.clone(), None),
            Outgoing::Template { content_sid, .. } => (String::new(), Some(content_sid.clone())),
        };
        let mut message = StoredMessage::new(
            conversation_key(org_id, &id),
            &sent.sid,
            Direction::Outbound,
            body,
            &sent.status,
        );
        message.content_sid = content_sid;
        // The message is on its way: a failure here must not invite a retry
        // that sends it twice, so it is logged, not answered.
        if let Err(err) = self.store.record_message(&message).await {
            tracing::error!(message_sid = %sent.sid, error = %err, "sent WhatsApp message not recorded");
        }
        info!(message_sid = %sent.sid, to = %mask::phone(&id), "WhatsApp message sent");
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_accepts_both_spellings() {
        assert_eq!(
            normalise_to("whatsapp:+14155550100").unwrap(),
            ("whatsapp:+14155550100".into(), "14155550100".into())
        );
        assert_eq!(
            normalise_to(" +14155550100 ").unwrap(),
            ("whatsapp:+14155550100".into(), "14155550100".into())
        );
        assert!(normalise_to("14155550100").is_err());
        assert!(normalise_to("whatsapp:+1").is_err());
        assert!(normalise_to("sms:+14155550100").is_err());
    }
}
