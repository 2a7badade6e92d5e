//! The errors a command can end with, each one line for a person, and the
//! exit code that goes with it (SPEC §3: 1 runtime failure, 2 bad usage).

use crate::settings::SettingsError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Settings(#[from] SettingsError),
    #[error("cannot reach Redis at {address}: {detail}; check --host/--port (or --url) and that redis-server is running there")]
    Unreachable { address: String, detail: String },
    #[error("Redis at {address} refused to log in: {detail}; check --pass/REDIS_PASS and --user/REDIS_USER")]
    Auth { address: String, detail: String },
    #[error("Redis at {address} failed: {detail}")]
    Redis { address: String, detail: String },
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
        let auth = err.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(err.code(), Some("NOAUTH" | "WRONGPASS"));
        if auth {
            Error::Auth { address, detail }
        } else if err.is_io_error() || err.is_connection_refusal() || err.is_timeout() {
            Error::Unreachable { address, detail }
        } else {
            Error::Redis { address, detail }
        }
    }
}
