//! The guarantees at their edges: slow and vanished readers, items of any
//! size and shape, keys of the wrong type, packets that arrive late, clocks
//! that disagree, pauses shorter than the lease, a broken stderr, silent
//! endpoints and ports that are not Redis. Real processes against a real
//! Redis, each audited.

use redis::Commands;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::proxy::{Mode, Proxy};
use testkit::*;

/// `n` error records in the errors list, seq 1..=n, each with `pad` bytes of text.
fn fill_errors(server: &RedisServer, n: u64, pad: usize) {
    let mut conn = server.conn();
    let text = "e".repeat(pad);
    let records: Vec<String> = (1..=n)
        .map(|seq| {
            serde_json::json!({
                "seq": seq, "epoch": 1, "producer": "p", "text": text,
                "generated_at_ms": 1, "processor": "c", "detected_at_ms": 2, "deliveries": 1
            })
            .to_string()
        })
        .collect();
    for chunk in records.chunks(500) {
        let _: () = conn.lpush(keys().errors(), chunk).expect("lpush");
    }
}

/// A message as the fenced enqueue writes it.
fn message(seq: u64, text: &str) -> String {
    serde_json::json!({"seq": seq, "epoch": 1, "producer": "test", "text": text, "generated_at_ms": 1})
        .to_string()
}

/// Messages 1..=n in the queue, numbered as if a generator had enqueued them.
fn queue_messages(server: &RedisServer, n: u64) {
    let mut conn = server.conn();
    for seq in 1..=n {
        let _: () = conn
            .lpush(keys().queue(), message(seq, "x"))
            .expect("lpush");
    }
    let _: () = conn.set(keys().seq(), n).expect("set seq");
}

fn get_errors_child(server: &RedisServer) -> Child {
    Command::new(app_binary())
        .args(server.app_args())
        .args(["get-errors", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("get-errors starts")
}

fn seqs_of(output: &str) -> Vec<u64> {
    output
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("a JSON line")["seq"]
                .as_u64()
                .expect("a seq")
        })
        .collect()
}

fn no_duplicates(seqs: &[u64]) {
    let mut count: BTreeMap<u64, u32> = BTreeMap::new();
    for s in seqs {
        *count.entry(*s).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "printed more than once: {twice:?}");
}

fn exit_within(child: &mut Child, deadline: Duration) -> Option<i32> {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    panic!("process {} did not exit within {deadline:?}", child.id());
}

