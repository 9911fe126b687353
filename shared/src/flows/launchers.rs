//! Chat launchers (seed 002's "Custom Integrations"): a Slack slash command,
//! a Discord application command or a Teams outgoing-webhook message starts
//! a call with the agent. Each route verifies its platform's signature and
//! parses; this flow opens the session in the launcher's room and mints the
//! person's join link, within the platform's answer deadline.
//!
//! The platforms carry no API key of ours, so a session belongs to the
//! organisation its workspace (Slack `team_id`, Discord `guild_id`, Teams
//! tenant) is connected to in the tenancy store ([`workspaces`] keeps the
//! connections); a workspace nobody connected falls back to `INBOUND_ORG_ID`
//! when it is set, and otherwise opens nothing and is told how to connect.

// The admin routes share flows::admin's helpers (feature `phone`).
#[cfg(feature = "phone")]
pub mod workspaces;

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::api::ApiError;
use crate::base::metrics;
use crate::flows::sessions::{Opening, RoomAccess, RoomLinks, SessionKind, SessionLifecycle};
use crate::store::tenancy::{Kind, TenancyStore};

/// What a person sees when the call could not be started.
pub const TRY_AGAIN: &str = "Sorry, I could not start the call. Please try again in a moment.";

/// Longest identity or display name a LiveKit token carries here.
const MAX_IDENTITY_CHARS: usize = 128;

/// Opens launcher sessions and hands out their join links.
pub struct Launcher {
    pub lifecycle: SessionLifecycle,
    pub access: RoomAccess,
    /// Which organisation each connected workspace belongs to.
    pub tenancy: Arc<dyn TenancyStore>,
    /// `INBOUND_ORG_ID`: owner of sessions from workspaces nobody connected;
    /// `None` refuses them.
    pub fallback_org: Option<String>,
    /// Dedup lease of the call-start notification when the invocation's
    /// deadline is unknown.
    pub lease: Duration,
}

/// One request to start a call.
pub struct Launch<'a> {
    pub kind: SessionKind,
    /// The room's key: the Slack user, the Discord channel, the Teams
    /// conversation (already mapped with [`conversation_key`]).
    pub key: &'a str,
    /// The platform's user id: the participant identity in the room.
    pub user_id: &'a str,
    /// The person's display name (the user id when the platform gave none).
    pub user_name: Option<&'a str>,
    /// The workspace the request came from: Slack `team_id`, Discord
    /// `guild_id` (none in a direct message), Teams tenant id.
    pub workspace: Option<&'a str>,
}

/// Whose session a launch opens, and under which room key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    org_id: String,
    /// The room key: the platform's key for the fallback organisation (rooms
    /// of single-organisation deployments keep their names), the workspace
    /// and key together for a connected one (room names are claimed per
    /// organisation for good, so two workspaces must never share one).
    key: String,
}

/// A started call: its session and the person's links.
#[derive(Debug, Clone)]
pub struct Started {
    pub session_id: String,
    pub room: String,
    pub links: RoomLinks,
}

/// Why a call did not start; the cause is logged where it happened.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0}")]
    Failed(#[from] ApiError),
    #[error("the platform's deadline came first")]
    TimedOut,
    /// The workspace is connected to no organisation and there is no
    /// fallback: nothing was opened.
    #[error("workspace not connected to an organisation")]
    NotConnected,
}

/// Longest workspace id looked up (Slack, Discord and Teams ids are far
/// shorter); a longer one is treated as not connected.
const MAX_WORKSPACE_CHARS: usize = 64;

/// The tenancy kind of a launcher's workspaces.
pub fn workspace_kind(kind: SessionKind) -> Option<Kind> {
    match kind {
        SessionKind::Slack => Some(Kind::Slack),
        SessionKind::Discord => Some(Kind::Discord),
        SessionKind::Teams => Some(Kind::Teams),
        _ => None,
    }
}

/// What a person in a workspace nobody connected is told: which id to give
/// the callops administrator, and the route that connects it.
pub fn not_connected(platform: &str, workspace: Option<&str>) -> String {
    match workspace {
        Some(id) => format!(
            "This {platform} workspace is not connected to callops yet. Ask your callops \
             administrator to connect it: POST /organisations/{{org_id}}/chat-workspaces with \
             {{\"platform\": \"{}\", \"id\": \"{id}\"}}.",
            platform.to_ascii_lowercase()
        ),
        None => format!(
            "Calls can only be started from a {platform} workspace connected to callops; \
             this request came from none."
        ),
    }
}

impl Launcher {
    /// Opens (or reopens) the launcher's room and mints the person's links,
    /// giving up at `deadline` so the platform still gets an answer.
    pub async fn start(
        &self,
        launch: &Launch<'_>,
        lease: Option<Duration>,
        deadline: Instant,
    ) -> Result<Started, LaunchError> {
        let work = async {
            let owner = self.owner(launch).await?;
            self.open(launch, &owner, lease.unwrap_or(self.lease))
                .await
                .map_err(LaunchError::Failed)
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(Ok(started)) => Ok(started),
            Ok(Err(LaunchError::Failed(err))) => {
                warn!(kind = launch.kind.name(), error = %err, "launcher call not started");
                Err(LaunchError::Failed(err))
            }
            Ok(Err(other)) => Err(other),
            Err(_) => {
                warn!(
                    kind = launch.kind.name(),
                    "launcher call not started before the platform's deadline"
                );
                metrics::count(metrics::Metric::Failed);
                Err(LaunchError::TimedOut)
            }
        }
    }

