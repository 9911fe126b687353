//! One end reason for every call and session, whatever its provider: each
//! provider's own vocabulary (Twilio `CallStatus` and `SipResponseCode`,
//! ElevenLabs' status and `termination_reason`, LiveKit's disconnect
//! reasons) maps onto this small set, so a call log can be filtered by it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Connected and ended normally (who hung up unknown).
    Completed,
    /// Connected; the caller or callee (the human) hung up.
    CallerHangup,
    /// Connected; the agent ended it (end-call tool, room closed by us).
    AgentHangup,
    NoAnswer,
    Busy,
    /// Never connected: refused, unreachable number, carrier failure.
    Failed,
    /// Ended by us before it connected.
    Canceled,
    /// Cut by a time limit (max duration, silence, session deadline).
    Timeout,
    Voicemail,
    /// The provider itself failed (5xx SIP answer, server shutdown).
    ProviderError,
    Unknown,
}

impl EndReason {
    pub const ALL: [EndReason; 11] = [
        Self::Completed,
        Self::CallerHangup,
        Self::AgentHangup,
        Self::NoAnswer,
        Self::Busy,
        Self::Failed,
        Self::Canceled,
        Self::Timeout,
        Self::Voicemail,
        Self::ProviderError,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::CallerHangup => "caller_hangup",
            Self::AgentHangup => "agent_hangup",
            Self::NoAnswer => "no_answer",
            Self::Busy => "busy",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Timeout => "timeout",
            Self::Voicemail => "voicemail",
            Self::ProviderError => "provider_error",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == text)
    }

    /// Whether the call connected (its duration is real talk time).
    pub fn connected(self) -> bool {
        matches!(
            self,
            Self::Completed
                | Self::CallerHangup
                | Self::AgentHangup
                | Self::Timeout
                | Self::Voicemail
        )
    }

    /// A final Twilio `CallStatus` (with the callback's `SipResponseCode`
    /// when it sent one); `None` for a status that is not final.
    pub fn from_twilio(status: &str, sip_response_code: Option<u16>) -> Option<Self> {
        let reason = match status {
            "completed" => Self::Completed,
            "busy" => Self::Busy,
            "no-answer" => Self::NoAnswer,
            "canceled" => Self::Canceled,
            "failed" => match sip_response_code {
                Some(486 | 600) => Self::Busy,
                Some(408 | 480) => Self::NoAnswer,
                Some(487) => Self::Canceled,
                Some(500..=599) => Self::ProviderError,
                _ => Self::Failed,
            },
            _ => return None,
        };
        Some(reason)
    }

    /// A final ElevenLabs conversation (`done` or `failed`) and its
    /// `metadata.termination_reason`, free text such as "Call ended by
    /// user", "end_call tool was called.", "Maximum duration exceeded".
    pub fn from_elevenlabs(status: &str, termination_reason: Option<&str>) -> Option<Self> {
        let text = termination_reason.unwrap_or_default().to_ascii_lowercase();
        let has = |needle: &str| text.contains(needle);
        match status {
            "failed" if has("busy") => Some(Self::Busy),
            "failed" if has("no answer") || has("no-answer") || has("not answered") => {
                Some(Self::NoAnswer)
            }
            "failed" => Some(Self::Failed),
            "done" if has("voicemail") => Some(Self::Voicemail),
            "done" if has("end_call") || has("agent") => Some(Self::AgentHangup),
            "done" if has("user") || has("client disconnected") || has("remote party") => {
                Some(Self::CallerHangup)
            }
            "done" if has("max") || has("duration") || has("silence") || has("timeout") => {
                Some(Self::Timeout)
            }
            "done" => Some(Self::Completed),
            _ => None,
        }
    }

    /// LiveKit's `DisconnectReason` of the participant whose leaving ended
    /// the session (`CLIENT_INITIATED`, `ROOM_DELETED`, ...), or the
    /// `room_finished` of an empty room (no reason: `completed`).
    pub fn from_livekit(disconnect_reason: Option<&str>) -> Self {
        match disconnect_reason {
            None | Some("") | Some("UNKNOWN_REASON") => Self::Completed,
            Some("CLIENT_INITIATED") | Some("USER_REJECTED") => Self::CallerHangup,
            Some("ROOM_DELETED") | Some("ROOM_CLOSED") | Some("PARTICIPANT_REMOVED") => {
                Self::AgentHangup
            }
            Some("USER_UNAVAILABLE") => Self::NoAnswer,
            Some("SIP_TRUNK_FAILURE")
            | Some("SERVER_SHUTDOWN")
            | Some("SIGNAL_CLOSE")
            | Some("STATE_MISMATCH")
            | Some("JOIN_FAILURE")
            | Some("MIGRATION")
            | Some("CONNECTION_TIMEOUT")
            | Some("MEDIA_FAILURE") => Self::ProviderError,
            Some("DUPLICATE_IDENTITY") => Self::AgentHangup,
            Some(_) => Self::Unknown,
        }
    }

    /// A session's end as its enders word it: no reason (LiveKit's
    /// `room_finished`) is `completed`; a Twilio status of its call maps as
    /// Twilio's; a deadline is `timeout`; an end asked for through the API
    /// is `agent_hangup`.
    pub fn from_session_end(reason: Option<&str>) -> Self {
        let text = reason.unwrap_or_default();
        if text.is_empty() {
            return Self::Completed;
        }
        if let Some(reason) = Self::parse(text).or_else(|| Self::from_twilio(text, None)) {
            return reason;
        }
        let lower = text.to_ascii_lowercase();
        if lower.contains("deadline") || lower.contains("expired") || lower.contains("stale") {
            Self::Timeout
        } else if lower.contains("by api") || lower.contains("ended by") {
            Self::AgentHangup
        } else if lower.contains("room finished") {
            Self::Completed
        } else {
            Self::Unknown
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_its_name_and_serde() {
        for reason in EndReason::ALL {
            assert_eq!(EndReason::parse(reason.as_str()), Some(reason));
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                serde_json::json!(reason.as_str())
            );
        }
        assert_eq!(EndReason::parse("hung_up"), None);
    }

    #[test]
    fn twilio_final_statuses_and_sip_codes_map_to_one_reason() {
        let cases = [
            ("completed", None, EndReason::Completed),
            ("busy", None, EndReason::Busy),
            ("no-answer", None, EndReason::NoAnswer),
            ("canceled", None, EndReason::Canceled),
            ("failed", None, EndReason::Failed),
            ("failed", Some(404), EndReason::Failed),
            ("failed", Some(486), EndReason::Busy),
            ("failed", Some(480), EndReason::NoAnswer),
            ("failed", Some(503), EndReason::ProviderError),
        ];
        for (status, sip, expected) in cases {
            assert_eq!(
                EndReason::from_twilio(status, sip),
                Some(expected),
                "{status} {sip:?}"
            );
        }
        for open in ["queued", "initiated", "ringing", "in-progress"] {
            assert_eq!(EndReason::from_twilio(open, None), None);
        }
    }

    #[test]
    fn elevenlabs_termination_reasons_map_to_who_ended_the_call() {
        let cases = [
            ("done", Some("Call ended by user"), EndReason::CallerHangup),
            (
                "done",
                Some("end_call tool was called."),
                EndReason::AgentHangup,
            ),
            (
                "done",
                Some("Maximum duration exceeded"),
                EndReason::Timeout,
            ),
            ("done", Some("Voicemail detected"), EndReason::Voicemail),
            ("done", None, EndReason::Completed),
            ("failed", Some("Line busy"), EndReason::Busy),
            ("failed", Some("no answer"), EndReason::NoAnswer),
            ("failed", Some("Twilio error"), EndReason::Failed),
        ];
        for (status, text, expected) in cases {
            assert_eq!(
                EndReason::from_elevenlabs(status, text),
                Some(expected),
                "{text:?}"
            );
        }
        assert_eq!(EndReason::from_elevenlabs("in-progress", None), None);
    }

    #[test]
    fn livekit_disconnect_reasons_map_to_who_left() {
        assert_eq!(EndReason::from_livekit(None), EndReason::Completed);
        assert_eq!(
            EndReason::from_livekit(Some("CLIENT_INITIATED")),
            EndReason::CallerHangup
        );
        assert_eq!(
            EndReason::from_livekit(Some("ROOM_DELETED")),
            EndReason::AgentHangup
        );
        assert_eq!(
            EndReason::from_livekit(Some("SIP_TRUNK_FAILURE")),
            EndReason::ProviderError
        );
        assert_eq!(
            EndReason::from_livekit(Some("SOMETHING_NEW")),
            EndReason::Unknown
        );
    }

    #[test]
    fn a_sessions_worded_end_maps_to_the_shared_set() {
        assert_eq!(EndReason::from_session_end(None), EndReason::Completed);
        assert_eq!(
            EndReason::from_session_end(Some("no-answer")),
            EndReason::NoAnswer
        );
        assert_eq!(
            EndReason::from_session_end(Some(
                "no room_finished within the session's deadline; ended by the sweep"
            )),
            EndReason::Timeout
        );
        assert_eq!(
            EndReason::from_session_end(Some("ended by API")),
            EndReason::AgentHangup
        );
        assert_eq!(
            EndReason::from_session_end(Some("something else")),
            EndReason::Unknown
        );
    }

    #[test]
    fn only_connected_reasons_carry_talk_time() {
        assert!(EndReason::CallerHangup.connected());
        for never in [
            EndReason::NoAnswer,
            EndReason::Busy,
            EndReason::Failed,
            EndReason::Canceled,
        ] {
            assert!(!never.connected());
        }
    }
}