/// Case 1: a reader that waits longer than the run's lock lives. The run
/// keeps its batch (its lock is renewed apart from the blocked writer), so
/// a running copy's janitor never hands it back and nothing prints twice.
/// `EDGE_READER_PAUSE_S=65` shows the failure of a lock that is not renewed.
#[test]
fn get_errors_with_a_reader_that_waits_prints_nothing_twice() {
    let _serial = serial();
    let server = RedisServer::start();
    let _janitor = Copy::start(&server, "janitor", &["--role", "processor"]);
    fill_errors(&server, 3000, 300);
    let mut run = get_errors_child(&server);
    let pause: u64 = std::env::var("EDGE_READER_PAUSE_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(13);
    // The pipe fills in the first batches; then the run waits on its reader.
    std::thread::sleep(Duration::from_secs(pause));
    let mut out = String::new();
    run.stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert_eq!(exit_within(&mut run, Duration::from_secs(10)), Some(0));
    let seqs = seqs_of(&out);
    no_duplicates(&seqs);
    assert_eq!(seqs.len(), 3000, "every error printed once");
    let left: u64 = server.conn().llen(keys().errors()).expect("llen");
    assert_eq!(left, 0);
}

/// Case 2: a run killed while no copy runs: the next runs give its batch
/// back themselves, and meanwhile count it as held by another run.
#[test]
fn a_dead_get_errors_run_gives_its_batch_back_with_no_copy_running() {
    let _serial = serial();
    let server = RedisServer::start();
    fill_errors(&server, 2000, 300);
    let mut run = get_errors_child(&server);
    // Blocked on its reader with a batch in hand: it has taken more than a
    // pipe holds, and what it holds has stopped changing.
    let held = || -> Option<(String, u64)> {
        let runs: Vec<String> = server.conn().keys(keys().draining("*")).unwrap_or_default();
        runs.into_iter()
            .map(|k| {
                let n = server.conn().llen::<_, u64>(&k).unwrap_or(0);
                (k, n)
            })
            .find(|(_, n)| *n > 0)
    };
    let mut last = None;
    wait_until(
        "a run blocked on its reader",
        Duration::from_secs(10),
        || {
            let left: u64 = server.conn().llen(keys().errors()).unwrap_or(2000);
            let now = held().map(|held| (held, left));
            let stable = now.is_some() && now == last;
            last = now;
            std::thread::sleep(Duration::from_millis(200));
            left < 2000 - 100 && stable
        },
    );
    let _ = run.kill();
    let _ = run.wait();
    // What the dead run wrote and settled is gone for good. Lines it wrote
    // were settled before it waited for its reader, so none comes back; a
    // line cut off mid-way by the kill is not a line.
    let mut first = String::new();
    let _ = run
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut first);
    if !first.ends_with('\n') {
        first.truncate(first.rfind('\n').map_or(0, |at| at + 1));
    }
    let mut printed = seqs_of(&first);

    let out = run_app(&server, &["get-errors", "--json"]);
    assert!(out.status.success());
    let summary = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        summary.contains("held by other get-errors runs"),
        "the batch of the dead run (its lock not yet lapsed) is counted: {summary}"
    );
    printed.extend(seqs_of(&String::from_utf8_lossy(&out.stdout)));
    wait_until(
        "the dead run's batch back and printed",
        Duration::from_secs(20),
        || {
            let out = run_app(&server, &["get-errors", "--json"]);
            printed.extend(seqs_of(&String::from_utf8_lossy(&out.stdout)));
            String::from_utf8_lossy(&out.stderr).contains("; 0 remain")
                && server.conn().llen::<_, u64>(keys().errors()).unwrap_or(1) == 0
        },
    );
    // Lines in the pipe when the run was killed had been settled before it
    // waited for its reader: none of them comes back.
    no_duplicates(&printed);
    let mut all = printed.clone();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (1..=2000).collect::<Vec<_>>(), "no error lost");
    let drains: u64 = server.conn().scard(keys().drains()).expect("scard");
    assert_eq!(drains, 0);
}

/// Ten messages generated after now are committed, and then, all copies
/// stopped, every message is in exactly one place.
fn copies_went_on_and_lost_nothing(server: &RedisServer, copies: &mut [Copy]) {
    let mark = generated(server);
    wait_until("later messages committed", Duration::from_secs(10), || {
        counter(server, "processed") >= mark + 10
    });
    stop_all(server, copies);
    let records = get_errors(server);
    audit_exactly_once(server, &records);
}

/// Case 3: an item of 20 MB goes to dead-letter inside Redis, its record
/// bounded, and the copies go on committing everything else.
#[test]
fn an_oversized_item_goes_to_dead_letter_and_stalls_nobody() {
    let _serial = serial();
    let server = RedisServer::start();
    let mut copies = start_copies(&server, 2, &["--interval-ms", "50"]);
    wait_generated(&server, 5, Duration::from_secs(10));
    let huge = message(0, &"h".repeat(20 << 20));
    let _: () = server.conn().rpush(keys().queue(), &huge).expect("push");
    wait_until(
        "the huge item in dead-letter",
        Duration::from_secs(10),
        || {
            let dead: Vec<Vec<u8>> = server
                .conn()
                .lrange(keys().dead(), 0, -1)
                .unwrap_or_default();
            dead.iter().any(|d| {
                let v: serde_json::Value =
                    serde_json::from_str(&String::from_utf8_lossy(d)).unwrap_or_default();
                v["bytes"].as_u64() == Some(huge.len() as u64)
                    && v["truncated"] == true
                    && v["item"].as_str().is_some_and(|i| i.len() <= 1 << 20)
            })
        },
    );
    copies_went_on_and_lost_nothing(&server, &mut copies);
}

