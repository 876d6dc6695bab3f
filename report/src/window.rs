//! The report's time window: `--from`/`--to` as RFC 3339 times, Unix seconds, `now`, or a
//! duration before now (`30m`, `2h 15m`), and the query resolution over it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Most points a range query asks for per series (Prometheus refuses more than 11,000).
pub const MAX_POINTS: f64 = 10_000.0;
/// Points a range query asks for when `--resolution` is not given.
pub const DEFAULT_POINTS: f64 = 1_000.0;
/// The finest default resolution.
pub const MIN_DEFAULT_RESOLUTION: f64 = 0.1;

/// A time window in Unix seconds and the resolution its range queries use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Start, Unix seconds.
    pub from: f64,
    /// End, Unix seconds (after `from`).
    pub to: f64,
    /// Seconds between the points of a range query.
    pub resolution: f64,
}

impl Window {
    /// The window between `from` and `to` (each read by [`parse_instant`] against `now`), at
    /// `resolution` or, without one, about [`DEFAULT_POINTS`] points.
    ///
    /// # Errors
    /// [`Error::Argument`] for an unreadable time, an empty or reversed window, or a
    /// resolution that would ask for more than [`MAX_POINTS`] points.
    pub fn new(
        from: &str,
        to: &str,
        resolution: Option<Duration>,
        now: SystemTime,
    ) -> Result<Window> {
        let start = parse_instant("from", from, now)?;
        let end = parse_instant("to", to, now)?;
        if end <= start {
            return Err(Error::Argument {
                flag: "to",
                value: to.to_owned(),
                reason: format!(
                    "the window must end after it starts ({} is not after {})",
                    rfc3339(end),
                    rfc3339(start)
                ),
            });
        }
        let span = end - start;
        let resolution = match resolution {
            Some(r) if r.is_zero() => {
                return Err(Error::Argument {
                    flag: "resolution",
                    value: "0s".to_owned(),
                    reason: "must be more than zero".to_owned(),
                });
            }
            Some(r) => r.as_secs_f64(),
            None => (span / DEFAULT_POINTS).max(MIN_DEFAULT_RESOLUTION),
        };
        if span / resolution > MAX_POINTS {
            return Err(Error::Argument {
                flag: "resolution",
                value: format!("{resolution}s"),
                reason: format!(
                    "{:.0} points over the window; at most {MAX_POINTS:.0} (a coarser resolution or a shorter window)",
                    span / resolution
                ),
            });
        }
        Ok(Window {
            from: start,
            to: end,
            resolution,
        })
    }

    /// How many points a range query over the window returns per series at most.
    pub fn points(&self) -> usize {
        ((self.to - self.from) / self.resolution).floor() as usize + 1
    }

    /// The time of point `index`.
    pub fn time(&self, index: usize) -> f64 {
        self.from + index as f64 * self.resolution
    }

    /// The point a sample at `t` (a time the range query was evaluated at) belongs to.
    pub fn index(&self, t: f64) -> Option<usize> {
        let i = ((t - self.from) / self.resolution).round();
        (i >= 0.0 && (i as usize) < self.points()).then_some(i as usize)
    }
}

/// Reads one end of the window: `now`, Unix seconds (`1700000000.5`), an RFC 3339 time
/// (`2026-12-07T05:00:00Z`), or a duration before `now` (`30m`, `1h30m`, `90s`).
///
/// # Errors
/// [`Error::Argument`] naming `flag` when none of these fits.
pub fn parse_instant(flag: &'static str, value: &str, now: SystemTime) -> Result<f64> {
    let text = value.trim();
    let now_s = unix(now);
    if text.eq_ignore_ascii_case("now") {
        return Ok(now_s);
    }
    if let Ok(seconds) = text.parse::<f64>()
        && seconds.is_finite()
        && seconds >= 0.0
    {
        return Ok(seconds);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(unix(t));
    }
    if let Ok(ago) = humantime::parse_duration(text.trim_start_matches('-')) {
        return Ok(now_s - ago.as_secs_f64());
    }
    Err(Error::Argument {
        flag,
        value: value.to_owned(),
        reason: "expected an RFC 3339 time (2026-12-07T05:00:00Z), Unix seconds, `now`, or a \
                 duration before now (30m, 1h30m)"
            .to_owned(),
    })
}

/// Seconds since the Unix epoch (negative before it).
pub fn unix(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// A Unix time as RFC 3339 in UTC with milliseconds (`2026-12-07T05:00:00.250Z`).
pub fn rfc3339(t: f64) -> String {
    let t = t.max(0.0);
    let whole = Duration::from_millis((t * 1000.0).round() as u64);
    humantime::format_rfc3339_millis(UNIX_EPOCH + whole).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn reads_every_form_of_time() {
        let now = at(1_800_000_000);
        assert_eq!(parse_instant("from", "now", now).ok(), Some(1.8e9));
        assert_eq!(parse_instant("from", "30m", now).ok(), Some(1.8e9 - 1800.0));
        assert_eq!(
            parse_instant("from", "-1h 30m", now).ok(),
            Some(1.8e9 - 5400.0)
        );
        assert_eq!(
            parse_instant("from", "1700000000.5", now).ok(),
            Some(1.7e9 + 0.5)
        );
        assert_eq!(
            parse_instant("from", "2026-12-07T05:00:00Z", now).ok(),
            Some(1_796_619_600.0)
        );
        let err = parse_instant("from", "yesterday", now).map(|_| ());
        assert!(
            matches!(&err, Err(Error::Argument { flag: "from", value, .. }) if value == "yesterday"),
            "{err:?}"
        );
    }

    #[test]
    fn a_window_must_end_after_it_starts_and_stay_within_the_point_limit() {
        let now = at(1_800_000_000);
        let w = Window::new("10m", "now", None, now).expect("window");
        assert_eq!(w.resolution, 0.6);
        assert_eq!(w.points(), 1001);
        assert_eq!(w.index(w.time(7)), Some(7));
        assert_eq!(w.index(w.to + 1.0), None);
        assert!(Window::new("now", "10m", None, now).is_err());
        let fine = Window::new("1d", "now", Some(Duration::from_secs(1)), now);
        assert!(
            matches!(
                &fine,
                Err(Error::Argument {
                    flag: "resolution",
                    ..
                })
            ),
            "{fine:?}"
        );
        assert_eq!(rfc3339(1_796_619_600.25), "2026-12-07T05:00:00.250Z");
    }
}
