//! Calendar days in China time (UTC+8), the unit every date rule of the spec compares in.
//!
//! A [`Day`] is a count of days since 1970-01-01, so comparisons are integer comparisons. The
//! feed writes dates in three shapes (`2026-11-27`, `2026/11/27`, `2026年11月27日`); listing
//! events carry RFC 3339 instants, which are mapped to the UTC+8 calendar day.

use std::fmt;

/// Seconds east of UTC of China Standard Time.
const CHINA_OFFSET_SECS: i64 = 8 * 3600;

/// A calendar day, as days since 1970-01-01.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Day(i32);

/// A date or instant that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    /// The text is not one of the accepted shapes.
    #[error("unreadable date {0:?}: expected YYYY-MM-DD, YYYY/MM/DD or YYYY年MM月DD日")]
    Shape(String),
    /// The shape is right but the day does not exist.
    #[error("no such day {0:?}")]
    NoSuchDay(String),
    /// The text is not an RFC 3339 instant with an offset.
    #[error(
        "unreadable time {0:?}: expected RFC 3339 with an offset, e.g. 2026-11-27T02:00:00+08:00"
    )]
    Instant(String),
}

impl Day {
    /// The day with this number of days since 1970-01-01.
    pub const fn from_days(days: i32) -> Self {
        Day(days)
    }

    /// Days since 1970-01-01.
    pub const fn days(self) -> i32 {
        self.0
    }

    /// The day of a proleptic Gregorian date, if it exists.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Self> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Day(days_from_civil(year, month, day)))
    }

    /// Year, month and day of this day.
    pub fn ymd(self) -> (i32, u32, u32) {
        civil_from_days(self.0)
    }

    /// The UTC+8 calendar day of an instant given as seconds since the Unix epoch.
    pub fn from_unix_seconds_cn(secs: i64) -> Self {
        let local = secs.saturating_add(CHINA_OFFSET_SECS);
        Day(local.div_euclid(86_400) as i32)
    }

    /// Reads a feed date: `2026-11-27`, `2026/11/27` or `2026年11月27日`; month and day may
    /// have one digit. Surrounding white space is ignored.
    pub fn parse_feed_date(text: &str) -> Result<Self, DateError> {
        let t = text.trim();
        let shape = || DateError::Shape(text.to_owned());
        let (y, rest, sep2, end) = if let Some((y, rest)) = t.split_once('年') {
            (y, rest, '月', Some('日'))
        } else if let Some((y, rest)) = t.split_once('-') {
            (y, rest, '-', None)
        } else if let Some((y, rest)) = t.split_once('/') {
            (y, rest, '/', None)
        } else {
            return Err(shape());
        };
        let (m, d) = rest.split_once(sep2).ok_or_else(shape)?;
        let d = match end {
            Some(e) => d.strip_suffix(e).ok_or_else(shape)?,
            None => d,
        };
        let year = digits(y, 4, 4).ok_or_else(shape)?;
        let month = digits(m, 1, 2).ok_or_else(shape)?;
        let day = digits(d, 1, 2).ok_or_else(shape)?;
        Day::from_ymd(year as i32, month, day).ok_or_else(|| DateError::NoSuchDay(text.to_owned()))
    }

    /// The UTC+8 calendar day of an RFC 3339 instant such as `2026-11-27T02:00:00+08:00`
    /// (`Z` or a numeric offset; `T`, `t` or a space between date and time; fractional
    /// seconds allowed).
    pub fn parse_rfc3339_cn(text: &str) -> Result<Self, DateError> {
        if let Some(day) = rfc3339_cn_fast(text.as_bytes()) {
            return Ok(day);
        }
        let secs = parse_rfc3339_unix(text).ok_or_else(|| DateError::Instant(text.to_owned()))?;
        Ok(Day::from_unix_seconds_cn(secs))
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// The fast path of [`Day::parse_rfc3339_cn`] for the two shapes marketplaces send nearly
/// always, `YYYY-MM-DDThh:mm:ss+08:00` and `YYYY-MM-DDThh:mm:ssZ`: fixed positions, no
/// seconds arithmetic (at +08:00 the China day is the date written; at `Z` it is the next
/// day from 16:00 on), the day number from tables. `None` for anything else, valid or not: the general
/// parser then decides, so every error and every unusual shape is exactly its answer.
#[inline]
fn rfc3339_cn_fast(b: &[u8]) -> Option<Day> {
    let utc = match b.len() {
        25 if &b[19..25] == b"+08:00" => false,
        20 if b[19] == b'Z' => true,
        _ => return None,
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let d = |i: usize| u32::from(b[i].wrapping_sub(b'0'));
    let mut bad = false;
    for i in [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18] {
        bad |= d(i) > 9;
    }
    if bad {
        return None;
    }
    let two = |i: usize| d(i) * 10 + d(i + 1);
    let (year, month, day) = (two(0) * 100 + two(2), two(5), two(8));
    let (hour, minute, second) = (two(11), two(14), two(17));
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let date = day_of_ymd(year, month, day)?;
    Some(Day(date + i32::from(utc && hour >= 16)))
}

/// [`Day::from_ymd`] for a year of at most four digits, with tables in place of the month's
/// branches (the days of a pool of listings vary at random: a branch on the month would be
/// mispredicted). Exactly `Day::from_ymd(year, month, day).map(Day::days)` (tested).
#[inline]
fn day_of_ymd(year: u32, month: u32, day: u32) -> Option<i32> {
    // Days before each month from March (the year counted from March puts the leap day last).
    const FROM_MARCH: [u32; 13] = [0, 306, 337, 0, 31, 61, 92, 122, 153, 184, 214, 245, 275];
    const LENGTH: [u32; 13] = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) {
        return None;
    }
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    let length = LENGTH[month as usize] + u32::from(month == 2 && leap);
    if day == 0 || day > length {
        return None;
    }
    // 400 years on (146,097 days), so the year before a January of year 0 is not negative.
    let y = year + 400 - u32::from(month <= 2);
    let days = y * 365 + y / 4 - y / 100 + y / 400 + FROM_MARCH[month as usize] + day - 1;
    Some(days as i32 - 719_468 - 146_097)
}

/// Seconds since the Unix epoch of an RFC 3339 instant, or `None` if it is not one.
fn parse_rfc3339_unix(text: &str) -> Option<i64> {
    // Every accepted instant is ASCII; checking first makes the byte slicing below safe.
    if !text.is_ascii() {
        return None;
    }
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    // Fixed positions, read as bytes (no char-boundary checks: the text is ASCII).
    let year = ascii_digits(&b[0..4])? as i32;
    let month = ascii_digits(&b[5..7])?;
    let day = ascii_digits(&b[8..10])?;
    let hour = ascii_digits(&b[11..13])?;
    let minute = ascii_digits(&b[14..16])?;
    let second = ascii_digits(&b[17..19])?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let date = Day::from_ymd(year, month, day)?;
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), ..] if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let oh = digits(&rest[1..3], 2, 2)? as i64;
            let om = digits(&rest[4..6], 2, 2)? as i64;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let local = i64::from(date.0) * 86_400
        + i64::from(hour) * 3600
        + i64::from(minute) * 60
        + i64::from(second.min(59));
    Some(local - offset)
}

