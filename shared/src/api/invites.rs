//! Room invites: what `/room/create` hands out so a browser holding only the
//! invite link can call `/room/join` for that one room, without an API key.
//!
//! An invite is `v2.<room>.<org>.<conversation>.<expiry>.<mac>` (room and
//! org base64url, expiry in epoch seconds, mac = HMAC-SHA256 of the rest
//! with `ROOM_INVITE_SECRET`). It names its room, so it opens no other, and
//! the conversation's invite key (`SessionRecord::invite_key`, random, new
//! for every conversation in the room and on revocation), so `/room/join`
//! refuses it once the room holds another conversation or the organisation
//! revoked the room's invites. `v1` invites (no conversation) are refused.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::api::ApiError;
use crate::base::config::{self, ConfigError, Secret};

const VERSION: &str = "v2";

pub struct RoomInvites {
    secret: Secret,
    pub ttl: std::time::Duration,
}

impl RoomInvites {
    pub fn new(secret: Secret, ttl: std::time::Duration) -> Self {
        Self { secret, ttl }
    }

    /// `ROOM_INVITE_SECRET` (required) and `ROOM_INVITE_TTL_SECONDS` (default a day).
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self::new(
            config::required_secret("ROOM_INVITE_SECRET")?,
            std::time::Duration::from_secs(config::parsed_or("ROOM_INVITE_TTL_SECONDS", 86_400)?),
        ))
    }

    fn mac(&self, payload: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(payload.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// An invite to the conversation holding invite key `conversation` in
    /// `room` of organisation `org_id`, valid for the TTL.
    pub fn issue(&self, room: &str, org_id: &str, conversation: &str) -> String {
        let expiry = crate::base::time::epoch_secs()
            + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let payload = format!(
            "{VERSION}.{}.{}.{}.{expiry}",
            URL_SAFE_NO_PAD.encode(room),
            URL_SAFE_NO_PAD.encode(org_id),
            URL_SAFE_NO_PAD.encode(conversation)
        );
        let mac = URL_SAFE_NO_PAD.encode(self.mac(&payload));
        format!("{payload}.{mac}")
    }

    /// What a valid, unexpired invite to `room` grants; 401 otherwise. The
    /// caller still compares its conversation with the room's current one.
    pub fn verify(&self, invite: &str, room: &str) -> Result<Invited, ApiError> {
        self.verify_at(invite, room, crate::base::time::epoch_secs())
    }

    fn verify_at(&self, invite: &str, room: &str, now: i64) -> Result<Invited, ApiError> {
        let refused = |why: &str| {
            tracing::warn!(reason = why, "room invite refused");
            ApiError::Unauthorized
        };
        let (payload, mac) = invite
            .rsplit_once('.')
            .ok_or_else(|| refused("malformed"))?;
        let presented = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| refused("malformed"))?;
        if !bool::from(presented.ct_eq(&self.mac(payload))) {
            return Err(refused("bad signature"));
        }
        let parts: Vec<&str> = payload.split('.').collect();
        let [VERSION, invited_room, org, conversation, expiry] = parts.as_slice() else {
            return Err(refused("malformed"));
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
        };
        let expiry: i64 = expiry.parse().map_err(|_| refused("malformed"))?;
        if expiry < now {
            return Err(refused("expired"));
        }
        if decode(invited_room).as_deref() != Some(room) {
            return Err(refused("another room"));
        }
        Ok(Invited {
            org_id: decode(org).ok_or_else(|| refused("malformed"))?,
            conversation: decode(conversation).ok_or_else(|| refused("malformed"))?,
        })
    }
}

/// What a verified invite names besides its room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invited {
    pub org_id: String,
    /// The invite key of the conversation it was issued for.
    pub conversation: String,
}

impl Invited {
    /// Whether this invite belongs to the room's current conversation (its
    /// record's `invite_key`); a record without one accepts no invite.
    pub fn admits(&self, current: Option<&str>) -> bool {
        let admitted = current
            .is_some_and(|key| bool::from(key.as_bytes().ct_eq(self.conversation.as_bytes())));
        if !admitted {
            tracing::warn!("room invite of another conversation, or revoked");
        }
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn invites(ttl: u64) -> RoomInvites {
        RoomInvites::new(Secret::new("invite-secret"), Duration::from_secs(ttl))
    }

    #[test]
    fn an_invite_opens_its_own_room_only() {
        let invite = invites(60).issue("demo-room", "org-1", "conv-1");
        let invited = invites(60).verify(&invite, "demo-room").unwrap();
        assert_eq!(invited.org_id, "org-1");
        assert!(invited.admits(Some("conv-1")));
        assert!(!invited.admits(Some("conv-2")), "another conversation");
        assert!(!invited.admits(None));
        assert!(invites(60).verify(&invite, "other-room").is_err());
    }

    #[test]
    fn a_v1_invite_without_a_conversation_is_refused() {
        let secret = invites(60);
        let payload = format!(
            "v1.{}.{}.{}",
            URL_SAFE_NO_PAD.encode("demo-room"),
            URL_SAFE_NO_PAD.encode("org-1"),
            crate::base::time::epoch_secs() + 60
        );
        let v1 = format!("{payload}.{}", URL_SAFE_NO_PAD.encode(secret.mac(&payload)));
        assert!(secret.verify(&v1, "demo-room").is_err());
    }

    #[test]
    fn tampered_foreign_or_expired_invites_are_refused() {
        let invite = invites(60).issue("demo-room", "org-1", "conv-1");
        let tampered = invite.replacen("v2.", "v2.x", 1);
        assert!(invites(60).verify(&tampered, "demo-room").is_err());
        let foreign = RoomInvites::new(Secret::new("other"), Duration::from_secs(60)).issue(
            "demo-room",
            "org-1",
            "conv-1",
        );
        assert!(invites(60).verify(&foreign, "demo-room").is_err());
        let later = crate::base::time::epoch_secs() + 61;
        assert!(invites(60).verify_at(&invite, "demo-room", later).is_err());
        for junk in ["", "v2", "a.b.c.d.e.f", "v2......"] {
            assert!(invites(60).verify(junk, "demo-room").is_err());
        }
    }
}
