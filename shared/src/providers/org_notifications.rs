//! Where an organisation's own notifications go, kept in its
//! `notifications` secret like its provider accounts: a Slack incoming
//! webhook URL, or a bot token with a channel, and/or an email address.
//! The document is the admin route's body and the secret's value:
//! `{"slack_webhook_url"}` or `{"slack_bot_token", "slack_channel"}`, with
//! or without `"email"`; at least one route.

use std::fmt;

use serde::Deserialize;

use super::org_accounts::InvalidAccount;
use crate::base::config::{self, Secret};

/// Longest webhook URL accepted (Slack's are about 80 characters).
const MAX_URL_CHARS: usize = 512;
/// Slack channel names and ids are at most 80 characters.
const MAX_CHANNEL_CHARS: usize = 80;
/// RFC 5321's limit for a forward path.
const MAX_EMAIL_CHARS: usize = 254;

/// An organisation's Slack.
#[derive(Clone, PartialEq, Eq)]
pub enum OrgSlack {
    /// An incoming webhook: bound to one channel, cannot thread.
    Webhook(Secret),
    /// `chat.postMessage` with the organisation's bot token, in `channel`.
    Bot { token: Secret, channel: String },
}

/// An organisation's notification routes. `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct OrgNotificationRoutes {
    pub slack: Option<OrgSlack>,
    pub email: Option<String>,
}

impl fmt::Debug for OrgNotificationRoutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrgNotificationRoutes")
            .field("slack", &self.slack_kind())
            .field(
                "email",
                &self.email.as_deref().map(crate::base::mask::email),
            )
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesDoc {
    #[serde(default)]
    slack_webhook_url: Option<String>,
    #[serde(default)]
    slack_bot_token: Option<String>,
    #[serde(default)]
    slack_channel: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

fn invalid(reason: &str) -> InvalidAccount {
    InvalidAccount(reason.to_string())
}

/// `https`; plain `http` only to a loopback host and only off Lambda (the
/// fakes of tests and `make dev`). No credentials in the URL.
fn valid_webhook_url(value: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(value) else {
        return false;
    };
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    let scheme_ok = match url.scheme() {
        "https" => true,
        "http" => loopback && !config::in_lambda(),
        _ => false,
    };
    scheme_ok
        && value.len() <= MAX_URL_CHARS
        && url.host_str().is_some()
        && url.username().is_empty()
        && url.password().is_none()
}

/// A bot token (`xoxb-`), visible ASCII.
fn valid_bot_token(value: &str) -> bool {
    value.starts_with("xoxb-")
        && (10..=256).contains(&value.len())
        && value.chars().all(|c| c.is_ascii_graphic())
}

/// A channel id (`C0123`) or name (`#ops`).
fn valid_channel(value: &str) -> bool {
    (1..=MAX_CHANNEL_CHARS).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '#' | '-' | '_' | '.'))
}

/// One plain address: `local@domain.tld`, no display name, no list.
pub fn valid_email(value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    value.len() <= MAX_EMAIL_CHARS
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, ',' | ';' | '<' | '>' | '"' | '\\'))
}

impl OrgNotificationRoutes {
    /// Parses and checks the document; errors name the field, never its value.
    pub fn parse(json: &[u8]) -> Result<Self, InvalidAccount> {
        let doc: RoutesDoc = serde_json::from_slice(json).map_err(|e| {
            let why = if e.is_syntax() || e.is_eof() {
                "the body is not JSON"
            } else {
                "a field is unknown or not a string"
            };
            InvalidAccount(format!(
                "expected {{\"slack_webhook_url\"}} or {{\"slack_bot_token\", \"slack_channel\"}}, \
                 and/or {{\"email\"}} ({why})"
            ))
        })?;
        let slack = match (
            doc.slack_webhook_url,
            doc.slack_bot_token,
            doc.slack_channel,
        ) {
            (None, None, None) => None,
            (Some(url), None, None) => {
                if !valid_webhook_url(&url) {
                    return Err(invalid(
                        "slack_webhook_url must be an https URL of at most 512 characters",
                    ));
                }
                Some(OrgSlack::Webhook(Secret::new(url)))
            }
            (None, Some(token), Some(channel)) => {
                if !valid_bot_token(&token) {
                    return Err(invalid(
                        "slack_bot_token must be a bot token (xoxb-...) of at most 256 characters",
                    ));
                }
                if !valid_channel(&channel) {
                    return Err(invalid(
                        "slack_channel must be a channel id or #name of 1-80 letters, digits, - or _",
                    ));
                }
                Some(OrgSlack::Bot {
                    token: Secret::new(token),
                    channel,
                })
            }
            (Some(_), _, _) => {
                return Err(invalid(
                    "use slack_webhook_url or slack_bot_token with slack_channel, not both",
                ))
            }
            _ => return Err(invalid("slack_bot_token and slack_channel go together")),
        };
        if let Some(email) = &doc.email {
            if !valid_email(email) {
                return Err(invalid(
                    "email must be one address (name@domain) of at most 254 characters",
                ));
            }
        }
        if slack.is_none() && doc.email.is_none() {
            return Err(invalid(
                "give at least one route: slack_webhook_url, slack_bot_token with slack_channel, or email",
            ));
        }
        Ok(Self {
            slack,
            email: doc.email,
        })
    }

