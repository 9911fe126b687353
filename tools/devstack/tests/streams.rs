//! The calls table's stream read as Lambda's event source mapping reads it,
//! on DynamoDB Local with the template's tables and trigger: only the records
//! its filter passes reach the worker, reported failures come back, and a
//! batch still failing after `MaximumRetryAttempts` is reported to the
//! on-failure queue and left behind. Needs the emulators (`make test`
//! installs them).

use std::collections::BTreeMap;
use std::future::{ready, Ready};
use std::sync::OnceLock;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use aws_sdk_dynamodb::types::AttributeValue;
use devstack::emulators::LocalAws;
use devstack::provision::{provision, Resources};
use devstack::streams::StreamPoller;
use devstack::template::{StreamTrigger, Template};

static LOCAL: OnceLock<LocalAws> = OnceLock::new();

fn local() -> &'static LocalAws {
    LOCAL.get_or_init(|| LocalAws::start().unwrap_or_else(|e| panic!("local AWS emulators: {e}")))
}

/// The template provisioned under a prefix of its own, and a poller for
/// `calls-stream`'s trigger on it.
struct CallsStream {
    resources: Resources,
    trigger: StreamTrigger,
    dynamo: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    poller: StreamPoller,
}

impl CallsStream {
    async fn start() -> Self {
        let local = local();
        let template = Template::load(&devstack::repo_root().join("template.yaml")).unwrap();
        let trigger = template.function("calls-stream").unwrap().streams[0].clone();
        let prefix = format!("s{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let resources = provision(local, &template, &prefix).await.unwrap();
        let sqs = local.sqs().await;
        let poller = StreamPoller::new(
            local.dynamodb().await,
            local.dynamodb_streams().await,
            resources.table(&trigger.table),
            trigger.clone(),
            trigger.on_failure.as_ref().map(|q| resources.queue(q)),
            sqs.clone(),
        )
        .for_function("calls-stream");
        Self {
            resources,
            trigger,
            dynamo: local.dynamodb().await,
            sqs,
            poller,
        }
    }

    /// A pipeline record as the webhooks store it (one PutItem).
    async fn put_call(&self, call_id: &str, status: &str) {
        let text = |s: &str| AttributeValue::S(s.to_string());
        self.dynamo
            .put_item()
            .table_name(self.resources.table(&self.trigger.table))
            .item("call_id", text(call_id))
            .item("item", text("call"))
            .item("source", text("zapier"))
            .item("status", text(status))
            .item("received_at", AttributeValue::N("1767225600".into()))
            .send()
            .await
            .unwrap();
    }

    async fn set_status(&self, call_id: &str, status: &str) {
        self.dynamo
            .update_item()
            .table_name(self.resources.table(&self.trigger.table))
            .key("call_id", AttributeValue::S(call_id.into()))
            .key("item", AttributeValue::S("call".into()))
            .update_expression("SET #s = :s")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":s", AttributeValue::S(status.into()))
            .send()
            .await
            .unwrap();
    }

    /// Bodies waiting in the trigger's on-failure queue.
    async fn on_failure_messages(&self) -> Vec<serde_json::Value> {
        let queue = self
            .resources
            .queue(self.trigger.on_failure.as_ref().unwrap());
        self.sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| serde_json::from_str(m.body.as_deref().unwrap()).unwrap())
            .collect()
    }
}

/// The record as the function's JSON event has it (`dynamodb.Keys.call_id.S`).
fn as_json(record: &EventRecord) -> serde_json::Value {
    serde_json::to_value(record).unwrap()
}

fn call_id(record: &EventRecord) -> String {
    as_json(record)["dynamodb"]["Keys"]["call_id"]["S"]
        .as_str()
        .unwrap_or_else(|| panic!("call_id key: {:?}", record.change.keys))
        .to_string()
}

fn sequence(record: &EventRecord) -> String {
    record.change.sequence_number.clone().unwrap()
}

fn succeed() -> Ready<DynamoDbEventResponse> {
    ready(DynamoDbEventResponse::default())
}

fn fail(identifiers: &[String]) -> Ready<DynamoDbEventResponse> {
    let mut response = DynamoDbEventResponse::default();
    for id in identifiers {
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = Some(id.clone());
        response.batch_item_failures.push(failure);
    }
    ready(response)
}

#[tokio::test]
async fn only_a_new_queued_record_reaches_the_function_and_only_once() {
    let mut stream = CallsStream::start().await;
    stream.put_call("c-match", "queued").await;
    stream.put_call("c-received", "received").await;
    // A MODIFY of the matching record.
    stream.set_status("c-match", "transcribing").await;

    let mut delivered: Vec<EventRecord> = Vec::new();
    let report = stream
        .poller
        .drain(|event: Event| {
            delivered.extend(event.records);
            succeed()
        })
        .await
        .unwrap();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let record = &delivered[0];
    assert_eq!(record.event_name, "INSERT");
    assert_eq!(call_id(record), "c-match");
    assert_eq!(
        as_json(record)["dynamodb"]["NewImage"]["status"]["S"],
        "queued"
    );
    assert_eq!(record.event_source.as_deref(), Some("aws:dynamodb"));
    assert_eq!(record.event_version.as_deref(), Some("1.1"));
    assert_eq!(record.aws_region, "us-east-1");
    assert_eq!(
        record.event_source_arn.as_deref(),
        stream.poller.stream_arn()
    );
    assert!(stream
        .poller
        .stream_arn()
        .is_some_and(|arn| arn.contains(&stream.resources.table("CallsTable"))));
    assert_eq!(
        (
            report.read,
            report.filtered_out,
            report.delivered,
            report.batches
        ),
        (3, 2, 1, 1)
    );
    assert!(report.failed.is_empty() && report.on_failure.is_empty());

    // Nothing new: nothing more to hand over.
    let again = stream
        .poller
        .drain(|event: Event| -> Ready<DynamoDbEventResponse> {
            panic!("delivered again: {event:?}")
        })
        .await
        .unwrap();
    assert_eq!((again.read, again.batches), (0, 0));
    assert!(stream.on_failure_messages().await.is_empty());
}

