//! Assembly once per cold start: the AWS clients, and one constructor per
//! store, queue and provider client, each reading its own variables. A
//! function's `from_env` asks for what it uses and adds only what is
//! particular to its route; its `main.rs` hands the handler to `serve_http`
//! or `serve_sqs`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::LambdaEvent;

use crate::api::access::KeyedAccess;
use crate::api::Route;
use crate::base::config::{self, ConfigError};
use crate::flows::call_start::{CallStartIntake, StartedCalls};
use crate::flows::conversations::ConversationLookup;
use crate::flows::outbound::{provider_http, Placement, Providers};
use crate::flows::provider_events::ProviderEventIntake;
use crate::providers::elevenlabs::ElevenLabsClient;
#[cfg(feature = "secrets")]
use crate::providers::org_accounts::OrgAccountSettings;
use crate::providers::org_accounts::OrgAccounts;
use crate::providers::twilio::TwilioClient;
use crate::queue::jobs::{JobQueue, SqsJobQueue};
use crate::queue::sqs_batch::Worker;
use crate::store::api_keys::{ApiKeyStore, DynamoApiKeyStore};
use crate::store::call_log::{CallLogStore, DynamoCallLogStore};
use crate::store::call_starts::{CallStartStore, DynamoCallStartStore};
use crate::store::calls::{CallStore, DynamoCallStore};
use crate::store::dedup::{DedupStore, DynamoDedupStore};
use crate::store::directory::{DirectoryStore, DynamoDirectoryStore};
use crate::store::event_bodies::{DynamoEventBodyStore, EventBodyStore};
#[cfg(feature = "secrets")]
use crate::store::org_secrets::{OrgSecretStore, SecretsManagerOrgSecrets};
use crate::store::outbound_calls::{DynamoOutboundCallStore, OutboundCallStore};
use crate::store::sessions::{DynamoSessionStore, SessionStore};
use crate::store::stats::{DynamoStatsStore, StatsStore};
use crate::store::tenancy::{DynamoTenancyStore, TenancyStore};
use crate::store::whatsapp::{DynamoWhatsAppStore, WhatsAppStore};

// Sessions hold a LiveKit client: only functions built with `livekit`.
#[cfg(feature = "livekit")]
mod sessions;
#[cfg(feature = "livekit")]
pub use sessions::{join_tokens, livekit, room_access, LiveKitRoomProbe};

/// How long a dedup claim holds when the invocation's deadline is unknown.
const DEFAULT_DEDUP_LEASE_SECS: u64 = 30;

/// The AWS clients of one cold start, and the stores and queues built on them.
pub struct Wiring {
    sdk: aws_config::SdkConfig,
    dynamo: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
}

impl Wiring {
    /// Loads the SDK configuration (endpoints from `AWS_ENDPOINT_URL[_<SERVICE>]`).
    pub async fn load() -> Self {
        let sdk = crate::base::aws::sdk_config().await;
        Self {
            dynamo: aws_sdk_dynamodb::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            sdk,
        }
    }

    pub fn sdk(&self) -> &aws_config::SdkConfig {
        &self.sdk
    }

    pub fn dynamo(&self) -> &aws_sdk_dynamodb::Client {
        &self.dynamo
    }

    /// `IDEMPOTENCY_TABLE`, keeping records `DEDUP_RETENTION_SECONDS` (default 7 days).
    pub fn dedup(&self) -> Result<Arc<dyn DedupStore>, ConfigError> {
        Ok(Arc::new(DynamoDedupStore::new(
            self.dynamo.clone(),
            config::required("IDEMPOTENCY_TABLE")?,
            Duration::from_secs(config::parsed_or("DEDUP_RETENTION_SECONDS", 7 * 24 * 3600)?),
        )))
    }

    /// `IDEMPOTENCY_TABLE` for the notify-worker's delivery records, which
    /// outlive any redelivery of their job (30 days).
    pub fn deliveries(&self) -> Result<Arc<dyn DedupStore>, ConfigError> {
        Ok(Arc::new(DynamoDedupStore::new(
            self.dynamo.clone(),
            config::required("IDEMPOTENCY_TABLE")?,
            Duration::from_secs(30 * 24 * 3600),
        )))
    }

    /// `CALLS_TABLE`: recording-pipeline call records.
    pub fn calls(&self) -> Result<Arc<dyn CallStore>, ConfigError> {
        Ok(Arc::new(DynamoCallStore::new(
            self.dynamo.clone(),
            config::required("CALLS_TABLE")?,
        )))
    }

