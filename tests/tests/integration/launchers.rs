//! Seed 002's chat launchers: Slack's `/call`, Discord's `/call` and a Teams
//! outgoing webhook, signed with the platforms' real algorithms, against the
//! fake LiveKit, the fake Slack, DynamoDB Local and moto's SQS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use devstack::fakes::{FakeLiveKit, ScriptedResponse};
use devstack::launchers::{
    dev_discord_public_key, discord_signature, slack_signature, teams_authorization,
    DEV_DISCORD_PRIVATE_KEY, DEV_SLACK_SIGNING_SECRET, DEV_TEAMS_WEBHOOK_SECRET,
};
use http::StatusCode;
use lambda_http::{Body, Request, Response};
use shared::api::invites::RoomInvites;
use shared::api::Route;
use shared::base::config::Secret;
use shared::flows::launchers::workspaces::ChatWorkspaces;
use shared::flows::launchers::{conversation_key, Launcher};
use shared::flows::sessions::{
    JoinTokens, RoomAccess, SessionKind, SessionLifecycle, DEFAULT_ROOM_URL_TEMPLATE,
};
use shared::providers::livekit::{AccessTokens, LiveKitClient};
use shared::providers::slack::SlackBotChannel;
use shared::store::sessions::{Ending, SessionStore};
use shared::store::tenancy::TenancyStore;

use crate::support::*;

const LIVEKIT_KEY: &str = "lk-test-key";
const LIVEKIT_SECRET: &str = "lk-test-secret-0123456789abcdef0123456789";
const ORG: &str = "inbound-org";
const BOT_TOKEN: &str = "xoxb-test-token";
/// `PUBLIC_BASE_URL`: where a Teams reply's `/room/{roomName}/join` link points.
const PUBLIC_BASE: &str = "https://callops.example.com";

struct Launchers {
    stack: Stack,
    livekit: FakeLiveKit,
}

fn now() -> String {
    shared::base::time::epoch_secs().to_string()
}

fn text(response: &Response<Body>) -> String {
    String::from_utf8_lossy(response.body().as_ref()).into_owned()
}

/// The join token inside a join link (LiveKit Meet's `token=`).
fn token_in(link: &str) -> String {
    let start = link.find("token=").expect("link has a token") + "token=".len();
    link[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect()
}

fn post(route: &str, headers: &[(&str, String)], body: &[u8]) -> Request {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    devstack::server::api_request("POST", route, route, "", &headers, body)
}

fn slack_request(form: &str, timestamp: &str, signature: Option<String>) -> Request {
    let mut headers = vec![
        (
            "content-type",
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("x-slack-request-timestamp", timestamp.to_string()),
    ];
    if let Some(signature) = signature {
        headers.push(("x-slack-signature", signature));
    }
    post("/slack/commands", &headers, form.as_bytes())
}

fn slack_signed(form: &str) -> Request {
    let timestamp = now();
    let signature = slack_signature(DEV_SLACK_SIGNING_SECRET, &timestamp, form.as_bytes());
    slack_request(form, &timestamp, Some(signature))
}

fn slash(user_id: &str, text: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("token", "legacy-token"),
            ("team_id", "T0001"),
            ("team_domain", "example"),
            ("channel_id", "C2147483705"),
            ("channel_name", "general"),
            ("user_id", user_id),
            ("user_name", "ada"),
            ("command", "/call"),
            ("text", text),
            (
                "response_url",
                "https://hooks.slack.com/commands/T0001/1/abc",
            ),
            ("trigger_id", "13345224609.738474920.8088930838d88f008e0"),
        ])
        .finish()
}

fn discord_request(body: &str, timestamp: &str, signature: Option<String>) -> Request {
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("x-signature-timestamp", timestamp.to_string()),
    ];
    if let Some(signature) = signature {
        headers.push(("x-signature-ed25519", signature));
    }
    post("/discord/interactions", &headers, body.as_bytes())
}

fn discord_signed(body: &str) -> Request {
    let timestamp = now();
    let signature = discord_signature(&DEV_DISCORD_PRIVATE_KEY, &timestamp, body.as_bytes());
    discord_request(body, &timestamp, Some(signature))
}

fn discord_command(channel_id: &str, name: &str) -> String {
    serde_json::json!({
        "type": 2,
        "id": "1300000000000000002",
        "application_id": "1300000000000000000",
        "token": "interaction-token",
        "version": 1,
        "guild_id": "1300000000000000010",
        "channel_id": channel_id,
        "member": {"user": {"id": "1300000000000000030", "username": "ada", "global_name": "Ada Lovelace"}},
        "data": {"id": "1300000000000000040", "name": name, "type": 1},
    })
    .to_string()
}

fn teams_request(body: &str, authorization: Option<String>) -> Request {
    let mut headers = vec![("content-type", "application/json".to_string())];
    if let Some(authorization) = authorization {
        headers.push(("authorization", authorization));
    }
    post("/teams/messages", &headers, body.as_bytes())
}

fn teams_signed(body: &str) -> Request {
    teams_request(
        body,
        Some(teams_authorization(
            DEV_TEAMS_WEBHOOK_SECRET,
            body.as_bytes(),
        )),
    )
}

/// A join page that mints each visitor's token from the invite (`/room/join`).
const INVITE_PAGE: &str = "https://app.example.com/rooms/{room}?invite={invite}";

