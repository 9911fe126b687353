//! Notification jobs from SQS: render seed 001's message for the call and
//! deliver it on every configured channel, each part exactly once. An
//! organisation with routes of its own (its `notifications` secret) gets
//! its messages there instead of the deployment's channels; a job whose
//! channel fails is re-sent through the queue with a delay, so one
//! organisation's broken Slack holds up no other's messages.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsMessage;
use shared::api::ApiError;
use shared::base::config;
use shared::base::metrics::{self, Metric};
use shared::flows::notify::render::{self, Outcome as Rendered};
use shared::flows::notify::{
    self, build_channels, Delivery, Message, NotificationChannel, NotificationRoutes,
    NotifierConfig, OrgChannelMaker,
};
use shared::flows::webhooks::{self, events as webhook_events, WebhookEvent};
use shared::providers::org_accounts::{AccountProblem, OrgAccounts};
use shared::queue::jobs::{self, JobQueue, NotificationJob, NotificationKind};
use shared::queue::sqs_batch::{self, Outcome, Worker};
use shared::store::calls::{CallStatus, CallStore};
use shared::store::dedup::DedupStore;
use shared::store::directory::DirectoryStore;
use shared::store::outbound_calls::OutboundCallStore;
use shared::store::sessions::SessionStore;
use shared::store::stats::{self, Counter, StatsStore};
use shared::wiring::Wiring;
use tracing::{error, info, warn};

pub struct NotifyWorker {
    pub calls: Arc<dyn CallStore>,
    /// Outbound calls (seeds 003/004), summarised when they end.
    pub outbound: Arc<dyn OutboundCallStore>,
    /// Voice-agent sessions: where call-start threads are kept.
    pub sessions: Arc<dyn SessionStore>,
    /// Bold heading of call-start messages (`CALL_START_TITLE`).
    pub call_start_title: String,
    /// Per-call Slack channel rules (`NOTIFICATION_ROUTES`).
    pub routes: NotificationRoutes,
    pub stats: Arc<dyn StatsStore>,
    /// Delivery records: one per notification, channel and part.
    pub deliveries: Arc<dyn DedupStore>,
    /// The deployment's channels: for calls of organisations without routes of their own.
    pub channels: Vec<Arc<dyn NotificationChannel>>,
    /// Organisations' own routes (`ORG_SECRETS_PREFIX`); `None`: all use the deployment's.
    pub org_accounts: Option<Arc<OrgAccounts>>,
    /// Builds an organisation's channels from its routes.
    pub org_channels: OrgChannelMaker,
    /// Rate-limited and temporarily failed jobs come back here, delayed.
    pub notification_queue: Arc<dyn JobQueue>,
    /// Permanently refused jobs go straight here, where the alarm sees them.
    pub dead_letter_queue: Arc<dyn JobQueue>,
    /// Webhook events out (`call.*`, `session.started`), published with a
    /// job's first try; `None` where webhooks are not wired.
    pub webhook_queue: Option<Arc<dyn JobQueue>>,
    /// Organisations' month usage, for `usage.threshold`.
    pub directory: Arc<dyn DirectoryStore>,
    /// Re-sends (429s and temporary failures) before a job counts as failed.
    pub max_resends: u32,
    /// First re-send delay; it doubles per attempt, jittered (`notify::resend_delay`).
    pub resend_base: Duration,
    /// How long one worker may hold a part's delivery record; must outlive
    /// the queue's visibility timeout (`notify::DEFAULT_PART_LEASE`).
    pub send_lease: Duration,
}

