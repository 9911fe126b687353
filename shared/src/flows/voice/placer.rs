//! Placing a call whose answer is connected like an inbound one (`/phone/call`,
//! `/whatsapp/call`). Built with the `phone` feature: numbers to dial are
//! checked against libphonenumber first.

use std::time::Duration;

use http::StatusCode;
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::api::access::KeyedAccess;
use crate::api::{self, ApiError, Route};
use crate::base::{mask, phone};
use crate::flows::outbound::call_not_placed;
use crate::flows::sessions::{url_encode, Opening, SessionKind, SessionLifecycle};
use crate::providers::twilio::{NewCall, TwilioClient};

/// Places a call of one kind (phone or WhatsApp) for an API key's
/// organisation and opens its session at once, so it can be listed and
/// ended straight away; Twilio fetches the kind's voice URL (signed, with
/// the organisation in it) when the call is answered.
pub struct CallPlacer {
    pub kind: SessionKind,
    pub access: KeyedAccess,
    pub twilio: TwilioClient,
    pub lifecycle: SessionLifecycle,
    /// The caller id when `from` is not given (`TWILIO_PHONE_NUMBER`, or
    /// `TWILIO_WHATSAPP_NUMBER` for WhatsApp).
    pub default_from: Option<String>,
    pub public_base_url: String,
    /// Twilio's `TimeLimit` (`PHONE_CALL_TIME_LIMIT_SECONDS`).
    pub time_limit_secs: u64,
    pub lease: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallRequest {
    to: Option<String>,
    #[serde(default)]
    from: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Placed {
    call_sid: String,
    session_id: String,
    status: &'static str,
}

/// An E.164 number; WhatsApp addresses (`whatsapp:+E164`) are accepted too.
fn number(value: &str, field: &str) -> Result<String, ApiError> {
    let value = value.trim();
    let value = value.strip_prefix("whatsapp:").unwrap_or(value);
    phone::e164(value).map_err(|err| ApiError::Unprocessable {
        code: err.code(),
        detail: format!("{field}: {}", err.detail()),
    })
}

impl Route for CallPlacer {
    type Body = Placed;

    async fn process(&self, request: Request) -> Result<(StatusCode, Placed), ApiError> {
        let tenant = self.access.admit(request.headers()).await?;
        let body: CallRequest =
            api::parse_json(api::body_bytes(request.body())?, "{\"to\", \"from\"?}")?;
        let to = number(
            body.to
                .as_deref()
                .ok_or_else(|| ApiError::unprocessable("missing_field", "to is required"))?,
            "to",
        )?;
        let from = match body.from.as_deref().or(self.default_from.as_deref()) {
            Some(from) => number(from, "from")?,
            None => {
                return Err(ApiError::unprocessable(
                    "missing_field",
                    "from is required (no default caller number is configured)",
                ))
            }
        };
        let (voice_route, address) = match self.kind {
            SessionKind::Whatsapp => ("whatsapp/voice", "whatsapp:"),
            _ => ("twilio/voice", ""),
        };
        let voice_url = format!(
            "{}/{voice_route}?org={}",
            self.public_base_url,
            url_encode(&tenant.org_id)
        );
        let status_url = match self.kind {
            SessionKind::Phone => format!("{}/twilio/status", self.public_base_url),
            other => format!(
                "{}/twilio/status?session={}",
                self.public_base_url,
                other.name()
            ),
        };
        let (to_address, from_address) = (format!("{address}{to}"), format!("{address}{from}"));
        let call_sid = self
            .twilio
            .create_call(&NewCall {
                to: &to_address,
                from: &from_address,
                twiml_url: &voice_url,
                status_callback: &status_url,
                time_limit_secs: self.time_limit_secs,
            })
            .await
            .map_err(|err| call_not_placed(err, "Twilio"))?;
        info!(%call_sid, to = %mask::phone(&to), kind = self.kind.name(), "outbound call placed");
        let opening = Opening {
            kind: self.kind,
            key: call_sid.clone(),
            org_id: tenant.org_id,
            call_sid: Some(call_sid.clone()),
            direction: Some("outbound-api".into()),
            from_number: Some(from),
            to_number: Some(to.clone()),
            host_identity: None,
            caller: Some(to),
            reopen: false,
        };
        let lease = api::remaining_time(&request).unwrap_or(self.lease);
        let opened = match self.lifecycle.open(&opening, lease).await {
            Ok(opened) => opened,
            Err(err) => {
                // No room for the agent: hang up rather than ring someone
                // into silence, then say what failed.
                if let Err(end_err) = self.twilio.end_call(&call_sid).await {
                    warn!(%call_sid, error = %end_err, "call not cancelled after the session failed");
                }
                return Err(err);
            }
        };
        Ok((
            StatusCode::OK,
            Placed {
                call_sid,
                session_id: opened.session_id,
                status: "queued",
            },
        ))
    }
}
