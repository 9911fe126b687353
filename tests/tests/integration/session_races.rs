//! Issue 17: rooms and sessions under races, faults and other tenants.
//! Each test is one scenario that broke a promise before; a child of
//! `sessions`, so it drives the same routes through the same `Rooms`.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use shared::flows::sessions::Opening;
use shared::flows::stuck::StuckSessions;
use shared::store::sessions::{
    DynamoSessionStore, Ending, NewSession, Opened, SessionChange, SessionRecord, SessionStore,
    SessionWatch, SlackThread, Switch, SwitchResult,
};
use shared::store::StoreError;

use super::*;

impl Rooms {
    async fn create_room_as(&self, room: &str, key: &str) -> Response<Body> {
        self.room_create()
            .handle(api(
                "POST",
                "/room/create",
                "/room/create",
                "",
                Some(key),
                Some(json!({"roomName": room, "hostName": "Ada"})),
            ))
            .await
    }

    async fn record(&self, room: &str) -> shared::store::sessions::SessionRecord {
        self.stack.sessions().get(room).await.unwrap().unwrap()
    }

    /// The egresses LiveKit still runs for `room`.
    fn running_egresses(&self, room: &str) -> Vec<String> {
        self.livekit
            .egresses()
            .into_iter()
            .filter(|e| {
                e.room == room && matches!(e.status.as_str(), "EGRESS_STARTING" | "EGRESS_ACTIVE")
            })
            .map(|e| e.id)
            .collect()
    }

    /// The record says what LiveKit runs: recording iff an egress runs,
    /// and then that egress.
    async fn assert_recording_agrees(&self, room: &str) {
        let record = self.record(room).await;
        let running = self.running_egresses(room);
        assert_eq!(
            record.recording.unwrap_or(false),
            !running.is_empty(),
            "{running:?}"
        );
        if let Some(egress) = running.first() {
            assert_eq!(running.len(), 1, "one egress at most");
            assert_eq!(record.egress_id.as_deref(), Some(egress.as_str()));
        }
    }

    /// The record says what LiveKit dispatched.
    async fn assert_agent_agrees(&self, room: &str) {
        let record = self.record(room).await;
        let dispatched = self.livekit.dispatches(room);
        assert_eq!(
            record.agent_active.unwrap_or(false),
            !dispatched.is_empty(),
            "record {:?}, LiveKit {dispatched:?}",
            record.agent_active
        );
        assert!(dispatched.len() <= 1);
    }
}

/// Two organisations x 20 concurrent creates of one name, three times: each
/// name has one owner, every other create is 409 `room_taken`, and the
/// loser can neither join, toggle the agent, nor record the winner's room.
#[tokio::test]
async fn two_organisations_creating_one_room_name_at_once_never_share_it() {
    let t = Arc::new(Rooms::start().await);
    for round in 0..3 {
        let room = format!("standup-{round}");
        let mut creates = Vec::new();
        for i in 0..40 {
            let t = Arc::clone(&t);
            let room = room.clone();
            creates.push(tokio::spawn(async move {
                let (org, key) = if i % 2 == 0 {
                    (ORG, t.key.clone())
                } else {
                    (OTHER_ORG, t.other_key.clone())
                };
                let response = t.create_room_as(&room, &key).await;
                (org, response.status(), json_body(&response))
            }));
        }
        let mut results = Vec::new();
        for create in creates {
            results.push(create.await.unwrap());
        }
        let winners: std::collections::BTreeSet<&str> = results
            .iter()
            .filter(|(_, status, _)| *status == StatusCode::CREATED)
            .map(|(org, _, _)| *org)
            .collect();
        let statuses: Vec<(&str, StatusCode)> = results.iter().map(|(o, s, _)| (*o, *s)).collect();
        assert_eq!(winners.len(), 1, "{room}: {statuses:?}");
        let winner = *winners.iter().next().unwrap();
        for (org, status, body) in &results {
            if *org == winner {
                assert_eq!(*status, StatusCode::CREATED, "{body}");
                let claims = t
                    .livekit
                    .verify_join_token(body["token"].as_str().unwrap())
                    .unwrap();
                assert_eq!(claims["video"]["room"], room.as_str());
            } else {
                assert_eq!(*status, StatusCode::CONFLICT, "{body}");
                assert_eq!(body["code"], "room_taken");
                assert!(body.get("token").is_none() && body.get("invite").is_none());
            }
        }
        assert_eq!(t.record(&room).await.org_id.as_deref(), Some(winner));
        assert_eq!(t.livekit.dispatches(&room).len(), 1);
        let loser_key = if winner == ORG { &t.other_key } else { &t.key };
        for what in ["agent", "recording"] {
            let toggled = t.toggle(what, &room, true, loser_key).await;
            assert_eq!(toggled.status(), StatusCode::NOT_FOUND, "{what}");
        }
        let joined = t
            .join(
                json!({"roomName": room, "participantIdentity": "eve"}),
                Some(loser_key),
            )
            .await;
        assert_eq!(joined.status(), StatusCode::NOT_FOUND);
        assert!(t.running_egresses(&room).is_empty());
    }
}

