//! The dashboard's page in a real browser (headless Chromium from Debian's
//! packages, through chromedriver): what a person sees, and that text from
//! Redis can never become markup.
//!
//! The screenshot in the README is taken by `readme_screenshot` (ignored:
//! `cargo test --test suite -- --ignored browser::readme_screenshot`).

use redis::Commands;
use serde_json::json;
use std::time::{Duration, Instant};
use testkit::browser::Browser;
use testkit::*;

/// Console entries at the level of an error (Chromium says SEVERE).
fn console_errors(browser: &Browser) -> Vec<String> {
    browser
        .console()
        .into_iter()
        .filter(|(level, _)| level == "SEVERE")
        .map(|(_, message)| message)
        .collect()
}

fn wait_text(
    browser: &Browser,
    css: &str,
    what: &str,
    deadline: Duration,
    ok: impl Fn(&str) -> bool,
) -> String {
    let mut last = None;
    wait_until(what, deadline, || {
        last = browser.text(css);
        last.as_deref().is_some_and(&ok)
    });
    last.unwrap_or_default()
}

/// Opens the dashboard's page and waits until it shows live data.
fn open_live(browser: &Browser, dashboard: &Dashboard) {
    browser.goto(&dashboard.url("/"));
    wait_text(
        browser,
        "#connection",
        "the page is live",
        Duration::from_secs(10),
        |t| t == "live",
    );
}

fn number(text: &str) -> f64 {
    text.trim().parse().unwrap_or(-1.0)
}

