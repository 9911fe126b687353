//! The worker side of provider events: applies each one once. Built with
//! the `livekit` feature: a finished call ends its session and room.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::*;
use crate::base::end_reason::EndReason;
use crate::flows::outbound::{finish_call, CallEnding, CALL_REF_VARIABLE};
use crate::flows::sessions::{SessionKind, SessionLifecycle};
use crate::flows::tenancy::{inbound_org, Channel};
use crate::providers::elevenlabs::ConversationMetadata;
use crate::queue::jobs::{self, NotificationJob, NotificationKind};
use crate::store::dedup::{run_once, DedupStore, Once, OnceError};
use crate::store::directory::Provider;
use crate::store::outbound_calls::{status_rank, OutboundCall, OutboundCallStore};
use crate::store::sessions::{Ending, SessionChange};
use crate::store::tenancy::TenancyStore;

const FINAL_RANK: u32 = 5;

/// What a Twilio status (callback or reconciled read) says about a call.
struct TwilioReport<'a> {
    call_sid: &'a str,
    status: &'a str,
    duration: Option<u64>,
    sip_response_code: Option<u16>,
    reconciled: bool,
}

fn ignored(call_sid: &str) -> Applied {
    Applied::Ignored(format!(
        "status of {call_sid} from a number its organisation does not own"
    ))
}

impl EventData {
    /// Our call ref, passed to ElevenLabs as a dynamic variable when we placed the call.
    fn call_ref(&self) -> Option<&str> {
        self.conversation_initiation_client_data
            .as_ref()?
            .get("dynamic_variables")?
            .get(CALL_REF_VARIABLE)?
            .as_str()
    }
}

/// The worker side: applies one event. Errors are retried by SQS.
pub struct ProviderEventProcessor {
    pub calls: Arc<dyn OutboundCallStore>,
    pub dedup: Arc<dyn DedupStore>,
    pub bodies: Arc<dyn EventBodyStore>,
    pub notification_queue: Arc<dyn JobQueue>,
    /// How long one delivery holds an event's dedup claim: the worker's timeout.
    pub lease: Duration,
    /// Ends seed 002 sessions (and their rooms) on a finished call.
    pub sessions: Option<Arc<SessionLifecycle>>,
    /// The number registry and `INBOUND_ORG_ID`: a status callback moves
    /// only a record of the organisation owning our side of the call.
    pub tenancy: Arc<dyn TenancyStore>,
    pub default_org: Option<String>,
}

/// What applying an event did, for logs and tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Done(serde_json::Value),
    Duplicate,
    Ignored(String),
}

