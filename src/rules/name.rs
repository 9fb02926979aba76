//! Domain-name normalisation: done once, when rules are loaded or a target enters the gateway.
//!
//! Names are lower-cased, a trailing dot is stripped, and internationalised names are turned
//! into their punycode (`xn--`) form with `idna`, so that the policy's lookup path compares
//! plain ASCII bytes. The lookup path itself only lower-cases ASCII, into a stack buffer.

use std::borrow::Cow;

/// The longest name the DNS allows, in presentation form without the trailing dot.
pub const MAX_NAME_LEN: usize = 253;

/// Why a domain name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty (or only a dot where the root is not allowed).
    #[error("empty domain name")]
    Empty,
    /// Longer than 253 bytes once normalised.
    #[error("domain name longer than 253 bytes")]
    TooLong,
    /// An empty label (`a..b`) or one longer than 63 bytes.
    #[error("bad label in `{0}` (empty, or longer than 63 bytes)")]
    Label(String),
    /// A character that cannot appear in a host name.
    #[error("bad character {1:?} in domain name `{0}`")]
    Char(String, char),
    /// An internationalised name that IDNA rejects.
    #[error("cannot convert `{0}` to punycode (IDNA)")]
    Idna(String),
}

/// Normalises a domain name: lower case, no trailing dot, IDN as punycode.
///
/// Returns the input unchanged (borrowed) when it is already normal.
pub fn normalize_domain(name: &str) -> Result<Cow<'_, str>, NameError> {
    let trimmed = name.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    let out: Cow<'_, str> = if trimmed.is_ascii() {
        if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(trimmed.to_ascii_lowercase())
        } else {
            Cow::Borrowed(trimmed)
        }
    } else {
        let ascii =
            idna::domain_to_ascii(trimmed).map_err(|_| NameError::Idna(trimmed.to_string()))?;
        Cow::Owned(ascii)
    };
    validate(&out)?;
    Ok(out)
}

fn validate(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(NameError::Label(name.to_string()));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(NameError::Char(name.to_string(), c));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(normalize_domain("FaceBook.COM.").unwrap(), "facebook.com");
        assert!(matches!(
            normalize_domain("x.com").unwrap(),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            normalize_domain("президент.рф").unwrap(),
            "xn--d1abbgf6aiiy.xn--p1ai"
        );
        assert_eq!(
            normalize_domain("_sip._tcp.example.com").unwrap(),
            "_sip._tcp.example.com"
        );
    }

    #[test]
    fn rejects() {
        assert_eq!(normalize_domain(" ."), Err(NameError::Empty));
        assert!(matches!(normalize_domain("a..b"), Err(NameError::Label(_))));
        assert!(matches!(
            normalize_domain("a b.com"),
            Err(NameError::Char(..))
        ));
        assert!(matches!(
            normalize_domain("http://x.com"),
            Err(NameError::Char(..))
        ));
        let long = format!("{}.com", "a".repeat(64));
        assert!(matches!(normalize_domain(&long), Err(NameError::Label(_))));
    }
}
