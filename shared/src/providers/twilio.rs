//! Twilio: placing and ending calls, checking `X-Twilio-Signature`, and the
//! TwiML that connects an answered call to the agent's media stream.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::base::config::Secret;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    /// The provider refused the request; its message is safe to show the caller.
    #[error("{0}")]
    Refused(String),
    /// Network trouble or 5xx before the request was taken: nothing happened.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The request may have reached the provider and been acted on, but no
    /// usable answer came back (the connection was lost after sending, a
    /// timeout, an unreadable success). A call may exist: it is held and
    /// looked for, never released as refused.
    #[error("provider did not confirm: {0}")]
    Unconfirmed(String),
}

/// A failed send, by what it means: a connection that was never made sent
/// nothing; any other failure may have come after the request was sent.
fn send_failure(err: reqwest::Error) -> ProviderError {
    let connect = err.is_connect();
    let reason = err.without_url().to_string();
    if connect {
        ProviderError::Unavailable(reason)
    } else {
        ProviderError::Unconfirmed(reason)
    }
}

/// A provider read that got no usable answer (reconciliation asks again
/// later): an outage, a 429 with the wait it asked for, or a refusal such
/// as bad credentials (`status` 4xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ReadFailure {
    pub reason: String,
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// The provider's `Retry-After` (seconds), when it sent one.
    pub retry_after_secs: Option<u64>,
}

impl ReadFailure {
    pub fn transport(provider: &str, err: reqwest::Error) -> Self {
        Self {
            reason: format!("{provider} unreachable: {}", err.without_url()),
            status: None,
            retry_after_secs: None,
        }
    }

    /// A non-2xx answer; only its status and `Retry-After` are kept (bodies
    /// may name numbers).
    pub fn answered(provider: &str, response: &reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let retry_after_secs = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Self {
            reason: format!("{provider} answered HTTP {status}"),
            status: Some(status),
            retry_after_secs,
        }
    }

    pub fn unreadable(provider: &str, err: impl std::fmt::Display) -> Self {
        Self {
            reason: format!("unreadable {provider} answer: {err}"),
            status: None,
            retry_after_secs: None,
        }
    }
}

impl From<ReadFailure> for ProviderError {
    /// A 4xx other than 429 is the provider's refusal; the rest an outage.
    fn from(failure: ReadFailure) -> Self {
        match failure.status {
            Some(status) if (400..500).contains(&status) && status != 429 => {
                Self::Refused(failure.reason)
            }
            _ => Self::Unavailable(failure.reason),
        }
    }
}

/// Twilio's Call resource, the parts reconciliation reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallState {
    /// `queued`, `ringing`, `in-progress`, `completed`, `busy`, `failed`,
    /// `no-answer` or `canceled`.
    pub status: String,
    /// Talk time in seconds; Twilio sends it as a string once the call ended.
    pub duration_secs: Option<u64>,
}

#[derive(Deserialize)]
struct CallStateDoc {
    status: String,
    #[serde(default)]
    duration: Option<serde_json::Value>,
}

/// One call of Twilio's call list: its sid and when it was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedCall {
    pub sid: String,
    /// Epoch seconds (Twilio's `date_created`, RFC 2822).
    pub created_at: Option<i64>,
}

#[derive(Deserialize)]
struct CallPage {
    #[serde(default)]
    calls: Vec<ListedCallDoc>,
}

#[derive(Deserialize)]
struct ListedCallDoc {
    sid: String,
    #[serde(default)]
    date_created: Option<String>,
}

/// Twilio's Message resource, the parts reconciliation reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageState {
    pub status: String,
    pub error_code: Option<String>,
}

#[derive(Deserialize)]
struct MessageStateDoc {
    status: String,
    #[serde(default)]
    error_code: Option<serde_json::Value>,
}

#[derive(Clone)]
pub struct TwilioClient {
    pub http: reqwest::Client,
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: Secret,
    /// `(api_key_sid, api_key_secret)`: when set, REST requests authenticate
    /// with it instead of the auth token (Twilio accepts an API key pair as
    /// basic auth against the account's URLs).
    pub api_key: Option<(String, Secret)>,
}

/// Shows the account and API key SIDs, never a credential.
impl std::fmt::Debug for TwilioClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioClient")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .field("api_key_sid", &self.api_key.as_ref().map(|(sid, _)| sid))
            .finish_non_exhaustive()
    }
}

