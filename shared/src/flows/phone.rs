//! How an answered phone call reaches the agent (seed 002's "Custom Call
//! Flow"): an optional greeting, an optional DTMF menu posting to
//! `/twilio/routing`, then one of two connect modes.
//!
//! - `stream`: `<Connect><Stream url=AGENT_STREAM_URL>` with the room, call
//!   sid and session id as `<Parameter>`s (Twilio forbids query strings on
//!   stream URLs).
//! - `sip`: `<Dial><Sip>sip:{room}@{LIVEKIT_SIP_ENDPOINT}` into LiveKit's
//!   SIP service; its callee dispatch rule (empty prefix) puts the caller in
//!   the room named by the URI's user part (`twilio-{CallSid}`,
//!   `whatsapp-{CallSid}`), the room this project created and sent the
//!   agent to.
//!
//! Every answer derives the room from the call's kind and sid
//! ([`CallContext`]), and the menu's action URL carries the kind
//! (`?kind=whatsapp`; Twilio signs the whole URL), so a caller who pressed a
//! key meets the agent in the room it was dispatched to.

use std::collections::BTreeMap;

use quick_xml::escape::escape;
use serde::Deserialize;

use crate::api::public_url::PublicBaseUrl;
use crate::base::config::{self, ConfigError, Secret};
use crate::flows::sessions::SessionKind;

/// What the caller hears when the agent cannot be reached.
/// What a caller hears when the number called belongs to no organisation.
pub const NOT_IN_SERVICE: &str = "Sorry, the number you called is not in service. Goodbye.";
pub const TRY_AGAIN: &str =
    "Sorry, we cannot connect your call right now. Please try again in a few minutes.";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectMode {
    Stream {
        url: String,
    },
    Sip {
        endpoint: String,
        username: Option<String>,
        password: Option<Secret>,
    },
}

/// One menu choice: what pressing its digit does.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum MenuAction {
    /// Forward the call to a number.
    Dial { number: String },
    /// Play a message and hang up.
    Say { message: String },
    /// Connect the agent (as staying on the line does).
    Agent,
}

/// `CALL_MENU`: a prompt and the digit choices.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Menu {
    pub prompt: String,
    #[serde(default = "default_menu_timeout")]
    pub timeout_seconds: u32,
    pub options: BTreeMap<String, MenuAction>,
}

fn default_menu_timeout() -> u32 {
    5
}

/// The call flow's configuration, read once per cold start.
#[derive(Debug, Clone)]
pub struct CallFlow {
    pub mode: ConnectMode,
    pub greeting: Option<String>,
    /// Twilio `<Say voice>`, e.g. `Polly.Joanna`.
    pub voice: Option<String>,
    pub menu: Option<Menu>,
    /// `<Gather>` posts the digit to `{base}/twilio/routing`.
    pub public_base_url: PublicBaseUrl,
}

/// The conversation a TwiML answer connects: its room and session id
/// follow from the kind and the (signed) call sid, never from anything else.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    pub kind: SessionKind,
    pub call_sid: &'a str,
}

impl CallContext<'_> {
    pub fn room(&self) -> String {
        self.kind.room(self.call_sid)
    }

    pub fn session_id(&self) -> String {
        self.kind.session_id(self.call_sid)
    }
}

/// The `?kind=` the menu's action URL carries: absent for phone calls (the
/// URL Twilio has always been given), the kind's name otherwise.
pub fn routing_kind(kind: Option<&str>) -> Option<SessionKind> {
    match kind {
        None | Some("phone") => Some(SessionKind::Phone),
        Some("whatsapp") => Some(SessionKind::Whatsapp),
        Some(_) => None,
    }
}

impl CallFlow {
    pub fn from_env() -> Result<Self, ConfigError> {
        let mode = match config::optional("TWILIO_CONNECT_MODE").as_deref() {
            None | Some("stream") => ConnectMode::Stream {
                url: config::required("AGENT_STREAM_URL")?,
            },
            Some("sip") => ConnectMode::Sip {
                endpoint: config::required("LIVEKIT_SIP_ENDPOINT")?,
                username: config::optional("LIVEKIT_SIP_USERNAME"),
                password: config::optional_secret("LIVEKIT_SIP_PASSWORD"),
            },
            Some(_) => {
                return Err(ConfigError::Invalid {
                    name: "TWILIO_CONNECT_MODE",
                    reason: "must be `stream` or `sip`".into(),
                })
            }
        };
        let menu = match config::optional("CALL_MENU") {
            None => None,
            Some(json) => Some(
                serde_json::from_str(&json).map_err(|e| ConfigError::Invalid {
                    name: "CALL_MENU",
                    reason: format!("not a menu: {e}"),
                })?,
            ),
        };
        Ok(Self {
            mode,
            greeting: config::optional("CALL_GREETING"),
            voice: config::optional("CALL_GREETING_VOICE"),
            menu,
            public_base_url: PublicBaseUrl::from_env(),
        })
    }

