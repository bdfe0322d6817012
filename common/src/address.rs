//! Syntax of the values that cross process boundaries: channel addresses (RFC 5322 email
//! addr-spec, E.164 phone numbers, Telegram chat ids, push addresses), language tags, and the
//! names callers choose (categories, templates). Syntax, not business rules: each kind of
//! value has one parser here, and every service that accepts one uses it.

use crate::events::Platform;

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
        // `x@[10.0.0.5]` would have the relay deliver to any host, internal ones included.
        if domain.starts_with('[') {
            return Err(
                "is not an accepted email address (an address literal as the domain is not taken: use a domain name)"
                    .into(),
            );
        }
        if !domain.contains('.') {
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

/// What a category or template name may look like.
pub const NAME_RULE: &str = "must be 1-64 characters of a-z, 0-9, '_', '.', '-'";

/// A name callers choose: a category (`billing`, `security.otp`) or a template name.
pub fn parse_name(raw: &str) -> Result<&str, &'static str> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok { Ok(raw) } else { Err(NAME_RULE) }
}

/// A Telegram chat id: numeric, negative for groups.
pub fn parse_telegram_chat_id(raw: &str) -> Result<String, String> {
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    let ok = !digits.is_empty() && raw.len() <= 32 && digits.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(raw.to_owned())
    } else {
        Err("must be a numeric Telegram chat id".to_owned())
    }
}

/// Why `token` cannot be a device token of `platform`, if it cannot. FCM registration tokens
/// are printable ASCII, at most 4 KiB (they travel in a JSON body). APNs device tokens are
/// hexadecimal, at most 400 digits: they travel in the URL path (`/3/device/<token>`), where a
/// `/`, `?`, `#` or `..` would change which request is made.
pub fn check_push_token(platform: Platform, token: &str) -> Result<(), &'static str> {
    match platform {
        Platform::Fcm => {
            if !token.is_empty()
                && token.len() <= 4096
                && token.bytes().all(|b| b.is_ascii_graphic())
            {
                Ok(())
            } else {
                Err("an FCM token is 1 to 4096 printable ASCII characters")
            }
        }
        Platform::Apns => {
            if !token.is_empty()
                && token.len() <= 400
                && token.bytes().all(|b| b.is_ascii_hexdigit())
            {
                Ok(())
            } else {
                Err("an APNs device token is 1 to 400 hexadecimal digits")
            }
        }
    }
}

/// A push delivery's address: the platform and the device token, written `fcm:<token>` /
/// `apns:<token>` into `deliveries.address` and the dispatch message. Planning writes it
/// with [`PushAddress::to_string`]; the worker and the repeater read it with
/// [`PushAddress::parse`]; nothing else builds or splits the string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushAddress {
    pub platform: Platform,
    pub token: String,
}

impl PushAddress {
    pub fn parse(address: &str) -> Option<Self> {
        let (platform, token) = address.split_once(':')?;
        let platform = Platform::parse(platform)?;
        (!token.is_empty()).then(|| Self {
            platform,
            token: token.to_owned(),
        })
    }
}

impl std::fmt::Display for PushAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.platform.as_str(), self.token)
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
        for bad in [
            "",
            "no-at-sign",
            "a@",
            "@b.com",
            "a b@c.com",
            "a@localhost",
            "x@[10.0.0.5]",
            "x@[127.0.0.1]",
            "x@[IPv6:::1]",
        ] {
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

    #[test]
    fn apns_tokens_are_hex_so_they_cannot_change_the_request_path() {
        assert!(check_push_token(Platform::Apns, &"a0".repeat(32)).is_ok());
        for bad in [
            "",
            "../../3/device/other",
            "abc?x=1",
            "abc/def",
            "zz",
            &"a".repeat(401),
        ] {
            assert!(check_push_token(Platform::Apns, bad).is_err(), "{bad}");
        }
        assert!(check_push_token(Platform::Fcm, "fcm-token:with/anything").is_ok());
        assert!(check_push_token(Platform::Fcm, "has space").is_err());
    }

    #[test]
    fn push_addresses_carry_their_platform_and_round_trip() {
        let a = PushAddress::parse("fcm:abc").unwrap();
        assert_eq!((a.platform, a.token.as_str()), (Platform::Fcm, "abc"));
        assert_eq!(a.to_string(), "fcm:abc");
        assert_eq!(
            PushAddress::parse("apns:0a1b").unwrap().platform,
            Platform::Apns
        );
        for bad in ["apns:", "gcm:abc", "abc"] {
            assert_eq!(PushAddress::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_and_chat_ids_have_one_rule_each() {
        assert!(parse_name("security.otp").is_ok());
        for bad in ["", "Billing", "a b", &"x".repeat(65)] {
            assert!(parse_name(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_telegram_chat_id("-100123").unwrap(), "-100123");
        for bad in ["", "-", "12a", "--1", &"1".repeat(33)] {
            assert!(parse_telegram_chat_id(bad).is_err(), "{bad}");
        }
    }
}
