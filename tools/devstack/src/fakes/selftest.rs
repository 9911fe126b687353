//! Checks that the fakes speak the wire formats the real providers do.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use super::*;

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn aborting_the_server_closes_listener_and_open_connections() {
    let (base_url, task) =
        serve(|req| async move { text_response(http::StatusCode::OK, req.path) });
    let client = Client::new();
    let response = client
        .get(format!("{base_url}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "/hello");

    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    // The pooled keep-alive connection must not keep answering either.
    assert!(client
        .get(format!("{base_url}/again"))
        .send()
        .await
        .is_err());
}

mod assemblyai {
    use super::*;

    const KEY: &str = "aai-test-key";

    async fn create_transcript(client: &Client, fake: &FakeAssemblyAi) -> String {
        let response = client
            .post(format!("{}/v2/transcript", fake.base_url()))
            .header("authorization", KEY)
            .json(&json!({ "audio_url": "https://cdn.example/a.mp3", "speaker_labels": true }))
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "queued");
        assert_eq!(body["speaker_labels"], true);
        assert_eq!(body["sentiment_analysis"], Value::Null);
        body["id"].as_str().unwrap().to_owned()
    }

    async fn poll(client: &Client, fake: &FakeAssemblyAi, id: &str) -> (StatusCode, Value) {
        let url = format!("{}/v2/transcript/{id}", fake.base_url());
        json_of(
            client
                .get(url)
                .header("authorization", KEY)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    #[tokio::test]
    async fn rejects_missing_or_bearer_auth() {
        let fake = FakeAssemblyAi::start(KEY);
        let client = Client::new();
        let url = format!("{}/v2/upload", fake.base_url());
        for auth in [None, Some(format!("Bearer {KEY}"))] {
            let mut request = client.post(&url).body("x");
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let (status, body) = json_of(request.send().await.unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(
                body["error"],
                "Authentication error, API token missing/invalid"
            );
        }
        assert_eq!(fake.requests().len(), 2);
        assert!(fake.upload_sizes().is_empty());
    }

    #[tokio::test]
    async fn upload_with_injected_failure() {
        let fake = FakeAssemblyAi::start(KEY);
        fake.fail_next_uploads(1);
        let client = Client::new();
        let upload = || {
            client
                .post(format!("{}/v2/upload", fake.base_url()))
                .header("authorization", KEY)
                .body(vec![7u8; 1234])
                .send()
        };
        let (status, body) = json_of(upload().await.unwrap()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"], "Internal server error");

        let (status, body) = json_of(upload().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        let url = body["upload_url"].as_str().unwrap();
        assert!(
            url.starts_with("https://cdn.assemblyai.com/upload/"),
            "{url}"
        );
        assert_eq!(fake.upload_sizes(), vec![1234]);
        assert_eq!(fake.requests()[1].body.len(), 1234);
    }

    #[tokio::test]
    async fn transcript_requires_audio_url() {
        let fake = FakeAssemblyAi::start(KEY);
        let response = Client::new()
            .post(format!("{}/v2/transcript", fake.base_url()))
            .header("authorization", KEY)
            .json(&json!({ "speaker_labels": true }))
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].is_string());
        assert_eq!(
            fake.transcript_requests(),
            vec![json!({ "speaker_labels": true })]
        );
    }

    #[tokio::test]
    async fn completes_after_scripted_polls() {
        let fake = FakeAssemblyAi::start(KEY);
        fake.set_outcome(TranscriptOutcome::Completed {
            polls_before_done: 2,
            utterances: vec![
                ("A".into(), "Hello there.".into()),
                ("B".into(), "Hi.".into()),
            ],
            sentiment: vec![("Hello there.".into(), "POSITIVE".into(), "A".into())],
            audio_duration: 10,
        });
        let client = Client::new();
        let id = create_transcript(&client, &fake).await;

        assert_eq!(poll(&client, &fake, &id).await.1["status"], "queued");
        assert_eq!(poll(&client, &fake, &id).await.1["status"], "processing");
        let (status, done) = poll(&client, &fake, &id).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(done["id"], id.as_str());
        assert_eq!(done["status"], "completed");
        assert_eq!(done["text"], "Hello there. Hi.");
        assert_eq!(done["audio_duration"], 10);
        let utterances = done["utterances"].as_array().unwrap();
        assert_eq!(utterances.len(), 2);
        assert_eq!(utterances[1]["speaker"], "B");
        assert_eq!(
            (&utterances[1]["start"], &utterances[1]["end"]),
            (&json!(5000), &json!(10000))
        );
        assert_eq!(utterances[0]["words"], json!([]));
        let sentiment = &done["sentiment_analysis_results"][0];
        assert_eq!(sentiment["sentiment"], "POSITIVE");
        assert_eq!(sentiment["speaker"], "A");
        assert!(sentiment["confidence"].is_number());
    }

    #[tokio::test]
    async fn error_never_finishes_and_unknown_id() {
        let fake = FakeAssemblyAi::start(KEY);
        let client = Client::new();
        let id = create_transcript(&client, &fake).await;

        fake.set_outcome(TranscriptOutcome::Error {
            message: "bad audio".into(),
        });
        let (_, body) = poll(&client, &fake, &id).await;
        assert_eq!(
            (&body["status"], &body["error"]),
            (&json!("error"), &json!("bad audio"))
        );

        fake.set_outcome(TranscriptOutcome::NeverFinishes);
        for _ in 0..3 {
            assert_eq!(poll(&client, &fake, &id).await.1["status"], "processing");
        }

        let (status, body) = poll(&client, &fake, "nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "Transcript not found");
    }
}

mod exotel {
    use super::*;

    #[tokio::test]
    async fn recording_requires_basic_auth() {
        let fake = FakeExotel::start("key", "token");
        let url = format!("{}/recordings/abc.mp3", fake.base_url());
        let client = Client::new();

        for (user, pass) in [("key", "wrong"), ("token", "key")] {
            let response = client
                .get(&url)
                .basic_auth(user, Some(pass))
                .send()
                .await
                .unwrap();
            let (status, body) = json_of(response).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(body["RestException"]["Status"], 401);
            assert_eq!(
                body["RestException"]["Message"],
                "Authentication is required to view this page."
            );
            assert_eq!(body["RestException"]["Code"], Value::Null);
        }
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

        fake.set_recording_size(1000);
        let response = client
            .get(&url)
            .basic_auth("key", Some("token"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "audio/mpeg");
        let bytes = response.bytes().await.unwrap();
        assert!(bytes.starts_with(b"ID3"));
        assert_eq!(bytes, fake_mp3(1000));
        assert_eq!(fake.requests().len(), 4);
    }

    #[tokio::test]
    async fn default_recording_is_64_kib() {
        let fake = FakeExotel::start("key", "token");
        let response = Client::new()
            .get(format!("{}/recordings/x/y.mp3", fake.base_url()))
            .basic_auth("key", Some("token"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.bytes().await.unwrap().len(), 64 * 1024);
    }

    #[tokio::test]
    async fn call_details_shape() {
        let fake = FakeExotel::start("key", "token");
        let url = format!("{}/v1/Accounts/acme/Calls/CA123.json", fake.base_url());
        let client = Client::new();
        let (status, _) = json_of(client.get(&url).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let response = client
            .get(&url)
            .basic_auth("key", Some("token"))
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, StatusCode::OK);
        let call = &body["Call"];
        assert_eq!(call["Sid"], "CA123");
        assert_eq!(call["AccountSid"], "acme");
        assert_eq!(call["Status"], "completed");
        assert_eq!(call["Direction"], "inbound");
        assert_eq!(call["ParentCallSid"], Value::Null);
        assert_eq!(call["AnsweredBy"], Value::Null);
        let started = call["StartTime"].as_str().unwrap();
        assert_eq!(started.len(), "YYYY-MM-DD HH:mm:ss".len(), "{started}");
        assert_eq!(
            call["RecordingUrl"],
            format!("{}/recordings/CA123.mp3", fake.base_url())
        );
    }
}

mod slack {
    use super::*;

    async fn post_message(fake: &FakeSlack, token: &str, body: Value) -> reqwest::Response {
        Client::new()
            .post(format!("{}/api/chat.postMessage", fake.base_url()))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn bot_auth_and_validation() {
        let fake = FakeSlack::start();
        fake.set_bot_token("xoxb-custom");
        let message = json!({ "channel": "C1", "text": "hi" });

        let (status, body) = json_of(post_message(&fake, "xoxb-test-token", message).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({ "ok": false, "error": "invalid_auth" }));

        let (_, body) =
            json_of(post_message(&fake, "xoxb-custom", json!({ "channel": "C1" })).await).await;
        assert_eq!(body, json!({ "ok": false, "error": "no_text" }));

        assert!(fake.posts().is_empty());
        assert_eq!(fake.attempts(), 2);
    }

    #[tokio::test]
    async fn bot_success_shape_and_unique_ts() {
        let fake = FakeSlack::start();
        let mut seen = Vec::new();
        for thread_ts in [None, Some("1700000000.000100")] {
            let mut message = json!({ "channel": "C42", "text": "call summary", "blocks": [] });
            if let Some(ts) = thread_ts {
                message["thread_ts"] = json!(ts);
            }
            let response = post_message(&fake, "xoxb-test-token", message).await;
            let (status, body) = json_of(response).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body["ok"], true);
            assert_eq!(body["channel"], "C42");
            assert_eq!(body["message"]["text"], "call summary");
            seen.push(body["ts"].as_str().unwrap().to_owned());
        }
        assert_eq!(seen[0], "1700000000.000100");
        assert_ne!(seen[0], seen[1]);
        assert_eq!(fake.posts()[1]["thread_ts"], "1700000000.000100");
        assert_eq!(fake.requests()[0].json()["channel"], "C42");
    }

    #[tokio::test]
    async fn webhook_accepts_and_rejects() {
        let fake = FakeSlack::start();
        let client = Client::new();

        let response = client
            .post(fake.webhook_url())
            .json(&json!({ "text": "hello" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), "ok");

        let response = client
            .post(fake.webhook_url())
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.text().await.unwrap(), "invalid_payload");

        assert_eq!(fake.posts(), vec![json!({ "text": "hello" })]);
        assert_eq!(fake.attempts(), 2);
    }

    #[tokio::test]
    async fn scripted_responses_in_order_then_normal() {
        let fake = FakeSlack::start();
        fake.push_response(ScriptedResponse::RateLimited {
            retry_after_secs: 7,
        });
        fake.push_response(ScriptedResponse::RateLimited {
            retry_after_secs: 3,
        });
        fake.push_response(ScriptedResponse::ServerError);
        fake.push_response(ScriptedResponse::BotError("channel_is_archived".into()));
        let client = Client::new();
        let message = json!({ "channel": "C1", "text": "hi" });

        let response = post_message(&fake, "xoxb-test-token", message.clone()).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(json_of(response).await.1["error"], "ratelimited");

        let webhook = || client.post(fake.webhook_url()).json(&message).send();
        let response = webhook().await.unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "3");
        assert_eq!(response.text().await.unwrap(), "rate_limited");

        let response = webhook().await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.text().await.unwrap(), "rollup_error");

        let response = webhook().await.unwrap();
        assert_eq!(response.status(), StatusCode::GONE);
        assert_eq!(response.text().await.unwrap(), "channel_is_archived");

        assert!(fake.posts().is_empty());
        let response = post_message(&fake, "xoxb-test-token", message.clone()).await;
        assert_eq!(json_of(response).await.1["ok"], true);
        assert_eq!(fake.posts(), vec![message]);
        assert_eq!(fake.attempts(), 5);
    }

    #[tokio::test]
    async fn always_override_and_bot_error() {
        let fake = FakeSlack::start();
        fake.set_always(Some(ScriptedResponse::BotError("channel_not_found".into())));
        let message = json!({ "channel": "C1", "text": "hi" });
        for _ in 0..2 {
            let (status, body) =
                json_of(post_message(&fake, "xoxb-test-token", message.clone()).await).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, json!({ "ok": false, "error": "channel_not_found" }));
        }
        fake.set_always(None);
        let (_, body) = json_of(post_message(&fake, "xoxb-test-token", message).await).await;
        assert_eq!(body["ok"], true);
    }

    // The hang dwarfs the client timeout, so the outcome does not depend on machine speed.
    #[tokio::test]
    async fn hang_triggers_client_timeout() {
        let fake = FakeSlack::start();
        fake.push_response(ScriptedResponse::Hang(Duration::from_secs(600)));
        let client = Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let error = client
            .post(fake.webhook_url())
            .json(&json!({ "text": "x" }))
            .send()
            .await
            .unwrap_err();
        assert!(error.is_timeout(), "{error}");
        assert!(fake.posts().is_empty());
    }
}
