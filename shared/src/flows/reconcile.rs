//! Outbound calls whose end never arrived (a status callback or post-call
//! webhook lost: Twilio never retries one, ElevenLabs does not by default)
//! are asked of their provider instead of guessed.
//!
//! Every open reservation has an entry in the open reservations ledger,
//! first due `max_call_seconds` plus a margin after placing (Twilio's
//! `TimeLimit` has ended the call by then). When one is due the sweep reads
//! the call at its provider, with the organisation's own account where it
//! has one:
//! - ended there: the answer is queued as the webhook it replaces
//!   (`ProviderEvent`, `reconciled: true`) on the provider-events queue, so
//!   the worker applies it with the webhook's idempotency key, settlement
//!   and notification, and a webhook arriving later is a duplicate;
//! - still ringing or in progress: asked again later (5 and 15 minutes);
//! - no answer (outage, 429, credentials refused, unknown call): asked again
//!   with backoff (5, 10, 20, then every 30 minutes; a `Retry-After` is
//!   honoured), the reservation held; after [`UNRECONCILED_AFTER`] such
//!   asks in a row it counts in `CallsUnreconciled` on every run.
//!
//! A Twilio call whose sid was never stored (its placing function stopped
//! between Twilio's answer and our write) is looked for among the account's
//! calls to its number: found, it is asked like any other; absent, Twilio
//! never placed it and it is released at zero (`failed`). Only an
//! ElevenLabs call with no conversation id cannot be asked: it is released
//! at zero seconds with the end reason `unknown`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tracing::{info, warn};

use crate::base::end_reason::EndReason;
use crate::flows::provider_events::ProviderEventIntake;
use crate::providers::elevenlabs::{Conversation, ElevenLabsClient};
use crate::providers::org_accounts::{self, OrgAccounts};
use crate::providers::twilio::{ReadFailure, TwilioClient};
use crate::queue::jobs::{
    self, EventBody, JobQueue, NotificationJob, NotificationKind, ProviderEvent,
};
use crate::store::directory::Provider;
use crate::store::outbound_calls::{status_rank, DueReservation, OutboundCall, OutboundCallStore};
use crate::store::StoreError;

/// Why a call with no provider id was released; shown on its record.
pub const NO_PROVIDER_ID: &str =
    "no provider id was recorded (the call may never have been placed), so its provider \
     cannot be asked; reservation released";

/// Why a Twilio call without a sid, of which Twilio has no trace, was
/// released; shown on its record.
pub const NEVER_PLACED: &str =
    "Twilio has no call to this number since it was recorded: never placed; reservation released";

/// Asks in a row without an answer before a call counts as unreconciled
/// (about 35 minutes of backoff after its first ask).
pub const UNRECONCILED_AFTER: u32 = 3;

/// When an open call is asked again.
const RINGING_RECHECK_SECS: i64 = 5 * 60;
const IN_PROGRESS_RECHECK_SECS: i64 = 15 * 60;
/// An answer queued to the worker: its settlement removes the entry; if
/// the worker has not applied it by then, the provider is asked again
/// (the same event, so a duplicate of the first).
const APPLIED_RECHECK_SECS: i64 = 10 * 60;
/// Waits after 1, 2, 3 and more asks without an answer.
const BACKOFF_SECS: [i64; 4] = [5 * 60, 10 * 60, 20 * 60, 30 * 60];

pub struct Reconciler {
    pub calls: Arc<dyn OutboundCallStore>,
    /// The provider-events queue the webhooks' routes feed.
    pub events: ProviderEventIntake,
    /// For calls released without a provider id.
    pub notifications: Arc<dyn JobQueue>,
    /// The deployment's accounts; `None` where not configured.
    pub twilio: Option<TwilioClient>,
    pub elevenlabs: Option<ElevenLabsClient>,
    /// Organisations' own accounts (`ORG_SECRETS_PREFIX`).
    pub org_accounts: Option<Arc<OrgAccounts>>,
    /// Most reads of one provider per run (`RECONCILE_READS_PER_PROVIDER`):
    /// the rest stay due for the next run.
    pub reads_per_provider: usize,
}