const TEAMS_CONVERSATION: &str = "19:abc123@thread.tacv2;messageid=1700000000001";

fn teams_message(text: &str) -> String {
    serde_json::json!({
        "type": "message",
        "id": "1700000000001",
        "channelId": "msteams",
        "text": text,
        "textFormat": "plain",
        "from": {"id": "29:1AdaLovelace", "name": "Ada Lovelace"},
        "conversation": {"id": TEAMS_CONVERSATION, "conversationType": "channel"},
    })
    .to_string()
}

impl Launchers {
    async fn start() -> Self {
        Self {
            stack: Stack::start().await,
            livekit: FakeLiveKit::start(LIVEKIT_KEY, LIVEKIT_SECRET),
        }
    }

    fn tokens() -> AccessTokens {
        AccessTokens {
            api_key: LIVEKIT_KEY.into(),
            api_secret: Secret::new(LIVEKIT_SECRET),
        }
    }

    fn livekit_client(&self) -> Arc<LiveKitClient> {
        livekit_client(self.livekit.url(), LIVEKIT_KEY, LIVEKIT_SECRET)
    }

    fn lifecycle(&self) -> SessionLifecycle {
        self.stack.session_lifecycle(self.livekit_client())
    }

    fn launcher(&self) -> Launcher {
        self.launcher_with(DEFAULT_ROOM_URL_TEMPLATE)
    }

    fn launcher_with(&self, room_url_template: &str) -> Launcher {
        self.launcher_owned_by(room_url_template, Some(ORG))
    }

    /// A launcher whose unconnected workspaces belong to `fallback_org`
    /// (`INBOUND_ORG_ID`), or are refused when it is `None`.
    fn launcher_owned_by(&self, room_url_template: &str, fallback_org: Option<&str>) -> Launcher {
        Launcher {
            lifecycle: self.lifecycle(),
            access: RoomAccess {
                tokens: JoinTokens {
                    tokens: Self::tokens(),
                    ttl: Duration::from_secs(600),
                },
                invites: RoomInvites::new(
                    Secret::new("invite-test-secret"),
                    Duration::from_secs(3600),
                ),
                client_url: self.livekit_client().client_url(),
                room_url_template: room_url_template.into(),
            },
            tenancy: Arc::new(self.stack.tenancy()),
            fallback_org: fallback_org.map(str::to_string),
            lease: Duration::from_secs(30),
        }
    }

    fn slack(&self, bot: bool) -> slack_commands::SlackCommands {
        slack_commands::SlackCommands {
            signing_secret: Secret::new(DEV_SLACK_SIGNING_SECRET),
            launcher: self.launcher(),
            bot: bot.then(|| SlackBotChannel {
                http: reqwest::Client::new(),
                api_base_url: format!("{}/api", self.stack.slack.base_url()),
                token: Secret::new(BOT_TOKEN),
                channel: String::new(),
            }),
        }
    }

    fn discord(&self) -> discord_interactions::DiscordInteractions {
        discord_interactions::DiscordInteractions {
            public_key: discord_interactions::parse_public_key(&dev_discord_public_key()).unwrap(),
            launcher: self.launcher(),
        }
    }

    /// Teams with a join page of ours that takes an invite.
    fn teams(&self) -> teams_messages::TeamsMessages {
        self.teams_with(INVITE_PAGE)
    }

    fn teams_with(&self, room_url_template: &str) -> teams_messages::TeamsMessages {
        teams_messages::TeamsMessages {
            key: teams_messages::decode_secret(DEV_TEAMS_WEBHOOK_SECRET).unwrap(),
            launcher: self.launcher_with(room_url_template),
            public_base_url: PUBLIC_BASE.into(),
        }
    }

    /// `GET /room/{roomName}/join` redirecting to `room_url_template`.
    fn join_link(&self, room_url_template: &str) -> room_join_link::RoomJoinLink {
        room_join_link::RoomJoinLink {
            lifecycle: self.lifecycle(),
            access: self.launcher_with(room_url_template).access,
        }
    }

    /// No word of `text` is a LiveKit token the fake accepts, and no URL in it carries `token=`.
    fn assert_no_token(&self, text: &str) {
        assert!(!text.contains("token="), "{text}");
        for word in
            text.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            assert!(
                self.livekit.verify_join_token(word).is_err(),
                "a join token in: {text}"
            );
        }
    }

    /// The room's session is open, of `kind`, owned by the inbound
    /// organisation; the room has the agent dispatched once.
    async fn assert_opened(&self, room: &str, kind: &str) {
        let record = self
            .stack
            .sessions()
            .get(room)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no session in {room}"));
        assert!(!record.ended());
        assert_eq!(record.session_id.as_deref(), Some(room));
        assert_eq!(record.session_type.as_deref(), Some(kind));
        assert_eq!(record.org_id.as_deref(), Some(ORG));
        assert!(self.livekit.room_exists(room));
        assert_eq!(self.livekit.dispatches(room).len(), 1);
    }

    /// Nothing was created anywhere: no LiveKit call, no notification.
    async fn assert_nothing_created(&self) {
        assert!(self.livekit.requests().is_empty(), "LiveKit was called");
        assert!(self.livekit.rooms().is_empty());
        assert_eq!(self.stack.depth("NotificationQueue").await, 0);
    }

    /// A join link's token lets `identity` into `room`.
    fn assert_link(&self, link: &str, room: &str, identity: &str) {
        let claims = self
            .livekit
            .verify_join_token(&token_in(link))
            .unwrap_or_else(|e| panic!("{e}: {link}"));
        assert_eq!(claims["video"]["room"], room);
        assert_eq!(claims["sub"], identity);
    }
}

