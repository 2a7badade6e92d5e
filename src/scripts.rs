//! The Lua scripts, one file each under `src/scripts/` with a header that
//! lists its KEYS, ARGV and reply, and the one Rust function that calls each.
//!
//! Every state change that must be atomic is one of these scripts. They are
//! sent with EVALSHA and re-sent on NOSCRIPT by redis-rs; [`load_all`] loads
//! them once up front so that a thousand first callers do not each load them.

use crate::connection::Redis;
use crate::keys::Keys;
use redis::{ErrorKind, RedisError, RedisResult, Script, Value};
use std::sync::LazyLock;

/// Each script is the prelude (the shared key-type checks and the
/// dead-letter record) followed by its own file.
macro_rules! script {
    ($name:ident, $file:literal) => {
        static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(
                include_str!("scripts/prelude.lua"),
                include_str!(concat!("scripts/", $file))
            ))
        });
    };
}

script!(ACQUIRE_LEASE, "acquire_lease.lua");
script!(EXTEND_LOCK, "extend_lock.lua");
script!(RELEASE_LEASE, "release_lease.lua");
script!(ENQUEUE, "enqueue.lua");
script!(CLAIM, "claim.lua");
script!(ACK, "ack.lua");
script!(HEARTBEAT, "heartbeat.lua");
script!(RECLAIM, "reclaim.lua");
script!(TAKE_ERRORS, "take_errors.lua");
script!(RETURN_DRAIN, "return_drain.lua");
script!(SETTLE_DRAIN, "settle_drain.lua");

/// Loads every script into the server's script cache.
pub async fn load_all(redis: &Redis) -> RedisResult<()> {
    let mut conn = redis.conn();
    for script in [
        &ACQUIRE_LEASE,
        &EXTEND_LOCK,
        &RELEASE_LEASE,
        &ENQUEUE,
        &CLAIM,
        &ACK,
        &HEARTBEAT,
        &RECLAIM,
        &TAKE_ERRORS,
        &RETURN_DRAIN,
        &SETTLE_DRAIN,
    ] {
        script.load_async(&mut conn).await?;
    }
    Ok(())
}

/// A reply that is not the shape its script returns: an error, never a
/// default, so that a wrong answer cannot read as "nothing left" or "held".
fn unexpected(script: &'static str, reply: &[Value]) -> RedisError {
    RedisError::from((
        ErrorKind::UnexpectedReturnType,
        "unexpected script reply",
        format!("{script} answered {reply:?}"),
    ))
}

fn int(script: &'static str, reply: &[Value], at: usize) -> RedisResult<i64> {
    match reply.get(at) {
        Some(Value::Int(n)) => Ok(*n),
        _ => Err(unexpected(script, reply)),
    }
}

fn uint(script: &'static str, reply: &[Value], at: usize) -> RedisResult<u64> {
    u64::try_from(int(script, reply, at)?).map_err(|_| unexpected(script, reply))
}

fn bytes(script: &'static str, reply: &[Value], at: usize) -> RedisResult<Vec<u8>> {
    match reply.get(at) {
        Some(Value::BulkString(b)) => Ok(b.clone()),
        Some(Value::SimpleString(s)) => Ok(s.clone().into_bytes()),
        _ => Err(unexpected(script, reply)),
    }
}

/// The newest message as `acquire_lease` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastEnqueue {
    pub generated_at_ms: u64,
    pub epoch: u64,
    pub producer: String,
}

impl LastEnqueue {
    pub fn encode(&self) -> String {
        format!("{} {} {}", self.generated_at_ms, self.epoch, self.producer)
    }

    fn decode(raw: &[u8]) -> Option<Self> {
        let raw = std::str::from_utf8(raw).ok()?;
        let mut parts = raw.splitn(3, ' ');
        Some(Self {
            generated_at_ms: parts.next()?.parse().ok()?,
            epoch: parts.next()?.parse().ok()?,
            producer: parts.next()?.to_string(),
        })
    }
}

/// The answer of [`acquire_lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is ours with this epoch.
    Taken {
        epoch: u64,
        last: Option<LastEnqueue>,
    },
    /// Someone holds it for `ms_left` more.
    Held { ms_left: i64, holder: String },
}

/// The lease value `"<epoch>:<copy id>"` that fences a holder.
pub fn holder_value(epoch: u64, copy_id: &str) -> String {
    format!("{epoch}:{copy_id}")
}

