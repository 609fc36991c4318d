//! Date-window slicing: the `slice:` settings parsed (`1 month`,
//! `today + 1 year`), and the windows a run reads, so that endpoints that
//! demand a date filter (leaves) or are too big for one query are read one
//! window at a time.

use chrono::{Days, Months, NaiveDate};

/// A length of time in calendar units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `N day(s)`.
    Days(u32),
    /// `N week(s)`.
    Weeks(u32),
    /// `N month(s)`.
    Months(u32),
    /// `N year(s)`.
    Years(u32),
}

impl Step {
    /// Parses `1 month`, `2 weeks`, `10 days`, `1 year` (the number is at
    /// least 1; the unit singular or plural).
    pub fn parse(text: &str) -> Result<Step, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "`{text}` is not a step: write `N days`, `N weeks`, `N months` or `N years`, \
                 e.g. `1 month`"
            )
        };
        let (number, unit) = text.split_once(char::is_whitespace).ok_or_else(bad)?;
        let n: u32 = number.trim().parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(format!("`{text}`: the step must be at least 1"));
        }
        match unit.trim().trim_end_matches('s') {
            "day" => Ok(Step::Days(n)),
            "week" => Ok(Step::Weeks(n)),
            "month" => Ok(Step::Months(n)),
            "year" => Ok(Step::Years(n)),
            _ => Err(bad()),
        }
    }

    /// `date` moved `times` steps forward (`forward`) or back; `None` out of
    /// the calendar's range. Months clamp to the month's last day.
    pub fn shift(self, date: NaiveDate, times: u32, forward: bool) -> Option<NaiveDate> {
        let months = |n: u32| {
            let m = Months::new(n.checked_mul(times)?);
            if forward {
                date.checked_add_months(m)
            } else {
                date.checked_sub_months(m)
            }
        };
        let days = |n: u32| {
            let d = Days::new(u64::from(n) * u64::from(times));
            if forward {
                date.checked_add_days(d)
            } else {
                date.checked_sub_days(d)
            }
        };
        match self {
            Step::Days(n) => days(n),
            Step::Weeks(n) => days(n.checked_mul(7)?),
            Step::Months(n) => months(n),
            Step::Years(n) => months(n.checked_mul(12)?),
        }
    }
}

/// The end of the slicing range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateBound {
    /// A fixed day.
    Date(NaiveDate),
    /// The day of the run, moved by a step (`today + 1 year`).
    Today(Option<(Step, bool)>),
}

impl DateBound {
    /// Parses `today`, `today + 1 year`, `today - 2 weeks` or `yyyy-mm-dd`.
    pub fn parse(text: &str) -> Result<DateBound, String> {
        let t = text.trim();
        let Some(rest) = t.strip_prefix("today") else {
            return parse_day(t).map(DateBound::Date);
        };
        let rest = rest.trim();
        if rest.is_empty() {
            return Ok(DateBound::Today(None));
        }
        let (forward, step) = match (rest.strip_prefix('+'), rest.strip_prefix('-')) {
            (Some(step), _) => (true, step),
            (_, Some(step)) => (false, step),
            _ => {
                return Err(format!(
                    "`{t}` is not a date: write yyyy-mm-dd, `today` or `today + 1 month`"
                ));
            }
        };
        Ok(DateBound::Today(Some((Step::parse(step)?, forward))))
    }

    /// The day this bound names on `today`.
    pub fn resolve(self, today: NaiveDate) -> NaiveDate {
        match self {
            DateBound::Date(d) => d,
            DateBound::Today(None) => today,
            DateBound::Today(Some((step, forward))) => {
                step.shift(today, 1, forward).unwrap_or(today)
            }
        }
    }
}

/// `yyyy-mm-dd`.
pub fn parse_day(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| format!("`{}` is not a date: write yyyy-mm-dd", text.trim()))
}

/// A stream's slicing, parsed and complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSlice {
    /// The filtered field (`{field}=between,...`).
    pub field: String,
    /// First day of the first window.
    pub from: NaiveDate,
    /// Last day read.
    pub to: DateBound,
    /// Window length.
    pub step: Step,
    /// How far before the last run's date an incremental run re-reads.
    pub lookback: Step,
}

/// One window: both days included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First day.
    pub start: NaiveDate,
    /// Last day.
    pub end: NaiveDate,
}