/// What one run did with the due calls.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Ended at their provider: the answer was queued to be applied.
    pub reconciled: Vec<String>,
    /// Still queued, ringing or in progress at their provider.
    pub still_open: Vec<String>,
    /// Not answered this time; asked again with backoff, reservation held.
    pub unanswered: Vec<String>,
    /// Unanswered [`UNRECONCILED_AFTER`] times or more in a row: what
    /// `CallsUnreconciled` counts.
    pub unreconciled: Vec<String>,
    /// No provider id to ask with: released at zero.
    pub released: Vec<String>,
    /// Settled by someone else before this run reached them.
    pub already_settled: usize,
    /// Left due for the next run (a provider's read budget or `Retry-After`).
    pub deferred: usize,
}

/// What the provider said about one call.
enum Answer {
    /// Ended: the event that applies the end.
    Ended(ProviderEvent),
    /// Not ended yet: its status there.
    Open(String),
    /// No usable answer.
    Unanswered(ReadFailure),
    /// Nothing to ask with.
    NoProviderId,
    /// Its provider has no call it could be: never placed.
    NeverPlaced,
}

fn queue_error(err: impl std::fmt::Display) -> StoreError {
    StoreError::Dynamo(format!("queue: {err}"))
}

/// The wait before asking again after `attempts` unanswered asks in a row.
pub fn backoff_secs(attempts: u32, retry_after_secs: Option<u64>) -> i64 {
    let index = usize::try_from(attempts.saturating_sub(1)).unwrap_or(usize::MAX);
    let wait = BACKOFF_SECS[index.min(BACKOFF_SECS.len() - 1)];
    let asked = retry_after_secs
        .and_then(|secs| i64::try_from(secs).ok())
        .unwrap_or(0);
    wait.max(asked)
}

/// When an open call is asked again, by its status at the provider.
pub fn recheck_secs(status: &str) -> i64 {
    match status {
        "in-progress" | "processing" => IN_PROGRESS_RECHECK_SECS,
        _ => RINGING_RECHECK_SECS,
    }
}

impl Reconciler {
    /// Works through the calls due at `now` (epoch seconds), at most
    /// `limit` ledger entries; an error stops the run (the next one goes on
    /// from the ledger, which only loses entries of settled calls).
    pub async fn run(&self, now: i64, limit: i32) -> Result<ReconcileReport, StoreError> {
        let mut report = ReconcileReport::default();
        let mut reads: HashMap<&'static str, usize> = HashMap::new();
        let mut paused: HashMap<&'static str, i64> = HashMap::new();
        for due in self.calls.due_reservations(now, limit).await? {
            let Some(call) = self.calls.get(&due.call_ref).await? else {
                warn!(call_ref = %due.call_ref, "open reservation without a call record");
                continue;
            };
            let live = call.reservation.as_ref().map(|r| r.release_after) == Some(due.due);
            if call.usage_counted || !live {
                // Settled, or an entry a settlement missed while it moved.
                self.calls
                    .drop_reservation_entry(&due.call_ref, due.due)
                    .await?;
                report.already_settled += 1;
                continue;
            }
            let provider = provider_name(call.provider);
            if paused.get(provider).is_some_and(|until| *until > now)
                || reads.get(provider).copied().unwrap_or(0) >= self.reads_per_provider
            {
                report.deferred += 1;
                continue;
            }
            let answer = self.ask(&call, now).await?;
            if !matches!(answer, Answer::NoProviderId) {
                *reads.entry(provider).or_default() += 1;
            }
            match answer {
                Answer::Ended(event) => {
                    self.events
                        .accept(event)
                        .await
                        .map_err(|e| queue_error(e.detail()))?;
                    self.move_on(&call, &due, now + APPLIED_RECHECK_SECS, 0)
                        .await?;
                    info!(call_ref = %call.call_ref, "call reconciled with its provider");
                    report.reconciled.push(call.call_ref);
                }
                Answer::Open(status) => {
                    self.move_on(&call, &due, now + recheck_secs(&status), 0)
                        .await?;
                    report.still_open.push(call.call_ref);
                }
                Answer::Unanswered(failure) => {
                    let attempts = call.reconcile_attempts.saturating_add(1);
                    let wait = backoff_secs(attempts, failure.retry_after_secs);
                    if failure.status == Some(429) || failure.retry_after_secs.is_some() {
                        paused.insert(provider, now + wait);
                    }
                    warn!(call_ref = %call.call_ref, %failure, attempts, "provider not answering about a call; reservation held");
                    self.move_on(&call, &due, now + wait, attempts).await?;
                    if attempts >= UNRECONCILED_AFTER {
                        report.unreconciled.push(call.call_ref.clone());
                    }
                    report.unanswered.push(call.call_ref);
                }
                Answer::NoProviderId => {
                    self.release(&call, NO_PROVIDER_ID, EndReason::Unknown)
                        .await?;
                    report.released.push(call.call_ref);
                }
                Answer::NeverPlaced => {
                    self.release(&call, NEVER_PLACED, EndReason::Failed).await?;
                    report.released.push(call.call_ref);
                }
            }
        }
        Ok(report)
    }

