//! Every option, defined once: its name, short flag, environment variable,
//! default, range and doc. The command line ([`crate::cli`]), the config
//! file and its documented copy `config/default.toml`, and the option tables
//! of the README are all made from [`OPTIONS`]; tests check that the files
//! say what this table says.
//!
//! To add an option: add an [`Opt`] here, read it in [`crate::settings`],
//! then run `UPDATE_DOCS=1 cargo test --lib options` to rewrite the files.

use std::fmt::Write as _;

/// Which command an option belongs to, and so its table in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Where Redis is: every command, `[redis]` in a config file.
    Redis,
    /// `app start`, `[start]` in a config file.
    Start,
    /// `app get-errors`: command line only.
    GetErrors,
    /// `app status`: command line only.
    Status,
    /// `app dead list`: command line only.
    DeadList,
    /// `app dead requeue`: command line only.
    DeadRequeue,
    /// `app dead purge`: command line only.
    DeadPurge,
    /// `app dashboard`: command line and environment only.
    Dashboard,
    /// How every command logs: command line and environment only.
    Log,
}

impl Section {
    /// The table of a config file that holds these options, if any.
    pub fn file_table(self) -> Option<&'static str> {
        match self {
            Section::Redis => Some("redis"),
            Section::Start => Some("start"),
            _ => None,
        }
    }
}

/// What values an option takes; every source is checked by the same rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A whole number in `min..=max`.
    Int { min: u64, max: u64 },
    /// A TCP port, 1 to 65535.
    Port,
    /// A probability, 0 to 1.
    Ratio,
    /// One of a fixed list of words.
    Choice(&'static [&'static str]),
    /// 1 to `max` characters, no spaces, control characters or braces (it
    /// ends up in key names, ids and log lines).
    Word { max: usize },
    /// A host name or address.
    Host,
    /// Free text that is never shown (a password, a URL that may hold one).
    Secret,
    /// The path of a file, read once at start.
    File,
    /// `host:port,host:port,...` (the port may be left out).
    Addresses,
    /// A switch with no value (command line only).
    Flag,
    /// Whole numbers, separated by commas or given one after another.
    Numbers,
    /// An address to listen on: `IP:PORT`.
    Listen,
}

/// One option.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// The long flag and the config-file key.
    pub name: &'static str,
    pub section: Section,
    pub short: Option<char>,
    pub env: Option<&'static str>,
    /// The value's placeholder in `--help`.
    pub value_name: &'static str,
    /// The built-in default, as it would be written on the command line.
    pub default: Option<&'static str>,
    /// What the default is when there is none to write (shown in docs only).
    pub default_doc: Option<&'static str>,
    pub kind: Kind,
    /// One line for `--help`; the docs add the range and default.
    pub doc: &'static str,
}

const fn opt(name: &'static str, section: Section, kind: Kind, doc: &'static str) -> Opt {
    Opt {
        name,
        section,
        short: None,
        env: None,
        value_name: "N",
        default: None,
        default_doc: None,
        kind,
        doc,
    }
}

impl Opt {
    const fn short(mut self, c: char) -> Self {
        self.short = Some(c);
        self
    }
    const fn env(mut self, var: &'static str) -> Self {
        self.env = Some(var);
        self
    }
    const fn value(mut self, name: &'static str) -> Self {
        self.value_name = name;
        self
    }
    const fn default(mut self, value: &'static str) -> Self {
        self.default = Some(value);
        self
    }
    const fn default_doc(mut self, text: &'static str) -> Self {
        self.default_doc = Some(text);
        self
    }

    /// The range or choices, for help and docs.
    pub fn range(&self) -> Option<String> {
        match self.kind {
            Kind::Int { min, max } => Some(format!("{min} to {max}")),
            Kind::Port => Some("1 to 65535".to_string()),
            Kind::Ratio => Some("0 to 1".to_string()),
            Kind::Choice(words) => Some(words.join(", ")),
            Kind::Word { max } => Some(format!("1 to {max} characters")),
            Kind::Host
            | Kind::Secret
            | Kind::File
            | Kind::Addresses
            | Kind::Flag
            | Kind::Numbers
            | Kind::Listen => None,
        }
    }

    /// The doc and the range.
    pub fn described(&self) -> String {
        match self.range() {
            Some(range) => format!("{} ({range})", self.doc),
            None => self.doc.to_string(),
        }
    }

