//! Placing a call whose answer is connected like an inbound one (`/phone/call`,
//! `/whatsapp/call`). Built with the `phone` feature: numbers to dial are
//! checked against libphonenumber first.
//!
//! The caller id must be one the key's organisation owns (in the number
//! registry: voice numbers for phone calls, WhatsApp senders for WhatsApp
//! calls; or the deployment's default number for `INBOUND_ORG_ID`), and
//! the call goes through the same reservation as
//! `/calls/initiate` (`outbound::place_reserved`): `time_limit_secs` held on
//! the organisation's month before Twilio is asked, released if Twilio
//! refuses, settled with the real duration by the call's final status
//! (the status callback carries `placed=<call ref>`).

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use lambda_http::Request;

use crate::api::public_url::PublicBaseUrl;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::api::access::KeyedAccess;
use crate::api::{self, ApiError, Route};
use crate::base::{mask, phone};
use crate::flows::outbound::{self, Placed as ProviderIds};
use crate::flows::sessions::{url_encode, Opening, SessionKind, SessionLifecycle};
use crate::flows::tenancy::{self, Channel};
use crate::providers::org_accounts::TwilioAccounts;
use crate::providers::twilio::NewCall;
use crate::store::directory::{DirectoryStore, Organisation, Provider};
use crate::store::outbound_calls::{new_call_ref, OutboundCall, OutboundCallStore};
use crate::store::tenancy::TenancyStore;

/// Places a call of one kind (phone or WhatsApp) for an API key's
/// organisation and opens its session at once, so it can be listed and
/// ended straight away; Twilio fetches the kind's voice URL (signed, with
/// the organisation in it) when the call is answered.
pub struct CallPlacer {
    pub kind: SessionKind,
    pub access: KeyedAccess,
    /// The organisation's own account, else the deployment's.
    pub twilio: TwilioAccounts,
    pub lifecycle: SessionLifecycle,
    /// The caller id when `from` is not given (`TWILIO_PHONE_NUMBER`, or
    /// `TWILIO_WHATSAPP_NUMBER` for WhatsApp).
    pub default_from: Option<String>,
    pub public_base_url: PublicBaseUrl,
    /// Twilio's `TimeLimit` (`PHONE_CALL_TIME_LIMIT_SECONDS`), and what a
    /// call reserves on its organisation's budget.
    pub time_limit_secs: u64,
    pub lease: Duration,
    /// Organisations (budgets, caller ids) and the call records that hold
    /// their reservations.
    pub directory: Arc<dyn DirectoryStore>,
    pub calls: Arc<dyn OutboundCallStore>,
    /// `INBOUND_ORG_ID`: the organisation that owns `default_from`.
    pub inbound_org: Option<String>,
    /// The number registry: which organisation owns which caller id.
    pub tenancy: Arc<dyn TenancyStore>,
}

/// `PHONE_CALL_TIME_LIMIT_SECONDS` when unset (the template's default too).
pub const DEFAULT_TIME_LIMIT_SECS: u64 = 600;

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

fn not_owned() -> ApiError {
    ApiError::NotPermitted {
        code: "caller_id_not_owned",
        detail: "from must be a number your organisation owns (POST \
                 /organisations/{org_id}/numbers); ask an admin to assign it"
            .into(),
    }
}

impl CallPlacer {
    fn channel(&self) -> Channel {
        match self.kind {
            SessionKind::Whatsapp => Channel::WhatsApp,
            _ => Channel::Voice,
        }
    }

