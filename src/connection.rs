//! Connections to Redis. A copy has exactly two, whatever its concurrency:
//! one multiplexed command connection that reconnects by itself, shared by
//! every task, and one subscriber connection with its own reconnect loop
//! (the classic subscriber of redis-rs does not reconnect, and the RESP3 one
//! needs Redis 6).

use crate::backoff::Backoff;
use crate::error::Error;
use crate::settings::{RedisSettings, WaitReplicas};
use crate::sync::{Locked, ReadWriteLocked};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::{Client, ConnectionAddr, ErrorKind, RedisConnectionInfo, RedisError, RedisResult};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The command connection of a copy, and what it knows about its own health.
///
/// redis-rs's `ConnectionManager` reconnects when a connection is dropped or
/// reset, but not when it merely goes silent (packets dropped, no RST): its
/// requests time out one by one on the same dead socket. So a timed-out
/// request here also starts a replacement connection in the background.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    current: RwLock<Link>,
    client: Maker,
    timeout: Duration,
    address: String,
    client_name: Mutex<String>,
    lost_since: Mutex<Option<Instant>>,
    replacing: AtomicBool,
    failures: AtomicU64,
    /// Times the connection came back after it was lost.
    reconnects: AtomicU64,
    wait: Option<WaitReplicas>,
    /// Since when WAITs come back short (and only one a second waits in full).
    short_since: Mutex<Option<Instant>>,
    /// With sentinels, the settings to ask them again from.
    settings: RedisSettings,
    /// Counts the times the connection moved to another primary.
    moved: tokio::sync::watch::Sender<u64>,
}

fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

/// Opens command connections: to one server, or to a cluster. One lives
/// per connection, so its size does not matter.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
enum Maker {
    Single(Client),
    Cluster(redis::cluster::ClusterClient),
}

/// The command connection: one multiplexed connection to one server, or
/// redis-rs's cluster connection (one per node, following MOVED and ASK).
#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Link {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Link::Single(manager) => manager.req_packed_command(cmd),
            Link::Cluster(cluster) => cluster.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Link::Single(manager) => manager.req_packed_commands(pipeline, offset, count),
            Link::Cluster(cluster) => cluster.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(manager) => manager.get_db(),
            Link::Cluster(cluster) => cluster.get_db(),
        }
    }
}

impl Maker {
    /// A new command connection, named; `must_be_primary` refuses a server
    /// that is a replica (a sentinel may still name a demoted primary).
    async fn connect(
        &self,
        timeout: Duration,
        name: &str,
        must_be_primary: bool,
    ) -> RedisResult<Link> {
        let connect = async {
            let mut link = match self {
                Maker::Single(client) => Link::Single(
                    ConnectionManager::new_with_config(client.clone(), manager_config(timeout))
                        .await?,
                ),
                Maker::Cluster(client) => Link::Cluster(client.get_async_connection().await?),
            };
            redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(name)
                .query_async::<()>(&mut link)
                .await?;
            if must_be_primary {
                let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut link).await?;
                if !matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
                    return Err(RedisError::from((
                        ErrorKind::Client,
                        "not a primary",
                        "the sentinels named a server that is a replica now".to_string(),
                    )));
                }
            }
            Ok(link)
        };
        // The handshake itself can hang on a silent network.
        tokio::time::timeout(timeout * 3, connect)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()))
    }
}

/// A handle on the shared command connection. Every request sent through
/// it is observed ([`Redis::observe`]): no caller can forget to report a
/// lost connection or to replace one that went silent.
#[derive(Clone)]
pub struct Conn {
    link: Link,
    redis: Redis,
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let reply = self.link.req_packed_command(cmd).await;
            self.redis.observe(reply)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let replies = self.link.req_packed_commands(pipeline, offset, count).await;
            self.redis.observe(replies)
        })
    }

    fn get_db(&self) -> i64 {
        self.link.get_db()
    }
}

