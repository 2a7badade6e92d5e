//! What the dashboard knows of the cluster: the last status read from
//! Redis, shared by every open page, and the per-second rates drawn from
//! the counters of successive reads.
//!
//! One read serves every page that asks within [`FRESH`] of it, so the
//! load on Redis does not grow with the number of pages open.

use crate::connection::Redis;
use crate::keys::Keys;
use crate::message::now_ms;
use crate::status::{self, Status};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

use crate::sync::Locked;

/// How old a read may be and still be served.
pub const FRESH: Duration = Duration::from_millis(400);
/// How often the rates are sampled, open page or not.
pub const EVERY: Duration = Duration::from_secs(1);
/// Rates kept: five minutes of seconds.
const KEPT: usize = 300;

/// One point of the chart: when (ms since the epoch) and the rates per
/// second since the point before.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Rates {
    pub at_ms: u64,
    pub generated: f64,
    pub processed: f64,
    pub errors: f64,
}

/// The counters of one read, and when it was made.
#[derive(Debug, Clone, Copy)]
struct Counters {
    at: Instant,
    generated: u64,
    processed: u64,
    errors: u64,
}

/// The last read: the status as JSON (or why it could not be read).
#[derive(Debug, Clone)]
pub struct Latest {
    pub at: Instant,
    pub json: Result<String, String>,
}

#[derive(Default)]
struct State {
    latest: Option<Latest>,
    last_counters: Option<Counters>,
    rates: VecDeque<Rates>,
}

/// The cache and the series.
#[derive(Default)]
pub struct Sampler {
    state: Mutex<State>,
    /// One read at a time: a page that asks while one is on its way waits
    /// for it instead of sending another.
    reading: tokio::sync::Mutex<()>,
}

impl Sampler {
    /// The status, read now unless a read younger than [`FRESH`] exists.
    pub async fn status(&self, redis: &Redis, keys: &Keys) -> Latest {
        let _one_at_a_time = self.reading.lock().await;
        if let Some(latest) = self.fresh() {
            return latest;
        }
        let at = Instant::now();
        let latest = match status::read(redis, keys).await {
            Ok(status) => {
                self.count(at, &status);
                Latest {
                    at,
                    json: Ok(status.to_json()),
                }
            }
            Err(e) => Latest {
                at,
                json: Err(crate::error::Error::from_redis(redis.address(), &e).to_string()),
            },
        };
        self.state.locked().latest = Some(latest.clone());
        latest
    }

    fn fresh(&self) -> Option<Latest> {
        let state = self.state.locked();
        state.latest.clone().filter(|l| l.at.elapsed() < FRESH)
    }

    /// Adds a point from a read's counters, when a second or so has passed
    /// since the last point.
    fn count(&self, at: Instant, status: &Status) {
        let now = Counters {
            at,
            generated: status.generated,
            processed: status.processed,
            errors: status.errors_total,
        };
        let mut state = self.state.locked();
        let Some(before) = state.last_counters else {
            state.last_counters = Some(now);
            return;
        };
        let seconds = at.saturating_duration_since(before.at).as_secs_f64();
        if seconds < EVERY.as_secs_f64() * 0.75 {
            return;
        }
        // A counter that went down was reset (a flushed Redis): no rate.
        let rate = |now: u64, before: u64| {
            let per_second = now.saturating_sub(before) as f64 / seconds;
            (per_second * 10.0).round() / 10.0
        };
        let point = Rates {
            at_ms: now_ms(),
            generated: rate(now.generated, before.generated),
            processed: rate(now.processed, before.processed),
            errors: rate(now.errors, before.errors),
        };
        state.last_counters = Some(now);
        if state.rates.len() == KEPT {
            state.rates.pop_front();
        }
        state.rates.push_back(point);
    }

    /// The points of the last minutes, oldest first.
    pub fn rates(&self) -> Vec<Rates> {
        self.state.locked().rates.iter().copied().collect()
    }

    /// Reads once a [`EVERY`] until `stop`, so that the chart has a point
    /// every second whether or not a page asks.
    pub async fn run(
        &self,
        redis: &Redis,
        keys: &Keys,
        stop: &tokio_util::sync::CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            self.status(redis, keys).await;
        }
    }
}
