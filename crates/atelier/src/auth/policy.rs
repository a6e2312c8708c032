//! What counts as an acceptable email address and new password.
//!
//! Passwords follow NIST SP 800-63B: 12 to 128 characters, no composition rules,
//! and the guessable ones (common passwords, keyboard walks, the user's own email)
//! refused, using zxcvbn's dictionaries and estimate.

use zxcvbn::Score;

pub const MIN_PASSWORD_CHARS: usize = 12;
pub const MAX_PASSWORD_CHARS: usize = 128;
const MAX_EMAIL_LEN: usize = 254;

/// Trims and lower-cases an email address and checks its shape. Returns the
/// normalised address, or what is wrong with it.
pub fn normalize_email(raw: &str) -> Result<String, &'static str> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err("email address is empty");
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err("email address is longer than 254 characters");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err("email address needs an @");
    };
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return Err("email address has an invalid part before the @");
    }
    if local
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\"\\".contains(c))
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
    {
        return Err("email address has an invalid part before the @");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err("email address has an invalid domain");
    }
    Ok(email)
}

/// Checks a new password; `context` holds words the password must not be built from
/// (the email address and its parts).
pub fn check_new_password(password: &str, context: &[&str]) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!(
            "password must have at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(format!(
            "password must have at most {MAX_PASSWORD_CHARS} characters"
        ));
    }
    let estimate = zxcvbn::zxcvbn(password, context);
    if estimate.score() < Score::Three {
        let hint = estimate
            .feedback()
            .and_then(|f| f.warning())
            .map(|w| format!(": {}", w.to_string().trim_end_matches('.')))
            .unwrap_or_default();
        return Err(format!(
            "password is too easy to guess{hint}. A few unrelated words make a strong one"
        ));
    }
    Ok(())
}

/// The words from an email address a password must not lean on.
pub fn email_context(email: &str) -> Vec<&str> {
    let mut words = vec![email];
    if let Some((local, domain)) = email.split_once('@') {
        words.push(local);
        words.extend(domain.split('.'));
        words.extend(local.split(['.', '_', '-', '+']));
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalize_email("  Ada.Lovelace@Example.COM "),
            Ok("ada.lovelace@example.com".into())
        );
        assert_eq!(
            normalize_email("a+tag@sub.example.org"),
            Ok("a+tag@sub.example.org".into())
        );
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@-b.com",
            "a@b..com",
            ".a@b.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn passwords_need_length_and_unpredictability() {
        assert!(
            check_new_password("short", &[])
                .unwrap_err()
                .contains("at least 12")
        );
        assert!(
            check_new_password(&"x".repeat(129), &[])
                .unwrap_err()
                .contains("at most 128")
        );
        for weak in [
            "password1234",
            "qwertyuiopas",
            "aaaaaaaaaaaa",
            "123456789012",
            "iloveyou1234",
        ] {
            assert!(check_new_password(weak, &[]).is_err(), "{weak} should be refused");
        }
        let ctx = email_context("margaret.hamilton@example.com");
        assert!(
            check_new_password("margarethamilton", &ctx).is_err(),
            "built from the email"
        );
        for strong in [
            "correct horse battery staple",
            "velvet-otter-quantum-42",
            "Tr0ub4dor&3-lamp-fig",
        ] {
            assert_eq!(check_new_password(strong, &[]), Ok(()), "{strong}");
        }
        // No composition rules: a long lowercase passphrase is fine.
        assert_eq!(check_new_password("the purple giraffe reads slowly", &[]), Ok(()));
    }
}
