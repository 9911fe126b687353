//! Placing and ending outbound calls (seeds 003 and 004): the telephony
//! providers a deployment has, and the one way every source ends a call.

use std::future::Future;
use std::sync::Arc;

use crate::api::access::KeyedAccess;
use crate::api::ApiError;
use crate::base::end_reason::EndReason;
use crate::base::metrics::{self, Metric};
use crate::providers::elevenlabs::ElevenLabsClient;
use crate::providers::org_accounts::{self, OrgAccounts};
use crate::providers::twilio::{ProviderError, TwilioClient};
use crate::queue::jobs::{self, JobQueue, NotificationJob, NotificationKind};
use crate::store::directory::{usage_month, DirectoryStore, Organisation};
use crate::store::outbound_calls::{
    Budget, OutboundCall, OutboundCallStore, Reservation, Reserve, TranscriptLine, UsageRecorded,
};
use crate::store::StoreError;

/// Seed 003's answer when the month's budget cannot hold another call.
pub const USAGE_EXCEEDED: &str =
    "Monthly usage limit exceeded. Please upgrade your plan or add top-up credits.";

/// The ElevenLabs dynamic variable that carries our call ref, so the
/// post-call webhook finds the record even if the conversation id was never
/// stored (a crash right after the call was placed).
pub const CALL_REF_VARIABLE: &str = "callops_call_ref";

/// The code of a placement the provider did not confirm (502): the call
/// may exist and is held until its provider says.
pub const CALL_UNCONFIRMED: &str = "call_unconfirmed";

/// How long after a call's longest possible end the sweep waits for its
/// status before releasing its reservation (provider callbacks can lag).
pub const RESERVATION_MARGIN_SECS: i64 = 300;

/// Records `call` (status `initiating`) and reserves `seconds` on `org`'s
/// budget for this month, in one transaction, before any provider is asked
/// to place it. 429 with seed 003's text when the month cannot hold it.
pub async fn reserve(
    calls: &dyn OutboundCallStore,
    directory: &dyn DirectoryStore,
    call: &mut OutboundCall,
    org: &Organisation,
    seconds: u64,
) -> Result<(), ApiError> {
    let now = crate::base::time::now();
    call.org_id = Some(org.org_id.clone());
    call.reservation = Some(Reservation {
        org_id: org.org_id.clone(),
        seconds,
        month: usage_month(now),
        release_after: now.timestamp()
            + i64::try_from(seconds).unwrap_or(i64::MAX / 2)
            + RESERVATION_MARGIN_SECS,
        // A campaign's call took its organisation slot with its attempt.
        call_slot: call.campaign_id.is_none(),
    });
    let mut budget = Budget {
        monthly_limit_seconds: org.monthly_limit_seconds,
        topup_seconds: org.topup_seconds,
    };
    // A limit changed by an admin between our read and our write: read again.
    for _ in 0..3 {
        match calls
            .create_reserved(call, budget)
            .await
            .map_err(crate::api::unavailable)?
        {
            Reserve::Reserved => return Ok(()),
            Reserve::OverBudget => {
                return Err(ApiError::TooManyRequests {
                    code: "usage_limit_exceeded",
                    detail: USAGE_EXCEEDED.into(),
                })
            }
            Reserve::AtCapacity => {
                return Err(ApiError::TooManyRequests {
                    code: "concurrency_limit",
                    detail: format!(
                        "The organisation already has {} calls in flight, its \
                         max_concurrent_calls; try again when one ends",
                        org.max_concurrent_calls
                    ),
                })
            }
            Reserve::NoOrganisation => {
                return Err(ApiError::NotFound("Organisation not found".into()))
            }
            Reserve::BudgetChanged => {
                let fresh = directory
                    .get_organisation(&org.org_id)
                    .await
                    .map_err(crate::api::unavailable)?
                    .ok_or_else(|| ApiError::NotFound("Organisation not found".into()))?;
                budget = Budget {
                    monthly_limit_seconds: fresh.monthly_limit_seconds,
                    topup_seconds: fresh.topup_seconds,
                };
            }
        }
    }
    Err(ApiError::Unavailable)
}