    /// `CALLS_TABLE` (+ `ORGANISATIONS_TABLE` for usage): outbound call records.
    pub fn outbound_calls(&self) -> Result<Arc<dyn OutboundCallStore>, ConfigError> {
        Ok(Arc::new(DynamoOutboundCallStore {
            client: self.dynamo.clone(),
            calls_table: config::required("CALLS_TABLE")?,
            organisations_table: config::optional("ORGANISATIONS_TABLE").unwrap_or_default(),
        }))
    }

    /// `CALLS_TABLE`: voice-agent sessions.
    pub fn sessions(&self) -> Result<Arc<dyn SessionStore>, ConfigError> {
        Ok(Arc::new(DynamoSessionStore::new(
            self.dynamo.clone(),
            config::required("CALLS_TABLE")?,
        )))
    }

    /// `CALLS_TABLE`'s `CallLog` index: every organisation's calls.
    pub fn call_log(&self) -> Result<Arc<dyn CallLogStore>, ConfigError> {
        Ok(Arc::new(DynamoCallLogStore {
            client: self.dynamo.clone(),
            table: config::required("CALLS_TABLE")?,
        }))
    }

    /// `STATS_TABLE`.
    pub fn stats(&self) -> Result<Arc<dyn StatsStore>, ConfigError> {
        Ok(Arc::new(DynamoStatsStore::new(
            self.dynamo.clone(),
            config::required("STATS_TABLE")?,
        )))
    }

    /// `ASSISTANTS_TABLE`, `ORGANISATIONS_TABLE`, `STATS_TABLE`.
    pub fn directory(&self) -> Result<Arc<dyn DirectoryStore>, ConfigError> {
        Ok(Arc::new(directory_store(self.dynamo.clone())?))
    }

    /// `TENANCY_TABLE`: which organisation owns a number, account or workspace.
    pub fn tenancy(&self) -> Result<Arc<dyn TenancyStore>, ConfigError> {
        Ok(Arc::new(DynamoTenancyStore::new(
            self.dynamo.clone(),
            config::required("TENANCY_TABLE")?,
        )))
    }

    /// `API_KEYS_TABLE`.
    pub fn api_keys(&self) -> Result<Arc<dyn ApiKeyStore>, ConfigError> {
        Ok(Arc::new(DynamoApiKeyStore::new(
            self.dynamo.clone(),
            config::required("API_KEYS_TABLE")?,
        )))
    }

    /// API keys plus the per-key request limit (`CALLS_RATE_LIMIT_PER_MINUTE`).
    pub fn keyed_access(&self) -> Result<KeyedAccess, ConfigError> {
        Ok(KeyedAccess {
            api_keys: Arc::new(DynamoApiKeyStore::new(
                self.dynamo.clone(),
                config::required("API_KEYS_TABLE")?,
            )),
            rate_limiter: Arc::new(crate::store::rate_limits::DynamoRateLimiter {
                client: self.dynamo.clone(),
                table: config::required("IDEMPOTENCY_TABLE")?,
                window_secs: 60,
            }),
            per_window: config::parsed_or("CALLS_RATE_LIMIT_PER_MINUTE", 30)?,
        })
    }

    /// `WEBHOOKS_TABLE`: endpoints, events, deliveries and attempts.
    pub fn webhooks(&self) -> Result<Arc<dyn crate::store::webhooks::WebhookStore>, ConfigError> {
        Ok(Arc::new(crate::store::webhooks::DynamoWebhookStore::new(
            self.dynamo.clone(),
            config::required("WEBHOOKS_TABLE")?,
        )))
    }

    /// `WEBHOOK_QUEUE_URL`, where producers publish webhook events; `None`
    /// where webhooks are not wired (a function run without it).
    pub fn webhook_queue(&self) -> Option<Arc<dyn JobQueue>> {
        config::optional("WEBHOOK_QUEUE_URL")
            .map(|url| Arc::new(SqsJobQueue::new(self.sqs.clone(), url)) as Arc<dyn JobQueue>)
    }