    async fn move_on(
        &self,
        call: &OutboundCall,
        due: &DueReservation,
        to: i64,
        attempts: u32,
    ) -> Result<(), StoreError> {
        let moved = self
            .calls
            .reschedule_reservation(call, due.due, to, attempts)
            .await?;
        if !moved {
            // Settled meanwhile: the settlement removed the entry it named.
            self.calls
                .drop_reservation_entry(&call.call_ref, due.due)
                .await?;
        }
        Ok(())
    }

    /// Reads the call at its provider.
    async fn ask(&self, call: &OutboundCall, now: i64) -> Result<Answer, StoreError> {
        let org = call.org_id.as_deref();
        Ok(match call.provider {
            Provider::Twilio => {
                let client = org_accounts::twilio_for(
                    self.org_accounts.as_deref(),
                    self.twilio.as_ref(),
                    org,
                )
                .await;
                let client = match client {
                    Ok(Some(client)) => client,
                    Ok(None) => return Ok(unconfigured("Twilio")),
                    Err(err) => return Ok(unusable_account(err.detail())),
                };
                let sid = match call.call_sid.clone() {
                    Some(sid) => sid,
                    None => match self.find_placed(&client, call).await? {
                        Ok(sid) => sid,
                        Err(answer) => return Ok(answer),
                    },
                };
                match client.fetch_call(&sid).await {
                    Ok(Some(state)) if status_rank(&state.status) == FINAL_RANK => {
                        Answer::Ended(twilio_event(call, &sid, &state.status, state.duration_secs))
                    }
                    Ok(Some(state)) => Answer::Open(state.status),
                    Ok(None) => unknown_call("Twilio"),
                    Err(failure) => Answer::Unanswered(failure),
                }
            }
            Provider::Elevenlabs => {
                let Some(conversation_id) = call.conversation_id.as_deref() else {
                    return Ok(Answer::NoProviderId);
                };
                let client = org_accounts::elevenlabs_for(
                    self.org_accounts.as_deref(),
                    self.elevenlabs.as_ref(),
                    org,
                )
                .await;
                let client = match client {
                    Ok(Some(client)) => client,
                    Ok(None) => return Ok(unconfigured("ElevenLabs")),
                    Err(err) => return Ok(unusable_account(err.detail())),
                };
                match client.conversation(conversation_id).await {
                    Ok(Some(conversation)) if conversation.is_final() => {
                        Answer::Ended(elevenlabs_event(conversation_id, &conversation, now))
                    }
                    Ok(Some(conversation)) => Answer::Open(conversation.status),
                    Ok(None) => unknown_call("ElevenLabs"),
                    Err(failure) => Answer::Unanswered(failure),
                }
            }
        })
    }

