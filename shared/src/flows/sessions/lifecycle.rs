//! The LiveKit half of sessions: opening, changing and ending them with
//! their rooms, and the links people join with. Built with the `livekit`
//! feature only; the naming and views above need no LiveKit client.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::*;
use crate::api::ApiError;
use crate::base::metrics;
use crate::flows::call_start::CallStartIntake;
use crate::providers::livekit::{
    AccessTokens, JoinGrant, LiveKitError, LiveKitRooms, RecordingTarget,
};
use crate::queue::jobs::CallStart;
use crate::store::dedup::{run_once, DedupStore, Once, OnceError};
use crate::store::sessions::{
    Ending, NewSession, Opened, SessionChange, SessionRecord, SessionStore, Switch, SwitchResult,
};

/// How long a request holds a room's agent or recording switch: longer
/// than the LiveKit calls it makes, short enough that a crashed holder's
/// lease lapses before a person gives up retrying.
pub const SWITCH_LEASE: Duration = Duration::from_secs(30);

/// How long a request waits for another to let a switch go before 409.
const SWITCH_WAIT: Duration = Duration::from_secs(5);

/// LiveKit failing: `detail` for the caller, the cause in the log.
pub fn livekit_failed(action: &str, err: &LiveKitError) -> ApiError {
    warn!(action, error = %err, "LiveKit call failed");
    metrics::count(metrics::Metric::LiveKitFailed);
    match err {
        LiveKitError::NotFound(_) => ApiError::NotFound("Room not found".into()),
        _ => ApiError::BadGateway {
            code: "livekit_unavailable",
            detail: format!("LiveKit could not {action}; try again"),
        },
    }
}

fn session_ended(session_id: &str) -> ApiError {
    ApiError::Conflict {
        code: "session_ended",
        detail: format!("session {session_id} has ended; use a new room name"),
    }
}

/// Another organisation's room: say nothing more about it.
fn room_taken() -> ApiError {
    ApiError::Conflict {
        code: "room_taken",
        detail: "this room name is taken; choose another".into(),
    }
}

/// A conversation to open: its kind, its key and what is known about it.
pub struct Opening {
    pub kind: SessionKind,
    /// Call sid for phone and WhatsApp, room name for web.
    pub key: String,
    pub org_id: String,
    pub call_sid: Option<String>,
    pub direction: Option<String>,
    pub from_number: Option<String>,
    pub to_number: Option<String>,
    pub host_identity: Option<String>,
    /// Who the call-start notification names (masked in logs).
    pub caller: Option<String>,
    /// Start a new conversation in the room if its last one ended (chat
    /// launchers: one room per user or channel); otherwise 409.
    pub reopen: bool,
}

/// What opening did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedSession {
    pub session_id: String,
    pub room: String,
    pub agent_active: bool,
}

/// Opens, changes and ends sessions: the LiveKit side and the record.
pub struct SessionLifecycle {
    pub sessions: Arc<dyn SessionStore>,
    pub livekit: Arc<dyn LiveKitRooms>,
    /// Explicit dispatch target (`LIVEKIT_AGENT_NAME`).
    pub agent_name: String,
    /// Identities of the agent's participants start with this.
    pub agent_identity_prefix: String,
    /// Stores the one call-start announcement per session (the stream queues its notification).
    pub announcer: Option<Arc<CallStartIntake>>,
    /// Runs each conversation's opening once.
    pub dedup: Arc<dyn DedupStore>,
}

