//! Model-based property tests of the scripts against a real Redis.
//!
//! Random sequences of operations (lease takes, renewals and releases by
//! holders stale or not, fenced enqueues, claims, acks of items perhaps no
//! longer held, heartbeat expiries, re-registrations, janitor passes,
//! get-errors batches taken, committed and abandoned, garbage in the queue)
//! go to the model and, through the real wrappers, to Redis; after every
//! step Redis must agree with the model and keep the invariants.
//! `PROPTEST_CASES=5000 cargo test -p checker` for a long run.

use arbitrary::Arbitrary as _;
use checker::{check_invariants, read_state, Harness, Op};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use redis_ql::connection::{self, Redis};
use redis_ql::keys::Keys;
use redis_ql::scripts::{self, Acquired, Claimed, Outcome};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A test's own Redis and the runtime that drives the wrappers against it.
/// Each test function owns one on its stack, so the `redis-server` is killed
/// (by `RedisServer`'s Drop) when the test returns or panics; a `static`
/// would never be dropped and would outlive the test binary.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    server: testkit::RedisServer,
}

impl Fixture {
    fn start() -> Self {
        Self {
            runtime: tokio::runtime::Runtime::new().expect("a runtime"),
            server: testkit::RedisServer::start(),
        }
    }
}

async fn connect(port: u16) -> Redis {
    let settings = testkit::redis_settings(&format!("redis://127.0.0.1:{port}"));
    connection::connect(&settings, "model", Duration::from_secs(5))
        .await
        .expect("connect")
}

/// Registers copy `id` with a heartbeat that outlives the test.
async fn register(redis: &Redis, keys: &Keys, id: &str) {
    scripts::heartbeat(
        redis,
        keys,
        id,
        60_000,
        "{}",
        60_000,
        scripts::BeatKind::Register,
        true,
    )
    .await
    .expect("register")
    .expect("a registration is never refused");
}

fn run_sequence(fixture: &Fixture, ops: &[Op]) -> Result<(), TestCaseError> {
    fixture.runtime.block_on(async {
        let redis = connect(fixture.server.port).await;
        let mut harness = Harness::new(redis, "model")
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (step, op) in ops.iter().enumerate() {
            harness
                .apply(*op)
                .await
                .and(harness.check().await)
                .map_err(|e| TestCaseError::fail(format!("step {step}, {op:?}: {e}")))?;
        }
        Ok(())
    })
}

/// Proptest's closure form inside a plain test: the cases (the default
/// count, or `PROPTEST_CASES`, and the saved regressions) all reuse the one
/// server that this function owns.
#[test]
fn the_scripts_keep_every_invariant() {
    let fixture = Fixture::start();
    // Each step is made from a few random bytes by the same `Arbitrary` the
    // fuzz targets use, so proptest shrinks bytes and both draw alike.
    let step = any::<[u8; 4]>().prop_map(|bytes| {
        Op::arbitrary(&mut arbitrary::Unstructured::new(&bytes)).unwrap_or(Op::Janitor)
    });
    proptest!(|(ops in prop::collection::vec(step, 1..60))| {
        run_sequence(&fixture, &ops)?;
    });
}

#[test]
fn a_known_sequence_through_every_operation() {
    use Op::*;
    let ops = [
        Acquire { copy: 0 },
        Enqueue { copy: 0 },
        Enqueue { copy: 1 },
        PushGarbage,
        Enqueue { copy: 0 },
        Claim { copy: 1, count: 1 },
        Claim { copy: 2, count: 3 },
        Ack {
            copy: 1,
            pick: 0,
            error: true,
        },
        HeartbeatExpires { copy: 2 },
        Ack {
            copy: 2,
            pick: 0,
            error: false,
        },
        Janitor,
        LeaseExpires,
        Enqueue { copy: 0 },
        Acquire { copy: 1 },
        Renew { copy: 0 },
        Release { copy: 0 },
        Enqueue { copy: 1 },
        Reregister { copy: 2 },
        Claim { copy: 2, count: 3 },
        Ack {
            copy: 2,
            pick: 0,
            error: true,
        },
        Ack {
            copy: 2,
            pick: 0,
            error: true,
        },
        Ack {
            copy: 2,
            pick: 0,
            error: true,
        },
        TakeErrors { run: 0, count: 1 },
        TakeErrors { run: 1, count: 3 },
        CommitDrain { run: 0 },
        AbandonDrain { run: 1 },
        Janitor,
        TakeErrors { run: 0, count: 3 },
        CommitDrain { run: 0 },
    ];
    let fixture = Fixture::start();
    run_sequence(&fixture, &ops).expect("the sequence keeps the invariants");
}

