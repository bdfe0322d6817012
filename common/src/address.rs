//! Syntax of channel addresses (RFC 5322 email addr-spec, E.164 phone numbers) and language
//! tags. Protocol
//! syntax, not business rules: every service that accepts an address parses it the same way.

/// An email address: RFC 5322 addr-spec, domain lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.len() > 254 {
            return Err("must be at most 254 characters".into());
        }
        let parsed = email_address::EmailAddress::parse_with_options(
            raw,
            email_address::Options::default().without_display_text(),
        )
        .map_err(|e| format!("is not a valid email address ({e})"))?;
        let (local, domain) = (parsed.local_part(), parsed.domain());
        if !domain.contains('.') && !domain.starts_with('[') {
            return Err("is not a valid email address (the domain has no dot)".into());
        }
        Ok(Self(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number, validated against the numbering plan (libphonenumber metadata) and stored
/// in E.164 (`+4930123456`). International form (leading `+`) is required: without a
/// country there is no way to know which plan a local number belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneE164(String);

impl PhoneE164 {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if !raw.starts_with('+') {
            return Err(
                "must be in international E.164 form, starting with + and the country code".into(),
            );
        }
        let number =
            phonenumber::parse(None, raw).map_err(|e| format!("is not a phone number ({e})"))?;
        if !phonenumber::is_valid(&number) {
            return Err("is not a valid phone number for its country".into());
        }
        Ok(Self(
            number.format().mode(phonenumber::Mode::E164).to_string(),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A BCP 47 language tag, loosely: `en`, `de-AT`, `zh-Hant-TW`.
pub fn parse_locale(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 35
        && raw
            .split('-')
            .all(|p| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_alphanumeric()))
        && raw.split('-').next().is_some_and(|l| {
            (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphabetic())
        });
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(format!("`{raw}` is not a language tag (e.g. en, de-AT)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_validated_and_the_domain_lower_cased() {
        assert_eq!(
            EmailAddress::parse("Ann.Lee@Example.COM").unwrap().as_str(),
            "Ann.Lee@example.com"
        );
        for bad in ["", "no-at-sign", "a@", "@b.com", "a b@c.com", "a@localhost"] {
            assert!(
                EmailAddress::parse(bad).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn phones_must_be_e164() {
        assert_eq!(
            PhoneE164::parse("+49 30 1234567").unwrap().as_str(),
            "+49301234567"
        );
        for bad in ["030 1234567", "+0123456789", "+12ab5678901", "+123"] {
            assert!(PhoneE164::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
