//! JSON logs for CloudWatch. Lambda's runtime adds the request id span; the
//! handlers add the call id.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Call first in every `main`. `RUST_LOG` sets the level (default `info`):
/// a level, optionally per target (`warn,shared=debug`). Span and field
/// directives are not supported: `EnvFilter`, which parses them, brings a
/// regex engine into every binary.
pub fn init() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .and_then(|value| value.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_target(false)
                .without_time(), // CloudWatch stamps every line already
        )
        .with(filter)
        .try_init();
}
