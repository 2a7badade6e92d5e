//! `app get-errors`: takes the stored errors out of Redis and prints them,
//! losing none and printing none twice.
//!
//! Each batch moves atomically into this run's own draining list, guarded by
//! a lock key with a short expiry that a task of its own renews every second
//! for as long as the process lives, however slowly its reader reads. Lines
//! are written oldest first and settled (forgotten in Redis) once written:
//! at the end of the batch, and every second while a slow reader holds it
//! up. The run writes a line only while it knows its lock holds (by its own
//! monotonic clock, as the generator knows its lease), so a run that was
//! stopped longer than the lock lives stops instead of printing what has
//! gone back. If the run dies, whoever looks next (a copy's janitor, or the
//! next get-errors, which looks first) returns its batch to the errors list;
//! if writing fails, the run returns the unwritten rest itself. Two runs at
//! once take disjoint batches.

use crate::backoff::Backoff;
use crate::connection::{Redis, Replicated};
use crate::error::Error;
use crate::escape::{bytes_for_terminal, for_terminal, json_for_terminal};
use crate::keys::Keys;
use crate::message::ErrorRecord;
use crate::sync::Locked;
use crate::{janitor, scripts};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Errors taken per round trip.
const BATCH: u64 = 100;
/// How long a run's lock lives unless renewed: how soon a run that died
/// gives its batch back.
const LOCK_TTL: Duration = Duration::from_secs(10);
/// How often a live run renews its lock.
const LOCK_RENEW: Duration = Duration::from_secs(1);
/// How often written lines are settled while a slow reader holds a batch up.
const SETTLE_EVERY: Duration = Duration::from_secs(1);

/// What a run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub taken: u64,
    /// Errors still in Redis: in the errors list or held by other runs.
    pub remaining: u64,
    /// Of `remaining`, those held by other get-errors runs that are alive.
    pub held_by_others: u64,
}

/// Until when this run certainly holds its lock.
struct Lock(Mutex<Instant>);

impl Lock {
    fn holds(&self) -> bool {
        Instant::now() < *self.0.locked()
    }

    /// The lock was (re)set by a request sent at `sent`.
    fn set_at(&self, sent: Instant) {
        // A tenth is kept back for clocks that run at different rates.
        *self.0.locked() = sent + LOCK_TTL - LOCK_TTL / 10;
    }
}

/// Keeps the run's lock alive until `stop`, whatever the writer is doing.
async fn renew(redis: Redis, keys: Keys, run_id: String, lock: Arc<Lock>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(LOCK_RENEW);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let sent = Instant::now();
        let ttl = LOCK_TTL.as_millis() as u64;
        if let Ok(Ok(_)) = scripts::renew_drain_lock(&redis, &keys, &run_id, ttl).await {
            lock.set_at(sent);
        }
    }
}