    /// Replay and recovery: the webhook store and both webhook queues.
    pub fn webhook_replayer(
        &self,
        clock: Arc<dyn crate::base::time::Clock>,
    ) -> Result<crate::flows::webhooks::dispatch::Replayer, ConfigError> {
        Ok(crate::flows::webhooks::dispatch::Replayer {
            store: self.webhooks()?,
            main_queue: self.queue("WEBHOOK_QUEUE_URL")?,
            slow_queue: self.queue("WEBHOOK_SLOW_QUEUE_URL")?,
            clock,
        })
    }

    /// The queue whose URL is in `url_variable`.
    pub fn queue(&self, url_variable: &'static str) -> Result<Arc<dyn JobQueue>, ConfigError> {
        Ok(Arc::new(SqsJobQueue::new(
            self.sqs.clone(),
            config::required(url_variable)?,
        )))
    }

    /// What a call-start report needs: the start records (`CALLS_TABLE`,
    /// kept `DEDUP_RETENTION_SECONDS`) and the sessions.
    pub fn call_start_intake(&self) -> Result<CallStartIntake, ConfigError> {
        Ok(CallStartIntake {
            starts: self.call_starts()?,
            sessions: self.sessions()?,
        })
    }

    /// Call-start records (`CALLS_TABLE`), kept `DEDUP_RETENTION_SECONDS`.
    pub fn call_starts(&self) -> Result<Arc<dyn CallStartStore>, ConfigError> {
        Ok(Arc::new(DynamoCallStartStore {
            client: self.dynamo.clone(),
            table: config::required("CALLS_TABLE")?,
            retention: Duration::from_secs(config::parsed_or(
                "DEDUP_RETENTION_SECONDS",
                7 * 24 * 3600,
            )?),
        }))
    }

    /// What carrying out stored call starts needs (the calls stream, the sweep).
    pub fn started_calls(&self) -> Result<StartedCalls, ConfigError> {
        Ok(StartedCalls {
            sessions: self.sessions()?,
            starts: self.call_starts()?,
        })
    }

    /// What placing outbound calls needs: access, directory, call records,
    /// providers (with the organisations' own accounts), the number registry
    /// and `INBOUND_ORG_ID`.
    pub fn placement(&self) -> Result<Placement, ConfigError> {
        let mut providers = providers()?;
        providers.org_accounts = self.org_accounts()?;
        Ok(Placement {
            access: self.keyed_access()?,
            directory: self.directory()?,
            calls: self.outbound_calls()?,
            providers,
            tenancy: self.tenancy()?,
            default_org: config::optional("INBOUND_ORG_ID"),
            dnc: self.dnc()?,
        })
    }

    /// Outbound calling campaigns and their recipients (`CAMPAIGNS_TABLE`),
    /// with organisations' campaign slots (`ORGANISATIONS_TABLE`).
    pub fn campaigns(
        &self,
    ) -> Result<Arc<dyn crate::store::campaigns::CampaignStore>, ConfigError> {
        Ok(Arc::new(crate::store::campaigns::DynamoCampaignStore {
            client: self.dynamo.clone(),
            table: config::required("CAMPAIGNS_TABLE")?,
            organisations_table: config::required("ORGANISATIONS_TABLE")?,
        }))
    }

    /// The organisations' do-not-call lists (`TENANCY_TABLE`).
    pub fn dnc(&self) -> Result<Arc<dyn crate::store::dnc::DoNotCallStore>, ConfigError> {
        Ok(Arc::new(crate::store::dnc::DynamoDncStore {
            client: self.dynamo.clone(),
            table: config::required("TENANCY_TABLE")?,
        }))
    }

    /// Organisations' own provider accounts (`ORG_SECRETS_PREFIX`, cached
    /// `ORG_SECRETS_TTL_SECONDS`, at most `ORG_SECRETS_CACHE_SIZE`); `None`
    /// without a prefix: every organisation uses the deployment's accounts.
    #[cfg(feature = "secrets")]
    pub fn org_accounts(&self) -> Result<Option<Arc<OrgAccounts>>, ConfigError> {
        let Some(store) = self.org_secrets()? else {
            return Ok(None);
        };
        let http = provider_http().map_err(|err| ConfigError::Invalid {
            name: "provider HTTP client",
            reason: err.to_string(),
        })?;
        Ok(Some(Arc::new(OrgAccounts::new(
            store,
            OrgAccountSettings {
                ttl: Duration::from_secs(config::parsed_or("ORG_SECRETS_TTL_SECONDS", 60)?),
                capacity: config::parsed_or("ORG_SECRETS_CACHE_SIZE", 1000)?,
                http,
                twilio_base_url: config::base_url_or(
                    "TWILIO_API_BASE_URL",
                    "https://api.twilio.com",
                )?,
                elevenlabs_base_url: config::base_url_or(
                    "ELEVENLABS_BASE_URL",
                    "https://api.elevenlabs.io",
                )?,
            },
        ))))
    }

