//! The load: clients that behave as careful client code does. Each submits a batch with an
//! `Idempotency-Key`, retries through refused connections and 503s with the same key, now and then
//! cancels, and polls `GET /batch_result/{id}` until the job is final, then submits the next.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use genq_harness::Cluster;
use genq_shared::types::{JobStatus, JobView};
use rand::{Rng, SeedableRng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::soak::Samples;

/// How long a client keeps retrying one submission, or polling one job, before giving up on it.
const PATIENCE: Duration = Duration::from_secs(900);
const POLL_EVERY: Duration = Duration::from_millis(250);

/// What the clients saw, for the audit.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every task id the API accepted, with the final status the client last read for it.
    pub accepted: HashMap<Uuid, Option<JobStatus>>,
    /// Submissions refused for good (a 4xx the client cannot fix by retrying), with the answer.
    pub refused: Vec<String>,
    /// Submissions still unanswered after retrying for [`PATIENCE`].
    pub abandoned: usize,
    /// Submissions sent again after a refused connection or a 503.
    pub resubmitted: usize,
    /// 500s received anywhere: each one is a bug.
    pub server_errors: usize,
    /// 503s received, and those of them without `Retry-After` (each one a bug).
    pub unavailable: usize,
    pub unavailable_without_retry_after: usize,
    /// Requests the client gave up on after its 30 s timeout: an API that hangs, not refuses.
    pub timed_out: usize,
    /// Accepted jobs that `GET /batch_result` later answered 404 for.
    pub vanished: usize,
    pub cancel_requests: usize,
}

impl Seen {
    /// Counts a 503, and whether it said when to retry.
    fn count_unavailable(&mut self, response: &reqwest::Response) {
        if response.status() == 503 {
            self.unavailable += 1;
            let says_when = response
                .headers()
                .contains_key(reqwest::header::RETRY_AFTER);
            self.unavailable_without_retry_after += usize::from(!says_when);
        }
    }
}

#[derive(Default)]
pub struct Ledger(Mutex<Seen>);

impl Ledger {
    fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn accepted(&self) -> usize {
        self.with(|s| s.accepted.len())
    }

    pub fn server_errors(&self) -> usize {
        self.with(|s| s.server_errors)
    }

    pub fn take(&self) -> Seen {
        self.with(std::mem::take)
    }
}

pub struct Client {
    pub http: reqwest::Client,
    pub base_url: String,
    pub ledger: Arc<Ledger>,
    pub rng: ChaCha8Rng,
    pub cancel_percent: u32,
    /// The models jobs go to, one chosen at random per job (`None`: name none, the default).
    pub models: Vec<Option<String>>,
    /// Where to time each job from submission to its final status seen (the soak).
    pub samples: Option<Arc<Samples>>,
}

impl Client {
    /// A client of `cluster`'s API: it sends the cluster's API key with every request (without it
    /// every submission is a 401, refused for good) and gives up on an answer after 30 s.
    pub fn new(
        cluster: &Cluster,
        ledger: Arc<Ledger>,
        seed: u64,
        cancel_percent: u32,
        models: Vec<Option<String>>,
    ) -> Client {
        Client {
            http: cluster
                .client_builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a plain HTTP client with a default header builds"),
            base_url: cluster.base_url(),
            ledger,
            rng: ChaCha8Rng::seed_from_u64(seed),
            cancel_percent,
            models,
            samples: None,
        }
    }

    /// Submits and follows jobs one after another until `done` says stop.
    pub async fn run(mut self, done: impl Fn() -> bool) {
        while !done() {
            let body = self.random_job();
            let started = Instant::now();
            let Some(id) = self.submit(&body).await else {
                continue;
            };
            self.ledger.with(|s| s.accepted.insert(id, None));
            if self.rng.random_ratio(self.cancel_percent, 100) {
                let after = Duration::from_millis(self.rng.random_range(0..400));
                tokio::time::sleep(after).await;
                self.cancel(id).await;
            }
            let status = self.follow(id).await;
            if let (Some(samples), Some(_)) = (&self.samples, status) {
                samples.record("batch", started);
            }
            self.ledger.with(|s| s.accepted.insert(id, status));
        }
    }

