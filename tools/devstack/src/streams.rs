//! DynamoDB stream delivery to a worker the way Lambda's event source
//! mapping does it, so a stream consumer runs locally against DynamoDB
//! Local's stream with the settings template.yaml deploys: its filters
//! (a record no filter passes never reaches the function and counts as
//! processed), batch size and batching window, partial batch failures,
//! bisection, the retry limit and the on-failure queue.
//!
//! [`StreamPoller::poll_once`] reads what is new in every shard and hands at
//! most one batch (records of one shard, in stream order) to the worker; a
//! failed batch is retried by the following polls before anything after it
//! in its shard, as Lambda holds a shard back. [`StreamPoller::drain`] polls
//! until everything written so far is done.

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::time::Instant;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use aws_sdk_dynamodbstreams::error::DisplayErrorContext;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use serde_json::{json, Map, Value};

use crate::event_filter;
use crate::template::StreamTrigger;

/// The most records one GetRecords call returns.
const GET_RECORDS_LIMIT: i32 = 1000;
/// GetRecords calls per shard and poll, so one busy shard cannot hold a poll.
const READS_PER_SHARD: usize = 10;
/// Polls [`StreamPoller::drain`] makes at most: thousands of batches, yet a
/// worker failing for ever (no retry limit) fails a test instead of hanging it.
pub const DRAIN_POLLS: usize = 1000;

/// What one poll (or a whole drain) did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StreamPollReport {
    /// Stream records read, filtered out or not.
    pub read: usize,
    /// Records no filter passed: never delivered, done all the same.
    pub filtered_out: usize,
    /// Records handed to the worker (a retried record each time).
    pub delivered: usize,
    /// Worker invocations.
    pub batches: usize,
    /// `itemIdentifier`s the worker reported as failed (an absent one as "").
    pub failed: Vec<String>,
    /// The on-failure record of each batch given up on, as sent to the
    /// on-failure queue (or only reported, without one).
    pub on_failure: Vec<Value>,
}

impl StreamPollReport {
    fn absorb(&mut self, other: StreamPollReport) {
        self.read += other.read;
        self.filtered_out += other.filtered_out;
        self.delivered += other.delivered;
        self.batches += other.batches;
        self.failed.extend(other.failed);
        self.on_failure.extend(other.on_failure);
    }
}

/// Orders DynamoDB stream sequence numbers, decimal strings of up to 40
/// digits: as the integers they are, not as text ("9" < "10").
pub fn sequence_order(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Records at the front of a shard's pending list handed over together, and
/// what Lambda counts for them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Batch {
    len: usize,
    /// Retries from this batch's starting position.
    retries: u32,
    /// Invocations that carried this batch's first record.
    invokes: u32,
}

struct Shard {
    id: String,
    parent: Option<String>,
    /// Where a shard not read yet starts.
    start: ShardIteratorType,
    iterator: Option<String>,
    /// Sequence number of the last record read (filtered out or not): where
    /// a new iterator resumes when the old one expires.
    last_read: Option<String>,
    /// GetRecords gave no next iterator: the shard is closed and read to its end.
    ended: bool,
    /// Records read and passed by the filters, not done yet, in order.
    pending: VecDeque<EventRecord>,
    /// Batches being retried, covering the front of `pending` in order:
    /// empty until one fails, two or more after a bisection.
    batches: VecDeque<Batch>,
    /// Since when the next batch has been gathering (batching window).
    gathering_since: Option<Instant>,
}

impl Shard {
    fn done(&self) -> bool {
        self.ended && self.pending.is_empty()
    }

    /// The front batch is done (delivered, or given up on): past it.
    fn pass_front_batch(&mut self) {
        if let Some(batch) = self.batches.pop_front() {
            self.pending.drain(..batch.len.min(self.pending.len()));
        }
        // The next window begins when the previous invocation completes.
        self.gathering_since = (!self.pending.is_empty()).then(Instant::now);
    }
}

