//! Real copies of `app` against a real Redis: elections, failover, fencing,
//! redelivery and the drain, each audited message by message afterwards.
//! Every test runs with `--error-rate 1`, so every processed message leaves
//! an error record and `get-errors --json` is the audit trail.

use redis::Commands;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use testkit::*;

#[test]
fn three_copies_elect_one_generator_on_a_steady_grid() {
    let _serial = serial();
    let server = RedisServer::start();
    let mut copies = start_copies(&server, 3, &[]);
    wait_generated(&server, 21, Duration::from_secs(20));
    stop_all(&server, &mut copies);
    let records = audit_exactly_once(&server, &get_errors(&server));
    let epochs: HashSet<u64> = records.iter().map(|r| r.epoch).collect();
    assert_eq!(
        epochs.len(),
        1,
        "one generator for the whole run: {epochs:?}"
    );
    let intervals: Vec<i64> = records
        .windows(2)
        .map(|w| w[1].generated_at_ms as i64 - w[0].generated_at_ms as i64)
        .collect();
    let worst = intervals.iter().map(|i| (i - 500).abs()).max().unwrap_or(0);
    eprintln!(
        "cadence: {} intervals, worst deviation {worst} ms: {intervals:?}",
        intervals.len()
    );
    assert!(worst <= 10, "intervals must be 500 ± 10 ms: {intervals:?}");
    let producers: HashSet<&str> = records.iter().map(|r| r.processor.as_str()).collect();
    assert!(
        !producers.contains(records[0].producer.as_str()),
        "the generator does not process"
    );
}

#[test]
fn kill_9_of_the_generator_fails_over_within_lease_plus_interval() {
    let _serial = serial();
    let server = RedisServer::start();
    let mut copies = start_copies(&server, 3, &[]);
    let mut leader = wait_generator(&server, None);
    for _ in 0..2 {
        let before = generated(&server);
        wait_generated(&server, before + 3, Duration::from_secs(10));
        let killed = copies
            .iter_mut()
            .find(|c| c.pid() as u64 == leader)
            .expect("leader is ours");
        killed.kill9();
        leader = wait_generator(&server, Some(leader));
        let after = generated(&server);
        wait_generated(&server, after + 3, Duration::from_secs(10));
    }
    stop_all(&server, &mut copies);
    let records = audit_exactly_once(&server, &get_errors(&server));
    let history = timeline(&server, &records);
    assert_epochs_never_step_back(&history);
    let gaps = gaps_between_epochs(&history);
    eprintln!("failover gaps: {gaps:?} ms");
    assert!(gaps.len() >= 2, "two takeovers: {gaps:?}");
    for gap in &gaps[..2] {
        assert!(
            *gap <= 1000 + 500 + 100,
            "failover gap {gap} ms > lease + interval + 100 ms"
        );
    }
}

#[test]
fn kill_9_of_a_processor_holding_messages_redelivers_them_once() {
    let _serial = serial();
    let server = RedisServer::start();
    let generator = Copy::start(&server, "gen", ALL_ERRORS);
    wait_generator(&server, None);
    let mut victim = Copy::start(
        &server,
        "victim",
        &[
            ALL_ERRORS,
            &[
                "--role",
                "processor",
                "--work-ms",
                "2000",
                "--concurrency",
                "4",
            ],
        ]
        .concat(),
    );
    let victim_id = {
        let mut id = None;
        wait_until("the victim to register", Duration::from_secs(10), || {
            id = status(&server)["copies"]
                .as_array()
                .and_then(|ws| {
                    ws.iter()
                        .find(|w| w["pid"].as_u64() == Some(victim.pid() as u64))
                })
                .and_then(|w| w["id"].as_str().map(str::to_string));
            id.is_some()
        });
        id.unwrap_or_default()
    };
    let processing = keys().processing(&victim_id);
    wait_until(
        "the victim to hold 2 messages",
        Duration::from_secs(10),
        || server.conn().llen::<_, u64>(&processing).unwrap_or(0) >= 2,
    );
    victim.kill9();
    let killed_at = Instant::now();
    let mut survivor = Copy::start(
        &server,
        "survivor",
        &[ALL_ERRORS, &["--role", "processor"]].concat(),
    );
    wait_until(
        "the janitor to reclaim the victim's messages",
        Duration::from_secs(10),
        || !server.conn().exists::<_, bool>(&processing).unwrap_or(true),
    );
    eprintln!(
        "reclaimed {} ms after kill -9",
        killed_at.elapsed().as_millis()
    );
    let mut copies = vec![generator];
    stop_all(&server, &mut copies);
    wait_queue_empty(&server, Duration::from_secs(10));
    stop_all(&server, std::slice::from_mut(&mut survivor));
    let records = audit_exactly_once(&server, &get_errors(&server));
    let redelivered: Vec<&Record> = records.iter().filter(|r| r.deliveries == 2).collect();
    assert!(
        redelivered.len() >= 2,
        "the victim's messages were delivered again: {records:?}"
    );
    assert!(redelivered
        .iter()
        .all(|r| !r.processor.starts_with("victim")));
    assert!(
        records.iter().all(|r| !r.processor.starts_with("victim")),
        "the victim never acked"
    );
}

