//! `app status`: the cluster as Redis sees it, as a table for people or as
//! JSON for programs (docs/SPEC.md §4). Two round trips, read-only.

use crate::connection::Redis;
use crate::error::Error;
use crate::escape::{for_terminal, json_for_terminal};
use crate::keys::Keys;
use crate::membership::HEARTBEAT_TTL;
use crate::message::now_ms;
use redis::Value;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeneratorStatus {
    pub id: String,
    pub name: Option<String>,
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub epoch: u64,
    pub lease_ms_left: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyStatus {
    pub id: String,
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub role: String,
    /// False once its heartbeat has expired: it is dead, and its messages
    /// wait for a running copy's janitor to return them to the queue.
    pub alive: bool,
    pub concurrency: u64,
    pub in_flight: u64,
    pub processed: u64,
    /// Writes fewer replicas confirmed than `--wait-replicas` asks.
    pub unconfirmed_writes: u64,
    pub last_seen_ms_ago: u64,
    /// The last error the copy met, if any, and how long ago.
    pub last_error: Option<String>,
    pub last_error_ms_ago: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub generator: Option<GeneratorStatus>,
    pub copies: Vec<CopyStatus>,
    pub queue: u64,
    pub in_flight: u64,
    pub errors: u64,
    pub dead: u64,
    pub generated: u64,
    pub processed: u64,
    pub errors_total: u64,
    /// Keys of the namespace that hold something redis-ql cannot use, named.
    pub problems: Vec<String>,
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
    unconfirmed_writes: u64,
    beat_at_ms: u64,
    last_error: Option<String>,
    last_error_at_ms: Option<u64>,
}

/// Reads one pipeline reply, noting in `problems` a key that cannot be read
/// as `T` (another program wrote something else there).
fn read_as<T: redis::FromRedisValue + Default>(
    value: Option<&Value>,
    key: &str,
    problems: &mut Vec<String>,
) -> T {
    match value.map(|v| redis::from_redis_value_ref::<T>(v)) {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            let problem = format!("{key} does not hold what redis-ql keeps there ({e})");
            if !problems.iter().any(|p| p.starts_with(key)) {
                problems.push(problem);
            }
            T::default()
        }
        None => T::default(),
    }
}

/// Reads the whole status; keys of the wrong type are named in `problems`
/// rather than failing the whole read.
pub async fn read(redis: &Redis, keys: &Keys) -> redis::RedisResult<Status> {
    let mut conn = redis.conn();
    let expected = [
        (keys.lease(), "string"),
        (keys.epoch(), "string"),
        (keys.seq(), "string"),
        (keys.last_enqueue(), "string"),
        (keys.queue(), "list"),
        (keys.registry(), "hash"),
        (keys.janitor_lock(), "string"),
        (keys.processed(), "string"),
        (keys.errors(), "list"),
        (keys.errors_total(), "string"),
        (keys.dead(), "list"),
        (keys.drains(), "set"),
    ];
    let mut first = redis::pipe();
    first.ignore_errors();
    for (key, _) in &expected {
        first.cmd("TYPE").arg(key);
    }
    first
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
        .get(keys.epoch());
    let replies: Vec<Value> = first.query_async(&mut conn).await?;
    let mut problems = Vec::new();
    for ((key, kind), reply) in expected.iter().zip(&replies) {
        let found: String = redis::from_redis_value_ref(reply).unwrap_or_default();
        if found != "none" && found != *kind {
            problems.push(format!(
                "{key} holds a {found}; redis-ql keeps a {kind} there"
            ));
        }
    }
    let mut rest = replies.iter().skip(expected.len());
    macro_rules! field {
        ($key:expr, $ty:ty) => {
            read_as::<$ty>(rest.next(), &$key, &mut problems)
        };
    }
    let lease = field!(keys.lease(), Option<String>);
    let lease_ms_left = field!(keys.lease(), i64);
    let registry = field!(keys.registry(), HashMap<String, Vec<u8>>);
    let queue = field!(keys.queue(), u64);
    let errors = field!(keys.errors(), u64);
    let dead = field!(keys.dead(), u64);
    let generated = field!(keys.seq(), Option<u64>);
    let processed = field!(keys.processed(), Option<u64>);
    let errors_total = field!(keys.errors_total(), Option<u64>);
    let drains = field!(keys.drains(), Vec<String>);
    // Read only to be checked: a counter that is not a number stops the next takeover.
    let _epoch = field!(keys.epoch(), Option<u64>);

    let mut ids: Vec<&String> = registry.keys().collect();
    ids.sort();
    let mut second = redis::pipe();
    second.ignore_errors();
    for id in &ids {
        second.llen(keys.processing(id)).pttl(keys.heartbeat(id));
    }
    for run in &drains {
        second.llen(keys.draining(run));
    }
    let counts: Vec<Value> = if ids.is_empty() && drains.is_empty() {
        Vec::new()
    } else {
        second.query_async(&mut conn).await?
    };

    let now = now_ms();
    let ttl = HEARTBEAT_TTL.as_millis() as i64;
    let mut copies = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let d: Description = serde_json::from_slice(&registry[*id]).unwrap_or_default();
        let in_flight = read_as::<u64>(counts.get(2 * i), &keys.processing(id), &mut problems);
        let heartbeat_ms_left: i64 = counts
            .get(2 * i + 1)
            .and_then(|v| redis::from_redis_value_ref(v).ok())
            .unwrap_or(-2);
        let alive = heartbeat_ms_left >= 0 || heartbeat_ms_left == -1;
        // The heartbeat's own TTL says how long ago it beat, free of clock
        // skew; once it is gone, fall back on the copy's clock.
        let last_seen_ms_ago = if heartbeat_ms_left >= 0 {
            (ttl - heartbeat_ms_left).max(0) as u64
        } else {
            now.saturating_sub(d.beat_at_ms)
        };
        copies.push(CopyStatus {
            id: (*id).clone(),
            name: d.name,
            host: d.host,
            pid: d.pid,
            role: d.role,
            alive,
            concurrency: d.concurrency,
            in_flight,
            processed: d.processed,
            unconfirmed_writes: d.unconfirmed_writes,
            last_seen_ms_ago,
            last_error_ms_ago: d
                .last_error
                .as_ref()
                .and(d.last_error_at_ms.map(|at| now.saturating_sub(at))),
            last_error: d.last_error,
        });
    }
    let draining: u64 = drains
        .iter()
        .enumerate()
        .map(|(i, run)| {
            read_as::<u64>(
                counts.get(2 * ids.len() + i),
                &keys.draining(run),
                &mut problems,
            )
        })
        .sum();

    let generator = lease.and_then(|value| {
        let (epoch, id) = value.split_once(':')?;
        let copy = copies.iter().find(|w| w.id == id);
        Some(GeneratorStatus {
            id: id.to_string(),
            name: copy.map(|w| w.name.clone()),
            host: copy.map(|w| w.host.clone()),
            pid: copy.map(|w| w.pid),
            epoch: epoch.parse().ok()?,
            lease_ms_left: lease_ms_left.max(0),
        })
    });
    Ok(Status {
        generator,
        in_flight: copies.iter().map(|w| w.in_flight).sum(),
        copies,
        queue,
        errors: errors + draining,
        dead,
        generated: generated.unwrap_or(0),
        processed: processed.unwrap_or(0),
        errors_total: errors_total.unwrap_or(0),
        problems,
    })
}

