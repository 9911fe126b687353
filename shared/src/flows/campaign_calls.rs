//! A campaign call's end settles its attempt (issue 23). Every source of a
//! call's end (status callback, post-call webhook, the reconciler, a
//! provider's refusal) ends in the record's settlement (`usage_counted`);
//! the calls stream passes that change here, so an attempt is settled from
//! one place whatever ended it, and exactly once: the recipient leaves
//! `dialling` for the state the retry policy gives, and the campaign's and
//! organisation's slots are given back, in one conditional transaction.

use std::sync::Arc;

use crate::base::end_reason::EndReason;
use crate::base::time::Clock;
use crate::store::campaigns::{
    AttemptCall, Campaign, CampaignState, CampaignStore, Recipient, RecipientState, RetryRule,
    Settlement,
};
use crate::store::outbound_calls::OutboundCall;
use crate::store::StoreError;

/// What an attempt's end means to the retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A person answered: the recipient is done.
    Answered,
    NoAnswer,
    Busy,
    Failed,
    /// Twilio's answering-machine detection heard a machine.
    Voicemail,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::NoAnswer => "no_answer",
            Self::Busy => "busy",
            Self::Failed => "failed",
            Self::Voicemail => "voicemail",
        }
    }

    fn rule(self, campaign: &Campaign) -> Option<RetryRule> {
        let policy = &campaign.retry;
        match self {
            Self::Answered => None,
            Self::NoAnswer => Some(policy.no_answer),
            Self::Busy => Some(policy.busy),
            Self::Failed => Some(policy.failed),
            Self::Voicemail => Some(policy.voicemail),
        }
    }
}

/// A machine (or fax) by Twilio's AMD, whatever the call's own end says.
fn machine(answered_by: Option<&str>) -> bool {
    answered_by.is_some_and(|a| a.starts_with("machine") || a == "fax")
}

/// The outcome of a settled call, from its end reason and AMD verdict.
pub fn outcome_of(call: &OutboundCall) -> Outcome {
    if machine(call.answered_by.as_deref()) {
        return Outcome::Voicemail;
    }
    match call.end_reason {
        Some(EndReason::NoAnswer) => Outcome::NoAnswer,
        Some(EndReason::Busy) => Outcome::Busy,
        Some(EndReason::Voicemail) => Outcome::Voicemail,
        Some(
            EndReason::Completed
            | EndReason::CallerHangup
            | EndReason::AgentHangup
            | EndReason::Timeout,
        ) => Outcome::Answered,
        Some(
            EndReason::Failed | EndReason::Canceled | EndReason::ProviderError | EndReason::Unknown,
        )
        | None => Outcome::Failed,
    }
}

/// Where an attempt that ended with `outcome` at `now` leaves its
/// recipient: done when answered, again after the rule's spacing while
/// attempts remain (and the campaign runs, and before its `end_at`), else
/// ended with the outcome as its reason.
pub fn next_step(
    campaign: &Campaign,
    recipient: &Recipient,
    outcome: Outcome,
    now: i64,
) -> (RecipientState, Option<String>, Option<i64>) {
    let Some(rule) = outcome.rule(campaign) else {
        return (RecipientState::Completed, Some("answered".into()), None);
    };
    if recipient.attempts < rule.max_attempts {
        let due = now + i64::from(rule.spacing_minutes) * 60;
        let ends = campaign
            .end_at
            .as_deref()
            .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
            .map(|e| e.timestamp());
        return match campaign.state {
            CampaignState::Cancelled => (RecipientState::Cancelled, Some("cancelled".into()), None),
            _ if ends.is_some_and(|end| due >= end) => {
                (RecipientState::Expired, Some("end_at".into()), None)
            }
            _ => (RecipientState::Pending, None, Some(due)),
        };
    }
    (
        RecipientState::Failed,
        Some(format!(
            "{} after {} attempts",
            outcome.as_str(),
            recipient.attempts
        )),
        None,
    )
}

pub struct CampaignCallEnds {
    pub store: Arc<dyn CampaignStore>,
    pub clock: Arc<dyn Clock>,
}

