//! Submitting batches and reading them back: the HTTP contract end to end.

use genq_shared::{
    db::{self, jobs::NewGeneration},
    types::{FinishReason, GenerationRecord, HistoryPage, JobStatus},
};
use genq_tests::{AppOptions, TestApp};
use serde_json::{Value, json};

#[tokio::test]
async fn a_batch_completes_with_one_result_per_prompt_in_order() {
    let app = TestApp::spawn().await;
    let worker = app.start_worker(4).await;
    let prompts = [
        "Hello, my name is",
        "The capital of France is",
        "Once upon a time",
        "I think",
        "Rust is",
    ];

    let response = app
        .post(
            "/batch",
            &json!({ "prompts": prompts, "max_tokens": 12, "seed": 3 }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "queued");
    let id = accepted["task_id"].as_str().unwrap();
    assert_eq!(location, format!("/batch_result/{id}"));

    app.wait_final(id.parse().unwrap()).await;
    let view: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(view["status"], "completed");
    assert_eq!(view["model"], "gpt2-tiny-synthetic");
    assert_eq!(
        view["counts"],
        json!({ "total": 5, "completed": 5, "failed": 0 })
    );
    assert!(view["error"].is_null());
    for key in ["created_at", "started_at", "finished_at"] {
        assert!(view[key].is_string(), "{key} missing: {view}");
    }
    let results = view["results"].as_array().unwrap();
    assert_eq!(results.len(), prompts.len());
    for (i, (result, prompt)) in results.iter().zip(prompts).enumerate() {
        assert_eq!(result["index"], i);
        assert_eq!(result["prompt"], prompt);
        assert!(!result["generated_text"].as_str().unwrap().is_empty());
        let tokens = result["completion_tokens"].as_u64().unwrap();
        match result["finish_reason"].as_str().unwrap() {
            "length" => assert_eq!(tokens, 12),
            "stop" => assert!(tokens < 12),
            other => panic!("unexpected finish_reason {other}"),
        }
    }
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn the_same_seed_and_parameters_give_the_same_text() {
    let app = TestApp::spawn().await;
    // Cache off: the second run must be real inference reaching the same text.
    let worker = app
        .start_worker_with(4, &["--result-cache-ttl-secs=0"])
        .await;
    let request = |seed: u32| json!({ "prompts": ["Tell me a story", "Numbers:"], "max_tokens": 16, "seed": seed });

    let first = app.submit(&request(7)).await;
    let second = app.submit(&request(7)).await;
    let other = app.submit(&request(8)).await;
    let texts = |view: genq_shared::types::JobView| -> Vec<String> {
        assert_eq!(view.status, JobStatus::Completed);
        view.results.into_iter().map(|r| r.generated_text).collect()
    };
    let first = texts(app.wait_final(first).await);
    let second = texts(app.wait_final(second).await);
    let other = texts(app.wait_final(other).await);

    assert_eq!(first, second);
    assert_ne!(first, other);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn stop_strings_end_the_text_before_them() {
    let app = TestApp::spawn().await;
    let worker = app.start_worker(2).await;
    let free = app
        .wait_final(
            app.submit(&json!({ "prompts": ["Weather report:"], "max_tokens": 24, "seed": 5 }))
                .await,
        )
        .await;
    let text = &free.results[0].generated_text;
    // Take a stop string from the middle of the free text: the seeded rerun must end right before it.
    let stop: String = text
        .chars()
        .skip(text.chars().count() / 2)
        .take(2)
        .collect();
    let cut = text.find(&stop).unwrap();

    let stopped = app
        .wait_final(app.submit(&json!({ "prompts": ["Weather report:"], "max_tokens": 24, "seed": 5, "stop": stop })).await)
        .await;

    assert_eq!(stopped.results[0].generated_text, text[..cut]);
    assert_eq!(stopped.results[0].finish_reason, FinishReason::Stop);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn generate_answers_with_the_stored_records() {
    let app = TestApp::spawn().await;
    let worker = app.start_worker(4).await;

    let response = app
        .post(
            "/generate",
            &json!({ "prompts": ["First", "Second"], "max_tokens": 8 }),
        )
        .await;

    assert_eq!(response.status(), 200);
    let records: Vec<GenerationRecord> = response.json().await.unwrap();
    assert_eq!(
        records
            .iter()
            .map(|r| r.prompt.as_str())
            .collect::<Vec<_>>(),
        ["First", "Second"]
    );
    assert!(
        records
            .iter()
            .all(|r| r.model_name == "gpt2-tiny-synthetic" && !r.generated_text.is_empty())
    );
    let history: HistoryPage = app.get("/history").await.json().await.unwrap();
    let ids: Vec<_> = history.items.iter().map(|r| r.id).collect();
    assert!(records.iter().all(|r| ids.contains(&r.id)));
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn generate_answers_202_with_the_task_id_when_the_wait_runs_out() {
    let app = TestApp::spawn_with(AppOptions {
        generate_timeout_secs: 0,
        ..AppOptions::default()
    })
    .await;

    // No worker runs, so the job cannot finish within the (zero) wait.
    let response = app
        .post("/generate", &json!({ "prompts": ["Anyone there?"] }))
        .await;

    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let id = body["task_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(app.status(id).await, JobStatus::Queued);
    // The job goes on: a worker started later completes it.
    let worker = app.start_worker(2).await;
    assert_eq!(app.wait_final(id).await.status, JobStatus::Completed);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn history_pages_newest_first_and_stay_stable_under_concurrent_inserts() {
    let app = TestApp::spawn().await;
    let worker = app.start_worker(4).await;
    let prompts: Vec<String> = (0..7).map(|i| format!("prompt {i}")).collect();
    app.wait_final(
        app.submit(&json!({ "prompts": prompts, "max_tokens": 2 }))
            .await,
    )
    .await;
    let everything: HistoryPage = app.get("/history?limit=500").await.json().await.unwrap();
    assert_eq!(everything.items.len(), 7);
    assert!(everything.next.is_none());

    let mut seen = Vec::new();
    let mut page: HistoryPage = app.get("/history?limit=3").await.json().await.unwrap();
    // Newer generations land while the client pages through older ones.
    app.wait_final(
        app.submit(&json!({ "prompts": ["newer", "newest"], "max_tokens": 2 }))
            .await,
    )
    .await;
    loop {
        seen.extend(page.items.iter().map(|r| r.id));
        let Some(next) = page.next else { break };
        page = app
            .get(&format!("/history?limit=3&before={next}"))
            .await
            .json()
            .await
            .unwrap();
    }

    let expected: Vec<_> = everything.items.iter().map(|r| r.id).collect();
    assert_eq!(
        seen, expected,
        "pages must list the original rows once each, newest first"
    );
    let fresh: HistoryPage = app.get("/history?limit=2").await.json().await.unwrap();
    assert_eq!(
        fresh
            .items
            .iter()
            .map(|r| r.prompt.as_str())
            .collect::<Vec<_>>(),
        ["newest", "newer"]
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_result_the_output_filter_changed_says_redacted() {
    let app = TestApp::spawn().await;
    let id = app
        .submit(&json!({ "prompts": ["leak", "keep"], "max_tokens": 4 }))
        .await;
    let claim = db::jobs::claim(&app.pool, id, "w", &genq_tests::tiny_model_name(), "v")
        .await
        .unwrap()
        .unwrap();
    let result = |index: i32, text: &str, redacted: bool| NewGeneration {
        index,
        text: text.into(),
        completion_tokens: 4,
        prompt_tokens: Some(1),
        finish_reason: FinishReason::Length,
        cache_key: None,
        cached: false,
        redacted,
    };
    let stored = db::jobs::complete(
        &app.pool,
        &claim,
        "m",
        &[
            result(0, "pay [redacted card]", true),
            result(1, "plain", false),
        ],
    )
    .await
    .unwrap();
    assert!(stored);

    let view: Value = app
        .get(&format!("/batch_result/{id}"))
        .await
        .json()
        .await
        .unwrap();

    let results = view["results"].as_array().unwrap();
    assert_eq!(results[0]["generated_text"], "pay [redacted card]");
    assert_eq!(results[0]["redacted"], true);
    assert_eq!(results[1]["redacted"], false);
    app.stop().await;
}
