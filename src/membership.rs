//! A copy's membership of the cluster: its registration, its heartbeat, and
//! what the heartbeat's reply sets off (the janitor's turn, a poll of the queue).
//!
//! A copy is alive while its heartbeat key exists. One whose key expired
//! (paused, cut off) may already have had its messages taken back, so it never
//! resumes under the old id: it registers again under a new one.

use crate::copy::{client_name, new_copy_id, CopyState};
use crate::janitor;
use crate::scripts::{self, BeatKind, Reclaim};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often a copy beats.
pub const BEAT: Duration = Duration::from_secs(1);
/// How long a heartbeat lives: three beats.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(3);
/// Every how many beats a copy checks that the janitor lock belongs to a copy.
const JANITOR_CHECK_EVERY: u64 = 10;
/// How often the janitor runs, in one copy of the cluster.
pub const JANITOR_PERIOD: Duration = Duration::from_secs(1);

/// How long a description that has not changed goes unwritten: a dead
/// copy's "last seen" in `status` (its heartbeat gone) is at most this old.
const DESCRIPTION_REFRESH: Duration = Duration::from_secs(10);

/// The description `status` shows for this copy, without the time of the
/// beat (which [`described`] adds).
fn description(copy: &CopyState) -> serde_json::Value {
    let (last_error, last_error_at_ms) = copy.last_error.get().unzip();
    serde_json::json!({
        "id": &*copy.id(),
        "name": copy.settings.name,
        "host": copy.host,
        "pid": copy.pid,
        "role": copy.role().as_str(),
        "concurrency": copy.settings.concurrency,
        "processed": copy.processed(),
        "unconfirmed_writes": copy.unconfirmed(),
        "started_at_ms": copy.started_at_ms,
        "last_error": last_error,
        "last_error_at_ms": last_error_at_ms,
    })
}

/// `description` with the time of this beat, as it is written.
fn described(mut description: serde_json::Value) -> String {
    description["beat_at_ms"] = crate::message::now_ms().into();
    description.to_string()
}

/// The description last written, and when: a beat writes it again only
/// when it changed or [`DESCRIPTION_REFRESH`] has passed, so that a
/// thousand idle copies do not rewrite the registry every second.
#[derive(Default)]
struct Written(Option<(serde_json::Value, tokio::time::Instant)>);

impl Written {
    /// What this beat sends: the description, or "" for "unchanged".
    fn next(&mut self, copy: &CopyState, kind: BeatKind) -> String {
        let now = description(copy);
        let fresh = matches!(&self.0, Some((last, at)) if *last == now && at.elapsed() < DESCRIPTION_REFRESH);
        if fresh && kind != BeatKind::Register {
            return String::new();
        }
        self.0 = Some((now.clone(), tokio::time::Instant::now()));
        described(now)
    }
}

/// `processing_len`: also read the length of the copy's processing list,
/// which the processor compares with what it holds every few seconds.
async fn beat_once(
    copy: &CopyState,
    kind: BeatKind,
    description: &str,
    processing_len: bool,
) -> redis::RedisResult<scripts::Answer<scripts::Beat>> {
    scripts::heartbeat(
        &copy.redis,
        &copy.keys,
        &copy.id(),
        HEARTBEAT_TTL.as_millis() as u64,
        description,
        JANITOR_PERIOD.as_millis() as u64,
        kind,
        processing_len,
    )
    .await
}

/// One registration of the copy's current id, with its whole description.
async fn register_once(copy: &CopyState) -> redis::RedisResult<scripts::Answer<scripts::Beat>> {
    beat_once(
        copy,
        BeatKind::Register,
        &described(description(copy)),
        true,
    )
    .await
}

