//! `app dashboard`'s JSON API, asked with a real HTTP client while real
//! copies run on a real Redis (the page itself is tested in a browser, in
//! `browser.rs`).

use redis::Commands;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use testkit::*;

/// The error records of a download, one `get-errors --json` line each.
fn records_of(ndjson: &str) -> Vec<Record> {
    ndjson
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

#[test]
fn the_api_shows_the_cluster_and_its_rates_and_the_dashboard_takes_no_part() {
    let _serial = serial();
    // The dashboard starts before Redis does: it says so, then connects.
    let port = free_port();
    let dir = tempfile::tempdir().expect("a directory");
    let connect = vec!["--port".to_string(), port.to_string()];
    let dashboard = Dashboard::start_with(dir.path(), &connect, None, "127.0.0.1");
    let early = dashboard.get("/api/status");
    assert_eq!(early.status, 503, "{}", early.text);
    assert!(
        early.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("connecting to Redis")),
        "{}",
        early.text
    );
    let page = dashboard.get("/");
    assert_eq!(page.status, 200);
    assert!(page.text.contains("<script src=\"/app.js\""));
    let server = RedisServer::start_on(port);
    wait_until("the dashboard reads Redis", Duration::from_secs(10), || {
        dashboard.get("/api/status").status == 200
    });
    let empty = dashboard.get("/api/status").body;
    assert_eq!(empty["generator"], Value::Null, "{empty}");
    assert_eq!(empty["copies"], json!([]), "{empty}");

    let mut copies = start_copies(&server, 2, &["--interval-ms", "20"]);
    wait_generator(&server, None);
    let holder = status(&server)["generator"]["id"].clone();
    let mut shown = Value::Null;
    wait_until("the generator shown", Duration::from_secs(5), || {
        shown = dashboard.get("/api/status").body;
        shown["generator"]["id"] == holder
    });
    // Status as docs/SPEC.md §4 has it, and only the two copies: the
    // dashboard never registers.
    let ids: BTreeSet<&str> = shown["copies"]
        .as_array()
        .expect("copies")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{shown}");
    for field in [
        "queue",
        "in_flight",
        "errors",
        "dead",
        "generated",
        "processed",
    ] {
        assert!(shown[field].is_u64(), "{field} in {shown}");
    }
    let registry: u64 = server.conn().hlen(keys().registry()).expect("the registry");
    assert_eq!(registry, 2);

    // The rates rise while the generator runs (50 a second).
    wait_until(
        "a processed rate above 20/s",
        Duration::from_secs(10),
        || {
            dashboard.get("/api/series").body["points"]
                .as_array()
                .and_then(|points| points.last())
                .and_then(|p| p["processed"].as_f64())
                .is_some_and(|rate| rate > 20.0)
        },
    );

    // One command connection, named, and no subscriber.
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut server.conn())
        .expect("CLIENT LIST");
    let named: Vec<&str> = clients
        .lines()
        .filter(|l| l.contains("name=app:dashboard "))
        .collect();
    assert_eq!(named.len(), 1, "{clients}");
    assert!(named[0].contains("sub=0 "), "{}", named[0]);

    // Read-only: no change without --token, and errors stay where they are.
    wait_until("a few errors stored", Duration::from_secs(10), || {
        dashboard.get("/api/errors?limit=3").body["total"]
            .as_u64()
            .is_some_and(|n| n >= 3)
    });
    let before: u64 = server.conn().llen(keys().errors()).expect("errors");
    let refused = dashboard.post_as(None, "/api/errors/take", None);
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(refused.text.contains("read-only"), "{}", refused.text);
    let refused = dashboard.post_as(Some("guess"), "/api/dead/purge", Some(&json!({"count": 1})));
    assert_eq!(refused.status, 403, "{}", refused.text);
    let after: u64 = server.conn().llen(keys().errors()).expect("errors");
    assert!(after >= before, "{after} < {before}: something was taken");

    // Errors, newest first, paged: once the copies have stopped, so that
    // no new error moves the pages between two reads.
    stop_all(&server, &mut copies);
    let first = dashboard.get("/api/errors?limit=3").body;
    let seqs: Vec<u64> = first["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs.len(), 3, "{first}");
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    let second = dashboard.get("/api/errors?offset=1&limit=1").body;
    assert_eq!(
        second["items"][0]["seq"].as_u64(),
        Some(seqs[1]),
        "{second}"
    );
    assert_eq!(second["total"], first["total"], "{second}");

    let records = get_errors(&server);
    audit_exactly_once(&server, &records);
}

