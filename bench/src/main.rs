//! `redis-ql-bench`: redis-ql measured with real processes against a
//! private Redis.
//!
//! ```text
//! cargo build --release
//! ./target/release/redis-ql-bench                       # 1 generator + 2 processors x 64
//! ./target/release/redis-ql-bench --processors 4 --concurrency 16 --seconds 10 --json
//! ./target/release/redis-ql-bench --sweep --svg bench/sweep.svg --csv bench/sweep.csv
//! ./target/release/redis-ql-bench --idle 50,100,200
//! ./target/release/redis-ql-bench --help                # every option
//! ```
//!
//! Throughput mode: one generator with `--interval-ms 0` and P processor
//! copies with concurrency C; after a warm-up, T seconds are measured:
//! messages per second end to end (acked) and generated, latency from
//! generation to processing (sampled from the error records into an HDR
//! histogram: p50, p99, p99.9, max), commands sent and Redis command
//! executions per message (`INFO commandstats`), Redis CPU seconds per 1000
//! messages (`INFO cpu`), connections per copy (`CLIENT LIST`) and peak RSS
//! per copy (`VmHWM`). `--sweep` runs P in 1, 2, 4, 8 and C in 1, 16, 256;
//! `--svg` draws throughput and p99 latency against P, one line per C, and
//! `--csv` writes one row per run.
//!
//! Idle mode: K copies at the default cadence; Redis commands per second
//! (in all and per copy), Redis CPU %, time to the first message, and the
//! gap in generation after kill -9 of the generator.

use clap::Parser;
use hdrhistogram::Histogram;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use redis::Commands;
use serde::{Serialize, Serializer};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::keys;

/// Commands the copies send themselves; everything else in commandstats
/// runs inside a script.
const SENT: [&str; 12] = [
    "evalsha",
    "eval",
    "script",
    "ping",
    "client",
    "subscribe",
    "mget",
    "hkeys",
    "smembers",
    "lrange",
    "del",
    "hello",
];

/// redis-ql measured with real processes against a private Redis.
///
/// Without --sweep or --idle: one throughput run of one generator and
/// --processors copies of --concurrency.
#[derive(Parser, Debug)]
#[command(name = "redis-ql-bench", version, args_override_self = true)]
struct Options {
    /// Processor copies P beside the generator (throughput mode).
    #[arg(long, value_name = "P", default_value_t = 2)]
    processors: usize,
    /// Messages each processor copy handles at once, C (throughput mode).
    #[arg(long, value_name = "C", default_value_t = 64)]
    concurrency: usize,
    /// Seconds measured in each run, after the warm-up.
    #[arg(long, value_name = "T", default_value_t = 10)]
    seconds: u64,
    /// Seconds of warm-up before measuring (idle mode waits at least 5).
    #[arg(long, value_name = "W", default_value_t = 3)]
    warmup: u64,
    /// The app binary started as the copies [default: `app` beside this binary].
    #[arg(long, value_name = "PATH", default_value_os_t = default_app(), hide_default_value = true)]
    app: PathBuf,
    /// The redis-server binary started as the private Redis (and its replicas).
    #[arg(
        long,
        value_name = "PATH",
        env = "REDIS_SERVER",
        default_value = "redis-server"
    )]
    redis_server: String,
    /// Print each report as one JSON object per line instead of a text line.
    #[arg(long)]
    json: bool,
    /// Redis speaks only TLS; the copies check its certificate.
    #[arg(long)]
    tls: bool,
    /// Replicas started beside Redis, and `--wait-replicas N` for the copies.
    #[arg(long, value_name = "N", default_value_t = 0)]
    wait_replicas: u32,
    /// Run P in 1, 2, 4, 8 and C in 1, 16, 256 (12 throughput runs).
    #[arg(long)]
    sweep: bool,
    /// With --sweep: draw throughput and p99 latency against P, one line per C, to FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// With --sweep: write one CSV row per run to FILE.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Throughput mode: the generator sends at most R messages a second
    /// (`app start --rate R`), for latency below the maximum throughput.
    #[arg(long, value_name = "R", default_value_t = 0)]
    rate: u64,
    /// Drain mode: N messages are queued first (in one step, once the P
    /// processor copies are up), then timed until every one is processed.
    #[arg(long, value_name = "N")]
    prefill: Option<u64>,
    /// Idle mode: for each K, K copies at the default cadence (Redis load,
    /// first message, failover gap).
    #[arg(long, value_name = "K,K,...", value_delimiter = ',', value_parser = count, action = clap::ArgAction::Set)]
    idle: Vec<usize>,
}

