//! The container path as users take it: the Dockerfile's image and
//! docker-compose.yml, scaled, with podman and podman-compose standing in for
//! Docker (`scripts/container-setup` installs them and the base images).
//!
//! The image is the Dockerfile's `prebuilt` stage: the runtime stage users
//! get, with the `app` under test (`$APP_BIN`, else the one cargo built)
//! instead of one compiled inside. `tests/container/compose.ci.yml`, given
//! after docker-compose.yml, publishes Redis's port on the host's loopback
//! (the test's own window on Redis: status and the audit) and makes every
//! processed message an error record (`--error-rate 1`), the audit trail.
//!
//! Ignored by default, as it needs podman: CI runs it by name,
//! `cargo test --test suite -- --ignored container::`.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use testkit::*;

/// The image the test builds and runs (and rebuilds over, each run).
const IMAGE: &str = "localhost/redis-ql:ci";

/// The image under test: `$CONTAINER_TEST_IMAGE` as it is (e.g. the
/// Dockerfile's last stage, built whole), else [`IMAGE`], built now.
fn image_under_test() -> String {
    match std::env::var("CONTAINER_TEST_IMAGE") {
        Ok(image) if !image.is_empty() => image,
        _ => {
            build_image();
            IMAGE.to_string()
        }
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `$PODMAN_COMPOSE`, else the one scripts/container-setup installs under
/// target/, else the one on the PATH.
fn podman_compose() -> String {
    std::env::var("PODMAN_COMPOSE")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| {
            let venv = workspace().join("target/ci-podman-compose/bin/podman-compose");
            if venv.exists() {
                venv.display().to_string()
            } else {
                "podman-compose".to_string()
            }
        })
}

fn podman(args: &[&str]) -> Output {
    try_podman(args).expect("podman must be installed: run scripts/container-setup")
}

/// `podman ARGS`; None when podman cannot be run (for the clean-up, which
/// must not panic while a failure unwinds).
fn try_podman(args: &[&str]) -> Option<Output> {
    Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
}

/// `podman ARGS`, which must succeed; its stdout.
fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The image's id, if it exists.
fn image_id(image: &str) -> Option<String> {
    let out = podman(&["image", "inspect", "--format", "{{.Id}}", image]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Builds [`IMAGE`] from the Dockerfile's `prebuilt` stage with the binary
/// under test in target/ci-image/app (stripped: a debug build is ~120 MB, a
/// stripped one ~17 MB). `--format docker` keeps the HEALTHCHECK, which the
/// OCI format has no field for. The image it replaces is removed.
fn build_image() {
    let dir = workspace().join("target/ci-image");
    std::fs::create_dir_all(&dir).expect("target/ci-image");
    let partial = dir.join(format!("app.{}", std::process::id()));
    std::fs::copy(app_binary(), &partial).expect("copy the app binary into target/ci-image");
    // Without strip (binutils) the image is only bigger.
    let _ = Command::new("strip").arg(&partial).status();
    std::fs::rename(&partial, dir.join("app")).expect("target/ci-image/app");
    let before = image_id(IMAGE);
    let context = workspace().display().to_string();
    podman_ok(&[
        "build", "--format", "docker", "--target", "prebuilt", "--tag", IMAGE, &context,
    ]);
    if let Some(old) = before.filter(|old| image_id(IMAGE).as_ref() != Some(old)) {
        // Only if no container or tag uses it any more.
        let _ = podman(&["rmi", &old]);
    }
}

/// One compose project, with a name no other run uses; everything it made
/// is removed on drop, after a failure too.
struct Project {
    name: String,
    image: String,
    redis_port: u16,
}

impl Project {
    /// `podman-compose up -d --scale app=N` of docker-compose.yml and CI's
    /// additions.
    fn up(image: String, copies: usize) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let project = Self {
            name: format!("rqlct{}x{nanos}", std::process::id()),
            image,
            redis_port: free_port(),
        };
        let scale = format!("app={copies}");
        let out = project
            .compose(&["up", "-d", "--scale", &scale])
            .output()
            .expect("podman-compose runs: run scripts/container-setup");
        assert!(
            out.status.success(),
            "podman-compose up: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        project
    }

    fn compose(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(podman_compose());
        cmd.current_dir(workspace())
            .args(["-p", &self.name])
            .args(["-f", "docker-compose.yml"])
            .args(["-f", "tests/container/compose.ci.yml"])
            .args(args)
            .env("APP_IMAGE", &self.image)
            .env("CI_REDIS_PORT", self.redis_port.to_string())
            .stdin(Stdio::null());
        cmd
    }

    /// The ids of the project's containers (of one service, if named),
    /// running or not.
    fn containers(&self, service: Option<&str>) -> Vec<String> {
        self.try_containers(service)
            .expect("podman ps lists the project's containers")
    }

    fn try_containers(&self, service: Option<&str>) -> Option<Vec<String>> {
        let project = format!("label=io.podman.compose.project={}", self.name);
        let mut args = vec!["ps", "-a", "--no-trunc", "--format", "{{.ID}}"];
        args.extend(["--filter", &project]);
        let service = service.map(|s| format!("label=io.podman.compose.service={s}"));
        if let Some(service) = &service {
            args.extend(["--filter", service]);
        }
        let out = try_podman(&args).filter(|out| out.status.success())?;
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect(),
        )
    }

    /// `{{.State.Pid}} {{.RestartCount}} {{.State.Status}} {{.State.ExitCode}}`.
    fn state(&self, id: &str) -> (u32, u64, String, i64) {
        let out = podman_ok(&[
            "inspect",
            "--format",
            "{{.State.Pid}} {{.RestartCount}} {{.State.Status}} {{.State.ExitCode}}",
            id,
        ]);
        let mut words = out.split_whitespace();
        let mut next = || words.next().unwrap_or_default().to_string();
        (
            next().parse().unwrap_or(0),
            next().parse().unwrap_or(0),
            next(),
            next().parse().unwrap_or(-1),
        )
    }

    /// The connection options of the host's `app` for the published Redis.
    fn app_args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.redis_port.to_string(),
        ]
    }

    /// `app status --json` from the host, through the published port; None
    /// while Redis does not answer.
    fn status(&self) -> Option<Value> {
        let out = Command::new(app_binary())
            .args(self.app_args())
            .args(["status", "--json"])
            .env_remove("RUST_LOG")
            .output()
            .expect("app runs");
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.redis_port))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("a connection to the project's Redis")
    }

    /// The logs and states of every container, for a failure's report.
    fn report(&self) {
        for id in self.try_containers(None).unwrap_or_default() {
            let format =
                "{{.Name}} {{.State.Status}} exit={{.State.ExitCode}} restarts={{.RestartCount}}";
            if let Some(state) = try_podman(&["inspect", "--format", format, &id]) {
                eprintln!("---- {}", String::from_utf8_lossy(&state.stdout).trim());
            }
            if let Some(logs) = try_podman(&["logs", "--tail", "25", &id]) {
                eprintln!(
                    "{}{}",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.report();
        }
        // `podman-compose down` alone is not enough with --scale: it stops
        // only the first copy with `-t 0` and the others as orphans, with
        // podman's default 10 s, which they use up retrying the Redis it
        // stopped first; and it fails to remove Redis, and so its volume,
        // while copies still depend on it. So every container of the project
        // is removed first, at once (dependents go, then Redis on the next
        // round), then `down` does the rest and the volume and network go by
        // name. Nothing here may panic: this also runs while a failure unwinds.
        for _ in 0..3 {
            let ids = self.try_containers(None).unwrap_or_default();
            if ids.is_empty() {
                break;
            }
            let mut args = vec!["rm", "--force", "--time", "0"];
            args.extend(ids.iter().map(String::as_str));
            let _ = try_podman(&args);
        }
        let _ = self
            .compose(&["down", "-t", "0", "--remove-orphans", "-v"])
            .output();
        let _ = try_podman(&[
            "volume",
            "rm",
            "--force",
            &format!("{}_redis-data", self.name),
        ]);
        let _ = try_podman(&["pod", "rm", "--force", &format!("pod_{}", self.name)]);
        let _ = try_podman(&[
            "network",
            "rm",
            "--force",
            &format!("{}_default", self.name),
        ]);
    }
}

fn alive_copies(status: &Value) -> Vec<&Value> {
    status["copies"]
        .as_array()
        .map(|copies| {
            copies
                .iter()
                .filter(|c| c["alive"].as_bool() == Some(true))
                .collect()
        })
        .unwrap_or_default()
}

fn number(status: &Value, field: &str) -> u64 {
    status[field].as_u64().unwrap_or(0)
}

/// Runs `check` every 10 ms (each run is a process or two) until it returns
/// Some; panics with `what` at the deadline.
fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let mut found = None;
    wait_until(what, deadline, || {
        found = check();
        found.is_some()
    });
    found.expect("checked")
}

