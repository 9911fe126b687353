//! Transcription jobs from SQS: download the recording, hand it to AssemblyAI,
//! then re-check the transcript through delayed messages (no Lambda ever
//! sleeps waiting), store it in full and queue the notification.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsMessage;
use shared::base::config;
use shared::base::metrics::{self, Metric};
use shared::providers::assemblyai::{
    AssemblyAi, TranscribeError, TranscriptState, TranscriptionService,
};
use shared::providers::recording::{ExotelCredentials, HostAllowList, RecordingFetcher};
use shared::queue::jobs::{self, JobQueue, NotificationJob, NotificationKind, TranscriptionJob};
use shared::queue::sqs_batch::{self, Outcome, Worker};
use shared::store::calls::{CallStatus, CallStore};
use shared::store::stats::{self, Counter, StatsStore};
use shared::wiring::Wiring;
use tracing::{error, info, warn, Instrument};

#[derive(Debug, Clone)]
pub struct RecheckSettings {
    /// First re-check delay; doubles each time (`TRANSCRIPTION_RECHECK_SECONDS`).
    pub base: Duration,
    pub cap: Duration,
}

pub struct TranscribeWorker {
    pub calls: Arc<dyn CallStore>,
    pub stats: Arc<dyn StatsStore>,
    pub transcription_queue: Arc<dyn JobQueue>,
    pub notification_queue: Arc<dyn JobQueue>,
    pub transcriber: Arc<dyn TranscriptionService>,
    /// Checked again here: a job may predate a tightened allow-list.
    pub recording_hosts: HostAllowList,
    pub recheck: RecheckSettings,
}

/// Deliveries after which a stalled submission is taken over (SQS moves the
/// message to the DLQ after 5).
const TAKEOVER_AFTER_DELIVERIES: u32 = 3;

const STATUSES_BEFORE_TRANSCRIPT: [CallStatus; 3] = [
    CallStatus::Received,
    CallStatus::Queued,
    CallStatus::Transcribing,
];

impl TranscribeWorker {
    pub async fn from_env() -> Result<Self, lambda_runtime::Error> {
        let aws = Wiring::load().await;
        let exotel_base = config::base_url_or("EXOTEL_BASE_URL", "https://api.exotel.com")?;
        let exotel_host = url::Url::parse(&exotel_base)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(port) => format!("{h}:{port}"),
                    None => h.to_string(),
                })
            })
            .unwrap_or_default();
        let exotel = match (
            config::optional_secret("EXOTEL_API_KEY"),
            config::optional_secret("EXOTEL_API_TOKEN"),
        ) {
            (Some(api_key), Some(api_token)) => Some(ExotelCredentials {
                api_key,
                api_token,
                hosts: HostAllowList::parse(&format!("{exotel_host},*.exotel.com,*.exotel.in")),
            }),
            _ => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(45))
            .build()?;
        let recording_hosts = HostAllowList::from_env()?;
        let recordings = RecordingFetcher::new(
            recording_hosts.clone(),
            exotel,
            RecordingFetcher::max_bytes_from_env()?,
        )?;
        Ok(Self {
            calls: aws.calls()?,
            stats: aws.stats()?,
            transcription_queue: aws.queue("TRANSCRIPTION_QUEUE_URL")?,
            notification_queue: aws.notification_queue()?,
            transcriber: Arc::new(AssemblyAi::new(
                http,
                config::base_url_or("ASSEMBLYAI_BASE_URL", "https://api.assemblyai.com")?,
                config::required_secret("ASSEMBLYAI_API_KEY")?,
                recordings,
            )),
            recording_hosts,
            recheck: RecheckSettings {
                base: Duration::from_secs(config::parsed_or("TRANSCRIPTION_RECHECK_SECONDS", 10)?),
                cap: Duration::from_secs(300),
            },
        })
    }
}

impl Worker for TranscribeWorker {
    async fn process(&self, message: SqsMessage) -> Outcome {
        let job: TranscriptionJob =
            match serde_json::from_str(message.body.as_deref().unwrap_or("")) {
                Ok(job) => job,
                Err(err) => {
                    // Retrying cannot fix it; it reaches the DLQ and its alarm.
                    error!(error = %err, "unreadable transcription job");
                    return Outcome::Retry;
                }
            };
        let span =
            tracing::info_span!("transcription", call_id = %job.call_id, checks = job.checks);
        let deliveries = sqs_batch::receive_count(&message);
        let result = async {
            match job.transcript_id.clone() {
                None => self.start(job, deliveries).await,
                Some(id) => self.recheck(job, &id).await,
            }
        }
        .instrument(span)
        .await;
        result.unwrap_or_else(|reason| {
            warn!(%reason, "transcription step failed; message will be retried");
            Outcome::Retry
        })
    }
}

