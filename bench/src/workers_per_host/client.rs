//! The workload as users send it: every job posted over HTTP at once, then each one polled with
//! `GET /batch_result/{id}` every 0.5 s until it is final. The polling is part of what is
//! measured: on a small host it takes CPU from the workers, as real clients' polling does.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use genq_harness::Cluster;
use genq_shared::types::JobView;
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

const POLL_EVERY: Duration = Duration::from_millis(500);
/// A run that takes longer than this is broken, not slow.
const PATIENCE: Duration = Duration::from_secs(900);

/// One job's request body.
pub fn job(prompts: Vec<String>, max_tokens: u32, seed: u32) -> Value {
    json!({
        "prompts": prompts,
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "top_k": 40,
        "top_p": 0.95,
        "seed": seed,
    })
}

/// What one run of the workload measured.
pub struct Outcome {
    pub ids: Vec<Uuid>,
    /// Sum of `completion_tokens` over every result.
    pub tokens: i64,
    /// From the first job's creation to the last job's completion, both as PostgreSQL recorded
    /// them (one clock, and free of the polling interval).
    pub wall: Duration,
    /// From the first submission until the client had seen every job final: `wall` plus up to
    /// one polling interval.
    pub client_wall: Duration,
}

/// An HTTP client for [`run`]: it sends the cluster's API key, and gives up on an answer after
/// 30 s.
pub fn http(cluster: &Cluster) -> anyhow::Result<reqwest::Client> {
    Ok(cluster
        .client_builder()
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Submits every job at once through `http` (see [`http`]) and follows each until it is final;
/// fails unless every job completed with a result for each prompt, none from the result cache.
pub async fn run(
    http: &reqwest::Client,
    base_url: &str,
    jobs: Vec<Value>,
) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let followers: Vec<_> = jobs
        .into_iter()
        .map(|body| tokio::spawn(follow(http.clone(), base_url.to_owned(), body)))
        .collect();
    let mut views = Vec::with_capacity(followers.len());
    for follower in followers {
        views.push(follower.await.context("a client task panicked")??);
    }
    let client_wall = start.elapsed();

    let mut tokens = 0i64;
    for view in &views {
        crate::e2e::check(view.task_id, view)?;
        tokens += view
            .results
            .iter()
            .map(|r| i64::from(r.completion_tokens))
            .sum::<i64>();
    }
    let first_created = views.iter().map(|v| v.created_at).min();
    let last_finished = views.iter().filter_map(|v| v.finished_at).max();
    let (Some(first), Some(last)) = (first_created, last_finished) else {
        bail!("no jobs, or completed jobs without a finish time");
    };
    Ok(Outcome {
        ids: views.iter().map(|v| v.task_id).collect(),
        tokens,
        wall: (last - first)
            .to_std()
            .context("a job finished before it was created")?,
        client_wall,
    })
}

async fn follow(http: reqwest::Client, base_url: String, body: Value) -> anyhow::Result<JobView> {
    let id = genq_harness::client::submit(&http, &base_url, &body).await?;
    let give_up = Instant::now() + PATIENCE;
    while Instant::now() < give_up {
        tokio::time::sleep(POLL_EVERY).await;
        let response = http
            .get(format!("{base_url}/batch_result/{id}"))
            .send()
            .await?;
        ensure!(
            response.status() == 200,
            "GET /batch_result/{id} answered {}",
            response.status()
        );
        let view: JobView = response.json().await?;
        if view.status.is_final() {
            return Ok(view);
        }
    }
    bail!("job {id} was not final after {PATIENCE:?}")
}