/// `/calls/started` is the key's organisation's: another organisation's
/// report of a room is refused and takes nothing, so the owner's own start
/// is announced; a reported call that never reports its end is ended by
/// the sweep without paging.
#[tokio::test]
async fn a_call_start_report_from_another_organisation_cannot_take_the_room() {
    let t = Rooms::start().await;
    let report = |key: &str, room: &str| {
        let request = api(
            "POST",
            "/calls/started",
            "/calls/started",
            "",
            Some(key),
            Some(json!({"room_name": room})),
        );
        let handler = call_started::CallStarted {
            api_keys: Arc::new(DynamoApiKeyStore::new(
                t.stack.dynamo.clone(),
                t.stack.resources.table("ApiKeysTable"),
            )),
            intake: t.stack.call_start_intake(),
        };
        async move { handler.handle(request).await }
    };
    // Another organisation reports first: refused, nothing claimed.
    assert_eq!(
        t.create_room("owned-room").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(t.stack.depth("NotificationQueue").await, 1);
    let foreign = report(&t.other_key, "owned-room").await;
    assert_eq!(foreign.status(), StatusCode::CONFLICT);
    assert_eq!(json_body(&foreign)["code"], "room_taken");
    assert_eq!(t.stack.depth("NotificationQueue").await, 1);
    // A name another organisation reported first is theirs.
    let first = report(&t.other_key, "agent-owned").await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let taken = t.create_room("agent-owned").await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    assert!(t.livekit.dispatches("agent-owned").is_empty());
    // The owner's own report of its room is the same start: no second post.
    let own = report(&t.key, "owned-room").await;
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(t.stack.depth("NotificationQueue").await, 2);
    // Nothing ever reports a reported call's end: the sweep ends it
    // without counting a stuck session.
    let sweep = StuckSessions {
        sessions: Arc::new(t.stack.sessions()),
        livekit: None,
    };
    let later = shared::base::time::epoch_secs() + 7 * 3600;
    let swept = sweep.sweep(later, 100).await.unwrap();
    assert_eq!(swept.expired, vec!["agent-owned".to_string()]);
    assert!(
        !swept.ended.contains(&"agent-owned".to_string()),
        "{swept:?}"
    );
}

/// A stop whose StopEgress fails keeps the egress id, so the retry stops
/// it; a start whose answer is lost after LiveKit started the egress is
/// adopted by the retry, not orphaned; a stop whose answer is lost after
/// LiveKit stopped it is settled by the retry. After each, the record
/// agrees with LiveKit's egress list.
#[tokio::test]
async fn the_recording_switch_reaches_the_state_asked_for_after_any_single_failure() {
    let t = Rooms::start().await;
    let room = "rec-faults";
    assert_eq!(t.create_room(room).await.status(), StatusCode::CREATED);

    // Start: LiveKit starts the egress, its answer is lost.
    t.livekit.fail_method(
        "StartRoomCompositeEgress",
        true,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    let lost = t.toggle("recording", room, true, &t.key).await;
    assert_eq!(lost.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(t.running_egresses(room).len(), 1, "LiveKit did start it");
    let retried = t.toggle("recording", room, true, &t.key).await;
    assert_eq!(retried.status(), StatusCode::OK);
    assert_eq!(
        json_body(&retried)["egressId"],
        t.running_egresses(room)[0].as_str()
    );
    assert_eq!(t.livekit.egresses().len(), 1, "the retry adopted it");
    t.assert_recording_agrees(room).await;

    // Stop: StopEgress fails before acting; the retry still knows the egress.
    t.livekit
        .fail_method("StopEgress", false, StatusCode::SERVICE_UNAVAILABLE);
    let failed = t.toggle("recording", room, false, &t.key).await;
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
    t.assert_recording_agrees(room).await;
    let stopped = t.toggle("recording", room, false, &t.key).await;
    assert_eq!(stopped.status(), StatusCode::OK, "{}", json_body(&stopped));
    t.assert_recording_agrees(room).await;
    assert_eq!(t.record(room).await.recording, Some(false));

    // Start again, then a stop whose answer is lost after LiveKit stopped it.
    assert_eq!(
        t.toggle("recording", room, true, &t.key).await.status(),
        StatusCode::OK
    );
    t.assert_recording_agrees(room).await;
    t.livekit
        .fail_method("StopEgress", true, StatusCode::SERVICE_UNAVAILABLE);
    let lost = t.toggle("recording", room, false, &t.key).await;
    assert_eq!(lost.status(), StatusCode::BAD_GATEWAY);
    let settled = t.toggle("recording", room, false, &t.key).await;
    assert_eq!(settled.status(), StatusCode::OK);
    t.assert_recording_agrees(room).await;

    // LiveKit's egress list failing changes nothing; the retry starts one.
    t.livekit
        .fail_method("ListEgress", false, StatusCode::SERVICE_UNAVAILABLE);
    let down = t.toggle("recording", room, true, &t.key).await;
    assert_eq!(down.status(), StatusCode::BAD_GATEWAY);
    t.assert_recording_agrees(room).await;
    assert_eq!(
        t.toggle("recording", room, true, &t.key).await.status(),
        StatusCode::OK
    );
    t.assert_recording_agrees(room).await;
    assert_eq!(t.running_egresses(room).len(), 1);
}

/// The agent switch after a failed dispatch removal, a dispatch whose
/// answer was lost, and "off" and "on" sent at once: the record always
/// ends agreeing with LiveKit's dispatches.
#[tokio::test]
async fn the_agent_switch_reaches_the_state_asked_for_after_any_single_failure() {
    let t = Arc::new(Rooms::start().await);
    let room = "agent-faults";
    assert_eq!(t.create_room(room).await.status(), StatusCode::CREATED);

    t.livekit
        .fail_method("DeleteDispatch", false, StatusCode::SERVICE_UNAVAILABLE);
    let failed = t.toggle("agent", room, false, &t.key).await;
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
    t.assert_agent_agrees(room).await;
    let off = t.toggle("agent", room, false, &t.key).await;
    assert_eq!(off.status(), StatusCode::OK);
    t.assert_agent_agrees(room).await;
    assert!(t.livekit.dispatches(room).is_empty());

    t.livekit
        .fail_method("CreateDispatch", true, StatusCode::SERVICE_UNAVAILABLE);
    let lost = t.toggle("agent", room, true, &t.key).await;
    assert_eq!(lost.status(), StatusCode::BAD_GATEWAY);
    let on = t.toggle("agent", room, true, &t.key).await;
    assert_eq!(on.status(), StatusCode::OK);
    t.assert_agent_agrees(room).await;
    assert_eq!(t.livekit.dispatches(room).len(), 1, "the retry found it");

    for _ in 0..5 {
        let (a, b) = tokio::join!(
            t.toggle("agent", room, false, &t.key),
            t.toggle("agent", room, true, &t.key)
        );
        for response in [a, b] {
            assert!(
                matches!(response.status(), StatusCode::OK | StatusCode::CONFLICT),
                "{}",
                response.status()
            );
        }
        t.assert_agent_agrees(room).await;
    }
}

/// A launcher room reopened after its conversation ended: the first
/// conversation's watch entry (now due) and a late `room_finished` of its
/// old LiveKit room leave the new conversation active, and the sweep
/// counts no stuck session.
#[tokio::test]
async fn a_reopened_launcher_room_survives_its_old_watch_entry_and_a_late_room_finished() {
    let t = Rooms::start().await;
    let opening = Opening {
        kind: SessionKind::Slack,
        key: "U0REOPEN".into(),
        org_id: ORG.into(),
        call_sid: None,
        direction: None,
        from_number: None,
        to_number: None,
        host_identity: Some("U0REOPEN".into()),
        caller: Some("Ada".into()),
        reopen: true,
    };
    let room = "slack-U0REOPEN";
    // The first conversation's watch entry is due at once.
    let due_now = DynamoSessionStore::new(
        t.stack.dynamo.clone(),
        t.stack.resources.table("CallsTable"),
    )
    .with_watch_after(Duration::ZERO);
    let mut first_lifecycle = t.lifecycle();
    first_lifecycle.sessions = Arc::new(due_now);
    first_lifecycle
        .open(&opening, Duration::from_secs(30))
        .await
        .unwrap();
    let first = t.record(room).await;
    let old_sid = t.livekit.room_sid(room).unwrap();
    assert_eq!(first.room_sid.as_deref(), Some(old_sid.as_str()));
    let ending = Ending {
        ended_at: shared::base::time::now_rfc3339(),
        reason: Some("room finished".into()),
        conversation: first.conversation.clone(),
        ..Ending::default()
    };
    assert!(t.lifecycle().end(room, &ending).await.unwrap());

    let lifecycle = t.lifecycle();
    lifecycle
        .open(&opening, Duration::from_secs(30))
        .await
        .unwrap();
    let second = t.record(room).await;
    assert_ne!(second.conversation, first.conversation);
    assert_ne!(second.room_sid.as_deref(), Some(old_sid.as_str()));

    // LiveKit's late room_finished of the old room.
    t.stack
        .sessions()
        .room_finished(
            room,
            &shared::base::time::now_rfc3339(),
            Some(60),
            Some(&old_sid),
        )
        .await
        .unwrap();
    // The old conversation's watch entry comes due.
    let sweep = StuckSessions {
        sessions: Arc::new(t.stack.sessions()),
        livekit: None,
    };
    let swept = sweep
        .sweep(shared::base::time::epoch_secs() + 1, 100)
        .await
        .unwrap();
    assert!(swept.ended.is_empty(), "{swept:?}");
    let now = t.record(room).await;
    assert!(!now.ended(), "{now:?}");
    assert_eq!(now.conversation, second.conversation);
    let session = json_body(&t.get_session("slack-U0REOPEN", &t.key).await);
    assert_eq!(session["status"], "active");

    // An ender for the conversation now open still ends it.
    let ending = Ending {
        ended_at: shared::base::time::now_rfc3339(),
        conversation: second.conversation.clone(),
        ..Ending::default()
    };
    assert!(t.lifecycle().end(room, &ending).await.unwrap());
}

/// A session's call status only moves forward: `ringing` delivered after
/// `in-progress` changes nothing.
#[tokio::test]
async fn a_session_call_status_never_moves_back() {
    let t = Rooms::start().await;
    let voice = t.voice();
    let answered = voice
        .handle(twilio_post("/twilio/voice", "", &inbound("CAorder1")))
        .await;
    assert_eq!(answered.status(), StatusCode::OK);
    let intake = twilio_status::TwilioStatus {
        twilio_auth: Rooms::twilio_auth(),
        intake: t.stack.provider_event_intake(),
        calls: Arc::new(t.stack.outbound_calls()),
    };
    for status in ["in-progress", "ringing"] {
        let callback = twilio_post(
            "/twilio/status",
            "",
            &[
                ("CallSid", "CAorder1"),
                ("CallStatus", status),
                ("AccountSid", ACCOUNT_SID),
            ],
        );
        assert_eq!(intake.handle(callback).await.status(), StatusCode::OK);
        t.run_provider_events().await;
    }
    let session = json_body(&t.get_session("phone-CAorder1", &t.key).await);
    assert_eq!(session["call_status"], "in-progress");
    assert_eq!(session["status"], "active");
}

/// The session store with one scripted failure: the write that records a
/// switch's result fails once, after LiveKit acted (a DynamoDB error).
struct RecordWriteFails {
    inner: DynamoSessionStore,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl SessionStore for RecordWriteFails {
    async fn room_started(
        &self,
        room: &str,
        sid: Option<&str>,
        at: &str,
    ) -> Result<(), StoreError> {
        self.inner.room_started(room, sid, at).await
    }
    async fn room_finished(
        &self,
        room: &str,
        at: &str,
        duration: Option<u64>,
        sid: Option<&str>,
    ) -> Result<(), StoreError> {
        self.inner.room_finished(room, at, duration, sid).await
    }
    async fn participant_joined(
        &self,
        room: &str,
        email: Option<&str>,
        identity: Option<&str>,
    ) -> Result<(), StoreError> {
        self.inner.participant_joined(room, email, identity).await
    }
    async fn set_thread(&self, room: &str, thread: &SlackThread) -> Result<(), StoreError> {
        self.inner.set_thread(room, thread).await
    }
    async fn get(&self, room: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.get(room).await
    }
    async fn due_watches(&self, now: i64, limit: i32) -> Result<Vec<SessionWatch>, StoreError> {
        self.inner.due_watches(now, limit).await
    }
    async fn drop_watch(&self, watch: &SessionWatch) -> Result<(), StoreError> {
        self.inner.drop_watch(watch).await
    }
    async fn ended_unannounced(&self, limit: i32) -> Result<Vec<SessionWatch>, StoreError> {
        self.inner.ended_unannounced(limit).await
    }
    async fn mark_announced(&self, ended: &SessionWatch) -> Result<(), StoreError> {
        self.inner.mark_announced(ended).await
    }
    async fn reschedule_watch(
        &self,
        watch: &SessionWatch,
        to: i64,
        attempts: u32,
    ) -> Result<(), StoreError> {
        self.inner.reschedule_watch(watch, to, attempts).await
    }
    async fn mark_reconciled(&self, room: &str) -> Result<(), StoreError> {
        self.inner.mark_reconciled(room).await
    }
    async fn end_stale(
        &self,
        room: &str,
        at: &str,
        reason: &str,
        conversation: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.inner.end_stale(room, at, reason, conversation).await
    }
    async fn claim_room(&self, room: &str, org_id: &str) -> Result<bool, StoreError> {
        self.inner.claim_room(room, org_id).await
    }
    async fn mark_reported(&self, room: &str, org_id: &str) -> Result<(), StoreError> {
        self.inner.mark_reported(room, org_id).await
    }
    async fn claim_switch(
        &self,
        room: &str,
        switch: Switch,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        self.inner
            .claim_switch(room, switch, owner, now, until)
            .await
    }
    async fn finish_switch(
        &self,
        room: &str,
        switch: Switch,
        owner: &str,
        result: Option<&SwitchResult>,
    ) -> Result<bool, StoreError> {
        if result.is_some() && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Dynamo(
                "scripted: the record write failed".into(),
            ));
        }
        self.inner.finish_switch(room, switch, owner, result).await
    }
    async fn open(&self, session: &NewSession) -> Result<Opened, StoreError> {
        self.inner.open(session).await
    }
    async fn end(&self, room: &str, ending: &Ending) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.end(room, ending).await
    }
    async fn update(&self, room: &str, change: &SessionChange) -> Result<bool, StoreError> {
        self.inner.update(room, change).await
    }
    async fn list_active(&self, org_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner.list_active(org_id).await
    }
    async fn list_ended(&self, org_id: &str, limit: i32) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner.list_ended(org_id, limit).await
    }
}

