//! [`OrgSecretStore`] over AWS Secrets Manager.

use async_trait::async_trait;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use super::{secret_name, OrgSecretError, OrgSecretStore, SecretKind};
use crate::base::config::Secret;

pub struct SecretsManagerOrgSecrets {
    pub client: aws_sdk_secretsmanager::Client,
    /// `ORG_SECRETS_PREFIX`, e.g. `callops/<stack>/org`.
    pub prefix: String,
}

/// A failed call's meaning: `Ok(())` for "no such secret" (including one
/// scheduled for deletion), else a named error without any value.
fn classify<E, R>(name: &str, err: SdkError<E, R>) -> Result<(), OrgSecretError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let SdkError::ServiceError(service) = &err else {
        return Err(OrgSecretError::Unavailable {
            name: name.to_string(),
            reason: aws_sdk_secretsmanager::error::DisplayErrorContext(&err).to_string(),
        });
    };
    let code = service.err().code().unwrap_or("service error").to_string();
    let message = service.err().message().unwrap_or_default();
    match code.as_str() {
        "ResourceNotFoundException" => Ok(()),
        // Deleted with a recovery window by someone else: no account now.
        "InvalidRequestException" if message.contains("deleted") => Ok(()),
        "AccessDeniedException" | "AccessDenied" => Err(OrgSecretError::Forbidden {
            name: name.to_string(),
            code,
        }),
        _ => Err(OrgSecretError::Unavailable {
            name: name.to_string(),
            reason: code,
        }),
    }
}

impl SecretsManagerOrgSecrets {
    fn name(&self, org_id: &str, kind: SecretKind) -> String {
        secret_name(&self.prefix, org_id, kind)
    }
}

#[async_trait]
impl OrgSecretStore for SecretsManagerOrgSecrets {
    async fn read(&self, org_id: &str, kind: SecretKind) -> Result<Option<Secret>, OrgSecretError> {
        let name = self.name(org_id, kind);
        match self.client.get_secret_value().secret_id(&name).send().await {
            Ok(output) => Ok(output
                .secret_string()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(Secret::new)),
            Err(err) => classify(&name, err).map(|()| None),
        }
    }

    async fn write(
        &self,
        org_id: &str,
        kind: SecretKind,
        value: &Secret,
    ) -> Result<(), OrgSecretError> {
        let name = self.name(org_id, kind);
        let created = self
            .client
            .create_secret()
            .name(&name)
            .description(format!("callops: organisation {org_id}'s {}", kind.label()))
            .secret_string(value.expose())
            .send()
            .await;
        let err = match created {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        let exists = err
            .as_service_error()
            .and_then(|e| e.code())
            .is_some_and(|code| code == "ResourceExistsException");
        if !exists {
            classify(&name, err)?;
            return Err(OrgSecretError::Unavailable {
                name,
                reason: "ResourceNotFoundException on create".into(),
            });
        }
        match self
            .client
            .put_secret_value()
            .secret_id(&name)
            .secret_string(value.expose())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => {
                classify(&name, err)?;
                Err(OrgSecretError::Unavailable {
                    name,
                    reason: "deleted while being updated; retry".into(),
                })
            }
        }
    }

    async fn changed_at(
        &self,
        org_id: &str,
        kind: SecretKind,
    ) -> Result<Option<String>, OrgSecretError> {
        let name = self.name(org_id, kind);
        match self.client.describe_secret().secret_id(&name).send().await {
            Ok(output) if output.deleted_date().is_some() => Ok(None),
            Ok(output) => Ok(Some(
                output
                    .last_changed_date()
                    .or(output.created_date())
                    .and_then(|at| chrono::DateTime::from_timestamp(at.secs(), 0))
                    .map(crate::base::time::rfc3339)
                    .unwrap_or_default(),
            )),
            Err(err) => classify(&name, err).map(|()| None),
        }
    }

    async fn delete(&self, org_id: &str, kind: SecretKind) -> Result<bool, OrgSecretError> {
        // A forced delete answers success for a secret that does not exist
        // (AWS and moto alike): ask first whether there is one.
        if self.changed_at(org_id, kind).await?.is_none() {
            return Ok(false);
        }
        let name = self.name(org_id, kind);
        match self
            .client
            .delete_secret()
            .secret_id(&name)
            .force_delete_without_recovery(true)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err) => classify(&name, err).map(|()| false),
        }
    }
}
