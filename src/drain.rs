//! `app get-errors`: takes the stored errors out of Redis and prints them,
//! losing none and printing none twice.
//!
//! Each batch moves atomically into this run's own draining list (guarded by
//! a lock key with an expiry), is written out and flushed, and only then is
//! the draining list deleted. If the run dies first, the janitor returns the
//! batch to the errors list once the lock expires; if writing fails, the run
//! returns the batch itself. Two runs at once take disjoint batches.

use crate::connection::Redis;
use crate::error::Error;
use crate::escape::{bytes_for_terminal, for_terminal, json_for_terminal};
use crate::keys::Keys;
use crate::message::ErrorRecord;
use crate::scripts;
use std::io::Write;

/// Errors taken per round trip.
const BATCH: u64 = 100;
/// How long a batch may take to write before the janitor assumes the run died.
const LOCK_MS: u64 = 60_000;

/// What a run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub taken: u64,
    pub remaining: u64,
}

/// Takes up to `limit` errors (all when `None`), writing each to `out`.
pub async fn run(
    redis: &Redis,
    keys: &Keys,
    limit: Option<u64>,
    json: bool,
    out: &mut impl Write,
) -> Result<Drained, Error> {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let fail = |e: redis::RedisError| Error::from_redis(redis.address(), &e);
    let mut taken = 0u64;
    let result = loop {
        let want = limit.map_or(BATCH, |limit| (limit - taken).min(BATCH));
        if want == 0 {
            break Ok(());
        }
        let batch = scripts::take_errors(redis, keys, &run_id, want, LOCK_MS)
            .await
            .map_err(fail)?;
        if batch.is_empty() {
            break Ok(());
        }
        if let Err(e) = write_batch(&batch, json, out) {
            break Err(e);
        }
        let deleted: redis::RedisResult<i64> = redis.observe(
            redis::cmd("DEL")
                .arg(keys.draining(&run_id))
                .query_async(&mut redis.conn())
                .await,
        );
        deleted.map_err(fail)?;
        taken += batch.len() as u64;
    };
    // Done or failed: drop the lock, and give back whatever is still held
    // (nothing when every batch was written).
    let mut conn = redis.conn();
    let _: redis::RedisResult<i64> = redis::cmd("DEL")
        .arg(keys.drain_lock(&run_id))
        .query_async(&mut conn)
        .await;
    let returned = scripts::return_drain(redis, keys, &run_id)
        .await
        .map_err(fail)?;
    if let Err(e) = result {
        let returned = returned.unwrap_or(0);
        return Err(Error::Output(format!(
            "{e}; the {returned} errors of the unfinished batch went back to Redis (some may print again next time)"
        )));
    }
    let remaining: u64 = redis
        .observe(
            redis::cmd("LLEN")
                .arg(keys.errors())
                .query_async(&mut conn)
                .await,
        )
        .map_err(fail)?;
    Ok(Drained { taken, remaining })
}

fn write_batch(batch: &[Vec<u8>], json: bool, out: &mut impl Write) -> std::io::Result<()> {
    for raw in batch {
        let line = match (ErrorRecord::decode(raw), json) {
            (Ok(record), true) => json_for_terminal(record.encode()),
            (Ok(record), false) => human_line(&record),
            // Not a record: still printed, escaped, never dropped.
            (Err(_), true) => json_for_terminal(
                serde_json::json!({ "raw": String::from_utf8_lossy(raw) }).to_string(),
            ),
            (Err(_), false) => format!("(not an error record) {}", bytes_for_terminal(raw)),
        };
        writeln!(out, "{line}")?;
    }
    out.flush()
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
        let mut out = Vec::new();
        write_batch(&[b"\x1b[31mraw".to_vec()], false, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "(not an error record) \\x1b[31mraw\n"
        );
    }
}
