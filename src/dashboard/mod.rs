//! `app dashboard`: one web page for people and a JSON API under `/api/`
//! (docs/SPEC.md §7), for those who would rather look at a page than run
//! `app status --watch`.
//!
//! The dashboard is just another client of Redis: it holds one command
//! connection, never registers, and never takes part in election or
//! processing; any number may run. It reads the status at most every
//! [`sampler::FRESH`] whatever the number of pages open, and once a second
//! for the chart. Actions that change Redis (take errors, requeue or purge
//! dead letters) need `--token` as a bearer token; without one it is
//! read-only. The page and its script are built into the binary (no CDN:
//! it works offline) and put every text from Redis in as text, never as
//! markup, under a Content-Security-Policy that forbids inline script.

mod sampler;

use crate::connection::{self, Redis};
use crate::error::Error;
use crate::keys::Keys;
use crate::settings::{DashboardSettings, RedisSettings};
use crate::{dead, drain};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sampler::Sampler;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long one request to Redis may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Records a page of a list shows, and the most it may ask for.
const PAGE: u64 = 50;
const MAX_PAGE: u64 = 500;
/// The most errors one "take and download" takes.
const MAX_TAKE: u64 = 10_000;

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const APP_CSS: &str = include_str!("page/app.css");
const FAVICON_SVG: &str = include_str!("page/favicon.svg");

/// What every request looks at.
struct Dashboard {
    redis: OnceLock<Redis>,
    keys: Keys,
    /// Where Redis is, for the page (never with a password).
    address: String,
    token: Option<String>,
    sampler: Sampler,
}

/// Serves until `shutdown`: binds `--listen` first, so that a taken port
/// fails at once, then connects to Redis (retrying while it is down; the
/// page says so meanwhile).
pub async fn run(
    redis_settings: RedisSettings,
    settings: DashboardSettings,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| Error::Listen {
            option: "--listen",
            address: settings.listen.to_string(),
            detail: e.to_string(),
        })?;
    let local = listener.local_addr().unwrap_or(settings.listen);
    if settings.token.is_none() && !local.ip().is_loopback() {
        warn!(address = %local, "the dashboard listens beyond this machine without --token: anyone who reaches it can read the errors and dead letters (it stays read-only)");
    }
    let keys = Keys::new(&redis_settings.namespace);
    let dashboard = Arc::new(Dashboard {
        redis: OnceLock::new(),
        address: redis_settings.address(),
        token: settings.token.clone(),
        keys,
        sampler: Sampler::default(),
    });
    let stop_serving = CancellationToken::new();
    let until = stop_serving.clone().cancelled_owned();
    let router = router(dashboard.clone());
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(until)
            .await
        {
            warn!(error = %e, "the dashboard's server stopped");
        }
    });
    info!(
        address = %local,
        read_only = settings.token.is_none(),
        "dashboard: open http://{local}/"
    );
    let name = format!("{}:dashboard", dashboard.keys.namespace());
    let ran = async {
        let Some(redis) =
            connection::connect_retrying(&redis_settings, &name, REQUEST_TIMEOUT, &shutdown)
                .await?
        else {
            return Ok(());
        };
        let redis = dashboard.redis.get_or_init(|| redis);
        tokio::join!(
            connection::follow_sentinels(redis.clone(), shutdown.clone()),
            dashboard.sampler.run(redis, &dashboard.keys, &shutdown),
        );
        Ok(())
    }
    .await;
    stop_serving.cancel();
    let _ = server.await;
    ran
}

fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
        .route("/favicon.svg", get(|| asset("image/svg+xml", FAVICON_SVG)))
        .route("/api/info", get(info_of))
        .route("/api/status", get(status))
        .route("/api/series", get(series))
        .route("/api/errors", get(errors))
        .route("/api/dead", get(dead_letters))
        .route("/api/errors/take", post(take_errors))
        .route("/api/errors/settle", post(settle_errors))
        .route("/api/errors/give-back", post(give_back_errors))
        .route("/api/dead/requeue", post(requeue_dead))
        .route("/api/dead/purge", post(purge_dead))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such page".to_string()) })
        .layer(axum::middleware::map_response(guard_headers))
        .with_state(dashboard)
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type)], body)
}

/// On every answer: nothing but our own script and style runs or loads,
/// the page is never framed, and no answer is kept by a cache.
async fn guard_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// An answer of the API that is not a success: `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(StatusCode::BAD_GATEWAY, e.to_string())
    }
}

type Answer = Result<Response, ApiError>;

impl Dashboard {
    fn redis(&self) -> Result<&Redis, ApiError> {
        self.redis.get().ok_or_else(|| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("connecting to Redis at {}", self.address),
            )
        })
    }

    /// Lets a changing action through only with the right bearer token.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "this dashboard is read-only: start it with --token (or APP_DASHBOARD_TOKEN) to allow changes".to_string(),
            ));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if same_secret(given.as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "this action needs the dashboard's token (Authorization: Bearer ...)".to_string(),
            ))
        }
    }
}

/// Compares in a time that does not depend on where the two differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

fn json_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn info_of(State(d): State<Arc<Dashboard>>) -> Json<Value> {
    Json(json!({
        "read_only": d.token.is_none(),
        "connected": d.redis.get().is_some(),
        "namespace": d.keys.namespace(),
        "redis": d.address,
        "version": env!("CARGO_PKG_VERSION"),
        "refresh_ms": sampler::EVERY.as_millis() as u64,
    }))
}

/// The status of docs/SPEC.md §4, as `app status --json` prints it.
async fn status(State(d): State<Arc<Dashboard>>) -> Answer {
    let latest = d.sampler.status(d.redis()?, &d.keys).await;
    match latest.json {
        Ok(json) => Ok(json_text(json)),
        Err(e) => Err(ApiError(StatusCode::BAD_GATEWAY, e)),
    }
}

