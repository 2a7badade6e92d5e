//! Settings, layered CLI > environment > `--config` file > the defaults of
//! [`crate::options`], and checked once, so that every later module can
//! trust them.
//!
//! A config file is read as more option values (its keys are the long
//! option names), checked by the same rule as the command line. Each failure
//! is one line that names the option and where its value came from, and
//! means exit code 2.

use crate::options::{self, Kind, Opt, Section};
use crate::tls::TlsSettings;
use clap::parser::ValueSource;
use clap::ArgMatches;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// A bad option, value or config file: the one line to print before exit 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

/// Checks one value of `opt` against its kind; the reason when it fails. A
/// secret is never repeated in the reason.
pub(crate) fn check(opt: &Opt, value: &str) -> Result<(), String> {
    let shown = || crate::escape::for_terminal(value).into_owned();
    let out_of_range = || {
        format!(
            "invalid value '{}' for '--{}': must be {}",
            shown(),
            opt.name,
            opt.range().unwrap_or_default()
        )
    };
    match opt.kind {
        Kind::Int { min, max } => match value.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(()),
            _ => Err(out_of_range()),
        },
        Kind::Port => parse_port(value)
            .map(|_| ())
            .map_err(|why| format!("invalid value '{}' for '--{}': {why}", shown(), opt.name)),
        Kind::Ratio => match value.parse::<f64>() {
            Ok(p) if (0.0..=1.0).contains(&p) => Ok(()),
            _ => Err(out_of_range()),
        },
        Kind::Choice(words) if words.contains(&value) => Ok(()),
        Kind::Choice(words) => Err(format!(
            "invalid value '{}' for '--{}': valid: {}",
            shown(),
            opt.name,
            words.join(", ")
        )),
        Kind::Word { max } => {
            if value.is_empty() || value.chars().count() > max {
                Err(out_of_range())
            } else if value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
            {
                Err(format!(
                    "invalid value '{}' for '--{}': must not contain spaces, control characters or braces",
                    shown(),
                    opt.name
                ))
            } else {
                Ok(())
            }
        }
        // A value with '@' or '/' may be a URL with a password: never repeated.
        Kind::Host if value.contains(['@', '/']) => Err(format!(
            "invalid value for '--{}': a host name or address, not a URL (a URL goes in --url)",
            opt.name
        )),
        Kind::Host => {
            if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err(format!(
                    "invalid value '{}' for '--{}': must be a host name or address",
                    shown(),
                    opt.name
                ))
            } else {
                Ok(())
            }
        }
        Kind::Flag if matches!(value, "true" | "false") => Ok(()),
        Kind::Flag => Err(format!(
            "invalid value '{}' for '--{}': true or false",
            shown(),
            opt.name
        )),
        Kind::File if value.is_empty() => Err(format!(
            "invalid value '' for '--{}': the path of a file",
            opt.name
        )),
        // Its value may hold a login: never repeated.
        Kind::Addresses => parse_addresses(value, 26379)
            .map(|_| ())
            .map_err(|why| format!("invalid value for '--{}': {why}", opt.name)),
        Kind::Numbers => match value.split(',').all(|n| n.trim().parse::<u64>().is_ok()) {
            true => Ok(()),
            false => Err(format!(
                "invalid value '{}' for '--{}': whole numbers, separated by commas or spaces",
                shown(),
                opt.name
            )),
        },
        Kind::Listen => match value.parse::<std::net::SocketAddr>() {
            Ok(addr) if addr.port() > 0 => Ok(()),
            _ => Err(format!(
                "invalid value '{}' for '--{}': an IP address and a port (1 to 65535), e.g. 0.0.0.0:9100 or [::1]:9100",
                shown(),
                opt.name
            )),
        },
        Kind::Secret | Kind::File => Ok(()),
    }
}

/// A TCP port, checked by the same rule wherever one is written: `--port`,
/// `--host h:p`, `--sentinel`, and the URLs.
pub fn parse_port(text: &str) -> Result<u16, &'static str> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or("a port is 1 to 65535")
}

