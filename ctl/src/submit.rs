//! `genqctl submit`: a client of the HTTP API, for trying genq from a shell.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use genq_shared::types::{Accepted, JobStatus, JobView};
use indicatif::{ProgressBar, ProgressStyle};
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
    /// Wait for the job, showing its progress, and print its results.
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
        // The event stream sends a keep-alive every 15 s: silence this long is a dead connection.
        .read_timeout(Duration::from_secs(45))
        .build()?)
}

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
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let Some(view) = follow(&client, base, &accepted, args.prompts.len(), deadline).await? else {
        eprintln!(
            "task {} is not finished after {} s",
            accepted.task_id, args.timeout
        );
        return Ok(Done::Failed);
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

/// Follows the job's events until it is final, with a progress bar of finished prompts on
/// stderr (drawn only on a terminal). A stream cut short (an API restart) is resumed where it
/// ended. `None` if the deadline passes first.
async fn follow(
    client: &reqwest::Client,
    base: &str,
    accepted: &Accepted,
    prompts: usize,
    deadline: Instant,
) -> anyhow::Result<Option<JobView>> {
    let bar = ProgressBar::new(prompts as u64).with_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} prompts {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message("queued");
    bar.enable_steady_tick(Duration::from_millis(200));
    let url = format!("{base}/batch_result/{}/events", accepted.task_id);
    let mut last_event_id: Option<String> = None;
    // The latest attempt and the prompts it has finished.
    let mut finished: (i64, HashSet<i64>) = (0, HashSet::new());
    let followed = tokio::time::timeout_at(deadline.into(), async {
        loop {
            let mut request = client.get(&url);
            if let Some(id) = &last_event_id {
                request = request.header("Last-Event-ID", id);
            }
            let response = match request.send().await {
                Ok(response) => response,
                // The API restarting, most likely: it answered the submission moments ago.
                Err(e) => {
                    bar.suspend(|| eprintln!("cannot reach the API at {base} ({e}); retrying"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let status = response.status();
            if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                // Passing trouble (a restart, the rate limit): try again shortly.
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            if !status.is_success() {
                bail!(
                    "the API answered {}: {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                );
            }
            let mut events = response.bytes_stream().eventsource();
            while let Some(event) = events.next().await {
                let Ok(event) = event else { break };
                if !event.id.is_empty() {
                    last_event_id = Some(event.id.clone());
                }
                match event.event.as_str() {
                    "status" => {
                        let status: serde_json::Value = serde_json::from_str(&event.data)?;
                        bar.set_message(status["status"].as_str().unwrap_or("?").to_owned());
                    }
                    "prompt" => {
                        let prompt: serde_json::Value = serde_json::from_str(&event.data)?;
                        let attempt = prompt["attempt"].as_i64().unwrap_or(0);
                        // A new attempt (the job re-run) starts its prompts over.
                        if attempt > finished.0 {
                            finished = (attempt, HashSet::new());
                        }
                        if let Some(index) = prompt["index"].as_i64() {
                            finished.1.insert(index);
                        }
                        bar.set_position(finished.1.len() as u64);
                    }
                    "done" => {
                        let view: JobView = serde_json::from_str(&event.data)
                            .context("reading the finished job")?;
                        return Ok(view);
                    }
                    _ => {}
                }
            }
            // Cut short: resume after the last event seen, after a breath.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    bar.finish_and_clear();
    match followed {
        Ok(view) => view.map(Some),
        Err(_) => Ok(None),
    }
}