/// Takes up to `limit` errors (all when `None`), writing each to `out`;
/// `would_block` tells whether a write to `out` would wait for its reader.
pub async fn run(
    redis: &Redis,
    keys: &Keys,
    limit: Option<u64>,
    json: bool,
    out: &mut impl Write,
    would_block: &dyn Fn() -> bool,
) -> Result<Drained, Error> {
    let fail = |e: redis::RedisError| Error::from_redis(redis.address(), &e);
    // Runs that died give their batches back first, even when no copy runs.
    janitor::return_abandoned_drains(redis, keys)
        .await
        .map_err(fail)?;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let lock = Arc::new(Lock(Mutex::new(Instant::now())));
    let stop_renewing = CancellationToken::new();
    let mut renewing = None;
    let mut taken = 0u64;
    let result = loop {
        let want = limit.map_or(BATCH, |limit| (limit - taken).min(BATCH));
        if want == 0 {
            break Ok(());
        }
        let sent = Instant::now();
        let ttl = LOCK_TTL.as_millis() as u64;
        let batch = match scripts::take_errors(redis, keys, &run_id, want, ttl).await {
            Ok(batch) => batch,
            Err(e) => break Err(fail(e)),
        };
        lock.set_at(sent);
        renewing.get_or_insert_with(|| {
            tokio::spawn(renew(
                redis.clone(),
                keys.clone(),
                run_id.clone(),
                lock.clone(),
                stop_renewing.clone(),
            ))
        });
        if batch.is_empty() {
            break Ok(());
        }
        let written =
            write_batch(redis, keys, &run_id, &batch, json, out, would_block, &lock).await;
        taken += written.settled;
        if let Some(e) = written.error {
            break Err(e);
        }
    };
    stop_renewing.cancel();
    if let Some(renewing) = renewing {
        let _ = renewing.await;
    }
    // Done or failed: give back whatever is still held (nothing when every
    // batch was written).
    let returned = end_run(redis, keys, &run_id).await.map_err(fail)?;
    if let Err(e) = result {
        return Err(match e {
            Error::Output(e) => Error::Output(format!(
                "{e}; {taken} errors were written, and the {returned} not written went back to Redis"
            )),
            e => e,
        });
    }
    let (remaining, held_by_others) = remaining(redis, keys).await.map_err(fail)?;
    Ok(Drained {
        taken,
        remaining,
        held_by_others,
    })
}

/// Ends a run: drops its lock and returns to the errors list whatever its
/// draining list still holds; how many went back.
async fn end_run(redis: &Redis, keys: &Keys, run_id: &str) -> redis::RedisResult<u64> {
    let _: redis::RedisResult<i64> = redis::cmd("DEL")
        .arg(keys.drain_lock(run_id))
        .query_async(&mut redis.conn())
        .await;
    Ok(scripts::return_drain(redis, keys, run_id)
        .await?
        .unwrap_or(0))
}

/// How long a batch taken for a download (the dashboard's "take and
/// download") stays held without being settled; then it goes back to the
/// errors list, to be taken again.
pub const DOWNLOAD_HOLD: Duration = Duration::from_secs(30);

/// A batch taken for a download: held in Redis, under `run`, until the
/// client says it has it ([`settle_download`]) or gives it back.
#[derive(Debug)]
pub struct Download {
    pub run: String,
    /// Oldest first, as stored.
    pub records: Vec<Vec<u8>>,
}

/// Takes up to `limit` errors for a client that confirms receipt later:
/// the get-errors semantics over a request and its answer. Nothing is
/// forgotten until [`settle_download`]; a client that never confirms
/// leaves the batch to go back after [`DOWNLOAD_HOLD`].
pub async fn take_for_download(redis: &Redis, keys: &Keys, limit: u64) -> Result<Download, Error> {
    let fail = |e: redis::RedisError| Error::from_redis(redis.address(), &e);
    janitor::return_abandoned_drains(redis, keys)
        .await
        .map_err(fail)?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let hold = DOWNLOAD_HOLD.as_millis() as u64;
    let mut records = Vec::new();
    while (records.len() as u64) < limit {
        let want = (limit - records.len() as u64).min(BATCH);
        let batch = scripts::take_errors(redis, keys, &run, want, hold)
            .await
            .map_err(fail)?;
        let last = (batch.len() as u64) < want;
        records.extend(batch);
        if last {
            break;
        }
    }
    if records.is_empty() {
        end_run(redis, keys, &run).await.map_err(fail)?;
    }
    Ok(Download { run, records })
}