#[test]
fn a_paused_generator_cannot_add_a_message_after_losing_the_lease() {
    let _serial = serial();
    let server = RedisServer::start();
    let mut copies = start_copies(&server, 3, &[]);
    let paused = wait_generator(&server, None);
    wait_generated(&server, 3, Duration::from_secs(10));
    let copy = copies
        .iter()
        .find(|c| c.pid() as u64 == paused)
        .expect("leader is ours");
    copy.signal("STOP");
    let stopped_at = Instant::now();
    wait_generator(&server, Some(paused));
    // Stay paused for 3 × lease, then wake believing it still leads.
    wait_until("3 × lease of pause", Duration::from_secs(5), || {
        stopped_at.elapsed() >= Duration::from_millis(3000)
    });
    copy.signal("CONT");
    let after = generated(&server);
    wait_generated(&server, after + 4, Duration::from_secs(10));
    let log = copy.log_text();
    stop_all(&server, &mut copies);
    let records = audit_exactly_once(&server, &get_errors(&server));
    let history = timeline(&server, &records);
    assert_epochs_never_step_back(&history);
    let old_epoch = history[0].epoch;
    let first_new = history
        .iter()
        .find(|r| r.epoch > old_epoch)
        .expect("a new epoch")
        .seq;
    let late: Vec<u64> = history
        .iter()
        .filter(|r| r.epoch == old_epoch && r.seq > first_new)
        .map(|r| r.seq)
        .collect();
    assert!(
        late.is_empty(),
        "old-epoch messages after the new epoch began: {late:?}"
    );
    assert!(
        log.contains("lost the lease") || log.contains("enqueue refused"),
        "the paused copy noticed:\n{log}"
    );
}

