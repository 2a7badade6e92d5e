//! The command line, as parsed by clap. Values stay `Option`s here: the
//! defaults live in one place, `config/default.toml`, and [`crate::settings`]
//! layers CLI > environment > config file > defaults.

use clap::{ArgAction, Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "app",
    version,
    about = "An elected generator and exactly-once processors, coordinated only through Redis",
    disable_help_flag = true,
    after_help = "Settings: CLI > environment > --config file > built-in defaults (config/default.toml)."
)]
pub struct Cli {
    /// Print help
    #[arg(long, action = ArgAction::Help, global = true)]
    pub help: Option<bool>,

    /// Load a dotenv file (.env when no FILE is given) before reading anything else
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true, default_missing_value = ".env")]
    pub env: Option<PathBuf>,

    /// Read settings from a TOML file shaped like config/default.toml
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Default, Args)]
pub struct RedisArgs {
    /// Redis host [default: localhost]
    #[arg(long, short = 'h', env = "REDIS_HOST", global = true)]
    pub host: Option<String>,
    /// Redis port [default: 6379]
    #[arg(long, short = 'p', env = "REDIS_PORT", global = true)]
    pub port: Option<u16>,
    /// Redis password
    #[arg(
        long = "pass",
        env = "REDIS_PASS",
        global = true,
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Redis database number [default: 0]
    #[arg(long, env = "REDIS_DB", global = true)]
    pub db: Option<i64>,
    /// Redis 6+ ACL user
    #[arg(long, env = "REDIS_USER", global = true)]
    pub user: Option<String>,
    /// redis:// or rediss:// URL; overrides host, port, pass and db
    #[arg(long, env = "REDIS_URL", global = true, hide_env_values = true)]
    pub url: Option<String>,
    /// Key prefix: two namespaces on one Redis never see each other [default: app]
    #[arg(long, env = "APP_NAMESPACE", global = true)]
    pub namespace: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a copy (it becomes generator or processor)
    Start(StartArgs),
    /// Print and remove stored errors
    #[command(alias = "getErrors")]
    GetErrors(GetErrorsArgs),
    /// Show the cluster: generator, processors, queue, counters
    Status(StatusArgs),
}

#[derive(Debug, Clone, Default, Args)]
pub struct StartArgs {
    /// Messages this copy processes at the same time [default: 1]
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Text source: lipsum, fake, uuid [default: lipsum]
    #[arg(long, value_name = "NAME")]
    pub generator: Option<String>,
    /// Generator tick; 0 = as fast as possible [default: 500]
    #[arg(long, value_name = "N")]
    pub interval_ms: Option<u64>,
    /// Probability that a processed message is an error, 0..1 [default: 0.05]
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub error_rate: Option<f64>,
    /// Simulated processing time per message [default: 0]
    #[arg(long, value_name = "N")]
    pub work_ms: Option<u64>,
    /// Generator lease, renewed every third of it [default: 1000]
    #[arg(long, value_name = "N")]
    pub lease_ms: Option<u64>,
    /// auto | processor (processor never becomes generator) [default: auto]
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    /// Shown in status and logs; the copy id adds a unique suffix [default: host name]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Deliveries before a message goes to dead-letter [default: 5]
    #[arg(long, value_name = "N")]
    pub max_deliveries: Option<u32>,
    /// On SIGTERM/SIGINT, time to finish messages in hand [default: 10000]
    #[arg(long, value_name = "N")]
    pub shutdown_timeout_ms: Option<u64>,
    /// Queue items larger than this go to dead-letter, keeping their first N bytes [default: 1048576]
    #[arg(long, value_name = "N")]
    pub max_item_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct GetErrorsArgs {
    /// Take at most N errors [default: all]
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Default, Args)]
pub struct StatusArgs {
    /// JSON for programs
    #[arg(long)]
    pub json: bool,
    /// Refresh in place every second, like top
    #[arg(long)]
    pub watch: bool,
}

const COMMANDS: [&str; 4] = ["start", "get-errors", "getErrors", "status"];

/// Rewrites `--env FILE` and a bare `--env` into `--env=FILE` / `--env=.env`,
/// so that `app --env start` does not read `start` as the file name.
pub fn normalize_env_flag(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter().peekable();
    let mut before_command = true;
    while let Some(arg) = iter.next() {
        if before_command && COMMANDS.contains(&arg.as_str()) {
            before_command = false;
        }
        if before_command && arg == "--env" {
            match iter.peek() {
                Some(next) if !next.starts_with('-') && !COMMANDS.contains(&next.as_str()) => {
                    let file = iter.next().unwrap_or_default();
                    out.push(format!("--env={file}"));
                }
                _ => out.push("--env=.env".to_string()),
            }
            continue;
        }
        out.push(arg);
    }
    out
}

/// The dotenv file named by `--env`, found before clap runs so that its
/// variables are set before clap reads the environment.
pub fn env_file(args: &[String]) -> Option<PathBuf> {
    args.iter()
        .take_while(|a| !COMMANDS.contains(&a.as_str()))
        .find_map(|a| a.strip_prefix("--env=").map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_bare_env_means_dot_env_and_never_eats_the_command() {
        assert_eq!(
            normalize_env_flag(strings(&["app", "--env", "start"])),
            strings(&["app", "--env=.env", "start"])
        );
        assert_eq!(
            normalize_env_flag(strings(&["app", "--env", "x.env", "status"])),
            strings(&["app", "--env=x.env", "status"])
        );
        assert_eq!(
            normalize_env_flag(strings(&["app", "--env", "--port", "1", "status"])),
            strings(&["app", "--env=.env", "--port", "1", "status"])
        );
        let args = normalize_env_flag(strings(&["app", "--env=y", "start", "--name", "--env"]));
        assert_eq!(env_file(&args), Some(PathBuf::from("y")));
        assert_eq!(
            args[4], "--env",
            "after the command --env is not ours to rewrite"
        );
    }

    #[test]
    fn dash_h_is_the_host_and_get_errors_has_its_alias() {
        let cli =
            Cli::try_parse_from(["app", "-h", "redis.local", "getErrors", "--limit", "3"]).unwrap();
        assert_eq!(cli.redis.host.as_deref(), Some("redis.local"));
        assert!(matches!(
            cli.command,
            Command::GetErrors(GetErrorsArgs { limit: Some(3), .. })
        ));
    }
}