/// What a Create Call needs.
pub struct NewCall<'a> {
    pub to: &'a str,
    pub from: &'a str,
    /// Where Twilio fetches TwiML when the call connects.
    pub twiml_url: &'a str,
    pub status_callback: &'a str,
    /// Twilio ends the call after this many seconds (`TimeLimit`).
    pub time_limit_secs: u64,
    /// Asynchronous answering-machine detection, its result POSTed here
    /// (`AnsweredBy`) while the call goes on: campaigns retry voicemail.
    pub amd_callback: Option<&'a str>,
}

#[derive(Deserialize)]
struct CallResource {
    sid: String,
}

#[derive(Deserialize)]
struct TwilioErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<u64>,
}

async fn refused_or_unavailable(response: reqwest::Response) -> ProviderError {
    let status = response.status();
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return ProviderError::Unavailable(format!("Twilio answered HTTP {}", status.as_u16()));
    }
    let body: Option<TwilioErrorBody> = response.json().await.ok();
    // Twilio's messages name the number ("The 'To' number +1... is not valid").
    let message = body
        .as_ref()
        .and_then(|b| b.message.as_deref())
        .map(crate::base::mask::phones_in)
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    let code = body
        .and_then(|b| b.code)
        .map(|c| format!(" (code {c})"))
        .unwrap_or_default();
    ProviderError::Refused(format!("Twilio refused the call: {message}{code}"))
}

impl TwilioClient {
    /// HTTP Basic credentials of REST requests: the API key when there is one.
    fn authenticated(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some((sid, secret)) => request.basic_auth(sid, Some(secret.expose())),
            None => request.basic_auth(&self.account_sid, Some(self.auth_token.expose())),
        }
    }

    fn calls_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Calls",
            self.base_url, self.account_sid
        )
    }

    /// Places the call; returns its `CallSid`.
    pub async fn create_call(&self, call: &NewCall<'_>) -> Result<String, ProviderError> {
        let time_limit = call.time_limit_secs.to_string();
        let mut form: Vec<(&str, &str)> = vec![
            ("To", call.to),
            ("From", call.from),
            ("Url", call.twiml_url),
            ("Method", "POST"),
            ("StatusCallback", call.status_callback),
            ("StatusCallbackMethod", "POST"),
            ("TimeLimit", &time_limit),
        ];
        for event in ["initiated", "ringing", "answered", "completed"] {
            form.push(("StatusCallbackEvent", event));
        }
        if let Some(callback) = call.amd_callback {
            form.extend([
                ("MachineDetection", "Enable"),
                ("AsyncAmd", "true"),
                ("AsyncAmdStatusCallback", callback),
                ("AsyncAmdStatusCallbackMethod", "POST"),
            ]);
        }
        let body = serde_urlencoded::to_string(&form)
            .map_err(|e| ProviderError::Refused(e.to_string()))?;
        let response = self
            .authenticated(self.http.post(format!("{}.json", self.calls_url())))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(send_failure)?;
        if !response.status().is_success() {
            return Err(refused_or_unavailable(response).await);
        }
        response
            .json::<CallResource>()
            .await
            .map(|c| c.sid)
            // Twilio said yes: the call exists, only its sid was lost.
            .map_err(|e| {
                ProviderError::Unconfirmed(format!(
                    "unreadable Twilio response: {}",
                    e.without_url()
                ))
            })
    }

    /// `GET .../Calls/{sid}.json`: where the call stands at Twilio; `None`
    /// when this account has no such call.
    pub async fn fetch_call(&self, call_sid: &str) -> Result<Option<CallState>, ReadFailure> {
        let url = format!("{}/{call_sid}.json", self.calls_url());
        let Some(doc) = self.read::<CallStateDoc>(url).await? else {
            return Ok(None);
        };
        let duration_secs = match doc.duration {
            Some(serde_json::Value::String(text)) => text.parse().ok(),
            Some(serde_json::Value::Number(number)) => number.as_u64(),
            _ => None,
        };
        Ok(Some(CallState {
            status: doc.status,
            duration_secs,
        }))
    }

    /// One authenticated GET of a resource: `None` on 404; other failures
    /// keep their status and `Retry-After` for the caller's backoff.
    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        url: String,
    ) -> Result<Option<T>, ReadFailure> {
        let response = self
            .authenticated(self.http.get(url))
            .send()
            .await
            .map_err(|e| ReadFailure::transport("Twilio", e))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(ReadFailure::answered("Twilio", &response));
        }
        response
            .json()
            .await
            .map(Some)
            .map_err(|e| ReadFailure::unreadable("Twilio", e.without_url()))
    }

    /// `GET .../Calls.json?To=&From=`: the account's most recent calls to
    /// `to` (from `from` when given), newest first, at most 50.
    pub async fn list_calls(
        &self,
        to: &str,
        from: Option<&str>,
    ) -> Result<Vec<ListedCall>, ReadFailure> {
        let mut query: Vec<(&str, &str)> = vec![("To", to), ("PageSize", "50")];
        if let Some(from) = from {
            query.push(("From", from));
        }
        let query = serde_urlencoded::to_string(&query)
            .map_err(|e| ReadFailure::unreadable("Twilio", e))?;
        let url = format!("{}.json?{query}", self.calls_url());
        let page: CallPage = self.read(url).await?.ok_or_else(|| ReadFailure {
            reason: "Twilio answered HTTP 404 for the account's calls".into(),
            status: Some(404),
            retry_after_secs: None,
        })?;
        Ok(page
            .calls
            .into_iter()
            .map(|call| ListedCall {
                created_at: call
                    .date_created
                    .as_deref()
                    .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
                    .map(|d| d.timestamp()),
                sid: call.sid,
            })
            .collect())
    }

    /// `GET .../Messages/{sid}.json`: a message's status and error code at
    /// Twilio; `None` when this account has no such message.
    pub async fn fetch_message(&self, sid: &str) -> Result<Option<MessageState>, ReadFailure> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages/{sid}.json",
            self.base_url, self.account_sid
        );
        let Some(doc) = self.read::<MessageStateDoc>(url).await? else {
            return Ok(None);
        };
        let error_code = match doc.error_code {
            Some(serde_json::Value::Number(code)) => Some(code.to_string()),
            Some(serde_json::Value::String(code)) if !code.is_empty() => Some(code),
            _ => None,
        };
        Ok(Some(MessageState {
            status: doc.status,
            error_code,
        }))
    }

    /// Hangs up a call in progress.
    pub async fn end_call(&self, call_sid: &str) -> Result<(), ProviderError> {
        let response = self
            .authenticated(
                self.http
                    .post(format!("{}/{call_sid}.json", self.calls_url())),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body("Status=completed")
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(e.without_url().to_string()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(refused_or_unavailable(response).await)
        }
    }
}

