//! The dev server's map from a template function (its binary name) to the
//! crate that serves it. Each function's own `from_env` builds it, exactly as
//! its Lambda `main` does.

use shared::api::Route;
use shared::queue::sqs_batch::Worker;
use std::future::Future;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_http::{Body, Request, Response};

use crate::server::HttpHandler;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Consumer = Arc<
    dyn Fn(SqsEvent) -> std::pin::Pin<Box<dyn Future<Output = SqsBatchResponse> + Send>>
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
        "outbound-calls" => app!(outbound_calls::OutboundCalls),
        "conversation-get" => app!(conversation_get::ConversationGet),
        "conversation-transcript" => app!(conversation_transcript::ConversationTranscript),
        "elevenlabs-webhook" => app!(elevenlabs_webhook::ElevenLabsWebhook),
        "health" => {
            let app = Arc::new(health::Health::from_env().await?);
            http(move |_| {
                let app = Arc::clone(&app);
                async move { app.handle().await }
            })
        }
        "stats" => {
            let app = Arc::new(stats::StatsEndpoint::from_env().await?);
            http(move |_| {
                let app = Arc::clone(&app);
                async move { app.handle().await }
            })
        }
        route @ ("assistant-create"
        | "assistant-get"
        | "assistant-update"
        | "assistant-deactivate"
        | "organisation-create"
        | "organisation-get"
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
        other => {
            return Err(format!(
                "template.yaml has a queue consumer {other} the dev server does not know"
            )
            .into())
        }
    })
}