/// The port written in a `redis://` URL, if any, checked by [`parse_port`]
/// (the URL parser takes 0 and rejects 99999 with no reason given).
fn check_url_port(url: &str) -> Result<(), &'static str> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once("]:").map(|(_, p)| p),
        None => host_port.rsplit_once(':').map(|(_, p)| p),
    };
    match port {
        Some(port) if !port.is_empty() => parse_port(port).map(|_| ()),
        _ => Ok(()),
    }
}

/// `host:port,host:port,...` as a list; a missing port is `default_port`.
fn parse_addresses(value: &str, default_port: u16) -> Result<Vec<(String, u16)>, String> {
    value
        .split(',')
        .map(|one| {
            let one = one.trim();
            let (host, port) = match one.rsplit_once(':') {
                Some((host, port)) => (host, parse_port(port)?),
                None => (one, default_port),
            };
            // '@' or '/': a login or a URL, which may hold a password.
            if host.is_empty()
                || host
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '@' || c == '/')
            {
                return Err("each address is host:port, separated by commas (a URL goes in --url)");
            }
            Ok((host.to_string(), port))
        })
        .collect::<Result<_, _>>()
        .map_err(str::to_string)
}

/// Option values from one config file, keyed by option name.
#[derive(Debug, Default)]
pub struct FileConfig {
    values: HashMap<&'static str, String>,
}

/// The 1-based line of byte `at` in `text`.
fn line_at(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

impl FileConfig {
    /// Parses and checks a config file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SettingsError> {
        let fail = |line: Option<usize>, message: String| {
            let message = message.replace('\n', " ");
            SettingsError(match line {
                Some(line) => format!("config file {origin}, line {line}: {message}"),
                None => format!("config file {origin}: {message}"),
            })
        };
        let document = toml::de::DeTable::parse(text).map_err(|e| {
            fail(
                e.span().map(|s| line_at(text, s.start)),
                e.message().to_string(),
            )
        })?;
        let mut values = HashMap::new();
        for (table, body) in document.get_ref() {
            let line = line_at(text, table.span().start);
            let section = [Section::Redis, Section::Start]
                .into_iter()
                .find(|s| s.file_table() == Some(table.get_ref().as_ref()));
            let (Some(section), toml::de::DeValue::Table(body)) = (section, body.get_ref()) else {
                return Err(fail(
                    Some(line),
                    format!(
                        "unknown table '{}': a config file has a [redis] and a [start] table",
                        crate::escape::for_terminal(table.get_ref())
                    ),
                ));
            };
            for (key, value) in body {
                let line = line_at(text, key.span().start);
                let name = key.get_ref().as_ref();
                let Some(opt) = options::of(section).find(|o| o.name == name) else {
                    return Err(fail(
                        Some(line),
                        format!(
                            "unknown key '{}' in [{}]",
                            crate::escape::for_terminal(name),
                            table.get_ref()
                        ),
                    ));
                };
                let text = match value.get_ref() {
                    toml::de::DeValue::String(s) => s.to_string(),
                    toml::de::DeValue::Integer(i) if i.radix() == 10 => i.as_str().replace('_', ""),
                    toml::de::DeValue::Float(f) => f.as_str().replace('_', ""),
                    toml::de::DeValue::Boolean(b) => b.to_string(),
                    _ => {
                        return Err(fail(
                            Some(line),
                            format!("'{name}' takes one value, written in decimal or as a string"),
                        ))
                    }
                };
                check(opt, &text).map_err(|why| fail(Some(line), why))?;
                values.insert(opt.name, text);
            }
        }
        Ok(Self { values })
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
}

/// Where a value came from, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Default,
    File,
    Environment,
    CommandLine,
}

