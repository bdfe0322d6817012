//! Quiet hours: is `now` inside a user's do-not-disturb window, and when does it end?
//!
//! The window is a wall-clock range in the user's IANA zone, evaluated on the local date, so
//! it keeps its meaning across DST changes. A window whose start is after its end crosses
//! midnight. An end time that does not exist that day (spring forward) ends at the first
//! local time after the gap; one that exists twice (fall back) ends at its first occurrence.

use api::profiles::QuietHours;
use chrono::{DateTime, Duration, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

fn clock(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M").ok()
}

/// The instant of local wall-clock time `naive` in `tz`, resolving DST gaps and folds.
fn resolve(tz: Tz, naive: NaiveDateTime) -> DateTime<Utc> {
    if let Some(t) = tz.from_local_datetime(&naive).earliest() {
        return t.with_timezone(&Utc);
    }
    // In a gap: the first minute after it.
    (1..=240)
        .find_map(|m| {
            tz.from_local_datetime(&(naive + Duration::minutes(m)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| naive.and_utc())
}

/// When the window containing `now` ends; `None` when `now` is outside quiet hours (or the
/// window is malformed, which users-service never stores).
pub fn quiet_until(q: &QuietHours, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let tz: Tz = q.timezone.parse().ok()?;
    let (start, end) = (clock(&q.start)?, clock(&q.end)?);
    let local = now.with_timezone(&tz).naive_local();
    let (date, t) = (local.date(), local.time());
    let end_date = if start == end {
        // An empty window: never quiet.
        return None;
    } else if start < end {
        (start <= t && t < end).then_some(date)?
    } else if t >= start {
        date.succ_opt()?
    } else if t < end {
        date
    } else {
        return None;
    };
    Some(resolve(tz, end_date.and_time(end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(start: &str, end: &str, tz: &str) -> QuietHours {
        QuietHours {
            start: start.into(),
            end: end.into(),
            timezone: tz.into(),
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_same_start_and_end_is_never_quiet() {
        let empty = q("22:00", "22:00", "UTC");
        for at in [
            "2026-01-10T21:59:00Z",
            "2026-01-10T22:00:00Z",
            "2026-01-10T03:00:00Z",
        ] {
            assert_eq!(quiet_until(&empty, utc(at)), None, "{at}");
        }
    }

    #[test]
    fn a_window_across_midnight() {
        let night = q("22:00", "07:00", "Europe/Berlin"); // CET = UTC+1 in January
        assert_eq!(
            quiet_until(&night, utc("2026-01-10T22:30:00Z")),
            Some(utc("2026-01-11T06:00:00Z")),
            "23:30 local"
        );
        assert_eq!(
            quiet_until(&night, utc("2026-01-11T05:59:00Z")),
            Some(utc("2026-01-11T06:00:00Z")),
            "06:59 local"
        );
        assert_eq!(
            quiet_until(&night, utc("2026-01-11T06:00:00Z")),
            None,
            "07:00 local: over"
        );
        assert_eq!(
            quiet_until(&night, utc("2026-01-11T11:00:00Z")),
            None,
            "noon"
        );
        assert_eq!(
            quiet_until(&night, utc("2026-01-10T21:00:00Z")),
            Some(utc("2026-01-11T06:00:00Z")),
            "22:00 local: starts"
        );
    }

    #[test]
    fn a_window_within_one_day() {
        let siesta = q("13:00", "15:00", "America/New_York"); // EST = UTC-5
        assert_eq!(
            quiet_until(&siesta, utc("2026-01-10T18:30:00Z")),
            Some(utc("2026-01-10T20:00:00Z"))
        );
        assert_eq!(quiet_until(&siesta, utc("2026-01-10T20:00:00Z")), None);
    }

    #[test]
    fn berlin_across_both_dst_changes() {
        let night = q("22:00", "07:00", "Europe/Berlin");
        // Spring forward 2026-03-29 02:00 CET → 03:00 CEST: the night before ends 07:00 CEST = 05:00Z.
        assert_eq!(
            quiet_until(&night, utc("2026-03-28T23:00:00Z")),
            Some(utc("2026-03-29T05:00:00Z"))
        );
        // Fall back 2026-10-25 03:00 CEST → 02:00 CET: ends 07:00 CET = 06:00Z.
        assert_eq!(
            quiet_until(&night, utc("2026-10-24T21:00:00Z")),
            Some(utc("2026-10-25T06:00:00Z"))
        );
        // An end inside the spring-forward gap (02:30 does not exist) ends when the gap does.
        let gap = q("01:00", "02:30", "Europe/Berlin");
        assert_eq!(
            quiet_until(&gap, utc("2026-03-29T00:30:00Z")),
            Some(utc("2026-03-29T01:00:00Z")),
            "03:00 CEST"
        );
    }

    #[test]
    fn new_york_across_both_dst_changes() {
        let night = q("21:00", "08:00", "America/New_York");
        // Spring forward 2026-03-08: 21:30 EST the evening before → 08:00 EDT = 12:00Z.
        assert_eq!(
            quiet_until(&night, utc("2026-03-08T02:30:00Z")),
            Some(utc("2026-03-08T12:00:00Z"))
        );
        // Fall back 2026-11-01: 22:00 EDT the evening before → 08:00 EST = 13:00Z.
        assert_eq!(
            quiet_until(&night, utc("2026-11-01T02:00:00Z")),
            Some(utc("2026-11-01T13:00:00Z"))
        );
        // 01:30 happens twice that night; the window ends at the first one (EDT, 05:30Z).
        let fold = q("00:30", "01:30", "America/New_York");
        assert_eq!(
            quiet_until(&fold, utc("2026-11-01T04:45:00Z")),
            Some(utc("2026-11-01T05:30:00Z"))
        );
    }
}
