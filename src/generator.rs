//! The generator loop: one message per tick, each one a fenced enqueue.
//! At `--interval-ms 0` (benchmarks) it enqueues batches of 256 in one fenced
//! step instead, and waits while the queue holds 10,000, so that it cannot
//! outrun the processors into Redis's memory.
//!
//! Ticks lie on a fixed grid of `--interval-ms` from the first one, so there
//! is no drift; a tick missed (a slow Redis, a paused process) is skipped,
//! never made up in a burst. Spacing is judged by Redis's clock, never by a
//! host's: the enqueue script refuses a message while the last-enqueue key,
//! which expires an interval (less 10 ms) after the newest message, exists,
//! so a late tick followed by one on the grid, or a handover, cannot bring
//! two messages closer. A new generator waits out that key's PTTL before
//! its first message.

use crate::copy::CopyState;
use crate::escape::for_terminal;
use crate::lease::HeldLease;
use crate::message::{now_ms, NewMessage};
use crate::scripts::{self, LastEnqueue, Refused};
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Messages per fenced enqueue at `--interval-ms 0`.
const FAST_BATCH: usize = 256;
/// At `--interval-ms 0`, the queue length at which the generator waits.
const FAST_QUEUE_CAP: u64 = 10_000;

/// Generates while `lease` is valid, until `stop` is cancelled. Cancels
/// `stop` itself when an enqueue is refused: the lease is gone.
pub async fn run(
    copy: &CopyState,
    lease: &HeldLease,
    last: Option<LastEnqueue>,
    stop: &CancellationToken,
) {
    let mut source = copy.settings.generator.build(None);
    let interval = copy.settings.interval;
    let producer = copy.id();
    if interval.is_zero() {
        // As fast as possible: batches, and a pause while the queue is full,
        // so that a generator faster than its processors cannot fill Redis.
        // A batch refused for a full queue is kept and sent again, not made
        // anew: waiting costs no text generation.
        // With --rate, even batches on a grid of about 2 ms; a batch that
        // falls behind the grid is sent at once, and a generator more than
        // a second behind (a pause) starts the grid again rather than burst.
        let rate = copy.settings.rate;
        let batch = match rate {
            0 => FAST_BATCH,
            rate => (rate / 500).clamp(1, FAST_BATCH as u64) as usize,
        };
        let period = Duration::from_secs_f64(batch as f64 / rate.max(1) as f64);
        let mut due = Instant::now();
        let mut texts: Vec<String> = Vec::new();
        while !stop.is_cancelled() && lease.is_valid() {
            if texts.is_empty() {
                if rate > 0 {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep_until(due) => {}
                    }
                    due += period;
                    if due + Duration::from_secs(1) < Instant::now() {
                        due = Instant::now();
                    }
                }
                texts = (0..batch).map(|_| source.next_text()).collect();
            }
            match emit(copy, lease, &producer, &texts, FAST_QUEUE_CAP, stop).await {
                Emitted::QueueFull => tokio::time::sleep(Duration::from_millis(1)).await,
                _ => texts.clear(),
            }
        }
        return;
    }
    // Each text is made before its tick, so that the tick stamps and sends it.
    let mut text = source.next_text();
    let first = match newest_is_new_for(copy).await {
        Some(wait) => wait,
        None => first_tick(last.as_ref(), interval, now_ms()),
    };
    let mut ticker = tokio::time::interval_at(Instant::now() + first, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut too_soon = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if !lease.is_valid() {
            warn!(
                epoch = lease.epoch,
                "lost the lease: it lapsed before a renewal came back (paused or cut off)"
            );
            return;
        }
        match emit(copy, lease, &producer, std::slice::from_ref(&text), 0, stop).await {
            Emitted::TooSoon => {
                too_soon += 1;
                if too_soon >= 3 {
                    // A tick Redis ran late explains one refusal, not three
                    // in a row: the key outlives an interval, so another
                    // program set it. It is ours to reset.
                    copy.last_error.problem(
                        "enqueue refused three times in a row as too soon",
                        &format!(
                            "{} outlived an interval; deleted it",
                            copy.keys.last_enqueue()
                        ),
                    );
                    let _: redis::RedisResult<i64> = redis::cmd("DEL")
                        .arg(copy.keys.last_enqueue())
                        .query_async(&mut copy.redis.conn())
                        .await;
                    too_soon = 0;
                }
            }
            _ => {
                too_soon = 0;
                text = source.next_text();
            }
        }
    }
}