/// The checked value of every option of one command, after layering, and
/// the layer each came from.
#[derive(Debug, Default)]
struct Values(HashMap<&'static str, (String, Layer)>);

impl Values {
    /// Command line and environment (clap's `matches`) over `file` over the
    /// table's defaults.
    fn layer(
        section: Section,
        matches: &ArgMatches,
        file: &FileConfig,
    ) -> Result<Self, SettingsError> {
        let mut values = HashMap::new();
        for opt in options::of(section) {
            let given = matches!(
                matches.value_source(opt.name),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            let layer = match matches.value_source(opt.name) {
                Some(ValueSource::CommandLine) => Layer::CommandLine,
                Some(ValueSource::EnvVariable) => Layer::Environment,
                _ if file.values.contains_key(opt.name) => Layer::File,
                _ => Layer::Default,
            };
            let value = if opt.kind == Kind::Flag && given {
                Some(matches.get_flag(opt.name).to_string())
            } else if given {
                let value = match opt.kind {
                    Kind::Numbers => matches
                        .get_many::<String>(opt.name)
                        .map(|all| all.cloned().collect::<Vec<_>>().join(","))
                        .unwrap_or_default(),
                    _ => matches
                        .get_one::<String>(opt.name)
                        .cloned()
                        .unwrap_or_default(),
                };
                check(opt, &value).map_err(|why| {
                    let from_env = matches.value_source(opt.name) == Some(ValueSource::EnvVariable);
                    match opt.env {
                        Some(var) if from_env => SettingsError(format!("{why} (from {var})")),
                        _ => SettingsError(why),
                    }
                })?;
                Some(value)
            } else {
                file.values
                    .get(opt.name)
                    .cloned()
                    .or(opt.default.map(str::to_string))
            };
            if let Some(value) = value {
                values.insert(opt.name, (value, layer));
            }
        }
        Ok(Self(values))
    }

    fn text(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|(value, _)| value.clone())
    }

    /// The layer `name` came from; `Default` when it has no value.
    fn layer_of(&self, name: &str) -> Layer {
        self.0.get(name).map_or(Layer::Default, |(_, layer)| *layer)
    }

    /// A checked number; every number option has a default, so it is there.
    fn int(&self, name: &str) -> u64 {
        self.text(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    }

    fn ms(&self, name: &str) -> Duration {
        Duration::from_millis(self.int(name))
    }

    fn flag(&self, name: &str) -> bool {
        self.text(name).is_some_and(|v| v == "true")
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
    /// `None`: plain TCP.
    pub tls: Option<TlsSettings>,
    /// `--wait-replicas`, `None` for 0.
    pub wait: Option<WaitReplicas>,
    /// Sentinels that name the primary; `host` and `port` are then the
    /// primary they named last.
    pub sentinel: Option<SentinelSettings>,
    /// Redis Cluster: the host list (or the URL) names seed nodes.
    pub cluster: bool,
}

/// Where the sentinels are, and the name they know the primary by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelSettings {
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
}

/// How many replicas must have a write (WAIT) before it counts as safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitReplicas {
    pub replicas: u32,
    pub timeout: Duration,
}

// The password never reaches a log line, not even through {:?}.
impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("address", &self.address())
            .field("db", &self.db)
            .field("user", &self.user)
            .field("namespace", &self.namespace)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl RedisSettings {
    fn from_values(v: &Values) -> Result<Self, SettingsError> {
        // A URL overrides host, port, pass and db, but not ones given at a
        // stronger layer (a URL in the config file, -h on the command line).
        let mut url = v.text("url").filter(|_| {
            let url = v.layer_of("url");
            ["host", "port", "pass", "db", "sentinel"]
                .iter()
                .all(|name| v.layer_of(name) <= url || v.layer_of(name) == Layer::Default)
        });
        if url
            .as_deref()
            .is_some_and(|u| !u.starts_with("redis+sentinel://"))
            && v.text("sentinel").is_some()
        {
            return Err(SettingsError(
                "--sentinel and a redis:// or rediss:// --url do not go together: give the sentinels, or a redis+sentinel:// URL".to_string(),
            ));
        }
        let mut sentinel = v.text("sentinel").map(|list| SentinelSettings {
            sentinels: parse_addresses(&list, 26379).unwrap_or_default(),
            master: v.text("sentinel-master").unwrap_or_default(),
        });
        let (mut password, mut db, mut user) = (v.text("pass"), v.int("db") as i64, v.text("user"));
        if let Some(sentinel_url) = url
            .as_deref()
            .and_then(|u| u.strip_prefix("redis+sentinel://"))
        {
            let parsed = parse_sentinel_url(sentinel_url)?;
            sentinel = Some(parsed.sentinel);
            user = parsed.user.or(user);
            password = parsed.password.or(password);
            db = parsed.db.unwrap_or(db);
            url = None;
        }
        let settings = Self {
            host: v.text("host").unwrap_or_default(),
            port: v.int("port") as u16,
            password,
            db,
            user,
            sentinel,
            cluster: v.flag("cluster"),
            tls: tls_settings(v, url.as_deref())?,
            wait: match v.int("wait-replicas") {
                0 => None,
                replicas => Some(WaitReplicas {
                    replicas: replicas as u32,
                    timeout: v.ms("wait-timeout-ms"),
                }),
            },
            url,
            namespace: v.text("namespace").unwrap_or_default(),
        };
        if settings.cluster {
            if settings.db != 0 {
                return Err(SettingsError(
                    "--db and --cluster do not go together: a cluster has only db 0".to_string(),
                ));
            }
            if settings.sentinel.is_some() {
                return Err(SettingsError(
                    "--cluster and --sentinel do not go together: a cluster fails over by itself"
                        .to_string(),
                ));
            }
            settings.seeds()?;
        } else {
            settings.connection_info()?;
        }
        Ok(settings)
    }

    /// The seed nodes of a cluster: each `host[:port]` of `--host` (the port
    /// defaulting to `--port`), or the URL's one node.
    pub fn seeds(&self) -> Result<Vec<ConnectionInfo>, SettingsError> {
        if self.url.is_some() {
            return Ok(vec![self.connection_info()?]);
        }
        parse_addresses(&self.host, self.port)
            .map_err(|why| SettingsError(format!("invalid value for '--host': {why}")))?
            .into_iter()
            .map(|(host, port)| self.at(&host, port).connection_info())
            .collect()
    }

    /// These settings pointed at `host:port` (the primary a sentinel named).
    pub fn at(&self, host: &str, port: u16) -> Self {
        Self {
            host: host.to_string(),
            port,
            ..self.clone()
        }
    }

    /// The connection parameters for redis-rs.
    pub fn connection_info(&self) -> Result<ConnectionInfo, SettingsError> {
        let info = self.plain_connection_info()?;
        let Some(tls) = &self.tls else {
            return Ok(info);
        };
        let (host, port, insecure) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port, false),
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => (host.clone(), *port, *insecure),
            _ => {
                return Err(SettingsError(
                    "invalid value for '--url': TLS needs a host and port".to_string(),
                ))
            }
        };
        Ok(info.set_addr(ConnectionAddr::TcpTls {
            host,
            port,
            insecure: insecure || tls.insecure,
            tls_params: None,
        }))
    }

    fn plain_connection_info(&self) -> Result<ConnectionInfo, SettingsError> {
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
            .map_err(|e| {
                SettingsError(format!(
                    "invalid value '{}' for '--host': {e}",
                    crate::escape::for_terminal(&self.host)
                ))
            })?;
        Ok(info.set_redis_settings(redis))
    }

    /// `host:port`, for messages; never the password.
    pub fn address(&self) -> String {
        if let Some(sentinel) = &self.sentinel {
            return format!("the primary '{}' of the sentinels", sentinel.master);
        }
        match self.url.as_deref().map(parse_url) {
            Some(Ok(info)) => info.addr().to_string(),
            Some(Err(_)) => "the --url address".to_string(),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

fn parse_url(url: &str) -> Result<ConnectionInfo, SettingsError> {
    // The URL may hold a password: errors name the option, never the value.
    if !url.starts_with("redis://") && !url.starts_with("rediss://") {
        return Err(SettingsError(
            "invalid value for '--url': it must start with redis:// or rediss://".to_string(),
        ));
    }
    check_url_port(url)
        .map_err(|why| SettingsError(format!("invalid value for '--url': {why}")))?;
    url.into_connection_info()
        .map_err(|e| SettingsError(format!("invalid value for '--url': {e}")))
}

/// What a `redis+sentinel://` URL says.
struct SentinelUrl {
    sentinel: SentinelSettings,
    user: Option<String>,
    password: Option<String>,
    db: Option<i64>,
}

/// `%XX` escapes decoded, as in the user and password of any URL.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[at], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                at += 3;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `[user:pass@]host:port,host:port/master[/db]`, after the scheme. The
/// URL may hold a password: errors never repeat it.
fn parse_sentinel_url(rest: &str) -> Result<SentinelUrl, SettingsError> {
    let bad = |why: &str| {
        SettingsError(format!(
            "invalid value for '--url': a redis+sentinel:// URL is [user:pass@]host:port,.../master[/db]: {why}"
        ))
    };
    let (login, rest) = match rest.rsplit_once('@') {
        Some((login, rest)) => (Some(login), rest),
        None => (None, rest),
    };
    let (user, password) = match login.map(|l| l.split_once(':').unwrap_or((l, ""))) {
        Some((user, password)) => (
            (!user.is_empty()).then(|| percent_decoded(user)),
            (!password.is_empty()).then(|| percent_decoded(password)),
        ),
        None => (None, None),
    };
    let mut parts = rest.splitn(3, '/');
    let hosts = parts.next().unwrap_or_default();
    let master = parts
        .next()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("no master name"))?;
    let db = match parts.next().filter(|d| !d.is_empty()) {
        Some(db) => Some(
            db.parse::<i64>()
                .ok()
                .filter(|d| *d >= 0)
                .ok_or_else(|| bad("the db is a number"))?,
        ),
        None => None,
    };
    let sentinels = parse_addresses(hosts, 26379).map_err(|why| bad(&why))?;
    if master
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
    {
        return Err(bad(
            "the master name has spaces, control characters or braces",
        ));
    }
    Ok(SentinelUrl {
        sentinel: SentinelSettings {
            sentinels,
            master: master.to_string(),
        },
        user,
        password,
        db,
    })
}

/// The TLS settings: `Some` with `--tls`, any other `--tls-*` option or a
/// rediss:// URL. The files are read and checked here, so that a bad one
/// is a usage error (exit 2) before anything connects.
fn tls_settings(v: &Values, url: Option<&str>) -> Result<Option<TlsSettings>, SettingsError> {
    let read = |option: &str| -> Result<Option<Vec<u8>>, SettingsError> {
        v.text(option)
            .map(|path| {
                std::fs::read(&path).map_err(|e| {
                    SettingsError(format!(
                        "cannot read the --{option} file {}: {e}",
                        crate::escape::for_terminal(&path)
                    ))
                })
            })
            .transpose()
    };
    let (ca, cert, key) = (read("tls-ca")?, read("tls-cert")?, read("tls-key")?);
    // rediss://...#insecure is redis-rs's way of saying --tls-insecure.
    let insecure = v.flag("tls-insecure")
        || url.is_some_and(|u| u.starts_with("rediss://") && u.ends_with("#insecure"));
    let wanted = v.flag("tls")
        || insecure
        || ca.is_some()
        || cert.is_some()
        || key.is_some()
        || url.is_some_and(|u| u.starts_with("rediss://"));
    if !wanted {
        return Ok(None);
    }
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            return Err(SettingsError(
                "--tls-cert and --tls-key go together: give both or neither".to_string(),
            ))
        }
    };
    let tls = TlsSettings {
        ca,
        client,
        insecure,
    };
    tls.check().map_err(SettingsError)?;
    Ok(Some(tls))
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
    pub generator: generators::Source,
    pub interval: Duration,
    /// At `--interval-ms 0`, the most messages a second; 0 for no limit.
    pub rate: u64,
    pub error_rate: f64,
    pub work: Duration,
    pub lease: Duration,
    pub role: RoleChoice,
    pub name: String,
    pub max_deliveries: u32,
    pub shutdown_timeout: Duration,
    pub max_item_bytes: u64,
    /// Where to serve /metrics, /healthz and /readyz (`--http`).
    pub http: Option<std::net::SocketAddr>,
}

