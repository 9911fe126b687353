//! Issue 19: the number registry's admin routes, and `phone_numbers` on the
//! organisation routes as registry claims. A number has one owner; a
//! refusal never names it; a failed request lets go of exactly what it took.

use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};
use shared::base::config::Secret;
use shared::store::directory::DirectoryStore;
use shared::store::tenancy::TenancyStore;

use crate::support::{bearer, json_body, Stack};

const TOKEN: &str = "numbers-admin-token";
const NUMBER: &str = "+14155552671";

struct Admin {
    stack: Stack,
}

impl Admin {
    async fn start() -> Self {
        let admin = Self {
            stack: Stack::start().await,
        };
        for org in ["acme", "globex"] {
            admin.create_org(org, &[]).await;
        }
        admin
    }

    fn request(method: &str, route: &str, path: &str, body: Option<Value>) -> Request {
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("authorization".to_string(), bearer(TOKEN)),
        ];
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        devstack::server::api_request(method, route, path, "", &headers, body.as_bytes())
    }

    async fn send(&self, route: &str, request: Request) -> Response<Body> {
        let (directory, tenancy) = (self.stack.directory(), self.stack.tenancy());
        let token = Secret::new(TOKEN);
        let admin = shared::flows::admin::Admin {
            token: &token,
            directory: &directory,
            tenancy: &tenancy,
        };
        match route {
            "organisation-create" => admin.create_organisation(request).await,
            "organisation-update" => admin.update_organisation(request).await,
            "organisation-get" => admin.get_organisation(request).await,
            _ => admin.numbers(request).await,
        }
    }

    async fn create_org(&self, org_id: &str, numbers: &[&str]) -> Response<Body> {
        let body = json!({"org_id": org_id, "name": org_id, "monthly_limit_seconds": 600, "phone_numbers": numbers});
        self.send(
            "organisation-create",
            Self::request("POST", "/organisations", "/organisations", Some(body)),
        )
        .await
    }

    async fn patch_numbers(&self, org_id: &str, numbers: &[&str]) -> Response<Body> {
        self.send(
            "organisation-update",
            Self::request(
                "PATCH",
                "/organisations/{org_id}",
                &format!("/organisations/{org_id}"),
                Some(json!({"phone_numbers": numbers})),
            ),
        )
        .await
    }

    async fn assign(&self, org_id: &str, number: &str, channel: &str) -> Response<Body> {
        self.send(
            "organisation-numbers",
            Self::request(
                "POST",
                "/organisations/{org_id}/numbers",
                &format!("/organisations/{org_id}/numbers"),
                Some(json!({"number": number, "channel": channel})),
            ),
        )
        .await
    }

    async fn list(&self, org_id: &str) -> Response<Body> {
        self.send(
            "organisation-numbers",
            Self::request(
                "GET",
                "/organisations/{org_id}/numbers",
                &format!("/organisations/{org_id}/numbers"),
                None,
            ),
        )
        .await
    }

    async fn release(&self, org_id: &str, channel: &str, number: &str) -> Response<Body> {
        self.send(
            "organisation-numbers",
            Self::request(
                "DELETE",
                "/organisations/{org_id}/numbers/{channel}/{number}",
                &format!("/organisations/{org_id}/numbers/{channel}/{number}"),
                None,
            ),
        )
        .await
    }

    async fn owner(&self, key: &str) -> Option<String> {
        self.stack.tenancy().owner(key).await.unwrap()
    }
}

#[tokio::test]
async fn numbers_are_assigned_listed_and_released_by_their_organisation_only() {
    let t = Admin::start().await;
    let assigned = t.assign("acme", NUMBER, "voice").await;
    assert_eq!(assigned.status(), 201);
    assert_eq!(
        json_body(&assigned),
        json!({"org_id": "acme", "number": NUMBER, "channel": "voice"})
    );
    assert_eq!(t.assign("acme", NUMBER, "voice").await.status(), 200);
    // Another organisation: 409, and nothing says whose it is.
    let taken = t.assign("globex", NUMBER, "voice").await;
    assert_eq!(taken.status(), 409);
    assert_eq!(json_body(&taken)["code"], "number_taken");
    assert!(!json_body(&taken).to_string().contains("acme"));
    // The same number as a WhatsApp sender is another registry entry.
    assert_eq!(t.assign("globex", NUMBER, "whatsapp").await.status(), 201);
    assert_eq!(
        json_body(&t.list("acme").await),
        json!({"numbers": [{"number": NUMBER, "channel": "voice"}]})
    );
    assert_eq!(
        json_body(&t.list("globex").await),
        json!({"numbers": [{"number": NUMBER, "channel": "whatsapp"}]})
    );
    // Only the owner releases; the encoded `+` of a path is understood.
    assert_eq!(
        t.release("globex", "voice", "%2B14155552671")
            .await
            .status(),
        404
    );
    assert_eq!(t.owner("voice#+14155552671").await.as_deref(), Some("acme"));
    let released = t.release("acme", "voice", "%2B14155552671").await;
    assert_eq!(released.status(), 204);
    assert!(matches!(released.body(), Body::Empty));
    assert_eq!(
        t.release("acme", "voice", "%2B14155552671").await.status(),
        404
    );
    assert_eq!(json_body(&t.list("acme").await), json!({"numbers": []}));
    assert_eq!(t.assign("globex", NUMBER, "voice").await.status(), 201);
}