/// What placing an outbound call needs: the caller's access, the directory
/// (organisations and their budgets), call records and the providers.
pub struct Placement {
    /// API key (and its organisation) and per-key rate limit.
    pub access: KeyedAccess,
    pub directory: Arc<dyn DirectoryStore>,
    pub calls: Arc<dyn OutboundCallStore>,
    pub providers: Providers,
    /// The number registry: the caller ids each organisation owns.
    pub tenancy: Arc<dyn crate::store::tenancy::TenancyStore>,
    /// `INBOUND_ORG_ID`: the organisation that owns the deployment's
    /// `TWILIO_PHONE_NUMBER`.
    pub default_org: Option<String>,
    /// Each organisation's do-not-call list, checked before every dial.
    pub dnc: Arc<dyn crate::store::dnc::DoNotCallStore>,
}

/// The provider's ids for a call it placed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placed {
    pub call_sid: Option<String>,
    pub conversation_id: Option<String>,
}

impl Placement {
    /// 403 `dnc` when `to` is on `org_id`'s do-not-call list: checked at
    /// dial time, before anything is reserved or placed.
    pub async fn check_not_listed(&self, org_id: &str, to: &str) -> Result<(), ApiError> {
        if self
            .dnc
            .listed(org_id, to)
            .await
            .map_err(crate::api::unavailable)?
        {
            crate::base::metrics::count(crate::base::metrics::Metric::DncRefused);
            return Err(ApiError::NotPermitted {
                code: "dnc",
                detail: "The number is on the organisation's do-not-call list".into(),
            });
        }
        Ok(())
    }

    /// 403 `caller_id_not_owned` unless `org_id` may call from `from`: it
    /// owns it in the registry, or it is `TWILIO_PHONE_NUMBER` and `org_id`
    /// the default organisation.
    pub async fn check_caller_id(&self, org_id: &str, from: &str) -> Result<(), ApiError> {
        let allowed = crate::flows::tenancy::may_send_from(
            self.tenancy.as_ref(),
            crate::flows::tenancy::Channel::Voice,
            org_id,
            from,
            self.providers.twilio_phone_number.as_deref(),
            self.default_org.as_deref(),
        )
        .await
        .map_err(crate::api::unavailable)?;
        if allowed {
            return Ok(());
        }
        tracing::warn!(%org_id, from = %crate::base::mask::phone(from), "caller id refused");
        Err(ApiError::NotPermitted {
            code: "caller_id_not_owned",
            detail: "The caller number must be one the organisation owns (POST \
                     /organisations/{org_id}/numbers); ask an admin to assign it"
                .into(),
        })
    }

    /// The one way a call is placed: `call` (status `initiating`) is recorded
    /// with a reservation of `seconds` on `org` before the provider is asked
    /// (`place`, given the call's ref); a refusal marks it failed and
    /// releases the budget (answered with `who`'s refusal); once placed, the
    /// provider's ids are attached. A failure to attach them is logged, never
    /// reported as a failed call: status callbacks and the sweep finish the
    /// record.
    pub async fn place<F, Fut>(
        &self,
        call: OutboundCall,
        org: &Organisation,
        seconds: u64,
        who: &str,
        place: F,
    ) -> Result<(OutboundCall, Placed), ApiError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<Placed, ProviderError>>,
    {
        place_reserved(
            self.calls.as_ref(),
            self.directory.as_ref(),
            call,
            org,
            seconds,
            who,
            place,
        )
        .await
    }
}