/// How the worker's answer failed a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Failure {
    /// From this record on (the lowest failed sequence number).
    From(usize),
    /// The whole batch: an empty `itemIdentifier`, or one not in the batch.
    Whole,
}

/// Reads `response` as Lambda does with `ReportBatchItemFailures`.
fn failure_of(response: &DynamoDbEventResponse, sequences: &[String]) -> Option<Failure> {
    let mut lowest: Option<usize> = None;
    for failure in &response.batch_item_failures {
        let id = failure.item_identifier.as_deref().unwrap_or_default();
        let Some(index) = sequences.iter().position(|s| !id.is_empty() && s == id) else {
            return Some(Failure::Whole);
        };
        if lowest.is_none_or(|l| sequence_order(&sequences[index], &sequences[l]).is_lt()) {
            lowest = Some(index);
        }
    }
    lowest.map(Failure::From)
}

/// A table's stream read through one event source mapping (a function's
/// `Type: DynamoDB` event).
pub struct StreamPoller {
    dynamodb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    sqs: aws_sdk_sqs::Client,
    table: String,
    trigger: StreamTrigger,
    on_failure_queue: Option<String>,
    function_name: String,
    region: String,
    stream_arn: Option<String>,
    /// In the order DescribeStream lists them (parents before children).
    shards: Vec<Shard>,
    /// DescribeStream has answered once: shards found later are new, read
    /// from their start even with `LATEST`.
    listed: bool,
    /// The shard first in line for the next invocation (shards take turns).
    turn: usize,
}