/// What a Create Message needs (WhatsApp through Twilio's Messages API).
pub struct NewMessage<'a> {
    /// `whatsapp:+E164` of our sender.
    pub from: &'a str,
    /// `whatsapp:+E164` of the recipient.
    pub to: &'a str,
    pub content: MessageContent<'a>,
    /// Where Twilio posts this message's statuses.
    pub status_callback: Option<&'a str>,
}

/// A free-form text, or an approved template with its variables.
pub enum MessageContent<'a> {
    Text(&'a str),
    Template {
        content_sid: &'a str,
        /// `{"1": "John", ...}`, sent as a JSON string.
        variables: Option<&'a serde_json::Value>,
    },
}

/// The message Twilio accepted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SentMessage {
    pub sid: String,
    #[serde(default = "queued")]
    pub status: String,
}

fn queued() -> String {
    "queued".into()
}

/// Twilio's answer to a Create Message that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// A 4xx with Twilio's error code and message (e.g. 63016: free-form
    /// message outside the 24-hour session window).
    #[error("Twilio refused the message (HTTP {status}, code {code:?}): {message}")]
    Refused {
        status: u16,
        code: Option<u64>,
        message: String,
    },
    /// Network trouble, a timeout, 5xx or 429: the message may or may not
    /// have been accepted.
    #[error("Twilio unavailable: {0}")]
    Unavailable(String),
}

/// Twilio's error for a free-form WhatsApp message outside the 24-hour window.
pub const OUTSIDE_SESSION_WINDOW: u64 = 63016;

/// `whatsapp:+E164` for a number given with or without the prefix.
pub fn whatsapp_address(number: &str) -> String {
    let number = number.trim();
    let bare = number.strip_prefix("whatsapp:").unwrap_or(number);
    format!("whatsapp:{}", bare.trim())
}