    /// Without Secrets Manager support no organisation has its own account;
    /// a prefix set anyway is a configuration error, not a silent fallback.
    #[cfg(not(feature = "secrets"))]
    pub fn org_accounts(&self) -> Result<Option<Arc<OrgAccounts>>, ConfigError> {
        match config::optional("ORG_SECRETS_PREFIX") {
            None => Ok(None),
            Some(_) => Err(ConfigError::Invalid {
                name: "ORG_SECRETS_PREFIX",
                reason: "this function was built without Secrets Manager support".into(),
            }),
        }
    }

    /// The deployment's Twilio account (required) with the organisations' own.
    pub fn twilio_accounts(
        &self,
    ) -> Result<crate::providers::org_accounts::TwilioAccounts, ConfigError> {
        Ok(crate::providers::org_accounts::TwilioAccounts {
            deployment: twilio()?,
            orgs: self.org_accounts()?,
        })
    }

    /// What checks Twilio's callbacks: the deployment's account
    /// (`TWILIO_AUTH_TOKEN`, `TWILIO_ACCOUNT_SID`) and, with
    /// `ORG_SECRETS_PREFIX`, every organisation's own account (owner from
    /// `TENANCY_TABLE`, token from its secret).
    pub fn twilio_webhook_auth(
        &self,
    ) -> Result<crate::providers::twilio::TwilioWebhookAuth, ConfigError> {
        let mut auth = crate::providers::twilio::TwilioWebhookAuth::from_env()?;
        if let Some(orgs) = self.org_accounts()? {
            auth.accounts = Some(Arc::new(crate::providers::org_accounts::OrgTwilioTokens {
                tenancy: self.tenancy()?,
                orgs,
            }));
        }
        Ok(auth)
    }

    /// The organisations' secrets under `ORG_SECRETS_PREFIX`, if set.
    #[cfg(feature = "secrets")]
    pub fn org_secrets(&self) -> Result<Option<Arc<dyn OrgSecretStore>>, ConfigError> {
        let Some(prefix) = config::optional("ORG_SECRETS_PREFIX") else {
            return Ok(None);
        };
        let client = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(&self.sdk)
                .timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .operation_attempt_timeout(Duration::from_secs(3))
                        .build(),
                )
                .build(),
        );
        Ok(Some(Arc::new(SecretsManagerOrgSecrets { client, prefix })))
    }

    /// What the conversation read routes need: API keys, call records, ElevenLabs.
    pub fn conversation_lookup(&self) -> Result<ConversationLookup, ConfigError> {
        Ok(ConversationLookup {
            api_keys: self.api_keys()?,
            calls: self.outbound_calls()?,
            elevenlabs: elevenlabs()?,
            org_accounts: self.org_accounts()?,
        })
    }

    /// `CALLS_TABLE`: webhook bodies too large for a queue message.
    pub fn event_bodies(&self) -> Result<Arc<dyn EventBodyStore>, ConfigError> {
        Ok(Arc::new(DynamoEventBodyStore::new(
            self.dynamo.clone(),
            config::required("CALLS_TABLE")?,
        )))
    }

    /// What a never-retrying provider's webhook needs to make its event
    /// durable: the body store and `PROVIDER_EVENTS_QUEUE_URL`.
    pub fn provider_event_intake(&self) -> Result<ProviderEventIntake, ConfigError> {
        Ok(ProviderEventIntake {
            bodies: self.event_bodies()?,
            queue: self.queue("PROVIDER_EVENTS_QUEUE_URL")?,
        })
    }

    /// `WHATSAPP_TABLE` (`WHATSAPP_RETENTION_DAYS`): WhatsApp conversations.
    pub fn whatsapp(&self) -> Result<Arc<dyn WhatsAppStore>, ConfigError> {
        let days: u64 = config::parsed_or("WHATSAPP_RETENTION_DAYS", 30)?;
        Ok(Arc::new(DynamoWhatsAppStore {
            client: self.dynamo.clone(),
            table: config::required("WHATSAPP_TABLE")?,
            retention: Duration::from_secs(days.max(1) * 86_400),
        }))
    }

    /// `WHATSAPP_REPLY_QUEUE_URL`.
    pub fn whatsapp_reply_queue(&self) -> Result<Arc<dyn JobQueue>, ConfigError> {
        self.queue("WHATSAPP_REPLY_QUEUE_URL")
    }

    /// `NOTIFICATION_QUEUE_URL`.
    pub fn notification_queue(&self) -> Result<Arc<dyn JobQueue>, ConfigError> {
        self.queue("NOTIFICATION_QUEUE_URL")
    }
}