/// Takes the generator lease if it is free.
pub async fn acquire_lease(
    redis: &Redis,
    keys: &Keys,
    copy_id: &str,
    lease_ms: u64,
) -> RedisResult<Acquired> {
    const NAME: &str = "acquire_lease";
    let reply: Vec<Value> = ACQUIRE_LEASE
        .key(keys.lease())
        .key(keys.epoch())
        .key(keys.last_enqueue())
        .arg(copy_id)
        .arg(lease_ms)
        .invoke_async(&mut redis.conn())
        .await?;
    match int(NAME, &reply, 0)? {
        1 => Ok(Acquired::Taken {
            epoch: uint(NAME, &reply, 1)?,
            last: LastEnqueue::decode(&bytes(NAME, &reply, 2)?),
        }),
        0 => Ok(Acquired::Held {
            ms_left: int(NAME, &reply, 1)?,
            holder: String::from_utf8_lossy(&bytes(NAME, &reply, 2)?).into_owned(),
        }),
        _ => Err(unexpected(NAME, &reply)),
    }
}

/// Extends `lock` if `holder` still holds it; false when it does not.
async fn extend_lock(redis: &Redis, lock: String, holder: &str, ms: u64) -> RedisResult<bool> {
    let extended: i64 = EXTEND_LOCK
        .key(lock)
        .arg(holder)
        .arg(ms)
        .invoke_async(&mut redis.conn())
        .await?;
    Ok(extended == 1)
}

/// Extends the lease if `holder` still holds it; false when it does not.
pub async fn renew_lease(
    redis: &Redis,
    keys: &Keys,
    holder: &str,
    lease_ms: u64,
) -> RedisResult<bool> {
    extend_lock(redis, keys.lease(), holder, lease_ms).await
}

/// Deletes the lease if `holder` holds it and announces that it is free.
pub async fn release_lease(redis: &Redis, keys: &Keys, holder: &str) -> RedisResult<bool> {
    RELEASE_LEASE
        .key(keys.lease())
        .arg(holder)
        .arg(keys.lease_channel())
        .invoke_async(&mut redis.conn())
        .await
}

/// The answer of [`enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Accepted; the messages are numbered from this seq on, in order.
    Accepted { first_seq: u64 },
    /// The caller does not hold the lease: nothing was written.
    NotHolder,
    /// The queue is at its cap: nothing was written.
    QueueFull,
    /// The newest message is younger than the interval (less 10 ms) by
    /// Redis's clock: nothing was written; the tick is skipped.
    TooSoon,
}

/// The fenced enqueue of `bodies` (each a message's JSON after its seq
/// field), all or nothing. `queue_cap` 0 means no cap; `interval` is how
/// long the newest message counts as new for a generator that takes over.
pub async fn enqueue(
    redis: &Redis,
    keys: &Keys,
    holder: &str,
    bodies: &[String],
    last: &LastEnqueue,
    queue_cap: u64,
    interval: std::time::Duration,
) -> RedisResult<Enqueued> {
    let first: i64 = ENQUEUE
        .key(keys.lease())
        .key(keys.seq())
        .key(keys.queue())
        .key(keys.last_enqueue())
        .arg(holder)
        .arg(keys.wake_channel())
        .arg(last.encode())
        .arg(queue_cap)
        .arg(interval.as_millis() as u64)
        .arg(bodies)
        .invoke_async(&mut redis.conn())
        .await?;
    Ok(match first {
        0 => Enqueued::NotHolder,
        -1 => Enqueued::QueueFull,
        -2 => Enqueued::TooSoon,
        n if n > 0 => Enqueued::Accepted {
            first_seq: n as u64,
        },
        n => return Err(unexpected("enqueue", &[Value::Int(n)])),
    })
}

/// The answer of [`claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The copy's heartbeat is gone: it must re-register before claiming.
    Expired,
    /// The items now in the copy's processing list, what is left queued (0
    /// when fewer than asked were there), and how many items too large to
    /// take went to dead-letter instead.
    Claimed {
        items: Vec<Vec<u8>>,
        left: u64,
        oversized: u64,
    },
}

