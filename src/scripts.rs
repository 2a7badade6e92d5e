//! The Lua scripts, one file each under `src/scripts/` with a header that
//! lists its KEYS, ARGV and reply, and the one Rust function that calls each.
//!
//! Every state change that must be atomic is one of these scripts. They are
//! sent with EVALSHA and re-sent on NOSCRIPT by redis-rs; [`load_all`] loads
//! them once up front so that a thousand first callers do not each load them.

use crate::connection::Redis;
use crate::keys::Keys;
use redis::{FromRedisValue, ParsingError, RedisResult, Script, Value};
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
script!(REQUEUE_DEAD, "requeue_dead.lua");
script!(PURGE_DEAD, "purge_dead.lua");

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
        &REQUEUE_DEAD,
        &PURGE_DEAD,
    ] {
        script.load_async(&mut conn).await?;
    }
    Ok(())
}

/// Why a script declined, changing nothing: the status replies listed in
/// `prelude.lua`. Every wrapper whose script can decline answers
/// [`Answer`]: its data, or one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the caller does not hold the lease or lock")]
    NotHolder,
    #[error("the queue is at its cap")]
    QueueFull,
    #[error("the newest message is younger than the interval")]
    TooSoon,
    #[error("the copy's heartbeat is gone: it must register again")]
    NotRegistered,
    #[error("the copy or get-errors run is alive")]
    Alive,
}

impl Refused {
    fn from_status(status: &str) -> Option<Self> {
        Some(match status {
            "NOT_HOLDER" => Refused::NotHolder,
            "QUEUE_FULL" => Refused::QueueFull,
            "TOO_SOON" => Refused::TooSoon,
            "NOT_REGISTERED" => Refused::NotRegistered,
            "ALIVE" => Refused::Alive,
            _ => return None,
        })
    }
}

/// A script's answer: what it did, or why it declined.
pub type Answer<T> = Result<T, Refused>;

/// Reads a refusal or the data `T`.
struct Reply<T>(Answer<T>);

impl<T: FromRedisValue> FromRedisValue for Reply<T> {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        if let Value::SimpleString(status) = &v {
            if let Some(refused) = Refused::from_status(status) {
                return Ok(Reply(Err(refused)));
            }
        }
        T::from_redis_value(v).map(|data| Reply(Ok(data)))
    }
}

/// Runs a script that may decline.
async fn answer<T: FromRedisValue>(
    invocation: &redis::ScriptInvocation<'_>,
    redis: &Redis,
) -> RedisResult<Answer<T>> {
    let Reply(answer) = invocation.invoke_async(&mut redis.conn()).await?;
    Ok(answer)
}

/// A reply that is not the shape its script returns: an error, never a
/// default, so that a wrong answer cannot read as "nothing left" or "held".
fn unexpected(script: &str, reply: &Value) -> ParsingError {
    format!("unexpected script reply: {script} answered {reply:?}").into()
}

/// The elements of a script's array reply, at least `min` of them.
fn fields(script: &str, v: Value, min: usize) -> Result<Vec<Value>, ParsingError> {
    match v {
        Value::Array(items) if items.len() >= min => Ok(items),
        other => Err(unexpected(script, &other)),
    }
}

fn int(script: &str, v: &Value) -> Result<i64, ParsingError> {
    match v {
        Value::Int(n) => Ok(*n),
        other => Err(unexpected(script, other)),
    }
}

fn uint(script: &str, v: &Value) -> Result<u64, ParsingError> {
    u64::try_from(int(script, v)?).map_err(|_| unexpected(script, v))
}

fn bytes(script: &str, v: Value) -> Result<Vec<u8>, ParsingError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        other => Err(unexpected(script, &other)),
    }
}

/// The integer 1 that a script answers when it did what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done;

impl FromRedisValue for Done {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        match v {
            Value::Int(1) => Ok(Done),
            other => Err(unexpected("a script", &other)),
        }
    }
}

/// A count a script answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Count(u64);

