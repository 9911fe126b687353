//! Admin routes for assistants and organisations (seed 003's setup): each
//! route is its own function; this module holds what they share. All need
//! `Authorization: Bearer $ADMIN_API_TOKEN`.

use http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;

use crate::api::access::valid_org_id;
use crate::api::{self, ApiError};
use crate::base::config::Secret;
use crate::base::phone::PhoneError;
use crate::store::directory::{
    Assistant, AssistantPatch, DirectoryStore, Organisation, OrganisationPatch, Provider,
};
use crate::store::tenancy::TenancyStore;
use crate::store::StoreError;

mod numbers;
pub mod webhook_tokens;

pub(crate) fn unavailable(err: StoreError) -> ApiError {
    tracing::error!(error = %err, "directory store unavailable");
    ApiError::Unavailable
}

pub(crate) fn json_body<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, ApiError> {
    serde_json::from_slice(api::body_bytes(request.body())?).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("Body is not valid for this route: {e}"),
        )
    })
}

pub(crate) fn path_param(request: &Request, name: &str) -> Result<String, ApiError> {
    request
        .path_parameters()
        .first(name)
        .map(str::to_string)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::unprocessable("missing_field", format!("{name} is required")))
}

/// The path's organisation; an id no organisation can have is 404 before
/// any store call (DynamoDB answers an over-long key with an error).
pub(crate) fn org_id(request: &Request) -> Result<String, ApiError> {
    Some(path_param(request, "org_id")?)
        .filter(|id| valid_org_id(id))
        .ok_or_else(|| ApiError::NotFound("Organisation not found".into()))
}

fn assistant_id(request: &Request) -> Result<u64, ApiError> {
    path_param(request, "assistant_id")?
        .parse()
        .map_err(|_| ApiError::NotFound("Assistant not found".into()))
}