impl TwilioClient {
    /// Sends one message; `timeout` bounds the whole request.
    pub async fn send_message(
        &self,
        message: &NewMessage<'_>,
        timeout: std::time::Duration,
    ) -> Result<SentMessage, MessageError> {
        let variables;
        let mut form: Vec<(&str, &str)> = vec![("From", message.from), ("To", message.to)];
        match &message.content {
            MessageContent::Text(body) => form.push(("Body", body)),
            MessageContent::Template {
                content_sid,
                variables: vars,
            } => {
                form.push(("ContentSid", content_sid));
                if let Some(vars) = vars {
                    variables = vars.to_string();
                    form.push(("ContentVariables", &variables));
                }
            }
        }
        if let Some(callback) = message.status_callback {
            form.push(("StatusCallback", callback));
        }
        let body = serde_urlencoded::to_string(&form)
            .map_err(|e| MessageError::Unavailable(e.to_string()))?;
        let response = self
            .authenticated(self.http.post(format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                self.base_url, self.account_sid
            )))
            .header("content-type", "application/x-www-form-urlencoded")
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| MessageError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            return response.json::<SentMessage>().await.map_err(|e| {
                MessageError::Unavailable(format!(
                    "unreadable Twilio response: {}",
                    e.without_url()
                ))
            });
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(MessageError::Unavailable(format!(
                "Twilio answered HTTP {}",
                status.as_u16()
            )));
        }
        let body: Option<TwilioErrorBody> = response.json().await.ok();
        Err(MessageError::Refused {
            status: status.as_u16(),
            code: body.as_ref().and_then(|b| b.code),
            // Masked here, so no log line, stored reason or client detail
            // downstream carries the number Twilio quotes.
            message: body
                .and_then(|b| b.message)
                .map(|m| crate::base::mask::phones_in(&m))
                .unwrap_or_else(|| format!("HTTP {}", status.as_u16())),
        })
    }
}

/// The empty TwiML answer to an incoming message: reply nothing now (the
/// reply is sent later through the Messages API).
pub const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

/// Twilio's signature: HMAC-SHA1 (auth token) over the full URL followed by
/// every POST parameter as name+value, sorted by name (then value), base64.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The URL with and without an explicit default port: Twilio's SDKs accept both.
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_string()];
    if let Ok(mut parsed) = url::Url::parse(url) {
        match parsed.port() {
            Some(_) => {
                let _ = parsed.set_port(None);
                variants.push(parsed.to_string());
            }
            None => {
                let default = if parsed.scheme() == "https" { 443 } else { 80 };
                if parsed.set_port(Some(default)).is_ok() {
                    // `Url` drops default ports when printing, so splice it in by hand.
                    let host = parsed.host_str().unwrap_or_default().to_string();
                    variants.push(url.replacen(&host, &format!("{host}:{default}"), 1));
                }
            }
        }
    }
    variants
}

/// Checks `X-Twilio-Signature` for a request to `url` with form `params`, in constant time.
pub fn signature_matches(
    auth_token: &Secret,
    url: &str,
    params: &[(String, String)],
    presented: &str,
) -> bool {
    url_variants(url).iter().any(|candidate| {
        let expected = signature(auth_token.expose(), candidate, params);
        bool::from(expected.as_bytes().ct_eq(presented.trim().as_bytes()))
    })
}

/// Accounts other than the deployment's whose callbacks we accept: the
/// organisation that owns `account_sid` (tenancy `twilio#<AccountSid>`) and
/// that account's auth token (its secret). Implemented by
/// `providers::org_accounts::OrgTwilioTokens`.
#[async_trait::async_trait]
pub trait AccountTokens: Send + Sync {
    /// `(org_id, auth_token)`, or `None` when no organisation has this account.
    async fn token_for(
        &self,
        account_sid: &str,
    ) -> Result<Option<(String, Secret)>, crate::api::ApiError>;
}

/// What checks Twilio's requests to us: the auth token of the account that
/// sent them and the public URL Twilio signed (`PUBLIC_BASE_URL`, else the
/// request's domain).
#[derive(Clone)]
pub struct TwilioWebhookAuth {
    /// The deployment's account's token (`TWILIO_AUTH_TOKEN`).
    pub auth_token: Secret,
    pub public_base_url: crate::api::public_url::PublicBaseUrl,
    /// `TWILIO_ACCOUNT_SID`. A request naming another `AccountSid` is
    /// checked with the token of the organisation that holds that account
    /// (`accounts`); one nobody holds is refused (403) when this is set, and
    /// checked with `auth_token` when it is not (a one-account setup).
    pub account_sid: Option<String>,
    /// Organisations' own accounts; `None`: only the deployment's.
    pub accounts: Option<std::sync::Arc<dyn AccountTokens>>,
}

