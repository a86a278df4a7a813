//! The genq rows. The real `genq-api` and one `genq-worker` run as processes (started by
//! `genq-harness`) on a fresh database and queue; requests go in over HTTP as users send them, and
//! each client waits for its job over HTTP in one of the ways `clients` knows. A request is done
//! when its client has seen the job final: polling's interval is part of what users see.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, bail, ensure};
use genq_harness::{Cluster, Config, Database, fresh_queue};
use genq_shared::types::{JobStatus, JobView};
use serde_json::json;
use uuid::Uuid;

use crate::{
    clients::{self, Waiting},
    measure::{Run, peak_rss_bytes},
    streamed::{self, Dialect, Streamed},
    workload::{Request, at_arrivals},
};

pub struct Options {
    pub bin_dir: PathBuf,
    pub model: PathBuf,
    pub postgres: String,
    pub redis: String,
    /// Set for the worker (`--slots`, `--worker-env`), after the benchmark's own settings.
    pub worker_env: Vec<(String, String)>,
    pub logs: PathBuf,
}

pub struct Genq {
    cluster: Cluster,
    base_url: String,
    http: reqwest::Client,
}

impl Genq {
    /// Starts the API and a worker on a fresh database and queue, with `extra_env` for the worker
    /// after the options' own, and waits until a job has run.
    pub async fn start(options: &Options, extra_env: &[(String, String)]) -> anyhow::Result<Genq> {
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
        // Seeds are fresh every repetition anyway; with the cache off a repeated seed could not
        // be answered from PostgreSQL either: this measures inference.
        config.worker_env = vec![("GENQ_RESULT_CACHE_TTL_SECS".into(), "0".into())];
        config.worker_env.extend(options.worker_env.iter().cloned());
        config.worker_env.extend(extra_env.iter().cloned());
        let cluster = Cluster::start(config).await?;
        let genq = Genq {
            base_url: cluster.base_url(),
            http: clients::http(cluster.client_builder())?,
            cluster,
        };
        // A first job loads every lazy path (model pages, connections) before anything is timed.
        let warm_up = Request {
            prompts: vec!["Hello".into()],
            max_tokens: 4,
            arrival_s: 0.0,
            seed: 1,
        };
        genq.submit_and_wait(&warm_up, Waiting::Poll).await?;
        Ok(genq)
    }

    async fn submit_and_wait(
        &self,
        request: &Request,
        waiting: Waiting,
    ) -> anyhow::Result<JobView> {
        let body = json!({
            "prompts": request.prompts,
            "max_tokens": request.max_tokens,
            "temperature": 0.8,
            "top_k": 40,
            "top_p": 0.95,
            "seed": request.seed,
        });
        let id = genq_harness::client::submit(&self.http, &self.base_url, &body).await?;
        let view = clients::wait(&self.http, &self.base_url, id, waiting).await?;
        check(id, &view)?;
        Ok(view)
    }

    /// One run of `requests`, each client waiting as `waiting` says; the worker's peak RSS is
    /// read at the end (its process is this run's alone).
    pub async fn run(
        self: &Arc<Self>,
        requests: &[Request],
        waiting: Waiting,
    ) -> anyhow::Result<Run> {
        let done = at_arrivals(requests, |request| {
            let genq = Arc::clone(self);
            async move { genq.submit_and_wait(&request, waiting).await }
        })
        .await?;
        let (views, finishes): (Vec<JobView>, Vec<Duration>) = done.into_iter().unzip();
        let tokens: u64 = views
            .iter()
            .flat_map(|view| &view.results)
            .map(|r| r.completion_tokens as u64)
            .sum();
        let mut run = Run::from_finishes(tokens, requests, &finishes);
        run.peak_rss_bytes = peak_rss_bytes(self.cluster.worker_pid(0));
        run.detail = waiting_detail(&views, &finishes, tokens);
        Ok(run)
    }

