//! `redis-ql-bench`: redis-ql measured with real processes against a
//! private Redis.
//!
//! ```text
//! cargo build --release
//! ./target/release/redis-ql-bench                       # 1 generator + 2 processors x 64
//! ./target/release/redis-ql-bench --processors 4 --concurrency 16 --seconds 10 --json
//! ./target/release/redis-ql-bench --sweep --svg bench/sweep.svg --csv bench/sweep.csv
//! ./target/release/redis-ql-bench --idle 50,100,200
//! ```
//!
//! Throughput mode: one generator with `--interval-ms 0` and P processor
//! copies with concurrency C; after a warm-up, T seconds are measured:
//! messages per second end to end (acked) and generated, latency from
//! generation to processing (sampled from the error records), commands
//! sent and Redis command executions per message (`INFO commandstats`),
//! Redis CPU seconds per 1000 messages (`INFO cpu`), connections per copy
//! (`CLIENT LIST`) and peak RSS per copy (`VmHWM`). `--sweep` runs P in
//! 1, 2, 4, 8 and C in 1, 16, 256 and draws throughput and p99 latency.
//!
//! Idle mode: K copies at the default cadence; Redis commands per second
//! (in all and per copy), Redis CPU %, time to the first message, and the
//! gap in generation after kill -9 of the generator.

use redis::Commands;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{keys, percentile};

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

struct Options {
    processors: usize,
    concurrency: usize,
    seconds: u64,
    warmup: u64,
    app: PathBuf,
    redis_server: String,
    json: bool,
    sweep: bool,
    idle: Vec<usize>,
    svg: Option<PathBuf>,
    csv: Option<PathBuf>,
    /// Redis speaks only TLS; the copies check its certificate.
    tls: bool,
    /// Replicas started beside Redis, and `--wait-replicas` for the copies.
    wait_replicas: u32,
}

fn usage() -> ! {
    eprintln!(
        "usage: redis-ql-bench [--processors P] [--concurrency C] [--seconds T] [--warmup W] [--json]\n\
         \x20                     [--sweep [--svg FILE] [--csv FILE]] [--idle K,K,...]\n\
         \x20                     [--tls] [--wait-replicas N] [--app PATH] [--redis-server PATH]"
    );
    std::process::exit(2)
}

fn options() -> Options {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .unwrap_or_default();
    let mut o = Options {
        processors: 2,
        concurrency: 64,
        seconds: 10,
        warmup: 3,
        app: exe_dir.join("app"),
        redis_server: std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()),
        json: false,
        sweep: false,
        idle: Vec::new(),
        svg: None,
        csv: None,
        tls: false,
        wait_replicas: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--processors" => o.processors = value().parse().unwrap_or_else(|_| usage()),
            "--concurrency" => o.concurrency = value().parse().unwrap_or_else(|_| usage()),
            "--seconds" => o.seconds = value().parse().unwrap_or_else(|_| usage()),
            "--warmup" => o.warmup = value().parse().unwrap_or_else(|_| usage()),
            "--app" => o.app = PathBuf::from(value()),
            "--redis-server" => o.redis_server = value(),
            "--json" => o.json = true,
            "--tls" => o.tls = true,
            "--wait-replicas" => o.wait_replicas = value().parse().unwrap_or_else(|_| usage()),
            "--sweep" => o.sweep = true,
            "--svg" => o.svg = Some(PathBuf::from(value())),
            "--csv" => o.csv = Some(PathBuf::from(value())),
            "--idle" => {
                o.idle = value()
                    .split(',')
                    .map(|k| k.trim().parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            _ => usage(),
        }
    }
    o
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

    /// (all executions, commands sent by the copies) between the samples,
    /// leaving out this tool's own INFO calls.
    fn commands(&self, later: &Sample) -> (u64, u64) {
        let all: u64 = later.calls.keys().map(|name| self.delta(later, name)).sum();
        let sent = SENT.iter().map(|name| self.delta(later, name)).sum();
        (all.saturating_sub(self.delta(later, "info")), sent)
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
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
    cluster.copy("gen", &["--interval-ms", "0"]);
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
    let mut latency: Vec<u64> = records(&mut cluster)
        .iter()
        .filter_map(|v| {
            Some(
                v["detected_at_ms"]
                    .as_u64()?
                    .saturating_sub(v["generated_at_ms"].as_u64()?),
            )
        })
        .collect();
    latency.sort_unstable();
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
        "seconds": elapsed,
        "processed_per_s": processed as f64 / elapsed,
        "generated_per_s": generated as f64 / elapsed,
        "latency_ms": {
            "samples": latency.len(),
            "p50": percentile(&latency, 50.0),
            "p99": percentile(&latency, 99.0),
            "p99_9": percentile(&latency, 99.9),
            "max": latency.last().copied().unwrap_or(0),
        },
        "commands_sent_per_message": per_message(sent),
        "redis_executions_per_message": per_message(executions),
        "redis_cpu_s_per_1000": if processed == 0 { 0.0 } else { (last.cpu - first.cpu) * 1000.0 / processed as f64 },
        "connections_per_copy_max": connections.values().copied().max().unwrap_or(0),
        "peak_rss_kib_max": rss,
    })
}

