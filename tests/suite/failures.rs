//! The failures real deployments see, injected for real: Redis crashes and
//! restarts, a network that goes silent or slow, subscribers killed over and
//! over, signals, long pauses, and output that breaks under get-errors.
//! After each, the audit: every seq exactly once, epochs never step back.

use redis::Commands;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::proxy::{Mode, Proxy};
use testkit::*;

fn with<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [ALL_ERRORS, args].concat()
}

/// The number after `after_ms=` on the last log line that says `what`.
fn logged_ms(log: &str, what: &str) -> Option<u64> {
    log.lines()
        .rfind(|l| l.contains(what))
        .and_then(|l| l.split("after_ms=").nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
}

fn ids_of(server: &RedisServer, pid: u32) -> Vec<String> {
    status(server)["copies"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter(|w| w["pid"].as_u64() == Some(pid as u64))
                .filter_map(|w| w["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Stops the generator, lets a fresh processor drain what is left (within
/// `deadline`, reclaims included), then stops it too.
fn finish_with_a_fresh_processor(server: &RedisServer, generator: Copy, deadline: Duration) {
    let mut finisher = Copy::start(server, "finisher", &with(&["--role", "processor"]));
    stop_all(server, &mut [generator]);
    wait_queue_empty(server, deadline);
    stop_all(server, std::slice::from_mut(&mut finisher));
}

/// Waits until `copy` holds at least one message.
fn wait_holding(server: &RedisServer, copy: &Copy) {
    let pid = copy.pid() as u64;
    wait_until(
        "the copy to hold a message",
        Duration::from_secs(10),
        || {
            status(server)["copies"].as_array().is_some_and(|ws| {
                ws.iter()
                    .any(|w| w["pid"].as_u64() == Some(pid) && w["in_flight"].as_u64() > Some(0))
            })
        },
    );
}

/// A generator that reaches Redis through `proxy`, and a copy that does not,
/// ready to take over; three messages already generated.
fn proxied_generator_and_direct_copy(server: &RedisServer, proxy: &Proxy) -> (Copy, Copy) {
    let proxied = Copy::start_via(server, proxy.port, "proxied", ALL_ERRORS);
    let pid = proxied.pid() as u64;
    wait_until("the proxied copy to lead", Duration::from_secs(10), || {
        generator_pid(server) == Some(pid)
    });
    let direct = Copy::start(server, "direct", ALL_ERRORS);
    wait_generated(server, 3, Duration::from_secs(10));
    (proxied, direct)
}

#[test]
fn a_redis_crash_and_restart_with_appendfsync_always_loses_nothing() {
    let _serial = serial();
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut copies = start_copies(&server, 3, &["--work-ms", "100"]);
    wait_generated(&server, 4, Duration::from_secs(10));
    server.crash_and_restart(Duration::from_millis(1500));
    let after = generated(&server);
    wait_generated(&server, after + 6, Duration::from_secs(15));
    for copy in &mut copies {
        assert!(
            copy.child.try_wait().ok().flatten().is_none(),
            "no copy exits:\n{}",
            copy.log_text()
        );
    }
    let back: Vec<u64> = copies
        .iter()
        .filter_map(|c| logged_ms(&c.log_text(), "connection to Redis is back"))
        .collect();
    eprintln!("reconnected after (ms, from the first failed request): {back:?}");
    assert!(
        !back.is_empty(),
        "the copies logged the outage and the return"
    );
    stop_all(&server, &mut copies);
    let records = audit_exactly_once(&server, &get_errors(&server));
    assert_epochs_never_step_back(&timeline(&server, &records));
}

#[test]
fn a_silent_network_stops_the_generator_before_its_lease_expires() {
    let _serial = serial();
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port);
    let (cut_off, other) = proxied_generator_and_direct_copy(&server, &proxy);
    let cut_pid = cut_off.pid() as u64;
    proxy.set(Mode::Hold);
    let held_at_ms = redis_ql::message::now_ms();
    wait_until("another generator", Duration::from_secs(10), || {
        generator_pid(&server).is_some_and(|p| p != cut_pid)
    });
    wait_until(
        "the cut-off copy to give up",
        Duration::from_secs(5),
        || cut_off.log_text().contains("lost the lease"),
    );
    // Stay silent past the heartbeat TTL, then heal.
    let since = Instant::now();
    wait_until("4 s of silence", Duration::from_secs(6), || {
        since.elapsed() >= Duration::from_secs(4)
    });
    proxy.set(Mode::Pass);
    wait_until(
        "the cut-off copy to be back",
        Duration::from_secs(10),
        || {
            cut_off.log_text().contains("connection to Redis is back")
                && !ids_of(&server, cut_off.pid()).is_empty()
        },
    );
    assert!(
        cut_off.log_text().contains("re-registered under a new id"),
        "{}",
        cut_off.log_text()
    );
    let after = generated(&server);
    wait_generated(&server, after + 3, Duration::from_secs(10));
    let mut copies = vec![cut_off, other];
    stop_all(&server, &mut copies);
    let records = audit_exactly_once(&server, &get_errors(&server));
    let history = timeline(&server, &records);
    assert_epochs_never_step_back(&history);
    let first_epoch = history[0].epoch;
    let last_old = history
        .iter()
        .filter(|s| s.epoch == first_epoch)
        .map(|s| s.generated_at_ms)
        .max();
    // Its lease could not have outlived the hold by more than one lease.
    assert!(
        last_old.unwrap_or(0) <= held_at_ms + 1000,
        "generated after its lease expired"
    );
}

#[test]
fn a_slow_redis_never_makes_two_generators_and_the_cadence_recovers() {
    let _serial = serial();
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port);
    let (slow, fast) = proxied_generator_and_direct_copy(&server, &proxy);
    let slow_pid = slow.pid() as u64;
    proxy.set(Mode::Delay(Duration::from_millis(400)));
    wait_until(
        "the fast copy to take over",
        Duration::from_secs(10),
        || generator_pid(&server).is_some_and(|p| p != slow_pid),
    );
    let since = Instant::now();
    wait_until("3 s of slowness", Duration::from_secs(5), || {
        since.elapsed() >= Duration::from_secs(3)
    });
    proxy.set(Mode::Pass);
    let after = generated(&server);
    wait_generated(&server, after + 8, Duration::from_secs(10));
    let mut copies = vec![slow, fast];
    stop_all(&server, &mut copies);
    let records = audit_exactly_once(&server, &get_errors(&server));
    let history = timeline(&server, &records);
    assert_epochs_never_step_back(&history);
    // Never two generators at once: each epoch's messages end before the next begins.
    let mut spans: Vec<(u64, u64, u64)> = Vec::new();
    for s in &history {
        match spans.last_mut() {
            Some((epoch, _, end)) if *epoch == s.epoch => *end = s.generated_at_ms,
            _ => spans.push((s.epoch, s.generated_at_ms, s.generated_at_ms)),
        }
    }
    for pair in spans.windows(2) {
        assert!(
            pair[0].2 < pair[1].1,
            "epochs {} and {} overlap: {spans:?}",
            pair[0].0,
            pair[1].0
        );
    }
    let tail: Vec<u64> = history
        .windows(2)
        .rev()
        .take(5)
        .map(|w| w[1].generated_at_ms - w[0].generated_at_ms)
        .collect();
    assert!(
        tail.iter().all(|i| (490..=515).contains(i)),
        "the cadence recovered: {tail:?}"
    );
}

#[test]
fn killed_subscribers_do_not_strand_messages() {
    let _serial = serial();
    let server = RedisServer::start();
    let mut copies = start_copies(&server, 3, &[]);
    wait_generated(&server, 2, Duration::from_secs(10));
    let from = generated(&server);
    let until = Instant::now() + Duration::from_secs(6);
    let mut conn = server.conn();
    while Instant::now() < until {
        let _: redis::RedisResult<u64> = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query(&mut conn);
        std::thread::sleep(Duration::from_millis(150));
    }
    wait_generated(&server, generated(&server) + 2, Duration::from_secs(5));
    stop_all(&server, &mut copies);
    let records = audit_exactly_once(&server, &get_errors(&server));
    let worst = records
        .iter()
        .filter(|r| r.seq > from)
        .map(|r| r.detected_at_ms - r.generated_at_ms)
        .max()
        .unwrap_or(0);
    eprintln!("worst latency while subscribers were being killed: {worst} ms");
    assert!(worst <= 1500, "a message waited {worst} ms");
}

#[test]
fn a_second_signal_exits_at_once_and_the_janitor_recovers() {
    let _serial = serial();
    let server = RedisServer::start();
    let generator = Copy::start(&server, "gen", ALL_ERRORS);
    wait_generator(&server, None);
    let mut stubborn = Copy::start(
        &server,
        "stubborn",
        &with(&[
            "--role",
            "processor",
            "--work-ms",
            "5000",
            "--concurrency",
            "4",
        ]),
    );
    wait_holding(&server, &stubborn);
    stubborn.signal("TERM");
    wait_until(
        "the first signal to be heard",
        Duration::from_secs(5),
        || stubborn.log_text().contains("stopping"),
    );
    let second = Instant::now();
    stubborn.signal("TERM");
    assert_eq!(stubborn.wait_exit(Duration::from_secs(2)), Some(143)); // 128 + SIGTERM
    assert!(second.elapsed() < Duration::from_secs(1));
    finish_with_a_fresh_processor(&server, generator, Duration::from_secs(15));
    audit_exactly_once(&server, &get_errors(&server));
}

fn fill_errors(server: &RedisServer, n: u64) {
    let mut conn = server.conn();
    for seq in 1..=n {
        let record = serde_json::json!({
            "seq": seq, "epoch": 1, "producer": "p", "text": "x".repeat(200),
            "generated_at_ms": 1, "processor": "c", "detected_at_ms": 2, "deliveries": 1
        });
        let _: () = conn
            .lpush(keys().errors(), record.to_string())
            .expect("push");
    }
}

#[test]
fn get_errors_into_a_full_disk_gives_the_batch_back_whole() {
    let server = RedisServer::start();
    fill_errors(&server, 300);
    let out = Command::new(app_binary())
        .args(server.app_args())
        .arg("get-errors")
        .stdout(std::fs::File::create("/dev/full").expect("/dev/full"))
        .output()
        .expect("get-errors runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("writing to stdout failed") && err.contains("went back"),
        "{err}"
    );
    let left: u64 = server.conn().llen(keys().errors()).expect("llen");
    assert_eq!(left, 300, "nothing was written, so nothing is gone");
    let drains: Vec<String> = server.conn().smembers(keys().drains()).expect("smembers");
    assert!(drains.is_empty());
}

#[test]
fn get_errors_into_a_closed_pipe_gives_the_unwritten_batch_back() {
    let server = RedisServer::start();
    fill_errors(&server, 3000);
    let mut child = Command::new(app_binary())
        .args(server.app_args())
        .arg("get-errors")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("get-errors runs");
    let mut first = String::new();
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("one line");
    assert!(first.starts_with("#1 "), "{first}");
    // The reader is gone, as after `| head -1`.
    let out = child.wait_with_output().expect("exit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("went back"), "{err}");
    let left: u64 = server.conn().llen(keys().errors()).expect("llen");
    assert!(left > 0, "the batch being written went back");
    let draining: Vec<String> = server.conn().keys(keys().draining("*")).expect("keys");
    assert!(draining.is_empty(), "no batch is left half-taken");
}

#[test]
fn a_processor_paused_for_long_rejoins_under_a_new_id_and_its_old_claims_have_no_effect() {
    let _serial = serial();
    let server = RedisServer::start();
    let generator = Copy::start(&server, "gen", ALL_ERRORS);
    wait_generator(&server, None);
    let sleeper = Copy::start(
        &server,
        "sleeper",
        &with(&[
            "--role",
            "processor",
            "--work-ms",
            "1500",
            "--concurrency",
            "4",
        ]),
    );
    let old_ids = {
        let mut ids = Vec::new();
        wait_until(
            "the sleeper to hold messages",
            Duration::from_secs(10),
            || {
                ids = ids_of(&server, sleeper.pid());
                ids.iter().any(|id| {
                    server
                        .conn()
                        .llen::<_, u64>(keys().processing(id))
                        .unwrap_or(0)
                        > 0
                })
            },
        );
        ids
    };
    sleeper.signal("STOP");
    // Frozen now: what it holds cannot change until it wakes.
    let held: Vec<u64> = seqs_outside_errors(&server)
        .into_iter()
        .filter(|(_, places)| {
            places
                .iter()
                .any(|p| old_ids.iter().any(|id| p.ends_with(id.as_str())))
        })
        .map(|(seq, _)| seq)
        .collect();
    assert!(!held.is_empty());
    let other = Copy::start(&server, "other", &with(&["--role", "processor"]));
    wait_until(
        "the janitor to take the sleeper's messages",
        Duration::from_secs(10),
        || {
            old_ids.iter().all(|id| {
                !server
                    .conn()
                    .exists::<_, bool>(keys().processing(id))
                    .unwrap_or(true)
            })
        },
    );
    sleeper.signal("CONT");
    wait_until("the sleeper to rejoin", Duration::from_secs(10), || {
        let ids = ids_of(&server, sleeper.pid());
        !ids.is_empty() && ids.iter().all(|id| !old_ids.contains(id))
    });
    wait_until(
        "its late acks to be refused",
        Duration::from_secs(10),
        || sleeper.log_text().contains("ack refused"),
    );
    let after = generated(&server);
    wait_generated(&server, after + 4, Duration::from_secs(10));
    let mut copies = vec![generator];
    stop_all(&server, &mut copies);
    wait_queue_empty(&server, Duration::from_secs(15));
    let mut rest = vec![sleeper, other];
    stop_all(&server, &mut rest);
    let records = audit_exactly_once(&server, &get_errors(&server));
    for record in records.iter().filter(|r| held.contains(&r.seq)) {
        assert!(
            !old_ids.contains(&record.processor),
            "seq {} committed under the expired id",
            record.seq
        );
        assert_eq!(
            record.deliveries, 2,
            "seq {} was delivered again",
            record.seq
        );
    }
}

#[test]
fn a_claim_whose_answer_is_lost_does_not_strand_its_messages() {
    let _serial = serial();
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port);
    let mut late = Copy::start_via(&server, proxy.port, "late", &with(&["--role", "processor"]));
    let mut id = Vec::new();
    wait_until("the copy to register", Duration::from_secs(10), || {
        id = ids_of(&server, late.pid());
        !id.is_empty()
    });
    // What a claim leaves behind when Redis ran it but its answer was lost:
    // a message in the copy's processing list that the copy knows nothing of.
    let mut conn = server.conn();
    let _: () = conn.set(keys().seq(), 1).expect("set");
    let message = r#"{"seq":1,"epoch":1,"producer":"p","text":"orphan","generated_at_ms":1}"#;
    let _: () = conn
        .lpush(keys().processing(&id[0]), message)
        .expect("lpush");
    // The connection drops: the copy cannot tell which answers it missed.
    proxy.cut();
    wait_until(
        "the orphan to be taken up and processed",
        Duration::from_secs(10),
        || {
            let s = status(&server);
            s["in_flight"].as_u64() == Some(0) && s["processed"].as_u64() == Some(1)
        },
    );
    let log = late.log_text();
    assert!(
        log.contains("took up messages claimed by a request whose answer was lost"),
        "{log}"
    );
    stop_all(&server, std::slice::from_mut(&mut late));
    let records = audit_exactly_once(&server, &get_errors(&server));
    assert_eq!(records[0].text, "orphan");
}
