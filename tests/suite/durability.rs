//! `--wait-replicas` (docs/SPEC.md §6) against a real primary and replica:
//! every enqueue and ack is confirmed by the replica while it answers; when
//! it stops answering, writes go on, each counted and named as unconfirmed.

use std::time::Duration;
use testkit::*;

/// The most `unconfirmed_writes` any copy reports.
fn unconfirmed(server: &RedisServer) -> u64 {
    status(server)["copies"]
        .as_array()
        .map(|copies| {
            copies
                .iter()
                .filter_map(|c| c["unconfirmed_writes"].as_u64())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[test]
fn with_a_live_replica_every_write_is_confirmed() {
    let _serial = serial();
    let primary = RedisServer::start();
    let _replica = primary.start_replica();
    let args = ["--wait-replicas", "1", "--interval-ms", "50"];
    let mut copies = start_copies(&primary, 2, &args);
    wait_generated(&primary, 20, Duration::from_secs(15));
    // Each WAIT answered 1: none counted as unconfirmed.
    assert_eq!(unconfirmed(&primary), 0, "{}", status(&primary));
    stop_all(&primary, &mut copies);
    audit_exactly_once(&primary, &get_errors(&primary));
}

#[test]
fn a_replica_that_stops_answering_leaves_writes_unconfirmed_not_stalled() {
    let _serial = serial();
    let primary = RedisServer::start();
    let replica = primary.start_replica();
    let args = [
        "--wait-replicas",
        "1",
        "--wait-timeout-ms",
        "50",
        "--interval-ms",
        "100",
    ];
    let mut copies = start_copies(&primary, 2, &args);
    wait_generated(&primary, 3, Duration::from_secs(10));
    replica.signal("STOP");
    let before = generated(&primary);
    wait_generated(&primary, before + 10, Duration::from_secs(10));
    wait_until(
        "unconfirmed writes in status",
        Duration::from_secs(5),
        || unconfirmed(&primary) > 0,
    );
    assert!(
        copies
            .iter()
            .any(|c| c.log_text().contains("not confirmed by --wait-replicas")),
        "the shortfall is named in the log"
    );
    replica.signal("CONT");
    stop_all(&primary, &mut copies);
    audit_exactly_once(&primary, &get_errors(&primary));
}