/// A request whose signature matched the token of the account it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub params: Vec<(String, String)>,
    /// The organisation whose own account signed it; `None` for the
    /// deployment's account. Whoever resolves the organisation another way
    /// (the number called) must find the same one.
    pub org_id: Option<String>,
}

impl TwilioWebhookAuth {
    /// The deployment's account only (`TWILIO_AUTH_TOKEN`, `TWILIO_ACCOUNT_SID`);
    /// `Wiring::twilio_webhook_auth` adds the organisations' accounts.
    pub fn from_env() -> Result<Self, crate::base::config::ConfigError> {
        Ok(Self {
            auth_token: crate::base::config::required_secret("TWILIO_AUTH_TOKEN")?,
            public_base_url: crate::api::public_url::PublicBaseUrl::from_env(),
            account_sid: crate::base::config::optional("TWILIO_ACCOUNT_SID"),
            accounts: None,
        })
    }

    /// Only `auth_token`'s account, at `public_base_url` (tests, one-account setups).
    pub fn single(
        auth_token: Secret,
        public_base_url: crate::api::public_url::PublicBaseUrl,
    ) -> Self {
        Self {
            auth_token,
            public_base_url,
            account_sid: None,
            accounts: None,
        }
    }

    /// The signed form fields, once `X-Twilio-Signature` matches the token of
    /// the account that sent them.
    pub async fn verify(
        &self,
        request: &lambda_http::Request,
    ) -> Result<Vec<(String, String)>, crate::api::ApiError> {
        Ok(self.verify_account(request).await?.params)
    }

    /// [`TwilioWebhookAuth::verify`], also saying whose account signed it.
    /// The `AccountSid` field only picks the token to check with: nothing
    /// else is read before the signature over the whole body matched, and
    /// an account nobody has is refused exactly like a bad signature.
    pub async fn verify_account(
        &self,
        request: &lambda_http::Request,
    ) -> Result<Verified, crate::api::ApiError> {
        use crate::api::ApiError;
        let Some(base) = self.public_base_url.for_request(request) else {
            // Neither PUBLIC_BASE_URL nor an API Gateway domain: nothing to
            // rebuild the signed URL from: our misconfiguration, not the
            // sender's fault, so 503 (Twilio retries voice webhooks).
            tracing::error!(
                "PUBLIC_BASE_URL unset and no request domain: Twilio request not checked"
            );
            return Err(ApiError::Unavailable);
        };
        let signed = SignedRequest::read(request, &base)?;
        let signer = self.signer(field(&signed.params, "AccountSid")).await?;
        match signer {
            Some((token, org_id)) if signed.matches(&token) => Ok(Verified {
                params: signed.params,
                org_id,
            }),
            _ => {
                tracing::warn!(path = %request.uri().path(), "Twilio signature rejected");
                Err(ApiError::Forbidden)
            }
        }
    }

    /// The token that must have signed a request naming `account_sid`, and
    /// the organisation that owns that account; `None`: an unknown account.
    async fn signer(
        &self,
        account_sid: Option<&str>,
    ) -> Result<Option<(Secret, Option<String>)>, crate::api::ApiError> {
        let deployment = Some((self.auth_token.clone(), None));
        let Some(named) = account_sid else {
            // A request naming no account: only ever the deployment's.
            return Ok(deployment);
        };
        if self.account_sid.as_deref() == Some(named) {
            return Ok(deployment);
        }
        if let Some(accounts) = &self.accounts {
            if crate::providers::org_accounts::valid_sid(named, "AC") {
                if let Some((org_id, token)) = accounts.token_for(named).await? {
                    return Ok(Some((token, Some(org_id))));
                }
            }
        }
        // No organisation has it: the deployment's account only when its SID
        // is not configured (one-account setups), else unknown: refused.
        Ok(self.account_sid.is_none().then_some(deployment).flatten())
    }
}

/// A Twilio request's signature, form fields and the URL it was sent to.
struct SignedRequest {
    presented: String,
    params: Vec<(String, String)>,
    url: String,
}

