//! `genqctl submit`: a client of the HTTP API, for trying genq from a shell.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use genq_shared::types::{Accepted, JobStatus, JobView};
use serde_json::json;

use crate::Done;

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Prompts of the batch.
    #[arg(required = true)]
    prompts: Vec<String>,
    #[arg(long, env = "GENQ_API_URL", default_value = "http://127.0.0.1:8000")]
    api_url: String,
    #[arg(long)]
    max_tokens: Option<u32>,
    #[arg(long)]
    temperature: Option<f32>,
    #[arg(long)]
    seed: Option<u32>,
    #[arg(long)]
    stop: Vec<String>,
    /// Wait for the job and print its results.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// A client that sends the key, if any, with every request.
fn client(api_key: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = api_key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .context("GENQ_API_KEY is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

/// How often --wait polls the job's status.
const POLL: Duration = Duration::from_millis(200);

pub async fn run(args: SubmitArgs) -> anyhow::Result<Done> {
    // From the environment only: a flag would show the key to every user of `ps`.
    let api_key = std::env::var("GENQ_API_KEY").ok().filter(|k| !k.is_empty());
    let client = client(api_key.as_deref())?;
    let base = args.api_url.trim_end_matches('/');
    let mut body = json!({ "prompts": args.prompts });
    if let Some(n) = args.max_tokens {
        body["max_tokens"] = json!(n);
    }
    if let Some(t) = args.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(s) = args.seed {
        body["seed"] = json!(s);
    }
    if !args.stop.is_empty() {
        body["stop"] = json!(args.stop);
    }
    let response = client
        .post(format!("{base}/batch"))
        .json(&body)
        .send()
        .await
        .with_context(|| format!("reaching the API at {base}"))?;
    if !response.status().is_success() {
        bail!(
            "the API answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let accepted: Accepted = response.json().await.context("reading the API's answer")?;
    println!("task {} queued", accepted.task_id);
    if !args.wait {
        return Ok(Done::Ok);
    }
    let started = Instant::now();
    let view = loop {
        let view: JobView = client
            .get(format!("{base}/batch_result/{}", accepted.task_id))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if view.status.is_final() {
            break view;
        }
        if started.elapsed() > Duration::from_secs(args.timeout) {
            eprintln!(
                "task {} is still {} after {} s",
                view.task_id, view.status, args.timeout
            );
            return Ok(Done::Failed);
        }
        tokio::time::sleep(POLL).await;
    };
    let seconds = view
        .finished_at
        .zip(view.started_at)
        .map(|(end, start)| (end - start).num_milliseconds() as f64 / 1000.0)
        .unwrap_or_default();
    println!(
        "task {} {} on {} in {seconds:.2} s",
        view.task_id,
        view.status,
        view.model.as_deref().unwrap_or("?")
    );
    for result in &view.results {
        println!(
            "--- [{}] {:?} ({} tokens, finish: {}{})",
            result.index,
            result.prompt,
            result.completion_tokens,
            serde_json::to_value(result.finish_reason)
                .unwrap_or_default()
                .as_str()
                .unwrap_or("?"),
            if result.cached {
                ", from the result cache"
            } else {
                ""
            }
        );
        println!("{}{}", result.prompt, result.generated_text);
    }
    if let Some(error) = &view.error {
        eprintln!("error {}: {}", error.code, error.message);
    }
    Ok(if view.status == JobStatus::Completed {
        Done::Ok
    } else {
        Done::Failed
    })
}
