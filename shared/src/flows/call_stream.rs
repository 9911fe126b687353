//! The second half of the intakes that write to the calls table, fed by its
//! stream. The webhook stored the record (one conditional write) and
//! answered; each new record reaches `calls-stream` once a filter passes it:
//!
//! - a recording-pipeline record (INSERT, `queued` or `skipped`): a queued
//!   call gets its transcription job (SQS, ten to a request) and every new
//!   call is counted, one counter update per organisation per batch;
//! - a call-start record (`store::call_starts`, from LiveKit's webhook,
//!   `/calls/started` or a route that opened a session): it is carried out
//!   (`flows::call_start::StartedCalls`, the starts side by side) and its
//!   notification job queued;
//! - a campaign call's settled end (`campaign_id`, `usage_counted`): its
//!   attempt is settled (`flows::campaign_calls`): the recipient's next
//!   state by the retry policy, the slots given back, once.
//!
//! Why a dispatcher and not the transcription itself: a stream shard is
//! processed in order, so a slow recording host or AssemblyAI would hold
//! back every call behind it; SQS gives each call its own retries, delays
//! and DLQ, as before.
//!
//! Failures follow the stream's `ReportBatchItemFailures` contract: Lambda
//! retries from the lowest sequence number reported, so the records before
//! it are done for good and only they are counted. Records after a failure
//! come again; their jobs may be sent twice, which the transcription
//! worker's conditional `queued -> transcribing` makes harmless.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::base::metrics::{self, Metric};
use crate::base::time;
use crate::flows::call_start::StartedCalls;
use crate::queue::jobs::{JobQueue, TranscriptionJob};
pub use crate::queue::stream_batch::StreamChange;
use crate::store::call_starts::{start_of, StartRecord};
use crate::store::calls::{CallRecord, CallStatus};
use crate::store::stats::{Counter, StatsStore};

/// What a change asks for.
#[derive(Debug, Clone, PartialEq)]
enum Work {
    /// A new queued call: its transcription job, and count it.
    Transcribe(Box<TranscriptionJob>),
    /// A new call stored final (skipped): count it only.
    Count(Option<String>),
    /// A new call start: carry it out and queue its notification.
    Start(Box<StartRecord>),
    /// A campaign call settled: settle its attempt.
    CampaignCall(Box<crate::store::outbound_calls::OutboundCall>),
    /// Not a new pipeline record: the filter should not have passed it.
    Nothing,
}

pub struct NewCallRecords {
    pub transcription_queue: Arc<dyn JobQueue>,
    pub stats: Arc<dyn StatsStore>,
    /// How long a transcription may take from the call's arrival
    /// (`TRANSCRIPTION_DEADLINE_SECONDS`).
    pub transcription_deadline: Duration,
    pub starts: StartedCalls,
    pub notification_queue: Arc<dyn JobQueue>,
    /// Settles campaign attempts whose calls ended.
    pub campaign_calls: crate::flows::campaign_calls::CampaignCallEnds,
}

/// The sort key of the pipeline's record items (`store::calls`).
const RECORD_ITEM: &str = "call";
/// The sort key of outbound calls' records (`store::outbound_calls`).
const OUTBOUND_ITEM: &str = "outbound";

impl NewCallRecords {
    /// Handles one batch; returns the sequence numbers of the changes that
    /// failed (Lambda retries from the lowest).
    pub async fn handle(&self, changes: Vec<StreamChange>) -> Vec<String> {
        let mut failed: Vec<usize> = Vec::new();
        let mut work: Vec<Work> = Vec::with_capacity(changes.len());
        for (i, change) in changes.iter().enumerate() {
            match self.work_for(change) {
                Ok(w) => work.push(w),
                Err(reason) => {
                    // Our own table's record, unreadable: a defect to see in
                    // the DLQ and its alarm, not to skip in silence.
                    error!(sequence = %change.sequence_number, %reason, "unreadable call record in the stream");
                    failed.push(i);
                    work.push(Work::Nothing);
                }
            }
        }
        let transcriptions: Vec<(usize, String)> = work
            .iter()
            .enumerate()
            .filter(|(i, _)| !failed.contains(i))
            .filter_map(|(i, w)| match w {
                Work::Transcribe(job) => serde_json::to_string(job).ok().map(|body| (i, body)),
                _ => None,
            })
            .collect();
        let (sent, notifications, settled) = tokio::join!(
            self.send(self.transcription_queue.as_ref(), transcriptions),
            self.carry_out_starts(&work, &changes),
            self.settle_campaign_calls(&work, &changes),
        );
        failed.extend(sent);
        failed.extend(notifications);
        failed.extend(settled);
        let done_before = failed.iter().copied().min().unwrap_or(changes.len());
        self.count(&work[..done_before]).await;
        failed.sort_unstable();
        failed.dedup();
        failed
            .into_iter()
            .map(|i| changes[i].sequence_number.clone())
            .collect()
    }

