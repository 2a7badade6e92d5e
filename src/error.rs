//! The errors a command can end with, each one line for a person, and the
//! exit code that goes with it (docs/SPEC.md §3: 1 runtime failure, 2 bad usage).

use crate::settings::SettingsError;
use crate::sync::Locked;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Settings(#[from] SettingsError),
    #[error("cannot reach Redis at {address}: {detail}; check --host/--port (or --url), that redis-server is running there, and --tls if it speaks TLS")]
    Unreachable { address: String, detail: String },
    #[error("Redis at {address} refused to log in: {detail}; check --pass/REDIS_PASS and --user/REDIS_USER")]
    Auth { address: String, detail: String },
    #[error("TLS with {address} failed: {detail}; check --tls-ca (the CA that signed the server's certificate), --tls-cert/--tls-key, and that the host name is in the certificate")]
    Tls { address: String, detail: String },
    #[error("{address} is not a Redis server (it answered something else: {detail}); check --host/--port (or --url)")]
    NotRedis { address: String, detail: String },
    #[error("Redis at {address} failed: {detail}")]
    Redis { address: String, detail: String },
    #[error("cannot listen on {option} {address}: {detail}")]
    Listen {
        option: &'static str,
        address: String,
        detail: String,
    },
    #[error("writing to stdout failed: {0}")]
    Output(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Settings(_) => 2,
            _ => 1,
        }
    }

    /// Classifies a redis-rs error met while talking to `address`.
    pub fn from_redis(address: &str, err: &redis::RedisError) -> Self {
        let detail = crate::escape::for_terminal(&err.to_string()).into_owned();
        let address = address.to_string();
        // The cluster client reports a refused login inside an I/O error.
        let auth = err.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(err.code(), Some("NOAUTH" | "WRONGPASS"))
            || detail.contains("WRONGPASS")
            || detail.contains("NOAUTH");
        if auth {
            Error::Auth { address, detail }
        } else if is_tls_failure(&detail) {
            Error::Tls { address, detail }
        } else if err.kind() == redis::ErrorKind::Parse {
            let detail = detail.split("\\n").next().unwrap_or_default().to_string();
            Error::NotRedis { address, detail }
        } else if err.is_io_error() || err.is_connection_refusal() || err.is_timeout() {
            Error::Unreachable { address, detail }
        } else {
            Error::Redis { address, detail }
        }
    }
}

/// Whether a failed connection failed in the TLS handshake (rustls's own
/// words for a refused certificate or a fatal alert).
fn is_tls_failure(detail: &str) -> bool {
    [
        "invalid peer certificate",
        "received fatal alert",
        "InvalidCertificate",
        "tls handshake",
        "TLS handshake",
    ]
    .iter()
    .any(|words| detail.contains(words))
}

/// The code of a Redis error: its own, or, for a script that failed (which
/// Redis before 7 reports as `ERR Error running script ...: -READONLY ...`),
/// the code of the command inside it that failed.
fn code(err: &redis::RedisError) -> Option<&'static str> {
    const CODES: [&str; 8] = [
        "OOM",
        "READONLY",
        "WRONGTYPE",
        "NOPERM",
        "NOAUTH",
        "MISCONF",
        "BUSY",
        "LOADING",
    ];
    if let Some(code) = err.code() {
        if let Some(known) = CODES.iter().find(|c| **c == code) {
            return Some(known);
        }
    }
    let text = err.to_string();
    CODES
        .iter()
        .find(|c| text.contains(&format!("-{c} ")) || text.contains(&format!("{c}: ")))
        .copied()
}

/// Whether Redis refused a write because it is a replica now.
pub fn is_readonly(err: &redis::RedisError) -> bool {
    code(err) == Some("READONLY")
}

/// What to check when Redis answers a request with an error, by its code.
pub fn hint(err: &redis::RedisError) -> &'static str {
    match code(err) {
        Some("OOM") => "Redis is at its maxmemory: raise maxmemory or free memory (the queue is never evicted with maxmemory-policy noeviction)",
        Some("READONLY") => "this Redis is a replica: point --host/--url at the primary",
        Some("WRONGTYPE") => "another program wrote a key of this namespace: delete or fix the key named; the messages are held until then",
        Some("NOPERM" | "NOAUTH") => "the Redis user lacks a permission: see the README's ACL line",
        Some("MISCONF") => "Redis cannot persist (disk full or unwritable?): see its log",
        Some("BUSY") => "Redis is busy running a long script",
        Some("LOADING") => "Redis is loading its dataset: wait",
        _ if err.to_string().contains("unexpected script reply") => {
            "Redis answered in a shape redis-ql does not know: is this a Redis server of version 3.2 or later?"
        }
        _ if err.kind() == redis::ErrorKind::Parse => {
            "the server does not speak the Redis protocol: is this port a Redis server?"
        }
        _ => "see the Redis log",
    }
}

/// Whether `err` only says that the connection failed (those are reported
/// once, by the connection, when it is lost and when it is back).
pub fn is_connection_error(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_timeout()
        || err.is_connection_refusal()
}

/// The last error a copy met, shown in `status`; logged at `error` level the
/// first time and then at most every [`LastError::REPEAT`] while it repeats,
/// so that a problem that lasts names itself without flooding the log.
#[derive(Debug, Default)]
pub struct LastError {
    inner: std::sync::Mutex<LastErrorInner>,
}

#[derive(Debug, Default)]
struct LastErrorInner {
    text: Option<String>,
    at_ms: u64,
    logged: std::collections::HashMap<String, std::time::Instant>,
}

impl LastError {
    pub const REPEAT: std::time::Duration = std::time::Duration::from_secs(10);

    /// Records and logs a failed request of `what` (connection failures
    /// are logged by the connection itself, and only recorded).
    pub fn report(&self, what: &str, err: &redis::RedisError) {
        let detail = crate::escape::for_terminal(&err.to_string()).into_owned();
        let text = format!("{what}: {detail}");
        let log = !is_connection_error(err) && self.note(&text);
        if log {
            tracing::error!(error = %detail, check = hint(err), "{what} failed");
        }
    }

    /// Records and logs a problem that is not a failed request.
    pub fn problem(&self, what: &str, detail: &str) {
        let detail = crate::escape::for_terminal(detail).into_owned();
        let text = format!("{what}: {detail}");
        if self.note(&text) {
            tracing::error!(problem = %detail, "{what}");
        }
    }

    /// Stores `text`; true when the same text was not logged within REPEAT
    /// (each problem, each key named, is logged on its own).
    fn note(&self, text: &str) -> bool {
        let mut inner = self.inner.locked();
        inner.text = Some(text.to_string());
        inner.at_ms = crate::message::now_ms();
        let now = std::time::Instant::now();
        inner
            .logged
            .retain(|_, at| now.duration_since(*at) < Self::REPEAT);
        if inner.logged.contains_key(text) {
            return false;
        }
        inner.logged.insert(text.to_string(), now);
        true
    }

    /// The last error and when it happened (wall clock, ms), if any.
    pub fn get(&self) -> Option<(String, u64)> {
        let inner = self.inner.locked();
        inner.text.clone().map(|t| (t, inner.at_ms))
    }
}
