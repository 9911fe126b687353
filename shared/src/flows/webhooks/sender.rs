//! The HTTP side of a delivery: which URLs an endpoint may have, and the
//! POST itself. In Lambda only `https` to public addresses, checked in the
//! resolver the connection uses (the recording fetch's guard), so a name
//! that resolves to a private, loopback, link-local (metadata) or CGNAT
//! address is refused at every connection. Redirects are never followed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use url::Url;

use crate::providers::recording::{refused_ip, CheckedResolver};

/// A 2xx within this long is success.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes of an answer kept in the attempt record.
pub const RESPONSE_KEPT: usize = 1024;
pub const MAX_URL_CHARS: usize = 2048;

/// Which endpoint URLs are allowed: https to public addresses, plus (off
/// Lambda: tests, `make dev`) http and loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlPolicy {
    pub loopback: bool,
}

impl UrlPolicy {
    /// `ALLOW_LOOPBACK_WEBHOOKS`, else only outside Lambda.
    pub fn from_env() -> Result<Self, crate::base::config::ConfigError> {
        Ok(Self {
            loopback: crate::base::config::parsed_or(
                "ALLOW_LOOPBACK_WEBHOOKS",
                !crate::base::config::in_lambda(),
            )?,
        })
    }

    /// The URL, or why it is refused.
    pub fn check(&self, raw: &str) -> Result<Url, String> {
        if raw.len() > MAX_URL_CHARS {
            return Err(format!("url is longer than {MAX_URL_CHARS} characters"));
        }
        let url = Url::parse(raw.trim()).map_err(|_| "url is not a valid URL".to_string())?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("url must not carry credentials".into());
        }
        let Some(host) = url.host() else {
            return Err("url has no host".into());
        };
        match url.scheme() {
            "https" => {}
            "http" if self.loopback => {}
            _ => return Err("url must use https".into()),
        }
        if !self.loopback {
            let literal = match host {
                url::Host::Ipv4(ip) => Some(std::net::IpAddr::V4(ip)),
                url::Host::Ipv6(ip) => Some(std::net::IpAddr::V6(ip)),
                url::Host::Domain(name) => {
                    if name.eq_ignore_ascii_case("localhost") {
                        return Err("url must be a public address".into());
                    }
                    None
                }
            };
            if literal.is_some_and(refused_ip) {
                return Err(
                    "url must be a public address (not private, loopback, link-local or CGNAT)"
                        .into(),
                );
            }
        }
        Ok(url)
    }
}

/// What one POST came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// `None`: no HTTP answer (refused, timed out, connection failed).
    pub status: Option<u16>,
    /// The first [`RESPONSE_KEPT`] bytes of the body, as text.
    pub body: Option<String>,
    pub error: Option<String>,
    pub latency_ms: u64,
}

impl Answer {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Sends one signed body; a trait so the dispatcher is testable without I/O.
#[async_trait]
pub trait WebhookSender: Send + Sync {
    async fn post(&self, url: &str, headers: &[(String, String)], body: &str) -> Answer;
}

pub struct HttpSender {
    http: reqwest::Client,
    policy: UrlPolicy,
}

impl HttpSender {
    pub fn new(policy: UrlPolicy) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(ATTEMPT_TIMEOUT)
            // A proxy would resolve the name itself, past our resolver.
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver {
                allow_any: policy.loopback,
            }))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("callops-webhooks/1")
            .build()?;
        Ok(Self { http, policy })
    }
}

#[async_trait]
impl WebhookSender for HttpSender {
    async fn post(&self, url: &str, headers: &[(String, String)], body: &str) -> Answer {
        let started = Instant::now();
        let url = match self.policy.check(url) {
            Ok(url) => url,
            Err(reason) => {
                return Answer {
                    error: Some(format!("refused: {reason}")),
                    ..Answer::default()
                }
            }
        };
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let elapsed = |started: Instant| started.elapsed().as_millis() as u64;
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let mut kept = Vec::with_capacity(RESPONSE_KEPT);
                let mut stream = response.bytes_stream();
                let mut error = None;
                while kept.len() < RESPONSE_KEPT {
                    match stream.next().await {
                        Some(Ok(chunk)) => {
                            let room = RESPONSE_KEPT - kept.len();
                            kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                        }
                        Some(Err(err)) => {
                            error = Some(describe(&err));
                            break;
                        }
                        None => break,
                    }
                }
                let error = error.or_else(|| match status {
                    200..=299 => None,
                    300..=399 => Some(format!("answered {status}; redirects are not followed")),
                    _ => Some(format!("answered {status}")),
                });
                Answer {
                    status: Some(status),
                    body: (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned()),
                    error,
                    latency_ms: elapsed(started),
                }
            }
            Err(err) => Answer {
                status: None,
                body: None,
                error: Some(describe(&err)),
                latency_ms: elapsed(started),
            },
        }
    }
}

/// The error with its causes (a refused address says so), never the URL.
fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {}", causes.join(": "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAMBDA: UrlPolicy = UrlPolicy { loopback: false };
    const LOCAL: UrlPolicy = UrlPolicy { loopback: true };

    #[test]
    fn lambda_takes_only_https_to_public_addresses() {
        assert!(LAMBDA.check("https://hooks.example.com/callops").is_ok());
        for refused in [
            "http://hooks.example.com/callops",
            "https://10.0.0.5/hook",
            "https://192.168.1.1/hook",
            "https://169.254.169.254/latest/meta-data/",
            "https://100.64.0.1/hook",
            "https://127.0.0.1:8080/hook",
            "https://[::1]/hook",
            "https://[fd00::1]/hook",
            "https://localhost/hook",
            "https://user:pw@hooks.example.com/",
            "ftp://hooks.example.com/",
            "not a url",
        ] {
            assert!(LAMBDA.check(refused).is_err(), "{refused}");
        }
        assert!(LAMBDA
            .check(&format!("https://e.com/{}", "a".repeat(MAX_URL_CHARS)))
            .is_err());
    }

    #[test]
    fn off_lambda_loopback_and_http_are_allowed() {
        assert!(LOCAL.check("http://127.0.0.1:9999/hook").is_ok());
        assert!(LOCAL.check("http://localhost:9999/hook").is_ok());
    }
}