    /// A Twilio call whose sid was never stored (its placing function
    /// stopped between Twilio's answer and our write): looked for among the
    /// account's calls to its number created within a minute of its record.
    /// One found is attached (then asked like any other); none means Twilio
    /// never placed it; several cannot be told apart (held, asked again).
    async fn find_placed(
        &self,
        client: &TwilioClient,
        call: &OutboundCall,
    ) -> Result<Result<String, Answer>, StoreError> {
        let address = |number: &str| match call.session_kind.as_deref() {
            Some("whatsapp") => crate::providers::twilio::whatsapp_address(number),
            _ => number.to_string(),
        };
        let from = call.from_number.as_deref().map(address);
        let listed = match client
            .list_calls(&address(&call.to_number), from.as_deref())
            .await
        {
            Ok(listed) => listed,
            Err(failure) => return Ok(Err(Answer::Unanswered(failure))),
        };
        let recorded = chrono::DateTime::parse_from_rfc3339(&call.created_at)
            .map(|t| t.timestamp())
            .unwrap_or(0);
        let earlier = self.earlier_attempts_sids(call).await?;
        let candidates: Vec<&str> = listed
            .iter()
            .filter(|c| {
                c.created_at
                    .is_some_and(|at| placed_after_recording(at, recorded))
            })
            .map(|c| c.sid.as_str())
            .filter(|sid| !earlier.iter().any(|e| e == sid))
            .collect();
        match candidates.as_slice() {
            [] => Ok(Err(Answer::NeverPlaced)),
            [sid] => {
                let attached = self
                    .calls
                    .attach_provider_ids(&call.call_ref, Some(sid), None, "queued")
                    .await?;
                info!(call_ref = %call.call_ref, attached, "call found at Twilio by its number");
                Ok(Ok(sid.to_string()))
            }
            several => Ok(Err(Answer::Unanswered(ReadFailure {
                reason: format!(
                    "{} Twilio calls to this number since it was recorded; which one is ours is unknown",
                    several.len()
                ),
                status: None,
                retry_after_secs: None,
            }))),
        }
    }

    /// The sids of a campaign recipient's earlier attempts: calls to the
    /// same number that are known not to be this one.
    async fn earlier_attempts_sids(&self, call: &OutboundCall) -> Result<Vec<String>, StoreError> {
        let (Some(campaign), Some(row), Some(attempt)) =
            (&call.campaign_id, call.campaign_row, call.campaign_attempt)
        else {
            return Ok(Vec::new());
        };
        let mut sids = Vec::new();
        for earlier in 1..attempt {
            let call_ref = crate::store::campaigns::attempt_call_ref(campaign, row, earlier);
            if let Some(sid) = self.calls.get(&call_ref).await?.and_then(|c| c.call_sid) {
                sids.push(sid);
            }
        }
        Ok(sids)
    }

    /// A call that never was, or that nobody can ask about: released at
    /// zero with `reason`, with its summary (the one settlement decides, so
    /// once).
    async fn release(
        &self,
        call: &OutboundCall,
        reason: &str,
        end: EndReason,
    ) -> Result<(), StoreError> {
        self.calls
            .advance_status(&call.call_ref, "failed", Some(reason))
            .await?;
        self.calls.set_end(&call.call_ref, end, false).await?;
        let recorded = self.calls.record_duration(call, 0).await?;
        if recorded == crate::store::outbound_calls::UsageRecorded::Counted {
            warn!(call_ref = %call.call_ref, %reason, "call released at zero");
            let job =
                NotificationJob::for_call(&call.call_ref, NotificationKind::OutboundCallSummary)
                    .of_org(call.org_id.as_deref());
            jobs::send(self.notifications.as_ref(), &job, Duration::ZERO)
                .await
                .map_err(queue_error)?;
        }
        Ok(())
    }
}