    /// The help line: the doc, the range and the default. clap lists a
    /// choice's words itself, so they are not written twice.
    pub fn help(&self) -> String {
        let mut help = match self.kind {
            Kind::Choice(_) => self.doc.to_string(),
            _ => self.described(),
        };
        match (self.default, self.default_doc) {
            (Some(value), _) => {
                let _ = write!(help, " [default: {value}]");
            }
            (None, Some(text)) => {
                let _ = write!(help, " [default: {text}]");
            }
            (None, None) => {}
        }
        help
    }
}

use Section::{Dashboard, DeadList, DeadPurge, DeadRequeue, GetErrors, Log, Redis, Start, Status};

const ROLES: &[&str] = &["auto", "processor"];
const LOG_FORMATS: &[&str] = &["text", "json"];

/// The options of every command, in the order of `--help` and the docs.
pub static OPTIONS: &[Opt] = &[
    opt("host", Redis, Kind::Host, "Redis host (with --cluster, seed nodes: host[:port],...)")
        .short('h')
        .env("REDIS_HOST")
        .value("HOST")
        .default("localhost"),
    opt("port", Redis, Kind::Port, "Redis port")
        .short('p')
        .env("REDIS_PORT")
        .value("PORT")
        .default("6379"),
    opt("pass", Redis, Kind::Secret, "Redis password")
        .env("REDIS_PASS")
        .value("PASSWORD"),
    opt("db", Redis, Kind::Int { min: 0, max: 1 << 31 }, "Redis database number")
        .env("REDIS_DB")
        .default("0"),
    opt("user", Redis, Kind::Word { max: 256 }, "Redis 6+ ACL user")
        .env("REDIS_USER")
        .value("USER"),
    opt("url", Redis, Kind::Secret, "redis://, rediss:// (TLS) or redis+sentinel://[user:pass@]host:port,.../master[/db] URL; overrides host, port, pass and db, unless one is given at a stronger layer")
        .env("REDIS_URL")
        .value("URL"),
    opt("tls", Redis, Kind::Flag, "Connect with TLS, as a rediss:// URL does")
        .env("REDIS_TLS"),
    opt("tls-ca", Redis, Kind::File, "PEM file of the CA that signed the server's certificate; implies --tls")
        .env("REDIS_TLS_CA")
        .value("FILE")
        .default_doc("the system's roots"),
    opt("tls-cert", Redis, Kind::File, "PEM client certificate, for mutual TLS (with --tls-key); implies --tls")
        .env("REDIS_TLS_CERT")
        .value("FILE"),
    opt("tls-key", Redis, Kind::File, "PEM private key of --tls-cert")
        .env("REDIS_TLS_KEY")
        .value("FILE"),
    opt("tls-insecure", Redis, Kind::Flag, "TLS without checking the server's certificate (logged as a warning); implies --tls")
        .env("REDIS_TLS_INSECURE"),
    opt("cluster", Redis, Kind::Flag, "Redis Cluster: --host (host[:port],... ) or --url name seed nodes")
        .env("REDIS_CLUSTER"),
    opt("sentinel", Redis, Kind::Addresses, "Redis Sentinels (host:port,...) that name the primary and follow its failovers; replaces host and port")
        .env("REDIS_SENTINELS")
        .value("HOSTS"),
    opt("sentinel-master", Redis, Kind::Word { max: 256 }, "The name the sentinels monitor the primary under")
        .env("REDIS_SENTINEL_MASTER")
        .value("NAME")
        .default("mymaster"),
    opt("wait-replicas", Redis, Kind::Int { min: 0, max: 100 }, "Replicas that must confirm each enqueue and ack (WAIT), and each get-errors batch before it is deleted")
        .default("0"),
    opt("wait-timeout-ms", Redis, Kind::Int { min: 1, max: 60_000 }, "How long a write waits for --wait-replicas (at most half the request timeout); past it the write is logged and counted as unconfirmed")
        .default("100"),
    opt("namespace", Redis, Kind::Word { max: 64 }, "Key prefix: two namespaces on one Redis never see each other")
        .env("APP_NAMESPACE")
        .value("NAME")
        .default("app"),
    opt("concurrency", Start, Kind::Int { min: 1, max: 100_000 }, "Messages this copy processes at the same time")
        .default("1"),
    opt("generator", Start, Kind::Choice(&generators::NAMES), "Text source")
        .value("NAME")
        .default("lipsum"),
    opt("interval-ms", Start, Kind::Int { min: 0, max: 86_400_000 }, "Generator tick; 0 = as fast as possible")
        .default("500"),
    opt("rate", Start, Kind::Int { min: 0, max: 10_000_000 }, "With --interval-ms 0: at most N messages a second, in even batches (0: as fast as the processors take them)")
        .default("0"),
    opt("error-rate", Start, Kind::Ratio, "Probability that a processed message is an error")
        .value("P")
        .default("0.05"),
    opt("work-ms", Start, Kind::Int { min: 0, max: 3_600_000 }, "Simulated processing time per message")
        .default("0"),
    // Renewal runs every third of the lease; below 150 ms a renewal round
    // trip would eat most of the margin.
    opt("lease-ms", Start, Kind::Int { min: 150, max: 600_000 }, "Generator lease, renewed every third of it")
        .default("1000"),
    opt("role", Start, Kind::Choice(ROLES), "auto: may become the generator; processor: never does")
        .value("ROLE")
        .default("auto"),
    opt("name", Start, Kind::Word { max: 64 }, "Shown in status and logs; the copy id adds a unique suffix")
        .value("NAME")
        .default_doc("host name"),
    opt("max-deliveries", Start, Kind::Int { min: 1, max: 1000 }, "Deliveries before a message goes to dead-letter")
        .default("5"),
    opt("shutdown-timeout-ms", Start, Kind::Int { min: 0, max: 3_600_000 }, "On SIGTERM/SIGINT/SIGHUP, time to finish the messages in hand")
        .default("10000"),
    opt("http", Start, Kind::Listen, "Serve GET /metrics (Prometheus), /healthz and /readyz on this address, e.g. 0.0.0.0:9100")
        .env("APP_HTTP")
        .value("ADDR")
        .default_doc("off"),
    opt("max-item-bytes", Start, Kind::Int { min: 1024, max: 536_870_912 }, "Larger queue items go to dead-letter without leaving Redis, keeping their first N bytes; lowered at start to fit Redis's proto-max-bulk-len")
        .default("1048576"),
    opt("limit", GetErrors, Kind::Int { min: 1, max: u64::MAX }, "Take at most N errors")
        .default_doc("all"),
    opt("log-format", Log, Kind::Choice(LOG_FORMATS), "Log lines on stderr: text for people, json (one object a line) for collectors; RUST_LOG filters them")
        .env("APP_LOG_FORMAT")
        .value("FORMAT")
        .default("text"),
    opt("json", GetErrors, Kind::Flag, "One JSON object per line"),
    opt("json", Status, Kind::Flag, "JSON for programs"),
    opt("watch", Status, Kind::Flag, "Refresh in place every second, like top"),
    opt("json", DeadList, Kind::Flag, "One JSON object per line"),
    opt("limit", DeadList, Kind::Int { min: 1, max: u64::MAX }, "Show at most N records, oldest first")
        .default_doc("all"),
    opt("all", DeadRequeue, Kind::Flag, "Requeue every dead-lettered message"),
    opt("seq", DeadRequeue, Kind::Numbers, "Requeue the messages with these sequence numbers"),
    opt("yes", DeadPurge, Kind::Flag, "Delete without asking"),
    opt("listen", Dashboard, Kind::Listen, "Serve the dashboard on this address (a non-loopback one without --token is warned about)")
        .env("APP_DASHBOARD_LISTEN")
        .value("ADDR")
        .default("127.0.0.1:8080"),
    opt("token", Dashboard, Kind::Secret, "Bearer token that the dashboard's changing actions need; without it the dashboard is read-only")
        .env("APP_DASHBOARD_TOKEN")
        .value("TOKEN")
        .default_doc("none: read-only"),
];