impl StartSettings {
    fn from_values(v: &Values) -> Self {
        Self {
            concurrency: v.int("concurrency") as usize,
            // Checked against generators::NAMES with the other values.
            generator: v
                .text("generator")
                .and_then(|name| generators::Source::from_name(&name).ok())
                .unwrap_or(generators::Source::Lipsum),
            interval: v.ms("interval-ms"),
            rate: v.int("rate"),
            error_rate: v
                .text("error-rate")
                .and_then(|p| p.parse().ok())
                .unwrap_or_default(),
            work: v.ms("work-ms"),
            lease: v.ms("lease-ms"),
            role: match v.text("role").as_deref() {
                Some("processor") => RoleChoice::Processor,
                _ => RoleChoice::Auto,
            },
            name: v.text("name").unwrap_or_else(host_name),
            max_deliveries: v.int("max-deliveries") as u32,
            shutdown_timeout: v.ms("shutdown-timeout-ms"),
            max_item_bytes: v.int("max-item-bytes"),
            http: v.text("http").and_then(|addr| addr.parse().ok()),
        }
    }
}

/// What `app get-errors` was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetErrorsSettings {
    pub limit: Option<u64>,
    pub json: bool,
}

/// What `app status` was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusSettings {
    pub json: bool,
    pub watch: bool,
}