impl CampaignCallEnds {
    /// Settles the attempt `call` made, if it is still the recipient's
    /// current one; true when this settled it.
    pub async fn settle(&self, call: &OutboundCall) -> Result<bool, StoreError> {
        let (Some(campaign_id), Some(row)) = (&call.campaign_id, call.campaign_row) else {
            return Ok(false);
        };
        if !call.usage_counted {
            return Ok(false);
        }
        let Some(recipient) = self.store.recipient(campaign_id, row).await? else {
            return Ok(false);
        };
        if recipient.state != RecipientState::Dialling
            || recipient.dial_call_ref.as_deref() != Some(call.call_ref.as_str())
        {
            // Settled before: a later change of the same record.
            return Ok(false);
        }
        let Some(campaign) = self.store.get(campaign_id).await? else {
            return Ok(false);
        };
        let outcome = outcome_of(call);
        let (state, reason, due_at) = next_step(&campaign, &recipient, outcome, self.clock.now());
        let settled = self
            .store
            .settle(
                &campaign,
                &recipient,
                &call.call_ref,
                &Settlement {
                    state,
                    reason,
                    attempts: recipient.attempts,
                    due_at,
                    call: Some(AttemptCall {
                        attempt: call.campaign_attempt.unwrap_or(recipient.attempts),
                        call_ref: call.call_ref.clone(),
                        outcome: Some(outcome.as_str().into()),
                        end_reason: call.end_reason.map(|r| r.as_str().to_string()),
                        duration_secs: call.duration_secs,
                    }),
                },
            )
            .await?;
        if settled {
            tracing::info!(
                campaign_id = %campaign_id,
                row,
                outcome = outcome.as_str(),
                state = state.as_str(),
                "campaign attempt settled"
            );
        }
        Ok(settled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::campaigns::RetryPolicy;

    fn campaign(state: CampaignState, end_at: Option<&str>) -> Campaign {
        serde_json::from_value(serde_json::json!({
            "campaign_id": "cmp_0123456789abcdef0123456789abcdef",
            "org_id": "o", "assistant_id": 1, "start_at": "2026-12-07T09:00:00Z",
            "end_at": end_at,
            "window": {"start": "09:00", "end": "20:00"}, "max_concurrency": 1,
            "retry": RetryPolicy::default(), "state": state, "recipients": 1,
            "created_at": "t", "updated_at": "t"
        }))
        .unwrap()
    }

    fn recipient(attempts: u32) -> Recipient {
        serde_json::from_value(serde_json::json!({
            "campaign_id": "cmp_0123456789abcdef0123456789abcdef", "row": 1,
            "phone_number": "+12125550123", "zones": ["America/New_York"],
            "zone_source": "number", "state": "dialling", "attempts": attempts,
            "updated_at": "t"
        }))
        .unwrap()
    }

    fn call(end: EndReason, answered_by: Option<&str>) -> OutboundCall {
        let mut call = OutboundCall::initiated(
            "oc_x",
            crate::store::directory::Provider::Twilio,
            "+12125550123",
        );
        call.end_reason = Some(end);
        call.answered_by = answered_by.map(str::to_string);
        call
    }

    #[test]
    fn outcomes_come_from_the_end_reason_and_the_machine_verdict() {
        assert_eq!(
            outcome_of(&call(EndReason::Completed, Some("human"))),
            Outcome::Answered
        );
        assert_eq!(
            outcome_of(&call(EndReason::Completed, Some("machine_end_beep"))),
            Outcome::Voicemail
        );
        assert_eq!(
            outcome_of(&call(EndReason::NoAnswer, None)),
            Outcome::NoAnswer
        );
        assert_eq!(outcome_of(&call(EndReason::Busy, None)), Outcome::Busy);
        assert_eq!(
            outcome_of(&call(EndReason::ProviderError, None)),
            Outcome::Failed
        );
    }

    #[test]
    fn retries_follow_the_policy_then_end_with_the_outcome() {
        let now = 1_800_000_000;
        let active = campaign(CampaignState::Active, None);
        // no_answer: 3 attempts, 60 minutes apart.
        assert_eq!(
            next_step(&active, &recipient(1), Outcome::NoAnswer, now),
            (RecipientState::Pending, None, Some(now + 3600))
        );
        assert_eq!(
            next_step(&active, &recipient(3), Outcome::NoAnswer, now),
            (
                RecipientState::Failed,
                Some("no_answer after 3 attempts".into()),
                None
            )
        );
        assert_eq!(
            next_step(&active, &recipient(1), Outcome::Answered, now).0,
            RecipientState::Completed
        );
        let cancelled = campaign(CampaignState::Cancelled, None);
        assert_eq!(
            next_step(&cancelled, &recipient(1), Outcome::Busy, now).0,
            RecipientState::Cancelled
        );
        let ending = campaign(CampaignState::Active, Some("2027-01-15T08:00:00Z"));
        assert_eq!(
            next_step(&ending, &recipient(1), Outcome::Busy, 1_800_000_000 - 60).0,
            RecipientState::Expired
        );
    }
}