impl Redis {
    /// A handle on the shared connection, cheap to clone into a task.
    pub fn conn(&self) -> Conn {
        Conn {
            link: self.inner.current.read_locked().clone(),
            redis: self.clone(),
        }
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// Passes a reply through, logging once when the connection is lost and
    /// once when it is back, and replacing a connection that went silent.
    fn observe<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        let inner = &self.inner;
        match &result {
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                inner.failures.fetch_add(1, Ordering::Relaxed);
                let mut lost = inner.lost_since.locked();
                if lost.is_none() {
                    warn!(address = %inner.address, error = %e, "lost the connection to Redis; reconnecting");
                    *lost = Some(Instant::now());
                }
                if e.is_timeout() || inner.settings.sentinel.is_some() {
                    self.replace_connection();
                }
            }
            // The primary was demoted under us: ask the sentinels again.
            Err(e) if inner.settings.sentinel.is_some() && crate::error::is_readonly(e) => {
                inner.failures.fetch_add(1, Ordering::Relaxed);
                self.replace_connection();
            }
            Ok(_) => {
                let since = inner.lost_since.locked().take();
                if let Some(since) = since {
                    inner.reconnects.fetch_add(1, Ordering::Relaxed);
                    info!(address = %inner.address, after_ms = since.elapsed().as_millis() as u64, "connection to Redis is back");
                    // A new server connection has forgotten the client name.
                    let redis = self.clone();
                    tokio::spawn(async move {
                        let name = redis.inner.client_name.locked().clone();
                        let _ = redis.set_client_name(&name).await;
                    });
                }
            }
            Err(_) => {}
        }
        result
    }

    /// How many requests have failed for want of a connection so far. Any of
    /// them may have taken effect in Redis with only its answer lost.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// Times the connection came back after it was lost.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Whether the last request had an answer (no loss seen since).
    pub fn connected(&self) -> bool {
        self.inner.lost_since.locked().is_none()
    }

    /// Opens a new connection and swaps it in, once at a time.
    fn replace_connection(&self) {
        if self.inner.replacing.swap(true, Ordering::AcqRel) {
            return;
        }
        let redis = self.clone();
        tokio::spawn(async move {
            let inner = &redis.inner;
            let follows_sentinels = inner.settings.sentinel.is_some();
            // Asking the sentinels is cheap, and a failover is over in a second or two.
            let most = if follows_sentinels { 500 } else { 2000 };
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(most));
            loop {
                // Nobody but this loop holds the connection: nothing to replace it for.
                if Arc::strong_count(&redis.inner) == 1 {
                    break;
                }
                let name = inner.client_name.locked().clone();
                let client = if follows_sentinels {
                    match find_primary(&inner.settings).await.map(|p| client(&p)) {
                        Ok(Ok(client)) => client,
                        _ => {
                            tokio::time::sleep(backoff.next_wait()).await;
                            continue;
                        }
                    }
                } else {
                    inner.client.clone()
                };
                match client
                    .connect(inner.timeout, &name, follows_sentinels)
                    .await
                {
                    Ok(link) => {
                        *inner.current.write_locked() = link;
                        if follows_sentinels {
                            inner.moved.send_modify(|moves| *moves += 1);
                        }
                        break;
                    }
                    Err(_) => {
                        tokio::time::sleep(backoff.next_wait()).await;
                    }
                }
            }
            inner.replacing.store(false, Ordering::Release);
        });
    }

    /// Changes each time the connection moves to the primary the sentinels
    /// name (the subscriber follows it there).
    pub fn moves(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.moved.subscribe()
    }

    /// Names the connection in `CLIENT LIST` (again after every reconnect).
    pub async fn set_client_name(&self, name: &str) -> RedisResult<()> {
        *self.inner.client_name.locked() = name.to_string();
        let mut conn = self.conn();
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(name)
            .query_async(&mut conn)
            .await
    }
}

/// The settings pointed at the primary: as they are, or, with sentinels,
/// at the primary the first sentinel that answers names now.
async fn find_primary(settings: &RedisSettings) -> Result<RedisSettings, String> {
    let Some(sentinel) = &settings.sentinel else {
        return Ok(settings.clone());
    };
    let mut said = Vec::new();
    for (host, port) in &sentinel.sentinels {
        let ask = async {
            let client = Client::open(ConnectionAddr::Tcp(host.clone(), *port))?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&sentinel.master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        };
        match tokio::time::timeout(Duration::from_secs(1), ask).await {
            Ok(Ok(Some((primary, primary_port)))) => return Ok(settings.at(&primary, primary_port)),
            Ok(Ok(None)) => said.push(format!(
                "{host}:{port} knows no primary '{}'",
                sentinel.master
            )),
            Ok(Err(e)) => said.push(format!("{host}:{port}: {e}")),
            Err(_) => said.push(format!("{host}:{port}: no answer within 1 s")),
        }
    }
    Err(format!(
        "no sentinel named the primary: {}",
        said.join("; ")
    ))
}

/// What [`Redis::replicated`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicated {
    /// `--wait-replicas` is 0: nothing was asked.
    NotAsked,
    /// As many replicas as asked have every write sent so far.
    Confirmed,
    /// Only `acked` of `wanted` confirmed within `--wait-timeout-ms`.
    Short { acked: u64, wanted: u32 },
}