    fn say(&self, text: &str) -> String {
        match &self.voice {
            Some(voice) => format!("<Say voice=\"{}\">{}</Say>", escape(voice), escape(text)),
            None => format!("<Say>{}</Say>", escape(text)),
        }
    }

    /// The verbs that hand the call to the agent.
    fn connect(&self, call: &CallContext<'_>) -> String {
        match &self.mode {
            ConnectMode::Stream { url } => {
                let mut xml = format!("<Connect><Stream url=\"{}\">", escape(url));
                let (room, session_id) = (call.room(), call.session_id());
                for (name, value) in [
                    ("roomName", room.as_str()),
                    ("callSid", call.call_sid),
                    ("sessionId", session_id.as_str()),
                ] {
                    xml.push_str(&format!(
                        "<Parameter name=\"{name}\" value=\"{}\"/>",
                        escape(value)
                    ));
                }
                xml.push_str("</Stream></Connect>");
                xml
            }
            ConnectMode::Sip {
                endpoint,
                username,
                password,
            } => {
                let mut attributes = String::new();
                if let (Some(user), Some(pass)) = (username, password) {
                    attributes = format!(
                        " username=\"{}\" password=\"{}\"",
                        escape(user),
                        escape(pass.expose())
                    );
                }
                // The user part is the room itself: LiveKit's callee rule
                // (empty prefix) joins the caller to exactly that room.
                format!(
                    "<Dial><Sip{attributes}>sip:{}@{};transport=tcp</Sip></Dial>",
                    escape(call.room()),
                    escape(endpoint)
                )
            }
        }
    }

    /// The answer to `/twilio/voice`: greeting, menu (if configured) and the
    /// agent for whoever stays on the line.
    pub fn answer(&self, call: &CallContext<'_>) -> String {
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>");
        if let Some(greeting) = &self.greeting {
            xml.push_str(&self.say(greeting));
        }
        if let Some(menu) = &self.menu {
            // Relative when no base is known: Twilio resolves it against
            // the URL this TwiML was fetched from.
            let base = self.public_base_url.current().unwrap_or_default();
            let action = match call.kind {
                SessionKind::Phone => format!("{base}/twilio/routing"),
                other => format!("{base}/twilio/routing?kind={}", other.name()),
            };
            xml.push_str(&format!(
                "<Gather input=\"dtmf\" numDigits=\"1\" timeout=\"{}\" action=\"{}\" method=\"POST\">{}</Gather>",
                menu.timeout_seconds,
                escape(&action),
                self.say(&menu.prompt)
            ));
        }
        xml.push_str(&self.connect(call));
        xml.push_str("</Response>");
        xml
    }

    /// The answer to `/twilio/routing` for the digit pressed.
    pub fn route(&self, digits: Option<&str>, call: &CallContext<'_>) -> String {
        let action = self
            .menu
            .as_ref()
            .zip(digits)
            .and_then(|(menu, digit)| menu.options.get(digit.trim()));
        let body = match action {
            Some(MenuAction::Dial { number }) => format!("<Dial>{}</Dial>", escape(number)),
            Some(MenuAction::Say { message }) => format!("{}<Hangup/>", self.say(message)),
            // No digit, an unknown one or "agent": the agent takes the call.
            Some(MenuAction::Agent) | None => self.connect(call),
        };
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>{body}</Response>")
    }

