//! `make bench`'s AWS bill per delivery. A counting proxy sits in front of
//! DynamoDB Local and moto; for every request a function makes it records
//! the service and operation, when it started and ended, and (DynamoDB) the
//! read and write units DynamoDB reports for it. From those: how many AWS
//! calls a delivery waits for one after another, how many it makes, its
//! units and SQS requests, and what a million deliveries cost.
//!
//! The arithmetic (chain length, cost) is plain functions over plain
//! numbers, tested without any server.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::fakes::{serve, Recorded, Response};

/// Public us-east-1 prices, as checked on [`PRICES_CHECKED`]: API Gateway
/// HTTP API (first 300 M requests a month), Lambda arm64, SQS standard,
/// DynamoDB on-demand (after the November 2024 cut). Dollars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    pub http_api_per_million: f64,
    pub lambda_request_per_million: f64,
    pub lambda_gb_second: f64,
    /// The memory the cost assumes for every function.
    pub lambda_memory_mb: u32,
    pub sqs_request_per_million: f64,
    pub dynamodb_wru_per_million: f64,
    pub dynamodb_rru_per_million: f64,
}

pub const US_EAST_1: Prices = Prices {
    http_api_per_million: 1.00,
    lambda_request_per_million: 0.20,
    lambda_gb_second: 0.000_013_333_4,
    lambda_memory_mb: 128,
    sqs_request_per_million: 0.40,
    dynamodb_wru_per_million: 0.625,
    dynamodb_rru_per_million: 0.125,
};

pub const PRICES_CHECKED: &str = "2026-11-21";

/// The longest chain of calls in which each starts after the previous one
/// ended: the round trips a delivery waits for one after another. Calls that
/// overlap ran in parallel and count once. Spans are `(start, end)`.
///
/// A chain is a set of pairwise disjoint spans, so the longest one is found
/// greedily by earliest end.
pub fn sequential_calls(spans: &[(Duration, Duration)]) -> usize {
    let mut by_end: Vec<(Duration, Duration)> = spans.to_vec();
    by_end.sort_by_key(|&(start, end)| (end, start));
    let mut chain = 0;
    let mut free_from: Option<Duration> = None;
    for (start, end) in by_end {
        if free_from.is_none_or(|t| start >= t) {
            chain += 1;
            free_from = Some(end);
        }
    }
    chain
}

/// Lambda bills duration per started millisecond.
pub fn billed_ms(duration: Duration) -> u64 {
    let micros = duration.as_micros() as u64;
    micros.div_ceil(1000).max(1)
}

/// What one delivery used, or the mean over several.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub sequential_calls: f64,
    pub aws_calls: f64,
    pub read_units: f64,
    pub write_units: f64,
    pub sqs_requests: f64,
}

impl Usage {
    pub fn mean(all: &[Usage]) -> Usage {
        if all.is_empty() {
            return Usage::default();
        }
        let n = all.len() as f64;
        let sum = |f: fn(&Usage) -> f64| all.iter().map(f).sum::<f64>() / n;
        Usage {
            sequential_calls: sum(|u| u.sequential_calls),
            aws_calls: sum(|u| u.aws_calls),
            read_units: sum(|u| u.read_units),
            write_units: sum(|u| u.write_units),
            sqs_requests: sum(|u| u.sqs_requests),
        }
    }
}

/// Dollars per million deliveries, by service.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cost {
    pub api_gateway: f64,
    pub lambda: f64,
    pub sqs: f64,
    pub dynamodb: f64,
}

impl Cost {
    pub fn total(&self) -> f64 {
        self.api_gateway + self.lambda + self.sqs + self.dynamodb
    }
}