/// Whether a call Twilio created at `at` may be the one recorded at
/// `recorded` (epoch seconds): placing follows recording within seconds, so
/// a call made before the record (allowing a few seconds of clock skew) or
/// more than a minute after it is another one to the same number.
fn placed_after_recording(at: i64, recorded: i64) -> bool {
    (recorded - CLOCK_SKEW_SECS..=recorded + 60).contains(&at)
}

/// How far Twilio's clock and ours may disagree.
const CLOCK_SKEW_SECS: i64 = 2;

const FINAL_RANK: u32 = 5;

fn provider_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Twilio => "twilio",
        Provider::Elevenlabs => "elevenlabs",
    }
}

fn unconfigured(provider: &str) -> Answer {
    Answer::Unanswered(ReadFailure {
        reason: format!("no {provider} account is configured for this call's organisation"),
        status: None,
        retry_after_secs: None,
    })
}

fn unusable_account(detail: String) -> Answer {
    Answer::Unanswered(ReadFailure {
        reason: detail,
        status: None,
        retry_after_secs: None,
    })
}

fn unknown_call(provider: &str) -> Answer {
    Answer::Unanswered(ReadFailure {
        reason: format!("{provider} does not know this call (another account?)"),
        status: Some(404),
        retry_after_secs: None,
    })
}

/// The status callback Twilio would have sent for the call's final status.
fn twilio_event(
    call: &OutboundCall,
    call_sid: &str,
    status: &str,
    duration_secs: Option<u64>,
) -> ProviderEvent {
    match call.session_kind.as_deref() {
        Some(kind) => ProviderEvent::TwilioSessionStatus {
            call_sid: call_sid.to_string(),
            status: status.to_string(),
            duration_secs,
            session_kind: (kind == "whatsapp").then(|| kind.to_string()),
            placed: Some(call.call_ref.clone()),
            our_number: None,
            sip_response_code: None,
            reconciled: true,
        },
        None => ProviderEvent::TwilioStatus {
            call_ref: call.call_ref.clone(),
            call_sid: call_sid.to_string(),
            status: status.to_string(),
            duration_secs,
            our_number: None,
            sip_response_code: None,
            reconciled: true,
        },
    }
}

