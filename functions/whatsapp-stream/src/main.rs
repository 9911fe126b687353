use std::sync::Arc;

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{service_fn, LambdaEvent};
use whatsapp_stream::WhatsAppStream;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::base::telemetry::init();
    shared::base::metrics::count(shared::base::metrics::Metric::ColdStart);
    let app = Arc::new(WhatsAppStream::from_env().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| {
        let app = Arc::clone(&app);
        async move { Ok::<_, lambda_runtime::Error>(app.handle(event.payload).await) }
    }))
    .await
}
