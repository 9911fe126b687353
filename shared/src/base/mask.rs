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
    fn masks_emails() {
        assert_eq!(email("alice@company.com"), "a***@company.com");
        assert_eq!(email("not-an-email"), "***");
    }
}
