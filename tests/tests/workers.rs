//! Workers under load and under shutdown: nothing lost, nothing run twice.

use std::{collections::HashSet, process::Stdio, time::Duration};

use genq_shared::types::JobStatus;
use genq_tests::{PATIENCE, TestApp, binary, until};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn two_hundred_jobs_over_two_workers_all_complete_exactly_once() {
    let app = TestApp::spawn().await;
    let first = app.start_worker(8).await;
    let second = app.start_worker(8).await;

    let submits = (0..200).map(|i| {
        let app = &app;
        async move {
            app.submit(&json!({ "prompts": [format!("job number {i}")], "max_tokens": 6 }))
                .await
        }
    });
    let ids: Vec<Uuid> = futures_join_all(submits).await;
    for id in &ids {
        assert_eq!(app.wait_final(*id).await.status, JobStatus::Completed);
    }

    let rows: Vec<(Uuid, i32, String, i64)> = sqlx::query_as(
        "select j.id, j.attempt, j.worker, (select count(*) from generations g where g.job_id = j.id) from jobs j",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 200);
    assert!(
        rows.iter()
            .all(|(_, attempt, _, results)| *attempt == 1 && *results == 1),
        "each job ran once"
    );
    let workers: HashSet<&str> = rows.iter().map(|(_, _, w, _)| w.as_str()).collect();
    assert_eq!(workers.len(), 2, "both workers took jobs: {workers:?}");
    first.stop().await;
    second.stop().await;
    app.stop().await;
}

async fn futures_join_all<F: Future<Output = Uuid>>(futures: impl Iterator<Item = F>) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut set: Vec<_> = futures.map(Box::pin).collect();
    // Submit in waves of 20 concurrent requests.
    while !set.is_empty() {
        let wave: Vec<_> = set.drain(..set.len().min(20)).collect();
        for id in futures::future::join_all(wave).await {
            ids.push(id);
        }
    }
    ids
}

#[tokio::test]
async fn sigterm_during_a_job_finishes_it_and_loses_nothing() {
    let app = TestApp::spawn().await;
    let mut worker = tokio::process::Command::new(binary("genq-worker"))
        .args(&app.worker_args(4)[1..])
        .arg("--max-jobs=1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting genq-worker");
    let prompts: Vec<String> = (0..8).map(|i| format!("long story {i}")).collect();
    let long = app
        .submit(&json!({ "prompts": prompts, "max_tokens": 200 }))
        .await;
    let queued_behind = app
        .submit(&json!({ "prompts": ["waiting"], "max_tokens": 4 }))
        .await;
    wait_until_running(&app, long).await;

    let pid = Pid::from_raw(worker.id().expect("worker pid") as i32);
    kill(pid, Signal::SIGTERM).expect("sending SIGTERM");
    let exit = tokio::time::timeout(PATIENCE, worker.wait())
        .await
        .expect("worker exits")
        .unwrap();

    assert!(exit.success(), "worker exit: {exit:?}");
    let view = app.view(long).await;
    assert_eq!(
        view.status,
        JobStatus::Completed,
        "the job in hand finishes before exit"
    );
    assert_eq!(view.results.len(), 8);
    // The job behind it is not lost: it is still queued (or done), and a new worker completes it.
    let status = app.status(queued_behind).await;
    assert!(
        matches!(status, JobStatus::Queued | JobStatus::Completed),
        "{status}"
    );
    let replacement = app.start_worker(2).await;
    assert_eq!(
        app.wait_final(queued_behind).await.status,
        JobStatus::Completed
    );
    replacement.stop().await;
    app.stop().await;
}

async fn wait_until_running(app: &TestApp, id: Uuid) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut check = tokio::time::interval(Duration::from_millis(20));
    while app.status(id).await != JobStatus::Running {
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} never started"
        );
        check.tick().await;
    }
}

#[tokio::test]
async fn a_worker_whose_engine_dies_hands_its_jobs_back_at_once_and_exits_non_zero() {
    let app = TestApp::spawn().await;
    let ids = [
        app.submit(&json!({ "prompts": ["one", "two"], "max_tokens": 40 }))
            .await,
        app.submit(&json!({ "prompts": ["three"], "max_tokens": 40 }))
            .await,
    ];
    let mut worker = app.spawn_worker_process(
        &app.worker_args(4),
        &[("GENQ_FAULT_ENGINE_PANIC_AFTER_TOKENS", "30")],
    );

    let exit = tokio::time::timeout(PATIENCE, worker.wait())
        .await
        .expect("the worker exits by itself")
        .unwrap();

    assert_eq!(exit.code(), Some(1), "worker exit: {exit:?}");
    // The reconciler is off in tests: only the dying worker can have put the jobs back.
    let rows: Vec<(Uuid, String, i32, Option<String>)> =
        sqlx::query_as("select id, status, attempt, error_code from jobs order by id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(
        rows.iter()
            .all(|(_, status, attempt, code)| status == "queued"
                && match attempt {
                    0 => code.is_none(),
                    1 => code.as_deref() == Some("worker_stopped"),
                    _ => false,
                }),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|(_, _, attempt, _)| *attempt == 1),
        "{rows:?}"
    );
    let stopped: i64 =
        sqlx::query_scalar("select count(*) from workers where stopped_at is not null")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stopped, 1, "the worker deregistered");
    let replacement = app.start_worker(4).await;
    for id in ids {
        assert_eq!(app.wait_final(id).await.status, JobStatus::Completed);
    }
    replacement.stop().await;
    app.stop().await;
}

/// apalis 1.0's worker cannot finish a stop while more than four of its task events wait to be
/// sent (see `run_with_model`); a worker stopped mid-drain used to wait out its whole shutdown
/// timeout. Every job still ends, run by the next worker.
#[tokio::test]
async fn a_worker_stopped_while_draining_a_queue_exits_promptly_and_loses_nothing() {
    let app = TestApp::spawn().await;
    let jobs: Vec<_> = (0..300)
        .map(|i| json!({ "prompts": [format!("drain {i}")], "max_tokens": 4 }))
        .collect();
    let ids = app.submit_bulk(&jobs).await;
    let worker = app
        .start_worker_with(8, &["--shutdown-timeout-secs", "600"])
        .await;
    until("the worker has completed 20 jobs", || async {
        let done: i64 = sqlx::query_scalar("select count(*) from jobs where status = 'completed'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        done >= 20
    })
    .await;

    let stopped = tokio::time::timeout(Duration::from_secs(30), worker.stop()).await;
    assert!(stopped.is_ok(), "the worker was still stopping after 30 s");
    let next = app.start_worker(8).await;
    for id in ids {
        assert_eq!(
            app.wait_final(id).await.status,
            JobStatus::Completed,
            "{id}"
        );
    }
    next.stop().await;
    app.stop().await;
}
