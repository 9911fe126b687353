//! Seed 001's Slack message, character for character. The text is the users'
//! contract; keep it byte-identical to the seed's format.

use chrono::DateTime;

use crate::providers::slack_format::escape;
use crate::store::calls::{CallRecord, Direction, Transcript};

/// How many opening words of the transcript make the "Concern" line.
const CONCERN_WORDS: usize = 10;
const NOT_PROVIDED: &str = "N/A";

/// What the message reports about the transcription.
#[derive(Clone, Copy)]
pub enum Outcome<'a> {
    Transcribed(&'a Transcript),
    Failed(&'a str),
}

/// The "Concern" line: the transcript's own opening words (no rephrasing)
/// and the call's tone.
pub fn concern(transcript: &Transcript) -> String {
    let words: Vec<&str> = transcript.text.split_whitespace().collect();
    let opening = if words.is_empty() {
        "(no speech detected)".to_string()
    } else if words.len() > CONCERN_WORDS {
        format!("{} ...", words[..CONCERN_WORDS].join(" "))
    } else {
        words.join(" ")
    };
    format!(
        "Call inquiry: {opening} (Tone: {})",
        transcript.tone.label()
    )
}

fn or_na(value: Option<&String>) -> &str {
    value
        .map(String::as_str)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(NOT_PROVIDED)
}

/// `completed` -> `Completed`.
fn title_case(status: &str) -> String {
    let mut chars = status.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => NOT_PROVIDED.to_string(),
    }
}

/// `2025-10-04T17:58:27Z` -> `2025-10-04 17:58:27 UTC`.
fn seed_timestamp(rfc3339: &str) -> String {
    DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// Seed 001's text as plain text (email, console).
pub fn call_summary(record: &CallRecord, outcome: Outcome<'_>) -> String {
    summary_text(record, outcome, &|s| s.to_string())
}

/// Seed 001's text for Slack: the same characters for ordinary text, but
/// every value from a caller, the transcript or metadata escaped.
pub fn call_summary_mrkdwn(record: &CallRecord, outcome: Outcome<'_>) -> String {
    summary_text(record, outcome, &escape)
}

/// Seed 001's message: plain text for email, escaped mrkdwn for Slack.
pub fn call_summary_message(record: &CallRecord, outcome: Outcome<'_>) -> super::Message {
    let failed = matches!(outcome, Outcome::Failed(_));
    super::Message {
        slack_text: Some(call_summary_mrkdwn(record, outcome)),
        ..super::Message::new(
            call_summary_subject(record, failed),
            call_summary(record, outcome),
        )
    }
}

/// `esc` is applied to every interpolated value, never to the template.
fn summary_text(record: &CallRecord, outcome: Outcome<'_>, esc: &dyn Fn(&str) -> String) -> String {
    let (support, customer) = match record.direction {
        Direction::Outgoing => (&record.from_number, &record.to_number),
        Direction::Incoming => (&record.to_number, &record.from_number),
    };
    let support = if support.is_empty() {
        NOT_PROVIDED
    } else {
        support.as_str()
    };
    let customer = if customer.is_empty() {
        NOT_PROVIDED
    } else {
        customer.as_str()
    };
    let agent = &record.agent;
    let cs_agent = agent
        .agent_slack_handle
        .as_ref()
        .or(agent.agent_name.as_ref())
        .filter(|s| !s.trim().is_empty())
        .map(String::as_str)
        .unwrap_or(NOT_PROVIDED);
    let duration = record
        .duration
        .map(|d| format!("{d}s"))
        .unwrap_or_else(|| NOT_PROVIDED.into());
    let status = title_case(record.call_status.as_deref().unwrap_or(""));
    let (concern_line, transcription, recording_line) = match outcome {
        Outcome::Transcribed(t) => (
            concern(t),
            t.labelled_text(),
            "Recording processed and transcribed above (as per no-audio requirement)".to_string(),
        ),
        Outcome::Failed(reason) => (
            format!("Transcription failed: {reason}"),
            format!("Transcription unavailable: {reason}"),
            "Recording received but could not be transcribed".to_string(),
        ),
    };
    format!(
        "📞 Support Number:\n{support}\n\n\
         📱 Candidate/Customer Number:\n{customer}\n\n\
         ❗ Concern:\n{concern_line}\n\n\
         👤 CS Agent:\n{cs_agent} <{support}>\n\n\
         🏢 Department:\n{department}\n\n\
         ⏰ Timestamp:\n{timestamp}\n\n\
         📋 Call Metadata:\n\
         • Call ID: `{call_id}`\n\
         • Duration: {duration}\n\
         • Status: {status}\n\
         • Agent: {agent_name}\n\
         • Customer Segment: {segment}\n\n\
         📝 Full Transcription:\n```\n{transcription}\n```\n\n\
         🎧 Recording/Voice Note:\n{recording_line}",
        support = esc(support),
        customer = esc(customer),
        concern_line = esc(&concern_line),
        cs_agent = esc(cs_agent),
        department = esc(or_na(agent.department.as_ref())),
        timestamp = esc(&seed_timestamp(&record.timestamp)),
        call_id = esc(record.reported_call_id()),
        duration = esc(&duration),
        status = esc(&status),
        agent_name = esc(or_na(agent.agent_name.as_ref())),
        segment = esc(or_na(agent.customer_segment.as_ref())),
        transcription = esc(&transcription),
        recording_line = esc(&recording_line),
    )
}

/// Seed 000's call-start message: Slack's fallback line and section block,
/// and the SES subject and body. `title` is the bold heading (configurable;
/// the seed's company name is only an example).
pub fn call_started(
    room: &str,
    user_email: Option<&str>,
    started_at: &str,
    title: &str,
) -> super::Message {
    let user = user_email
        .filter(|e| !e.trim().is_empty())
        .unwrap_or("Unknown");
    let at = DateTime::parse_from_rfc3339(started_at)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now());
    super::Message {
        subject: format!("New Call: {user}"),
        text: format!(
            "Call started in room {room} at {}",
            crate::base::time::rfc3339(at)
        ),
        // `title` is configuration and may use mrkdwn; room and user come from callers.
        slack: Some(super::SlackContent {
            text: format!("📞 New call started by {}", escape(user)),
            blocks: vec![format!(
                "*{title}*\nRoom: `{}`\nUser: {}\nTime: {} UTC",
                escape(room),
                escape(user),
                at.format("%I:%M %p")
            )],
        }),
        ..super::Message::default()
    }
}

