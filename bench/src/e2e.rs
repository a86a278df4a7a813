//! Row 2: genq end to end. The real `genq-api` and one `genq-worker` run as processes against
//! PostgreSQL and Redis; requests go in over HTTP and a request is done when PostgreSQL announces
//! its job final, which happens in the transaction that stores its results.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use genq_shared::{db, types::JobStatus, wait::FinalJobs};
use nix::{sys::signal, unistd::Pid};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{measure::Run, measure::peak_rss_bytes, workload::Request};

pub struct Options {
    pub bin_dir: PathBuf,
    pub model: PathBuf,
    pub postgres: String,
    pub redis: String,
    pub slots: Option<u32>,
    pub logs: PathBuf,
}

pub struct Genq {
    api: Child,
    worker: Child,
    base_url: String,
    pool: PgPool,
    finals: FinalJobs,
    client: reqwest::Client,
}

impl Genq {
    /// Starts the API and a worker on a fresh database and queue, and waits until a job runs.
    pub async fn start(options: &Options) -> anyhow::Result<Genq> {
        let database_url = format!("{}/genq_bench", options.postgres.trim_end_matches('/'));
        let pool = db::recreate(&database_url.parse()?, 4).await?;

        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let queue = format!("genq_bench_{}", &Uuid::new_v4().simple().to_string()[..8]);
        let spawn = |binary: &str| -> anyhow::Result<Child> {
            let log = std::fs::File::create(options.logs.join(format!("{binary}.log")))?;
            let mut command = Command::new(options.bin_dir.join(binary));
            command
                .env("DATABASE_URL", &database_url)
                .env("REDIS_URL", &options.redis)
                .env("GENQ_QUEUE", &queue)
                .env("GENQ_API_ADDR", addr.to_string())
                .env("GENQ_MODEL", &options.model)
                .env("RUST_LOG", "info")
                // Repetitions repeat seeded requests: measure inference, not the result cache.
                .env("GENQ_RESULT_CACHE_TTL_SECS", "0")
                .stdout(Stdio::null())
                .stderr(log);
            if let Some(slots) = options.slots {
                command.env("GENQ_SLOTS", slots.to_string());
            }
            command
                .spawn()
                .with_context(|| format!("starting {binary} (built with --release?)"))
        };
        let api = spawn("genq-api")?;
        let worker = spawn("genq-worker")?;
        let finals = FinalJobs::listen(pool.clone()).await?;
        let genq = Genq {
            api,
            worker,
            base_url: format!("http://{addr}"),
            pool,
            finals,
            client: reqwest::Client::new(),
        };
        genq.wait_ready().await?;
        // A first job loads every lazy path (model pages, connections) before anything is timed.
        let warm_up = Request {
            prompts: vec!["Hello".into()],
            max_tokens: 4,
            arrival_s: 0.0,
            seed: 1,
        };
        genq.submit_and_wait(&warm_up).await?;
        Ok(genq)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let ready = self
                .client
                .get(format!("{}/ready", self.base_url))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("genq-api was not ready within 60 s; see its log")
    }

    async fn submit_and_wait(&self, request: &Request) -> anyhow::Result<Uuid> {
        let response = self
            .client
            .post(format!("{}/batch", self.base_url))
            .json(&json!({
                "prompts": request.prompts,
                "max_tokens": request.max_tokens,
                "temperature": 0.8,
                "top_k": 40,
                "top_p": 0.95,
                "seed": request.seed,
            }))
            .send()
            .await?;
        ensure!(
            response.status() == 202,
            "submit answered {}",
            response.status()
        );
        let body: serde_json::Value = response.json().await?;
        let id: Uuid = body["task_id"].as_str().context("no task_id")?.parse()?;
        let status = self.finals.wait(id, Duration::from_secs(900)).await?;
        ensure!(
            status == Some(JobStatus::Completed),
            "job {id} ended {status:?}"
        );
        Ok(id)
    }

    pub async fn run(self: &Arc<Self>, requests: &[Request]) -> anyhow::Result<Run> {
        let start = Instant::now();
        let tasks: Vec<_> = requests
            .iter()
            .cloned()
            .map(|request| {
                let genq = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::time::sleep_until((start + request.arrival()).into()).await;
                    let id = genq.submit_and_wait(&request).await?;
                    anyhow::Ok((id, start.elapsed()))
                })
            })
            .collect();
        let mut ids = Vec::with_capacity(tasks.len());
        let mut finishes = Vec::with_capacity(tasks.len());
        for task in tasks {
            let (id, finished) = task.await??;
            ids.push(id);
            finishes.push(finished);
        }
        let tokens: i64 = sqlx::query_scalar(
            r"select coalesce(sum(completion_tokens), 0)::bigint from generations where job_id = any($1)",
        )
        .bind(&ids)
        .fetch_one(&self.pool)
        .await?;
        let mut run = Run::from_finishes(tokens as u64, requests, &finishes);
        run.peak_rss_bytes = peak_rss_bytes(self.worker.id());
        Ok(run)
    }

    /// SIGTERM to both, as an orchestrator would, and wait for them.
    pub fn stop(mut self) {
        for child in [&mut self.worker, &mut self.api] {
            let _ = signal::kill(Pid::from_raw(child.id() as i32), signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

impl Drop for Genq {
    /// A run that fails half-way must not leave the API and worker running; after `stop` this
    /// finds both already gone.
    fn drop(&mut self) {
        for child in [&mut self.worker, &mut self.api] {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

pub fn default_bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/release"))
}