/// A million deliveries, each one HTTP API request and one invocation of
/// `duration` (the warm p50) that used `usage`.
pub fn cost_per_million(prices: &Prices, duration: Duration, usage: &Usage) -> Cost {
    let gb = f64::from(prices.lambda_memory_mb) / 1024.0;
    let seconds = billed_ms(duration) as f64 / 1000.0;
    Cost {
        api_gateway: prices.http_api_per_million,
        lambda: prices.lambda_request_per_million
            + gb * seconds * prices.lambda_gb_second * 1_000_000.0,
        sqs: usage.sqs_requests * prices.sqs_request_per_million,
        dynamodb: usage.write_units * prices.dynamodb_wru_per_million
            + usage.read_units * prices.dynamodb_rru_per_million,
    }
}

/// What each new call costs the calls table's stream consumer: its batch's
/// Lambda request and billed duration, SQS requests and DynamoDB units,
/// shared by the batch's records. Lambda's reads of the stream are free.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamShare {
    /// Warm batches measured, and the records in them.
    pub batches: usize,
    pub records: usize,
    /// Per record.
    pub usage: Usage,
    /// Dollars per million records, by service (no API Gateway).
    pub cost: Cost,
}

/// The share of each record in `batches`: (billed duration, records, what
/// the invocation used), one per warm invocation.
pub fn stream_share(prices: &Prices, batches: &[(Duration, usize, Usage)]) -> StreamShare {
    let records: usize = batches.iter().map(|(_, n, _)| n).sum();
    if records == 0 {
        return StreamShare::default();
    }
    let per =
        |f: fn(&Usage) -> f64| batches.iter().map(|(_, _, u)| f(u)).sum::<f64>() / records as f64;
    let usage = Usage {
        sequential_calls: per(|u| u.sequential_calls),
        aws_calls: per(|u| u.aws_calls),
        read_units: per(|u| u.read_units),
        write_units: per(|u| u.write_units),
        sqs_requests: per(|u| u.sqs_requests),
    };
    let gb = f64::from(prices.lambda_memory_mb) / 1024.0;
    let lambda: f64 = batches
        .iter()
        .map(|(duration, _, _)| {
            prices.lambda_request_per_million
                + gb * (billed_ms(*duration) as f64 / 1000.0)
                    * prices.lambda_gb_second
                    * 1_000_000.0
        })
        .sum::<f64>()
        / records as f64;
    StreamShare {
        batches: batches.len(),
        records,
        usage,
        cost: Cost {
            api_gateway: 0.0,
            lambda,
            sqs: usage.sqs_requests * prices.sqs_request_per_million,
            dynamodb: usage.write_units * prices.dynamodb_wru_per_million
                + usage.read_units * prices.dynamodb_rru_per_million,
        },
    }
}

/// The AWS service a request went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    DynamoDb,
    Sqs,
    Other(String),
}

/// One AWS request, times relative to the meter's start.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub service: Service,
    pub operation: String,
    pub start: Duration,
    pub end: Duration,
    pub read_units: f64,
    pub write_units: f64,
    /// Units were not in the answer (a failed write) and are the minimum AWS charges.
    pub units_estimated: bool,
}

impl Usage {
    /// One delivery's calls.
    pub fn of(calls: &[Call]) -> Usage {
        let spans: Vec<_> = calls.iter().map(|c| (c.start, c.end)).collect();
        Usage {
            sequential_calls: sequential_calls(&spans) as f64,
            aws_calls: calls.len() as f64,
            read_units: calls.iter().map(|c| c.read_units).sum(),
            write_units: calls.iter().map(|c| c.write_units).sum(),
            sqs_requests: calls.iter().filter(|c| c.service == Service::Sqs).count() as f64,
        }
    }
}

/// DynamoDB operations that accept `ReturnConsumedCapacity`.
const METERED: &[&str] = &[
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "Scan",
    "BatchGetItem",
    "BatchWriteItem",
    "TransactGetItems",
    "TransactWriteItems",
    "ExecuteStatement",
    "BatchExecuteStatement",
    "ExecuteTransaction",
];