/// An outbound call's summary: who was called about what, how it ended,
/// and the conversation.
pub fn outbound_summary(call: &crate::store::outbound_calls::OutboundCall) -> super::Message {
    super::Message {
        slack_text: Some(outbound_text(call, &escape)),
        ..super::Message::new(
            format!("Outbound call to {}: {}", call.to_number, call.status),
            outbound_text(call, &|s| s.to_string()),
        )
    }
}

/// `esc` is applied to every interpolated value, never to the template.
fn outbound_text(
    call: &crate::store::outbound_calls::OutboundCall,
    esc: &dyn Fn(&str) -> String,
) -> String {
    let or_na = |v: Option<String>| {
        v.filter(|s| !s.is_empty())
            .unwrap_or_else(|| NOT_PROVIDED.to_string())
    };
    let transcript = if call.transcript.is_empty() {
        match &call.failure_reason {
            Some(reason) => format!("No transcript: {reason}"),
            None => "No transcript".to_string(),
        }
    } else {
        crate::store::outbound_calls::transcript_text(&call.transcript)
    };
    let mut status = match &call.failure_reason {
        Some(reason) => format!("{} ({reason})", call.status),
        None => call.status.clone(),
    };
    if let Some(end) = call.end_reason {
        // The shared vocabulary, and whether the provider had to be asked.
        let asked = if call.reconciled {
            ", from the provider's record"
        } else {
            ""
        };
        status.push_str(&format!("; ended: {end}{asked}"));
    }
    format!(
        "📞 Outbound call to {to}\n\n\
         📋 Call Metadata:\n\
         • Call: `{call_ref}`\n\
         • From: {from}\n\
         • Assistant: {assistant}\n\
         • Status: {status}\n\
         • Duration: {duration}\n\n\
         🎯 Agenda:\n{agenda}\n\n\
         📝 Full Transcription:\n```\n{transcript}\n```",
        to = esc(&call.to_number),
        call_ref = esc(&call.call_ref),
        from = esc(&or_na(call.from_number.clone())),
        assistant = esc(&or_na(call.assistant_id.map(|a| a.to_string()))),
        status = esc(&status),
        duration = esc(&or_na(call.duration_secs.map(|d| format!("{d}s")))),
        agenda = esc(&or_na(call.agenda.clone())),
        transcript = esc(&transcript),
    )
}

