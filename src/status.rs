//! `app status`: the cluster as Redis sees it, as a table for people or as
//! JSON for programs (SPEC §4). Two round trips, read-only.

use crate::connection::Redis;
use crate::error::Error;
use crate::escape::{for_terminal, json_for_terminal};
use crate::keys::Keys;
use crate::membership::HEARTBEAT_TTL;
use crate::message::now_ms;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leader {
    pub id: String,
    pub name: Option<String>,
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub epoch: u64,
    pub lease_ms_left: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Worker {
    pub id: String,
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub role: String,
    pub concurrency: u64,
    pub in_flight: u64,
    pub processed: u64,
    pub last_seen_ms_ago: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub leader: Option<Leader>,
    pub workers: Vec<Worker>,
    pub queue: u64,
    pub in_flight: u64,
    pub errors: u64,
    pub dead: u64,
    pub generated: u64,
    pub processed: u64,
    pub errors_total: u64,
}

/// A copy's description as its heartbeat writes it; any field may be
/// missing if someone wrote the registry by hand.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Description {
    name: String,
    host: String,
    pid: u32,
    role: String,
    concurrency: u64,
    processed: u64,
    beat_at_ms: u64,
}

/// Reads the whole status.
pub async fn read(redis: &Redis, keys: &Keys) -> redis::RedisResult<Status> {
    let mut conn = redis.conn();
    #[allow(clippy::type_complexity)]
    let (
        lease,
        lease_ms_left,
        registry,
        queue,
        errors,
        dead,
        generated,
        processed,
        errors_total,
        drains,
    ): (
        Option<String>,
        i64,
        HashMap<String, Vec<u8>>,
        u64,
        u64,
        u64,
        Option<u64>,
        Option<u64>,
        Option<u64>,
        Vec<String>,
    ) = redis.observe(
        redis::pipe()
            .get(keys.lease())
            .pttl(keys.lease())
            .hgetall(keys.registry())
            .llen(keys.queue())
            .llen(keys.errors())
            .llen(keys.dead())
            .get(keys.seq())
            .get(keys.processed())
            .get(keys.errors_total())
            .smembers(keys.drains())
            .query_async(&mut conn)
            .await,
    )?;

    let mut ids: Vec<&String> = registry.keys().collect();
    ids.sort();
    let mut second = redis::pipe();
    for id in &ids {
        second.llen(keys.processing(id)).pttl(keys.heartbeat(id));
    }
    for run in &drains {
        second.llen(keys.draining(run));
    }
    let counts: Vec<i64> = if ids.is_empty() && drains.is_empty() {
        Vec::new()
    } else {
        redis.observe(second.query_async(&mut conn).await)?
    };

    let now = now_ms();
    let ttl = HEARTBEAT_TTL.as_millis() as i64;
    let mut workers = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let d: Description = serde_json::from_slice(&registry[*id]).unwrap_or_default();
        let in_flight = counts.get(2 * i).copied().unwrap_or(0).max(0) as u64;
        let heartbeat_ms_left = counts.get(2 * i + 1).copied().unwrap_or(-2);
        // The heartbeat's own TTL says how long ago it beat, free of clock
        // skew; once it is gone, fall back on the copy's clock.
        let last_seen_ms_ago = if heartbeat_ms_left >= 0 {
            (ttl - heartbeat_ms_left).max(0) as u64
        } else {
            now.saturating_sub(d.beat_at_ms)
        };
        workers.push(Worker {
            id: (*id).clone(),
            name: d.name,
            host: d.host,
            pid: d.pid,
            role: d.role,
            concurrency: d.concurrency,
            in_flight,
            processed: d.processed,
            last_seen_ms_ago,
        });
    }
    let draining: u64 = counts
        .iter()
        .skip(2 * ids.len())
        .map(|n| (*n).max(0) as u64)
        .sum();

    let leader = lease.and_then(|value| {
        let (epoch, id) = value.split_once(':')?;
        let worker = workers.iter().find(|w| w.id == id);
        Some(Leader {
            id: id.to_string(),
            name: worker.map(|w| w.name.clone()),
            host: worker.map(|w| w.host.clone()),
            pid: worker.map(|w| w.pid),
            epoch: epoch.parse().ok()?,
            lease_ms_left: lease_ms_left.max(0),
        })
    });
    Ok(Status {
        leader,
        in_flight: workers.iter().map(|w| w.in_flight).sum(),
        workers,
        queue,
        errors: errors + draining,
        dead,
        generated: generated.unwrap_or(0),
        processed: processed.unwrap_or(0),
        errors_total: errors_total.unwrap_or(0),
    })
}

impl Status {
    pub fn to_json(&self) -> String {
        json_for_terminal(serde_json::to_string(self).unwrap_or_default())
    }

    /// The table for people.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        match &self.leader {
            Some(l) => {
                let _ = writeln!(
                    out,
                    "generator: {} (epoch {}, lease {} ms left)",
                    for_terminal(&l.id),
                    l.epoch,
                    l.lease_ms_left
                );
            }
            None => out.push_str("generator: none\n"),
        }
        let _ = writeln!(
            out,
            "queue {}  in flight {}  errors {}  dead {}  generated {}  processed {}  errors total {}\n",
            self.queue, self.in_flight, self.errors, self.dead, self.generated, self.processed, self.errors_total
        );
        let _ = writeln!(
            out,
            "{:<28} {:<10} {:<16} {:>7} {:>5} {:>9} {:>10} {:>9}",
            "COPY", "ROLE", "HOST", "PID", "CONC", "IN FLIGHT", "PROCESSED", "SEEN"
        );
        for w in &self.workers {
            let _ = writeln!(
                out,
                "{:<28} {:<10} {:<16} {:>7} {:>5} {:>9} {:>10} {:>7}ms",
                for_terminal(&w.id),
                for_terminal(&w.role),
                for_terminal(&w.host),
                w.pid,
                w.concurrency,
                w.in_flight,
                w.processed,
                w.last_seen_ms_ago
            );
        }
        if self.workers.is_empty() {
            out.push_str("(no copies registered)\n");
        }
        out
    }
}

/// Prints the status once, or every second in place with `watch`.
pub async fn show(redis: &Redis, keys: &Keys, json: bool, watch: bool) -> Result<(), Error> {
    use std::io::Write;
    let mut stdout = std::io::stdout();
    loop {
        let status = read(redis, keys)
            .await
            .map_err(|e| Error::from_redis(redis.address(), &e))?;
        let text = if json {
            status.to_json() + "\n"
        } else {
            status.to_table()
        };
        let frame = if watch {
            // Home, print, clear what is left of the previous frame.
            format!("\x1b[H{}\x1b[J", text.replace('\n', "\x1b[K\n"))
        } else {
            text
        };
        stdout
            .write_all(frame.as_bytes())
            .and_then(|_| stdout.flush())
            .map_err(|e| Error::Output(e.to_string()))?;
        if !watch {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
