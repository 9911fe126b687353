//! `make dev` must be able to serve every function template.yaml declares.
//! Its own test binary: it sets process-wide environment variables.

use devstack::registry::{http_handler, queue_consumer, scheduled_job, stream_consumer};
use devstack::template::{EnvValue, Template};

/// Every function in template.yaml must be servable by `make dev`: build
/// each one from an environment shaped like the template's.
#[tokio::test]
async fn every_template_function_is_registered() {
    let template = Template::load(&devstack::repo_root().join("template.yaml")).unwrap();
    for function in &template.functions {
        for (declared, value) in &function.env {
            // A credential's secret ARN in AWS; `make dev` gives the value itself.
            let name = declared
                .strip_suffix(shared::base::secrets::ARN_SUFFIX)
                .unwrap_or(declared);
            let value = match value {
                EnvValue::Literal(v) => v.clone(),
                // Resource names, parameters and conditions: any well-formed value.
                _ if name.ends_with("_URL") => "http://127.0.0.1:9".to_string(),
                _ if name.ends_with("_SECONDS")
                    || name.ends_with("_MINUTE")
                    || name.ends_with("_BYTES") =>
                {
                    "10".to_string()
                }
                _ if name.ends_with("_ENABLED") => "false".to_string(),
                _ if name.ends_with("_DAYS") => "30".to_string(),
                _ if name == "EXOTEL_TIMEZONE_OFFSET" => "+05:30".to_string(),
                _ if name == "NOTIFICATION_ROUTES" => "[]".to_string(),
                _ if name == "TWILIO_CONNECT_MODE" => "stream".to_string(),
                _ if name == "CALL_MENU" => r#"{"prompt":"p","options":{}}"#.to_string(),
                // Checked at cold start: an Ed25519 public key, a base64 token.
                _ if name == "DISCORD_PUBLIC_KEY" => devstack::launchers::dev_discord_public_key(),
                _ if name == "TEAMS_WEBHOOK_SECRET" => {
                    devstack::launchers::DEV_TEAMS_WEBHOOK_SECRET.to_string()
                }
                _ => format!("registry-test-{}", name.to_lowercase()),
            };
            std::env::set_var(name, value);
        }
    }
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    for function in &template.functions {
        let scheduled = template
            .schedules
            .iter()
            .any(|s| s.function == function.binary);
        // A function with no event the dev server serves would never run locally.
        assert!(
            !function.routes.is_empty()
                || !function.sqs.is_empty()
                || !function.streams.is_empty()
                || scheduled,
            "{}: no HttpApi, SQS, DynamoDB or Schedule event",
            function.binary
        );
        // Each kind of event its own registry: a function with two is in both.
        if !function.routes.is_empty() {
            let built = http_handler(&function.binary).await.map(drop);
            assert!(built.is_ok(), "{}: {:?}", function.binary, built.err());
        }
        if !function.sqs.is_empty() {
            let built = queue_consumer(&function.binary).await.map(drop);
            assert!(built.is_ok(), "{}: {:?}", function.binary, built.err());
        }
        if !function.streams.is_empty() {
            let built = stream_consumer(&function.binary).await.map(drop);
            assert!(
                built.is_ok(),
                "{} reads a stream in template.yaml: add it to stream_consumer in \
                 tools/devstack/src/registry.rs ({:?})",
                function.binary,
                built.err()
            );
        }
    }
    // Disabled schedules too: enabling one must not be what breaks `make dev`.
    for schedule in &template.schedules {
        let built = scheduled_job(&schedule.function).await.map(drop);
        assert!(
            built.is_ok(),
            "{} is scheduled in template.yaml: add it to scheduled_job in \
             tools/devstack/src/registry.rs ({:?})",
            schedule.function,
            built.err()
        );
    }
}