    /// The organisation the launch's workspace is connected to, else the
    /// fallback; a store outage is a failure (try again), never a guess.
    async fn owner(&self, launch: &Launch<'_>) -> Result<Owner, LaunchError> {
        let workspace = launch
            .workspace
            .map(str::trim)
            .filter(|w| !w.is_empty() && w.chars().count() <= MAX_WORKSPACE_CHARS);
        if let (Some(kind), Some(workspace)) = (workspace_kind(launch.kind), workspace) {
            let connected = self
                .tenancy
                .owner(&kind.key(workspace))
                .await
                .map_err(|err| {
                    warn!(kind = launch.kind.name(), error = %err, "tenancy store unavailable");
                    LaunchError::Failed(ApiError::Unavailable)
                })?;
            if let Some(org_id) = connected {
                return Ok(Owner {
                    org_id,
                    key: conversation_key(&format!("{workspace}-{}", launch.key)),
                });
            }
        }
        match &self.fallback_org {
            Some(org_id) => Ok(Owner {
                org_id: org_id.clone(),
                key: launch.key.to_string(),
            }),
            None => {
                info!(
                    kind = launch.kind.name(),
                    "launch from a workspace no organisation connected"
                );
                Err(LaunchError::NotConnected)
            }
        }
    }

    async fn open(
        &self,
        launch: &Launch<'_>,
        owner: &Owner,
        lease: Duration,
    ) -> Result<Started, ApiError> {
        let identity = clean(launch.user_id);
        if identity.is_empty() {
            return Err(ApiError::unprocessable(
                "invalid_identity",
                "the platform sent no user id",
            ));
        }
        let name = launch
            .user_name
            .map(clean)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| identity.clone());
        let opening = Opening {
            kind: launch.kind,
            key: owner.key.clone(),
            org_id: owner.org_id.clone(),
            call_sid: None,
            direction: None,
            from_number: None,
            to_number: None,
            host_identity: Some(identity.clone()),
            caller: Some(name.clone()),
            reopen: true,
        };
        crate::flows::sessions::validate_room_name(&opening.kind.room(&opening.key))?;
        let opened = self.lifecycle.open(&opening, lease).await?;
        let conversation = self.lifecycle.invite_key(&opened.room).await?;
        let links =
            self.access
                .links(&opened.room, &owner.org_id, &conversation, &identity, &name)?;
        info!(session_id = %opened.session_id, kind = launch.kind.name(), "launcher call started");
        Ok(Started {
            session_id: opened.session_id,
            room: opened.room,
            links,
        })
    }
}

/// A platform's user id or name as a token carries it: no control
/// characters, at most 128 characters, trimmed.
fn clean(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_IDENTITY_CHARS)
        .collect::<String>()
        .trim()
        .to_string()
}

/// Characters of the readable part of a mapped conversation key.
const READABLE_KEY_CHARS: usize = 96;
/// Hex digits of the hash that keeps mapped keys apart.
const KEY_HASH_HEX: usize = 16;

/// A Teams conversation id (`19:abc@thread.tacv2;messageid=1`, `a:1Xy...`)
/// as a room key LiveKit accepts: the id's allowed characters (others become
/// `_`), cut to 96, then `-` and 16 hex digits of its SHA-256, so two ids
/// never share a room even when their readable parts agree. Deterministic:
/// the same conversation always maps to the same room.
pub fn conversation_key(conversation_id: &str) -> String {
    let readable: String = conversation_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(READABLE_KEY_CHARS)
        .collect();
    let digest = hex::encode(Sha256::digest(conversation_id.as_bytes()));
    format!("{readable}-{}", &digest[..KEY_HASH_HEX])
}

/// A Unix timestamp header within `tolerance` of `now` (either way), as the
/// platforms' replay protection asks.
pub fn fresh(timestamp: &str, now_secs: i64, tolerance: Duration) -> bool {
    let Ok(sent) = timestamp.trim().parse::<i64>() else {
        return false;
    };
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    now_secs.abs_diff(sent) <= tolerance.unsigned_abs()
}

/// Slack and Discord refuse a request older than this.
pub const TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(5 * 60);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::sessions::validate_room_name;

    #[test]
    fn conversation_ids_map_to_distinct_valid_rooms() {
        let ids = [
            "19:abc123@thread.tacv2;messageid=1700000000000",
            "19:abc123@thread.tacv2;messageid=1700000000001",
            "19:abc123@thread.tacv2",
            "19_abc123_thread.tacv2",
            "a:1Xy-Z_0",
            &format!("19:{}@thread.skype", "x".repeat(300)),
            &format!("19:{}@thread.skype;1", "x".repeat(300)),
        ];
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            let key = conversation_key(id);
            let room = SessionKind::Teams.room(&key);
            assert!(validate_room_name(&room).is_ok(), "{room}");
            assert!(room.len() <= 128);
            assert_eq!(conversation_key(id), key, "deterministic");
            assert!(seen.insert(room), "{id} collides");
        }
        assert!(conversation_key("19:abc@thread.tacv2").starts_with("19_abc_thread.tacv2-"));
    }

    #[test]
    fn timestamps_are_fresh_within_five_minutes_either_way() {
        let now = 1_700_000_000;
        assert!(fresh("1700000000", now, TIMESTAMP_TOLERANCE));
        assert!(fresh("1699999700", now, TIMESTAMP_TOLERANCE));
        assert!(fresh("1700000300", now, TIMESTAMP_TOLERANCE));
        assert!(!fresh("1699999699", now, TIMESTAMP_TOLERANCE));
        assert!(!fresh("1700000301", now, TIMESTAMP_TOLERANCE));
        assert!(!fresh("", now, TIMESTAMP_TOLERANCE));
        assert!(!fresh("soon", now, TIMESTAMP_TOLERANCE));
    }

    #[test]
    fn identities_are_cleaned() {
        assert_eq!(clean(" Ada\n"), "Ada");
        assert_eq!(clean(&"é".repeat(200)).chars().count(), 128);
    }
}
