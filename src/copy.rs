//! One running copy (`app start`): its identity, its connection, and the
//! tasks that make it generator or processor, started and stopped together.
//!
//! Shutdown is a [`CancellationToken`] given to [`run`] and passed on to
//! every task. Cancelling it stops claiming and generating, releases the
//! lease, lets the messages in hand finish for up to `--shutdown-timeout-ms`,
//! gives back the rest and deregisters.

use crate::connection::{self, Redis, Replicated, Signals};
use crate::error::{Error, LastError};
use crate::keys::Keys;
use crate::settings::{RedisSettings, RoleChoice, StartSettings};
use crate::sync::Locked;
use crate::{lease, membership, processor, scripts};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a stopping copy waits for its last tasks (a janitor pass, the
/// last acks) once it has deregistered.
const TASKS_END_WITHIN: Duration = Duration::from_secs(5);
use tracing::{info, warn};

/// What a copy is doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Generator,
    Processor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Generator => "generator",
            Role::Processor => "processor",
        }
    }
}

/// The state every task of a copy shares.
pub struct CopyState {
    pub redis: Redis,
    pub keys: Keys,
    pub settings: StartSettings,
    pub signals: Arc<Signals>,
    /// The copy id; it changes when an expired heartbeat forces re-registration.
    id: watch::Sender<Arc<str>>,
    role: watch::Sender<Role>,
    /// What this process counts, under any of its ids (`--http` /metrics).
    pub metrics: crate::metrics::Metrics,
    /// Asks the heartbeat task to beat now (after a role change or a refused claim).
    pub beat_now: Notify,
    pub host: String,
    pub pid: u32,
    pub started_at_ms: u64,
    /// The last error met, for the log and for `status`.
    pub last_error: LastError,
    /// The length of this copy's processing list at the last heartbeat.
    processing_len: AtomicU64,
    /// The queue's length at the last heartbeat.
    queue_len: AtomicU64,
    /// When the heartbeat last landed (for `/readyz`).
    beat_at: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Every task the copy spawns; [`run`] returns once all have ended.
    pub tasks: TaskTracker,
}

impl CopyState {
    pub fn new(redis: Redis, keys: Keys, settings: StartSettings, id: String) -> Self {
        Self {
            redis,
            keys,
            settings,
            signals: Arc::default(),
            id: watch::Sender::new(id.into()),
            role: watch::Sender::new(Role::Processor),
            metrics: crate::metrics::Metrics::default(),
            beat_now: Notify::new(),
            host: crate::settings::host_name(),
            pid: std::process::id(),
            started_at_ms: crate::message::now_ms(),
            last_error: LastError::default(),
            processing_len: AtomicU64::new(0),
            queue_len: AtomicU64::new(0),
            beat_at: std::sync::Mutex::new(None),
            tasks: TaskTracker::new(),
        }
    }

    pub fn id(&self) -> Arc<str> {
        self.id.borrow().clone()
    }

    pub fn watch_id(&self) -> watch::Receiver<Arc<str>> {
        self.id.subscribe()
    }

