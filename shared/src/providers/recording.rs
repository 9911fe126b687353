//! Which recording URLs the worker may fetch, with what credentials, and the
//! fetch itself.
//!
//! A webhook names the recording URL, so without these checks anyone holding
//! the webhook token could make the worker fetch internal addresses (SSRF):
//! the host is allow-listed, every redirect hop is checked again, and in
//! Lambda the address a name resolves to must be public, checked in the
//! resolver the connection uses (so DNS rebinding cannot swap it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::StatusCode;
use url::Url;

use crate::base::config::{self, ConfigError, Secret};

/// Exotel's own hosts. S3-hosted recordings need the bucket's own host
/// (`<bucket>.s3.<region>.amazonaws.com`), never a shared S3 endpoint.
pub const DEFAULT_RECORDING_HOSTS: &str =
    "api.exotel.com,api.in.exotel.com,*.exotel.com,*.exotel.in";

/// `MAX_RECORDING_BYTES` default: 500 MB.
pub const DEFAULT_MAX_RECORDING_BYTES: u64 = 500_000_000;

/// Redirect hops followed (each one re-checked against the allow-list).
const MAX_REDIRECTS: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// The host, or for `*.suffix` the suffix.
    host: String,
    wildcard: bool,
    /// `None`: the scheme's default port only.
    port: Option<u16>,
}

impl Entry {
    fn parse(raw: &str) -> Option<Self> {
        let (wildcard, rest) = match raw.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        // `host`, `host:443`, `[::1]` or `[::1]:8080` (IPv6 keeps its brackets, as in `Url`).
        let (host, port) = match rest.find(']') {
            Some(end) => match &rest[end + 1..] {
                "" => (rest, None),
                tail => (&rest[..=end], Some(tail.strip_prefix(':')?.parse().ok()?)),
            },
            None => match rest.split_once(':') {
                Some((host, port)) => (host, Some(port.parse().ok()?)),
                None => (rest, None),
            },
        };
        (!host.is_empty()).then(|| Self {
            host: host.to_string(),
            wildcard,
            port,
        })
    }

    fn matches(&self, host: &str, url: &Url) -> bool {
        let host_ok = if self.wildcard {
            host.ends_with(&format!(".{}", self.host))
        } else {
            host == self.host
        };
        let port_ok = match self.port {
            // `Url` drops a port equal to the scheme's default.
            None => url.port().is_none(),
            Some(port) => url.port_or_known_default() == Some(port),
        };
        host_ok && port_ok
    }
}

/// Hosts the worker may download recordings from. Entries are `host`,
/// `host:port` or `*.suffix`; an entry without a port allows the scheme's
/// default port only. Plain `http` and loopback addresses only when
/// `loopback` is on, which it is only outside Lambda.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAllowList {
    entries: Vec<Entry>,
    loopback: bool,
}

impl HostAllowList {
    /// Parses a comma-separated list with Lambda's rules: https to public
    /// addresses only. Unparseable entries (a non-numeric port) allow nothing.
    pub fn parse(list: &str) -> Self {
        Self {
            entries: list
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter_map(|h| Entry::parse(&h))
                .collect(),
            loopback: false,
        }
    }

    /// Also plain http to loopback and any resolved address: local runs and tests.
    pub fn with_loopback(mut self, allowed: bool) -> Self {
        self.loopback = allowed;
        self
    }

    pub fn loopback(&self) -> bool {
        self.loopback
    }

    /// `RECORDING_ALLOWED_HOSTS` (default: Exotel's hosts); loopback per
    /// [`loopback_allowed`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self::parse(
            &config::optional("RECORDING_ALLOWED_HOSTS")
                .unwrap_or_else(|| DEFAULT_RECORDING_HOSTS.into()),
        )
        .with_loopback(loopback_allowed()?))
    }

    /// Whether the worker may fetch `url`: scheme, no userinfo, no refused
    /// IP literal (those never reach the resolver), and a listed host and port.
    pub fn allows(&self, url: &Url) -> bool {
        let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        let literal = literal_ip(url);
        let is_loopback = host == "localhost" || literal.is_some_and(|ip| ip.is_loopback());
        let scheme_ok =
            url.scheme() == "https" || (url.scheme() == "http" && self.loopback && is_loopback);
        if !scheme_ok || !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        if !self.loopback && literal.is_some_and(refused_ip) {
            return false;
        }
        self.matches(url)
    }

    /// Host and port match only; for choosing credentials for a URL that
    /// [`allows`](Self::allows) already accepted.
    pub fn matches(&self, url: &Url) -> bool {
        let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        self.entries.iter().any(|entry| entry.matches(&host, url))
    }
}

