//! The request budget: Lucca allows a fixed number of requests per minute per
//! tenant, shared by every integration, so requests are spaced evenly rather
//! than sent in bursts.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Paces requests to one tenant host so that no 60-second window ever holds
/// more than `per_minute` of them.
///
/// A token bucket whose burst is a whole minute's quota can send `2N` requests
/// in the first minute (a full bucket, then the refill); this budget instead
/// gives each request its own slot, `60 s / N` after the previous one. Every
/// attempt takes a slot, retries included.
///
/// A `Retry-After` answer pauses the whole budget: Lucca's limit is the
/// tenant's, so no stream of the run sends before the time the server named.
#[derive(Debug)]
pub struct RequestBudget {
    interval: Option<Duration>,
    next_slot: Mutex<Option<Instant>>,
    paused_until: std::sync::Mutex<Option<Instant>>,
}

/// Margin added to each slot so that a server counting in a closed 60-second
/// window `[t, t + 60 s]` never sees `N + 1` requests.
const SLOT_MARGIN: Duration = Duration::from_millis(2);

impl RequestBudget {
    /// A budget of `per_minute` requests per minute; `None` means unlimited.
    pub fn new(per_minute: Option<u32>) -> Self {
        let interval = per_minute
            .filter(|n| *n > 0)
            .map(|n| Duration::from_secs(60) / n + SLOT_MARGIN);
        RequestBudget {
            interval,
            next_slot: Mutex::new(None),
            paused_until: std::sync::Mutex::new(None),
        }
    }

    /// Holds every request to this tenant for `wait` from now (a
    /// `Retry-After`); a longer pause already set stays.
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut paused = self
            .paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if paused.is_none_or(|t| t < until) {
            *paused = Some(until);
        }
    }

    /// Waits for the end of any pause, then for the next free slot. Slots
    /// are handed out in call order; a slot that comes due during a pause
    /// set meanwhile is given up for a new one after it.
    pub async fn acquire(&self) {
        let _ = self.acquire_within(Duration::MAX).await;
    }

    /// [`RequestBudget::acquire`], unless a pause would hold the request
    /// longer than `max_pause` (a `Retry-After` above the caller's cap):
    /// then returns at once with the pause left, and sends nothing.
    pub async fn acquire_within(&self, max_pause: Duration) -> Result<(), Duration> {
        loop {
            if let Some(until) = self.paused_until() {
                let left = until.saturating_duration_since(Instant::now());
                if left > max_pause {
                    return Err(left);
                }
                tokio::time::sleep_until(until).await;
            }
            let Some(interval) = self.interval else {
                return Ok(());
            };
            let slot = {
                let mut next = self.next_slot.lock().await;
                let now = Instant::now();
                let slot = match *next {
                    Some(t) if t > now => t,
                    _ => now,
                };
                *next = Some(slot + interval);
                slot
            };
            tokio::time::sleep_until(slot).await;
            if self
                .paused_until()
                .is_none_or(|until| until <= Instant::now())
            {
                return Ok(());
            }
        }
    }

    fn paused_until(&self) -> Option<Instant> {
        *self
            .paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_n_in_any_minute() {
        let budget = RequestBudget::new(Some(50));
        let start = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..120 {
            budget.acquire().await;
            sent.push(Instant::now() - start);
        }
        for (i, t) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .take_while(|u| **u <= *t + Duration::from_secs(60))
                .count();
            assert!(
                in_window <= 50,
                "{in_window} requests in the minute from {t:?}"
            );
        }
        // Evenly spaced: the first minute does not hold a burst.
        assert!(sent[1] - sent[0] >= Duration::from_millis(1200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_request_until_it_ends() {
        for per_minute in [None, Some(600)] {
            let budget = RequestBudget::new(per_minute);
            budget.acquire().await;
            let start = Instant::now();
            budget.pause_for(Duration::from_secs(3));
            budget.pause_for(Duration::from_secs(1));
            budget.acquire().await;
            assert_eq!(
                Instant::now() - start,
                Duration::from_secs(3),
                "{per_minute:?}"
            );
            budget.acquire().await;
            let spacing = per_minute.map_or(Duration::ZERO, |_| Duration::from_millis(102));
            assert_eq!(Instant::now() - start, Duration::from_secs(3) + spacing);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_due_during_a_pause_waits_for_its_end() {
        // 30 a minute: one slot every 2 s. A request waiting for its slot
        // when a 5 s pause starts leaves after the pause, not in it.
        let budget = std::sync::Arc::new(RequestBudget::new(Some(30)));
        budget.acquire().await;
        let start = Instant::now();
        let waiting = tokio::spawn({
            let budget = std::sync::Arc::clone(&budget);
            async move {
                budget.acquire().await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        budget.pause_for(Duration::from_secs(5));
        let sent = waiting.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            sent - start >= Duration::from_millis(5500),
            "sent {:?} after the start, inside the pause",
            sent - start
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_the_caller_accepts_is_refused_not_waited() {
        for per_minute in [None, Some(30)] {
            let budget = RequestBudget::new(per_minute);
            let start = Instant::now();
            budget.pause_for(Duration::from_secs(600));
            assert_eq!(
                budget.acquire_within(Duration::from_secs(120)).await,
                Err(Duration::from_secs(600)),
                "{per_minute:?}"
            );
            assert_eq!(Instant::now(), start, "returned at once");
            // Within the cap: waited for.
            assert_eq!(
                budget.acquire_within(Duration::from_secs(600)).await,
                Ok(())
            );
            assert_eq!(Instant::now() - start, Duration::from_secs(600));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let budget = RequestBudget::new(None);
        let start = Instant::now();
        for _ in 0..1000 {
            budget.acquire().await;
        }
        assert_eq!(Instant::now(), start);
    }
}