/// The value of a few ASCII digits, `None` if one is not a digit.
#[inline]
fn ascii_digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |n, &c| {
        let d = c.wrapping_sub(b'0');
        (d < 10).then_some(n * 10 + u32::from(d))
    })
}

/// Parses `min..=max` ASCII digits.
fn digits(s: &str, min: usize, max: usize) -> Option<u32> {
    if s.len() < min || s.len() > max {
        return None;
    }
    s.bytes().try_fold(0u32, |n, c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        _ => 28,
    }
}

// Howard Hinnant's civil calendar algorithms.
fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = (y - era * 400) as u32;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe as i32 - 719_468
}

fn civil_from_days(z: i32) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u32;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i32 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> Day {
        Day::from_ymd(y, m, d).unwrap()
    }

    #[test]
    fn all_three_feed_date_shapes_read_the_same_day() {
        let want = day(2026, 11, 27);
        assert_eq!(Day::parse_feed_date("2026-11-27").unwrap(), want);
        assert_eq!(Day::parse_feed_date("2026/11/27").unwrap(), want);
        assert_eq!(Day::parse_feed_date("2026年11月27日").unwrap(), want);
        assert_eq!(Day::parse_feed_date(" 2026-11-27 ").unwrap(), want);
    }

    #[test]
    fn one_digit_month_and_day_are_accepted() {
        assert_eq!(Day::parse_feed_date("2024-8-1").unwrap(), day(2024, 8, 1));
        assert_eq!(Day::parse_feed_date("2024/8/1").unwrap(), day(2024, 8, 1));
        assert_eq!(
            Day::parse_feed_date("2024年8月1日").unwrap(),
            day(2024, 8, 1)
        );
    }

    #[test]
    fn malformed_dates_are_refused() {
        for bad in [
            "",
            "2026",
            "26-11-27",
            "2026.11.27",
            "2026-11-27x",
            "2026年11月27",
            "2026-111-2",
        ] {
            assert!(
                matches!(Day::parse_feed_date(bad), Err(DateError::Shape(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Day::parse_feed_date("2026-02-29"),
            Err(DateError::NoSuchDay(_))
        ));
        assert!(matches!(
            Day::parse_feed_date("2026-13-01"),
            Err(DateError::NoSuchDay(_))
        ));
        assert!(Day::parse_feed_date("2024-02-29").is_ok());
    }

    #[test]
    fn the_table_day_number_is_from_ymd_for_every_four_digit_year() {
        for year in (0..10_000)
            .step_by(7)
            .chain([0, 1600, 1900, 2000, 2024, 2100, 9999])
        {
            for month in 0..14 {
                for d in 0..33 {
                    assert_eq!(
                        day_of_ymd(year, month, d),
                        Day::from_ymd(year as i32, month, d).map(Day::days),
                        "{year}-{month}-{d}"
                    );
                }
            }
        }
    }

    #[test]
    fn civil_round_trip_over_centuries() {
        for n in (-200_000..200_000).step_by(97) {
            let (y, m, d) = Day(n).ymd();
            assert_eq!(day(y, m, d), Day(n));
        }
        assert_eq!(day(1970, 1, 1).days(), 0);
        assert_eq!(day(2000, 3, 1).to_string(), "2000-03-01");
    }

    #[test]
    fn instants_map_to_the_china_calendar_day() {
        // 16:00 UTC is midnight in Beijing: the next day.
        assert_eq!(
            Day::parse_rfc3339_cn("2026-11-26T15:59:59Z").unwrap(),
            day(2026, 11, 26)
        );
        assert_eq!(
            Day::parse_rfc3339_cn("2026-11-26T16:00:00Z").unwrap(),
            day(2026, 11, 27)
        );
        assert_eq!(
            Day::parse_rfc3339_cn("2026-11-27T00:00:00+08:00").unwrap(),
            day(2026, 11, 27)
        );
        assert_eq!(
            Day::parse_rfc3339_cn("2026-11-26T23:59:59.999+08:00").unwrap(),
            day(2026, 11, 26)
        );
        assert_eq!(
            Day::parse_rfc3339_cn("2026-11-26T11:30:00-05:00").unwrap(),
            day(2026, 11, 27)
        );
        assert_eq!(
            Day::parse_rfc3339_cn("2026-11-26 12:00:00z").unwrap(),
            day(2026, 11, 26)
        );
    }

    /// The general parser alone (what `parse_rfc3339_cn` was before its fast path).
    fn general(text: &str) -> Result<Day, DateError> {
        parse_rfc3339_unix(text)
            .map(Day::from_unix_seconds_cn)
            .ok_or_else(|| DateError::Instant(text.to_owned()))
    }

    #[test]
    fn the_fast_path_agrees_with_the_general_parser_at_its_edges() {
        for t in [
            "2026-11-26T15:59:59Z",
            "2026-11-26T16:00:00Z",
            "2026-12-31T23:59:60Z",
            "2024-02-29T00:00:00+08:00",
            "2026-02-29T00:00:00+08:00",
            "2026-00-10T00:00:00+08:00",
            "2026-11-00T00:00:00+08:00",
            "2026-11-27T24:00:00+08:00",
            "2026-11-27T23:60:00+08:00",
            "2026-11-27T23:59:61+08:00",
            "0000-03-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-11-27t02:00:00+08:00",
            "2026-11-27T02:00:00z",
            "2026-11-27T02:00:00+09:00",
            "2026-11-27T02:0/:00+08:00",
            "2026-11-27T02:00:00+08:0:",
        ] {
            assert_eq!(Day::parse_rfc3339_cn(t), general(t), "{t}");
        }
        // The common shapes do take the fast path; the rest go to the general parser.
        assert_eq!(
            rfc3339_cn_fast(b"2026-11-26T16:00:00Z"),
            Some(day(2026, 11, 27))
        );
        assert_eq!(
            rfc3339_cn_fast(b"2026-11-26T16:00:00+08:00"),
            Some(day(2026, 11, 26))
        );
        assert_eq!(rfc3339_cn_fast(b"2026-11-26T16:00:00.5Z"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Valid instants of both fast shapes, near-misses of them and arbitrary text: the same
        /// day or the same error as the general parser.
        #[test]
        fn fast_and_general_parsers_agree(
            y in 0u32..10_000, mo in 0u32..14, d in 0u32..33,
            h in 0u32..26, mi in 0u32..62, s in 0u32..62,
            tail in proptest::prop_oneof![
                proptest::prelude::Just("+08:00".to_owned()),
                proptest::prelude::Just("Z".to_owned()),
                "[+-][0-9]{2}:[0-9]{2}",
                "(\\.[0-9]{1,4})?[Zz]",
                "[+Z0-9:.]{0,7}",
            ],
            flip in proptest::option::of((0usize..25, proptest::prelude::any::<u8>())),
            junk in ".{0,30}",
        ) {
            let mut t = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{tail}").into_bytes();
            if let Some((at, byte)) = flip
                && at < t.len()
            {
                t[at] = byte;
            }
            if let Ok(t) = String::from_utf8(t) {
                proptest::prop_assert_eq!(Day::parse_rfc3339_cn(&t), general(&t), "{}", t);
            }
            proptest::prop_assert_eq!(Day::parse_rfc3339_cn(&junk), general(&junk));
        }
    }

    #[test]
    fn malformed_instants_are_refused() {
        for bad in [
            "2026-11-27",
            "2026-11-27T02:00:00",
            "2026-11-27T25:00:00Z",
            "2026-11-27T02:00:00+0800",
            "2026-11-27T02:00:00.Z",
            "garbage-in-here-xyz",
            "2026-11-27T02:00:0语+08:00",
        ] {
            assert!(Day::parse_rfc3339_cn(bad).is_err(), "{bad}");
        }
    }
}
