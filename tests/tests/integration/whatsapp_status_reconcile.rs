//! Sent WhatsApp messages whose status callbacks were lost (Twilio never
//! retries one) take Twilio's own status, asked by the sweep (issue 20).

use shared::flows::whatsapp::{StatusCheck, STATUS_RECHECK_SECS};
use shared::store::whatsapp::STATUS_FIRST_CHECK_SECS;

use super::*;

impl WhatsApp {
    fn status_check(&self) -> StatusCheck {
        StatusCheck {
            store: self.store(),
            twilio: self.twilio_client().into(),
        }
    }

    async fn statuses_of(&self) -> Vec<(String, String)> {
        let page = json_body(&self.conversation(&self.key, USER).await);
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["direction"] == "outbound")
            .map(|m| {
                (
                    m["messageSid"].as_str().unwrap().to_string(),
                    m["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

#[tokio::test]
async fn sent_messages_whose_status_callbacks_were_lost_take_twilios_status() {
    let wa = WhatsApp::start().await;
    wa.twilio
        .simulate_message_statuses(&["sent", "delivered", "read"]);
    wa.twilio.drop_message_status_callbacks();
    let start = shared::base::time::epoch_secs();
    let mut sids = Vec::new();
    for i in 0..5 {
        let sent = wa
            .send(serde_json::json!({"to": format!("+{USER}"), "message": format!("update {i}")}))
            .await;
        assert_eq!(sent.status(), 200, "{}", text(&sent));
        sids.push(json_body(&sent)["messageSid"].as_str().unwrap().to_string());
    }
    // One callback did arrive.
    assert_eq!(wa.status(&sids[0], "read", None).await.status(), 200);
    let check = wa.status_check();
    assert_eq!(
        check
            .sweep(start + STATUS_FIRST_CHECK_SECS - 1, 100)
            .await
            .unwrap(),
        Default::default(),
        "not due before its first check"
    );
    let due = shared::base::time::epoch_secs() + STATUS_FIRST_CHECK_SECS;
    let report = check.sweep(due, 100).await.unwrap();
    let mut updated = report.updated.clone();
    updated.sort();
    let mut lost = sids[1..].to_vec();
    lost.sort();
    assert_eq!(updated, lost, "{report:?}");
    assert_eq!(report.settled, 1, "the one whose callback came");
    assert!(wa
        .statuses_of()
        .await
        .iter()
        .all(|(_, status)| status == "read"));
    // A late callback changes nothing.
    assert_eq!(wa.status(&sids[1], "sent", None).await.status(), 200);
    assert!(wa
        .statuses_of()
        .await
        .iter()
        .all(|(_, status)| status == "read"));
    assert_eq!(
        check.sweep(due + 86_400, 100).await.unwrap(),
        Default::default(),
        "every entry went"
    );
}

#[tokio::test]
async fn a_message_still_on_its_way_is_asked_again_then_left_after_a_day() {
    let wa = WhatsApp::start().await;
    // Twilio itself never gets further than `sent` (the phone is off).
    wa.twilio.simulate_message_statuses(&["sent"]);
    wa.twilio.drop_message_status_callbacks();
    let sent = wa
        .send(serde_json::json!({"to": format!("+{USER}"), "message": "Are you there?"}))
        .await;
    let sid = json_body(&sent)["messageSid"].as_str().unwrap().to_string();
    let check = wa.status_check();
    let due = shared::base::time::epoch_secs() + STATUS_FIRST_CHECK_SECS;
    let first = check.sweep(due, 100).await.unwrap();
    assert_eq!(first.updated, vec![sid.clone()], "queued -> sent");
    assert_eq!(first.still_pending, vec![sid.clone()]);
    assert_eq!(
        wa.statuses_of().await,
        vec![(sid.clone(), "sent".to_string())]
    );
    let again = check.sweep(due + STATUS_RECHECK_SECS, 100).await.unwrap();
    assert_eq!(again.still_pending, vec![sid.clone()]);
    let late = check.sweep(due + 86_400, 100).await.unwrap();
    assert_eq!(late.given_up, vec![sid]);
}
