//! `POST /whatsapp/send` (API key): `{"to", "message"}` sends a free-form
//! WhatsApp message; `{"to", "contentSid", "contentVariables"?}` an approved
//! template (Twilio's `ContentSid` and `ContentVariables`, the latter as a
//! JSON string). `to` is `whatsapp:+E164` or `+E164`; `from`, optional, one
//! of the organisation's WhatsApp senders in the number registry (default:
//! `TWILIO_WHATSAPP_NUMBER` for `INBOUND_ORG_ID`, else the organisation's
//! first sender; 403 `sender_not_owned` when it has none). Answers
//! `{"messageSid", "status"}` and records the message in the organisation's
//! conversation. Twilio's 63016 (free-form outside the 24-hour window) is
//! 422 naming templates; its other refusals are 422 with Twilio's code; an
//! outage is 502.

use std::time::Duration;

use http::StatusCode;
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use shared::api::access::KeyedAccess;
use shared::api::{self, ApiError, Route};
use shared::base::config;
use shared::flows::whatsapp::{Outgoing, WhatsAppSender};
use shared::wiring::{self, Wiring};

/// Longest free-form body WhatsApp accepts.
pub const MAX_BODY_CHARS: usize = 4096;

pub struct WhatsAppSend {
    pub access: KeyedAccess,
    pub sender: WhatsAppSender,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SendRequest {
    to: Option<String>,
    /// One of the organisation's WhatsApp senders (`whatsapp:+E164` or `+E164`).
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    content_sid: Option<String>,
    #[serde(default)]
    content_variables: Option<serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    message_sid: String,
    status: String,
}

impl WhatsAppSend {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            access: aws.keyed_access()?,
            sender: WhatsAppSender {
                store: aws.whatsapp()?,
                twilio: wiring::twilio()?,
                from: wiring::whatsapp_sender_address()?,
                status_callback: wiring::whatsapp_status_callback(),
                twilio_timeout: Duration::from_secs(config::parsed_or(
                    "TWILIO_TIMEOUT_SECONDS",
                    8,
                )?),
                tenancy: aws.tenancy()?,
                default_org: config::optional("INBOUND_ORG_ID"),
            },
        })
    }
}

fn outgoing(body: SendRequest) -> Result<Outgoing, ApiError> {
    match (body.message, body.content_sid) {
        (Some(_), Some(_)) => Err(ApiError::unprocessable(
            "ambiguous_content",
            "give either message or contentSid, not both",
        )),
        (Some(message), None) => {
            if message.trim().is_empty() {
                return Err(ApiError::unprocessable("missing_field", "message is empty"));
            }
            if message.chars().count() > MAX_BODY_CHARS {
                return Err(ApiError::unprocessable(
                    "message_too_long",
                    format!("message is longer than {MAX_BODY_CHARS} characters"),
                ));
            }
            if body.content_variables.is_some() {
                return Err(ApiError::unprocessable(
                    "unexpected_field",
                    "contentVariables goes with contentSid",
                ));
            }
            Ok(Outgoing::Text(message))
        }
        (None, Some(content_sid)) => {
            let valid = content_sid.starts_with("HX")
                && (10..=64).contains(&content_sid.len())
                && content_sid.chars().all(|c| c.is_ascii_alphanumeric());
            if !valid {
                return Err(ApiError::unprocessable(
                    "invalid_content_sid",
                    "contentSid must be a Twilio Content sid (HX...)",
                ));
            }
            let variables = match body.content_variables {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::Object(map)) => {
                    // Twilio substitutes strings; numbers are spelled out.
                    let map = map
                        .into_iter()
                        .map(|(k, v)| match v {
                            serde_json::Value::String(_) => Ok((k, v)),
                            serde_json::Value::Number(n) => {
                                Ok((k, serde_json::Value::String(n.to_string())))
                            }
                            _ => Err(ApiError::unprocessable(
                                "invalid_content_variables",
                                "contentVariables values must be strings",
                            )),
                        })
                        .collect::<Result<serde_json::Map<_, _>, _>>()?;
                    Some(serde_json::Value::Object(map))
                }
                Some(_) => {
                    return Err(ApiError::unprocessable(
                        "invalid_content_variables",
                        "contentVariables must be an object such as {\"1\": \"John\"}",
                    ))
                }
            };
            Ok(Outgoing::Template {
                content_sid,
                variables,
            })
        }
        (None, None) => Err(ApiError::unprocessable(
            "missing_field",
            "message (or contentSid for a template) is required",
        )),
    }
}

impl Route for WhatsAppSend {
    type Body = Sent;

    async fn process(&self, request: Request) -> Result<(StatusCode, Sent), ApiError> {
        let tenant = self.access.admit(request.headers()).await?;
        let body: SendRequest = api::parse_json(
            api::body_bytes(request.body())?,
            "{\"to\", \"message\"} or {\"to\", \"contentSid\", \"contentVariables\"}",
        )?;
        let to = body
            .to
            .clone()
            .ok_or_else(|| ApiError::unprocessable("missing_field", "to is required"))?;
        let from = body.from.clone();
        let outgoing = outgoing(body)?;
        let sent = self
            .sender
            .send(&tenant.org_id, from.as_deref(), &to, &outgoing)
            .await?;
        Ok((
            StatusCode::OK,
            Sent {
                message_sid: sent.sid,
                status: sent.status,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> SendRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn text_or_template_never_both() {
        assert!(matches!(
            outgoing(request(r#"{"to":"+1","message":"hi"}"#)),
            Ok(Outgoing::Text(_))
        ));
        assert!(outgoing(request(
            r#"{"to":"+1","message":"hi","contentSid":"HX0123456789abcdef"}"#
        ))
        .is_err());
        assert!(outgoing(request(r#"{"to":"+1"}"#)).is_err());
    }

    #[test]
    fn template_variables_are_strings() {
        match outgoing(request(
            r#"{"to":"+1","contentSid":"HX0123456789abcdef","contentVariables":{"1":"John","2":3}}"#,
        )) {
            Ok(Outgoing::Template { variables, .. }) => {
                assert_eq!(
                    variables.unwrap(),
                    serde_json::json!({"1": "John", "2": "3"})
                )
            }
            _ => panic!("expected a template"),
        }
        assert!(outgoing(request(
            r#"{"to":"+1","contentSid":"HX0123456789abcdef","contentVariables":[1]}"#
        ))
        .is_err());
        assert!(outgoing(request(r#"{"to":"+1","contentSid":"nope"}"#)).is_err());
    }
}
