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
use crate::keys::Keys;
use crate::scripts;
use redis::RedisResult;
use tracing::{debug, info};

/// One pass over dead copies and abandoned `get-errors` runs.
pub async fn pass(redis: &Redis, keys: &Keys, max_deliveries: u32) {
    if let Err(e) = reclaim_dead_copies(redis, keys, max_deliveries).await {
        debug!(error = %e, "janitor: reclaiming failed; the next pass retries");
    }
    if let Err(e) = return_abandoned_drains(redis, keys).await {
        debug!(error = %e, "janitor: returning drains failed; the next pass retries");
    }
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
    let values: Vec<Option<Vec<u8>>> = redis.observe(
        redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut redis.conn())
            .await,
    )?;
    Ok(members
        .into_iter()
        .zip(values)
        .filter_map(|(member, value)| value.is_none().then_some(member))
        .collect())
}

async fn reclaim_dead_copies(redis: &Redis, keys: &Keys, max_deliveries: u32) -> RedisResult<()> {
    let ids: Vec<String> = redis.observe(
        redis::cmd("HKEYS")
            .arg(keys.registry())
            .query_async(&mut redis.conn())
            .await,
    )?;
    for id in missing(redis, ids, |id| keys.heartbeat(id)).await? {
        if let Some(r) = scripts::reclaim(redis, keys, &id, max_deliveries, true).await? {
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

async fn return_abandoned_drains(redis: &Redis, keys: &Keys) -> RedisResult<()> {
    let runs: Vec<String> = redis.observe(
        redis::cmd("SMEMBERS")
            .arg(keys.drains())
            .query_async(&mut redis.conn())
            .await,
    )?;
    for run in missing(redis, runs, |run| keys.drain_lock(run)).await? {
        if let Some(n) = scripts::return_drain(redis, keys, &run).await? {
            if n > 0 {
                info!(run = %crate::escape::for_terminal(&run), errors = n, "janitor: returned the errors of an abandoned get-errors run");
            }
        }
    }
    Ok(())
}
