//! `POST /phone/call` `{"to", "from"?}` (API key): places a Twilio call whose
//! answer is connected like an inbound one (Twilio fetches `/twilio/voice`,
//! signed, with the organisation in the URL), and opens its session
//! `phone-{CallSid}` at once so it can be listed and ended straight away.

use std::time::Duration;

use http::StatusCode;
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use shared::api::access::KeyedAccess;
use shared::api::{self, ApiError, Route};
use shared::base::{config, mask, phone};
use shared::flows::outbound::call_not_placed;
use shared::flows::sessions::{Opening, SessionKind, SessionLifecycle};
use shared::providers::twilio::{NewCall, TwilioClient};
use shared::wiring::{self, Wiring};
use tracing::{info, warn};

pub struct PhoneCall {
    pub access: KeyedAccess,
    pub twilio: TwilioClient,
    pub lifecycle: SessionLifecycle,
    /// `TWILIO_PHONE_NUMBER`: the caller id when `from` is not given.
    pub default_from: Option<String>,
    pub public_base_url: String,
    /// Twilio's `TimeLimit` (`PHONE_CALL_TIME_LIMIT_SECONDS`, default an hour).
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

impl PhoneCall {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            access: aws.keyed_access()?,
            twilio: wiring::twilio()?,
            lifecycle: aws.session_lifecycle(true)?,
            default_from: config::optional("TWILIO_PHONE_NUMBER"),
            public_base_url: config::required("PUBLIC_BASE_URL")?
                .trim_end_matches('/')
                .to_string(),
            time_limit_secs: config::parsed_or("PHONE_CALL_TIME_LIMIT_SECONDS", 3600)?,
            lease: wiring::dedup_lease()?,
        })
    }
}

fn number(value: &str, field: &str) -> Result<String, ApiError> {
    phone::e164(value).map_err(|err| ApiError::Unprocessable {
        code: err.code(),
        detail: format!("{field}: {}", err.detail()),
    })
}

impl Route for PhoneCall {
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
                    "from is required (no TWILIO_PHONE_NUMBER is configured)",
                ))
            }
        };
        let voice_url = format!(
            "{}/twilio/voice?org={}",
            self.public_base_url,
            url_escape(&tenant.org_id)
        );
        let status_url = format!("{}/twilio/status", self.public_base_url);
        let call_sid = self
            .twilio
            .create_call(&NewCall {
                to: &to,
                from: &from,
                twiml_url: &voice_url,
                status_callback: &status_url,
                time_limit_secs: self.time_limit_secs,
            })
            .await
            .map_err(|err| call_not_placed(err, "Twilio"))?;
        info!(%call_sid, to = %mask::phone(&to), "outbound phone call placed");
        let opening = Opening {
            kind: SessionKind::Phone,
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

/// Organisation ids are ours (`org_...`), but the URL must stay a URL.
fn url_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organisation_ids_stay_inside_the_query() {
        assert_eq!(url_escape("org_1-a"), "org_1-a");
        assert_eq!(url_escape("a&b=c d"), "a%26b%3Dc%20d");
    }
}