    /// One run of single-prompt `requests`, each a `POST /v1/completions` as OpenAI's clients
    /// send it, streamed (time to first token too) or answered whole.
    pub async fn run_completions(
        self: &Arc<Self>,
        requests: &[Request],
        stream: bool,
    ) -> anyhow::Result<Run> {
        let model = genq_harness::client::first_model(&self.http, &self.base_url).await?;
        let done = at_arrivals(requests, |request| {
            let genq = Arc::clone(self);
            let model = model.clone();
            async move { genq.complete(&model, &request, stream).await }
        })
        .await?;
        let mut run = if stream {
            Run::streamed(requests, &done)
        } else {
            let finishes: Vec<Duration> = done.iter().map(|(_, at)| *at).collect();
            Run::from_finishes(
                done.iter().map(|(s, _)| s.tokens).sum(),
                requests,
                &finishes,
            )
        };
        run.peak_rss_bytes = peak_rss_bytes(self.cluster.worker_pid(0));
        Ok(run)
    }

    /// One `POST /v1/completions` of `request`'s one prompt. genq's OpenAI path takes no `top_k`:
    /// it samples with top-p and temperature as OpenAI's clients ask.
    async fn complete(
        &self,
        model: &str,
        request: &Request,
        stream: bool,
    ) -> anyhow::Result<Streamed> {
        let [prompt] = &request.prompts[..] else {
            bail!("a /v1/completions request here has one prompt");
        };
        let mut body = json!({
            "model": model,
            "prompt": prompt,
            "max_tokens": request.max_tokens,
            "temperature": 0.8,
            "top_p": 0.95,
            "seed": request.seed,
        });
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({ "include_usage": true });
        }
        let sent = tokio::time::Instant::now();
        let url = format!("{}/v1/completions", self.base_url);
        let response = clients::post_ok(&self.http, &url, &body, "POST /v1/completions").await?;
        if stream {
            return streamed::read(response, sent, Dialect::OpenAi).await;
        }
        let completion: serde_json::Value = response.json().await?;
        let tokens = completion["usage"]["completion_tokens"]
            .as_u64()
            .context("a completion without usage.completion_tokens")?;
        // Answered whole: the first token reaches the user with the last.
        Ok(Streamed {
            tokens,
            first_token: sent.elapsed(),
        })
    }

    /// SIGTERM to both, as an orchestrator would, and wait for them. Dropping a `Genq` instead (a
    /// run that failed half-way) kills both at once, abandoning the jobs in hand.
    pub async fn stop(self) {
        self.cluster.stop().await;
    }
}

/// What the waiting added: tokens/s as PostgreSQL recorded the jobs (first created to last
/// finished), and the longest a client saw its job final after it finished. PostgreSQL's clock
/// and this process's are lined up at the first job's creation, which follows the first request
/// by the API's insert alone.
fn waiting_detail(views: &[JobView], finishes: &[Duration], tokens: u64) -> Option<String> {
    let first = views.iter().map(|v| v.created_at).min()?;
    let finished: Vec<f64> = views
        .iter()
        .map(|v| Some((v.finished_at? - first).to_std().ok()?.as_secs_f64()))
        .collect::<Option<_>>()?;
    let last = finished.iter().copied().fold(0.0, f64::max);
    let (lag, job) = finished
        .iter()
        .zip(finishes)
        .zip(views)
        .map(|((done, seen), view)| (seen.as_secs_f64() - done, view.task_id))
        .max_by(|a, b| a.0.total_cmp(&b.0))?;
    Some(format!(
        "PostgreSQL: {:.1} tok/s in {last:.2} s; slowest client saw its job final {lag:.2} s after \
         it finished (job {job})",
        tokens as f64 / last
    ))
}

/// A job counts only if it completed with a result for every prompt, none from the result cache.
pub(crate) fn check(id: Uuid, view: &JobView) -> anyhow::Result<()> {
    ensure!(
        view.status == JobStatus::Completed,
        "job {id} ended {:?}{}",
        view.status,
        view.error
            .as_ref()
            .map_or(String::new(), |e| format!(": {e:?}"))
    );
    ensure!(
        view.results.len() as i32 == view.counts.total,
        "job {id} completed with {} of {} results",
        view.results.len(),
        view.counts.total
    );
    ensure!(
        view.results.iter().all(|r| !r.cached),
        "job {id} was answered from the result cache"
    );
    Ok(())
}
