//! The campaign engine (issue 23): a scheduled tick that claims what may be
//! dialled now, and a dial worker that places each claimed attempt as an
//! ordinary outbound call. A call's end settles its attempt from the calls
//! stream (`flows::campaign_calls`).
//!
//! Why a tick and SQS, not EventBridge Scheduler per campaign: the work is
//! per recipient (each in its own zone and window, with its own retry
//! time), so one schedule per campaign would still need a per-recipient
//! queue; the `due` index is that queue, and one tick a minute reads only
//! what is due, bounded, never a Scan.
//!
//! The invariants:
//! - A dial is claimed once: one transaction takes a slot of the campaign
//!   (`in_flight < max_concurrency`), one of its organisation
//!   (`campaign_calls < max_concurrent_calls`) and moves the recipient from
//!   `pending` at attempt `n` to `dialling` attempt `n + 1` under a call ref
//!   derived from (campaign, row, attempt).
//! - A call is placed only by the request whose reservation created its
//!   record under that ref; a redelivered job, or a second tick, finds the
//!   record and places nothing.
//! - A claim that is not dialled (paused, cancelled, window closed, budget)
//!   is given back exactly: the recipient returns to `pending` at attempt
//!   `n`, the slots are freed.
//! - A claimed recipient stays due for a check: if its job was lost, the
//!   tick sends it again; if its call never ends, the reconciler ends it.

use std::sync::Arc;
use std::time::Duration;

use crate::api::ApiError;
use crate::base::time::Clock;
use crate::flows::outbound::{place_reserved, Placed, Placement};
use crate::queue::jobs::{self, CampaignDialJob, JobQueue, Notice, NotificationJob};
use crate::queue::sqs_batch::Outcome as JobOutcome;
use crate::store::campaigns::{
    Campaign, CampaignState, CampaignStore, Claim, Recipient, RecipientState, Settlement,
    Transition,
};
use crate::store::directory::Provider;
use crate::store::outbound_calls::OutboundCall;

/// Campaigns one tick looks at.
pub const CAMPAIGNS_PER_TICK: i32 = 50;
/// Due recipients one read of a campaign returns, and the reads one tick
/// makes of it at most (while slots are free).
pub const DUE_PER_CAMPAIGN: i32 = 50;
pub const DUE_PAGES_PER_TICK: usize = 4;
/// Pending rows one tick closes per campaign (expired or cancelled).
pub const CLOSE_PER_TICK: i32 = 100;
/// How long after a claim the tick checks the job was dialled.
pub const DIAL_CHECK_SECS: i64 = 300;
/// A recipient whose window does not open within the horizon is looked at
/// again after this.
const NOT_OPEN_RETRY_SECS: i64 = 86_400;

pub use crate::store::campaigns::attempt_call_ref;

fn unix(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp())
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TickReport {
    pub campaigns: usize,
    pub claimed: usize,
    /// Pending recipients outside their window, moved to its next opening.
    pub deferred: usize,
    /// Claims whose job was sent again (lost, or never dialled).
    pub resent: usize,
    /// Attempts whose call had ended but were not settled yet (their
    /// stream event failed or was lost), settled by the tick.
    pub settled: usize,
    /// Pending recipients ended (expired, cancelled).
    pub closed: usize,
    pub finished: usize,
}

pub struct CampaignTick {
    pub store: Arc<dyn CampaignStore>,
    pub dial_queue: Arc<dyn JobQueue>,
    pub clock: Arc<dyn Clock>,
    /// The calls the attempts placed: a claimed recipient due for its check
    /// is looked up by its call ref before anything is sent again.
    pub calls: Arc<dyn crate::store::outbound_calls::OutboundCallStore>,
}

impl CampaignTick {
    pub async fn run(&self) -> Result<TickReport, String> {
        let mut report = TickReport::default();
        let campaigns = self
            .store
            .ticking(CAMPAIGNS_PER_TICK)
            .await
            .map_err(|e| e.to_string())?;
        report.campaigns = campaigns.len();
        // Organisations found full this tick: their other campaigns wait.
        let mut full_orgs = std::collections::BTreeSet::new();
        for campaign in campaigns {
            let result = match campaign.state {
                CampaignState::Cancelled => {
                    self.close_all(
                        &campaign,
                        RecipientState::Cancelled,
                        "cancelled",
                        &mut report,
                    )
                    .await
                }
                CampaignState::Active => self.advance(&campaign, &mut full_orgs, &mut report).await,
                // Left the tick at its last change; nothing to do.
                _ => Ok(()),
            };
            if let Err(err) = result {
                // One campaign's failure does not hold the others back.
                tracing::warn!(campaign_id = %campaign.campaign_id, error = %err, "campaign tick failed");
            }
        }
        tracing::info!(?report, "campaign tick");
        Ok(report)
    }