impl Redis {
    /// Waits (WAIT) until `--wait-replicas` replicas have every write this
    /// connection has sent, or `--wait-timeout-ms` passes. The one
    /// connection is shared, so a WAIT covers every task's earlier writes,
    /// and holds back its later requests for as long as it waits.
    pub async fn replicated(&self) -> RedisResult<Replicated> {
        let Some(wait) = self.inner.wait else {
            return Ok(Replicated::NotAsked);
        };
        // WAIT holds the one shared connection: it must give up well before
        // a request would, or every request behind it would time out too.
        // And once the replicas are short, waiting the whole time after every
        // write would slow all work to one write a timeout: until a WAIT
        // is confirmed again, only one a second waits; the others just ask.
        let full = wait
            .timeout
            .min(self.inner.timeout / 2)
            .max(Duration::from_millis(1));
        let waits_in_full = {
            let mut short_since = self.inner.short_since.locked();
            match *short_since {
                Some(at) if at.elapsed() < Duration::from_secs(1) => false,
                Some(_) => {
                    *short_since = Some(Instant::now());
                    true
                }
                None => true,
            }
        };
        let timeout = if waits_in_full {
            full
        } else {
            Duration::from_millis(1)
        };
        let acked: u64 = redis::cmd("WAIT")
            .arg(wait.replicas)
            .arg(timeout.as_millis() as u64)
            .query_async(&mut self.conn())
            .await?;
        let mut short_since = self.inner.short_since.locked();
        Ok(if acked >= u64::from(wait.replicas) {
            *short_since = None;
            Replicated::Confirmed
        } else {
            short_since.get_or_insert_with(Instant::now);
            Replicated::Short {
                acked,
                wanted: wait.replicas,
            }
        })
    }
}

fn client(settings: &RedisSettings) -> Result<Maker, Error> {
    let fail = |e: redis::RedisError| Error::from_redis(&settings.address(), &e);
    let certificates = match settings.tls.as_ref() {
        Some(tls) => {
            crate::tls::install_crypto();
            if tls.insecure {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    warn!("--tls-insecure: the server's certificate is not checked; anyone on the way can read and change what is sent")
                });
            }
            tls.certificates()
        }
        None => None,
    };
    if settings.cluster {
        let mut builder = redis::cluster::ClusterClientBuilder::new(settings.seeds()?);
        if let Some(user) = &settings.user {
            builder = builder.username(user);
        }
        if let Some(password) = &settings.password {
            builder = builder.password(password);
        }
        if let Some(certificates) = certificates {
            builder = builder.certs(certificates);
        }
        return builder.build().map(Maker::Cluster).map_err(fail);
    }
    let info = settings.connection_info()?;
    let client = match certificates {
        Some(certificates) => Client::build_with_tls(info, certificates),
        None => Client::open(info),
    };
    client.map(Maker::Single).map_err(fail)
}

/// Connects once; fails within a few `timeout`s when Redis cannot be reached.
/// `timeout` also bounds every later request.
pub async fn connect(
    settings: &RedisSettings,
    client_name: &str,
    timeout: Duration,
) -> Result<Redis, Error> {
    let address = settings.address();
    let primary = find_primary(settings)
        .await
        .map_err(|detail| Error::Unreachable {
            address: address.clone(),
            detail,
        })?;
    let client = client(&primary)?;
    let link = client
        .connect(timeout, client_name, settings.sentinel.is_some())
        .await
        .map_err(|e| Error::from_redis(&address, &e))?;
    Ok(Redis {
        inner: Arc::new(Inner {
            current: RwLock::new(link),
            client,
            timeout,
            address,
            client_name: Mutex::new(client_name.to_string()),
            lost_since: Mutex::default(),
            replacing: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            wait: settings.wait,
            short_since: Mutex::default(),
            settings: settings.clone(),
            moved: tokio::sync::watch::Sender::new(0),
        }),
    })
}

/// Connects, retrying with capped backoff while Redis is unreachable (copies
/// often start before Redis does) and saying so every few seconds. A refused
/// login is not retried: it will not fix itself. `None` on shutdown.
pub async fn connect_retrying(
    settings: &RedisSettings,
    client_name: &str,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<Redis>, Error> {
    let started = Instant::now();
    let mut last_said: Option<Instant> = None;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        match connect(settings, client_name, timeout).await {
            Ok(redis) => {
                if last_said.is_some() {
                    info!(address = %redis.address(), after_ms = started.elapsed().as_millis() as u64, "Redis is reachable");
                }
                return Ok(Some(redis));
            }
            // Neither a refused login nor a certificate fixes itself.
            Err(e @ (Error::Auth { .. } | Error::Tls { .. } | Error::Settings(_))) => {
                return Err(e)
            }
            Err(e) => {
                if last_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(3)) {
                    warn!("{e}; retrying");
                    last_said = Some(Instant::now());
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff.next_wait()) => {}
        }
    }
}