/// Whether `run` can be the id of a run: what [`take_for_download`] makes.
pub fn is_run_id(run: &str) -> bool {
    run.len() == 32 && run.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The client has the `taken` errors of `run`: forgets them. An error when
/// some had already gone back (the client confirmed too late): those will
/// be taken again, so the client must be told.
pub async fn settle_download(
    redis: &Redis,
    keys: &Keys,
    run: &str,
    taken: u64,
) -> Result<u64, Error> {
    let fail = |e: redis::RedisError| Error::from_redis(redis.address(), &e);
    if let Ok(Replicated::Short { acked, wanted }) = redis.replicated().await {
        warn!(
            acked,
            wanted,
            "a downloaded batch of errors was not confirmed by --wait-replicas replicas in time"
        );
    }
    let before = scripts::settle_drain(redis, keys, run, 0)
        .await
        .map_err(fail)?;
    end_run(redis, keys, run).await.map_err(fail)?;
    if before < taken {
        return Err(Error::Output(format!(
            "{} of the {taken} errors had gone back to the errors list (the download was confirmed after {} s): they will be taken again",
            taken - before,
            DOWNLOAD_HOLD.as_secs()
        )));
    }
    Ok(before)
}

/// The client will not take `run`'s batch: it goes back to the errors list
/// at once; how many went back.
pub async fn give_back(redis: &Redis, keys: &Keys, run: &str) -> Result<u64, Error> {
    end_run(redis, keys, run)
        .await
        .map_err(|e| Error::from_redis(redis.address(), &e))
}

/// The errors left in Redis, and how many of them other live runs hold.
async fn remaining(redis: &Redis, keys: &Keys) -> redis::RedisResult<(u64, u64)> {
    let mut conn = redis.conn();
    let (queued, runs): (u64, Vec<String>) = redis::pipe()
        .llen(keys.errors())
        .smembers(keys.drains())
        .query_async(&mut conn)
        .await?;
    if runs.is_empty() {
        return Ok((queued, 0));
    }
    let mut lengths = redis::pipe();
    for run in &runs {
        lengths.llen(keys.draining(run));
    }
    let held: Vec<u64> = lengths.query_async(&mut conn).await?;
    let held: u64 = held.iter().sum();
    Ok((queued + held, held))
}

/// How far writing a batch got.
struct Written {
    /// Lines written and forgotten in Redis.
    settled: u64,
    error: Option<Error>,
}

/// Writes `batch` oldest first and settles what is written: before any
/// write that would wait for the reader (so that a run killed while its
/// reader dawdles leaves nothing written unsettled), every second, and at
/// the end. Stops at the first failed write, or when the lock can no longer
/// be known to hold.
#[allow(clippy::too_many_arguments)]
async fn write_batch(
    redis: &Redis,
    keys: &Keys,
    run_id: &str,
    batch: &[Vec<u8>],
    json: bool,
    out: &mut impl Write,
    would_block: &dyn Fn() -> bool,
    lock: &Lock,
) -> Written {
    let mut settled = 0;
    let mut unsettled = 0;
    let mut last_settle = Instant::now();
    let mut error = None;
    for (written, raw) in batch.iter().enumerate() {
        if !lock.holds() {
            error = Some(Error::Output(
                "get-errors was stopped for longer than its lock lives, so its batch may have gone back to the errors list; stopping rather than print anything twice".to_string(),
            ));
            break;
        }
        if unsettled > 0 && (would_block() || last_settle.elapsed() >= SETTLE_EVERY) {
            let keep = (batch.len() - written) as u64;
            match settle(redis, keys, run_id, unsettled, keep, lock).await {
                Ok(n) => settled += n,
                Err(e) => {
                    error = Some(e);
                    unsettled = 0;
                    break;
                }
            }
            unsettled = 0;
            last_settle = Instant::now();
        }
        if let Err(e) = writeln!(out, "{}", format_line(raw, json)).and_then(|_| out.flush()) {
            error = Some(Error::Output(e.to_string()));
            break;
        }
        unsettled += 1;
    }
    if unsettled > 0 {
        let keep = batch.len() as u64 - settled - unsettled;
        match settle(redis, keys, run_id, unsettled, keep, lock).await {
            Ok(n) => settled += n,
            Err(e) => error = error.or(Some(e)),
        }
    }
    Written { settled, error }
}

/// Forgets the `written` lines in Redis, keeping the `keep` not written;
/// an error when they had gone back. What was printed must be forgotten:
/// while Redis cannot be reached, it is tried again for as long as the lock
/// is known to hold (a Redis that restarts from its append-only file still
/// has the lock and the batch). The script is idempotent, so a try whose
/// answer was lost does no harm when it is sent again.
async fn settle(
    redis: &Redis,
    keys: &Keys,
    run_id: &str,
    written: u64,
    keep: u64,
    lock: &Lock,
) -> Result<u64, Error> {
    // --wait-replicas: the take of the batch is on the replicas before the
    // printed lines are forgotten.
    match redis.replicated().await {
        Ok(Replicated::Short { acked, wanted }) => warn!(
            acked,
            wanted, "a get-errors batch was not confirmed by --wait-replicas replicas in time"
        ),
        Err(e) => warn!(error = %e, "could not wait for the replicas"),
        Ok(_) => {}
    }
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    let mut retried = false;
    let before = loop {
        match scripts::settle_drain(redis, keys, run_id, keep).await {
            Ok(before) => break before,
            Err(e) if crate::error::is_connection_error(&e) && lock.holds() => {
                retried = true;
                tokio::time::sleep(backoff.next_wait()).await;
            }
            Err(e) => return Err(Error::from_redis(redis.address(), &e)),
        }
    };
    // A try whose answer was lost may already have settled them.
    let expected = if retried { keep } else { keep + written };
    if before < expected {
        return Err(Error::Output(format!(
            "{} errors already written had gone back to the errors list (this run was stopped for longer than its lock lives): they will be printed again",
            (keep + written - before).min(written)
        )));
    }
    Ok(written)
}

/// Whether writing to stdout now would wait for its reader (a pipe that
/// is full); a terminal or a file never does.
pub fn stdout_would_block() -> bool {
    let mut stdout = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack, and a zero timeout.
    let ready = unsafe { libc::poll(&mut stdout, 1, 0) };
    ready == 0
}

/// One stored error as `get-errors --json` prints it.
pub fn json_line(raw: &[u8]) -> String {
    format_line(raw, true)
}

fn format_line(raw: &[u8], json: bool) -> String {
    match (ErrorRecord::decode(raw), json) {
        (Ok(record), true) => json_for_terminal(record.encode()),
        (Ok(record), false) => human_line(&record),
        // Not a record: still printed, escaped, never dropped.
        (Err(_), true) => json_for_terminal(
            serde_json::json!({ "raw": String::from_utf8_lossy(raw) }).to_string(),
        ),
        (Err(_), false) => format!("(not an error record) {}", bytes_for_terminal(raw)),
    }
}

/// One line for a person: seq, time, producer → processor, text.
pub fn human_line(record: &ErrorRecord) -> String {
    format!(
        "#{} {} {} → {} (epoch {}, delivery {}): {}",
        record.seq,
        format_utc_ms(record.detected_at_ms),
        for_terminal(&record.producer),
        for_terminal(&record.processor),
        record.epoch,
        record.deliveries,
        for_terminal(&record.text)
    )
}

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC.
pub fn format_utc_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_format_as_calendar_dates() {
        assert_eq!(format_utc_ms(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_utc_ms(951_782_400_123), "2000-02-29 00:00:00.123");
        assert_eq!(format_utc_ms(1_795_778_059_999), "2026-11-27 11:14:19.999");
    }

    #[test]
    fn hostile_text_is_printed_escaped() {
        let record = ErrorRecord {
            seq: 1,
            epoch: 2,
            producer: "p\u{1b}]0;x\u{7}".into(),
            text: "\u{1b}[2J\u{202e}gnp.exe".into(),
            generated_at_ms: 0,
            processor: "c".into(),
            detected_at_ms: 0,
            deliveries: 1,
        };
        let line = human_line(&record);
        assert!(
            !line.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{line}"
        );
        assert_eq!(
            format_line(b"\x1b[31mraw", false),
            "(not an error record) \\x1b[31mraw"
        );
    }
}