    pub(crate) fn set_id(&self, id: String) {
        self.id.send_replace(id.into());
    }

    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    pub fn watch_role(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    pub(crate) fn set_role(&self, role: Role) {
        if self.role.send_replace(role) != role {
            self.beat_now.notify_one();
        }
    }

    pub fn processed(&self) -> u64 {
        self.metrics.processed.get()
    }

    /// The queue's length at the last heartbeat.
    pub fn queue_len(&self) -> u64 {
        self.queue_len.load(Ordering::Relaxed)
    }

    /// The heartbeat landed just now.
    pub(crate) fn beat_landed(&self) {
        *self.beat_at.locked() = Some(tokio::time::Instant::now());
    }

    /// Whether the last heartbeat landed less than a heartbeat's life ago,
    /// by this process's clock: registered and alive to the others.
    pub fn heartbeat_live(&self) -> bool {
        self.beat_at
            .locked()
            .is_some_and(|at| at.elapsed() < crate::membership::HEARTBEAT_TTL)
    }

    pub(crate) fn set_queue_len(&self, len: u64) {
        self.queue_len.store(len, Ordering::Relaxed);
    }

    /// How long this copy's processing list was at the last heartbeat.
    pub fn processing_len(&self) -> u64 {
        self.processing_len.load(Ordering::Relaxed)
    }

    pub(crate) fn set_processing_len(&self, len: u64) {
        self.processing_len.store(len, Ordering::Relaxed);
    }

    /// Writes that `--wait-replicas` did not see confirmed in time.
    pub fn unconfirmed(&self) -> u64 {
        self.metrics.unconfirmed.get()
    }

    /// After `what` committed: waits for `--wait-replicas`; a shortfall is
    /// counted (shown in `status`) and named in the log, and the work goes
    /// on: the write stands on the primary, it only may not survive a
    /// failover.
    pub(crate) async fn confirm_replicated(&self, what: &str) {
        match self.redis.replicated().await {
            Ok(Replicated::NotAsked | Replicated::Confirmed) => {}
            Ok(Replicated::Short { acked, wanted }) => {
                self.metrics.unconfirmed.inc();
                self.last_error.problem(
                    "a write was not confirmed by --wait-replicas replicas in time",
                    &format!("{what}: {acked} of {wanted} replicas confirmed it"),
                );
            }
            Err(e) => {
                self.metrics.unconfirmed.inc();
                self.last_error
                    .report(&format!("waiting for replicas after {what}"), &e);
            }
        }
    }

    /// Whether per-message lines are worth logging at info: at the default
    /// cadence someone is watching them; in a benchmark they would flood.
    pub fn chatty(&self) -> bool {
        self.settings.interval >= Duration::from_millis(50)
    }
}

/// How long a copy waits for one answer before it counts the request as
/// failed (and replaces a connection gone silent): a third of the lease, so
/// that a renewal can fail and be retried in time, but never more than a
/// second whatever the lease, nor less than 200 ms.
pub fn request_timeout(lease: Duration) -> Duration {
    (lease / 3).clamp(Duration::from_millis(200), Duration::from_secs(1))
}

/// `CLIENT SETNAME` value: namespace and copy id.
pub fn client_name(namespace: &str, copy_id: &str) -> String {
    format!("{namespace}:{copy_id}")
}

/// A fresh copy id: the name and a random suffix.
pub fn new_copy_id(name: &str) -> String {
    format!("{name}-{:08x}", rand::random::<u32>())
}

/// The largest item a processor can take and still send its results back:
/// an item comes back in its ack, and its error record may grow six times
/// when its text is escaped, so both must fit Redis's `proto-max-bulk-len`.
/// One setting of the server; `None` when CONFIG is renamed or denied
/// (managed services and least-privilege users often deny it).
async fn server_config(redis: &Redis, name: &str) -> Option<String> {
    let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(&mut redis.conn())
        .await;
    reply.ok()?.get(1).cloned()
}

/// Warns when Redis may evict keys: an evicted queue or processing list
/// loses messages that were accepted.
async fn check_eviction(redis: &Redis) {
    match server_config(redis, "maxmemory-policy").await.as_deref() {
        Some("noeviction") | None => {}
        Some(policy) => warn!(
            policy = %crate::escape::for_terminal(policy),
            "Redis may evict keys when full, the queue among them, and lose accepted messages: set maxmemory-policy noeviction"
        ),
    }
}

async fn fit_item_limit(redis: &Redis, wanted: u64) -> u64 {
    // Without CONFIG the option is taken as it is.
    let Some(bulk) = server_config(redis, "proto-max-bulk-len")
        .await
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return wanted;
    };
    let fits = (bulk.saturating_sub(4096) / 8).max(1024);
    if fits < wanted {
        warn!(
            max_item_bytes = fits,
            proto_max_bulk_len = bulk,
            "lowered --max-item-bytes to fit Redis's proto-max-bulk-len"
        );
        return fits;
    }
    wanted
}

