//! Operators' controls through the real `genqctl` binary: pause/resume, purge, drain, stats,
//! workers, jobs show/cancel.

use genq_shared::{
    db, queue,
    types::{JobStatus, QueueStats},
};
use genq_tests::{TestApp, assert_exit, redis_url, stderr, stdout};
use serde_json::{Value, json};

#[tokio::test]
async fn paused_intake_answers_503_with_retry_after_until_resumed() {
    let app = TestApp::spawn().await;

    assert_exit(&app.genqctl(&["queue", "pause"]).await, 0);
    let response = app.post("/batch", &json!({ "prompts": ["hello"] })).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "intake_paused");

    assert_exit(&app.genqctl(&["queue", "resume"]).await, 0);
    assert_eq!(
        app.post("/batch", &json!({ "prompts": ["hello"] }))
            .await
            .status(),
        202
    );
    app.stop().await;
}

#[tokio::test]
async fn purge_cancels_every_queued_job_and_empties_redis() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            app.submit(&json!({ "prompts": [format!("job {i}")] }))
                .await,
        );
    }
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    assert_eq!(
        queue::waiting(&mut redis, &app.model_queue())
            .await
            .unwrap(),
        3
    );

    let refused = app.genqctl(&["queue", "purge"]).await;
    assert_exit(&refused, 2);
    assert!(
        stderr(&refused).contains("run again with --yes"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        queue::waiting(&mut redis, &app.model_queue())
            .await
            .unwrap(),
        3
    );
    let purged = app.genqctl(&["queue", "purge", "--yes"]).await;

    assert_exit(&purged, 0);
    assert!(
        stdout(&purged).contains("purged 3 queued jobs"),
        "{}",
        stdout(&purged)
    );
    assert_eq!(
        queue::waiting(&mut redis, &app.model_queue())
            .await
            .unwrap(),
        0
    );
    for id in &ids {
        assert_eq!(app.status(*id).await, JobStatus::Cancelled);
    }
    // A worker started afterwards runs new work but never the purged jobs.
    let worker = app.start_worker(2).await;
    let fresh = app
        .submit(&json!({ "prompts": ["after the purge"], "max_tokens": 4 }))
        .await;
    assert_eq!(app.wait_final(fresh).await.status, JobStatus::Completed);
    for id in &ids {
        let view = app.view(*id).await;
        assert_eq!(
            (view.status, view.results.len(), view.started_at),
            (JobStatus::Cancelled, 0, None)
        );
    }
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn drain_pauses_intake_and_returns_once_everything_has_run() {
    let app = TestApp::spawn().await;
    let ids = [
        app.submit(&json!({ "prompts": ["a", "b", "c"], "max_tokens": 32 }))
            .await,
        app.submit(&json!({ "prompts": ["d"], "max_tokens": 32 }))
            .await,
    ];
    let worker = app.start_worker(4).await;

    let drained = app.genqctl(&["queue", "drain", "--timeout", "120"]).await;

    assert_exit(&drained, 0);
    for id in ids {
        assert_eq!(app.status(id).await, JobStatus::Completed);
    }
    assert_eq!(
        app.post("/batch", &json!({ "prompts": ["late"] }))
            .await
            .status(),
        503
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn drain_fails_when_work_outlasts_its_timeout() {
    let app = TestApp::spawn().await;
    app.submit(&json!({ "prompts": ["nobody will run this"] }))
        .await;

    let drained = app.genqctl(&["queue", "drain", "--timeout", "1"]).await;

    assert_exit(&drained, 1);
    assert!(
        stderr(&drained).contains("drain timed out after 1 s with work left"),
        "{}",
        stderr(&drained)
    );
    app.stop().await;
}

#[tokio::test]
async fn stats_count_jobs_by_status_and_live_workers() {
    let app = TestApp::spawn().await;
    let worker = app.start_worker(2).await;
    let done = app
        .submit(&json!({ "prompts": ["x"], "max_tokens": 2 }))
        .await;
    app.wait_final(done).await;
    let cancelled = app
        .submit(&json!({ "prompts": ["y"], "max_tokens": 2 }))
        .await;
    // The job may already have run: cancelling answers 200 or 409 accordingly.
    let cancel = app
        .post(&format!("/batch/{cancelled}/cancel"), &json!({}))
        .await
        .status()
        .as_u16();

    let output = app.genqctl(&["queue", "stats", "--json"]).await;
    let stats: QueueStats = serde_json::from_slice(&output.stdout).unwrap();
    let expected_cancelled = if cancel == 200 { 1 } else { 0 };
    assert_eq!(stats.cancelled, expected_cancelled);
    assert_eq!(stats.completed + stats.cancelled, 2);
    assert_eq!((stats.queued, stats.running, stats.failed), (0, 0, 0));
    assert_eq!(stats.live_workers, 1);

    let workers: Value =
        serde_json::from_slice(&app.genqctl(&["workers", "--json"]).await.stdout).unwrap();
    assert_eq!(workers.as_array().unwrap().len(), 1);
    assert_eq!(workers[0]["model"], "gpt2-tiny-synthetic");
    worker.stop().await;
    let after = db::workers::live(&app.pool).await.unwrap();
    assert!(after.is_empty(), "a stopped worker is no longer live");
    app.stop().await;
}

#[tokio::test]
async fn a_cancelled_queued_job_never_runs_and_finished_jobs_cannot_be_cancelled() {
    let app = TestApp::spawn().await;
    let queued = app.submit(&json!({ "prompts": ["cancel me"] })).await;

    let cancelled = app.genqctl(&["jobs", "cancel", &queued.to_string()]).await;
    assert_exit(&cancelled, 0);
    let shown: Value = serde_json::from_slice(
        &app.genqctl(&["jobs", "show", &queued.to_string()])
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(shown["status"], "cancelled");

    let worker = app.start_worker(2).await;
    let done = app
        .submit(&json!({ "prompts": ["run me"], "max_tokens": 2 }))
        .await;
    app.wait_final(done).await;
    assert_eq!(app.view(queued).await.started_at, None);
    let again = app.post(&format!("/batch/{done}/cancel"), &json!({})).await;
    assert_eq!(again.status(), 409);
    let refused = app.genqctl(&["jobs", "cancel", &done.to_string()]).await;
    assert_exit(&refused, 1);
    assert!(
        stderr(&refused).contains(&format!("job {done} is already completed")),
        "{}",
        stderr(&refused)
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn genqctl_submit_waits_and_prints_the_generated_text() {
    let app = TestApp::spawn().await;
    let worker = app.start_worker(2).await;

    let output = app
        .genqctl(&[
            "submit",
            "--wait",
            "--max-tokens",
            "6",
            "--seed",
            "1",
            "Hello there",
        ])
        .await;

    assert_exit(&output, 0);
    let printed = stdout(&output);
    assert!(
        printed.contains("completed on gpt2-tiny-synthetic"),
        "{printed}"
    );
    let history: Value = app.get("/history?limit=1").await.json().await.unwrap();
    let text = history["items"][0]["generated_text"].as_str().unwrap();
    assert!(printed.contains(&format!("Hello there{text}")), "{printed}");
    worker.stop().await;
    app.stop().await;
}