/// Case 3, its sibling: under a low proto-max-bulk-len, an item whose
/// dead-letter record grows when escaped (control bytes) can no longer
/// block the acks of a copy: the copy lowers its item limit to fit, and the
/// record is built inside Redis.
#[test]
fn an_item_that_grows_when_escaped_cannot_block_the_acks() {
    let _serial = serial();
    let server = RedisServer::start_with(&["--proto-max-bulk-len", "1mb"]);
    let mut copies = start_copies(&server, 2, &["--interval-ms", "50"]);
    wait_generated(&server, 5, Duration::from_secs(10));
    let control = vec![1u8; 600 * 1024];
    let _: () = server.conn().rpush(keys().queue(), &control).expect("push");
    let small = vec![2u8; 100 * 1024];
    let _: () = server.conn().rpush(keys().queue(), &small).expect("push");
    wait_until("both items in dead-letter", Duration::from_secs(10), || {
        server.conn().llen::<_, u64>(keys().dead()).unwrap_or(0) >= 2
    });
    copies_went_on_and_lost_nothing(&server, &mut copies);
    // The 100 KB one fits and keeps every byte, however hostile.
    let dead: Vec<Vec<u8>> = server.conn().lrange(keys().dead(), 0, -1).expect("dead");
    assert!(dead.iter().any(|d| {
        let v: serde_json::Value = serde_json::from_slice(d).unwrap_or_default();
        v["bytes"].as_u64() == Some(small.len() as u64) && v["truncated"].is_null()
    }));
}

/// Case 6: a claim whose bytes reach Redis after its request timed out (a
/// path that went slow while a new connection is fast) leaves messages in
/// a live copy's list that it holds nowhere; the copy reconciles its list
/// with what it holds and takes them up within seconds.
#[test]
fn a_claim_that_redis_runs_late_strands_nothing() {
    let _serial = serial();
    let server = RedisServer::start();
    queue_messages(&server, 400);
    let proxy = Proxy::start(server.port);
    let _processor = Copy::start_via(
        &server,
        proxy.port,
        "late",
        &[
            ALL_ERRORS,
            &[
                "--role",
                "processor",
                "--work-ms",
                "50",
                "--concurrency",
                "4",
            ],
        ]
        .concat(),
    );
    let processed = || counter(&server, "processed");
    wait_until(
        "the first messages processed",
        Duration::from_secs(10),
        || processed() >= 2,
    );
    // The connections open now go slow while the one that replaces them
    // does not: claims sent before the replacement land after the copy
    // has looked at its list and found nothing missing.
    proxy.set(Mode::DelayOlderThan(
        Duration::from_millis(3000),
        proxy.accepted(),
    ));
    std::thread::sleep(Duration::from_millis(3500));
    proxy.set(Mode::Pass);
    wait_until("every message committed", Duration::from_secs(20), || {
        processed() >= 400
    });
    let records = get_errors(&server);
    audit_exactly_once(&server, &records);
    let s = status(&server);
    assert_eq!(s["in_flight"], 0, "{s}");
}

/// The Redis-clock times of the fenced enqueues, read from MONITOR.
struct Monitor {
    child: Child,
    times: std::sync::Arc<std::sync::Mutex<Vec<f64>>>,
}

impl Monitor {
    fn start(server: &RedisServer) -> Self {
        let cli = redis_server_binary().replace("redis-server", "redis-cli");
        let cli = if std::path::Path::new(&cli).exists() {
            cli
        } else {
            "redis-cli".into()
        };
        let mut child = Command::new(cli)
            .args(server.cli_args())
            .arg("monitor")
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-cli monitor");
        let stdout = child.stdout.take().expect("stdout");
        let times = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = times.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The enqueue script's own LPUSH: a refused call pushes nothing.
                if line.contains(&format!("[0 lua] \"LPUSH\" \"{}\"", keys().queue())) {
                    if let Some(t) = line.split(' ').next().and_then(|t| t.parse::<f64>().ok()) {
                        sink.lock().unwrap_or_else(|p| p.into_inner()).push(t);
                    }
                }
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        Self { child, times }
    }

