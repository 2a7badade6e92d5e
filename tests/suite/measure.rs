//! Measurements for the README and release notes, not pass/fail tests:
//! `cargo test --release --test suite measure -- --ignored --nocapture`.
//! They still assert the guarantees they pass through (exactly once, G2).

use std::time::Duration;
use testkit::*;

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn cadence_latency_and_failover_at_the_default_settings() {
    let server = RedisServer::start();
    let args = ["--error-rate", "1"];
    let mut copies: Vec<Copy> = (0..3)
        .map(|i| Copy::start(&server, &format!("m{i}"), &args))
        .collect();

    // 1. Cadence and latency: 60 s of one generator at the default cadence.
    wait_until("121 messages", Duration::from_secs(90), || {
        generated(&server) >= 121
    });
    let records = get_errors(&server);
    let mut latency: Vec<u64> = records
        .iter()
        .map(|r| r.detected_at_ms.saturating_sub(r.generated_at_ms))
        .collect();
    latency.sort_unstable();
    let mut sorted = records.clone();
    sorted.sort_by_key(|r| r.seq);
    let mut intervals: Vec<u64> = sorted
        .windows(2)
        .filter(|w| w[0].epoch == w[1].epoch && w[1].seq == w[0].seq + 1)
        .map(|w| w[1].generated_at_ms - w[0].generated_at_ms)
        .collect();
    intervals.sort_unstable();
    let worst = intervals
        .iter()
        .map(|i| (*i as i64 - 500).unsigned_abs())
        .max()
        .unwrap_or(0);
    println!(
        "cadence: {} intervals, median {} ms, min {} ms, max {} ms (worst deviation {worst} ms)",
        intervals.len(),
        percentile(&intervals, 50.0),
        intervals.first().copied().unwrap_or(0),
        intervals.last().copied().unwrap_or(0)
    );
    println!(
        "latency generation -> processed: {} messages, p50 {} ms, p99 {} ms, max {} ms",
        latency.len(),
        percentile(&latency, 50.0),
        percentile(&latency, 99.0),
        latency.last().copied().unwrap_or(0)
    );

    // 2. Failover: kill -9 the generator five times, keeping three copies.
    let mut gaps = Vec::new();
    for round in 0..5 {
        let leader = generator_pid(&server).expect("a generator");
        let before = generated(&server);
        wait_until("3 more messages", Duration::from_secs(10), || {
            generated(&server) >= before + 3
        });
        let index = copies
            .iter()
            .position(|c| c.pid() as u64 == leader)
            .expect("ours");
        let mut victim = copies.remove(index);
        victim.kill9();
        wait_until("a new generator", Duration::from_secs(10), || {
            generator_pid(&server).is_some_and(|p| p != leader)
        });
        let after = generated(&server);
        wait_until("a new message", Duration::from_secs(10), || {
            generated(&server) > after
        });
        copies.push(Copy::start(&server, &format!("r{round}"), &args));
        let history = timeline(&server, &get_errors_keeping(&server));
        let gap = history
            .windows(2)
            .filter(|w| w[1].epoch != w[0].epoch)
            .map(|w| w[1].generated_at_ms - w[0].generated_at_ms)
            .next_back()
            .expect("a takeover");
        gaps.push(gap);
    }
    let mut sorted_gaps = gaps.clone();
    sorted_gaps.sort_unstable();
    println!(
        "failover gaps after kill -9 (ms): {gaps:?}, median {}",
        percentile(&sorted_gaps, 50.0)
    );
    assert!(gaps.iter().all(|g| *g <= 1600), "G2: {gaps:?}");
}

/// The error records without removing them, for a look mid-run.
fn get_errors_keeping(server: &RedisServer) -> Vec<Record> {
    use redis::Commands;
    let items: Vec<String> = server
        .conn()
        .lrange(keys().errors(), 0, -1)
        .unwrap_or_default();
    items
        .iter()
        .filter_map(|i| serde_json::from_str(i).ok())
        .collect()
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn sentinel_failover_five_times_with_and_without_wait_replicas() {
    let _serial = serial();
    for extra in [&[][..], &["--wait-replicas", "1"][..]] {
        let runs: Vec<super::sentinel::Failover> =
            (0..5).map(|_| super::sentinel::failover(extra)).collect();
        let mut gaps: Vec<u64> = runs.iter().map(|r| r.gap.as_millis() as u64).collect();
        gaps.sort_unstable();
        let lost: usize = runs.iter().map(|r| r.lost).sum();
        let duplicated: usize = runs.iter().map(|r| r.duplicated).sum();
        let accepted: usize = runs.iter().map(|r| r.accepted).sum();
        eprintln!(
            "sentinel failover {extra:?}: gaps {gaps:?} ms (median {}, max {}); lost {lost} and duplicated {duplicated} of {accepted} accepted",
            percentile(&gaps, 50.0),
            gaps.last().copied().unwrap_or(0)
        );
        assert_eq!(duplicated, 0);
    }
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn cluster_failover_five_times() {
    let _serial = serial();
    let mut gaps: Vec<u64> = (0..5)
        .map(|_| super::cluster::failover().0.as_millis() as u64)
        .collect();
    gaps.sort_unstable();
    eprintln!(
        "cluster failover: gaps {gaps:?} ms (median {}, max {})",
        percentile(&gaps, 50.0),
        gaps.last().copied().unwrap_or(0)
    );
}