/// [`Placement::place`] for callers that hold the stores but not a whole
/// `Placement` (`/phone/call`, `/whatsapp/call`).
pub async fn place_reserved<F, Fut>(
    calls: &dyn OutboundCallStore,
    directory: &dyn DirectoryStore,
    mut call: OutboundCall,
    org: &Organisation,
    seconds: u64,
    who: &str,
    place: F,
) -> Result<(OutboundCall, Placed), ApiError>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<Placed, ProviderError>>,
{
    if let Err(err) = reserve(calls, directory, &mut call, org, seconds).await {
        metrics::count(Metric::CallsNotPlaced);
        return Err(err);
    }
    let placed = match place(call.call_ref.clone()).await {
        Ok(placed) => {
            metrics::count(Metric::CallsPlaced);
            placed
        }
        Err(ProviderError::Unconfirmed(reason)) => {
            // The call may exist: its record, reservation and slot stay, and
            // its status callbacks or `stuck-sweep` (which looks for it at the
            // provider) settle it. Releasing it here could free a budget and
            // a slot that a live call is using.
            tracing::warn!(%reason, call_ref = %call.call_ref, provider = who, "placement unconfirmed; call held");
            return Err(ApiError::BadGateway {
                code: CALL_UNCONFIRMED,
                detail: format!(
                    "{who} did not confirm the call; it may have been placed. Call {} is \
                     kept and settled from the provider's record within minutes; look it up \
                     in the call log before placing it again",
                    call.call_ref
                ),
            });
        }
        Err(err) => {
            metrics::count(Metric::CallsNotPlaced);
            let reason = err.to_string();
            if let Err(store) = release_unplaced(calls, &call, &reason).await {
                // The sweep releases it once its window has passed.
                tracing::warn!(error = %store, call_ref = %call.call_ref, "refused call's reservation not released yet");
            }
            return Err(call_not_placed(err, who));
        }
    };
    let status = if placed.conversation_id.is_some() {
        "initiated"
    } else {
        "queued"
    };
    if let Err(err) = calls
        .attach_provider_ids(
            &call.call_ref,
            placed.call_sid.as_deref(),
            placed.conversation_id.as_deref(),
            status,
        )
        .await
    {
        tracing::warn!(error = %err, call_ref = %call.call_ref, "provider ids not stored");
    }
    Ok((call, placed))
}

/// The provider did not place the call: it is marked failed with the
/// provider's reason and its reservation released (settled at zero).
pub async fn release_unplaced(
    calls: &dyn OutboundCallStore,
    call: &OutboundCall,
    reason: &str,
) -> Result<(), StoreError> {
    calls
        .advance_status(&call.call_ref, "failed", Some(reason))
        .await?;
    calls
        .set_end(&call.call_ref, EndReason::Failed, false)
        .await?;
    calls.record_duration(call, 0).await.map(|_| ())
}

/// The telephony providers a deployment has credentials for.
pub struct Providers {
    pub twilio: Option<TwilioClient>,
    /// `TWILIO_PHONE_NUMBER`: caller id when an assistant has none.
    pub twilio_phone_number: Option<String>,
    pub elevenlabs: Option<ElevenLabsClient>,
    /// Public URL of this API (Twilio calls `/twiml` and `/twilio/status` there).
    pub public_base_url: crate::api::public_url::PublicBaseUrl,
    /// Organisations' own accounts (`ORG_SECRETS_PREFIX`); `None`: every
    /// organisation uses the deployment's.
    pub org_accounts: Option<Arc<OrgAccounts>>,
}

impl Providers {
    /// The Twilio client for `org_id`'s calls: its own account, else the
    /// deployment's; an account that cannot be read is that organisation's
    /// 502/503 (`org_account_*`), never another's.
    pub async fn twilio_for(&self, org_id: &str) -> Result<Option<TwilioClient>, ApiError> {
        org_accounts::twilio_for(
            self.org_accounts.as_deref(),
            self.twilio.as_ref(),
            Some(org_id),
        )
        .await
    }

    /// [`Providers::twilio_for`] for ElevenLabs.
    pub async fn elevenlabs_for(&self, org_id: &str) -> Result<Option<ElevenLabsClient>, ApiError> {
        org_accounts::elevenlabs_for(
            self.org_accounts.as_deref(),
            self.elevenlabs.as_ref(),
            Some(org_id),
        )
        .await
    }
}