/// The options of one command.
pub fn of(section: Section) -> impl Iterator<Item = &'static Opt> {
    OPTIONS.iter().filter(move |o| o.section == section)
}

/// A value written the way TOML writes it.
fn toml_value(opt: &Opt, value: &str) -> String {
    match opt.kind {
        Kind::Int { .. } | Kind::Port | Kind::Ratio | Kind::Flag => value.to_string(),
        _ => format!("{value:?}"),
    }
}

fn sources(opt: &Opt) -> String {
    let mut names = format!("--{}", opt.name);
    if let Some(c) = opt.short {
        let _ = write!(names, "/-{c}");
    }
    if let Some(var) = opt.env {
        let _ = write!(names, ", {var}");
    }
    names
}

/// The text of `config/default.toml`: every option of a file table, its
/// doc, and its default (commented out where there is none).
pub fn default_toml() -> String {
    let mut out = String::from(
        "# redis-ql defaults, made from src/options.rs (do not edit: run\n\
         # `UPDATE_DOCS=1 cargo test --lib options`). `--config FILE` reads a file of\n\
         # this shape; the environment and then the command line go over it:\n\
         # CLI > environment > --config file > these defaults.\n\
         # Keys are the long option names. An unknown key is an error.\n",
    );
    for section in [Redis, Start] {
        let Some(table) = section.file_table() else {
            continue;
        };
        let _ = write!(out, "\n[{table}]\n");
        for opt in of(section) {
            let _ = writeln!(out, "# {}  ({})", opt.described(), sources(opt));
            match opt.default {
                Some(value) => {
                    let _ = writeln!(out, "{} = {}", opt.name, toml_value(opt, value));
                }
                None if opt.kind == Kind::Flag => {
                    let _ = writeln!(out, "# {} = true    (default: false)", opt.name);
                }
                None => {
                    let default = opt.default_doc.unwrap_or("none");
                    let _ = writeln!(out, "# {} = \"\"    (default: {default})", opt.name);
                }
            }
        }
    }
    out
}

