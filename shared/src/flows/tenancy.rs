//! Which organisation a number belongs to, for the routes that receive
//! calls and messages and the routes that place them. The registry
//! (`store::tenancy`, kinds `voice#` and `whatsapp#`) is the single source
//! of truth; `INBOUND_ORG_ID` only covers what the registry does not: a
//! number nobody registered belongs to it, and the deployment's own default
//! numbers (`TWILIO_PHONE_NUMBER`, `TWILIO_WHATSAPP_NUMBER`) are its.

use crate::store::tenancy::{Kind, TenancyStore};
use crate::store::StoreError;

/// The channel a number serves: a registry kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Voice,
    WhatsApp,
}

impl Channel {
    pub fn kind(self) -> Kind {
        match self {
            Channel::Voice => Kind::Voice,
            Channel::WhatsApp => Kind::WhatsApp,
        }
    }

    /// The name used in routes and bodies: `voice`, `whatsapp`.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Voice => "voice",
            Channel::WhatsApp => "whatsapp",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "voice" => Some(Channel::Voice),
            "whatsapp" => Some(Channel::WhatsApp),
            _ => None,
        }
    }
}

/// A number as a provider addresses it (`+14155552671`,
/// `whatsapp:+14155552671`), as the registry keys it: `+` and 1 to 15
/// digits. Anything else (a SIP address, an empty `To`) cannot be in the
/// registry and is `None`, without a lookup.
pub fn registry_number(address: &str) -> Option<&str> {
    let address = address.trim();
    let number = address.strip_prefix("whatsapp:").unwrap_or(address).trim();
    let digits = number.strip_prefix('+')?;
    (!digits.is_empty() && digits.len() <= 15 && digits.chars().all(|c| c.is_ascii_digit()))
        .then_some(number)
}

/// The organisation a call or message to `to` belongs to: the registry's
/// owner of the number on `channel`; when it has none, `fallback`
/// (`INBOUND_ORG_ID`); `None` when neither (the number is not in service).
pub async fn inbound_org(
    store: &dyn TenancyStore,
    channel: Channel,
    to: &str,
    fallback: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let owner = match registry_number(to) {
        Some(number) => store.owner(&channel.kind().key(number)).await?,
        None => None,
    };
    Ok(owner.or_else(|| fallback.map(str::to_string)))
}

/// Whether a callback signed by `signed_by`'s own Twilio account (`None`:
/// the deployment's) may act for `org_id`, the organisation of the number
/// it names: an organisation's account speaks only for that organisation,
/// so a number registered to another is treated as one nobody owns.
pub fn signer_may_act_for(signed_by: Option<&str>, org_id: &str) -> bool {
    signed_by.is_none_or(|signer| signer == org_id)
}

/// Whether `org_id` may use `number` (E.164) as its caller id or sender on
/// `channel`: it owns it in the registry, or it is the deployment's default
/// number (`default_number`) and `org_id` the default organisation
/// (`default_org`).
pub async fn may_send_from(
    store: &dyn TenancyStore,
    channel: Channel,
    org_id: &str,
    number: &str,
    default_number: Option<&str>,
    default_org: Option<&str>,
) -> Result<bool, StoreError> {
    if is_default(number, org_id, default_number, default_org) {
        return Ok(true);
    }
    let Some(number) = registry_number(number) else {
        return Ok(false);
    };
    Ok(store.owner(&channel.kind().key(number)).await?.as_deref() == Some(org_id))
}

/// The default number of the default organisation, compared as numbers
/// (`whatsapp:` prefixes and spaces aside).
fn is_default(
    number: &str,
    org_id: &str,
    default_number: Option<&str>,
    default_org: Option<&str>,
) -> bool {
    default_org == Some(org_id)
        && default_number
            .and_then(registry_number)
            .is_some_and(|default| registry_number(number) == Some(default))
}

/// The numbers `org_id` owns on `channel`, E.164, sorted.
pub async fn numbers_of(
    store: &dyn TenancyStore,
    channel: Channel,
    org_id: &str,
) -> Result<Vec<String>, StoreError> {
    let kind = channel.kind();
    Ok(store
        .list(org_id, kind.prefix())
        .await?
        .iter()
        .filter_map(|key| kind.id_of(key).map(str::to_string))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_organisations_account_speaks_only_for_that_organisation() {
        assert!(signer_may_act_for(None, "acme"), "the deployment's account");
        assert!(signer_may_act_for(Some("acme"), "acme"));
        assert!(!signer_may_act_for(Some("globex"), "acme"));
    }

    #[test]
    fn registry_numbers_are_e164_shaped_addresses() {
        assert_eq!(registry_number("+14155552671"), Some("+14155552671"));
        assert_eq!(
            registry_number("whatsapp:+14155552671"),
            Some("+14155552671")
        );
        assert_eq!(registry_number(" +14155552671 "), Some("+14155552671"));
        assert_eq!(registry_number("14155552671"), None);
        assert_eq!(registry_number("sip:agent@example.com"), None);
        assert_eq!(registry_number("+"), None);
        assert_eq!(registry_number(""), None);
        assert_eq!(registry_number(&format!("+{}", "1".repeat(16))), None);
    }

    #[test]
    fn the_default_number_is_only_the_default_organisations() {
        let default = Some("whatsapp:+14155552671");
        assert!(is_default("+14155552671", "main", default, Some("main")));
        assert!(is_default(
            "whatsapp:+14155552671",
            "main",
            default,
            Some("main")
        ));
        assert!(!is_default("+14155552671", "acme", default, Some("main")));
        assert!(!is_default("+14155552671", "main", default, None));
        assert!(!is_default("+14155552671", "main", None, Some("main")));
        assert!(!is_default("+14155552672", "main", default, Some("main")));
    }

    #[test]
    fn channels_round_trip_their_names() {
        for channel in [Channel::Voice, Channel::WhatsApp] {
            assert_eq!(Channel::parse(channel.name()), Some(channel));
        }
        assert_eq!(Channel::parse("sms"), None);
        assert_eq!(Channel::WhatsApp.kind().prefix(), "whatsapp#");
    }
}
