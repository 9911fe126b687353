//! Credentials from AWS Secrets Manager, read once per cold start.
//!
//! In AWS the template gives a function `<NAME>_SECRET_ARN` for each
//! credential it uses, never the value, so `lambda:GetFunctionConfiguration`
//! shows no secret. [`load`] reads them all before the function builds its
//! configuration, and [`crate::base::config`] then answers `<NAME>` from them.
//! Without any `_SECRET_ARN` variable (`make dev`, most tests) credentials are
//! plain environment variables, read by the same configuration code.
//!
//! A secret is read again only by a new cold start: after a rotation, running
//! instances keep the old value until Lambda replaces them (the README says how
//! to force that). A secret that is missing, empty or not readable by the
//! function's role fails the cold start with its variable's name; there is no
//! fallback value.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The suffix of the variables that point at a secret.
pub const ARN_SUFFIX: &str = "_SECRET_ARN";

/// Each read's limit; SDK retries of a throttled or failed read fit in Lambda's 10 s init.
#[cfg(feature = "secrets")]
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

static LOADED: OnceLock<HashMap<String, String>> = OnceLock::new();

/// A credential to read: the variable the configuration asks for, and the
/// secret (ARN or name) that holds its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub name: String,
    pub secret_id: String,
}

/// Why a credential could not be read. Messages name the variable and the
/// secret, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secret {secret_id} for {name} does not exist: create it, or fix {name}{ARN_SUFFIX}")]
    NotFound { name: String, secret_id: String },
    #[error(
        "the function's role may not read secret {secret_id} for {name}: \
         allow secretsmanager:GetSecretValue on it"
    )]
    Forbidden { name: String, secret_id: String },
    #[error("secret {secret_id} for {name} has no text value: put one with put-secret-value")]
    Empty { name: String, secret_id: String },
    #[error("secret {secret_id} for {name} could not be read: {reason}")]
    Unavailable {
        name: String,
        secret_id: String,
        reason: String,
    },
    #[error(
        "{name}{ARN_SUFFIX} is set, but this function was built without Secrets Manager support"
    )]
    Unsupported { name: String },
}

/// The credentials `vars` (a process environment) asks for, sorted by name.
/// An empty `_SECRET_ARN` asks for nothing: SAM passes unset values as "".
pub fn requested(vars: impl IntoIterator<Item = (String, String)>) -> Vec<SecretRef> {
    let mut wanted: Vec<SecretRef> = vars
        .into_iter()
        .filter_map(|(key, value)| {
            let name = key.strip_suffix(ARN_SUFFIX)?;
            let secret_id = value.trim();
            (!name.is_empty() && !secret_id.is_empty()).then(|| SecretRef {
                name: name.to_string(),
                secret_id: secret_id.to_string(),
            })
        })
        .collect();
    wanted.sort_by(|a, b| a.name.cmp(&b.name));
    wanted
}

/// The value [`load`] read for `name`, if it read one.
pub fn get(name: &str) -> Option<&'static str> {
    LOADED.get()?.get(name).map(String::as_str)
}

/// Reads every credential this process's `_SECRET_ARN` variables name, once,
/// and keeps them for [`crate::base::config`]. Call it first in `main`, before
/// any configuration is read. Returns how many were read.
pub async fn load() -> Result<usize, SecretsError> {
    let wanted = requested(std::env::vars());
    if wanted.is_empty() {
        return Ok(0);
    }
    let values = read_all(&wanted).await.inspect_err(|err| {
        tracing::error!(error = %err, "cold start failed: a credential could not be read");
    })?;
    let count = values.len();
    // A second call in the same process finds the same environment, so the
    // first set of values stands.
    let _ = LOADED.set(values);
    Ok(count)
}

#[cfg(feature = "secrets")]
async fn read_all(wanted: &[SecretRef]) -> Result<HashMap<String, String>, SecretsError> {
    let sdk = crate::base::aws::sdk_config().await;
    let client = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&sdk)
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(READ_TIMEOUT)
                    .build(),
            )
            .build(),
    );
    fetch(&client, wanted).await
}

#[cfg(not(feature = "secrets"))]
async fn read_all(wanted: &[SecretRef]) -> Result<HashMap<String, String>, SecretsError> {
    Err(SecretsError::Unsupported {
        name: wanted[0].name.clone(),
    })
}