#[tokio::test]
async fn a_reported_failure_comes_back_until_the_retry_limit_then_goes_to_the_on_failure_queue() {
    let mut stream = CallsStream::start().await;
    let retries = stream
        .trigger
        .maximum_retry_attempts
        .expect("a retry limit in template.yaml");
    assert!(stream.trigger.reports_batch_item_failures);
    for id in ["c-1", "c-2", "c-3"] {
        stream.put_call(id, "queued").await;
    }

    // The function fails c-2 every time it sees it.
    let mut batches: Vec<Vec<String>> = Vec::new();
    let mut sequences: BTreeMap<String, String> = BTreeMap::new();
    let report = stream
        .poller
        .drain(|event: Event| {
            batches.push(event.records.iter().map(call_id).collect());
            let failed: Vec<String> = event
                .records
                .iter()
                .filter(|r| call_id(r) == "c-2")
                .map(sequence)
                .collect();
            sequences.extend(event.records.iter().map(|r| (call_id(r), sequence(r))));
            fail(&failed)
        })
        .await
        .unwrap();
    // c-1 is done after the first batch; c-2 and c-3 come back from c-2,
    // once per retry.
    let mut expected = vec![vec!["c-1", "c-2", "c-3"]];
    expected.extend(std::iter::repeat_n(vec!["c-2", "c-3"], retries as usize));
    assert_eq!(batches, expected);
    assert_eq!(
        report.failed,
        vec![sequences["c-2"].clone(); retries as usize + 1]
    );
    assert_eq!(report.on_failure.len(), 1);

    let messages = stream.on_failure_messages().await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let body = &messages[0];
    assert_eq!(body, &report.on_failure[0]);
    assert_eq!(
        body["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(
        body["requestContext"]["approximateInvokeCount"],
        retries + 1
    );
    assert!(body["requestContext"]["functionArn"]
        .as_str()
        .is_some_and(
            |arn| arn.starts_with("arn:aws:lambda:") && arn.ends_with(":function:calls-stream")
        ));
    assert!(body["requestContext"]["requestId"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    assert_eq!(body["responseContext"]["statusCode"], 200);
    assert_eq!(body["responseContext"]["executedVersion"], "$LATEST");
    assert_eq!(body["version"], "1.0");
    assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    let info = &body["DDBStreamBatchInfo"];
    assert!(info["shardId"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(info["startSequenceNumber"], sequences["c-2"].as_str());
    assert_eq!(info["endSequenceNumber"], sequences["c-3"].as_str());
    assert_eq!(info["batchSize"], 2);
    assert_eq!(info["streamArn"], stream.poller.stream_arn().unwrap());
    for arrival in [
        "approximateArrivalOfFirstRecord",
        "approximateArrivalOfLastRecord",
    ] {
        assert!(
            chrono::DateTime::parse_from_rfc3339(info[arrival].as_str().unwrap()).is_ok(),
            "{arrival}: {info}"
        );
    }

    // The poller moved on: a new record arrives alone.
    stream.put_call("c-4", "queued").await;
    let mut later: Vec<String> = Vec::new();
    stream
        .poller
        .drain(|event: Event| {
            later.extend(event.records.iter().map(call_id));
            succeed()
        })
        .await
        .unwrap();
    assert_eq!(later, ["c-4"]);
}

#[tokio::test]
async fn a_batch_failing_as_a_whole_is_bisected_down_to_the_record_that_fails() {
    let mut stream = CallsStream::start().await;
    assert!(stream.trigger.bisect_on_error);
    for id in ["c-a", "c-poison", "c-c", "c-d"] {
        stream.put_call(id, "queued").await;
    }

    // Any batch holding the poison record fails as a whole (an item
    // identifier that names no record).
    let mut done: Vec<String> = Vec::new();
    let mut poison = String::new();
    let report = stream
        .poller
        .drain(|event: Event| {
            let ids: Vec<String> = event.records.iter().map(call_id).collect();
            if let Some(record) = event.records.iter().find(|r| call_id(r) == "c-poison") {
                poison = sequence(record);
                return fail(&[String::new()]);
            }
            done.extend(ids);
            succeed()
        })
        .await
        .unwrap();
    assert_eq!(done, ["c-a", "c-c", "c-d"]);
    assert_eq!(report.on_failure.len(), 1);
    let info = &report.on_failure[0]["DDBStreamBatchInfo"];
    assert_eq!(info["startSequenceNumber"], poison.as_str());
    assert_eq!(info["endSequenceNumber"], poison.as_str());
    assert_eq!(info["batchSize"], 1);
    assert_eq!(stream.on_failure_messages().await.len(), 1);
}
