//! Prometheus metrics of the API and a worker, scraped after a known workload. Both run as their
//! binaries, so each process's figures are its own (the `metrics` recorder is per process).

use std::process::Stdio;

use genq_shared::types::{FinishReason, JobStatus};
use genq_tests::{
    TestApp, binary, client_with_key, on_free_port,
    prometheus::{self, Sample},
    submit_to, tiny_model, until, until_answers,
};
use serde_json::{Value, json};

async fn scrape(client: &reqwest::Client, base: &str) -> Vec<Sample> {
    let response = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    prometheus::parse(&response.text().await.unwrap())
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    prometheus::value(samples, name, labels)
        .unwrap_or_else(|| panic!("{name}{labels:?} is not exported"))
}

#[tokio::test]
async fn metrics_count_a_known_workload_by_name_and_value() {
    let app = TestApp::spawn().await;
    let api = app.spawn_api_process().await;
    let client = client_with_key(Some(&app.key));
    let seeded = json!({
        "prompts": ["The river ran", "Seven quiet lanterns", "A letter arrived at noon"],
        "max_tokens": 5,
        "seed": 11,
    });
    // Queued before any worker runs: one waits, one is cancelled.
    let first = submit_to(&client, &api.address, &seeded).await;
    let doomed = submit_to(&client, &api.address, &json!({ "prompts": ["never run"] })).await;
    let while_queued = scrape(&client, &api.address).await;
    let cancel = client
        .post(format!("{}/batch/{doomed}/cancel", api.address))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let refused = client
        .post(format!("{}/batch", api.address))
        .json(&json!({ "prompts": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);

    let worker_args = app.worker_args(4);
    let (mut worker, worker_http) = on_free_port(|port| {
        let args = worker_args[1..].to_vec();
        async move {
            let mut worker = tokio::process::Command::new(binary("genq-worker"))
                .args(&args)
                .env("GENQ_WORKER_HTTP_ADDR", format!("127.0.0.1:{port}"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("starting genq-worker");
            let http = format!("http://127.0.0.1:{port}");
            until_answers(&mut worker, &format!("{http}/ready")).await?;
            Ok((worker, http))
        }
    })
    .await;
    let plain = reqwest::Client::new();
    let generated = app.wait_final(first).await;
    // The same seeded request again: answered from the result cache, without inference.
    let repeat = submit_to(&client, &api.address, &seeded).await;
    let cached = app.wait_final(repeat).await;
    // The worker counts a job right after its outcome commits, which is what wakes the wait.
    until("the worker has counted both jobs", || async {
        let samples = scrape(&plain, &worker_http).await;
        let completed = [("status", "completed")];
        prometheus::value(&samples, "genq_job_duration_seconds_count", &completed) == Some(2.0)
    })
    .await;
    let api_metrics = scrape(&client, &api.address).await;
    let worker_metrics = scrape(&plain, &worker_http).await;
    let ready: Value = plain
        .get(format!("{worker_http}/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(generated.status, JobStatus::Completed);
    assert_eq!(cached.status, JobStatus::Completed);
    assert!(cached.results.iter().all(|r| r.cached));
    assert_eq!(ready["status"], "ready");
    // The API, while two jobs waited and after.
    assert_eq!(value(&while_queued, "genq_queue_depth", &[]), 2.0);
    assert!(value(&while_queued, "genq_queue_oldest_age_seconds", &[]) > 0.0);
    assert_eq!(value(&api_metrics, "genq_queue_depth", &[]), 0.0);
    assert_eq!(value(&api_metrics, "genq_jobs_running", &[]), 0.0);
    assert_eq!(value(&api_metrics, "genq_workers_live", &[]), 1.0);
    assert_eq!(value(&api_metrics, "genq_slots_live", &[]), 4.0);
    assert_eq!(value(&api_metrics, "genq_jobs_submitted_total", &[]), 3.0);
    assert_eq!(
        value(
            &api_metrics,
            "genq_jobs_finished_total",
            &[("status", "cancelled")]
        ),
        1.0
    );
    let requests = |route: &str, method: &str, status: &str| {
        let labels = [("method", method), ("route", route), ("status", status)];
        value(&api_metrics, "genq_http_requests_total", &labels)
    };
    assert_eq!(requests("/batch", "POST", "202"), 3.0);
    assert_eq!(requests("/batch", "POST", "422"), 1.0);
    assert_eq!(requests("/batch/{task_id}/cancel", "POST", "200"), 1.0);
    assert_eq!(requests("/metrics", "GET", "200"), 1.0);
    let posts = [("method", "POST"), ("route", "/batch")];
    assert_eq!(
        value(
            &api_metrics,
            "genq_http_request_duration_seconds_count",
            &posts
        ),
        4.0
    );
    // The worker: what it generated, derived from the results themselves.
    let model = tiny_model();
    let prompt_tokens: usize = seeded["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| model.prompt_tokens(p.as_str().unwrap()).len())
        .sum();
    // An end-of-text token is sampled too, though it is not part of the text.
    let sampled: i32 = generated
        .results
        .iter()
        .map(|r| r.completion_tokens + i32::from(r.finish_reason == FinishReason::Stop))
        .sum();
    let from_worker = |name: &str, labels: &[(&str, &str)]| value(&worker_metrics, name, labels);
    assert_eq!(
        from_worker("genq_generation_tokens_total", &[]),
        f64::from(sampled)
    );
    assert_eq!(
        from_worker("genq_prompt_tokens_total", &[]),
        prompt_tokens as f64
    );
    assert_eq!(from_worker("genq_result_cache_hits_total", &[]), 3.0);
    assert_eq!(
        from_worker("genq_jobs_finished_total", &[("status", "completed")]),
        2.0
    );
    assert_eq!(
        from_worker("genq_time_to_first_token_seconds_count", &[]),
        3.0
    );
    assert_eq!(
        from_worker(
            "genq_job_duration_seconds_count",
            &[("status", "completed")]
        ),
        2.0
    );
    assert_eq!(from_worker("genq_job_queue_wait_seconds_count", &[]), 2.0);
    assert_eq!(from_worker("genq_worker_slots", &[]), 4.0);
    assert_eq!(from_worker("genq_worker_slots_busy", &[]), 0.0);
    assert_eq!(from_worker("genq_worker_jobs_running", &[]), 0.0);
    assert!(from_worker("genq_model_load_seconds", &[]) > 0.0);
    assert!(
        !worker_metrics
            .iter()
            .any(|s| s.name == "genq_inference_errors_total"),
        "no inference failed"
    );

    worker.start_kill().unwrap();
    let _ = worker.wait().await;
    api.stop().await;
    app.stop().await;
}
