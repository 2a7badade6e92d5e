//! `app dead list|requeue|purge` against real copies: messages dead-lettered
//! for real (a processor killed while holding them, with `--max-deliveries
//! 1`) are listed, requeued and then processed exactly once; an item that is
//! not a message stays in dead-letter, so it never loops; purge asks first.

use redis::Commands;
use serde_json::Value;
use std::time::Duration;
use testkit::*;

fn dead_len(server: &RedisServer) -> u64 {
    server.conn().llen(keys().dead()).expect("llen")
}

fn stdout_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn dead_letters_are_listed_requeued_once_and_purged() {
    let _serial = serial();
    let server = RedisServer::start();
    let rules = ["--max-deliveries", "1", "--error-rate", "1"];
    let mut generator = Copy::start(
        &server,
        "gen",
        &[&rules[..], &["--interval-ms", "20"]].concat(),
    );
    let mut holder = Copy::start(
        &server,
        "holder",
        &[
            &rules[..],
            &[
                "--role",
                "processor",
                "--work-ms",
                "600000",
                "--concurrency",
                "10",
            ],
        ]
        .concat(),
    );
    wait_generated(&server, 15, Duration::from_secs(20));
    wait_until("the holder holds 10", Duration::from_secs(10), || {
        let held: u64 = server
            .conn()
            .keys::<_, Vec<String>>(keys().processing("*"))
            .expect("keys")
            .iter()
            .map(|k| server.conn().llen::<_, u64>(k).expect("llen"))
            .sum();
        held == 10
    });
    generator.signal("TERM");
    assert_eq!(generator.wait_exit(Duration::from_secs(15)), Some(0));
    // Something that is not a message, for the processor to dead-letter.
    let _: () = server
        .conn()
        .lpush(keys().queue(), "\u{1b}[2Jnot a message")
        .expect("lpush");
    holder.kill9();
    // A fresh processor: its janitor finds the holder dead and, at one
    // delivery already, dead-letters the 10 it held.
    let mut worker = Copy::start(
        &server,
        "worker",
        &[&rules[..], &["--role", "processor"]].concat(),
    );
    wait_until("11 dead-lettered", Duration::from_secs(15), || {
        dead_len(&server) == 11
    });
    wait_queue_empty(&server, Duration::from_secs(10));

    let out = run_app(&server, &["dead", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 11, "{lines:?}");
    assert!(
        lines.iter().all(|l| !l.chars().any(|c| c.is_control())),
        "{lines:?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("11 of 11 dead-letter records"));
    let garbage: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("(not a message"))
        .collect();
    assert_eq!(garbage.len(), 1, "{lines:?}");
    assert!(
        garbage[0].contains("\\u{1b}[2J") || garbage[0].contains("\\x1b"),
        "{}",
        garbage[0]
    );

    let out = run_app(&server, &["dead", "list", "--json", "--limit", "4"]);
    let records: Vec<Value> = stdout_lines(&out)
        .iter()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(records.len(), 4);
    let seqs: Vec<u64> = stdout_lines(&run_app(&server, &["dead", "list", "--json"]))
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["seq"].as_u64())
        .collect();
    assert_eq!(seqs.len(), 10, "{seqs:?}");

    // One by seq, then one that is not there: exit 1, naming it.
    let one = seqs[3].to_string();
    let out = run_app(&server, &["dead", "requeue", "--seq", &one]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("10 dead-lettered", Duration::from_secs(5), || {
        dead_len(&server) == 10
    });
    let out = run_app(&server, &["dead", "requeue", "--seq", "999999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("999999"));
    let out = run_app(&server, &["dead", "requeue"]);
    assert_eq!(out.status.code(), Some(2), "neither --all nor --seq");

    // The rest; the garbage stays.
    let out = run_app(&server, &["dead", "requeue", "--all"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("requeued 9 messages; 1 records left"),
        "{said}"
    );
    assert_eq!(dead_len(&server), 1);
    wait_queue_empty(&server, Duration::from_secs(15));
    // Each requeued message ran once more, as a first delivery.
    let records = get_errors(&server);
    let sorted = audit_exactly_once(&server, &records);
    for r in sorted.iter().filter(|r| seqs.contains(&r.seq)) {
        assert_eq!(r.deliveries, 1, "delivery count reset: {r:?}");
    }
    assert_eq!(
        dead_len(&server),
        1,
        "the garbage never came back through the queue"
    );

    // Purge asks first; without a terminal or --yes it deletes nothing.
    let out = run_app(&server, &["dead", "purge"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(dead_len(&server), 1);
    let out = run_app(&server, &["dead", "purge", "--yes"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("deleted 1 dead-letter records"));
    assert_eq!(dead_len(&server), 0);
    stop_all(&server, std::slice::from_mut(&mut worker));
}
