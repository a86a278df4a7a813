//! A second API as a real process, and HTTP clients that carry a key.

use std::{ffi::OsStr, time::Duration};

use genq_harness::process::{Process, Spawn};
use tokio::time::Instant;

use crate::{PATIENCE, binary, free_port, redis_url};

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
/// its stderr goes to a file of its own, which [`ApiProcess::stop`] returns. Started as the
/// benchmark and the fault suite start theirs (`genq_harness::process`): no `GENQ_*` setting is
/// inherited.
pub struct ApiProcess {
    pub address: String,
    process: Process,
    log: tempfile::NamedTempFile,
}

impl ApiProcess {
    pub(crate) async fn spawn(database_url: &str, queue: &str, env: &[(&str, &str)]) -> ApiProcess {
        // A port free now may be taken by another test's process before the API binds it; the
        // API then exits saying so, and another port is tried.
        for _ in 0..5 {
            match Self::try_spawn(database_url, queue, env).await {
                Ok(api) => return api,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("genq-api exited before it was ready\n{log}"),
            }
        }
        panic!("genq-api found no free port in 5 tries");
    }

    /// The log of an API expected to exit before it is ready; panics if it became ready.
    pub(crate) async fn exit_log(database_url: &str, queue: &str, env: &[(&str, &str)]) -> String {
        match Self::try_spawn(database_url, queue, env).await {
            Err(log) => log,
            Ok(api) => panic!("genq-api became ready at {}", api.address),
        }
    }

    /// The API once it answers `/ready`, or its log if it exited before.
    async fn try_spawn(
        database_url: &str,
        queue: &str,
        env: &[(&str, &str)],
    ) -> Result<ApiProcess, String> {
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let addr = format!("127.0.0.1:{}", free_port());
        let redis = redis_url();
        let settings: Vec<(&str, &str)> = [
            ("DATABASE_URL", database_url),
            ("REDIS_URL", &redis),
            ("GENQ_QUEUE", queue),
            ("GENQ_API_ADDR", &addr),
            ("GENQ_RECONCILE_INTERVAL_SECS", "0"),
            ("RUST_LOG", "warn"),
        ]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
        let mut process = Process::spawn(Spawn {
            wrapper: &[],
            binary: &binary("genq-api"),
            env: settings.iter().map(|&(k, v)| (k, OsStr::new(v))).collect(),
            log: log.path(),
        })
        .expect("starting genq-api");
        // A separate process can only say it is up by answering.
        let address = format!("http://{addr}");
        let ready = format!("{address}/ready");
        let client = reqwest::Client::new();
        let give_up = Instant::now() + PATIENCE;
        loop {
            if process.exited().is_some() {
                return Err(std::fs::read_to_string(log.path()).unwrap_or_default());
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
                Instant::now() < give_up,
                "genq-api not ready after {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(ApiProcess {
            address,
            process,
            log,
        })
    }

    /// Kills the process outright (SIGKILL), as a crash or an OOM kill would end it.
    pub async fn kill(mut self) {
        self.process.kill().await;
    }

    /// Stops the process (SIGTERM, as an orchestrator does) and returns what it logged.
    pub async fn stop(mut self) -> String {
        self.process.terminate();
        self.process.wait_or_kill(Instant::now() + PATIENCE).await;
        let status = self.process.exited();
        assert!(
            status.is_some_and(|s| s.success()),
            "genq-api did not stop cleanly on SIGTERM: {status:?}"
        );
        std::fs::read_to_string(self.log.path()).expect("reading the API's log")
    }
}