/// Generated, processed and errors per second, a point a second, oldest first.
async fn series(State(d): State<Arc<Dashboard>>) -> Json<Value> {
    Json(json!({
        "every_ms": sampler::EVERY.as_millis() as u64,
        "points": d.sampler.rates(),
    }))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    offset: Option<u64>,
    limit: Option<u64>,
}

/// A page of a list whose newest item is on the left, newest first:
/// `{"total", "offset", "items"}`, each item as `as_json` shows it.
async fn newest_first(
    d: &Dashboard,
    key: String,
    page: &PageQuery,
    as_json: impl Fn(&[u8]) -> Value,
) -> Answer {
    let redis = d.redis()?;
    let offset = page.offset.unwrap_or(0).min(i64::MAX as u64 / 2);
    let limit = page.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let (total, items): (u64, Vec<Vec<u8>>) = redis::pipe()
        .llen(&key)
        .lrange(&key, offset as isize, (offset + limit - 1) as isize)
        .query_async(&mut redis.conn())
        .await
        .map_err(|e| Error::from_redis(redis.address(), &e))?;
    let items: Vec<Value> = items.iter().map(|raw| as_json(raw)).collect();
    Ok(Json(json!({ "total": total, "offset": offset, "items": items })).into_response())
}

/// The stored errors, newest first, each as `get-errors --json` prints it.
async fn errors(State(d): State<Arc<Dashboard>>, Query(page): Query<PageQuery>) -> Answer {
    newest_first(&d, d.keys.errors(), &page, |raw| {
        serde_json::from_str(&drain::json_line(raw)).unwrap_or(Value::Null)
    })
    .await
}

/// The dead-letter list, newest first, each as `dead list --json` prints it.
async fn dead_letters(State(d): State<Arc<Dashboard>>, Query(page): Query<PageQuery>) -> Answer {
    newest_first(&d, d.keys.dead(), &page, dead::record_json).await
}

#[derive(Debug, Deserialize)]
struct TakeQuery {
    limit: Option<u64>,
}

/// Takes errors for a download, oldest first, as `get-errors --json` lines.
/// They stay held in Redis until the page settles them (it has saved the
/// file) or gives them back; unsettled, they go back by themselves after
/// [`drain::DOWNLOAD_HOLD`].
async fn take_errors(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(take): Query<TakeQuery>,
) -> Answer {
    d.authorize(&headers)?;
    let limit = take.limit.unwrap_or(1000).clamp(1, MAX_TAKE);
    let download = drain::take_for_download(d.redis()?, &d.keys, limit).await?;
    let mut ndjson = String::new();
    for raw in &download.records {
        ndjson.push_str(&drain::json_line(raw));
        ndjson.push('\n');
    }
    info!(run = %download.run, errors = download.records.len(), "dashboard: errors taken for a download");
    Ok(Json(json!({
        "run": download.run,
        "taken": download.records.len(),
        "hold_ms": drain::DOWNLOAD_HOLD.as_millis() as u64,
        "ndjson": ndjson,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct Run {
    run: String,
    #[serde(default)]
    taken: u64,
}

fn checked_run(run: &Run) -> Result<&str, ApiError> {
    if drain::is_run_id(&run.run) {
        Ok(&run.run)
    } else {
        Err(ApiError(
            StatusCode::BAD_REQUEST,
            "run: not the id of a take".to_string(),
        ))
    }
}

/// The page has saved the errors of a take: they are forgotten in Redis.
async fn settle_errors(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Json(run): Json<Run>,
) -> Answer {
    d.authorize(&headers)?;
    let id = checked_run(&run)?;
    match drain::settle_download(d.redis()?, &d.keys, id, run.taken).await {
        Ok(settled) => Ok(Json(json!({ "settled": settled })).into_response()),
        Err(Error::Output(why)) => Err(ApiError(StatusCode::CONFLICT, why)),
        Err(e) => Err(e.into()),
    }
}

/// The page could not save the errors of a take: they go back at once.
async fn give_back_errors(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Json(run): Json<Run>,
) -> Answer {
    d.authorize(&headers)?;
    let id = checked_run(&run)?;
    let returned = drain::give_back(d.redis()?, &d.keys, id).await?;
    Ok(Json(json!({ "returned": returned })).into_response())
}

#[derive(Debug, Deserialize)]
struct RequeueBody {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    seqs: Vec<u64>,
}

/// `dead requeue --all` or `--seq N...`.
async fn requeue_dead(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Json(body): Json<RequeueBody>,
) -> Answer {
    d.authorize(&headers)?;
    let seqs = match (body.all, body.seqs.is_empty()) {
        (true, true) => None,
        (false, false) => Some(body.seqs.as_slice()),
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "give either \"all\": true or \"seqs\": [N, ...]".to_string(),
            ))
        }
    };
    let done = dead::requeue(d.redis()?, &d.keys, seqs).await?;
    info!(requeued = done.requeued, "dashboard: dead letters requeued");
    Ok(Json(json!({
        "requeued": done.requeued,
        "kept": done.kept,
        "not_found": done.not_found,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct PurgeBody {
    /// How many records the person saw and agreed to delete: the oldest;
    /// any that arrived since are kept.
    count: u64,
}

/// `dead purge`, of the records the page showed.
async fn purge_dead(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Json(body): Json<PurgeBody>,
) -> Answer {
    d.authorize(&headers)?;
    let deleted = dead::purge(d.redis()?, &d.keys, body.count).await?;
    info!(deleted, "dashboard: dead letters purged");
    Ok(Json(json!({ "deleted": deleted })).into_response())
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cres", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }
}