impl SessionLifecycle {
    /// Creates the room, dispatches the agent (once), records the session and
    /// announces it once. Safe to repeat: a retry finds the room and the
    /// dispatch in place and the session already open.
    pub async fn open(
        &self,
        opening: &Opening,
        lease: Duration,
    ) -> Result<OpenedSession, ApiError> {
        let session_id = opening.kind.session_id(&opening.key);
        let room = opening.kind.room(&opening.key);
        let metadata = serde_json::json!({
            "session_id": session_id,
            "type": opening.kind.name(),
            "org_id": opening.org_id,
        })
        .to_string();
        // The name becomes the organisation's before anything is created for
        // it: two organisations opening one name at once get one owner, and
        // the other a 409, never a token for a room it does not hold.
        if !self
            .sessions
            .claim_room(&room, &opening.org_id)
            .await
            .map_err(crate::api::unavailable)?
        {
            return Err(room_taken());
        }
        // Refuse early what the store would refuse, so an ended room is not
        // recreated in LiveKit first (the store still decides).
        let existing = self
            .sessions
            .get(&room)
            .await
            .map_err(crate::api::unavailable)?;
        if let Some(existing) = &existing {
            if existing.ended() && !opening.reopen {
                return Err(session_ended(&session_id));
            }
            if existing
                .org_id
                .as_deref()
                .is_some_and(|org| org != opening.org_id)
            {
                return Err(room_taken());
            }
        }
        // Opens of one conversation run once: without this, two at once
        // (a double-clicked /room/create, /phone/call meeting its own
        // /twilio/voice) would each find no dispatch and each send an agent.
        // A conversation is named by when its room's last one ended.
        let generation = existing
            .as_ref()
            .and_then(|r| r.ended_at.clone())
            .unwrap_or_else(|| "first".into());
        let key = format!("session-open#{room}#{generation}");
        let opened = OpenedSession {
            session_id: session_id.clone(),
            room: room.clone(),
            agent_active: true,
        };
        let work = || async {
            self.open_once(opening, &metadata).await?;
            Ok::<_, ApiError>(serde_json::json!({"session_id": session_id}))
        };
        match run_once(self.dedup.as_ref(), &key, lease, work).await {
            Ok(Once::Done(_)) => return Ok(opened),
            Ok(Once::Duplicate(_)) => info!(%session_id, "session already opened"),
            // The other open finishes the same work; its caller hears if it fails.
            Ok(Once::InProgress) => info!(%session_id, "session being opened by another request"),
            Err(OnceError::Store(err)) => return Err(crate::api::unavailable(err)),
            Err(OnceError::Work(err)) => return Err(err),
        }
        // Another request did (or is doing) the work: after that wait, the
        // room must still be this organisation's.
        let now = self
            .sessions
            .get(&room)
            .await
            .map_err(crate::api::unavailable)?;
        if now
            .as_ref()
            .and_then(|r| r.org_id.as_deref())
            .is_some_and(|org| org != opening.org_id)
        {
            return Err(room_taken());
        }
        Ok(opened)
    }

    /// The work of [`open`](Self::open), run once per conversation.
    async fn open_once(&self, opening: &Opening, metadata: &str) -> Result<(), ApiError> {
        let session_id = opening.kind.session_id(&opening.key);
        let room = opening.kind.room(&opening.key);
        let metadata = metadata.to_string();
        let created = self
            .livekit
            .create_room(&room, &metadata)
            .await
            .map_err(|e| livekit_failed("create the room", &e))?;
        let dispatch_id = self.ensure_dispatch(&room, &metadata).await?;
        let opened = self
            .sessions
            .open(&NewSession {
                session_id: session_id.clone(),
                session_type: opening.kind.name().into(),
                room: room.clone(),
                org_id: opening.org_id.clone(),
                started_at: crate::base::time::now_rfc3339(),
                agent_active: true,
                dispatch_id: Some(dispatch_id),
                call_sid: opening.call_sid.clone(),
                direction: opening.direction.clone(),
                from_number: opening.from_number.clone(),
                to_number: opening.to_number.clone(),
                host_identity: opening.host_identity.clone(),
                reopen: opening.reopen,
                conversation: uuid::Uuid::new_v4().simple().to_string(),
                room_sid: Some(created.sid).filter(|sid| !sid.is_empty()),
            })
            .await
            .map_err(crate::api::unavailable)?;
        // A reopened room's last conversation used the room's key: this one
        // is announced under its own.
        let announce_key = match opened {
            Opened::Active => crate::flows::call_start::dedup_key(&room),
            Opened::Reopened => format!(
                "{}@{}",
                crate::flows::call_start::dedup_key(&room),
                crate::base::time::epoch_secs()
            ),
            Opened::AlreadyEnded => return Err(session_ended(&session_id)),
            Opened::OwnedElsewhere => return Err(room_taken()),
        };
        if let Some(announcer) = &self.announcer {
            let start = CallStart {
                room_name: room.clone(),
                user_email: None,
                started_at: crate::base::time::now_rfc3339(),
                metadata: serde_json::Map::from_iter([
                    ("session_id".to_string(), session_id.clone().into()),
                    ("type".to_string(), opening.kind.name().into()),
                    (
                        "caller".to_string(),
                        opening.caller.clone().unwrap_or_default().into(),
                    ),
                ]),
            };
            announcer
                .announce(&announce_key, start, &opening.org_id)
                .await?;
        }
        metrics::count(metrics::Metric::SessionsOpened);
        info!(%session_id, %room, "session open");
        Ok(())
    }

