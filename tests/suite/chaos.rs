//! The chaos run: a private Redis (append-only, fsync always) and six copies,
//! each behind its own TCP proxy, under random faults for a while — kill -9
//! and restart of copies (the generator among them), SIGSTOP/SIGCONT, Redis
//! crashes, subscriber kills, silent and slow links, late packets (delays
//! past the copies' request timeout), cut connections, keys of the namespace
//! flipped to the wrong type for a while, oversized queue items, and slow
//! `get-errors` readers (a pipe left unread for seconds) — all with
//! `--error-rate 1`. Then the generator stops, the processors drain,
//! `get-errors --json` takes everything, and the audit is printed.
//!
//! It fails if any message is missing or duplicated or an epoch steps back,
//! if any error record is printed twice (by the slow readers and the final
//! run together), or if an oversized item is anywhere but in dead-letter.
//! CI runs 60 s; a long run:
//! `CHAOS_SECONDS=600 cargo test --release --test suite chaos -- --nocapture`
//! (`CHAOS_SEED=N` replays a schedule of faults.)

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use redis::Commands;
use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use testkit::proxy::{Mode, Proxy};
use testkit::*;

/// Seqs from here on are written by the test, never by a generator:
/// oversized queue items from `OVERSIZED`, ballast error records from `BALLAST`.
const OVERSIZED: u64 = 1_000_000_000;
const BALLAST: u64 = 2_000_000_000;
/// The copies' --max-item-bytes, and the size of an oversized item.
const MAX_ITEM_BYTES: usize = 65536;
const OVERSIZED_BYTES: usize = 100 * 1024;
/// Error records of about 1 KB put in front of each slow reader, so that
/// what it has to print is more than a pipe holds (64 KiB) and its writes
/// really block while nobody reads.
const BALLAST_PER_READER: u64 = 100;

/// What a slow `get-errors --json` printed.
struct Reading {
    unread_ms: u64,
    code: Option<i32>,
    lines: Vec<String>,
    stderr: String,
}

