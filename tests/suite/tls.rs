//! TLS (docs/SPEC.md §6) against a real `redis-server` that speaks only
//! TLS, with certificates the test makes: copies over server-only and
//! mutual TLS, and each certificate problem as one line and exit 1. The
//! whole process, failure and chaos suites also run over mutual TLS in CI
//! (`TEST_TLS=mutual`).

use std::process::{Command, Output};
use std::time::Duration;
use testkit::*;

fn app(server: &RedisServer, args: &[&str]) -> Output {
    Command::new(app_binary())
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(args)
        .output()
        .expect("app runs")
}

fn one_line_error(out: &Output, code: i32, mentions: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for m in mentions {
        assert!(err.contains(m), "{err:?} should mention {m:?}");
    }
}

#[test]
fn copies_over_mutual_tls_process_each_message_once_on_two_named_connections() {
    let _serial = serial();
    let Some(server) = RedisServer::start_tls(Tls::Mutual) else {
        return;
    };
    let mut copies = start_copies(&server, 2, &["--interval-ms", "50"]);
    wait_generated(&server, 20, Duration::from_secs(15));
    wait_until(
        "each copy's two connections",
        Duration::from_secs(10),
        || {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query(&mut server.conn())
                .unwrap_or_default();
            list.lines().filter(|l| l.contains("name=app:")).count() == 4
        },
    );
    stop_all(&server, &mut copies);
    audit_exactly_once(&server, &get_errors(&server));
}

#[test]
fn a_rediss_url_and_the_system_roots_or_insecure() {
    let Some(server) = RedisServer::start_tls(Tls::ServerOnly) else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{}/", server.port);
    let ca = server.file("ca.crt");
    let out = Command::new(app_binary())
        .args(["--url", &url, "--tls-ca", &ca, "status", "--json"])
        .output()
        .expect("app runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The test's CA is in no system store: refused, unless told not to check.
    one_line_error(
        &Command::new(app_binary())
            .args(["--url", &url, "status"])
            .output()
            .expect("app runs"),
        1,
        &["TLS", &format!("127.0.0.1:{}", server.port)],
    );
    let out = app(&server, &["--tls-insecure", "status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-insecure"),
        "the insecure mode is logged"
    );
}

#[test]
fn each_certificate_problem_is_one_line() {
    let Some(server) = RedisServer::start_tls(Tls::Mutual) else {
        return;
    };
    let address = format!("127.0.0.1:{}", server.port);
    let (ca, other_ca) = (server.file("ca.crt"), server.file("other-ca.crt"));
    let (cert, key) = (server.file("client.crt"), server.file("client.key"));
    // A CA that did not sign the server's certificate.
    for command in ["status", "get-errors"] {
        one_line_error(
            &app(
                &server,
                &[
                    "--tls-ca",
                    &other_ca,
                    "--tls-cert",
                    &cert,
                    "--tls-key",
                    &key,
                    command,
                ],
            ),
            1,
            &["TLS", &address, "--tls-ca"],
        );
    }
    // No client certificate for a server that asks for one.
    one_line_error(&app(&server, &["--tls-ca", &ca, "status"]), 1, &[&address]);
    // Plain TCP to a TLS port.
    one_line_error(&app(&server, &["status"]), 1, &[&address]);
    // Files that are missing, or not what they should be: bad usage.
    one_line_error(
        &app(&server, &["--tls-ca", "/nonexistent/ca.crt", "status"]),
        2,
        &["--tls-ca", "/nonexistent/ca.crt"],
    );
    one_line_error(
        &app(&server, &["--tls-cert", &cert, "status"]),
        2,
        &["--tls-key"],
    );
    one_line_error(
        &app(&server, &["--tls-ca", &key, "status"]),
        2,
        &["--tls-ca"],
    );
    // All of it right.
    let out = app(
        &server,
        &[
            "--tls-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "status",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
