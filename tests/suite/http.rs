//! `app start --http`: /metrics, /healthz and /readyz scraped with a real
//! HTTP client from real copies, while Redis is up, down and back.

use std::time::Duration;
use testkit::*;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into()
}

/// (status, body) of GET `path` on `port`; None when nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut response = agent()
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().ok()?;
    Some((status, body))
}

/// The value of the sample `name` (with its labels, as written) in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn scrape(port: u16) -> String {
    let (status, body) = get(port, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    assert!(body.ends_with("# EOF\n"), "{body}");
    body
}

fn wait_status(port: u16, path: &str, wanted: u16, deadline: Duration) -> String {
    let mut last = None;
    wait_until(&format!("{path} answers {wanted}"), deadline, || {
        last = get(port, path);
        last.as_ref().is_some_and(|(status, _)| *status == wanted)
    });
    last.map(|(_, body)| body).unwrap_or_default()
}

#[test]
fn metrics_count_what_redis_counts_and_probes_follow_redis() {
    let _serial = serial();
    let mut server = RedisServer::start();
    let (g_port, p_port) = (free_port(), free_port());
    let mut generator = Copy::start(
        &server,
        "gen",
        &[
            "--http",
            &format!("127.0.0.1:{g_port}"),
            "--interval-ms",
            "20",
        ],
    );
    wait_status(g_port, "/readyz", 200, Duration::from_secs(10));
    wait_generator(&server, None);
    let mut processor = Copy::start(
        &server,
        "proc",
        &[
            "--http",
            &format!("127.0.0.1:{p_port}"),
            "--role",
            "processor",
            "--error-rate",
            "0.5",
        ],
    );
    wait_status(p_port, "/readyz", 200, Duration::from_secs(10));
    assert_eq!(get(p_port, "/healthz").map(|(s, _)| s), Some(200));
    wait_generated(&server, 40, Duration::from_secs(20));

    let g = scrape(g_port);
    assert_eq!(
        sample(&g, "redisql_role{role=\"generator\"}"),
        Some(1.0),
        "{g}"
    );
    assert!(sample(&g, "redisql_epoch").is_some_and(|e| e >= 1.0), "{g}");
    assert!(
        sample(&g, "redisql_generated_total").is_some_and(|n| n >= 40.0),
        "{g}"
    );
    let p = scrape(p_port);
    assert_eq!(
        sample(&p, "redisql_role{role=\"processor\"}"),
        Some(1.0),
        "{p}"
    );
    assert!(
        sample(&p, "redisql_processed_total").is_some_and(|n| n > 0.0),
        "{p}"
    );

    // Generation stops; once the queue is empty the processor's counters
    // are exactly Redis's, and its latency histogram saw every message.
    generator.signal("TERM");
    assert_eq!(generator.wait_exit(Duration::from_secs(15)), Some(0));
    wait_queue_empty(&server, Duration::from_secs(10));
    let p = scrape(p_port);
    let processed = counter(&server, "processed") as f64;
    assert_eq!(
        sample(&p, "redisql_processed_total"),
        Some(processed),
        "{p}"
    );
    assert_eq!(
        sample(&p, "redisql_errors_total"),
        Some(counter(&server, "errors-total") as f64),
        "{p}"
    );
    assert_eq!(
        sample(&p, "redisql_processing_latency_seconds_count"),
        Some(processed)
    );
    assert_eq!(sample(&p, "redisql_in_flight"), Some(0.0));

    // Redis goes away: not ready (the process itself stays healthy); back:
    // ready again, with the reconnect counted.
    server.kill9();
    let why = wait_status(p_port, "/readyz", 503, Duration::from_secs(6));
    assert!(why.starts_with("not ready:"), "{why}");
    assert_eq!(get(p_port, "/healthz").map(|(s, _)| s), Some(200));
    server.restart();
    wait_status(p_port, "/readyz", 200, Duration::from_secs(10));
    assert!(sample(&scrape(p_port), "redisql_reconnects_total").is_some_and(|n| n >= 1.0));

    processor.signal("TERM");
    assert_eq!(processor.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(
        get(p_port, "/healthz").is_none(),
        "the server ends with the copy"
    );
}

#[test]
fn probes_answer_before_redis_does_and_a_taken_port_fails_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis_port, http_port) = (free_port(), free_port());
    let connect = vec!["--port".to_string(), redis_port.to_string()];
    let http = format!("127.0.0.1:{http_port}");
    let waiting = Copy::start_in(dir.path(), &connect, "waiting", &["--http", &http]);
    let why = wait_status(http_port, "/readyz", 503, Duration::from_secs(10));
    assert!(why.contains("connecting to Redis"), "{why}");
    assert_eq!(get(http_port, "/healthz").map(|(s, _)| s), Some(200));
    assert_eq!(get(http_port, "/metrics").map(|(s, _)| s), Some(200));

    // A second copy on the same address: one line, exit 1, at once.
    let out = std::process::Command::new(app_binary())
        .args(["--port", &redis_port.to_string(), "start", "--http", &http])
        .output()
        .expect("app runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot listen on --http"), "{err}");
    drop(waiting);

    let out = std::process::Command::new(app_binary())
        .args(["start", "--http", "localhost"])
        .output()
        .expect("app runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--http"));
}