/// Reads `wanted` concurrently (one round trip at cold start) and fails on
/// the first credential that cannot be read.
#[cfg(feature = "secrets")]
pub async fn fetch(
    client: &aws_sdk_secretsmanager::Client,
    wanted: &[SecretRef],
) -> Result<HashMap<String, String>, SecretsError> {
    let reads = wanted.iter().map(|secret| async move {
        let value = read_one(client, secret).await?;
        Ok::<_, SecretsError>((secret.name.clone(), value))
    });
    Ok(futures_util::future::try_join_all(reads)
        .await?
        .into_iter()
        .collect())
}

#[cfg(feature = "secrets")]
async fn read_one(
    client: &aws_sdk_secretsmanager::Client,
    secret: &SecretRef,
) -> Result<String, SecretsError> {
    use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
    use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;

    let name = secret.name.clone();
    let secret_id = secret.secret_id.clone();
    let failure = match client
        .get_secret_value()
        .secret_id(&secret.secret_id)
        .send()
        .await
    {
        Ok(output) => {
            return match output.secret_string().map(str::trim) {
                Some(value) if !value.is_empty() => Ok(value.to_string()),
                _ => Err(SecretsError::Empty { name, secret_id }),
            }
        }
        Err(failure) => failure,
    };
    let SdkError::ServiceError(service) = failure else {
        // Timeouts and connection failures: Lambda retries the init.
        let reason = aws_sdk_secretsmanager::error::DisplayErrorContext(&failure).to_string();
        return Err(SecretsError::Unavailable {
            name,
            secret_id,
            reason,
        });
    };
    let status = service.raw().status().as_u16();
    let err = service.into_err();
    // AWS answers an IAM denial with the code AccessDeniedException; some
    // emulators only with HTTP 403 and an unparsed body.
    if matches!(err, GetSecretValueError::ResourceNotFoundException(_)) {
        Err(SecretsError::NotFound { name, secret_id })
    } else if matches!(err.code(), Some("AccessDeniedException" | "AccessDenied")) || status == 403
    {
        Err(SecretsError::Forbidden { name, secret_id })
    } else {
        let code = err.code().unwrap_or("service error").to_string();
        Err(SecretsError::Unavailable {
            name,
            secret_id,
            reason: format!("{code} (HTTP {status})"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn asks_for_each_secret_arn_variable_by_its_credential_name() {
        let wanted = requested(vars(&[
            (
                "TWILIO_AUTH_TOKEN_SECRET_ARN",
                "arn:aws:secretsmanager:x:1:secret:t",
            ),
            ("CALLS_TABLE", "calls"),
            ("WEBHOOK_TOKEN_SECRET_ARN", " callops/WebhookToken "),
        ]));
        assert_eq!(
            wanted,
            vec![
                SecretRef {
                    name: "TWILIO_AUTH_TOKEN".into(),
                    secret_id: "arn:aws:secretsmanager:x:1:secret:t".into()
                },
                SecretRef {
                    name: "WEBHOOK_TOKEN".into(),
                    secret_id: "callops/WebhookToken".into()
                },
            ]
        );
    }

    #[test]
    fn empty_or_nameless_secret_variables_ask_for_nothing() {
        let wanted = requested(vars(&[
            ("SLACK_BOT_TOKEN_SECRET_ARN", ""),
            ("_SECRET_ARN", "arn"),
            ("SECRET_ARN", "arn"),
        ]));
        assert!(wanted.is_empty(), "{wanted:?}");
    }

    #[test]
    fn errors_name_the_variable_and_the_secret_but_no_value() {
        let err = SecretsError::Forbidden {
            name: "TWILIO_AUTH_TOKEN".into(),
            secret_id: "callops/TwilioAuthToken".into(),
        };
        let text = err.to_string();
        assert!(text.contains("TWILIO_AUTH_TOKEN"), "{text}");
        assert!(text.contains("callops/TwilioAuthToken"), "{text}");
        assert!(text.contains("secretsmanager:GetSecretValue"), "{text}");
        let missing = SecretsError::NotFound {
            name: "WEBHOOK_TOKEN".into(),
            secret_id: "arn:x".into(),
        }
        .to_string();
        assert!(missing.contains("WEBHOOK_TOKEN_SECRET_ARN"), "{missing}");
    }
}