/// Loopback recordings: `ALLOW_LOOPBACK_RECORDINGS` when set, else only outside Lambda.
pub fn loopback_allowed() -> Result<bool, ConfigError> {
    config::parsed_or("ALLOW_LOOPBACK_RECORDINGS", !config::in_lambda())
}

fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// Addresses a recording must never be fetched from in Lambda: private,
/// loopback, link-local (the metadata service), CGNAT, unspecified, multicast.
pub fn refused_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => refused_v4(v4),
            None => refused_v6(v6),
        },
    }
}

fn refused_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
}

fn refused_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

/// A name resolved only to refused addresses.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to private, loopback or link-local addresses")]
pub struct RefusedAddress(String);

/// Keeps the refused addresses out of what the connector may dial.
pub fn public_addresses(
    name: &str,
    addrs: impl IntoIterator<Item = SocketAddr>,
) -> Result<Vec<SocketAddr>, RefusedAddress> {
    let public: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|addr| !refused_ip(addr.ip()))
        .collect();
    if public.is_empty() {
        Err(RefusedAddress(name.to_string()))
    } else {
        Ok(public)
    }
}

/// The recording client's resolver: system DNS, then (in Lambda) only public
/// addresses, so the checked address is the one connected to.
#[derive(Debug, Clone)]
pub struct CheckedResolver {
    pub allow_any: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_any = self.allow_any;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addrs = if allow_any {
                resolved
            } else {
                public_addresses(&host, resolved)?
            };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Validates a recording URL named by a webhook.
pub fn parse_allowed(raw: &str, allow: &HostAllowList) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|_| "recording_url is not a valid URL".to_string())?;
    if !allow.allows(&url) {
        return Err(format!(
            "recording_url host {} is not in the allowed recording hosts",
            url.host_str().unwrap_or("(none)")
        ));
    }
    Ok(url)
}

/// Exotel serves recordings behind the account's Basic auth; other allowed
/// hosts (pre-signed storage URLs) get no credentials.
#[derive(Debug, Clone)]
pub struct ExotelCredentials {
    pub api_key: Secret,
    pub api_token: Secret,
    /// Hosts that receive these credentials: the configured Exotel API host
    /// plus Exotel's own domains.
    pub hosts: HostAllowList,
}

