//! The generator lease: who may generate, and the epoch that fences them.
//!
//! The lease is one key holding `"<epoch>:<copy id>"` with an expiry. A copy
//! that takes it gets a new epoch from a counter in the same script. The
//! holder renews it every third of its length; its own idea of how long it
//! still holds it runs on a monotonic clock started *before* each renewal was
//! sent, so it always believes less than Redis does. Every enqueue checks
//! holder and epoch inside Redis as well, so even a holder that is wrong about
//! time (paused, cut off) cannot add a message.
//!
//! Copies that do not hold it sleep until its expiry (plus a little jitter)
//! rather than polling, and wake at once when the holder releases it.

use crate::backoff::Backoff;
use crate::copy::{CopyState, Role};
use crate::generator;
use crate::scripts::{self, Acquired};
use crate::sync::Locked;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A lease this copy holds, as far as it knows.
#[derive(Debug)]
pub struct HeldLease {
    pub epoch: u64,
    /// `"<epoch>:<copy id>"`, the value that fences every write.
    pub holder: String,
    valid_until: Mutex<Instant>,
}

impl HeldLease {
    fn new(epoch: u64, holder: String, valid_until: Instant) -> Self {
        Self {
            epoch,
            holder,
            valid_until: Mutex::new(valid_until),
        }
    }

    /// True while the lease certainly has not expired in Redis.
    pub fn is_valid(&self) -> bool {
        Instant::now() < *self.valid_until.locked()
    }

    fn extend(&self, until: Instant) {
        *self.valid_until.locked() = until;
    }
}

/// How long after `sent` a lease of `length` certainly still holds: a tenth
/// is kept back for clock rates that differ between this host and Redis.
fn valid_until(sent: Instant, length: Duration) -> Instant {
    sent + length - length / 10
}

/// The epoch of the lease value `"<epoch>:<copy id>"` when it names this copy.
fn our_epoch(holder: &str, id: &str) -> Option<u64> {
    let (epoch, holder_id) = holder.split_once(':')?;
    (holder_id == id).then(|| epoch.parse().ok())?
}

/// Competes for the lease until shutdown; while it holds it, generates.
pub async fn campaign(copy: Arc<CopyState>, shutdown: CancellationToken) {
    let length = copy.settings.lease;
    let lease_ms = length.as_millis() as u64;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    // Another copy held the lease at the last look: until it lapses, its
    // TTL alone is read (one plain command, no script), which is all a
    // follower needs to know when to try; a thousand followers cost Redis
    // a third of what the script would.
    let mut watching = false;
    while !shutdown.is_cancelled() {
        if watching {
            let ttl: redis::RedisResult<i64> = redis::cmd("PTTL")
                .arg(copy.keys.lease())
                .query_async(&mut copy.redis.conn())
                .await;
            match ttl {
                Ok(ms) if ms > 0 => {
                    let wait = Duration::from_millis(ms as u64 + rand::random_range(1..=20));
                    if !follow(&copy, &shutdown, wait).await {
                        watching = false;
                    }
                    continue;
                }
                _ => watching = false,
            }
        }
        let id = copy.id();
        let sent = Instant::now();
        let wait = match scripts::acquire_lease(&copy.redis, &copy.keys, &id, lease_ms).await {
            Ok(Acquired::Taken { epoch, last }) => {
                copy.metrics
                    .epoch
                    .set(i64::try_from(epoch).unwrap_or(i64::MAX));
                backoff.reset();
                match &last {
                    Some(last) => {
                        info!(epoch, previous_epoch = last.epoch, previous = %crate::escape::for_terminal(&last.producer), "became the generator")
                    }
                    None => info!(epoch, "became the generator"),
                }
                let holder = scripts::holder_value(epoch, &id);
                let lease = HeldLease::new(epoch, holder, valid_until(sent, length));
                lead(&copy, lease, last, &shutdown).await;
                continue;
            }
            Ok(Acquired::Held { ms_left, holder }) => {
                let left = Duration::from_millis(ms_left.max(0) as u64);
                if let Some(epoch) = our_epoch(&holder, &id).filter(|_| left > length / 5) {
                    // An earlier request took it and only its answer was lost
                    // (it timed out, or reached Redis late): the lease is ours
                    // for what is left of it, under the epoch it was given.
                    info!(
                        epoch,
                        "took up the lease that a request whose answer was lost had taken"
                    );
                    let until = (sent + left).checked_sub(length / 10).unwrap_or(sent);
                    lead(&copy, HeldLease::new(epoch, holder, until), None, &shutdown).await;
                    continue;
                }
                if ms_left >= 0 {
                    // Wake just after it expires; the jitter spreads the copies out.
                    watching = true;
                    left + Duration::from_millis(rand::random_range(1..=20))
                } else {
                    // Gone between GET and PTTL, or set without expiry by hand.
                    Duration::from_millis(rand::random_range(10..=50))
                }
            }
            Err(e) => {
                copy.last_error.report("taking the lease", &e);
                backoff.next_wait()
            }
        };
        if !follow(&copy, &shutdown, wait).await {
            watching = false;
        }
    }
}

/// Sleeps `wait`, or less when the lease is released or on shutdown; false
/// when it was released (try at once, with the script).
async fn follow(copy: &CopyState, shutdown: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(wait) => true,
        _ = copy.signals.lease_free.notified() => false,
    }
}

/// As the generator, holds the lease and generates until the lease is lost
/// or shutdown; on shutdown releases it so that another copy takes over at once.
async fn lead(
    copy: &Arc<CopyState>,
    lease: HeldLease,
    last: Option<scripts::LastEnqueue>,
    shutdown: &CancellationToken,
) {
    let lease = Arc::new(lease);
    copy.set_role(Role::Generator);
    let lost = shutdown.child_token();
    let renewing = copy
        .tasks
        .spawn(renew(copy.clone(), lease.clone(), lost.clone()));
    generator::run(copy, &lease, last, &lost).await;
    lost.cancel();
    let _ = renewing.await;
    if shutdown.is_cancelled() {
        match scripts::release_lease(&copy.redis, &copy.keys, &lease.holder).await {
            Ok(Ok(_)) => info!(
                epoch = lease.epoch,
                "released the lease; another copy takes over"
            ),
            Ok(Err(_)) => {}
            Err(e) => warn!(error = %e, "could not release the lease; it expires by itself"),
        }
    }
    copy.set_role(Role::Processor);
}

/// Renews every third of the lease until `lost`; cancels `lost` when a
/// renewal is refused or the lease lapses for want of one.
async fn renew(copy: Arc<CopyState>, lease: Arc<HeldLease>, lost: CancellationToken) {
    let length = copy.settings.lease;
    let period = length / 3;
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = lost.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let sent = Instant::now();
        let renewal = tokio::time::timeout(
            period,
            scripts::renew_lease(
                &copy.redis,
                &copy.keys,
                &lease.holder,
                length.as_millis() as u64,
            ),
        )
        .await;
        match renewal {
            Ok(Ok(Ok(_))) => lease.extend(valid_until(sent, length)),
            Ok(Ok(Err(_))) => {
                warn!(
                    epoch = lease.epoch,
                    "lost the lease: another copy holds it now"
                );
                lost.cancel();
                return;
            }
            failed => {
                if let Ok(Err(e)) = &failed {
                    copy.last_error.report("renewing the lease", e);
                }
                if !lease.is_valid() {
                    warn!(
                        epoch = lease.epoch,
                        "lost the lease: it could not be renewed in time"
                    );
                    lost.cancel();
                    return;
                }
            }
        }
    }
}
