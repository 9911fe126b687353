//! Phone numbers as the call providers send them.
//!
//! Exotel sends national numbers with a trunk prefix (`09631084471`) as often
//! as E.164 (`+919876543210`), so ingestion accepts both shapes and rejects
//! anything that is not a phone number at all.

/// Digits only, as used for comparisons.
pub fn digits(number: &str) -> String {
    number.chars().filter(|c| c.is_ascii_digit()).collect()
}

/// A plausible phone number: optional `+`, then 6 to 15 digits, allowing the
/// usual separators (space, dash, dot, parentheses).
pub fn is_plausible(number: &str) -> bool {
    let trimmed = number.trim();
    let body = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let allowed = body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'));
    let count = digits(body).len();
    allowed && (6..=15).contains(&count)
}

/// Seed rule: a call is outgoing when `from_number` contains the support
/// number. Compared on digits with the trunk `0` dropped, so `+919631084471`
/// matches a configured `09631084471`.
pub fn contains_number(haystack: &str, needle: &str) -> bool {
    let needle = digits(needle);
    let needle = needle.trim_start_matches('0');
    !needle.is_empty() && digits(haystack).contains(needle)
}

/// Seed 003's wording for a destination that is not in E.164 form.
pub const E164_ERROR: &str = "Invalid phone number format. Use E.164 format (e.g., +1234567890)";

/// Why a number is not dialable. The seed's example `+1234567890` is in
/// E.164 form but assigned by no country, so the two cases need different
/// words or the refusal cites the very number the user typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneError {
    /// Not `+` followed by digits only, or not parseable at all.
    NotE164,
    /// E.164 in form, but libphonenumber knows no country that assigns it.
    NotAssigned(String),
}

impl PhoneError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotE164 => "invalid_phone_number",
            Self::NotAssigned(_) => "phone_number_not_valid",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Self::NotE164 => E164_ERROR.to_string(),
            Self::NotAssigned(number) => format!(
                "Phone number {number} is not a valid number in any country; \
                 check the country code and number"
            ),
        }
    }
}

impl std::fmt::Display for PhoneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail())
    }
}

impl std::error::Error for PhoneError {}

/// A dialable E.164 number (`+` then the full international number), checked
/// against libphonenumber's metadata so impossible numbers are refused
/// before any provider is paid to try them. Only with the `phone` feature:
/// libphonenumber's metadata is the largest thing it would add to a binary.
#[cfg(feature = "phone")]
pub fn e164(number: &str) -> Result<String, PhoneError> {
    let trimmed = number.trim();
    let digits_only = trimmed
        .strip_prefix('+')
        .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()));
    if !digits_only {
        return Err(PhoneError::NotE164);
    }
    let parsed = phonenumber::parse(None, trimmed).map_err(|_| PhoneError::NotE164)?;
    if !phonenumber::is_valid(&parsed) {
        return Err(PhoneError::NotAssigned(trimmed.to_string()));
    }
    Ok(parsed.format().mode(phonenumber::Mode::E164).to_string())
}

/// Seed 004: "The service automatically adds `+` prefix if missing".
pub fn with_plus(number: &str) -> String {
    let trimmed = number.trim();
    if trimmed.starts_with('+') {
        trimmed.to_string()
    } else {
        format!("+{trimmed}")
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "phone")]
    #[test]
    fn e164_accepts_real_numbers_only() {
        assert_eq!(e164("+14155552671").unwrap(), "+14155552671");
        assert_eq!(e164(" +14155550123 ").unwrap(), "+14155550123");
        assert_eq!(e164("+447123456789").unwrap(), "+447123456789");
        assert_eq!(e164("+13473580012").unwrap(), "+13473580012");
    }

    #[cfg(feature = "phone")]
    #[test]
    fn e164_form_is_checked_before_assignment() {
        for bad in [
            "12345",
            "+1 234",
            "abc",
            "1234567890",
            "(123) 456-7890",
            "+1 415 555 2671",
            "+",
            "+1",
            "+12",
            // No country has code 999: libphonenumber cannot parse it.
            "+99912345678",
            "",
            "+1415555267a",
        ] {
            assert_eq!(e164(bad), Err(PhoneError::NotE164), "{bad}");
        }
        assert_eq!(PhoneError::NotE164.code(), "invalid_phone_number");
        assert_eq!(PhoneError::NotE164.detail(), E164_ERROR);
    }

    #[cfg(feature = "phone")]
    #[test]
    fn e164_numbers_no_country_assigns_have_their_own_error() {
        for unassigned in ["+1234567890", "+15555555555", "+44123"] {
            assert_eq!(
                e164(unassigned),
                Err(PhoneError::NotAssigned(unassigned.into())),
                "{unassigned}"
            );
        }
        let err = e164("+1234567890").unwrap_err();
        assert_eq!(err.code(), "phone_number_not_valid");
        assert_eq!(
            err.detail(),
            "Phone number +1234567890 is not a valid number in any country; \
             check the country code and number"
        );
    }

    #[test]
    fn seed_004_adds_the_missing_plus() {
        assert_eq!(with_plus("13473580012"), "+13473580012");
        assert_eq!(with_plus("+13473580012"), "+13473580012");
    }

    use super::*;

    #[test]
    fn accepts_e164_and_national_numbers() {
        assert!(is_plausible("+919876543210"));
        assert!(is_plausible("09631084471"));
        assert!(is_plausible("+1 (415) 867-5309"));
    }

    #[test]
    fn rejects_non_numbers() {
        assert!(!is_plausible("hello"));
        assert!(!is_plausible("12345"));
        assert!(!is_plausible("+1234567890123456"));
        assert!(!is_plausible("0963108447x"));
        assert!(!is_plausible(""));
    }

    #[test]
    fn support_number_matches_across_formats() {
        assert!(contains_number("+919631084471", "09631084471"));
        assert!(contains_number("09631084471", "09631084471"));
        assert!(!contains_number("+919876543210", "09631084471"));
        assert!(!contains_number("+919876543210", ""));
    }
}