    /// Sends `bodies`; the indices of those not queued.
    async fn send(&self, queue: &dyn JobQueue, bodies: Vec<(usize, String)>) -> Vec<usize> {
        let (indices, bodies): (Vec<usize>, Vec<String>) = bodies.into_iter().unzip();
        let results = queue.send_many_raw(bodies).await;
        let mut failed = Vec::new();
        for (i, result) in indices.into_iter().zip(results) {
            match result {
                Ok(()) => metrics::count(Metric::Queued),
                Err(err) => {
                    warn!(change = i, error = %err.0, "job not queued; the stream retries");
                    failed.push(i);
                }
            }
        }
        failed
    }

    /// Carries out the batch's starts side by side, then queues their
    /// notifications; the indices of those that failed.
    async fn carry_out_starts(&self, work: &[Work], changes: &[StreamChange]) -> Vec<usize> {
        let starts = work.iter().enumerate().filter_map(|(i, w)| match w {
            Work::Start(record) => Some(async move { (i, self.starts.carry_out(record).await) }),
            _ => None,
        });
        let mut failed = Vec::new();
        let mut notifications = Vec::new();
        for (i, done) in futures_util::future::join_all(starts).await {
            match done.map(|job| serde_json::to_string(&job)) {
                Ok(Ok(body)) => notifications.push((i, body)),
                Ok(Err(err)) => {
                    error!(sequence = %changes[i].sequence_number, error = %err, "notification job not serialisable");
                    failed.push(i);
                }
                Err(err) => {
                    warn!(sequence = %changes[i].sequence_number, error = %err, "call start not carried out; the stream retries");
                    failed.push(i);
                }
            }
        }
        let not_sent = self
            .send(self.notification_queue.as_ref(), notifications.clone())
            .await;
        // Carried out: out of the sweep's watch. A start left watched is
        // only carried out again (harmless), so a failure here is logged.
        let settled = notifications
            .iter()
            .filter(|(i, _)| !not_sent.contains(i))
            .filter_map(|(i, _)| match &work[*i] {
                Work::Start(record) => Some(self.starts.settle(record)),
                _ => None,
            });
        for result in futures_util::future::join_all(settled).await {
            if let Err(err) = result {
                warn!(error = %err, "call start left in the watch; the sweep settles it");
            }
        }
        failed.extend(not_sent);
        failed
    }

    /// Settles the batch's ended campaign calls side by side; the indices
    /// of those that failed (the stream retries them).
    async fn settle_campaign_calls(&self, work: &[Work], changes: &[StreamChange]) -> Vec<usize> {
        let settling = work.iter().enumerate().filter_map(|(i, w)| match w {
            Work::CampaignCall(call) => {
                Some(async move { (i, self.campaign_calls.settle(call).await) })
            }
            _ => None,
        });
        let mut failed = Vec::new();
        for (i, result) in futures_util::future::join_all(settling).await {
            if let Err(err) = result {
                warn!(sequence = %changes[i].sequence_number, error = %err, "campaign attempt not settled; the stream retries");
                failed.push(i);
            }
        }
        failed
    }

