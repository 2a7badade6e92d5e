//! `app start --http ADDR`: the copy's probes and metrics, for Prometheus,
//! Kubernetes and a container's HEALTHCHECK.
//!
//! - `GET /healthz`: 200 while the process can work (it answers, and it is
//!   not stopping); 503 once it is stopping.
//! - `GET /readyz`: 200 while the copy is registered with a live heartbeat
//!   and its connection to Redis answers; 503, with the reason, otherwise
//!   (still connecting, heartbeat late, Redis lost, stopping).
//! - `GET /metrics`: [`crate::metrics`] in Prometheus's text format.
//!
//! The listener is bound before Redis is reached, so that a probe answers
//! (not ready) while a copy waits for Redis, and a taken port fails the
//! start at once.

use crate::copy::CopyState;
use crate::error::Error;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// What the endpoints look at: the copy, once it has one.
struct Probe {
    copy: OnceLock<(Arc<CopyState>, Registry)>,
    stopping: CancellationToken,
}

/// The running server; [`Server::stop`] ends it.
pub struct Server {
    probe: Arc<Probe>,
    end: CancellationToken,
    task: JoinHandle<()>,
}

/// Binds `addr` and serves; `stopping` is the copy's shutdown (probes then
/// answer 503 while the copy finishes its work).
pub async fn start(addr: SocketAddr, stopping: CancellationToken) -> Result<Server, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Listen {
            option: "--http",
            address: addr.to_string(),
            detail: e.to_string(),
        })?;
    let local = listener.local_addr().unwrap_or(addr);
    let probe = Arc::new(Probe {
        copy: OnceLock::new(),
        stopping,
    });
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probe.clone());
    let end = CancellationToken::new();
    let until = end.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(until)
            .await
        {
            tracing::warn!(error = %e, "the --http server stopped");
        }
    });
    info!(address = %local, "serving /metrics, /healthz and /readyz");
    Ok(Server { probe, end, task })
}

impl Server {
    /// From now on the endpoints describe `copy`.
    pub fn attach(&self, copy: &Arc<CopyState>) {
        let _ = self
            .probe
            .copy
            .set((copy.clone(), crate::metrics::registry(copy)));
    }

    /// Stops serving and waits for the server to end.
    pub async fn stop(self) {
        self.end.cancel();
        let _ = self.task.await;
    }
}

async fn healthz(State(probe): State<Arc<Probe>>) -> impl IntoResponse {
    if probe.stopping.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn readyz(State(probe): State<Arc<Probe>>) -> impl IntoResponse {
    let unready = if probe.stopping.is_cancelled() {
        Some("stopping")
    } else {
        match probe.copy.get() {
            None => Some("connecting to Redis"),
            Some((copy, _)) if !copy.redis.connected() => Some("the connection to Redis is lost"),
            Some((copy, _)) if !copy.heartbeat_live() => Some("the heartbeat is late"),
            Some(_) => None,
        }
    };
    match unready {
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
        None => (StatusCode::OK, "ready\n".to_string()),
    }
}

async fn metrics(State(probe): State<Arc<Probe>>) -> impl IntoResponse {
    let body = probe
        .copy
        .get()
        .map(|(_, registry)| crate::metrics::render(registry))
        .unwrap_or_else(|| "# EOF\n".to_string());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}