/// What `app dead` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadSettings {
    List {
        limit: Option<u64>,
        json: bool,
    },
    /// Every message, or only those with these seqs.
    Requeue {
        seqs: Option<Vec<u64>>,
    },
    Purge {
        yes: bool,
    },
}

impl DeadSettings {
    fn from_matches(matches: &ArgMatches, file: &FileConfig) -> Result<Self, SettingsError> {
        let Some((action, matches)) = matches.subcommand() else {
            return Err(SettingsError(
                "dead: say list, requeue or purge (see --help)".to_string(),
            ));
        };
        Ok(match action {
            "list" => {
                let v = Values::layer(Section::DeadList, matches, file)?;
                DeadSettings::List {
                    limit: v.text("limit").and_then(|n| n.parse().ok()),
                    json: v.flag("json"),
                }
            }
            "requeue" => {
                let v = Values::layer(Section::DeadRequeue, matches, file)?;
                let seqs: Option<Vec<u64>> = v.text("seq").map(|list| {
                    list.split(',')
                        .filter_map(|n| n.trim().parse().ok())
                        .collect()
                });
                match (v.flag("all"), seqs) {
                    (true, None) => DeadSettings::Requeue { seqs: None },
                    (false, Some(seqs)) => DeadSettings::Requeue { seqs: Some(seqs) },
                    _ => {
                        return Err(SettingsError(
                            "dead requeue: give either --all or --seq N... (see --help)"
                                .to_string(),
                        ))
                    }
                }
            }
            _ => DeadSettings::Purge {
                yes: Values::layer(Section::DeadPurge, matches, file)?.flag("yes"),
            },
        })
    }
}

