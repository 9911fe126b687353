//! Fitting a long message into Slack's limits without cutting anything:
//! section texts of at most 3000 characters, a bounded number of blocks per
//! message, and code fences closed and reopened where a split falls inside one.

use super::channel::{Message, Part};

/// Slack's limit for a section block's text.
pub const SECTION_CHARS: usize = 3000;
/// Blocks per message; 12 x 3000 keeps the `text` fallback under Slack's 40,000.
pub const BLOCKS_PER_MESSAGE: usize = 12;

const FENCE: &str = "```";

/// Escapes text for Slack mrkdwn so `<!channel>` or `<https://x|click>` from a
/// caller or a transcript is shown, not acted on. Slack asks for exactly these three.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Splits `text` into section-sized chunks on line boundaries. A single
/// chunk is the text unchanged; a fence open across a boundary is closed at
/// the end of one chunk and reopened at the start of the next.
pub fn sections(text: &str) -> Vec<String> {
    // Room for a closing and a reopening fence line.
    let budget = SECTION_CHARS - 2 * (FENCE.len() + 1);
    let mut builder = SectionBuilder::default();
    for line in text.split('\n') {
        for piece in split_long_line(line, budget) {
            builder.push_line(piece, budget);
        }
        if line.trim() == FENCE {
            builder.in_code = !builder.in_code;
        }
    }
    builder.finish()
}

#[derive(Default)]
struct SectionBuilder {
    chunks: Vec<String>,
    current: String,
    current_chars: usize,
    /// Inside a code block at this point of the text.
    in_code: bool,
    /// The current chunk started inside a code block and needs a reopening fence.
    opened_in_code: bool,
}

impl SectionBuilder {
    fn push_line(&mut self, piece: &str, budget: usize) {
        let piece_chars = piece.chars().count();
        if !self.current.is_empty() && self.current_chars + 1 + piece_chars > budget {
            self.flush();
        }
        if !self.current.is_empty() {
            self.current.push('\n');
            self.current_chars += 1;
        }
        self.current.push_str(piece);
        self.current_chars += piece_chars;
    }

    fn flush(&mut self) {
        let mut chunk = String::new();
        if self.opened_in_code {
            chunk.push_str(FENCE);
            chunk.push('\n');
        }
        chunk.push_str(&self.current);
        if self.in_code {
            chunk.push('\n');
            chunk.push_str(FENCE);
        }
        self.chunks.push(chunk);
        self.current.clear();
        self.current_chars = 0;
        self.opened_in_code = self.in_code;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() || self.chunks.is_empty() {
            self.in_code = false;
            self.flush();
        }
        self.chunks
    }
}

/// A line longer than a section is cut into section-sized pieces.
fn split_long_line(line: &str, max_chars: usize) -> Vec<&str> {
    if line.chars().count() <= max_chars {
        return vec![line];
    }
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (index, _) in line.char_indices() {
        if count == max_chars {
            pieces.push(&line[start..index]);
            start = index;
            count = 0;
        }
        count += 1;
    }
    pieces.push(&line[start..]);
    pieces
}

/// Slack messages for `text`: each carries up to `BLOCKS_PER_MESSAGE`
/// sections and a `text` fallback made of the same sections.
pub fn slack_parts(subject: &str, text: &str) -> Vec<Part> {
    let sections = sections(text);
    sections
        .chunks(BLOCKS_PER_MESSAGE)
        .map(|blocks| Part {
            subject: subject.to_string(),
            text: blocks.join("\n"),
            blocks: blocks.to_vec(),
            ..Part::default()
        })
        .collect()
}

/// The Slack sends for a message: its own Slack form if it has one, else
/// its text split to fit; each carrying the message's channel and thread.
pub fn message_parts(message: &Message) -> Vec<Part> {
    let mut parts = match &message.slack {
        Some(content) => vec![Part {
            subject: message.subject.clone(),
            text: content.text.clone(),
            blocks: content.blocks.clone(),
            ..Part::default()
        }],
        None => {
            let text = match &message.slack_text {
                Some(mrkdwn) => mrkdwn.clone(),
                None => escape(&message.text),
            };
            slack_parts(&message.subject, &text)
        }
    };
    let channel = message
        .thread
        .as_ref()
        .map(|t| t.channel.clone())
        .or_else(|| message.slack_channel.clone());
    for part in &mut parts {
        part.channel = channel.clone();
        part.thread_ts = message.thread.as_ref().map(|t| t.ts.clone());
    }
    parts
}

/// The JSON body Slack expects for one part (webhook and `chat.postMessage` alike).
pub fn blocks_json(part: &Part) -> serde_json::Value {
    serde_json::Value::Array(
        part.blocks
            .iter()
            .map(|text| serde_json::json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_slack_control_sequences() {
        assert_eq!(
            escape("<!channel> & <https://evil|click>"),
            "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;"
        );
        assert_eq!(escape("plain *bold* `code`"), "plain *bold* `code`");
    }

    #[test]
    fn plain_messages_are_escaped_whole_for_slack() {
        let message = Message::new("s", "hi <!here>");
        assert_eq!(message_parts(&message)[0].text, "hi &lt;!here&gt;");
        let mut formatted = message.clone();
        formatted.slack_text = Some("*hi* &lt;!here&gt;".into());
        assert_eq!(message_parts(&formatted)[0].text, "*hi* &lt;!here&gt;");
    }

    #[test]
    fn short_text_is_one_unchanged_section() {
        let text = "a\n```\ncode\n```\nb";
        assert_eq!(sections(text), vec![text.to_string()]);
        let parts = slack_parts("s", text);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].text, text);
    }

    #[test]
    fn long_transcripts_split_within_limits_and_lose_nothing() {
        let lines: Vec<String> = (0..4000)
            .map(|i| format!("Speaker A: line number {i} of the call"))
            .collect();
        let text = format!("Header\n```\n{}\n```\nFooter", lines.join("\n"));
        let chunks = sections(&text);
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|c| c.chars().count() <= SECTION_CHARS));
        // Every chunk has balanced fences, so Slack renders each as code.
        assert!(chunks
            .iter()
            .all(|c| c.lines().filter(|l| l.trim() == FENCE).count() % 2 == 0));
        // Removing the added fences gives back the original lines in order.
        let rejoined: Vec<&str> = chunks
            .iter()
            .flat_map(|c| c.lines())
            .filter(|l| l.trim() != FENCE)
            .collect();
        let original: Vec<&str> = text.lines().filter(|l| l.trim() != FENCE).collect();
        assert_eq!(rejoined, original);
        let parts = slack_parts("s", &text);
        assert!(parts
            .iter()
            .all(|p| p.blocks.len() <= BLOCKS_PER_MESSAGE && p.text.chars().count() < 40_000));
        assert_eq!(
            parts.iter().map(|p| p.blocks.len()).sum::<usize>(),
            chunks.len()
        );
    }

    #[test]
    fn a_very_long_line_is_split_not_cut() {
        let line = "x".repeat(SECTION_CHARS * 2 + 5);
        let chunks = sections(&line);
        assert!(chunks.len() >= 3);
        assert_eq!(chunks.concat().len(), line.len());
    }
}
