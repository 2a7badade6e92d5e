//! The Lua scripts, one file each under `src/scripts/` with a header that
//! lists its KEYS, ARGV and reply, and the one Rust function that calls each.
//!
//! Every state change that must be atomic is one of these scripts. They are
//! sent with EVALSHA and re-sent on NOSCRIPT by redis-rs; [`load_all`] loads
//! them once up front so that a thousand first callers do not each load them.

use crate::connection::Redis;
use crate::keys::Keys;
use redis::{RedisResult, Script, Value};
use std::sync::LazyLock;

macro_rules! script {
    ($name:ident, $file:literal) => {
        static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(include_str!(concat!("scripts/", $file))));
    };
}

script!(ACQUIRE_LEASE, "acquire_lease.lua");
script!(RENEW_LEASE, "renew_lease.lua");
script!(RELEASE_LEASE, "release_lease.lua");
script!(ENQUEUE, "enqueue.lua");
script!(CLAIM, "claim.lua");
script!(ACK, "ack.lua");
script!(HEARTBEAT, "heartbeat.lua");
script!(RECLAIM, "reclaim.lua");
script!(TAKE_ERRORS, "take_errors.lua");
script!(RETURN_DRAIN, "return_drain.lua");

/// Loads every script into the server's script cache.
pub async fn load_all(redis: &Redis) -> RedisResult<()> {
    let mut conn = redis.conn();
    for script in [
        &ACQUIRE_LEASE,
        &RENEW_LEASE,
        &RELEASE_LEASE,
        &ENQUEUE,
        &CLAIM,
        &ACK,
        &HEARTBEAT,
        &RECLAIM,
        &TAKE_ERRORS,
        &RETURN_DRAIN,
    ] {
        redis.observe(script.load_async(&mut conn).await)?;
    }
    Ok(())
}

fn int(value: Option<&Value>) -> i64 {
    match value {
        Some(Value::Int(n)) => *n,
        Some(Value::BulkString(b)) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

fn bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::BulkString(b) => b.clone(),
        Value::SimpleString(s) => s.clone().into_bytes(),
        Value::Int(n) => n.to_string().into_bytes(),
        _ => Vec::new(),
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
    let reply: Vec<Value> = redis.observe(
        ACQUIRE_LEASE
            .key(keys.lease())
            .key(keys.epoch())
            .key(keys.last_enqueue())
            .arg(copy_id)
            .arg(lease_ms)
            .invoke_async(&mut redis.conn())
            .await,
    )?;
    Ok(if int(reply.first()) == 1 {
        Acquired::Taken {
            epoch: int(reply.get(1)).max(0) as u64,
            last: reply.get(2).and_then(|v| LastEnqueue::decode(&bytes(v))),
        }
    } else {
        Acquired::Held {
            ms_left: int(reply.get(1)),
            holder: String::from_utf8_lossy(&reply.get(2).map(bytes).unwrap_or_default())
                .into_owned(),
        }
    })
}

/// Extends the lease if `holder` still holds it; false when it does not.
pub async fn renew_lease(
    redis: &Redis,
    keys: &Keys,
    holder: &str,
    lease_ms: u64,
) -> RedisResult<bool> {
    redis.observe(
        RENEW_LEASE
            .key(keys.lease())
            .arg(holder)
            .arg(lease_ms)
            .invoke_async(&mut redis.conn())
            .await,
    )
}

/// Deletes the lease if `holder` holds it and announces that it is free.
pub async fn release_lease(redis: &Redis, keys: &Keys, holder: &str) -> RedisResult<bool> {
    redis.observe(
        RELEASE_LEASE
            .key(keys.lease())
            .arg(holder)
            .arg(keys.lease_channel())
            .invoke_async(&mut redis.conn())
            .await,
    )
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
}

/// The fenced enqueue of `bodies` (each a message's JSON after its seq
/// field), all or nothing. `queue_cap` 0 means no cap.
pub async fn enqueue(
    redis: &Redis,
    keys: &Keys,
    holder: &str,
    bodies: &[String],
    last: &LastEnqueue,
    queue_cap: u64,
) -> RedisResult<Enqueued> {
    let first: i64 = redis.observe(
        ENQUEUE
            .key(keys.lease())
            .key(keys.seq())
            .key(keys.queue())
            .key(keys.last_enqueue())
            .arg(holder)
            .arg(keys.wake_channel())
            .arg(last.encode())
            .arg(queue_cap)
            .arg(bodies)
            .invoke_async(&mut redis.conn())
            .await,
    )?;
    Ok(match first {
        0 => Enqueued::NotHolder,
        n if n < 0 => Enqueued::QueueFull,
        n => Enqueued::Accepted {
            first_seq: n as u64,
        },
    })
}

/// The answer of [`claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The copy's heartbeat is gone: it must re-register before claiming.
    Expired,
    /// The items now in the copy's processing list, and what is left queued
    /// (0 when fewer than asked were there).
    Claimed { items: Vec<Vec<u8>>, left: u64 },
}

