//! One running copy (`app start`): its identity, its connection, and the
//! tasks that make it generator or processor, started and stopped together.
//!
//! Shutdown is a [`CancellationToken`] passed to every task. The first
//! SIGTERM/SIGINT stops claiming and generating, releases the lease, lets the
//! messages in hand finish for up to `--shutdown-timeout-ms`, gives back the
//! rest and deregisters. A second signal exits at once: the janitor then
//! recovers this copy's messages, as after a kill -9.

use crate::connection::{self, Redis, Signals};
use crate::error::Error;
use crate::keys::Keys;
use crate::settings::{RedisSettings, RoleChoice, StartSettings};
use crate::{lease, membership, processor, scripts};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
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
pub struct Node {
    pub redis: Redis,
    pub keys: Keys,
    pub settings: StartSettings,
    pub signals: Arc<Signals>,
    /// The copy id; it changes when an expired heartbeat forces re-registration.
    id: watch::Sender<Arc<str>>,
    role: watch::Sender<Role>,
    /// Messages this process has committed, under any of its ids.
    processed: AtomicU64,
    /// Asks the heartbeat task to beat now (after a role change or a refused claim).
    pub beat_now: Notify,
    pub host: String,
    pub pid: u32,
    pub started_at_ms: u64,
}

impl Node {
    pub fn new(redis: Redis, keys: Keys, settings: StartSettings, id: String) -> Self {
        Self {
            redis,
            keys,
            settings,
            signals: Arc::default(),
            id: watch::Sender::new(id.into()),
            role: watch::Sender::new(Role::Processor),
            processed: AtomicU64::new(0),
            beat_now: Notify::new(),
            host: crate::settings::host_name(),
            pid: std::process::id(),
            started_at_ms: crate::message::now_ms(),
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
        self.processed.load(Ordering::Relaxed)
    }

    pub(crate) fn count_processed(&self) {
        self.processed.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether per-message lines are worth logging at info: at the default
    /// cadence someone is watching them; in a benchmark they would flood.
    pub fn chatty(&self) -> bool {
        self.settings.interval >= Duration::from_millis(50)
    }
}

/// `CLIENT SETNAME` value: namespace and copy id.
pub fn client_name(namespace: &str, copy_id: &str) -> String {
    format!("{namespace}:{copy_id}")
}

/// A fresh copy id: the name and a random suffix.
pub fn new_copy_id(name: &str) -> String {
    format!("{name}-{:08x}", rand::random::<u32>())
}

/// Cancels `shutdown` on the first SIGTERM/SIGINT; exits at once on the second.
fn watch_signals(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        let mut signals = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            signals += 1;
            if signals == 1 {
                info!("stopping: finishing the messages in hand (a second signal exits at once)");
                shutdown.cancel();
            } else {
                warn!("second signal: exiting now; the janitor will recover this copy's messages");
                std::process::exit(130);
            }
        }
    });
}

/// Runs a copy until it is told to stop.
pub async fn start(redis_settings: RedisSettings, settings: StartSettings) -> Result<(), Error> {
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone());

    let id = new_copy_id(&settings.name);
    let timeout = (settings.lease / 3).max(Duration::from_millis(200));
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
    let keys = Keys::new(&redis_settings.namespace);
    let node = Arc::new(Node::new(redis, keys, settings, id));
    if !membership::register(&node, &shutdown).await {
        return Ok(());
    }
    info!(
        id = %node.id(),
        role = if node.settings.role == RoleChoice::Auto { "auto" } else { "processor" },
        concurrency = node.settings.concurrency,
        redis = %node.redis.address(),
        namespace = %redis_settings.namespace,
        "copy started"
    );

    let namer = node.clone();
    let namespace = redis_settings.namespace.clone();
    tokio::spawn(connection::subscribe(
        redis_settings,
        timeout,
        move || client_name(&namespace, &namer.id()),
        node.keys.wake_channel(),
        node.keys.lease_channel(),
        node.signals.clone(),
        shutdown.clone(),
    ));
    // The heartbeat outlives `shutdown`: messages in hand are still being
    // acked under this copy's id, which must stay alive until they are.
    let stop_beating = CancellationToken::new();
    let heartbeat = tokio::spawn(membership::beat(node.clone(), stop_beating.clone()));
    let processing = tokio::spawn(processor::run(node.clone(), shutdown.clone()));
    if node.settings.role == RoleChoice::Auto {
        lease::campaign(node.clone(), shutdown.clone()).await;
    }
    let _ = processing.await;
    stop_beating.cancel();
    let _ = heartbeat.await;
    membership::deregister(&node).await;
    info!(id = %node.id(), processed = node.processed(), "copy stopped");
    Ok(())
}