/// With sentinels: listens to them for `+switch-master` of our primary and
/// moves the command connection (and with it the subscriber) at once,
/// instead of at the next lost connection or `READONLY`. One sentinel at a
/// time, the next when it is lost; until shutdown.
pub async fn follow_sentinels(redis: Redis, shutdown: CancellationToken) {
    let Some(sentinel) = redis.inner.settings.sentinel.clone() else {
        return;
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    for (host, port) in sentinel.sentinels.iter().cycle() {
        let listen = async {
            let client = Client::open(ConnectionAddr::Tcp(host.clone(), *port))?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe("+switch-master").await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        if let Ok(Ok(pubsub)) = tokio::time::timeout(Duration::from_secs(1), listen).await {
            backoff.reset();
            let (mut sink, mut events) = pubsub.split();
            // A sentinel gone silent is noticed by its unanswered ping.
            let mut ping = tokio::time::interval(SUBSCRIBER_PING);
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    event = events.next() => event,
                    _ = ping.tick() => {
                        let pong = tokio::time::timeout(Duration::from_secs(1), sink.ping::<redis::Value>()).await;
                        if matches!(pong, Ok(Ok(_))) {
                            continue;
                        }
                        break;
                    }
                };
                let Some(event) = event else { break };
                // "<master name> <old ip> <old port> <new ip> <new port>"
                let payload: String = event.get_payload().unwrap_or_default();
                if payload.split(' ').next() == Some(sentinel.master.as_str()) {
                    info!(switch = %crate::escape::for_terminal(&payload), "the sentinels switched the primary; following");
                    redis.replace_connection();
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_wait()) => {}
        }
    }
}

/// What the subscriber hears, for the tasks that wait on it. A `Notify`
/// keeps one wake-up for a task that is busy when it arrives.
#[derive(Debug, Default)]
pub struct Signals {
    /// A message waits in a queue that was empty, or a poll is due.
    pub wake: Notify,
    /// The lease was released, or its state is unknown: look at it now.
    pub lease_free: Notify,
    /// This copy's processor is waiting for work with a slot free. A
    /// wake-up of this copy's shard that arrives otherwise (it generates,
    /// or every slot is busy) is passed on to every copy.
    pub ready: std::sync::atomic::AtomicBool,
}

/// How often the subscriber checks that its connection still answers.
const SUBSCRIBER_PING: Duration = Duration::from_secs(3);

/// Sends one command on a raw connection and reads its one-line reply.
async fn raw_command<S>(stream: &mut S, cmd: &redis::Cmd) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream
        .write_all(&cmd.get_packed_command())
        .await
        .map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' && line.len() < 4096 {
        stream
            .read_exact(&mut byte)
            .await
            .map_err(|e| e.to_string())?;
        line.push(byte[0]);
    }
    match line.first() {
        Some(b'-') => Err(crate::escape::bytes_for_terminal(line.trim_ascii_end())),
        _ => Ok(()),
    }
}

/// A subscriber connection that names itself in `CLIENT LIST`. redis-rs
/// offers no way to send CLIENT SETNAME on a subscriber, so the login and
/// the name are sent on the raw socket before redis-rs takes it over.
async fn named_pubsub(settings: &RedisSettings, name: &str) -> Result<PubSub, String> {
    if !settings.cluster {
        return pubsub_on(&find_primary(settings).await?, name).await;
    }
    // A PUBLISH reaches every node of a cluster: any seed that answers will do.
    let mut said = Vec::new();
    for seed in settings.seeds().map_err(|e| e.to_string())? {
        let (ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. }) =
            seed.addr()
        else {
            continue;
        };
        let node = RedisSettings {
            cluster: false,
            ..settings.at(host, *port)
        };
        match pubsub_on(&node, name).await {
            Ok(pubsub) => return Ok(pubsub),
            Err(e) => said.push(format!("{host}:{port}: {e}")),
        }
    }
    Err(format!("no seed node answered: {}", said.join("; ")))
}