/// Several copies at once, each a tokio task doing random work through the
/// real wrappers; no model, only the invariants at the end.
#[test]
fn concurrent_copies_keep_the_invariants() {
    let fixture = Fixture::start();
    fixture.runtime.block_on(async {
        let redis = connect(fixture.server.port).await;
        let keys = Keys::new("concurrent");
        let mut conn = redis.conn();
        let old: Vec<String> = redis::AsyncCommands::keys(&mut conn, "{concurrent}:*")
            .await
            .expect("keys");
        if !old.is_empty() {
            let _: () = redis::AsyncCommands::del(&mut conn, old)
                .await
                .expect("del");
        }
        let acked_ok = Arc::new(Mutex::new(BTreeSet::new()));
        let printed = Arc::new(Mutex::new(BTreeSet::new()));
        let mut tasks = Vec::new();
        for task in 0..6u64 {
            let (redis, keys, acked_ok, printed) = (
                redis.clone(),
                keys.clone(),
                acked_ok.clone(),
                printed.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(task);
                let mut generation = 0;
                let mut id = format!("t{task}g{generation}");
                register(&redis, &keys, &id).await;
                let mut lease: Option<String> = None;
                let mut held: Vec<Vec<u8>> = Vec::new();
                let mut runs = 0;
                for _ in 0..600 {
                    match rng.random_range(0..100u32) {
                        0..=9 => {
                            if let Ok(Acquired::Taken { epoch, .. }) =
                                scripts::acquire_lease(&redis, &keys, &id, 60_000).await
                            {
                                lease = Some(scripts::holder_value(epoch, &id));
                            }
                        }
                        10..=34 => {
                            let holder = lease.clone().unwrap_or_else(|| format!("0:{id}"));
                            let last = scripts::LastEnqueue {
                                generated_at_ms: 1,
                                epoch: 0,
                                producer: id.clone(),
                            };
                            let body = format!(
                                r#","epoch":0,"producer":"{id}","text":"t","generated_at_ms":1}}"#
                            );
                            let _ = scripts::enqueue(
                                &redis,
                                &keys,
                                &holder,
                                &[body],
                                &last,
                                0,
                                std::time::Duration::ZERO,
                            )
                            .await;
                        }
                        35..=54 => {
                            if let Ok(Ok(Claimed { items, .. })) =
                                scripts::claim(&redis, &keys, &id, 3, 1_048_576).await
                            {
                                held.extend(items);
                            }
                        }
                        55..=79 if !held.is_empty() => {
                            let raw = held.remove(rng.random_range(0..held.len()));
                            let message = redis_ql::message::Message::decode(&raw)
                                .expect("only messages here");
                            let record =
                                redis_ql::message::ErrorRecord::new(&message, &id, 2).encode();
                            let error = rng.random_bool(0.5);
                            let outcome = if error {
                                Outcome::Error(record)
                            } else {
                                Outcome::Ok
                            };
                            let answers = scripts::ack(&redis, &keys, &id, &[(raw, outcome)]).await;
                            if answers.as_deref() == Ok(&[true][..]) && !error {
                                acked_ok.lock().expect("lock").insert(message.seq);
                            }
                        }
                        80..=84 => {
                            // A pause: the heartbeat expires, the copy comes back under a new id.
                            let _: () =
                                redis::AsyncCommands::del(&mut redis.conn(), keys.heartbeat(&id))
                                    .await
                                    .expect("del");
                            generation += 1;
                            id = format!("t{task}g{generation}");
                            register(&redis, &keys, &id).await;
                            lease = None;
                            // Late acks under the old id stay possible: `held` is kept.
                        }
                        85..=89 => {
                            redis_ql::janitor::pass(&redis, &keys, 3, &Default::default()).await;
                        }
                        90..=94 => {
                            // Each get-errors run has an id of its own, as in app.
                            runs += 1;
                            let run = format!("run{task}-{runs}");
                            let batch = scripts::take_errors(&redis, &keys, &run, 2, 60_000)
                                .await
                                .expect("take");
                            if rng.random_bool(0.7) {
                                let _: () = redis::AsyncCommands::del(
                                    &mut redis.conn(),
                                    keys.draining(&run),
                                )
                                .await
                                .expect("del");
                                let mut printed = printed.lock().expect("lock");
                                for raw in batch {
                                    printed.insert(
                                        redis_ql::message::ErrorRecord::decode(&raw)
                                            .expect("record")
                                            .seq,
                                    );
                                }
                            } else {
                                let _: () = redis::AsyncCommands::del(
                                    &mut redis.conn(),
                                    keys.drain_lock(&run),
                                )
                                .await
                                .expect("del");
                            }
                        }
                        95..=96 => {
                            // The lease runs out, whoever holds it.
                            let _: () = redis::AsyncCommands::del(&mut redis.conn(), keys.lease())
                                .await
                                .expect("del");
                        }
                        _ => {
                            if let Some(holder) = &lease {
                                let renewed =
                                    scripts::renew_lease(&redis, &keys, holder, 60_000).await;
                                if !matches!(renewed, Ok(Ok(_))) {
                                    lease = None;
                                }
                            }
                        }
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("a task panicked");
        }
        redis_ql::janitor::pass(&redis, &keys, 3, &Default::default()).await;
        let state = read_state(&redis, &keys).await.expect("state");
        eprintln!(
            "concurrent: {} accepted, {} processed",
            state.seq, state.processed
        );
        assert!(state.seq > 20, "enough happened: {}", state.seq);
        let acked_ok = acked_ok.lock().expect("lock").clone();
        let printed = printed.lock().expect("lock").clone();
        check_invariants(&state, &acked_ok, &printed).expect("the invariants hold");
    });
}
