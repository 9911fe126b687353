//! An organisation's numbers in the registry (`store::tenancy`):
//! `POST|GET /organisations/{org_id}/numbers` and
//! `DELETE /organisations/{org_id}/numbers/{channel}/{number}`, served by
//! one function (`organisation-numbers`), and the claims behind the
//! organisation routes' `phone_numbers`.
//!
//! A number has one owner because taking it is one conditional write; a
//! refusal never says who owns it.

use http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::{json_body, org_id, path_param, unavailable, Admin};
use crate::api::ApiError;
use crate::base::mask;
use crate::flows::tenancy::{numbers_of, Channel};
use crate::store::tenancy::{Claim, TenancyStore};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNumber {
    number: String,
    channel: String,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub(super) struct Number {
    number: String,
    channel: &'static str,
}

#[derive(Serialize)]
pub(super) struct Assigned {
    org_id: String,
    #[serde(flatten)]
    number: Number,
}

#[derive(Serialize)]
pub(super) struct Numbers {
    numbers: Vec<Number>,
}

fn channel(name: &str) -> Result<Channel, ApiError> {
    Channel::parse(name).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_channel",
            "channel must be \"voice\" or \"whatsapp\"",
        )
    })
}

fn e164(number: &str, field: &str) -> Result<String, ApiError> {
    crate::base::phone::e164(number).map_err(|err| ApiError::Unprocessable {
        code: err.code(),
        detail: format!("{field}: {}", err.detail()),
    })
}

/// The number of a DELETE path: `+` may arrive encoded (`%2B`), decoded
/// or, through form decoding, as a space; a number without it is read as
/// E.164 digits. Anything else is a number this organisation cannot own.
fn path_number(raw: &str) -> Result<String, ApiError> {
    let not_found = || ApiError::NotFound("Number not found".into());
    let raw = raw.trim();
    let digits = raw
        .strip_prefix("%2B")
        .or_else(|| raw.strip_prefix("%2b"))
        .or_else(|| raw.strip_prefix('+'))
        .unwrap_or(raw);
    if digits.is_empty() || digits.len() > 15 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(not_found());
    }
    crate::base::phone::e164(&format!("+{digits}")).map_err(|_| not_found())
}

/// The conflict answer for a number another organisation holds; it names
/// the number (the caller sent it) and never the holder.
fn taken(number: &str) -> ApiError {
    ApiError::Conflict {
        code: "number_taken",
        detail: format!("Number {number} belongs to another organisation"),
    }
}

/// Claims each voice number for `org_id`; returns the ones this call took
/// (not those it already had). On a taken number or an outage it lets go
/// of exactly those before answering 409 or 503.
pub(super) async fn claim_all(
    tenancy: &dyn TenancyStore,
    org_id: &str,
    numbers: &[String],
) -> Result<Vec<String>, ApiError> {
    let mut claimed = Vec::new();
    for number in numbers {
        let outcome = tenancy
            .claim(&Channel::Voice.kind().key(number), org_id)
            .await;
        let refusal = match outcome {
            Ok(Claim::Claimed) => {
                claimed.push(number.clone());
                continue;
            }
            Ok(Claim::AlreadyOurs) => continue,
            Ok(Claim::TakenBy) => taken(number),
            Err(err) => unavailable(err),
        };
        release_claimed(tenancy, org_id, &claimed).await;
        return Err(refusal);
    }
    Ok(claimed)
}

/// Undoes this request's own claims (best effort: a failure is logged; the
/// number stays the organisation's, which an admin can release).
pub(super) async fn release_claimed(tenancy: &dyn TenancyStore, org_id: &str, claimed: &[String]) {
    for number in claimed {
        let key = Channel::Voice.kind().key(number);
        if let Err(err) = tenancy.release(&key, org_id).await {
            error!(
                %org_id,
                number = %mask::phone(number),
                error = %err,
                "claim not undone; release the number through the admin route"
            );
        }
    }
}

/// Releases one number of `org_id`; false when it was not the organisation's.
pub(super) async fn release(
    tenancy: &dyn TenancyStore,
    org_id: &str,
    channel: Channel,
    number: &str,
) -> Result<bool, ApiError> {
    tenancy
        .release(&channel.kind().key(number), org_id)
        .await
        .map_err(unavailable)
}

