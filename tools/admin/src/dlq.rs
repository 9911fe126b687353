//! `callops-admin dlq list|show|replay|purge --queue <name>`: dead letters an
//! operator can act on.
//!
//! `<name>` is a dead-letter queue's logical id without `DLQ`
//! (`transcription`, `notification`, `monitor`, `provider-events`, `sweep`)
//! or the full logical id. Queues are found by name prefix
//! `<CALLOPS_STACK>-<LogicalId>` (SAM names them `<stack>-<LogicalId>-<suffix>`),
//! and a DLQ's source queue is the stack's queue whose redrive policy
//! names it. Replaying is safe because every worker is idempotent (each job
//! claims its work in the dedup table), which the integration tests check.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;

/// A dead letter as the operator sees it: body masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message_id: String,
    pub sent_at: Option<String>,
    pub receive_count: Option<String>,
    /// The body with phone numbers, emails and credentials masked.
    pub body: String,
    /// Kept to delete it after a replay; never printed.
    receipt: String,
    raw_body: String,
}

/// A dead-letter queue and the queue its messages came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterQueue {
    pub name: String,
    pub url: String,
    pub source_url: Option<String>,
}

/// `transcription` -> `TranscriptionDLQ`; a full logical id stays as it is.
pub fn logical_id(name: &str) -> String {
    if name.ends_with("DLQ") {
        return name.to_string();
    }
    let camel: String = name
        .split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    format!("{camel}DLQ")
}

/// An SQS failure as the operator reads it: what we were doing, and why.
fn failed<E: std::error::Error + 'static, R: std::fmt::Debug>(
    doing: impl std::fmt::Display,
) -> impl FnOnce(aws_sdk_sqs::error::SdkError<E, R>) -> String {
    move |e| format!("{doing}: {}", aws_sdk_sqs::error::DisplayErrorContext(e))
}

/// The queue's name is `prefix` or `prefix-<suffix>` (SAM's naming).
fn named(url: &str, prefix: &str) -> bool {
    url.rsplit('/')
        .next()
        .is_some_and(|name| name == prefix || name.starts_with(&format!("{prefix}-")))
}

/// Finds the DLQ `<stack>-<LogicalId>` and its source queue, from one
/// listing of the stack's queues.
pub async fn find(sqs: &Client, stack: &str, name: &str) -> Result<DeadLetterQueue, String> {
    let id = logical_id(name);
    let stack_queues = sqs
        .list_queues()
        .queue_name_prefix(stack)
        .send()
        .await
        .map_err(failed("listing queues"))?
        .queue_urls
        .unwrap_or_default();
    let url = stack_queues
        .iter()
        .find(|url| named(url, &format!("{stack}-{id}")))
        .cloned()
        .ok_or_else(|| format!("no queue {stack}-{id}* (is CALLOPS_STACK right?)"))?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(failed(format!("reading {id}")))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| format!("{id} has no ARN"))?;
    let mut source_url = None;
    for candidate in stack_queues {
        let policy = sqs
            .get_queue_attributes()
            .queue_url(&candidate)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .ok()
            .and_then(|out| out.attributes)
            .and_then(|mut a| a.remove(&QueueAttributeName::RedrivePolicy));
        let target = policy
            .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
            .and_then(|p| p["deadLetterTargetArn"].as_str().map(str::to_string));
        if target.as_deref() == Some(arn.as_str()) {
            source_url = Some(candidate);
            break;
        }
    }
    Ok(DeadLetterQueue {
        name: id,
        url,
        source_url,
    })
}

/// Reads every message now in the queue (each hidden for `hold` while this
/// runs, then visible again unless replayed or purged).
pub async fn read_all(
    sqs: &Client,
    dlq: &DeadLetterQueue,
    hold: Duration,
) -> Result<Vec<DeadLetter>, String> {
    let mut seen: BTreeMap<String, DeadLetter> = BTreeMap::new();
    let mut empty_reads = 0;
    while empty_reads < 2 {
        let out = sqs
            .receive_message()
            .queue_url(&dlq.url)
            .max_number_of_messages(10)
            .visibility_timeout(i32::try_from(hold.as_secs()).unwrap_or(60))
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(failed(format!("reading {}", dlq.name)))?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            empty_reads += 1;
            continue;
        }
        for message in messages {
            let (Some(id), Some(receipt)) = (message.message_id, message.receipt_handle) else {
                continue;
            };
            let attributes = message.attributes.unwrap_or_default();
            let raw_body = message.body.unwrap_or_default();
            seen.entry(id.clone()).or_insert(DeadLetter {
                message_id: id,
                sent_at: attributes
                    .get(&MessageSystemAttributeName::SentTimestamp)
                    .and_then(|ms| ms.parse::<i64>().ok())
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.to_rfc3339()),
                receive_count: attributes
                    .get(&MessageSystemAttributeName::ApproximateReceiveCount)
                    .cloned(),
                body: mask_body(&raw_body),
                receipt,
                raw_body,
            });
        }
    }
    Ok(seen.into_values().collect())
}