/// `TWILIO_ACCOUNT_SID` + `TWILIO_AUTH_TOKEN` (+ `TWILIO_API_BASE_URL`): required here.
pub fn twilio() -> Result<TwilioClient, ConfigError> {
    providers()?.twilio.ok_or(ConfigError::Unconfigured {
        what: "Twilio account",
        set: "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
    })
}

/// `TWILIO_WHATSAPP_NUMBER` as Twilio's `whatsapp:+E164` sender.
pub fn whatsapp_sender_address() -> Result<String, ConfigError> {
    Ok(crate::providers::twilio::whatsapp_address(
        &config::required("TWILIO_WHATSAPP_NUMBER")?,
    ))
}

/// `{base}/whatsapp/status`, when the public URL is known
/// (`PUBLIC_BASE_URL`, else the domain of the request being served).
pub fn whatsapp_status_callback() -> Option<String> {
    crate::api::public_url::PublicBaseUrl::from_env()
        .current()
        .map(|base| format!("{base}/whatsapp/status"))
}

/// The agent's LLM: `AGENT_LLM_BASE_URL`, `AGENT_LLM_API_KEY`, `AGENT_LLM_MODEL`.
pub fn chat_client() -> Result<crate::providers::llm::ChatClient, ConfigError> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|err| ConfigError::Invalid {
            name: "LLM HTTP client",
            reason: err.to_string(),
        })?;
    crate::providers::llm::ChatClient::from_env(http)
}

/// `DEDUP_LEASE_SECONDS`: how long a dedup claim holds when the invocation's
/// deadline is unknown.
pub fn dedup_lease() -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(config::parsed_or(
        "DEDUP_LEASE_SECONDS",
        DEFAULT_DEDUP_LEASE_SECS,
    )?))
}

/// The telephony providers this deployment has credentials for.
pub fn providers() -> Result<Providers, ConfigError> {
    let http = provider_http().map_err(|err| ConfigError::Invalid {
        name: "provider HTTP client",
        reason: err.to_string(),
    })?;
    Providers::from_env(http)
}

/// The ElevenLabs client, when `ELEVENLABS_API_KEY` is set.
pub fn elevenlabs() -> Result<Option<ElevenLabsClient>, ConfigError> {
    Ok(providers()?.elevenlabs)
}

/// Runs a `Route` as an HTTP function.
pub async fn serve_route<R: Route>(route: &R) -> Result<(), lambda_http::Error> {
    serve_http(|request| route.handle(request)).await
}

/// Runs an HTTP function: every API Gateway request goes to `handler`.
pub async fn serve_http<F, Fut>(handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(lambda_http::Request) -> Fut,
    Fut: Future<Output = lambda_http::Response<lambda_http::Body>> + Send,
{
    crate::base::metrics::count(crate::base::metrics::Metric::ColdStart);
    lambda_http::run(lambda_http::service_fn(
        move |request: lambda_http::Request| {
            let origin = crate::api::public_url::origin_of(&request);
            let response = handler(request);
            async move {
                let response = crate::api::public_url::with_origin(origin, response).await;
                Ok::<_, lambda_http::Error>(response)
            }
        },
    ))
    .await
}

/// Runs a `Worker` as an SQS-triggered function; each batch is answered
/// before the invocation's deadline.
pub async fn serve_worker<W: Worker>(worker: Arc<W>) -> Result<(), lambda_runtime::Error> {
    crate::base::metrics::count(crate::base::metrics::Metric::ColdStart);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<SqsEvent>| {
            let deadline =
                crate::queue::sqs_batch::deadline_from_epoch_millis(event.context.deadline);
            let worker = Arc::clone(&worker);
            async move {
                Ok::<_, lambda_runtime::Error>(worker.handle_until(event.payload, deadline).await)
            }
        },
    ))
    .await
}

