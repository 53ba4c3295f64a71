//! The shape of a year of listing checks, and how fast the year benchmark plays it.
//!
//! # The curve
//!
//! Every hour of the year (China time) gets a weight; a year's checks are spread in
//! proportion. The weight is the product of:
//!
//! - **a daily cycle**: a night trough (04:00-05:00 at about 0.15 of the daily mean's peak),
//!   a morning rise, a plateau through the working day and an evening peak at 21:00-22:00;
//! - **the day of the week**: Saturdays and Sundays 1.15, weekdays 0.94;
//! - **festivals**: the 11.11 (Singles' Day) season: pre-sales from 20 October (1.5x), a ramp
//!   over 1-10 November (2x to 3x), 11 November itself at 8x with its first hour (the
//!   midnight start of sales) at 3x the day's usual peak; 6.18 likewise (a ramp over
//!   1-17 June, 18 June at 5x, midnight at 3x); 12.12 at 3x; the Spring Festival week at 0.5x.
//!
//! The peak hour (the first of 11 November) comes out at about 20 times the year's mean
//! rate; [`YearCurve::peak_multiple`] gives the exact figure for the profile's year.
//!
//! # Pacing
//!
//! [`Pace::Realtime`]`(k)` plays the year `k` times faster than real time (`x100000`: a year
//! in about 5 minutes 15 seconds); a sender sends the check at fraction `f` of its share of
//! the year at wall-clock time [`YearCurve::time_of_fraction`]`(f) / k`. [`Pace::Max`]
//! ignores the curve and sends as fast as the gateway answers.

use std::fmt;
use std::str::FromStr;

use cccgate_core::Day;

/// Seconds in an hour.
const HOUR: f64 = 3_600.0;

/// How fast the year is played.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as the gateway answers.
    Max,
    /// `k` times faster than real time, following the curve.
    Realtime(f64),
}

impl FromStr for Pace {
    type Err = String;
    /// `max`, or `realtime-x<K>` (`K` a number, optionally with a `k` or `m` suffix:
    /// `realtime-x100000`, `realtime-x100k`, `realtime-x1e5`).
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        if t == "max" {
            return Ok(Pace::Max);
        }
        let bad = || format!("pace {s:?}: expected max or realtime-xK (e.g. realtime-x100000)");
        let k = t.strip_prefix("realtime-x").ok_or_else(bad)?;
        let (num, mult) = match k.as_bytes().last() {
            Some(b'k') => (&k[..k.len() - 1], 1e3),
            Some(b'm') => (&k[..k.len() - 1], 1e6),
            _ => (k, 1.0),
        };
        let k: f64 = num.parse().map_err(|_| bad())?;
        let k = k * mult;
        if !(k.is_finite() && k >= 1.0) {
            return Err(format!("pace {s:?}: the speed-up must be at least 1"));
        }
        Ok(Pace::Realtime(k))
    }
}

impl fmt::Display for Pace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pace::Max => f.write_str("max"),
            Pace::Realtime(k) => write!(f, "realtime-x{k}"),
        }
    }
}

/// Relative load per hour of a usual day, 00:00 first.
const DAILY: [f64; 24] = [
    0.55, 0.35, 0.22, 0.16, 0.13, 0.15, 0.25, 0.45, 0.70, 0.95, 1.10, 1.15, //
    1.05, 1.10, 1.15, 1.15, 1.10, 1.05, 1.05, 1.20, 1.40, 1.60, 1.55, 1.00,
];

/// The load curve of one calendar year, hour by hour.
#[derive(Clone, Debug)]
pub struct YearCurve {
    year: i32,
    /// `cumulative[h]`: the weight of hours `0..h`; `cumulative[hours]` is the total.
    cumulative: Vec<f64>,
    peak: f64,
}

impl YearCurve {
    /// The curve of `year`.
    pub fn new(year: i32) -> YearCurve {
        let first = Day::from_ymd(year, 1, 1).map_or(0, Day::days);
        let last = Day::from_ymd(year, 12, 31).map_or(first + 364, Day::days);
        let mut cumulative = Vec::with_capacity(((last - first + 1) * 24 + 1) as usize);
        cumulative.push(0.0);
        let mut total = 0.0;
        let mut peak: f64 = 0.0;
        for d in first..=last {
            let day = Day::from_days(d);
            for h in 0..24 {
                let w = hour_weight(year, day, h);
                peak = peak.max(w);
                total += w;
                cumulative.push(total);
            }
        }
        YearCurve {
            year,
            cumulative,
            peak,
        }
    }