impl TranscribeWorker {
    /// First delivery: submit the recording, then schedule the first re-check.
    /// `deliveries` is how often SQS has handed out this message.
    async fn start(&self, job: TranscriptionJob, deliveries: u32) -> Result<Outcome, String> {
        let record = self
            .calls
            .get(&job.call_id)
            .await
            .map_err(|e| e.to_string())?;
        let Some(record) = record else {
            error!("transcription job for an unknown call");
            return Ok(Outcome::Retry);
        };
        if !STATUSES_BEFORE_TRANSCRIPT.contains(&record.status) {
            info!(
                status = record.status.as_str(),
                "call already past transcription; nothing to do"
            );
            return Ok(Outcome::Done);
        }
        if let Some(existing) = record.transcript_id {
            // A redelivery after a successful submit: keep polling, never pay twice.
            return self.schedule_recheck(job, existing, 0).await;
        }
        let url = match url::Url::parse(&job.recording_url) {
            Ok(url) if self.recording_hosts.allows(&url) => url,
            _ => {
                return self
                    .fail(&job, "recording URL is not on the allowed hosts")
                    .await
            }
        };
        let claimed = self
            .calls
            .transition(
                &job.call_id,
                &[CallStatus::Received, CallStatus::Queued],
                CallStatus::Transcribing,
                None,
            )
            .await
            .map_err(|e| e.to_string())?;
        // Already `transcribing` without a transcript id: a duplicate job is
        // submitting right now. Wait for it, unless this message has come back
        // so often that the other submitter has evidently died.
        if !claimed && deliveries < TAKEOVER_AFTER_DELIVERIES {
            return Err("another delivery of this job is submitting the recording".into());
        }
        match self.transcriber.submit(&url).await {
            Ok(transcript_id) => {
                self.calls
                    .set_transcript_id(&job.call_id, &transcript_id)
                    .await
                    .map_err(|e| e.to_string())?;
                info!(%transcript_id, "transcription submitted");
                self.schedule_recheck(job, transcript_id, 0).await
            }
            Err(TranscribeError::Temporary(reason)) => {
                // Hand the claim back so the redelivery submits at once
                // instead of waiting for a takeover.
                let _ = self
                    .calls
                    .transition(
                        &job.call_id,
                        &[CallStatus::Transcribing],
                        CallStatus::Queued,
                        None,
                    )
                    .await;
                Err(reason)
            }
            Err(TranscribeError::Permanent(reason)) => self.fail(&job, &reason).await,
        }
    }

    async fn recheck(&self, job: TranscriptionJob, transcript_id: &str) -> Result<Outcome, String> {
        match self.transcriber.check(transcript_id).await {
            Ok(TranscriptState::Completed(transcript)) => {
                self.calls
                    .save_transcript(&job.call_id, &transcript)
                    .await
                    .map_err(|e| e.to_string())?;
                let moved = self
                    .calls
                    .transition(
                        &job.call_id,
                        &STATUSES_BEFORE_TRANSCRIPT,
                        CallStatus::Transcribed,
                        None,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                if moved {
                    metrics::count(Metric::Transcribed);
                    if let Some(accepted) = job.accepted_at {
                        let seconds = shared::base::time::epoch_secs().saturating_sub(accepted);
                        metrics::observe(Metric::TranscriptionSeconds, seconds as f64, None);
                    }
                }
                info!(
                    utterances = transcript.utterances.len(),
                    "transcript stored"
                );
                self.notify(&job, NotificationKind::CallSummary).await
            }
            Ok(TranscriptState::Failed(reason)) => {
                self.fail(&job, &format!("AssemblyAI error: {reason}"))
                    .await
            }
            Ok(TranscriptState::Pending) if shared::base::time::epoch_secs() >= job.deadline => {
                self.fail(&job, "transcription did not finish before its deadline")
                    .await
            }
            Ok(TranscriptState::Pending) => {
                let checks = job.checks + 1;
                self.schedule_recheck(job, transcript_id.to_string(), checks)
                    .await
            }
            Err(TranscribeError::Temporary(reason)) => Err(reason),
            Err(TranscribeError::Permanent(reason)) => self.fail(&job, &reason).await,
        }
    }

    async fn schedule_recheck(
        &self,
        job: TranscriptionJob,
        transcript_id: String,
        checks: u32,
    ) -> Result<Outcome, String> {
        let delay = jobs::backoff(self.recheck.base, checks, self.recheck.cap);
        let next = TranscriptionJob {
            transcript_id: Some(transcript_id),
            checks,
            ..job
        };
        jobs::send(self.transcription_queue.as_ref(), &next, delay)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Outcome::Done)
    }

    /// Marks the call failed with its reason and still tells people.
    async fn fail(&self, job: &TranscriptionJob, reason: &str) -> Result<Outcome, String> {
        error!(%reason, "transcription failed");
        let moved = self
            .calls
            .transition(
                &job.call_id,
                &STATUSES_BEFORE_TRANSCRIPT,
                CallStatus::Failed,
                Some(reason),
            )
            .await
            .map_err(|e| e.to_string())?;
        if moved {
            metrics::count(Metric::Failed);
            stats::count(self.stats.as_ref(), Counter::Failed, job.org_id.as_deref()).await;
        }
        self.notify(job, NotificationKind::TranscriptionFailed)
            .await
    }

    async fn notify(
        &self,
        job: &TranscriptionJob,
        kind: NotificationKind,
    ) -> Result<Outcome, String> {
        jobs::send(
            self.notification_queue.as_ref(),
            &NotificationJob::for_call(&job.call_id, kind).of_org(job.org_id.as_deref()),
            Duration::ZERO,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(Outcome::Done)
    }
}