    /// Ends `campaign`'s pending rows as `to` (bounded), then lets it leave
    /// the tick once nothing is pending or dialling.
    async fn close_all(
        &self,
        campaign: &Campaign,
        to: RecipientState,
        reason: &str,
        report: &mut TickReport,
    ) -> Result<(), String> {
        let page = self
            .store
            .recipients(
                &campaign.campaign_id,
                Some(RecipientState::Pending),
                CLOSE_PER_TICK,
                None,
            )
            .await
            .map_err(|e| e.to_string())?;
        for recipient in &page.items {
            if self
                .store
                .close_pending(recipient, to, reason)
                .await
                .map_err(|e| e.to_string())?
            {
                report.closed += 1;
            }
        }
        if page.items.is_empty() && self.wind_up(campaign).await? {
            report.finished += 1;
        }
        Ok(())
    }

    async fn wind_up(&self, campaign: &Campaign) -> Result<bool, String> {
        self.store
            .wind_up(campaign)
            .await
            .map_err(|e| e.to_string())
    }

    async fn advance(
        &self,
        campaign: &Campaign,
        full_orgs: &mut std::collections::BTreeSet<String>,
        report: &mut TickReport,
    ) -> Result<(), String> {
        let now = self.clock.now();
        if unix(&campaign.start_at).is_some_and(|start| now < start) {
            return Ok(());
        }
        if campaign
            .end_at
            .as_deref()
            .and_then(unix)
            .is_some_and(|end| now >= end)
        {
            return self
                .close_all(campaign, RecipientState::Expired, "end_at", report)
                .await;
        }
        let pending = campaign.counts.get("pending").copied().unwrap_or(0);
        let dialling = campaign.counts.get("dialling").copied().unwrap_or(0);
        if pending == 0 && dialling == 0 {
            if self.wind_up(campaign).await? {
                report.finished += 1;
            }
            return Ok(());
        }
        let mut free = campaign.max_concurrency.saturating_sub(campaign.in_flight);
        // Every recipient handled leaves "due now" (claimed, moved to its
        // window, or checked later), so each page read is new work; reading
        // stops when the slots are full or nothing more is due.
        for _ in 0..DUE_PAGES_PER_TICK {
            let due = self
                .store
                .due(&campaign.campaign_id, now, DUE_PER_CAMPAIGN)
                .await
                .map_err(|e| e.to_string())?;
            let last_page = due.len() < usize::try_from(DUE_PER_CAMPAIGN).unwrap_or(0);
            self.handle_due(campaign, due, now, &mut free, full_orgs, report)
                .await?;
            if last_page || free == 0 || full_orgs.contains(&campaign.org_id) {
                break;
            }
        }
        Ok(())
    }

