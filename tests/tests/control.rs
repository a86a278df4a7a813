//! Job control against the real services: cancel, deadlines, lost workers and attempts, the dead
//! list and retry, bad input, idempotency keys, retention, and Redis losing its queue.

use genq_shared::{
    db::{self, jobs::Released},
    types::{ErrorCode, JobStatus, JobSummary},
};
use genq_tests::{AppOptions, TestApp, redis_connection, stdout, until};
use serde_json::{Value, json};
use uuid::Uuid;

/// Polls until the job is running (a worker has claimed it).
async fn until_running(app: &TestApp, id: Uuid) {
    until(&format!("job {id} never started"), || async {
        app.status(id).await == JobStatus::Running
    })
    .await;
}

/// Makes the job look claimed by a worker that died: running, under an unknown worker name.
async fn strand(app: &TestApp, id: Uuid, attempt: i32) {
    claim_as(app, id, attempt, "ghost").await;
}

async fn claim_as(app: &TestApp, id: Uuid, attempt: i32, worker: &str) {
    sqlx::query("update jobs set status = 'running', worker = $3, attempt = $2 where id = $1")
        .bind(id)
        .bind(attempt)
        .bind(worker)
        .execute(&app.pool)
        .await
        .unwrap();
}

async fn attempt(app: &TestApp, id: Uuid) -> i32 {
    sqlx::query_scalar("select attempt from jobs where id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn reconcile(app: &TestApp) -> Value {
    let out = app.genqctl(&["queue", "reconcile", "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// Enough work that a job is still running well after it starts: 48 prompts x 200 tokens
/// through one slot.
fn long_job() -> Value {
    let prompts: Vec<String> = (0..48).map(|i| format!("Long story number {i}")).collect();
    json!({ "prompts": prompts, "max_tokens": 200 })
}

#[tokio::test]
async fn cancelling_a_running_job_stops_it_and_keeps_what_finished() {
    let app = TestApp::spawn().await;
    let worker = app.start_worker(1).await;
    let id = app.submit(&long_job()).await;
    until_running(&app, id).await;

    let response = app.post(&format!("/batch/{id}/cancel"), &json!({})).await;
    assert_eq!(response.status(), 200);
    let view = app.wait_final(id).await;

    assert_eq!(view.status, JobStatus::Cancelled);
    assert!(view.counts.completed < 48, "{:?}", view.counts);
    assert_eq!(view.counts.completed as usize, view.results.len());
    assert!(
        view.results.iter().all(|r| r.completion_tokens == 200),
        "only whole prompts are kept"
    );
    // The slot is free again: a new job runs to completion on the one-slot worker.
    let next = app
        .submit(&json!({ "prompts": ["after"], "max_tokens": 4 }))
        .await;
    assert_eq!(app.wait_final(next).await.status, JobStatus::Completed);
    let again = app.post(&format!("/batch/{id}/cancel"), &json!({})).await;
    assert_eq!(again.status(), 409);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_running_job_past_its_deadline_fails_with_timeout_and_keeps_finished_prompts() {
    let app = TestApp::spawn().await;
    let worker = app.start_worker(1).await;
    let mut body = long_job();
    body["timeout_secs"] = json!(1);
    let view = app.wait_final(app.submit(&body).await).await;

    assert_eq!(view.status, JobStatus::Failed);
    assert_eq!(view.error.as_ref().unwrap().code, ErrorCode::Timeout);
    assert_eq!(view.counts.completed as usize, view.results.len());
    assert_eq!(view.counts.failed, 48 - view.counts.completed);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_queued_job_past_its_deadline_is_failed_by_the_reconciler() {
    let app = TestApp::spawn().await;
    let id = app.submit(&json!({ "prompts": ["never run"] })).await;
    sqlx::query("update jobs set deadline = now() - interval '1 second' where id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();

    assert_eq!(reconcile(&app).await["timed_out"], 1);
    let view = app.view(id).await;
    assert_eq!(view.status, JobStatus::Failed);
    assert_eq!(view.error.unwrap().code, ErrorCode::Timeout);
    app.stop().await;
}

#[tokio::test]
async fn timeout_secs_out_of_range_is_refused() {
    let app = TestApp::spawn().await;
    for bad in [json!(0), json!(86_401), json!("soon")] {
        let response = app
            .post("/batch", &json!({ "prompts": ["x"], "timeout_secs": bad }))
            .await;
        assert_eq!(response.status(), 422, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["field"], "timeout_secs");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_lost_workers_job_is_requeued_and_completes_once() {
    let app = TestApp::spawn().await;
    let id = app
        .submit(&json!({ "prompts": ["one", "two"], "max_tokens": 6 }))
        .await;
    strand(&app, id, 1).await;

    assert_eq!(reconcile(&app).await["requeued"], 1);
    assert_eq!(app.status(id).await, JobStatus::Queued);
    // The next attempt waits its backoff (2 s after one claim) in apalis's scheduled set.
    let dispatch_id: Uuid = sqlx::query_scalar("select dispatch_id from jobs where id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut redis = redis_connection().await;
    let (due, (now, _)): (f64, (u64, u64)) = redis::pipe()
        .zscore(
            genq_shared::queue::storage_config(&app.model_queue()).scheduled_jobs_set(),
            genq_shared::queue::task_id(dispatch_id).to_string(),
        )
        .cmd("TIME")
        .query_async(&mut redis)
        .await
        .unwrap();
    let ahead = due - now as f64;
    assert!((1.0..=3.0).contains(&ahead), "due {ahead} s from now");
    let worker = app.start_worker(2).await;
    let view = app.wait_final(id).await;

    assert_eq!(view.status, JobStatus::Completed);
    assert_eq!(view.results.len(), 2);
    assert_eq!(attempt(&app, id).await, 2);
    worker.stop().await;
    app.stop().await;
}

async fn set_lease_age(app: &TestApp, id: Uuid, age_secs: i32) {
    sqlx::query(
        "update jobs set lease_renewed_at = now() - make_interval(secs => $2) where id = $1",
    )
    .bind(id)
    .bind(age_secs as f64)
    .execute(&app.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_lapsed_lease_is_taken_back_although_its_worker_heartbeats() {
    let app = TestApp::spawn().await;
    // A live worker that does not know it holds the job, as when the answer to its claim was lost.
    db::workers::register(&app.pool, "forgetful", "host", 1, "gpt2-tiny", 1)
        .await
        .unwrap();
    let lapsed = app
        .submit(&json!({ "prompts": ["lost claim"], "max_tokens": 4 }))
        .await;
    let fresh = app
        .submit(&json!({ "prompts": ["held claim"], "max_tokens": 4 }))
        .await;
    for id in [lapsed, fresh] {
        claim_as(&app, id, 1, "forgetful").await;
    }
    set_lease_age(&app, lapsed, 60).await;
    set_lease_age(&app, fresh, 0).await;

    assert_eq!(reconcile(&app).await["requeued"], 1);
    assert_eq!(app.status(lapsed).await, JobStatus::Queued);
    assert_eq!(app.status(fresh).await, JobStatus::Running);
    let worker = app.start_worker(1).await;
    let view = app.wait_final(lapsed).await;
    assert_eq!(view.status, JobStatus::Completed);
    assert_eq!(attempt(&app, lapsed).await, 2);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_working_worker_renews_the_leases_of_the_jobs_it_runs() {
    let app = TestApp::spawn().await;
    // The test holds the worker's decode lock, so the job stays running however fast the engine
    // is: it has to outlast the next heartbeat (up to 5 s), which a long job alone did not always.
    let lock_dir = tempfile::tempdir().unwrap();
    let lock_path = lock_dir.path().join("decode.lock");
    let held = std::fs::File::create(&lock_path).unwrap();
    held.lock().unwrap();
    let lock_flag = format!("--decode-lock={}", lock_path.display());
    let worker = app.start_worker_with(1, &[&lock_flag]).await;
    let id = app.submit(&long_job()).await;
    until_running(&app, id).await;
    set_lease_age(&app, id, 60).await;

    // The worker's next heartbeat (every 5 s) renews it.
    until("lease never renewed", || async {
        let age: f64 = sqlx::query_scalar(
            "select extract(epoch from now() - lease_renewed_at)::float8 from jobs where id = $1",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        age < 30.0
    })
    .await;
    assert_eq!(reconcile(&app).await["requeued"], 0);
    assert_eq!(app.status(id).await, JobStatus::Running);
    drop(held);
    app.post(&format!("/batch/{id}/cancel"), &json!({})).await;
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_job_out_of_attempts_is_dead_listed_and_can_be_retried() {
    let app = TestApp::spawn().await;
    let id = app
        .submit(&json!({ "prompts": ["retry me"], "max_tokens": 5 }))
        .await;
    strand(&app, id, 3).await;

    assert_eq!(reconcile(&app).await["failed_lost"], 1);
    let view = app.view(id).await;
    assert_eq!(view.status, JobStatus::Failed);
    assert_eq!(view.error.unwrap().code, ErrorCode::WorkerLost);
    let listed = app
        .genqctl(&["jobs", "list", "--status", "failed", "--json"])
        .await;
    let dead: Vec<JobSummary> = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(dead.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);

    let retried = app.genqctl(&["jobs", "retry", &id.to_string()]).await;
    assert!(retried.status.success(), "{retried:?}");
    let worker = app.start_worker(1).await;
    let view = app.wait_final(id).await;
    assert_eq!(view.status, JobStatus::Completed);
    assert!(view.error.is_none());
    let none_left = app.genqctl(&["jobs", "retry", "--all-failed"]).await;
    assert_eq!(none_left.status.code(), Some(0), "{none_left:?}");
    assert_eq!(stdout(&none_left), "");
    assert_eq!(
        String::from_utf8_lossy(&none_left.stderr),
        "no failed job to retry\n"
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn bad_input_fails_at_once_and_is_not_retried() {
    // Without the model the API cannot see that the prompt is too long; the worker can.
    let app = TestApp::spawn_with(AppOptions {
        with_model: false,
        ..AppOptions::default()
    })
    .await;
    let worker = app.start_worker(1).await;
    // Without GENQ_MODEL the API registers no model: the worker's is the first, the default.
    app.until_model_served(&genq_tests::tiny_model_name()).await;
    let view = app
        .wait_final(
            app.submit(&json!({ "prompts": ["word ".repeat(300)] }))
                .await,
        )
        .await;

    assert_eq!(view.status, JobStatus::Failed);
    assert_eq!(view.error.unwrap().code, ErrorCode::PromptTooLong);
    assert_eq!(attempt(&app, view.task_id).await, 1);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_stale_claims_late_write_is_refused() {
    let app = TestApp::spawn().await;
    let id = app.submit(&json!({ "prompts": ["race"] })).await;
    let first = db::jobs::claim(&app.pool, id, "w1", &genq_tests::tiny_model_name(), "v")
        .await
        .unwrap()
        .unwrap();
    let released =
        db::jobs::release(&app.pool, id, first.attempt, ErrorCode::WorkerLost, "test").await;
    assert_eq!(released.unwrap(), Released::Requeued);
    let second = db::jobs::claim(&app.pool, id, "w2", &genq_tests::tiny_model_name(), "v")
        .await
        .unwrap()
        .unwrap();

    assert!(
        !db::jobs::complete(&app.pool, &first, "m", &[])
            .await
            .unwrap()
    );
    assert!(
        db::jobs::complete(&app.pool, &second, "m", &[])
            .await
            .unwrap()
    );
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_returns_the_original_job_or_409() {
    let app = TestApp::spawn().await;
    let body = json!({ "prompts": ["once"], "max_tokens": 4 });
    let send = |key: &'static str, body: Value| {
        app.client
            .post(format!("{}/batch", app.address))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };

    let first = send("k-1", body.clone()).await.unwrap();
    let repeat = send("k-1", body.clone()).await.unwrap();
    let other_body = send("k-1", json!({ "prompts": ["twice"] })).await.unwrap();
    let other_key = send("k-2", body).await.unwrap();

    assert_eq!(first.status(), 202);
    assert_eq!(repeat.status(), 202);
    let id = |v: Value| v["task_id"].as_str().unwrap().to_owned();
    let first_id = id(first.json().await.unwrap());
    assert_eq!(id(repeat.json().await.unwrap()), first_id);
    assert_eq!(other_body.status(), 409);
    assert_ne!(id(other_key.json().await.unwrap()), first_id);
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 2);
    app.stop().await;
}

#[tokio::test]
async fn generate_with_an_idempotency_key_answers_a_repeat_from_the_original_job() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker(2).await;
    let body = json!({ "prompts": ["once only"], "max_tokens": 4, "seed": 5 });
    let send = |body: Value| {
        app.client
            .post(format!("{}/generate", app.address))
            .header("Idempotency-Key", "gen-1")
            .json(&body)
            .send()
    };

    let first = send(body.clone()).await.unwrap();
    let first_status = first.status().as_u16();
    let first_body: Value = first.json().await.unwrap();
    let repeat = send(body).await.unwrap();
    let repeat_status = repeat.status().as_u16();
    let repeat_body: Value = repeat.json().await.unwrap();
    let other = send(json!({ "prompts": ["something else"] }))
        .await
        .unwrap();
    let other_status = other.status();
    let other_body: Value = other.json().await.unwrap();

    assert_eq!(
        (first_status, repeat_status),
        (200, 200),
        "{first_body} {repeat_body}"
    );
    // The same record, id included: the repeat made no second job.
    assert_eq!(repeat_body, first_body);
    assert_eq!(app.job_count().await, 1);
    assert_eq!(other_status, 409);
    assert_eq!(
        other_body["error"]["message"],
        "this Idempotency-Key was already used with a different request"
    );
    app.stop().await;
}

#[tokio::test]
async fn finished_jobs_past_retention_are_deleted_and_redis_keeps_nothing() {
    let app = TestApp::spawn().await;
    let worker = app.start_worker(2).await;
    let id = app
        .submit(&json!({ "prompts": ["keep briefly"], "max_tokens": 4 }))
        .await;
    app.wait_final(id).await;
    worker.stop().await;

    // apalis keeps finished tasks' payloads; a reconcile pass removes them.
    assert!(reconcile(&app).await["vacuumed"].as_u64().unwrap() >= 1);
    let mut redis = redis_connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", app.queue))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        keys.iter()
            .all(|k| !k.contains(":data") && !k.contains(":meta:") && !k.ends_with(":done")),
        "{keys:?}"
    );
    sqlx::query("update jobs set finished_at = now() - interval '2 hours'")
        .execute(&app.pool)
        .await
        .unwrap();
    let cleaned = app
        .genqctl(&["jobs", "cleanup", "--older-than", "3600"])
        .await;
    assert!(
        stdout(&cleaned).contains("1 finished job(s) deleted"),
        "{}",
        stdout(&cleaned)
    );
    assert_eq!(app.get(&format!("/batch_result/{id}")).await.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn queued_jobs_redis_lost_are_dispatched_again() {
    let app = TestApp::spawn().await;
    let id = app
        .submit(&json!({ "prompts": ["lost and found"], "max_tokens": 4 }))
        .await;
    app.empty_redis_namespace().await;
    sqlx::query("update jobs set queued_at = now() - interval '1 minute'")
        .execute(&app.pool)
        .await
        .unwrap();

    assert_eq!(reconcile(&app).await["redispatched"], 1);
    let worker = app.start_worker(1).await;
    assert_eq!(app.wait_final(id).await.status, JobStatus::Completed);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_redispatched_job_survives_the_clean_up_of_its_earlier_delivery() {
    let app = TestApp::spawn().await;
    let id = app
        .submit(&json!({ "prompts": ["second delivery"], "max_tokens": 4 }))
        .await;
    // As apalis leaves a delivery it has finished (a worker skipped it, say) while PostgreSQL
    // still has the job queued: no longer waiting (apalis pushes into the scheduled set, due at
    // once), in the done set, payload kept.
    let config = genq_shared::queue::storage_config(&app.model_queue());
    let first = genq_shared::queue::task_id(id).to_string();
    let mut redis = redis_connection().await;
    let _: () = redis::pipe()
        .lrem(config.active_jobs_list(), 0, &first)
        .lrem(
            format!("{}:genq:lane:1:tests", app.model_queue()),
            0,
            &first,
        )
        .zrem(config.scheduled_jobs_set(), &first)
        .sadd(config.done_jobs_set(), &first)
        .query_async(&mut redis)
        .await
        .unwrap();
    sqlx::query("update jobs set queued_at = now() - interval '1 minute'")
        .execute(&app.pool)
        .await
        .unwrap();

    // One pass re-dispatches the job and vacuums the finished delivery; the new delivery must
    // keep its payload, or a worker fetching it would fail.
    let pass = reconcile(&app).await;
    assert_eq!(pass["redispatched"], 1);
    assert_eq!(pass["vacuumed"], 1);
    let dispatch_id: Uuid = sqlx::query_scalar("select dispatch_id from jobs where id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_ne!(dispatch_id, id);
    let payload_kept: bool = redis::cmd("HEXISTS")
        .arg(config.job_data_hash())
        .arg(genq_shared::queue::task_id(dispatch_id).to_string())
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(payload_kept);
    let worker = app.start_worker(1).await;
    assert_eq!(app.wait_final(id).await.status, JobStatus::Completed);
    worker.stop().await;
    app.stop().await;
}
