//! The OpenAI batch path under the same faults: a client that uploads a JSONL file, creates a
//! batch, follows it to its end and checks its output, one batch after another, retrying through
//! refused connections and 503s as the SDK would. Every line must be answered exactly once, in the
//! output file, by a batch that ends `completed`.

use std::{collections::HashMap, time::Duration};

use genq_harness::Cluster;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

/// Request lines per batch: enough to be in flight while a fault hits.
const LINES: usize = 60;
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How long one call is retried, or one batch followed, before the client gives up on it.
const PATIENCE: Duration = Duration::from_secs(900);

/// What the batch client saw.
#[derive(Debug, Default)]
pub struct BatchesSeen {
    pub batches: usize,
    /// Batches that ended otherwise than `completed`, with their status.
    pub not_completed: Vec<String>,
    pub lines: usize,
    /// Lines of a batch's input answered nowhere, or more than once, in its output.
    pub unanswered: usize,
    pub answered_twice: usize,
    /// 500s received: each one is a bug (503s are retried).
    pub server_errors: usize,
    /// Calls given up after [`PATIENCE`].
    pub abandoned: usize,
}

impl BatchesSeen {
    pub fn passed(&self) -> bool {
        self.batches > 0
            && self.not_completed.is_empty()
            && self.unanswered == 0
            && self.answered_twice == 0
            && self.server_errors == 0
            && self.abandoned == 0
    }
}

pub struct BatchClient {
    http: reqwest::Client,
    base_url: String,
    model: String,
    seen: BatchesSeen,
}

impl BatchClient {
    pub fn new(cluster: &Cluster, model: String) -> BatchClient {
        BatchClient {
            http: cluster
                .client_builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a plain HTTP client builds"),
            base_url: cluster.base_url(),
            model,
            seen: BatchesSeen::default(),
        }
    }

    /// Runs batches until `done()` says so (checked between batches).
    pub async fn run(mut self, done: impl Fn() -> bool) -> BatchesSeen {
        let mut n = 0;
        while !done() {
            if let Err(why) = self.one(n).await {
                eprintln!("batch client: {why}");
                self.seen.abandoned += 1;
            }
            n += 1;
        }
        self.seen
    }

    async fn one(&mut self, n: usize) -> Result<(), String> {
        let custom_ids: Vec<String> = (0..LINES).map(|i| format!("b{n}-{i}")).collect();
        let jsonl: String = custom_ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let body = json!({ "model": self.model, "prompt": format!("Batch {n} line {i}"), "max_tokens": 8, "seed": i });
                format!("{}\n", json!({ "custom_id": id, "method": "POST", "url": "/v1/completions", "body": body }))
            })
            .collect();
        let (http, base) = (self.http.clone(), self.base_url.clone());
        let file = self
            .call("upload", || {
                let form = Form::new().text("purpose", "batch").part(
                    "file",
                    Part::bytes(jsonl.clone().into_bytes()).file_name("input.jsonl"),
                );
                http.post(format!("{base}/v1/files")).multipart(form)
            })
            .await?;
        let create = json!({ "input_file_id": file["id"], "endpoint": "/v1/completions", "completion_window": "24h" });
        let batch = self
            .call("create", || {
                http.post(format!("{base}/v1/batches")).json(&create)
            })
            .await?;
        let id = batch["id"]
            .as_str()
            .ok_or("a batch without an id")?
            .to_owned();
        let started = tokio::time::Instant::now();
        let batch = loop {
            let batch = self
                .call("retrieve", || http.get(format!("{base}/v1/batches/{id}")))
                .await?;
            if matches!(
                batch["status"].as_str(),
                Some("completed" | "failed" | "expired" | "cancelled")
            ) {
                break batch;
            }
            if started.elapsed() > PATIENCE {
                return Err(format!(
                    "batch {id} still {} after {PATIENCE:?}",
                    batch["status"]
                ));
            }
            tokio::time::sleep(POLL_EVERY).await;
        };
        self.seen.batches += 1;
        self.seen.lines += LINES;
        if batch["status"] != "completed" {
            self.seen
                .not_completed
                .push(format!("{id}: {}", batch["status"]));
        }
        let mut answers: HashMap<String, usize> = HashMap::new();
        if let Some(output) = batch["output_file_id"].as_str() {
            let text = self.download(output).await?;
            for line in text.lines() {
                let entry: Value =
                    serde_json::from_str(line).map_err(|e| format!("output line: {e}"))?;
                *answers
                    .entry(entry["custom_id"].as_str().unwrap_or_default().to_owned())
                    .or_default() += 1;
            }
        }
        for id in &custom_ids {
            match answers.get(id).copied().unwrap_or(0) {
                0 => self.seen.unanswered += 1,
                1 => {}
                _ => self.seen.answered_twice += 1,
            }
        }
        Ok(())
    }

    async fn download(&mut self, file: &str) -> Result<String, String> {
        let started = tokio::time::Instant::now();
        loop {
            match self
                .http
                .get(format!("{}/v1/files/{file}/content", self.base_url))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => match r.text().await {
                    Ok(text) => return Ok(text),
                    Err(e) => eprintln!("batch client: download broke off ({e}); again"),
                },
                Ok(r) if r.status().as_u16() == 500 => self.seen.server_errors += 1,
                Ok(r) if r.status().as_u16() != 503 => {
                    return Err(format!("download: {}", r.status()));
                }
                _ => {}
            }
            if started.elapsed() > PATIENCE {
                return Err("download: gave up".into());
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Sends the request until it is answered other than by a refused connection or a 503; a 500
    /// is counted and retried too.
    async fn call(
        &mut self,
        what: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Value, String> {
        let started = tokio::time::Instant::now();
        loop {
            match request().send().await {
                Ok(r) if r.status().is_success() => {
                    return r.json().await.map_err(|e| format!("{what}: {e}"));
                }
                Ok(r) if r.status().as_u16() == 500 => self.seen.server_errors += 1,
                Ok(r) if r.status().as_u16() != 503 => {
                    return Err(format!(
                        "{what}: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    ));
                }
                _ => {}
            }
            if started.elapsed() > PATIENCE {
                return Err(format!("{what}: gave up after {PATIENCE:?}"));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}