impl FromRedisValue for Count {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        uint("a script", &v).map(Count)
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

impl FromRedisValue for Acquired {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        const NAME: &str = "acquire_lease";
        let shown = v.clone();
        let mut f = fields(NAME, v, 3)?.into_iter();
        let (Some(taken), Some(number), Some(text)) = (f.next(), f.next(), f.next()) else {
            return Err(unexpected(NAME, &shown));
        };
        match int(NAME, &taken)? {
            1 => Ok(Acquired::Taken {
                epoch: uint(NAME, &number)?,
                last: LastEnqueue::decode(&bytes(NAME, text)?),
            }),
            0 => Ok(Acquired::Held {
                ms_left: int(NAME, &number)?,
                holder: String::from_utf8_lossy(&bytes(NAME, text)?).into_owned(),
            }),
            _ => Err(unexpected(NAME, &shown)),
        }
    }
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
    ACQUIRE_LEASE
        .key(keys.lease())
        .key(keys.epoch())
        .key(keys.last_enqueue())
        .arg(copy_id)
        .arg(lease_ms)
        .invoke_async(&mut redis.conn())
        .await
}

/// Extends `lock` if `holder` still holds it.
async fn extend_lock(
    redis: &Redis,
    lock: String,
    holder: &str,
    ms: u64,
) -> RedisResult<Answer<Done>> {
    answer(EXTEND_LOCK.key(lock).arg(holder).arg(ms), redis).await
}

/// Extends the lease if `holder` still holds it.
pub async fn renew_lease(
    redis: &Redis,
    keys: &Keys,
    holder: &str,
    lease_ms: u64,
) -> RedisResult<Answer<Done>> {
    extend_lock(redis, keys.lease(), holder, lease_ms).await
}

/// Deletes the lease if `holder` holds it and announces that it is free.
pub async fn release_lease(redis: &Redis, keys: &Keys, holder: &str) -> RedisResult<Answer<Done>> {
    answer(
        RELEASE_LEASE
            .key(keys.lease())
            .arg(holder)
            .arg(keys.lease_channel()),
        redis,
    )
    .await
}

/// The fenced enqueue of `bodies` (each a message's JSON after its seq
/// field), all or nothing; the seq of the first, the others following it
/// in order. `queue_cap` 0 means no cap; `interval` is how long the newest
/// message counts as new for a generator that takes over.
pub async fn enqueue(
    redis: &Redis,
    keys: &Keys,
    holder: &str,
    bodies: &[String],
    last: &LastEnqueue,
    queue_cap: u64,
    interval: std::time::Duration,
) -> RedisResult<Answer<u64>> {
    let first: Answer<Count> = answer(
        ENQUEUE
            .key(keys.lease())
            .key(keys.seq())
            .key(keys.queue())
            .key(keys.last_enqueue())
            .arg(holder)
            .arg(keys.wake_channel())
            .arg(last.encode())
            .arg(queue_cap)
            .arg(interval.as_millis() as u64)
            .arg(crate::keys::WAKE_SHARDS)
            .arg(bodies),
        redis,
    )
    .await?;
    Ok(first.map(|Count(seq)| seq))
}

/// What [`claim`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The items now in the copy's processing list.
    pub items: Vec<Vec<u8>>,
    /// What is left queued (0 when fewer than asked were there).
    pub left: u64,
    /// Items too large to take that went to dead-letter instead.
    pub oversized: u64,
}

impl FromRedisValue for Claimed {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        const NAME: &str = "claim";
        let mut f = fields(NAME, v, 2)?.into_iter();
        let (Some(left), Some(oversized)) = (f.next(), f.next()) else {
            return Err(unexpected(NAME, &Value::Nil));
        };
        Ok(Claimed {
            left: uint(NAME, &left)?,
            oversized: uint(NAME, &oversized)?,
            items: f.map(|item| bytes(NAME, item)).collect::<Result<_, _>>()?,
        })
    }
}

/// Moves up to `count` messages from the queue into `copy_id`'s processing
/// list; items over `max_item_bytes` go to dead-letter without leaving Redis.
/// Refused with [`Refused::NotRegistered`] when the copy's heartbeat is gone.
pub async fn claim(
    redis: &Redis,
    keys: &Keys,
    copy_id: &str,
    count: usize,
    max_item_bytes: u64,
) -> RedisResult<Answer<Claimed>> {
    answer(
        CLAIM
            .key(keys.queue())
            .key(keys.processing(copy_id))
            .key(keys.heartbeat(copy_id))
            .key(keys.dead())
            .arg(count)
            .arg(max_item_bytes),
        redis,
    )
    .await
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

/// For each result of an [`ack`]: true when committed, false when refused
/// because the item is no longer held (nothing changed for it).
struct Committed(Vec<bool>);

impl FromRedisValue for Committed {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let answers = fields("ack", v, 0)?;
        answers
            .iter()
            .map(|a| match int("ack", a)? {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(unexpected("ack", a)),
            })
            .collect::<Result<_, _>>()
            .map(Committed)
    }
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
    let Committed(answers) = invocation.invoke_async(&mut redis.conn()).await?;
    if answers.len() != results.len() {
        return Err(unexpected("ack", &Value::Int(answers.len() as i64)).into());
    }
    Ok(answers)
}

