//! The dev server's map from a template function (its binary name) to the
//! crate that serves it. Each function's own `from_env` builds it, exactly as
//! its Lambda `main` does. Four kinds: HTTP routes ([`http_handler`]), queue
//! consumers ([`queue_consumer`]), DynamoDB stream consumers
//! ([`stream_consumer`]) and scheduled functions ([`scheduled_job`]).

use shared::api::Route;
use shared::queue::sqs_batch::Worker;
use std::future::Future;
use std::sync::Arc;

use aws_lambda_events::event::dynamodb::Event as StreamEvent;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use lambda_http::{Body, Request, Response};

use crate::server::HttpHandler;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Consumer = Arc<
    dyn Fn(SqsEvent) -> std::pin::Pin<Box<dyn Future<Output = SqsBatchResponse> + Send>>
        + Send
        + Sync,
>;

/// A DynamoDB stream consumer: a batch of stream records in, the failed
/// ones (`ReportBatchItemFailures`) out.
pub type StreamConsumer = Arc<
    dyn Fn(StreamEvent) -> std::pin::Pin<Box<dyn Future<Output = DynamoDbEventResponse> + Send>>
        + Send
        + Sync,
>;

/// One run of a scheduled function (an EventBridge `Schedule` event): its
/// result as JSON, or its error as text.
pub type ScheduledJob = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send>>
        + Send
        + Sync,
>;

fn http<F, Fut>(f: F) -> HttpHandler
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    Arc::new(move |request| Box::pin(f(request)))
}