    fn work_for(&self, change: &StreamChange) -> Result<Work, String> {
        let item = change.text("item").unwrap_or_default();
        if item == OUTBOUND_ITEM {
            if change.event_name == "REMOVE" || change.text("campaign_id").is_none() {
                return Ok(Work::Nothing);
            }
            let call: crate::store::outbound_calls::OutboundCall =
                serde_dynamo::from_item(change.new_image.clone())
                    .map_err(|e| format!("outbound call: {e}"))?;
            if !call.usage_counted {
                return Ok(Work::Nothing);
            }
            return Ok(Work::CampaignCall(Box::new(call)));
        }
        if item.starts_with(crate::store::call_starts::START_ITEM_PREFIX) {
            // A new start is watched until carried out: a MODIFY without
            // the watch is its removal, not a start.
            if change.event_name == "REMOVE" || change.text("watch_ledger").is_none() {
                return Ok(Work::Nothing);
            }
            let image: std::collections::HashMap<_, _> = change.new_image.clone().into();
            return match start_of(&image) {
                Ok(Some(record)) => Ok(Work::Start(Box::new(record))),
                Ok(None) => Ok(Work::Nothing),
                Err(err) => Err(err.to_string()),
            };
        }
        if change.event_name != "INSERT" {
            return Ok(Work::Nothing);
        }
        if change.text("item") != Some(RECORD_ITEM) {
            return Ok(Work::Nothing);
        }
        let record: CallRecord = serde_dynamo::from_item(change.new_image.clone())
            .map_err(|e| format!("call record: {e}"))?;
        Ok(match record.status {
            CallStatus::Queued => {
                let Some(recording_url) = record.recording_url.clone() else {
                    return Err(format!("queued call {} has no recording", record.call_id));
                };
                let accepted_at = chrono::DateTime::parse_from_rfc3339(&record.received_at)
                    .map(|at| at.timestamp())
                    .unwrap_or_else(|_| time::epoch_secs());
                let deadline = accepted_at
                    + i64::try_from(self.transcription_deadline.as_secs()).unwrap_or(3600);
                Work::Transcribe(Box::new(TranscriptionJob {
                    call_id: record.call_id,
                    recording_url,
                    source: record.source,
                    transcript_id: None,
                    checks: 0,
                    deadline,
                    accepted_at: Some(accepted_at),
                    org_id: record.org_id,
                }))
            }
            CallStatus::Skipped => Work::Count(record.org_id),
            _ => Work::Nothing,
        })
    }

