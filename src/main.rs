//! `app`: parses the command line and dispatches to the library.

use clap::Parser;
use redis_ql::cli::{self, Cli, Command};
use redis_ql::error::Error;
use redis_ql::{connection, drain, keys::Keys, settings, status};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

/// How long `get-errors` and `status` wait for Redis before giving up.
const FAIL_FAST: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let args = cli::normalize_env_flag(std::env::args().collect());
    if let Some(file) = cli::env_file(&args) {
        if let Err(e) = dotenvy::from_path(&file) {
            eprintln!("error: cannot load --env file {}: {e}", file.display());
            return ExitCode::from(2);
        }
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // One line, as for every other bad option: clap's first line.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("error: bad usage");
            eprintln!("{first} (see --help)");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), Error> {
    let (user, defaults) = settings::files(cli.config.as_deref())?;
    let redis_settings = settings::redis(&cli.redis, &user, &defaults)?;
    let keys = Keys::new(&redis_settings.namespace);
    match cli.command {
        Command::Start(args) => {
            let start = settings::start(&args, &user, &defaults)?;
            redis_ql::node::start(redis_settings, start).await
        }
        Command::GetErrors(args) => {
            let redis = connection::connect(
                &redis_settings,
                &format!("{}:get-errors", keys.namespace()),
                FAIL_FAST,
            )
            .await?;
            let drained = drain::run(
                &redis,
                &keys,
                args.limit,
                args.json,
                &mut std::io::stdout().lock(),
            )
            .await?;
            eprintln!(
                "took {} errors; {} remain",
                drained.taken, drained.remaining
            );
            Ok(())
        }
        Command::Status(args) => {
            let redis = connection::connect(
                &redis_settings,
                &format!("{}:status", keys.namespace()),
                FAIL_FAST,
            )
            .await?;
            status::show(&redis, &keys, args.json, args.watch).await
        }
    }
}