fn unauthorized(response: &Response<Body>) {
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "{}",
        text(response)
    );
    let body = json_body(response);
    assert_eq!(body["code"], "unauthorized");
    assert!(body["detail"].is_string());
}

#[tokio::test]
async fn slack_call_opens_the_users_room_and_answers_the_link() {
    let t = Launchers::start().await;
    let response = t
        .slack(false)
        .handle(slack_signed(&slash("U2CERLKJA", "")))
        .await;
    assert_eq!(response.status(), StatusCode::OK, "{}", text(&response));
    let body = json_body(&response);
    assert_eq!(body["response_type"], "ephemeral");
    let reply = body["text"].as_str().unwrap();
    assert!(
        reply.contains("<https://meet.livekit.io/custom?liveKitUrl="),
        "{reply}"
    );
    t.assert_link(reply, "slack-U2CERLKJA", "U2CERLKJA");
    t.assert_opened("slack-U2CERLKJA", "slack").await;
    assert_eq!(t.stack.depth("NotificationQueue").await, 1);
    // No bot token: no direct message.
    assert_eq!(t.stack.slack.attempts(), 0);
}

#[tokio::test]
async fn slack_call_with_a_bot_token_also_sends_the_link_as_a_dm() {
    let t = Launchers::start().await;
    let response = t
        .slack(true)
        .handle(slack_signed(&slash("U024BE7LH", "now please")))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let reply = json_body(&response)["text"].as_str().unwrap().to_string();
    let posts = t.stack.slack.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0]["channel"], "U024BE7LH");
    assert_eq!(posts[0]["text"], reply.as_str());
    t.assert_opened("slack-U024BE7LH", "slack").await;
}

#[tokio::test]
async fn a_hanging_slack_dm_does_not_delay_the_answer_past_the_deadline() {
    let t = Launchers::start().await;
    t.stack
        .slack
        .push_response(ScriptedResponse::Hang(Duration::from_secs(10)));
    let started = Instant::now();
    let response = t
        .slack(true)
        .handle(slack_signed(&slash("U0SLOW", "")))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), StatusCode::OK);
    assert!(json_body(&response)["text"]
        .as_str()
        .unwrap()
        .contains("Join the call"));
    t.assert_opened("slack-U0SLOW", "slack").await;
}

#[tokio::test]
async fn slack_call_help_explains_and_creates_nothing() {
    let t = Launchers::start().await;
    let response = t
        .slack(true)
        .handle(slack_signed(&slash("U2CERLKJA", " HELP ")))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_body(&response);
    assert_eq!(body["response_type"], "ephemeral");
    assert!(body["text"].as_str().unwrap().contains("/call help"));
    t.assert_nothing_created().await;
    assert!(t
        .stack
        .sessions()
        .get("slack-U2CERLKJA")
        .await
        .unwrap()
        .is_none());
    assert_eq!(t.stack.slack.attempts(), 0);
}

#[tokio::test]
async fn unsigned_tampered_or_stale_slack_commands_are_401_and_create_nothing() {
    let t = Launchers::start().await;
    let slack = t.slack(true);
    let form = slash("U2CERLKJA", "");
    let timestamp = now();
    let signature = slack_signature(DEV_SLACK_SIGNING_SECRET, &timestamp, form.as_bytes());
    // Tampered: another user in the signed body's place.
    let tampered = form.replace("U2CERLKJA", "U0MALLORY");
    unauthorized(
        &slack
            .handle(slack_request(
                &tampered,
                &timestamp,
                Some(signature.clone()),
            ))
            .await,
    );
    // Stale: signed correctly, six minutes ago.
    let old = (shared::base::time::epoch_secs() - 360).to_string();
    let old_signature = slack_signature(DEV_SLACK_SIGNING_SECRET, &old, form.as_bytes());
    unauthorized(
        &slack
            .handle(slack_request(&form, &old, Some(old_signature)))
            .await,
    );
    // Missing signature, then missing both headers.
    unauthorized(&slack.handle(slack_request(&form, &timestamp, None)).await);
    unauthorized(
        &slack
            .handle(post(
                "/slack/commands",
                &[("content-type", "application/x-www-form-urlencoded".into())],
                form.as_bytes(),
            ))
            .await,
    );
    // Signed with another secret.
    let foreign = slack_signature("another-apps-secret", &timestamp, form.as_bytes());
    unauthorized(
        &slack
            .handle(slack_request(&form, &timestamp, Some(foreign)))
            .await,
    );
    t.assert_nothing_created().await;
    assert!(t
        .stack
        .sessions()
        .get("slack-U2CERLKJA")
        .await
        .unwrap()
        .is_none());
    assert_eq!(t.stack.slack.attempts(), 0);
}

