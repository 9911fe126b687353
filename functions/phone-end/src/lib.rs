//! `POST /phone/end/{callSid}` (API key): hangs up the call (Twilio
//! `Status=completed`) and ends session `phone-{callSid}` with its room.
//! 404 for a call that is unknown, ended or another organisation's.

use http::StatusCode;
use lambda_http::{Request, RequestExt};
use serde::Serialize;
use shared::api::access::KeyedAccess;
use shared::api::{ApiError, Route};
use shared::flows::sessions::{validate_call_sid, SessionKind, SessionLifecycle};
use shared::providers::org_accounts::TwilioAccounts;
use shared::providers::twilio::ProviderError;
use shared::store::sessions::Ending;
use shared::wiring::Wiring;
use tracing::{info, warn};

pub struct PhoneEnd {
    pub access: KeyedAccess,
    /// The call's organisation's own account, else the deployment's.
    pub twilio: TwilioAccounts,
    pub lifecycle: SessionLifecycle,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ended {
    call_sid: String,
    session_id: String,
    status: &'static str,
}

impl PhoneEnd {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            access: aws.keyed_access()?,
            twilio: aws.twilio_accounts()?,
            lifecycle: aws.session_lifecycle(false)?,
        })
    }
}

impl Route for PhoneEnd {
    type Body = Ended;

    async fn process(&self, request: Request) -> Result<(StatusCode, Ended), ApiError> {
        let tenant = self.access.admit(request.headers()).await?;
        let params = request.path_parameters();
        let call_sid = params.first("callSid").unwrap_or_default().to_string();
        validate_call_sid(&call_sid).map_err(|_| ApiError::NotFound("Call not found".into()))?;
        let kind = SessionKind::Phone;
        let room = kind.room(&call_sid);
        // Only a miss is 404; a store outage stays 503 so the client retries.
        let session =
            self.lifecycle
                .owned(&room, &tenant.org_id)
                .await
                .map_err(|err| match err {
                    ApiError::NotFound(_) => {
                        ApiError::NotFound(format!("Call {call_sid} not found"))
                    }
                    other => other,
                })?;
        let twilio = self.twilio.account_for(Some(&tenant.org_id)).await?;
        match twilio.end_call(&call_sid).await {
            Ok(()) => {}
            // Twilio refuses to complete a call that already ended; ending ours is still right.
            Err(ProviderError::Refused(reason)) => {
                warn!(%call_sid, %reason, "Twilio did not end the call; ending the session anyway")
            }
            // Ending twice is harmless, so an unconfirmed end is retried too.
            Err(ProviderError::Unavailable(reason) | ProviderError::Unconfirmed(reason)) => {
                warn!(%call_sid, %reason, "Twilio unavailable; call not ended");
                return Err(ApiError::BadGateway {
                    code: "twilio_unavailable",
                    detail: "Twilio could not be reached to end the call; retry".into(),
                });
            }
        }
        let ending = Ending {
            ended_at: shared::base::time::now_rfc3339(),
            duration_secs: None,
            reason: Some("ended by API".into()),
            // Ends the conversation this request found, never a later one.
            conversation: session.conversation.clone(),
            room_sid: None,
        };
        self.lifecycle
            .end(&session.room_name, &ending)
            .await
            .map_err(shared::api::unavailable)?;
        info!(%call_sid, "call ended by API");
        Ok((
            StatusCode::OK,
            Ended {
                session_id: kind.session_id(&call_sid),
                call_sid,
                status: "ended",
            },
        ))
    }
}
