//! `POST /room/{roomName}/agent` `{"enable": bool}` (API key): dispatches the
//! agent to the room or removes it (its dispatch and its participant).

use http::StatusCode;
use lambda_http::Request;
use serde::Serialize;
use shared::api::access::KeyedAccess;
use shared::api::{ApiError, Route};
use shared::flows::sessions::{room_toggle, SessionLifecycle};
use shared::wiring::Wiring;

pub struct RoomAgent {
    pub access: KeyedAccess,
    pub lifecycle: SessionLifecycle,
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
        let (room, enable) = room_toggle(&request)?;
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
