//! `redis-ql-bench`: one generator with `--interval-ms 0` and P processor
//! copies with concurrency C, as real separate processes against a private
//! Redis; after a warm-up, T seconds are measured.
//!
//! ```text
//! cargo build --release && cargo run --release -p bench -- --processors 2 --concurrency 64 --seconds 10
//! ```
//!
//! Reports messages per second end to end (acked) and generated, latency
//! from generation to processing (sampled from the error records), commands
//! sent and Redis command executions per message (`INFO commandstats`),
//! Redis CPU seconds per 1000 messages (`INFO cpu`), connections per copy
//! (`CLIENT LIST`) and peak RSS per copy (`VmHWM`).

use redis::Commands;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
}

fn usage() -> ! {
    eprintln!(
        "usage: redis-ql-bench [--processors P] [--concurrency C] [--seconds T] [--warmup W] [--app PATH] [--redis-server PATH] [--json]"
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
            _ => usage(),
        }
    }
    o
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn fail(what: &str) -> ! {
    eprintln!("redis-ql-bench: {what}");
    std::process::exit(1)
}

struct Sample {
    at: Instant,
    processed: u64,
    generated: u64,
    calls: BTreeMap<String, u64>,
    cpu: f64,
}

fn info_section(conn: &mut redis::Connection, section: &str) -> String {
    redis::cmd("INFO")
        .arg(section)
        .query(conn)
        .unwrap_or_default()
}

fn sample(conn: &mut redis::Connection) -> Sample {
    let calls = info_section(conn, "commandstats")
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect();
    let cpu = info_section(conn, "cpu")
        .lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_sys:")
                .or_else(|| l.strip_prefix("used_cpu_user:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum();
    let get = |conn: &mut redis::Connection, key: &str| {
        conn.get::<_, Option<u64>>(key).ok().flatten().unwrap_or(0)
    };
    Sample {
        at: Instant::now(),
        processed: get(conn, "{app}:processed"),
        generated: get(conn, "{app}:seq"),
        calls,
        cpu,
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

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(((p / 100.0) * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

fn main() {
    let o = options();
    if !o.app.exists() {
        fail(&format!(
            "no app binary at {} (cargo build --release, or --app PATH)",
            o.app.display()
        ));
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("tempdir: {e}")));
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| fail(&format!("no free port: {e}")));
    let mut children = Killed(Vec::new());
    let redis = Command::new(&o.redis_server)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--dir", &dir.path().to_string_lossy()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start {}: {e}", o.redis_server)));
    children.0.push(redis);
    let url = format!("redis://127.0.0.1:{port}/");
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
    let copy = |name: &str, args: &[&str]| {
        Command::new(&o.app)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "start",
                "--name",
                name,
            ])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot start app: {e}")))
    };
    children.0.push(copy("gen", &["--interval-ms", "0"]));
    let concurrency = o.concurrency.to_string();
    for p in 0..o.processors {
        children.0.push(copy(
            &format!("proc{p}"),
            &["--role", "processor", "--concurrency", &concurrency],
        ));
    }
    std::thread::sleep(Duration::from_secs(o.warmup));
    let _: redis::RedisResult<()> = conn.ltrim("{app}:errors", 1, 0);
    let first = sample(&mut conn);
    std::thread::sleep(Duration::from_secs(o.seconds));
    let last = sample(&mut conn);

    let elapsed = (last.at - first.at).as_secs_f64();
    let processed = last.processed.saturating_sub(first.processed);
    let generated = last.generated.saturating_sub(first.generated);
    let delta = |name: &str| {
        last.calls
            .get(name)
            .copied()
            .unwrap_or(0)
            .saturating_sub(first.calls.get(name).copied().unwrap_or(0))
    };
    // All executions but the INFO calls of this sampling.
    let executions: u64 = last
        .calls
        .keys()
        .map(|name| delta(name))
        .sum::<u64>()
        .saturating_sub(delta("info"));
    let sent: u64 = SENT.iter().map(|name| delta(name)).sum();
    let per_message = |n: u64| {
        if processed == 0 {
            0.0
        } else {
            n as f64 / processed as f64
        }
    };
    let records: Vec<String> = conn.lrange("{app}:errors", 0, -1).unwrap_or_default();
    let mut latency: Vec<u64> = records
        .iter()
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(r).ok())
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
        .query(&mut conn)
        .unwrap_or_default();
    let mut connections: BTreeMap<String, u64> = BTreeMap::new();
    for line in clients.lines() {
        if let Some(name) = line.split(' ').find_map(|kv| kv.strip_prefix("name=")) {
            if let Some(id) = name.strip_prefix("app:") {
                *connections.entry(id.to_string()).or_default() += 1;
            }
        }
    }
    let max_connections = connections.values().copied().max().unwrap_or(0);
    let rss: Vec<u64> = children
        .0
        .iter()
        .skip(1)
        .map(|c| peak_rss_kib(c.id()))
        .collect();
    let report = serde_json::json!({
        "processors": o.processors,
        "concurrency": o.concurrency,
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
        "connections_per_copy_max": max_connections,
        "peak_rss_kib_max": rss.iter().copied().max().unwrap_or(0),
    });
    if o.json {
        println!("{report}");
        return;
    }
    println!(
        "P={} C={}  over {:.1} s",
        o.processors, o.concurrency, elapsed
    );
    println!(
        "  processed/s                 {:.0}",
        report["processed_per_s"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  generated/s                 {:.0}",
        report["generated_per_s"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  latency ms (n={})         p50 {}  p99 {}  p99.9 {}  max {}",
        latency.len(),
        report["latency_ms"]["p50"],
        report["latency_ms"]["p99"],
        report["latency_ms"]["p99_9"],
        report["latency_ms"]["max"]
    );
    println!("  commands sent / message     {:.2}", per_message(sent));
    println!(
        "  Redis executions / message  {:.2}",
        per_message(executions)
    );
    println!(
        "  Redis CPU s / 1000 messages {:.3}",
        report["redis_cpu_s_per_1000"].as_f64().unwrap_or(0.0)
    );
    println!("  connections per copy (max)  {max_connections}");
    println!(
        "  peak RSS per copy (max)     {} KiB",
        report["peak_rss_kib_max"]
    );
}