/// Registers the copy's current id, retrying until it succeeds; false on shutdown.
pub async fn register(copy: &CopyState, shutdown: &CancellationToken) -> bool {
    loop {
        match register_once(copy).await {
            Ok(_) => {
                copy.beat_landed();
                return true;
            }
            Err(e) => copy.last_error.report("registration", &e),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Beats every [`BEAT`] until `stop`.
pub async fn beat(copy: Arc<CopyState>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(BEAT);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats = 0u64;
    let mut orphaned_seen = 0;
    let mut written = Written::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
            _ = copy.beat_now.notified() => {}
        }
        beats += 1;
        let kind = if beats.is_multiple_of(JANITOR_CHECK_EVERY) {
            BeatKind::BeatAndCheckJanitor
        } else {
            BeatKind::Beat
        };
        let description = written.next(&copy, kind);
        match beat_once(&copy, kind, &description, beats.is_multiple_of(2)).await {
            Ok(Err(_)) => {
                written = Written::default();
                rejoin(&copy).await
            }
            Ok(Ok(beat)) => {
                copy.beat_landed();
                if kind == BeatKind::BeatAndCheckJanitor {
                    orphaned_seen = if beat.janitor_orphaned {
                        orphaned_seen + 1
                    } else {
                        0
                    };
                    // Twice in a row: not the lock of a copy that just left.
                    if orphaned_seen >= 2 {
                        copy.last_error.problem(
                            "the janitor lock is held by no copy",
                            &format!("{} (set by another program?); every copy runs the janitor until it expires or is deleted", copy.keys.janitor_lock()),
                        );
                    }
                }
                if let Some(problem) = &beat.problem {
                    copy.last_error
                        .problem("a key of the namespace is of the wrong type", problem);
                }
                if beat.janitor_turn {
                    let copy = copy.clone();
                    copy.tasks.clone().spawn(async move {
                        let (requeued, dead_lettered) = janitor::pass(
                            &copy.redis,
                            &copy.keys,
                            copy.settings.max_deliveries,
                            &copy.last_error,
                        )
                        .await;
                        copy.metrics.reclaimed.inc_by(requeued);
                        copy.metrics.dead_lettered.inc_by(dead_lettered);
                    });
                }
                if let Some(len) = beat.processing_len {
                    copy.set_processing_len(len);
                }
                if let Some(len) = beat.queue_len {
                    copy.set_queue_len(len);
                }
                if beat.queue_len.is_some_and(|n| n > 0) {
                    copy.signals.wake.notify_one();
                }
            }
            Err(e) => {
                // It may not have landed: write the description next time.
                written = Written::default();
                copy.last_error.report("heartbeat", &e)
            }
        }
    }
}

/// Registers again under a new id after the old heartbeat expired.
async fn rejoin(copy: &CopyState) {
    let old = copy.id();
    let new = new_copy_id(&copy.settings.name);
    copy.set_id(new.clone());
    match register_once(copy).await {
        Ok(_) => {
            copy.beat_landed();
            warn!(old = %old, new = %new, "heartbeat had expired (paused or cut off); re-registered under a new id");
            let _ = copy
                .redis
                .set_client_name(&client_name(copy.keys.namespace(), &new))
                .await;
        }
        Err(e) => copy.last_error.report("re-registration", &e),
    }
    // Whatever was in hand under the old id is the janitor's now.
    copy.signals.wake.notify_one();
}

/// Leaves the cluster: ends the heartbeat and gives back whatever is still
/// held, exactly as the janitor would for a dead copy.
pub async fn deregister(copy: &CopyState) {
    let id = copy.id();
    match scripts::reclaim(
        &copy.redis,
        &copy.keys,
        &id,
        copy.settings.max_deliveries,
        Reclaim::Leaving,
    )
    .await
    {
        Ok(Ok(r)) if r.requeued + r.dead_lettered > 0 => {
            info!(
                requeued = r.requeued,
                dead_lettered = r.dead_lettered,
                "gave back unfinished messages"
            )
        }
        Ok(_) => {}
        Err(e) => {
            warn!(error = %e, "could not deregister; the janitor gives back what is held once the heartbeat expires")
        }
    }
}