impl Admin<'_> {
    /// The organisation's voice numbers as the registry has them.
    pub(super) async fn registry_numbers(&self, org_id: &str) -> Result<Vec<String>, ApiError> {
        numbers_of(self.tenancy, Channel::Voice, org_id)
            .await
            .map_err(unavailable)
    }

    async fn existing_org(&self, org_id: &str) -> Result<(), ApiError> {
        self.directory
            .get_organisation(org_id)
            .await
            .map_err(unavailable)?
            .map(|_| ())
            .ok_or_else(|| ApiError::NotFound("Organisation not found".into()))
    }

    /// `/organisations/{org_id}/numbers[/{channel}/{number}]`, by method.
    pub async fn numbers(&self, request: Request) -> Response<Body> {
        match *request.method() {
            Method::POST => self.assign_number(request).await,
            Method::DELETE => self.release_number(request).await,
            _ => self.list_numbers(request).await,
        }
    }

    /// 201 when assigned now, 200 when it already was this organisation's,
    /// 409 `number_taken` when another organisation's.
    pub async fn assign_number(&self, request: Request) -> Response<Body> {
        let work = async {
            let id = org_id(&request)?;
            let new: NewNumber = json_body(&request)?;
            let channel = channel(&new.channel)?;
            let number = e164(&new.number, "number")?;
            self.existing_org(&id).await?;
            let claim = self
                .tenancy
                .claim(&channel.kind().key(&number), &id)
                .await
                .map_err(unavailable)?;
            let status = match claim {
                Claim::Claimed => StatusCode::CREATED,
                Claim::AlreadyOurs => StatusCode::OK,
                Claim::TakenBy => return Err(taken(&number)),
            };
            info!(org_id = %id, number = %mask::phone(&number), channel = channel.name(), "number assigned");
            Ok((
                status,
                Assigned {
                    org_id: id,
                    number: Number {
                        number,
                        channel: channel.name(),
                    },
                },
            ))
        };
        self.authorised(&request, work).await
    }

    pub async fn list_numbers(&self, request: Request) -> Response<Body> {
        let work = async {
            let id = org_id(&request)?;
            self.existing_org(&id).await?;
            let mut numbers = Vec::new();
            for channel in [Channel::Voice, Channel::WhatsApp] {
                let owned = numbers_of(self.tenancy, channel, &id)
                    .await
                    .map_err(unavailable)?;
                numbers.extend(owned.into_iter().map(|number| Number {
                    number,
                    channel: channel.name(),
                }));
            }
            Ok((StatusCode::OK, Numbers { numbers }))
        };
        self.authorised(&request, work).await
    }

    /// 204 when released; 404 when the number is not this organisation's
    /// (free, or another's: the answer does not tell which).
    pub async fn release_number(&self, request: Request) -> Response<Body> {
        let work = async {
            let id = org_id(&request)?;
            let not_found = || ApiError::NotFound("Number not found".into());
            let channel =
                Channel::parse(&path_param(&request, "channel")?).ok_or_else(not_found)?;
            let number = path_number(&path_param(&request, "number")?)?;
            if !release(self.tenancy, &id, channel, &number).await? {
                return Err(not_found());
            }
            info!(org_id = %id, number = %mask::phone(&number), channel = channel.name(), "number released");
            Ok(())
        };
        if let Err(err) = crate::api::require_bearer(request.headers(), self.token) {
            return err.into_response();
        }
        match work.await {
            // No body: a 204 has none.
            Ok(()) => Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Body::Empty)
                .expect("static response parts are valid"),
            Err(err) => err.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_numbers_accept_every_encoding_of_plus() {
        for raw in [
            "+14155552671",
            "%2B14155552671",
            " 14155552671",
            "14155552671",
        ] {
            assert_eq!(path_number(raw).unwrap(), "+14155552671", "{raw}");
        }
        for raw in [
            "",
            "+",
            "abc",
            "+1415555267a",
            "+1234567890123456",
            "+1234567890",
        ] {
            assert_eq!(path_number(raw).unwrap_err().status(), 404, "{raw}");
        }
    }

    #[test]
    fn a_taken_number_never_names_its_owner() {
        let err = taken("+14155552671");
        assert_eq!(err.status(), 409);
        assert_eq!(err.code(), "number_taken");
        assert_eq!(
            err.detail(),
            "Number +14155552671 belongs to another organisation"
        );
    }
}
