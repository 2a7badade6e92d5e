//! The janitor: once a second, in whichever copy the heartbeat script gives
//! the turn to, it returns the work of the dead to where it can be done.
//!
//! - A registered copy whose heartbeat key is gone: its processing list goes
//!   back to the queue (or to dead-letter past `--max-deliveries`) and it
//!   leaves the registry.
//! - A `get-errors` run whose lock is gone: its draining list goes back to
//!   the errors list.
//!
//! It costs two reads a pass when nobody died, whatever the number of copies,
//! and its scripts check again inside Redis, so two passes at once do no harm.

use crate::connection::Redis;
use crate::error::LastError;
use crate::keys::Keys;
use crate::scripts::{self, Reclaim};
use redis::RedisResult;
use tracing::info;

/// One pass over dead copies and abandoned `get-errors` runs; what fails is
/// reported to `errors` and retried by the next pass. What it took back from
/// dead copies: (requeued, dead-lettered).
pub async fn pass(
    redis: &Redis,
    keys: &Keys,
    max_deliveries: u32,
    errors: &LastError,
) -> (u64, u64) {
    let mut reclaimed = (0, 0);
    if let Err(e) = reclaim_dead_copies(redis, keys, max_deliveries, &mut reclaimed).await {
        errors.report(
            &format!(
                "janitor: reclaiming dead copies (listed in {})",
                keys.registry()
            ),
            &e,
        );
    }
    if let Err(e) = return_abandoned_drains(redis, keys).await {
        errors.report(
            &format!(
                "janitor: returning abandoned get-errors batches (listed in {})",
                keys.drains()
            ),
            &e,
        );
    }
    reclaimed
}

/// The `members` whose `key_of(member)` does not exist.
async fn missing(
    redis: &Redis,
    members: Vec<String>,
    key_of: impl Fn(&str) -> String,
) -> RedisResult<Vec<String>> {
    if members.is_empty() {
        return Ok(Vec::new());
    }
    // Sorted, so that a pass does the same thing for the same state.
    let mut members = members;
    members.sort_unstable();
    let keys: Vec<String> = members.iter().map(|m| key_of(m)).collect();
    let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut redis.conn())
        .await?;
    // Present means holding the member's own id: anything else was written
    // by another program and keeps nobody alive.
    Ok(members
        .into_iter()
        .zip(values)
        .filter_map(|(member, value)| {
            (value.as_deref() != Some(member.as_bytes())).then_some(member)
        })
        .collect())
}

async fn reclaim_dead_copies(
    redis: &Redis,
    keys: &Keys,
    max_deliveries: u32,
    reclaimed: &mut (u64, u64),
) -> RedisResult<()> {
    let ids: Vec<String> = redis::cmd("HKEYS")
        .arg(keys.registry())
        .query_async(&mut redis.conn())
        .await?;
    for id in missing(redis, ids, |id| keys.heartbeat(id)).await? {
        if let Ok(r) = scripts::reclaim(redis, keys, &id, max_deliveries, Reclaim::Dead).await? {
            reclaimed.0 += r.requeued;
            reclaimed.1 += r.dead_lettered;
            info!(
                copy = %crate::escape::for_terminal(&id),
                requeued = r.requeued,
                dead_lettered = r.dead_lettered,
                "janitor: reclaimed the messages of a dead copy"
            );
        }
    }
    Ok(())
}

/// Returns the batches of get-errors runs whose lock is gone; how many errors went back.
pub async fn return_abandoned_drains(redis: &Redis, keys: &Keys) -> RedisResult<u64> {
    let runs: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys.drains())
        .query_async(&mut redis.conn())
        .await?;
    let mut returned = 0;
    for run in missing(redis, runs, |run| keys.drain_lock(run)).await? {
        if let Ok(n) = scripts::return_drain(redis, keys, &run).await? {
            if n > 0 {
                info!(run = %crate::escape::for_terminal(&run), errors = n, "janitor: returned the errors of an abandoned get-errors run");
            }
            returned += n;
        }
    }
    Ok(returned)
}