/// `app` in the directory of this binary.
fn default_app() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("app")))
        .unwrap_or_else(|| PathBuf::from("app"))
}

/// One K of `--idle`, spaces around it allowed.
fn count(text: &str) -> Result<usize, std::num::ParseIntError> {
    text.trim().parse()
}

fn fail(what: &str) -> ! {
    eprintln!("redis-ql-bench: {what}");
    std::process::exit(1)
}

/// A private Redis and the copies started against it; all killed on drop.
struct Cluster {
    port: u16,
    /// What every copy is given to reach Redis, beyond host and port.
    connect: Vec<String>,
    conn: redis::Connection,
    children: Vec<Child>,
    copies: Vec<Child>,
    app: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(o: &Options) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("tempdir: {e}")));
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| fail(&format!("no free port: {e}")));
        let port_text = port.to_string();
        if o.tls {
            testkit::make_certificates(dir.path());
        }
        let listen_on = |port: &str| -> Vec<String> {
            if o.tls {
                testkit::tls_server_args(port, false)
            } else {
                vec!["--port".to_string(), port.to_string()]
            }
        };
        let spawn = |extra: &[String], dir: &std::path::Path| {
            Command::new(&o.redis_server)
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--maxclients", "10000", "--dir", &dir.to_string_lossy()])
                .args(extra)
                .current_dir(dir)
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| fail(&format!("cannot start {}: {e}", o.redis_server)))
        };
        let mut children = vec![spawn(&listen_on(&port_text), dir.path())];
        let url = if o.tls {
            testkit::install_crypto();
            format!("rediss://127.0.0.1:{port}/#insecure")
        } else {
            format!("redis://127.0.0.1:{port}/")
        };
        let started = Instant::now();
        let mut conn = loop {
            if let Ok(conn) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
                break conn;
            }
            if started.elapsed() > Duration::from_secs(10) {
                fail("redis-server did not answer");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for _ in 0..o.wait_replicas {
            let replica_port = testkit::free_port().to_string();
            let mut args = listen_on(&replica_port);
            args.extend(["--replicaof", "127.0.0.1", &port_text].map(str::to_string));
            children.push(spawn(&args, dir.path()));
        }
        if o.wait_replicas > 0 {
            let started = Instant::now();
            while redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut conn)
                .map(|info| info.matches("state=online").count() < o.wait_replicas as usize)
                .unwrap_or(true)
            {
                if started.elapsed() > Duration::from_secs(20) {
                    fail("the replicas did not come online");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let mut connect = Vec::new();
        if o.tls {
            connect.extend([
                "--tls-ca".to_string(),
                dir.path().join("ca.crt").display().to_string(),
            ]);
        }
        if o.wait_replicas > 0 {
            connect.extend(["--wait-replicas".to_string(), o.wait_replicas.to_string()]);
        }
        Self {
            port,
            connect,
            conn,
            children,
            copies: Vec::new(),
            app: o.app.clone(),
            _dir: dir,
        }
    }

    fn copy(&mut self, name: &str, args: &[&str]) -> u32 {
        let child = Command::new(&self.app)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.connect)
            .args(["start", "--name", name])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot start app: {e}")));
        let pid = child.id();
        self.copies.push(child);
        pid
    }

    fn get(&mut self, key: &str) -> u64 {
        self.conn
            .get::<_, Option<u64>>(key)
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.copies.iter_mut().chain(self.children.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Sample {
    at: Instant,
    processed: u64,
    generated: u64,
    calls: BTreeMap<String, u64>,
    cpu: f64,
}

impl Sample {
    fn take(cluster: &mut Cluster) -> Self {
        let conn = &mut cluster.conn;
        let info = |conn: &mut redis::Connection, section: &str| -> String {
            redis::cmd("INFO")
                .arg(section)
                .query(conn)
                .unwrap_or_default()
        };
        let calls = info(conn, "commandstats")
            .lines()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_string(), calls.parse().ok()?))
            })
            .collect();
        let cpu = info(conn, "cpu")
            .lines()
            .filter_map(|l| {
                l.strip_prefix("used_cpu_sys:")
                    .or_else(|| l.strip_prefix("used_cpu_user:"))
            })
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .sum();
        Sample {
            at: Instant::now(),
            processed: cluster.get(&keys().processed()),
            generated: cluster.get(&keys().seq()),
            calls,
            cpu,
        }
    }

    /// Calls of `name` between `self` and `later`.
    fn delta(&self, later: &Sample, name: &str) -> u64 {
        let get = |s: &Sample| s.calls.get(name).copied().unwrap_or(0);
        get(later).saturating_sub(get(self))
    }

    /// Executions of each command between the samples, per `per` messages.
    fn by_command(&self, later: &Sample, per: u64) -> BTreeMap<String, f64> {
        later
            .calls
            .keys()
            .filter(|name| name.as_str() != "info")
            .map(|name| (name.clone(), self.delta(later, name)))
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| (name, n as f64 / per.max(1) as f64))
            .collect()
    }

    /// (all executions, commands sent by the copies) between the samples,
    /// leaving out this tool's own INFO calls.
    fn commands(&self, later: &Sample) -> (u64, u64) {
        let all: u64 = later.calls.keys().map(|name| self.delta(later, name)).sum();
        let sent = SENT.iter().map(|name| self.delta(later, name)).sum();
        (all.saturating_sub(self.delta(later, "info")), sent)
    }
}