impl ExotelCredentials {
    pub fn applies_to(&self, url: &Url) -> bool {
        self.hosts.matches(url)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Worth another try (network, 5xx, 429, not published yet).
    #[error("temporary: {0}")]
    Temporary(String),
    /// Refused by policy or by the host; retrying will not help.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// Downloads recordings under the allow-list, redirect, address and size rules.
pub struct RecordingFetcher {
    http: reqwest::Client,
    hosts: HostAllowList,
    exotel: Option<ExotelCredentials>,
    max_bytes: u64,
}

/// An open recording: its body as a stream that fails past the size limit.
pub struct Recording {
    pub body: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, LimitError>> + Send>>,
    pub limit: SizeLimit,
}

/// Tells, after the body was consumed, whether the size limit stopped it.
pub struct SizeLimit {
    exceeded: Arc<AtomicBool>,
    max_bytes: u64,
}

impl SizeLimit {
    pub fn exceeded(&self) -> Option<FetchError> {
        self.exceeded
            .load(Ordering::Relaxed)
            .then(|| too_large(self.max_bytes))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("recording exceeds the size limit")]
    TooLarge,
    #[error("recording download failed: {0}")]
    Read(reqwest::Error),
}

fn too_large(max_bytes: u64) -> FetchError {
    FetchError::Permanent(format!(
        "recording is larger than the {max_bytes}-byte limit (MAX_RECORDING_BYTES)"
    ))
}

/// Passes chunks through until more than `max_bytes` have gone by, then
/// fails the stream and sets `exceeded`.
pub fn limit_stream<S, E>(
    stream: S,
    max_bytes: u64,
    exceeded: Arc<AtomicBool>,
) -> impl Stream<Item = Result<Bytes, LimitError>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: Into<LimitError>,
{
    let mut seen: u64 = 0;
    stream.map(move |chunk| {
        let chunk = chunk.map_err(Into::into)?;
        seen += chunk.len() as u64;
        if seen > max_bytes {
            exceeded.store(true, Ordering::Relaxed);
            return Err(LimitError::TooLarge);
        }
        Ok(chunk)
    })
}

impl From<reqwest::Error> for LimitError {
    fn from(err: reqwest::Error) -> Self {
        Self::Read(err.without_url())
    }
}

impl RecordingFetcher {
    pub fn new(
        hosts: HostAllowList,
        exotel: Option<ExotelCredentials>,
        max_bytes: u64,
    ) -> Result<Self, reqwest::Error> {
        let hops = hosts.clone();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(45))
            // A proxy would resolve the name itself, past our resolver.
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver {
                allow_any: hosts.loopback(),
            }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
                } else if hops.allows(attempt.url()) {
                    attempt.follow()
                } else {
                    let refused = format!(
                        "redirect to {} is not to an allowed recording host",
                        attempt.url().host_str().unwrap_or("(none)")
                    );
                    attempt.error(refused)
                }
            }))
            .build()?;
        Ok(Self {
            http,
            hosts,
            exotel,
            max_bytes,
        })
    }

    /// `MAX_RECORDING_BYTES`, default 500 MB.
    pub fn max_bytes_from_env() -> Result<u64, ConfigError> {
        config::parsed_or("MAX_RECORDING_BYTES", DEFAULT_MAX_RECORDING_BYTES)
    }

    /// Starts the download; the body is read by whoever consumes the stream.
    pub async fn open(&self, url: &Url) -> Result<Recording, FetchError> {
        if !self.hosts.allows(url) {
            return Err(FetchError::Permanent(
                "recording URL is not on the allowed hosts".into(),
            ));
        }
        let mut request = self.http.get(url.clone());
        if let Some(exotel) = self.exotel.as_ref().filter(|e| e.applies_to(url)) {
            request = request.basic_auth(exotel.api_key.expose(), Some(exotel.api_token.expose()));
        }
        let response = request.send().await.map_err(send_error)?;
        let status = response.status();
        if !status.is_success() {
            // A recording that is not there yet (404) may appear: Exotel publishes late.
            let message = format!("recording host answered HTTP {}", status.as_u16());
            return Err(
                if status == StatusCode::NOT_FOUND
                    || status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT
                {
                    FetchError::Temporary(message)
                } else {
                    FetchError::Permanent(message)
                },
            );
        }
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes)
        {
            return Err(too_large(self.max_bytes));
        }
        let exceeded = Arc::new(AtomicBool::new(false));
        let body = limit_stream(
            response.bytes_stream(),
            self.max_bytes,
            Arc::clone(&exceeded),
        );
        Ok(Recording {
            body: Box::pin(body),
            limit: SizeLimit {
                exceeded,
                max_bytes: self.max_bytes,
            },
        })
    }
}

