//! An OpenAI-compatible chat-completions endpoint: `POST
//! {base}/chat/completions` with a bearer key, answered with
//! `choices[0].message.content`. Extra fields in the answer are ignored and
//! missing ones are an unreadable answer, never a panic.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::config::Secret;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("LLM request failed: {0}")]
    Failed(String),
    #[error("LLM did not answer in time")]
    Timeout,
    #[error("LLM answer unreadable: {0}")]
    Unreadable(String),
}

pub struct ChatClient {
    pub http: reqwest::Client,
    /// Up to and excluding `/chat/completions`, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub api_key: Secret,
    pub model: String,
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<AnswerMessage>,
}

#[derive(Deserialize)]
struct AnswerMessage {
    #[serde(default)]
    content: Option<String>,
}

/// The first choice's text from a chat-completions answer; anything without
/// a non-blank one is unreadable.
pub fn answer_text(body: &[u8]) -> Result<String, LlmError> {
    let parsed: ChatResponse =
        serde_json::from_slice(body).map_err(|e| LlmError::Unreadable(e.to_string()))?;
    parsed
        .choices
        .into_iter()
        .next()
        .and_then(|c| c.message)
        .and_then(|m| m.content)
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
        .ok_or_else(|| LlmError::Unreadable("no choices[0].message.content".into()))
}

impl ChatClient {
    /// `AGENT_LLM_BASE_URL`, `AGENT_LLM_API_KEY`, `AGENT_LLM_MODEL` (default `gpt-4o-mini`).
    pub fn from_env(http: reqwest::Client) -> Result<Self, crate::base::config::ConfigError> {
        use crate::base::config::{optional, required, required_secret};
        Ok(Self {
            http,
            base_url: required("AGENT_LLM_BASE_URL")?
                .trim_end_matches('/')
                .to_string(),
            api_key: required_secret("AGENT_LLM_API_KEY")?,
            model: optional("AGENT_LLM_MODEL").unwrap_or_else(|| "gpt-4o-mini".into()),
        })
    }

    /// One completion, within `timeout` (the whole request and its body).
    pub async fn complete(
        &self,
        messages: &[ChatMessage],
        timeout: Duration,
    ) -> Result<String, LlmError> {
        let request = self
            .http
            .post(format!("{}/chat/completions", self.base_url))
            .bearer_auth(self.api_key.expose())
            .json(&ChatRequest {
                model: &self.model,
                messages,
            })
            .send();
        let work = async {
            let response = request
                .await
                .map_err(|e| LlmError::Failed(e.without_url().to_string()))?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|e| LlmError::Failed(e.without_url().to_string()))?;
            if !status.is_success() {
                return Err(LlmError::Failed(format!("HTTP {}", status.as_u16())));
            }
            answer_text(&body)
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(LlmError::Timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_choice_and_ignores_extra_fields() {
        let body = br#"{"id":"x","object":"chat.completion","usage":{"total_tokens":3},
            "choices":[{"index":0,"finish_reason":"stop","logprobs":null,
            "message":{"role":"assistant","content":"  Hello there ","refusal":null}},
            {"message":{"content":"second"}}]}"#;
        assert_eq!(answer_text(body).unwrap(), "Hello there");
    }

    #[test]
    fn missing_or_empty_content_is_unreadable() {
        for body in [
            &br#"{}"#[..],
            br#"{"choices":[]}"#,
            br#"{"choices":[{}]}"#,
            br#"{"choices":[{"message":{"role":"assistant"}}]}"#,
            br#"{"choices":[{"message":{"content":null}}]}"#,
            br#"{"choices":[{"message":{"content":"   "}}]}"#,
            b"not json",
        ] {
            assert!(
                matches!(answer_text(body), Err(LlmError::Unreadable(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
