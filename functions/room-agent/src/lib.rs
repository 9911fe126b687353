//! `POST /room/{roomName}/agent` `{"enable": bool}` (API key): dispatches the
//! agent to the room or removes it (its dispatch and its participant).

use http::StatusCode;
use lambda_http::{Request, RequestExt};
use serde::{Deserialize, Serialize};
use shared::api::access::KeyedAccess;
use shared::api::{self, ApiError, Route};
use shared::flows::sessions::{validate_room_name, SessionLifecycle};
use shared::wiring::Wiring;

pub struct RoomAgent {
    pub access: KeyedAccess,
    pub lifecycle: SessionLifecycle,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Toggle {
    enable: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    room_name: String,
    agent_active: bool,
}

impl RoomAgent {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            access: aws.keyed_access()?,
            lifecycle: aws.session_lifecycle(false)?,
        })
    }
}

impl Route for RoomAgent {
    type Body = AgentState;

    async fn process(&self, request: Request) -> Result<(StatusCode, AgentState), ApiError> {
        let tenant = self.access.admit(request.headers()).await?;
        let room = request
            .path_parameters()
            .first("roomName")
            .unwrap_or_default()
            .to_string();
        validate_room_name(&room).map_err(|_| ApiError::NotFound("Room not found".into()))?;
        let toggle: Toggle =
            api::parse_json(api::body_bytes(request.body())?, "{\"enable\": bool}")?;
        let enable = toggle
            .enable
            .ok_or_else(|| ApiError::unprocessable("missing_field", "enable is required"))?;
        let session = self.lifecycle.owned(&room, &tenant.org_id).await?;
        let agent_active = self.lifecycle.set_agent(&session, enable).await?;
        tracing::info!(%room, agent_active, "agent toggled");
        Ok((
            StatusCode::OK,
            AgentState {
                room_name: room,
                agent_active,
            },
        ))
    }
}