    /// The year.
    pub fn year(&self) -> i32 {
        self.year
    }

    /// Seconds in the year.
    pub fn seconds(&self) -> f64 {
        self.hours() as f64 * HOUR
    }

    fn hours(&self) -> usize {
        self.cumulative.len() - 1
    }

    fn total(&self) -> f64 {
        self.cumulative[self.hours()]
    }

    /// The peak hour's rate as a multiple of the year's mean rate.
    pub fn peak_multiple(&self) -> f64 {
        self.peak * self.hours() as f64 / self.total()
    }

    /// The fraction of the year's checks due by `t` seconds into the year.
    pub fn fraction_at(&self, t: f64) -> f64 {
        let hours = self.hours();
        let x = (t / HOUR).clamp(0.0, hours as f64);
        let h = (x as usize).min(hours - 1);
        let w = self.cumulative[h + 1] - self.cumulative[h];
        (self.cumulative[h] + w * (x - h as f64)) / self.total()
    }

    /// The time (seconds into the year) by which fraction `f` of the year's checks are due:
    /// the inverse of [`YearCurve::fraction_at`].
    pub fn time_of_fraction(&self, f: f64) -> f64 {
        let target = f.clamp(0.0, 1.0) * self.total();
        // The first hour whose end reaches the target.
        let h = self
            .cumulative
            .partition_point(|&c| c < target)
            .saturating_sub(1)
            .min(self.hours() - 1);
        let w = self.cumulative[h + 1] - self.cumulative[h];
        let within = if w > 0.0 {
            ((target - self.cumulative[h]) / w).clamp(0.0, 1.0)
        } else {
            0.0
        };
        (h as f64 + within) * HOUR
    }

    /// The largest fraction of the year's checks due within any window of `window` seconds
    /// (windows starting on the hour): what a one-second measurement can see of the peak when
    /// a year is played `window` times faster than real time.
    pub fn peak_window_fraction(&self, window: f64) -> f64 {
        let hours = self.hours();
        let window = window.clamp(0.0, self.seconds());
        (0..hours)
            .map(|h| {
                let t = h as f64 * HOUR;
                self.fraction_at((t + window).min(self.seconds())) - self.fraction_at(t)
            })
            .fold(0.0, f64::max)
    }

    /// The rate at `t` seconds into the year as a multiple of the year's mean rate.
    pub fn multiple_at(&self, t: f64) -> f64 {
        let h = ((t / HOUR) as usize).min(self.hours() - 1);
        (self.cumulative[h + 1] - self.cumulative[h]) * self.hours() as f64 / self.total()
    }
}

/// The weight of hour `h` of `day` in `year`.
fn hour_weight(year: i32, day: Day, h: usize) -> f64 {
    let (_, m, d) = day.ymd();
    // 1970-01-01 was a Thursday: days % 7 == 2 is Saturday, 3 is Sunday.
    let weekday = day.days().rem_euclid(7);
    let week = if weekday == 2 || weekday == 3 {
        1.15
    } else {
        0.94
    };
    let (festival, midnight_rush) = festival(year, m, d);
    let hourly = if midnight_rush && h == 0 {
        // The midnight start of a festival's sales: 3x the usual evening peak.
        3.0 * DAILY[21]
    } else if midnight_rush && h == 1 {
        1.5 * DAILY[21]
    } else {
        DAILY[h]
    };
    hourly * week * festival
}

/// The festival multiple of a day, and whether its sales start at midnight.
fn festival(year: i32, m: u32, d: u32) -> (f64, bool) {
    let ramp = |d: u32, first: u32, last: u32, from: f64, to: f64| {
        from + (to - from) * f64::from(d - first) / f64::from((last - first).max(1))
    };
    match (m, d) {
        (10, 20..=31) => (1.5, false),
        (11, 1..=10) => (ramp(d, 1, 10, 2.0, 3.0), false),
        (11, 11) => (8.0, true),
        (11, 12..=13) => (2.0, false),
        (6, 1..=17) => (ramp(d, 1, 17, 1.2, 2.0), false),
        (6, 18) => (5.0, true),
        (6, 19..=20) => (1.5, false),
        (12, 12) => (3.0, true),
        _ if spring_festival(year, m, d) => (0.5, false),
        _ => (1.0, false),
    }
}

