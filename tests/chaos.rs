//! The chaos run: a private Redis (append-only, fsync always) and six copies,
//! each behind its own TCP proxy, under random faults for a while — kill -9
//! and restart of copies (the generator among them), SIGSTOP/SIGCONT, Redis
//! crashes, subscriber kills, silent and slow links, cut connections — all
//! with `--error-rate 1`. Then the generator stops, the processors drain,
//! `get-errors --json` takes everything, and the audit is printed.
//!
//! It fails if any message is missing or duplicated or an epoch steps back.
//! CI runs 60 s; a long run:
//! `CHAOS_SECONDS=600 cargo test --release --test chaos -- --nocapture`
//! (`CHAOS_SEED=N` replays a schedule of faults.)

mod common;

use common::proxy::{Mode, Proxy};
use common::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use redis::Commands;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
        let mut conn = redis::Client::open(self.server.url())
            .ok()?
            .get_connection()
            .ok()?;
        let lease: String = conn.get("{app}:lease").ok()?;
        let id = lease.split_once(':')?.1.to_string();
        let description: String = conn.hget("{app}:copies", &id).ok()?;
        let pid = serde_json::from_str::<serde_json::Value>(&description).ok()?["pid"].as_u64()?;
        self.slots
            .iter()
            .position(|s| s.copy.as_ref().is_some_and(|c| c.pid() as u64 == pid))
    }

    /// Undoes the faults whose time has come.
    fn heal_due(&mut self, now: Instant, all: bool) {
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
            0..=29 => {
                if let Some(mut copy) = self.slots[target].copy.take() {
                    copy.kill9();
                }
                self.slots[target].undo_at = undo;
                self.note(format!("kill -9 {name}, restart in {for_ms} ms"));
            }
            30..=44 => {
                if let Some(copy) = &self.slots[target].copy {
                    copy.signal("STOP");
                    self.slots[target].paused = true;
                    self.slots[target].undo_at = undo;
                    self.note(format!("SIGSTOP {name} for {for_ms} ms"));
                }
            }
            45..=59 => {
                self.slots[target].proxy.set(Mode::Hold);
                self.slots[target].undo_at = undo;
                self.note(format!("silent link to {name} for {for_ms} ms"));
            }
            60..=72 => {
                let delay = rng.random_range(50..400u64);
                self.slots[target]
                    .proxy
                    .set(Mode::Delay(Duration::from_millis(delay)));
                self.slots[target].undo_at = undo;
                self.note(format!("{delay} ms delay on {name}'s link for {for_ms} ms"));
            }
            73..=82 => {
                self.slots[target].proxy.cut();
                self.note(format!("cut {name}'s connections"));
            }
            83..=93 => {
                if let Ok(mut conn) =
                    redis::Client::open(self.server.url()).and_then(|c| c.get_connection())
                {
                    let _: redis::RedisResult<u64> = redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg("pubsub")
                        .query(&mut conn);
                }
                self.note("CLIENT KILL TYPE pubsub".to_string());
            }
            _ => {
                let down = rng.random_range(200..1500u64);
                self.note(format!("Redis crash (kill -9), down {down} ms"));
                self.server.crash_and_restart(Duration::from_millis(down));
            }
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(((p / 100.0) * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

#[test]
fn chaos() {
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
            let live_only = s["workers"]
                .as_array()
                .is_some_and(|ws| ws.iter().all(|w| w["role"] == "processor"));
            s["queue"].as_u64() == Some(0)
                && s["in_flight"].as_u64() == Some(0)
                && s["leader"].is_null()
                && live_only
        },
    );
    let records = get_errors(server);

    // The audit.
    let generated = generated(server);
    let mut count: BTreeMap<u64, u32> = BTreeMap::new();
    for r in &records {
        *count.entry(r.seq).or_default() += 1;
    }
    let dead: Vec<u64> = seqs_outside_errors(server)
        .into_iter()
        .filter(|(_, places)| places.iter().any(|p| p == "dead"))
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
    assert!(
        missing.is_empty() && duplicates.is_empty() && steps_back == 0,
        "the audit failed (seed {seed})"
    );
}