/// Runs a scheduled function (EventBridge): each invocation runs `job`; its
/// report is the invocation's result, its error fails the invocation.
pub async fn serve_scheduled<F, Fut, R, E>(job: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<R, E>> + Send,
    R: serde::Serialize,
    E: std::fmt::Display,
{
    crate::base::metrics::count(crate::base::metrics::Metric::ColdStart);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |_: LambdaEvent<serde_json::Value>| {
            let run = job();
            async move {
                run.await
                    .map_err(|err| lambda_runtime::Error::from(err.to_string()))
            }
        },
    ))
    .await
}

/// Runs an SQS-triggered worker: each batch goes to `handler`, whose answer
/// (the partial batch failures) goes back to Lambda.
pub async fn serve_sqs<F, Fut, R>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(SqsEvent) -> Fut,
    Fut: Future<Output = R> + Send,
    R: serde::Serialize,
{
    crate::base::metrics::count(crate::base::metrics::Metric::ColdStart);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<SqsEvent>| {
            let response = handler(event.payload);
            async move { Ok::<_, lambda_runtime::Error>(response.await) }
        },
    ))
    .await
}

/// `ASSISTANTS_TABLE`, `ORGANISATIONS_TABLE`, `STATS_TABLE` (the assistant
/// id sequence).
fn directory_store(client: aws_sdk_dynamodb::Client) -> Result<DynamoDirectoryStore, ConfigError> {
    Ok(DynamoDirectoryStore {
        client,
        assistants_table: config::required("ASSISTANTS_TABLE")?,
        organisations_table: config::required("ORGANISATIONS_TABLE")?,
        stats_table: config::required("STATS_TABLE")?,
    })
}

// Configuration of flows read here, so that only this module reads table
// and queue variables.

#[cfg(all(feature = "phone", feature = "livekit"))]
impl crate::flows::launchers::workspaces::ChatWorkspacesConfig {
    /// `ADMIN_API_TOKEN`, the organisations table and `TENANCY_TABLE`.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let aws = Wiring::load().await;
        Ok(Self {
            token: config::required_secret("ADMIN_API_TOKEN")?,
            directory: directory_store(aws.dynamo().clone())?,
            tenancy: aws.tenancy()?,
        })
    }
}

#[cfg(feature = "phone")]
impl crate::flows::admin::AdminConfig {
    /// `ADMIN_API_TOKEN`, the directory's tables and `TENANCY_TABLE`.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let sdk = crate::base::aws::sdk_config().await;
        let client = aws_sdk_dynamodb::Client::new(&sdk);
        Ok(Self {
            token: config::required_secret("ADMIN_API_TOKEN")?,
            tenancy: DynamoTenancyStore::new(client.clone(), config::required("TENANCY_TABLE")?),
            directory: directory_store(client)?,
        })
    }
}

#[cfg(feature = "phone")]
impl crate::flows::admin::webhook_tokens::WebhookTokenAdmin {
    /// `ADMIN_API_TOKEN`, `API_KEYS_TABLE` (the tokens) and
    /// `ORGANISATIONS_TABLE` (their count and listing).
    pub async fn from_env() -> Result<Self, ConfigError> {
        let sdk = crate::base::aws::sdk_config().await;
        Ok(Self {
            token: config::required_secret("ADMIN_API_TOKEN")?,
            store: Box::new(crate::store::webhook_tokens::DynamoWebhookTokenStore {
                client: aws_sdk_dynamodb::Client::new(&sdk),
                api_keys_table: config::required("API_KEYS_TABLE")?,
                organisations_table: config::required("ORGANISATIONS_TABLE")?,
            }),
        })
    }
}

#[cfg(all(feature = "phone", feature = "secrets"))]
impl crate::flows::provider_accounts::ProviderAccountsAdmin {
    /// `ADMIN_API_TOKEN`, the directory's tables, `ORG_SECRETS_PREFIX`
    /// (required here) and `TENANCY_TABLE`.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let wiring = Wiring::load().await;
        Ok(Self {
            token: config::required_secret("ADMIN_API_TOKEN")?,
            directory: wiring.directory()?,
            secrets: wiring
                .org_secrets()?
                .ok_or(ConfigError::Missing("ORG_SECRETS_PREFIX"))?,
            tenancy: wiring.tenancy()?,
        })
    }
}

