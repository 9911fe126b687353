//! Sessions whose `room_finished` never came are asked of LiveKit (issue
//! 20): 20 web rooms end at LiveKit with no webhook, the sweep runs on a
//! simulated clock, and each session ends through `room_finished`'s own
//! path, marked `reconciled`; a room still live is asked again later;
//! LiveKit down holds the session open and counts it as unreconciled.

use shared::flows::stuck::StuckSessions;
use shared::store::sessions::{SessionStore, SESSION_FIRST_CHECK};
use shared::wiring::LiveKitRoomProbe;

use super::*;

impl Rooms {
    fn session_sweep(&self) -> StuckSessions {
        StuckSessions {
            sessions: Arc::new(self.stack.sessions()),
            livekit: Some(Arc::new(LiveKitRoomProbe(self.livekit_client()))),
        }
    }

    async fn session_of(&self, room: &str) -> shared::store::sessions::SessionRecord {
        self.stack.sessions().get(room).await.unwrap().unwrap()
    }
}

#[tokio::test]
async fn twenty_rooms_whose_room_finished_was_lost_end_as_livekit_says() {
    let t = Rooms::start().await;
    let rooms: Vec<String> = (0..21).map(|i| format!("lost-finish-{i:02}")).collect();
    for room in &rooms {
        let response = t.create_room(room).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{room}");
    }
    // 20 rooms end at LiveKit, their webhooks lost; the last one is live.
    for room in &rooms[..20] {
        t.livekit.finish_room(room);
    }
    let live = &rooms[20];
    let sweep = t.session_sweep();
    let due = shared::base::time::epoch_secs() + SESSION_FIRST_CHECK.as_secs() as i64 + 1;
    let report = sweep.sweep(due, 100).await.unwrap();
    let mut reconciled = report.reconciled.clone();
    reconciled.sort();
    assert_eq!(reconciled, rooms[..20].to_vec(), "{report:?}");
    assert_eq!(report.still_open, vec![live.clone()]);
    assert!(report.ended.is_empty(), "nothing ended unasked");
    for room in &rooms[..20] {
        let session = t.session_of(room).await;
        assert!(session.ended(), "{room}");
        assert!(session.reconciled, "{room}");
        assert_eq!(session.end_reason, None, "ended as room_finished ends it");
        assert_eq!(
            session.end_code,
            Some(shared::base::end_reason::EndReason::Completed)
        );
        assert!(session.duration_secs.is_some());
    }
    let still = t.session_of(live).await;
    assert!(!still.ended() && !still.reconciled);

    // A late room_finished of an ended room changes nothing.
    let first = t.session_of(&rooms[0]).await;
    t.stack
        .sessions()
        .room_finished(&rooms[0], "2030-01-01T00:00:00Z", Some(9_999), None)
        .await
        .unwrap();
    let after = t.session_of(&rooms[0]).await;
    assert_eq!(after.ended_at, first.ended_at);
    assert_eq!(after.duration_secs, first.duration_secs);

    // The live room is asked again 15 minutes later, not before; by then
    // it has ended too.
    assert_eq!(
        sweep.sweep(due + 15 * 60 - 1, 100).await.unwrap(),
        Default::default()
    );
    t.livekit.finish_room(live);
    let later = sweep.sweep(due + 15 * 60, 100).await.unwrap();
    assert_eq!(later.reconciled, vec![live.clone()]);
    assert!(t.session_of(live).await.reconciled);
    // Nothing is left to ask.
    assert_eq!(
        sweep.sweep(due + 86_400, 100).await.unwrap(),
        Default::default()
    );
}

#[tokio::test]
async fn with_livekit_down_a_session_stays_open_and_counts_as_unreconciled() {
    let t = Rooms::start().await;
    let response = t.create_room("livekit-down").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    t.livekit.finish_room("livekit-down");
    let sweep = t.session_sweep();
    let mut now = shared::base::time::epoch_secs() + SESSION_FIRST_CHECK.as_secs() as i64 + 1;
    t.livekit.fail_next(100, StatusCode::SERVICE_UNAVAILABLE);
    for (attempt, wait) in [(1, 300), (2, 600), (3, 1200)] {
        let report = sweep.sweep(now, 100).await.unwrap();
        assert_eq!(
            report.unanswered,
            vec!["livekit-down".to_string()],
            "ask {attempt}"
        );
        let counted = if attempt >= 3 {
            vec!["livekit-down".to_string()]
        } else {
            Vec::new()
        };
        assert_eq!(report.unreconciled, counted);
        let session = t.session_of("livekit-down").await;
        assert!(!session.ended(), "never ended on a guess");
        assert_eq!(session.reconcile_attempts, attempt);
        now += wait;
    }
    t.livekit.fail_next(0, StatusCode::SERVICE_UNAVAILABLE);
    let back = sweep.sweep(now, 100).await.unwrap();
    assert_eq!(back.reconciled, vec!["livekit-down".to_string()]);
    assert!(t.session_of("livekit-down").await.reconciled);
}

/// A recording whose `egress_ended` was lost: the sweep finds the egress no
/// longer active at LiveKit and switches the session's recording off, while
/// the room itself is live and stays open.
#[tokio::test]
async fn a_recording_whose_egress_ended_was_lost_is_switched_off() {
    let t = Rooms::start().await;
    let room = "lost-egress-end";
    assert_eq!(t.create_room(room).await.status(), StatusCode::CREATED);
    let started = t.toggle("recording", room, true, &t.key).await;
    assert_eq!(started.status(), StatusCode::OK, "{}", text(&started));
    let session = t.session_of(room).await;
    assert_eq!(session.recording, Some(true));
    let egress = session.egress_id.clone().unwrap();
    t.livekit.end_egress(&egress);
    let sweep = t.session_sweep();
    let due = shared::base::time::epoch_secs() + SESSION_FIRST_CHECK.as_secs() as i64 + 1;
    let report = sweep.sweep(due, 100).await.unwrap();
    assert_eq!(report.recordings_ended, vec![room.to_string()]);
    assert_eq!(report.still_open, vec![room.to_string()]);
    let session = t.session_of(room).await;
    assert_eq!(session.recording, Some(false));
    assert_eq!(session.egress_id.as_deref(), Some(egress.as_str()));
    assert!(!session.ended());
}

/// Without LiveKit to ask, a session is not ended at its first check: its
/// entry waits for its whole allowance (`DEFAULT_SESSION_MAX` from its
/// start), then it is ended with a reason, as before.
#[tokio::test]
async fn without_livekit_a_session_is_ended_only_after_its_whole_allowance() {
    use shared::store::sessions::DEFAULT_SESSION_MAX;
    let t = Rooms::start().await;
    let room = "unasked-room";
    assert_eq!(t.create_room(room).await.status(), StatusCode::CREATED);
    let sweep = StuckSessions {
        sessions: Arc::new(t.stack.sessions()),
        livekit: None,
    };
    let start = shared::base::time::epoch_secs();
    let first = sweep
        .sweep(start + SESSION_FIRST_CHECK.as_secs() as i64 + 1, 100)
        .await
        .unwrap();
    assert_eq!(first.waiting, 1, "{first:?}");
    assert!(first.ended.is_empty());
    assert!(!t.session_of(room).await.ended());
    let max = DEFAULT_SESSION_MAX.as_secs() as i64;
    assert_eq!(
        sweep.sweep(start + max - 60, 100).await.unwrap(),
        Default::default()
    );
    let late = sweep.sweep(start + max + 60, 100).await.unwrap();
    assert_eq!(late.ended, vec![room.to_string()]);
    assert!(t.session_of(room).await.ended());
}