/// A size field (`VmRSS`, `VmHWM`, ...) of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The resident set of a process now, in KiB.
fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM")
}

fn records(cluster: &mut Cluster) -> Vec<Value> {
    let raw: Vec<String> = cluster
        .conn
        .lrange(keys().errors(), 0, -1)
        .unwrap_or_default();
    raw.iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect()
}

/// One generator at full speed and `processors` copies of `concurrency`.
fn throughput(o: &Options, processors: usize, concurrency: usize, seconds: u64) -> Value {
    let mut cluster = Cluster::start(o);
    let rate = o.rate.to_string();
    cluster.copy("gen", &["--interval-ms", "0", "--rate", &rate]);
    let c = concurrency.to_string();
    for p in 0..processors {
        cluster.copy(
            &format!("proc{p}"),
            &["--role", "processor", "--concurrency", &c],
        );
    }
    std::thread::sleep(Duration::from_secs(o.warmup));
    let _: redis::RedisResult<()> = cluster.conn.ltrim(keys().errors(), 1, 0);
    let first = Sample::take(&mut cluster);
    std::thread::sleep(Duration::from_secs(seconds));
    let last = Sample::take(&mut cluster);

    let elapsed = (last.at - first.at).as_secs_f64();
    let processed = last.processed.saturating_sub(first.processed);
    let generated = last.generated.saturating_sub(first.generated);
    let (executions, sent) = first.commands(&last);
    let per_message = |n: u64| {
        if processed == 0 {
            0.0
        } else {
            n as f64 / processed as f64
        }
    };
    let mut latency = latency_histogram();
    for v in records(&mut cluster) {
        if let (Some(detected), Some(generated)) =
            (v["detected_at_ms"].as_u64(), v["generated_at_ms"].as_u64())
        {
            latency.saturating_record(detected.saturating_sub(generated));
        }
    }
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut cluster.conn)
        .unwrap_or_default();
    let mut connections: BTreeMap<String, u64> = BTreeMap::new();
    for id in clients
        .lines()
        .filter_map(|line| line.split(' ').find_map(|kv| kv.strip_prefix("name=app:")))
    {
        *connections.entry(id.to_string()).or_default() += 1;
    }
    let rss = cluster
        .copies
        .iter()
        .map(|c| peak_rss_kib(c.id()))
        .max()
        .unwrap_or(0);
    json!({
        "processors": processors,
        "concurrency": concurrency,
        "rate": o.rate,
        "seconds": elapsed,
        "processed_per_s": processed as f64 / elapsed,
        "generated_per_s": generated as f64 / elapsed,
        "latency_ms": latency_summary(&latency),
        "commands_sent_per_message": per_message(sent),
        "redis_executions_per_message": per_message(executions),
        "executions_per_message_by_command": first.by_command(&last, processed),
        "redis_cpu_s_per_1000": if processed == 0 { 0.0 } else { (last.cpu - first.cpu) * 1000.0 / processed as f64 },
        "connections_per_copy_max": connections.values().copied().max().unwrap_or(0),
        "peak_rss_kib_max": rss,
    })
}