    /// The agent's dispatch in `room`: the existing one, or a new one.
    async fn ensure_dispatch(&self, room: &str, metadata: &str) -> Result<String, ApiError> {
        let existing = self
            .livekit
            .list_dispatches(room)
            .await
            .map_err(|e| livekit_failed("list the room's agents", &e))?;
        if let Some(dispatch) = existing
            .into_iter()
            .find(|d| d.agent_name == self.agent_name)
        {
            return Ok(dispatch.id);
        }
        let dispatch = self
            .livekit
            .create_dispatch(room, &self.agent_name, metadata)
            .await
            .map_err(|e| livekit_failed("dispatch the agent", &e))?;
        Ok(dispatch.id)
    }

    /// The tenant's open session in `room`, or 404 (also for another
    /// tenant's room, which is not theirs to learn about).
    pub async fn owned(&self, room: &str, org_id: &str) -> Result<SessionRecord, ApiError> {
        let record = self
            .sessions
            .get(room)
            .await
            .map_err(crate::api::unavailable)?
            .filter(|r| r.org_id.as_deref() == Some(org_id))
            .ok_or_else(|| ApiError::NotFound("Room not found".into()))?;
        if record.ended() {
            return Err(ApiError::NotFound("Room not found".into()));
        }
        Ok(record)
    }

    /// The open session `invite` lets its holder into: a valid invite to
    /// `room`, of the organisation that owns it (404 otherwise), for the
    /// conversation now in it and not revoked (401 otherwise).
    pub async fn invited(
        &self,
        invites: &crate::api::invites::RoomInvites,
        invite: &str,
        room: &str,
    ) -> Result<SessionRecord, ApiError> {
        let invited = invites.verify(invite, room)?;
        let session = self.owned(room, &invited.org_id).await?;
        // Another conversation in the room, or revoked: the same 401.
        if !invited.admits(session.invite_key.as_deref()) {
            return Err(ApiError::Unauthorized);
        }
        Ok(session)
    }

    /// Ends the session in `room` once and deletes its LiveKit room; true if
    /// this call ended it. Deleting the room is best effort: LiveKit closes
    /// an empty room on its own after its empty timeout.
    pub async fn end(&self, room: &str, ending: &Ending) -> Result<bool, crate::store::StoreError> {
        let Some(record) = self.sessions.end(room, ending).await? else {
            return Ok(false);
        };
        info!(
            session_id = record.session_id.as_deref().unwrap_or(room),
            reason = ending.reason.as_deref().unwrap_or("room finished"),
            "session ended"
        );
        if let Err(err) = self.livekit.delete_room(room).await {
            warn!(%room, error = %err, "room not deleted; LiveKit's empty timeout will close it");
            metrics::count(metrics::Metric::LiveKitFailed);
        }
        Ok(true)
    }