fn is_read(operation: &str) -> bool {
    matches!(
        operation,
        "GetItem" | "Query" | "Scan" | "BatchGetItem" | "TransactGetItems"
    )
}

/// Service and operation: `X-Amz-Target` for the JSON protocols (DynamoDB,
/// and SQS, whose SDK speaks AWS JSON 1.0), else the SigV4 scope's service
/// and the query protocol's `Action`.
fn identify(request: &Recorded) -> (Service, String) {
    if let Some(target) = request.header("x-amz-target") {
        let (prefix, operation) = target.split_once('.').unwrap_or(("", target.as_str()));
        let service = if prefix.starts_with("DynamoDB") {
            Service::DynamoDb
        } else if prefix == "AmazonSQS" {
            Service::Sqs
        } else {
            Service::Other(prefix.to_string())
        };
        return (service, operation.to_string());
    }
    // Credential=AKID/20250101/us-east-1/<service>/aws4_request
    let scope_service = request
        .header("authorization")
        .and_then(|auth| {
            let credential = auth.split("Credential=").nth(1)?;
            credential.split('/').nth(3).map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into());
    let form = String::from_utf8_lossy(&request.body).into_owned();
    let action = url::form_urlencoded::parse(form.as_bytes())
        .chain(url::form_urlencoded::parse(
            request.query.as_deref().unwrap_or_default().as_bytes(),
        ))
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| format!("{} {}", request.method, request.path));
    let service = match scope_service.as_str() {
        "dynamodb" => Service::DynamoDb,
        "sqs" => Service::Sqs,
        other => Service::Other(other.to_string()),
    };
    (service, action)
}

/// Asks DynamoDB for the units of this request, unless the caller already did.
fn with_consumed_capacity(body: &[u8]) -> Option<Vec<u8>> {
    let mut json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = json.as_object_mut()?;
    if object.contains_key("ReturnConsumedCapacity") {
        return None;
    }
    object.insert("ReturnConsumedCapacity".into(), "TOTAL".into());
    serde_json::to_vec(&json).ok()
}

/// `(read, write)` units from a response's `ConsumedCapacity` (one object,
/// or one per table for batches and transactions).
pub fn consumed_units(operation: &str, response: &serde_json::Value) -> Option<(f64, f64)> {
    let consumed = response.get("ConsumedCapacity")?;
    let entries: Vec<&serde_json::Value> = match consumed {
        serde_json::Value::Array(list) => list.iter().collect(),
        other => vec![other],
    };
    let mut read = 0.0;
    let mut write = 0.0;
    for entry in entries {
        let number = |k: &str| entry.get(k).and_then(serde_json::Value::as_f64);
        match (
            number("ReadCapacityUnits"),
            number("WriteCapacityUnits"),
            number("CapacityUnits"),
        ) {
            (r, w, _) if r.is_some() || w.is_some() => {
                read += r.unwrap_or(0.0);
                write += w.unwrap_or(0.0);
            }
            (_, _, Some(total)) if is_read(operation) => read += total,
            (_, _, Some(total)) => write += total,
            _ => {}
        }
    }
    Some((read, write))
}

/// What AWS charges at least for a write that failed without reporting its
/// units: a refused condition still costs a write unit per item, twice in a
/// transaction. Reads that fail cost nothing worth counting here.
fn failed_write_minimum(operation: &str, request: &serde_json::Value) -> f64 {
    match operation {
        "TransactWriteItems" => {
            2.0 * request
                .get("TransactItems")
                .and_then(serde_json::Value::as_array)
                .map_or(1, Vec::len) as f64
        }
        "PutItem" | "UpdateItem" | "DeleteItem" => 1.0,
        _ => 0.0,
    }
}

#[derive(Default)]
struct Log {
    /// When each invocation was handed to the function.
    invocations: Vec<Duration>,
    calls: Vec<Call>,
}

