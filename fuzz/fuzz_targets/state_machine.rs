//! The claim state machine: an operation sequence decoded from the input runs
//! against a real Redis (FUZZ_REDIS_URL, default redis://127.0.0.1:6379) and
//! the checker's model, with the invariants checked after every step.
#![no_main]

use checker::{Harness, Op};
use libfuzzer_sys::fuzz_target;
use redis_ql::connection::{self, Redis};
use std::sync::OnceLock;
use std::time::Duration;

struct Env {
    runtime: tokio::runtime::Runtime,
    redis: Redis,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let url = std::env::var("FUZZ_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
        let settings = testkit::redis_settings(&url);
        let redis = runtime
            .block_on(connection::connect(&settings, "fuzz", Duration::from_secs(5)))
            .expect("a Redis at FUZZ_REDIS_URL");
        Env { runtime, redis }
    })
}

fuzz_target!(|ops: Vec<Op>| {
    let env = env();
    env.runtime.block_on(async {
        let mut harness = Harness::new(env.redis.clone(), "fuzz").await.expect("a clean namespace");
        for (step, op) in ops.iter().take(64).enumerate() {
            if let Err(e) = harness.apply(*op).await.and(harness.check().await) {
                panic!("step {step}, {op:?}: {e}");
            }
        }
    });
});
