//! `campaign-tick` on a campaign of 10,000 recipients: how many runs and how
//! long the tick takes to schedule them all, and its AWS calls per
//! recipient, through the counting proxy.
//!
//! Two campaigns, benched apart:
//! - **closed**: the window is closed now in the recipients' zone, so each
//!   run moves up to 200 recipients (4 pages of 50) to their window's next
//!   opening; 10,000 take 50 runs;
//! - **open**: the window is open, the campaign and its organisation may
//!   hold 1,000 calls: each run claims up to 200 (one transaction each and
//!   one dial job), until the 1,000 slots are full.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use devstack::emulators::LocalAws;
use devstack::lambda_runtime::{Outcome, RuntimeApi};
use devstack::template::Template;
use shared::store::campaigns::{
    Campaign, CampaignState, CampaignStore, DynamoCampaignStore, Recipient, RecipientState,
    RetryPolicy,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

pub const RECIPIENTS: u32 = 10_000;
/// Runs at most, per campaign.
const MAX_RUNS: usize = 80;

/// One campaign's figures.
pub struct TickFigures {
    pub scenario: &'static str,
    pub runs: usize,
    pub scheduled: usize,
    pub p50: Duration,
    pub total: Duration,
    pub aws_calls_per_run: f64,
    pub aws_calls_per_recipient: f64,
    pub write_units_per_recipient: f64,
}

fn scheduled_event() -> String {
    serde_json::json!({
        "version": "0", "id": "bench", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012",
        "time": "2026-12-07T00:00:00Z", "region": "us-east-1",
        "resources": [], "detail": {}
    })
    .to_string()
}

/// A campaign of [`RECIPIENTS`] London numbers in `window`, active.
async fn seed(
    store: &DynamoCampaignStore,
    org_id: &str,
    window: serde_json::Value,
    max_concurrency: u32,
) -> Result<String, Error> {
    let now = shared::base::time::now_rfc3339();
    let campaign_id = format!("cmp_{}", uuid::Uuid::new_v4().simple());
    let campaign = Campaign {
        campaign_id: campaign_id.clone(),
        org_id: org_id.into(),
        name: Some("bench".into()),
        assistant_id: 1,
        agenda: Some("bench".into()),
        welcome_message: None,
        start_at: now.clone(),
        end_at: None,
        window: serde_json::from_value(window)?,
        max_concurrency,
        retry: RetryPolicy::default(),
        state: CampaignState::Creating,
        paused_reason: None,
        recipients: RECIPIENTS,
        skipped_rows: 0,
        counts: BTreeMap::new(),
        in_flight: 0,
        created_at: now.clone(),
        updated_at: now.clone(),
        started_at: None,
        finished_at: None,
        request_hash: "bench".into(),
    };
    store.begin(&campaign).await?;
    let start = shared::base::time::epoch_secs();
    let rows: Vec<Recipient> = (1..=RECIPIENTS)
        .map(|row| Recipient {
            campaign_id: campaign_id.clone(),
            row,
            phone_number: format!("+447123{row:06}"),
            zones: vec!["Europe/London".into()],
            zone_source: "row".into(),
            agenda: None,
            welcome_message: None,
            agent_variables: serde_json::Map::new(),
            state: RecipientState::Pending,
            reason: None,
            attempts: 0,
            calls: Vec::new(),
            updated_at: now.clone(),
            due_at: Some(start),
            dial_call_ref: None,
        })
        .collect();
    store.put_recipients(&rows).await?;
    store
        .activate(
            &campaign_id,
            &BTreeMap::from([("pending".to_string(), RECIPIENTS)]),
        )
        .await?;
    Ok(campaign_id)
}

/// Runs the tick until it has scheduled every recipient, or has nothing
/// left to do, through the counting proxy.
async fn run(
    scenario: &'static str,
    binary: &std::path::Path,
    env: &[(String, String)],
    local: &LocalAws,
    goal: usize,
) -> Result<TickFigures, Error> {
    let meter =
        devstack::bench_cost::Meter::start(local.dynamodb_endpoint(), local.moto_endpoint());
    let runtime = RuntimeApi::start().await?;
    let mut child = runtime.spawn_quiet(binary, &meter.env(env))?;
    let mut durations = Vec::new();
    let mut scheduled = 0;
    let started = Instant::now();
    for _ in 0..MAX_RUNS {
        meter.begin_invocation();
        let sent = Instant::now();
        let report = match runtime.invoke(scheduled_event()).await? {
            Outcome::Response(body) => serde_json::from_slice::<serde_json::Value>(&body)?,
            Outcome::Error(body) => {
                return Err(format!("tick failed: {}", String::from_utf8_lossy(&body)).into())
            }
        };
        durations.push(sent.elapsed());
        let done =
            report["claimed"].as_u64().unwrap_or(0) + report["deferred"].as_u64().unwrap_or(0);
        scheduled += usize::try_from(done).unwrap_or(0);
        if scheduled >= goal || done == 0 {
            break;
        }
    }
    let total = started.elapsed();
    child.kill().await?;
    let runs = durations.len();
    let per_run: Vec<devstack::bench_cost::Usage> = meter
        .per_invocation()
        .iter()
        .map(|calls| devstack::bench_cost::Usage::of(calls))
        .collect();
    let calls: f64 = per_run.iter().map(|u| u.aws_calls).sum();
    let writes: f64 = per_run.iter().map(|u| u.write_units).sum();
    durations.sort();
    let recipients = scheduled.max(1) as f64;
    Ok(TickFigures {
        scenario,
        runs,
        scheduled,
        p50: durations[durations.len() / 2],
        total,
        aws_calls_per_run: calls / runs.max(1) as f64,
        aws_calls_per_recipient: calls / recipients,
        write_units_per_recipient: writes / recipients,
    })
}

pub async fn bench(
    release: &std::path::Path,
    local: &LocalAws,
    template: &Template,
    resources: &devstack::provision::Resources,
) -> Result<Vec<TickFigures>, Error> {
    let client = local.dynamodb().await;
    let store = DynamoCampaignStore {
        client: client.clone(),
        table: resources.table("CampaignsTable"),
        organisations_table: resources.table("OrganisationsTable"),
    };
    // The organisation's slots: 1,000 calls at once.
    client
        .put_item()
        .table_name(resources.table("OrganisationsTable"))
        .item(
            "org_id",
            aws_sdk_dynamodb::types::AttributeValue::S("bench-campaigns".into()),
        )
        .item(
            "name",
            aws_sdk_dynamodb::types::AttributeValue::S("bench".into()),
        )
        .item(
            "monthly_limit_seconds",
            aws_sdk_dynamodb::types::AttributeValue::N("0".into()),
        )
        .item(
            "max_concurrent_calls",
            aws_sdk_dynamodb::types::AttributeValue::N("1000".into()),
        )
        .item(
            "created_at",
            aws_sdk_dynamodb::types::AttributeValue::S("t".into()),
        )
        .item(
            "updated_at",
            aws_sdk_dynamodb::types::AttributeValue::S("t".into()),
        )
        .send()
        .await?;
    let spec = template
        .function("campaign-tick")
        .ok_or("campaign-tick missing from template")?;
    let mut env: Vec<(String, String)> = resources.function_env(spec);
    env.extend(local.aws_env().into_iter().map(|(k, v)| (k.to_string(), v)));
    let binary = release.join("campaign-tick");

    // Closed now: a window only on the day after today (London).
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%a")
        .to_string()
        .to_ascii_lowercase();
    let closed = seed(
        &store,
        "bench-campaigns",
        serde_json::json!({"start": "09:00", "end": "17:00", "days": [tomorrow]}),
        1000,
    )
    .await?;
    let closed_figures = run(
        "closed: every recipient moved to its window",
        &binary,
        &env,
        local,
        RECIPIENTS as usize,
    )
    .await?;
    store
        .transition(
            &closed,
            &[CampaignState::Active],
            CampaignState::Paused,
            Some("user"),
        )
        .await?;
    let _open = seed(
        &store,
        "bench-campaigns",
        serde_json::json!({"start": "00:00", "end": "23:59",
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}),
        1000,
    )
    .await?;
    let open_figures = run(
        "open: claims until the 1,000 slots are full",
        &binary,
        &env,
        local,
        1000,
    )
    .await?;
    Ok(vec![closed_figures, open_figures])
}

pub fn table(figures: &[TickFigures]) -> String {
    let mut out = String::from(
        "\n### Campaign tick on 10,000 recipients\n\n| campaign | runs | recipients scheduled | run p50 (ms) | all runs (s) | AWS calls per run | AWS calls per recipient | WRU per recipient |\n|---|---|---|---|---|---|---|---|\n",
    );
    for f in figures {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.2} | {:.1} | {:.2} | {:.2} |\n",
            f.scenario,
            f.runs,
            f.scheduled,
            f.p50.as_secs_f64() * 1000.0,
            f.total.as_secs_f64(),
            f.aws_calls_per_run,
            f.aws_calls_per_recipient,
            f.write_units_per_recipient,
        ));
    }
    out.push_str(
        "\nA claim is one transaction (campaign slot, organisation slot, recipient) and one dial job; a recipient outside its window is one conditional update. Reads are the `ticking` and `due` Queries, 50 recipients a page. DynamoDB Local counts transactional WRU at twice AWS's rate.\n",
    );
    out
}