/// LiveKit started the egress (or dispatched the agent) but the record
/// write failed: the request answers 503, and its retry adopts what LiveKit
/// runs instead of orphaning it or starting a second one.
#[tokio::test]
async fn a_switch_whose_record_write_failed_is_completed_by_the_retry() {
    let t = Rooms::start().await;
    let room = "write-faults";
    assert_eq!(t.create_room(room).await.status(), StatusCode::CREATED);
    let store = Arc::new(RecordWriteFails {
        inner: t.stack.sessions(),
        armed: std::sync::atomic::AtomicBool::new(true),
    });
    let mut lifecycle = t.lifecycle();
    lifecycle.sessions = store.clone();
    let recording = room_recording::RoomRecording {
        lifecycle,
        ..t.room_recording()
    };
    let toggle = |enable: bool| {
        api(
            "POST",
            "/room/{roomName}/recording",
            &format!("/room/{room}/recording"),
            "",
            Some(&t.key),
            Some(json!({ "enable": enable })),
        )
    };
    let failed = recording.handle(toggle(true)).await;
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(t.running_egresses(room).len(), 1, "LiveKit did start it");
    let retried = recording.handle(toggle(true)).await;
    assert_eq!(retried.status(), StatusCode::OK, "{}", json_body(&retried));
    assert_eq!(t.livekit.egresses().len(), 1, "adopted, not started twice");
    t.assert_recording_agrees(room).await;

    store.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let failed = recording.handle(toggle(false)).await;
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(t.running_egresses(room).is_empty(), "LiveKit did stop it");
    let retried = recording.handle(toggle(false)).await;
    assert_eq!(retried.status(), StatusCode::OK, "{}", json_body(&retried));
    t.assert_recording_agrees(room).await;

    // The agent: removed at LiveKit, record write failed, retry settles it.
    let mut lifecycle = t.lifecycle();
    lifecycle.sessions = store.clone();
    let agent = room_agent::RoomAgent {
        lifecycle,
        ..t.room_agent()
    };
    store.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let off = || {
        api(
            "POST",
            "/room/{roomName}/agent",
            &format!("/room/{room}/agent"),
            "",
            Some(&t.key),
            Some(json!({ "enable": false })),
        )
    };
    assert_eq!(
        agent.handle(off()).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(t.livekit.dispatches(room).is_empty());
    assert_eq!(agent.handle(off()).await.status(), StatusCode::OK);
    t.assert_agent_agrees(room).await;
}