/// Moves up to `count` messages from the queue into `copy_id`'s processing
/// list; items over `max_item_bytes` go to dead-letter without leaving Redis.
pub async fn claim(
    redis: &Redis,
    keys: &Keys,
    copy_id: &str,
    count: usize,
    max_item_bytes: u64,
) -> RedisResult<Claim> {
    const NAME: &str = "claim";
    let reply: Vec<Value> = CLAIM
        .key(keys.queue())
        .key(keys.processing(copy_id))
        .key(keys.heartbeat(copy_id))
        .key(keys.dead())
        .arg(count)
        .arg(max_item_bytes)
        .invoke_async(&mut redis.conn())
        .await?;
    if int(NAME, &reply, 0)? == -1 && reply.len() == 1 {
        return Ok(Claim::Expired);
    }
    Ok(Claim::Claimed {
        left: uint(NAME, &reply, 0)?,
        oversized: uint(NAME, &reply, 1)?,
        items: (2..reply.len())
            .map(|at| bytes(NAME, &reply, at))
            .collect::<RedisResult<_>>()?,
    })
}

/// What processing a message came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// An error, with the record to store for `get-errors`.
    Error(String),
    /// Not a message at all, with the reason; the script builds the
    /// dead-letter record around the item.
    Dead(String),
}

/// Commits results and releases their items in one step, each answer true
/// when committed, false when refused because the item is no longer held
/// (nothing changed for it).
pub async fn ack(
    redis: &Redis,
    keys: &Keys,
    copy_id: &str,
    results: &[(Vec<u8>, Outcome)],
) -> RedisResult<Vec<bool>> {
    let mut invocation = ACK.prepare_invoke();
    invocation
        .key(keys.processing(copy_id))
        .key(keys.processed())
        .key(keys.errors())
        .key(keys.errors_total())
        .key(keys.dead());
    for (item, outcome) in results {
        let (kind, payload) = match outcome {
            Outcome::Ok => ("ok", ""),
            Outcome::Error(record) => ("error", record.as_str()),
            Outcome::Dead(reason) => ("dead", reason.as_str()),
        };
        invocation.arg(item).arg(kind).arg(payload);
    }
    let reply: Vec<Value> = invocation.invoke_async(&mut redis.conn()).await?;
    if reply.len() != results.len() {
        return Err(unexpected("ack", &reply));
    }
    (0..reply.len())
        .map(|at| Ok(int("ack", &reply, at)? == 1))
        .collect()
}

/// The answer of [`heartbeat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    /// False: the heartbeat had expired; the copy must re-register.
    pub alive: bool,
    /// This copy runs the janitor this period.
    pub janitor_turn: bool,
    /// `None` when the queue key is of the wrong type.
    pub queue_len: Option<u64>,
    /// The length of this copy's processing list; `None` when of the wrong type.
    pub processing_len: Option<u64>,
    /// A key of the namespace that is of the wrong type, named.
    pub problem: Option<String>,
    /// The janitor lock is held by no registered copy (only when asked).
    pub janitor_orphaned: bool,
}

/// How a copy beats: the first time under an id, or again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeatKind {
    Register,
    Beat,
    /// A beat that also checks that the janitor lock is held by a copy.
    BeatAndCheckJanitor,
}

/// Registers or keeps alive a copy, and publishes its description.
pub async fn heartbeat(
    redis: &Redis,
    keys: &Keys,
    copy_id: &str,
    ttl_ms: u64,
    description: &str,
    janitor_period_ms: u64,
    kind: BeatKind,
) -> RedisResult<Beat> {
    const NAME: &str = "heartbeat";
    let reply: Vec<Value> = HEARTBEAT
        .key(keys.heartbeat(copy_id))
        .key(keys.registry())
        .key(keys.janitor_lock())
        .key(keys.queue())
        .key(keys.processing(copy_id))
        .arg(copy_id)
        .arg(ttl_ms)
        .arg(description)
        .arg(janitor_period_ms)
        .arg(if kind == BeatKind::Register {
            "register"
        } else {
            "beat"
        })
        .arg(if kind == BeatKind::BeatAndCheckJanitor {
            "1"
        } else {
            "0"
        })
        .invoke_async(&mut redis.conn())
        .await?;
    let length = |at| int(NAME, &reply, at).map(|n| u64::try_from(n).ok());
    let problem = String::from_utf8_lossy(&bytes(NAME, &reply, 4)?).into_owned();
    Ok(Beat {
        alive: int(NAME, &reply, 0)? == 1,
        janitor_turn: int(NAME, &reply, 1)? == 1,
        queue_len: length(2)?,
        processing_len: length(3)?,
        problem: (!problem.is_empty()).then_some(problem),
        janitor_orphaned: int(NAME, &reply, 5)? == 1,
    })
}

/// What [`reclaim`] did with a dead copy's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reclaimed {
    pub requeued: u64,
    pub dead_lettered: u64,
}

