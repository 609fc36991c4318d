//! Lucca's date and time strings: naive local datetimes
//! (`2014-09-01T00:00:00`, `2015-09-07T10:20:06.583`), UTC or offset
//! datetimes of the newer API (`2024-04-15T23:12:54.0001Z`) and plain dates.
//! No time zone is ever invented for a naive value.

/// What a string holds, as far as column typing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemporalKind {
    /// `yyyy-mm-dd`.
    Date,
    /// A datetime without zone.
    Naive,
    /// A datetime with `Z` or an offset.
    Zoned,
}

/// A parsed value: days since the epoch, or microseconds since the epoch
/// (local wall time for naive values, UTC for zoned ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporal {
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01T00:00:00, wall time.
    Naive(i64),
    /// Microseconds since the epoch, UTC.
    Zoned(i64),
}

impl Temporal {
    /// The kind of this value.
    pub fn kind(self) -> TemporalKind {
        match self {
            Temporal::Date(_) => TemporalKind::Date,
            Temporal::Naive(_) => TemporalKind::Naive,
            Temporal::Zoned(_) => TemporalKind::Zoned,
        }
    }
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The number written by the ASCII digits `s` (`None` if there are none or
/// any byte is not one), read in one pass.
fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u32, |n, &b| {
        let d = b.wrapping_sub(b'0');
        (d < 10).then(|| n * 10 + u32::from(d))
    })
}

/// 10^(6 - n): what a fraction of `n` digits is multiplied by to count
/// microseconds.
const FRACTION_SCALE: [u32; 7] = [1_000_000, 100_000, 10_000, 1_000, 100, 10, 1];

