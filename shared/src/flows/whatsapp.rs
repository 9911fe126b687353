//! WhatsApp through Twilio (seed 002): incoming messages are stored with
//! their reply's watch entry before Twilio is answered (`WhatsAppIntake`),
//! and the entry's stream record queues the reply job
//! (`NewIncomingMessages`); the reply
//! worker (`ReplyAgent`) answers each incoming message exactly once with the
//! agent's text; tenants send messages and templates (`WhatsAppSender`).
//!
//! Exactly one reply per incoming message:
//!
//! 1. The worker claims `wa-reply#{MessageSid}` in the dedup table, so
//!    concurrent deliveries of one job never both work; a completed claim
//!    makes every later delivery a no-op.
//! 2. The reply record `(conversation, reply#{MessageSid})` in the WhatsApp
//!    table is read first. A stored `reply_sid` means the reply went out; a
//!    stored text is re-sent as it is, without asking the LLM again.
//! 3. Otherwise the text is composed (media reply, LLM, or the fallback) and
//!    stored with `if_not_exists` **before** the send, with an attempt count.
//! 4. Twilio's accepted sid is written with the reply's message and pointer
//!    in one transaction, then the claim is completed with it.
//!
//! Residual window: Twilio accepted the message but the worker died (or the
//! request timed out on our side) before step 4 recorded the sid. The
//! redelivery finds the text without a sid and sends it again, so the user
//! may see the same reply twice; `attempts > 1` on the reply record (and a
//! warning in the log) marks every such re-send. Twilio's Messages API has
//! no idempotency key to close this window; we chose at-least-once over
//! silently dropping a reply.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::api::{self, ApiError};
use crate::base::mask;
use crate::base::metrics::{self, Metric};
use crate::flows::tenancy::{inbound_org, registry_number, signer_may_act_for, Channel};
use crate::providers::llm::{ChatClient, ChatMessage};
use crate::providers::org_accounts::TwilioAccounts;
use crate::providers::twilio::{
    self, MessageContent, MessageError, NewMessage, SentMessage, OUTSIDE_SESSION_WINDOW,
};
use crate::queue::jobs::WhatsAppReplyJob;
use crate::store::dedup::{complete_retrying, Claim, DedupStore, Settled};
use crate::store::tenancy::TenancyStore;
use crate::store::whatsapp::{
    conversation_key, Direction, PendingReply, StoredMessage, WhatsAppStore,
};

mod stream;
mod watch;
pub use stream::NewIncomingMessages;
pub use watch::{
    StatusCheck, StatusCheckReport, StuckReplies, StuckRepliesReport, REPLY_WATCH_AFTER,
    STATUS_RECHECK_SECS,
};

// Sending to a tenant's number checks it with libphonenumber; the webhooks
// and the reply worker answer numbers Twilio gave us.
#[cfg(feature = "phone")]
mod sending;
#[cfg(feature = "phone")]
pub use sending::{normalise_to, Outgoing, WhatsAppSender};

/// Default text for a message with media and no words (`WHATSAPP_MEDIA_REPLY`).
pub const DEFAULT_MEDIA_REPLY: &str =
    "Thanks for the attachment! I can only read text messages for now; please describe what you need in words.";

/// Default system prompt (`AGENT_SYSTEM_PROMPT`).
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are a helpful assistant answering WhatsApp messages. Keep answers short and friendly.";

/// The dedup key of one incoming message's reply.
pub fn reply_key(message_sid: &str) -> String {
    format!("wa-reply#{message_sid}")
}

/// Twilio sids: two letters then hex; anything else is not Twilio's.
pub fn valid_sid(sid: &str) -> bool {
    (10..=64).contains(&sid.len()) && sid.chars().all(|c| c.is_ascii_alphanumeric())
}

/// A WhatsApp id as used in conversation keys: the number's digits.
/// Accepts `whatsapp:+E164`, `+E164` or bare digits.
pub fn wa_id(value: &str) -> Option<String> {
    let value = value.trim();
    let value = value.strip_prefix("whatsapp:").unwrap_or(value).trim();
    let digits = value.strip_prefix('+').unwrap_or(value);
    ((6..=20).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()))
        .then(|| digits.to_string())
}

