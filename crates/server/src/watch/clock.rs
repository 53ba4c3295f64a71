//! The gateway's wall clock, injectable so tests cross China-time midnight without waiting.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cccgate_core::Day;

/// A future that completes once the clock reaches a time.
pub type Wake = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where the watch machinery reads the time: the China-time day of watched listings and of
/// the change feed's DAY batches.
pub trait Clock: Debug + Send + Sync + 'static {
    /// Now, in Unix seconds.
    fn now_unix_secs(&self) -> i64;
    /// Completes once [`Clock::now_unix_secs`] is at least `unix_secs`.
    fn sleep_until(&self, unix_secs: i64) -> Wake;
}

/// A clock shared by the gateway's tasks.
pub type SharedClock = Arc<dyn Clock>;

/// Today in China time (UTC+8) by `clock`.
pub fn today(clock: &dyn Clock) -> Day {
    Day::from_unix_seconds_cn(clock.now_unix_secs())
}

/// The Unix second at which China-time day `day` begins.
pub fn start_of(day: Day) -> i64 {
    i64::from(day.days()) * 86_400 - 8 * 3_600
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_secs(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }

    fn sleep_until(&self, unix_secs: i64) -> Wake {
        Box::pin(async move {
            // Sleep in steps of at most a minute, so a wall clock that is set forward or back
            // (NTP) is followed within a minute.
            loop {
                let now = SystemClock.now_unix_secs();
                if now >= unix_secs {
                    return;
                }
                let wait = (unix_secs - now).clamp(1, 60) as u64;
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
        })
    }
}

/// A clock that moves only when told: tests set it across midnight.
#[derive(Debug)]
pub struct ManualClock {
    now: tokio::sync::watch::Sender<i64>,
}

impl ManualClock {
    /// A clock standing at `unix_secs`.
    pub fn new(unix_secs: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            now: tokio::sync::watch::Sender::new(unix_secs),
        })
    }

    /// Sets the time (it may go back; sleepers wake once it reaches their time).
    pub fn set(&self, unix_secs: i64) {
        self.now.send_replace(unix_secs);
    }
}

impl Clock for ManualClock {
    fn now_unix_secs(&self) -> i64 {
        *self.now.borrow()
    }

    fn sleep_until(&self, unix_secs: i64) -> Wake {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            if rx.wait_for(|now| *now >= unix_secs).await.is_err() {
                // The clock is gone: its time never comes.
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_china_day_starts_at_16_00_utc_the_day_before() {
        let d = Day::from_ymd(2026, 11, 29).unwrap();
        let start = start_of(d);
        assert_eq!(Day::from_unix_seconds_cn(start), d);
        assert_eq!(Day::from_unix_seconds_cn(start - 1).days(), d.days() - 1);
    }

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_set_past_their_time() {
        let clock = ManualClock::new(100);
        let wake = clock.sleep_until(200);
        clock.set(150);
        let mut wake = std::pin::pin!(wake);
        assert!(futures::poll!(&mut wake).is_pending());
        clock.set(200);
        tokio::time::timeout(Duration::from_secs(10), wake)
            .await
            .expect("woke");
        assert_eq!(today(&*clock), Day::from_unix_seconds_cn(200));
    }
}
