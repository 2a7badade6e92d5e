//! The command line, made by clap from the option table of
//! [`crate::options`]. Values stay text here: [`crate::settings`] layers them
//! over the config file and the defaults and checks them all by one rule.

use crate::options::{self, Kind, Opt, Section};
use clap::{Arg, ArgAction, Command};
use std::fmt::Write as _;
use std::path::PathBuf;

/// One option of the table as a clap argument.
fn arg(opt: &'static Opt) -> Arg {
    let mut arg = Arg::new(opt.name).long(opt.name).help(opt.help());
    arg = match opt.kind {
        // From the environment, 1/0, true/false, yes/no and on/off.
        Kind::Flag => arg
            .action(ArgAction::SetTrue)
            .value_parser(clap::builder::BoolishValueParser::new()),
        Kind::Numbers => arg
            .action(ArgAction::Append)
            .value_name(opt.value_name)
            .num_args(1..)
            .value_delimiter(','),
        // Listed in help and completions; clap names the valid ones.
        Kind::Choice(words) => arg
            .action(ArgAction::Set)
            .value_name(opt.value_name)
            .value_parser(clap::builder::PossibleValuesParser::new(words)),
        // Negative numbers reach the range check, which names the option.
        _ => arg
            .action(ArgAction::Set)
            .value_name(opt.value_name)
            .allow_negative_numbers(true),
    };
    if let Some(c) = opt.short {
        arg = arg.short(c);
    }
    if let Some(var) = opt.env {
        arg = arg.env(var).hide_env_values(opt.kind == Kind::Secret);
    }
    arg
}

/// `app`'s command line.
pub fn command() -> Command {
    Command::new("app")
        .version(env!("CARGO_PKG_VERSION"))
        .about("An elected generator and exactly-once processors, coordinated only through Redis")
        .disable_help_flag(true)
        .subcommand_required(true)
        .arg_required_else_help(true)
        .after_help("Settings: CLI > environment > --config file > built-in defaults (config/default.toml).")
        .arg(
            Arg::new("help")
                .long("help")
                .action(ArgAction::Help)
                .global(true)
                .help("Print help"),
        )
        .arg(
            Arg::new("env")
                .long("env")
                .value_name("FILE")
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value(".env")
                .help("Load a dotenv file (.env when no FILE is given) before reading anything else"),
        )
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .global(true)
                .help_heading("Redis options")
                .help("Read settings from a TOML file shaped like config/default.toml"),
        )
        .args(options::of(Section::Redis).map(|opt| arg(opt).global(true).help_heading("Redis options")))
        .args(options::of(Section::Log).map(|opt| arg(opt).global(true).help_heading("Log options")))
        .subcommand(
            Command::new("start")
                .about("Start a copy (it becomes generator or processor)")
                .args(options::of(Section::Start).map(arg)),
        )
        .subcommand(
            Command::new("get-errors")
                .alias("getErrors")
                .about("Print and remove stored errors")
                .args(options::of(Section::GetErrors).map(arg)),
        )
        .subcommand(
            Command::new("status")
                .about("Show the cluster: generator, processors, queue, counters")
                .args(options::of(Section::Status).map(arg)),
        )
        .subcommand(
            Command::new("dead")
                .about("Read, requeue or delete the dead-letter list")
                .subcommand_required(true)
                .arg_required_else_help(true)
                .subcommand(
                    Command::new("list")
                        .about("Print dead-lettered items, oldest first, escaped like get-errors")
                        .args(options::of(Section::DeadList).map(arg)),
                )
                .subcommand(
                    Command::new("requeue")
                        .about("Put dead-lettered messages back on the queue, delivery count reset")
                        .args(options::of(Section::DeadRequeue).map(arg)),
                )
                .subcommand(
                    Command::new("purge")
                        .about("Delete the dead-letter list")
                        .args(options::of(Section::DeadPurge).map(arg)),
                ),
        )
        .subcommand(
            Command::new("dashboard")
                .about("Serve a web page of the cluster, its errors and dead letters, and a JSON API under /api/")
                .args(options::of(Section::Dashboard).map(arg)),
        )
        .subcommand(
            Command::new("completions")
                .about("Print a shell completion script (bash, zsh, fish, powershell, elvish)")
                .arg(
                    Arg::new("shell")
                        .required(true)
                        .value_parser(clap::value_parser!(clap_complete::Shell)),
                ),
        )
}

/// The man pages, made by clap_mangen from the definition `--help` shows:
/// `app.1`, and one per command (`app-start.1`, `app-dead-list.1`, ...),
/// as (file name, roff text).
pub fn man_pages() -> Vec<(String, String)> {
    fn add(command: &Command, pages: &mut Vec<(String, String)>) {
        let name = command
            .get_display_name()
            .unwrap_or(command.get_name())
            .to_string();
        let mut roff = Vec::new();
        if clap_mangen::Man::new(command.clone())
            .render(&mut roff)
            .is_ok()
        {
            pages.push((
                format!("{name}.1"),
                String::from_utf8_lossy(&roff).into_owned(),
            ));
        }
        for sub in command.get_subcommands().filter(|c| c.get_name() != "help") {
            add(sub, pages);
        }
    }
    let mut app = command();
    app.build();
    let mut pages = Vec::new();
    add(&app, &mut pages);
    pages
}

/// clap's error as one line, as every other bad option is reported, with
/// clap's "did you mean" tip when it has one.
pub fn first_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let first = rendered.lines().next().unwrap_or("error: bad usage");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let mut line = first.to_string();
    for said in rendered.lines().map(str::trim_start) {
        if said.starts_with("[possible values:") {
            let _ = write!(line, " {said}");
        } else if let Some(tip) = said.strip_prefix("tip: ") {
            let _ = write!(line, "; {tip}");
        }
    }
    line + " (see --help)"
}

const COMMANDS: [&str; 7] = [
    "start",
    "get-errors",
    "getErrors",
    "status",
    "dead",
    "dashboard",
    "completions",
];

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

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_command_definition_is_consistent() {
        command().debug_assert();
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
        let settings = crate::settings::Settings::from_args([
            "-h",
            "redis.local",
            "getErrors",
            "--limit",
            "3",
        ])
        .unwrap();
        assert_eq!(settings.redis.host, "redis.local");
        assert!(matches!(
            settings.command,
            crate::settings::CommandSettings::GetErrors(crate::settings::GetErrorsSettings {
                limit: Some(3),
                ..
            })
        ));
    }
}
