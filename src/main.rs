//! `app`: parses the command line and dispatches to the library.

use redis_ql::cli;
use redis_ql::error::Error;
use redis_ql::settings::{CommandSettings, DeadSettings, LogFormat, Settings, SettingsError};
use redis_ql::{connection, dead, drain, keys::Keys, status};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long `get-errors` and `status` wait for one answer from Redis; the
/// connection, handshake included, gives up after three of these (3 s).
const FAIL_FAST: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    fill_standard_streams();
    let args = cli::normalize_env_flag(std::env::args().collect());
    if let Some(file) = cli::env_file(&args) {
        if let Err(e) = dotenvy::from_path(&file) {
            say(&format!(
                "error: cannot load --env file {}: {e}",
                file.display()
            ));
            return ExitCode::from(2);
        }
    }
    let settings = match cli::command().try_get_matches_from(args) {
        // --help, --version, and a bare `app`, which shows the help.
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(e) => Err(cli::first_line(&e)),
        Ok(matches) => Settings::from_matches(&matches).map_err(|e| e.to_string()),
    };
    let settings = match settings {
        Ok(settings) => settings,
        Err(line) => {
            say(&format!("error: {line}"));
            return ExitCode::from(2);
        }
    };
    // An invalid RUST_LOG is bad usage, not a silent `info`.
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            match tracing_subscriber::EnvFilter::try_new(&spec) {
                Ok(filter) => filter,
                Err(e) => {
                    say(&format!(
                        "error: invalid RUST_LOG '{}': {e}",
                        redis_ql::escape::for_terminal(&spec)
                    ));
                    return ExitCode::from(2);
                }
            }
        }
        _ => tracing_subscriber::EnvFilter::new("info"),
    };
    // Log lines go through a thread of their own and are dropped, not
    // waited for, when stderr cannot keep up: a stderr that is full, broken
    // or closed never blocks a copy's work or its shutdown, and never panics.
    let (stderr, flush_logs) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(10_000)
        .thread_name("log")
        .finish(std::io::stderr());
    // Colour only on a terminal, and never when NO_COLOR is set (no-color.org).
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt()
        .with_writer(stderr)
        .log_internal_errors(false)
        .with_env_filter(filter);
    match settings.log_format {
        LogFormat::Text => logs.with_ansi(colour).init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
    // A copy runs on one thread: its work is waiting on Redis, and on one
    // thread its tasks never pay for waking each other across threads (a
    // quarter to a third more messages a second on two cores; throughput
    // grows with copies). The other commands keep a pool, so that a
    // get-errors blocked on a slow reader still renews its lock.
    let runtime = match &settings.command {
        CommandSettings::Start(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Runtime::new(),
    };
    let code = match runtime {
        Ok(runtime) => {
            let result = runtime.block_on(dispatch(settings));
            // A host-name lookup still hanging in a blocking thread (a DNS
            // that stalls) must not hold the exit: dropping the runtime
            // would wait for it.
            runtime.shutdown_timeout(Duration::from_millis(100));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    say(&format!("error: {e}"));
                    ExitCode::from(e.exit_code() as u8)
                }
            }
        }
        Err(e) => {
            say(&format!("error: cannot start the runtime: {e}"));
            ExitCode::from(1)
        }
    };
    // Waits at most about a second for the last log lines; a writer that
    // cannot even be told to stop must not turn the exit into a panic.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(flush_logs)));
    code
}

/// One line to stderr; if stderr is gone there is nobody to tell.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Opens /dev/null on any of stdin, stdout and stderr that is closed, so
/// that no socket opened later takes its number (log lines written into the
/// Redis connection) and writes to it fail quietly instead.
fn fill_standard_streams() {
    use std::os::fd::{AsRawFd, IntoRawFd};
    loop {
        let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        else {
            return;
        };
        if null.as_raw_fd() > 2 {
            return;
        }
        // It took the number of a closed standard stream: keep it open.
        let _ = null.into_raw_fd();
    }
}