/// How long, by Redis's clock, the newest message remains younger than one
/// interval (the PTTL of the last-enqueue key); `None` when that cannot be
/// told (the key never expires, or the request failed).
async fn newest_is_new_for(copy: &CopyState) -> Option<Duration> {
    let pttl: i64 = redis::cmd("PTTL")
        .arg(copy.keys.last_enqueue())
        .query_async(&mut copy.redis.conn())
        .await
        .ok()?;
    match pttl {
        -2 => Some(Duration::ZERO),
        // Never more than an interval: a key another program set with a
        // long expiry must not hold the generator back.
        ms if ms >= 0 => Some(Duration::from_millis(ms as u64 + 1).min(copy.settings.interval)),
        _ => None,
    }
}

/// How long a new generator waits before its first message: nothing when
/// the newest message is an interval old, else the rest of that interval.
pub fn first_tick(last: Option<&LastEnqueue>, interval: Duration, now_ms: u64) -> Duration {
    let Some(last) = last else {
        return Duration::ZERO;
    };
    let due = last
        .generated_at_ms
        .saturating_add(interval.as_millis() as u64);
    Duration::from_millis(due.saturating_sub(now_ms)).min(interval)
}

/// Enqueues `texts` in one fenced step.
async fn emit(
    copy: &CopyState,
    lease: &HeldLease,
    producer: &str,
    texts: &[String],
    queue_cap: u64,
    stop: &CancellationToken,
) -> Emitted {
    let generated_at_ms = now_ms();
    let bodies: Vec<String> = texts
        .iter()
        .map(|text| {
            NewMessage {
                epoch: lease.epoch,
                producer,
                text,
                generated_at_ms,
            }
            .encode_after_seq()
        })
        .collect();
    let last = LastEnqueue {
        generated_at_ms,
        epoch: lease.epoch,
        producer: producer.to_string(),
    };
    let enqueued = scripts::enqueue(
        &copy.redis,
        &copy.keys,
        &lease.holder,
        &bodies,
        &last,
        queue_cap,
        copy.settings.interval,
    )
    .await;
    if let Ok(Ok(_)) = enqueued {
        copy.metrics.generated.inc_by(texts.len() as u64);
        copy.confirm_replicated("an enqueue").await;
    }
    match enqueued {
        Ok(Ok(first_seq)) if copy.chatty() => {
            for (seq, text) in (first_seq..).zip(texts) {
                info!(seq, epoch = lease.epoch, text = %for_terminal(text), "generated");
            }
        }
        Ok(Ok(first_seq)) => {
            debug!(
                first_seq,
                count = texts.len(),
                epoch = lease.epoch,
                "generated"
            )
        }
        Ok(Err(Refused::QueueFull)) => return Emitted::QueueFull,
        Ok(Err(Refused::TooSoon)) => {
            debug!("skipped a tick: Redis ran the last one less than an interval ago");
            return Emitted::TooSoon;
        }
        Ok(Err(_)) => {
            warn!(
                epoch = lease.epoch,
                "enqueue refused: the lease is no longer ours"
            );
            stop.cancel();
        }
        Err(e) => copy.last_error.report("enqueue (the tick is skipped)", &e),
    }
    Emitted::Done
}

/// What became of one tick's enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emitted {
    /// Sent (accepted, refused for the lease, or failed and reported).
    Done,
    /// The queue was at its cap: nothing written.
    QueueFull,
    /// Redis saw the last message less than an interval ago: nothing written.
    TooSoon,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(at: u64) -> LastEnqueue {
        LastEnqueue {
            generated_at_ms: at,
            epoch: 1,
            producer: "p".into(),
        }
    }

    #[test]
    fn the_first_tick_waits_only_for_the_rest_of_an_interval() {
        let interval = Duration::from_millis(500);
        assert_eq!(first_tick(None, interval, 10_000), Duration::ZERO);
        assert_eq!(
            first_tick(Some(&last(9_000)), interval, 10_000),
            Duration::ZERO
        );
        assert_eq!(
            first_tick(Some(&last(9_800)), interval, 10_000),
            Duration::from_millis(300)
        );
        // A clock far behind the last producer's never waits more than one interval.
        assert_eq!(first_tick(Some(&last(99_000)), interval, 10_000), interval);
    }
}
