//! Progress bars for people running `lucca-sync run` in a terminal: one bar
//! per stream with records (and pages, and date windows for a sliced
//! stream) out of the API's count, the rate, and an ETA from the request
//! budget. Nothing is drawn when stderr is not
//! a terminal (CronJobs, CI, pipes).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::extract::StreamCounters;
use crate::run::{Progress, StreamStart};

/// How often the bars are refreshed.
const TICK: Duration = Duration::from_millis(200);

struct Bar {
    bar: ProgressBar,
    start: StreamStart,
    counters: Arc<StreamCounters>,
    started: Instant,
}

/// Bars on stderr, refreshed by a background thread.
pub struct TerminalProgress {
    multi: MultiProgress,
    bars: Mutex<Vec<Bar>>,
}

impl TerminalProgress {
    /// Starts the display when stderr is a terminal; `None` otherwise.
    pub fn start() -> Option<Arc<dyn Progress>> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let progress = Arc::new(TerminalProgress {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5)),
            bars: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&progress);
        let shown: Arc<dyn Progress> = progress;
        std::thread::spawn(move || {
            while let Some(progress) = weak.upgrade() {
                progress.refresh();
                drop(progress);
                std::thread::sleep(TICK);
            }
        });
        Some(shown)
    }

    fn refresh(&self) {
        let bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        for b in bars.iter() {
            let records = StreamCounters::get(&b.counters.records);
            let pages = StreamCounters::get(&b.counters.pages);
            let windows = b.start.windows;
            let begun = StreamCounters::get(&b.counters.windows_begun).min(windows);
            let count = b
                .counters
                .api_count()
                .map(|count| estimated_total(count, records, windows, begun));
            if let Some(count) = count {
                b.bar.set_length(count);
            }
            b.bar.set_position(records);
            let elapsed = b.started.elapsed();
            let rate = records as f64 / elapsed.as_secs_f64().max(0.001);
            let windows_left = windows.saturating_sub(begun);
            let eta =
                count.map(|count| eta(&b.start, count, records, pages, windows_left, elapsed));
            let window = match windows {
                0 => String::new(),
                _ => format!(", window {begun}/{windows}"),
            };
            b.bar.set_message(format!(
                "{pages} pages{window}, {rate:.0} rec/s{}",
                eta.map_or_else(String::new, |eta| format!(", ETA {}", short(eta)))
            ));
        }
    }
}

/// The records a stream will have read: the API's count, or for a sliced
/// stream, whose count covers the windows begun so far, that count
/// extrapolated to every window; never less than what was read.
fn estimated_total(count: u64, records: u64, windows: u64, begun: u64) -> u64 {
    let total = match windows {
        0 => count,
        _ => count.saturating_mul(windows) / begun.max(1),
    };
    total.max(records)
}

/// Time left: the requests still to send (at least one per window not
/// begun), each taking the budget's spacing or the time pages have taken
/// so far, whichever is longer.
fn eta(
    start: &StreamStart,
    count: u64,
    records: u64,
    pages: u64,
    windows_left: u64,
    elapsed: Duration,
) -> Duration {
    let left = count
        .saturating_sub(records)
        .div_ceil(u64::from(start.page_size.max(1)))
        .max(windows_left);
    let spacing = start
        .rate_limit_per_minute
        .map_or(Duration::ZERO, |n| Duration::from_secs(60) / n.max(1));
    let observed = if pages > 0 {
        elapsed / u32::try_from(pages).unwrap_or(u32::MAX)
    } else {
        Duration::ZERO
    };
    spacing.max(observed) * u32::try_from(left).unwrap_or(u32::MAX)
}

fn short(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl Progress for TerminalProgress {
    fn stream_started(&self, start: &StreamStart, counters: Arc<StreamCounters>) {
        let bar = self.multi.add(ProgressBar::new(0));
        let style = ProgressStyle::with_template("{prefix:<24} [{bar:30}] {pos:>9}/{len:<9} {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(start.stream.clone());
        self.bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Bar {
                bar,
                start: start.clone(),
                counters,
                started: Instant::now(),
            });
    }

    /// Clears the bars (before the summary table is printed).
    fn finish(&self) {
        self.refresh();
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        for b in bars.drain(..) {
            b.bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sliced_streams_total_is_extrapolated_from_its_windows_begun() {
        // 3 of 12 windows begun, 600 records counted in them: about 2,400.
        assert_eq!(estimated_total(600, 450, 12, 3), 2_400);
        // Every window begun: the count itself.
        assert_eq!(estimated_total(2_300, 2_000, 12, 12), 2_300);
        // Not sliced: the count, or what was read if more came.
        assert_eq!(estimated_total(1_000, 1_200, 0, 0), 1_200);
    }

    #[test]
    fn eta_follows_the_budget_when_it_is_the_slower() {
        let start = StreamStart {
            pipeline: "p".into(),
            stream: "s".into(),
            page_size: 1000,
            rate_limit_per_minute: Some(50),
            windows: 0,
        };
        // 10,000 records, 2,000 read in 2 pages of 0.1 s: 8 requests left
        // at 1.2 s each (50 per minute).
        let left = eta(&start, 10_000, 2_000, 2, 0, Duration::from_millis(200));
        assert_eq!(left, Duration::from_millis(9_600));
        // 30 windows not begun ask at least 30 requests more.
        let left = eta(&start, 10_000, 2_000, 2, 30, Duration::from_millis(200));
        assert_eq!(left, Duration::from_millis(36_000));
        // Unlimited: the observed 0.1 s per page.
        let start = StreamStart {
            rate_limit_per_minute: None,
            ..start
        };
        let left = eta(&start, 10_000, 2_000, 2, 0, Duration::from_millis(200));
        assert_eq!(left, Duration::from_millis(800));
    }
}
