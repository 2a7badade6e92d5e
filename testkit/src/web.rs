//! `app dashboard` as a process, and the plain HTTP its tests speak to it.

use crate::{app_binary, free_port, wait_until, RedisServer};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// An HTTP client that hands back every status instead of failing on 4xx.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// An answer: its status, and its body parsed as JSON (`Value::Null` when
/// it is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

/// A running `app dashboard`; killed on drop.
pub struct Dashboard {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub token: Option<String>,
}

impl Dashboard {
    /// Starts a dashboard of `server` on a free port, with `--token` when
    /// given, and waits until it answers.
    pub fn start(server: &RedisServer, token: Option<&str>) -> Self {
        Self::start_with(server.dir.path(), &server.app_args(), token, "127.0.0.1")
    }

    /// A dashboard told where Redis is by `connect`, listening on `ip` (and
    /// asked through 127.0.0.1), logging into `dir`.
    pub fn start_with(
        dir: &std::path::Path,
        connect: &[String],
        token: Option<&str>,
        ip: &str,
    ) -> Self {
        let port = free_port();
        let log = dir.join(format!("dashboard-{port}.log"));
        let file = std::fs::File::create(&log).expect("a log file");
        let mut command = Command::new(app_binary());
        command
            .args(connect)
            .args(["dashboard", "--listen", &format!("{ip}:{port}")])
            .env("RUST_LOG", "info")
            .env_remove("APP_DASHBOARD_TOKEN")
            .stdout(Stdio::null())
            .stderr(file);
        if let Some(token) = token {
            command.env("APP_DASHBOARD_TOKEN", token);
        }
        let child = command.spawn().expect("app dashboard starts");
        let dashboard = Self {
            child,
            port,
            log,
            token: token.map(str::to_string),
        };
        wait_until("the dashboard answers", Duration::from_secs(10), || {
            dashboard.try_get("/api/info").is_some()
        });
        dashboard
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn try_get(&self, path: &str) -> Option<Answer> {
        let mut response = agent(Duration::from_secs(5))
            .get(&self.url(path))
            .call()
            .ok()?;
        Some(answer(response.status().as_u16(), response.body_mut()))
    }

    /// GET `path`; it must answer.
    pub fn get(&self, path: &str) -> Answer {
        self.try_get(path)
            .unwrap_or_else(|| panic!("GET {path} got no answer; log:\n{}", self.log_text()))
    }

    /// POST `body` (JSON, or nothing) to `path` with `token` as the bearer.
    pub fn post_as(&self, token: Option<&str>, path: &str, body: Option<&Value>) -> Answer {
        let mut request = agent(Duration::from_secs(10)).post(&self.url(path));
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let sent = match body {
            Some(body) => request
                .header("Content-Type", "application/json")
                .send(body.to_string()),
            None => request.send_empty(),
        };
        let mut response =
            sent.unwrap_or_else(|e| panic!("POST {path}: {e}; log:\n{}", self.log_text()));
        answer(response.status().as_u16(), response.body_mut())
    }

    /// POST with the dashboard's own token.
    pub fn post(&self, path: &str, body: Option<&Value>) -> Answer {
        self.post_as(self.token.clone().as_deref(), path, body)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn answer(status: u16, body: &mut ureq::Body) -> Answer {
    let text = body.read_to_string().unwrap_or_default();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