#[test]
fn sigterm_of_the_generator_hands_over_within_one_interval() {
    let _serial = serial();
    let server = RedisServer::start();
    let mut copies = start_copies(&server, 2, &[]);
    let leader = wait_generator(&server, None);
    wait_generated(&server, 4, Duration::from_secs(10));
    let copy = copies
        .iter_mut()
        .find(|c| c.pid() as u64 == leader)
        .expect("leader is ours");
    copy.signal("TERM");
    assert_eq!(copy.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(copy.log_text().contains("released the lease"));
    let after = generated(&server);
    wait_generated(&server, after + 3, Duration::from_secs(10));
    stop_all(&server, &mut copies);
    let records = audit_exactly_once(&server, &get_errors(&server));
    let gaps = gaps_between_epochs(&timeline(&server, &records));
    eprintln!("handover gaps: {gaps:?} ms");
    assert_eq!(gaps.len(), 1, "one handover");
    assert!(
        gaps[0] <= 500 + 50,
        "the next message came {} ms after the last",
        gaps[0]
    );
    assert!(gaps[0] >= 490, "no burst after a handover: {} ms", gaps[0]);
}

#[test]
fn a_malformed_queue_item_goes_to_dead_letter_and_processing_goes_on() {
    let _serial = serial();
    let server = RedisServer::start();
    let mut copies = start_copies(&server, 2, &[]);
    wait_generated(&server, 2, Duration::from_secs(10));
    let garbage: [&[u8]; 4] = [b"not json", b"{\"seq\":\"seven\"}", b"\xff\xfe\x1b[2J", b""];
    for item in garbage {
        let _: () = server.conn().lpush(keys().queue(), item).expect("push");
    }
    wait_until("4 dead-letter records", Duration::from_secs(10), || {
        server.conn().llen::<_, u64>(keys().dead()).unwrap_or(0) >= 4
    });
    let before = status(&server)["processed"].as_u64().unwrap_or(0);
    wait_until("processing to go on", Duration::from_secs(10), || {
        status(&server)["processed"].as_u64().unwrap_or(0) >= before + 2
    });
    let dead: Vec<Vec<u8>> = server
        .conn()
        .lrange(keys().dead(), 0, -1)
        .expect("dead list");
    for record in &dead {
        // The item is kept byte for byte, UTF-8 or not.
        let record = String::from_utf8_lossy(record);
        let v: serde_json::Value = serde_json::from_str(&record).expect("dead records are JSON");
        assert!(
            v["reason"]
                .as_str()
                .unwrap_or("")
                .contains("not a valid message"),
            "{record}"
        );
    }
    stop_all(&server, &mut copies);
    audit_exactly_once(&server, &get_errors(&server));
}

#[test]
fn two_get_errors_at_once_print_disjoint_halves_of_everything() {
    let _serial = serial();
    let server = RedisServer::start();
    let total = 3000u64;
    let mut conn = server.conn();
    for seq in 1..=total {
        let record = serde_json::json!({
            "seq": seq, "epoch": 1, "producer": "p", "text": format!("text {seq}"),
            "generated_at_ms": 1, "processor": "c", "detected_at_ms": 2, "deliveries": 1
        });
        let _: () = conn
            .lpush(keys().errors(), record.to_string())
            .expect("push");
    }
    let spawn = || {
        std::process::Command::new(app_binary())
            .args(server.app_args())
            .args(["get-errors", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("get-errors starts")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    assert!(a.status.success() && b.status.success());
    let seqs = |out: &std::process::Output| -> Vec<u64> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["seq"]
                    .as_u64()
                    .expect("seq")
            })
            .collect()
    };
    let (sa, sb) = (seqs(&a), seqs(&b));
    let set_a: HashSet<u64> = sa.iter().copied().collect();
    let set_b: HashSet<u64> = sb.iter().copied().collect();
    assert_eq!(set_a.len(), sa.len(), "no line twice within a run");
    assert!(set_a.is_disjoint(&set_b), "two runs printed the same error");
    assert_eq!(
        set_a.len() + set_b.len(),
        total as usize,
        "the union is everything"
    );
    assert_eq!(conn.llen::<_, u64>(keys().errors()).expect("llen"), 0);
    assert!(String::from_utf8_lossy(&a.stderr).contains("remain"));
}

#[test]
fn get_errors_escapes_hostile_text_and_keeps_order_and_limit() {
    let _serial = serial();
    let server = RedisServer::start();
    let mut conn = server.conn();
    for seq in 1..=3u64 {
        let record = serde_json::json!({
            "seq": seq, "epoch": 1, "producer": "p", "text": format!("\u{1b}[2J\u{202e}evil {seq}\r\n"),
            "generated_at_ms": 1, "processor": "c", "detected_at_ms": 2, "deliveries": 1
        });
        let _: () = conn
            .lpush(keys().errors(), record.to_string())
            .expect("push");
    }
    let _: () = conn
        .lpush(keys().errors(), "\x1b]0;not a record\x07")
        .expect("push");
    let out = run_app(&server, &["get-errors", "--limit", "2"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        !text
            .chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
        "{text:?}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with("#1 ") && lines[1].starts_with("#2 "),
        "oldest first: {lines:?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("took 2 errors; 2 remain"));
    let out = run_app(&server, &["get-errors"]);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        text.contains("#3 ") && text.contains("(not an error record) \\x1b]0;not a record\\x07"),
        "{text}"
    );
    let out = run_app(&server, &["getErrors"]);
    assert!(out.status.success() && out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("took 0 errors; 0 remain"));
}

#[test]
fn status_json_carries_the_documented_fields() {
    let _serial = serial();
    let server = RedisServer::start();
    let mut copies = start_copies(&server, 2, &[]);
    wait_generated(&server, 2, Duration::from_secs(10));
    wait_until("both copies registered", Duration::from_secs(5), || {
        status(&server)["copies"].as_array().map_or(0, |w| w.len()) == 2
    });
    let s = status(&server);
    assert_eq!(s["leader"], s["generator"], "the first name stays: {s}");
    assert_eq!(s["workers"], s["copies"], "the first name stays: {s}");
    for field in [
        "generator",
        "copies",
        "leader",
        "workers",
        "queue",
        "in_flight",
        "errors",
        "dead",
        "generated",
        "processed",
        "errors_total",
    ] {
        assert!(s.get(field).is_some(), "missing {field}: {s}");
    }
    for field in ["id", "name", "host", "pid", "epoch", "lease_ms_left"] {
        assert!(
            s["generator"].get(field).is_some(),
            "generator.{field}: {s}"
        );
    }
    for copy in s["copies"].as_array().expect("copies") {
        for field in [
            "id",
            "name",
            "host",
            "pid",
            "role",
            "concurrency",
            "in_flight",
            "processed",
            "last_seen_ms_ago",
        ] {
            assert!(copy.get(field).is_some(), "copy.{field}: {s}");
        }
    }
    let roles: HashSet<&str> = s["copies"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["role"].as_str())
        .collect();
    assert_eq!(roles, HashSet::from(["generator", "processor"]));
    let table = run_app(&server, &["status"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("generator: c"));
    stop_all(&server, &mut copies);
}

#[test]
fn a_copy_holds_two_named_connections_whatever_its_concurrency() {
    let _serial = serial();
    let server = RedisServer::start_with(&["--requirepass", "pw"]);
    let mut copies = vec![
        Copy::start(&server, "gen", ALL_ERRORS),
        Copy::start(
            &server,
            "wide",
            &[ALL_ERRORS, &["--role", "processor", "--concurrency", "500"]].concat(),
        ),
    ];
    wait_generated(&server, 3, Duration::from_secs(10));
    let wide_id = status(&server)["copies"]
        .as_array()
        .and_then(|ws| {
            ws.iter().find_map(|w| {
                w["id"]
                    .as_str()
                    .filter(|id| id.starts_with("wide-"))
                    .map(str::to_string)
            })
        })
        .expect("the wide copy is registered");
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut server.conn())
        .expect("client list");
    let mine: Vec<&str> = list
        .lines()
        .filter(|l| l.contains(&format!(" name=app:{wide_id} ")))
        .collect();
    assert_eq!(
        mine.len(),
        2,
        "one command and one subscriber connection:\n{list}"
    );
    assert!(
        mine.iter().any(|l| l.contains(" sub=3 ")),
        "one of them subscribes (wake-ups for all, for its shard, and the lease):\n{list}"
    );
    stop_all(&server, &mut copies);
}

#[test]
fn promotion_never_waits_for_work_in_progress() {
    let _serial = serial();
    let server = RedisServer::start();
    let fast = ["--interval-ms", "20"];
    let mut generator = Copy::start(&server, "gen", &[ALL_ERRORS, &fast].concat());
    let old = wait_generator(&server, None);
    let busy_args = [
        ALL_ERRORS,
        &fast,
        &["--concurrency", "100", "--work-ms", "5000"],
    ]
    .concat();
    let busy = Copy::start(&server, "busy", &busy_args);
    wait_until(
        "the busy copy to hold 50 messages",
        Duration::from_secs(10),
        || {
            status(&server)["copies"].as_array().is_some_and(|ws| {
                ws.iter().any(|w| {
                    w["pid"].as_u64() == Some(busy.pid() as u64)
                        && w["in_flight"].as_u64() >= Some(50)
                })
            })
        },
    );
    generator.kill9();
    let killed_at = redis_ql::message::now_ms();
    wait_generator(&server, Some(old));
    let after = generated(&server);
    wait_generated(&server, after + 1, Duration::from_secs(5));
    let s = status(&server);
    let held = s["copies"]
        .as_array()
        .and_then(|ws| {
            ws.iter()
                .find(|w| w["pid"].as_u64() == Some(busy.pid() as u64))
        })
        .and_then(|w| w["in_flight"].as_u64())
        .unwrap_or(0);
    assert!(
        held >= 50,
        "still busy with the old work while generating: {held}"
    );
    let first_new = timeline(&server, &[])
        .into_iter()
        .find(|m| m.epoch > 1)
        .expect("a message of the new epoch");
    let took = first_new.generated_at_ms.saturating_sub(killed_at);
    eprintln!(
        "first message of the new generator {took} ms after kill -9, with {held} messages in hand"
    );
    assert!(took <= 1000 + 20 + 100, "promotion took {took} ms");
    let mut copies = vec![busy];
    stop_all(&server, &mut copies);
    audit_exactly_once(&server, &get_errors(&server));
}

#[test]
fn as_fast_as_possible_every_message_is_still_processed_exactly_once() {
    let _serial = serial();
    let server = RedisServer::start();
    let mut generator = Copy::start(
        &server,
        "gen",
        &[ALL_ERRORS, &["--interval-ms", "0"]].concat(),
    );
    wait_generator(&server, None);
    let processor = [ALL_ERRORS, &["--role", "processor", "--concurrency", "64"]].concat();
    let mut victim = Copy::start(&server, "victim", &processor);
    let survivor = Copy::start(&server, "survivor", &processor);
    wait_generated(&server, 5_000, Duration::from_secs(20));
    victim.kill9();
    let after = generated(&server);
    wait_generated(&server, after + 5_000, Duration::from_secs(20));
    stop_all(&server, std::slice::from_mut(&mut generator));
    wait_queue_empty(&server, Duration::from_secs(30));
    let mut rest = vec![survivor];
    stop_all(&server, &mut rest);
    let records = audit_exactly_once(&server, &get_errors(&server));
    assert_epochs_never_step_back(&timeline(&server, &records));
    eprintln!("{} messages, each processed exactly once", records.len());
}