impl Status {
    /// The JSON of docs/SPEC.md §4. `generator` and `copies` are also
    /// written under their first names, `leader` and `workers`, which
    /// programs written against earlier versions read.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            for (name, alias) in [("generator", "leader"), ("copies", "workers")] {
                let same = object.get(name).cloned().unwrap_or_default();
                object.insert(alias.to_string(), same);
            }
        }
        json_for_terminal(value.to_string())
    }

    /// The table for people.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        match &self.generator {
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
        for w in &self.copies {
            let role = if w.alive {
                for_terminal(&w.role).into_owned()
            } else {
                "DEAD".to_string()
            };
            let _ = writeln!(
                out,
                "{:<28} {:<10} {:<16} {:>7} {:>5} {:>9} {:>10} {:>7}ms",
                for_terminal(&w.id),
                role,
                for_terminal(&w.host),
                w.pid,
                w.concurrency,
                w.in_flight,
                w.processed,
                w.last_seen_ms_ago
            );
        }
        if self.copies.is_empty() {
            out.push_str("(no copies registered)\n");
        }
        let dead: Vec<&CopyStatus> = self.copies.iter().filter(|w| !w.alive).collect();
        if !dead.is_empty() {
            let held: u64 = dead.iter().map(|w| w.in_flight).sum();
            let _ = writeln!(
                out,
                "\n{} dead copies (heartbeat expired) hold {held} messages; the janitor of a running copy returns them to the queue",
                dead.len()
            );
        }
        for w in &self.copies {
            if let (Some(error), Some(ago)) = (&w.last_error, w.last_error_ms_ago) {
                let _ = writeln!(
                    out,
                    "last error of {} ({ago} ms ago): {}",
                    for_terminal(&w.id),
                    for_terminal(error)
                );
            }
        }
        for problem in &self.problems {
            let _ = writeln!(out, "PROBLEM: {}", for_terminal(problem));
        }
        out
    }
}

/// Prints the status once, or every second with `watch` until `stop`: in
/// place, like `top`, on a terminal; as one frame after another (one JSON
/// object per line with `--json`) anywhere else, with no cursor codes.
pub async fn show(
    redis: &Redis,
    keys: &Keys,
    json: bool,
    watch: bool,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<(), Error> {
    use std::io::{IsTerminal, Write};
    let mut stdout = std::io::stdout();
    let in_place = watch && stdout.is_terminal();
    loop {
        let status = read(redis, keys)
            .await
            .map_err(|e| Error::from_redis(redis.address(), &e))?;
        let text = if json {
            status.to_json() + "\n"
        } else {
            status.to_table()
        };
        let frame = if in_place {
            // Home, print, clear what is left of the previous frame.
            format!("\x1b[H{}\x1b[J", text.replace('\n', "\x1b[K\n"))
        } else if watch && !json {
            text + "\n"
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
            _ = stop.cancelled() => return Ok(()),
        }
    }
}
