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

#[cfg(test)]
mod tests {
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