impl SignedRequest {
    /// Missing header -> 400, as Twilio's own middleware answers.
    fn read(
        request: &lambda_http::Request,
        public_base_url: &str,
    ) -> Result<Self, crate::api::ApiError> {
        use crate::api::ApiError;
        let presented = request
            .headers()
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::bad_request("missing_signature", "X-Twilio-Signature header is required")
            })?
            .to_string();
        let body = crate::api::body_bytes(request.body())?;
        let is_form = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let params: Vec<(String, String)> = if is_form {
            url::form_urlencoded::parse(body).into_owned().collect()
        } else {
            Vec::new()
        };
        let path_and_query = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let url = format!(
            "{}{}",
            public_base_url.trim_end_matches('/'),
            path_and_query
        );
        Ok(Self {
            presented,
            params,
            url,
        })
    }

    fn matches(&self, auth_token: &Secret) -> bool {
        signature_matches(auth_token, &self.url, &self.params, &self.presented)
    }
}

/// Checks a Twilio webhook behind API Gateway with one account's token: the
/// URL Twilio called is the public base URL plus the raw path and query.
/// Returns the form parameters. Missing header -> 400, mismatch -> 403.
pub fn verify_request(
    request: &lambda_http::Request,
    public_base_url: &str,
    auth_token: &Secret,
) -> Result<Vec<(String, String)>, crate::api::ApiError> {
    let signed = SignedRequest::read(request, public_base_url)?;
    if signed.matches(auth_token) {
        Ok(signed.params)
    } else {
        tracing::warn!(path = %request.uri().path(), "Twilio signature rejected");
        Err(crate::api::ApiError::Forbidden)
    }
}

/// First value of a form field.
pub fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `<Connect><Stream>` carrying the call's context as `<Parameter>`s: Twilio
/// forbids query strings on stream URLs, and agendas must not travel in URLs.
pub fn connect_stream_twiml(stream_url: &str, parameters: &[(&str, &str)]) -> String {
    use quick_xml::escape::escape;
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect><Stream url=\"{}\">",
        escape(stream_url)
    );
    for (name, value) in parameters {
        xml.push_str(&format!(
            "<Parameter name=\"{}\" value=\"{}\"/>",
            escape(*name),
            escape(*value)
        ));
    }
    xml.push_str("</Stream></Connect></Response>");
    xml
}