/// What `app dashboard` was asked.
#[derive(Clone, PartialEq, Eq)]
pub struct DashboardSettings {
    pub listen: std::net::SocketAddr,
    /// The bearer token of the changing actions; read-only without one.
    pub token: Option<String>,
}

impl std::fmt::Debug for DashboardSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardSettings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

/// The command to run, with its settings.
#[derive(Debug, Clone)]
pub enum CommandSettings {
    Start(StartSettings),
    GetErrors(GetErrorsSettings),
    Status(StatusSettings),
    Dead(DeadSettings),
    Dashboard(DashboardSettings),
    /// Prints the completion script for a shell; needs no Redis.
    Completions(clap_complete::Shell),
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// Everything one run of `app` needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub redis: RedisSettings,
    pub command: CommandSettings,
    pub log_format: LogFormat,
}

impl Settings {
    /// The settings from clap's matches of [`crate::cli::command`], over the
    /// `--config` file they name, over the defaults.
    pub fn from_matches(matches: &ArgMatches) -> Result<Self, SettingsError> {
        let Some((command, matches)) = matches.subcommand() else {
            return Err(SettingsError(
                "a command is required (see --help)".to_string(),
            ));
        };
        let file = match matches.get_one::<String>("config") {
            Some(path) => FileConfig::load(Path::new(path))?,
            None => FileConfig::default(),
        };
        let redis = RedisSettings::from_values(&Values::layer(Section::Redis, matches, &file)?)?;
        let command = match command {
            "start" => {
                let start =
                    StartSettings::from_values(&Values::layer(Section::Start, matches, &file)?);
                if start.rate > 0 && !start.interval.is_zero() {
                    return Err(SettingsError(
                        "--rate paces --interval-ms 0; with an interval the generator already sends one message a tick".to_string(),
                    ));
                }
                CommandSettings::Start(start)
            }
            "get-errors" => {
                let v = Values::layer(Section::GetErrors, matches, &file)?;
                CommandSettings::GetErrors(GetErrorsSettings {
                    limit: v.text("limit").and_then(|n| n.parse().ok()),
                    json: v.flag("json"),
                })
            }
            "dead" => CommandSettings::Dead(DeadSettings::from_matches(matches, &file)?),
            "dashboard" => {
                let v = Values::layer(Section::Dashboard, matches, &file)?;
                CommandSettings::Dashboard(DashboardSettings {
                    // Checked as an address with the other values.
                    listen: v
                        .text("listen")
                        .and_then(|addr| addr.parse().ok())
                        .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 8080))),
                    token: v.text("token").filter(|t| !t.is_empty()),
                })
            }
            "completions" => CommandSettings::Completions(
                matches
                    .get_one::<clap_complete::Shell>("shell")
                    .copied()
                    .ok_or_else(|| SettingsError("completions: which shell?".to_string()))?,
            ),
            _ => {
                let v = Values::layer(Section::Status, matches, &file)?;
                CommandSettings::Status(StatusSettings {
                    json: v.flag("json"),
                    watch: v.flag("watch"),
                })
            }
        };
        let log = Values::layer(Section::Log, matches, &FileConfig::default())?;
        let log_format = match log.text("log-format").as_deref() {
            Some("json") => LogFormat::Json,
            _ => LogFormat::Text,
        };
        Ok(Self {
            redis,
            command,
            log_format,
        })
    }

    /// The settings of a command line (without the program name), as `app`
    /// would take it; for tests and embedding. The environment is read too.
    pub fn from_args<I, S>(args: I) -> Result<Self, SettingsError>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        let args = std::iter::once(std::ffi::OsString::from("app"))
            .chain(args.into_iter().map(Into::into));
        let matches = crate::cli::command()
            .try_get_matches_from(args)
            .map_err(|e| SettingsError(crate::cli::first_line(&e)))?;
        Self::from_matches(&matches)
    }
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

    fn start(args: &[&str]) -> StartSettings {
        match Settings::from_args(args).expect("settings").command {
            CommandSettings::Start(start) => start,
            other => panic!("not start: {other:?}"),
        }
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let s = start(&["start"]);
        assert_eq!(s.concurrency, 1);
        assert_eq!(s.interval, Duration::from_millis(500));
        assert_eq!(s.error_rate, 0.05);
        assert_eq!(s.lease, Duration::from_millis(1000));
        assert_eq!(s.max_deliveries, 5);
        assert_eq!(s.max_item_bytes, 1_048_576);
        assert_eq!(s.role, RoleChoice::Auto);
        let redis = Settings::from_args(["--host", "localhost", "status"])
            .expect("status")
            .redis;
        assert_eq!(redis.namespace, "app");
    }

    #[test]
    fn an_unknown_key_or_bad_value_is_named_with_its_line() {
        let err =
            FileConfig::parse("[start]\nconcurrency = 2\ncolour = 1\n", "x.toml").unwrap_err();
        assert!(err.0.contains("x.toml, line 3"), "{err}");
        assert!(err.0.contains("colour"), "{err}");
        let err = FileConfig::parse("[start]\n\nerror-rate = 7\n", "x.toml").unwrap_err();
        assert!(
            err.0.contains("line 3") && err.0.contains("'--error-rate'"),
            "{err}"
        );
        let err = FileConfig::parse("[redis]\nport = [1]\n", "x.toml").unwrap_err();
        assert!(err.0.contains("line 2") && !err.0.contains('\n'), "{err}");
        let err = FileConfig::parse("[colours]\n", "x.toml").unwrap_err();
        assert!(err.0.contains("colours"), "{err}");
    }

    #[test]
    fn cli_beats_file_beats_default() {
        let dir = std::env::temp_dir().join(format!("redis-ql-settings-{}", std::process::id()));
        std::fs::write(&dir, "[start]\nconcurrency = 4\nwork-ms = 7\n").expect("write");
        let path = dir.display().to_string();
        let s = start(&["--config", &path, "start", "--concurrency", "9"]);
        let _ = std::fs::remove_file(&dir);
        assert_eq!((s.concurrency, s.work), (9, Duration::from_millis(7)));
    }

    #[test]
    fn tls_is_on_with_any_tls_option_or_a_rediss_url() {
        let tls = |args: &[&str]| {
            Settings::from_args(args.iter().chain(&["status"]))
                .expect("settings")
                .redis
                .tls
        };
        assert!(tls(&[]).is_none());
        assert!(tls(&["--tls"]).is_some());
        assert!(tls(&["--tls-insecure"]).is_some_and(|t| t.insecure));
        assert!(tls(&["--url", "rediss://db.example:6380"]).is_some());
        assert!(FileConfig::parse("[redis]\ntls = true\n", "f").is_ok());
        let err = FileConfig::parse("[redis]\ntls = \"yes\"\n", "f").unwrap_err();
        assert!(err.0.contains("'--tls'"), "{err}");
        let err = Settings::from_args(["--tls-ca", "/nonexistent/ca.pem", "status"]).unwrap_err();
        assert!(err.0.contains("--tls-ca") && !err.0.contains('\n'), "{err}");
    }

    #[test]
    fn a_url_in_a_weaker_layer_loses_to_a_host_and_hosts_are_not_urls() {
        let dir = std::env::temp_dir().join(format!("redis-ql-url-{}", std::process::id()));
        std::fs::write(&dir, "[redis]\nurl = \"redis://file.example:7000\"\n").expect("write");
        let path = dir.display().to_string();
        let from_file = Settings::from_args(["--config", &path, "status"]).expect("settings");
        let overridden = Settings::from_args(["--config", &path, "-h", "cli.example", "status"])
            .expect("settings");
        let _ = std::fs::remove_file(&dir);
        assert_eq!(from_file.redis.address(), "file.example:7000");
        assert_eq!(overridden.redis.address(), "cli.example:6379");
        let err = Settings::from_args(["-h", "redis://:pw@h", "status"]).unwrap_err();
        assert!(!err.0.contains("pw"), "{err}");
        let err = Settings::from_args(["--sentinel", "u:pw@h:26379", "status"]).unwrap_err();
        assert!(!err.0.contains("pw"), "{err}");
    }

    #[test]
    fn combinations_that_cannot_work_are_refused() {
        for args in [
            &["--sentinel", "h:26379", "--url", "redis://x:6379", "status"][..],
            &["--cluster", "--db", "2", "status"],
            &["--tls-key", "/dev/null", "status"],
            &["start", "--rate", "1000"],
        ] {
            let err = Settings::from_args(args).unwrap_err();
            assert!(!err.0.contains('\n'), "{err}");
        }
    }

    #[test]
    fn a_sentinel_url_is_read_whole() {
        let s = Settings::from_args([
            "--url",
            "redis+sentinel://me:p%40ss@h1:26380,h2/primary/2",
            "status",
        ])
        .expect("settings")
        .redis;
        let sentinel = s.sentinel.clone().expect("sentinels");
        assert_eq!(sentinel.master, "primary");
        assert_eq!(
            sentinel.sentinels,
            vec![("h1".to_string(), 26380), ("h2".to_string(), 26379)]
        );
        assert_eq!(
            (s.user.as_deref(), s.password.as_deref(), s.db),
            (Some("me"), Some("p@ss"), 2)
        );
        let user_only = Settings::from_args(["--url", "redis+sentinel://me@h1/primary", "status"])
            .expect("settings")
            .redis;
        assert_eq!(
            (user_only.user.as_deref(), user_only.password),
            (Some("me"), None)
        );
        assert!(Settings::from_args(["--url", "redis+sentinel://h1/a%20b c", "status"]).is_err());
    }

    #[test]
    fn a_password_in_a_url_is_never_shown() {
        let s = Settings::from_args(["--url", "redis://:s3cret@db.example:6380/2", "status"])
            .expect("settings")
            .redis;
        assert_eq!(s.address(), "db.example:6380");
        assert!(!format!("{s:?}").contains("s3cret"));
        let err = Settings::from_args(["--url", "http://:s3cret@x", "status"]).unwrap_err();
        assert!(!err.0.contains("s3cret"), "{err}");
    }
}