impl NotifyWorker {
    pub async fn from_env() -> Result<Self, lambda_runtime::Error> {
        let aws = Wiring::load().await;
        let notifier = NotifierConfig::from_env()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .build()?;
        // Organisations may have email routes even when the deployment has none.
        let ses = Some(aws_sdk_sesv2::Client::new(aws.sdk()));
        let deployment_ses = notifier
            .notification_email
            .is_some()
            .then(|| ses.clone())
            .flatten();
        let routes = match config::optional("NOTIFICATION_ROUTES") {
            Some(json) => {
                NotificationRoutes::parse(&json).map_err(|reason| config::ConfigError::Invalid {
                    name: "NOTIFICATION_ROUTES",
                    reason,
                })?
            }
            None => NotificationRoutes::default(),
        };
        Ok(Self {
            calls: aws.calls()?,
            outbound: aws.outbound_calls()?,
            sessions: aws.sessions()?,
            call_start_title: config::optional("CALL_START_TITLE")
                .unwrap_or_else(|| "New Voice Agent Call".into()),
            routes,
            stats: aws.stats()?,
            // Delivery records outlive any redelivery of their job.
            deliveries: aws.deliveries()?,
            channels: build_channels(&notifier, http.clone(), deployment_ses)?,
            org_accounts: aws.org_accounts()?,
            org_channels: OrgChannelMaker::new(&notifier, http, ses),
            notification_queue: aws.notification_queue()?,
            dead_letter_queue: aws.queue("NOTIFICATION_DLQ_URL")?,
            webhook_queue: aws.webhook_queue(),
            directory: aws.directory()?,
            max_resends: 8,
            resend_base: notify::DEFAULT_RESEND_BASE,
            send_lease: Duration::from_secs(config::parsed_or(
                "NOTIFY_PART_LEASE_SECONDS",
                notify::DEFAULT_PART_LEASE.as_secs(),
            )?),
        })
    }
}

impl Worker for NotifyWorker {
    async fn process(&self, message: SqsMessage) -> Outcome {
        let body = message.body.clone().unwrap_or_default();
        let job: NotificationJob = match serde_json::from_str(&body) {
            Ok(job) => job,
            Err(err) => {
                error!(error = %err, "unreadable notification job");
                return self.dead_letter(&body, "unreadable job").await;
            }
        };
        let span = tracing::info_span!("notification", call_id = %job.call_id, notification_id = %job.notification_id);
        sqs_batch::retry_on_error(span, "notification", self.deliver(&job)).await
    }
}