/// Starts `get-errors --json` with its stdout on a pipe that nobody reads
/// for `unread`; then reads everything.
fn slow_reader(server: &RedisServer, unread: Duration) -> Option<JoinHandle<Reading>> {
    let mut child = Command::new(app_binary())
        .args(server.app_args())
        .args(["get-errors", "--json"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    Some(std::thread::spawn(move || {
        std::thread::sleep(unread);
        let mut out = Vec::new();
        if let Some(mut stdout) = child.stdout.take() {
            let _ = stdout.read_to_end(&mut out);
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let code = child.wait().ok().and_then(|s| s.code());
        Reading {
            unread_ms: unread.as_millis() as u64,
            code,
            lines: String::from_utf8_lossy(&out)
                .lines()
                .map(str::to_string)
                .collect(),
            stderr,
        }
    }))
}

fn ballast_record(seq: u64) -> String {
    let now = redis_ql::message::now_ms();
    serde_json::json!({
        "seq": seq,
        "epoch": 0,
        "producer": "chaos-ballast",
        "text": "b".repeat(1000),
        "generated_at_ms": now,
        "processor": "chaos-ballast",
        "detected_at_ms": now,
        "deliveries": 1,
    })
    .to_string()
}

/// A valid message, but larger than the copies take: it must go from the
/// queue to dead-letter without leaving Redis.
fn oversized_item(seq: u64) -> String {
    format!(
        r#"{{"seq":{seq},"epoch":1,"producer":"chaos","text":"{}","generated_at_ms":{}}}"#,
        "o".repeat(OVERSIZED_BYTES),
        redis_ql::message::now_ms()
    )
}

struct Slot {
    name: String,
    args: Vec<&'static str>,
    proxy: Proxy,
    copy: Option<Copy>,
    restarts: u32,
    /// When to undo this slot's fault (restart, SIGCONT, heal the link).
    undo_at: Option<Instant>,
    paused: bool,
}

struct Chaos {
    server: RedisServer,
    slots: Vec<Slot>,
    started: Instant,
    events: Vec<(u64, String)>,
    /// Keys of the wrong type now, and when to put them back.
    flips: Vec<(Instant, BrokenKey)>,
    readers: Vec<JoinHandle<Reading>>,
    /// Test-written seqs (ballast, oversized) and whether the write is
    /// known to have happened (false: its answer was lost, so at most once).
    ballast: BTreeMap<u64, bool>,
    oversized: BTreeMap<u64, bool>,
}

impl Chaos {
    fn note(&mut self, what: String) {
        self.events.push((redis_ql::message::now_ms(), what));
    }

    fn launch(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.restarts += 1;
        let name = format!("{}-{}", slot.name, slot.restarts);
        let args: Vec<&str> = slot.args.to_vec();
        slot.copy = Some(Copy::start_via(&self.server, slot.proxy.port, &name, &args));
        slot.paused = false;
        slot.undo_at = None;
    }

    /// The slot whose copy holds the lease, read straight from Redis (the
    /// server may be down: then none).
    fn generator_slot(&self) -> Option<usize> {
        let mut conn = self.server.client().get_connection().ok()?;
        let lease: String = conn.get(keys().lease()).ok()?;
        let id = lease.split_once(':')?.1.to_string();
        let description: String = conn.hget(keys().registry(), &id).ok()?;
        let pid = serde_json::from_str::<serde_json::Value>(&description).ok()?["pid"].as_u64()?;
        self.slots
            .iter()
            .position(|s| s.copy.as_ref().is_some_and(|c| c.pid() as u64 == pid))
    }

    fn conn(&self) -> Option<redis::Connection> {
        self.server
            .client()
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()
    }

    /// Puts back the keys whose time has come (those Redis cannot take
    /// now stay for the next round).
    fn put_back_due(&mut self, now: Instant, all: bool) {
        if !self.flips.iter().any(|(at, _)| *at <= now || all) {
            return;
        }
        let Some(mut conn) = self.conn() else {
            return;
        };
        let mut kept = Vec::new();
        let mut done = Vec::new();
        for (at, broken) in std::mem::take(&mut self.flips) {
            if at > now && !all {
                kept.push((at, broken));
                continue;
            }
            match try_restore_key(&mut conn, &broken) {
                Ok(restored) => done.push(format!(
                    "put back {}{}",
                    broken.key,
                    if restored {
                        ""
                    } else {
                        " (redis-ql had overwritten it)"
                    }
                )),
                Err(_) => kept.push((at, broken)),
            }
        }
        self.flips = kept;
        for what in done {
            self.note(what);
        }
    }

    /// Undoes the faults whose time has come.
    fn heal_due(&mut self, now: Instant, all: bool) {
        self.put_back_due(now, all);
        for i in 0..self.slots.len() {
            let due = self.slots[i].undo_at.is_some_and(|t| t <= now) || all;
            if !due {
                continue;
            }
            self.slots[i].proxy.set(Mode::Pass);
            if self.slots[i].paused {
                if let Some(copy) = &self.slots[i].copy {
                    copy.signal("CONT");
                }
                self.slots[i].paused = false;
            }
            if self.slots[i].copy.is_none() {
                self.launch(i);
                let name = self.slots[i].name.clone();
                self.note(format!("restarted {name}"));
            }
            self.slots[i].undo_at = None;
        }
    }

    fn inject(&mut self, rng: &mut StdRng) {
        let now = Instant::now();
        let idle: Vec<usize> = (0..self.slots.len())
            .filter(|i| self.slots[*i].undo_at.is_none())
            .collect();
        if idle.is_empty() {
            return;
        }
        // A third of the copy faults go to the generator, if it is free to fault.
        let target = match self.generator_slot().filter(|g| idle.contains(g)) {
            Some(g) if rng.random_bool(0.33) => g,
            _ => idle[rng.random_range(0..idle.len())],
        };
        let name = self.slots[target].name.clone();
        let for_ms = rng.random_range(300..3000u64);
        let undo = Some(now + Duration::from_millis(for_ms));
        match rng.random_range(0..100u32) {
            0..=24 => {
                if let Some(mut copy) = self.slots[target].copy.take() {
                    copy.kill9();
                }
                self.slots[target].undo_at = undo;
                self.note(format!("kill -9 {name}, restart in {for_ms} ms"));
            }
            25..=36 => {
                if let Some(copy) = &self.slots[target].copy {
                    copy.signal("STOP");
                    self.slots[target].paused = true;
                    self.slots[target].undo_at = undo;
                    self.note(format!("SIGSTOP {name} for {for_ms} ms"));
                }
            }
            37..=48 => {
                self.slots[target].proxy.set(Mode::Hold);
                self.slots[target].undo_at = undo;
                self.note(format!("silent link to {name} for {for_ms} ms"));
            }
            49..=58 => {
                let delay = rng.random_range(50..400u64);
                self.slots[target]
                    .proxy
                    .set(Mode::Delay(Duration::from_millis(delay)));
                self.slots[target].undo_at = undo;
                self.note(format!("{delay} ms delay on {name}'s link for {for_ms} ms"));
            }
            59..=64 => {
                // Answers arrive after the copies' request timeout (333 ms).
                let delay = rng.random_range(500..1500u64);
                self.slots[target]
                    .proxy
                    .set(Mode::Delay(Duration::from_millis(delay)));
                self.slots[target].undo_at = undo;
                self.note(format!(
                    "late packets: {delay} ms on {name}'s link for {for_ms} ms"
                ));
            }
            65..=72 => {
                self.slots[target].proxy.cut();
                self.note(format!("cut {name}'s connections"));
            }
            73..=80 => {
                if let Ok(mut conn) = self.server.client().get_connection() {
                    let _: redis::RedisResult<u64> = redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg("pubsub")
                        .query(&mut conn);
                }
                self.note("CLIENT KILL TYPE pubsub".to_string());
            }
            81..=86 => {
                let down = rng.random_range(200..1500u64);
                self.note(format!("Redis crash (kill -9), down {down} ms"));
                self.server.crash_and_restart(Duration::from_millis(down));
            }
            87..=90 => self.slow_get_errors(rng),
            91..=96 => self.flip_a_key(rng),
            _ => self.push_oversized(),
        }
    }

    /// A `get-errors` whose reader leaves the pipe unread for 2–12 s, with
    /// ballast in front so that its writes block meanwhile.
    fn slow_get_errors(&mut self, rng: &mut StdRng) {
        let running = self.readers.iter().filter(|r| !r.is_finished()).count();
        if running >= 2 {
            return;
        }
        let first = BALLAST + self.ballast.len() as u64 + 1;
        let seqs: Vec<u64> = (first..first + BALLAST_PER_READER).collect();
        let records: Vec<String> = seqs.iter().map(|s| ballast_record(*s)).collect();
        let pushed: Option<redis::RedisResult<u64>> = self
            .conn()
            .map(|mut conn| conn.lpush(keys().errors(), &records));
        let certain = match &pushed {
            Some(Ok(_)) => Some(true),
            // Refused (the key is of the wrong type): nothing was written.
            Some(Err(e)) if e.code() == Some("WRONGTYPE") => None,
            // The answer may have been lost.
            _ => Some(false),
        };
        if let Some(certain) = certain {
            for seq in &seqs {
                self.ballast.insert(*seq, certain);
            }
        }
        let unread = Duration::from_millis(rng.random_range(2000..12000u64));
        if let Some(reader) = slow_reader(&self.server, unread) {
            self.readers.push(reader);
        }
        self.note(format!(
            "slow get-errors reader: unread for {} ms ({} ballast records {})",
            unread.as_millis(),
            seqs.len(),
            match certain {
                Some(true) => "in front",
                Some(false) => "maybe in front",
                None => "refused",
            }
        ));
    }

    /// One key of the namespace, chosen at random (or a copy's processing
    /// list), holds a value of the wrong type for 0.5–2 s.
    fn flip_a_key(&mut self, rng: &mut StdRng) {
        let Some(mut conn) = self.conn() else {
            return;
        };
        let namespace_keys = namespace_keys();
        let pick = rng.random_range(0..=namespace_keys.len());
        let (key, kind) = match namespace_keys.get(pick) {
            Some((key, kind)) => (key.clone(), *kind),
            None => {
                let ids: Vec<String> = conn.hkeys(keys().registry()).unwrap_or_default();
                if ids.is_empty() {
                    return;
                }
                let id = &ids[rng.random_range(0..ids.len())];
                (keys().processing(id), "list")
            }
        };
        if self.flips.iter().any(|(_, b)| b.key == key) {
            return;
        }
        let junks = wrong_types_for(kind);
        let junk = junks[rng.random_range(0..junks.len())];
        let for_ms = rng.random_range(500..2000u64);
        if let Ok(broken) = try_break_key(&mut conn, &key, junk) {
            self.flips
                .push((Instant::now() + Duration::from_millis(for_ms), broken));
            self.note(format!("wrong type: {key} as a {junk} for {for_ms} ms"));
        }
    }

    /// A valid message larger than --max-item-bytes, into the queue.
    fn push_oversized(&mut self) {
        let seq = OVERSIZED + self.oversized.len() as u64 + 1;
        let pushed: Option<redis::RedisResult<u64>> = self
            .conn()
            .map(|mut conn| conn.lpush(keys().queue(), oversized_item(seq)));
        let certain = match &pushed {
            Some(Ok(_)) => true,
            Some(Err(e)) if e.code() == Some("WRONGTYPE") => return,
            _ => false,
        };
        self.oversized.insert(seq, certain);
        self.note(format!(
            "oversized item {seq} ({OVERSIZED_BYTES} bytes) into the queue"
        ));
    }
}

#[test]
fn chaos() {
    let _serial = serial();
    let seconds: u64 = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("chaos: {seconds} s, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let auto: Vec<&'static str> = vec![
        "--error-rate",
        "1",
        "--work-ms",
        "300",
        "--concurrency",
        "4",
        "--max-item-bytes",
        "65536",
    ];
    let processor: Vec<&'static str> = [&auto[..], &["--role", "processor"]].concat();
    let slots = (0..6)
        .map(|i| Slot {
            name: if i < 4 {
                format!("auto{i}")
            } else {
                format!("proc{i}")
            },
            args: if i < 4 {
                auto.clone()
            } else {
                processor.clone()
            },
            proxy: Proxy::start(server.port),
            copy: None,
            restarts: 0,
            undo_at: None,
            paused: false,
        })
        .collect();
    let mut chaos = Chaos {
        server,
        slots,
        started: Instant::now(),
        events: Vec::new(),
        flips: Vec::new(),
        readers: Vec::new(),
        ballast: BTreeMap::new(),
        oversized: BTreeMap::new(),
    };
    for i in 0..chaos.slots.len() {
        chaos.launch(i);
    }
    wait_generated(&chaos.server, 3, Duration::from_secs(15));

    let end = Instant::now() + Duration::from_secs(seconds);
    let mut next_fault = Instant::now();
    while Instant::now() < end {
        let now = Instant::now();
        chaos.heal_due(now, false);
        if now >= next_fault {
            chaos.inject(&mut rng);
            next_fault = now + Duration::from_millis(rng.random_range(400..1600u64));
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // Heal everything, stop the generators, let the processors drain.
    chaos.heal_due(Instant::now(), true);
    wait_until(
        "every key of the wrong type put back",
        Duration::from_secs(10),
        || {
            chaos.put_back_due(Instant::now(), true);
            chaos.flips.is_empty()
        },
    );
    chaos.note("end of faults".to_string());
    for slot in chaos.slots.iter().filter(|s| s.name.starts_with("auto")) {
        if let Some(copy) = &slot.copy {
            copy.signal("TERM");
        }
    }
    for slot in chaos
        .slots
        .iter_mut()
        .filter(|s| s.name.starts_with("auto"))
    {
        if let Some(copy) = slot.copy.as_mut() {
            copy.wait_exit(Duration::from_secs(20));
        }
    }
    let server = &chaos.server;
    wait_until(
        "the processors to drain everything",
        Duration::from_secs(60),
        || {
            let s = status(server);
            let live_only = s["copies"]
                .as_array()
                .is_some_and(|ws| ws.iter().all(|w| w["role"] == "processor"));
            s["queue"].as_u64() == Some(0)
                && s["in_flight"].as_u64() == Some(0)
                && s["generator"].is_null()
                && live_only
        },
    );
    // The slow readers first (each finishes once read), then the rest.
    let readings: Vec<Reading> = std::mem::take(&mut chaos.readers)
        .into_iter()
        .map(|r| r.join().expect("a slow reader thread"))
        .collect();
    let server = &chaos.server;
    let mut printed: Vec<Record> = Vec::new();
    for reading in &readings {
        for line in &reading.lines {
            printed.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("slow get-errors printed {line:?}: {e}")),
            );
        }
    }
    printed.extend(get_errors(server));
    // Test-written records (ballast) apart from the generated ones.
    let (hostile, records): (Vec<Record>, Vec<Record>) =
        printed.into_iter().partition(|r| r.seq >= OVERSIZED);

    // The audit.
    let generated = generated(server);
    let mut count: BTreeMap<u64, u32> = BTreeMap::new();
    for r in &records {
        *count.entry(r.seq).or_default() += 1;
    }
    let dead: Vec<u64> = seqs_outside_errors(server)
        .into_iter()
        .filter(|(seq, places)| *seq < OVERSIZED && places.iter().any(|p| p == "dead"))
        .map(|(seq, _)| seq)
        .collect();
    for seq in &dead {
        *count.entry(*seq).or_default() += 1;
    }
    let missing: Vec<u64> = (1..=generated).filter(|s| !count.contains_key(s)).collect();
    let duplicates: Vec<u64> = count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    let history = timeline(server, &records);
    let steps_back = history
        .windows(2)
        .filter(|w| w[1].epoch < w[0].epoch)
        .count();
    let epochs = history.last().map_or(0, |s| s.epoch);
    let (gap, gap_at) = history
        .windows(2)
        .map(|w| {
            (
                w[1].generated_at_ms - w[0].generated_at_ms,
                w[0].generated_at_ms,
            )
        })
        .max()
        .unwrap_or((0, 0));
    let causes: Vec<&String> = chaos
        .events
        .iter()
        .filter(|(t, _)| *t + 1500 >= gap_at && *t <= gap_at + gap)
        .map(|(_, e)| e)
        .collect();
    let mut latency: Vec<u64> = records
        .iter()
        .map(|r| r.detected_at_ms.saturating_sub(r.generated_at_ms))
        .collect();
    latency.sort_unstable();
    let redelivered = records.iter().filter(|r| r.deliveries > 1).count();
    let faults = chaos.events.len();

    println!(
        "chaos audit after {:.0} s, {faults} faults:",
        chaos.started.elapsed().as_secs_f64()
    );
    println!("  generated            {generated} (seq 1..={generated}, {epochs} epochs)");
    println!(
        "  processed once       {}",
        records.len() - duplicates.len()
    );
    println!("  redelivered          {redelivered} (committed once each)");
    println!("  dead-lettered        {}", dead.len());
    println!(
        "  duplicates           {} {:?}",
        duplicates.len(),
        duplicates
    );
    println!("  missing              {} {:?}", missing.len(), missing);
    println!("  epochs out of order  {steps_back}");
    println!("  longest gap          {gap} ms, after {gap_at}; faults then: {causes:?}");
    println!(
        "  latency              p50 {} ms, p99 {} ms, max {} ms",
        percentile(&latency, 50.0),
        percentile(&latency, 99.0),
        latency.last().copied().unwrap_or(0)
    );
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, event) in &chaos.events {
        // "Redis crash (kill -9)" first: it also says "kill -9".
        let kind = [
            "Redis crash",
            "late packets",
            "get-errors",
            "wrong type",
            "oversized",
            "put back",
            "kill -9",
            "SIGSTOP",
            "silent link",
            "delay",
            "cut",
            "CLIENT KILL",
            "restarted",
        ]
        .into_iter()
        .find(|k| event.contains(k))
        .unwrap_or("other");
        *kinds.entry(kind).or_default() += 1;
    }
    println!("  faults               {kinds:?}");

    // Test-written seqs: each ballast record printed once (at most once
    // when its write may not have happened), each oversized item once in
    // dead-letter and nowhere else.
    let mut hostile_printed: BTreeMap<u64, u32> = BTreeMap::new();
    for r in &hostile {
        *hostile_printed.entry(r.seq).or_default() += 1;
    }
    let ballast_wrong: Vec<(u64, u32)> = chaos
        .ballast
        .iter()
        .map(|(seq, certain)| {
            (
                *seq,
                hostile_printed.get(seq).copied().unwrap_or(0),
                *certain,
            )
        })
        .filter(|(_, n, certain)| *n > 1 || (*certain && *n == 0))
        .map(|(seq, n, _)| (seq, n))
        .collect();
    let printed_unknown: Vec<u64> = hostile_printed
        .keys()
        .filter(|s| !chaos.ballast.contains_key(s))
        .copied()
        .collect();
    let mut oversized_dead: BTreeMap<u64, u32> = BTreeMap::new();
    for (record, item) in dead_records(server) {
        if let Some(seq) = chaos.oversized.keys().find(|seq| {
            item.starts_with(&format!(r#"{{"seq":{seq},"#))
                && record["truncated"].as_bool() == Some(true)
                && record["bytes"].as_u64() > Some(MAX_ITEM_BYTES as u64)
        }) {
            *oversized_dead.entry(*seq).or_default() += 1;
        }
    }
    let oversized_wrong: Vec<(u64, u32)> = chaos
        .oversized
        .iter()
        .map(|(seq, certain)| {
            (
                *seq,
                oversized_dead.get(seq).copied().unwrap_or(0),
                *certain,
            )
        })
        .filter(|(_, n, certain)| *n > 1 || (*certain && *n == 0))
        .map(|(seq, n, _)| (seq, n))
        .collect();
    println!(
        "  slow get-errors      {} runs: {:?}",
        readings.len(),
        readings
            .iter()
            .map(|r| format!(
                "unread {} ms, printed {}, exit {:?}: {}",
                r.unread_ms,
                r.lines.len(),
                r.code,
                r.stderr.trim()
            ))
            .collect::<Vec<_>>()
    );
    println!(
        "  ballast records      {} written, {} printed; wrong: {ballast_wrong:?}; not written: {printed_unknown:?}",
        chaos.ballast.len(),
        hostile.len()
    );
    println!(
        "  oversized items      {} pushed, {} in dead-letter; wrong: {oversized_wrong:?}",
        chaos.oversized.len(),
        oversized_dead.values().sum::<u32>()
    );
    // A live get-errors run keeps its batch however slowly it is read.
    let lost_lock: Vec<&Reading> = readings
        .iter()
        .filter(|r| r.stderr.contains("longer than its lock lives"))
        .collect();
    assert!(
        missing.is_empty() && duplicates.is_empty() && steps_back == 0,
        "the audit failed (seed {seed})"
    );
    assert!(
        ballast_wrong.is_empty() && printed_unknown.is_empty(),
        "error records printed twice or lost (seed {seed})"
    );
    assert!(
        oversized_wrong.is_empty(),
        "oversized items not in dead-letter exactly once (seed {seed})"
    );
    assert!(
        lost_lock.is_empty(),
        "a slow get-errors lost its batch while alive (seed {seed}): {:?}",
        lost_lock.iter().map(|r| &r.stderr).collect::<Vec<_>>()
    );
}
