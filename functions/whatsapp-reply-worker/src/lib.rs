//! WhatsApp replies from SQS (`WhatsAppReplyQueue`): one agent reply per
//! incoming message, through `shared::flows::whatsapp::ReplyAgent` (claim,
//! stored text before the send, recorded sid after; see that module for the
//! exactly-once design and its residual window). Each message runs against
//! the invocation's deadline: the LLM gets what is left after the Twilio
//! send's own budget, and a stop at the deadline leaves the job for SQS.
//! Failures are retried by SQS and reach the DLQ after 5 receives.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use shared::base::config;
use shared::flows::webhooks::{self, events as webhook_events};
use shared::flows::whatsapp::{
    ReplyAgent, ReplyOutcome, ReplySettings, DEFAULT_MEDIA_REPLY, DEFAULT_SYSTEM_PROMPT,
};
use shared::queue::jobs::JobQueue;
use shared::queue::jobs::WhatsAppReplyJob;
use shared::queue::sqs_batch::{process_with, Outcome, Worker, DEADLINE_MARGIN, NO_DEADLINE};
use shared::wiring::{self, Wiring};
use tokio::time::Instant;
use tracing::{error, info, warn};

pub struct WhatsAppReplyWorker {
    pub agent: ReplyAgent,
    /// `whatsapp.message.received` and `whatsapp.reply.sent` go out here;
    /// `None` where webhooks are not wired.
    pub webhook_queue: Option<Arc<dyn JobQueue>>,
}

impl WhatsAppReplyWorker {
    pub async fn from_env() -> Result<Self, lambda_runtime::Error> {
        let aws = Wiring::load().await;
        let seconds = |name, default| -> Result<Duration, config::ConfigError> {
            Ok(Duration::from_secs(config::parsed_or(name, default)?))
        };
        Ok(Self {
            agent: ReplyAgent {
                dedup: aws.dedup()?,
                store: aws.whatsapp()?,
                twilio: aws.twilio_accounts()?,
                llm: wiring::chat_client()?,
                settings: ReplySettings {
                    from: wiring::whatsapp_sender_address()?,
                    system_prompt: config::optional("AGENT_SYSTEM_PROMPT")
                        .unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.into()),
                    media_reply: config::optional("WHATSAPP_MEDIA_REPLY")
                        .unwrap_or_else(|| DEFAULT_MEDIA_REPLY.into()),
                    fallback_reply: config::optional("WHATSAPP_FALLBACK_REPLY"),
                    history: config::parsed_or("WHATSAPP_HISTORY_TURNS", 10)?,
                    llm_timeout: seconds("AGENT_LLM_TIMEOUT_SECONDS", 25)?,
                    twilio_timeout: seconds("TWILIO_TIMEOUT_SECONDS", 8)?,
                    status_callback: wiring::whatsapp_status_callback(),
                },
                lease: seconds("WHATSAPP_REPLY_LEASE_SECONDS", 60)?,
            },
            webhook_queue: aws.webhook_queue(),
        })
    }

    /// One job, to be finished before `stop`.
    pub async fn process_by(&self, message: SqsMessage, stop: Instant) -> Outcome {
        let job: WhatsAppReplyJob =
            match serde_json::from_str(message.body.as_deref().unwrap_or("")) {
                Ok(job) => job,
                Err(err) => {
                    // Only /whatsapp/message writes here; left for the DLQ and its alarm.
                    error!(error = %err, "unreadable WhatsApp reply job");
                    return Outcome::Retry;
                }
            };
        let org = job
            .conversation
            .split_once('#')
            .map(|(org, _)| org.to_string())
            .filter(|org| !org.is_empty());
        if let Some(org) = &org {
            let received = webhook_events::whatsapp_received(
                org,
                &job.message_sid,
                &job.reply_to,
                job.reply_from.as_deref(),
                &job.body,
                job.num_media,
            );
            // Before the reply: a failure leaves the whole job for SQS.
            if let Err(err) = webhooks::publish_to(self.webhook_queue.as_ref(), received).await {
                warn!(message_sid = %job.message_sid, error = %err, "webhook event not queued; message will be retried");
                return Outcome::Retry;
            }
        }
        match self.agent.reply(&job, stop).await {
            Ok(ReplyOutcome::Sent(sid)) => {
                info!(message_sid = %job.message_sid, reply_sid = %sid, "replied");
                if let Some(org) = &org {
                    let sent = webhook_events::whatsapp_reply_sent(
                        org,
                        &job.message_sid,
                        &sid,
                        &job.reply_to,
                    );
                    self.publish_sent(sent).await;
                }
                Outcome::Done
            }
            Ok(ReplyOutcome::AlreadyDone) => {
                info!(message_sid = %job.message_sid, "already replied");
                Outcome::Done
            }
            Ok(ReplyOutcome::NoReply) => {
                info!(message_sid = %job.message_sid, "no reply to send");
                Outcome::Done
            }
            Ok(ReplyOutcome::Refused(reason)) => {
                warn!(message_sid = %job.message_sid, %reason, "reply refused by Twilio; not retried");
                Outcome::Done
            }
            Err(reason) => {
                warn!(message_sid = %job.message_sid, %reason, "reply not sent; message will be retried");
                Outcome::Retry
            }
        }
    }
}

impl WhatsAppReplyWorker {
    /// The reply is out and its claim completed, so a redelivery would not
    /// publish this again: a few tries here, then an error in the logs.
    async fn publish_sent(&self, event: webhooks::WebhookEvent) {
        for attempt in 1..=3u64 {
            match webhooks::publish_to(self.webhook_queue.as_ref(), event.clone()).await {
                Ok(()) => return,
                Err(err) if attempt == 3 => {
                    error!(error = %err, event_id = %event.id, "whatsapp.reply.sent not queued");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200 * attempt)).await,
            }
        }
    }
}

impl Worker for WhatsAppReplyWorker {
    async fn process(&self, message: SqsMessage) -> Outcome {
        self.process_by(message, Instant::now() + NO_DEADLINE - DEADLINE_MARGIN)
            .await
    }

    /// Like the default, but each job knows the deadline, so the HTTP calls
    /// are sized to it instead of being cut off mid-send.
    async fn handle_until(
        self: &Arc<Self>,
        event: SqsEvent,
        deadline: Instant,
    ) -> SqsBatchResponse {
        let stop = deadline.checked_sub(DEADLINE_MARGIN).unwrap_or(deadline);
        process_with(self, event, deadline, move |worker, message| async move {
            worker.process_by(message, stop).await
        })
        .await
    }
}
