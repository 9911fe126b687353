//! `/whatsapp/message`'s second half, fed by the WhatsApp table's stream.
//! The webhook stored the message with its reply's watch entry (one
//! transaction) and answered; the INSERT of that entry reaches
//! `whatsapp-stream` once the template's filter passes it (the watch
//! partition, `redrives = 0`: the sweep's re-queues write entries with more
//! and queue their own job), and here the reply job is queued, ten to a
//! request. The reply worker claims `wa-reply#<sid>`, so a job sent twice
//! (a batch retried after a partial failure) is answered once.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::{error, info, warn};

use crate::base::metrics::{self, Metric};
use crate::queue::jobs::JobQueue;
use crate::queue::stream_batch::StreamChange;
use crate::store::whatsapp::{reply_watch_of, WATCH_PARTITION};

pub struct NewIncomingMessages {
    pub reply_queue: Arc<dyn JobQueue>,
}

impl NewIncomingMessages {
    /// Handles one batch; returns the sequence numbers of the changes that
    /// failed (Lambda retries from the lowest).
    pub async fn handle(&self, changes: Vec<StreamChange>) -> Vec<String> {
        let mut failed = Vec::new();
        let mut to_send: Vec<(usize, String)> = Vec::new();
        for (i, change) in changes.iter().enumerate() {
            if change.event_name != "INSERT" || change.number("redrives") != Some(0) {
                continue;
            }
            let item: HashMap<_, _> = change.new_image.clone().into();
            let Some(watch) = reply_watch_of(&item) else {
                if change.text("conversation") == Some(WATCH_PARTITION) {
                    // Our own entry, unreadable: a defect to see in the DLQ.
                    error!(sequence = %change.sequence_number, "unreadable reply watch entry in the stream");
                    failed.push(i);
                }
                continue;
            };
            match serde_json::to_string(&super::watch::job_of(&watch.pending)) {
                Ok(body) => to_send.push((i, body)),
                Err(err) => {
                    error!(sequence = %change.sequence_number, error = %err, "reply job not serialisable");
                    failed.push(i);
                }
            }
        }
        let bodies = to_send.iter().map(|(_, body)| body.clone()).collect();
        let results = self.reply_queue.send_many_raw(bodies).await;
        let mut queued = 0;
        for ((i, _), result) in to_send.iter().zip(results) {
            match result {
                Ok(()) => {
                    queued += 1;
                    metrics::count(Metric::Queued);
                }
                Err(err) => {
                    warn!(sequence = %changes[*i].sequence_number, error = %err.0, "reply job not queued; the stream retries");
                    failed.push(*i);
                }
            }
        }
        if queued > 0 {
            info!(queued, "WhatsApp reply jobs queued");
        }
        failed.sort_unstable();
        failed
            .into_iter()
            .map(|i| changes[i].sequence_number.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::jobs::{QueueError, WhatsAppReplyJob};
    use async_trait::async_trait;
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Default)]
    struct Queue {
        sent: Mutex<Vec<String>>,
        refuse: Option<&'static str>,
    }

    #[async_trait]
    impl JobQueue for Queue {
        async fn send_raw(&self, body: String, _: Duration) -> Result<(), QueueError> {
            if self.refuse.is_some_and(|sid| body.contains(sid)) {
                return Err(QueueError("throttled".into()));
            }
            self.sent.lock().unwrap().push(body);
            Ok(())
        }
    }

    fn entry(seq: u32, event: &str, sid: &str, redrives: u32) -> StreamChange {
        StreamChange {
            sequence_number: format!("{seq:021}"),
            event_name: event.into(),
            new_image: serde_dynamo::to_item(serde_json::json!({
                "conversation": WATCH_PARTITION,
                "item": format!("001760033011#{sid}"),
                "sid": sid, "target_conversation": "acme#14155550100",
                "reply_to": "whatsapp:+14155550100", "body": "hi",
                "num_media": 0, "redrives": redrives,
            }))
            .unwrap(),
        }
    }

    #[tokio::test]
    async fn only_a_new_messages_first_entry_queues_its_reply() {
        let queue = Arc::new(Queue::default());
        let mut message = entry(5, "INSERT", "SM5", 0);
        message.new_image.insert(
            "conversation".into(),
            serde_dynamo::AttributeValue::S("acme#1".into()),
        );
        let failed = NewIncomingMessages {
            reply_queue: queue.clone(),
        }
        .handle(vec![
            entry(1, "INSERT", "SM1", 0),
            // The sweep's re-schedule queues its own job.
            entry(2, "INSERT", "SM2", 1),
            entry(3, "MODIFY", "SM3", 0),
            entry(4, "REMOVE", "SM4", 0),
            message,
        ])
        .await;
        assert!(failed.is_empty());
        let sent = queue.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1, "{sent:?}");
        let job: WhatsAppReplyJob = serde_json::from_str(&sent[0]).unwrap();
        assert_eq!(
            (job.message_sid.as_str(), job.conversation.as_str()),
            ("SM1", "acme#14155550100")
        );
    }

    #[tokio::test]
    async fn a_job_not_queued_or_an_unreadable_entry_is_reported_for_the_retry() {
        let queue = Arc::new(Queue {
            refuse: Some("SM2"),
            ..Queue::default()
        });
        let mut broken = entry(3, "INSERT", "SM3", 0);
        broken.new_image.remove("reply_to");
        let failed = NewIncomingMessages {
            reply_queue: queue.clone(),
        }
        .handle(vec![
            entry(1, "INSERT", "SM1", 0),
            entry(2, "INSERT", "SM2", 0),
            broken,
        ])
        .await;
        assert_eq!(failed, vec![format!("{:021}", 2), format!("{:021}", 3)]);
        assert_eq!(queue.sent.lock().unwrap().len(), 1);
    }
}