    /// Gaps between consecutive enqueues, in ms, by Redis's clock.
    fn gaps_ms(&self) -> Vec<f64> {
        let times = self.times.lock().unwrap_or_else(|p| p.into_inner());
        times.windows(2).map(|w| (w[1] - w[0]) * 1000.0).collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Case 7: a generator paused for less than its lease, at every phase of
/// its tick: no two messages closer than the interval less 10 ms, judged by
/// Redis's clock.
#[test]
fn short_pauses_never_bring_two_messages_closer_than_the_interval() {
    let _serial = serial();
    let server = RedisServer::start();
    let monitor = Monitor::start(&server);
    let mut generator = Copy::start(&server, "g", &[]);
    wait_generated(&server, 2, Duration::from_secs(10));
    for phase_ms in [0u64, 60, 130, 210, 290, 370, 450] {
        std::thread::sleep(Duration::from_millis(500 + phase_ms));
        generator.signal("STOP");
        std::thread::sleep(Duration::from_millis(230));
        generator.signal("CONT");
    }
    // Redis itself pausing: the tick it runs late is followed by one on
    // the grid, which Redis refuses as too soon by its own clock.
    let mut conn = server.conn();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(700));
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(300)
            .query(&mut conn)
            .expect("client pause");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let gaps = monitor.gaps_ms();
    assert!(gaps.len() >= 12, "{gaps:?}");
    let closest = gaps.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        closest >= 490.0,
        "two messages {closest:.1} ms apart: {gaps:?}"
    );
    generator.kill9();
}

/// Case 7, across hosts: the new generator's clock runs 700 ms ahead of the
/// old one's. Its first message still comes an interval after the last,
/// by Redis's clock. Needs libfaketime (Debian's faketime package).
#[test]
fn a_handover_between_hosts_whose_clocks_disagree_keeps_the_spacing() {
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    if !std::path::Path::new(lib).exists() {
        eprintln!("skipped: {lib} missing (apt-get install faketime)");
        return;
    }
    let _serial = serial();
    let server = RedisServer::start();
    let monitor = Monitor::start(&server);
    for skew in ["+0.7", "-0.7"] {
        let mut old = Copy::start(&server, "old", &[]);
        wait_until("old leads", Duration::from_secs(10), || {
            generator_pid(&server) == Some(old.pid() as u64)
        });
        let log = server.dir.path().join(format!("new{skew}.log"));
        let mut new = Command::new(app_binary())
            .args(server.app_args())
            .args(["start", "--name", "new"])
            .env("LD_PRELOAD", lib)
            .env("FAKETIME", skew)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("new copy");
        wait_until("new registered", Duration::from_secs(10), || {
            status(&server)["copies"]
                .as_array()
                .is_some_and(|w| w.len() == 2)
        });
        let before = generated(&server);
        // Handed over at once on SIGTERM, right after a message.
        old.signal("TERM");
        assert_eq!(old.wait_exit(Duration::from_secs(10)), Some(0));
        wait_until(
            "the new generator's messages",
            Duration::from_secs(10),
            || generated(&server) >= before + 3,
        );
        let _ = new.kill();
        let _ = new.wait();
        let _: () = server.conn().del(keys().lease()).expect("del");
    }
    let gaps = monitor.gaps_ms();
    let closest = gaps.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        closest >= 490.0,
        "two messages {closest:.1} ms apart: {gaps:?}"
    );
}

