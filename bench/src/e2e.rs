//! Row 2: genq end to end. The real `genq-api` and one `genq-worker` run as processes (started by
//! `genq-harness`) against PostgreSQL and Redis; requests go in over HTTP and a request is done
//! when PostgreSQL announces its job final, which happens in the transaction that stores its
//! results.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::ensure;
use genq_harness::{Cluster, Config, Database, fresh_queue};
use genq_shared::{db, types::JobStatus, wait::FinalJobs};
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
    cluster: Cluster,
    base_url: String,
    pool: PgPool,
    finals: FinalJobs,
    client: reqwest::Client,
}

impl Genq {
    /// Starts the API and a worker on a fresh database and queue, and waits until a job runs.
    pub async fn start(options: &Options) -> anyhow::Result<Genq> {
        let database = Database::recreate(&options.postgres, "genq_bench").await?;
        let mut config = Config::new(
            options.bin_dir.clone(),
            database.url,
            options.redis.clone(),
            fresh_queue("genq_bench"),
            options.model.clone(),
            options.logs.clone(),
        );
        config.api_name = "genq-api".into();
        config.worker_names = vec!["genq-worker".into()];
        // Repetitions repeat seeded requests: measure inference, not the result cache.
        config.worker_env = vec![("GENQ_RESULT_CACHE_TTL_SECS".into(), "0".into())];
        if let Some(slots) = options.slots {
            config
                .worker_env
                .push(("GENQ_SLOTS".into(), slots.to_string()));
        }
        let cluster = Cluster::start(config).await?;
        let finals = FinalJobs::listen(database.pool.clone()).await?;
        let genq = Genq {
            base_url: cluster.base_url(),
            pool: database.pool,
            finals,
            // Every API route but readiness asks for the cluster's key.
            client: cluster.client(),
            cluster,
        };
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

    async fn submit_and_wait(&self, request: &Request) -> anyhow::Result<Uuid> {
        let body = json!({
            "prompts": request.prompts,
            "max_tokens": request.max_tokens,
            "temperature": 0.8,
            "top_k": 40,
            "top_p": 0.95,
            "seed": request.seed,
        });
        let id = genq_harness::client::submit(&self.client, &self.base_url, &body).await?;
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
        let tokens = db::generations::completion_tokens_of(&self.pool, &ids).await?;
        let mut run = Run::from_finishes(tokens as u64, requests, &finishes);
        run.peak_rss_bytes = peak_rss_bytes(self.cluster.worker_pid(0));
        Ok(run)
    }

    /// SIGTERM to both, as an orchestrator would, and wait for them. Dropping a `Genq` instead (a
    /// run that failed half-way) kills both.
    pub async fn stop(self) {
        self.cluster.stop().await;
    }
}
