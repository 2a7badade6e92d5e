//! ChasquiMQ's scenarios, measured the way `redis-ql-bench` measures
//! redis-ql, against a Redis the caller started (Redis 8.6 or later, which
//! ChasquiMQ needs): jobs a second, Redis command executions per job
//! (`INFO commandstats`, the producer's and the consumer's together) and
//! Redis CPU seconds per 1,000 jobs (`INFO cpu`).
//!
//! ```text
//! chasquimq-bench REDIS_URL worker-concurrent JOBS [events]
//! chasquimq-bench REDIS_URL end-to-end SECONDS [events]
//! ```
//!
//! `worker-concurrent`: JOBS are added first (bulks of 100), then one
//! consumer at concurrency 100 (batch 256, acks in batches of 256) takes
//! them all; timed from its start until the last job's handler ran.
//! `end-to-end`: a producer adds bulks of 100 in a loop while the same
//! consumer takes them; SECONDS are measured after a 3 s warm-up. The
//! events stream is off unless `events` is given (it is on by default in
//! ChasquiMQ). One JSON line per run on stdout.

use chasquimq::{Bytes, Consumer, ConsumerConfig, Job, Producer, ProducerConfig};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A job of the same size and shape as a redis-ql message.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Payload {
    seq: u64,
    epoch: u64,
    producer: String,
    text: String,
    generated_at_ms: u64,
}

fn payload(seq: u64) -> Payload {
    Payload {
        seq,
        epoch: 1,
        producer: "bench-fill".to_string(),
        text: "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor."
            .to_string(),
        generated_at_ms: 1,
    }
}

/// What Redis counted: command executions and CPU seconds.
struct Counters {
    calls: u64,
    cpu: f64,
}