/// Runs a copy until `shutdown` is cancelled; then finishes what it holds
/// (up to `--shutdown-timeout-ms`), gives back the rest and deregisters.
/// Signals are the caller's business: the binary cancels on SIGTERM.
pub async fn run(
    redis_settings: RedisSettings,
    settings: StartSettings,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let http = match settings.http {
        Some(addr) => Some(crate::http::start(addr, shutdown.clone()).await?),
        None => None,
    };
    let ran = run_copy(redis_settings, settings, shutdown, http.as_ref()).await;
    if let Some(http) = http {
        http.stop().await;
    }
    ran
}

async fn run_copy(
    redis_settings: RedisSettings,
    mut settings: StartSettings,
    shutdown: CancellationToken,
    http: Option<&crate::http::Server>,
) -> Result<(), Error> {
    let id = new_copy_id(&settings.name);
    let timeout = request_timeout(settings.lease);
    let Some(redis) = connection::connect_retrying(
        &redis_settings,
        &client_name(&redis_settings.namespace, &id),
        timeout,
        &shutdown,
    )
    .await?
    else {
        return Ok(());
    };
    if let Err(e) = scripts::load_all(&redis).await {
        warn!(error = %e, "could not preload the scripts; they will be loaded on first use");
    }
    settings.max_item_bytes = fit_item_limit(&redis, settings.max_item_bytes).await;
    check_eviction(&redis).await;
    let keys = Keys::new(&redis_settings.namespace);
    let copy = Arc::new(CopyState::new(redis, keys, settings, id));
    if let Some(http) = http {
        http.attach(&copy);
    }
    if !membership::register(&copy, &shutdown).await {
        return Ok(());
    }
    info!(
        id = %copy.id(),
        role = if copy.settings.role == RoleChoice::Auto { "auto" } else { "processor" },
        concurrency = copy.settings.concurrency,
        redis = %copy.redis.address(),
        namespace = %redis_settings.namespace,
        "copy started"
    );

    let namer = copy.clone();
    let namespace = redis_settings.namespace.clone();
    copy.tasks.spawn(connection::follow_sentinels(
        copy.redis.clone(),
        shutdown.clone(),
    ));
    copy.tasks.spawn(connection::subscribe(
        copy.redis.clone(),
        move || client_name(&namespace, &namer.id()),
        copy.keys.wake_channel(),
        copy.keys.wake_shard_channel(rand::random::<u32>()),
        copy.keys.lease_channel(),
        copy.signals.clone(),
        shutdown.clone(),
    ));
    // The heartbeat outlives `shutdown`: messages in hand are still being
    // acked under this copy's id, which must stay alive until they are.
    let stop_beating = CancellationToken::new();
    let heartbeat = copy
        .tasks
        .spawn(membership::beat(copy.clone(), stop_beating.clone()));
    let processing = copy
        .tasks
        .spawn(processor::run(copy.clone(), shutdown.clone()));
    if copy.settings.role == RoleChoice::Auto {
        lease::campaign(copy.clone(), shutdown.clone()).await;
    }
    let _ = processing.await;
    stop_beating.cancel();
    let _ = heartbeat.await;
    membership::deregister(&copy).await;
    // The subscriber stops with `shutdown`, a janitor pass and the last acks
    // by themselves; nothing the copy started outlives it.
    copy.tasks.close();
    if tokio::time::timeout(TASKS_END_WITHIN, copy.tasks.wait())
        .await
        .is_err()
    {
        warn!(
            left = copy.tasks.len(),
            "some tasks of the copy had not ended; leaving them"
        );
    }
    info!(id = %copy.id(), processed = copy.processed(), "copy stopped");
    Ok(())
}