impl NotifyWorker {
    async fn deliver(&self, job: &NotificationJob) -> Result<Outcome, String> {
        let mut events = Vec::new();
        let prepared = match job.kind {
            NotificationKind::CallStarted => self.call_start_message(job, &mut events).await?,
            NotificationKind::OutboundCallSummary => {
                self.outbound_message(job, &mut events).await?
            }
            NotificationKind::CallSummary | NotificationKind::TranscriptionFailed => {
                self.call_summary_message(job, &mut events).await?
            }
            NotificationKind::Notice => job
                .notice
                .as_ref()
                .map(|notice| Message::new(notice.subject.clone(), notice.text.clone())),
        };
        // Published with the first try only: re-sends after a channel's
        // failure would only repeat them (the event ids keep them one).
        if job.attempt == 0 {
            for event in events {
                webhooks::publish_to(self.webhook_queue.as_ref(), event)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let Some(message) = prepared else {
            return Ok(self
                .dead_letter(&to_json(job), "nothing to notify about")
                .await);
        };
        match self.send(job, message).await? {
            Delivery::Sent { slack, thread } => {
                self.delivered(job, slack, thread).await?;
                info!("notification delivered");
                Ok(Outcome::Done)
            }
            // A re-send with a delay, not an SQS retry: the visibility timeout
            // is one fixed wait, and five quick receives would empty a burst
            // into the DLQ while Slack is still returning 5xx.
            Delivery::Later { at_least, reason } if job.attempt + 1 < self.max_resends => {
                let delay = notify::resend_delay(self.resend_base, job.attempt).max(at_least);
                warn!(%reason, attempt = job.attempt + 1, delay_secs = delay.as_secs(), "notification re-sent with a delay");
                let next = NotificationJob {
                    attempt: job.attempt + 1,
                    ..job.clone()
                };
                jobs::send(self.notification_queue.as_ref(), &next, delay)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Outcome::Done)
            }
            Delivery::Later { reason, .. } => Ok(self
                .dead_letter(
                    &to_json(job),
                    &format!("still failing after every retry: {reason}"),
                )
                .await),
            Delivery::Retry(reason) => Err(reason),
            Delivery::Permanent { channel, reason } => {
                stats::count(self.stats.as_ref(), Counter::Failed, job.org_id.as_deref()).await;
                metrics::count(Metric::Failed);
                Ok(self
                    .dead_letter(&to_json(job), &format!("{channel}: {reason}"))
                    .await)
            }
        }
    }

    /// Delivers on the organisation's own channels when it has routes, else
    /// on the deployment's.
    async fn send(&self, job: &NotificationJob, mut message: Message) -> Result<Delivery, String> {
        let org_id = self.org_of(job).await?;
        let own = match (&self.org_accounts, org_id.as_deref()) {
            (Some(accounts), Some(org_id)) => match accounts.notifications(org_id).await {
                Ok(None) => None,
                Ok(Some(routes)) => match self.org_channels.channels(&routes) {
                    Ok(channels) => Some(channels),
                    Err(reason) => {
                        return Ok(Delivery::Permanent {
                            channel: "organisation notification routes",
                            reason: format!("organisation {org_id}: {reason}"),
                        })
                    }
                },
                Err(err) => {
                    let reason = ApiError::from(err.clone()).to_string();
                    return Ok(match err.problem {
                        AccountProblem::Unavailable => Delivery::Later {
                            at_least: Duration::ZERO,
                            reason,
                        },
                        AccountProblem::Unusable => Delivery::Permanent {
                            channel: "organisation notification routes",
                            reason,
                        },
                    });
                }
            },
            _ => None,
        };
        let channels = match &own {
            Some(channels) => {
                // Routing rules name the deployment's channels.
                message.slack_channel = None;
                channels
            }
            None => &self.channels,
        };
        notify::deliver(
            self.deliveries.as_ref(),
            channels,
            &job.notification_id,
            &message,
            self.send_lease,
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// The job's organisation; a call start LiveKit reported names none, so
    /// its room's session says.
    async fn org_of(&self, job: &NotificationJob) -> Result<Option<String>, String> {
        if job.org_id.is_some() || self.org_accounts.is_none() {
            return Ok(job.org_id.clone());
        }
        let Some(start) = &job.call_start else {
            return Ok(None);
        };
        Ok(self
            .sessions
            .get(&start.room_name)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|session| session.org_id))
    }

    /// Seed 000's message, on the channel the routing rules pick; its
    /// events are `call.started`, and `session.started` for a session.
    async fn call_start_message(
        &self,
        job: &NotificationJob,
        events: &mut Vec<WebhookEvent>,
    ) -> Result<Option<Message>, String> {
        let Some(start) = &job.call_start else {
            error!("call-start job without its details");
            return Ok(None);
        };
        if self.webhook_queue.is_some() {
            let session = self
                .sessions
                .get(&start.room_name)
                .await
                .map_err(|e| e.to_string())?;
            let org = job
                .org_id
                .clone()
                .or_else(|| session.as_ref().and_then(|s| s.org_id.clone()));
            if let Some(org) = org {
                events.push(webhook_events::call_started(
                    &org,
                    &job.notification_id,
                    start,
                ));
                if let Some(session) = &session {
                    events.push(webhook_events::session_started(&org, session));
                }
            }
        }
        let mut message = render::call_started(
            &start.room_name,
            start.user_email.as_deref(),
            &start.started_at,
            &self.call_start_title,
        );
        message.slack_channel = self.routes.slack_channel(&start.metadata);
        Ok(Some(message))
    }

    /// An outbound call's summary, threaded under its session when it has
    /// one; its events are `call.ended` and `call.transcript.ready`.
    async fn outbound_message(
        &self,
        job: &NotificationJob,
        events: &mut Vec<WebhookEvent>,
    ) -> Result<Option<Message>, String> {
        let Some(call) = self
            .outbound
            .get(&job.call_id)
            .await
            .map_err(|e| e.to_string())?
        else {
            error!("notification for an unknown outbound call");
            return Ok(None);
        };
        if let (Some(org), Some(_)) = (call.org_id.as_deref(), &self.webhook_queue) {
            events.extend(webhook_events::outbound_ended(org, &call));
            events.extend(self.usage_events(org).await?);
        }
        let mut message = render::outbound_summary(&call);
        message.thread = self.thread_of(call.room_name()).await?;
        Ok(Some(message))
    }

    /// `usage.threshold` for each threshold the organisation's month has
    /// reached (its id keeps it one event per month and threshold).
    async fn usage_events(&self, org: &str) -> Result<Vec<WebhookEvent>, String> {
        let Some(organisation) = self
            .directory
            .get_organisation(org)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(Vec::new());
        };
        let month = shared::store::directory::usage_month(shared::base::time::now());
        let used = organisation.usage_this_month_seconds;
        let limit = organisation.allowance();
        Ok(webhook_events::thresholds_reached(used, limit)
            .into_iter()
            .map(|percent| webhook_events::usage_threshold(org, &month, percent, used, limit))
            .collect())
    }

    /// The Slack thread of a voice-agent session, if the call belongs to one.
    async fn thread_of(&self, room: Option<&str>) -> Result<Option<notify::SlackThread>, String> {
        let Some(room) = room else { return Ok(None) };
        Ok(self
            .sessions
            .get(room)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|session| session.thread()))
    }