impl Window {
    /// The filter value: `between,{start}T00:00:00,{end}T23:59:59.999`
    /// (naive times with milliseconds, as Lucca writes them, so that a
    /// datetime field's whole last day, its last second included, is inside
    /// the window and no record is in two windows).
    pub fn between(&self) -> String {
        format!(
            "between,{}T00:00:00,{}T23:59:59.999",
            self.start.format("%Y-%m-%d"),
            self.end.format("%Y-%m-%d")
        )
    }
}

impl ResolvedSlice {
    /// The windows of a run on `today`, in order: `from`, `from + step`, ...
    /// up to `to`, the last one cut at `to`. With `since` (the day of the
    /// last run, read from the state of an incremental stream), only the
    /// windows ending on or after `since - lookback`. Windows always start
    /// on `from + k * step`, so that every run cuts the same windows.
    pub fn windows(&self, today: NaiveDate, since: Option<NaiveDate>) -> Vec<Window> {
        let to = self.to.resolve(today);
        let first_end = since.and_then(|s| self.lookback.shift(s, 1, false));
        let mut windows = Vec::new();
        for k in 0u32.. {
            let Some(start) = self.step.shift(self.from, k, true) else {
                break;
            };
            if start > to {
                break;
            }
            let next = self.step.shift(self.from, k.saturating_add(1), true);
            let end = next.and_then(|n| n.pred_opt()).map_or(to, |e| e.min(to));
            if first_end.is_none_or(|f| end >= f) {
                windows.push(Window { start, end });
            }
        }
        windows
    }

    /// The whole range as one window (a dry run's single count request).
    pub fn whole(&self, today: NaiveDate) -> Window {
        Window {
            start: self.from,
            end: self.to.resolve(today).max(self.from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        parse_day(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn steps_and_bounds_parse() {
        assert_eq!(Step::parse("1 month"), Ok(Step::Months(1)));
        assert_eq!(Step::parse("2 weeks"), Ok(Step::Weeks(2)));
        assert_eq!(Step::parse("1 day"), Ok(Step::Days(1)));
        assert_eq!(Step::parse(" 3  years "), Ok(Step::Years(3)));
        assert!(Step::parse("0 days").is_err());
        assert!(Step::parse("month").is_err());
        assert!(Step::parse("1 fortnight").is_err());
        assert_eq!(DateBound::parse("today"), Ok(DateBound::Today(None)));
        assert_eq!(
            DateBound::parse("today + 1 year"),
            Ok(DateBound::Today(Some((Step::Years(1), true))))
        );
        assert_eq!(
            DateBound::parse("2024-02-29"),
            Ok(DateBound::Date(day("2024-02-29")))
        );
        assert!(DateBound::parse("2023-02-29").is_err());
        assert!(DateBound::parse("today * 2").is_err());
    }

    #[test]
    fn monthly_windows_cover_every_day_once() {
        let slice = ResolvedSlice {
            field: "date".into(),
            from: day("2024-01-31"),
            to: DateBound::Date(day("2024-04-10")),
            step: Step::Months(1),
            lookback: Step::Months(1),
        };
        let w = slice.windows(day("2030-01-01"), None);
        let shown: Vec<String> = w.iter().map(Window::between).collect();
        assert_eq!(
            shown,
            [
                "between,2024-01-31T00:00:00,2024-02-28T23:59:59.999",
                "between,2024-02-29T00:00:00,2024-03-30T23:59:59.999",
                "between,2024-03-31T00:00:00,2024-04-10T23:59:59.999",
            ]
        );
        // An incremental run on 2024-04-05 re-reads from 2024-03-05 on.
        let again = slice.windows(day("2030-01-01"), Some(day("2024-04-05")));
        assert_eq!(again.first().map(|w| w.start), Some(day("2024-02-29")));
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn to_today_plus_a_year() {
        let slice = ResolvedSlice {
            field: "date".into(),
            from: day("2025-01-01"),
            to: DateBound::parse("today + 1 year").unwrap_or_else(|e| panic!("{e}")),
            step: Step::Years(1),
            lookback: Step::Days(1),
        };
        let w = slice.windows(day("2025-06-15"), None);
        assert_eq!(w.len(), 2);
        assert_eq!(w[1].end, day("2026-06-15"));
        assert_eq!(slice.whole(day("2025-06-15")).end, day("2026-06-15"));
    }
}
