//! Fake Twilio REST API (2010-04-01): Create Call, Fetch Call, end call and
//! Create Message (WhatsApp), plus the `X-Twilio-Signature` algorithm so
//! tests can sign the webhooks they send. Switches drop a share of status
//! callbacks (the call still happens) and fail Fetch Call requests.

use std::collections::{HashMap, VecDeque};
use std::future::ready;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Value};
use sha1::Sha1;

use super::{json_response, lock, Recorded, Response, Server};

const API_PREFIX: &str = "/2010-04-01/Accounts/";

/// Form pairs of one request, in wire order, repeated keys kept.
type Form = Vec<(String, String)>;

/// A scripted error for the next `remaining` create-call requests.
struct Failure {
    remaining: u32,
    status: StatusCode,
    code: u32,
    message: String,
}

struct State {
    /// Every account this fake serves: Account SID -> auth token. Requests
    /// authenticate as the account in their path (HTTP Basic
    /// `AccountSid:AuthToken`), and its callbacks are signed with its token.
    accounts: Mutex<HashMap<String, String>>,
    /// Call sid -> Call JSON as last returned.
    calls: Arc<Mutex<HashMap<String, Value>>>,
    /// Accepted Create Call forms with the account that placed them and
    /// the sid each call got.
    created: Mutex<Vec<(String, String, Form)>>,
    ended: Mutex<Vec<(String, String)>>,
    failure: Mutex<Option<Failure>>,
    /// When set, each placed call "happens": TwiML is fetched and status
    /// callbacks are sent, signed, ending with these durations (seconds),
    /// one per call in turn.
    simulate: Mutex<Option<Vec<u64>>>,
    /// Percent of simulated calls whose status callbacks are never sent;
    /// such a call ends at once (its Call resource says so).
    drop_percent: Mutex<u8>,
    /// Scripted answers to the next Fetch Call requests.
    read_failures: Mutex<Option<ReadFailure>>,
    /// Fetch Call requests received, answered or not.
    call_reads: Mutex<usize>,
    /// Accepted Create Message forms with their account, in order.
    messages: Mutex<Vec<(String, Form)>>,
    /// Scripted answers to the next Create Message requests, in order.
    message_failures: Mutex<VecDeque<Failure>>,
    /// One scripted answer for the request after this many accepted messages.
    failure_after: Mutex<Option<(usize, Failure)>>,
    /// Statuses posted (signed) to each accepted message's `StatusCallback`.
    message_statuses: Mutex<Vec<String>>,
    /// Message sid -> Message JSON as it stands (statuses move it on).
    message_states: Arc<Mutex<HashMap<String, Value>>>,
    /// Message status callbacks are lost: the statuses still happen, as
    /// Fetch Message shows, but nothing is posted.
    drop_message_statuses: Mutex<bool>,
}

/// A scripted error for the next `remaining` Fetch Call requests.
struct ReadFailure {
    remaining: u32,
    status: StatusCode,
    retry_after_secs: Option<u64>,
}

/// Fake Twilio server; stops when dropped.
pub struct FakeTwilio {
    server: Server,
    state: Arc<State>,
}

impl FakeTwilio {
    /// Starts the fake; every request needs HTTP Basic `account_sid:auth_token`,
    /// and only `/2010-04-01/Accounts/{account_sid}/...` exists.
    pub fn start(account_sid: &str, auth_token: &str) -> Self {
        let state = Arc::new(State {
            accounts: Mutex::new(HashMap::from([(
                account_sid.to_owned(),
                auth_token.to_owned(),
            )])),
            calls: Arc::default(),
            created: Mutex::default(),
            ended: Mutex::default(),
            failure: Mutex::default(),
            simulate: Mutex::default(),
            drop_percent: Mutex::default(),
            read_failures: Mutex::default(),
            call_reads: Mutex::default(),
            messages: Mutex::default(),
            message_failures: Mutex::default(),
            failure_after: Mutex::default(),
            message_statuses: Mutex::default(),
            message_states: Arc::default(),
            drop_message_statuses: Mutex::default(),
        });
        let handler_state = Arc::clone(&state);
        let server = Server::start("127.0.0.1:0", move |req| ready(handler_state.handle(&req)));
        Self { server, state }
    }

