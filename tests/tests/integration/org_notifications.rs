//! Organisations' own notification routes (issue 19): set through the admin
//! route into Secrets Manager (moto), each organisation's messages go to its
//! own Slack or email, the deployment's routes stay the fallback, and one
//! organisation's broken Slack holds up no other's messages.

use std::sync::Arc;
use std::time::Duration;

use devstack::fakes::{FakeSlack, ScriptedResponse};
use shared::flows::notify::{NotificationChannel, OrgChannelMaker};
use shared::providers::slack::SlackWebhookChannel;
use shared::queue::jobs::{self, CallStart, NotificationJob};
use shared::queue::sqs_batch::Worker;
use shared::store::org_secrets::{OrgSecretStore, SecretKind};
use shared::store::sessions::{NewSession, SessionStore};

use crate::org_accounts::{Failing, Tenants};
use crate::support::*;

/// Org A posts through an incoming webhook, org B through its bot.
const ORG_A: &str = "globex";
const ORG_B: &str = "initech";
const B_TOKEN: &str = "xoxb-initech-0123456789";
const B_CHANNEL: &str = "C0INITECH";

struct Routes {
    tenants: Tenants,
    deployment: FakeSlack,
    slack_a: FakeSlack,
    slack_b: FakeSlack,
}

impl Routes {
    async fn start() -> Self {
        let tenants = Tenants::start().await;
        for org in [ORG_A, ORG_B] {
            tenants.organisation(org).await;
        }
        let routes = Self {
            tenants,
            deployment: FakeSlack::start(),
            slack_a: FakeSlack::start(),
            slack_b: FakeSlack::start(),
        };
        routes.slack_b.set_bot_token(B_TOKEN);
        let a = serde_json::json!({"slack_webhook_url": routes.slack_a.webhook_url()});
        let b = serde_json::json!({"slack_bot_token": B_TOKEN, "slack_channel": B_CHANNEL});
        for (org, body) in [(ORG_A, a), (ORG_B, b)] {
            let response = routes.put(org, &body.to_string()).await;
            assert_eq!(response.status(), 200, "{}", body_text(&response));
        }
        routes
    }

    async fn put(&self, org: &str, body: &str) -> lambda_http::Response<lambda_http::Body> {
        self.tenants
            .admin_call(
                "PUT",
                &format!("/organisations/{org}/providers/notifications"),
                body,
            )
            .await
    }

    /// A notify worker whose deployment channel is `self.deployment`'s
    /// webhook and whose organisations' bots post to `slack_b`.
    fn worker(&self, store: Arc<dyn OrgSecretStore>) -> Arc<notify_worker::NotifyWorker> {
        let stack = &self.tenants.stack;
        let deployment: Arc<dyn NotificationChannel> = Arc::new(SlackWebhookChannel {
            http: reqwest::Client::new(),
            url: shared::base::config::Secret::new(self.deployment.webhook_url()),
        });
        let mut worker = stack.notify_worker_owned(vec![deployment]);
        worker.org_accounts = Some(self.tenants.org_accounts(store));
        worker.org_channels = OrgChannelMaker {
            http: reqwest::Client::new(),
            slack_api_base_url: format!("{}/api", self.slack_b.base_url()),
            ses: None,
            from_email: None,
        };
        Arc::new(worker)
    }

    async fn queue_start(&self, room: &str, org: Option<&str>) {
        let start = CallStart {
            room_name: room.into(),
            user_email: None,
            started_at: "2026-12-05T10:00:00Z".into(),
            metadata: serde_json::Map::new(),
        };
        let job = NotificationJob::call_started(&format!("call-start#{room}"), start).of_org(org);
        jobs::send(
            self.tenants.stack.queue("NotificationQueue").as_ref(),
            &job,
            Duration::ZERO,
        )
        .await
        .unwrap();
    }
}

fn body_text(response: &lambda_http::Response<lambda_http::Body>) -> String {
    String::from_utf8_lossy(response.body().as_ref()).into_owned()
}

/// Each post as its JSON text (the room is named in its blocks), sorted.
fn rooms(posts: &[serde_json::Value]) -> Vec<String> {
    let mut rooms: Vec<String> = posts.iter().map(|post| post.to_string()).collect();
    rooms.sort();
    rooms
}

