//! The client's own request budget per API key.
//!
//! The provider allows 150 requests in any 10 s window (more blocks the key for an hour) and
//! 300 in any 60 s window (more brings a Cloudflare challenge). The client therefore keeps a
//! sliding-window log of its own send times per key and makes callers wait until a request
//! fits both windows.
//!
//! A request counts from the moment it is let through until its response has been read,
//! and then for one window from that moment on. The provider counts a request when it
//! arrives, which can be later than the moment it was let through (a busy connection
//! pool, a slow network). Counting from the end of the response keeps every arrival
//! inside the same windows as the requests let through with it.
//!
//! A log is used instead of a token bucket (such as `governor`'s GCRA). A bucket that allows
//! a burst of N and refills N per window lets up to 2N requests through in one window. So it
//! cannot promise "at most N in any window" without halving the steady rate.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Request limits of one API key, in two sliding windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Maximum requests in any `short_window`.
    pub short_requests: u32,
    /// Length of the short window.
    pub short_window: Duration,
    /// Maximum requests in any `long_window`.
    pub long_requests: u32,
    /// Length of the long window.
    pub long_window: Duration,
}

impl Default for Budget {
    /// 100 per 10 s and 250 per 60 s, a margin below the provider's 150 and 300.
    fn default() -> Self {
        Budget {
            short_requests: 100,
            short_window: Duration::from_secs(10),
            long_requests: 250,
            long_window: Duration::from_secs(60),
        }
    }
}

impl Budget {
    /// Checks that every request count and window is above zero.
    pub fn validate(&self) -> Result<(), String> {
        if self.short_requests == 0 || self.long_requests == 0 {
            return Err("budget request counts must be at least 1".into());
        }
        if self.short_window.is_zero() || self.long_window.is_zero() {
            return Err("budget windows must be longer than zero".into());
        }
        Ok(())
    }
}

/// The requests still inside the longer window, oldest first: each with the time it
/// was let through or, once its response was read, the time of that.
#[derive(Debug)]
pub(crate) struct WindowLog {
    budget: Budget,
    sent: VecDeque<(Instant, u64)>,
    next_id: u64,
}

impl WindowLog {
    pub fn new(budget: Budget) -> Self {
        let capacity = budget.short_requests.max(budget.long_requests) as usize;
        WindowLog {
            budget,
            sent: VecDeque::with_capacity(capacity.min(4096)),
            next_id: 0,
        }
    }

    /// Records a request at `now` if it fits both windows, or returns the instant from which
    /// it will fit.
    ///
    /// A request sent at `t` counts against a window of length `w` while `now - t < w`, so
    /// from `t + w` on it no longer counts.
    #[cfg(test)]
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Instant> {
        self.try_acquire_entry(now).map(|_| ())
    }

    /// Like [`WindowLog::try_acquire`], and returns the id of the recorded request for
    /// [`WindowLog::finish`].
    pub fn try_acquire_entry(&mut self, now: Instant) -> Result<u64, Instant> {
        let horizon = self.budget.short_window.max(self.budget.long_window);
        while let Some(&(oldest, _)) = self.sent.front() {
            if now.saturating_duration_since(oldest) >= horizon {
                self.sent.pop_front();
            } else {
                break;
            }
        }
        let mut ready_at: Option<Instant> = None;
        for (limit, window) in [
            (self.budget.short_requests, self.budget.short_window),
            (self.budget.long_requests, self.budget.long_window),
        ] {
            let limit = limit as usize;
            let in_window = self
                .sent
                .iter()
                .rev()
                .take_while(|&&(at, _)| now.saturating_duration_since(at) < window)
                .count();
            if in_window >= limit {
                // The window frees a slot when the limit-th most recent request leaves it.
                let (blocking, _) = self.sent[self.sent.len() - limit];
                let free_at = blocking + window;
                ready_at = Some(ready_at.map_or(free_at, |at| at.max(free_at)));
            }
        }
        match ready_at {
            Some(at) => Err(at),
            None => {
                let id = self.next_id;
                self.next_id += 1;
                self.sent.push_back((now, id));
                Ok(id)
            }
        }
    }

    /// Moves request `id` to `now`, when its response has been read. Every recorded time
    /// is at or before `now`, so the log stays in order.
    // NOTE: a request in flight for longer than a window stops counting until it finishes.
    // With the default 30 s request timeout this can happen in the 10 s window only.
    pub fn finish(&mut self, id: u64, now: Instant) {
        if let Some(index) = self.sent.iter().position(|&(_, entry)| entry == id) {
            self.sent.remove(index);
            self.sent.push_back((now, id));
        }
    }
}

/// A request let through by [`RateLimiter::acquire`]; dropping it, once the response has
/// been read, restarts the request's count from that moment.
pub(crate) struct Permit<'a> {
    limiter: &'a RateLimiter,
    id: u64,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut log = self.limiter.log.lock().unwrap_or_else(|e| e.into_inner());
        log.finish(self.id, Instant::now());
    }
}

/// A [`WindowLog`] shared by every caller that uses one API key.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    // Callers wait while holding this lock, so they get permits in arrival order and no
    // waiter is starved by newer ones (tokio::sync::Mutex grants the lock in FIFO order).
    queue: tokio::sync::Mutex<()>,
    // Locked only briefly and never across an await, so a finished request can update it
    // from `Drop` while a caller waits in the queue.
    log: std::sync::Mutex<WindowLog>,
    waited_nanos: AtomicU64,
}

impl RateLimiter {
    pub fn new(budget: Budget) -> Self {
        RateLimiter {
            queue: tokio::sync::Mutex::new(()),
            log: std::sync::Mutex::new(WindowLog::new(budget)),
            waited_nanos: AtomicU64::new(0),
        }
    }