    /// Serves another account (a subaccount or another customer's), with
    /// its own SID and auth token; requests under its path must authenticate
    /// as it, and its callbacks are signed with its token.
    pub fn add_account(&self, account_sid: &str, auth_token: &str) {
        lock(&self.state.accounts).insert(account_sid.to_owned(), auth_token.to_owned());
    }

    /// Form pairs of each Create Call `account_sid` accepted, in order.
    pub fn created_calls_of(&self, account_sid: &str) -> Vec<Vec<(String, String)>> {
        lock(&self.state.created)
            .iter()
            .filter(|(account, _, _)| account == account_sid)
            .map(|(_, _, form)| form.clone())
            .collect()
    }

    /// Sids of the calls `account_sid` ended, in order.
    pub fn ended_calls_of(&self, account_sid: &str) -> Vec<String> {
        lock(&self.state.ended)
            .iter()
            .filter(|(account, _)| account == account_sid)
            .map(|(_, sid)| sid.clone())
            .collect()
    }

    /// Form pairs of each Create Message `account_sid` accepted, in order.
    pub fn sent_messages_of(&self, account_sid: &str) -> Vec<Vec<(String, String)>> {
        lock(&self.state.messages)
            .iter()
            .filter(|(account, _)| account == account_sid)
            .map(|(_, form)| form.clone())
            .collect()
    }

    /// Makes every call placed from now on play out like a real one (for
    /// `make dev`): Twilio fetches the TwiML `Url`, then posts `ringing`,
    /// `in-progress` and `completed` (with `CallDuration`) to `StatusCallback`,
    /// each signed with the auth token.
    pub fn simulate_calls(&self, duration_secs: u64) {
        self.simulate_call_durations(&[duration_secs]);
    }

    /// [`FakeTwilio::simulate_calls`] with each call lasting the next of
    /// `durations` in turn.
    pub fn simulate_call_durations(&self, durations: &[u64]) {
        assert!(!durations.is_empty(), "at least one duration");
        *lock(&self.state.simulate) = Some(durations.to_vec());
    }

    /// Drops the status callbacks of `percent` of the simulated calls placed
    /// from now on (every call whose number, counted from 0, is below
    /// `percent` modulo 100), as a lost webhook: the call still happens and
    /// has ended at once, as Fetch Call shows; nothing is posted.
    pub fn drop_status_callbacks(&self, percent: u8) {
        *lock(&self.state.drop_percent) = percent.min(100);
    }

    /// Where a call stands now, as Twilio's call progress would move it:
    /// `status` with `duration` (seconds) once it ended. For tests that
    /// place calls without simulating them.
    pub fn advance_call(&self, sid: &str, status: &str, duration_secs: Option<u64>) {
        let mut calls = lock(&self.state.calls);
        let call = calls.get_mut(sid).expect("a call this fake placed");
        set_progress(call, status, duration_secs);
    }

    /// The next `n` Fetch Call requests answer `status` (a 5xx outage or a
    /// 429) with Twilio's error JSON and, when given, `Retry-After`.
    pub fn fail_call_reads(&self, n: u32, status: u16, retry_after_secs: Option<u64>) {
        *lock(&self.state.read_failures) = Some(ReadFailure {
            remaining: n,
            status: StatusCode::from_u16(status).expect("valid HTTP status"),
            retry_after_secs,
        });
    }

    /// Fetch Call requests received so far, answered or not.
    pub fn call_reads(&self) -> usize {
        *lock(&self.state.call_reads)
    }

    /// The Call resource of `sid` as Fetch Call returns it.
    pub fn call(&self, sid: &str) -> Option<Value> {
        lock(&self.state.calls).get(sid).cloned()
    }

    /// Stands in for `https://api.twilio.com`.
    pub fn base_url(&self) -> &str {
        &self.server.base_url
    }