/// An incoming WhatsApp message as Twilio posts it (unknown fields ignored).
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub message_sid: String,
    /// `whatsapp:+E164` of the sender.
    pub from: String,
    /// `To`: our number it was sent to, as Twilio gave it (may be empty).
    pub to: String,
    pub wa_id: String,
    pub body: String,
    pub num_media: u32,
    pub profile_name: Option<String>,
    /// The organisation whose own Twilio account signed the webhook (`None`:
    /// the deployment's account); set by the route after verification.
    pub signed_by: Option<String>,
}

impl Inbound {
    pub fn from_form(params: &[(String, String)]) -> Result<Self, ApiError> {
        let field = |name| twilio::field(params, name);
        let message_sid = field("MessageSid")
            .or_else(|| field("SmsMessageSid"))
            .filter(|sid| valid_sid(sid))
            .ok_or_else(|| ApiError::unprocessable("missing_field", "MessageSid is required"))?
            .to_string();
        let from = field("From")
            .filter(|f| f.trim().starts_with("whatsapp:"))
            .ok_or_else(|| {
                ApiError::unprocessable("invalid_from", "From must be whatsapp:+<number>")
            })?;
        let wa = field("WaId")
            .and_then(wa_id)
            .or_else(|| wa_id(from))
            .ok_or_else(|| {
                ApiError::unprocessable("invalid_from", "From must be whatsapp:+<number>")
            })?;
        Ok(Self {
            message_sid,
            from: twilio::whatsapp_address(&format!("+{wa}")),
            to: field("To").unwrap_or_default().to_string(),
            wa_id: wa,
            body: field("Body").unwrap_or_default().to_string(),
            num_media: field("NumMedia")
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0),
            profile_name: field("ProfileName")
                .filter(|p| !p.trim().is_empty())
                .map(str::to_string),
            signed_by: None,
        })
    }
}

/// `/whatsapp/message`: the message and its reply's watch entry, durable
/// before 200, in one write; the entry's stream record queues the reply job
/// (`stream::NewIncomingMessages`).
pub struct WhatsAppIntake {
    pub store: Arc<dyn WhatsAppStore>,
    /// The number registry: the organisation owning the number written to.
    pub tenancy: Arc<dyn TenancyStore>,
    /// `INBOUND_ORG_ID`: owner of a number the registry does not know; when
    /// unset, messages to such a number are dropped (counted, not stored).
    pub inbound_org: Option<String>,
}

impl WhatsAppIntake {
    /// Stores the message in its conversation with its reply's watch entry,
    /// once per `MessageSid`: the message's conditional put is the dedup, so
    /// a duplicate (or an SDK retry of a write that went through) changes
    /// nothing and is answered the same. Only a failed store is 503: Twilio
    /// does not retry it unless the webhook URL asks (`#rc=`/`#rp=`).
    /// Returns whether this delivery stored it.
    ///
    /// The organisation is the owner of the number written to (`To`); a
    /// number nobody owns with no `INBOUND_ORG_ID` stores nothing.
    pub async fn accept(&self, inbound: &Inbound) -> Result<bool, ApiError> {
        let org = inbound_org(
            self.tenancy.as_ref(),
            Channel::WhatsApp,
            &inbound.to,
            self.inbound_org.as_deref(),
        )
        .await
        .map_err(api::unavailable)?
        .filter(|org| signer_may_act_for(inbound.signed_by.as_deref(), org));
        let Some(org) = org else {
            info!(
                message_sid = %inbound.message_sid,
                to = %mask::phone(&inbound.to),
                "WhatsApp message to a number no organisation owns; dropped"
            );
            metrics::count_by(Metric::InboundUnowned, "Route", "/whatsapp/message");
            return Ok(false);
        };
        let conversation = conversation_key(&org, &inbound.wa_id);
        let mut message = StoredMessage::new(
            &conversation,
            &inbound.message_sid,
            Direction::Inbound,
            &inbound.body,
            "received",
        );
        message.num_media = inbound.num_media;
        message.profile_name = inbound.profile_name.clone();
        let pending = PendingReply {
            message_sid: inbound.message_sid.clone(),
            conversation,
            reply_to: inbound.from.clone(),
            reply_from: registry_number(&inbound.to).map(twilio::whatsapp_address),
            body: inbound.body.clone(),
            num_media: inbound.num_media,
        };
        // The entry is the job: its INSERT reaches the stream consumer, and
        // the sweep re-queues it if the reply is not out by `due`.
        let due = crate::base::time::epoch_secs() + REPLY_WATCH_AFTER.as_secs() as i64;
        let stored = self
            .store
            .record_inbound(&message, &pending, due)
            .await
            .map_err(api::unavailable)?;
        if stored {
            info!(
                message_sid = %inbound.message_sid,
                from = %mask::phone(&inbound.wa_id),
                "WhatsApp message stored"
            );
        } else {
            metrics::count(Metric::Duplicate);
            info!(message_sid = %inbound.message_sid, "WhatsApp message delivered again; already stored");
        }
        Ok(stored)
    }
}

