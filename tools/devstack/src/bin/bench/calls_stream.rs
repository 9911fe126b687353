//! The tables' stream consumers, benched on the records the intake benches
//! wrote: read from DynamoDB Local's stream as Lambda's event source
//! mapping reads it (the template's filter and batch size), each batch kept
//! as the event the release binary is then given through the Runtime API.

use aws_lambda_events::event::streams::DynamoDbEventResponse;
use devstack::emulators::LocalAws;
use devstack::provision::Resources;
use devstack::streams::StreamPoller;
use devstack::template::Template;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One invocation's event and how many records it carries.
pub struct Batch {
    pub event: String,
    pub records: usize,
}

/// Every batch the stream feeding `function` holds now, answered as
/// handled (the binary handles them afterwards, for the figures).
pub async fn batches(
    function: &'static str,
    local: &LocalAws,
    template: &Template,
    resources: &Resources,
) -> Result<Vec<Batch>, Error> {
    let trigger = template
        .function(function)
        .and_then(|f| f.streams.first().cloned())
        .ok_or_else(|| format!("{function} has no stream trigger in template.yaml"))?;
    let mut poller = StreamPoller::new(
        local.dynamodb().await,
        local.dynamodb_streams().await,
        resources.table(&trigger.table),
        trigger.clone(),
        trigger.on_failure.as_ref().map(|q| resources.queue(q)),
        local.sqs().await,
    )
    .for_function(function);
    let mut batches = Vec::new();
    let mut unreadable = None;
    poller
        .drain(|event| {
            let records = event.records.len();
            match serde_json::to_string(&event) {
                Ok(event) => batches.push(Batch { event, records }),
                Err(err) => unreadable = Some(err.to_string()),
            }
            std::future::ready(DynamoDbEventResponse::default())
        })
        .await?;
    if let Some(err) = unreadable {
        return Err(format!("a stream batch did not serialize: {err}").into());
    }
    Ok(batches)
}
