//! AssemblyAI: the recording is streamed from its host into `/v2/upload`
//! (never buffered whole in Lambda memory), a transcript with speaker labels
//! and sentiment is requested, and its state is read back by id.

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Deserialize;
use url::Url;

use crate::base::config::Secret;
use crate::providers::recording::{FetchError, RecordingFetcher};
use crate::store::calls::{Tone, Transcript, Utterance};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranscribeError {
    /// Worth another try later (network, 5xx, 429, recording not ready).
    #[error("temporary: {0}")]
    Temporary(String),
    /// Will not succeed on retry (bad key, recording gone, bad request).
    #[error("permanent: {0}")]
    Permanent(String),
}

/// What AssemblyAI says about a transcript.
#[derive(Debug, Clone, PartialEq)]
pub enum TranscriptState {
    Pending,
    Completed(Transcript),
    Failed(String),
}

#[async_trait]
pub trait TranscriptionService: Send + Sync {
    /// Fetches the recording, uploads it and requests a transcript; returns its id.
    async fn submit(&self, recording_url: &Url) -> Result<String, TranscribeError>;
    async fn check(&self, transcript_id: &str) -> Result<TranscriptState, TranscribeError>;
}

impl From<FetchError> for TranscribeError {
    fn from(err: FetchError) -> Self {
        match err {
            FetchError::Temporary(reason) => Self::Temporary(reason),
            FetchError::Permanent(reason) => Self::Permanent(reason),
        }
    }
}

pub struct AssemblyAi {
    /// For AssemblyAI only; recordings come through `recordings`' own client.
    http: reqwest::Client,
    base_url: String,
    api_key: Secret,
    recordings: RecordingFetcher,
}

impl AssemblyAi {
    pub fn new(
        http: reqwest::Client,
        base_url: String,
        api_key: Secret,
        recordings: RecordingFetcher,
    ) -> Self {
        Self {
            http,
            base_url,
            api_key,
            recordings,
        }
    }
}

/// Maps an HTTP failure to retry-or-not. 408/429/5xx are transient.
fn classify(status: StatusCode, what: &str) -> TranscribeError {
    let message = format!("{what} answered HTTP {}", status.as_u16());
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        TranscribeError::Temporary(message)
    } else {
        TranscribeError::Permanent(message)
    }
}

fn network(what: &str, err: reqwest::Error) -> TranscribeError {
    // reqwest errors can carry the URL; keep only the kind of failure.
    TranscribeError::Temporary(format!("{what} request failed: {}", err.without_url()))
}

#[derive(Deserialize)]
struct UploadResponse {
    upload_url: String,
}

#[derive(Deserialize)]
struct SubmitResponse {
    id: String,
}

#[derive(Deserialize)]
struct TranscriptResponse {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    utterances: Option<Vec<UtteranceResponse>>,
    #[serde(default)]
    sentiment_analysis_results: Option<Vec<SentimentResponse>>,
    #[serde(default)]
    audio_duration: Option<f64>,
}

#[derive(Deserialize)]
struct UtteranceResponse {
    speaker: String,
    text: String,
    #[serde(default)]
    start: u64,
    #[serde(default)]
    end: u64,
}

#[derive(Deserialize)]
struct SentimentResponse {
    sentiment: String,
}

/// The call's tone is the most frequent sentence sentiment; ties and an
/// empty analysis read as neutral.
pub fn overall_tone<'a>(sentiments: impl IntoIterator<Item = &'a str>) -> Tone {
    let (mut pos, mut neu, mut neg) = (0, 0, 0);
    for s in sentiments {
        match s {
            "POSITIVE" => pos += 1,
            "NEGATIVE" => neg += 1,
            _ => neu += 1,
        }
    }
    if pos > neu && pos > neg {
        Tone::Positive
    } else if neg > neu && neg > pos {
        Tone::Negative
    } else {
        Tone::Neutral
    }
}

impl TranscriptResponse {
    fn into_state(self) -> TranscriptState {
        match self.status.as_str() {
            "completed" => {
                let tone = overall_tone(
                    self.sentiment_analysis_results
                        .iter()
                        .flatten()
                        .map(|s| s.sentiment.as_str()),
                );
                TranscriptState::Completed(Transcript {
                    text: self.text.unwrap_or_default(),
                    utterances: self
                        .utterances
                        .unwrap_or_default()
                        .into_iter()
                        .map(|u| Utterance {
                            speaker: u.speaker,
                            text: u.text,
                            start: u.start,
                            end: u.end,
                        })
                        .collect(),
                    tone,
                    audio_duration: self.audio_duration,
                })
            }
            "error" => {
                TranscriptState::Failed(self.error.unwrap_or_else(|| "transcription failed".into()))
            }
            _ => TranscriptState::Pending,
        }
    }
}