impl StreamPoller {
    /// `table` is the physical table name, `on_failure_queue` the URL of the
    /// trigger's on-failure queue.
    pub fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        streams: aws_sdk_dynamodbstreams::Client,
        table: impl Into<String>,
        trigger: StreamTrigger,
        on_failure_queue: Option<String>,
        sqs: aws_sdk_sqs::Client,
    ) -> Self {
        let region = dynamodb
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        Self {
            dynamodb,
            streams,
            sqs,
            table: table.into(),
            function_name: trigger.event.clone(),
            trigger,
            on_failure_queue,
            region,
            stream_arn: None,
            shards: Vec::new(),
            listed: false,
            turn: 0,
        }
    }

    /// The function named in on-failure records' `functionArn` (the
    /// event's name until set).
    pub fn for_function(mut self, name: impl Into<String>) -> Self {
        self.function_name = name.into();
        self
    }

    /// The stream's ARN, once a poll has found it.
    pub fn stream_arn(&self) -> Option<&str> {
        self.stream_arn.as_deref()
    }

    /// Records read and passed by the filters that are not done yet.
    pub fn pending(&self) -> usize {
        self.shards.iter().map(|s| s.pending.len()).sum()
    }

    /// Reads what is new in every shard and invokes `worker` with at most
    /// one batch, honouring the batching window.
    pub async fn poll_once<F, Fut>(&mut self, worker: F) -> Result<StreamPollReport, String>
    where
        F: FnOnce(Event) -> Fut,
        Fut: Future<Output = DynamoDbEventResponse>,
    {
        self.poll(worker, false).await
    }

    /// Polls until one reads nothing new and nothing waits for a retry,
    /// invoking batches without waiting for the batching window. An error
    /// after [`DRAIN_POLLS`] polls.
    pub async fn drain<F, Fut>(&mut self, mut worker: F) -> Result<StreamPollReport, String>
    where
        F: FnMut(Event) -> Fut,
        Fut: Future<Output = DynamoDbEventResponse>,
    {
        let mut total = StreamPollReport::default();
        for _ in 0..DRAIN_POLLS {
            let report = self.poll(&mut worker, true).await?;
            let quiet = report.read == 0 && report.batches == 0 && self.pending() == 0;
            total.absorb(report);
            if quiet {
                return Ok(total);
            }
        }
        Err(format!(
            "{}: the stream is not drained after {DRAIN_POLLS} polls ({} records pending)",
            self.table,
            self.pending()
        ))
    }

    async fn poll<F, Fut>(&mut self, worker: F, flush: bool) -> Result<StreamPollReport, String>
    where
        F: FnOnce(Event) -> Fut,
        Fut: Future<Output = DynamoDbEventResponse>,
    {
        let mut report = StreamPollReport::default();
        let stream_arn = self.find_stream().await?;
        // Every poll: a new table's stream may list its shard late, and
        // shards close and get children.
        self.list_shards(&stream_arn).await?;
        for index in 0..self.shards.len() {
            if self.ready(index) {
                self.read(index, &stream_arn, &mut report).await?;
            }
        }
        let count = self.shards.len();
        let due = (0..count)
            .map(|offset| (self.turn + offset) % count)
            .find(|&index| self.ready(index) && self.batch_due(index, flush));
        if let Some(index) = due {
            self.turn = index + 1;
            self.invoke(index, &stream_arn, worker, &mut report).await?;
        }
        Ok(report)
    }

    /// The table's latest stream, from DescribeTable.
    async fn find_stream(&mut self) -> Result<String, String> {
        if let Some(arn) = &self.stream_arn {
            return Ok(arn.clone());
        }
        let arn = self
            .dynamodb
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "describe table {}: {}",
                    self.table,
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            })?
            .table
            .and_then(|t| t.latest_stream_arn)
            .ok_or(format!(
                "{} has no stream: give it a StreamSpecification in template.yaml",
                self.table
            ))?;
        self.stream_arn = Some(arn.clone());
        Ok(arn)
    }

    async fn list_shards(&mut self, stream_arn: &str) -> Result<(), String> {
        let from_latest = !self.listed && self.trigger.starting_position == "LATEST";
        let mut exclusive_start: Option<String> = None;
        loop {
            let description = self
                .streams
                .describe_stream()
                .stream_arn(stream_arn)
                .set_exclusive_start_shard_id(exclusive_start.clone())
                .send()
                .await
                .map_err(|e| format!("describe stream {stream_arn}: {}", DisplayErrorContext(e)))?
                .stream_description
                .ok_or(format!("describe stream {stream_arn}: no description"))?;
            for listed in description.shards.unwrap_or_default() {
                let Some(id) = listed.shard_id else { continue };
                if self.shards.iter().any(|s| s.id == id) {
                    continue;
                }
                let closed = listed
                    .sequence_number_range
                    .as_ref()
                    .is_some_and(|r| r.ending_sequence_number.is_some());
                let mut shard = Shard {
                    id,
                    parent: listed.parent_shard_id,
                    start: if from_latest {
                        ShardIteratorType::Latest
                    } else {
                        ShardIteratorType::TrimHorizon
                    },
                    iterator: None,
                    last_read: None,
                    ended: from_latest && closed,
                    pending: VecDeque::new(),
                    batches: VecDeque::new(),
                    gathering_since: None,
                };
                // LATEST is where the shard ends when the mapping starts.
                if from_latest && !closed {
                    shard.iterator = Some(shard_iterator(&self.streams, stream_arn, &shard).await?);
                }
                self.shards.push(shard);
            }
            exclusive_start = description.last_evaluated_shard_id;
            if exclusive_start.is_none() {
                break;
            }
        }
        self.listed = true;
        Ok(())
    }

    /// A shard is read once its parent is done (or gone), as Lambda keeps
    /// a key's changes in order across a shard split.
    fn ready(&self, index: usize) -> bool {
        let shard = &self.shards[index];
        !shard.done()
            && shard.parent.as_ref().is_none_or(|parent| {
                self.shards
                    .iter()
                    .find(|s| &s.id == parent)
                    .is_none_or(Shard::done)
            })
    }

    fn batch_due(&self, index: usize, flush: bool) -> bool {
        let shard = &self.shards[index];
        if !shard.batches.is_empty() {
            return true;
        }
        !shard.pending.is_empty()
            && (flush
                || shard.ended
                || shard.pending.len() >= self.batch_size()
                || shard
                    .gathering_since
                    .is_none_or(|since| since.elapsed() >= self.trigger.batching_window))
    }

    fn batch_size(&self) -> usize {
        usize::try_from(self.trigger.batch_size).unwrap_or(1).max(1)
    }

    /// GetRecords until the shard has a batch's worth, has nothing new, or
    /// has ended; keeps the records the filters pass.
    async fn read(
        &mut self,
        index: usize,
        stream_arn: &str,
        report: &mut StreamPollReport,
    ) -> Result<(), String> {
        let batch_size = self.batch_size();
        let shard = &mut self.shards[index];
        for _ in 0..READS_PER_SHARD {
            if shard.ended || shard.pending.len() >= batch_size {
                break;
            }
            let iterator = match shard.iterator.take() {
                Some(iterator) => iterator,
                None => shard_iterator(&self.streams, stream_arn, shard).await?,
            };
            let out = match self
                .streams
                .get_records()
                .shard_iterator(iterator)
                .limit(GET_RECORDS_LIMIT)
                .send()
                .await
            {
                Ok(out) => out,
                // Iterators live 15 minutes, records 24 hours: a new
                // iterator resumes after the last record read (or at the
                // oldest one left).
                Err(err)
                    if err.as_service_error().is_some_and(|e| {
                        e.is_expired_iterator_exception() || e.is_trimmed_data_access_exception()
                    }) =>
                {
                    continue
                }
                Err(err) => {
                    return Err(format!(
                        "get records of {}: {}",
                        shard.id,
                        DisplayErrorContext(err)
                    ))
                }
            };
            shard.iterator = out.next_shard_iterator;
            shard.ended = shard.iterator.is_none();
            let records = out.records.unwrap_or_default();
            // An open shard with nothing new answers an empty list (and a
            // next iterator): read again next poll.
            if records.is_empty() {
                break;
            }
            for record in &records {
                let document = record_document(record, stream_arn, &self.region)?;
                report.read += 1;
                shard.last_read = document["dynamodb"]["SequenceNumber"]
                    .as_str()
                    .map(str::to_string);
                if !event_filter::matches_any(&self.trigger.filters, &document) {
                    report.filtered_out += 1;
                    continue;
                }
                let record: EventRecord = serde_json::from_value(document)
                    .map_err(|e| format!("stream record of {}: {e}", shard.id))?;
                shard.pending.push_back(record);
                shard.gathering_since.get_or_insert_with(Instant::now);
            }
        }
        Ok(())
    }

    /// Hands the shard's next batch to `worker` and applies its answer.
    async fn invoke<F, Fut>(
        &mut self,
        index: usize,
        stream_arn: &str,
        worker: F,
        report: &mut StreamPollReport,
    ) -> Result<(), String>
    where
        F: FnOnce(Event) -> Fut,
        Fut: Future<Output = DynamoDbEventResponse>,
    {
        let batch_size = self.batch_size();
        let function_arn = format!(
            "arn:aws:lambda:{}:000000000000:function:{}",
            self.region, self.function_name
        );
        let shard = &mut self.shards[index];
        if shard.batches.is_empty() {
            shard.batches.push_back(Batch {
                len: shard.pending.len().min(batch_size),
                retries: 0,
                invokes: 0,
            });
        }
        let mut batch = shard.batches[0];
        batch.invokes += 1;
        let mut event = Event::default();
        event.records = shard.pending.iter().take(batch.len).cloned().collect();
        let sequences: Vec<String> = event.records.iter().map(sequence_of).collect();
        report.batches += 1;
        report.delivered += batch.len;
        let response = worker(event).await;
        // Without ReportBatchItemFailures Lambda ignores what the function returns.
        let failure = if self.trigger.reports_batch_item_failures {
            report.failed.extend(
                response
                    .batch_item_failures
                    .iter()
                    .map(|f| f.item_identifier.clone().unwrap_or_default()),
            );
            failure_of(&response, &sequences)
        } else {
            None
        };
        let (from, whole) = match failure {
            None => {
                shard.batches[0] = batch;
                shard.pass_front_batch();
                return Ok(());
            }
            Some(Failure::Whole) => (0, true),
            Some(Failure::From(from)) => (from, false),
        };
        // The records before the lowest failure are done: Lambda checkpoints
        // there, and the batch starts again from the failed record.
        if from > 0 {
            shard.pending.drain(..from);
            batch.len -= from;
            batch.retries = 0;
        }
        shard.batches[0] = batch;
        // Retries are counted per starting position, as Lambda counts them
        // for a batch. How it counts them across a bisection it does not
        // say; here each half starts with its parent's count plus one (the
        // split is a retry of its records), so a record is handed over at
        // most MaximumRetryAttempts + 1 times from one starting position
        // however the batch is split, and a poison record ends up alone in
        // the on-failure record, its neighbours delivered.
        let exhausted = self
            .trigger
            .maximum_retry_attempts
            .is_some_and(|max| batch.retries >= max);
        if exhausted {
            let records: Vec<&EventRecord> = shard.pending.iter().take(batch.len).collect();
            let body = on_failure_record(
                &function_arn,
                &shard.id,
                stream_arn,
                &records,
                batch.invokes,
            );
            if let Some(queue) = &self.on_failure_queue {
                self.sqs
                    .send_message()
                    .queue_url(queue)
                    .message_body(body.to_string())
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "on-failure record to {queue}: {}",
                            aws_sdk_sqs::error::DisplayErrorContext(e)
                        )
                    })?;
            }
            report.on_failure.push(body);
            shard.pass_front_batch();
        } else if whole && self.trigger.bisect_on_error && batch.len > 1 {
            let first = batch.len.div_ceil(2);
            let half = |len| Batch {
                len,
                retries: batch.retries + 1,
                invokes: batch.invokes,
            };
            shard.batches.pop_front();
            shard.batches.push_front(half(batch.len - first));
            shard.batches.push_front(half(first));
        } else {
            batch.retries += 1;
            shard.batches[0] = batch;
        }
        Ok(())
    }
}