impl crate::flows::ingest::WebhookConfig {
    /// The recording webhooks' token, allow-list, tables and settings.
    pub fn from_env() -> Result<Self, ConfigError> {
        use crate::flows::ingest::IngestSettings;
        Ok(Self {
            webhook_token: config::required_secret("WEBHOOK_TOKEN")?,
            default_org: config::optional("INBOUND_ORG_ID"),
            api_keys_table: config::required("API_KEYS_TABLE")?,
            recording_hosts: crate::providers::recording::HostAllowList::from_env()?,
            calls_table: config::required("CALLS_TABLE")?,
            stats_table: config::required("STATS_TABLE")?,
            settings: IngestSettings::from_env()?,
        })
    }
}

#[cfg(test)]
mod tests {
    //! Guards for the import rule in ARCHITECTURE.md: only this module reads
    //! table, queue and bucket variables.

    use std::path::{Path, PathBuf};

    /// Suffixes of the variables that name a table, queue or bucket.
    const RESOURCE_SUFFIXES: [&str; 4] = ["_TABLE", "_QUEUE_URL", "_DLQ_URL", "_BUCKET"];
    /// Calls that read a variable.
    const READERS: [&str; 5] = [
        "required(",
        "optional(",
        "parsed_or(",
        "required_secret(",
        "env::var(",
    ];
    /// The only files outside wiring that call `std::env` directly, and why:
    /// none of them reads a table, queue or bucket.
    const DIRECT_ENV_READERS: [(&str, &str); 4] = [
        (
            "shared/src/base/config.rs",
            "the reader every other module goes through",
        ),
        (
            "shared/src/base/secrets.rs",
            "finds the `<NAME>_SECRET_ARN` variables",
        ),
        ("shared/src/base/telemetry.rs", "RUST_LOG"),
        (
            "shared/src/base/metrics.rs",
            "METRICS_NAMESPACE, AWS_LAMBDA_FUNCTION_NAME",
        ),
    ];

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// `shared/src` without wiring, and every function's `src`.
    fn outside_wiring() -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        rust_files(&root.join("src"), &mut files);
        let workspace = root.parent().unwrap();
        for entry in std::fs::read_dir(workspace.join("functions")).unwrap() {
            let src = entry.unwrap().path().join("src");
            if src.is_dir() {
                rust_files(&src, &mut files);
            }
        }
        files
            .into_iter()
            .filter_map(|path| {
                let name = path.strip_prefix(workspace).unwrap().display().to_string();
                let in_wiring =
                    name == "shared/src/wiring.rs" || name.starts_with("shared/src/wiring/");
                (!in_wiring).then(|| (name, std::fs::read_to_string(&path).unwrap()))
            })
            .collect()
    }

    /// The string literals of `line` that name a table, queue or bucket.
    fn resource_names(line: &str) -> Vec<&str> {
        line.split('"')
            .skip(1)
            .step_by(2)
            .filter(|lit| {
                !lit.is_empty()
                    && lit
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    && RESOURCE_SUFFIXES.iter().any(|s| lit.ends_with(s))
            })
            .collect()
    }

    #[test]
    fn only_wiring_reads_table_queue_and_bucket_variables() {
        let mut found = Vec::new();
        for (file, text) in outside_wiring() {
            for (n, line) in text.lines().enumerate() {
                if !READERS.iter().any(|r| line.contains(r)) {
                    continue;
                }
                for name in resource_names(line) {
                    found.push(format!("{file}:{}: reads {name}", n + 1));
                }
            }
        }
        assert!(
            found.is_empty(),
            "table, queue and bucket variables are read only in shared/src/wiring \
             (add a constructor there and pass the value in):\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn std_env_is_read_only_by_the_allowed_files() {
        let mut found = Vec::new();
        for (file, text) in outside_wiring() {
            let allowed = DIRECT_ENV_READERS.iter().any(|(f, _)| *f == file);
            if !allowed && (text.contains("env::var(") || text.contains("env::vars(")) {
                found.push(file);
            }
        }
        assert!(
            found.is_empty(),
            "read configuration through base::config (in wiring for tables, queues \
             and buckets), not std::env; or add the file to DIRECT_ENV_READERS with \
             the reason:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn the_guard_sees_a_read() {
        assert_eq!(
            resource_names(r#"x: config::required("CALLS_TABLE")?, y: "calls""#),
            ["CALLS_TABLE"]
        );
        assert!(resource_names(r#"config::required("WEBHOOK_TOKEN")"#).is_empty());
    }
}