/// What the reply worker does with text it cannot get from the LLM, and its bounds.
#[derive(Debug, Clone)]
pub struct ReplySettings {
    /// `whatsapp:+E164` of our number (`TWILIO_WHATSAPP_NUMBER`).
    pub from: String,
    pub system_prompt: String,
    pub media_reply: String,
    /// `WHATSAPP_FALLBACK_REPLY`: sent when the LLM fails; none if unset.
    pub fallback_reply: Option<String>,
    /// Turns of the conversation given to the LLM.
    pub history: usize,
    pub llm_timeout: Duration,
    pub twilio_timeout: Duration,
    /// `{PUBLIC_BASE_URL}/whatsapp/status`, when known.
    pub status_callback: Option<String>,
}

/// What became of one reply job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// Sent now, with this sid.
    Sent(String),
    /// A previous delivery sent it (or settled it).
    AlreadyDone,
    /// Nothing to send (LLM failed without a fallback, or an empty message).
    NoReply,
    /// Twilio refused the reply for good (logged, recorded).
    Refused(String),
}

/// The reply worker's logic (see the module's exactly-once design).
pub struct ReplyAgent {
    pub dedup: Arc<dyn DedupStore>,
    pub store: Arc<dyn WhatsAppStore>,
    /// The conversation's organisation's own account, else the deployment's.
    pub twilio: TwilioAccounts,
    pub llm: ChatClient,
    pub settings: ReplySettings,
    /// Upper bound of the reply claim; never beyond the deadline.
    pub lease: Duration,
}

/// Local tries of recording an accepted reply: losing that record is what
/// would make a redelivery send it twice.
const RECORD_ATTEMPTS: u32 = 4;

impl ReplyAgent {
    /// Replies to `job` once, finishing before `stop`. `Err` leaves the job
    /// for SQS to deliver again (claim released, stored text kept).
    pub async fn reply(
        &self,
        job: &WhatsAppReplyJob,
        stop: Instant,
    ) -> Result<ReplyOutcome, String> {
        let key = reply_key(&job.message_sid);
        let left = stop.saturating_duration_since(Instant::now());
        let lease = self.lease.min(left).max(Duration::from_secs(1));
        let owner = match self
            .dedup
            .claim(&key, lease)
            .await
            .map_err(|e| e.to_string())?
        {
            Claim::Completed(_) => return Ok(ReplyOutcome::AlreadyDone),
            Claim::InProgress => return Err("another delivery is replying".into()),
            Claim::Acquired(owner) => owner,
        };
        match self.reply_claimed(job, stop).await {
            Ok(outcome) => {
                let saved = match &outcome {
                    ReplyOutcome::Sent(sid) => serde_json::json!({"reply_sid": sid}),
                    other => serde_json::json!({"outcome": format!("{other:?}")}),
                };
                match complete_retrying(self.dedup.as_ref(), &key, &owner, &saved).await {
                    Ok(Settled::Done) => {}
                    Ok(Settled::Lost) => warn!(%key, "reply claim lost before completion"),
                    // The reply record still says what happened; a redelivery reads it.
                    Err(err) => warn!(%key, error = %err, "reply claim not completed"),
                }
                Ok(outcome)
            }
            Err(reason) => {
                if let Err(err) = self.dedup.release(&key, &owner).await {
                    warn!(%key, error = %err, "reply claim not released; it lapses with its lease");
                }
                Err(reason)
            }
        }
    }