/// The provider-specific settings an assistant needs before it can call.
fn check_assistant(a: &Assistant) -> Result<(), ApiError> {
    let missing = |field: &str| {
        ApiError::unprocessable(
            "missing_field",
            format!("{field} is required for provider {:?}", a.provider),
        )
    };
    // Twilio's TimeLimit is at most four hours; a zero reservation would let
    // calls run unbudgeted.
    if !(1..=14_400).contains(&a.max_call_seconds) {
        return Err(ApiError::unprocessable(
            "invalid_max_call_seconds",
            "max_call_seconds must be between 1 and 14400",
        ));
    }
    match a.provider {
        Provider::Twilio => {
            if a.agent_stream_url
                .as_deref()
                .is_none_or(|u| !u.starts_with("wss://"))
            {
                return Err(ApiError::unprocessable(
                    "invalid_stream_url",
                    "agent_stream_url must be a wss:// URL for Twilio assistants",
                ));
            }
        }
        Provider::Elevenlabs => {
            if a.elevenlabs_agent_id.as_deref().is_none_or(str::is_empty) {
                return Err(missing("elevenlabs_agent_id"));
            }
            if a.elevenlabs_phone_number_id
                .as_deref()
                .is_none_or(str::is_empty)
            {
                return Err(missing("elevenlabs_phone_number_id"));
            }
        }
    }
    if let Some(number) = &a.caller_number {
        // 422 like every other field check on this surface; the code and
        // words still tell a malformed number from an unassigned one.
        crate::base::phone::e164(number).map_err(|err| {
            let detail = match err {
                PhoneError::NotE164 => "caller_number must be an E.164 number".to_string(),
                PhoneError::NotAssigned(_) => format!("caller_number: {}", err.detail()),
            };
            ApiError::unprocessable(err.code(), detail)
        })?;
    }
    if a.default_welcome_message
        .as_ref()
        .is_some_and(|w| w.chars().count() > 200)
    {
        return Err(ApiError::unprocessable(
            "welcome_message_too_long",
            "default_welcome_message must be at most 200 characters",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAssistant {
    org_id: String,
    name: String,
    provider: Provider,
    caller_number: Option<String>,
    elevenlabs_agent_id: Option<String>,
    elevenlabs_phone_number_id: Option<String>,
    agent_stream_url: Option<String>,
    default_welcome_message: Option<String>,
    max_call_seconds: Option<u64>,
    #[serde(default = "active")]
    is_active: bool,
}

fn active() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrganisation {
    org_id: String,
    name: String,
    monthly_limit_seconds: u64,
    #[serde(default)]
    topup_seconds: u64,
    #[serde(default = "crate::store::directory::default_max_concurrent_calls")]
    max_concurrent_calls: u32,
    elevenlabs_agent_id: Option<String>,
    elevenlabs_phone_number_id: Option<String>,
    #[serde(default)]
    phone_numbers: Vec<String>,
}

/// 422 unless `cap` is a concurrency cap an admin may set.
fn concurrency_cap(cap: u32) -> Result<(), ApiError> {
    use crate::store::directory::MAX_CONCURRENT_CALLS_LIMIT;
    if (1..=MAX_CONCURRENT_CALLS_LIMIT).contains(&cap) {
        return Ok(());
    }
    Err(ApiError::unprocessable(
        "invalid_max_concurrent_calls",
        format!("max_concurrent_calls is 1 to {MAX_CONCURRENT_CALLS_LIMIT}"),
    ))
}

/// Most caller ids one organisation lists (the record stays small).
const MAX_PHONE_NUMBERS: usize = 50;

/// An organisation's caller ids, each E.164, stored normalised.
fn phone_numbers(numbers: &[String]) -> Result<Vec<String>, ApiError> {
    if numbers.len() > MAX_PHONE_NUMBERS {
        return Err(ApiError::unprocessable(
            "too_many_phone_numbers",
            format!("phone_numbers may list at most {MAX_PHONE_NUMBERS} numbers"),
        ));
    }
    let mut normalised: Vec<String> = Vec::with_capacity(numbers.len());
    for number in numbers {
        let e164 = crate::base::phone::e164(number).map_err(|err| ApiError::Unprocessable {
            code: err.code(),
            detail: format!("phone_numbers: {}", err.detail()),
        })?;
        if !normalised.contains(&e164) {
            normalised.push(e164);
        }
    }
    Ok(normalised)
}

/// The admin routes, each called by its own Lambda.
pub struct Admin<'a> {
    pub token: &'a Secret,
    pub directory: &'a dyn DirectoryStore,
    /// The number registry: an organisation's numbers live there, not on
    /// its record.
    pub tenancy: &'a dyn TenancyStore,
}

impl Admin<'_> {
    async fn authorised<T: serde::Serialize>(
        &self,
        request: &Request,
        work: impl std::future::Future<Output = Result<(StatusCode, T), ApiError>>,
    ) -> Response<Body> {
        if let Err(err) = api::require_bearer(request.headers(), self.token) {
            return err.into_response();
        }
        api::respond(work.await)
    }

    pub async fn create_assistant(&self, request: Request) -> Response<Body> {
        let work = async {
            let new: NewAssistant = json_body(&request)?;
            self.directory
                .get_organisation(&new.org_id)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| {
                    ApiError::unprocessable(
                        "unknown_organisation",
                        format!("Organisation {} not found", new.org_id),
                    )
                })?;
            let now = crate::base::time::now_rfc3339();
            let assistant = Assistant {
                assistant_id: 0,
                org_id: new.org_id,
                name: new.name,
                provider: new.provider,
                caller_number: new.caller_number,
                elevenlabs_agent_id: new.elevenlabs_agent_id,
                elevenlabs_phone_number_id: new.elevenlabs_phone_number_id,
                agent_stream_url: new.agent_stream_url,
                default_welcome_message: new.default_welcome_message,
                max_call_seconds: new
                    .max_call_seconds
                    .unwrap_or(crate::store::directory::DEFAULT_MAX_CALL_SECONDS),
                is_active: new.is_active,
                created_at: now.clone(),
                updated_at: now,
            };
            check_assistant(&assistant)?;
            let created = self
                .directory
                .create_assistant(assistant)
                .await
                .map_err(unavailable)?;
            Ok((StatusCode::CREATED, created))
        };
        self.authorised(&request, work).await
    }

    pub async fn get_assistant(&self, request: Request) -> Response<Body> {
        let work = async {
            let id = assistant_id(&request)?;
            let assistant = self
                .directory
                .get_assistant(id)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| ApiError::NotFound("Assistant not found".into()))?;
            Ok((StatusCode::OK, assistant))
        };
        self.authorised(&request, work).await
    }

    pub async fn update_assistant(&self, request: Request) -> Response<Body> {
        let work = async {
            let id = assistant_id(&request)?;
            let patch: AssistantPatch = json_body(&request)?;
            let updated = self.patch_assistant(id, &patch).await?;
            Ok((StatusCode::OK, updated))
        };
        self.authorised(&request, work).await
    }

    /// Deactivation keeps the record (calls refer to it) and stops new calls.
    pub async fn deactivate_assistant(&self, request: Request) -> Response<Body> {
        let work = async {
            let id = assistant_id(&request)?;
            let patch = AssistantPatch {
                is_active: Some(false),
                ..AssistantPatch::default()
            };
            let updated = self.patch_assistant(id, &patch).await?;
            Ok((StatusCode::OK, updated))
        };
        self.authorised(&request, work).await
    }

    async fn patch_assistant(
        &self,
        id: u64,
        patch: &AssistantPatch,
    ) -> Result<Assistant, ApiError> {
        let current = self
            .directory
            .get_assistant(id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ApiError::NotFound("Assistant not found".into()))?;
        // Validate the result of the change before storing it.
        let mut preview = current.clone();
        macro_rules! apply {
            ($($field:ident),*) => {$(
                if let Some(value) = &patch.$field {
                    preview.$field = Some(value.clone());
                }
            )*};
        }
        apply!(
            caller_number,
            elevenlabs_agent_id,
            elevenlabs_phone_number_id,
            agent_stream_url,
            default_welcome_message
        );
        if let Some(provider) = patch.provider {
            preview.provider = provider;
        }
        check_assistant(&preview)?;
        self.directory
            .update_assistant(id, patch)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ApiError::NotFound("Assistant not found".into()))
    }

    pub async fn create_organisation(&self, request: Request) -> Response<Body> {
        let work = async {
            let new: NewOrganisation = json_body(&request)?;
            if !valid_org_id(&new.org_id) {
                return Err(ApiError::unprocessable(
                    "invalid_org_id",
                    "org_id must be 1-64 letters, digits, '-' or '_'",
                ));
            }
            let numbers = phone_numbers(&new.phone_numbers)?;
            concurrency_cap(new.max_concurrent_calls)?;
            let now = crate::base::time::now_rfc3339();
            let mut org = Organisation {
                org_id: new.org_id,
                name: new.name,
                monthly_limit_seconds: new.monthly_limit_seconds,
                topup_seconds: new.topup_seconds,
                max_concurrent_calls: new.max_concurrent_calls,
                elevenlabs_agent_id: new.elevenlabs_agent_id,
                elevenlabs_phone_number_id: new.elevenlabs_phone_number_id,
                // The registry holds the numbers; the record none.
                phone_numbers: Vec::new(),
                created_at: now.clone(),
                updated_at: now,
                usage_this_month_seconds: 0,
                reserved_seconds: 0,
                remaining_seconds: new.monthly_limit_seconds.saturating_add(new.topup_seconds),
            };
            // Numbers first: a taken one refuses the whole request before
            // the organisation exists.
            let claimed = numbers::claim_all(self.tenancy, &org.org_id, &numbers).await?;
            let created = self.directory.create_organisation(&org).await;
            if !matches!(created, Ok(true)) {
                numbers::release_claimed(self.tenancy, &org.org_id, &claimed).await;
            }
            if !created.map_err(unavailable)? {
                return Err(ApiError::unprocessable(
                    "organisation_exists",
                    format!("Organisation {} already exists", org.org_id),
                ));
            }
            org.phone_numbers = self.registry_numbers(&org.org_id).await?;
            Ok((StatusCode::CREATED, org))
        };
        self.authorised(&request, work).await
    }

    pub async fn get_organisation(&self, request: Request) -> Response<Body> {
        let work = async {
            let id = org_id(&request)?;
            let org = self
                .directory
                .get_organisation(&id)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| ApiError::NotFound("Organisation not found".into()))?;
            let org = Organisation {
                phone_numbers: self.registry_numbers(&id).await?,
                ..org
            };
            Ok((StatusCode::OK, org))
        };
        self.authorised(&request, work).await
    }

    pub async fn update_organisation(&self, request: Request) -> Response<Body> {
        let work = async {
            let id = org_id(&request)?;
            let mut patch: OrganisationPatch = json_body(&request)?;
            patch
                .max_concurrent_calls
                .map(concurrency_cap)
                .transpose()?;
            let wanted = patch
                .phone_numbers
                .as_deref()
                .map(phone_numbers)
                .transpose()?;
            let Some(wanted) = wanted else {
                let org = self
                    .directory
                    .update_organisation(&id, &patch)
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| ApiError::NotFound("Organisation not found".into()))?;
                let phone_numbers = self.registry_numbers(&id).await?;
                return Ok((
                    StatusCode::OK,
                    Organisation {
                        phone_numbers,
                        ..org
                    },
                ));
            };
            // The list replaces the organisation's voice numbers: claim the
            // new ones, store the other fields, then let go of the rest.
            // (Organisations are never deleted, so one that exists now still
            // does when its numbers are claimed.)
            self.directory
                .get_organisation(&id)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| ApiError::NotFound("Organisation not found".into()))?;
            let claimed = numbers::claim_all(self.tenancy, &id, &wanted).await?;
            // Clears a list stored before the registry; the registry is the truth.
            patch.phone_numbers = Some(Vec::new());
            let updated = self.directory.update_organisation(&id, &patch).await;
            if !matches!(updated, Ok(Some(_))) {
                numbers::release_claimed(self.tenancy, &id, &claimed).await;
            }
            let org = updated
                .map_err(unavailable)?
                .ok_or_else(|| ApiError::NotFound("Organisation not found".into()))?;
            // A failure from here on answers 503 with this request's own
            // claims undone; a retry of the same body finishes the job.
            let held = match self.registry_numbers(&id).await {
                Ok(held) => held,
                Err(err) => {
                    numbers::release_claimed(self.tenancy, &id, &claimed).await;
                    return Err(err);
                }
            };
            for number in held.iter().filter(|n| !wanted.contains(n)) {
                let channel = crate::flows::tenancy::Channel::Voice;
                if let Err(err) = numbers::release(self.tenancy, &id, channel, number).await {
                    numbers::release_claimed(self.tenancy, &id, &claimed).await;
                    return Err(err);
                }
            }
            Ok((
                StatusCode::OK,
                Organisation {
                    phone_numbers: wanted,
                    ..org
                },
            ))
        };
        self.authorised(&request, work).await
    }
}