    /// Waits until one more request fits the budget and records it. Keep the permit until
    /// the response has been read.
    pub async fn acquire(&self) -> Permit<'_> {
        let started = Instant::now();
        let turn = self.queue.lock().await;
        let id = loop {
            let attempt = self
                .log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_acquire_entry(Instant::now());
            match attempt {
                Ok(id) => break id,
                Err(ready_at) => tokio::time::sleep_until(ready_at).await,
            }
        };
        drop(turn);
        let waited = started.elapsed();
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.waited_nanos.fetch_add(nanos, Ordering::Relaxed);
        Permit { limiter: self, id }
    }

    /// Returns the total time callers have waited for this budget.
    pub fn waited_total(&self) -> Duration {
        Duration::from_nanos(self.waited_nanos.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a log with a simulated clock: each request is granted at the earliest instant
    /// the log allows. Returns the grant times as offsets from the start.
    fn simulate(budget: &Budget, requests: usize) -> Vec<Duration> {
        let start = Instant::now();
        let mut log = WindowLog::new(budget.clone());
        let mut now = start;
        let mut granted = Vec::with_capacity(requests);
        for _ in 0..requests {
            loop {
                match log.try_acquire(now) {
                    Ok(()) => break,
                    Err(ready_at) => {
                        assert!(ready_at > now, "a refusal must name a later instant");
                        now = ready_at;
                    }
                }
            }
            granted.push(now - start);
        }
        granted
    }

    /// Returns the largest number of grants inside any window `[t, t + window)`.
    fn max_in_window(granted: &[Duration], window: Duration) -> usize {
        granted
            .iter()
            .map(|&from| {
                granted
                    .iter()
                    .filter(|&&at| at >= from && at < from + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn default_budget_never_exceeds_either_window() {
        let budget = Budget::default();
        let granted = simulate(&budget, 800);
        assert!(max_in_window(&granted, Duration::from_secs(10)) <= 100);
        assert!(max_in_window(&granted, Duration::from_secs(60)) <= 250);
        // Also below the provider's own limits, measured the same way.
        assert!(max_in_window(&granted, Duration::from_secs(10)) < 150);
        assert!(max_in_window(&granted, Duration::from_secs(60)) < 300);
    }

    #[test]
    fn default_budget_uses_its_whole_allowance() {
        let granted = simulate(&Budget::default(), 251);
        // 100 at once, 100 more after 10 s, 50 after 20 s; the 251st waits for the minute.
        assert_eq!(granted[99], Duration::ZERO);
        assert_eq!(granted[100], Duration::from_secs(10));
        assert_eq!(granted[199], Duration::from_secs(10));
        assert_eq!(granted[200], Duration::from_secs(20));
        assert_eq!(granted[249], Duration::from_secs(20));
        assert_eq!(granted[250], Duration::from_secs(60));
    }

    #[test]
    fn uneven_arrivals_stay_within_budget() {
        let budget = Budget {
            short_requests: 5,
            short_window: Duration::from_millis(1000),
            long_requests: 12,
            long_window: Duration::from_millis(6000),
        };
        let start = Instant::now();
        let mut log = WindowLog::new(budget);
        let mut granted = Vec::new();
        // Requests arrive every 70 ms, and a rejected one is retried at the instant returned.
        let mut now = start;
        for i in 0..200u64 {
            let arrival = start + Duration::from_millis(70 * i);
            now = now.max(arrival);
            while let Err(at) = log.try_acquire(now) {
                now = at;
            }
            granted.push(now - start);
        }
        assert!(max_in_window(&granted, Duration::from_millis(1000)) <= 5);
        assert!(max_in_window(&granted, Duration::from_millis(6000)) <= 12);
    }

    #[test]
    fn finished_request_counts_from_its_end() {
        let budget = Budget {
            short_requests: 2,
            short_window: Duration::from_millis(1000),
            long_requests: 100,
            long_window: Duration::from_secs(60),
        };
        let start = Instant::now();
        let mut log = WindowLog::new(budget);
        let first = log.try_acquire_entry(start).unwrap();
        let second = log.try_acquire_entry(start).unwrap();
        // Both responses are read 500 ms later, so both count until 1500 ms.
        log.finish(first, start + Duration::from_millis(500));
        log.finish(second, start + Duration::from_millis(500));
        let refused = log.try_acquire_entry(start + Duration::from_millis(1000));
        assert_eq!(refused, Err(start + Duration::from_millis(1500)));
        assert!(
            log.try_acquire_entry(start + Duration::from_millis(1500))
                .is_ok()
        );
    }

    #[test]
    fn budget_validation() {
        assert!(Budget::default().validate().is_ok());
        let zero_count = Budget {
            short_requests: 0,
            ..Budget::default()
        };
        assert!(zero_count.validate().is_err());
        let zero_window = Budget {
            long_window: Duration::ZERO,
            ..Budget::default()
        };
        assert!(zero_window.validate().is_err());
    }

    #[tokio::test]
    async fn callers_wait_for_a_permit() {
        let limiter = std::sync::Arc::new(RateLimiter::new(Budget {
            short_requests: 3,
            short_window: Duration::from_millis(200),
            long_requests: 100,
            long_window: Duration::from_secs(60),
        }));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..7 {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                limiter.acquire().await;
                started.elapsed()
            }));
        }
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap());
        }
        times.sort();
        // 3 at once, 3 after one window, the 7th after two.
        assert!(times[2] < Duration::from_millis(150), "{times:?}");
        assert!(times[3] >= Duration::from_millis(200), "{times:?}");
        assert!(times[6] >= Duration::from_millis(400), "{times:?}");
        assert!(limiter.waited_total() >= Duration::from_millis(600));
    }
}
