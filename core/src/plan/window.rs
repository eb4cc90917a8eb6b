//! Maintenance windows: weekly, in UTC, computed from `now` without reading a clock.

use crate::api::{Duration, MaintenanceWindow, Timestamp, Weekday};

const DAY_MS: i64 = 86_400_000;

/// Minutes after midnight of an `HH:MM` string; `None` when malformed.
pub fn parse_hhmm(s: &str) -> Option<i64> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: i64 = h.parse().ok()?;
    let m: i64 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn weekday_of_day(day: i64) -> Weekday {
    // 1970-01-01 was a Thursday.
    match (day.rem_euclid(7) + 3) % 7 {
        0 => Weekday::Mon,
        1 => Weekday::Tue,
        2 => Weekday::Wed,
        3 => Weekday::Thu,
        4 => Weekday::Fri,
        5 => Weekday::Sat,
        _ => Weekday::Sun,
    }
}

/// Where `now` stands relative to a set of windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowState {
    /// No windows configured: any time is fine. Carries no window start.
    Always,
    /// Inside a window that opened at `start` and closes at `end`.
    Open { start: Timestamp, end: Timestamp },
    /// Outside every window; the next opens at `next` (None if no window can ever open).
    Closed { next: Option<Timestamp> },
}

pub fn window_state(windows: &[MaintenanceWindow], now: Timestamp) -> WindowState {
    if windows.is_empty() {
        return WindowState::Always;
    }
    let today = now.millis().div_euclid(DAY_MS);
    let mut best_open: Option<(Timestamp, Timestamp)> = None;
    let mut next: Option<Timestamp> = None;
    for w in windows {
        let Some(start_min) = parse_hhmm(&w.start) else {
            continue;
        };
        let len = w.duration;
        if len == Duration(0) {
            continue;
        }
        // A window may have opened up to `len` ago (possibly days ago for long windows).
        let back_days = (len.millis() as i64 / DAY_MS) + 1;
        for d in (today - back_days)..=(today + 8) {
            if !w.days.is_empty() && !w.days.contains(&weekday_of_day(d)) {
                continue;
            }
            let start = Timestamp(d * DAY_MS + start_min * 60_000);
            let end = start.plus(len);
            if start <= now && now < end {
                if best_open.is_none_or(|(_, e)| end > e) {
                    best_open = Some((start, end));
                }
            } else if start > now && next.is_none_or(|n| start < n) {
                next = Some(start);
            }
        }
    }
    match best_open {
        Some((start, end)) => WindowState::Open { start, end },
        None => WindowState::Closed { next },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    fn win(days: &[Weekday], start: &str, dur: &str) -> MaintenanceWindow {
        MaintenanceWindow {
            days: days.to_vec(),
            start: start.into(),
            duration: dur.parse().unwrap(),
        }
    }

    #[test]
    fn no_windows_means_always() {
        assert_eq!(
            window_state(&[], ts("2026-11-23T12:00:00Z")),
            WindowState::Always
        );
    }

    #[test]
    fn inside_and_outside_a_daily_window() {
        let w = [win(&[], "22:00", "4h")];
        // 2026-11-23 is a Monday.
        assert_eq!(
            window_state(&w, ts("2026-11-23T23:00:00Z")),
            WindowState::Open {
                start: ts("2026-11-23T22:00:00Z"),
                end: ts("2026-11-24T02:00:00Z")
            }
        );
        // Window spilling past midnight is still open at 01:00 the next day.
        assert!(matches!(
            window_state(&w, ts("2026-11-24T01:00:00Z")),
            WindowState::Open { .. }
        ));
        assert_eq!(
            window_state(&w, ts("2026-11-23T12:00:00Z")),
            WindowState::Closed {
                next: Some(ts("2026-11-23T22:00:00Z"))
            }
        );
    }

    #[test]
    fn weekday_restriction() {
        let w = [win(&[Weekday::Sat], "01:00", "2h")];
        // Monday noon: next Saturday 2026-11-28 01:00.
        assert_eq!(
            window_state(&w, ts("2026-11-23T12:00:00Z")),
            WindowState::Closed {
                next: Some(ts("2026-11-28T01:00:00Z"))
            }
        );
        assert!(matches!(
            window_state(&w, ts("2026-11-28T02:59:00Z")),
            WindowState::Open { .. }
        ));
        assert!(matches!(
            window_state(&w, ts("2026-11-28T03:00:00Z")),
            WindowState::Closed { .. }
        ));
    }

    #[test]
    fn malformed_start_is_ignored_not_a_panic() {
        let w = [win(&[], "25:99", "1h")];
        assert_eq!(
            window_state(&w, ts("2026-11-23T12:00:00Z")),
            WindowState::Closed { next: None }
        );
    }
}
