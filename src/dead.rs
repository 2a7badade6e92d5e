//! `app dead list|requeue|purge`: the operator's view of the dead-letter
//! list, where items go that cannot be processed (not a message, too large,
//! delivered `--max-deliveries` times without an ack).
//!
//! Records are pushed on the left, so the list is read from the right,
//! oldest first: positions counted from that end stay put while new records
//! arrive. Requeue and purge are scripts, each batch one atomic step, so a
//! copy dead-lettering at the same moment loses nothing and nothing moves
//! twice.

use crate::connection::Redis;
use crate::drain::format_utc_ms;
use crate::error::Error;
use crate::escape::{for_terminal, json_for_terminal};
use crate::keys::Keys;
use crate::message::{DeadRecord, Message};
use crate::scripts;
use std::io::Write;

/// Records read or looked at per round trip.
const BATCH: u64 = 500;

/// Writes up to `limit` records, oldest first, one line each; how many.
pub async fn list(
    redis: &Redis,
    keys: &Keys,
    limit: Option<u64>,
    json: bool,
    out: &mut impl Write,
) -> Result<u64, Error> {
    let limit = limit.unwrap_or(u64::MAX);
    let mut shown = 0u64;
    while shown < limit {
        let take = BATCH.min(limit - shown);
        let first = -((shown + take) as i64);
        let last = -(shown as i64) - 1;
        let mut records: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(keys.dead())
            .arg(first)
            .arg(last)
            .query_async(&mut redis.conn())
            .await
            .map_err(|e| Error::from_redis(redis.address(), &e))?;
        records.reverse();
        for record in &records {
            writeln!(out, "{}", format_line(record, json))
                .map_err(|e| Error::Output(e.to_string()))?;
        }
        shown += records.len() as u64;
        if (records.len() as u64) < take {
            break;
        }
    }
    out.flush().map_err(|e| Error::Output(e.to_string()))?;
    Ok(shown)
}

/// What a requeue did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Requeue {
    pub requeued: u64,
    /// Records left in dead-letter: not whole messages, or not asked for.
    pub kept: u64,
    /// Asked-for seqs that no dead-lettered message has.
    pub not_found: Vec<u64>,
}

/// Requeues every dead-lettered message, or those with `seqs`.
pub async fn requeue(redis: &Redis, keys: &Keys, seqs: Option<&[u64]>) -> Result<Requeue, Error> {
    let wanted = seqs.unwrap_or_default();
    let mut done = Requeue::default();
    let mut found = std::collections::BTreeSet::new();
    loop {
        let step = scripts::requeue_dead(redis, keys, done.kept, BATCH, wanted)
            .await
            .map_err(|e| Error::from_redis(redis.address(), &e))?;
        done.requeued += step.requeued;
        done.kept += step.kept;
        found.extend(step.seqs);
        let all_found = !wanted.is_empty() && wanted.iter().all(|s| found.contains(s));
        if step.looked_at < BATCH || all_found {
            break;
        }
    }
    done.not_found = wanted
        .iter()
        .filter(|s| !found.contains(s))
        .copied()
        .collect();
    Ok(done)
}

/// How many records the dead-letter list holds.
pub async fn count(redis: &Redis, keys: &Keys) -> Result<u64, Error> {
    redis::cmd("LLEN")
        .arg(keys.dead())
        .query_async(&mut redis.conn())
        .await
        .map_err(|e| Error::from_redis(redis.address(), &e))
}

/// Deletes the `counted` oldest records, those the user agreed to; one
/// that arrived since is kept. How many went.
pub async fn purge(redis: &Redis, keys: &Keys, counted: u64) -> Result<u64, Error> {
    scripts::purge_dead(redis, keys, counted)
        .await
        .map_err(|e| Error::from_redis(redis.address(), &e))
}

/// One record as `dead list --json` writes it: its reason, size and item,
/// with the message's seq when the item is a whole message; `raw` when the
/// record was written by another program.
pub fn record_json(raw: &[u8]) -> serde_json::Value {
    let Ok(record) = DeadRecord::decode(raw) else {
        return serde_json::json!({ "raw": String::from_utf8_lossy(raw) });
    };
    let mut value = serde_json::json!({
        "reason": record.reason,
        "bytes": record.bytes,
        "truncated": record.truncated,
        "item": record.item,
    });
    if let Some(m) = message_of(&record) {
        value["seq"] = m.seq.into();
    }
    value
}

/// The message a record holds, unless it was cut or is not one.
fn message_of(record: &DeadRecord) -> Option<Message> {
    (!record.truncated)
        .then(|| Message::decode(record.item.as_bytes()).ok())
        .flatten()
}

/// One record as a line: for a person, or JSON with the message's seq.
fn format_line(raw: &[u8], json: bool) -> String {
    if json {
        return json_for_terminal(record_json(raw).to_string());
    }
    let Ok(record) = DeadRecord::decode(raw) else {
        // Written by another program: shown, escaped, never dropped.
        return format!(
            "(not a dead-letter record) {}",
            crate::escape::bytes_for_terminal(raw)
        );
    };
    let message = message_of(&record);
    match message {
        // The reason says how often it was delivered; the item's own count
        // is the one it had before its last delivery.
        Some(m) => format!(
            "#{} {} {} (epoch {}) {}: {}",
            m.seq,
            format_utc_ms(m.generated_at_ms),
            for_terminal(&m.producer),
            m.epoch,
            for_terminal(&record.reason),
            for_terminal(&m.text)
        ),
        None => {
            let cut = match record.truncated {
                true => format!(", first {} bytes shown", record.item.len()),
                false => String::new(),
            };
            format!(
                "(not a message, {} bytes{cut}) {}: {}",
                record.bytes,
                for_terminal(&record.reason),
                for_terminal(&record.item)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_items_are_printed_escaped() {
        let item = r#"{"seq":4,"epoch":1,"producer":"p\u001b[2J","text":"a\u001b]0;x\u0007b","generated_at_ms":0,"deliveries":5}"#;
        let record = DeadRecord {
            reason: "delivered 5 times\r".into(),
            item: item.into(),
            bytes: item.len() as u64,
            truncated: false,
        };
        for json in [false, true] {
            let line = format_line(record.encode().as_bytes(), json);
            assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
            assert!(line.contains('4'), "{line}");
        }
        let garbage = format_line(b"\x1b[31m\xff", false);
        assert!(!garbage.chars().any(|c| c.is_control()), "{garbage:?}");
    }
}
