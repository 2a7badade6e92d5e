//! Settings, layered CLI > environment > `--config` file > `config/default.toml`,
//! and validated once, so that every later module can trust them.
//!
//! clap has already merged the CLI with the environment; this module puts the
//! result over the files and checks every value. Each failure is one line that
//! names the option or the file and line, and means exit code 2.

use crate::cli::{RedisArgs, StartArgs};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// A bad option, value or config file: the one line to print before exit 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

fn invalid(option: &str, value: impl std::fmt::Display, why: &str) -> SettingsError {
    SettingsError(format!("invalid value '{value}' for '--{option}': {why}"))
}

/// The shape of a config file; keys are the long option names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    redis: FileRedis,
    #[serde(default)]
    start: FileStart,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRedis {
    host: Option<String>,
    port: Option<u16>,
    pass: Option<String>,
    db: Option<i64>,
    user: Option<String>,
    url: Option<String>,
    namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileStart {
    concurrency: Option<usize>,
    generator: Option<String>,
    interval_ms: Option<u64>,
    error_rate: Option<f64>,
    work_ms: Option<u64>,
    lease_ms: Option<u64>,
    role: Option<String>,
    name: Option<String>,
    max_deliveries: Option<u32>,
    shutdown_timeout_ms: Option<u64>,
    max_item_bytes: Option<u64>,
}

impl FileConfig {
    /// Parses a config file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SettingsError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().replace('\n', " ");
            match line {
                Some(line) => {
                    SettingsError(format!("config file {origin}, line {line}: {message}"))
                }
                None => SettingsError(format!("config file {origin}: {message}")),
            }
        })
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path)
            .map_err(|e| SettingsError(format!("cannot read config file {origin}: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| SettingsError(format!("config file {origin} is not UTF-8 text")))?;
        Self::parse(&text, &origin)
    }

    fn defaults() -> Self {
        Self::parse(DEFAULTS, "config/default.toml").unwrap_or_default()
    }
}

/// Where Redis is and how to log in.
#[derive(Clone)]
pub struct RedisSettings {
    pub host: String,
    pub port: u16,
    pub password: Option<String>,
    pub db: i64,
    pub user: Option<String>,
    pub url: Option<String>,
    pub namespace: String,
}

// The password never reaches a log line, not even through {:?}.
impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("address", &self.address())
            .field("db", &self.db)
            .field("user", &self.user)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl RedisSettings {
    /// The connection parameters for redis-rs.
    pub fn connection_info(&self) -> Result<ConnectionInfo, SettingsError> {
        if let Some(url) = &self.url {
            return parse_url(url);
        }
        let mut redis = RedisConnectionInfo::default().set_db(self.db);
        if let Some(user) = &self.user {
            redis = redis.set_username(user);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        let info = ConnectionAddr::Tcp(self.host.clone(), self.port)
            .into_connection_info()
            .map_err(|e| invalid("host", &self.host, &e.to_string()))?;
        Ok(info.set_redis_settings(redis))
    }

    /// `host:port`, for messages; never the password.
    pub fn address(&self) -> String {
        match self.url.as_deref().map(parse_url) {
            Some(Ok(info)) => info.addr().to_string(),
            Some(Err(_)) => "the --url address".to_string(),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

fn parse_url(url: &str) -> Result<ConnectionInfo, SettingsError> {
    // The URL may hold a password: errors name the option, never the value.
    if url.starts_with("rediss://") {
        return Err(SettingsError(
            "invalid value for '--url': rediss:// (TLS) is not supported by this build; use redis://"
                .to_string(),
        ));
    }
    if !url.starts_with("redis://") {
        return Err(SettingsError(
            "invalid value for '--url': it must start with redis://".to_string(),
        ));
    }
    url.into_connection_info()
        .map_err(|e| SettingsError(format!("invalid value for '--url': {e}")))
}

/// Whether a copy may become the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChoice {
    Auto,
    Processor,
}

/// Everything `app start` needs.
#[derive(Debug, Clone)]
pub struct StartSettings {
    pub concurrency: usize,
    pub generator: String,
    pub interval: Duration,
    pub error_rate: f64,
    pub work: Duration,
    pub lease: Duration,
    pub role: RoleChoice,
    pub name: String,
    pub max_deliveries: u32,
    pub shutdown_timeout: Duration,
    pub max_item_bytes: u64,
}

/// Loads the files named on the command line over the built-in defaults.
pub fn files(config: Option<&Path>) -> Result<(FileConfig, FileConfig), SettingsError> {
    let user = match config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    Ok((user, FileConfig::defaults()))
}

fn pick<T>(cli: Option<T>, file: Option<T>, default: Option<T>) -> Option<T> {
    cli.or(file).or(default)
}

fn text_option(option: &str, value: String, max_len: usize) -> Result<String, SettingsError> {
    if value.is_empty() || value.chars().count() > max_len {
        return Err(invalid(
            option,
            crate::escape::for_terminal(&value),
            &format!("must be 1 to {max_len} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
    {
        return Err(invalid(
            option,
            crate::escape::for_terminal(&value),
            "must not contain spaces, control characters or braces",
        ));
    }
    Ok(value)
}

/// The Redis settings from the CLI/environment over the two files.
pub fn redis(
    cli: &RedisArgs,
    user: &FileConfig,
    defaults: &FileConfig,
) -> Result<RedisSettings, SettingsError> {
    let (u, d) = (&user.redis, &defaults.redis);
    let host = pick(cli.host.clone(), u.host.clone(), d.host.clone()).unwrap_or_default();
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "host",
            crate::escape::for_terminal(&host),
            "must be a host name or address",
        ));
    }
    let port = pick(cli.port, u.port, d.port).unwrap_or(6379);
    if port == 0 {
        return Err(invalid("port", port, "must be 1 to 65535"));
    }
    let db = pick(cli.db, u.db, d.db).unwrap_or(0);
    if db < 0 {
        return Err(invalid("db", db, "must be 0 or more"));
    }
    let namespace = text_option(
        "namespace",
        pick(
            cli.namespace.clone(),
            u.namespace.clone(),
            d.namespace.clone(),
        )
        .unwrap_or_default(),
        64,
    )?;
    let settings = RedisSettings {
        host,
        port,
        password: pick(cli.password.clone(), u.pass.clone(), d.pass.clone()),
        db,
        user: pick(cli.user.clone(), u.user.clone(), d.user.clone()),
        url: pick(cli.url.clone(), u.url.clone(), d.url.clone()),
        namespace,
    };
    settings.connection_info()?;
    Ok(settings)
}

/// The settings of `app start` from the CLI over the two files.
pub fn start(
    cli: &StartArgs,
    user: &FileConfig,
    defaults: &FileConfig,
) -> Result<StartSettings, SettingsError> {
    let (u, d) = (&user.start, &defaults.start);

    let concurrency = pick(cli.concurrency, u.concurrency, d.concurrency).unwrap_or(1);
    if !(1..=100_000).contains(&concurrency) {
        return Err(invalid("concurrency", concurrency, "must be 1 to 100000"));
    }
    let generator = pick(
        cli.generator.clone(),
        u.generator.clone(),
        d.generator.clone(),
    )
    .unwrap_or_default();
    if !generators::NAMES.contains(&generator.as_str()) {
        return Err(invalid(
            "generator",
            crate::escape::for_terminal(&generator),
            &format!("valid: {}", generators::NAMES.join(", ")),
        ));
    }
    let interval_ms = pick(cli.interval_ms, u.interval_ms, d.interval_ms).unwrap_or(500);
    if interval_ms > 86_400_000 {
        return Err(invalid("interval-ms", interval_ms, "must be 0 to 86400000"));
    }
    let error_rate = pick(cli.error_rate, u.error_rate, d.error_rate).unwrap_or(0.05);
    if !(0.0..=1.0).contains(&error_rate) {
        return Err(invalid("error-rate", error_rate, "must be between 0 and 1"));
    }
    let work_ms = pick(cli.work_ms, u.work_ms, d.work_ms).unwrap_or(0);
    if work_ms > 3_600_000 {
        return Err(invalid("work-ms", work_ms, "must be 0 to 3600000"));
    }
    let lease_ms = pick(cli.lease_ms, u.lease_ms, d.lease_ms).unwrap_or(1000);
    // Renewal runs every third of the lease; below 150 ms a renewal round
    // trip would eat most of the margin.
    if !(150..=600_000).contains(&lease_ms) {
        return Err(invalid(
            "lease-ms",
            lease_ms,
            "must be 150 to 600000 (renewed every third of it)",
        ));
    }
    let role = match pick(cli.role.clone(), u.role.clone(), d.role.clone()).as_deref() {
        Some("auto") | None => RoleChoice::Auto,
        Some("processor") => RoleChoice::Processor,
        Some(other) => {
            return Err(invalid(
                "role",
                crate::escape::for_terminal(other),
                "valid: auto, processor",
            ))
        }
    };
    let name = match pick(cli.name.clone(), u.name.clone(), d.name.clone()) {
        Some(name) => text_option("name", name, 64)?,
        None => host_name(),
    };
    let max_deliveries = pick(cli.max_deliveries, u.max_deliveries, d.max_deliveries).unwrap_or(5);
    if !(1..=1000).contains(&max_deliveries) {
        return Err(invalid(
            "max-deliveries",
            max_deliveries,
            "must be 1 to 1000",
        ));
    }
    let shutdown_timeout_ms = pick(
        cli.shutdown_timeout_ms,
        u.shutdown_timeout_ms,
        d.shutdown_timeout_ms,
    )
    .unwrap_or(10_000);
    if shutdown_timeout_ms > 3_600_000 {
        return Err(invalid(
            "shutdown-timeout-ms",
            shutdown_timeout_ms,
            "must be 0 to 3600000",
        ));
    }
    let max_item_bytes =
        pick(cli.max_item_bytes, u.max_item_bytes, d.max_item_bytes).unwrap_or(1_048_576);
    if !(1024..=536_870_912).contains(&max_item_bytes) {
        return Err(invalid(
            "max-item-bytes",
            max_item_bytes,
            "must be 1024 to 536870912",
        ));
    }
    Ok(StartSettings {
        concurrency,
        generator,
        interval: Duration::from_millis(interval_ms),
        error_rate,
        work: Duration::from_millis(work_ms),
        lease: Duration::from_millis(lease_ms),
        role,
        name,
        max_deliveries,
        shutdown_timeout: Duration::from_millis(shutdown_timeout_ms),
        max_item_bytes,
    })
}

/// This machine's host name, made safe for ids and keys.
pub fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(64)
        .collect();
    if clean.is_empty() {
        "copy".to_string()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_defaults_parse_and_match_the_documented_ones() {
        let defaults = FileConfig::parse(DEFAULTS, "default.toml").unwrap();
        let start = start(&StartArgs::default(), &FileConfig::default(), &defaults).unwrap();
        assert_eq!(start.concurrency, 1);
        assert_eq!(start.interval, Duration::from_millis(500));
        assert_eq!(start.error_rate, 0.05);
        assert_eq!(start.lease, Duration::from_millis(1000));
        assert_eq!(start.max_deliveries, 5);
        let redis = redis(&RedisArgs::default(), &FileConfig::default(), &defaults).unwrap();
        assert_eq!(redis.address(), "localhost:6379");
        assert_eq!(redis.namespace, "app");
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let err =
            FileConfig::parse("[start]\nconcurrency = 2\ncolour = 1\n", "x.toml").unwrap_err();
        assert!(err.0.contains("x.toml, line 3"), "{err}");
        assert!(err.0.contains("colour"), "{err}");
        assert!(!err.0.contains('\n'));
    }

    #[test]
    fn cli_beats_file_beats_default() {
        let defaults = FileConfig::defaults();
        let file = FileConfig::parse("[start]\nconcurrency = 4\nwork-ms = 7\n", "f").unwrap();
        let cli = StartArgs {
            concurrency: Some(9),
            ..Default::default()
        };
        let s = start(&cli, &file, &defaults).unwrap();
        assert_eq!((s.concurrency, s.work), (9, Duration::from_millis(7)));
    }

    #[test]
    fn a_password_in_a_url_is_never_shown() {
        let cli = RedisArgs {
            url: Some("redis://:s3cret@db.example:6380/2".into()),
            ..Default::default()
        };
        let s = redis(&cli, &FileConfig::default(), &FileConfig::defaults()).unwrap();
        assert_eq!(s.address(), "db.example:6380");
        assert!(!format!("{s:?}").contains("s3cret"));
        let bad = RedisArgs {
            url: Some("http://:s3cret@x".into()),
            ..Default::default()
        };
        let err = redis(&bad, &FileConfig::default(), &FileConfig::defaults()).unwrap_err();
        assert!(!err.0.contains("s3cret"), "{err}");
    }
}