    /// Seed 001's message, as a reply in the call's thread when one exists;
    /// its events are `call.ended` and `call.transcript.ready` (or `.failed`).
    async fn call_summary_message(
        &self,
        job: &NotificationJob,
        events: &mut Vec<WebhookEvent>,
    ) -> Result<Option<Message>, String> {
        let Some(record) = self
            .calls
            .get(&job.call_id)
            .await
            .map_err(|e| e.to_string())?
        else {
            error!("notification for an unknown call");
            return Ok(None);
        };
        let failed = job.kind == NotificationKind::TranscriptionFailed;
        let org = record.org_id.clone().or_else(|| job.org_id.clone());
        let mut message = if failed {
            if let Some(org) = &org {
                events.extend(webhook_events::recorded_call_failed(org, &record));
            }
            let reason = record.failure_reason.as_deref().unwrap_or("unknown reason");
            render::call_summary_message(&record, Rendered::Failed(reason))
        } else {
            let Some(transcript) = self
                .calls
                .load_transcript(&job.call_id)
                .await
                .map_err(|e| e.to_string())?
            else {
                return Err("transcript not stored yet".into());
            };
            if let Some(org) = &org {
                events.extend(webhook_events::recorded_call_transcribed(
                    org,
                    &record,
                    &transcript.labelled_text(),
                ));
            }
            render::call_summary_message(&record, Rendered::Transcribed(&transcript))
        };
        message.thread = self.thread_of(record.room_name.as_deref()).await?;
        Ok(Some(message))
    }

    /// Bookkeeping after every channel took the message.
    async fn delivered(
        &self,
        job: &NotificationJob,
        slack: bool,
        thread: Option<notify::SlackThread>,
    ) -> Result<(), String> {
        let channel = if slack { "slack" } else { "email" };
        if job.kind == NotificationKind::OutboundCallSummary {
            // The call log's timeline shows when the summary went out.
            self.outbound
                .mark_notified(&job.call_id, channel)
                .await
                .map_err(|e| e.to_string())?;
            metrics::count_by(Metric::Notified, "Channel", channel);
            return Ok(());
        }
        if job.kind == NotificationKind::CallStarted {
            if let (Some(start), Some(thread)) = (&job.call_start, thread) {
                self.sessions
                    .set_thread(&start.room_name, &thread)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            metrics::count_by(Metric::Notified, "Channel", channel);
            return Ok(());
        }
        let failed = job.kind == NotificationKind::TranscriptionFailed;
        let status_after = if failed {
            CallStatus::Failed
        } else {
            CallStatus::Notified
        };
        let first = self
            .calls
            .mark_notified(&job.call_id, slack, status_after)
            .await
            .map_err(|e| e.to_string())?;
        if first {
            metrics::count_by(Metric::Notified, "Channel", channel);
            if !failed {
                stats::count(
                    self.stats.as_ref(),
                    Counter::SuccessfullyPosted,
                    job.org_id.as_deref(),
                )
                .await;
            }
        }
        Ok(())
    }

    /// Moves a job that cannot succeed to the DLQ now instead of after five
    /// pointless retries. If even that fails, SQS redrive gets it there.
    async fn dead_letter(&self, body: &str, reason: &str) -> Outcome {
        match self
            .dead_letter_queue
            .send_raw(body.to_string(), Duration::ZERO)
            .await
        {
            Ok(()) => {
                error!(%reason, "notification moved to the dead-letter queue");
                Outcome::Done
            }
            Err(err) => {
                error!(%reason, error = %err, "dead-letter send failed; leaving the message for redrive");
                Outcome::Retry
            }
        }
    }
}

fn to_json(job: &NotificationJob) -> String {
    serde_json::to_string(job).unwrap_or_default()
}