/// Wiring shared by the admin functions.
pub struct AdminConfig {
    pub token: Secret,
    pub directory: crate::store::directory::DynamoDirectoryStore,
    pub tenancy: crate::store::tenancy::DynamoTenancyStore,
}

impl AdminConfig {
    pub fn admin(&self) -> Admin<'_> {
        Admin {
            token: &self.token,
            directory: &self.directory,
            tenancy: &self.tenancy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn twilio_assistant(caller_number: &str) -> Assistant {
        Assistant {
            assistant_id: 1,
            org_id: "acme".into(),
            name: "Sarah".into(),
            provider: Provider::Twilio,
            caller_number: Some(caller_number.into()),
            elevenlabs_agent_id: None,
            elevenlabs_phone_number_id: None,
            agent_stream_url: Some("wss://agent.example.com/media".into()),
            default_welcome_message: None,
            max_call_seconds: 600,
            is_active: true,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn caller_numbers_tell_malformed_from_unassigned() {
        assert!(check_assistant(&twilio_assistant("+14155552672")).is_ok());
        let malformed = check_assistant(&twilio_assistant("4155552672")).unwrap_err();
        assert_eq!(malformed.status(), 422);
        assert_eq!(malformed.code(), "invalid_phone_number");
        assert_eq!(malformed.detail(), "caller_number must be an E.164 number");
        let unassigned = check_assistant(&twilio_assistant("+1234567890")).unwrap_err();
        assert_eq!(unassigned.status(), 422);
        assert_eq!(unassigned.code(), "phone_number_not_valid");
        assert_eq!(
            unassigned.detail(),
            "caller_number: Phone number +1234567890 is not a valid number in any country; \
             check the country code and number"
        );
    }
}