#[test]
fn the_page_shows_the_cluster_live_and_a_new_generator_within_3_s_of_a_kill() {
    let _serial = serial();
    let server = RedisServer::start();
    let dashboard = Dashboard::start(&server, None);
    let browser = Browser::start();
    open_live(&browser, &dashboard);
    assert!(browser.visible("#generator-none"), "no generator yet");
    assert_eq!(browser.text("#rate-processed").as_deref(), Some("0"));
    // Started without --token: it says so, and its actions are off.
    assert!(browser.visible("#read-only"));
    assert_eq!(
        browser.eval("return document.getElementById('take-errors').disabled"),
        json!(true)
    );

    let mut copies = start_copies(&server, 3, &["--interval-ms", "20"]);
    let first = wait_generator(&server, None);
    let holder = status(&server)["generator"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    wait_text(
        &browser,
        "#generator-id",
        "the generator's id",
        Duration::from_secs(5),
        |t| t == holder,
    );
    // The rate rises from 0 to about the generator's 50 a second.
    wait_text(
        &browser,
        "#rate-processed",
        "a processed rate above 20/s",
        Duration::from_secs(10),
        |t| number(t) > 20.0,
    );
    wait_until("a row per copy", Duration::from_secs(5), || {
        browser.eval("return document.querySelectorAll('#copies tbody tr').length") == json!(3)
    });
    let errors = console_errors(&browser);
    assert!(errors.is_empty(), "console errors: {errors:?}");
    let shot = browser.screenshot();
    assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");

    // kill -9 of the generator: the page names another within 3 s.
    let generator = copies
        .iter_mut()
        .find(|c| u64::from(c.pid()) == first)
        .expect("the generator is one of ours");
    let killed = Instant::now();
    generator.kill9();
    let next = wait_text(
        &browser,
        "#generator-id",
        "another generator shown",
        Duration::from_secs(10),
        |t| !t.is_empty() && t != holder,
    );
    let shown_after = killed.elapsed();
    eprintln!("kill -9 of the generator to the new one on the page: {shown_after:?}");
    assert!(shown_after <= Duration::from_secs(3), "{shown_after:?}");
    assert_eq!(
        status(&server)["generator"]["id"].as_str(),
        Some(next.as_str()),
        "the page shows who holds the lease"
    );
    // The killed copy is marked dead once its heartbeat expires, until a
    // janitor has returned its messages and removed it (a second at most,
    // which a page refreshed every second may not see: the hostile test
    // checks the marking on a copy that stays dead).
    let dead_row = format!(
        "return document.querySelector('#copies tr[data-copy=\"{holder}\"]')?.className ?? 'gone'"
    );
    wait_until(
        "the killed copy marked dead or gone",
        Duration::from_secs(15),
        || {
            let class = browser.eval(&dead_row);
            class == json!("dead") || class == json!("gone")
        },
    );
    let errors = console_errors(&browser);
    assert!(errors.is_empty(), "console errors: {errors:?}");

    stop_all(&server, &mut copies);
    let records = get_errors(&server);
    audit_exactly_once(&server, &records);
}

#[test]
fn hostile_text_stays_text_and_actions_need_the_token() {
    let server = RedisServer::start();
    let dashboard = Dashboard::start(&server, Some("s3cret"));
    let mut conn = server.conn();
    let hostile =
        "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>\u{202e}gnp.exe";
    let error = json!({
        "seq": 41, "epoch": 1, "producer": "<b id=\"pwned\">p</b>", "text": hostile,
        "generated_at_ms": 1, "processor": "<svg onload=\"window.pwned=3\">", "detected_at_ms": 2,
        "deliveries": 1,
    });
    let _: () = conn
        .lpush(keys().errors(), error.to_string())
        .expect("LPUSH");
    let item = json!({"seq": 7, "epoch": 1, "producer": "p", "text": hostile, "generated_at_ms": 1, "deliveries": 5}).to_string();
    let dead = json!({"reason": "delivered 5 times<iframe>", "item": item, "bytes": item.len(), "truncated": false});
    let _: () = conn.lpush(keys().dead(), dead.to_string()).expect("LPUSH");
    // A copy's description with markup in it, as a hostile writer could leave.
    let _: () = conn
        .hset(keys().registry(), "<i>x</i>", json!({"name": "<img src=x onerror=\"window.pwned=4\">", "host": "<u>h</u>", "role": "processor", "last_error": "<script>window.pwned=5</script>"}).to_string())
        .expect("HSET");

    let browser = Browser::start();
    browser.goto(&dashboard.url("/"));
    let shown = wait_text(
        &browser,
        "#errors tr[data-seq=\"41\"] td.text",
        "the hostile error",
        Duration::from_secs(10),
        |t| !t.is_empty(),
    );
    // As text, with the right-to-left override shown rather than obeyed.
    assert_eq!(shown, hostile.replace('\u{202e}', "\\u{202e}"));
    wait_text(
        &browser,
        "#dead tr[data-seq=\"7\"] td.text",
        "the hostile dead letter",
        Duration::from_secs(10),
        |t| t.starts_with("<img"),
    );
    wait_until("the hostile copy row", Duration::from_secs(10), || {
        browser.eval("return document.querySelectorAll('#copies tbody tr').length") == json!(1)
    });
    // It has no heartbeat: marked dead, in red, with DEAD for its role.
    assert_eq!(
        browser.eval("const r = document.querySelector('#copies tbody tr'); return [r.className, r.cells[1].textContent, r.cells[0].textContent]"),
        json!(["dead", "DEAD", "<i>x</i>"])
    );
    let injected = browser.eval(
        "const made = [...document.querySelectorAll('#errors tbody *, #dead tbody *, #copies tbody *, #generator *')].map((e) => e.tagName).filter((t) => !['TR', 'TD', 'BUTTON', 'H2', 'P', 'DL', 'DT', 'DD'].includes(t)); return [made, document.getElementById('pwned') === null, window.pwned === undefined]",
    );
    assert_eq!(
        injected,
        json!([[], true, true]),
        "no element came from Redis's text"
    );
    let errors = console_errors(&browser);
    assert!(errors.is_empty(), "console errors: {errors:?}");

    // Requeue without the token: refused, and nothing moves.
    browser.click("button[data-requeue=\"7\"]");
    wait_text(
        &browser,
        "#notice",
        "the refusal",
        Duration::from_secs(5),
        |t| t.starts_with("refused"),
    );
    let dead_left: u64 = conn.llen(keys().dead()).expect("LLEN");
    let queued: u64 = conn.llen(keys().queue()).expect("LLEN");
    assert_eq!((dead_left, queued), (1, 0));
    // The refusal's 401 is the one console error, and the only one.
    let errors = console_errors(&browser);
    assert!(
        errors.iter().all(|e| e.contains("401")),
        "console errors: {errors:?}"
    );

    // With the token: it works.
    browser.type_into("#token", "s3cret");
    browser.click("#token-save");
    browser.click("button[data-requeue=\"7\"]");
    wait_text(
        &browser,
        "#notice",
        "the requeue",
        Duration::from_secs(5),
        |t| t == "requeued 1 messages",
    );
    let dead_left: u64 = conn.llen(keys().dead()).expect("LLEN");
    let queue: Vec<String> = conn.lrange(keys().queue(), 0, -1).expect("LRANGE");
    assert_eq!(dead_left, 0);
    assert_eq!(queue.len(), 1);
    assert!(queue[0].contains("\"seq\":7"), "{queue:?}");

    // Take and download: the file holds the error, and Redis no longer does.
    browser.click("#take-errors");
    wait_text(
        &browser,
        "#notice",
        "the download",
        Duration::from_secs(10),
        |t| t.starts_with("took 1 errors"),
    );
    let mut saved = String::new();
    wait_until("the downloaded file", Duration::from_secs(10), || {
        let files: Vec<_> = std::fs::read_dir(browser.downloads())
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        saved = files
            .iter()
            .find(|p| p.extension().is_some_and(|x| x == "ndjson"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        !saved.is_empty()
    });
    let record: serde_json::Value = serde_json::from_str(saved.trim()).expect("one JSON line");
    assert_eq!(record["seq"], json!(41));
    assert_eq!(record["text"], json!(hostile));
    let left: u64 = conn.llen(keys().errors()).expect("LLEN");
    assert_eq!(left, 0, "the downloaded error was forgotten");
    let errors = console_errors(&browser);
    assert!(errors.is_empty(), "console errors: {errors:?}");
}

/// The README's picture: three copies at the default error rate for half a
/// minute, a kill -9 of the generator half-way, a dead letter; written to
/// docs/dashboard.png.
#[test]
#[ignore]
fn readme_screenshot() {
    let _serial = serial();
    let server = RedisServer::start();
    let dashboard = Dashboard::start(&server, Some("a-long-random-token"));
    let mut copies: Vec<Copy> = (0..3)
        .map(|i| {
            Copy::start(
                &server,
                &format!("web-{i}"),
                &["--interval-ms", "25", "--concurrency", "4"],
            )
        })
        .collect();
    let first = wait_generator(&server, None);
    std::thread::sleep(Duration::from_secs(20));
    if let Some(generator) = copies.iter_mut().find(|c| u64::from(c.pid()) == first) {
        generator.kill9();
    }
    let item = json!({"seq": 12, "epoch": 1, "producer": "web-0-3f2a9c1d", "text": "Lorem ipsum dolor sit amet.", "generated_at_ms": 1, "deliveries": 5}).to_string();
    let dead = json!({"reason": "delivered 5 times without an ack", "item": item, "bytes": item.len(), "truncated": false});
    let _: () = server
        .conn()
        .lpush(keys().dead(), dead.to_string())
        .expect("LPUSH");
    std::thread::sleep(Duration::from_secs(25));
    let browser = Browser::start();
    open_live(&browser, &dashboard);
    wait_until("the chart drawn", Duration::from_secs(10), || {
        browser
            .eval("return Number(document.getElementById('chart').dataset.points)")
            .as_u64()
            > Some(30)
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(console_errors(&browser).is_empty());
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
    std::fs::write(docs, browser.screenshot()).expect("the screenshot is written");
    stop_all(&server, &mut copies);
}
