//! Constructors for seed 002's sessions: everything that holds a LiveKit
//! client. Built with the `livekit` feature.

use std::sync::Arc;
use std::time::Duration;

use super::{dedup_lease, Wiring};
use crate::base::config::{self, ConfigError};
use crate::flows::launchers::Launcher;
use crate::flows::outbound::provider_http;
use crate::flows::phone::CallFlow;
use crate::flows::sessions::{
    JoinTokens, RecordingStorage, RoomAccess, SessionKind, SessionLifecycle,
    DEFAULT_ROOM_URL_TEMPLATE,
};
use crate::flows::stuck::{RoomProbe, RoomState};
#[cfg(feature = "phone")]
use crate::flows::voice::CallPlacer;
use crate::flows::voice::VoiceWebhook;
use crate::providers::livekit::{AccessTokens, LiveKitClient, LiveKitError, LiveKitRooms};

impl Wiring {
    /// Where room recordings go: `RECORDINGS_BUCKET` (required),
    /// `AWS_REGION` (default `us-east-1`), `RECORDINGS_ROLE_ARN`,
    /// `RECORDINGS_EXTERNAL_ID`.
    pub fn recording_storage(&self) -> Result<RecordingStorage, ConfigError> {
        Ok(RecordingStorage {
            bucket: config::required("RECORDINGS_BUCKET")?,
            region: config::optional("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
            role_arn: config::optional("RECORDINGS_ROLE_ARN"),
            external_id: config::optional("RECORDINGS_EXTERNAL_ID"),
        })
    }

    /// Seed 002's sessions and their LiveKit rooms (`CALLS_TABLE`,
    /// `LIVEKIT_*`, `LIVEKIT_AGENT_NAME`); with `announce`, opening one also
    /// stores its call-start announcement (the calls stream queues the
    /// notification).
    pub fn session_lifecycle(&self, announce: bool) -> Result<SessionLifecycle, ConfigError> {
        let agent_identity_prefix =
            config::optional("LIVEKIT_AGENT_IDENTITY_PREFIX").unwrap_or_else(|| "agent-".into());
        // A guest could otherwise join as (or be taken for) the agent.
        if crate::flows::sessions::guests_look_like_agents(&agent_identity_prefix) {
            return Err(ConfigError::Invalid {
                name: "LIVEKIT_AGENT_IDENTITY_PREFIX",
                reason: "overlaps the guests' `guest-` identities".into(),
            });
        }
        Ok(SessionLifecycle {
            sessions: self.sessions()?,
            livekit: livekit()?,
            agent_name: config::optional("LIVEKIT_AGENT_NAME")
                .unwrap_or_else(|| "callops-agent".into()),
            agent_identity_prefix,
            announcer: if announce {
                Some(Arc::new(self.call_start_intake()?))
            } else {
                None
            },
            dedup: self.dedup()?,
        })
    }

    /// The voice webhook of `kind`: `TWILIO_AUTH_TOKEN`, `PUBLIC_BASE_URL`,
    /// the call flow (`TWILIO_CONNECT_MODE`, ...), sessions with
    /// announcements, `TENANCY_TABLE` (who owns the number called) and
    /// `INBOUND_ORG_ID` (who owns a number nobody registered).
    pub fn voice_webhook(&self, kind: SessionKind) -> Result<VoiceWebhook, ConfigError> {
        Ok(VoiceWebhook {
            kind,
            twilio_auth: self.twilio_webhook_auth()?,
            flow: CallFlow::from_env()?,
            lifecycle: self.session_lifecycle(true)?,
            inbound_org: config::optional("INBOUND_ORG_ID"),
            tenancy: self.tenancy()?,
            lease: dedup_lease()?,
        })
    }

    /// A chat launcher's sessions and links: [`Wiring::session_lifecycle`]
    /// with announcements, [`room_access`], the tenancy store (which
    /// organisation each workspace is connected to) and `INBOUND_ORG_ID`
    /// (optional: the owner of sessions from workspaces nobody connected).
    pub fn launcher(&self) -> Result<Launcher, ConfigError> {
        Ok(Launcher {
            lifecycle: self.session_lifecycle(true)?,
            access: room_access()?,
            tenancy: self.tenancy()?,
            fallback_org: config::optional("INBOUND_ORG_ID"),
            lease: dedup_lease()?,
        })
    }

    #[cfg(feature = "phone")]
    /// Placing calls of `kind`: API keys, Twilio, sessions, `PUBLIC_BASE_URL`,
    /// the caller id (`TWILIO_PHONE_NUMBER`, or `TWILIO_WHATSAPP_NUMBER`),
    /// `PHONE_CALL_TIME_LIMIT_SECONDS` (default 600), `ORGANISATIONS_TABLE`
    /// (budgets), `TENANCY_TABLE` (caller ids), `INBOUND_ORG_ID` (owner of
    /// the default caller id).
    pub fn call_placer(&self, kind: SessionKind) -> Result<CallPlacer, ConfigError> {
        let caller_id = match kind {
            SessionKind::Whatsapp => "TWILIO_WHATSAPP_NUMBER",
            _ => "TWILIO_PHONE_NUMBER",
        };
        Ok(CallPlacer {
            kind,
            access: self.keyed_access()?,
            twilio: self.twilio_accounts()?,
            lifecycle: self.session_lifecycle(true)?,
            default_from: config::optional(caller_id),
            public_base_url: crate::api::public_url::PublicBaseUrl::from_env(),
            time_limit_secs: config::parsed_or(
                "PHONE_CALL_TIME_LIMIT_SECONDS",
                crate::flows::voice::DEFAULT_TIME_LIMIT_SECS,
            )?,
            lease: dedup_lease()?,
            // Only the organisations table: no assistants, no id sequence.
            directory: Arc::new(crate::store::directory::DynamoDirectoryStore {
                client: self.dynamo.clone(),
                assistants_table: String::new(),
                organisations_table: config::required("ORGANISATIONS_TABLE")?,
                stats_table: String::new(),
            }),
            calls: self.outbound_calls()?,
            inbound_org: config::optional("INBOUND_ORG_ID"),
            tenancy: self.tenancy()?,
        })
    }
}

/// The stuck sweep's question to LiveKit: does a session's room still exist?
pub struct LiveKitRoomProbe(pub Arc<dyn LiveKitRooms>);

#[async_trait::async_trait]
impl RoomProbe for LiveKitRoomProbe {
    async fn room(&self, room: &str) -> Result<RoomState, String> {
        match self.0.list_participants(room).await {
            Ok(participants) => Ok(RoomState::Live {
                participants: participants.len(),
            }),
            Err(LiveKitError::NotFound(_)) => Ok(RoomState::Gone),
            Err(err) => Err(err.to_string()),
        }
    }