/// Case 8: stderr to a pipe whose reader went away, stderr closed from the
/// start, SIGHUP, and a second signal.
#[test]
fn a_broken_or_closed_stderr_never_stops_a_copy_from_shutting_down() {
    let _serial = serial();
    let server = RedisServer::start();
    let registered = |n: usize| status(&server)["copies"].as_array().map(Vec::len) == Some(n);

    // The reader of stderr goes away, then SIGTERM: a clean exit, deregistered.
    let mut piped = Command::new(app_binary())
        .args(server.app_args())
        .args(["start", "--name", "piped"])
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .spawn()
        .expect("copy");
    wait_until("registered", Duration::from_secs(10), || registered(1));
    drop(piped.stderr.take());
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill")
        .args(["-TERM", &piped.id().to_string()])
        .status();
    assert_eq!(exit_within(&mut piped, Duration::from_secs(10)), Some(0));
    wait_until("deregistered", Duration::from_secs(5), || registered(0));

    // stderr closed from the start: it works, and stops on SIGHUP.
    let mut closed = Command::new("sh")
        .args(["-c", "exec \"$0\" \"$@\" 2>&-", &app_binary()])
        .args(server.app_args())
        .args(["start", "--name", "closed"])
        .spawn()
        .expect("copy");
    wait_until("registered", Duration::from_secs(10), || registered(1));
    wait_generated(&server, 2, Duration::from_secs(10));
    let _ = Command::new("kill")
        .args(["-HUP", &closed.id().to_string()])
        .status();
    assert_eq!(exit_within(&mut closed, Duration::from_secs(10)), Some(0));
    wait_until("deregistered", Duration::from_secs(5), || registered(0));

    // A second signal exits at once with 128 + its number.
    let mut twice = Copy::start(
        &server,
        "twice",
        &["--work-ms", "5000", "--role", "processor"],
    );
    wait_until("registered", Duration::from_secs(10), || registered(1));
    queue_messages(&server, 1);
    let _: () = server
        .conn()
        .publish(keys().wake_channel(), "job")
        .expect("publish");
    wait_until("a message in hand", Duration::from_secs(5), || {
        status(&server)["in_flight"] == 1
    });
    twice.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    twice.signal("TERM");
    assert_eq!(twice.wait_exit(Duration::from_secs(5)), Some(143));
}

/// Case 9: errors that are not I/O (OOM at maxmemory, READONLY) are logged
/// at error level with what to check and shown in status; once they pass,
/// everything held is committed exactly once.
#[test]
fn errors_that_are_not_io_are_named_in_the_log_and_in_status() {
    let _serial = serial();
    let server = RedisServer::start();
    let mut copies = start_copies(&server, 2, &["--interval-ms", "100"]);
    wait_generated(&server, 5, Duration::from_secs(10));
    let mut conn = server.conn();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query(&mut conn)
        .expect("oom");
    wait_until("OOM named in status", Duration::from_secs(10), || {
        status(&server)["copies"].as_array().is_some_and(|w| {
            w.iter()
                .any(|w| w["last_error"].as_str().is_some_and(|e| e.contains("OOM")))
        })
    });
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut conn)
        .expect("un-oom");
    let closed = free_port();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(closed)
        .query(&mut conn)
        .expect("replicaof");
    // A replica takes no description either: the log is where it shows.
    wait_until(
        "READONLY named in every log",
        Duration::from_secs(10),
        || {
            copies.iter().all(|c| {
                c.log_text().contains("read only replica") && c.log_text().contains("point --host")
            })
        },
    );
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut conn)
        .expect("primary");
    let mark = generated(&server);
    wait_generated(&server, mark + 5, Duration::from_secs(10));
    stop_all(&server, &mut copies);
    // Only a copy that wrote met the OOM (a heartbeat is let through).
    let logs: Vec<String> = copies.iter().map(Copy::log_text).collect();
    for log in &logs {
        // Named, not flooded: nothing spins while Redis refuses writes.
        let lines = log
            .lines()
            .filter(|l| !l.contains("processed") && !l.contains("generated"));
        assert!(lines.count() < 200, "{log}");
    }
    assert!(
        logs.iter()
            .any(|l| l.contains("ERROR") && l.contains("maxmemory")),
        "{logs:?}"
    );
    let records = get_errors(&server);
    audit_exactly_once(&server, &records);
}