/// Counting proxies for one function's run; stop when dropped.
pub struct Meter {
    epoch: Instant,
    log: Arc<Mutex<Log>>,
    dynamodb_url: String,
    moto_url: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Meter {
    /// Proxies in front of DynamoDB Local and moto.
    pub fn start(dynamodb_upstream: &str, moto_upstream: &str) -> Self {
        let epoch = Instant::now();
        let log = Arc::new(Mutex::new(Log::default()));
        let (dynamodb_url, dynamodb_task) = proxy(dynamodb_upstream, epoch, Arc::clone(&log));
        let (moto_url, moto_task) = proxy(moto_upstream, epoch, Arc::clone(&log));
        Self {
            epoch,
            log,
            dynamodb_url,
            moto_url,
            tasks: vec![dynamodb_task, moto_task],
        }
    }

    /// The proxy in front of DynamoDB Local.
    pub fn dynamodb_url(&self) -> &str {
        &self.dynamodb_url
    }

    /// The proxy in front of moto (SQS and the rest).
    pub fn moto_url(&self) -> &str {
        &self.moto_url
    }

    /// `env` with every AWS endpoint pointed at the proxies.
    pub fn env(&self, env: &[(String, String)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| !k.starts_with("AWS_ENDPOINT_URL"))
            .cloned()
            .collect();
        env.push(("AWS_ENDPOINT_URL".into(), self.moto_url.clone()));
        env.push(("AWS_ENDPOINT_URL_SQS".into(), self.moto_url.clone()));
        env.push((
            "AWS_ENDPOINT_URL_DYNAMODB".into(),
            self.dynamodb_url.clone(),
        ));
        env
    }

    /// Call before handing the function its next invocation: later requests are its.
    pub fn begin_invocation(&self) {
        let now = self.epoch.elapsed();
        lock(&self.log).invocations.push(now);
    }

    /// The calls of each invocation, in order.
    pub fn per_invocation(&self) -> Vec<Vec<Call>> {
        let log = lock(&self.log);
        let mut out: Vec<Vec<Call>> = vec![Vec::new(); log.invocations.len()];
        for call in &log.calls {
            // The last invocation that began before the call did.
            if let Some(index) = log.invocations.iter().rposition(|t| *t <= call.start) {
                out[index].push(call.clone());
            }
        }
        out
    }

    /// Mean use of the warm invocations (all but the first), and how many
    /// calls' units were estimated.
    pub fn warm_usage(&self) -> (Usage, usize) {
        let invocations = self.per_invocation();
        let warm = invocations.get(1..).unwrap_or_default();
        let estimated = warm.iter().flatten().filter(|c| c.units_estimated).count();
        let usage: Vec<Usage> = warm.iter().map(|calls| Usage::of(calls)).collect();
        (Usage::mean(&usage), estimated)
    }

    /// Operations of one warm invocation, for the report: `PutItem, SendMessage, ...`.
    pub fn warm_operations(&self) -> String {
        self.per_invocation()
            .get(1)
            .map(|calls| {
                calls
                    .iter()
                    .map(|c| c.operation.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn proxy(upstream: &str, epoch: Instant, log: Arc<Mutex<Log>>) -> (String, JoinHandle<()>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("proxy HTTP client");
    let upstream = upstream.trim_end_matches('/').to_string();
    serve(move |mut request: Recorded| {
        let start = epoch.elapsed();
        let http = http.clone();
        let upstream = upstream.clone();
        let log = Arc::clone(&log);
        async move {
            let (service, operation) = identify(&request);
            let metered = service == Service::DynamoDb && METERED.contains(&operation.as_str());
            let sent: serde_json::Value = if metered {
                serde_json::from_slice(&request.body).unwrap_or_default()
            } else {
                serde_json::Value::Null
            };
            if metered {
                if let Some(body) = with_consumed_capacity(&request.body) {
                    request.body = body.into();
                }
            }
            let response: Response = crate::faults::forward(&http, &upstream, request).await;
            let end = epoch.elapsed();
            let (mut read_units, mut write_units, mut units_estimated) = (0.0, 0.0, false);
            if metered {
                use http_body_util::BodyExt;
                let (parts, body) = response.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                match consumed_units(&operation, &answer) {
                    Some((r, w)) => (read_units, write_units) = (r, w),
                    None => {
                        write_units = failed_write_minimum(&operation, &sent);
                        units_estimated = write_units > 0.0;
                    }
                }
                lock(&log).calls.push(Call {
                    service,
                    operation,
                    start,
                    end,
                    read_units,
                    write_units,
                    units_estimated,
                });
                return Response::from_parts(parts, http_body_util::Full::new(bytes));
            }
            lock(&log).calls.push(Call {
                service,
                operation,
                start,
                end,
                read_units,
                write_units,
                units_estimated,
            });
            response
        }
    })
}

/// One function's row in the report.
#[derive(Debug, Clone)]
pub struct Row {
    pub function: String,
    pub warm_p50: Duration,
    pub warm_p99: Duration,
    pub usage: Usage,
    /// Calls whose units are a minimum estimate, over all warm invocations.
    pub estimated_units: usize,
    pub operations: String,
}

fn cell(x: f64) -> String {
    if (x - x.round()).abs() < 0.005 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// A figure measured before a change, for the before/after table.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    pub function: &'static str,
    pub commit: &'static str,
    pub warm_p50_ms: f64,
    pub warm_p99_ms: f64,
    pub usage: Usage,
    /// The stream consumer that now does the rest of this intake's work.
    pub stream: &'static str,
}

/// The recording intake before the one-write intake (issue 22): the
/// webhooks built from the commit named (write, send, then a conditional
/// update), benched on this machine with `BENCH_FUNCTIONS=zapier-webhook,exotel-webhook`.
pub const BEFORE: &[Baseline] = &[
    Baseline {
        function: "zapier-webhook",
        commit: "be1a69c",
        warm_p50_ms: BEFORE_ZAPIER_P50,
        warm_p99_ms: BEFORE_ZAPIER_P99,
        usage: BEFORE_USAGE,
        stream: "calls-stream",
    },
    Baseline {
        function: "exotel-webhook",
        commit: "be1a69c",
        warm_p50_ms: BEFORE_EXOTEL_P50,
        warm_p99_ms: BEFORE_EXOTEL_P99,
        usage: BEFORE_USAGE,
        stream: "calls-stream",
    },
    // The other intakes made one write (issue 22's second part): bab1693's
    // binaries and harness, `BENCH_FUNCTIONS=whatsapp-message,call-started,livekit-webhook`,
    // measured 2026-12-06 on the same machine as the after figures.
    Baseline {
        function: "livekit-webhook",
        commit: "bab1693",
        warm_p50_ms: 33.58,
        warm_p99_ms: 73.41,
        usage: Usage {
            sequential_calls: 5.0,
            aws_calls: 6.0,
            read_units: 0.0,
            write_units: 5.0,
            sqs_requests: 1.0,
        },
        stream: "calls-stream",
    },
    Baseline {
        function: "call-started",
        commit: "bab1693",
        warm_p50_ms: 36.40,
        warm_p99_ms: 52.58,
        usage: Usage {
            sequential_calls: 7.0,
            aws_calls: 8.0,
            read_units: 1.0,
            write_units: 6.0,
            sqs_requests: 1.0,
        },
        stream: "calls-stream",
    },
    Baseline {
        function: "whatsapp-message",
        commit: "bab1693",
        warm_p50_ms: 21.16,
        warm_p99_ms: 36.54,
        usage: Usage {
            sequential_calls: 5.0,
            aws_calls: 5.0,
            read_units: 1.0,
            write_units: 6.0,
            sqs_requests: 1.0,
        },
        stream: "whatsapp-stream",
    },
];

// Warm p50 and p99 (ms) of those builds, 200 warm invocations each,
// measured 2026-12-06 (the same run as the after figures in docs/performance.md).
const BEFORE_ZAPIER_P50: f64 = 24.74;
const BEFORE_ZAPIER_P99: f64 = 65.78;
const BEFORE_EXOTEL_P50: f64 = 23.26;
const BEFORE_EXOTEL_P99: f64 = 35.35;

const BEFORE_USAGE: Usage = Usage {
    sequential_calls: 3.0,
    aws_calls: 4.0,
    read_units: 0.0,
    write_units: 9.0,
    sqs_requests: 1.0,
};

/// The report's cost section: one row per function, the calls stream's
/// share per new call, and before/after for the functions with a
/// [`BEFORE`] figure (after: the webhook alone, then with its stream share).
pub fn report(rows: &[Row], warm_invocations: usize, streams: &[(String, StreamShare)]) -> String {
    let p = US_EAST_1;
    let mut out = String::from(
        "\n## AWS calls and cost per delivery\n\n| function | sequential AWS calls | AWS calls | DynamoDB RRU | DynamoDB WRU | SQS requests | warm p50 (ms) | $ per million deliveries | of which DynamoDB | calls of one delivery |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let cost = cost_per_million(&p, row.warm_p50, &row.usage);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {}{} | {} | {:.2} | {:.2} | {:.2} | {} |\n",
            row.function,
            cell(row.usage.sequential_calls),
            cell(row.usage.aws_calls),
            cell(row.usage.read_units),
            cell(row.usage.write_units),
            if row.estimated_units > 0 { "*" } else { "" },
            cell(row.usage.sqs_requests),
            row.warm_p50.as_secs_f64() * 1000.0,
            cost.total(),
            cost.dynamodb,
            row.operations,
        ));
    }
    for (function, share) in streams {
        out.push_str(&format!(
            "\n### {function}'s share per new record\n\n{} warm batches of {} new records in all (the records the intake benches above wrote, read from the stream with the template's filter and batch size): per record, {} AWS calls, {} DynamoDB WRU, {} SQS requests; ${:.3} per million new records (Lambda ${:.3}, SQS ${:.3}, DynamoDB ${:.3}). At one record per batch (a quiet hour) a record bears a whole invocation. calls-stream's records are the recording intakes' calls and the call starts together when both were benched; bench them apart (`BENCH_FUNCTIONS`) for each kind's share.\n",
            share.batches,
            share.records,
            cell(share.usage.aws_calls),
            cell(share.usage.write_units),
            cell(share.usage.sqs_requests),
            share.cost.total(),
            share.cost.lambda,
            share.cost.sqs,
            share.cost.dynamodb,
        ));
    }
    let before: Vec<(&Baseline, &Row)> = BEFORE
        .iter()
        .filter_map(|b| {
            rows.iter()
                .find(|r| r.function == b.function)
                .map(|r| (b, r))
        })
        .collect();
    if !before.is_empty() {
        out.push_str("\n### Intake before and after\n\n| function | | sequential AWS calls | AWS calls | DynamoDB RRU | DynamoDB WRU | SQS requests | warm p50 (ms) | warm p99 (ms) | $ per million deliveries |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for (b, row) in before {
            let ms = |x: f64| Duration::from_secs_f64(x / 1000.0);
            let mut lines = vec![
                (
                    format!("before ({})", b.commit),
                    b.usage,
                    ms(b.warm_p50_ms),
                    ms(b.warm_p99_ms),
                    cost_per_million(&p, ms(b.warm_p50_ms), &b.usage).total(),
                ),
                (
                    "after: the webhook".to_string(),
                    row.usage,
                    row.warm_p50,
                    row.warm_p99,
                    cost_per_million(&p, row.warm_p50, &row.usage).total(),
                ),
            ];
            if let Some((_, share)) = streams.iter().find(|(f, _)| f == b.stream) {
                let with = Usage {
                    sequential_calls: row.usage.sequential_calls,
                    aws_calls: row.usage.aws_calls + share.usage.aws_calls,
                    read_units: row.usage.read_units + share.usage.read_units,
                    write_units: row.usage.write_units + share.usage.write_units,
                    sqs_requests: row.usage.sqs_requests + share.usage.sqs_requests,
                };
                lines.push((
                    format!("after: with its {} share", b.stream),
                    with,
                    row.warm_p50,
                    row.warm_p99,
                    cost_per_million(&p, row.warm_p50, &row.usage).total() + share.cost.total(),
                ));
            }
            for (label, usage, p50, p99, dollars) in lines {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} |\n",
                    b.function,
                    label,
                    cell(usage.sequential_calls),
                    cell(usage.aws_calls),
                    cell(usage.read_units),
                    cell(usage.write_units),
                    cell(usage.sqs_requests),
                    p50.as_secs_f64() * 1000.0,
                    p99.as_secs_f64() * 1000.0,
                    dollars,
                ));
            }
        }
    }
    out.push_str(&format!(
        "\nPer delivery, the mean over {warm_invocations} warm invocations of a separate run through a counting proxy in front of DynamoDB Local and moto (the warm p50 is the latency table's, measured without the proxy). Sequential AWS calls: the longest chain of requests each starting after the previous one ended (overlapping requests count once). DynamoDB units are what DynamoDB Local reports with `ReturnConsumedCapacity: TOTAL` (1 WRU per KB written, 1 RRU per 4 KB strongly consistent read, twice that in a transaction); `*` marks rows where a failed conditional write reported none and the minimum AWS charges (1 WRU per item, 2 in a transaction) was counted. Cost per million deliveries at us-east-1 list prices checked on {PRICES_CHECKED}: API Gateway HTTP API ${:.2} per million requests (first 300 M a month); Lambda arm64 at {} MB ${:.2} per million requests + ${} per GB-second of the warm p50, billed per ms; SQS ${:.2} per million requests; DynamoDB on-demand ${:.3} per million WRU and ${:.3} per million RRU. No free tier; storage, data transfer and logs are not included.\n",
        p.http_api_per_million,
        p.lambda_memory_mb,
        p.lambda_request_per_million,
        p.lambda_gb_second,
        p.sqs_request_per_million,
        p.dynamodb_wru_per_million,
        p.dynamodb_rru_per_million,
    ));
    out
}

/// `BENCH_FUNCTIONS` (comma-separated) limits the bench to those functions.
pub fn selected(function: &str) -> bool {
    match std::env::var("BENCH_FUNCTIONS") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|f| f.trim() == function),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(a: u64, b: u64) -> (Duration, Duration) {
        (Duration::from_millis(a), Duration::from_millis(b))
    }

