//! Copies run as library calls in this process: `copy::run` with a shutdown
//! token, no signals and no child process. Where a subprocess adds nothing
//! (what is tested is what a copy does once told to stop, not how a signal
//! reaches it), the test is here; the signal paths themselves keep their
//! process tests in `failures` and `processes`.

use redis::AsyncCommands;
use redis_ql::{CommandSettings, Error, Settings};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use testkit::*;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A copy started in this process with `args` after `start`, and the token
/// that stops it.
struct InProcess {
    stop: CancellationToken,
    run: JoinHandle<Result<(), Error>>,
}

impl InProcess {
    fn start(server: &RedisServer, args: &[&str]) -> Self {
        let mut all = server.app_args();
        all.push("start".to_string());
        all.extend(args.iter().map(|a| a.to_string()));
        let settings = Settings::from_args(all).expect("settings");
        let CommandSettings::Start(start) = settings.command else {
            panic!("not the settings of start");
        };
        let stop = CancellationToken::new();
        let run = tokio::spawn(redis_ql::copy::run(settings.redis, start, stop.clone()));
        Self { stop, run }
    }

    /// Cancels the copy and waits, at most `within`, for `run` to return.
    async fn stop(self, within: Duration) {
        self.stop.cancel();
        tokio::time::timeout(within, self.run)
            .await
            .expect("the copy stopped in time")
            .expect("no panic")
            .expect("no error");
    }
}

/// Runs a blocking harness call (a sync Redis connection, `app get-errors`)
/// off the runtime's threads, which the copies under test need.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("no panic")
}

/// The seqs in the processing lists of the copies whose id starts with
/// `name`, once there are `at_least` of them.
async fn held_by(server: &RedisServer, name: &str, at_least: usize) -> BTreeSet<u64> {
    let (redis, keys) = connect(server).await;
    let mut conn = redis.conn();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lists: Vec<String> = conn
            .keys(keys.processing(&format!("{name}*")))
            .await
            .expect("keys");
        let mut seqs = BTreeSet::new();
        for list in lists {
            let items: Vec<Vec<u8>> = conn.lrange(&list, 0, -1).await.expect("lrange");
            for item in items {
                let message: serde_json::Value = serde_json::from_slice(&item).expect("a message");
                seqs.insert(message["seq"].as_u64().expect("a seq"));
            }
        }
        if seqs.len() >= at_least {
            return seqs;
        }
        assert!(Instant::now() < deadline, "{name} never held {at_least}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A copy is a library call. Cancelled, it hands the lease over,
/// deregisters and returns, and nothing it started is left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_run_in_process_stops_when_told_and_leaves_nothing_behind() {
    let server = RedisServer::start();
    let copy = InProcess::start(
        &server,
        &[
            "--interval-ms",
            "50",
            "--error-rate",
            "1",
            "--name",
            "inproc",
        ],
    );
    let (redis, keys) = connect(&server).await;
    let mut conn = redis.conn();
    let deadline = Instant::now() + Duration::from_secs(10);
    while conn
        .get::<_, Option<u64>>(keys.seq())
        .await
        .expect("seq")
        .unwrap_or(0)
        < 3
    {
        assert!(Instant::now() < deadline, "no messages generated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    copy.stop(Duration::from_secs(15)).await;
    let lease: Option<String> = conn.get(keys.lease()).await.expect("lease");
    assert_eq!(lease, None, "the lease was released");
    let registered: Vec<String> = conn.hkeys(keys.registry()).await.expect("registry");
    assert!(registered.is_empty(), "deregistered: {registered:?}");
}

/// Told to stop, a processor finishes the messages in hand within
/// `--shutdown-timeout-ms`; what it cannot finish in time goes back to the
/// queue at once, without counting as a delivery, and is processed once by
/// another copy. (This was a SIGTERM test of two child processes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The test holds the suite's timing lock from start to end, on purpose.
#[allow(clippy::await_holding_lock)]
async fn a_stopped_processor_finishes_what_it_holds_then_gives_back_the_rest() {
    let _serial = serial();
    let server = std::sync::Arc::new(RedisServer::start());
    let generator = InProcess::start(
        &server,
        &["--interval-ms", "100", "--error-rate", "1", "--name", "gen"],
    );
    // Finishes in time: 600 ms of work, 10 s allowed.
    let patient = InProcess::start(
        &server,
        &[
            "--role",
            "processor",
            "--error-rate",
            "1",
            "--work-ms",
            "600",
            "--concurrency",
            "4",
            "--name",
            "patient",
        ],
    );
    let held = held_by(&server, "patient", 2).await;
    patient.stop(Duration::from_secs(10)).await;
    // Runs out of time: 5 s of work, 300 ms allowed.
    let hasty = InProcess::start(
        &server,
        &[
            "--role",
            "processor",
            "--error-rate",
            "1",
            "--work-ms",
            "5000",
            "--concurrency",
            "4",
            "--shutdown-timeout-ms",
            "300",
            "--name",
            "hasty",
        ],
    );
    let given_back = held_by(&server, "hasty", 4).await;
    let stopped = Instant::now();
    hasty.stop(Duration::from_secs(5)).await;
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "it did not wait for the work"
    );
    let (redis, keys) = connect(&server).await;
    let registered: Vec<String> = redis.conn().hkeys(keys.registry()).await.expect("hkeys");
    assert!(
        registered.iter().all(|id| !id.starts_with("hasty")),
        "it deregistered: {registered:?}"
    );

    let finisher = InProcess::start(
        &server,
        &[
            "--role",
            "processor",
            "--error-rate",
            "1",
            "--name",
            "finisher",
        ],
    );
    generator.stop(Duration::from_secs(10)).await;
    let s = server.clone();
    blocking(move || wait_queue_empty(&s, Duration::from_secs(20))).await;
    finisher.stop(Duration::from_secs(10)).await;
    let s = server.clone();
    let records = blocking(move || audit_exactly_once(&s, &get_errors(&s))).await;
    for r in &records {
        if held.contains(&r.seq) {
            assert!(
                r.processor.starts_with("patient"),
                "finished in hand: {r:?}"
            );
        }
        if given_back.contains(&r.seq) {
            assert!(
                !r.processor.starts_with("hasty"),
                "not finished in time: {r:?}"
            );
        }
        assert_eq!(r.deliveries, 1, "a give-back is not a delivery: {r:?}");
    }
}