#[tokio::test]
async fn a_second_slack_call_after_the_session_ended_reopens_the_room() {
    let t = Launchers::start().await;
    let slack = t.slack(false);
    let first = slack.handle(slack_signed(&slash("U0AGAIN", ""))).await;
    assert_eq!(first.status(), StatusCode::OK);
    let lifecycle = t.lifecycle();
    let ending = Ending {
        ended_at: shared::base::time::now_rfc3339(),
        duration_secs: Some(42),
        reason: Some("room finished".into()),
        ..Ending::default()
    };
    assert!(lifecycle.end("slack-U0AGAIN", &ending).await.unwrap());
    assert!(t
        .stack
        .sessions()
        .get("slack-U0AGAIN")
        .await
        .unwrap()
        .unwrap()
        .ended());

    let second = slack.handle(slack_signed(&slash("U0AGAIN", ""))).await;
    assert_eq!(second.status(), StatusCode::OK, "{}", text(&second));
    let reply = json_body(&second)["text"].as_str().unwrap().to_string();
    assert!(reply.contains("Join the call"), "{reply}");
    t.assert_link(&reply, "slack-U0AGAIN", "U0AGAIN");
    let record = t
        .stack
        .sessions()
        .get("slack-U0AGAIN")
        .await
        .unwrap()
        .unwrap();
    assert!(!record.ended(), "the new session is active");
    assert!(t.livekit.room_exists("slack-U0AGAIN"));
    assert_eq!(
        t.stack.depth("NotificationQueue").await,
        2,
        "one call-start notification per conversation"
    );
}

#[tokio::test]
async fn livekit_down_is_a_normal_try_again_answer_on_every_platform() {
    let t = Launchers::start().await;
    t.livekit.fail_next(100, StatusCode::SERVICE_UNAVAILABLE);
    let slack = t
        .slack(true)
        .handle(slack_signed(&slash("U0DOWN", "")))
        .await;
    assert_eq!(slack.status(), StatusCode::OK);
    let body = json_body(&slack);
    assert_eq!(body["response_type"], "ephemeral");
    assert!(
        body["text"].as_str().unwrap().contains("try again"),
        "{body}"
    );
    assert_eq!(t.stack.slack.attempts(), 0, "no DM without a link");

    let discord = t
        .discord()
        .handle(discord_signed(&discord_command(
            "1300000000000000099",
            "call",
        )))
        .await;
    assert_eq!(discord.status(), StatusCode::OK);
    let body = json_body(&discord);
    assert_eq!(body["type"], 4);
    assert_eq!(body["data"]["flags"], 64);
    assert!(body["data"]["content"]
        .as_str()
        .unwrap()
        .contains("try again"));

    let teams = t
        .teams()
        .handle(teams_signed(&teams_message("<at>callops</at> call")))
        .await;
    assert_eq!(teams.status(), StatusCode::OK);
    let body = json_body(&teams);
    assert_eq!(body["type"], "message");
    assert!(body["text"].as_str().unwrap().contains("try again"));

    assert!(t
        .stack
        .sessions()
        .get("slack-U0DOWN")
        .await
        .unwrap()
        .is_none());
    assert_eq!(t.stack.depth("NotificationQueue").await, 0);
    // LiveKit back: the same command works.
    t.livekit.fail_next(0, StatusCode::SERVICE_UNAVAILABLE);
    let again = t
        .slack(false)
        .handle(slack_signed(&slash("U0DOWN", "")))
        .await;
    assert!(json_body(&again)["text"]
        .as_str()
        .unwrap()
        .contains("Join the call"));
    t.assert_opened("slack-U0DOWN", "slack").await;
}