#[test]
fn take_and_download_loses_no_error_and_gives_none_twice() {
    let server = RedisServer::start();
    let dashboard = Dashboard::start(&server, Some("s3cret"));
    let mut copies = start_copies(&server, 2, &["--interval-ms", "10"]);
    // Enough stored for every take below to find some, whatever the timing.
    wait_until("40 errors stored", Duration::from_secs(20), || {
        server.conn().llen::<_, u64>(keys().errors()).unwrap_or(0) >= 40
    });

    // Takes while errors keep arriving: each settled batch is the caller's.
    let mut downloaded: Vec<Record> = Vec::new();
    for _ in 0..5 {
        let taken = dashboard.post("/api/errors/take?limit=7", None);
        assert_eq!(taken.status, 200, "{}", taken.text);
        let batch = records_of(taken.body["ndjson"].as_str().expect("ndjson"));
        assert_eq!(taken.body["taken"].as_u64(), Some(batch.len() as u64));
        assert!(!batch.is_empty() && batch.len() <= 7, "{}", taken.text);
        assert!(
            batch.windows(2).all(|w| w[0].seq < w[1].seq),
            "oldest first"
        );
        let run = taken.body["run"].clone();
        let settled = dashboard.post(
            "/api/errors/settle",
            Some(&json!({ "run": run, "taken": batch.len() })),
        );
        assert_eq!(settled.status, 200, "{}", settled.text);
        downloaded.extend(batch);
    }

    // Given back: they are taken again later, not lost.
    let taken = dashboard.post("/api/errors/take?limit=5", None);
    let given_back = records_of(taken.body["ndjson"].as_str().expect("ndjson"));
    let back = dashboard.post(
        "/api/errors/give-back",
        Some(&json!({ "run": taken.body["run"] })),
    );
    assert_eq!(back.status, 200, "{}", back.text);
    assert_eq!(
        back.body["returned"].as_u64(),
        Some(given_back.len() as u64)
    );

    // Confirmed too late: the hold lapsed (its lock is gone), a get-errors
    // run gave the batch back and printed it; the late settle is refused
    // and says so, and the batch counts once, as printed.
    let taken = dashboard.post("/api/errors/take?limit=5", None);
    let late = records_of(taken.body["ndjson"].as_str().expect("ndjson"));
    let run = taken.body["run"].as_str().expect("run").to_string();
    let _: () = server
        .conn()
        .del(keys().drain_lock(&run))
        .expect("the hold lapses");
    let printed = get_errors(&server);
    let printed_seqs: BTreeSet<u64> = printed.iter().map(|r| r.seq).collect();
    assert!(
        late.iter().all(|r| printed_seqs.contains(&r.seq)),
        "the lapsed batch went back and was printed"
    );
    assert!(
        given_back.iter().all(|r| printed_seqs.contains(&r.seq)),
        "the given-back batch was printed"
    );
    let refused = dashboard.post(
        "/api/errors/settle",
        Some(&json!({ "run": run, "taken": late.len() })),
    );
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert!(refused.text.contains("taken again"), "{}", refused.text);

    // Not an id a take makes: refused before Redis is asked.
    let bad = dashboard.post(
        "/api/errors/settle",
        Some(&json!({ "run": "../../x", "taken": 1 })),
    );
    assert_eq!(bad.status, 400, "{}", bad.text);
    let bad = dashboard.post("/api/errors/settle", Some(&json!({ "nothing": 1 })));
    assert!(bad.status == 400 || bad.status == 422, "{}", bad.text);

    stop_all(&server, &mut copies);
    let mut records = downloaded;
    records.extend(printed);
    records.extend(get_errors(&server));
    audit_exactly_once(&server, &records);
}