/// An iterator where `shard` is to be read next: after its last record
/// read, or at its start.
async fn shard_iterator(
    streams: &aws_sdk_dynamodbstreams::Client,
    stream_arn: &str,
    shard: &Shard,
) -> Result<String, String> {
    let at = |kind: ShardIteratorType| {
        streams
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(&shard.id)
            .shard_iterator_type(kind)
    };
    let sent = match &shard.last_read {
        Some(sequence) => {
            match at(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence)
                .send()
                .await
            {
                // Records older than 24 hours are trimmed: on from the oldest
                // one left, as Lambda passes over expired records.
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_trimmed_data_access_exception()) =>
                {
                    at(ShardIteratorType::TrimHorizon).send().await
                }
                other => other,
            }
        }
        None => at(shard.start.clone()).send().await,
    };
    sent.map_err(|e| format!("shard iterator of {}: {}", shard.id, DisplayErrorContext(e)))?
        .shard_iterator
        .ok_or(format!("shard iterator of {}: none given", shard.id))
}

fn sequence_of(record: &EventRecord) -> String {
    record.change.sequence_number.clone().unwrap_or_default()
}

/// An attribute value in DynamoDB JSON (`{"S": "x"}`), as Lambda's event has it.
fn attribute_json(value: &AttributeValue) -> Result<Value, String> {
    use base64::Engine;
    let base64 = |blob: &aws_sdk_dynamodbstreams::primitives::Blob| {
        base64::engine::general_purpose::STANDARD.encode(blob.as_ref())
    };
    Ok(match value {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::B(b) => json!({"B": base64(b)}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        AttributeValue::Null(n) => json!({"NULL": n}),
        AttributeValue::Ss(values) => json!({"SS": values}),
        AttributeValue::Ns(values) => json!({"NS": values}),
        AttributeValue::Bs(values) => json!({"BS": values.iter().map(base64).collect::<Vec<_>>()}),
        AttributeValue::L(items) => json!({"L": items
            .iter()
            .map(attribute_json)
            .collect::<Result<Vec<_>, _>>()?}),
        AttributeValue::M(map) => json!({"M": image_json(map)?}),
        other => {
            return Err(format!(
                "an attribute of a type the stream client does not know: {other:?}"
            ))
        }
    })
}

fn image_json(image: &HashMap<String, AttributeValue>) -> Result<Value, String> {
    image
        .iter()
        .map(|(name, value)| Ok((name.clone(), attribute_json(value)?)))
        .collect::<Result<Map<_, _>, String>>()
        .map(Value::Object)
}

/// A stream record as Lambda hands it to the function, and as its filters
/// see it: `eventName`, `dynamodb` with the keys and images in DynamoDB
/// JSON, `eventSourceARN` the stream's. DynamoDB Local says `ddblocal` for
/// the region; Lambda says the table's.
fn record_document(record: &Record, stream_arn: &str, region: &str) -> Result<Value, String> {
    let change = record
        .dynamodb
        .as_ref()
        .ok_or("a stream record without its dynamodb part")?;
    let mut dynamodb = Map::new();
    if let Some(created) = &change.approximate_creation_date_time {
        dynamodb.insert("ApproximateCreationDateTime".into(), json!(created.secs()));
    }
    for (name, image) in [
        ("Keys", &change.keys),
        ("NewImage", &change.new_image),
        ("OldImage", &change.old_image),
    ] {
        if let Some(image) = image {
            dynamodb.insert(name.into(), image_json(image)?);
        }
    }
    dynamodb.insert(
        "SequenceNumber".into(),
        json!(change
            .sequence_number
            .as_deref()
            .ok_or("a stream record without a SequenceNumber")?),
    );
    dynamodb.insert("SizeBytes".into(), json!(change.size_bytes.unwrap_or(0)));
    if let Some(view) = &change.stream_view_type {
        dynamodb.insert("StreamViewType".into(), json!(view.as_str()));
    }
    let mut document = json!({
        "eventID": record.event_id.as_deref().unwrap_or_default(),
        "eventName": record.event_name.as_ref().map(|n| n.as_str()).unwrap_or_default(),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    });
    // Time to Live deletions name the service that made them.
    if let Some(identity) = &record.user_identity {
        document["userIdentity"] = json!({
            "type": identity.r#type.as_deref().unwrap_or_default(),
            "principalId": identity.principal_id.as_deref().unwrap_or_default(),
        });
    }
    Ok(document)
}

/// What Lambda sends a stream's on-failure destination for a batch given up
/// on: where the records are, not the records. `responseContext` has no
/// `functionError`: the worker answered (with failed items), which is not a
/// function error.
fn on_failure_record(
    function_arn: &str,
    shard_id: &str,
    stream_arn: &str,
    records: &[&EventRecord],
    invokes: u32,
) -> Value {
    let arrival = |record: Option<&&EventRecord>| {
        record
            .map(|r| {
                r.change
                    .approximate_creation_date_time
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
            })
            .unwrap_or_default()
    };
    let sequence =
        |record: Option<&&EventRecord>| record.map(|r| sequence_of(r)).unwrap_or_default();
    json!({
        "requestContext": {
            "requestId": uuid::Uuid::new_v4().to_string(),
            "functionArn": function_arn,
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": invokes,
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
        },
        "version": "1.0",
        "timestamp": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "DDBStreamBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": sequence(records.first()),
            "endSequenceNumber": sequence(records.last()),
            "approximateArrivalOfFirstRecord": arrival(records.first()),
            "approximateArrivalOfLastRecord": arrival(records.last()),
            "batchSize": records.len(),
            "streamArn": stream_arn,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::streams::DynamoDbBatchItemFailure;
    use aws_sdk_dynamodbstreams::primitives::{Blob, DateTime};
    use aws_sdk_dynamodbstreams::types::{OperationType, StreamRecord, StreamViewType};

    const STREAM: &str =
        "arn:aws:dynamodb:ddblocal:000000000000:table/t-CallsTable/stream/2026-01-01T00:00:00.000";

    fn image(pairs: &[(&str, &str)]) -> HashMap<String, AttributeValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), AttributeValue::S(v.to_string())))
            .collect()
    }

    fn stream_record(event: OperationType, sequence: &str, new_image: &[(&str, &str)]) -> Record {
        Record::builder()
            .event_id("e-1")
            .event_name(event)
            .event_version("1.1")
            .event_source("aws:dynamodb")
            .aws_region("ddblocal")
            .dynamodb(
                StreamRecord::builder()
                    .approximate_creation_date_time(DateTime::from_secs(1_767_225_600))
                    .set_keys(Some(image(&[("call_id", "c-1"), ("item", "call")])))
                    .set_new_image(Some(image(new_image)))
                    .sequence_number(sequence)
                    .size_bytes(42)
                    .stream_view_type(StreamViewType::NewImage)
                    .build(),
            )
            .build()
    }

    #[test]
    fn sequence_numbers_order_as_integers() {
        assert_eq!(sequence_order("9", "10"), Ordering::Less);
        assert_eq!(sequence_order("100", "99"), Ordering::Greater);
        assert_eq!(sequence_order("000123", "123"), Ordering::Equal);
        assert_eq!(
            sequence_order("400000000000000000001", "400000000000000000002"),
            Ordering::Less
        );
    }

    #[test]
    fn a_record_reads_as_lambdas_event_record() {
        let mut record = stream_record(OperationType::Insert, "1000", &[("item", "call")]);
        if let Some(change) = record.dynamodb.as_mut() {
            change.new_image.as_mut().unwrap().extend([
                ("n".to_string(), AttributeValue::N("5".into())),
                (
                    "b".to_string(),
                    AttributeValue::B(Blob::new(b"hi".to_vec())),
                ),
                (
                    "l".to_string(),
                    AttributeValue::L(vec![AttributeValue::Bool(true)]),
                ),
                ("m".to_string(), AttributeValue::M(image(&[("k", "v")]))),
                ("ss".to_string(), AttributeValue::Ss(vec!["a".into()])),
                ("z".to_string(), AttributeValue::Null(true)),
            ]);
        }
        let document = record_document(&record, STREAM, "us-east-1").unwrap();
        assert_eq!(document["eventName"], "INSERT");
        assert_eq!(document["eventVersion"], "1.1");
        assert_eq!(document["eventSource"], "aws:dynamodb");
        assert_eq!(document["awsRegion"], "us-east-1");
        assert_eq!(document["eventSourceARN"], STREAM);
        let change = &document["dynamodb"];
        assert_eq!(change["ApproximateCreationDateTime"], 1_767_225_600);
        assert_eq!(change["Keys"]["call_id"], json!({"S": "c-1"}));
        assert_eq!(change["NewImage"]["n"], json!({"N": "5"}));
        assert_eq!(change["NewImage"]["b"], json!({"B": "aGk="}));
        assert_eq!(change["NewImage"]["l"], json!({"L": [{"BOOL": true}]}));
        assert_eq!(change["NewImage"]["m"], json!({"M": {"k": {"S": "v"}}}));
        assert_eq!(change["NewImage"]["ss"], json!({"SS": ["a"]}));
        assert_eq!(change["NewImage"]["z"], json!({"NULL": true}));
        assert!(change.get("OldImage").is_none());
        assert_eq!(change["SequenceNumber"], "1000");
        assert_eq!(change["SizeBytes"], 42);
        assert_eq!(change["StreamViewType"], "NEW_IMAGE");
        // The same document deserializes into the event the worker gets.
        let event: EventRecord = serde_json::from_value(document).unwrap();
        assert_eq!(event.event_name, "INSERT");
        assert_eq!(event.change.sequence_number.as_deref(), Some("1000"));
        assert_eq!(
            serde_json::to_value(&event.change.new_image).unwrap()["n"],
            json!({"N": "5"})
        );
    }

    #[test]
    fn the_templates_filter_reads_records_as_the_poller_builds_them() {
        let template =
            crate::template::Template::load(&crate::repo_root().join("template.yaml")).unwrap();
        let trigger = &template.function("calls-stream").unwrap().streams[0];
        let queued = [("item", "call"), ("source", "zapier"), ("status", "queued")];
        let passes = |record: Record| {
            event_filter::matches_any(
                &trigger.filters,
                &record_document(&record, STREAM, "us-east-1").unwrap(),
            )
        };
        assert!(passes(stream_record(OperationType::Insert, "1", &queued)));
        assert!(!passes(stream_record(OperationType::Modify, "2", &queued)));
        assert!(!passes(stream_record(
            OperationType::Insert,
            "3",
            &[
                ("item", "call"),
                ("source", "zapier"),
                ("status", "received")
            ]
        )));
    }

    fn response(ids: &[Option<&str>]) -> DynamoDbEventResponse {
        let mut response = DynamoDbEventResponse::default();
        for id in ids {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = id.map(str::to_string);
            response.batch_item_failures.push(failure);
        }
        response
    }

    #[test]
    fn item_failures_fail_from_the_lowest_sequence_number_or_the_whole_batch() {
        let batch: Vec<String> = ["8", "9", "10", "11"].map(String::from).to_vec();
        assert_eq!(failure_of(&response(&[]), &batch), None);
        assert_eq!(
            failure_of(&response(&[Some("11"), Some("9"), Some("10")]), &batch),
            Some(Failure::From(1))
        );
        assert_eq!(
            failure_of(&response(&[Some("8")]), &batch),
            Some(Failure::From(0))
        );
        for whole in [vec![None], vec![Some("")], vec![Some("9"), Some("12")]] {
            assert_eq!(
                failure_of(&response(&whole), &batch),
                Some(Failure::Whole),
                "{whole:?}"
            );
        }
    }

    #[test]
    fn the_on_failure_record_has_lambdas_shape() {
        let records: Vec<EventRecord> = ["100", "205"]
            .iter()
            .map(|sequence| {
                serde_json::from_value(
                    record_document(
                        &stream_record(OperationType::Insert, sequence, &[("item", "call")]),
                        STREAM,
                        "us-east-1",
                    )
                    .unwrap(),
                )
                .unwrap()
            })
            .collect();
        let refs: Vec<&EventRecord> = records.iter().collect();
        let body = on_failure_record(
            "arn:aws:lambda:us-east-1:000000000000:function:calls-stream",
            "shardId-1",
            STREAM,
            &refs,
            6,
        );
        assert_eq!(
            body["requestContext"]["condition"],
            "RetryAttemptsExhausted"
        );
        assert_eq!(body["requestContext"]["approximateInvokeCount"], 6);
        assert_eq!(
            body["requestContext"]["functionArn"],
            "arn:aws:lambda:us-east-1:000000000000:function:calls-stream"
        );
        assert!(body["requestContext"]["requestId"]
            .as_str()
            .is_some_and(|id| !id.is_empty()));
        assert_eq!(
            body["responseContext"],
            json!({"statusCode": 200, "executedVersion": "$LATEST"})
        );
        assert_eq!(body["version"], "1.0");
        assert!(chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).is_ok());
        assert_eq!(
            body["DDBStreamBatchInfo"],
            json!({
                "shardId": "shardId-1",
                "startSequenceNumber": "100",
                "endSequenceNumber": "205",
                "approximateArrivalOfFirstRecord": "2026-01-01T00:00:00Z",
                "approximateArrivalOfLastRecord": "2026-01-01T00:00:00Z",
                "batchSize": 2,
                "streamArn": STREAM,
            })
        );
    }
}