    #[test]
    fn calls_one_after_another_form_a_chain_and_overlapping_ones_count_once() {
        assert_eq!(sequential_calls(&[]), 0);
        assert_eq!(sequential_calls(&[ms(0, 5)]), 1);
        // claim, create, send, update, complete, counter: six in a row.
        let six: Vec<_> = (0..6).map(|i| ms(i * 10, i * 10 + 8)).collect();
        assert_eq!(sequential_calls(&six), 6);
        // write; send; update and counter together.
        assert_eq!(
            sequential_calls(&[ms(0, 8), ms(10, 15), ms(16, 22), ms(16, 21)]),
            3
        );
        // A long call overlapping two short ones in a row: the short ones chain.
        assert_eq!(sequential_calls(&[ms(0, 30), ms(1, 10), ms(12, 20)]), 2);
        // Touching ends still count as one after another.
        assert_eq!(sequential_calls(&[ms(0, 5), ms(5, 9)]), 2);
        // Order of the input does not matter.
        assert_eq!(
            sequential_calls(&[ms(16, 22), ms(10, 15), ms(16, 21), ms(0, 8)]),
            3
        );
    }

    #[test]
    fn lambda_bills_every_started_millisecond() {
        assert_eq!(billed_ms(Duration::from_micros(1)), 1);
        assert_eq!(billed_ms(Duration::from_micros(1000)), 1);
        assert_eq!(billed_ms(Duration::from_micros(1001)), 2);
        assert_eq!(billed_ms(Duration::from_micros(12_300)), 13);
        assert_eq!(billed_ms(Duration::ZERO), 1);
    }

