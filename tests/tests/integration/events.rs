//! The `events/` samples are real: each parses as the event its function
//! receives, and the webhook sample runs through its handler.

use aws_lambda_events::event::sqs::SqsEvent;
use devstack::template::Template;
use shared::api::Route;
use shared::base::config::Secret;
use shared::providers::recording::HostAllowList;
use shared::queue::jobs::{NotificationJob, TranscriptionJob};

use crate::support::*;

fn read(name: &str) -> String {
    std::fs::read_to_string(devstack::repo_root().join("events").join(name)).unwrap()
}

#[test]
fn every_function_has_a_matching_sample_event() {
    let template = Template::load(&devstack::repo_root().join("template.yaml")).unwrap();
    for function in &template.functions {
        let text = read(&format!("{}.json", function.binary));
        if !function.sqs.is_empty() {
            let event: SqsEvent = serde_json::from_str(&text).unwrap();
            let body = event.records[0].body.as_deref().unwrap();
            match function.binary.as_str() {
                "transcribe-worker" => {
                    drop(serde_json::from_str::<TranscriptionJob>(body).unwrap())
                }
                "notify-worker" => drop(serde_json::from_str::<NotificationJob>(body).unwrap()),
                "monitor-worker" => {
                    drop(serde_json::from_str::<shared::queue::jobs::MonitorJob>(body).unwrap())
                }
                "provider-events-worker" => {
                    drop(serde_json::from_str::<shared::queue::jobs::ProviderEvent>(body).unwrap())
                }
                "whatsapp-reply-worker" => drop(
                    serde_json::from_str::<shared::queue::jobs::WhatsAppReplyJob>(body).unwrap(),
                ),
                "webhook-worker" => {
                    drop(serde_json::from_str::<shared::flows::webhooks::WebhookJob>(body).unwrap())
                }
                "campaign-dialer" => drop(
                    serde_json::from_str::<shared::queue::jobs::CampaignDialJob>(body).unwrap(),
                ),
                other => panic!("no job type known for {other}"),
            }
        } else if !function.streams.is_empty() {
            // A stream consumer: DynamoDB's stream event, whose records pass
            // the function's own filter and carry what it reads.
            let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
            let event: aws_lambda_events::event::dynamodb::Event =
                serde_json::from_value(raw.clone()).unwrap();
            assert!(!event.records.is_empty(), "{}", function.binary);
            for (record, raw_record) in event.records.iter().zip(raw["Records"].as_array().unwrap())
            {
                let filters = &function.streams[0].filters;
                assert!(
                    devstack::event_filter::matches_any(filters, raw_record),
                    "{}: a sample record its own filter drops",
                    function.binary
                );
                match function.binary.as_str() {
                    "calls-stream" => {
                        let item: std::collections::HashMap<_, _> =
                            record.change.new_image.clone().into();
                        if let Some(start) = shared::store::call_starts::start_of(&item).unwrap() {
                            assert_eq!(start.start.room_name, "support-room-42");
                        } else {
                            let image: shared::store::calls::CallRecord =
                                serde_dynamo::from_item(record.change.new_image.clone()).unwrap();
                            assert_eq!(image.call_id, "CA1234567890abcdef");
                        }
                    }
                    "whatsapp-stream" => {
                        let item: std::collections::HashMap<_, _> =
                            record.change.new_image.clone().into();
                        let watch = shared::store::whatsapp::reply_watch_of(&item)
                            .expect("a reply's watch entry");
                        assert_eq!(watch.redrives, 0);
                    }
                    other => panic!("no record type known for {other}"),
                }
            }
        } else if function.routes.is_empty() {
            // A scheduled function: EventBridge's Scheduled Event.
            let event: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                event["detail-type"], "Scheduled Event",
                "{}",
                function.binary
            );
        } else {
            let request = lambda_http::request::from_str(&text).unwrap();
            let matched = function.routes.iter().any(|route| {
                request.method().as_str() == route.method
                    && devstack::server::match_path(&route.path, request.uri().path()).is_some()
            });
            assert!(
                matched,
                "{}: {} {} matches none of its routes",
                function.binary,
                request.method(),
                request.uri().path()
            );
        }
    }
}

#[tokio::test]
async fn the_zapier_sample_event_is_accepted() {
    let stack = Stack::start().await;
    let mut zapier = stack.zapier();
    // The sample carries the documented dev token and the dev fake's recording host.
    zapier.access.deployment_token = Secret::new("dev-webhook-token-change-me");
    zapier.recording_hosts = HostAllowList::parse("127.0.0.1:3100").with_loopback(true);
    let request = lambda_http::request::from_str(&read("zapier-webhook.json")).unwrap();
    let response = zapier.handle(request).await;
    assert_eq!(response.status(), 202, "{:?}", json_body(&response));
    assert_eq!(json_body(&response)["call_id"], "CA1234567890abcdef");
}