#[async_trait]
impl TranscriptionService for AssemblyAi {
    async fn submit(&self, recording_url: &Url) -> Result<String, TranscribeError> {
        let recording = self.recordings.open(recording_url).await?;
        let uploaded = self
            .http
            .post(format!("{}/v2/upload", self.base_url))
            .header("authorization", self.api_key.expose())
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(recording.body))
            .send()
            .await;
        // The limit aborts the upload mid-stream; say so rather than "network".
        if let Some(too_large) = recording.limit.exceeded() {
            return Err(too_large.into());
        }
        let upload: UploadResponse = uploaded
            .map_err(|e| network("AssemblyAI upload", e))
            .and_then(|r| ok_or_classify(r, "AssemblyAI upload"))?
            .json()
            .await
            .map_err(|e| network("AssemblyAI upload", e))?;
        let submitted: SubmitResponse = self
            .http
            .post(format!("{}/v2/transcript", self.base_url))
            .header("authorization", self.api_key.expose())
            .json(&serde_json::json!({
                "audio_url": upload.upload_url,
                "speaker_labels": true,
                "sentiment_analysis": true,
            }))
            .send()
            .await
            .map_err(|e| network("AssemblyAI transcript", e))
            .and_then(|r| ok_or_classify(r, "AssemblyAI transcript"))?
            .json()
            .await
            .map_err(|e| network("AssemblyAI transcript", e))?;
        Ok(submitted.id)
    }

    async fn check(&self, transcript_id: &str) -> Result<TranscriptState, TranscribeError> {
        let response: TranscriptResponse = self
            .http
            .get(format!("{}/v2/transcript/{transcript_id}", self.base_url))
            .header("authorization", self.api_key.expose())
            .send()
            .await
            .map_err(|e| network("AssemblyAI status", e))
            .and_then(|r| ok_or_classify(r, "AssemblyAI status"))?
            .json()
            .await
            .map_err(|e| network("AssemblyAI status", e))?;
        Ok(response.into_state())
    }
}

fn ok_or_classify(
    response: reqwest::Response,
    what: &str,
) -> Result<reqwest::Response, TranscribeError> {
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(classify(response.status(), what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_is_the_majority_sentiment() {
        assert_eq!(
            overall_tone(["POSITIVE", "POSITIVE", "NEUTRAL"]),
            Tone::Positive
        );
        assert_eq!(
            overall_tone(["NEGATIVE", "NEGATIVE", "POSITIVE"]),
            Tone::Negative
        );
        assert_eq!(overall_tone(["POSITIVE", "NEGATIVE"]), Tone::Neutral);
        assert_eq!(overall_tone([]), Tone::Neutral);
    }

    #[test]
    fn completed_response_becomes_a_transcript() {
        let response: TranscriptResponse = serde_json::from_value(serde_json::json!({
            "id": "t1", "status": "completed", "text": "hello there",
            "utterances": [{"speaker": "A", "text": "hello", "start": 0, "end": 5, "confidence": 0.9}],
            "sentiment_analysis_results": [{"text": "hello", "sentiment": "POSITIVE", "confidence": 0.8}],
            "audio_duration": 12.0
        }))
        .unwrap();
        let TranscriptState::Completed(t) = response.into_state() else {
            panic!("not completed")
        };
        assert_eq!(t.utterances[0].speaker, "A");
        assert_eq!(t.tone, Tone::Positive);
    }

    #[test]
    fn error_and_pending_states() {
        let error: TranscriptResponse = serde_json::from_value(
            serde_json::json!({"status": "error", "error": "Audio file is corrupt"}),
        )
        .unwrap();
        assert_eq!(
            error.into_state(),
            TranscriptState::Failed("Audio file is corrupt".into())
        );
        let queued: TranscriptResponse =
            serde_json::from_value(serde_json::json!({"status": "queued"})).unwrap();
        assert_eq!(queued.into_state(), TranscriptState::Pending);
    }

    #[test]
    fn http_failures_are_classified() {
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, "x"),
            TranscribeError::Temporary(_)
        ));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, "x"),
            TranscribeError::Temporary(_)
        ));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, "x"),
            TranscribeError::Permanent(_)
        ));
    }
}
