//! The generator loop: one message per tick, each one a fenced enqueue.
//!
//! Ticks lie on a fixed grid of `--interval-ms` from the first one, so there
//! is no drift; a tick missed (a slow Redis, a paused process) is skipped,
//! never made up in a burst. A new generator emits its first message at once
//! unless the newest message is younger than one interval, in which case it
//! waits for the rest of that interval.

use crate::escape::for_terminal;
use crate::lease::HeldLease;
use crate::message::{now_ms, NewMessage};
use crate::node::Node;
use crate::scripts::{self, LastEnqueue};
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Generates while `lease` is valid, until `stop` is cancelled. Cancels
/// `stop` itself when an enqueue is refused: the lease is gone.
pub async fn run(
    node: &Node,
    lease: &HeldLease,
    last: Option<LastEnqueue>,
    stop: &CancellationToken,
) {
    let mut source = match generators::by_name(&node.settings.generator, None) {
        Ok(source) => source,
        Err(e) => {
            warn!("{e}");
            stop.cancel();
            return;
        }
    };
    let interval = node.settings.interval;
    let producer = node.id();
    if interval.is_zero() {
        while !stop.is_cancelled() && lease.is_valid() {
            emit(node, lease, &producer, source.next_text(), stop).await;
        }
        return;
    }
    // Each text is made before its tick, so that the tick stamps and sends it.
    let mut text = source.next_text();
    let first = first_tick(last.as_ref(), interval, now_ms());
    let mut ticker = tokio::time::interval_at(Instant::now() + first, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
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
        emit(node, lease, &producer, std::mem::take(&mut text), stop).await;
        text = source.next_text();
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

async fn emit(
    node: &Node,
    lease: &HeldLease,
    producer: &str,
    text: String,
    stop: &CancellationToken,
) {
    let generated_at_ms = now_ms();
    let message = NewMessage {
        epoch: lease.epoch,
        producer,
        text: &text,
        generated_at_ms,
    };
    let last = LastEnqueue {
        generated_at_ms,
        epoch: lease.epoch,
        producer: producer.to_string(),
    };
    match scripts::enqueue(
        &node.redis,
        &node.keys,
        &lease.holder,
        &message.encode_after_seq(),
        &last,
    )
    .await
    {
        Ok(Some(seq)) if node.chatty() => {
            info!(seq, epoch = lease.epoch, text = %for_terminal(&text), "generated")
        }
        Ok(Some(seq)) => debug!(seq, epoch = lease.epoch, "generated"),
        Ok(None) => {
            warn!(
                epoch = lease.epoch,
                "enqueue refused: the lease is no longer ours"
            );
            stop.cancel();
        }
        Err(e) => debug!(error = %e, "enqueue failed; the tick is skipped"),
    }
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
