//! The result cache answers identical deterministic requests, and nothing else.

use genq_shared::types::{JobStatus, JobView};
use genq_tests::TestApp;
use serde_json::{Value, json};

async fn run(app: &TestApp, body: Value) -> JobView {
    let view = app.wait_final(app.submit(&body).await).await;
    assert_eq!(view.status, JobStatus::Completed);
    view
}

fn cached(view: &JobView) -> Vec<bool> {
    view.results.iter().map(|r| r.cached).collect()
}

fn texts(view: &JobView) -> Vec<&str> {
    view.results
        .iter()
        .map(|r| r.generated_text.as_str())
        .collect()
}

#[tokio::test]
async fn an_identical_seeded_request_is_answered_from_the_cache() {
    let app = TestApp::spawn().await;
    let worker = app.start_worker(4).await;
    let body = json!({ "prompts": ["Cache me", "And me"], "max_tokens": 10, "seed": 11 });

    let first = run(&app, body.clone()).await;
    let again = run(&app, body).await;
    // A batch mixing a known prompt with a new one: only the known one is a hit.
    let mixed = run(
        &app,
        json!({ "prompts": ["New here", "And me"], "max_tokens": 10, "seed": 11 }),
    )
    .await;

    assert_eq!(cached(&first), [false, false]);
    assert_eq!(cached(&again), [true, true]);
    assert_eq!(texts(&again), texts(&first));
    assert_eq!(
        again.results[0].completion_tokens,
        first.results[0].completion_tokens
    );
    assert_eq!(cached(&mixed), [false, true]);
    assert_eq!(
        mixed.results[1].generated_text,
        first.results[1].generated_text
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn the_cache_never_answers_with_another_tenants_result() {
    let app = TestApp::spawn().await;
    let worker = app.start_worker(4).await;
    let other = genq_tests::client_with_key(Some(&app.tenant_key("other").await));
    let body = json!({ "prompts": ["Only mine"], "max_tokens": 10, "seed": 5 });
    let ours = run(&app, body.clone()).await;

    let response = other
        .post(format!("{}/batch", app.address))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let theirs = app.wait_final(id).await;
    // Generated afresh, and the same text: seeded inference needs no cache to agree.
    assert_eq!(cached(&theirs), [false]);
    assert_eq!(texts(&theirs), texts(&ours));
    // Our own repeat still is a hit.
    assert_eq!(cached(&run(&app, body).await), [true]);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn requests_that_differ_or_are_not_deterministic_run_inference() {
    let app = TestApp::spawn().await;
    let worker = app.start_worker(4).await;
    let base = json!({ "prompts": ["Same prompt"], "max_tokens": 10, "seed": 5 });
    run(&app, base.clone()).await;

    let variants = [
        json!({ "prompts": ["Same prompt"], "max_tokens": 10, "seed": 6 }),
        json!({ "prompts": ["Same prompt"], "max_tokens": 9, "seed": 5 }),
        json!({ "prompts": ["Same prompt"], "max_tokens": 10, "seed": 5, "temperature": 0.7 }),
        json!({ "prompts": ["Same prompt"], "max_tokens": 10, "seed": 5, "top_k": 20 }),
        json!({ "prompts": ["Same prompt"], "max_tokens": 10, "seed": 5, "stop": ["zzz"] }),
        json!({ "prompts": ["Same prompt "], "max_tokens": 10, "seed": 5 }),
        // No seed: sampled afresh every time, twice.
        json!({ "prompts": ["Same prompt"], "max_tokens": 10 }),
        json!({ "prompts": ["Same prompt"], "max_tokens": 10 }),
    ];
    for body in variants {
        let view = run(&app, body.clone()).await;
        assert_eq!(cached(&view), [false], "{body}");
    }
    // Greedy decoding is deterministic without a seed, so a repeat is a hit.
    let greedy = json!({ "prompts": ["Same prompt"], "max_tokens": 10, "temperature": 0 });
    assert_eq!(cached(&run(&app, greedy.clone()).await), [false]);
    assert_eq!(cached(&run(&app, greedy).await), [true]);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_zero_ttl_turns_the_cache_off() {
    let app = TestApp::spawn().await;
    let worker = app
        .start_worker_with(2, &["--result-cache-ttl-secs=0"])
        .await;
    let body = json!({ "prompts": ["Cache me"], "max_tokens": 6, "seed": 1 });
    run(&app, body.clone()).await;
    assert_eq!(cached(&run(&app, body).await), [false]);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_result_older_than_the_ttl_is_not_reused() {
    let app = TestApp::spawn().await;
    let worker = app
        .start_worker_with(2, &["--result-cache-ttl-secs=60"])
        .await;
    let body = json!({ "prompts": ["Cache me"], "max_tokens": 6, "seed": 1 });
    run(&app, body.clone()).await;
    // Age the stored result past the TTL rather than waiting for it.
    sqlx::query("update generations set created_at = now() - interval '61 seconds'")
        .execute(&app.pool)
        .await
        .unwrap();

    assert_eq!(cached(&run(&app, body.clone()).await), [false]);
    assert_eq!(cached(&run(&app, body).await), [true]);
    worker.stop().await;
    app.stop().await;
}