    /// Takes the room's `switch` for this request (see [`SWITCH_LEASE`]),
    /// waiting a little for another holder; 409 if it keeps it, 404 once
    /// the session has ended. Returns the lease's owner token.
    async fn take_switch(&self, room: &str, switch: Switch) -> Result<String, ApiError> {
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let lease = i64::try_from(SWITCH_LEASE.as_secs()).unwrap_or(30);
        let give_up = tokio::time::Instant::now() + SWITCH_WAIT;
        let mut pause = Duration::from_millis(50);
        loop {
            let now = crate::base::time::epoch_secs();
            if self
                .sessions
                .claim_switch(room, switch, &owner, now, now + lease)
                .await
                .map_err(crate::api::unavailable)?
            {
                return Ok(owner);
            }
            // Refused: held by another, or the session is gone.
            let open = self
                .sessions
                .get(room)
                .await
                .map_err(crate::api::unavailable)?
                .is_some_and(|r| !r.ended());
            if !open {
                return Err(ApiError::NotFound("Room not found".into()));
            }
            if tokio::time::Instant::now() + pause > give_up {
                return Err(ApiError::InProgress);
            }
            tokio::time::sleep(crate::base::time::jitter(pause)).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Lets the switch go, writing what the holder found at LiveKit (on
    /// success) in the same conditional write; on failure nothing but the
    /// lease changes, so the record keeps every id a retry needs.
    async fn finish_switch<T>(
        &self,
        room: &str,
        switch: Switch,
        owner: &str,
        outcome: Result<(T, SwitchResult), ApiError>,
    ) -> Result<T, ApiError> {
        let (value, found) = match outcome {
            Ok((value, found)) => (value, found),
            Err(err) => {
                if let Err(release) = self.sessions.finish_switch(room, switch, owner, None).await {
                    warn!(%room, error = %release, "switch not released; its lease will lapse");
                }
                return Err(err);
            }
        };
        let written = match self
            .sessions
            .finish_switch(room, switch, owner, Some(&found))
            .await
        {
            Ok(written) => written,
            Err(err) => {
                // LiveKit acted but the record did not follow: let the lease
                // go so the retry reads LiveKit again and writes it then.
                if let Err(release) = self.sessions.finish_switch(room, switch, owner, None).await {
                    warn!(%room, error = %release, "switch not released; its lease will lapse");
                }
                return Err(crate::api::unavailable(err));
            }
        };
        if !written {
            // The lease lapsed and another request took the switch: its
            // result stands, and this caller should ask again.
            return Err(ApiError::InProgress);
        }
        Ok(value)
    }

    /// Dispatches the agent to, or removes it from, the tenant's room.
    /// LiveKit is read before acting, so a retry after any failure (ours,
    /// LiveKit's or the store's) reaches the state asked for.
    pub async fn set_agent(&self, record: &SessionRecord, enable: bool) -> Result<bool, ApiError> {
        let room = &record.room_name;
        let owner = self.take_switch(room, Switch::Agent).await?;
        let outcome = self.switch_agent(record, enable).await.map(|dispatch_id| {
            (
                enable,
                SwitchResult::Agent {
                    active: enable,
                    dispatch_id,
                },
            )
        });
        self.finish_switch(room, Switch::Agent, &owner, outcome)
            .await
    }

    /// The LiveKit side of [`set_agent`](Self::set_agent), under the lease:
    /// the dispatch id when on.
    async fn switch_agent(
        &self,
        record: &SessionRecord,
        enable: bool,
    ) -> Result<Option<String>, ApiError> {
        let room = &record.room_name;
        if enable {
            let metadata = serde_json::json!({
                "session_id": record.session_id,
                "type": record.session_type,
                "org_id": record.org_id,
            })
            .to_string();
            return Ok(Some(self.ensure_dispatch(room, &metadata).await?));
        }
        let dispatches = self
            .livekit
            .list_dispatches(room)
            .await
            .map_err(|e| livekit_failed("list the room's agents", &e))?;
        for dispatch in dispatches
            .iter()
            .filter(|d| d.agent_name == self.agent_name)
        {
            self.livekit
                .delete_dispatch(room, &dispatch.id)
                .await
                .map_err(|e| livekit_failed("remove the agent", &e))?;
        }
        // A dispatched job may already have joined: remove its participant too.
        let participants = match self.livekit.list_participants(room).await {
            Ok(participants) => participants,
            Err(LiveKitError::NotFound(_)) => Vec::new(),
            Err(err) => return Err(livekit_failed("list the room's participants", &err)),
        };
        for agent in participants
            .iter()
            .filter(|p| p.is_agent(&self.agent_identity_prefix))
        {
            self.livekit
                .remove_participant(room, &agent.identity)
                .await
                .map_err(|e| livekit_failed("remove the agent", &e))?;
        }
        Ok(None)
    }

    /// Whether an agent participant is in the room now.
    pub async fn agent_present(&self, room: &str) -> Result<bool, ApiError> {
        match self.livekit.list_participants(room).await {
            Ok(participants) => Ok(participants
                .iter()
                .any(|p| p.is_agent(&self.agent_identity_prefix))),
            Err(LiveKitError::NotFound(_)) => Ok(false),
            Err(err) => Err(livekit_failed("list the room's participants", &err)),
        }
    }
}

/// Where recordings go and how LiveKit may write there.
#[derive(Debug, Clone)]
pub struct RecordingStorage {
    pub bucket: String,
    pub region: String,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
}

impl RecordingStorage {
    /// The object a recording of `session_id` started now goes to.
    pub fn target(&self, session_id: &str) -> RecordingTarget {
        let stamp = chrono::Utc::now().format("%Y-%m-%dT%H-%M-%SZ");
        RecordingTarget {
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            key: format!("recordings/{session_id}/{stamp}.mp4"),
            assume_role_arn: self.role_arn.clone(),
            assume_role_external_id: self.external_id.clone(),
        }
    }
}

impl SessionLifecycle {
    /// Starts or stops the room's composite recording; the egress id and
    /// `s3://` location are kept on the session. LiveKit's list of the
    /// room's running egresses decides what to do, so a retry after any
    /// failure reaches the state asked for and the record agrees with it.
    pub async fn set_recording(
        &self,
        record: &SessionRecord,
        enable: bool,
        storage: &RecordingStorage,
    ) -> Result<(bool, String), ApiError> {
        let room = &record.room_name;
        let owner = self.take_switch(room, Switch::Recording).await?;
        let outcome = if enable {
            self.start_recording(record, storage).await
        } else {
            self.stop_recording(record).await
        };
        let egress_id = self
            .finish_switch(room, Switch::Recording, &owner, outcome)
            .await?;
        Ok((enable, egress_id))
    }

    /// Adopts the room's running egress, or starts one.
    async fn start_recording(
        &self,
        record: &SessionRecord,
        storage: &RecordingStorage,
    ) -> Result<(String, SwitchResult), ApiError> {
        let room = &record.room_name;
        let running = self
            .livekit
            .list_active_egress(room)
            .await
            .map_err(|e| livekit_failed("list the room's recordings", &e))?;
        if let Some(egress) = running.first() {
            // Started by an earlier attempt whose answer or record was lost.
            info!(%room, egress_id = %egress.egress_id, "recording already running; adopted");
            return Ok((
                egress.egress_id.clone(),
                SwitchResult::Recording {
                    active: true,
                    egress_id: Some(egress.egress_id.clone()),
                    location: None,
                },
            ));
        }
        let session_id = record.session_id.clone().unwrap_or_else(|| room.clone());
        let target = storage.target(&session_id);
        let egress = self
            .livekit
            .start_recording(room, &target)
            .await
            .map_err(|e| livekit_failed("start recording", &e))?;
        Ok((
            egress.egress_id.clone(),
            SwitchResult::Recording {
                active: true,
                egress_id: Some(egress.egress_id),
                location: Some(format!("s3://{}/{}", target.bucket, target.key)),
            },
        ))
    }

    /// Stops every egress LiveKit runs for the room (an already ended one
    /// counts as stopped); 409 when nothing records and nothing did.
    async fn stop_recording(
        &self,
        record: &SessionRecord,
    ) -> Result<(String, SwitchResult), ApiError> {
        let room = &record.room_name;
        let running = self
            .livekit
            .list_active_egress(room)
            .await
            .map_err(|e| livekit_failed("list the room's recordings", &e))?;
        // The record as it is now, not as the caller read it before the lease.
        let now = self
            .sessions
            .get(room)
            .await
            .map_err(crate::api::unavailable)?
            .unwrap_or_default();
        let recorded = now.recording.unwrap_or(false);
        if running.is_empty() && !recorded {
            return Err(ApiError::Conflict {
                code: "not_recording",
                detail: "this room is not being recorded".into(),
            });
        }
        for egress in &running {
            self.livekit
                .stop_recording(&egress.egress_id)
                .await
                .map_err(|e| livekit_failed("stop recording", &e))?;
        }
        let last = running
            .first()
            .map(|e| e.egress_id.clone())
            .or(now.egress_id)
            .unwrap_or_default();
        Ok((
            last.clone(),
            SwitchResult::Recording {
                active: false,
                egress_id: Some(last).filter(|id| !id.is_empty()),
                location: None,
            },
        ))
    }
}

/// How a person gets into a room they opened (`/room/create`, a chat
/// launcher): their token, the server URL, an invite for guests and a page.
pub struct RoomAccess {
    pub tokens: JoinTokens,
    pub invites: crate::api::invites::RoomInvites,
    /// Browsers connect here (`LIVEKIT_URL` as ws(s)).
    pub client_url: String,
    /// `ROOM_URL_TEMPLATE`: `{url}`, `{token}`, `{room}`, `{invite}` are
    /// replaced, URL-encoded.
    pub room_url_template: String,
}

/// What [`RoomAccess::links`] hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomLinks {
    pub token: String,
    pub url: String,
    pub invite: String,
    pub room_url: String,
}

impl RoomAccess {
    /// The host's token and the room's invite and join page; `conversation`
    /// is the conversation's invite key ([`SessionLifecycle::invite_key`]).
    pub fn links(
        &self,
        room: &str,
        org_id: &str,
        conversation: &str,
        identity: &str,
        name: &str,
    ) -> Result<RoomLinks, ApiError> {
        let token = self.tokens.issue(room, identity, name)?;
        let invite = self.invites.issue(room, org_id, conversation);
        Ok(RoomLinks {
            room_url: room_url(
                &self.room_url_template,
                &self.client_url,
                &token,
                room,
                &invite,
            ),
            url: self.client_url.clone(),
            token,
            invite,
        })
    }
}

/// Short-lived participant tokens for one room.
pub struct JoinTokens {
    pub tokens: AccessTokens,
    pub ttl: Duration,
}

impl JoinTokens {
    pub fn issue(&self, room: &str, identity: &str, name: &str) -> Result<String, ApiError> {
        self.tokens
            .join_token(&JoinGrant {
                room,
                identity,
                name,
                ttl: self.ttl,
            })
            .map_err(|e| {
                warn!(error = %e, "join token not minted");
                ApiError::Unavailable
            })
    }
}

impl RoomAccess {
    /// The join page for anyone holding `invite`, with no token in it: the
    /// page mints each visitor's own through `/room/join`. `None` when
    /// `ROOM_URL_TEMPLATE` needs a token (LiveKit Meet, the default) or
    /// names no invite: such a page cannot be shared, and the caller links
    /// `/room/{roomName}/join` ([`super::join_link`]) instead.
    pub fn invite_page(&self, room: &str, invite: &str) -> Option<String> {
        let template = &self.room_url_template;
        if !template.contains("{invite}") || template.contains("{token}") {
            return None;
        }
        Some(room_url(template, &self.client_url, "", room, invite))
    }
}

/// A fresh, unguessable invite key.
fn new_invite_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl SessionLifecycle {
    /// The invite key of the open conversation in `room`, given one on first
    /// use (a reopen removes it, so each conversation gets its own); 404 if
    /// the session is missing or ended.
    pub async fn invite_key(&self, room: &str) -> Result<String, ApiError> {
        let fresh = new_invite_key();
        let claimed = self
            .sessions
            .update(room, &SessionChange::InviteKey(fresh.clone()))
            .await
            .map_err(crate::api::unavailable)?;
        if claimed {
            return Ok(fresh);
        }
        self.sessions
            .get(room)
            .await
            .map_err(crate::api::unavailable)?
            .filter(|r| !r.ended())
            .and_then(|r| r.invite_key)
            .ok_or_else(|| ApiError::NotFound("Room not found".into()))
    }

    /// Replaces the room's invite key, so every invite issued so far is
    /// refused; the new key, for invites issued from now on.
    pub async fn revoke_invites(&self, room: &str) -> Result<String, ApiError> {
        let fresh = new_invite_key();
        let changed = self
            .sessions
            .update(room, &SessionChange::RevokeInvites(fresh.clone()))
            .await
            .map_err(crate::api::unavailable)?;
        if !changed {
            return Err(ApiError::NotFound("Room not found".into()));
        }
        info!(%room, "room invites revoked");
        Ok(fresh)
    }
}
