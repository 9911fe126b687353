//! Masking personal data before it reaches a log line.

/// Keeps the country code hint and the last four digits: `+91******3210`.
pub fn phone(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.len() <= 4 {
        return "*".repeat(digits.len());
    }
    let plus = if number.trim_start().starts_with('+') {
        "+"
    } else {
        ""
    };
    let keep_head = if plus.is_empty() {
        0
    } else {
        2.min(digits.len() - 4)
    };
    let head: String = digits[..keep_head].iter().collect();
    let tail: String = digits[digits.len() - 4..].iter().collect();
    format!(
        "{plus}{head}{}{tail}",
        "*".repeat(digits.len() - 4 - keep_head)
    )
}

/// Keeps the first letter and the domain: `a***@company.com`.
pub fn email(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

/// Free text (a provider's error message) with every phone-number-looking
/// run of digits (8 or more, optionally after `+`, not inside a word such as
/// a sid) passed through [`phone`]. Shorter runs (error codes) stay.
pub fn phones_in(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        let plus = chars[i] == '+';
        let digits_from = if plus { i + 1 } else { i };
        let mut end = digits_from;
        while end < chars.len() && chars[end].is_ascii_digit() {
            end += 1;
        }
        let inside_word = start > 0 && chars[start - 1].is_ascii_alphanumeric()
            || end < chars.len() && chars[end].is_ascii_alphabetic();
        if end - digits_from >= 8 && !inside_word {
            let number: String = chars[start..end].iter().collect();
            out.push_str(&phone(&number));
            i = end;
        } else if end > digits_from {
            out.extend(&chars[start..end]);
            i = end;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_phone_numbers() {
        assert_eq!(phone("+919876543210"), "+91******3210");
        assert_eq!(phone("09631084471"), "*******4471");
        assert_eq!(phone("123"), "***");
    }

    #[test]
    fn masks_numbers_inside_provider_messages() {
        assert_eq!(
            phones_in("The 'To' number +15551234567 is not a valid phone number."),
            "The 'To' number +15*****4567 is not a valid phone number."
        );
        assert_eq!(
            phones_in("To: whatsapp:+14155550100 (code 21211)"),
            "To: whatsapp:+14*****0100 (code 21211)"
        );
        assert_eq!(phones_in("bare 919876543210."), "bare ********3210.");
        // Sids and short codes are not numbers.
        let sid = "SM0123456789abcdef0123456789abcdef";
        assert_eq!(phones_in(sid), sid);
        assert_eq!(phones_in("HTTP 400, code 63016"), "HTTP 400, code 63016");
    }

    #[test]
    fn masks_emails() {
        assert_eq!(email("alice@company.com"), "a***@company.com");
        assert_eq!(email("not-an-email"), "***");
    }
}