/// The README's table of one command's options.
pub fn markdown_table(section: Section) -> String {
    let mut out = String::from("| option | environment | default | meaning |\n|---|---|---|---|\n");
    for opt in of(section) {
        let mut flag = format!("`--{}", opt.name);
        if opt.kind != Kind::Flag {
            let _ = write!(flag, " {}", opt.value_name);
        }
        flag.push('`');
        if let Some(c) = opt.short {
            let _ = write!(flag, ", `-{c}`");
        }
        let env = opt.env.map(|v| format!("`{v}`")).unwrap_or_default();
        let default = match (opt.default, opt.default_doc) {
            (Some(value), _) => format!("`{value}`"),
            (None, Some(text)) => text.to_string(),
            (None, None) => String::new(),
        };
        let _ = writeln!(out, "| {flag} | {env} | {default} | {} |", opt.described());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README between `<!-- options:NAME -->` and `<!-- /options -->`.
    fn replace_between(text: &str, marker: &str, body: &str) -> Option<String> {
        let open = format!("<!-- options:{marker} -->\n");
        let start = text.find(&open)? + open.len();
        let end = start + text[start..].find("<!-- /options -->")?;
        Some(format!("{}{body}{}", &text[..start], &text[end..]))
    }

    /// Fails when a file says something other than the table; with
    /// `UPDATE_DOCS=1` it rewrites the file instead.
    fn check(path: &str, wanted: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        let found = std::fs::read_to_string(&path).unwrap_or_default();
        if found != wanted {
            if std::env::var_os("UPDATE_DOCS").is_some() {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).expect("the docs directory");
                }
                std::fs::write(&path, wanted).expect("rewrite the docs");
            } else {
                panic!(
                    "{} does not match src/options.rs; run `UPDATE_DOCS=1 cargo test --lib options`",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn the_man_pages_are_made_from_the_command_line() {
        let pages = crate::cli::man_pages();
        let names: Vec<&str> = pages.iter().map(|(name, _)| name.as_str()).collect();
        for name in [
            "app.1",
            "app-start.1",
            "app-dead-requeue.1",
            "app-completions.1",
        ] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        for (name, roff) in &pages {
            check(&format!("docs/man/{name}"), roff);
        }
    }

    #[test]
    fn config_default_toml_is_made_from_the_table() {
        check("config/default.toml", &default_toml());
    }

    #[test]
    fn the_readme_tables_are_made_from_the_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        let mut text = std::fs::read_to_string(path).expect("README.md");
        for (marker, section) in [("redis", Redis), ("start", Start)] {
            text = replace_between(&text, marker, &markdown_table(section))
                .expect("the README has the option markers");
        }
        check("README.md", &text);
    }

    #[test]
    fn every_default_is_in_its_range() {
        for opt in OPTIONS {
            if let Some(value) = opt.default {
                assert!(
                    crate::settings::check(opt, value).is_ok(),
                    "--{} default {value}",
                    opt.name
                );
            }
        }
    }
}
