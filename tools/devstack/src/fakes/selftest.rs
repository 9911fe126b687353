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

mod twilio {
    use super::*;

    const SID: &str = "ACtest00000000000000000000000000";
    const TOKEN: &str = "twilio-test-token";

    /// Form-encodes by hand: the workspace's reqwest has no `form` feature.
    fn encode(pairs: &[(&str, &str)]) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    }

    async fn post_form(
        fake: &FakeTwilio,
        path: &str,
        auth: Option<(&str, &str)>,
        pairs: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = Client::new()
            .post(format!("{}{path}", fake.base_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(pairs));
        if let Some((user, pass)) = auth {
            request = request.basic_auth(user, Some(pass));
        }
        json_of(request.send().await.unwrap()).await
    }

    fn calls_path(account: &str) -> String {
        format!("/2010-04-01/Accounts/{account}/Calls.json")
    }

    fn is_call_sid(sid: &str) -> bool {
        sid.len() == 34
            && sid.starts_with("CA")
            && sid[2..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    const CALL: &[(&str, &str)] = &[
        ("To", "+14155550100"),
        ("From", "+14155550199"),
        ("Url", "https://example.com/twiml"),
    ];

    #[tokio::test]
    async fn rejects_missing_or_wrong_basic_auth() {
        let fake = FakeTwilio::start(SID, TOKEN);
        for auth in [None, Some((SID, "wrong")), Some((TOKEN, SID))] {
            let (status, body) = post_form(&fake, &calls_path(SID), auth, CALL).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(
                body,
                json!({
                    "code": 20003,
                    "message": "Authenticate",
                    "more_info": "https://www.twilio.com/docs/errors/20003",
                    "status": 401,
                })
            );
        }
        assert_eq!(fake.requests().len(), 3);
        assert!(fake.created_calls().is_empty());
    }

    #[tokio::test]
    async fn create_call_shape_and_repeated_status_callback_events() {
        let fake = FakeTwilio::start(SID, TOKEN);
        let mut pairs = CALL.to_vec();
        // Twilio takes each subscribed event as its own form field.
        for event in ["initiated", "ringing", "answered", "completed"] {
            pairs.push(("StatusCallbackEvent", event));
        }
        let (status, call) = post_form(&fake, &calls_path(SID), Some((SID, TOKEN)), &pairs).await;
        assert_eq!(status, StatusCode::CREATED);
        let sid = call["sid"].as_str().unwrap();
        assert!(is_call_sid(sid), "{sid}");
        assert_eq!(call["account_sid"], SID);
        assert_eq!(call["to"], "+14155550100");
        assert_eq!(call["from"], "+14155550199");
        assert_eq!(call["status"], "queued");
        assert_eq!(call["direction"], "outbound-api");
        assert_eq!(
            call["uri"],
            format!("/2010-04-01/Accounts/{SID}/Calls/{sid}.json")
        );
        let created = call["date_created"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc2822(created).is_ok(),
            "{created}"
        );

        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(fake.created_calls(), vec![owned]);
        let events = fake.created_calls()[0]
            .iter()
            .filter(|(k, _)| k == "StatusCallbackEvent")
            .count();
        assert_eq!(events, 4);
    }

    #[tokio::test]
    async fn create_call_validation_wrong_account_and_scripted_failure() {
        let fake = FakeTwilio::start(SID, TOKEN);
        let auth = Some((SID, TOKEN));

        let no_url = &CALL[..2];
        let (status, body) = post_form(&fake, &calls_path(SID), auth, no_url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["code"], 21205);
        assert_eq!(body["status"], 400);
        assert_eq!(
            body["more_info"],
            "https://www.twilio.com/docs/errors/21205"
        );

        // Twiml instead of Url is enough.
        let twiml = [CALL[0], CALL[1], ("Twiml", "<Response/>")];
        let (status, _) = post_form(&fake, &calls_path(SID), auth, &twiml).await;
        assert_eq!(status, StatusCode::CREATED);

        for (missing, code) in [("To", 21201), ("From", 21213)] {
            let pairs: Vec<_> = CALL
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let (status, body) = post_form(&fake, &calls_path(SID), auth, &pairs).await;
            assert_eq!(
                (status, &body["code"]),
                (StatusCode::BAD_REQUEST, &json!(code))
            );
        }

        let other = "ACother0000000000000000000000000";
        let (status, body) = post_form(&fake, &calls_path(other), auth, CALL).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["code"], 20404);

        fake.fail_next_calls(1, 429, 20429, "Too Many Requests");
        let (status, body) = post_form(&fake, &calls_path(SID), auth, CALL).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            body,
            json!({
                "code": 20429,
                "message": "Too Many Requests",
                "more_info": "https://www.twilio.com/docs/errors/20429",
                "status": 429,
            })
        );
        // The script is used up: the retry succeeds.
        let (status, _) = post_form(&fake, &calls_path(SID), auth, CALL).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(fake.created_calls().len(), 2);
    }

    #[tokio::test]
    async fn end_call_and_unknown_sid() {
        let fake = FakeTwilio::start(SID, TOKEN);
        let auth = Some((SID, TOKEN));
        let (_, call) = post_form(&fake, &calls_path(SID), auth, CALL).await;
        let sid = call["sid"].as_str().unwrap();

        let path = format!("/2010-04-01/Accounts/{SID}/Calls/{sid}.json");
        let (status, ended) = post_form(&fake, &path, auth, &[("Status", "completed")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ended["sid"], sid);
        assert_eq!(ended["status"], "completed");
        assert_eq!(fake.ended_calls(), vec![sid.to_owned()]);

        let unknown = format!("/2010-04-01/Accounts/{SID}/Calls/CA{}.json", "0".repeat(32));
        let (status, body) = post_form(&fake, &unknown, auth, &[("Status", "completed")]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["code"], 20404);
        assert_eq!(
            body["message"],
            format!("The requested resource {unknown} was not found")
        );
        assert_eq!(fake.ended_calls().len(), 1);
    }

    /// The vector from twilio-python's request-validator tests.
    #[test]
    fn signature_matches_official_vector() {
        let params = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ];
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            twilio_signature("12345", url, &params),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        // Order of the input must not matter: Twilio sorts by name.
        let mut reversed = params;
        reversed.reverse();
        assert_eq!(
            twilio_signature("12345", url, &reversed),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }
}

mod elevenlabs {
    use super::*;

    const KEY: &str = "xi-test-key";

    fn outbound_body() -> Value {
        json!({
            "agent_id": "agent_123",
            "agent_phone_number_id": "phnum_456",
            "to_number": "+14155550100",
            "conversation_initiation_client_data": {
                "dynamic_variables": { "customer_name": "Ada" },
            },
        })
    }

    async fn outbound(fake: &FakeElevenLabs, body: &Value) -> (StatusCode, Value) {
        let response = Client::new()
            .post(format!(
                "{}/v1/convai/twilio/outbound-call",
                fake.base_url()
            ))
            .header("xi-api-key", KEY)
            .json(body)
            .send()
            .await
            .unwrap();
        json_of(response).await
    }

    async fn poll(fake: &FakeElevenLabs, id: &str) -> (StatusCode, Value) {
        let response = Client::new()
            .get(format!("{}/v1/convai/conversations/{id}", fake.base_url()))
            .header("xi-api-key", KEY)
            .send()
            .await
            .unwrap();
        json_of(response).await
    }

    #[tokio::test]
    async fn rejects_missing_or_wrong_api_key() {
        let fake = FakeElevenLabs::start(KEY);
        let url = format!("{}/v1/convai/twilio/outbound-call", fake.base_url());
        for key in [None, Some("wrong"), Some("Bearer xi-test-key")] {
            let mut request = Client::new().post(&url).json(&outbound_body());
            if let Some(key) = key {
                request = request.header("xi-api-key", key);
            }
            let (status, body) = json_of(request.send().await.unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(
                body,
                json!({ "detail": { "status": "invalid_api_key", "message": "Invalid API key" } })
            );
        }
        assert_eq!(fake.requests().len(), 3);
        assert!(fake.outbound_requests().is_empty());
    }

    #[tokio::test]
    async fn outbound_success_validation_and_scripted_failure() {
        let fake = FakeElevenLabs::start(KEY);
        let (status, body) = outbound(&fake, &outbound_body()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["success"], true);
        assert_eq!(body["message"], "Success");
        let conversation_id = body["conversation_id"].as_str().unwrap();
        assert!(conversation_id.starts_with("conv_"), "{conversation_id}");
        let call_sid = body["callSid"].as_str().unwrap();
        assert!(
            call_sid.starts_with("CA") && call_sid.len() == 34,
            "{call_sid}"
        );

        let mut invalid = outbound_body();
        invalid.as_object_mut().unwrap().remove("to_number");
        invalid["agent_id"] = json!(7);
        let (status, body) = outbound(&fake, &invalid).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body["detail"],
            json!([
                { "loc": ["body", "agent_id"], "msg": "Input should be a valid string", "type": "string_type" },
                { "loc": ["body", "to_number"], "msg": "Field required", "type": "missing" },
            ])
        );

        fake.fail_next_outbound_calls(1, 500, json!({ "detail": "boom" }));
        let (status, body) = outbound(&fake, &outbound_body()).await;
        assert_eq!(
            (status, body),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "detail": "boom" })
            )
        );

        // Only the first request was accepted; the scripted one and the invalid one are not.
        assert_eq!(fake.outbound_requests(), vec![outbound_body()]);
        assert_eq!(fake.requests().len(), 3);
    }

    #[tokio::test]
    async fn conversation_script_progression_and_unknown_id() {
        let fake = FakeElevenLabs::start(KEY);
        fake.set_conversation_script(ConversationScript::Finishes {
            polls_before_done: 2,
            transcript: vec![
                ("agent".into(), "Hello.".into()),
                ("user".into(), "Hi.".into()),
            ],
            duration_secs: 10,
        });
        let (_, created) = outbound(&fake, &outbound_body()).await;
        let id = created["conversation_id"].as_str().unwrap();

        assert_eq!(poll(&fake, id).await.1["status"], "initiated");
        assert_eq!(poll(&fake, id).await.1["status"], "in-progress");
        let (status, done) = poll(&fake, id).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(done["status"], "done");
        assert_eq!(done["agent_id"], "agent_123");
        assert_eq!(done["conversation_id"], id);
        assert_eq!(
            done["transcript"],
            json!([
                { "role": "agent", "message": "Hello.", "time_in_call_secs": 0 },
                { "role": "user", "message": "Hi.", "time_in_call_secs": 5 },
            ])
        );
        let metadata = &done["metadata"];
        assert_eq!(metadata["call_duration_secs"], 10);
        assert_eq!(metadata["termination_reason"], "Call ended by user");
        assert!(metadata["start_time_unix_secs"].is_i64());
        assert_eq!(
            metadata["phone_call"],
            json!({ "call_sid": created["callSid"], "direction": "outbound", "type": "twilio" })
        );
        assert_eq!(fake.polls(id), 3);

        // Registered ids follow the script too; scripts apply to existing conversations.
        fake.add_conversation("conv_registered");
        fake.set_conversation_script(ConversationScript::Fails {
            reason: "no-answer".into(),
        });
        let (_, failed) = poll(&fake, "conv_registered").await;
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["metadata"]["termination_reason"], "no-answer");

        fake.set_conversation_script(ConversationScript::NeverFinishes);
        for _ in 0..3 {
            assert_eq!(poll(&fake, id).await.1["status"], "in-progress");
        }

        let (status, body) = poll(&fake, "conv_nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            json!({ "detail": { "status": "conversation_not_found", "message": "Conversation not found" } })
        );
        assert_eq!(fake.polls("conv_nope"), 0);
    }

    #[tokio::test]
    async fn default_script_is_done_on_first_poll() {
        let fake = FakeElevenLabs::start(KEY);
        fake.add_conversation("conv_default");
        let (_, done) = poll(&fake, "conv_default").await;
        assert_eq!(done["status"], "done");
        assert_eq!(done["metadata"]["call_duration_secs"], 42);
        assert_eq!(
            done["transcript"][0]["message"],
            "Hi, this is Sarah from TechCorp."
        );
        assert_eq!(done["transcript"][1]["role"], "user");
    }

    /// HMAC-SHA256 written out from RFC 2104 on plain SHA-256, so the check
    /// does not share code with the helper under test.
    fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(data)
            .finalize();
        Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize()
            .to_vec()
    }

    #[test]
    fn signature_matches_independent_hmac() {
        // First prove the reference implementation on RFC 4231 test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let body = post_call_transcription_body("agent_1", "conv_1", "CA1", &[], 0);
        let expected = hex::encode(hmac_sha256(
            b"wsec_test",
            format!("1700000000.{body}").as_bytes(),
        ));
        assert_eq!(
            elevenlabs_signature("wsec_test", 1_700_000_000, &body),
            format!("t=1700000000,v0={expected}")
        );
    }

    #[test]
    fn webhook_bodies_shape() {
        let body: Value = serde_json::from_str(&post_call_transcription_body(
            "agent_1",
            "conv_1",
            "CA1",
            &[("agent", "Hello."), ("user", "Bye.")],
            30,
        ))
        .unwrap();
        assert_eq!(body["type"], "post_call_transcription");
        let now = chrono::Utc::now().timestamp();
        let sent = body["event_timestamp"].as_i64().unwrap();
        assert!((now - 5..=now).contains(&sent), "{sent}");
        let data = &body["data"];
        assert_eq!(
            (&data["agent_id"], &data["conversation_id"], &data["status"]),
            (&json!("agent_1"), &json!("conv_1"), &json!("done"))
        );
        assert_eq!(
            data["transcript"][1],
            json!({ "role": "user", "message": "Bye.", "time_in_call_secs": 15 })
        );
        assert_eq!(data["metadata"]["call_duration_secs"], 30);
        assert_eq!(data["metadata"]["start_time_unix_secs"], sent - 30);
        assert_eq!(data["metadata"]["phone_call"]["call_sid"], "CA1");
        assert_eq!(data["metadata"]["phone_call"]["direction"], "outbound");
        assert_eq!(data["analysis"]["call_successful"], "success");
        assert!(data["analysis"]["transcript_summary"].is_string());

        let body: Value =
            serde_json::from_str(&call_initiation_failure_body("agent_1", "conv_2", "busy"))
                .unwrap();
        assert_eq!(body["type"], "call_initiation_failure");
        assert!(body["event_timestamp"].is_i64());
        assert_eq!(
            body["data"],
            json!({ "agent_id": "agent_1", "conversation_id": "conv_2", "failure_reason": "busy", "metadata": {} })
        );
    }
}
