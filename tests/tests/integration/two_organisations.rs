//! Issue 19's walk-through as one test: two organisations, each with its
//! own voice number, WhatsApp sender, Slack workspace and Slack
//! notification route. A phone call, a WhatsApp call and a Slack `/call` of
//! each land in that organisation's sessions and post to its own Slack;
//! the other organisation's key sees none of them, and nothing reaches the
//! deployment's Slack.

use devstack::fakes::FakeSlack;
use shared::flows::notify::{NotificationChannel, OrgChannelMaker};
use shared::flows::provider_accounts::ProviderAccountsAdmin;
use shared::providers::org_accounts::{OrgAccountSettings, OrgAccounts};
use shared::providers::slack::SlackWebhookChannel;
use shared::store::org_secrets::SecretsManagerOrgSecrets;
use shared::store::tenancy::{Claim, Kind, TenancyStore};

use super::*;

const ADMIN_TOKEN: &str = "walkthrough-admin-token";
/// Both organisations' bots post through the same (fake) Slack API, each
/// with its own token in its own channel.
const BOT_TOKEN: &str = "xoxb-walkthrough-0123456789";

struct Tenant {
    org: &'static str,
    voice: &'static str,
    whatsapp: &'static str,
    team: &'static str,
    channel: &'static str,
}

const TENANTS: [Tenant; 2] = [
    Tenant {
        org: ORG,
        voice: "+14155552691",
        whatsapp: "+14155552692",
        team: "TACME0001",
        channel: "C0ACME",
    },
    Tenant {
        org: OTHER_ORG,
        voice: "+14155552693",
        whatsapp: "+14155552694",
        team: "TGLOBEX01",
        channel: "C0GLOBEX",
    },
];

