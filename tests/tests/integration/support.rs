//! One emulator pair for the whole test binary; a fresh set of tables,
//! queues and fake providers for every test, so tests run in parallel
//! without seeing each other's data.

use shared::queue::sqs_batch::Worker;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_lambda_events::event::dynamodb::Event as StreamEvent;
use aws_lambda_events::event::sqs::SqsBatchResponse;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use devstack::emulators::LocalAws;
use devstack::fakes::{FakeAssemblyAi, FakeExotel, FakeSlack};
use devstack::poller::{queue_depth, PollReport, QueuePoller};
use devstack::provision::{provision, Resources};
use devstack::streams::{StreamPollReport as StreamReport, StreamPoller};
use devstack::template::Template;
use lambda_http::{Body, Request, Response};
use shared::base::config::Secret;
use shared::flows::ingest::{IngestSettings, Ingestor};
use shared::flows::notify::NotificationChannel;
use shared::providers::assemblyai::AssemblyAi;
use shared::providers::recording::{
    ExotelCredentials, HostAllowList, RecordingFetcher, DEFAULT_MAX_RECORDING_BYTES,
};
use shared::providers::slack::{SlackBotChannel, SlackWebhookChannel};
use shared::queue::jobs::SqsJobQueue;
use shared::store::calls::DynamoCallStore;
use shared::store::dedup::DynamoDedupStore;
use shared::store::stats::DynamoStatsStore;

pub const WEBHOOK_TOKEN: &str = "test-webhook-token-0123456789";
pub const API_TOKEN: &str = "test-api-token-0123456789";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const SUPPORT_NUMBER: &str = "09631084471";
const ASSEMBLYAI_KEY: &str = "test-assemblyai-key";
const EXOTEL_KEY: &str = "test-exotel-key";
const EXOTEL_TOKEN: &str = "test-exotel-token";

static LOCAL: OnceLock<LocalAws> = OnceLock::new();

pub fn local() -> &'static LocalAws {
    LOCAL.get_or_init(|| LocalAws::start().unwrap_or_else(|e| panic!("local AWS emulators: {e}")))
}

pub struct Stack {
    pub resources: Resources,
    /// The clients the functions under test use (through fault proxies in a
    /// faulty stack).
    pub dynamo: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// The test harness's own clients (the event source, assertions): never faulty.
    pub harness_dynamo: aws_sdk_dynamodb::Client,
    pub harness_sqs: aws_sdk_sqs::Client,
    /// Where the functions reach Slack and AssemblyAI (a fault proxy in a faulty stack).
    pub slack_base: String,
    pub assemblyai_base: String,
    /// Fault proxies kept alive with the stack (empty unless faulty).
    pub faults: Vec<devstack::faults::FaultProxy>,
    /// Shared by the DynamoDB and SQS proxies of a crashable stack.
    pub crash: Arc<devstack::faults::CrashSwitch>,
    pub exotel: FakeExotel,
    pub assemblyai: FakeAssemblyAi,
    pub slack: FakeSlack,
    /// An allowed recording host where nothing listens: downloads fail temporarily.
    pub dead_host: String,
    /// Lambda's event sources on the tables' streams, by consumer: each
    /// remembers how far it has read, so it lives as long as the stack.
    stream_sources: tokio::sync::Mutex<HashMap<&'static str, StreamPoller>>,
}

impl Stack {
    pub fn call_start_intake(&self) -> shared::flows::call_start::CallStartIntake {
        shared::flows::call_start::CallStartIntake {
            starts: Arc::new(self.call_starts()),
            sessions: Arc::new(self.sessions()),
        }
    }

    /// The sweep's look at call starts the stream never carried out.
    pub fn stuck_starts(&self) -> shared::flows::call_start::StuckStarts {
        shared::flows::call_start::StuckStarts {
            carry: self.started_calls(),
            notification_queue: self.queue("NotificationQueue"),
        }
    }

    pub fn started_calls(&self) -> shared::flows::call_start::StartedCalls {
        shared::flows::call_start::StartedCalls {
            sessions: Arc::new(self.sessions()),
            starts: Arc::new(self.call_starts()),
        }
    }