    /// `TotalProcessed` for the done records: one update per organisation.
    async fn count(&self, done: &[Work]) {
        let mut by_org: BTreeMap<Option<&str>, u64> = BTreeMap::new();
        for w in done {
            let org = match w {
                Work::Transcribe(job) => job.org_id.as_deref(),
                Work::Count(org) => org.as_deref(),
                Work::Start(_) | Work::CampaignCall(_) | Work::Nothing => continue,
            };
            *by_org.entry(org).or_default() += 1;
        }
        for (org, n) in by_org {
            // Bookkeeping: a lost count is logged, never a reason to send
            // the jobs again.
            if let Err(err) = self.stats.add(Counter::TotalProcessed, org, n).await {
                warn!(org_id = org.unwrap_or("-"), n, error = %err, "new calls not counted");
            }
        }
        if !done.is_empty() {
            info!(records = done.len(), "new call records and starts handled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::jobs::QueueError;
    use crate::store::stats::Stats;
    use crate::store::StoreError;
    use async_trait::async_trait;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Queue {
        sent: Mutex<Vec<String>>,
        refuse: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl JobQueue for Queue {
        async fn send_raw(&self, body: String, _: Duration) -> Result<(), QueueError> {
            if self
                .refuse
                .lock()
                .unwrap()
                .iter()
                .any(|id| body.contains(id))
            {
                return Err(QueueError("throttled".into()));
            }
            self.sent.lock().unwrap().push(body);
            Ok(())
        }
    }

    #[derive(Default)]
    struct Counts(Mutex<Vec<(Option<String>, u64)>>);

    #[async_trait]
    impl StatsStore for Counts {
        async fn add(&self, c: Counter, org: Option<&str>, n: u64) -> Result<(), StoreError> {
            assert_eq!(c, Counter::TotalProcessed);
            self.0.lock().unwrap().push((org.map(str::to_string), n));
            Ok(())
        }
        async fn read(&self) -> Result<Stats, StoreError> {
            unreachable!()
        }
        async fn read_org(&self, _: &str) -> Result<Stats, StoreError> {
            unreachable!()
        }
    }

    fn change(seq: u32, event: &str, id: &str, status: &str, org: Option<&str>) -> StreamChange {
        let mut record = serde_json::json!({
            "call_id": id, "source": "zapier", "from_number": "+919876543210",
            "to_number": "09631084471", "timestamp": "2026-12-06T10:00:00Z",
            "status": status, "direction": "incoming", "slack_posted": false,
            "received_at": "2026-12-06T10:00:00Z", "status_history": [],
            "recording_url": "https://api.exotel.com/r.mp3", "item": "call",
        });
        if let Some(org) = org {
            record["org_id"] = org.into();
        }
        StreamChange {
            sequence_number: format!("{seq:021}"),
            event_name: event.into(),
            new_image: serde_dynamo::to_item(record).unwrap(),
        }
    }

    fn dispatcher(queue: Arc<Queue>, counts: Arc<Counts>) -> NewCallRecords {
        // No starts in these batches: a store that reaches nowhere.
        let nowhere = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .build(),
        );
        NewCallRecords {
            transcription_queue: queue.clone(),
            stats: counts,
            transcription_deadline: Duration::from_secs(3600),
            starts: StartedCalls {
                sessions: Arc::new(crate::store::sessions::DynamoSessionStore::new(
                    nowhere.clone(),
                    "calls",
                )),
                starts: Arc::new(crate::store::call_starts::DynamoCallStartStore {
                    client: nowhere.clone(),
                    table: "calls".into(),
                    retention: Duration::from_secs(60),
                }),
            },
            notification_queue: queue,
            campaign_calls: crate::flows::campaign_calls::CampaignCallEnds {
                store: Arc::new(crate::store::campaigns::DynamoCampaignStore {
                    client: nowhere,
                    table: "campaigns".into(),
                    organisations_table: "organisations".into(),
                }),
                clock: Arc::new(crate::base::time::SystemClock),
            },
        }
    }

    #[tokio::test]
    async fn queued_calls_get_a_job_and_every_new_call_is_counted_once_per_org() {
        let queue = Arc::new(Queue::default());
        let counts = Arc::new(Counts::default());
        let failed = dispatcher(Arc::clone(&queue), Arc::clone(&counts))
            .handle(vec![
                change(1, "INSERT", "CA1", "queued", Some("acme")),
                change(2, "INSERT", "CA2", "skipped", Some("acme")),
                change(3, "INSERT", "CA3", "queued", None),
                change(4, "MODIFY", "CA1", "queued", Some("acme")),
            ])
            .await;
        assert!(failed.is_empty());
        let sent = queue.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 2);
        let job: TranscriptionJob = serde_json::from_str(&sent[0]).unwrap();
        assert_eq!(job.call_id, "CA1");
        assert_eq!(job.org_id.as_deref(), Some("acme"));
        // The deadline runs from the call's arrival, not from the stream's delivery.
        assert_eq!(job.accepted_at, Some(1_796_551_200));
        assert_eq!(job.deadline, 1_796_551_200 + 3600);
        let mut counted = counts.0.lock().unwrap().clone();
        counted.sort();
        assert_eq!(counted, vec![(None, 1), (Some("acme".into()), 2)]);
    }

    #[tokio::test]
    async fn only_the_records_before_the_first_failure_are_counted() {
        let queue = Arc::new(Queue::default());
        queue.refuse.lock().unwrap().push("\"CA2\"".into());
        let counts = Arc::new(Counts::default());
        let failed = dispatcher(Arc::clone(&queue), Arc::clone(&counts))
            .handle(vec![
                change(1, "INSERT", "CA1", "queued", Some("acme")),
                change(2, "INSERT", "CA2", "queued", Some("acme")),
                change(3, "INSERT", "CA3", "queued", Some("acme")),
            ])
            .await;
        assert_eq!(failed, vec![format!("{:021}", 2)]);
        // CA3 comes again with CA2; it is counted then.
        assert_eq!(
            counts.0.lock().unwrap().clone(),
            vec![(Some("acme".into()), 1)]
        );
    }

    #[tokio::test]
    async fn an_unreadable_record_fails_and_nothing_after_it_is_counted() {
        let queue = Arc::new(Queue::default());
        let counts = Arc::new(Counts::default());
        let mut broken = change(1, "INSERT", "CA1", "queued", None);
        broken.new_image.insert(
            "status".into(),
            serde_dynamo::AttributeValue::S("??".into()),
        );
        let failed = dispatcher(Arc::clone(&queue), Arc::clone(&counts))
            .handle(vec![broken, change(2, "INSERT", "CA2", "queued", None)])
            .await;
        assert_eq!(failed, vec![format!("{:021}", 1)]);
        assert!(counts.0.lock().unwrap().is_empty());
    }
}