#[tokio::test]
async fn each_organisations_calls_and_slash_commands_reach_only_its_sessions_and_its_slack() {
    let t = Rooms::start().await;
    let tenancy = t.stack.tenancy();
    let sm = aws_sdk_secretsmanager::Client::new(&local().sdk_config().await);
    let secrets = Arc::new(SecretsManagerOrgSecrets {
        client: sm,
        prefix: format!("callops/t{}/org", uuid::Uuid::new_v4().simple()),
    });
    let admin = ProviderAccountsAdmin {
        token: Secret::new(ADMIN_TOKEN),
        directory: Arc::new(t.stack.directory()),
        secrets: secrets.clone(),
        tenancy: Arc::new(t.stack.tenancy()),
    };
    let org_slack = FakeSlack::start();
    org_slack.set_bot_token(BOT_TOKEN);
    let deployment_slack = FakeSlack::start();

    // Set up: numbers, senders and workspaces in the registry, and each
    // organisation's Slack through the admin route.
    for tenant in &TENANTS {
        for key in [
            Kind::Voice.key(tenant.voice),
            Kind::WhatsApp.key(tenant.whatsapp),
            Kind::Slack.key(tenant.team),
        ] {
            assert_eq!(
                tenancy.claim(&key, tenant.org).await.unwrap(),
                Claim::Claimed
            );
        }
        let path = format!("/organisations/{}/providers/notifications", tenant.org);
        let body =
            serde_json::json!({"slack_bot_token": BOT_TOKEN, "slack_channel": tenant.channel});
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("authorization".to_string(), bearer(ADMIN_TOKEN)),
        ];
        let request = devstack::server::api_request(
            "PUT",
            "/organisations/{org_id}/providers/{provider}",
            &path,
            "",
            &headers,
            body.to_string().as_bytes(),
        );
        let response = admin.handle(request).await;
        assert_eq!(response.status(), StatusCode::OK, "{}", text(&response));
    }

    // Each organisation's traffic: a phone call, a WhatsApp call, a Slack /call.
    let launcher = shared::flows::launchers::Launcher {
        fallback_org: None,
        ..t.launcher()
    };
    let flow = || Rooms::flow(Rooms::stream(), None);
    let mut sessions_of = Vec::new();
    for (n, tenant) in TENANTS.iter().enumerate() {
        let phone_sid = format!("CAwalk{n}");
        let params = [
            ("CallSid", phone_sid.as_str()),
            ("From", "+14155550100"),
            ("To", tenant.voice),
            ("Direction", "inbound"),
        ];
        let twiml = text(
            &t.voice_webhook(SessionKind::Phone, flow())
                .handle(twilio_post("/twilio/voice", "", &params))
                .await,
        );
        assert!(twiml.contains("<Connect>"), "{twiml}");

        let whatsapp_sid = format!("CAwalkwa{n}");
        let to = format!("whatsapp:{}", tenant.whatsapp);
        let params = [
            ("CallSid", whatsapp_sid.as_str()),
            ("From", "whatsapp:+14155550100"),
            ("To", to.as_str()),
            ("Direction", "inbound"),
        ];
        let twiml = text(
            &t.voice_webhook(SessionKind::Whatsapp, flow())
                .handle(twilio_post("/whatsapp/voice", "", &params))
                .await,
        );
        assert!(twiml.contains("<Connect>"), "{twiml}");

        // The same Slack user id in both workspaces: two rooms, two owners.
        let launch = shared::flows::launchers::Launch {
            kind: SessionKind::Slack,
            key: "U0SAMEUSER",
            user_id: "U0SAMEUSER",
            user_name: Some("Ada"),
            workspace: Some(tenant.team),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let started = launcher
            .start(&launch, None, deadline)
            .await
            .unwrap_or_else(|e| panic!("launcher: {e}"));
        sessions_of.push(vec![
            format!("phone-{phone_sid}"),
            format!("whatsapp-{whatsapp_sid}"),
            started.session_id,
        ]);
    }

    // Each key sees its organisation's three sessions and 404 for the others'.
    let keys = [&t.key, &t.other_key];
    for (n, sessions) in sessions_of.iter().enumerate() {
        for session in sessions {
            let own = t.get_session(session, keys[n]).await;
            assert_eq!(own.status(), StatusCode::OK, "{session}: {}", text(&own));
            let other = t.get_session(session, keys[1 - n]).await;
            assert_eq!(other.status(), StatusCode::NOT_FOUND, "{session}");
        }
        let listed = t
            .sessions_list()
            .handle(api(
                "GET",
                "/sessions",
                "/sessions",
                "",
                Some(keys[n]),
                None,
            ))
            .await;
        let listed = text(&listed);
        for session in sessions {
            assert!(listed.contains(session.as_str()), "{listed}");
        }
        for session in &sessions_of[1 - n] {
            assert!(!listed.contains(session.as_str()), "{listed}");
        }
    }

    // The call-start notifications: each in its organisation's channel.
    let deployment: Arc<dyn NotificationChannel> = Arc::new(SlackWebhookChannel {
        http: reqwest::Client::new(),
        url: Secret::new(deployment_slack.webhook_url()),
    });
    let mut worker = t.stack.notify_worker_owned(vec![deployment]);
    worker.org_accounts = Some(Arc::new(OrgAccounts::new(
        secrets,
        OrgAccountSettings {
            ttl: Duration::from_secs(60),
            capacity: 10,
            http: reqwest::Client::new(),
            twilio_base_url: t.twilio.base_url().to_string(),
            elevenlabs_base_url: "http://127.0.0.1:9".into(),
        },
    )));
    worker.org_channels = OrgChannelMaker {
        http: reqwest::Client::new(),
        slack_api_base_url: format!("{}/api", org_slack.base_url()),
        ses: None,
        from_email: None,
    };
    t.stack.run_notifications(&Arc::new(worker)).await;
    let posts = org_slack.posts();
    assert_eq!(posts.len(), 6, "{posts:?}");
    for (n, tenant) in TENANTS.iter().enumerate() {
        let in_channel: Vec<String> = posts
            .iter()
            .filter(|post| post["channel"] == tenant.channel)
            .map(|post| post.to_string())
            .collect();
        assert_eq!(in_channel.len(), 3, "{}: {in_channel:?}", tenant.channel);
        // Every post names one of this organisation's rooms, none of the other's.
        let rooms_of = |sessions: &Vec<String>| -> Vec<String> {
            sessions
                .iter()
                .map(|session| {
                    session
                        .strip_prefix("phone-")
                        .map(|sid| format!("twilio-{sid}"))
                        .or_else(|| {
                            session
                                .strip_prefix("whatsapp-")
                                .map(|sid| format!("whatsapp-{sid}"))
                        })
                        .unwrap_or_default()
                })
                .filter(|room| !room.is_empty())
                .collect()
        };
        for room in rooms_of(&sessions_of[n]) {
            assert!(
                in_channel.iter().any(|post| post.contains(&room)),
                "{room} not in {}",
                tenant.channel
            );
        }
        for room in rooms_of(&sessions_of[1 - n]) {
            assert!(
                in_channel.iter().all(|post| !post.contains(&room)),
                "{room} in {}",
                tenant.channel
            );
        }
    }
    assert!(deployment_slack.posts().is_empty());
}