/// Sends each message back to the source queue, then deletes it from the
/// DLQ (sent first: a crash in between repeats a message, which the
/// idempotent workers absorb, rather than losing one).
pub async fn replay(
    sqs: &Client,
    dlq: &DeadLetterQueue,
    letters: &[DeadLetter],
) -> Result<usize, String> {
    let source = dlq.source_url.as_ref().ok_or_else(|| {
        format!(
            "{} is no queue's dead-letter queue; nothing to replay to",
            dlq.name
        )
    })?;
    let mut replayed = 0;
    for letter in letters {
        sqs.send_message()
            .queue_url(source)
            .message_body(&letter.raw_body)
            .send()
            .await
            .map_err(failed(format!("replaying {}", letter.message_id)))?;
        sqs.delete_message()
            .queue_url(&dlq.url)
            .receipt_handle(&letter.receipt)
            .send()
            .await
            .map_err(failed(format!(
                "{} replayed but not deleted from {} (it will be replayed again; harmless)",
                letter.message_id, dlq.name
            )))?;
        replayed += 1;
    }
    Ok(replayed)
}

pub async fn purge(sqs: &Client, dlq: &DeadLetterQueue) -> Result<(), String> {
    sqs.purge_queue()
        .queue_url(&dlq.url)
        .send()
        .await
        .map(drop)
        .map_err(failed(format!("purging {}", dlq.name)))
}

const SENSITIVE_KEYS: [&str; 8] = [
    "token",
    "secret",
    "password",
    "authorization",
    "api_key",
    "apikey",
    "signature",
    "key",
];

/// The body for a person to read: JSON with credentials replaced and phone
/// numbers and emails masked; anything else with digit runs masked.
pub fn mask_body(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(mut value) => {
            mask_value(&mut value, false);
            value.to_string()
        }
        Err(_) => mask_text(body),
    }
}

fn mask_value(value: &mut serde_json::Value, sensitive: bool) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                let key = key.to_ascii_lowercase();
                let secret = SENSITIVE_KEYS
                    .iter()
                    .any(|s| key == *s || key.ends_with(&format!("_{s}")));
                mask_value(inner, secret);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| mask_value(v, sensitive)),
        serde_json::Value::String(text) if sensitive => *text = "***".into(),
        serde_json::Value::String(text) => {
            // A JSON body inside a string (queued webhook bodies) is masked too.
            if let Ok(mut inner) = serde_json::from_str::<serde_json::Value>(text) {
                if inner.is_object() || inner.is_array() {
                    mask_value(&mut inner, false);
                    *text = inner.to_string();
                    return;
                }
            }
            *text = mask_text(text);
        }
        _ => {}
    }
}

/// Emails and runs of 7+ digits (phone numbers), wherever they are.
fn mask_text(text: &str) -> String {
    let words: Vec<String> = text
        .split(' ')
        .map(|word| {
            if word.contains('@') && word.contains('.') {
                shared::base::mask::email(word)
            } else {
                word.to_string()
            }
        })
        .collect();
    let text = words.join(" ");
    let mut out = String::new();
    let mut run = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() || (c == '+' && run.is_empty()) {
            run.push(c);
            continue;
        }
        flush(&mut out, &mut run);
        out.push(c);
    }
    flush(&mut out, &mut run);
    out
}

fn flush(out: &mut String, run: &mut String) {
    let digits = run.chars().filter(char::is_ascii_digit).count();
    if digits >= 7 {
        out.push_str(&shared::base::mask::phone(run));
    } else {
        out.push_str(run);
    }
    run.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_map_to_dead_letter_queues() {
        assert_eq!(logical_id("transcription"), "TranscriptionDLQ");
        assert_eq!(logical_id("provider-events"), "ProviderEventsDLQ");
        assert_eq!(logical_id("NotificationDLQ"), "NotificationDLQ");
    }

    #[test]
    fn bodies_are_masked_for_reading() {
        let body = r#"{"call_id":"c1","from_number":"+14155550100","to":"whatsapp:+14155550123",
            "auth_token":"abc","nested":"{\"user_email\":\"alice@example.com\",\"phone\":\"09876543210\"}",
            "checks":3}"#;
        let masked = mask_body(body);
        for leaked in ["4155550100", "4155550123", "abc\"", "alice@", "9876543210"] {
            assert!(!masked.contains(leaked), "{leaked} in {masked}");
        }
        assert!(masked.contains("\"call_id\":\"c1\""));
        assert!(masked.contains("\"checks\":3"));
        assert!(
            masked.contains("0100"),
            "last digits stay for matching: {masked}"
        );
        assert_eq!(mask_text("call +14155550100 now"), "call +14*****0100 now");
    }
}