    /// The caller id: `requested` if `org` owns it, else the deployment's
    /// default (for the default organisation) or the first number it owns;
    /// 403 when it owns none or names another.
    async fn caller_id(
        &self,
        requested: Option<&str>,
        org: &Organisation,
    ) -> Result<String, ApiError> {
        let channel = self.channel();
        let default = self.default_from.as_deref();
        let default_org = self.inbound_org.as_deref();
        match requested {
            Some(from) => {
                let from = number(from, "from")?;
                tenancy::may_send_from(
                    self.tenancy.as_ref(),
                    channel,
                    &org.org_id,
                    &from,
                    default,
                    default_org,
                )
                .await
                .map_err(api::unavailable)?
                .then_some(from)
                .ok_or_else(not_owned)
            }
            None => {
                if let Some(default) = default.filter(|_| default_org == Some(org.org_id.as_str()))
                {
                    if let Ok(default) = number(default, "from") {
                        return Ok(default);
                    }
                }
                tenancy::numbers_of(self.tenancy.as_ref(), channel, &org.org_id)
                    .await
                    .map_err(api::unavailable)?
                    .into_iter()
                    .next()
                    .ok_or_else(not_owned)
            }
        }
    }
}

impl Route for CallPlacer {
    type Body = Placed;

    async fn process(&self, request: Request) -> Result<(StatusCode, Placed), ApiError> {
        let tenant = self.access.admit(request.headers()).await?;
        let body: CallRequest =
            api::parse_json(api::body_bytes(request.body())?, "{\"to\", \"from\"?}")?;
        let Some(base) = self.public_base_url.for_request(&request) else {
            tracing::error!("PUBLIC_BASE_URL unset and no request domain: no URL for Twilio");
            return Err(ApiError::Unavailable);
        };
        let to = number(
            body.to
                .as_deref()
                .ok_or_else(|| ApiError::unprocessable("missing_field", "to is required"))?,
            "to",
        )?;
        let org = self
            .directory
            .get_organisation(&tenant.org_id)
            .await
            .map_err(api::unavailable)?
            .ok_or_else(|| ApiError::NotPermitted {
                code: "no_organisation",
                detail: "The key's organisation has no record (budget, caller ids); \
                         an admin creates it with POST /organisations"
                    .into(),
            })?;
        let from = match self.caller_id(body.from.as_deref(), &org).await {
            Ok(from) => from,
            Err(err) => {
                warn!(
                    org_id = %org.org_id,
                    from = %body.from.as_deref().map(mask::phone).unwrap_or_default(),
                    "caller id refused"
                );
                return Err(err);
            }
        };
        let (voice_route, address) = match self.kind {
            SessionKind::Whatsapp => ("whatsapp/voice", "whatsapp:"),
            _ => ("twilio/voice", ""),
        };
        let voice_url = format!("{base}/{voice_route}?org={}", url_encode(&tenant.org_id));
        let (to_address, from_address) = (format!("{address}{to}"), format!("{address}{from}"));
        let record = OutboundCall {
            from_number: Some(from.clone()),
            // Its statuses are the session's (`?session=` on the callback).
            session_kind: Some(self.kind.name().to_string()),
            status: "initiating".into(),
            status_rank: 0,
            ..OutboundCall::initiated(&new_call_ref(), Provider::Twilio, &to)
        };
        let twilio = self.twilio.account_for(Some(&org.org_id)).await?;
        let (base, kind, twilio) = (&base, self.kind.name(), &twilio);
        let time_limit_secs = self.time_limit_secs;
        let (_, placed) = outbound::place_reserved(
            self.calls.as_ref(),
            self.directory.as_ref(),
            record,
            &org,
            time_limit_secs,
            "Twilio",
            |call_ref| async move {
                // The final status settles this call's reservation.
                let status_url = format!("{base}/twilio/status?session={kind}&placed={call_ref}");
                let sid = twilio
                    .create_call(&NewCall {
                        to: &to_address,
                        from: &from_address,
                        twiml_url: &voice_url,
                        status_callback: &status_url,
                        time_limit_secs,
                        amd_callback: None,
                    })
                    .await?;
                Ok(ProviderIds {
                    call_sid: Some(sid),
                    conversation_id: None,
                })
            },
        )
        .await?;
        let call_sid = placed.call_sid.unwrap_or_default();
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
                if let Err(end_err) = twilio.end_call(&call_sid).await {
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
