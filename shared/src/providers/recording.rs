//! Which recording URLs the worker may fetch, and with what credentials.
//!
//! A webhook names the recording URL, so without an allow-list anyone holding
//! the webhook token could make the worker fetch arbitrary addresses (SSRF).

use url::Url;

use crate::base::config::Secret;

/// Hosts the worker may download recordings from. Entries are `host`,
/// `host:port` or `*.suffix`. Plain `http` is accepted only for loopback
/// hosts, which exist only in local runs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAllowList(Vec<String>);

impl HostAllowList {
    /// Parses the comma-separated `RECORDING_ALLOWED_HOSTS` value.
    pub fn parse(list: &str) -> Self {
        Self(
            list.split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        )
    }

    pub fn allows(&self, url: &Url) -> bool {
        let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        let loopback = host == "127.0.0.1" || host == "localhost" || host == "[::1]";
        let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
        if !scheme_ok || !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        let with_port = url.port().map(|p| format!("{host}:{p}"));
        self.0.iter().any(|entry| match entry.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => *entry == host || Some(entry) == with_port.as_ref(),
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
        self.hosts.allows(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow() -> HostAllowList {
        HostAllowList::parse("api.exotel.com, *.exotel.in,127.0.0.1:3100")
    }

    #[test]
    fn allows_listed_https_hosts() {
        assert!(allow().allows(&Url::parse("https://api.exotel.com/rec/1.mp3").unwrap()));
        assert!(allow().allows(&Url::parse("https://recordings.exotel.in/a.mp3").unwrap()));
        assert!(allow().allows(&Url::parse("http://127.0.0.1:3100/recordings/a.mp3").unwrap()));
    }

    #[test]
    fn refuses_other_hosts_schemes_and_userinfo() {
        assert!(!allow().allows(&Url::parse("https://evil.example.com/a.mp3").unwrap()));
        assert!(!allow().allows(&Url::parse("http://api.exotel.com/a.mp3").unwrap()));
        assert!(!allow().allows(&Url::parse("https://exotel.in/a.mp3").unwrap()));
        assert!(!allow().allows(&Url::parse("https://api.exotel.com.evil.com/a.mp3").unwrap()));
        assert!(!allow().allows(&Url::parse("http://127.0.0.1:9001/2018-06-01/runtime").unwrap()));
        assert!(!allow().allows(&Url::parse("https://user:pw@api.exotel.com/a.mp3").unwrap()));
        assert!(!allow().allows(&Url::parse("file:///etc/passwd").unwrap()));
    }

    #[test]
    fn parse_allowed_explains_refusals() {
        let err = parse_allowed("https://evil.example.com/x", &allow()).unwrap_err();
        assert!(err.contains("evil.example.com"));
        assert!(parse_allowed("not a url", &allow()).is_err());
    }
}
