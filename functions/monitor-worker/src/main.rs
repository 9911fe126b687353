use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use monitor_worker::MonitorWorker;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::base::telemetry::init();
    let worker = Arc::new(MonitorWorker::from_env().await?);
    let worker = &worker;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(worker.handle(event.payload).await)
    }))
    .await
}
