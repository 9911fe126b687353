//! `POST /room/{roomName}/recording` `{"enable": bool}` (API key): starts or
//! stops a LiveKit room-composite egress to the template's recordings
//! bucket; the egress id and `s3://` location are kept on the session.

use http::StatusCode;
use lambda_http::Request;
use serde::Serialize;
use shared::api::access::KeyedAccess;
use shared::api::{ApiError, Route};
use shared::flows::sessions::{room_toggle, RecordingStorage, SessionLifecycle};
use shared::wiring::Wiring;

pub struct RoomRecording {
    pub access: KeyedAccess,
    pub lifecycle: SessionLifecycle,
    pub storage: RecordingStorage,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingState {
    room_name: String,
    recording: bool,
    egress_id: String,
}

impl RoomRecording {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            access: aws.keyed_access()?,
            lifecycle: aws.session_lifecycle(false)?,
            storage: aws.recording_storage()?,
        })
    }
}

impl Route for RoomRecording {
    type Body = RecordingState;

    async fn process(&self, request: Request) -> Result<(StatusCode, RecordingState), ApiError> {
        let tenant = self.access.admit(request.headers()).await?;
        let (room, enable) = room_toggle(&request)?;
        let session = self.lifecycle.owned(&room, &tenant.org_id).await?;
        let (recording, egress_id) = self
            .lifecycle
            .set_recording(&session, enable, &self.storage)
            .await?;
        tracing::info!(%room, recording, %egress_id, "recording toggled");
        Ok((
            StatusCode::OK,
            RecordingState {
                room_name: room,
                recording,
                egress_id,
            },
        ))
    }
}