impl Providers {
    pub fn from_env(http: reqwest::Client) -> Result<Self, crate::base::config::ConfigError> {
        use crate::base::config::{base_url_or, optional, optional_secret};
        let twilio = match (
            optional("TWILIO_ACCOUNT_SID"),
            optional_secret("TWILIO_AUTH_TOKEN"),
        ) {
            (Some(account_sid), Some(auth_token)) => Some(TwilioClient {
                http: http.clone(),
                base_url: base_url_or("TWILIO_API_BASE_URL", "https://api.twilio.com")?,
                account_sid,
                auth_token,
                api_key: None,
            }),
            _ => None,
        };
        let elevenlabs = optional_secret("ELEVENLABS_API_KEY")
            .map(|api_key| {
                Ok::<_, crate::base::config::ConfigError>(ElevenLabsClient {
                    http: http.clone(),
                    base_url: base_url_or("ELEVENLABS_BASE_URL", "https://api.elevenlabs.io")?,
                    api_key,
                })
            })
            .transpose()?;
        Ok(Self {
            twilio,
            twilio_phone_number: optional("TWILIO_PHONE_NUMBER"),
            elevenlabs,
            public_base_url: crate::api::public_url::PublicBaseUrl::from_env(),
            org_accounts: None,
        })
    }
}

/// A provider HTTP client with the timeouts every provider call uses.
pub fn provider_http() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(8))
        .build()
}

/// Emits the seconds an organisation was charged, once (when counted).
pub fn usage_counted(call: &OutboundCall, seconds: u64, recorded: UsageRecorded) {
    if recorded == UsageRecorded::Counted {
        let org = call.org_id.as_deref().unwrap_or("unknown");
        metrics::observe(
            Metric::UsageSeconds,
            seconds as f64,
            Some(("Organisation", org)),
        );
    }
}

/// A provider's answer to placing a call: its own refusal text is passed on;
/// an outage is logged and answered with `who` and a hint to retry.
pub fn call_not_placed(err: ProviderError, who: &str) -> ApiError {
    match err {
        ProviderError::Refused(detail) => ApiError::Provider { detail },
        ProviderError::Unavailable(reason) | ProviderError::Unconfirmed(reason) => {
            tracing::warn!(%reason, provider = who, "provider unavailable");
            ApiError::Provider {
                detail: format!("{who} is unavailable; the call was not placed. Retry shortly."),
            }
        }
    }
}

/// How an outbound call ended, from whichever source learned it first
/// (status callback, monitor, post-call webhook).
pub struct CallEnding<'a> {
    pub status: &'a str,
    pub failure_reason: Option<&'a str>,
    pub transcript: &'a [TranscriptLine],
    pub duration_secs: Option<u64>,
    pub end_reason: EndReason,
    /// Learned by asking the provider (its webhook never came).
    pub reconciled: bool,
}

/// Stores the ending (each part idempotent), counts usage once and queues
/// the summary notification (delivered once per call whatever the source).
pub async fn finish_call(
    calls: &dyn OutboundCallStore,
    notifications: &dyn JobQueue,
    call: &OutboundCall,
    ending: CallEnding<'_>,
) -> Result<(), String> {
    if !ending.transcript.is_empty() {
        calls
            .set_transcript(&call.call_ref, ending.transcript)
            .await
            .map_err(|e| e.to_string())?;
    }
    calls
        .advance_status(&call.call_ref, ending.status, ending.failure_reason)
        .await
        .map_err(|e| e.to_string())?;
    calls
        .set_end(&call.call_ref, ending.end_reason, ending.reconciled)
        .await
        .map_err(|e| e.to_string())?;
    // Every ending settles the reservation: a call that never connected
    // (or reported no duration) releases it with nothing used.
    let seconds = ending.duration_secs.unwrap_or(0);
    let recorded = calls
        .record_duration(call, seconds)
        .await
        .map_err(|e| e.to_string())?;
    usage_counted(call, seconds, recorded);
    let job = NotificationJob::for_call(&call.call_ref, NotificationKind::OutboundCallSummary)
        .of_org(call.org_id.as_deref());
    jobs::send(notifications, &job, std::time::Duration::ZERO)
        .await
        .map_err(|e| e.to_string())
}