    #[test]
    fn cost_adds_each_service_at_its_price() {
        let usage = Usage {
            sequential_calls: 3.0,
            aws_calls: 4.0,
            read_units: 2.0,
            write_units: 6.0,
            sqs_requests: 1.0,
        };
        let cost = cost_per_million(&US_EAST_1, Duration::from_millis(10), &usage);
        assert!((cost.api_gateway - 1.0).abs() < 1e-9);
        // 0.125 GB x 0.010 s x $0.0000133334 x 1e6 + $0.20
        assert!(
            (cost.lambda - (0.20 + 0.016_666_75)).abs() < 1e-9,
            "{cost:?}"
        );
        assert!((cost.sqs - 0.40).abs() < 1e-9);
        assert!((cost.dynamodb - (6.0 * 0.625 + 2.0 * 0.125)).abs() < 1e-9);
        assert!((cost.total() - (1.0 + 0.216_666_75 + 0.40 + 4.0)).abs() < 1e-9);
    }

    #[test]
    fn units_are_read_from_single_and_listed_capacities() {
        let single =
            serde_json::json!({"ConsumedCapacity": {"TableName": "t", "CapacityUnits": 1.0}});
        assert_eq!(consumed_units("PutItem", &single), Some((0.0, 1.0)));
        assert_eq!(consumed_units("GetItem", &single), Some((1.0, 0.0)));
        let listed = serde_json::json!({"ConsumedCapacity": [
            {"TableName": "a", "CapacityUnits": 4.0, "WriteCapacityUnits": 4.0},
            {"TableName": "b", "CapacityUnits": 2.0}
        ]});
        assert_eq!(
            consumed_units("TransactWriteItems", &listed),
            Some((0.0, 6.0))
        );
        assert_eq!(consumed_units("PutItem", &serde_json::json!({})), None);
        let sent = serde_json::json!({"TransactItems": [{}, {}]});
        assert_eq!(failed_write_minimum("TransactWriteItems", &sent), 4.0);
        assert_eq!(failed_write_minimum("PutItem", &sent), 1.0);
        assert_eq!(failed_write_minimum("GetItem", &sent), 0.0);
    }