/// Email subject for a call summary.
pub fn call_summary_subject(record: &CallRecord, failed: bool) -> String {
    let direction = match record.direction {
        Direction::Incoming => "Incoming",
        Direction::Outgoing => "Outgoing",
    };
    let what = if failed {
        "transcription failed"
    } else {
        "call summary"
    };
    format!("{direction} call {}: {what}", record.reported_call_id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::calls::{AgentInfo, CallSource, CallStatus, Tone, Utterance};

    fn record() -> CallRecord {
        CallRecord {
            call_id: "86d8a88279e4f1ad7417e6556c3e1984".into(),
            org_id: None,
            source: CallSource::Zapier,
            from_number: "+919876543210".into(),
            to_number: "09631084471".into(),
            duration: Some(56),
            recording_url: None,
            timestamp: "2025-10-04T17:58:27Z".into(),
            processed_at: None,
            slack_posted: false,
            status: CallStatus::Transcribed,
            call_status: Some("completed".into()),
            direction: Direction::Incoming,
            failure_reason: None,
            agent: AgentInfo {
                agent_name: Some("Prateek Raj".into()),
                agent_slack_handle: Some("@prateek.raj".into()),
                department: Some("Customer Success".into()),
                customer_segment: Some("General".into()),
            },
            transcript_id: None,
            transcript_parts: 0,
            room_name: None,
            status_history: vec![],
            received_at: "2025-10-04T17:58:30Z".into(),
        }
    }

    fn transcript() -> Transcript {
        Transcript {
            text: "Person you are speaking with has put your call on hold please stay on the line"
                .into(),
            utterances: vec![
                Utterance {
                    speaker: "A".into(),
                    text: "Person you are speaking with has put your call on hold.".into(),
                    start: 0,
                    end: 1,
                },
                Utterance {
                    speaker: "B".into(),
                    text: "Please stay on the line.".into(),
                    start: 1,
                    end: 2,
                },
            ],
            tone: Tone::Neutral,
            audio_duration: Some(56.0),
        }
    }

    #[test]
    fn renders_the_seed_format_exactly() {
        let expected = "📞 Support Number:\n09631084471\n\n📱 Candidate/Customer Number:\n+919876543210\n\n❗ Concern:\nCall inquiry: Person you are speaking with has put your call on ... (Tone: Neutral)\n\n👤 CS Agent:\n@prateek.raj <09631084471>\n\n🏢 Department:\nCustomer Success\n\n⏰ Timestamp:\n2025-10-04 17:58:27 UTC\n\n📋 Call Metadata:\n• Call ID: `86d8a88279e4f1ad7417e6556c3e1984`\n• Duration: 56s\n• Status: Completed\n• Agent: Prateek Raj\n• Customer Segment: General\n\n📝 Full Transcription:\n```\nSpeaker A: Person you are speaking with has put your call on hold.\nSpeaker B: Please stay on the line.\n```\n\n🎧 Recording/Voice Note:\nRecording processed and transcribed above (as per no-audio requirement)";
        let t = transcript();
        assert_eq!(call_summary(&record(), Outcome::Transcribed(&t)), expected);
    }

    #[test]
    fn outgoing_calls_swap_the_numbers() {
        let mut r = record();
        std::mem::swap(&mut r.from_number, &mut r.to_number);
        r.direction = Direction::Outgoing;
        let t = transcript();
        let text = call_summary(&r, Outcome::Transcribed(&t));
        assert!(text.starts_with(
            "📞 Support Number:\n09631084471\n\n📱 Candidate/Customer Number:\n+919876543210"
        ));
    }

    #[test]
    fn short_transcripts_are_quoted_whole_and_missing_fields_say_na() {
        let mut r = record();
        r.agent = AgentInfo::default();
        r.duration = None;
        let t = Transcript {
            text: "Hello there".into(),
            utterances: vec![],
            tone: Tone::Positive,
            audio_duration: None,
        };
        let text = call_summary(&r, Outcome::Transcribed(&t));
        assert!(text.contains("Call inquiry: Hello there (Tone: Positive)"));
        assert!(text.contains("👤 CS Agent:\nN/A <09631084471>"));
        assert!(text.contains("• Duration: N/A"));
        assert!(text.contains("```\nHello there\n```"));
    }

    #[test]
    fn call_start_matches_seed_000() {
        let m = call_started(
            "trial-user-12345",
            Some("alice@company.com"),
            "2025-10-30T14:15:09Z",
            "New Trial Call",
        );
        let slack = m.slack.unwrap();
        assert_eq!(slack.text, "📞 New call started by alice@company.com");
        assert_eq!(
            slack.blocks,
            vec!["*New Trial Call*\nRoom: `trial-user-12345`\nUser: alice@company.com\nTime: 02:15 PM UTC"]
        );
        assert_eq!(m.subject, "New Call: alice@company.com");
        assert_eq!(
            m.text,
            "Call started in room trial-user-12345 at 2025-10-30T14:15:09Z"
        );
        let unknown = call_started("r", None, "2025-10-30T09:05:00Z", "T");
        assert_eq!(
            unknown.slack.unwrap().text,
            "📞 New call started by Unknown"
        );
        assert_eq!(unknown.subject, "New Call: Unknown");
    }

    #[test]
    fn slack_form_escapes_untrusted_fields_only() {
        let t = transcript();
        // Ordinary text: Slack's form is seed 001 character for character.
        assert_eq!(
            call_summary_mrkdwn(&record(), Outcome::Transcribed(&t)),
            call_summary(&record(), Outcome::Transcribed(&t))
        );
        let mut r = record();
        r.agent.agent_slack_handle = Some("<https://evil.example|click>".into());
        let hostile = Transcript {
            text: "<!channel> refund me & more".into(),
            utterances: vec![],
            tone: Tone::Neutral,
            audio_duration: None,
        };
        let slack = call_summary_mrkdwn(&r, Outcome::Transcribed(&hostile));
        assert!(!slack.contains("<!channel>"), "{slack}");
        assert!(slack.contains("Call inquiry: &lt;!channel&gt; refund me &amp; more"));
        assert!(slack.contains("```\n&lt;!channel&gt; refund me &amp; more\n```"));
        assert!(slack.contains("&lt;https://evil.example|click&gt; <09631084471>"));
        let message = call_summary_message(&r, Outcome::Transcribed(&hostile));
        assert!(message
            .text
            .contains("```\n<!channel> refund me & more\n```"));
        assert_eq!(message.slack_text.as_deref(), Some(slack.as_str()));
    }

    #[test]
    fn call_start_escapes_room_and_user_for_slack_only() {
        let m = call_started("<!here>", Some("a<b>@x.com"), "2025-10-30T14:15:09Z", "T");
        let slack = m.slack.unwrap();
        assert_eq!(slack.text, "📞 New call started by a&lt;b&gt;@x.com");
        assert!(slack.blocks[0].starts_with("*T*\nRoom: `&lt;!here&gt;`\nUser: a&lt;b&gt;@x.com"));
        assert_eq!(m.subject, "New Call: a<b>@x.com");
        assert!(m.text.starts_with("Call started in room <!here> at"));
    }

    #[test]
    fn failures_say_why() {
        let text = call_summary(&record(), Outcome::Failed("Audio file is corrupt"));
        assert!(text.contains("❗ Concern:\nTranscription failed: Audio file is corrupt"));
        assert!(text.contains("```\nTranscription unavailable: Audio file is corrupt\n```"));
    }

    #[test]
    fn an_outbound_summary_names_the_end_reason_and_whether_the_provider_was_asked() {
        use crate::base::end_reason::EndReason;
        use crate::store::directory::Provider;
        use crate::store::outbound_calls::OutboundCall;
        let mut call = OutboundCall::initiated("oc_1", Provider::Twilio, "+15550100");
        call.status = "completed".into();
        let plain = outbound_summary(&call).text;
        assert!(plain.contains("• Status: completed\n"), "{plain}");
        call.end_reason = Some(EndReason::Completed);
        call.reconciled = true;
        let asked = outbound_summary(&call).text;
        assert!(
            asked.contains("• Status: completed; ended: completed, from the provider's record\n"),
            "{asked}"
        );
    }
}