#[tokio::test]
async fn the_exotel_sample_event_is_accepted() {
    let stack = Stack::start().await;
    let mut exotel = stack.exotel_webhook();
    exotel.access.deployment_token = Secret::new("dev-webhook-token-change-me");
    exotel.recording_hosts = HostAllowList::parse("127.0.0.1:3100").with_loopback(true);
    let request = lambda_http::request::from_str(&read("exotel-webhook.json")).unwrap();
    let response = exotel.handle(request).await;
    assert_eq!(response.status(), 202, "{:?}", json_body(&response));
}

#[tokio::test]
async fn the_calls_stream_sample_event_queues_its_transcription_and_notification() {
    let stack = Stack::start().await;
    let consumer = stack.calls_stream();
    let event = serde_json::from_str(&read("calls-stream.json")).unwrap();
    let response = consumer.handle(event).await;
    assert!(response.batch_item_failures.is_empty());
    let jobs = stack.peek_all("TranscriptionQueue").await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job: TranscriptionJob = serde_json::from_str(&jobs[0]).unwrap();
    assert_eq!(job.call_id, "CA1234567890abcdef");
    // The sample's call start: its notification.
    let notifications = stack.peek_all("NotificationQueue").await;
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    let job: shared::queue::jobs::NotificationJob =
        serde_json::from_str(&notifications[0]).unwrap();
    assert_eq!(job.notification_id, "start#call-start#support-room-42");
}

#[tokio::test]
async fn the_whatsapp_stream_sample_event_queues_its_reply() {
    let stack = Stack::start().await;
    let consumer = whatsapp_stream::WhatsAppStream {
        dispatcher: shared::flows::whatsapp::NewIncomingMessages {
            reply_queue: stack.queue("WhatsAppReplyQueue"),
        },
    };
    let event = serde_json::from_str(&read("whatsapp-stream.json")).unwrap();
    let response = consumer.handle(event).await;
    assert!(response.batch_item_failures.is_empty());
    let jobs = stack.peek_all("WhatsAppReplyQueue").await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job: shared::queue::jobs::WhatsAppReplyJob = serde_json::from_str(&jobs[0]).unwrap();
    assert_eq!(job.message_sid, "SM0123456789abcdef0123456789abcdef");
    assert_eq!(job.reply_from.as_deref(), Some("whatsapp:+14155238886"));
}

#[tokio::test]
async fn the_livekit_sample_event_is_signed_with_the_dev_secret() {
    let stack = Stack::start().await;
    let webhook = livekit_webhook::LiveKitWebhook {
        api_key: devstack::DEV_LIVEKIT_API_KEY.into(),
        api_secret: Secret::new(devstack::DEV_LIVEKIT_API_SECRET),
        agent_identity_prefix: "agent-".into(),
        intake: stack.call_start_intake(),
    };
    let request = lambda_http::request::from_str(&read("livekit-webhook.json")).unwrap();
    let response = webhook.handle(request).await;
    assert_eq!(response.status(), 200, "{:?}", json_body(&response));
    assert_eq!(json_body(&response)["queued"], true);
}

#[tokio::test]
async fn the_twiml_sample_event_is_signed_with_the_dev_token() {
    let stack = Stack::start().await;
    let twiml = twiml::Twiml {
        twilio_auth: shared::providers::twilio::TwilioWebhookAuth::single(
            Secret::new("dev-twilio-auth-token"),
            "http://127.0.0.1:3000".into(),
        ),
        calls: std::sync::Arc::new(stack.outbound_calls()),
        directory: std::sync::Arc::new(stack.directory()),
    };
    let request = lambda_http::request::from_str(&read("twiml.json")).unwrap();
    let response = twiml.handle(request).await;
    // Signature accepted; the sample call is not in this test's table, so Twilio is told to hang up.
    assert_eq!(response.status(), 200);
    let xml = String::from_utf8(response.body().as_ref().to_vec()).unwrap();
    assert!(xml.contains("<Hangup/>"), "{xml}");
}

#[tokio::test]
async fn the_whatsapp_sample_events_are_signed_with_the_dev_token() {
    let auth = shared::providers::twilio::TwilioWebhookAuth::single(
        Secret::new("dev-twilio-auth-token"),
        "http://127.0.0.1:3000".into(),
    );
    for name in ["whatsapp-message.json", "whatsapp-status.json"] {
        let request = lambda_http::request::from_str(&read(name)).unwrap();
        let params = auth
            .verify(&request)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            shared::providers::twilio::field(&params, "MessageSid").is_some(),
            "{name}"
        );
    }
    let request = lambda_http::request::from_str(&read("whatsapp-message.json")).unwrap();
    let inbound =
        shared::flows::whatsapp::Inbound::from_form(&auth.verify(&request).await.unwrap()).unwrap();
    assert_eq!(inbound.wa_id, "14155550100");
}