    #[test]
    fn consumed_capacity_is_asked_for_once() {
        let body = with_consumed_capacity(br#"{"TableName":"t"}"#).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["ReturnConsumedCapacity"], "TOTAL");
        assert!(with_consumed_capacity(br#"{"ReturnConsumedCapacity":"NONE"}"#).is_none());
        assert!(with_consumed_capacity(b"Action=SendMessage").is_none());
    }

    #[test]
    fn a_delivery_sums_its_calls() {
        let call = |service: Service, start: u64, end: u64, w: f64| Call {
            service,
            operation: "x".into(),
            start: Duration::from_millis(start),
            end: Duration::from_millis(end),
            read_units: 0.0,
            write_units: w,
            units_estimated: false,
        };
        let usage = Usage::of(&[
            call(Service::DynamoDb, 0, 5, 4.0),
            call(Service::Sqs, 6, 9, 0.0),
            call(Service::DynamoDb, 10, 14, 2.0),
            call(Service::DynamoDb, 10, 13, 1.0),
        ]);
        assert_eq!(usage.sequential_calls, 3.0);
        assert_eq!(usage.aws_calls, 4.0);
        assert_eq!(usage.write_units, 7.0);
        assert_eq!(usage.sqs_requests, 1.0);
        let mean = Usage::mean(&[usage, Usage::default()]);
        assert_eq!(mean.write_units, 3.5);
    }
}