#[test]
fn dead_letters_are_paged_requeued_and_purged_only_with_the_token() {
    let server = RedisServer::start();
    let dashboard = Dashboard::start(&server, Some("s3cret"));
    let mut conn = server.conn();
    // Three whole messages and one item that is not one, as copies write them.
    for seq in 1..=3u64 {
        let item = json!({"seq": seq, "epoch": 1, "producer": "p", "text": format!("text {seq}"), "generated_at_ms": 1, "deliveries": 5}).to_string();
        let record = json!({"reason": "delivered 5 times", "item": item, "bytes": item.len(), "truncated": false});
        let _: () = conn
            .lpush(keys().dead(), record.to_string())
            .expect("LPUSH");
    }
    let _: () = conn
        .lpush(keys().dead(), json!({"reason": "not a message", "item": "<b>junk</b>", "bytes": 11, "truncated": false}).to_string())
        .expect("LPUSH");

    let page = dashboard.get("/api/dead?limit=2").body;
    assert_eq!(page["total"], json!(4), "{page}");
    assert_eq!(
        page["items"][0]["item"],
        json!("<b>junk</b>"),
        "newest first: {page}"
    );
    assert_eq!(page["items"][1]["seq"], json!(3), "{page}");

    for (token, status) in [(None, 401), (Some("wrong"), 401), (Some("s3cre"), 401)] {
        let refused = dashboard.post_as(token, "/api/dead/requeue", Some(&json!({"seqs": [2]})));
        assert_eq!(refused.status, status, "{token:?}: {}", refused.text);
    }
    let unchanged: u64 = conn.llen(keys().dead()).expect("LLEN");
    assert_eq!(unchanged, 4);

    let requeued = dashboard.post("/api/dead/requeue", Some(&json!({"seqs": [2, 9]})));
    assert_eq!(requeued.status, 200, "{}", requeued.text);
    assert_eq!(requeued.body["requeued"], json!(1));
    assert_eq!(requeued.body["not_found"], json!([9]));
    let queued: Vec<String> = conn.lrange(keys().queue(), 0, -1).expect("LRANGE");
    assert_eq!(queued.len(), 1);
    let message: Value = serde_json::from_str(&queued[0]).expect("a message");
    assert_eq!(message["seq"], json!(2));
    // The delivery count starts again (no count is a first delivery).
    assert_eq!(message["deliveries"].as_u64().unwrap_or(0), 0, "{message}");

    let neither = dashboard.post("/api/dead/requeue", Some(&json!({})));
    assert_eq!(neither.status, 400, "{}", neither.text);

    // Purge deletes the oldest it was told of; one that arrives after the
    // page counted is kept.
    let _: () = conn.lpush(keys().dead(), "arrived later").expect("LPUSH");
    let purged = dashboard.post("/api/dead/purge", Some(&json!({"count": 3})));
    assert_eq!(purged.status, 200, "{}", purged.text);
    assert_eq!(purged.body["deleted"], json!(3));
    let left: Vec<String> = conn.lrange(keys().dead(), 0, -1).expect("LRANGE");
    assert_eq!(left, vec!["arrived later".to_string()]);
    let foreign = dashboard.get("/api/dead").body;
    assert_eq!(
        foreign["items"][0]["raw"],
        json!("arrived later"),
        "{foreign}"
    );
}

#[test]
fn a_bad_listen_address_or_a_taken_port_is_one_line_and_an_open_one_without_token_warns() {
    let server = RedisServer::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("an address").port();
    let out = run_app(
        &server,
        &["dashboard", "--listen", &format!("127.0.0.1:{port}")],
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("cannot listen on --listen"), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "{said}");

    let out = run_app(&server, &["dashboard", "--listen", "nowhere"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("--listen"), "{said}");

    let mut open = Dashboard::start_with(server.dir.path(), &server.app_args(), None, "0.0.0.0");
    let started = Instant::now();
    wait_until("the warning", Duration::from_secs(5), || {
        open.log_text().contains("without --token")
    });
    assert!(started.elapsed() < Duration::from_secs(5));
    // SIGTERM stops it at once, with 0.
    send_signal(open.child.id(), "TERM");
    let end = Instant::now() + Duration::from_secs(5);
    let code = loop {
        if let Ok(Some(status)) = open.child.try_wait() {
            break status.code();
        }
        assert!(Instant::now() < end, "the dashboard did not stop");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(code, Some(0), "{}", open.log_text());
}