    /// The document stored in the secret.
    pub fn to_secret(&self) -> Secret {
        let mut doc = serde_json::Map::new();
        match &self.slack {
            Some(OrgSlack::Webhook(url)) => {
                doc.insert("slack_webhook_url".into(), url.expose().into());
            }
            Some(OrgSlack::Bot { token, channel }) => {
                doc.insert("slack_bot_token".into(), token.expose().into());
                doc.insert("slack_channel".into(), channel.clone().into());
            }
            None => {}
        }
        if let Some(email) = &self.email {
            doc.insert("email".into(), email.clone().into());
        }
        Secret::new(serde_json::Value::Object(doc).to_string())
    }

    /// `webhook`, `bot` or nothing.
    pub fn slack_kind(&self) -> Option<&'static str> {
        self.slack.as_ref().map(|slack| match slack {
            OrgSlack::Webhook(_) => "webhook",
            OrgSlack::Bot { .. } => "bot",
        })
    }

    /// What the admin routes may show: the kind of Slack, its channel and
    /// the masked address; never a URL or token.
    pub fn view(&self) -> serde_json::Value {
        let mut view = serde_json::json!({"slack": self.slack_kind()});
        if let Some(OrgSlack::Bot { channel, .. }) = &self.slack {
            view["slack_channel"] = channel.clone().into();
        }
        if let Some(email) = &self.email {
            view["email"] = crate::base::mask::email(email).into();
        }
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<OrgNotificationRoutes, InvalidAccount> {
        OrgNotificationRoutes::parse(json.to_string().as_bytes())
    }

    #[test]
    fn each_route_alone_or_slack_with_email_is_accepted_and_round_trips() {
        for doc in [
            serde_json::json!({"slack_webhook_url": "https://hooks.slack.com/services/T1/B2/x"}),
            serde_json::json!({"slack_bot_token": "xoxb-1-2-abc", "slack_channel": "C0123"}),
            serde_json::json!({"email": "ops@acme.example"}),
            serde_json::json!({"slack_bot_token": "xoxb-1-2-abc", "slack_channel": "#ops", "email": "a@b.co"}),
            // Tests and `make dev` post to fakes on 127.0.0.1.
            serde_json::json!({"slack_webhook_url": "http://127.0.0.1:9/hook"}),
        ] {
            let routes = parse(doc.clone()).unwrap_or_else(|e| panic!("{doc}: {e}"));
            let again = OrgNotificationRoutes::parse(routes.to_secret().expose().as_bytes())
                .expect("the stored document parses");
            assert_eq!(again, routes);
        }
    }

    #[test]
    fn bad_documents_are_refused_without_echoing_values() {
        for (doc, field) in [
            (serde_json::json!({}), "at least one route"),
            (
                serde_json::json!({"slack_webhook_url": "ftp://hooks.slack.com/x"}),
                "slack_webhook_url",
            ),
            (
                serde_json::json!({"slack_webhook_url": "http://hooks.slack.com/x"}),
                "slack_webhook_url",
            ),
            (
                serde_json::json!({"slack_webhook_url": "https://u:p@hooks.slack.com/x"}),
                "slack_webhook_url",
            ),
            (
                serde_json::json!({"slack_bot_token": "xoxp-user-token", "slack_channel": "C1"}),
                "slack_bot_token",
            ),
            (
                serde_json::json!({"slack_bot_token": "xoxb-1-2-abc"}),
                "go together",
            ),
            (serde_json::json!({"slack_channel": "C1"}), "go together"),
            (
                serde_json::json!({"slack_bot_token": "xoxb-1-2-abc", "slack_channel": "C 1"}),
                "slack_channel",
            ),
            (
                serde_json::json!({"slack_bot_token": "xoxb-1-2-abc", "slack_channel": "C".repeat(81)}),
                "slack_channel",
            ),
            (
                serde_json::json!({"slack_webhook_url": "https://h.example/x", "slack_bot_token": "xoxb-1-2-abc"}),
                "not both",
            ),
            (
                serde_json::json!({"email": "Ops <ops@acme.example>"}),
                "email",
            ),
            (serde_json::json!({"email": "a@b.co,c@d.co"}), "email"),
            (serde_json::json!({"email": "nobody"}), "email"),
            (
                serde_json::json!({"email": "x".repeat(250) + "@a.co"}),
                "email",
            ),
            (serde_json::json!({"email": 5}), "not a string"),
            (
                serde_json::json!({"webhook": "https://h.example/x"}),
                "unknown",
            ),
        ] {
            let err = parse(doc.clone()).expect_err(&doc.to_string()).0;
            assert!(err.contains(field), "{doc}: {err}");
            assert!(
                !err.contains("xoxb-1-2-abc") && !err.contains("acme"),
                "{err}"
            );
        }
        assert!(OrgNotificationRoutes::parse(b"{not json").is_err());
    }

    #[test]
    fn views_and_debug_never_show_a_url_or_token() {
        let routes = parse(serde_json::json!({
            "slack_bot_token": "xoxb-1-2-secret", "slack_channel": "C0123", "email": "ops@acme.example"
        }))
        .unwrap();
        let shown = format!("{} {routes:?}", routes.view());
        assert!(
            !shown.contains("xoxb") && !shown.contains("ops@acme"),
            "{shown}"
        );
        assert_eq!(routes.view()["slack"], "bot");
        assert_eq!(routes.view()["slack_channel"], "C0123");
        let webhook = parse(
            serde_json::json!({"slack_webhook_url": "https://hooks.slack.com/services/T/B/s"}),
        )
        .unwrap();
        assert!(!webhook.view().to_string().contains("hooks.slack.com"));
    }
}