    async fn handle_due(
        &self,
        campaign: &Campaign,
        due: Vec<Recipient>,
        now: i64,
        free: &mut u32,
        full_orgs: &mut std::collections::BTreeSet<String>,
        report: &mut TickReport,
    ) -> Result<(), String> {
        for recipient in due {
            match recipient.state {
                RecipientState::Dialling => {
                    let Some(call_ref) = recipient.dial_call_ref.clone() else {
                        continue;
                    };
                    let call = self.calls.get(&call_ref).await.map_err(|e| e.to_string())?;
                    match call {
                        // Ended and settled, but the stream did not settle
                        // the attempt (its event failed or was lost).
                        Some(call) if call.usage_counted => {
                            let ends = crate::flows::campaign_calls::CampaignCallEnds {
                                store: Arc::clone(&self.store),
                                clock: Arc::clone(&self.clock),
                            };
                            if ends.settle(&call).await.map_err(|e| e.to_string())? {
                                report.settled += 1;
                            }
                            continue;
                        }
                        // Placed and not ended: its end (or the reconciler,
                        // for an end that never came) settles it.
                        Some(_) => {}
                        // Claimed and never dialled (its job lost, or its
                        // dialler stopped): sent again. The dialler places
                        // nothing twice.
                        None => {
                            self.send(campaign, &recipient, recipient.attempts, &call_ref)
                                .await?;
                            report.resent += 1;
                        }
                    }
                    self.store
                        .reschedule(&recipient, now + DIAL_CHECK_SECS)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                RecipientState::Pending => {
                    let zones: Vec<&str> = recipient.zones.iter().map(String::as_str).collect();
                    if !campaign.window.is_open(&zones, now) {
                        let next = campaign
                            .window
                            .next_open(&zones, now)
                            .unwrap_or(now + NOT_OPEN_RETRY_SECS);
                        self.store
                            .reschedule(&recipient, next)
                            .await
                            .map_err(|e| e.to_string())?;
                        report.deferred += 1;
                        continue;
                    }
                    if *free == 0 || full_orgs.contains(&campaign.org_id) {
                        continue;
                    }
                    let attempt = recipient.attempts + 1;
                    let call_ref = attempt_call_ref(&campaign.campaign_id, recipient.row, attempt);
                    let claim = self
                        .store
                        .claim(campaign, &recipient, &call_ref, now + DIAL_CHECK_SECS)
                        .await
                        .map_err(|e| e.to_string())?;
                    match claim {
                        Claim::Claimed => {
                            *free -= 1;
                            report.claimed += 1;
                            if let Err(err) =
                                self.send(campaign, &recipient, attempt, &call_ref).await
                            {
                                // Left claimed: the check at DIAL_CHECK_SECS sends it again.
                                tracing::warn!(%err, %call_ref, "dial job not sent; the tick resends it");
                            }
                        }
                        Claim::CampaignFull => *free = 0,
                        Claim::OrganisationFull => {
                            full_orgs.insert(campaign.org_id.clone());
                        }
                        Claim::Stale => {}
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn send(
        &self,
        campaign: &Campaign,
        recipient: &Recipient,
        attempt: u32,
        call_ref: &str,
    ) -> Result<(), String> {
        let job = CampaignDialJob {
            campaign_id: campaign.campaign_id.clone(),
            row: recipient.row,
            attempt,
            call_ref: call_ref.to_string(),
        };
        jobs::send(self.dial_queue.as_ref(), &job, Duration::ZERO)
            .await
            .map_err(|e| e.to_string())
    }
}

/// What became of one dial job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialled {
    /// The call was placed (or its provider refused it: its record ends it).
    Placed,
    /// Not this attempt's job any more, or its call exists: nothing to do.
    Stale,
    /// The claim was given back (campaign paused or cancelled, window
    /// closed, budget spent).
    Released(&'static str),
    /// The recipient ended without a call (`dnc`, ...).
    Skipped(&'static str),
}

pub struct CampaignDialer {
    pub store: Arc<dyn CampaignStore>,
    pub placement: Placement,
    pub notifications: Arc<dyn JobQueue>,
    pub clock: Arc<dyn Clock>,
}

impl CampaignDialer {
    /// Places the attempt `job` names, once. `Retry` for an outage: the
    /// job comes again and finds what was done.
    pub async fn dial(&self, job: &CampaignDialJob) -> Result<Dialled, String> {
        let store = self.store.as_ref();
        let Some(recipient) = store
            .recipient(&job.campaign_id, job.row)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(Dialled::Stale);
        };
        if recipient.state != RecipientState::Dialling
            || recipient.attempts != job.attempt
            || recipient.dial_call_ref.as_deref() != Some(job.call_ref.as_str())
        {
            return Ok(Dialled::Stale);
        }
        // The call exists: placed, or being placed by another delivery.
        // Never a second one; its end settles the attempt.
        if self
            .placement
            .calls
            .get(&job.call_ref)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok(Dialled::Stale);
        }
        let Some(campaign) = store
            .get(&job.campaign_id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(Dialled::Stale);
        };
        let now = self.clock.now();
        if campaign.state != CampaignState::Active {
            self.give_back(&campaign, &recipient, job, now).await?;
            return Ok(Dialled::Released("campaign_not_active"));
        }
        let zones: Vec<&str> = recipient.zones.iter().map(String::as_str).collect();
        if !campaign.window.is_open(&zones, now) {
            let next = campaign
                .window
                .next_open(&zones, now)
                .unwrap_or(now + NOT_OPEN_RETRY_SECS);
            self.give_back(&campaign, &recipient, job, next).await?;
            return Ok(Dialled::Released("window_closed"));
        }
        match self
            .placement
            .check_not_listed(&campaign.org_id, &recipient.phone_number)
            .await
        {
            Ok(()) => {}
            Err(ApiError::NotPermitted { .. }) => {
                self.end_unplaced(&campaign, &recipient, job, RecipientState::Skipped, "dnc")
                    .await?;
                return Ok(Dialled::Skipped("dnc"));
            }
            Err(err) => return Err(err.detail()),
        }
        // What the campaign needs from the directory, checked at dial time:
        // a setting that broke pauses the campaign, not every recipient.
        let assistant = self
            .placement
            .directory
            .get_assistant(campaign.assistant_id)
            .await
            .map_err(|e| e.to_string())?
            .filter(|a| {
                a.is_active && a.org_id == campaign.org_id && a.provider == Provider::Twilio
            });
        let Some(assistant) = assistant else {
            return self
                .pause(
                    &campaign,
                    &recipient,
                    job,
                    now,
                    "assistant_unavailable",
                    "its assistant is missing, inactive or not a Twilio assistant",
                )
                .await;
        };
        let org = self
            .placement
            .directory
            .get_organisation(&campaign.org_id)
            .await
            .map_err(|e| e.to_string())?;
        let Some(org) = org else {
            return self
                .pause(
                    &campaign,
                    &recipient,
                    job,
                    now,
                    "organisation_missing",
                    "its organisation is missing",
                )
                .await;
        };
        let providers = &self.placement.providers;
        let twilio = providers
            .twilio_for(&org.org_id)
            .await
            .map_err(|e| e.detail())?;
        let base = providers.public_base_url.current();
        let from = assistant
            .caller_number
            .clone()
            .or_else(|| providers.twilio_phone_number.clone());
        let (Some(twilio), Some(base), Some(from)) = (twilio, base, from) else {
            return self
                .pause(
                    &campaign,
                    &recipient,
                    job,
                    now,
                    "provider_unavailable",
                    "Twilio, its caller number or PUBLIC_BASE_URL is not configured",
                )
                .await;
        };
        if let Err(err) = self.placement.check_caller_id(&org.org_id, &from).await {
            return match err {
                ApiError::NotPermitted { .. } => {
                    self.pause(
                        &campaign,
                        &recipient,
                        job,
                        now,
                        "caller_id_not_owned",
                        "its assistant's caller number is not the organisation's",
                    )
                    .await
                }
                other => Err(other.detail()),
            };
        }
        let record = OutboundCall {
            assistant_id: Some(assistant.assistant_id),
            from_number: Some(from.clone()),
            agenda: recipient.agenda.clone().or_else(|| campaign.agenda.clone()),
            welcome_message: recipient
                .welcome_message
                .clone()
                .or_else(|| campaign.welcome_message.clone())
                .or_else(|| assistant.default_welcome_message.clone()),
            agent_variables: recipient.agent_variables.clone(),
            status: "initiating".into(),
            status_rank: 0,
            campaign_id: Some(campaign.campaign_id.clone()),
            campaign_row: Some(recipient.row),
            campaign_attempt: Some(job.attempt),
            ..OutboundCall::initiated(&job.call_ref, Provider::Twilio, &recipient.phone_number)
        };
        let time_limit_secs = assistant.max_call_seconds;
        let to = recipient.phone_number.clone();
        let placed = place_reserved(
            self.placement.calls.as_ref(),
            self.placement.directory.as_ref(),
            record,
            &org,
            time_limit_secs,
            "The telephony provider",
            |call_ref| async move {
                let sid = twilio
                    .create_call(&crate::providers::twilio::NewCall {
                        to: &to,
                        from: &from,
                        twiml_url: &format!("{base}/twiml?call={call_ref}"),
                        status_callback: &format!("{base}/twilio/status?call={call_ref}"),
                        time_limit_secs,
                        amd_callback: Some(&format!("{base}/twilio/status?call={call_ref}&amd=1")),
                    })
                    .await?;
                Ok(Placed {
                    call_sid: Some(sid),
                    conversation_id: None,
                })
            },
        )
        .await;
        match placed {
            // Placed, or perhaps placed: either way the attempt is under way
            // and its call's settlement (callback or sweep) ends it.
            Ok(_)
            | Err(ApiError::BadGateway {
                code: crate::flows::outbound::CALL_UNCONFIRMED,
                ..
            }) => {
                // Watched until the call's longest end; its settlement ends the watch.
                let watch = now
                    + i64::try_from(time_limit_secs).unwrap_or(i64::MAX / 4)
                    + crate::flows::outbound::RESERVATION_MARGIN_SECS;
                if let Err(err) = self.store.reschedule(&recipient, watch).await {
                    tracing::warn!(error = %err, call_ref = %job.call_ref, "campaign watch not moved");
                }
                if let Err(err) = self.store.mark_started(&campaign.campaign_id).await {
                    tracing::warn!(error = %err, "campaign start not noted");
                }
                Ok(Dialled::Placed)
            }
            // The provider refused or failed: the record is marked failed and
            // settled, and its settlement retries by the policy.
            Err(ApiError::Provider { .. }) => Ok(Dialled::Placed),
            Err(ApiError::TooManyRequests { code: "usage_limit_exceeded", .. }) => {
                self.pause(&campaign, &recipient, job, now, "budget", "the organisation's monthly call budget is spent; raise it (or add top-up seconds) and resume the campaign")
                    .await
            }
            Err(err) => Err(err.detail()),
        }
    }

    /// Gives the claim back exactly: the recipient returns to `pending` at
    /// its attempt before the claim, due at `due_at`; the slots are freed.
    async fn give_back(
        &self,
        campaign: &Campaign,
        recipient: &Recipient,
        job: &CampaignDialJob,
        due_at: i64,
    ) -> Result<(), String> {
        self.store
            .settle(
                campaign,
                recipient,
                &job.call_ref,
                &Settlement {
                    state: RecipientState::Pending,
                    reason: None,
                    attempts: job.attempt - 1,
                    due_at: Some(due_at),
                    call: None,
                },
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn end_unplaced(
        &self,
        campaign: &Campaign,
        recipient: &Recipient,
        job: &CampaignDialJob,
        to: RecipientState,
        reason: &str,
    ) -> Result<(), String> {
        self.store
            .settle(
                campaign,
                recipient,
                &job.call_ref,
                &Settlement {
                    state: to,
                    reason: Some(reason.into()),
                    // No call was made: the attempt is not counted.
                    attempts: job.attempt - 1,
                    due_at: None,
                    call: None,
                },
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Pauses the campaign for `reason` (once: only the change from active
    /// notifies), and gives the claim back so resuming continues here.
    async fn pause(
        &self,
        campaign: &Campaign,
        recipient: &Recipient,
        job: &CampaignDialJob,
        now: i64,
        reason: &'static str,
        why: &str,
    ) -> Result<Dialled, String> {
        let changed = self
            .store
            .transition(
                &campaign.campaign_id,
                &[CampaignState::Active],
                CampaignState::Paused,
                Some(reason),
            )
            .await
            .map_err(|e| e.to_string())?;
        if let Transition::Applied(paused) = &changed {
            crate::base::metrics::count(crate::base::metrics::Metric::CampaignsPaused);
            let name = paused
                .name
                .clone()
                .unwrap_or_else(|| paused.campaign_id.clone());
            let notice = Notice {
                subject: format!("Campaign {name} paused: {reason}"),
                text: format!(
                    "Campaign {name} ({}) was paused because {why}. Calls in flight finish; \
                     POST /campaigns/{}/resume continues where it stopped.",
                    paused.campaign_id, paused.campaign_id
                ),
            };
            // Keyed by the pause's time so a later pause notifies again.
            let key = format!(
                "campaign#{}#paused#{}",
                paused.campaign_id, paused.updated_at
            );
            jobs::send(
                self.notifications.as_ref(),
                &NotificationJob::notice(&key, &paused.org_id, notice),
                Duration::ZERO,
            )
            .await
            .map_err(|e| e.to_string())?;
            tracing::warn!(campaign_id = %paused.campaign_id, reason, "campaign paused");
        }
        self.give_back(campaign, recipient, job, now).await?;
        Ok(Dialled::Released(reason))
    }

    /// One SQS message: a dial job.
    pub async fn process(&self, body: &str) -> JobOutcome {
        let job: CampaignDialJob = match serde_json::from_str(body) {
            Ok(job) => job,
            Err(err) => {
                tracing::error!(error = %err, "unreadable campaign dial job");
                return JobOutcome::Retry;
            }
        };
        match self.dial(&job).await {
            Ok(done) => {
                tracing::info!(campaign_id = %job.campaign_id, row = job.row, attempt = job.attempt, ?done, "campaign dial");
                JobOutcome::Done
            }
            Err(err) => {
                tracing::warn!(campaign_id = %job.campaign_id, row = job.row, error = %err, "campaign dial failed; retrying");
                JobOutcome::Retry
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_has_one_call_ref_of_our_shape() {
        let a = attempt_call_ref("cmp_0123456789abcdef0123456789abcdef", 7, 1);
        assert_eq!(
            a,
            attempt_call_ref("cmp_0123456789abcdef0123456789abcdef", 7, 1)
        );
        assert_ne!(
            a,
            attempt_call_ref("cmp_0123456789abcdef0123456789abcdef", 7, 2)
        );
        assert_ne!(
            a,
            attempt_call_ref("cmp_0123456789abcdef0123456789abcdef", 71, 1)
        );
        assert!(a.starts_with("oc_") && a.len() == 35);
    }
}