/// A named subscriber on the one server of `settings`.
async fn pubsub_on(settings: &RedisSettings, name: &str) -> Result<PubSub, String> {
    let info = settings.connection_info().map_err(|e| e.to_string())?;
    let login = info.redis_settings();
    match (info.addr(), &settings.tls) {
        (ConnectionAddr::TcpTls { host, port, .. }, Some(tls)) => {
            let stream = within(crate::tls::connect(host, *port, tls)).await?;
            named(stream, login, name).await
        }
        (ConnectionAddr::Tcp(host, port), _) => {
            let connect = async {
                TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| e.to_string())
            };
            named(within(connect).await?, login, name).await
        }
        _ => Client::open(info.clone())
            .map_err(|e| e.to_string())?
            .get_async_pubsub()
            .await
            .map_err(|e| e.to_string()),
    }
}

/// `connecting`, given up after 5 s.
async fn within<T>(
    connecting: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .map_err(|_| "connection timed out".to_string())?
}

/// A subscriber on `stream`, logged in and named on the raw stream before
/// redis-rs takes it over.
async fn named<S>(mut stream: S, login: &RedisConnectionInfo, name: &str) -> Result<PubSub, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if let Some(password) = login.password() {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = login.username() {
            auth.arg(user);
        }
        raw_command(&mut stream, auth.arg(password)).await?;
    }
    raw_command(&mut stream, redis::cmd("CLIENT").arg("SETNAME").arg(name)).await?;
    PubSub::new(&RedisConnectionInfo::default(), stream)
        .await
        .map_err(|e| e.to_string())
}

/// Keeps one subscriber connection on the `wake` channel, this copy's wake
/// shard and the `lease` channel until shutdown, reconnecting with backoff,
/// and forwards what it hears.
#[allow(clippy::too_many_arguments)]
pub async fn subscribe(
    redis: Redis,
    client_name: impl Fn() -> String,
    wake_channel: String,
    wake_shard: String,
    lease_channel: String,
    signals: Arc<Signals>,
    shutdown: CancellationToken,
) {
    let (settings, ping_timeout) = (&redis.inner.settings, redis.inner.timeout);
    let mut moves = redis.moves();
    let address = settings.address();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut lost_since: Option<Instant> = None;
    while !shutdown.is_cancelled() {
        // Finding a node has its own time limits (1 s a sentinel, 5 s a
        // seed); then a silent network must not leave SUBSCRIBE waiting.
        let attempt = async {
            let mut pubsub = named_pubsub(settings, &client_name()).await?;
            let subscribing = async {
                pubsub.subscribe(&wake_channel).await?;
                pubsub.subscribe(&wake_shard).await?;
                pubsub.subscribe(&lease_channel).await
            };
            tokio::time::timeout(ping_timeout * 3, subscribing)
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(pubsub)
        };
        let pubsub = match attempt.await {
            Ok(pubsub) => pubsub,
            Err(e) => {
                if lost_since.is_none() {
                    warn!(%address, error = %e, "subscriber cannot connect; retrying");
                    lost_since = Some(Instant::now());
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_wait()) => {}
                }
                continue;
            }
        };
        if let Some(since) = lost_since.take() {
            info!(%address, after_ms = since.elapsed().as_millis() as u64, "subscriber is back");
        }
        backoff.reset();
        // Anything published while we were away was missed: look now.
        signals.wake.notify_one();
        signals.lease_free.notify_one();
        let (mut sink, mut stream) = pubsub.split();
        // A silent network shows no error on a connection that only
        // listens: a ping that does not come back ends it. Every 3 s is
        // enough, as the heartbeat's poll covers wake-ups missed meanwhile,
        // and it keeps 200 idle copies cheap.
        let mut ping = tokio::time::interval(SUBSCRIBER_PING);
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return,
                // The command connection moved to a new primary: follow it.
                Ok(()) = moves.changed() => break,
                msg = stream.next() => msg,
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(ping_timeout, sink.ping::<redis::Value>()).await;
                    if matches!(pong, Ok(Ok(_))) {
                        continue;
                    }
                    break;
                }
            };
            let Some(msg) = msg else { break };
            let channel = msg.get_channel_name();
            if channel == lease_channel {
                signals.lease_free.notify_one();
                continue;
            }
            if channel == wake_shard && !signals.ready.load(Ordering::Relaxed) {
                // Meant for a copy that can take it now, and this one cannot.
                let (redis, channel) = (redis.clone(), wake_channel.clone());
                tokio::spawn(async move {
                    let _: RedisResult<i64> = redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg("job")
                        .query_async(&mut redis.conn())
                        .await;
                });
            }
            signals.wake.notify_one();
        }
        warn!(%address, "subscriber connection lost; reconnecting");
        lost_since = Some(Instant::now());
    }
}
