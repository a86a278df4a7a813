//! A second API as a real process, and HTTP clients that carry a key.

use std::time::Duration;

use crate::{PATIENCE, binary, redis_url};

/// A client that sends `key` (if any) as `Authorization: Bearer`.
pub fn client_with_key(key: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .expect("a key is a valid header value");
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

/// The `genq-api` binary on a free port, killed when this is dropped (also when the test fails);
/// its stderr goes to a file of its own ([`ApiProcess::log`]).
pub struct ApiProcess {
    pub address: String,
    child: tokio::process::Child,
    log: tempfile::NamedTempFile,
}

impl ApiProcess {
    pub(crate) async fn spawn(database_url: &str, queue: &str, env: &[(&str, &str)]) -> ApiProcess {
        let log = tempfile::NamedTempFile::new().expect("a log file");
        // Free now; the API binds it a moment later (the OS hands ephemeral ports out in turn).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let address = format!("http://127.0.0.1:{port}");
        let mut child = tokio::process::Command::new(binary("genq-api"))
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", redis_url())
            .env("GENQ_QUEUE", queue)
            .env("GENQ_API_ADDR", format!("127.0.0.1:{port}"))
            .env("GENQ_RECONCILE_INTERVAL_SECS", "0")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().expect("the log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("starting genq-api");
        // A separate process can only say it is up by answering.
        let ready = format!("{address}/ready");
        let client = reqwest::Client::new();
        let give_up = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().expect("checking genq-api") {
                let log = std::fs::read_to_string(log.path()).unwrap_or_default();
                panic!("genq-api exited before it was ready: {status}\n{log}");
            }
            if client
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "genq-api not ready after {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ApiProcess {
            address,
            child,
            log,
        }
    }

    /// Kills the process outright (SIGKILL), as a crash or an OOM kill would end it.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("killing genq-api");
    }

    /// Stops the process (SIGTERM, as an orchestrator does) and returns what it logged.
    pub async fn stop(mut self) -> String {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let stopped = tokio::time::timeout(PATIENCE, self.child.wait()).await;
        assert!(
            matches!(stopped, Ok(Ok(status)) if status.success()),
            "genq-api did not stop cleanly on SIGTERM: {stopped:?}"
        );
        std::fs::read_to_string(self.log.path()).expect("reading the API's log")
    }
}