/// `yyyy-mm-dd` as days since 1970-01-01; `None` for a day that does not
/// exist.
fn date(s: &[u8]) -> Option<i32> {
    if s.len() != 10 || s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    days_from_civil(
        digits(&s[0..4])? as i32,
        digits(&s[5..7])?,
        digits(&s[8..10])?,
    )
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`): arithmetic only, the typing of a
/// million datetimes a second spent a fifth of its time in calendar
/// tables.
fn days_from_civil(year: i32, month: u32, day: u32) -> Option<i32> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if day == 0 || day > month_days {
        return None;
    }
    // Years start in March, so that the leap day ends them.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = (y - era * 400) as u32;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era as i32 - 719_468)
}

/// The date of a day count (the inverse of [`days_from_civil`]):
/// (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `yyyy-mm-dd` of a day count since 1970-01-01 (a DATE column's value
/// as text).
pub fn format_date(days: i32) -> String {
    let (year, month, day) = civil_from_days(i64::from(days));
    format!("{year:04}-{month:02}-{day:02}")
}

/// `yyyy-mm-ddThh:mm:ss` of microseconds since the epoch, with the
/// fraction Lucca writes (`.583`, `.0001`: trailing zeros dropped) when
/// there is one. A zoned value's caller appends `Z` (its microseconds are
/// UTC).
pub fn format_datetime(micros: i64) -> String {
    let (year, month, day) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
    let in_day = micros.rem_euclid(MICROS_PER_DAY);
    let (seconds, fraction) = (in_day / 1_000_000, in_day % 1_000_000);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    if fraction != 0 {
        let digits = format!("{fraction:06}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text
}

/// Parses a Lucca date or datetime; `None` for anything else.
pub fn parse(text: &str) -> Option<Temporal> {
    let s = text.as_bytes();
    let day = date(s.get(..10)?)?;
    if s.len() == 10 {
        return Some(Temporal::Date(day));
    }
    if !matches!(s.get(10), Some(b'T') | Some(b' ')) || s.len() < 19 {
        return None;
    }
    let t = &s[11..19];
    if t[2] != b':' || t[5] != b':' {
        return None;
    }
    let mut micros: u32 = 0;
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        // Digits past the microsecond are dropped, as before.
        let kept = n.min(6);
        micros = digits(&frac[..kept])? * FRACTION_SCALE[kept];
        rest = &frac[n..];
    }
    let (hour, minute, second) = (digits(&t[0..2])?, digits(&t[3..5])?, digits(&t[6..8])?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let seconds = i64::from(hour * 3600 + minute * 60 + second);
    let wall = i64::from(day) * MICROS_PER_DAY + seconds * 1_000_000 + i64::from(micros);
    match rest {
        [] => Some(Temporal::Naive(wall)),
        [b'Z'] | [b'z'] => Some(Temporal::Zoned(wall)),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            let offset = i64::from(hours * 60 + minutes) * 60_000_000;
            Some(Temporal::Zoned(if *sign == b'+' {
                wall - offset
            } else {
                wall + offset
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lucca_formats() {
        assert_eq!(parse("1970-01-02"), Some(Temporal::Date(1)));
        assert_eq!(
            parse("1970-01-01T00:00:01"),
            Some(Temporal::Naive(1_000_000))
        );
        assert_eq!(
            parse("1970-01-01T00:00:00.583"),
            Some(Temporal::Naive(583_000))
        );
        assert_eq!(
            parse("1970-01-01T00:00:00.0001Z"),
            Some(Temporal::Zoned(100))
        );
        assert_eq!(parse("1970-01-01T01:00:00+01:00"), Some(Temporal::Zoned(0)));
        assert_eq!(
            parse("2015-09-07T10:20:06.583").map(Temporal::kind),
            Some(TemporalKind::Naive)
        );
        for bad in [
            "",
            "2015",
            "2015-13-01",
            "2015-02-30",
            "hello world",
            "2015-09-07T25:00:00",
            "2015-09-07T10:20:06.",
            "2015-09-07Tab:cd:ef",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn formatted_values_parse_back_to_themselves() {
        for text in [
            "0000-03-01",
            "1600-02-29",
            "1969-12-31",
            "1970-01-01",
            "2024-02-29",
            "9999-12-31",
        ] {
            match parse(text) {
                Some(Temporal::Date(days)) => assert_eq!(format_date(days), text),
                other => panic!("{text}: {other:?}"),
            }
        }
        for text in [
            "1969-12-31T23:59:59.999999",
            "1970-01-01T00:00:00",
            "2015-09-07T10:20:06.583",
            "2024-04-15T23:12:54.0001",
            "2024-02-29T12:00:00.5",
        ] {
            match parse(text) {
                Some(Temporal::Naive(us)) => assert_eq!(format_datetime(us), text),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn dates_and_times_match_chrono() {
        use chrono::{NaiveDate, NaiveDateTime};
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1);
        for year in (0..=9999).step_by(7).chain(1895..=2105) {
            for month in 0..=13 {
                for day in 0..=32 {
                    let text = format!("{year:04}-{month:02}-{day:02}");
                    let expected = NaiveDate::from_ymd_opt(year, month, day)
                        .zip(epoch)
                        .map(|(d, e)| Temporal::Date((d - e).num_days() as i32));
                    assert_eq!(parse(&text), expected, "{text}");
                }
            }
        }
        for text in [
            "0000-01-01T00:00:00",
            "1600-02-29T12:34:56.000001",
            "1969-12-31T23:59:59.999999",
            "2024-02-29T23:59:59",
            "2024-02-29T23:59:59.1",
            "2024-02-29T23:59:59.12",
            "2024-02-29T23:59:59.1234",
            "2024-02-29T23:59:59.12345",
            "2024-02-29T23:59:59.1234567",
            "2024-02-29T23:59:59.123456789",
            "9999-12-31T23:59:59.999999",
        ] {
            let expected = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .map(|t| Temporal::Naive(t.and_utc().timestamp_micros()))
                .ok();
            assert_eq!(parse(text), expected, "{text}");
        }
        for bad in ["2015-09-07T23:60:00", "2015-09-07T23:00:60", "1900-02-29"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
