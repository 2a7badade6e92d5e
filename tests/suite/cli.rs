//! The command line of the real binary: settings precedence, validation,
//! exit codes and the one-line errors for an unreachable or locked Redis.

use std::process::{Command, Output};
use std::time::{Duration, Instant};
use testkit::*;

fn app(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> Output {
    let mut cmd = Command::new(app_binary());
    cmd.args(args).current_dir(dir);
    for var in [
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_PASS",
        "REDIS_DB",
        "REDIS_USER",
        "REDIS_URL",
        "APP_NAMESPACE",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("app runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn one_line_usage_error(out: &Output, mentions: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "exit 2 for bad usage: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for m in mentions {
        assert!(err.contains(m), "{err:?} should mention {m:?}");
    }
}

/// A closed port: bound then released, nothing listens there.
fn closed_port() -> String {
    free_port().to_string()
}

#[test]
fn settings_come_from_cli_then_env_then_file_then_defaults() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = server.port.to_string();
    let dead = closed_port();
    let file = dir.path().join("app.toml");
    std::fs::write(
        &file,
        format!("[redis]\nhost = \"127.0.0.1\"\nport = {dead}\n"),
    )
    .expect("write");
    let config = path_str(&file);

    // The file beats the default (6379 is not our server; the file's port is dead).
    let out = app(&["--config", config, "status", "--json"], &[], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{dead}")),
        "{}",
        stderr(&out)
    );
    // The environment beats the file.
    let out = app(
        &["--config", config, "status", "--json"],
        &[("REDIS_PORT", &port)],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The command line beats the environment.
    let out = app(
        &["--config", config, "-p", &dead, "status"],
        &[("REDIS_PORT", &port)],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let out = app(
        &["--config", config, "--port", &port, "status"],
        &[("REDIS_PORT", &dead)],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // A dotenv file is read before anything else, bare --env meaning .env.
    std::fs::write(
        dir.path().join(".env"),
        format!("REDIS_PORT={port}\nREDIS_HOST=127.0.0.1\n"),
    )
    .expect("write");
    let out = app(&["--env", "status"], &[], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(dir.path().join("other.env"), format!("REDIS_PORT={port}\n")).expect("write");
    let out = app(
        &["--env=other.env", "-h", "127.0.0.1", "status"],
        &[],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = app(&["--env", "missing.env", "status"], &[], dir.path());
    one_line_usage_error(&out, &["missing.env"]);
}

#[test]
fn namespaces_never_see_each_other() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let _: () = redis::cmd("LPUSH")
        .arg("{other}:errors")
        .arg("x")
        .query(&mut conn)
        .expect("push");
    let port = server.port.to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = app(
        &["-h", "127.0.0.1", "-p", &port, "status", "--json"],
        &[],
        dir.path(),
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["errors"], 0);
    let out = app(
        &["-h", "127.0.0.1", "-p", &port, "status", "--json"],
        &[("APP_NAMESPACE", "other")],
        dir.path(),
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["errors"], 1);
}

#[test]
fn every_bad_value_is_one_line_naming_the_option_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let cases: &[(&[&str], &[&str])] = &[
        (&["start", "--concurrency", "0"], &["--concurrency", "0"]),
        (&["start", "--error-rate", "1.5"], &["--error-rate", "1.5"]),
        (&["start", "--error-rate", "-0.1"], &["--error-rate"]),
        (&["start", "--lease-ms", "10"], &["--lease-ms", "10"]),
        (
            &["start", "--generator", "nope"],
            &["--generator", "lipsum, fake, uuid"],
        ),
        (&["start", "--role", "boss"], &["--role", "auto, processor"]),
        (&["start", "--max-deliveries", "0"], &["--max-deliveries"]),
        (&["start", "--name", "two words"], &["--name"]),
        (
            &["start", "--interval-ms", "soon"],
            &["--interval-ms", "soon"],
        ),
        (&["--port", "70000", "status"], &["--port", "70000"]),
        (&["--namespace", "a{b}", "status"], &["--namespace"]),
        (&["--url", "http://x", "status"], &["--url"]),
        (&["start", "--bogus"], &["--bogus"]),
        (&["frobnicate"], &["frobnicate"]),
    ];
    for (args, mentions) in cases {
        let out = app(args, &[], d);
        one_line_usage_error(&out, mentions);
    }
    let out = app(&["status"], &[("REDIS_PORT", "abc")], d);
    one_line_usage_error(&out, &["--port", "abc"]);
}

#[test]
fn a_port_is_checked_by_one_rule_wherever_it_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let cases: &[(&[&str], &str)] = &[
        (&["--port", "0", "status"], "--port"),
        (&["--port", "65536", "status"], "--port"),
        (&["--cluster", "--host", "127.0.0.1:0", "status"], "--host"),
        (&["--sentinel", "127.0.0.1:70000", "status"], "--sentinel"),
        (&["--url", "redis://127.0.0.1:0", "status"], "--url"),
        (&["--url", "redis://127.0.0.1:99999", "status"], "--url"),
        (&["--url", "rediss://u:p@[::1]:x/0", "status"], "--url"),
        (
            &["--url", "redis+sentinel://h:0/mymaster", "status"],
            "--url",
        ),
    ];
    for (args, option) in cases {
        let out = app(args, &[], d);
        one_line_usage_error(&out, &[option, "a port is 1 to 65535"]);
        assert!(!stderr(&out).contains("u:p"), "never repeats a login");
    }
}

#[test]
fn role_and_generator_list_their_values_in_the_help() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = app(&["start", "--help"], &[], dir.path());
    let help = String::from_utf8_lossy(&out.stdout);
    for listed in [
        "[possible values: auto, processor]",
        "[possible values: lipsum, fake, uuid]",
    ] {
        assert!(help.contains(listed), "{listed} in {help}");
    }
}

#[test]
fn a_bad_config_file_names_the_key_or_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let write = |name: &str, text: &str| {
        let path = d.join(name);
        std::fs::write(&path, text).expect("write");
        path.to_string_lossy().into_owned()
    };
    let unknown = write(
        "unknown.toml",
        "[start]\nconcurrency = 2\ncolour = \"blue\"\n",
    );
    one_line_usage_error(
        &app(&["--config", &unknown, "status"], &[], d),
        &["unknown.toml", "line 3", "colour"],
    );
    let broken = write("broken.toml", "[redis\nport = 1\n");
    one_line_usage_error(
        &app(&["--config", &broken, "status"], &[], d),
        &["broken.toml", "line 1"],
    );
    let wrong_type = write("type.toml", "[redis]\nport = \"six\"\n");
    one_line_usage_error(
        &app(&["--config", &wrong_type, "status"], &[], d),
        &["type.toml", "line 2"],
    );
    let bad_value = write("value.toml", "[start]\nerror-rate = 7\n");
    one_line_usage_error(
        &app(&["--config", &bad_value, "start"], &[], d),
        &["--error-rate", "7"],
    );
    one_line_usage_error(
        &app(&["--config", "/nonexistent.toml", "status"], &[], d),
        &["/nonexistent.toml"],
    );
}

#[test]
fn help_version_and_dash_h_as_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = app(&["--help"], &[], dir.path());
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("get-errors") && help.contains("--host"),
        "{help}"
    );
    let out = app(&["start", "--help"], &[], dir.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--max-deliveries"));
    let out = app(&["--version"], &[], dir.path());
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let server = RedisServer::start();
    let out = app(
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "getErrors",
        ],
        &[],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_unreachable_redis_fails_fast_with_host_and_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = closed_port();
    for command in ["status", "get-errors"] {
        let started = Instant::now();
        let out = app(&["-h", "127.0.0.1", "-p", &port, command], &[], dir.path());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{command} must fail fast"
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("127.0.0.1:{port}")) && err.contains("redis-server is running"),
            "{err}"
        );
    }
}