    pub fn call_starts(&self) -> shared::store::call_starts::DynamoCallStartStore {
        shared::store::call_starts::DynamoCallStartStore {
            client: self.dynamo.clone(),
            table: self.resources.table("CallsTable"),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// API-key access with a day-long rate window (the count cannot reset
    /// in the middle of a test) and a limit no test reaches.
    pub fn keyed_access(&self) -> shared::api::access::KeyedAccess {
        shared::api::access::KeyedAccess {
            api_keys: Arc::new(shared::store::api_keys::DynamoApiKeyStore::new(
                self.dynamo.clone(),
                self.resources.table("ApiKeysTable"),
            )),
            rate_limiter: Arc::new(shared::store::rate_limits::DynamoRateLimiter {
                client: self.dynamo.clone(),
                table: self.resources.table("IdempotencyTable"),
                window_secs: 86_400,
            }),
            per_window: 10_000,
        }
    }

    /// Sessions on this stack with `livekit`, dispatching `callops-agent`
    /// and announcing each session once.
    pub fn session_lifecycle(
        &self,
        livekit: Arc<shared::providers::livekit::LiveKitClient>,
    ) -> shared::flows::sessions::SessionLifecycle {
        shared::flows::sessions::SessionLifecycle {
            sessions: Arc::new(self.sessions()),
            livekit,
            agent_name: "callops-agent".into(),
            agent_identity_prefix: "agent-".into(),
            announcer: Some(Arc::new(self.call_start_intake())),
            dedup: self.dedup(),
        }
    }

    pub async fn start() -> Self {
        let local = local();
        let template =
            Template::load(&devstack::repo_root().join("template.yaml")).expect("template.yaml");
        let prefix = format!("t{}", &uuid_like()[..12]);
        let resources = provision(local, &template, &prefix)
            .await
            .expect("provision");
        let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let assemblyai = FakeAssemblyAi::start(ASSEMBLYAI_KEY);
        let slack = FakeSlack::start();
        Self {
            resources,
            dynamo: local.dynamodb().await,
            sqs: local.sqs().await,
            harness_dynamo: local.dynamodb().await,
            harness_sqs: local.sqs().await,
            slack_base: slack.base_url().to_string(),
            assemblyai_base: assemblyai.base_url().to_string(),
            faults: Vec::new(),
            crash: Arc::default(),
            exotel: FakeExotel::start(EXOTEL_KEY, EXOTEL_TOKEN),
            assemblyai,
            slack,
            dead_host: format!("127.0.0.1:{dead_port}"),
            stream_sources: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// A stack whose functions reach DynamoDB and SQS through proxies sharing
    /// `self.crash`, which can kill a handler right after any one of its writes.
    pub async fn start_crashable() -> Self {
        use devstack::faults::{Dialect, FaultPlan, FaultProxy};
        let mut stack = Self::start().await;
        let local = local();
        let crash = Arc::clone(&stack.crash);
        let dynamo = FaultProxy::start_with_switch(
            local.dynamodb_endpoint(),
            Dialect::AwsJson,
            FaultPlan::none(),
            Arc::clone(&crash),
        );
        let moto = FaultProxy::start_with_switch(
            local.moto_endpoint(),
            Dialect::AwsJson,
            FaultPlan::none(),
            crash,
        );
        stack.dynamo = local.dynamodb_at(dynamo.base_url()).await;
        stack.sqs = local.sqs_at(moto.base_url()).await;
        stack.faults = vec![dynamo, moto];
        stack
    }

    /// A stack whose functions reach DynamoDB, SQS, Slack and AssemblyAI
    /// through fault proxies running `plan` (the harness's own clients do
    /// not). The proxies share `self.crash`, so a handler can also be killed
    /// after any one of its requests.
    pub async fn start_faulty(plan: devstack::faults::FaultPlan) -> Self {
        use devstack::faults::{Dialect, FaultProxy};
        let mut stack = Self::start().await;
        let local = local();
        let proxy = |upstream: &str, dialect, plan| {
            FaultProxy::start_with_switch(upstream, dialect, plan, Arc::clone(&stack.crash))
        };
        let dynamo = proxy(local.dynamodb_endpoint(), Dialect::AwsJson, plan.clone());
        let moto = proxy(local.moto_endpoint(), Dialect::AwsJson, plan.clone());
        let slack = proxy(stack.slack.base_url(), Dialect::Http, plan.clone());
        let assemblyai = proxy(stack.assemblyai.base_url(), Dialect::Http, plan);
        stack.dynamo = local.dynamodb_at(dynamo.base_url()).await;
        stack.sqs = local.sqs_at(moto.base_url()).await;
        stack.slack_base = slack.base_url().to_string();
        stack.assemblyai_base = assemblyai.base_url().to_string();
        stack.faults = vec![dynamo, moto, slack, assemblyai];
        stack
    }

    fn exotel_host(&self) -> String {
        self.exotel
            .base_url()
            .trim_start_matches("http://")
            .to_string()
    }

    /// The fakes' hosts, with the local (non-Lambda) loopback rule.
    pub fn recording_hosts(&self) -> HostAllowList {
        HostAllowList::parse(&format!(
            "{},{},*.exotel.com",
            self.exotel_host(),
            self.dead_host
        ))
        .with_loopback(true)
    }

    pub fn recording_url(&self, call_id: &str) -> String {
        format!("{}/recordings/{call_id}.mp3", self.exotel.base_url())
    }

    pub fn calls(&self) -> DynamoCallStore {
        DynamoCallStore::new(self.dynamo.clone(), self.resources.table("CallsTable"))
    }

    pub fn sessions(&self) -> shared::store::sessions::DynamoSessionStore {
        shared::store::sessions::DynamoSessionStore::new(
            self.dynamo.clone(),
            self.resources.table("CallsTable"),
        )
    }

    pub fn outbound_calls(&self) -> shared::store::outbound_calls::DynamoOutboundCallStore {
        shared::store::outbound_calls::DynamoOutboundCallStore {
            client: self.dynamo.clone(),
            calls_table: self.resources.table("CallsTable"),
            organisations_table: self.resources.table("OrganisationsTable"),
        }
    }

    /// Writes an organisation (this monthly limit and concurrency cap) and
    /// an API key of it with the harness's own clients, which never fault;
    /// returns the key.
    pub async fn seed_organisation(
        &self,
        org_id: &str,
        monthly_limit_seconds: u64,
        cap: u32,
    ) -> String {
        use shared::store::api_keys::{self, ApiKeyStore, DynamoApiKeyStore};
        use shared::store::directory::{DirectoryStore, Organisation};
        let now = shared::base::time::now_rfc3339();
        assert!(self
            .harness_directory()
            .create_organisation(&Organisation {
                org_id: org_id.into(),
                name: org_id.into(),
                monthly_limit_seconds,
                topup_seconds: 0,
                max_concurrent_calls: cap,
                elevenlabs_agent_id: None,
                elevenlabs_phone_number_id: None,
                phone_numbers: vec![],
                created_at: now.clone(),
                updated_at: now,
                usage_this_month_seconds: 0,
                reserved_seconds: 0,
                remaining_seconds: 0,
            })
            .await
            .unwrap());
        let (key, record) = api_keys::generate("crm", org_id);
        DynamoApiKeyStore::new(
            self.harness_dynamo.clone(),
            self.resources.table("ApiKeysTable"),
        )
        .insert(&record)
        .await
        .unwrap();
        key
    }

    /// Writes an active Twilio assistant of `org_id` calling from
    /// `caller_number` (600 s calls), as [`Stack::seed_organisation`] does;
    /// returns its id.
    pub async fn seed_twilio_assistant(&self, org_id: &str, caller_number: &str) -> u64 {
        use shared::store::directory::{Assistant, DirectoryStore, Provider};
        let now = shared::base::time::now_rfc3339();
        self.harness_directory()
            .create_assistant(Assistant {
                assistant_id: 0,
                org_id: org_id.into(),
                name: "Sarah".into(),
                provider: Provider::Twilio,
                caller_number: Some(caller_number.into()),
                elevenlabs_agent_id: None,
                elevenlabs_phone_number_id: None,
                agent_stream_url: Some("wss://agent.example.com/media".into()),
                default_welcome_message: None,
                max_call_seconds: 600,
                is_active: true,
                created_at: now.clone(),
                updated_at: now,
            })
            .await
            .unwrap()
            .assistant_id
    }

    /// The directory through the harness's client (never faulted).
    pub fn harness_directory(&self) -> shared::store::directory::DynamoDirectoryStore {
        shared::store::directory::DynamoDirectoryStore {
            client: self.harness_dynamo.clone(),
            ..self.directory()
        }
    }

    pub fn directory(&self) -> shared::store::directory::DynamoDirectoryStore {
        shared::store::directory::DynamoDirectoryStore {
            client: self.dynamo.clone(),
            assistants_table: self.resources.table("AssistantsTable"),
            organisations_table: self.resources.table("OrganisationsTable"),
            stats_table: self.resources.table("StatsTable"),
        }
    }

    pub fn campaigns(&self) -> shared::store::campaigns::DynamoCampaignStore {
        shared::store::campaigns::DynamoCampaignStore {
            client: self.dynamo.clone(),
            table: self.resources.table("CampaignsTable"),
            organisations_table: self.resources.table("OrganisationsTable"),
        }
    }

    pub fn dnc(&self) -> shared::store::dnc::DynamoDncStore {
        shared::store::dnc::DynamoDncStore {
            client: self.dynamo.clone(),
            table: self.resources.table("TenancyTable"),
        }
    }

    pub fn tenancy(&self) -> shared::store::tenancy::DynamoTenancyStore {
        shared::store::tenancy::DynamoTenancyStore::new(
            self.dynamo.clone(),
            self.resources.table("TenancyTable"),
        )
    }

    pub fn stats(&self) -> DynamoStatsStore {
        DynamoStatsStore::new(self.dynamo.clone(), self.resources.table("StatsTable"))
    }

    pub fn queue(&self, logical_id: &str) -> Arc<SqsJobQueue> {
        Arc::new(SqsJobQueue::new(
            self.sqs.clone(),
            self.resources.queue(logical_id),
        ))
    }

    /// The idempotency table as the dedup store every handler uses.
    pub fn dedup(&self) -> Arc<DynamoDedupStore> {
        Arc::new(DynamoDedupStore::new(
            self.dynamo.clone(),
            self.resources.table("IdempotencyTable"),
            Duration::from_secs(3600),
        ))
    }

    pub fn ingestor(&self) -> Ingestor {
        Ingestor {
            calls: Arc::new(self.calls()),
            stats: Arc::new(self.stats()),
            settings: IngestSettings {
                support_number: Some(SUPPORT_NUMBER.into()),
            },
        }
    }

    /// The calls table's stream consumer on this stack's (possibly faulty) clients.
    pub fn calls_stream(&self) -> calls_stream::CallsStream {
        calls_stream::CallsStream {
            dispatcher: self.new_call_records(),
        }
    }

    pub fn new_call_records(&self) -> shared::flows::call_stream::NewCallRecords {
        shared::flows::call_stream::NewCallRecords {
            transcription_queue: self.queue("TranscriptionQueue"),
            stats: Arc::new(self.stats()),
            transcription_deadline: Duration::from_secs(3600),
            starts: self.started_calls(),
            notification_queue: self.queue("NotificationQueue"),
            campaign_calls: shared::flows::campaign_calls::CampaignCallEnds {
                store: Arc::new(self.campaigns()),
                clock: Arc::new(shared::base::time::SystemClock),
            },
        }
    }

    /// Reads the calls table's stream into `calls-stream` until nothing new
    /// is left, as Lambda's event source mapping would (the template's filter,
    /// batch size, retries and on-failure queue).
    pub async fn run_calls_stream(&self) -> StreamReport {
        let consumer = self.calls_stream();
        self.run_calls_stream_by(|event| consumer.handle(event))
            .await
    }

    /// The same with another dispatcher (a queue that refuses, say).
    pub async fn run_calls_stream_with(
        &self,
        dispatcher: shared::flows::call_stream::NewCallRecords,
    ) -> StreamReport {
        let consumer = calls_stream::CallsStream { dispatcher };
        self.run_calls_stream_by(|event| consumer.handle(event))
            .await
    }

    pub fn key_store(&self) -> Arc<shared::store::api_keys::DynamoApiKeyStore> {
        Arc::new(shared::store::api_keys::DynamoApiKeyStore::new(
            self.dynamo.clone(),
            self.resources.table("ApiKeysTable"),
        ))
    }

    /// `WEBHOOK_TOKEN` without a default organisation (as before
    /// organisations had tokens), and organisations' tokens from this stack.
    pub fn webhook_access(&self) -> shared::flows::ingest::WebhookAccess {
        shared::flows::ingest::WebhookAccess {
            deployment_token: Secret::new(WEBHOOK_TOKEN),
            tokens: self.key_store(),
            default_org: None,
        }
    }

    /// The webhook-token admin routes on this stack, with `ADMIN_TOKEN`.
    pub fn webhook_token_admin(&self) -> shared::flows::admin::webhook_tokens::WebhookTokenAdmin {
        shared::flows::admin::webhook_tokens::WebhookTokenAdmin {
            token: Secret::new(ADMIN_TOKEN),
            store: Box::new(shared::store::webhook_tokens::DynamoWebhookTokenStore {
                client: self.dynamo.clone(),
                api_keys_table: self.resources.table("ApiKeysTable"),
                organisations_table: self.resources.table("OrganisationsTable"),
            }),
        }
    }

    pub fn call_get(&self) -> call_get::CallGet {
        call_get::CallGet {
            api_token: Secret::new(API_TOKEN),
            api_keys: self.key_store(),
            default_org: None,
            calls: Arc::new(self.calls()),
        }
    }

    pub fn stats_endpoint(&self) -> stats::StatsEndpoint {
        stats::StatsEndpoint {
            stats: Arc::new(self.stats()),
            api_keys: self.key_store(),
        }
    }

    pub fn zapier(&self) -> zapier_webhook::ZapierWebhook {
        zapier_webhook::ZapierWebhook {
            access: self.webhook_access(),
            recording_hosts: self.recording_hosts(),
            ingestor: self.ingestor(),
        }
    }

    pub fn exotel_webhook(&self) -> exotel_webhook::ExotelWebhook {
        exotel_webhook::ExotelWebhook {
            access: self.webhook_access(),
            recording_hosts: self.recording_hosts(),
            timezone: exotel_webhook::parse_offset("+05:30").unwrap(),
            ingestor: self.ingestor(),
        }
    }

    pub fn transcribe_worker(&self) -> Arc<transcribe_worker::TranscribeWorker> {
        self.transcribe_worker_with(self.recording_hosts(), DEFAULT_MAX_RECORDING_BYTES)
    }

    /// A transcribe worker with its own recording rules (Lambda mode, size limit).
    pub fn transcribe_worker_with(
        &self,
        recording_hosts: HostAllowList,
        max_recording_bytes: u64,
    ) -> Arc<transcribe_worker::TranscribeWorker> {
        let exotel = ExotelCredentials {
            api_key: Secret::new(EXOTEL_KEY),
            api_token: Secret::new(EXOTEL_TOKEN),
            hosts: HostAllowList::parse(&self.exotel_host()),
        };
        Arc::new(transcribe_worker::TranscribeWorker {
            calls: Arc::new(self.calls()),
            stats: Arc::new(self.stats()),
            transcription_queue: self.queue("TranscriptionQueue"),
            notification_queue: self.queue("NotificationQueue"),
            transcriber: Arc::new(AssemblyAi::new(
                reqwest::Client::new(),
                self.assemblyai_base.clone(),
                Secret::new(ASSEMBLYAI_KEY),
                RecordingFetcher::new(recording_hosts.clone(), Some(exotel), max_recording_bytes)
                    .unwrap(),
            )),
            recording_hosts,
            // No waiting between re-checks in tests; the backoff is unit-tested.
            recheck: transcribe_worker::RecheckSettings {
                base: Duration::ZERO,
                cap: Duration::ZERO,
            },
        })
    }

    pub fn slack_webhook(&self) -> Arc<dyn NotificationChannel> {
        Arc::new(SlackWebhookChannel {
            http: reqwest::Client::new(),
            url: Secret::new(
                self.slack
                    .webhook_url()
                    .replace(self.slack.base_url(), &self.slack_base),
            ),
        })
    }

    pub fn slack_bot(&self) -> Arc<dyn NotificationChannel> {
        Arc::new(SlackBotChannel {
            http: reqwest::Client::new(),
            api_base_url: format!("{}/api", self.slack_base),
            token: Secret::new("xoxb-test-token"),
            channel: "#voice-agent-calls".into(),
        })
    }

    pub fn notify_worker(
        &self,
        channels: Vec<Arc<dyn NotificationChannel>>,
    ) -> Arc<notify_worker::NotifyWorker> {
        Arc::new(self.notify_worker_owned(channels))
    }

    /// A notify worker to adjust before sharing it.
    pub fn notify_worker_owned(
        &self,
        channels: Vec<Arc<dyn NotificationChannel>>,
    ) -> notify_worker::NotifyWorker {
        notify_worker::NotifyWorker {
            calls: Arc::new(self.calls()),
            outbound: Arc::new(self.outbound_calls()),
            sessions: Arc::new(self.sessions()),
            call_start_title: "New Trial Call".into(),
            routes: shared::flows::notify::NotificationRoutes::default(),
            stats: Arc::new(self.stats()),
            deliveries: Arc::new(DynamoDedupStore::new(
                self.dynamo.clone(),
                self.resources.table("IdempotencyTable"),
                Duration::from_secs(3600),
            )),
            channels,
            org_accounts: None,
            org_channels: shared::flows::notify::OrgChannelMaker {
                http: reqwest::Client::new(),
                slack_api_base_url: format!("{}/api", self.slack_base),
                ses: None,
                from_email: None,
            },
            notification_queue: self.queue("NotificationQueue"),
            dead_letter_queue: self.queue("NotificationDLQ"),
            max_resends: 8,
            // No waiting between re-sends in tests; the backoff is unit-tested.
            resend_base: Duration::ZERO,
            send_lease: shared::flows::notify::DEFAULT_PART_LEASE,
            webhook_queue: Some(self.queue("WebhookQueue")),
            directory: Arc::new(self.directory()),
        }
    }

    /// Large webhook bodies, in parts in the calls table.
    pub fn event_bodies(&self) -> Arc<shared::store::event_bodies::DynamoEventBodyStore> {
        Arc::new(shared::store::event_bodies::DynamoEventBodyStore::new(
            self.dynamo.clone(),
            self.resources.table("CallsTable"),
        ))
    }

    /// What the Twilio status and ElevenLabs routes write to before their 200.
    pub fn provider_event_intake(&self) -> shared::flows::provider_events::ProviderEventIntake {
        shared::flows::provider_events::ProviderEventIntake {
            bodies: self.event_bodies(),
            queue: self.queue("ProviderEventsQueue"),
        }
    }

    /// The provider-events worker over `calls` (the stack's own, or a double).
    pub fn provider_events_worker_with(
        &self,
        calls: Arc<dyn shared::store::outbound_calls::OutboundCallStore>,
    ) -> Arc<provider_events_worker::ProviderEventsWorker> {
        Arc::new(provider_events_worker::ProviderEventsWorker {
            processor: shared::flows::provider_events::ProviderEventProcessor {
                calls,
                dedup: self.dedup(),
                bodies: self.event_bodies(),
                notification_queue: self.queue("NotificationQueue"),
                lease: Duration::from_secs(30),
                sessions: None,
                tenancy: Arc::new(self.tenancy()),
                // The outbound tests' default organisation.
                default_org: Some("acme".into()),
            },
        })
    }

    /// Applies every queued provider event (Twilio statuses, ElevenLabs webhooks).
    pub async fn run_provider_events(&self) -> Vec<PollReport> {
        let worker = self.provider_events_worker_with(Arc::new(self.outbound_calls()));
        self.drain("ProviderEventsQueue", |event| {
            let worker = Arc::clone(&worker);
            async move { worker.handle(event).await }
        })
        .await
    }

    /// Reads the calls table's stream into `worker` until nothing new is
    /// left (see `run_calls_stream`).
    pub async fn run_calls_stream_by<F, Fut>(&self, worker: F) -> StreamReport
    where
        F: FnMut(StreamEvent) -> Fut,
        Fut: std::future::Future<Output = DynamoDbEventResponse>,
    {
        self.run_stream_by("calls-stream", worker).await
    }

    /// Reads the WhatsApp table's stream into `whatsapp-stream` until
    /// nothing new is left, as Lambda's event source mapping would.
    pub async fn run_whatsapp_stream(&self) -> StreamReport {
        let consumer = whatsapp_stream::WhatsAppStream {
            dispatcher: shared::flows::whatsapp::NewIncomingMessages {
                reply_queue: self.queue("WhatsAppReplyQueue"),
            },
        };
        self.run_stream_by("whatsapp-stream", |event| consumer.handle(event))
            .await
    }

    /// The WhatsApp table's new entries are read and dropped: their stream
    /// events are lost.
    pub async fn lose_whatsapp_stream_events(&self) -> StreamReport {
        self.run_stream_by("whatsapp-stream", |_| {
            std::future::ready(DynamoDbEventResponse::default())
        })
        .await
    }

    /// Reads the stream that feeds `function` (its template trigger) into
    /// `worker` until nothing new is left. The reader is the harness's own,
    /// never faulty: Lambda's polling is not the functions' dependency.
    pub async fn run_stream_by<F, Fut>(&self, function: &'static str, worker: F) -> StreamReport
    where
        F: FnMut(StreamEvent) -> Fut,
        Fut: std::future::Future<Output = DynamoDbEventResponse>,
    {
        let mut sources = self.stream_sources.lock().await;
        if !sources.contains_key(function) {
            let template = Template::load(&devstack::repo_root().join("template.yaml"))
                .expect("template.yaml");
            let trigger = template
                .function(function)
                .and_then(|f| f.streams.first().cloned())
                .unwrap_or_else(|| panic!("{function}'s stream trigger"));
            let poller = StreamPoller::new(
                self.harness_dynamo.clone(),
                local().dynamodb_streams().await,
                self.resources.table(&trigger.table),
                trigger.clone(),
                trigger.on_failure.as_ref().map(|q| self.resources.queue(q)),
                self.harness_sqs.clone(),
            )
            .for_function(function);
            sources.insert(function, poller);
        }
        sources
            .get_mut(function)
            .expect("set above")
            .drain(worker)
            .await
            .unwrap_or_else(|e| panic!("{function}'s stream: {e}"))
    }

    /// The calls table's new records are read and dropped: their stream
    /// events are lost, as when a batch is given up on.
    pub async fn lose_calls_stream_events(&self) -> StreamReport {
        self.run_calls_stream_by(|_| std::future::ready(DynamoDbEventResponse::default()))
            .await
    }

    /// Work that reaches `logical_id` from a stream first: the jobs the
    /// streams' consumers queue, as Lambda would have by now.
    async fn settle_streams_into(&self, logical_id: &str) {
        match logical_id {
            // Call starts' notifications come from the calls stream too.
            "TranscriptionQueue" | "NotificationQueue" => {
                self.run_calls_stream().await;
            }
            "WhatsAppReplyQueue" => {
                self.run_whatsapp_stream().await;
            }
            _ => {}
        }
    }

    /// Messages in a queue, without letting any stream feed it first.
    pub async fn raw_depth(&self, logical_id: &str) -> usize {
        queue_depth(&self.harness_sqs, &self.resources.queue(logical_id))
            .await
            .unwrap()
    }

    /// Every message body in a queue, each received once and put back.
    pub async fn peek_all(&self, logical_id: &str) -> Vec<String> {
        self.settle_streams_into(logical_id).await;
        let url = self.resources.queue(logical_id);
        let mut bodies = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..100 {
            let out = self
                .harness_sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .visibility_timeout(30)
                .send()
                .await
                .unwrap();
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for message in messages {
                bodies.extend(message.body);
                handles.extend(message.receipt_handle);
            }
        }
        for handle in handles {
            self.harness_sqs
                .change_message_visibility()
                .queue_url(&url)
                .receipt_handle(handle)
                .visibility_timeout(0)
                .send()
                .await
                .unwrap();
        }
        bodies
    }

    pub fn poller(&self, logical_id: &str) -> QueuePoller {
        QueuePoller {
            sqs: self.harness_sqs.clone(),
            queue_url: self.resources.queue(logical_id),
            batch_size: 10,
            // Long-poll so delayed messages (Retry-After) are picked up when due.
            wait: Duration::from_secs(1),
            retry_after: Duration::ZERO,
        }
    }

    pub async fn depth(&self, logical_id: &str) -> usize {
        self.settle_streams_into(logical_id).await;
        queue_depth(&self.harness_sqs, &self.resources.queue(logical_id))
            .await
            .unwrap()
    }

    /// Polls `logical_id` into `worker` until the queue is empty; returns every poll.
    /// Bounded so a bug cannot hang the suite.
    pub async fn drain<F, Fut>(&self, logical_id: &str, worker: F) -> Vec<PollReport>
    where
        F: Fn(aws_lambda_events::event::sqs::SqsEvent) -> Fut,
        Fut: std::future::Future<Output = SqsBatchResponse>,
    {
        self.settle_streams_into(logical_id).await;
        let poller = self.poller(logical_id);
        let mut reports = Vec::new();
        for _ in 0..60 {
            let report = poller.poll_once(&worker).await.unwrap();
            let empty = report.received == 0;
            reports.push(report);
            if empty && self.depth(logical_id).await == 0 {
                return reports;
            }
        }
        panic!("{logical_id} did not drain: {reports:?}");
    }

    pub async fn run_transcriptions(&self) -> Vec<PollReport> {
        self.run_transcriptions_with(self.transcribe_worker()).await
    }

    pub async fn run_transcriptions_with(
        &self,
        worker: Arc<transcribe_worker::TranscribeWorker>,
    ) -> Vec<PollReport> {
        self.drain("TranscriptionQueue", |event| {
            let worker = Arc::clone(&worker);
            async move { worker.handle(event).await }
        })
        .await
    }

    pub async fn run_notifications(
        &self,
        worker: &Arc<notify_worker::NotifyWorker>,
    ) -> Vec<PollReport> {
        self.drain("NotificationQueue", |event| {
            let worker = Arc::clone(worker);
            async move { worker.handle(event).await }
        })
        .await
    }

    /// Empties a queue without running anything: a lost job, or a message the
    /// test hands to a worker itself.
    pub async fn discard_queued(&self, logical_id: &str) {
        self.settle_streams_into(logical_id).await;
        let url = self.resources.queue(logical_id);
        loop {
            let received = self
                .harness_sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                return;
            }
            for message in messages {
                self.harness_sqs
                    .delete_message()
                    .queue_url(&url)
                    .receipt_handle(message.receipt_handle.unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    /// Slack posts by the call id their summary names.
    pub fn posts_per_call(&self) -> std::collections::HashMap<String, usize> {
        let mut posts = std::collections::HashMap::new();
        for post in self.slack.posts() {
            let text = post["text"].as_str().unwrap_or_default();
            if let Some(start) = text.find("• Call ID: `") {
                let id: String = text[start + "• Call ID: `".len()..]
                    .chars()
                    .take_while(|c| *c != '`')
                    .collect();
                *posts.entry(id).or_default() += 1;
            }
        }
        posts
    }

    /// Items in a table, counted with a scan (fine for a test's own table).
    pub async fn item_count(&self, logical_id: &str) -> usize {
        self.harness_dynamo
            .scan()
            .table_name(self.resources.table(logical_id))
            .send()
            .await
            .unwrap()
            .count as usize
    }

    /// Message bodies waiting in a queue (received and put back at once).
    pub async fn peek(&self, logical_id: &str) -> Vec<String> {
        self.settle_streams_into(logical_id).await;
        let out = self
            .sqs
            .receive_message()
            .queue_url(self.resources.queue(logical_id))
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
        out.messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.body)
            .collect()
    }
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
    .chars()
    .rev()
    .collect()
}

pub fn zapier_request(body: &[u8], authorization: Option<&str>) -> Request {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(value) = authorization {
        headers.push(("authorization".into(), value.into()));
    }
    devstack::server::api_request(
        "POST",
        "/webhook/zapier",
        "/webhook/zapier",
        "",
        &headers,
        body,
    )
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A JSON request to an admin route (`route` as the template names it,
/// `path` as sent), with `Authorization: Bearer token` when given.
pub fn admin_request(
    method: &str,
    route: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Request {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(token) = token {
        headers.push(("authorization".into(), bearer(token)));
    }
    devstack::server::api_request(method, route, path, "", &headers, body.as_bytes())
}

pub fn exotel_request(form: &str, query: &str, content_type: &str) -> Request {
    let headers = vec![("content-type".to_string(), content_type.to_string())];
    devstack::server::api_request(
        "POST",
        "/webhook/exotel",
        "/webhook/exotel",
        query,
        &headers,
        form.as_bytes(),
    )
}

pub fn call_get_request(call_id: &str, authorization: Option<&str>) -> Request {
    let mut headers = Vec::new();
    if let Some(value) = authorization {
        headers.push(("authorization".to_string(), value.to_string()));
    }
    let path = format!("/call/{call_id}");
    devstack::server::api_request("GET", "/call/{call_id}", &path, "", &headers, b"")
}

pub fn stats_request(authorization: Option<&str>) -> Request {
    let mut headers = Vec::new();
    if let Some(value) = authorization {
        headers.push(("authorization".to_string(), value.to_string()));
    }
    devstack::server::api_request("GET", "/stats", "/stats", "", &headers, b"")
}

pub fn json_body(response: &Response<Body>) -> serde_json::Value {
    serde_json::from_slice(response.body().as_ref()).expect("JSON response body")
}

/// The seed's Zapier payload from `events/`, with its recording on this test's fake Exotel.
pub fn seed_payload(stack: &Stack, call_id: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(devstack::repo_root().join("events/payloads/zapier-call.json"))
            .unwrap();
    let mut payload: serde_json::Value = serde_json::from_str(&text).unwrap();
    payload["call_id"] = call_id.into();
    payload["recording_url"] = stack.recording_url(call_id).into();
    payload
}

/// LiveKit's server API at `url` (a fake) with this key and secret.
pub fn livekit_client(
    url: &str,
    api_key: &str,
    api_secret: &str,
) -> Arc<shared::providers::livekit::LiveKitClient> {
    Arc::new(shared::providers::livekit::LiveKitClient {
        http: reqwest::Client::new(),
        api_url: url.to_string(),
        tokens: shared::providers::livekit::AccessTokens {
            api_key: api_key.into(),
            api_secret: Secret::new(api_secret),
        },
        empty_timeout_secs: 300,
    })
}