#[test]
#[ignore = "needs podman and podman-compose: scripts/container-setup"]
fn compose_scaled_copies_elect_one_generator_process_and_hand_over_on_kill() {
    let _serial = serial();
    let started = Instant::now();
    let phase = |what: &str| eprintln!("[{:>5.1} s] {what}", started.elapsed().as_secs_f64());

    let image = image_under_test();
    phase("image built");
    let project = Project::up(image, 3);
    phase("compose up");

    // Redis: up on the published port, and healthy by the compose file's own
    // check. Podman runs health checks on a schedule only through systemd,
    // absent here, so the test runs it (exit 0: healthy).
    wait_until(
        "Redis to answer on its published port",
        Duration::from_secs(30),
        || {
            redis::Client::open(format!("redis://127.0.0.1:{}/", project.redis_port))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        },
    );
    let redis = project.containers(Some("redis"));
    assert_eq!(redis.len(), 1, "one Redis: {redis:?}");
    wait_until(
        "Redis's health check to pass",
        Duration::from_secs(30),
        || podman(&["healthcheck", "run", &redis[0]]).status.success(),
    );

    // Three live copies, one of them the generator, messages processed.
    let apps = project.containers(Some("app"));
    assert_eq!(apps.len(), 3, "three app containers: {apps:?}");
    // A copy's host name is its container's (the id's first 12 characters).
    let container_of = |host: &str| -> String {
        apps.iter()
            .find(|id| !host.is_empty() && id.starts_with(host))
            .unwrap_or_else(|| panic!("no app container has the host name {host:?}: {apps:?}"))
            .clone()
    };
    // Copies resolve `redis` through podman's DNS, which here can take up
    // to 40 s to answer a container's first lookups: a generous deadline.
    let before = wait_for(
        "3 live copies, one generator, messages processed",
        Duration::from_secs(60),
        || {
            let status = project.status()?;
            let alive = alive_copies(&status);
            let generators: Vec<&&Value> = alive
                .iter()
                .filter(|c| c["role"].as_str() == Some("generator"))
                .collect();
            let ok = alive.len() == 3
                && generators.len() == 1
                && status["generator"]["id"] == generators[0]["id"]
                && number(&status, "processed") >= 6;
            ok.then_some(status)
        },
    );
    phase("3 copies, one generator, processing");
    let hosts: std::collections::HashSet<&str> = alive_copies(&before)
        .iter()
        .filter_map(|c| c["host"].as_str())
        .collect();
    assert_eq!(hosts.len(), 3, "one copy in each container: {before}");
    for host in &hosts {
        container_of(host);
    }

    // kill -9 of the generator's process, as a crash would (`podman kill`
    // counts as stopped by the user, and the restart policy leaves it down).
    let old_id = before["generator"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let victim = container_of(before["generator"]["host"].as_str().unwrap_or_default());
    let (victim_pid, restarts, _, _) = project.state(&victim);
    assert!(victim_pid > 0, "the generator's container runs");
    let generated_then = number(&before, "generated");
    send_signal(victim_pid, "KILL");
    let killed_at = Instant::now();
    let after = wait_for(
        "another copy to generate and processing to go on",
        Duration::from_secs(10),
        || {
            let status = project.status()?;
            let new_id = status["generator"]["id"].as_str()?;
            let ok = new_id != old_id
                && number(&status, "generated") >= generated_then + 3
                // More than the old generator can have made: some of the
                // new one's messages are processed too.
                && number(&status, "processed") >= generated_then + 3;
            ok.then_some(status)
        },
    );
    let new_id = after["generator"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    eprintln!(
        "generator {old_id} killed; {new_id} generating, and processing on, {} ms later",
        killed_at.elapsed().as_millis()
    );
    phase("handed over");

    // The restart policy brings the killed container back, and in it a new
    // copy that registers (through podman's DNS again: a generous deadline).
    wait_until(
        "the killed container to be restarted",
        Duration::from_secs(20),
        || {
            let (pid, count, status, _) = project.state(&victim);
            status == "running" && count > restarts && pid != victim_pid
        },
    );
    let victim_host = before["generator"]["host"].as_str().unwrap_or_default();
    wait_until(
        "a new copy in the restarted container to register",
        Duration::from_secs(60),
        || {
            project.status().is_some_and(|status| {
                alive_copies(&status).iter().any(|c| {
                    c["host"].as_str() == Some(victim_host)
                        && c["id"].as_str().is_some_and(|id| id != old_id)
                })
            })
        },
    );
    phase("killed container restarted, its new copy registered");

    // The CLI inside a container reaches Redis by the service name.
    let survivor = apps
        .iter()
        .find(|id| **id != victim)
        .expect("a container that was not killed")
        .clone();
    wait_until(
        "`app status --json` inside a container to name the new generator",
        Duration::from_secs(60),
        || {
            let out = podman(&["exec", &survivor, "app", "status", "--json"]);
            out.status.success()
                && serde_json::from_slice::<Value>(&out.stdout)
                    .is_ok_and(|s| s["generator"]["id"].as_str() == Some(new_id.as_str()))
        },
    );
    // The app's health check: GET /readyz on APP_HTTP answers 200.
    wait_until(
        "the app container's health check to pass",
        Duration::from_secs(30),
        || podman(&["healthcheck", "run", &survivor]).status.success(),
    );
    phase("checked inside a container");

    // docker stop / compose down: SIGTERM, and every copy exits 0 well
    // within the grace period (past it SIGKILL would make it 137), even one
    // whose host-name lookup still hangs in podman's slow DNS: the runtime
    // is shut down with a timeout instead of waiting for that thread.
    let mut stop = vec!["stop", "--time", "15"];
    stop.extend(apps.iter().map(String::as_str));
    let stopping = Instant::now();
    podman_ok(&stop);
    eprintln!("stopped 3 copies in {} ms", stopping.elapsed().as_millis());
    for id in &apps {
        let (_, _, status, code) = project.state(id);
        assert_eq!(
            (status.as_str(), code),
            ("exited", 0),
            "container {id} after SIGTERM"
        );
    }
    phase("stopped");

    // Every message generated is in exactly one place, none missing.
    let out = Command::new(app_binary())
        .args(project.app_args())
        .args(["get-errors", "--json"])
        .env_remove("RUST_LOG")
        .output()
        .expect("app runs");
    assert!(
        out.status.success(),
        "get-errors: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<Record> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}")))
        .collect();
    let records = audit_exactly_once_on(&mut project.conn(), &records);
    let stamps: Vec<Stamp> = records.iter().map(Stamp::from).collect();
    assert_epochs_never_step_back(&stamps);
    eprintln!(
        "gaps between generators: {:?} ms",
        gaps_between_epochs(&stamps)
    );
    let producers: std::collections::HashSet<&str> =
        records.iter().map(|r| r.producer.as_str()).collect();
    assert!(
        producers.contains(old_id.as_str()) && producers.contains(new_id.as_str()),
        "messages from both generators, {old_id} and {new_id}: {producers:?}"
    );
    let generated: u64 = redis::cmd("GET")
        .arg(keys().seq())
        .query(&mut project.conn())
        .expect("the seq counter");
    eprintln!(
        "audit: {generated} messages, each in one place: {} processed, {} still queued or held",
        records.len(),
        seqs_outside_errors_on(&mut project.conn()).len()
    );
    phase("audited");
}