/// An empty latency histogram, in ms: auto-resizing, 3 significant digits
/// (exact below 2048 ms).
fn latency_histogram() -> Histogram<u64> {
    Histogram::new(3).unwrap_or_else(|e| fail(&format!("latency histogram: {e}")))
}

/// The report's `latency_ms`: samples, p50, p99, p99.9 and max; all 0 for none.
fn latency_summary(latency: &Histogram<u64>) -> Value {
    json!({
        "samples": latency.len(),
        "p50": latency.value_at_quantile(0.5),
        "p99": latency.value_at_quantile(0.99),
        "p99_9": latency.value_at_quantile(0.999),
        "max": latency.max(),
    })
}

/// A message as the generator writes it, with a text of typical length.
fn message(seq: u64, now_ms: u64) -> String {
    json!({
        "seq": seq,
        "epoch": 1,
        "producer": "bench-fill",
        "text": "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
        "generated_at_ms": now_ms,
    })
    .to_string()
}

/// Drain mode: `n` messages are put in the queue in one step (RENAME of a
/// list filled beforehand) once `processors` copies of `concurrency` are
/// registered and idle; timed from there until the processed counter
/// reaches `n`. The fill is left out of the command counts.
fn drain(o: &Options, processors: usize, concurrency: usize, n: u64) -> Value {
    let mut cluster = Cluster::start(o);
    let c = concurrency.to_string();
    for p in 0..processors {
        cluster.copy(
            &format!("proc{p}"),
            &["--role", "processor", "--concurrency", &c],
        );
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let staging = format!("{}:bench-staging", keys().queue());
    let mut seq = 1;
    while seq <= n {
        let end = (seq + 999).min(n);
        let batch: Vec<String> = (seq..=end).map(|s| message(s, now_ms)).collect();
        let _: redis::RedisResult<()> = cluster.conn.lpush(&staging, batch);
        seq = end + 1;
    }
    let _: redis::RedisResult<()> = cluster.conn.set(keys().seq(), n);
    let started = Instant::now();
    while cluster.conn.hlen::<_, u64>(keys().registry()).unwrap_or(0) < processors as u64 {
        if started.elapsed() > Duration::from_secs(30) {
            fail("the processor copies did not register");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let first = Sample::take(&mut cluster);
    let _: redis::RedisResult<()> = redis::pipe()
        .rename(&staging, keys().queue())
        .publish(keys().wake_channel(), "job")
        .query(&mut cluster.conn);
    let t0 = Instant::now();
    while cluster.get(&keys().processed()) < n {
        if t0.elapsed() > Duration::from_secs(600) {
            fail("the queue did not drain in 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let last = Sample::take(&mut cluster);
    let (executions, sent) = first.commands(&last);
    // The RENAME, PUBLISH and this tool's polling are not the copies' work.
    let polls = first.delta(&last, "get") as f64;
    let per = |x: f64| x / n as f64;
    json!({
        "mode": "drain",
        "processors": processors,
        "concurrency": concurrency,
        "messages": n,
        "seconds": elapsed,
        "processed_per_s": n as f64 / elapsed,
        "commands_sent_per_message": per(sent as f64),
        "redis_executions_per_message": per(executions as f64 - polls - 2.0),
        "executions_per_message_by_command": first.by_command(&last, n),
        "redis_cpu_s_per_1000": (last.cpu - first.cpu) * 1000.0 / n as f64,
    })
}

fn print_drain(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!(
        "drain {} messages  P={:<2} C={:<4} {:>8.0} msg/s  exec/msg {:.2}  cpu s/1000 {:.4}",
        r["messages"],
        r["processors"],
        r["concurrency"],
        f(&r["processed_per_s"]),
        f(&r["redis_executions_per_message"]),
        f(&r["redis_cpu_s_per_1000"]),
    );
}

fn print_throughput(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!(
        "P={:<2} C={:<4} rate {:<7} {:>8.0} msg/s  latency p50 {:>4} p99 {:>4} p99.9 {:>4} max {:>4} ms  sent/msg {:.2}  exec/msg {:.2}  cpu s/1000 {:.3}  conns {}  rss {} KiB",
        r["processors"],
        r["concurrency"],
        match r["rate"].as_u64() {
            Some(0) | None => "max".to_string(),
            Some(rate) => rate.to_string(),
        },
        f(&r["processed_per_s"]),
        r["latency_ms"]["p50"],
        r["latency_ms"]["p99"],
        r["latency_ms"]["p99_9"],
        r["latency_ms"]["max"],
        f(&r["commands_sent_per_message"]),
        f(&r["redis_executions_per_message"]),
        f(&r["redis_cpu_s_per_1000"]),
        r["connections_per_copy_max"],
        r["peak_rss_kib_max"]
    );
}

/// K copies at the default cadence.
fn idle(o: &Options, k: usize) -> Value {
    let mut cluster = Cluster::start(o);
    let launched = Instant::now();
    let mut pids = Vec::new();
    for i in 0..k {
        pids.push(cluster.copy(&format!("idle{i}"), &["--error-rate", "1"]));
    }
    while cluster.get(&keys().seq()) == 0 {
        if launched.elapsed() > Duration::from_secs(60) {
            fail("no first message within 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let first_message_ms = launched.elapsed().as_millis() as u64;
    std::thread::sleep(Duration::from_secs(o.warmup.max(5)));
    let _: redis::RedisResult<()> = cluster.conn.ltrim(keys().errors(), 1, 0);
    let first = Sample::take(&mut cluster);
    std::thread::sleep(Duration::from_secs(o.seconds));
    let last = Sample::take(&mut cluster);
    let elapsed = (last.at - first.at).as_secs_f64();
    let (executions, sent) = first.commands(&last);
    let cpu_percent = (last.cpu - first.cpu) * 100.0 / elapsed;
    // Latency at the default cadence, from the error records of the window.
    let mut latency = latency_histogram();
    for v in records(&mut cluster) {
        if let (Some(detected), Some(generated)) =
            (v["detected_at_ms"].as_u64(), v["generated_at_ms"].as_u64())
        {
            latency.saturating_record(detected.saturating_sub(generated));
        }
    }
    let total_rss_kib: u64 = cluster.copies.iter().map(|c| rss_kib(c.id())).sum();

    // kill -9 of the generator, then the gap between the messages around it.
    let lease: String = cluster.conn.get(keys().lease()).unwrap_or_default();
    let id = lease
        .split_once(':')
        .map(|(_, id)| id.to_string())
        .unwrap_or_default();
    let description: String = cluster
        .conn
        .hget(keys().registry(), &id)
        .unwrap_or_default();
    let pid = serde_json::from_str::<Value>(&description)
        .ok()
        .and_then(|d| d["pid"].as_u64());
    let mut gap_ms = None;
    if let Some(index) = cluster
        .copies
        .iter()
        .position(|c| Some(c.id() as u64) == pid)
    {
        let _ = cluster.copies[index].kill();
        let _ = cluster.copies[index].wait();
        let before = cluster.get(&keys().seq());
        let killed = Instant::now();
        while cluster.get(&keys().seq()) <= before + 1 && killed.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(500));
        let mut stamps: Vec<(u64, u64, u64)> = records(&mut cluster)
            .iter()
            .filter_map(|v| {
                Some((
                    v["seq"].as_u64()?,
                    v["epoch"].as_u64()?,
                    v["generated_at_ms"].as_u64()?,
                ))
            })
            .collect();
        stamps.sort_unstable();
        gap_ms = stamps
            .windows(2)
            .filter(|w| w[1].1 != w[0].1)
            .map(|w| w[1].2.saturating_sub(w[0].2))
            .next_back();
    }
    json!({
        "copies": k,
        "redis_commands_per_s": executions as f64 / elapsed,
        "commands_sent_per_s_per_copy": sent as f64 / elapsed / k as f64,
        "redis_executions_per_s_per_copy": executions as f64 / elapsed / k as f64,
        "redis_cpu_percent": cpu_percent,
        "first_message_ms": first_message_ms,
        "failover_gap_ms": gap_ms,
        "latency_ms": latency_summary(&latency),
        "total_rss_mib": total_rss_kib as f64 / 1024.0,
        "executions_per_s_by_command": first.by_command(&last, elapsed.round() as u64),
    })
}

fn print_idle(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!(
        "K={:<4} Redis {:>7.0} cmd/s ({:.2} sent, {:.2} executed per copy per s)  Redis CPU {:>5.1} %  first message {} ms  failover gap {} ms  latency p50 {} p99 {} ms  RSS of all copies {:.0} MiB",
        r["copies"],
        f(&r["redis_commands_per_s"]),
        f(&r["commands_sent_per_s_per_copy"]),
        f(&r["redis_executions_per_s_per_copy"]),
        f(&r["redis_cpu_percent"]),
        r["first_message_ms"],
        r["failover_gap_ms"],
        r["latency_ms"]["p50"],
        r["latency_ms"]["p99"],
        f(&r["total_rss_mib"]),
    );
}

/// The concurrencies of `--sweep`, one line each in the chart.
const SWEEP_CONCURRENCY: [u64; 3] = [1, 16, 256];

/// A figure of one sweep report.
type Metric = fn(&Value) -> f64;

/// The chart's panels, left to right: title, y axis and what is drawn.
const PANELS: [(&str, &str, Metric); 2] = [
    ("messages/s end to end", "messages/s", |r| {
        r["processed_per_s"].as_f64().unwrap_or(0.0)
    }),
    ("p99 latency", "p99 latency, ms", |r| {
        r["latency_ms"]["p99"].as_f64().unwrap_or(0.0)
    }),
];

/// Throughput and p99 latency against P (log2 axis), one line per C, as SVG.
fn chart(reports: &[Value]) -> Result<String, Box<dyn std::error::Error>> {
    let colours = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x2c, 0xa0, 0x2c),
    ];
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 330)).into_drawing_area();
        root.fill(&WHITE)?;
        let (panels, legend) = root.split_vertically(300);
        for (area, (title, y_desc, metric)) in panels.split_evenly((1, 2)).iter().zip(PANELS) {
            let top = reports.iter().map(metric).fold(1.0, f64::max) * 1.1;
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(60)
                .build_cartesian_2d(-0.2f64..3.2f64, 0f64..top)?;
            chart
                .configure_mesh()
                .x_labels(4)
                .x_label_formatter(&|x| format!("{}", 2f64.powf(*x)))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .x_desc("processor copies (P)")
                .y_desc(y_desc)
                .disable_x_mesh()
                .max_light_lines(0)
                .draw()?;
            for (c, colour) in SWEEP_CONCURRENCY.into_iter().zip(colours) {
                let points: Vec<(f64, f64)> = reports
                    .iter()
                    .filter(|r| r["concurrency"].as_u64() == Some(c))
                    .map(|r| (r["processors"].as_f64().unwrap_or(1.0).log2(), metric(r)))
                    .collect();
                chart.draw_series(LineSeries::new(points, colour.stroke_width(2)).point_size(3))?;
            }
        }
        // One legend under both panels: the lines are the same C in each.
        let text = ("sans-serif", 15)
            .into_font()
            .into_text_style(&legend)
            .pos(Pos::new(HPos::Left, VPos::Center));
        legend.draw(&Text::new("concurrency per copy:", (250, 12), text.clone()))?;
        for (i, (c, colour)) in SWEEP_CONCURRENCY.into_iter().zip(colours).enumerate() {
            let x = 420 + 90 * i as i32;
            legend.draw(&PathElement::new(
                [(x, 12), (x + 24, 12)],
                colour.stroke_width(2),
            ))?;
            legend.draw(&Text::new(format!("C={c}"), (x + 30, 12), text.clone()))?;
        }
        root.present()?;
    }
    Ok(out)
}

/// Writes the sweep chart to `path`.
fn write_svg(path: &Path, reports: &[Value]) -> Result<(), Box<dyn std::error::Error>> {
    Ok(std::fs::write(path, chart(reports)?)?)
}

/// One line of `--csv`: the columns, in order, are the field names.
#[derive(Serialize)]
struct CsvRow {
    processors: u64,
    concurrency: u64,
    #[serde(serialize_with = "decimals::<0, _>")]
    msgs_per_s: f64,
    p50_ms: u64,
    p99_ms: u64,
    p99_9_ms: u64,
    max_ms: u64,
    #[serde(serialize_with = "decimals::<3, _>")]
    sent_per_msg: f64,
    #[serde(serialize_with = "decimals::<3, _>")]
    exec_per_msg: f64,
    #[serde(serialize_with = "decimals::<4, _>")]
    redis_cpu_s_per_1000: f64,
    conns_per_copy: u64,
    peak_rss_kib: u64,
}

impl CsvRow {
    fn of(r: &Value) -> Self {
        let f = |v: &Value| v.as_f64().unwrap_or(0.0);
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        CsvRow {
            processors: n(&r["processors"]),
            concurrency: n(&r["concurrency"]),
            msgs_per_s: f(&r["processed_per_s"]),
            p50_ms: n(&r["latency_ms"]["p50"]),
            p99_ms: n(&r["latency_ms"]["p99"]),
            p99_9_ms: n(&r["latency_ms"]["p99_9"]),
            max_ms: n(&r["latency_ms"]["max"]),
            sent_per_msg: f(&r["commands_sent_per_message"]),
            exec_per_msg: f(&r["redis_executions_per_message"]),
            redis_cpu_s_per_1000: f(&r["redis_cpu_s_per_1000"]),
            conns_per_copy: n(&r["connections_per_copy_max"]),
            peak_rss_kib: n(&r["peak_rss_kib_max"]),
        }
    }
}

/// A float with `N` decimals, as the CSV has always had them.
fn decimals<const N: usize, S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:.N$}"))
}

/// Writes one `CsvRow` per report to `path`, with a header line.
fn write_csv(path: &Path, reports: &[Value]) -> Result<(), csv::Error> {
    let mut out = csv::Writer::from_path(path)?;
    for r in reports {
        out.serialize(CsvRow::of(r))?;
    }
    out.flush()?;
    Ok(())
}

fn main() {
    let o = Options::parse();
    if !o.app.exists() {
        fail(&format!(
            "no app binary at {} (cargo build --release, or --app PATH)",
            o.app.display()
        ));
    }
    if !o.idle.is_empty() {
        for k in &o.idle {
            let report = idle(&o, *k);
            if o.json {
                println!("{report}");
            } else {
                print_idle(&report);
            }
        }
        return;
    }
    if let Some(n) = o.prefill {
        let report = drain(&o, o.processors, o.concurrency, n);
        if o.json {
            println!("{report}");
        } else {
            print_drain(&report);
        }
        return;
    }
    if !o.sweep {
        let report = throughput(&o, o.processors, o.concurrency, o.seconds);
        if o.json {
            println!("{report}");
        } else {
            print_throughput(&report);
        }
        return;
    }
    let mut reports = Vec::new();
    for p in [1, 2, 4, 8] {
        for c in [1, 16, 256] {
            let report = throughput(&o, p, c, o.seconds);
            if o.json {
                println!("{report}");
            } else {
                print_throughput(&report);
            }
            reports.push(report);
        }
    }
    if let Some(path) = &o.svg {
        write_svg(path, &reports).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    }
    if let Some(path) = &o.csv {
        write_csv(path, &reports).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Sweep reports as `throughput` makes them, with made-up figures.
    fn reports() -> Vec<Value> {
        let mut reports = Vec::new();
        for (i, p) in [1u64, 2, 4, 8].into_iter().enumerate() {
            for (j, c) in SWEEP_CONCURRENCY.into_iter().enumerate() {
                let mut latency = latency_histogram();
                for ms in 1..=100 {
                    latency.saturating_record(ms * (3 - j as u64) + i as u64);
                }
                reports.push(json!({
                    "processors": p,
                    "concurrency": c,
                    "seconds": 2.0,
                    "processed_per_s": 10_000.0 * (i + 1) as f64 * (j + 1) as f64 + 0.4,
                    "generated_per_s": 1.0,
                    "latency_ms": latency_summary(&latency),
                    "commands_sent_per_message": 2.0484,
                    "redis_executions_per_message": 7.2906,
                    "redis_cpu_s_per_1000": 0.03644,
                    "connections_per_copy_max": 2,
                    "peak_rss_kib_max": 7588,
                }));
            }
        }
        reports
    }

    #[test]
    fn options_parse_as_before() {
        Options::command().debug_assert();
        let o = Options::try_parse_from(["redis-ql-bench"]).unwrap();
        assert_eq!(
            (o.processors, o.concurrency, o.seconds, o.warmup),
            (2, 64, 10, 3)
        );
        assert_eq!(
            (o.json, o.tls, o.sweep, o.wait_replicas),
            (false, false, false, 0)
        );
        assert!(o.idle.is_empty() && o.svg.is_none() && o.csv.is_none());
        assert_eq!(o.app.file_name(), Some("app".as_ref()));
        let o = Options::try_parse_from([
            "redis-ql-bench",
            "--processors",
            "4",
            "--concurrency",
            "16",
            "--idle",
            "50, 100,200",
            "--svg",
            "a.svg",
            "--wait-replicas",
            "1",
            "--redis-server",
            "/x/redis-server",
        ])
        .unwrap();
        assert_eq!((o.processors, o.concurrency, o.wait_replicas), (4, 16, 1));
        assert_eq!(o.idle, [50, 100, 200]);
        assert_eq!(o.svg, Some(PathBuf::from("a.svg")));
        assert_eq!(o.redis_server, "/x/redis-server");
        // As before, the last of a repeated flag counts.
        let o = Options::try_parse_from([
            "redis-ql-bench",
            "--seconds",
            "1",
            "--seconds",
            "2",
            "--idle",
            "1,2",
            "--idle",
            "3",
        ])
        .unwrap();
        assert_eq!((o.seconds, o.idle), (2, vec![3]));
        let error = Options::try_parse_from(["redis-ql-bench", "--seconds", "x"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let error = Options::try_parse_from(["redis-ql-bench", "--nope"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn latency_from_the_histogram() {
        let empty = latency_summary(&latency_histogram());
        assert_eq!(
            empty,
            json!({"samples": 0, "p50": 0, "p99": 0, "p99_9": 0, "max": 0})
        );
        let mut latency = latency_histogram();
        for ms in 1..=1000 {
            latency.saturating_record(ms);
        }
        assert_eq!(
            latency_summary(&latency),
            json!({"samples": 1000, "p50": 500, "p99": 990, "p99_9": 999, "max": 1000})
        );
    }

    #[test]
    fn sweep_files() {
        let dir = tempfile::tempdir().unwrap();
        let (svg, csv) = (dir.path().join("sweep.svg"), dir.path().join("sweep.csv"));
        let reports = reports();
        write_svg(&svg, &reports).unwrap();
        write_csv(&csv, &reports).unwrap();

        let svg = std::fs::read_to_string(svg).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in [
            "messages/s end to end",
            "p99 latency",
            "processor copies (P)",
            "\nC=1\n",
            "\nC=16\n",
            "\nC=256\n",
            "\n8\n",
        ] {
            assert!(svg.contains(text), "no {text} in the chart");
        }
        for colour in ["#1F77B4", "#D62728", "#2CA02C"] {
            // A line in each panel and one in the legend.
            let line = format!(r#"<polyline fill="none" opacity="1" stroke="{colour}""#);
            assert_eq!(svg.matches(&line).count(), 3, "{colour}");
        }
        assert_eq!(svg.matches("<circle").count(), 2 * 12);

        let csv = std::fs::read_to_string(csv).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "processors,concurrency,msgs_per_s,p50_ms,p99_ms,p99_9_ms,max_ms,sent_per_msg,exec_per_msg,redis_cpu_s_per_1000,conns_per_copy,peak_rss_kib"
        );
        assert_eq!(lines.len(), 1 + 12);
        assert_eq!(
            lines[1],
            "1,1,10000,150,297,300,300,2.048,7.291,0.0364,2,7588"
        );
    }

    #[test]
    fn unwritable_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/file");
        assert!(write_svg(&missing, &reports()).is_err());
        assert!(write_csv(&missing, &reports()).is_err());
    }
}