#[tokio::test]
async fn bad_number_requests_are_refused_and_change_nothing() {
    let t = Admin::start().await;
    let malformed = t.assign("acme", "4155552671", "voice").await;
    assert_eq!(malformed.status(), 422);
    assert_eq!(json_body(&malformed)["code"], "invalid_phone_number");
    let channel = t.assign("acme", NUMBER, "sms").await;
    assert_eq!(channel.status(), 422);
    assert_eq!(json_body(&channel)["code"], "invalid_channel");
    let ghost = t.assign("ghost", NUMBER, "voice").await;
    assert_eq!(ghost.status(), 404);
    assert_eq!(t.list("ghost").await.status(), 404);
    assert_eq!(t.release("acme", "fax", NUMBER).await.status(), 404);
    assert_eq!(
        t.release("acme", "voice", "not-a-number").await.status(),
        404
    );
    let mut unauthorised = Admin::request(
        "GET",
        "/organisations/{org_id}/numbers",
        "/organisations/acme/numbers",
        None,
    );
    unauthorised.headers_mut().remove("authorization");
    assert_eq!(
        t.send("organisation-numbers", unauthorised).await.status(),
        401
    );
    assert_eq!(t.stack.item_count("TenancyTable").await, 0);
}

#[tokio::test]
async fn one_number_assigned_to_two_organisations_at_once_has_one_owner() {
    let t = std::sync::Arc::new(Admin::start().await);
    for round in 0..4 {
        let number = format!("+1415555267{round}");
        let attempts = ["acme", "globex"].map(|org| {
            let (t, number) = (std::sync::Arc::clone(&t), number.clone());
            tokio::spawn(async move { (org, t.assign(org, &number, "voice").await.status()) })
        });
        let mut outcomes = Vec::new();
        for attempt in attempts {
            outcomes.push(attempt.await.unwrap());
        }
        let winners: Vec<&str> = outcomes
            .iter()
            .filter(|(_, status)| *status == 201)
            .map(|(org, _)| *org)
            .collect();
        assert_eq!(winners.len(), 1, "{outcomes:?}");
        assert!(
            outcomes.iter().any(|(_, status)| *status == 409),
            "{outcomes:?}"
        );
        assert_eq!(
            t.owner(&format!("voice#{number}")).await.as_deref(),
            Some(winners[0])
        );
    }
}

#[tokio::test]
async fn phone_numbers_on_organisations_are_registry_claims_undone_on_failure() {
    let t = Admin::start().await;
    assert_eq!(
        t.assign("globex", "+14155552679", "voice").await.status(),
        201
    );
    // A taken number refuses the new organisation and lets go of the free one.
    let refused = t
        .create_org("initech", &["+14155552678", "+14155552679"])
        .await;
    assert_eq!(refused.status(), 409);
    assert_eq!(json_body(&refused)["code"], "number_taken");
    assert!(json_body(&refused)["detail"]
        .as_str()
        .unwrap()
        .contains("+14155552679"));
    assert!(!json_body(&refused).to_string().contains("globex"));
    assert_eq!(t.owner("voice#+14155552678").await, None);
    assert_eq!(
        t.owner("voice#+14155552679").await.as_deref(),
        Some("globex")
    );
    assert!(t
        .stack
        .directory()
        .get_organisation("initech")
        .await
        .unwrap()
        .is_none());

    // An existing organisation's numbers are claimed on create...
    let created = t.create_org("initech", &["+14155552678"]).await;
    assert_eq!(created.status(), 201);
    assert_eq!(
        json_body(&created)["phone_numbers"],
        json!(["+14155552678"])
    );
    // ...an id that exists releases only what the request itself took.
    let again = t
        .create_org("initech", &["+14155552678", "+14155552677"])
        .await;
    assert_eq!(again.status(), 422);
    assert_eq!(
        t.owner("voice#+14155552678").await.as_deref(),
        Some("initech")
    );
    assert_eq!(t.owner("voice#+14155552677").await, None);

    // A PATCH with a taken number keeps what the organisation had and
    // lets go of what it had just claimed.
    let patch = t
        .patch_numbers("initech", &["+14155552676", "+14155552679"])
        .await;
    assert_eq!(patch.status(), 409);
    assert_eq!(t.owner("voice#+14155552676").await, None);
    assert_eq!(
        t.owner("voice#+14155552678").await.as_deref(),
        Some("initech")
    );
    // A PATCH that succeeds replaces the list: new ones claimed, dropped
    // ones released; GET reports the registry.
    let replaced = t.patch_numbers("initech", &["+14155552676"]).await;
    assert_eq!(replaced.status(), 200);
    assert_eq!(t.owner("voice#+14155552678").await, None);
    let fetched = t
        .send(
            "organisation-get",
            Admin::request(
                "GET",
                "/organisations/{org_id}",
                "/organisations/initech",
                None,
            ),
        )
        .await;
    assert_eq!(
        json_body(&fetched)["phone_numbers"],
        json!(["+14155552676"])
    );
    // Unknown organisation: 404, nothing claimed.
    assert_eq!(
        t.patch_numbers("ghost", &["+14155552675"]).await.status(),
        404
    );
    assert_eq!(t.owner("voice#+14155552675").await, None);
}