    async fn egress_active(&self, room: &str, egress_id: &str) -> Result<bool, String> {
        match self.0.list_active_egress(room).await {
            Ok(active) => Ok(active.iter().any(|e| e.egress_id == egress_id)),
            // No such room: nothing of it records.
            Err(LiveKitError::NotFound(_)) => Ok(false),
            Err(err) => Err(err.to_string()),
        }
    }
}

/// `LIVEKIT_URL`, `LIVEKIT_API_KEY`, `LIVEKIT_API_SECRET`: LiveKit's server API.
pub fn livekit() -> Result<Arc<LiveKitClient>, ConfigError> {
    let http = provider_http().map_err(|err| ConfigError::Invalid {
        name: "LiveKit HTTP client",
        reason: err.to_string(),
    })?;
    Ok(Arc::new(LiveKitClient::from_env(http)?))
}

/// Participant tokens for one room, `ROOM_TOKEN_TTL_SECONDS` long (default 10 minutes).
pub fn join_tokens() -> Result<JoinTokens, ConfigError> {
    Ok(JoinTokens {
        tokens: AccessTokens::from_env()?,
        ttl: Duration::from_secs(config::parsed_or("ROOM_TOKEN_TTL_SECONDS", 600)?),
    })
}

/// Tokens, invites and join pages of web rooms: `LIVEKIT_*`,
/// `ROOM_TOKEN_TTL_SECONDS`, `ROOM_INVITE_SECRET`, `ROOM_INVITE_TTL_SECONDS`,
/// `ROOM_URL_TEMPLATE` (default LiveKit Meet's custom-server page).
pub fn room_access() -> Result<RoomAccess, ConfigError> {
    Ok(RoomAccess {
        tokens: join_tokens()?,
        invites: crate::api::invites::RoomInvites::from_env()?,
        client_url: livekit()?.client_url(),
        room_url_template: config::optional("ROOM_URL_TEMPLATE")
            .unwrap_or_else(|| DEFAULT_ROOM_URL_TEMPLATE.into()),
    })
}
