//! Redis Cluster (docs/SPEC.md §6): six real nodes made a cluster by
//! `redis-cli --cluster create`. Under load, the primary that owns the
//! namespace's slot is killed with kill -9, and, separately, the slot is
//! migrated key by key to another primary; the copies follow both, and the
//! audit runs on the slot's owner afterwards.

use std::time::{Duration, Instant};
use testkit::*;

/// A generator and a processor over the cluster.
fn start(cluster: &Cluster) -> (Vec<Copy>, Vec<Copy>) {
    let connect = cluster.app_args();
    let dir = cluster.nodes[0].dir.path();
    let args = [ALL_ERRORS, &["--interval-ms", "50"]].concat();
    let processor_args = [&args[..], &["--role", "processor"]].concat();
    (
        vec![Copy::start_in(dir, &connect, "gen", &args)],
        vec![Copy::start_in(dir, &connect, "proc", &processor_args)],
    )
}

/// Stops the generator, lets the processor take what is left, stops it.
fn finish(owner: &RedisServer, generator: &mut [Copy], processor: &mut [Copy]) {
    stop_all(owner, generator);
    wait_queue_empty(owner, Duration::from_secs(20));
    stop_all(owner, processor);
}

/// The seq on whichever live node owns the slot (others answer MOVED).
fn seq_on_owner(cluster: &Cluster) -> Option<u64> {
    cluster.nodes.iter().find_map(|n| {
        let mut conn = redis::Client::open(n.url())
            .ok()?
            .get_connection_with_timeout(Duration::from_millis(200))
            .ok()?;
        redis::cmd("GET")
            .arg(keys().seq())
            .query::<Option<u64>>(&mut conn)
            .ok()?
    })
}

/// From kill -9 of the slot's primary to the next message: the time, and
/// the audit of what the promoted replica holds.
pub fn failover() -> (Duration, Vec<Record>) {
    let mut cluster = Cluster::start();
    let (mut generator, mut processor) = start(&cluster);
    let owner = cluster.owner().port;
    wait_generated(cluster.node(owner), 20, Duration::from_secs(15));
    let at_kill = generated(cluster.node(owner));
    cluster.node_mut(owner).kill9();
    let killed = Instant::now();
    wait_until(
        "a message after the failover",
        Duration::from_secs(30),
        || seq_on_owner(&cluster).is_some_and(|seq| seq > at_kill),
    );
    let gap = killed.elapsed();
    cluster.wait_ok();
    let promoted = cluster.owner();
    assert_ne!(promoted.port, owner, "a replica took the slot over");
    let now = generated(promoted);
    wait_generated(promoted, now + 20, Duration::from_secs(15));
    finish(promoted, &mut generator, &mut processor);
    // Nothing twice; what the failover lost never reached the replica, and
    // the survivors' seqs are each exactly once.
    let records = audit_exactly_once(promoted, &get_errors(promoted));
    (gap, records)
}

#[test]
fn copies_follow_a_killed_primary_of_their_slot() {
    let _serial = serial();
    let (gap, records) = failover();
    eprintln!(
        "cluster failover: next message {} ms after kill -9",
        gap.as_millis()
    );
    assert!(records.len() >= 40, "work went on: {}", records.len());
}

#[test]
fn copies_follow_their_slot_to_another_primary_and_lose_nothing() {
    let _serial = serial();
    let cluster = Cluster::start();
    let (mut generator, mut processor) = start(&cluster);
    let owner = cluster.owner().port;
    wait_generated(cluster.node(owner), 20, Duration::from_secs(15));
    let target = cluster
        .nodes
        .iter()
        .find(|n| {
            n.port != owner
                && redis::cmd("ROLE")
                    .query::<Vec<redis::Value>>(&mut n.conn())
                    .is_ok_and(|r| matches!(r.first(), Some(redis::Value::BulkString(b)) if b == b"master"))
        })
        .expect("another primary")
        .port;
    cluster.migrate_slot_to(target);
    assert_eq!(cluster.owner().port, target);
    let now = generated(cluster.node(target));
    wait_generated(cluster.node(target), now + 20, Duration::from_secs(15));
    finish(cluster.node(target), &mut generator, &mut processor);
    let records = audit_exactly_once(cluster.node(target), &get_errors(cluster.node(target)));
    assert!(records.len() >= 40, "work went on: {}", records.len());
    for copy in generator.iter().chain(&processor) {
        assert!(!copy.log_text().contains("panicked"), "{}", copy.log_text());
    }
}