/// A TwiML answer (200, `text/xml`), or the JSON error for what failed
/// before Twilio's signature was known to be good.
pub fn twiml_response(
    result: Result<String, crate::api::ApiError>,
) -> lambda_http::Response<lambda_http::Body> {
    match result {
        Ok(twiml) => lambda_http::Response::builder()
            .status(http::StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .body(lambda_http::Body::Text(twiml))
            .expect("static response parts are valid"),
        Err(err) => err.into_response(),
    }
}

/// TwiML for a call we cannot connect: say so and hang up.
pub fn hangup_twiml(message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>{}</Say><Hangup/></Response>",
        quick_xml::escape::escape(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn matches_twilios_official_vector() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            signature("12345", url, &vector_params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        let token = Secret::new("12345");
        assert!(signature_matches(
            &token,
            url,
            &vector_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        // Twilio may have signed the URL with the default port spelled out.
        let with_port = signature(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &vector_params(),
        );
        assert!(signature_matches(&token, url, &vector_params(), &with_port));
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let token = Secret::new("12345");
        let mut params = vector_params();
        params[2].1 = "9999".into();
        assert!(!signature_matches(
            &token,
            url,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!signature_matches(
            &token,
            "https://mycompany.com/other",
            &vector_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!signature_matches(
            &Secret::new("54321"),
            url,
            &vector_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn whatsapp_addresses_get_one_prefix() {
        assert_eq!(whatsapp_address("+14155238886"), "whatsapp:+14155238886");
        assert_eq!(
            whatsapp_address(" whatsapp:+14155238886"),
            "whatsapp:+14155238886"
        );
    }

    #[test]
    fn twiml_escapes_every_value() {
        let xml = connect_stream_twiml(
            "wss://agent.example.com/stream",
            &[
                ("agenda", "Ask about <order> & \"refund\" 'today'"),
                ("welcome_message", "Hi!"),
            ],
        );
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect><Stream url=\"wss://agent.example.com/stream\">\
             <Parameter name=\"agenda\" value=\"Ask about &lt;order&gt; &amp; &quot;refund&quot; &apos;today&apos;\"/>\
             <Parameter name=\"welcome_message\" value=\"Hi!\"/></Stream></Connect></Response>"
        );
    }
    /// Without PUBLIC_BASE_URL the signed URL is rebuilt from the domain API
    /// Gateway received the request on; a signature over another host fails,
    /// and with neither there is nothing to check against (503, not 403).
    #[tokio::test]
    async fn verifies_against_the_api_gateway_domain_when_no_base_is_configured() {
        use lambda_http::request::RequestContext;
        use lambda_http::RequestExt;
        let params = vec![("CallSid".to_string(), "CA1".to_string())];
        let host = "abc123.execute-api.us-east-1.amazonaws.com";
        let request = |signed_url: &str, domain: Option<&str>| {
            let mut context =
                lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext::default();
            context.domain_name = domain.map(str::to_string);
            lambda_http::http::Request::builder()
                .uri("/twilio/voice?org=acme")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-twilio-signature", signature("tok", signed_url, &params))
                .body(lambda_http::Body::from("CallSid=CA1"))
                .unwrap()
                .with_request_context(RequestContext::ApiGatewayV2(context))
        };
        let auth = TwilioWebhookAuth::single(
            Secret::new("tok"),
            crate::api::public_url::PublicBaseUrl::default(),
        );
        let url = format!("https://{host}/twilio/voice?org=acme");
        assert_eq!(
            auth.verify(&request(&url, Some(host))).await.unwrap(),
            params
        );
        let other = "https://evil.example/twilio/voice?org=acme";
        assert!(matches!(
            auth.verify(&request(other, Some(host))).await,
            Err(crate::api::ApiError::Forbidden)
        ));
        assert!(matches!(
            auth.verify(&request(&url, None)).await,
            Err(crate::api::ApiError::Unavailable)
        ));
    }

    struct OneOrg;

    #[async_trait::async_trait]
    impl AccountTokens for OneOrg {
        async fn token_for(
            &self,
            account_sid: &str,
        ) -> Result<Option<(String, Secret)>, crate::api::ApiError> {
            Ok((account_sid == ORG_SID).then(|| ("acme".to_string(), Secret::new("org-token"))))
        }
    }

    const ORG_SID: &str = "AC0123456789abcdef0123456789abcdef";
    const OTHER_SID: &str = "ACffffffffffffffffffffffffffffffff";

    fn signed(account_sid: &str, token: &str) -> lambda_http::Request {
        let params = vec![
            ("AccountSid".to_string(), account_sid.to_string()),
            ("CallSid".to_string(), "CA1".to_string()),
        ];
        let body = format!("AccountSid={account_sid}&CallSid=CA1");
        lambda_http::http::Request::builder()
            .uri("/twilio/status")
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "x-twilio-signature",
                signature(token, "https://api.example.com/twilio/status", &params),
            )
            .body(lambda_http::Body::from(body))
            .unwrap()
    }

    /// The form's AccountSid picks the token; an account nobody holds is
    /// refused when the deployment's SID is known, and checked with the
    /// deployment's token when it is not (one-account setups).
    #[tokio::test]
    async fn the_account_named_in_the_form_picks_the_token() {
        let mut auth = TwilioWebhookAuth {
            auth_token: Secret::new("deployment-token"),
            public_base_url: "https://api.example.com".into(),
            account_sid: Some("ACdddddddddddddddddddddddddddddddd".into()),
            accounts: Some(std::sync::Arc::new(OneOrg)),
        };
        let verified = auth
            .verify_account(&signed(ORG_SID, "org-token"))
            .await
            .unwrap();
        assert_eq!(verified.org_id.as_deref(), Some("acme"));
        assert!(matches!(
            auth.verify_account(&signed(ORG_SID, "deployment-token"))
                .await,
            Err(crate::api::ApiError::Forbidden)
        ));
        assert!(matches!(
            auth.verify_account(&signed(OTHER_SID, "deployment-token"))
                .await,
            Err(crate::api::ApiError::Forbidden)
        ));
        let ours = auth
            .verify_account(&signed(
                "ACdddddddddddddddddddddddddddddddd",
                "deployment-token",
            ))
            .await
            .unwrap();
        assert_eq!(ours.org_id, None);
        auth.account_sid = None;
        assert_eq!(
            auth.verify_account(&signed(OTHER_SID, "deployment-token"))
                .await
                .unwrap()
                .org_id,
            None
        );
        assert_eq!(
            auth.verify_account(&signed(ORG_SID, "org-token"))
                .await
                .unwrap()
                .org_id
                .as_deref(),
            Some("acme")
        );
    }
}