    /// The next `n` authenticated Create Call requests answer `status` with
    /// Twilio's error JSON (`code`, `message`, `more_info`, `status`).
    pub fn fail_next_calls(&self, n: u32, status: u16, code: u32, message: &str) {
        let status = StatusCode::from_u16(status).expect("valid HTTP status");
        *lock(&self.state.failure) = Some(Failure {
            remaining: n,
            status,
            code,
            message: message.to_owned(),
        });
    }

    /// The next Create Message request answers `status` with Twilio's error
    /// JSON (`{"code", "message", "more_info", "status"}`) and sends nothing;
    /// calls queue up, one answer per request. 63016 is WhatsApp's "outside
    /// the 24-hour window"; a 500 stands in for an outage.
    pub fn fail_next_message(&self, status: u16, code: u32, message: &str) {
        lock(&self.state.message_failures).push_back(Failure {
            remaining: 1,
            status: StatusCode::from_u16(status).expect("valid HTTP status"),
            code,
            message: message.to_owned(),
        });
    }

    /// The first Create Message request after `accepted` messages were
    /// accepted answers like `fail_next_message` (a failure mid-sequence).
    pub fn fail_message_after(&self, accepted: usize, status: u16, code: u32, message: &str) {
        *lock(&self.state.failure_after) = Some((
            accepted,
            Failure {
                remaining: 1,
                status: StatusCode::from_u16(status).expect("valid HTTP status"),
                code,
                message: message.to_owned(),
            },
        ));
    }

    /// Makes every accepted message report these statuses (e.g. `sent`,
    /// `delivered`, `read`) to its `StatusCallback`, signed, like Twilio.
    pub fn simulate_message_statuses(&self, statuses: &[&str]) {
        *lock(&self.state.message_statuses) = statuses.iter().map(|s| s.to_string()).collect();
    }

    /// Loses every message status callback from now on: the statuses of
    /// [`FakeTwilio::simulate_message_statuses`] still happen at once (Fetch
    /// Message shows the last), but none is posted.
    pub fn drop_message_status_callbacks(&self) {
        *lock(&self.state.drop_message_statuses) = true;
    }

    /// Form pairs of each accepted (201) Create Message, in order.
    pub fn sent_messages(&self) -> Vec<Vec<(String, String)>> {
        lock(&self.state.messages)
            .iter()
            .map(|(_, form)| form.clone())
            .collect()
    }

    /// Create Message requests received, accepted or not.
    pub fn message_requests(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.ends_with("/Messages.json"))
            .count()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// Form pairs of each accepted (201) Create Call, in order, repeated keys kept.
    pub fn created_calls(&self) -> Vec<Vec<(String, String)>> {
        lock(&self.state.created)
            .iter()
            .map(|(_, _, form)| form.clone())
            .collect()
    }

    /// Each accepted Create Call's sid with its form, in order: what Twilio
    /// knows of a call whose answer the caller may never have read.
    pub fn created_calls_with_sids(&self) -> Vec<(String, Vec<(String, String)>)> {
        lock(&self.state.created)
            .iter()
            .map(|(_, sid, form)| (sid.clone(), form.clone()))
            .collect()
    }

    /// Sids of accepted end-call requests, in order (a call ended twice appears twice).
    pub fn ended_calls(&self) -> Vec<String> {
        lock(&self.state.ended)
            .iter()
            .map(|(_, sid)| sid.clone())
            .collect()
    }
}