    async fn reply_claimed(
        &self,
        job: &WhatsAppReplyJob,
        stop: Instant,
    ) -> Result<ReplyOutcome, String> {
        let conversation = &job.conversation;
        let sid = &job.message_sid;
        let record = self
            .store
            .reply(conversation, sid)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        if record.reply_sid.is_some() || matches!(record.state.as_deref(), Some("none" | "failed"))
        {
            return Ok(ReplyOutcome::AlreadyDone);
        }
        let text = match record.text {
            // Composed by an earlier delivery that did not finish the send.
            Some(text) => {
                info!(message_sid = %sid, "re-sending the stored reply; the LLM is not asked again");
                text
            }
            None => match self.compose(job, stop).await? {
                Some(text) => text,
                None => {
                    self.store
                        .settle_unsent(conversation, sid, "none", None)
                        .await
                        .map_err(|e| e.to_string())?;
                    return Ok(ReplyOutcome::NoReply);
                }
            },
        };
        // Durable before the send: a redelivery re-sends exactly this.
        let record = self
            .store
            .begin_send(conversation, sid, &text)
            .await
            .map_err(|e| e.to_string())?;
        if record.reply_sid.is_some() {
            return Ok(ReplyOutcome::AlreadyDone);
        }
        let text = record.text.unwrap_or(text);
        let parts = split_reply(&text, MAX_BODY_CHARS);
        if record.attempts > 1 {
            warn!(
                message_sid = %sid,
                attempts = record.attempts,
                "re-sending a reply whose earlier send has no recorded outcome; the user may receive it twice"
            );
        }
        // The conversation is `{org}#{waId}`: its organisation's account
        // sends (an unreadable one leaves the job for a redelivery).
        let org_id = conversation.split_once('#').map(|(org, _)| org);
        let twilio = self
            .twilio
            .account_for(org_id)
            .await
            .map_err(|err| err.detail())?;
        // Parts accepted before (a redelivery) are not sent again.
        let mut last = None;
        let total = parts.len() as u32;
        for (part, body) in (0..total).zip(&parts).skip(record.sent_parts as usize) {
            let timeout = self
                .settings
                .twilio_timeout
                .min(stop.saturating_duration_since(Instant::now()));
            let sent = twilio
                .send_message(
                    &NewMessage {
                        from: job.reply_from.as_deref().unwrap_or(&self.settings.from),
                        to: &job.reply_to,
                        content: MessageContent::Text(body),
                        status_callback: self.settings.status_callback.as_deref(),
                    },
                    timeout,
                )
                .await;
            match sent {
                Ok(sent) => {
                    self.record_sent(job, part, total, body, &sent).await;
                    info!(message_sid = %sid, reply_sid = %sent.sid, part, total, "WhatsApp reply sent");
                    last = Some(sent.sid);
                }
                Err(MessageError::Refused {
                    status,
                    code,
                    message,
                }) => {
                    // `message` is masked by the client (Twilio quotes numbers).
                    let reason = format!("HTTP {status}, code {code:?}: {message}");
                    warn!(message_sid = %sid, %reason, "Twilio refused the WhatsApp reply");
                    self.store
                        .settle_unsent(conversation, sid, "failed", Some(&reason))
                        .await
                        .map_err(|e| e.to_string())?;
                    return Ok(ReplyOutcome::Refused(reason));
                }
                Err(MessageError::Unavailable(reason)) => {
                    return Err(format!(
                        "Twilio unavailable, reply kept for the retry: {reason}"
                    ))
                }
            }
        }
        Ok(last.map_or(ReplyOutcome::AlreadyDone, ReplyOutcome::Sent))
    }

    /// The accepted reply on its record and in the conversation, retried
    /// locally; if that still fails, the completed claim (which carries the
    /// sid) is what keeps redeliveries from sending it again.
    async fn record_sent(
        &self,
        job: &WhatsAppReplyJob,
        part: u32,
        parts: u32,
        text: &str,
        sent: &SentMessage,
    ) {
        let message = StoredMessage::new(
            &job.conversation,
            &sent.sid,
            Direction::Outbound,
            text,
            &sent.status,
        );
        for attempt in 0..RECORD_ATTEMPTS {
            match self
                .store
                .finish_send(&job.message_sid, part, parts, &message)
                .await
            {
                Ok(()) => return,
                Err(err) => {
                    warn!(message_sid = %job.message_sid, reply_sid = %sent.sid, error = %err, attempt, "reply not recorded yet");
                    tokio::time::sleep(crate::base::time::jitter(Duration::from_millis(
                        100 << attempt,
                    )))
                    .await;
                }
            }
        }
        tracing::error!(message_sid = %job.message_sid, reply_sid = %sent.sid, "sent reply not recorded in its conversation");
    }