fn print_throughput(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!(
        "P={:<2} C={:<4} {:>8.0} msg/s  latency p50 {:>4} p99 {:>4} p99.9 {:>4} max {:>4} ms  sent/msg {:.2}  exec/msg {:.2}  cpu s/1000 {:.3}  conns {}  rss {} KiB",
        r["processors"],
        r["concurrency"],
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
    let first = Sample::take(&mut cluster);
    std::thread::sleep(Duration::from_secs(o.seconds));
    let last = Sample::take(&mut cluster);
    let elapsed = (last.at - first.at).as_secs_f64();
    let (executions, sent) = first.commands(&last);
    let cpu_percent = (last.cpu - first.cpu) * 100.0 / elapsed;

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
    })
}

fn print_idle(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!(
        "K={:<4} Redis {:>7.0} cmd/s ({:.2} sent, {:.2} executed per copy per s)  Redis CPU {:>5.1} %  first message {} ms  failover gap {} ms",
        r["copies"],
        f(&r["redis_commands_per_s"]),
        f(&r["commands_sent_per_s_per_copy"]),
        f(&r["redis_executions_per_s_per_copy"]),
        f(&r["redis_cpu_percent"]),
        r["first_message_ms"],
        r["failover_gap_ms"]
    );
}

/// Throughput and p99 latency against P, one line per C.
fn svg(reports: &[Value]) -> String {
    let (w, h, pad) = (420.0, 260.0, 50.0);
    let ps: Vec<f64> = vec![1.0, 2.0, 4.0, 8.0];
    let x = |p: f64| pad + (p.log2() / 3.0) * (w - 2.0 * pad);
    let colours = ["#1f77b4", "#d62728", "#2ca02c"];
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">"#,
        2.0 * w,
        h
    );
    for (panel, (field, title)) in [
        ("processed_per_s", "messages/s end to end"),
        ("p99", "p99 latency, ms"),
    ]
    .iter()
    .enumerate()
    {
        let value = |r: &Value| {
            if *field == "p99" {
                r["latency_ms"]["p99"].as_f64()
            } else {
                r[field].as_f64()
            }
            .unwrap_or(0.0)
        };
        let max = reports.iter().map(value).fold(1.0, f64::max) * 1.1;
        let y = |v: f64| h - pad - v / max * (h - 2.0 * pad);
        let _ = write!(out, r#"<g transform="translate({},0)">"#, panel as f64 * w);
        let _ = write!(
            out,
            r#"<text x="{}" y="20" text-anchor="middle" font-size="13">{title}</text>"#,
            w / 2.0
        );
        let _ = write!(
            out,
            r#"<line x1="{pad}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
            h - pad,
            w - pad,
            h - pad
        );
        let _ = write!(
            out,
            r#"<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{}" stroke="black"/>"#,
            h - pad
        );
        for p in &ps {
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" text-anchor="middle">{p}</text>"#,
                x(*p),
                h - pad + 15.0
            );
        }
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">processor copies (P)</text>"#,
            w / 2.0,
            h - 12.0
        );
        for i in 0..=4 {
            let v = max * i as f64 / 4.0;
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" text-anchor="end">{:.0}</text>"#,
                pad - 4.0,
                y(v) + 4.0,
                v
            );
        }
        for (ci, c) in [1u64, 16, 256].iter().enumerate() {
            let points: Vec<String> = reports
                .iter()
                .filter(|r| r["concurrency"].as_u64() == Some(*c))
                .map(|r| {
                    format!(
                        "{:.1},{:.1}",
                        x(r["processors"].as_f64().unwrap_or(1.0)),
                        y(value(r))
                    )
                })
                .collect();
            let colour = colours[ci % colours.len()];
            let _ = write!(
                out,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" fill="{colour}">C={c}</text>"#,
                w - pad + 4.0,
                pad + 14.0 * ci as f64
            );
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>\n");
    out
}

fn main() {
    let o = options();
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
        std::fs::write(path, svg(&reports))
            .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    }
    if let Some(path) = &o.csv {
        let mut csv = String::from("processors,concurrency,msgs_per_s,p50_ms,p99_ms,p99_9_ms,max_ms,sent_per_msg,exec_per_msg,redis_cpu_s_per_1000,conns_per_copy,peak_rss_kib\n");
        for r in &reports {
            let _ = writeln!(
                csv,
                "{},{},{:.0},{},{},{},{},{:.3},{:.3},{:.4},{},{}",
                r["processors"],
                r["concurrency"],
                r["processed_per_s"].as_f64().unwrap_or(0.0),
                r["latency_ms"]["p50"],
                r["latency_ms"]["p99"],
                r["latency_ms"]["p99_9"],
                r["latency_ms"]["max"],
                r["commands_sent_per_message"].as_f64().unwrap_or(0.0),
                r["redis_executions_per_message"].as_f64().unwrap_or(0.0),
                r["redis_cpu_s_per_1000"].as_f64().unwrap_or(0.0),
                r["connections_per_copy_max"],
                r["peak_rss_kib_max"]
            );
        }
        std::fs::write(path, csv).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    }
}