/// The post-call webhook ElevenLabs would have sent: its `data` is the
/// conversation document itself. A conversation that failed before any
/// talk time is an initiation failure; one that failed after talking is
/// settled with its duration like any other.
fn elevenlabs_event(conversation_id: &str, conversation: &Conversation, now: i64) -> ProviderEvent {
    let mut data = conversation.raw.clone();
    let talked = conversation
        .metadata
        .as_ref()
        .and_then(|m| m.call_duration_secs)
        .is_some_and(|secs| secs > 0);
    let kind = if conversation.status == "failed" && !talked {
        if let Some(object) = data.as_object_mut() {
            let reason = conversation
                .metadata
                .as_ref()
                .and_then(|m| m.termination_reason.clone())
                .unwrap_or_else(|| "call failed".into());
            object.insert("failure_reason".into(), serde_json::json!(reason));
        }
        "call_initiation_failure"
    } else {
        "post_call_transcription"
    };
    if let Some(object) = data.as_object_mut() {
        object.insert("conversation_id".into(), serde_json::json!(conversation_id));
    }
    let body = serde_json::json!({"type": kind, "event_timestamp": now, "data": data});
    ProviderEvent::Elevenlabs {
        body: EventBody::Inline(body.to_string()),
        reconciled: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_call_made_in_the_minute_after_its_record_can_be_ours() {
        let recorded = 1_000_000;
        for (at, ours) in [
            (recorded, true),
            (recorded + 60, true),
            (recorded - 2, true),
            (recorded - 3, false),
            (recorded - 30, false),
            (recorded + 61, false),
        ] {
            assert_eq!(placed_after_recording(at, recorded), ours, "{at}");
        }
    }

    #[test]
    fn unanswered_asks_back_off_to_half_an_hour_and_honour_retry_after() {
        assert_eq!(backoff_secs(1, None), 300);
        assert_eq!(backoff_secs(2, None), 600);
        assert_eq!(backoff_secs(3, None), 1200);
        assert_eq!(backoff_secs(9, None), 1800);
        assert_eq!(backoff_secs(1, Some(3600)), 3600);
        assert_eq!(backoff_secs(1, Some(5)), 300);
    }

    #[test]
    fn a_call_in_progress_is_asked_again_later_than_one_ringing() {
        assert_eq!(recheck_secs("ringing"), 300);
        assert_eq!(recheck_secs("queued"), 300);
        assert_eq!(recheck_secs("in-progress"), 900);
        assert_eq!(recheck_secs("processing"), 900);
    }

    fn conversation(status: &str, duration: Option<u64>, reason: &str) -> Conversation {
        let raw = serde_json::json!({
            "agent_id": "agent_1",
            "status": status,
            "transcript": [],
            "metadata": {"call_duration_secs": duration, "termination_reason": reason},
        });
        Conversation {
            status: status.into(),
            transcript: Vec::new(),
            metadata: serde_json::from_value(raw["metadata"].clone()).unwrap(),
            raw,
        }
    }

    fn body_of(event: ProviderEvent) -> serde_json::Value {
        let ProviderEvent::Elevenlabs {
            body: EventBody::Inline(text),
            reconciled: true,
        } = event
        else {
            panic!("not a reconciled inline event");
        };
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn a_finished_conversation_becomes_the_post_call_webhook_it_replaces() {
        let body = body_of(elevenlabs_event(
            "conv_1",
            &conversation("done", Some(61), "Call ended by user"),
            7,
        ));
        assert_eq!(body["type"], "post_call_transcription");
        assert_eq!(body["data"]["conversation_id"], "conv_1");
        assert_eq!(body["data"]["metadata"]["call_duration_secs"], 61);
        let parsed: crate::flows::provider_events::ElevenLabsEvent =
            serde_json::from_value(body).unwrap();
        assert_eq!(parsed.data.conversation_id, "conv_1");
    }

    #[test]
    fn a_conversation_that_failed_before_talking_is_an_initiation_failure() {
        let body = body_of(elevenlabs_event(
            "conv_2",
            &conversation("failed", Some(0), "Line busy"),
            7,
        ));
        assert_eq!(body["type"], "call_initiation_failure");
        assert_eq!(body["data"]["failure_reason"], "Line busy");
        let talked = body_of(elevenlabs_event(
            "conv_3",
            &conversation("failed", Some(30), "error"),
            7,
        ));
        assert_eq!(talked["type"], "post_call_transcription");
    }

    #[test]
    fn a_session_call_is_reconciled_as_a_session_status() {
        let mut call = OutboundCall::initiated("oc_1", Provider::Twilio, "+15550100");
        call.session_kind = Some("whatsapp".into());
        match twilio_event(&call, "CA1", "completed", Some(9)) {
            ProviderEvent::TwilioSessionStatus {
                placed,
                session_kind,
                reconciled,
                duration_secs,
                ..
            } => {
                assert_eq!(placed.as_deref(), Some("oc_1"));
                assert_eq!(session_kind.as_deref(), Some("whatsapp"));
                assert!(reconciled);
                assert_eq!(duration_secs, Some(9));
            }
            other => panic!("{other:?}"),
        }
        call.session_kind = None;
        assert!(matches!(
            twilio_event(&call, "CA1", "busy", None),
            ProviderEvent::TwilioStatus {
                reconciled: true,
                ..
            }
        ));
    }
}