    fn random_job(&mut self) -> Value {
        const WORDS: &[&str] = &[
            "river", "engine", "garden", "quiet", "signal", "harbor", "winter", "copper",
            "lantern", "orbit", "meadow", "circuit", "falcon", "paper", "thunder", "velvet",
        ];
        let prompts: Vec<String> = (0..self.rng.random_range(1..=4))
            .map(|_| {
                let words: Vec<&str> = (0..self.rng.random_range(2..=8))
                    .map(|_| *WORDS.choose(&mut self.rng).expect("WORDS is not empty"))
                    .collect();
                words.join(" ")
            })
            .collect();
        let mut body = json!({
            "prompts": prompts,
            "max_tokens": self.rng.random_range(4..=16),
            "temperature": 0.8,
        });
        if self.rng.random_ratio(1, 3) {
            body["seed"] = json!(self.rng.random_range(0..1_000_000u64));
        }
        if let Some(Some(model)) = self.models.choose(&mut self.rng) {
            body["model"] = json!(model);
        }
        body
    }

    /// Posts the batch until it is accepted or refused for good; the key makes resubmission safe.
    async fn submit(&mut self, body: &Value) -> Option<Uuid> {
        let key = Uuid::new_v4().to_string();
        let give_up = Instant::now() + PATIENCE;
        let mut wait = Duration::from_millis(100);
        while Instant::now() < give_up {
            let response = self
                .http
                .post(format!("{}/batch", self.base_url))
                .header("Idempotency-Key", &key)
                .json(body)
                .send()
                .await;
            match response {
                Ok(r) if r.status() == 202 => {
                    let accepted: Value = r.json().await.ok()?;
                    return accepted["task_id"].as_str()?.parse().ok();
                }
                Ok(r) if r.status().is_client_error() => {
                    let answer = format!("{} {}", r.status(), r.text().await.unwrap_or_default());
                    self.ledger.with(|s| s.refused.push(answer));
                    return None;
                }
                Ok(r) => self.ledger.with(|s| {
                    s.server_errors += usize::from(r.status() == 500);
                    s.count_unavailable(&r);
                    s.resubmitted += 1;
                }),
                Err(e) => self.ledger.with(|s| {
                    s.timed_out += usize::from(e.is_timeout());
                    s.resubmitted += 1;
                }),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
        self.ledger.with(|s| s.abandoned += 1);
        None
    }

    async fn cancel(&self, id: Uuid) {
        self.ledger.with(|s| s.cancel_requests += 1);
        for _ in 0..20 {
            let response = self
                .http
                .post(format!("{}/batch/{id}/cancel", self.base_url))
                .send()
                .await;
            // 200 cancelled, 409 already final: either way the request was answered.
            if response.is_ok_and(|r| r.status() == 200 || r.status() == 409) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Polls until the job is final; `None` if it never became final within [`PATIENCE`].
    async fn follow(&self, id: Uuid) -> Option<JobStatus> {
        let give_up = Instant::now() + PATIENCE;
        while Instant::now() < give_up {
            let response = self
                .http
                .get(format!("{}/batch_result/{id}", self.base_url))
                .send()
                .await;
            match response {
                Ok(r) if r.status() == 200 => {
                    if let Ok(view) = r.json::<JobView>().await
                        && view.status.is_final()
                    {
                        return Some(view.status);
                    }
                }
                Ok(r) if r.status() == 404 => {
                    self.ledger.with(|s| s.vanished += 1);
                    return None;
                }
                Ok(r) if r.status() == 500 => self.ledger.with(|s| s.server_errors += 1),
                // Refused connections (API restarting) and 503s (a store restarting): poll on.
                Ok(r) => self.ledger.with(|s| s.count_unavailable(&r)),
                Err(e) => self
                    .ledger
                    .with(|s| s.timed_out += usize::from(e.is_timeout())),
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        None
    }
}