fn consumer<F, Fut>(f: F) -> Consumer
where
    F: Fn(SqsEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = SqsBatchResponse> + Send + 'static,
{
    Arc::new(move |event| Box::pin(f(event)))
}

fn stream<F, Fut>(f: F) -> StreamConsumer
where
    F: Fn(StreamEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = DynamoDbEventResponse> + Send + 'static,
{
    Arc::new(move |event| Box::pin(f(event)))
}

fn job<F, Fut>(f: F) -> ScheduledJob
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<serde_json::Value, String>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

/// An HTTP function whose app is `$ty::from_env()` and `handle(request)`.
macro_rules! app {
    ($ty:path) => {{
        let app = Arc::new(<$ty>::from_env().await?);
        http(move |request| {
            let app = Arc::clone(&app);
            async move { app.handle(request).await }
        })
    }};
}

/// The same for a queue consumer (`handle(event)` on an `Arc`).
macro_rules! worker {
    ($ty:path) => {{
        let worker = Arc::new(<$ty>::from_env().await?);
        consumer(move |event| {
            let worker = Arc::clone(&worker);
            async move { worker.handle(event).await }
        })
    }};
}

/// The same for a stream consumer (`handle(event)` on an `Arc`).
macro_rules! stream_worker {
    ($ty:path) => {{
        let worker = Arc::new(<$ty>::from_env().await?);
        stream(move |event| {
            let worker = Arc::clone(&worker);
            async move { worker.handle(event).await }
        })
    }};
}

/// A scheduled function: `"name" => scheduled!(crate_name::Type)` in
/// [`scheduled_job`], where `Type` has `async fn from_env() -> Result<Self, E>`
/// (`E` into [`Error`]) and `async fn run(&self) -> Result<R, E2>` with
/// `R: Serialize` and `E2: Display`. Built once; each run calls `run`.
macro_rules! scheduled {
    ($ty:path) => {{
        let scheduled = Arc::new(<$ty>::from_env().await?);
        job(move || {
            let scheduled = Arc::clone(&scheduled);
            async move {
                match scheduled.run().await {
                    Ok(output) => serde_json::to_value(output)
                        .map_err(|e| format!("result does not serialize to JSON: {e}")),
                    Err(err) => Err(err.to_string()),
                }
            }
        })
    }};
}

/// The one place that knows which crate serves which binary name.
pub async fn http_handler(binary: &str) -> Result<HttpHandler, Error> {
    Ok(match binary {
        "zapier-webhook" => app!(zapier_webhook::ZapierWebhook),
        "exotel-webhook" => app!(exotel_webhook::ExotelWebhook),
        "livekit-webhook" => app!(livekit_webhook::LiveKitWebhook),
        "call-started" => app!(call_started::CallStarted),
        "call-get" => app!(call_get::CallGet),
        "calls-initiate" => app!(calls_initiate::CallsInitiate),
        "twiml" => app!(twiml::Twiml),
        "twilio-status" => app!(twilio_status::TwilioStatus),
        "twilio-voice" => app!(twilio_voice::TwilioVoice),
        "twilio-routing" => app!(twilio_routing::TwilioRouting),
        "phone-call" => app!(phone_call::PhoneCall),
        "phone-end" => app!(phone_end::PhoneEnd),
        "sessions-list" => app!(sessions_list::SessionsList),
        "session-get" => app!(session_get::SessionGet),
        "calls-list" => app!(calls_list::CallsList),
        "call-timeline" => app!(call_timeline::CallTimelineRoute),
        "room-create" => app!(room_create::RoomCreate),
        "room-join" => app!(room_join::RoomJoin),
        "room-join-link" => app!(room_join_link::RoomJoinLink),
        "room-agent" => app!(room_agent::RoomAgent),
        "room-invites-revoke" => app!(room_invites_revoke::RoomInvitesRevoke),
        "room-recording" => app!(room_recording::RoomRecording),
        "whatsapp-voice" => app!(whatsapp_voice::WhatsAppVoice),
        "whatsapp-call" => app!(whatsapp_call::WhatsAppCall),
        "outbound-calls" => app!(outbound_calls::OutboundCalls),
        "conversation-get" => app!(conversation_get::ConversationGet),
        "conversation-transcript" => app!(conversation_transcript::ConversationTranscript),
        "elevenlabs-webhook" => app!(elevenlabs_webhook::ElevenLabsWebhook),
        "whatsapp-message" => app!(whatsapp_message::WhatsAppMessage),
        "whatsapp-status" => app!(whatsapp_status::WhatsAppStatus),
        "whatsapp-send" => app!(whatsapp_send::WhatsAppSend),
        "whatsapp-conversations" => app!(whatsapp_conversations::WhatsAppConversations),
        "slack-commands" => app!(slack_commands::SlackCommands),
        "discord-interactions" => app!(discord_interactions::DiscordInteractions),
        "teams-messages" => app!(teams_messages::TeamsMessages),
        "openapi" => app!(openapi::OpenApiDocument),
        "health" => {
            let app = Arc::new(health::Health::from_env().await?);
            http(move |_| {
                let app = Arc::clone(&app);
                async move { app.handle().await }
            })
        }
        "organisation-providers" => {
            let admin = Arc::new(
                shared::flows::provider_accounts::ProviderAccountsAdmin::from_env().await?,
            );
            http(move |request| {
                let admin = Arc::clone(&admin);
                async move { admin.handle(request).await }
            })
        }
        "stats" => {
            let app = Arc::new(stats::StatsEndpoint::from_env().await?);
            http(move |request| {
                let app = Arc::clone(&app);
                async move { app.handle(request).await }
            })
        }
        "campaigns" => {
            let api = Arc::new(campaigns::from_env().await?);
            http(move |request| {
                let api = Arc::clone(&api);
                async move { api.handle(request).await }
            })
        }
        "dnc" => {
            let api = Arc::new(dnc::from_env().await?);
            http(move |request| {
                let api = Arc::clone(&api);
                async move { api.handle(request).await }
            })
        }
        "webhook-endpoints" => {
            let api = Arc::new(webhook_endpoints::from_env().await?);
            http(move |request| {
                let api = Arc::clone(&api);
                async move { api.handle(request).await }
            })
        }
        "organisation-webhook-tokens" => {
            let admin = Arc::new(
                shared::flows::admin::webhook_tokens::WebhookTokenAdmin::from_env().await?,
            );
            http(move |request| {
                let admin = Arc::clone(&admin);
                async move { admin.handle(request).await }
            })
        }
        "organisation-chat-workspaces" => {
            let config = Arc::new(
                shared::flows::launchers::workspaces::ChatWorkspacesConfig::from_env().await?,
            );
            http(move |request| {
                let config = Arc::clone(&config);
                async move { config.routes().handle(request).await }
            })
        }
        route @ ("assistant-create"
        | "assistant-get"
        | "assistant-update"
        | "assistant-deactivate"
        | "organisation-create"
        | "organisation-get"
        | "organisation-numbers"
        | "organisation-update") => {
            let config = Arc::new(shared::flows::admin::AdminConfig::from_env().await?);
            let route = route.to_string();
            http(move |request| {
                let config = Arc::clone(&config);
                let route = route.clone();
                async move {
                    let admin = config.admin();
                    match route.as_str() {
                        "assistant-create" => admin.create_assistant(request).await,
                        "assistant-get" => admin.get_assistant(request).await,
                        "assistant-update" => admin.update_assistant(request).await,
                        "assistant-deactivate" => admin.deactivate_assistant(request).await,
                        "organisation-create" => admin.create_organisation(request).await,
                        "organisation-get" => admin.get_organisation(request).await,
                        "organisation-numbers" => admin.numbers(request).await,
                        _ => admin.update_organisation(request).await,
                    }
                }
            })
        }
        other => {
            return Err(format!(
                "template.yaml routes to {other}, which the dev server does not know"
            )
            .into())
        }
    })
}

pub async fn queue_consumer(binary: &str) -> Result<Consumer, Error> {
    Ok(match binary {
        "transcribe-worker" => worker!(transcribe_worker::TranscribeWorker),
        "notify-worker" => worker!(notify_worker::NotifyWorker),
        "monitor-worker" => worker!(monitor_worker::MonitorWorker),
        "provider-events-worker" => worker!(provider_events_worker::ProviderEventsWorker),
        "whatsapp-reply-worker" => worker!(whatsapp_reply_worker::WhatsAppReplyWorker),
        "webhook-worker" => worker!(webhook_worker::WebhookWorker),
        "campaign-dialer" => worker!(campaign_dialer::CampaignDialWorker),
        other => {
            return Err(format!(
                "template.yaml has a queue consumer {other} the dev server does not know"
            )
            .into())
        }
    })
}

/// A function template.yaml feeds from a table's stream (`Type: DynamoDB`):
/// one line per function, `"binary" => stream_worker!(crate_name::Type)`.
pub async fn stream_consumer(binary: &str) -> Result<StreamConsumer, Error> {
    Ok(match binary {
        "calls-stream" => stream_worker!(calls_stream::CallsStream),
        "whatsapp-stream" => stream_worker!(whatsapp_stream::WhatsAppStream),
        other => {
            return Err(format!(
                "template.yaml has a stream consumer {other} the dev server does not know"
            )
            .into())
        }
    })
}

/// A function template.yaml runs on a schedule: one line per function,
/// `"binary" => scheduled!(crate_name::Type)`.
pub async fn scheduled_job(binary: &str) -> Result<ScheduledJob, Error> {
    Ok(match binary {
        "stuck-sweep" => scheduled!(stuck_sweep::StuckSweep),
        "campaign-tick" => {
            let tick = Arc::new(campaign_tick::from_env().await?);
            job(move || {
                let tick = Arc::clone(&tick);
                async move {
                    let report = tick.run().await?;
                    serde_json::to_value(report)
                        .map_err(|e| format!("result does not serialize to JSON: {e}"))
                }
            })
        }
        other => {
            return Err(format!(
                "template.yaml has a scheduled function {other} the dev server does not know"
            )
            .into())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape `scheduled!` expects: a result that serializes...
    struct Sweep {
        released: Vec<&'static str>,
    }

    impl Sweep {
        async fn from_env() -> Result<Self, std::env::VarError> {
            Ok(Sweep {
                released: vec!["r-1", "r-2"],
            })
        }

        async fn run(&self) -> Result<Vec<&'static str>, std::fmt::Error> {
            Ok(self.released.clone())
        }
    }

    /// ...and an error that displays.
    struct Broken;

    impl Broken {
        async fn from_env() -> Result<Self, Error> {
            Ok(Broken)
        }

        async fn run(&self) -> Result<u32, String> {
            Err("store unavailable".into())
        }
    }

    async fn build(binary: &str) -> Result<ScheduledJob, Error> {
        Ok(match binary {
            "sweep" => scheduled!(Sweep),
            "broken" => scheduled!(Broken),
            other => return Err(format!("unknown {other}").into()),
        })
    }

    #[tokio::test]
    async fn scheduled_runs_the_job_each_time_and_reports_json_or_the_error() {
        let sweep = build("sweep").await.unwrap();
        for _ in 0..2 {
            assert_eq!(sweep().await, Ok(serde_json::json!(["r-1", "r-2"])));
        }
        let broken = build("broken").await.unwrap();
        assert_eq!(broken().await, Err("store unavailable".to_string()));
    }

    use aws_lambda_events::event::streams::DynamoDbBatchItemFailure;

    /// The shape `stream_worker!` expects: `from_env` and `handle(event)`.
    struct FailsOdd;

    impl FailsOdd {
        async fn from_env() -> Result<Self, Error> {
            Ok(FailsOdd)
        }

        /// Reports every record with an odd sequence number as failed.
        async fn handle(&self, event: StreamEvent) -> DynamoDbEventResponse {
            let mut response = DynamoDbEventResponse::default();
            for record in event.records {
                let sequence = record.change.sequence_number.unwrap_or_default();
                if sequence.ends_with(['1', '3', '5', '7', '9']) {
                    let mut failure = DynamoDbBatchItemFailure::default();
                    failure.item_identifier = Some(sequence);
                    response.batch_item_failures.push(failure);
                }
            }
            response
        }
    }

    #[tokio::test]
    async fn stream_worker_hands_each_batch_to_handle() {
        let consumer: StreamConsumer = (async { Ok::<_, Error>(stream_worker!(FailsOdd)) })
            .await
            .unwrap();
        let event: StreamEvent = serde_json::from_value(serde_json::json!({"Records": [
            {"eventID": "a", "eventName": "INSERT", "awsRegion": "us-east-1",
             "dynamodb": {"SequenceNumber": "10", "SizeBytes": 1}},
            {"eventID": "b", "eventName": "INSERT", "awsRegion": "us-east-1",
             "dynamodb": {"SequenceNumber": "11", "SizeBytes": 1}}
        ]}))
        .unwrap();
        let failed: Vec<Option<String>> = consumer(event)
            .await
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        assert_eq!(failed, [Some("11".to_string())]);
    }

    #[tokio::test]
    async fn an_unknown_stream_consumer_is_an_error_naming_it() {
        let err = stream_consumer("audit-stream").await.err().unwrap();
        assert!(
            err.to_string().contains("stream consumer audit-stream"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_unknown_scheduled_function_is_an_error_naming_it() {
        let err = scheduled_job("nightly-report").await.err().unwrap();
        assert!(
            err.to_string()
                .contains("scheduled function nightly-report"),
            "{err}"
        );
    }
}
