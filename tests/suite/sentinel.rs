//! Redis Sentinel (docs/SPEC.md §6): one primary (append-only, fsync
//! always), one replica and three real sentinels. Under load the primary is
//! killed with kill -9; the copies ask the sentinels again and follow the
//! promoted replica, and the killed primary comes back as a replica that no
//! copy writes to. The audit runs on the new primary: no message twice; the
//! messages logged as accepted that the failover lost are counted (none
//! with `--wait-replicas 1`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use testkit::*;

/// What one failover came to.
#[derive(Debug)]
pub struct Failover {
    /// From the kill to the first message on the promoted replica.
    pub gap: Duration,
    /// Messages logged as accepted that are nowhere after the failover.
    pub lost: usize,
    /// Messages (epoch, seq) processed more than once.
    pub duplicated: usize,
    pub accepted: usize,
}

/// Runs copies through a kill -9 of the primary and audits the result.
pub fn failover(extra: &[&str]) -> Failover {
    let mut setup = SentinelSetup::start();
    let mut args: Vec<String> = setup.app_args();
    args.extend(["--interval-ms", "50"].iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(ALL_ERRORS.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let processor_args = [&args[..], &["--role", "processor"]].concat();
    let mut generator = vec![Copy::start(&setup.primary, "gen", &args)];
    let mut processor = vec![Copy::start(&setup.primary, "proc", &processor_args)];
    wait_generated(&setup.primary, 20, Duration::from_secs(15));

    let before = generated(&setup.replica);
    setup.primary.kill9();
    let killed = Instant::now();
    wait_until(
        "the sentinels to promote the replica",
        Duration::from_secs(20),
        || {
            setup
                .sentinels
                .iter()
                .any(|s| s.primary() == Some(setup.replica.port))
        },
    );
    wait_until(
        "a message on the promoted replica",
        Duration::from_secs(20),
        || generated(&setup.replica) > before,
    );
    let gap = killed.elapsed();
    // The old primary comes back with its append-only file, and is made a
    // replica by the sentinels: the copies must stay where they are.
    setup.primary.restart();
    let after = generated(&setup.replica);
    wait_generated(&setup.replica, after + 20, Duration::from_secs(15));

    let promoted = setup.current_primary();
    assert_eq!(promoted.port, setup.replica.port, "no failback happened");
    for copy in generator.iter().chain(&processor) {
        assert!(
            copy.log_text()
                .contains("the sentinels switched the primary"),
            "each copy heard +switch-master:\n{}",
            copy.log_text()
        );
    }
    // The generator stops; the processor takes what is left, then stops.
    stop_all(promoted, &mut generator);
    wait_queue_empty(promoted, Duration::from_secs(20));
    stop_all(promoted, &mut processor);
    let records = get_errors(promoted);
    let places = seqs_outside_errors(promoted);
    assert!(places.is_empty(), "all processed: {places:?}");

    // A message is its epoch, seq and text: after a failover that lost the
    // newest messages, a seq may be given again, to another text.
    let mut seen: BTreeMap<(u64, u64, String), usize> = BTreeMap::new();
    for r in records {
        *seen.entry((r.epoch, r.seq, r.text)).or_default() += 1;
    }
    let accepted: BTreeSet<(u64, u64, String)> =
        logged_as_generated(&generator).into_iter().collect();
    Failover {
        gap,
        lost: accepted.iter().filter(|m| !seen.contains_key(m)).count(),
        duplicated: seen.values().filter(|n| **n > 1).count(),
        accepted: accepted.len(),
    }
}

#[test]
fn copies_follow_a_failover_and_nothing_is_processed_twice() {
    let _serial = serial();
    let run = failover(&[]);
    eprintln!("without --wait-replicas: {run:?}");
    assert!(
        run.accepted >= 40,
        "the copies went on after the failover: {run:?}"
    );
    assert_eq!(run.duplicated, 0, "{run:?}");
    assert!(run.gap < Duration::from_secs(15), "{run:?}");
}

#[test]
fn with_wait_replicas_a_failover_loses_nothing_accepted() {
    let _serial = serial();
    let run = failover(&["--wait-replicas", "1"]);
    eprintln!("with --wait-replicas 1: {run:?}");
    assert_eq!(run.duplicated, 0, "{run:?}");
    assert_eq!(run.lost, 0, "{run:?}");
}