#[tokio::test]
async fn a_broken_slack_of_one_organisation_never_holds_up_anothers() {
    let routes = Routes::start().await;
    routes
        .slack_a
        .set_always(Some(ScriptedResponse::ServerError));
    let worker = routes.worker(routes.tenants.secrets.clone());
    routes.queue_start("room-a", Some(ORG_A)).await;
    routes.queue_start("room-b", Some(ORG_B)).await;
    routes.queue_start("room-d", None).await;

    // One receive takes all three; B's and the deployment's posts are out
    // when it returns, whatever A's Slack does.
    let stack = &routes.tenants.stack;
    let first = stack
        .poller("NotificationQueue")
        .poll_once(&|event| {
            let worker = Arc::clone(&worker);
            async move { worker.handle(event).await }
        })
        .await
        .unwrap();
    assert_eq!(first.received, 3, "{first:?}");
    let b_posts = routes.slack_b.posts();
    assert_eq!(b_posts.len(), 1, "{b_posts:?}");
    assert_eq!(b_posts[0]["channel"], B_CHANNEL);
    assert!(b_posts[0].to_string().contains("room-b"));
    let deployment_posts = routes.deployment.posts();
    assert_eq!(deployment_posts.len(), 1, "{deployment_posts:?}");
    assert!(deployment_posts[0].to_string().contains("room-d"));
    assert_eq!(routes.slack_a.attempts(), 1);
    assert!(routes.slack_a.posts().is_empty());
    // A's job came back to the queue as a delayed re-send, not a failure.
    assert!(first.failed.is_empty(), "{first:?}");
    let requeued = stack.peek("NotificationQueue").await;
    assert_eq!(requeued.len(), 1, "{requeued:?}");
    assert!(requeued[0].contains("room-a") && requeued[0].contains("\"attempt\":1"));

    // Every re-send fails too; it ends in the DLQ, and nothing else moved.
    stack.run_notifications(&worker).await;
    assert_eq!(routes.slack_a.attempts(), 8);
    let dead = stack.peek("NotificationDLQ").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].contains("room-a"));
    assert_eq!(routes.slack_b.posts().len(), 1);
    assert_eq!(routes.deployment.posts().len(), 1);
}

#[tokio::test]
async fn each_organisations_messages_go_to_its_own_routes_and_the_deployments_are_the_fallback() {
    let routes = Routes::start().await;
    let worker = routes.worker(routes.tenants.secrets.clone());
    // A LiveKit report names no organisation: the room's session does.
    routes
        .tenants
        .stack
        .sessions()
        .open(&NewSession {
            session_id: "sess-b".into(),
            session_type: "web".into(),
            room: "room-b-livekit".into(),
            org_id: ORG_B.into(),
            started_at: "2026-12-05T10:00:00Z".into(),
            agent_active: false,
            dispatch_id: None,
            call_sid: None,
            direction: None,
            from_number: None,
            to_number: None,
            host_identity: None,
            reopen: false,
            conversation: "c1".into(),
            room_sid: None,
        })
        .await
        .unwrap();
    routes.queue_start("room-a", Some(ORG_A)).await;
    routes.queue_start("room-b", Some(ORG_B)).await;
    routes.queue_start("room-b-livekit", None).await;
    // An organisation without routes of its own: the deployment's.
    routes.queue_start("room-acme", Some("acme")).await;
    routes.tenants.stack.run_notifications(&worker).await;

    assert_eq!(rooms(&routes.slack_a.posts()).len(), 1);
    assert!(rooms(&routes.slack_a.posts())[0].contains("room-a"));
    let b = rooms(&routes.slack_b.posts());
    assert_eq!(b.len(), 2, "{b:?}");
    assert!(b.iter().any(|text| text.contains("room-b-livekit")));
    assert!(routes
        .slack_b
        .posts()
        .iter()
        .all(|post| post["channel"] == B_CHANNEL));
    let d = rooms(&routes.deployment.posts());
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].contains("room-acme"));

    // Without its routes, A's next message goes to the deployment's.
    let response = routes
        .tenants
        .admin_call(
            "DELETE",
            &format!("/organisations/{ORG_A}/providers/notifications"),
            "",
        )
        .await;
    assert_eq!(response.status(), 200, "{}", body_text(&response));
    routes.queue_start("room-a2", Some(ORG_A)).await;
    routes.tenants.stack.run_notifications(&worker).await;
    assert_eq!(routes.slack_a.posts().len(), 1);
    assert!(rooms(&routes.deployment.posts())
        .iter()
        .any(|text| text.contains("room-a2")));
}

#[tokio::test]
async fn unreadable_routes_hold_only_their_organisations_messages() {
    let routes = Routes::start().await;
    let failing: Arc<dyn OrgSecretStore> = Arc::new(Failing {
        inner: shared::store::org_secrets::SecretsManagerOrgSecrets {
            client: routes.tenants.sm.clone(),
            prefix: routes.tenants.secrets.prefix.clone(),
        },
        org: ORG_A.into(),
    });
    let worker = routes.worker(failing);
    routes.queue_start("room-a", Some(ORG_A)).await;
    routes.queue_start("room-b", Some(ORG_B)).await;
    let stack = &routes.tenants.stack;
    let first = stack
        .poller("NotificationQueue")
        .poll_once(&|event| {
            let worker = Arc::clone(&worker);
            async move { worker.handle(event).await }
        })
        .await
        .unwrap();
    assert_eq!(first.received, 2);
    assert_eq!(routes.slack_b.posts().len(), 1);
    // Never sent elsewhere while its own routes cannot be read.
    assert!(routes.deployment.posts().is_empty());
    assert!(routes.slack_a.posts().is_empty());
    let requeued = stack.peek("NotificationQueue").await;
    assert_eq!(requeued.len(), 1, "{requeued:?}");
    assert!(requeued[0].contains("room-a"));

    // Once readable, the re-sent job goes to A's own Slack.
    stack
        .run_notifications(&routes.worker(routes.tenants.secrets.clone()))
        .await;
    assert_eq!(routes.slack_a.posts().len(), 1);
    assert!(routes.deployment.posts().is_empty());
}