/// Gives a dead copy's messages back and forgets the copy; `None` when its
/// heartbeat exists (alive: nothing changed). `count_delivery` is false when
/// a copy gives back, on shutdown, messages it never worked on.
pub async fn reclaim(
    redis: &Redis,
    keys: &Keys,
    copy_id: &str,
    max_deliveries: u32,
    count_delivery: bool,
) -> RedisResult<Option<Reclaimed>> {
    const NAME: &str = "reclaim";
    let reply: Vec<Value> = RECLAIM
        .key(keys.heartbeat(copy_id))
        .key(keys.processing(copy_id))
        .key(keys.registry())
        .key(keys.queue())
        .key(keys.dead())
        .arg(copy_id)
        .arg(max_deliveries)
        .arg(keys.wake_channel())
        .arg(if count_delivery { "1" } else { "0" })
        .invoke_async(&mut redis.conn())
        .await?;
    if int(NAME, &reply, 0)? == -1 {
        return Ok(None);
    }
    Ok(Some(Reclaimed {
        requeued: uint(NAME, &reply, 0)?,
        dead_lettered: uint(NAME, &reply, 1)?,
    }))
}

/// The most bytes of error records one batch of get-errors takes: a reply
/// that a request timeout of a second can always carry.
pub const TAKE_BYTES: u64 = 4 << 20;

/// Moves up to `count` errors (and about [`TAKE_BYTES`]) into the run's
/// draining list and (re)sets its lock for `lock_ms`; oldest first.
pub async fn take_errors(
    redis: &Redis,
    keys: &Keys,
    run_id: &str,
    count: u64,
    lock_ms: u64,
) -> RedisResult<Vec<Vec<u8>>> {
    TAKE_ERRORS
        .key(keys.errors())
        .key(keys.draining(run_id))
        .key(keys.drain_lock(run_id))
        .key(keys.drains())
        .arg(run_id)
        .arg(count)
        .arg(lock_ms)
        .arg(TAKE_BYTES)
        .invoke_async(&mut redis.conn())
        .await
}

/// Extends a live get-errors run's lock; false when it had lapsed.
pub async fn renew_drain_lock(
    redis: &Redis,
    keys: &Keys,
    run_id: &str,
    lock_ms: u64,
) -> RedisResult<bool> {
    extend_lock(redis, keys.drain_lock(run_id), run_id, lock_ms).await
}

/// Forgets the oldest errors of the run's draining list, keeping the `keep`
/// not yet written; the list's length before. Sent again after a lost
/// answer, it forgets nothing more.
pub async fn settle_drain(redis: &Redis, keys: &Keys, run_id: &str, keep: u64) -> RedisResult<u64> {
    const NAME: &str = "settle_drain";
    let reply: Vec<Value> = SETTLE_DRAIN
        .key(keys.draining(run_id))
        .arg(keep)
        .invoke_async(&mut redis.conn())
        .await?;
    uint(NAME, &reply, 0)
}

/// Returns the draining list of a run whose lock is gone to the errors list;
/// `None` while the run's lock exists.
pub async fn return_drain(redis: &Redis, keys: &Keys, run_id: &str) -> RedisResult<Option<u64>> {
    let n: i64 = RETURN_DRAIN
        .key(keys.drain_lock(run_id))
        .key(keys.draining(run_id))
        .key(keys.errors())
        .key(keys.drains())
        .arg(run_id)
        .invoke_async(&mut redis.conn())
        .await?;
    match n {
        -1 => Ok(None),
        n if n >= 0 => Ok(Some(n as u64)),
        n => Err(unexpected("return_drain", &[Value::Int(n)])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_of_an_unexpected_shape_is_an_error_not_a_default() {
        let reply = [Value::Int(1), Value::Nil, Value::BulkString(b"7".to_vec())];
        assert_eq!(int("t", &reply, 0).ok(), Some(1));
        assert!(int("t", &reply, 1).is_err(), "nil is not 0");
        assert!(
            int("t", &reply, 2).is_err(),
            "a string is not a number here"
        );
        assert!(int("t", &reply, 3).is_err(), "a missing element is not 0");
        assert!(uint("t", &[Value::Int(-1)], 0).is_err());
        assert!(bytes("t", &reply, 0).is_err());
        assert_eq!(bytes("t", &reply, 2).ok(), Some(b"7".to_vec()));
        let err = int("claim", &reply, 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedReturnType);
        assert!(err.to_string().contains("claim"), "{err}");
    }
}
