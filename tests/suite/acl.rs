//! The README's least-privilege ACL line is enough: copies, `get-errors`
//! and `status` run under a user made by exactly that line, read from the
//! README, and every message is processed once.

use std::time::Duration;
use testkit::*;

/// The `ACL SETUSER` line of the README, as its words.
fn readme_acl_line() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let line = readme
        .lines()
        .find(|l| l.starts_with("ACL SETUSER redis-ql "))
        .expect("the README has the ACL line");
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn copies_run_under_the_readme_least_privilege_user() {
    let _serial = serial();
    let server = RedisServer::start();
    let words = readme_acl_line();
    let mut setuser = redis::cmd(&words[0]);
    for word in &words[1..] {
        setuser.arg(word);
    }
    let _: () = setuser
        .query(&mut server.conn())
        .expect("the README's ACL line");
    let user = ["--user", "redis-ql", "--pass", "s3cret"];
    let args = [&user[..], &["--interval-ms", "50"]].concat();
    let mut copies = start_copies(&server, 2, &args);
    wait_generated(&server, 20, Duration::from_secs(15));
    let mut status = std::process::Command::new(app_binary());
    status
        .args(server.app_args())
        .args(user)
        .args(["status", "--json"]);
    let out = status.output().expect("status runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for copy in &copies {
        assert!(
            !copy.log_text().contains("NOPERM"),
            "a command the line does not allow:\n{}",
            copy.log_text()
        );
    }
    stop_all(&server, &mut copies);
    let mut get_errors = std::process::Command::new(app_binary());
    get_errors
        .args(server.app_args())
        .args(user)
        .args(["get-errors", "--json"]);
    let out = get_errors.output().expect("get-errors runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<Record> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a record"))
        .collect();
    audit_exactly_once(&server, &records);
}