#[test]
fn a_wrong_password_says_what_to_check() {
    let server = RedisServer::start_with(&["--requirepass", "right-one"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = server.port.to_string();
    for pass in [None, Some("wrong-one")] {
        let mut args = vec!["-h", "127.0.0.1", "-p", &port];
        if let Some(pass) = pass {
            args.extend(["--pass", pass]);
        }
        args.push("status");
        let out = app(&args, &[], dir.path());
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("127.0.0.1:{port}")) && err.contains("--pass"),
            "{err}"
        );
        assert!(
            !err.contains("wrong-one"),
            "the password is never echoed: {err}"
        );
    }
    let out = app(
        &["-h", "127.0.0.1", "-p", &port, "status"],
        &[("REDIS_PASS", "right-one")],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // `start` does not retry a refused login forever.
    let out = app(
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "--pass",
            "wrong-one",
            "start",
        ],
        &[],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn start_waits_for_redis_that_comes_up_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let log = dir.path().join("copy.log");
    let mut child = Command::new(app_binary())
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "start",
            "--error-rate",
            "1",
        ])
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start");
    wait_until(
        "the copy to say it is waiting",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("retrying")
        },
    );
    let server = redis_on(port);
    wait_until("the first message", Duration::from_secs(15), || {
        generated(&server) >= 1
    });
    let _ = child.kill();
    let _ = child.wait();
}

fn redis_on(port: u16) -> RedisServer {
    RedisServer::start_on(port)
}

#[test]
fn logs_as_json_lines_and_an_invalid_rust_log_is_bad_usage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = app(&["status"], &[("RUST_LOG", "redis_ql=verbose")], dir.path());
    one_line_usage_error(&out, &["RUST_LOG", "verbose"]);
    let server = RedisServer::start();
    let copy = Copy::start(&server, "json", &["--log-format", "json"]);
    wait_until("the copy to start", Duration::from_secs(10), || {
        copy.log_text().contains("copy started")
    });
    let log = copy.log_text();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            object["level"].is_string() && object["fields"].is_object(),
            "{line}"
        );
    }
}

#[test]
fn a_bare_app_shows_the_help_and_a_typo_gets_clap_s_tip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = app(&[], &[], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let help = String::from_utf8_lossy(&out.stderr);
    assert!(
        help.contains("Usage:") && help.contains("get-errors"),
        "{help}"
    );
    one_line_usage_error(
        &app(&["start", "--concurency", "2"], &[], dir.path()),
        &["--concurency", "similar argument", "--concurrency"],
    );
}

#[test]
fn completions_for_every_shell_list_commands_options_and_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = app(&["completions", shell], &[], dir.path());
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["requeue", "role", "processor", "lipsum", "sentinel-master"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    // The bash script is one bash accepts.
    let script = dir.path().join("app.bash");
    std::fs::write(
        &script,
        app(&["completions", "bash"], &[], dir.path()).stdout,
    )
    .expect("write");
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("bash runs");
    assert!(check.success());
    one_line_usage_error(&app(&["completions", "tcsh"], &[], dir.path()), &["tcsh"]);
}