    /// TwiML that apologises and hangs up: never a 5xx to Twilio, which
    /// would play its own "application error".
    /// TwiML for a call to a number no organisation owns: a short notice
    /// and a hang-up; no session, no agent.
    pub fn not_in_service(&self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>{}<Hangup/></Response>",
            self.say(NOT_IN_SERVICE)
        )
    }

    pub fn try_again(&self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>{}<Hangup/></Response>",
            self.say(TRY_AGAIN)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(mode: ConnectMode, menu: Option<&str>) -> CallFlow {
        CallFlow {
            mode,
            greeting: Some("Please wait while we connect you.".into()),
            voice: Some("Polly.Joanna".into()),
            menu: menu.map(|m| serde_json::from_str(m).unwrap()),
            public_base_url: "https://api.example.com".into(),
        }
    }

    const CALL: CallContext<'static> = CallContext {
        kind: SessionKind::Phone,
        call_sid: "CA123",
    };

    const MENU: &str = r#"{"prompt":"Press 1 for sales, 2 for support.","options":{
        "1":{"action":"dial","number":"+14155550123"},
        "2":{"action":"say","message":"Support is open 9 to 5 & weekends."},
        "0":{"action":"agent"}}}"#;

    #[test]
    fn stream_mode_passes_the_room_as_parameters() {
        let flow = flow(
            ConnectMode::Stream {
                url: "wss://agent.example.com/twilio".into(),
            },
            None,
        );
        let xml = flow.answer(&CALL);
        assert!(xml.contains("<Say voice=\"Polly.Joanna\">Please wait while we connect you.</Say>"));
        assert!(xml.contains("<Connect><Stream url=\"wss://agent.example.com/twilio\">"));
        assert!(xml.contains("<Parameter name=\"roomName\" value=\"twilio-CA123\"/>"));
        assert!(xml.contains("<Parameter name=\"callSid\" value=\"CA123\"/>"));
        assert!(!xml.contains("<Gather"));
    }

    #[test]
    fn sip_mode_dials_the_room_at_livekit() {
        let flow = flow(
            ConnectMode::Sip {
                endpoint: "abc.sip.livekit.cloud".into(),
                username: Some("twilio".into()),
                password: Some(Secret::new("p&ss")),
            },
            None,
        );
        let xml = flow.answer(&CALL);
        assert!(xml.contains(
            "<Dial><Sip username=\"twilio\" password=\"p&amp;ss\">sip:twilio-CA123@abc.sip.livekit.cloud;transport=tcp</Sip></Dial>"
        ));
    }

    #[test]
    fn a_whatsapp_call_keeps_its_kind_through_the_menu() {
        let whatsapp = CallContext {
            kind: SessionKind::Whatsapp,
            call_sid: "CA123",
        };
        let stream = flow(
            ConnectMode::Stream {
                url: "wss://a".into(),
            },
            Some(MENU),
        );
        let xml = stream.answer(&whatsapp);
        assert!(xml.contains("action=\"https://api.example.com/twilio/routing?kind=whatsapp\""));
        assert!(xml.contains("<Parameter name=\"roomName\" value=\"whatsapp-CA123\"/>"));
        assert!(stream
            .route(None, &whatsapp)
            .contains("<Parameter name=\"sessionId\" value=\"whatsapp-CA123\"/>"));
        let sip = flow(
            ConnectMode::Sip {
                endpoint: "abc.sip.livekit.cloud".into(),
                username: None,
                password: None,
            },
            None,
        );
        assert!(sip
            .answer(&whatsapp)
            .contains("<Sip>sip:whatsapp-CA123@abc.sip.livekit.cloud;transport=tcp</Sip>"));
        assert_eq!(routing_kind(Some("whatsapp")), Some(SessionKind::Whatsapp));
        assert_eq!(routing_kind(None), Some(SessionKind::Phone));
        assert_eq!(routing_kind(Some("web")), None);
    }

    #[test]
    fn menu_gathers_then_falls_through_to_the_agent() {
        let flow = flow(
            ConnectMode::Stream {
                url: "wss://a".into(),
            },
            Some(MENU),
        );
        let xml = flow.answer(&CALL);
        let gather = xml.find("<Gather").unwrap();
        assert!(xml[gather..].contains("action=\"https://api.example.com/twilio/routing\""));
        assert!(xml.find("<Connect>").unwrap() > gather);
        assert!(flow
            .route(Some("1"), &CALL)
            .contains("<Dial>+14155550123</Dial>"));
        let support = flow.route(Some("2"), &CALL);
        assert!(support.contains("9 to 5 &amp; weekends.</Say><Hangup/>"));
        assert!(flow.route(Some("0"), &CALL).contains("<Connect>"));
        assert!(flow.route(Some("7"), &CALL).contains("<Connect>"));
        assert!(flow.route(None, &CALL).contains("<Connect>"));
    }

    #[test]
    fn try_again_is_valid_twiml_that_hangs_up() {
        let flow = flow(
            ConnectMode::Stream {
                url: "wss://a".into(),
            },
            None,
        );
        let xml = flow.try_again();
        assert!(xml.starts_with("<?xml"));
        assert!(xml.ends_with("<Hangup/></Response>"));
    }
}