/// What [`heartbeat`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
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

impl FromRedisValue for Beat {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        const NAME: &str = "heartbeat";
        let shown = v.clone();
        let mut f = fields(NAME, v, 5)?.into_iter();
        let (Some(turn), Some(queue), Some(processing), Some(problem), Some(orphaned)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            return Err(unexpected(NAME, &shown));
        };
        let length = |v: &Value| int(NAME, v).map(|n| u64::try_from(n).ok());
        let problem = String::from_utf8_lossy(&bytes(NAME, problem)?).into_owned();
        Ok(Beat {
            janitor_turn: int(NAME, &turn)? == 1,
            queue_len: length(&queue)?,
            processing_len: length(&processing)?,
            problem: (!problem.is_empty()).then_some(problem),
            janitor_orphaned: int(NAME, &orphaned)? == 1,
        })
    }
}

/// How a copy beats: the first time under an id, or again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeatKind {
    Register,
    Beat,
    /// A beat that also checks that the janitor lock is held by a copy.
    BeatAndCheckJanitor,
}

/// Registers or keeps alive a copy, and publishes its description. A beat
/// is refused with [`Refused::NotRegistered`] when the heartbeat had expired.
#[allow(clippy::too_many_arguments)]
pub async fn heartbeat(
    redis: &Redis,
    keys: &Keys,
    copy_id: &str,
    ttl_ms: u64,
    description: &str,
    janitor_period_ms: u64,
    kind: BeatKind,
    processing_len: bool,
) -> RedisResult<Answer<Beat>> {
    answer(
        HEARTBEAT
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
            .arg(if processing_len { "1" } else { "0" }),
        redis,
    )
    .await
}

/// What [`reclaim`] did with a dead copy's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reclaimed {
    pub requeued: u64,
    pub dead_lettered: u64,
}

impl FromRedisValue for Reclaimed {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let shown = v.clone();
        match fields("reclaim", v, 2)?.as_slice() {
            [requeued, dead, ..] => Ok(Reclaimed {
                requeued: uint("reclaim", requeued)?,
                dead_lettered: uint("reclaim", dead)?,
            }),
            _ => Err(unexpected("reclaim", &shown)),
        }
    }
}

/// Who gives a copy's messages back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclaim {
    /// The janitor, for a copy whose heartbeat is gone: each message
    /// returned counts as a delivery; refused while the copy is alive.
    Dead,
    /// The copy itself, on shutdown: its heartbeat goes in the same step,
    /// and what it never worked on counts no delivery.
    Leaving,
}

/// Gives a copy's messages back and forgets the copy; see [`Reclaim`].
pub async fn reclaim(
    redis: &Redis,
    keys: &Keys,
    copy_id: &str,
    max_deliveries: u32,
    who: Reclaim,
) -> RedisResult<Answer<Reclaimed>> {
    answer(
        RECLAIM
            .key(keys.heartbeat(copy_id))
            .key(keys.processing(copy_id))
            .key(keys.registry())
            .key(keys.queue())
            .key(keys.dead())
            .arg(copy_id)
            .arg(max_deliveries)
            .arg(keys.wake_channel())
            .arg(match who {
                Reclaim::Dead => "dead",
                Reclaim::Leaving => "leaving",
            }),
        redis,
    )
    .await
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

/// Extends a live get-errors run's lock; refused when it had lapsed.
pub async fn renew_drain_lock(
    redis: &Redis,
    keys: &Keys,
    run_id: &str,
    lock_ms: u64,
) -> RedisResult<Answer<Done>> {
    extend_lock(redis, keys.drain_lock(run_id), run_id, lock_ms).await
}

/// The lengths of a draining list before and after a settle.
struct Settled {
    before: u64,
}

impl FromRedisValue for Settled {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let shown = v.clone();
        match fields("settle_drain", v, 2)?.as_slice() {
            [before, after] => {
                uint("settle_drain", after)?;
                Ok(Settled {
                    before: uint("settle_drain", before)?,
                })
            }
            _ => Err(unexpected("settle_drain", &shown)),
        }
    }
}