/// Case 10: deadlines that do not grow with the lease, the 3 s promise of
/// status and get-errors on a silent endpoint, and a port that is not Redis.
#[test]
fn deadlines_hold_whatever_the_lease_and_a_port_that_is_not_redis_is_named() {
    let _serial = serial();
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port);
    let copy = Copy::start_via(
        &server,
        proxy.port,
        "long",
        &["--lease-ms", "600000", "--role", "processor"],
    );
    wait_until("registered", Duration::from_secs(10), || {
        status(&server)["copies"]
            .as_array()
            .is_some_and(|w| w.len() == 1)
    });
    proxy.set(Mode::Hold);
    let held = Instant::now();
    wait_until(
        "the silent connection noticed",
        Duration::from_secs(6),
        || copy.log_text().contains("lost the connection"),
    );
    assert!(
        held.elapsed() < Duration::from_secs(4),
        "{:?}",
        held.elapsed()
    );
    proxy.set(Mode::Pass);

    // Silent: accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port().to_string();
    for command in [&["status"][..], &["get-errors"]] {
        let started = Instant::now();
        let out = Command::new(app_binary())
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(command)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(1));
        assert!(
            started.elapsed() < Duration::from_millis(3500),
            "{command:?} took {:?}",
            started.elapsed()
        );
    }

    // Not Redis: an HTTP server's answer.
    let http = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = http.local_addr().expect("addr").port().to_string();
    std::thread::spawn(move || {
        for stream in http.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 512];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let _ = std::io::Write::write_all(&mut stream, b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let out = Command::new(app_binary())
        .args(["-h", "127.0.0.1", "-p", &port, "status"])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is not a Redis server"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// Case 11: a copy whose heartbeat expired is marked dead in status, also
/// when no live copy is left to reclaim it.
#[test]
fn status_marks_dead_copies() {
    let _serial = serial();
    let server = RedisServer::start();
    let mut copy = Copy::start(&server, "doomed", &["--role", "processor"]);
    wait_until("registered", Duration::from_secs(10), || {
        status(&server)["copies"][0]["alive"] == true
    });
    copy.kill9();
    wait_until("marked dead", Duration::from_secs(6), || {
        status(&server)["copies"][0]["alive"] == false
    });
    let table = String::from_utf8_lossy(&run_app(&server, &["status"]).stdout).to_string();
    assert!(
        table.contains("DEAD") && table.contains("1 dead copies"),
        "{table}"
    );
}

/// Case 12: `status --watch` into a pipe writes no cursor codes; with
/// `--json`, one JSON object per line per refresh.
#[test]
fn status_watch_into_a_pipe_writes_plain_frames() {
    let _serial = serial();
    let server = RedisServer::start();
    for json in [true, false] {
        let mut args = vec!["status", "--watch"];
        if json {
            args.push("--json");
        }
        let mut watch = Command::new(app_binary())
            .args(server.app_args())
            .args(&args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("watch");
        let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
        let mut seen = Vec::new();
        let wanted = if json { 2 } else { 8 };
        while seen.len() < wanted {
            seen.push(lines.next().expect("a line").expect("text"));
        }
        let _ = watch.kill();
        let _ = watch.wait();
        assert!(!seen.iter().any(|l| l.contains('\u{1b}')), "{seen:?}");
        if json {
            for line in &seen {
                serde_json::from_str::<serde_json::Value>(line).expect("one JSON object per line");
            }
        }
    }
}

/// Siblings found from outside: a delivery count at the top of its range, a
/// counter past what a Lua number formats plainly, a last-enqueue key set
/// with a long expiry by another program, and a janitor lock without one.
#[test]
fn counters_at_their_limits_and_stray_locks_stop_nothing() {
    let _serial = serial();
    let server = RedisServer::start();
    let mut conn = server.conn();
    let max = r#"{"deliveries":4294967295,"seq":1,"epoch":1,"producer":"x","text":"t","generated_at_ms":1}"#;
    let _: () = conn.lpush(keys().queue(), max).expect("push");
    let _: () = conn.set(keys().seq(), 99_999_999_999_998u64).expect("seq");
    let _: () = conn
        .set(keys().epoch(), 100_000_000_000_000u64)
        .expect("epoch");
    let _: () = redis::cmd("SET")
        .arg(keys().last_enqueue())
        .arg("1 1 x")
        .arg("PX")
        .arg(100_000_000)
        .query(&mut conn)
        .expect("last-enqueue");
    let _: () = conn.set(keys().janitor_lock(), "hostile").expect("janitor");
    let mut copies = [
        Copy::start(&server, "g", ALL_ERRORS),
        Copy::start(
            &server,
            "p",
            &[ALL_ERRORS, &["--role", "processor"]].concat(),
        ),
        Copy::start(
            &server,
            "held",
            &[
                ALL_ERRORS,
                &[
                    "--role",
                    "processor",
                    "--work-ms",
                    "60000",
                    "--concurrency",
                    "5",
                ],
            ]
            .concat(),
        ),
    ];
    wait_until(
        "messages numbered past 10^14",
        Duration::from_secs(10),
        || generated(&server) >= 100_000_000_000_002,
    );
    wait_until(
        "the held copy holding messages",
        Duration::from_secs(10),
        || {
            status(&server)["copies"].as_array().is_some_and(|w| {
                w.iter()
                    .any(|w| w["name"] == "held" && w["in_flight"].as_u64().unwrap_or(0) > 0)
            })
        },
    );
    // The janitor lock is nobody's: a dead copy's messages still come back.
    copies[2].kill9();
    wait_until(
        "the dead copy's messages back",
        Duration::from_secs(30),
        || {
            let s = status(&server);
            s["copies"].as_array().is_some_and(|w| w.len() == 2) && s["in_flight"] == 0
        },
    );
    stop_all(&server, &mut copies[..2]);
    let records = get_errors(&server);
    let mut seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    let first = seqs
        .iter()
        .copied()
        .find(|s| *s > 1)
        .expect("generated messages");
    assert_eq!(first, 99_999_999_999_999, "{seqs:?}");
    let last = *seqs.last().expect("records");
    assert_eq!(
        seqs.iter().filter(|s| **s > 1).copied().collect::<Vec<_>>(),
        (first..=last).collect::<Vec<_>>(),
        "every seq once, exactly as counted"
    );
    assert!(records
        .iter()
        .all(|r| r.seq == 1 || r.epoch >= 100_000_000_000_001));
    let max_seen = records.iter().find(|r| r.seq == 1).map(|r| r.deliveries);
    let in_dead: u64 = conn.llen(keys().dead()).expect("dead");
    assert!(
        max_seen == Some(u32::MAX) || in_dead == 1,
        "{max_seen:?}, dead {in_dead}"
    );
    let log = copies[0].log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("{app}:last-enqueue outlived an interval"),
        "{log}"
    );
}

/// A Redis that evicts keys when full could evict the queue: a copy says so
/// at start (and says nothing on the default policy).
#[test]
fn a_redis_that_may_evict_keys_is_named_at_start() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let copy = Copy::start(&server, "evicting", &["--role", "processor"]);
    wait_until("the warning", Duration::from_secs(10), || {
        copy.log_text().contains("maxmemory-policy noeviction")
    });
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query(&mut server.conn())
        .expect("config set");
    let quiet = Copy::start(&server, "quiet", &["--role", "processor"]);
    wait_until("the copy started", Duration::from_secs(10), || {
        quiet.log_text().contains("copy started")
    });
    assert!(
        !quiet.log_text().contains("maxmemory-policy"),
        "{}",
        quiet.log_text()
    );
}