#[tokio::test]
async fn the_notification_routes_are_checked_and_never_shown() {
    let routes = Routes::start().await;
    for (body, code) in [
        ("{", "invalid_notification_routes"),
        ("{}", "invalid_notification_routes"),
        (
            r#"{"slack_webhook_url":"ftp://x.example/y"}"#,
            "invalid_notification_routes",
        ),
        (
            r#"{"slack_bot_token":"xoxb-1-2-3-4"}"#,
            "invalid_notification_routes",
        ),
        (
            r#"{"email":"a@b.co, c@d.co"}"#,
            "invalid_notification_routes",
        ),
    ] {
        let response = routes.put(ORG_A, body).await;
        assert_eq!(response.status(), 422, "{body}: {}", body_text(&response));
        assert!(body_text(&response).contains(code));
    }
    let response = routes
        .put(
            ORG_B,
            &serde_json::json!({"slack_bot_token": B_TOKEN, "slack_channel": B_CHANNEL,
                "email": "ops@initech.example"})
            .to_string(),
        )
        .await;
    let text = body_text(&response);
    assert_eq!(response.status(), 200, "{text}");
    assert!(
        !text.contains(B_TOKEN) && !text.contains("ops@initech"),
        "{text}"
    );
    let shown: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(shown["provider"]["routes"]["slack"], "bot");
    assert_eq!(shown["provider"]["routes"]["slack_channel"], B_CHANNEL);
    assert_eq!(shown["provider"]["routes"]["email"], "o***@initech.example");

    let listed = routes
        .tenants
        .admin_call("GET", &format!("/organisations/{ORG_B}/providers"), "")
        .await;
    let listed: serde_json::Value = serde_json::from_str(&body_text(&listed)).unwrap();
    let notifications = listed["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider"] == "notifications")
        .expect("listed");
    assert_eq!(notifications["configured"], true);
    // The secret holds what the worker reads.
    let stored = routes
        .tenants
        .secrets
        .read(ORG_B, SecretKind::Notifications)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.expose().contains(B_TOKEN));
}

#[tokio::test]
async fn an_organisations_email_route_sends_from_the_deployments_sender() {
    let routes = Routes::start().await;
    let stack = &routes.tenants.stack;
    let ses = local().ses().await;
    let sender = format!(
        "callops-{}@example.com",
        stack.resources.table("CallsTable").to_lowercase()
    );
    ses.create_email_identity()
        .email_identity(&sender)
        .send()
        .await
        .unwrap();
    let to = format!("ops-{}@globex.example", uuid::Uuid::new_v4().simple());
    let response = routes
        .put(ORG_A, &serde_json::json!({"email": to}).to_string())
        .await;
    assert_eq!(response.status(), 200, "{}", body_text(&response));
    let mut worker = stack.notify_worker_owned(vec![]);
    worker.org_accounts = Some(routes.tenants.org_accounts(routes.tenants.secrets.clone()));
    worker.org_channels = OrgChannelMaker {
        http: reqwest::Client::new(),
        slack_api_base_url: format!("{}/api", routes.slack_b.base_url()),
        ses: Some(ses),
        from_email: Some(sender.clone()),
    };
    let worker = Arc::new(worker);
    routes.queue_start("room-mail", Some(ORG_A)).await;
    stack.run_notifications(&worker).await;
    let sent: Vec<_> = local()
        .sent_emails()
        .await
        .unwrap()
        .into_iter()
        .filter(|(from, _, _)| *from == sender)
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].2.contains("room-mail"));

    // Without a deployment sender the route cannot work: the job is
    // dead-lettered with the setting to fix, not sent anywhere else.
    let mut no_sender = stack.notify_worker_owned(vec![]);
    no_sender.org_accounts = Some(routes.tenants.org_accounts(routes.tenants.secrets.clone()));
    let no_sender = Arc::new(no_sender);
    routes.queue_start("room-mail-2", Some(ORG_A)).await;
    stack.run_notifications(&no_sender).await;
    let dead = stack.peek("NotificationDLQ").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].contains("room-mail-2"));
}