/// Moves up to `count` messages from the queue into `copy_id`'s processing list.
pub async fn claim(redis: &Redis, keys: &Keys, copy_id: &str, count: usize) -> RedisResult<Claim> {
    let reply: Vec<Value> = redis.observe(
        CLAIM
            .key(keys.queue())
            .key(keys.processing(copy_id))
            .key(keys.heartbeat(copy_id))
            .arg(count)
            .invoke_async(&mut redis.conn())
            .await,
    )?;
    let left = int(reply.first());
    if left < 0 {
        return Ok(Claim::Expired);
    }
    Ok(Claim::Claimed {
        items: reply.iter().skip(1).map(bytes).collect(),
        left: left as u64,
    })
}

/// What processing a message came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// An error, with the record to store for `get-errors`.
    Error(String),
    /// Not a message at all, with the dead-letter record.
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
        let (kind, record) = match outcome {
            Outcome::Ok => ("ok", ""),
            Outcome::Error(record) => ("error", record.as_str()),
            Outcome::Dead(record) => ("dead", record.as_str()),
        };
        invocation.arg(item).arg(kind).arg(record);
    }
    let answers: Vec<i64> = redis.observe(invocation.invoke_async(&mut redis.conn()).await)?;
    Ok(answers.into_iter().map(|a| a == 1).collect())
}

/// The answer of [`heartbeat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    /// False: the heartbeat had expired; the copy must re-register.
    pub alive: bool,
    /// This copy runs the janitor this period.
    pub janitor_turn: bool,
    pub queue_len: u64,
}

/// Registers (`register`) or keeps alive a copy, and publishes its description.
#[allow(clippy::too_many_arguments)]
pub async fn heartbeat(
    redis: &Redis,
    keys: &Keys,
    copy_id: &str,
    ttl_ms: u64,
    description: &str,
    janitor_period_ms: u64,
    register: bool,
) -> RedisResult<Beat> {
    let reply: Vec<i64> = redis.observe(
        HEARTBEAT
            .key(keys.heartbeat(copy_id))
            .key(keys.registry())
            .key(keys.janitor_lock())
            .key(keys.queue())
            .arg(copy_id)
            .arg(ttl_ms)
            .arg(description)
            .arg(janitor_period_ms)
            .arg(if register { "register" } else { "beat" })
            .invoke_async(&mut redis.conn())
            .await,
    )?;
    Ok(Beat {
        alive: reply.first() == Some(&1),
        janitor_turn: reply.get(1) == Some(&1),
        queue_len: reply.get(2).copied().unwrap_or(0).max(0) as u64,
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
    let reply: Vec<i64> = redis.observe(
        RECLAIM
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
            .await,
    )?;
    let requeued = reply.first().copied().unwrap_or(-1);
    Ok((requeued >= 0).then(|| Reclaimed {
        requeued: requeued as u64,
        dead_lettered: reply.get(1).copied().unwrap_or(0).max(0) as u64,
    }))
}

/// Moves up to `count` errors into the run's draining list; oldest first.
pub async fn take_errors(
    redis: &Redis,
    keys: &Keys,
    run_id: &str,
    count: u64,
    lock_ms: u64,
) -> RedisResult<Vec<Vec<u8>>> {
    redis.observe(
        TAKE_ERRORS
            .key(keys.errors())
            .key(keys.draining(run_id))
            .key(keys.drain_lock(run_id))
            .key(keys.drains())
            .arg(run_id)
            .arg(count)
            .arg(lock_ms)
            .invoke_async(&mut redis.conn())
            .await,
    )
}

/// Returns the draining list of a run whose lock is gone to the errors list;
/// `None` while the run's lock exists.
pub async fn return_drain(redis: &Redis, keys: &Keys, run_id: &str) -> RedisResult<Option<u64>> {
    let n: i64 = redis.observe(
        RETURN_DRAIN
            .key(keys.drain_lock(run_id))
            .key(keys.draining(run_id))
            .key(keys.errors())
            .key(keys.drains())
            .arg(run_id)
            .invoke_async(&mut redis.conn())
            .await,
    )?;
    Ok((n >= 0).then_some(n as u64))
}