    /// The reply's text: the media reply, the LLM's answer, or the fallback
    /// (`None`: send nothing). `Err` only when the conversation cannot be read.
    async fn compose(
        &self,
        job: &WhatsAppReplyJob,
        stop: Instant,
    ) -> Result<Option<String>, String> {
        if job.body.trim().is_empty() {
            return Ok((job.num_media > 0).then(|| self.settings.media_reply.clone()));
        }
        let history = self
            .store
            .messages(&job.conversation, self.settings.history)
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = vec![ChatMessage {
            role: "system",
            content: self.settings.system_prompt.clone(),
        }];
        messages.extend(turns(&history));
        if !history.iter().any(|m| m.sid == job.message_sid) {
            messages.push(ChatMessage {
                role: "user",
                content: job.body.clone(),
            });
        }
        // Leave the Twilio send its own time before the deadline.
        let left = stop
            .saturating_duration_since(Instant::now())
            .saturating_sub(self.settings.twilio_timeout);
        let timeout = self.settings.llm_timeout.min(left);
        match self.llm.complete(&messages, timeout).await {
            Ok(text) => Ok(Some(text)),
            Err(err) => {
                warn!(message_sid = %job.message_sid, error = %err, fallback = self.settings.fallback_reply.is_some(), "LLM gave no reply");
                Ok(self.settings.fallback_reply.clone())
            }
        }
    }
}

/// WhatsApp's body limit on Twilio, in characters (not bytes).
pub const MAX_BODY_CHARS: usize = 1600;