fn counters(conn: &mut redis::Connection) -> Counters {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(conn)
        .unwrap_or_default();
    let calls = stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
        .filter_map(|l| l.split(',').next()?.split("calls=").nth(1)?.parse::<u64>().ok())
        .sum();
    let cpu_info: String = redis::cmd("INFO").arg("cpu").query(conn).unwrap_or_default();
    let field = |name: &str| -> f64 {
        cpu_info
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Counters {
        calls,
        cpu: field("used_cpu_sys:") + field("used_cpu_user:"),
    }
}

fn consumer_config(queue: &str, events: bool) -> ConsumerConfig {
    ConsumerConfig {
        queue_name: queue.to_string(),
        group: "bench".to_string(),
        consumer_id: "w1".to_string(),
        batch: 256,
        block_ms: 100,
        claim_min_idle_ms: 30_000,
        concurrency: 100,
        max_attempts: 3,
        ack_batch: 256,
        ack_idle_ms: 2,
        shutdown_deadline_secs: 5,
        max_payload_bytes: 1_048_576,
        dlq_inflight: 64,
        delayed_enabled: false,
        run_scheduler: false,
        events_enabled: events,
        ..Default::default()
    }
}

fn producer_config(queue: &str) -> ProducerConfig {
    ProducerConfig {
        queue_name: queue.to_string(),
        pool_size: 4,
        max_stream_len: 10_000_000,
        ..Default::default()
    }
}

/// Starts a consumer that counts the jobs it handled.
fn consume(
    url: &str,
    queue: &str,
    events: bool,
    handled: Arc<AtomicU64>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let consumer: Consumer<Payload> = Consumer::new(url, consumer_config(queue, events));
    tokio::spawn(async move {
        let counted = handled.clone();
        let ran = consumer
            .run(
                move |_job: Job<Payload>| {
                    let counted = counted.clone();
                    async move {
                        counted.fetch_add(1, Ordering::Relaxed);
                        Ok(Bytes::new())
                    }
                },
                stop,
            )
            .await;
        if let Err(e) = ran {
            eprintln!("consumer: {e}");
        }
    })
}

async fn worker_concurrent(url: &str, jobs: u64, events: bool) -> serde_json::Value {
    let queue = "bench-wc";
    let producer: Producer<Payload> = Producer::connect(url, producer_config(queue))
        .await
        .unwrap_or_else(|e| fail(&format!("producer: {e}")));
    let mut added = 0;
    while added < jobs {
        let n = (jobs - added).min(100);
        let bulk = (added..added + n).map(payload).collect();
        producer
            .add_bulk(bulk)
            .await
            .unwrap_or_else(|e| fail(&format!("add_bulk: {e}")));
        added += n;
    }
    let mut conn = redis_conn(url);
    let before = counters(&mut conn);
    let handled = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let started = Instant::now();
    let consumer = consume(url, queue, events, handled.clone(), stop.clone());
    while handled.load(Ordering::Relaxed) < jobs {
        if started.elapsed() > Duration::from_secs(600) {
            fail("the queue did not drain in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The acks of the last jobs are flushed within ack_idle_ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = counters(&mut conn);
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), consumer).await;
    report("worker-concurrent", events, jobs, elapsed, &before, &after)
}

async fn end_to_end(url: &str, seconds: u64, events: bool) -> serde_json::Value {
    let queue = "bench-e2e";
    let producer: Producer<Payload> = Producer::connect(url, producer_config(queue))
        .await
        .unwrap_or_else(|e| fail(&format!("producer: {e}")));
    let handled = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let consumer = consume(url, queue, events, handled.clone(), stop.clone());
    let producing = {
        let stop = stop.clone();
        let handled = handled.clone();
        tokio::spawn(async move {
            let mut seq = 0;
            while !stop.is_cancelled() {
                // Like redis-ql's generator, never more than 10,000 ahead.
                if seq > handled.load(Ordering::Relaxed) + 10_000 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let bulk = (seq..seq + 100).map(payload).collect();
                if producer.add_bulk(bulk).await.is_err() {
                    break;
                }
                seq += 100;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut conn = redis_conn(url);
    let before = counters(&mut conn);
    let first = handled.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let jobs = handled.load(Ordering::Relaxed) - first;
    let elapsed = started.elapsed().as_secs_f64();
    let after = counters(&mut conn);
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), producing).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), consumer).await;
    report("end-to-end", events, jobs, elapsed, &before, &after)
}

fn report(
    scenario: &str,
    events: bool,
    jobs: u64,
    seconds: f64,
    before: &Counters,
    after: &Counters,
) -> serde_json::Value {
    let per_job = |x: f64| if jobs == 0 { 0.0 } else { x / jobs as f64 };
    serde_json::json!({
        "peer": "chasquimq",
        "scenario": scenario,
        "events": events,
        "jobs": jobs,
        "seconds": seconds,
        "jobs_per_s": jobs as f64 / seconds,
        // The INFO calls between the two samples are left out by name.
        "redis_executions_per_job": per_job(after.calls.saturating_sub(before.calls) as f64),
        "redis_cpu_s_per_1000": per_job((after.cpu - before.cpu) * 1000.0),
    })
}

fn redis_conn(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| fail(&format!("{url}: {e}")))
}

fn fail(why: &str) -> ! {
    eprintln!("chasquimq-bench: {why}");
    std::process::exit(1)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(url), Some(scenario), Some(amount)) = (args.first(), args.get(1), args.get(2)) else {
        fail("usage: chasquimq-bench REDIS_URL worker-concurrent|end-to-end JOBS|SECONDS [events]");
    };
    let amount: u64 = amount
        .parse()
        .unwrap_or_else(|_| fail("JOBS or SECONDS: a whole number"));
    let events = args.get(3).is_some_and(|a| a == "events");
    let report = match scenario.as_str() {
        "worker-concurrent" => worker_concurrent(url, amount, events).await,
        "end-to-end" => end_to_end(url, amount, events).await,
        other => fail(&format!("unknown scenario {other}")),
    };
    println!("{report}");
}