#[tokio::test]
async fn discord_ping_is_answered_with_pong() {
    let t = Launchers::start().await;
    let response = t.discord().handle(discord_signed(r#"{"type":1}"#)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_body(&response), serde_json::json!({"type": 1}));
    t.assert_nothing_created().await;
}

#[tokio::test]
async fn discord_call_opens_the_channels_room_and_answers_ephemerally() {
    let t = Launchers::start().await;
    let response = t
        .discord()
        .handle(discord_signed(&discord_command(
            "1300000000000000020",
            "call",
        )))
        .await;
    assert_eq!(response.status(), StatusCode::OK, "{}", text(&response));
    let body = json_body(&response);
    assert_eq!(body["type"], 4);
    assert_eq!(body["data"]["flags"], 64);
    let content = body["data"]["content"].as_str().unwrap();
    assert!(
        content.contains("[Join the call](https://meet.livekit.io/"),
        "{content}"
    );
    t.assert_link(
        content,
        "discord-1300000000000000020",
        "1300000000000000030",
    );
    t.assert_opened("discord-1300000000000000020", "discord")
        .await;
    assert_eq!(t.stack.depth("NotificationQueue").await, 1);
}

#[tokio::test]
async fn unknown_discord_commands_are_explained_and_create_nothing() {
    let t = Launchers::start().await;
    let response = t
        .discord()
        .handle(discord_signed(&discord_command(
            "1300000000000000020",
            "dance",
        )))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_body(&response);
    assert_eq!(body["type"], 4);
    assert_eq!(body["data"]["flags"], 64);
    assert!(body["data"]["content"].as_str().unwrap().contains("/call"));
    t.assert_nothing_created().await;
}

#[tokio::test]
async fn unsigned_tampered_or_stale_discord_interactions_are_401_and_create_nothing() {
    let t = Launchers::start().await;
    let discord = t.discord();
    let body = discord_command("1300000000000000020", "call");
    let timestamp = now();
    let signature = discord_signature(&DEV_DISCORD_PRIVATE_KEY, &timestamp, body.as_bytes());
    let tampered = body.replace("1300000000000000020", "1300000000000000021");
    unauthorized(
        &discord
            .handle(discord_request(
                &tampered,
                &timestamp,
                Some(signature.clone()),
            ))
            .await,
    );
    let old = (shared::base::time::epoch_secs() - 360).to_string();
    let old_signature = discord_signature(&DEV_DISCORD_PRIVATE_KEY, &old, body.as_bytes());
    unauthorized(
        &discord
            .handle(discord_request(&body, &old, Some(old_signature)))
            .await,
    );
    unauthorized(
        &discord
            .handle(discord_request(&body, &timestamp, None))
            .await,
    );
    unauthorized(
        &discord
            .handle(post(
                "/discord/interactions",
                &[("content-type", "application/json".into())],
                body.as_bytes(),
            ))
            .await,
    );
    // Another application's key, generated here from other bytes.
    let other = discord_signature(&[42u8; 32], &timestamp, body.as_bytes());
    unauthorized(
        &discord
            .handle(discord_request(&body, &timestamp, Some(other)))
            .await,
    );
    // Even a PING must be signed (Discord checks that we refuse bad ones).
    let ping_timestamp = now();
    unauthorized(
        &discord
            .handle(discord_request(
                r#"{"type":1}"#,
                &ping_timestamp,
                Some(discord_signature(
                    &[42u8; 32],
                    &ping_timestamp,
                    br#"{"type":1}"#,
                )),
            ))
            .await,
    );
    t.assert_nothing_created().await;
}

#[tokio::test]
async fn teams_call_opens_the_conversations_room_and_replies_with_the_link() {
    let t = Launchers::start().await;
    let response = t
        .teams()
        .handle(teams_signed(&teams_message(
            "<at>callops</at> Call&nbsp;\n",
        )))
        .await;
    assert_eq!(response.status(), StatusCode::OK, "{}", text(&response));
    let body = json_body(&response);
    assert_eq!(body["type"], "message");
    let reply = body["text"].as_str().unwrap();
    let room = shared::flows::sessions::SessionKind::Teams.room(
        &shared::flows::launchers::conversation_key(TEAMS_CONVERSATION),
    );
    assert!(room.starts_with("teams-19_abc123_thread.tacv2_messageid_1700000000001-"));
    assert!(
        reply.contains(&format!(
            "[Join the call](https://app.example.com/rooms/{room}?invite=v2."
        )),
        "{reply}"
    );
    t.assert_no_token(reply);
    t.assert_opened(&room, "teams").await;
    assert_eq!(t.stack.depth("NotificationQueue").await, 1);
}

#[tokio::test]
async fn teams_messages_without_call_get_usage_and_create_nothing() {
    let t = Launchers::start().await;
    let response = t
        .teams()
        .handle(teams_signed(&teams_message(
            "<at>call</at> what can you do?",
        )))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_body(&response);
    assert_eq!(body["type"], "message");
    assert!(body["text"].as_str().unwrap().contains("call"));
    t.assert_nothing_created().await;
}

#[tokio::test]
async fn unsigned_or_tampered_teams_messages_are_401_and_create_nothing() {
    let t = Launchers::start().await;
    let teams = t.teams();
    let body = teams_message("<at>callops</at> call");
    let authorization = teams_authorization(DEV_TEAMS_WEBHOOK_SECRET, body.as_bytes());
    unauthorized(
        &teams
            .handle(teams_request(
                &body.replace("Ada Lovelace", "Mallory"),
                Some(authorization),
            ))
            .await,
    );
    unauthorized(&teams.handle(teams_request(&body, None)).await);
    // Keyed with another webhook's token.
    let foreign = teams_authorization("b3RoZXItd2ViaG9vay10b2tlbg==", body.as_bytes());
    unauthorized(&teams.handle(teams_request(&body, Some(foreign))).await);
    unauthorized(
        &teams
            .handle(teams_request(&body, Some("Bearer abc".into())))
            .await,
    );
    t.assert_nothing_created().await;
}

/// The `events/` samples carry valid signatures made with the dev secrets
/// at the events' own timestamps.
#[test]
fn the_launcher_sample_events_are_signed_with_the_dev_secrets() {
    let read = |name: &str| {
        let path = devstack::repo_root().join("events").join(name);
        lambda_http::request::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let timestamp = |request: &Request, header: &str| -> i64 {
        request.headers()[header].to_str().unwrap().parse().unwrap()
    };
    let slack = read("slack-commands.json");
    slack_commands::verify(
        &Secret::new(DEV_SLACK_SIGNING_SECRET),
        slack.headers(),
        slack.body().as_ref(),
        timestamp(&slack, "x-slack-request-timestamp"),
    )
    .unwrap();
    let discord = read("discord-interactions.json");
    discord_interactions::verify(
        &discord_interactions::parse_public_key(&dev_discord_public_key()).unwrap(),
        discord.headers(),
        discord.body().as_ref(),
        timestamp(&discord, "x-signature-timestamp"),
    )
    .unwrap();
    let teams = read("teams-messages.json");
    teams_messages::verify(
        &teams_messages::decode_secret(DEV_TEAMS_WEBHOOK_SECRET).unwrap(),
        teams.headers(),
        teams.body().as_ref(),
    )
    .unwrap();
}

/// The URL of a Markdown link `[text](url)` in a reply.
fn markdown_link(reply: &str) -> String {
    let start = reply
        .find("](")
        .unwrap_or_else(|| panic!("no link in: {reply}"))
        + 2;
    let end = start + reply[start..].find(')').expect("the link is closed");
    reply[start..end].to_string()
}

/// A GET of a `/room/{roomName}/join` link, as API Gateway delivers it.
fn get_link(link: &str) -> Request {
    let path_and_query = link.strip_prefix(PUBLIC_BASE).expect("a link of ours");
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    devstack::server::api_request("GET", "/room/{roomName}/join", path, query, &[], b"")
}

/// The invite inside an invite page link (`invite=`), decoded.
fn invite_in(link: &str) -> String {
    let start = link.find("invite=").expect("link has an invite") + "invite=".len();
    let raw: String = link[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '%'))
        .collect();
    url::form_urlencoded::parse(format!("i={raw}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned()
}

/// Issue 17 item 4: the whole channel sees a Teams reply, so it carries no
/// token: each person mints their own from the invite, through
/// `/room/{roomName}/join` (default template) or `/room/join` (a page of ours).
#[tokio::test]
async fn a_teams_reply_carries_no_token_and_each_person_mints_their_own() {
    let t = Launchers::start().await;
    // A page that needs a token (LiveKit Meet, the default).
    let meet = json_body(
        &t.teams_with(DEFAULT_ROOM_URL_TEMPLATE)
            .handle(teams_signed(&teams_message("<at>callops</at> call")))
            .await,
    )["text"]
        .as_str()
        .unwrap()
        .to_string();
    t.assert_no_token(&meet);
    let room = shared::flows::sessions::SessionKind::Teams.room(
        &shared::flows::launchers::conversation_key(TEAMS_CONVERSATION),
    );
    // A page that needs a token: the reply links our route instead, which
    // mints a token for a new guest on every visit.
    let link = markdown_link(&meet);
    assert!(
        link.starts_with(&format!("{PUBLIC_BASE}/room/{room}/join?invite=v2.")),
        "{meet}"
    );
    let opener = t.join_link(DEFAULT_ROOM_URL_TEMPLATE);
    let mut guests = Vec::new();
    for _ in 0..2 {
        let opened = opener.handle(get_link(&link)).await;
        assert_eq!(opened.status(), StatusCode::FOUND, "{}", text(&opened));
        assert_eq!(opened.headers()["cache-control"], "no-store");
        assert_eq!(opened.headers()["referrer-policy"], "no-referrer");
        let location = opened.headers()["location"].to_str().unwrap();
        assert!(
            location.starts_with("https://meet.livekit.io/custom?liveKitUrl="),
            "{location}"
        );
        let claims = t
            .livekit
            .verify_join_token(&token_in(location))
            .unwrap_or_else(|e| panic!("{e}: {location}"));
        assert_eq!(claims["video"]["room"], room.as_str());
        let identity = claims["sub"].as_str().unwrap().to_string();
        assert!(identity.starts_with("guest-"), "{identity}");
        guests.push(identity);
    }
    assert_ne!(guests[0], guests[1], "two visitors, one identity");

    // A page that takes the invite: each person mints their own token.
    let reply = json_body(
        &t.teams()
            .handle(teams_signed(&teams_message("<at>callops</at> call")))
            .await,
    )["text"]
        .as_str()
        .unwrap()
        .to_string();
    t.assert_no_token(&reply);
    let invite = invite_in(&reply);
    let join = room_join::RoomJoin {
        access: t.stack.keyed_access(),
        lifecycle: t.lifecycle(),
        tokens: JoinTokens {
            tokens: Launchers::tokens(),
            ttl: Duration::from_secs(600),
        },
        invites: RoomInvites::new(Secret::new("invite-test-secret"), Duration::from_secs(3600)),
        client_url: t.livekit_client().client_url(),
    };
    let mut identities = Vec::new();
    for person in ["grace", "alan"] {
        let body =
            serde_json::json!({"roomName": room, "participantIdentity": person, "invite": invite});
        let joined = join
            .handle(post(
                "/room/join",
                &[("content-type", "application/json".into())],
                body.to_string().as_bytes(),
            ))
            .await;
        assert_eq!(joined.status(), StatusCode::OK, "{}", text(&joined));
        let token = json_body(&joined)["token"].as_str().unwrap().to_string();
        let claims = t.livekit.verify_join_token(&token).unwrap();
        assert_eq!(claims["video"]["room"], room.as_str());
        identities.push(claims["sub"].as_str().unwrap().to_string());
    }
    assert_eq!(identities, ["guest-grace", "guest-alan"]);
}

// --- Workspaces connected to organisations (issue 19) ---------------------

const ADMIN_TOKEN: &str = "admin-test-token-0123456789";

fn slash_from(team_id: &str, user_id: &str) -> String {
    slash(user_id, "").replace("team_id=T0001", &format!("team_id={team_id}"))
}

fn discord_command_in(guild_id: Option<&str>, channel_id: &str) -> String {
    let mut command: serde_json::Value =
        serde_json::from_str(&discord_command(channel_id, "call")).unwrap();
    match guild_id {
        Some(guild) => command["guild_id"] = guild.into(),
        None => {
            // A direct message: no server, the user instead of a member.
            let object = command.as_object_mut().unwrap();
            object.remove("guild_id");
            let user = object.remove("member").unwrap()["user"].clone();
            object.insert("user".into(), user);
        }
    }
    command.to_string()
}

fn teams_message_in(tenant_id: &str) -> String {
    let mut message: serde_json::Value =
        serde_json::from_str(&teams_message("<at>Agent</at> call")).unwrap();
    message["channelData"] =
        serde_json::json!({"tenant": {"id": tenant_id}, "teamsTeamId": "19:team"});
    message.to_string()
}

/// The room a connected workspace's launch opens: workspace and platform
/// key together, so two workspaces never meet in one room.
fn connected_room(kind: SessionKind, workspace: &str, key: &str) -> String {
    kind.room(&conversation_key(&format!("{workspace}-{key}")))
}

const WORKSPACES_ROUTE: &str = "/organisations/{org_id}/chat-workspaces";
const WORKSPACE_ROUTE: &str = "/organisations/{org_id}/chat-workspaces/{platform}/{id}";

impl Launchers {
    async fn create_org(&self, org_id: &str) {
        let directory = self.stack.directory();
        let tenancy = self.stack.tenancy();
        let token = Secret::new(ADMIN_TOKEN);
        let admin = shared::flows::admin::Admin {
            token: &token,
            directory: &directory,
            tenancy: &tenancy,
        };
        let body =
            serde_json::json!({"org_id": org_id, "name": org_id, "monthly_limit_seconds": 3600});
        let response = admin
            .create_organisation(admin_request(
                "POST",
                "/organisations",
                "/organisations",
                &body.to_string(),
                Some(ADMIN_TOKEN),
            ))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{}",
            text(&response)
        );
    }

    /// One of the chat-workspace admin routes, as its function runs it.
    async fn workspaces(&self, request: Request) -> Response<Body> {
        let directory = self.stack.directory();
        let tenancy = self.stack.tenancy();
        let token = Secret::new(ADMIN_TOKEN);
        ChatWorkspaces {
            token: &token,
            directory: &directory,
            tenancy: &tenancy,
        }
        .handle(request)
        .await
    }

    async fn connect(&self, org_id: &str, platform: &str, id: &str) -> Response<Body> {
        let path = format!("/organisations/{org_id}/chat-workspaces");
        let body = serde_json::json!({"platform": platform, "id": id}).to_string();
        self.workspaces(admin_request(
            "POST",
            WORKSPACES_ROUTE,
            &path,
            &body,
            Some(ADMIN_TOKEN),
        ))
        .await
    }

    async fn owner_of(&self, room: &str) -> Option<String> {
        self.stack
            .sessions()
            .get(room)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no session in {room}"))
            .org_id
    }
}

#[tokio::test]
async fn each_connected_workspace_opens_sessions_for_its_own_organisation() {
    let t = Launchers::start().await;
    for org in ["org-a", "org-b"] {
        t.create_org(org).await;
    }
    for (org, platform, id) in [
        ("org-a", "slack", "TAAAA"),
        ("org-b", "slack", "TBBBB"),
        ("org-a", "discord", "1300000000000000011"),
        ("org-b", "teams", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
    ] {
        let response = t.connect(org, platform, id).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{}",
            text(&response)
        );
    }

    // The same Slack user id in two workspaces: two rooms, two owners.
    for (team, org) in [("TAAAA", "org-a"), ("TBBBB", "org-b")] {
        let response = t
            .slack(false)
            .handle(slack_signed(&slash_from(team, "U1")))
            .await;
        let reply = json_body(&response)["text"].as_str().unwrap().to_string();
        let room = connected_room(SessionKind::Slack, team, "U1");
        t.assert_link(&reply, &room, "U1");
        assert_eq!(t.owner_of(&room).await.as_deref(), Some(org));
    }

    let response = t
        .discord()
        .handle(discord_signed(&discord_command_in(
            Some("1300000000000000011"),
            "1300000000000000020",
        )))
        .await;
    assert_eq!(response.status(), StatusCode::OK, "{}", text(&response));
    let room = connected_room(
        SessionKind::Discord,
        "1300000000000000011",
        "1300000000000000020",
    );
    assert_eq!(t.owner_of(&room).await.as_deref(), Some("org-a"));

    let response = t
        .teams()
        .handle(teams_signed(&teams_message_in(
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
        )))
        .await;
    assert_eq!(response.status(), StatusCode::OK, "{}", text(&response));
    let room = connected_room(
        SessionKind::Teams,
        "72f988bf-86f1-41af-91ab-2d7cd011db47",
        &conversation_key(TEAMS_CONVERSATION),
    );
    assert_eq!(t.owner_of(&room).await.as_deref(), Some("org-b"));

    // A workspace nobody connected still lands with INBOUND_ORG_ID, in the
    // room single-organisation deployments always used.
    t.slack(false)
        .handle(slack_signed(&slash_from("TZZZZ", "U2")))
        .await;
    assert_eq!(t.owner_of("slack-U2").await.as_deref(), Some(ORG));
}

#[tokio::test]
async fn without_a_fallback_an_unconnected_workspace_is_told_how_to_connect_and_opens_nothing() {
    let t = Launchers::start().await;
    let launcher = || t.launcher_owned_by(DEFAULT_ROOM_URL_TEMPLATE, None);

    let slack = slack_commands::SlackCommands {
        signing_secret: Secret::new(DEV_SLACK_SIGNING_SECRET),
        launcher: launcher(),
        bot: None,
    };
    let response = slack.handle(slack_signed(&slash_from("TNOPE", "U1"))).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", text(&response));
    let body = json_body(&response);
    assert_eq!(body["response_type"], "ephemeral");
    let reply = body["text"].as_str().unwrap();
    assert!(reply.contains("not connected"), "{reply}");
    assert!(
        reply.contains("TNOPE") && reply.contains("chat-workspaces"),
        "{reply}"
    );
    t.assert_no_token(reply);

    let discord = discord_interactions::DiscordInteractions {
        public_key: discord_interactions::parse_public_key(&dev_discord_public_key()).unwrap(),
        launcher: launcher(),
    };
    // A direct message has no server to connect.
    let response = discord
        .handle(discord_signed(&discord_command_in(
            None,
            "1300000000000000021",
        )))
        .await;
    let reply = json_body(&response)["data"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reply.contains("connected to callops"), "{reply}");

    let teams = teams_messages::TeamsMessages {
        key: teams_messages::decode_secret(DEV_TEAMS_WEBHOOK_SECRET).unwrap(),
        launcher: launcher(),
        public_base_url: PUBLIC_BASE.into(),
    };
    let response = teams
        .handle(teams_signed(&teams_message_in(
            "00000000-0000-0000-0000-000000000001",
        )))
        .await;
    let reply = json_body(&response)["text"].as_str().unwrap().to_string();
    assert!(reply.contains("not connected"), "{reply}");

    t.assert_nothing_created().await;
    assert_eq!(
        t.stack.item_count("CallsTable").await,
        0,
        "no session stored"
    );
}

#[tokio::test]
async fn workspace_admin_routes_connect_list_and_disconnect_one_owner_at_a_time() {
    let t = Launchers::start().await;
    for org in ["org-a", "org-b"] {
        t.create_org(org).await;
    }
    // Two organisations connect one workspace at once: exactly one wins,
    // and the loser is not told who.
    let (a, b) = tokio::join!(
        t.connect("org-a", "slack", "TRACE"),
        t.connect("org-b", "slack", "TRACE")
    );
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CONFLICT]);
    let (winner, loser, lost) = if a.status() == StatusCode::CREATED {
        ("org-a", "org-b", b)
    } else {
        ("org-b", "org-a", a)
    };
    let body = json_body(&lost);
    assert_eq!(body["code"], "workspace_taken");
    assert!(!body["detail"].as_str().unwrap().contains(winner));

    // Connecting again is a no-op.
    assert_eq!(
        t.connect(winner, "slack", "TRACE").await.status(),
        StatusCode::OK
    );

    let list = |org: &str| {
        let path = format!("/organisations/{org}/chat-workspaces");
        admin_request("GET", WORKSPACES_ROUTE, &path, "", Some(ADMIN_TOKEN))
    };
    let listed = json_body(&t.workspaces(list(winner)).await);
    assert_eq!(listed["org_id"], winner);
    assert_eq!(
        listed["workspaces"],
        serde_json::json!([{"platform": "slack", "id": "TRACE"}])
    );
    let listed = json_body(&t.workspaces(list(loser)).await);
    assert_eq!(listed["workspaces"], serde_json::json!([]));

    // Only its owner can disconnect it; then the other may connect it.
    let delete = |org: &str| {
        let path = format!("/organisations/{org}/chat-workspaces/slack/TRACE");
        admin_request("DELETE", WORKSPACE_ROUTE, &path, "", Some(ADMIN_TOKEN))
    };
    assert_eq!(
        t.workspaces(delete(loser)).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.stack
            .tenancy()
            .owner("slack#TRACE")
            .await
            .unwrap()
            .as_deref(),
        Some(winner)
    );
    let response = t.workspaces(delete(winner)).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", text(&response));
    assert_eq!(
        t.workspaces(delete(winner)).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.connect(loser, "slack", "TRACE").await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn bad_workspace_admin_requests_are_4xx_and_change_nothing() {
    let t = Launchers::start().await;
    t.create_org("org-a").await;
    let path = "/organisations/org-a/chat-workspaces";
    let cases: [(&str, Option<&str>, StatusCode, &str); 7] = [
        (
            r#"{"platform":"slack","id":"T1"}"#,
            None,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            r#"{"platform":"slack","id":"T1"}"#,
            Some("wrong-token-0123456789"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "not json",
            Some(ADMIN_TOKEN),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            r#"{"platform":"irc","id":"T1"}"#,
            Some(ADMIN_TOKEN),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            r#"{"platform":"slack"}"#,
            Some(ADMIN_TOKEN),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            r#"{"platform":"slack","id":"T1#voice"}"#,
            Some(ADMIN_TOKEN),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_workspace_id",
        ),
        (
            &format!(r#"{{"platform":"slack","id":"{}"}}"#, "T".repeat(65)),
            Some(ADMIN_TOKEN),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_workspace_id",
        ),
    ];
    for (body, token, status, code) in cases {
        let response = t
            .workspaces(admin_request("POST", WORKSPACES_ROUTE, path, body, token))
            .await;
        assert_eq!(response.status(), status, "{body}: {}", text(&response));
        assert_eq!(json_body(&response)["code"], code, "{body}");
    }
    // An organisation that does not exist cannot be given a workspace.
    let response = t.connect("no-such-org", "slack", "T1").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        t.stack.item_count("TenancyTable").await,
        0,
        "nothing stored"
    );
}