/// The Spring Festival holiday week (2021: 11-17 February; 2025: 28 January - 4 February;
/// other years: none).
fn spring_festival(year: i32, m: u32, d: u32) -> bool {
    match year {
        2021 => m == 2 && (11..=17).contains(&d),
        2025 => (m == 1 && d >= 28) || (m == 2 && d <= 4),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_parses_max_and_realtime_speedups() {
        assert_eq!("max".parse::<Pace>(), Ok(Pace::Max));
        assert_eq!("realtime-x100000".parse::<Pace>(), Ok(Pace::Realtime(1e5)));
        assert_eq!("realtime-x100k".parse::<Pace>(), Ok(Pace::Realtime(1e5)));
        assert_eq!("Realtime-x1e5".parse::<Pace>(), Ok(Pace::Realtime(1e5)));
        assert_eq!("realtime-x2m".parse::<Pace>(), Ok(Pace::Realtime(2e6)));
        assert!("realtime-x0".parse::<Pace>().is_err());
        assert!("fast".parse::<Pace>().is_err());
        assert!("realtime-xfast".parse::<Pace>().is_err());
    }

    #[test]
    fn the_whole_year_is_due_by_its_end_and_fractions_invert() {
        let c = YearCurve::new(2021);
        assert_eq!(c.seconds(), 365.0 * 86_400.0);
        assert_eq!(c.fraction_at(0.0), 0.0);
        assert!((c.fraction_at(c.seconds()) - 1.0).abs() < 1e-12);
        for f in [0.0, 0.001, 0.25, 0.5, 0.8, 0.999_999, 1.0] {
            let t = c.time_of_fraction(f);
            assert!((c.fraction_at(t) - f).abs() < 1e-9, "{f} {t}");
        }
        assert_eq!(YearCurve::new(2024).seconds(), 366.0 * 86_400.0);
    }

    #[test]
    fn singles_day_midnight_is_the_peak_at_many_times_the_mean() {
        let c = YearCurve::new(2021);
        let peak = c.peak_multiple();
        assert!((10.0..40.0).contains(&peak), "{peak}");
        // 2021-11-11 is day 314 of the year (0-based).
        let singles_midnight = 314.0 * 86_400.0 + 1.0;
        assert!((c.multiple_at(singles_midnight) - peak).abs() < 1e-9);
        let june_18 = 168.0 * 86_400.0 + 1.0;
        assert!(c.multiple_at(june_18) > 5.0);
    }

    #[test]
    fn a_wider_window_sees_a_lower_peak_multiple() {
        let c = YearCurve::new(2021);
        let mean_per_sec = 1.0 / c.seconds();
        let hour = c.peak_window_fraction(3_600.0) / 3_600.0 / mean_per_sec;
        assert!((hour - c.peak_multiple()).abs() < 1e-6, "{hour}");
        let day = c.peak_window_fraction(86_400.0) / 86_400.0 / mean_per_sec;
        let fortnight = c.peak_window_fraction(14.0 * 86_400.0) / (14.0 * 86_400.0) / mean_per_sec;
        assert!(
            hour > day && day > fortnight && fortnight > 1.0,
            "{hour} {day} {fortnight}"
        );
        assert!((c.peak_window_fraction(c.seconds()) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn nights_are_quiet_and_weekends_busier() {
        let c = YearCurve::new(2021);
        // 2021-03-03 was a Wednesday (day 61), 2021-03-06 a Saturday (day 64).
        let at = |day: f64, hour: f64| c.multiple_at(day * 86_400.0 + hour * 3_600.0 + 1.0);
        assert!(at(61.0, 4.0) < 0.25 * at(61.0, 21.0));
        assert!(at(64.0, 21.0) > at(61.0, 21.0));
        // The Spring Festival week is quieter than the week after it.
        assert!(at(43.0, 21.0) < at(50.0, 21.0));
    }
}