/// `text` as messages of at most `limit` characters, in order, cut at the
/// last paragraph, line, sentence or word break that fits (a hard cut only
/// for a run without one); the whitespace at a cut is dropped.
pub fn split_reply(text: &str, limit: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while rest.chars().count() > limit {
        let window_end = rest
            .char_indices()
            .nth(limit)
            .map_or(rest.len(), |(i, _)| i);
        let window = &rest[..window_end];
        let cut = break_in(window).unwrap_or(window_end);
        parts.push(rest[..cut].trim_end().to_string());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() {
        parts.push(rest.to_string());
    }
    parts
}

/// Where to cut `window` (a byte index after the break), preferring the
/// coarsest break in its second half, then any word break.
fn break_in(window: &str) -> Option<usize> {
    let half = window.len() / 2;
    let after = |found: Option<usize>, len: usize| found.map(|i| i + len).filter(|&i| i > half);
    let sentence = window
        .char_indices()
        .zip(window.chars().skip(1))
        .filter(|((_, c), next)| matches!(c, '.' | '!' | '?') && next.is_whitespace())
        .map(|((i, _), _)| i + 1)
        .last();
    after(window.rfind("\n\n"), 2)
        .or_else(|| after(window.rfind('\n'), 1))
        .or_else(|| sentence.filter(|&i| i > half))
        .or_else(|| window.rfind(char::is_whitespace).filter(|&i| i > 0))
}

/// A conversation as chat turns: the user's messages and ours, oldest first,
/// skipping messages without text (media, templates).
pub fn turns(history: &[StoredMessage]) -> Vec<ChatMessage> {
    history
        .iter()
        .filter(|m| !m.body.trim().is_empty())
        .map(|m| ChatMessage {
            role: match m.direction {
                Direction::Inbound => "user",
                Direction::Outbound => "assistant",
            },
            content: m.body.clone(),
        })
        .collect()
}

/// Twilio's refusal as the client sees it: the 24-hour rule with its remedy,
/// another refusal with Twilio's code, an outage as 502.
pub fn not_sent(err: MessageError) -> ApiError {
    match err {
        MessageError::Refused {
            code: Some(OUTSIDE_SESSION_WINDOW),
            ..
        } => ApiError::Unprocessable {
            code: "outside_session_window",
            detail: "WhatsApp delivers free-form messages only within 24 hours of the \
                     recipient's last message (Twilio error 63016); send an approved template \
                     instead: {\"to\", \"contentSid\", \"contentVariables\"}"
                .into(),
        },
        // Our own credentials or account: not the client's to fix.
        MessageError::Refused {
            status: 401 | 403,
            code,
            message,
        } => {
            warn!(?code, %message, "Twilio refused our credentials");
            ApiError::BadGateway {
                code: "twilio_unavailable",
                detail: "Twilio refused this service's credentials; the message was not sent"
                    .into(),
            }
        }
        MessageError::Refused { code, message, .. } => ApiError::Unprocessable {
            code: "twilio_rejected",
            detail: match code {
                Some(code) => {
                    format!("Twilio refused the message (Twilio error {code}): {message}")
                }
                None => format!("Twilio refused the message: {message}"),
            },
        },
        MessageError::Unavailable(reason) => {
            warn!(%reason, "Twilio unavailable for a WhatsApp send");
            ApiError::BadGateway {
                code: "twilio_unavailable",
                detail:
                    "Twilio did not confirm the message; it may not have been sent. Retry shortly."
                        .into(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wa_ids_are_digits() {
        assert_eq!(
            wa_id("whatsapp:+14155550100").as_deref(),
            Some("14155550100")
        );
        assert_eq!(wa_id("14155550100").as_deref(), Some("14155550100"));
        assert_eq!(wa_id("+1415a"), None);
        assert_eq!(wa_id("../etc"), None);
    }

    #[test]
    fn inbound_form_ignores_unknown_fields() {
        let form: Vec<(String, String)> = [
            ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
            ("From", "whatsapp:+14155550100"),
            ("To", "whatsapp:+14155238886"),
            ("Body", "Hello"),
            ("NumMedia", "0"),
            ("ProfileName", "Ana"),
            ("WaId", "14155550100"),
            ("SmsStatus", "received"),
            ("ApiVersion", "2010-04-01"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let inbound = Inbound::from_form(&form).unwrap();
        assert_eq!(inbound.wa_id, "14155550100");
        assert_eq!(inbound.from, "whatsapp:+14155550100");
        assert_eq!(inbound.profile_name.as_deref(), Some("Ana"));
        let mut not_whatsapp = form.clone();
        not_whatsapp[1].1 = "+14155550100".into();
        assert!(Inbound::from_form(&not_whatsapp).is_err());
    }

    #[test]
    fn the_24_hour_rule_names_templates() {
        let err = not_sent(MessageError::Refused {
            status: 400,
            code: Some(63016),
            message: "outside window".into(),
        });
        assert_eq!(err.status(), http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(err.detail().contains("contentSid"));
        let other = not_sent(MessageError::Refused {
            status: 400,
            code: Some(21211),
            message: "Invalid 'To' Phone Number".into(),
        });
        assert!(other.status().is_client_error());
        assert!(other.detail().contains("21211"));
        assert_eq!(
            not_sent(MessageError::Unavailable("x".into())).status(),
            http::StatusCode::BAD_GATEWAY
        );
    }

    #[test]
    fn long_replies_split_at_sentences_within_the_limit() {
        let sentence = "This sentence is part of a long answer about opening hours. ";
        let text = sentence.repeat(70); // ~4,200 characters
        let parts = split_reply(&text, MAX_BODY_CHARS);
        assert!(parts.len() >= 3, "{}", parts.len());
        for part in &parts {
            assert!(part.chars().count() <= MAX_BODY_CHARS);
            assert!(part.ends_with('.'), "cut mid-sentence: {part:?}");
        }
        let words: Vec<_> = text.split_whitespace().collect();
        let joined = parts.join(" ");
        assert_eq!(joined.split_whitespace().collect::<Vec<_>>(), words);
        // Characters, not bytes: 1,600 two-byte letters are one message.
        assert_eq!(split_reply(&"é".repeat(1600), MAX_BODY_CHARS).len(), 1);
        let run = "é".repeat(3300);
        let hard = split_reply(&run, MAX_BODY_CHARS);
        assert_eq!(hard.len(), 3);
        assert_eq!(hard.concat(), run);
        assert_eq!(split_reply("short", MAX_BODY_CHARS), ["short"]);
        assert!(split_reply("  ", MAX_BODY_CHARS).is_empty());
        // A paragraph break wins over a later sentence end.
        let para = format!("{}\n\n{}", "a".repeat(1000), "b. ".repeat(300));
        assert_eq!(split_reply(&para, MAX_BODY_CHARS)[0], "a".repeat(1000));
    }

    #[test]
    fn history_becomes_user_and_assistant_turns() {
        let history = vec![
            StoredMessage::new("c", "SM1", Direction::Inbound, "hi", "received"),
            StoredMessage::new("c", "SM2", Direction::Outbound, "hello!", "sent"),
            StoredMessage::new("c", "SM3", Direction::Inbound, "", "received"),
        ];
        let turns = turns(&history);
        assert_eq!(turns.len(), 2);
        assert_eq!((turns[0].role, turns[1].role), ("user", "assistant"));
    }
}
