//! Priorities, fairness and fallbacks: an interactive job and another tenant's single job go
//! ahead of a 5,000-job backlog, and a job its model cannot serve runs on the fallback model.

use chrono::{DateTime, Utc};
use genq_shared::types::JobStatus;
use genq_tests::{
    AppOptions, OTHER_MODEL, PATIENCE, TestApp, assert_exit, other_model_path, submit_to,
    tiny_model_name,
};
use serde_json::{Value, json};
use uuid::Uuid;

/// How many jobs may start between a job's arrival and its own start: those already made ready
/// for the worker's free slots, and the slots' own turn.
const A_FEW_JOBS: i64 = 6;

/// Queues 5,000 short batch jobs of the `tests` tenant and starts a one-slot worker on them.
async fn backlog_of_5000(app: &TestApp) -> genq_tests::TestWorker {
    let jobs: Vec<Value> = (0..5000)
        .map(|i| json!({ "prompts": [format!("backlog {i}")], "max_tokens": 2 }))
        .collect();
    let ids = app.submit_bulk(&jobs).await;
    let worker = app.start_worker(1).await;
    // Under way: the backlog's head has run.
    assert_eq!(app.wait_final(ids[0]).await.status, JobStatus::Completed);
    worker
}

/// Backlog jobs (of the `tests` tenant, not `except`) that started after `since` and before
/// `except` did.
async fn started_ahead(app: &TestApp, since: DateTime<Utc>, except: Uuid) -> i64 {
    sqlx::query_scalar(
        "select count(*) from jobs where id <> $2 and tenant = 'tests' and started_at > $1
           and started_at < (select started_at from jobs where id = $2)",
    )
    .bind(since)
    .bind(except)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

async fn database_now(app: &TestApp) -> DateTime<Utc> {
    sqlx::query_scalar("select now()")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_interactive_job_starts_ahead_of_5000_queued_batch_jobs() {
    let app = TestApp::spawn().await;
    let worker = backlog_of_5000(&app).await;
    let since = database_now(&app).await;

    let answer = app
        .post(
            "/generate",
            &json!({ "prompts": ["now, please"], "max_tokens": 2 }),
        )
        .await;
    assert_eq!(answer.status(), 200);
    let id: Uuid = sqlx::query_scalar("select id from jobs where priority = 0")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let ahead = started_ahead(&app, since, id).await;
    assert!(ahead <= A_FEW_JOBS, "{ahead} batch jobs started first");
    let queued: i64 = sqlx::query_scalar("select count(*) from jobs where status = 'queued'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        queued > 4000,
        "the backlog was still there ({queued} queued)"
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn another_tenants_single_job_waits_only_a_few_jobs_behind_a_5000_job_backlog() {
    let app = TestApp::spawn().await;
    let worker = backlog_of_5000(&app).await;
    let other = genq_tests::client_with_key(Some(&app.tenant_key("other").await));
    let since = database_now(&app).await;

    let id = submit_to(
        &other,
        &app.address,
        &json!({ "prompts": ["mine"], "max_tokens": 2 }),
    )
    .await;
    assert_eq!(app.wait_final(id).await.status, JobStatus::Completed);
    let ahead = started_ahead(&app, since, id).await;
    assert!(
        ahead <= A_FEW_JOBS,
        "{ahead} of the other tenant's jobs started first"
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_model_without_a_live_worker_sends_its_waiting_jobs_to_its_fallback_after_the_set_time() {
    let app = TestApp::spawn().await;
    let tiny = tiny_model_name();
    let args = [
        "models",
        "add",
        "ghost",
        "--fallback",
        &tiny,
        "--fallback-after-secs",
        "30",
    ];
    assert_exit(&app.genqctl(&args).await, 0);
    let id = app
        .submit(&json!({ "prompts": ["anyone?"], "max_tokens": 4, "model": "ghost" }))
        .await;
    let mut reconciler = app.reconciler(0).await;
    assert_eq!(reconciler.pass().await.fell_back, 0, "not before its time");
    sqlx::query("update jobs set enqueued_at = now() - interval '31 seconds' where id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(reconciler.pass().await.fell_back, 1);

    let worker = app.start_worker(1).await;
    let view = app.wait_final(id).await;
    assert_eq!(
        (view.status, view.model.as_deref()),
        (JobStatus::Completed, Some(tiny.as_str()))
    );
    let route = view.route.unwrap();
    assert_eq!(
        (route.requested.as_str(), route.model.as_str()),
        ("ghost", tiny.as_str())
    );
    assert_eq!(
        route.fallback_reason.as_deref(),
        Some("no live worker of ghost for 30 s")
    );
    let fallbacks = format!("genq_fallbacks_total{{fallback=\"{tiny}\",reason=\"unserved\"}}");
    assert!(
        genq_shared::metrics::render().contains(&fallbacks),
        "{fallbacks} counted"
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_job_that_fails_on_its_model_completes_on_the_fallback() {
    let app = TestApp::spawn_with(AppOptions {
        extra_args: vec!["--max-attempts=1".into()],
        ..AppOptions::default()
    })
    .await;
    let tiny = tiny_model_name();
    let args = ["models", "add", OTHER_MODEL, "--fallback", &tiny];
    assert_exit(&app.genqctl(&args).await, 0);
    let tiny_worker = app.start_worker(1).await;
    let mut failing_args = app.worker_args(1);
    failing_args[1] = format!("--model={}", other_model_path().display());
    failing_args.push(format!("--model-name={OTHER_MODEL}"));
    let mut failing = app.spawn_worker_process(
        &failing_args,
        &[
            ("GENQ_FAULT_ENGINE_PANIC_AFTER_TOKENS", "5"),
            ("GENQ_WORKER_HTTP_ADDR", "off"),
        ],
    );

    let id = app
        .submit(&json!({ "prompts": ["fails here"], "max_tokens": 20, "model": OTHER_MODEL }))
        .await;
    let exit = tokio::time::timeout(PATIENCE, failing.wait())
        .await
        .expect("the failing worker exits")
        .unwrap();
    assert_eq!(exit.code(), Some(1));
    let view = app.wait_final(id).await;
    assert_eq!(
        (view.status, view.model.as_deref()),
        (JobStatus::Completed, Some(tiny.as_str()))
    );
    let reason = view.route.unwrap().fallback_reason.unwrap();
    assert!(
        reason.starts_with(&format!("failed on {OTHER_MODEL}: ")),
        "{reason}"
    );
    tiny_worker.stop().await;
    app.stop().await;
}