/// Policy refusals (a redirect or an address) are permanent; the rest is network.
fn send_error(err: reqwest::Error) -> FetchError {
    if err.is_redirect() {
        let why = std::error::Error::source(&err)
            .map(ToString::to_string)
            .unwrap_or_else(|| "redirect refused".into());
        return FetchError::Permanent(format!("recording download refused: {why}"));
    }
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<RefusedAddress>() {
            return FetchError::Permanent(format!("recording download refused: {refused}"));
        }
        source = cause.source();
    }
    FetchError::Temporary(format!(
        "recording download request failed: {}",
        err.without_url()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow() -> HostAllowList {
        HostAllowList::parse("api.exotel.com, *.exotel.in,127.0.0.1:3100").with_loopback(true)
    }

    fn url(raw: &str) -> Url {
        Url::parse(raw).unwrap()
    }

    #[test]
    fn allows_listed_https_hosts() {
        assert!(allow().allows(&url("https://api.exotel.com/rec/1.mp3")));
        assert!(allow().allows(&url("https://api.exotel.com:443/rec/1.mp3")));
        assert!(allow().allows(&url("https://recordings.exotel.in/a.mp3")));
        assert!(allow().allows(&url("http://127.0.0.1:3100/recordings/a.mp3")));
    }

    #[test]
    fn refuses_other_hosts_schemes_and_userinfo() {
        assert!(!allow().allows(&url("https://evil.example.com/a.mp3")));
        assert!(!allow().allows(&url("http://api.exotel.com/a.mp3")));
        assert!(!allow().allows(&url("https://exotel.in/a.mp3")));
        assert!(!allow().allows(&url("https://api.exotel.com.evil.com/a.mp3")));
        assert!(!allow().allows(&url("http://127.0.0.1:9001/2018-06-01/runtime")));
        assert!(!allow().allows(&url("https://user:pw@api.exotel.com/a.mp3")));
        assert!(!allow().allows(&url("file:///etc/passwd")));
    }

    #[test]
    fn an_entry_without_a_port_allows_only_the_default_port() {
        assert!(!allow().allows(&url("https://api.exotel.com:8443/a.mp3")));
        assert!(!allow().allows(&url("https://recordings.exotel.in:22/a.mp3")));
        let listed = HostAllowList::parse("api.exotel.com:8443");
        assert!(listed.allows(&url("https://api.exotel.com:8443/a.mp3")));
        assert!(!listed.allows(&url("https://api.exotel.com/a.mp3")));
    }

    #[test]
    fn lambda_rules_refuse_http_and_internal_literals() {
        let lambda = HostAllowList::parse(
            "127.0.0.1:3100,localhost:3100,169.254.169.254,10.0.0.5,[::1]:3100,93.184.216.34",
        );
        assert!(!lambda.allows(&url("http://127.0.0.1:3100/a.mp3")));
        assert!(!lambda.allows(&url("https://127.0.0.1:3100/a.mp3")));
        assert!(!lambda.allows(&url("http://localhost:3100/a.mp3")));
        assert!(!lambda.allows(&url("https://[::1]:3100/a.mp3")));
        assert!(!lambda.allows(&url("https://169.254.169.254/latest/meta-data/")));
        assert!(!lambda.allows(&url("https://10.0.0.5/a.mp3")));
        assert!(lambda.allows(&url("https://93.184.216.34/a.mp3")));
    }

    #[test]
    fn internal_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(refused_ip(ip.parse().unwrap()), "{ip} should be refused");
        }
        for ip in ["93.184.216.34", "100.128.0.1", "172.32.0.1", "2606:4700::1"] {
            assert!(!refused_ip(ip.parse().unwrap()), "{ip} should be allowed");
        }
    }

    #[test]
    fn the_resolver_filter_keeps_only_public_addresses() {
        let metadata: SocketAddr = "169.254.169.254:0".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let public: SocketAddr = "93.184.216.34:0".parse().unwrap();
        assert!(public_addresses("evil.example", [metadata, loopback]).is_err());
        assert_eq!(
            public_addresses("mixed.example", [metadata, public]).unwrap(),
            vec![public]
        );
    }

    #[tokio::test]
    async fn the_lambda_resolver_refuses_localhost() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = CheckedResolver { allow_any: false }
            .resolve(name)
            .await
            .err()
            .expect("localhost is loopback");
        assert!(err.to_string().contains("localhost"), "{err}");
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let local = CheckedResolver { allow_any: true }.resolve(name).await;
        assert!(local.is_ok());
    }

    #[tokio::test]
    async fn the_size_limit_fails_the_stream_while_reading() {
        let chunks = futures_util::stream::iter(
            [Bytes::from_static(b"12345"), Bytes::from_static(b"67890")]
                .map(Ok::<_, reqwest::Error>),
        );
        let exceeded = Arc::new(AtomicBool::new(false));
        let results: Vec<_> = limit_stream(chunks, 7, Arc::clone(&exceeded))
            .collect()
            .await;
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(LimitError::TooLarge)));
        assert!(exceeded.load(Ordering::Relaxed));
    }

    #[test]
    fn parse_allowed_explains_refusals() {
        let err = parse_allowed("https://evil.example.com/x", &allow()).unwrap_err();
        assert!(err.contains("evil.example.com"));
        assert!(parse_allowed("not a url", &allow()).is_err());
    }
}