impl ProviderEventProcessor {
    pub async fn apply(&self, event: &ProviderEvent) -> Result<Applied, String> {
        match event {
            ProviderEvent::TwilioStatus {
                call_ref,
                call_sid,
                status,
                duration_secs,
                our_number,
                sip_response_code,
                reconciled,
            } => {
                let org = self.call_org(call_ref).await?;
                if !self
                    .owns(org.as_deref(), our_number, Channel::Voice)
                    .await?
                {
                    return Ok(ignored(call_sid));
                }
                let key = format!("twilio-status#{call_sid}#{status}");
                let report = TwilioReport {
                    call_sid,
                    status,
                    duration: *duration_secs,
                    sip_response_code: *sip_response_code,
                    reconciled: *reconciled,
                };
                self.once(&key, || self.twilio_status(call_ref, &report))
                    .await
            }
            ProviderEvent::TwilioSessionStatus {
                call_sid,
                status,
                duration_secs,
                session_kind,
                placed,
                our_number,
                sip_response_code,
                reconciled,
            } => {
                let (kind, channel) = match session_kind.as_deref() {
                    Some("whatsapp") => (SessionKind::Whatsapp, Channel::WhatsApp),
                    _ => (SessionKind::Phone, Channel::Voice),
                };
                let org = match placed {
                    Some(call_ref) => self.call_org(call_ref).await?,
                    None => self.session_org(kind, call_sid).await?,
                };
                if !self.owns(org.as_deref(), our_number, channel).await? {
                    return Ok(ignored(call_sid));
                }
                let key = format!("twilio-session-status#{call_sid}#{status}");
                let report = TwilioReport {
                    call_sid,
                    status,
                    duration: *duration_secs,
                    sip_response_code: *sip_response_code,
                    reconciled: *reconciled,
                };
                self.once(&key, || async {
                    let applied = self
                        .session_status(kind, call_sid, status, *duration_secs)
                        .await?;
                    if let Some(call_ref) = placed {
                        self.placed_status(call_ref, call_sid, &report).await?;
                    }
                    Ok(applied)
                })
                .await
            }
            ProviderEvent::Elevenlabs { body, reconciled } => {
                let bytes = match body {
                    EventBody::Inline(text) => text.clone().into_bytes(),
                    EventBody::Stored(stored) => {
                        self.bodies.get(stored).await.map_err(|e| e.to_string())?
                    }
                };
                // The route parsed it before queueing; failing here is a bug, not the sender's.
                let event: ElevenLabsEvent = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("queued ElevenLabs body does not parse: {e}"))?;
                if !APPLIED_ELEVENLABS_KINDS.contains(&event.kind.as_str()) {
                    return Ok(Applied::Ignored(event.kind));
                }
                let key = format!("elevenlabs#{}#{}", event.data.conversation_id, event.kind);
                self.once(&key, || self.elevenlabs(&event, *reconciled))
                    .await
            }
        }
    }

    /// Whether `our_number` (on `channel`) belongs to `org`: its registry
    /// owner, else `INBOUND_ORG_ID`. Without a number or a record's
    /// organisation (events and records from before numbers had owners)
    /// there is nothing to hold it to.
    async fn owns(
        &self,
        org: Option<&str>,
        our_number: &Option<String>,
        channel: Channel,
    ) -> Result<bool, String> {
        let (Some(org), Some(number)) = (org, our_number.as_deref()) else {
            return Ok(true);
        };
        let owner = inbound_org(
            self.tenancy.as_ref(),
            channel,
            number,
            self.default_org.as_deref(),
        )
        .await
        .map_err(|e| e.to_string())?;
        if owner.as_deref() == Some(org) {
            return Ok(true);
        }
        warn!(%org, number = %crate::base::mask::phone(number), "status callback from a number not the record's organisation's; ignored");
        crate::base::metrics::count_by(
            crate::base::metrics::Metric::StatusIgnored,
            "Route",
            "/twilio/status",
        );
        Ok(false)
    }

    /// The organisation of an outbound call record, if it has one (none:
    /// unknown call, which the status itself reports).
    async fn call_org(&self, call_ref: &str) -> Result<Option<String>, String> {
        Ok(self
            .calls
            .get(call_ref)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|call| call.org_id))
    }

    /// The organisation of a session's call, when sessions are wired.
    async fn session_org(
        &self,
        kind: SessionKind,
        call_sid: &str,
    ) -> Result<Option<String>, String> {
        let Some(lifecycle) = &self.sessions else {
            return Ok(None);
        };
        Ok(lifecycle
            .sessions
            .get(&kind.room(call_sid))
            .await
            .map_err(|e| e.to_string())?
            .and_then(|session| session.org_id))
    }

    async fn once<F, Fut>(&self, key: &str, work: F) -> Result<Applied, String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<serde_json::Value, String>>,
    {
        match run_once(self.dedup.as_ref(), key, self.lease, work).await {
            Ok(Once::Done(result)) => Ok(Applied::Done(result)),
            Ok(Once::Duplicate(_)) => Ok(Applied::Duplicate),
            Ok(Once::InProgress) => Err("another delivery is applying this event".into()),
            Err(OnceError::Store(err)) => Err(format!("dedup store: {err}")),
            Err(OnceError::Work(err)) => Err(err),
        }
    }

    /// Statuses only advance by rank; the first final status settles the
    /// call's reservation (busy, no-answer and failed used nothing) and
    /// queues its summary.
    async fn twilio_status(
        &self,
        call_ref: &str,
        report: &TwilioReport<'_>,
    ) -> Result<serde_json::Value, String> {
        let call = self
            .calls
            .get(call_ref)
            .await
            .map_err(|e| e.to_string())?
            // Retried, then dead-lettered where the alarm sees it: a signed
            // callback for a call we never recorded needs a person.
            .ok_or_else(|| format!("no outbound call {call_ref}"))?;
        if call.call_sid.is_none() {
            // Placed though its placing never learned the sid (Twilio's
            // answer was lost): this signed callback names it. Stored so the
            // sweep never takes another call to the number for this one.
            let attached = self
                .calls
                .attach_provider_ids(call_ref, Some(report.call_sid), None, "queued")
                .await
                .map_err(|e| e.to_string())?;
            info!(%call_ref, attached, "call sid learned from its status callback");
        }
        let status = report.status;
        let moved = self
            .calls
            .advance_status(call_ref, status, None)
            .await
            .map_err(|e| e.to_string())?;
        info!(%call_ref, %status, moved, reconciled = report.reconciled, "Twilio status");
        if status_rank(status) == FINAL_RANK {
            self.settle_twilio(&call, report).await?;
            let job = NotificationJob::for_call(call_ref, NotificationKind::OutboundCallSummary)
                .of_org(call.org_id.as_deref());
            jobs::send(self.notification_queue.as_ref(), &job, Duration::ZERO)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(serde_json::json!({"status": status, "applied": moved}))
    }

    /// A final Twilio status: the end reason, then the reservation settled
    /// with the talk time (only a `completed` call used any), once.
    async fn settle_twilio(
        &self,
        call: &OutboundCall,
        report: &TwilioReport<'_>,
    ) -> Result<(), String> {
        let reason = EndReason::from_twilio(report.status, report.sip_response_code)
            .unwrap_or(EndReason::Unknown);
        self.calls
            .set_end(&call.call_ref, reason, report.reconciled)
            .await
            .map_err(|e| e.to_string())?;
        let seconds = report
            .duration
            .filter(|_| report.status == "completed")
            .unwrap_or(0);
        let recorded = self
            .calls
            .record_duration(call, seconds)
            .await
            .map_err(|e| e.to_string())?;
        info!(call_ref = %call.call_ref, seconds, ?recorded, %reason, "call settled");
        crate::flows::outbound::usage_counted(call, seconds, recorded);
        Ok(())
    }

    /// A call `/phone/call` placed: its record follows the status and the
    /// first final one settles its reservation with the real duration
    /// (`record_duration` is conditional on `usage_counted`, so once).
    async fn placed_status(
        &self,
        call_ref: &str,
        call_sid: &str,
        report: &TwilioReport<'_>,
    ) -> Result<(), String> {
        let call = self
            .calls
            .get(call_ref)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no outbound call {call_ref}"))?;
        if call.call_sid.as_deref().is_some_and(|sid| sid != call_sid) {
            return Err(format!("call {call_ref} is not {call_sid}"));
        }
        self.calls
            .advance_status(call_ref, report.status, None)
            .await
            .map_err(|e| e.to_string())?;
        if status_rank(report.status) == FINAL_RANK {
            self.settle_twilio(&call, report).await?;
        }
        Ok(())
    }

    /// The call this event is about: by conversation id, else by the call
    /// ref we passed as a dynamic variable (the conversation id may never
    /// have been stored if the placing function stopped right after the
    /// call), else a record of a call placed outside callops, created only
    /// if nobody else created it first.
    /// A session's call moved on: its status is kept while the call lives;
    /// a finished call (completed, busy, no-answer, failed, canceled) ends
    /// the session and deletes its room.
    async fn session_status(
        &self,
        kind: SessionKind,
        call_sid: &str,
        status: &str,
        duration: Option<u64>,
    ) -> Result<serde_json::Value, String> {
        let lifecycle = self
            .sessions
            .as_ref()
            .ok_or("session statuses need LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET")?;
        let room = kind.room(call_sid);
        let finished = status_rank(status) == FINAL_RANK;
        let applied = if finished {
            let ending = Ending {
                ended_at: crate::base::time::now_rfc3339(),
                duration_secs: duration.filter(|_| status == "completed"),
                reason: Some(status.to_string()),
                // A call's room hosts that one call: any ender is for it.
                ..Ending::default()
            };
            lifecycle
                .end(&room, &ending)
                .await
                .map_err(|e| e.to_string())?
        } else {
            lifecycle
                .sessions
                .update(&room, &SessionChange::CallStatus(status.to_string()))
                .await
                .map_err(|e| e.to_string())?
        };
        info!(%call_sid, %status, applied, "session call status");
        Ok(serde_json::json!({"status": status, "applied": applied}))
    }

    async fn find_or_record(&self, data: &EventData) -> Result<OutboundCall, String> {
        let err = |e: crate::store::StoreError| e.to_string();
        if let Some(call) = self.calls.get(&data.conversation_id).await.map_err(err)? {
            return Ok(call);
        }
        if let Some(call_ref) = data.call_ref() {
            if let Some(call) = self.calls.get(call_ref).await.map_err(err)? {
                return Ok(call);
            }
        }
        let call = unknown_call(&data.conversation_id, data.metadata.as_ref());
        if self.calls.create(&call).await.map_err(err)? {
            return Ok(call);
        }
        self.calls
            .get(&data.conversation_id)
            .await
            .map_err(err)?
            .ok_or_else(|| "call record vanished after a conflicting create".to_string())
    }

    async fn elevenlabs(
        &self,
        event: &ElevenLabsEvent,
        reconciled: bool,
    ) -> Result<serde_json::Value, String> {
        let data = &event.data;
        let call = self.find_or_record(data).await?;
        let metadata: Option<ConversationMetadata> = data
            .metadata
            .as_ref()
            .and_then(|m| serde_json::from_value(m.clone()).ok());
        let failed = event.kind == "call_initiation_failure";
        let reason = failed.then(|| {
            data.failure_reason
                .clone()
                .unwrap_or_else(|| "call initiation failed".into())
        });
        let termination = metadata
            .as_ref()
            .and_then(|m| m.termination_reason.as_deref());
        let end_reason = if failed {
            EndReason::from_elevenlabs("failed", reason.as_deref().or(termination))
        } else {
            EndReason::from_elevenlabs("done", termination)
        }
        .unwrap_or(EndReason::Unknown);
        info!(conversation_id = %data.conversation_id, kind = %event.kind, "post-call webhook");
        finish_call(
            self.calls.as_ref(),
            self.notification_queue.as_ref(),
            &call,
            CallEnding {
                status: if failed { "failed" } else { "done" },
                failure_reason: reason.as_deref(),
                transcript: &data.transcript,
                duration_secs: if failed {
                    None
                } else {
                    metadata.as_ref().and_then(|m| m.call_duration_secs)
                },
                end_reason,
                reconciled,
            },
        )
        .await
        .inspect_err(|err| warn!(error = %err, "post-call webhook not applied yet"))?;
        Ok(serde_json::json!({"conversation_id": data.conversation_id, "recorded": event.kind}))
    }
}

fn unknown_call(conversation_id: &str, metadata: Option<&serde_json::Value>) -> OutboundCall {
    let phone = metadata.and_then(|m| m.get("phone_call"));
    let text = |field: &str| {
        phone
            .and_then(|p| p.get(field))
            .and_then(|n| n.as_str())
            .map(str::to_string)
    };
    let to = text("external_number").unwrap_or_else(|| "unknown".into());
    OutboundCall {
        from_number: text("agent_number"),
        call_sid: text("call_sid"),
        conversation_id: Some(conversation_id.to_string()),
        ..OutboundCall::initiated(conversation_id, Provider::Elevenlabs, &to)
    }
}