/// Forgets the oldest errors of the run's draining list, keeping the `keep`
/// not yet written; the list's length before. Sent again after a lost
/// answer, it forgets nothing more.
pub async fn settle_drain(redis: &Redis, keys: &Keys, run_id: &str, keep: u64) -> RedisResult<u64> {
    let Settled { before } = SETTLE_DRAIN
        .key(keys.draining(run_id))
        .arg(keep)
        .invoke_async(&mut redis.conn())
        .await?;
    Ok(before)
}

/// Returns the draining list of a run whose lock is gone to the errors list
/// (how many went back); refused with [`Refused::Alive`] while the run's
/// lock holds its id.
pub async fn return_drain(redis: &Redis, keys: &Keys, run_id: &str) -> RedisResult<Answer<u64>> {
    let returned: Answer<Count> = answer(
        RETURN_DRAIN
            .key(keys.drain_lock(run_id))
            .key(keys.draining(run_id))
            .key(keys.errors())
            .key(keys.drains())
            .arg(run_id),
        redis,
    )
    .await?;
    Ok(returned.map(|Count(n)| n))
}

/// What one call of [`requeue_dead`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requeued {
    pub requeued: u64,
    /// Records looked at and left in dead-letter.
    pub kept: u64,
    pub looked_at: u64,
    /// The seqs of the requeued messages.
    pub seqs: Vec<u64>,
}

impl FromRedisValue for Requeued {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let shown = v.clone();
        let mut items = fields("requeue_dead", v, 3)?.into_iter();
        let mut next = || {
            items
                .next()
                .ok_or_else(|| unexpected("requeue_dead", &shown))
        };
        let requeued = uint("requeue_dead", &next()?)?;
        let kept = uint("requeue_dead", &next()?)?;
        let looked_at = uint("requeue_dead", &next()?)?;
        let seqs = items
            .map(|seq| {
                String::from_utf8(bytes("requeue_dead", seq)?)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| unexpected("requeue_dead", &shown))
            })
            .collect::<Result<Vec<u64>, _>>()?;
        Ok(Requeued {
            requeued,
            kept,
            looked_at,
            seqs,
        })
    }
}

/// Looks at up to `batch` dead-letter records, oldest first after the
/// `skip` oldest, and puts the messages among them (only those of `seqs`,
/// unless it is empty) back on the queue with their delivery count reset;
/// items that are not whole messages stay.
pub async fn requeue_dead(
    redis: &Redis,
    keys: &Keys,
    skip: u64,
    batch: u64,
    seqs: &[u64],
) -> RedisResult<Requeued> {
    let mut invocation = REQUEUE_DEAD.key(keys.dead());
    invocation
        .key(keys.queue())
        .arg(skip)
        .arg(batch)
        .arg(keys.wake_channel());
    for seq in seqs {
        invocation.arg(seq);
    }
    invocation.invoke_async(&mut redis.conn()).await
}

/// Deletes the `count` oldest dead-letter records (fewer if there are
/// fewer); how many went.
pub async fn purge_dead(redis: &Redis, keys: &Keys, count: u64) -> RedisResult<u64> {
    let Count(deleted) = PURGE_DEAD
        .key(keys.dead())
        .arg(count)
        .invoke_async(&mut redis.conn())
        .await?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_of_an_unexpected_shape_is_an_error_not_a_default() {
        let reply = |items: Vec<Value>| Value::Array(items);
        assert!(Reclaimed::from_redis_value(reply(vec![Value::Int(1), Value::Int(2)])).is_ok());
        assert!(
            Reclaimed::from_redis_value(reply(vec![Value::Int(1), Value::Nil])).is_err(),
            "nil is not 0"
        );
        assert!(
            Reclaimed::from_redis_value(reply(vec![Value::Int(1)])).is_err(),
            "a missing element is not 0"
        );
        assert!(Count::from_redis_value(Value::Int(-1)).is_err());
        assert!(Done::from_redis_value(Value::Int(0)).is_err());
        assert!(
            Committed::from_redis_value(reply(vec![Value::Int(2)])).is_err(),
            "an ack answer is 0 or 1"
        );
        let Reply(refused) =
            Reply::<Claimed>::from_redis_value(Value::SimpleString("NOT_REGISTERED".into()))
                .expect("a refusal");
        assert_eq!(refused, Err(Refused::NotRegistered));
        let err = Reply::<Claimed>::from_redis_value(Value::SimpleString("MAYBE".into()))
            .err()
            .expect("an unknown status is an error");
        assert!(err.to_string().contains("claim"), "{err}");
    }
}