async fn dispatch(settings: Settings) -> Result<(), Error> {
    let Settings { redis, command, .. } = settings;
    let keys = Keys::new(&redis.namespace);
    match command {
        CommandSettings::Start(start) => {
            let shutdown = CancellationToken::new();
            stop_on_signals(
                shutdown.clone(),
                "stopping: finishing the messages in hand (a second signal exits at once)",
            );
            redis_ql::copy::run(redis, start, shutdown).await
        }
        CommandSettings::GetErrors(args) => {
            let conn = connection::connect(
                &redis,
                &format!("{}:get-errors", keys.namespace()),
                FAIL_FAST,
            )
            .await?;
            let taken = drain::run(
                &conn,
                &keys,
                args.limit,
                args.json,
                &mut std::io::stdout().lock(),
                &drain::stdout_would_block,
            )
            .await?;
            let held = match taken.held_by_others {
                0 => String::new(),
                n => format!(" ({n} of them held by other get-errors runs)"),
            };
            say(&format!(
                "took {} errors; {} remain{held}",
                taken.taken, taken.remaining
            ));
            Ok(())
        }
        CommandSettings::Status(args) => {
            let conn =
                connection::connect(&redis, &format!("{}:status", keys.namespace()), FAIL_FAST)
                    .await?;
            let shutdown = CancellationToken::new();
            if args.watch {
                stop_on_signals(shutdown.clone(), "stopping");
            }
            status::show(&conn, &keys, args.json, args.watch, &shutdown).await
        }
        CommandSettings::Dead(action) => {
            let conn =
                connection::connect(&redis, &format!("{}:dead", keys.namespace()), FAIL_FAST)
                    .await?;
            dead_letters(&conn, &keys, action).await
        }
        CommandSettings::Dashboard(dashboard) => {
            let shutdown = CancellationToken::new();
            stop_on_signals(shutdown.clone(), "stopping the dashboard");
            redis_ql::dashboard::run(redis, dashboard, shutdown).await
        }
        CommandSettings::Completions(shell) => {
            clap_complete::generate(shell, &mut cli::command(), "app", &mut std::io::stdout());
            Ok(())
        }
    }
}

async fn dead_letters(
    conn: &connection::Redis,
    keys: &Keys,
    action: DeadSettings,
) -> Result<(), Error> {
    match action {
        DeadSettings::List { limit, json } => {
            let shown = dead::list(conn, keys, limit, json, &mut std::io::stdout().lock()).await?;
            let total = dead::count(conn, keys).await?;
            say(&format!("{shown} of {total} dead-letter records"));
        }
        DeadSettings::Requeue { seqs } => {
            let done = dead::requeue(conn, keys, seqs.as_deref()).await?;
            let left = dead::count(conn, keys).await?;
            say(&format!(
                "requeued {} messages; {left} records left in dead-letter",
                done.requeued
            ));
            if !done.not_found.is_empty() {
                let missing: Vec<String> = done.not_found.iter().map(u64::to_string).collect();
                return Err(Error::Output(format!(
                    "no dead-lettered message has seq {}",
                    missing.join(", ")
                )));
            }
        }
        DeadSettings::Purge { yes } => {
            let counted = dead::count(conn, keys).await?;
            if counted == 0 {
                say("the dead-letter list is empty");
                return Ok(());
            }
            if !yes && !confirmed(&format!("delete {counted} dead-letter records? [y/N] ")) {
                return Err(Error::Settings(SettingsError(format!(
                    "not deleting {counted} dead-letter records without --yes (or a 'y' on a terminal)"
                ))));
            }
            let deleted = dead::purge(conn, keys, counted).await?;
            say(&format!("deleted {deleted} dead-letter records"));
        }
    }
    Ok(())
}

/// Asks on the terminal; false when stdin is not one or the answer is not yes.
fn confirmed(question: &str) -> bool {
    use std::io::{BufRead, Write};
    if !std::io::stdin().is_terminal() {
        return false;
    }
    let _ = write!(std::io::stderr(), "{question}");
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes")
}

/// Cancels `shutdown` on the first SIGTERM, SIGINT or SIGHUP; a second one
/// exits at once with 128 + its number, as a shell reports a signal (a
/// copy's messages then go back through the janitor, as after kill -9).
fn stop_on_signals(shutdown: CancellationToken, stopping: &'static str) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::warn!("cannot watch for signals; stop this process with kill -9");
            return;
        };
        let mut signals = 0;
        loop {
            let number = tokio::select! {
                _ = term.recv() => 15,
                _ = int.recv() => 2,
                _ = hup.recv() => 1,
            };
            signals += 1;
            if signals == 1 {
                // Cancel first: a log line must never stand in the way of stopping.
                shutdown.cancel();
                tracing::info!("{stopping}");
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(128 + number);
            }
        }
    });
}
