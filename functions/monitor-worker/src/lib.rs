//! Monitor jobs from SQS (seed 004's `monitor=True`): re-check an ElevenLabs
//! conversation through delayed messages until it is final or the deadline
//! passes, then store its status, duration and transcript.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsMessage;
use shared::base::config;
use shared::base::end_reason::EndReason;
use shared::flows::outbound::{finish_call, CallEnding};
use shared::providers::elevenlabs::ElevenLabsClient;
use shared::providers::org_accounts::OrgAccounts;
use shared::queue::jobs::{self, JobQueue, MonitorJob};

use shared::queue::sqs_batch::{self, Outcome, Worker};
use shared::store::outbound_calls::OutboundCallStore;
use shared::wiring::{self, Wiring};
use tracing::{error, info};

pub struct MonitorWorker {
    pub calls: Arc<dyn OutboundCallStore>,
    /// The deployment's key.
    pub elevenlabs: ElevenLabsClient,
    /// Organisations' own keys: a call placed with one is read with it.
    pub org_accounts: Option<Arc<OrgAccounts>>,
    pub monitor_queue: Arc<dyn JobQueue>,
    pub notification_queue: Arc<dyn JobQueue>,
    pub interval: Duration,
}

impl MonitorWorker {
    pub async fn from_env() -> Result<Self, lambda_runtime::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            calls: aws.outbound_calls()?,
            elevenlabs: wiring::elevenlabs()?
                .ok_or(config::ConfigError::Missing("ELEVENLABS_API_KEY"))?,
            org_accounts: aws.org_accounts()?,
            monitor_queue: aws.queue("MONITOR_QUEUE_URL")?,
            notification_queue: aws.notification_queue()?,
            interval: Duration::from_secs(config::parsed_or("MONITOR_INTERVAL_SECONDS", 5)?),
        })
    }
}

impl Worker for MonitorWorker {
    async fn process(&self, message: SqsMessage) -> Outcome {
        let job: MonitorJob = match serde_json::from_str(message.body.as_deref().unwrap_or("")) {
            Ok(job) => job,
            Err(err) => {
                error!(error = %err, "unreadable monitor job");
                return Outcome::Retry;
            }
        };
        let span = tracing::info_span!("monitor", conversation_id = %job.conversation_id, checks = job.checks);
        sqs_batch::retry_on_error(span, "monitor", self.check(job)).await
    }
}

impl MonitorWorker {
    async fn check(&self, job: MonitorJob) -> Result<Outcome, String> {
        let call = self
            .calls
            .get(&job.call_ref)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no outbound call recorded for this conversation")?;
        // The key that placed it: the organisation's own, else the deployment's.
        let elevenlabs = shared::providers::org_accounts::elevenlabs_for(
            self.org_accounts.as_deref(),
            Some(&self.elevenlabs),
            call.org_id.as_deref(),
        )
        .await
        .map_err(|err| err.detail())?
        .unwrap_or_else(|| self.elevenlabs.clone());
        let conversation = elevenlabs
            .conversation(&job.conversation_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("ElevenLabs does not know the conversation yet")?;
        if conversation.is_final() {
            let metadata = conversation.metadata.as_ref();
            let reason = (conversation.status == "failed").then(|| {
                metadata
                    .and_then(|m| m.termination_reason.clone())
                    .unwrap_or_else(|| "call failed".into())
            });
            finish_call(
                self.calls.as_ref(),
                self.notification_queue.as_ref(),
                &call,
                CallEnding {
                    status: &conversation.status,
                    failure_reason: reason.as_deref(),
                    transcript: &conversation.transcript,
                    duration_secs: metadata.and_then(|m| m.call_duration_secs),
                    end_reason: EndReason::from_elevenlabs(
                        &conversation.status,
                        metadata.and_then(|m| m.termination_reason.as_deref()),
                    )
                    .unwrap_or(EndReason::Unknown),
                    // The monitor asks on purpose (seed 004's `monitor=True`).
                    reconciled: false,
                },
            )
            .await?;
            info!(status = %conversation.status, "conversation finished");
            return Ok(Outcome::Done);
        }
        if shared::base::time::epoch_secs() >= job.deadline {
            info!(status = %conversation.status, "monitoring window over before the call ended");
            return Ok(Outcome::Done);
        }
        let next = MonitorJob {
            checks: job.checks + 1,
            ..job
        };
        jobs::send(self.monitor_queue.as_ref(), &next, self.interval)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Outcome::Done)
    }
}
