//! Input types that validate themselves: once parsed, the rest of the service trusts them.

pub use common::address::{EmailAddress, PhoneE164, parse_locale};
use common::problem::FieldError;

/// An IANA time zone name.
pub fn parse_timezone(raw: &str) -> Result<String, String> {
    raw.parse::<chrono_tz::Tz>()
        .map(|tz| tz.name().to_owned())
        .map_err(|_| format!("`{raw}` is not an IANA time zone (e.g. Europe/Berlin)"))
}

/// `HH:MM` on a 24-hour clock.
pub fn parse_clock(raw: &str) -> Result<chrono::NaiveTime, String> {
    let bad = || format!("`{raw}` is not a time of day (HH:MM, 00:00 to 23:59)");
    let (h, m) = raw.split_once(':').ok_or_else(bad)?;
    if !api::rules::CLOCK.is_match(raw) {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    chrono::NaiveTime::from_hms_opt(h, m, 0).ok_or_else(bad)
}

/// Collects field errors while parsing a request.
#[derive(Default)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    /// Parses `value` with `f`, recording a failure under `field`.
    pub fn check<T>(
        &mut self,
        field: &str,
        value: Option<&str>,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        match value.map(&f) {
            Some(Ok(v)) => Some(v),
            Some(Err(msg)) => {
                self.0.push(FieldError::new(field, msg));
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_times() {
        assert!(parse_clock("22:00").is_ok());
        assert!(parse_clock("00:00").is_ok());
        for bad in ["25:00", "7:00", "12:60", "noon", "12:00:00"] {
            assert!(parse_clock(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn time_zones_and_locales() {
        assert_eq!(parse_timezone("Europe/Berlin").unwrap(), "Europe/Berlin");
        assert!(parse_timezone("Mars/Olympus").is_err());
        assert!(parse_locale("de-AT").is_ok());
        assert!(parse_locale("german!").is_err());
    }
}
