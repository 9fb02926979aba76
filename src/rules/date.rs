//! Civil dates as day numbers, and the `+HH:MM` UTC offsets of jurisdictions.
//!
//! A rule's `since`/`until` is a local calendar date; it starts at local midnight in its
//! jurisdiction's `utc_offset`. Dates are kept as days since 1970-01-01 so that the lookup path
//! compares integers. The conversions follow Howard Hinnant's `days_from_civil` algorithm.

use std::fmt;
use std::str::FromStr;

/// A civil date, as days since 1970-01-01 (negative before).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i32);

/// Why a date or offset string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    /// Not of the shape `YYYY-MM-DD`.
    #[error("bad date `{0}`: expected YYYY-MM-DD")]
    Shape(String),
    /// A month or day out of range (e.g. 2022-02-30).
    #[error("bad date `{0}`: no such day")]
    NoSuchDay(String),
    /// Not of the shape `+HH:MM` / `-HH:MM`, or out of range.
    #[error("bad UTC offset `{0}`: expected +HH:MM or -HH:MM within ±18:00")]
    Offset(String),
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        _ => 28,
    }
}

impl Day {
    /// The day of a civil date; `None` if the month or day is out of range.
    pub fn from_ymd(y: i32, m: u32, d: u32) -> Option<Day> {
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y.into(), m) {
            return None;
        }
        let y = i64::from(y) - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (i64::from(m) + 9) % 12;
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        i32::try_from(era * 146_097 + doe - 719_468).ok().map(Day)
    }

    /// The civil date `(year, month, day)` of this day.
    pub fn ymd(self) -> (i32, u32, u32) {
        let z = i64::from(self.0) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y as i32, m, d)
    }

    /// Today in UTC, from the system clock.
    pub fn today_utc() -> Day {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Day(secs.div_euclid(86_400) as i32)
    }

    /// The local day at unix time `secs` in a zone `offset_secs` east of UTC.
    pub fn at_instant(secs: i64, offset_secs: i32) -> Day {
        Day((secs + i64::from(offset_secs)).div_euclid(86_400) as i32)
    }
}

impl FromStr for Day {
    type Err = DateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let shape_ok = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shape_ok {
            return Err(DateError::Shape(s.to_string()));
        }
        let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(0);
        Day::from_ymd(num(0..4) as i32, num(5..7), num(8..10))
            .ok_or_else(|| DateError::NoSuchDay(s.to_string()))
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// Parses a `+HH:MM` / `-HH:MM` offset into seconds east of UTC.
pub fn parse_utc_offset(s: &str) -> Result<i32, DateError> {
    let err = || DateError::Offset(s.to_string());
    let b = s.as_bytes();
    if b.len() != 6 || b[3] != b':' || !(b[0] == b'+' || b[0] == b'-') {
        return Err(err());
    }
    let h: i32 = s[1..3].parse().map_err(|_| err())?;
    let m: i32 = s[4..6].parse().map_err(|_| err())?;
    if h > 18 || m > 59 || (h == 18 && m > 0) {
        return Err(err());
    }
    let secs = h * 3600 + m * 60;
    Ok(if b[0] == b'-' { -secs } else { secs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_round_trip() {
        assert_eq!("1970-01-01".parse::<Day>().unwrap(), Day(0));
        assert_eq!("2022-03-04".parse::<Day>().unwrap(), Day(19_055));
        for d in [-700_000, -1, 0, 59, 60, 19_055, 20_000, 2_000_000] {
            let day = Day(d);
            assert_eq!(day.to_string().parse::<Day>().unwrap(), day);
        }
    }

    #[test]
    fn rejects_bad_dates() {
        for s in [
            "2022-02-30",
            "2021-13-01",
            "2022-3-4",
            "22-03-04",
            "2022/03/04",
            "2023-02-29",
        ] {
            assert!(s.parse::<Day>().is_err(), "{s}");
        }
        assert!("2024-02-29".parse::<Day>().is_ok());
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_utc_offset("+03:00"), Ok(10_800));
        assert_eq!(parse_utc_offset("-05:30"), Ok(-19_800));
        assert!(parse_utc_offset("+3:00").is_err());
        assert!(parse_utc_offset("+19:00").is_err());
    }

    #[test]
    fn instants_in_local_time() {
        // 2022-03-13T21:00:00Z is 2022-03-14 00:00 in Moscow (+03:00).
        let t = 1_647_205_200;
        assert_eq!(Day::at_instant(t, 10_800), "2022-03-14".parse().unwrap());
        assert_eq!(
            Day::at_instant(t - 1, 10_800),
            "2022-03-13".parse().unwrap()
        );
    }
}
