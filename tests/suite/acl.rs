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

/// A user whose ACL lacks one command a script writes with is refused
/// before the script's first write (Redis 7 and later can tell): a claim
/// neither copies a message into the processing list nor loses one.
#[test]
fn a_script_refused_a_command_by_the_acl_changes_nothing() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut conn)
        .expect("INFO");
    let major: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .and_then(|v| v.split('.').next()?.trim().parse().ok())
        .unwrap_or(0);
    if major < 7 {
        eprintln!("skipped: Redis {major} cannot check an ACL from a script");
        return;
    }
    let words: Vec<String> = readme_acl_line()
        .into_iter()
        .filter(|w| w != "+ltrim")
        .collect();
    let mut setuser = redis::cmd(&words[0]);
    for word in &words[1..] {
        setuser.arg(word);
    }
    let _: () = setuser.query(&mut conn).expect("ACL SETUSER");
    let _: () = redis::cmd("RPUSH")
        .arg(keys().queue())
        .arg("{\"seq\":2}")
        .arg("{\"seq\":1}")
        .query(&mut conn)
        .expect("RPUSH");
    let _: () = redis::cmd("SET")
        .arg(keys().heartbeat("c"))
        .arg("c")
        .query(&mut conn)
        .expect("SET");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let refused = runtime.block_on(async {
        let settings = redis_settings(&format!(
            "redis://redis-ql:s3cret@127.0.0.1:{}/",
            server.port
        ));
        let redis = redis_ql::connection::connect(&settings, "acl-test", Duration::from_secs(2))
            .await
            .expect("connects as the user");
        redis_ql::scripts::claim(&redis, &keys(), "c", 10, 1 << 20).await
    });
    let err = refused.expect_err("the claim is refused");
    assert!(err.to_string().contains("may not run ltrim"), "{err}");
    let queue: Vec<String> = redis::cmd("LRANGE")
        .arg(keys().queue())
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .expect("LRANGE");
    let processing: u64 = redis::cmd("LLEN")
        .arg(keys().processing("c"))
        .query(&mut conn)
        .expect("LLEN");
    assert_eq!((queue.len(), processing), (2, 0), "{queue:?}");
}