impl State {
    fn handle(&self, req: &Recorded) -> Response {
        let Some((account, auth_token)) = self.authorized(req) else {
            let mut response = error(StatusCode::UNAUTHORIZED, 20003, "Authenticate".to_owned());
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Twilio API\""),
            );
            return response;
        };
        let not_found = || not_found(&req.path);
        let Some(rest) = req.path.strip_prefix(API_PREFIX) else {
            return not_found();
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let account = Account {
            sid: account,
            auth_token,
        };
        match (req.method.as_str(), segments.as_slice()) {
            // Another account's resources do not exist for this one.
            (_, [path_account, ..]) if *path_account != account.sid => not_found(),
            ("POST", [_, "Calls.json"]) => self.create_call(&account, form(req)),
            ("GET", [_, "Calls.json"]) => self.list_calls(&account, req.query.as_deref()),
            ("POST", [_, "Messages.json"]) => self.create_message(&account, form(req)),
            ("POST", [_, "Calls", file]) => match file.strip_suffix(".json") {
                Some(sid) => self.update_call(&account, sid, &form(req), &req.path),
                None => not_found(),
            },
            ("GET", [_, "Calls", file]) => match file.strip_suffix(".json") {
                Some(sid) => self.fetch_call(&account, sid, &req.path),
                None => not_found(),
            },
            ("GET", [_, "Messages", file]) => match file.strip_suffix(".json") {
                Some(sid) => match lock(&self.message_states)
                    .get(sid)
                    .filter(|m| m["account_sid"] == json!(account.sid))
                {
                    Some(message) => json_response(StatusCode::OK, message.clone()),
                    None => not_found(),
                },
                None => not_found(),
            },
            _ => not_found(),
        }
    }

    /// The account the request authenticated as (HTTP Basic
    /// `AccountSid:AuthToken` of one of the accounts served), and its token.
    fn authorized(&self, req: &Recorded) -> Option<(String, String)> {
        let value = req.header("authorization")?;
        let (scheme, encoded) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
        let (sid, token) = decoded.split_once(':')?;
        let known = lock(&self.accounts).get(sid)?.clone();
        (known == token).then(|| (sid.to_owned(), known))
    }

    /// Takes one scripted failure, if any are left.
    fn scripted_failure(&self) -> Option<Response> {
        let mut slot = lock(&self.failure);
        let failure = slot.as_mut().filter(|f| f.remaining > 0)?;
        failure.remaining -= 1;
        Some(error(failure.status, failure.code, failure.message.clone()))
    }

    fn create_call(&self, account: &Account, form: Form) -> Response {
        if let Some(response) = self.scripted_failure() {
            return response;
        }
        let get = |key: &str| {
            form.iter()
                .find(|(k, v)| k == key && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        // Twilio validates To, then From, then the call instructions.
        let Some(to) = get("To") else {
            return bad_request(21201, "A 'To' phone number is required.");
        };
        let Some(from) = get("From") else {
            return bad_request(21213, "A 'From' phone number is required.");
        };
        if get("Url").is_none() && get("Twiml").is_none() {
            return bad_request(21205, "Url parameter is required.");
        }
        let sid = new_call_sid();
        let now = twilio_date();
        let call = json!({
            "sid": sid,
            "account_sid": account.sid,
            "to": to,
            "from": from,
            "status": "queued",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": now,
            "date_updated": now,
            "start_time": null,
            "end_time": null,
            "duration": null,
            "uri": format!("{API_PREFIX}{}/Calls/{sid}.json", account.sid),
        });
        let mut call = call;
        let placed = lock(&self.created).len();
        let simulate = lock(&self.simulate)
            .as_ref()
            .map(|durations| durations[placed % durations.len()]);
        let dropped = simulate.is_some() && (placed % 100) < usize::from(*lock(&self.drop_percent));
        if let (Some(duration), true) = (simulate, dropped) {
            // Nobody will hear about it: the call has already happened.
            set_progress(&mut call, "completed", Some(duration));
        }
        lock(&self.calls).insert(sid.clone(), call.clone());
        if let Some(duration) = simulate {
            let callbacks = PlacedCall {
                calls: Arc::clone(&self.calls),
                dropped,
                sid,
                account_sid: account.sid.clone(),
                auth_token: account.auth_token.clone(),
                to,
                from,
                twiml_url: get("Url"),
                status_callback: get("StatusCallback"),
                duration,
            };
            tokio::spawn(callbacks.play());
        }
        let created_sid = call["sid"].as_str().unwrap_or_default().to_string();
        lock(&self.created).push((account.sid.clone(), created_sid, form));
        // The answer shows the call as placed, whatever happened since.
        call["status"] = json!("queued");
        call["duration"] = Value::Null;
        call["start_time"] = Value::Null;
        call["end_time"] = Value::Null;
        json_response(StatusCode::CREATED, call)
    }

    /// Read Multiple Call Resources, filtered by `To` and `From`, newest
    /// first, in one page (`PageSize`, default 50).
    fn list_calls(&self, account: &Account, query: Option<&str>) -> Response {
        let filters: Form = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
        let filter = |key: &str| {
            filters
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let size: usize = filter("PageSize")
            .and_then(|s| s.parse().ok())
            .unwrap_or(50);
        let created_at = |call: &Value| {
            call["date_created"]
                .as_str()
                .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
                .map(|d| d.timestamp())
                .unwrap_or(0)
        };
        let mut listed: Vec<Value> = lock(&self.calls)
            .values()
            .filter(|c| c["account_sid"] == json!(account.sid))
            .cloned()
            .collect();
        listed.sort_by_key(|c| std::cmp::Reverse(created_at(c)));
        let matches = |call: &Value, key: &str, field: &str| {
            filter(key).is_none_or(|wanted| call[field].as_str() == Some(wanted.as_str()))
        };
        let page: Vec<Value> = listed
            .into_iter()
            .filter(|c| matches(c, "To", "to") && matches(c, "From", "from"))
            .take(size)
            .collect();
        json_response(
            StatusCode::OK,
            json!({
                "calls": page,
                "page": 0,
                "page_size": size,
                "uri": format!("{API_PREFIX}{}/Calls.json", account.sid),
                "next_page_uri": null,
            }),
        )
    }

    fn fetch_call(&self, account: &Account, sid: &str, path: &str) -> Response {
        *lock(&self.call_reads) += 1;
        {
            let mut slot = lock(&self.read_failures);
            if let Some(failure) = slot.as_mut().filter(|f| f.remaining > 0) {
                failure.remaining -= 1;
                let mut response = error(
                    failure.status,
                    if failure.status == StatusCode::TOO_MANY_REQUESTS {
                        20429
                    } else {
                        20500
                    },
                    "Fake Twilio: scripted failure".to_owned(),
                );
                if let Some(secs) = failure.retry_after_secs {
                    response.headers_mut().insert(
                        header::RETRY_AFTER,
                        HeaderValue::from_str(&secs.to_string()).expect("digits"),
                    );
                }
                return response;
            }
        }
        match lock(&self.calls)
            .get(sid)
            .filter(|call| call["account_sid"] == json!(account.sid))
        {
            Some(call) => json_response(StatusCode::OK, call.clone()),
            None => not_found(path),
        }
    }

    fn create_message(&self, account: &Account, form: Form) -> Response {
        if let Some(failure) = lock(&self.message_failures).pop_front() {
            return error(failure.status, failure.code, failure.message);
        }
        let accepted = lock(&self.messages).len();
        let mut after = lock(&self.failure_after);
        if after.as_ref().is_some_and(|(n, _)| *n == accepted) {
            let (_, failure) = after.take().expect("checked above");
            return error(failure.status, failure.code, failure.message);
        }
        drop(after);
        let get = |key: &str| {
            form.iter()
                .find(|(k, v)| k == key && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        let Some(to) = get("To") else {
            return bad_request(21604, "A 'To' phone number is required.");
        };
        let Some(from) = get("From") else {
            return bad_request(21603, "A 'From' phone number is required.");
        };
        if get("Body").is_none() && get("ContentSid").is_none() && get("MediaUrl").is_none() {
            return bad_request(
                21619,
                "A text message body or media urls must be specified.",
            );
        }
        if let Some(variables) = get("ContentVariables") {
            if serde_json::from_str::<serde_json::Map<String, Value>>(&variables).is_err() {
                return bad_request(21656, "The ContentVariables Parameter is invalid.");
            }
        }
        let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
        let now = twilio_date();
        let message = json!({
            "sid": sid,
            "account_sid": account.sid,
            "to": to,
            "from": from,
            "body": get("Body").unwrap_or_default(),
            "status": "queued",
            "direction": "outbound-api",
            "num_media": "0",
            "num_segments": "1",
            "price": null,
            "error_code": null,
            "error_message": null,
            "api_version": "2010-04-01",
            "date_created": now,
            "date_updated": now,
            "date_sent": null,
            "messaging_service_sid": null,
            "uri": format!("{API_PREFIX}{}/Messages/{sid}.json", account.sid),
            "subresource_uris": {"media": format!("{API_PREFIX}{}/Messages/{sid}/Media.json", account.sid)},
        });
        let statuses = lock(&self.message_statuses).clone();
        let mut state = message.clone();
        if *lock(&self.drop_message_statuses) {
            if let Some(last) = statuses.last() {
                state["status"] = json!(last);
            }
            lock(&self.message_states).insert(sid.clone(), state);
            lock(&self.messages).push((account.sid.clone(), form));
            return json_response(StatusCode::CREATED, message);
        }
        lock(&self.message_states).insert(sid.clone(), state);
        if let (Some(callback), false) = (get("StatusCallback"), statuses.is_empty()) {
            let posts = MessageCallbacks {
                states: Arc::clone(&self.message_states),
                sid: sid.clone(),
                account_sid: account.sid.clone(),
                auth_token: account.auth_token.clone(),
                to,
                from,
                callback,
                statuses,
            };
            tokio::spawn(posts.play());
        }
        lock(&self.messages).push((account.sid.clone(), form));
        json_response(StatusCode::CREATED, message)
    }

    /// Only ending a call (`Status=completed`) is supported; other updates are
    /// rejected loudly so a test notices it relies on something the fake lacks.
    fn update_call(&self, account: &Account, sid: &str, form: &Form, path: &str) -> Response {
        let mut calls = lock(&self.calls);
        // Another account's call does not exist for this one.
        let Some(call) = calls
            .get_mut(sid)
            .filter(|call| call["account_sid"] == json!(account.sid))
        else {
            return not_found(path);
        };
        let status = form.iter().find(|(k, _)| k == "Status").map(|(_, v)| v);
        if status.map(String::as_str) != Some("completed") {
            return bad_request(
                20001,
                "Fake Twilio only supports ending a call with Status=completed",
            );
        }
        let now = twilio_date();
        call["status"] = json!("completed");
        call["date_updated"] = json!(now);
        call["end_time"] = json!(now);
        let call = call.clone();
        drop(calls);
        lock(&self.ended).push((account.sid.clone(), sid.to_owned()));
        json_response(StatusCode::OK, call)
    }
}

/// The account a request authenticated as.
struct Account {
    sid: String,
    auth_token: String,
}

fn form(req: &Recorded) -> Form {
    url::form_urlencoded::parse(&req.body)
        .into_owned()
        .collect()
}

/// Moves a Call resource to `status`, as Twilio's would: its start time
/// once answered, its end time and duration (a string, as Twilio sends it)
/// once ended.
fn set_progress(call: &mut Value, status: &str, duration_secs: Option<u64>) {
    let now = twilio_date();
    call["status"] = json!(status);
    call["date_updated"] = json!(now);
    if status == "in-progress" && call["start_time"].is_null() {
        call["start_time"] = json!(now);
    }
    if matches!(
        status,
        "completed" | "busy" | "failed" | "no-answer" | "canceled"
    ) {
        call["end_time"] = json!(now);
        let talked = if status == "completed" {
            duration_secs.unwrap_or(0)
        } else {
            0
        };
        call["duration"] = json!(talked.to_string());
    }
}

/// A fresh call sid: `CA` + 32 lowercase hex digits, like Twilio's.
/// A simulated call's callbacks, sent the way Twilio sends them.
struct PlacedCall {
    /// The fake's calls: progress is recorded as it is posted.
    calls: Arc<Mutex<HashMap<String, Value>>>,
    /// Its status callbacks are lost (not sent).
    dropped: bool,
    sid: String,
    account_sid: String,
    auth_token: String,
    to: String,
    from: String,
    twiml_url: Option<String>,
    status_callback: Option<String>,
    duration: u64,
}

impl PlacedCall {
    async fn post(
        &self,
        http: &reqwest::Client,
        url: &str,
        status: &str,
        duration: Option<String>,
    ) {
        if self.status_callback.as_deref() == Some(url) {
            // A dropped call ended when it was placed; nothing is posted.
            if self.dropped {
                return;
            }
            let seconds = duration.as_deref().and_then(|d| d.parse().ok());
            if let Some(call) = lock(&self.calls).get_mut(&self.sid) {
                set_progress(call, status, seconds);
            }
        }
        let mut params: Vec<(&str, &str)> = vec![
            ("CallSid", &self.sid),
            ("AccountSid", &self.account_sid),
            ("From", &self.from),
            ("To", &self.to),
            ("CallStatus", status),
            ("Direction", "outbound-api"),
        ];
        if let Some(duration) = duration.as_deref() {
            params.push(("CallDuration", duration));
        }
        let signature = twilio_signature(&self.auth_token, url, &params);
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&params)
            .finish();
        let sent = http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(body)
            .send()
            .await;
        if let Err(err) = sent {
            eprintln!("fake Twilio: callback to {url} failed: {err}");
        }
    }

    async fn play(self) {
        let http = reqwest::Client::new();
        let pause = || tokio::time::sleep(std::time::Duration::from_millis(300));
        if let Some(callback) = &self.status_callback {
            self.post(&http, callback, "ringing", None).await;
        }
        pause().await;
        if let Some(twiml) = &self.twiml_url {
            self.post(&http, twiml, "in-progress", None).await;
        }
        if let Some(callback) = &self.status_callback {
            self.post(&http, callback, "in-progress", None).await;
            pause().await;
            self.post(
                &http,
                callback,
                "completed",
                Some(self.duration.to_string()),
            )
            .await;
        }
    }
}

/// An accepted message's status callbacks, sent the way Twilio sends them.
struct MessageCallbacks {
    /// The fake's messages: each status is recorded as it is posted.
    states: Arc<Mutex<HashMap<String, Value>>>,
    sid: String,
    account_sid: String,
    auth_token: String,
    to: String,
    from: String,
    callback: String,
    statuses: Vec<String>,
}

impl MessageCallbacks {
    async fn play(self) {
        let http = reqwest::Client::new();
        for status in &self.statuses {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            if let Some(message) = lock(&self.states).get_mut(&self.sid) {
                message["status"] = json!(status);
            }
            let params: Vec<(&str, &str)> = vec![
                ("MessageSid", &self.sid),
                ("SmsSid", &self.sid),
                ("AccountSid", &self.account_sid),
                ("From", &self.from),
                ("To", &self.to),
                ("MessageStatus", status),
                ("SmsStatus", status),
                ("ChannelPrefix", "whatsapp"),
                ("ApiVersion", "2010-04-01"),
            ];
            let signature = twilio_signature(&self.auth_token, &self.callback, &params);
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&params)
                .finish();
            let sent = http
                .post(&self.callback)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-twilio-signature", signature)
                .body(body)
                .send()
                .await;
            if let Err(err) = sent {
                eprintln!(
                    "fake Twilio: status callback to {} failed: {err}",
                    self.callback
                );
            }
        }
    }
}

pub(super) fn new_call_sid() -> String {
    format!("CA{}", uuid::Uuid::new_v4().simple())
}

/// Twilio's RFC 2822 timestamps, e.g. `Tue, 31 Aug 2010 20:36:28 +0000`.
fn twilio_date() -> String {
    chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S %z")
        .to_string()
}

fn error(status: StatusCode, code: u32, message: String) -> Response {
    json_response(
        status,
        json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        }),
    )
}

fn bad_request(code: u32, message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, code, message.to_owned())
}

fn not_found(path: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        20404,
        format!("The requested resource {path} was not found"),
    )
}

/// The `X-Twilio-Signature` value Twilio would send for a form-encoded request
/// to `url` (the full URL it called, query string included): HMAC-SHA1 keyed
/// with the auth token over the URL followed by each parameter's name and
/// value, sorted by name then value, base64-encoded.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort_unstable();
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC accepts any key length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}
