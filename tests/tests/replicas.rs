//! Backlogs and replicas: reconciler passes run one at a time, so API replicas never dispatch a
//! job twice, and work off what falls due in pages; workers take only the jobs they can start;
//! bulk intake records all of its jobs or none.

use std::collections::HashSet;

use genq_shared::{db::jobs::try_reconciler_lock, queue, types::JobStatus};
use genq_tests::{TestApp, redis_connection, until, waiting_tasks};
use serde_json::{Value, json};
use uuid::Uuid;

/// Submits `count` single-prompt jobs in one bulk request.
async fn submit_many(app: &TestApp, count: usize) -> Vec<Uuid> {
    let jobs: Vec<Value> = (0..count)
        .map(|i| json!({ "prompts": [format!("job {i}")], "max_tokens": 4 }))
        .collect();
    app.submit_bulk(&jobs).await
}

/// As Redis restarting empty does to this queue, with the jobs past the re-dispatch grace.
async fn lose_redis_data(app: &TestApp) {
    queue::delete_namespace(&mut redis_connection().await, &app.queue)
        .await
        .unwrap();
    sqlx::query("update jobs set queued_at = now() - interval '1 minute'")
        .execute(&app.pool)
        .await
        .unwrap();
}

/// The dispatches Redis holds waiting (in a lane, ready or scheduled), one entry per task.
async fn waiting_dispatches(app: &TestApp) -> Vec<Uuid> {
    waiting_tasks(&app.model_queue())
        .await
        .iter()
        .map(|task| queue::dispatch_of(task).expect("a genq task id"))
        .collect()
}

/// Checks that Redis holds exactly one waiting task for each of `jobs`, the one PostgreSQL records.
async fn assert_dispatched_once(app: &TestApp, jobs: &[Uuid]) {
    let waiting = waiting_dispatches(app).await;
    assert_eq!(waiting.len(), jobs.len(), "one waiting task per job");
    let distinct: HashSet<Uuid> = waiting.iter().copied().collect();
    assert_eq!(distinct.len(), jobs.len(), "no task twice");
    let recorded: Vec<Uuid> = sqlx::query_scalar("select dispatch_id from jobs where id = any($1)")
        .bind(jobs)
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(recorded.into_iter().collect::<HashSet<_>>(), distinct);
}

#[tokio::test]
async fn a_reconciler_pass_does_nothing_while_another_pass_holds_the_lock() {
    let app = TestApp::spawn().await;
    let jobs = submit_many(&app, 3).await;
    lose_redis_data(&app).await;
    let mut reconciler = app.reconciler(0).await;

    let other_pass = try_reconciler_lock(&app.pool, &app.queue)
        .await
        .unwrap()
        .expect("lock free");
    let pass = reconciler.pass().await;
    assert!(pass.skipped, "{pass:?}");
    assert_eq!((pass.checked, pass.redispatched), (0, 0), "{pass:?}");
    assert!(waiting_dispatches(&app).await.is_empty());

    other_pass.release().await;
    let pass = reconciler.pass().await;
    assert!(!pass.skipped && pass.full_check, "{pass:?}");
    assert_eq!((pass.checked, pass.redispatched), (3, 3), "{pass:?}");
    assert_dispatched_once(&app, &jobs).await;
    app.stop().await;
}

#[tokio::test]
async fn after_a_full_check_a_pass_checks_only_what_was_dispatched_since() {
    let app = TestApp::spawn().await;
    let mut reconciler = app.reconciler(0).await;
    let mut jobs = submit_many(&app, 3).await;
    let first = reconciler.pass().await;
    assert!(first.full_check, "{first:?}");

    // A job whose push Redis lost, dispatched after the first pass's window.
    let lost = app
        .submit(&json!({ "prompts": ["lost"], "max_tokens": 4 }))
        .await;
    let config = queue::storage_config(&app.model_queue());
    let task = queue::task_id(lost).to_string();
    let _: () = redis::pipe()
        .lrem(config.active_jobs_list(), 0, &task)
        .lrem(format!("{}:genq:lane:1:tests", app.model_queue()), 0, &task)
        .zrem(config.scheduled_jobs_set(), &task)
        .hdel(config.job_data_hash(), &task)
        .query_async(&mut redis_connection().await)
        .await
        .unwrap();
    sqlx::query(
        "update jobs set queued_at = (select checked_until from reconciler_marks) + interval '1 ms'
         where id = $1",
    )
    .bind(lost)
    .execute(&app.pool)
    .await
    .unwrap();

    let second = reconciler.pass().await;
    assert!(!second.full_check, "{second:?}");
    assert_eq!((second.checked, second.redispatched), (1, 1), "{second:?}");
    jobs.push(lost);
    assert_dispatched_once(&app, &jobs).await;

    queue::delete_namespace(&mut redis_connection().await, &app.queue)
        .await
        .unwrap();
    let after_a_flush = reconciler.pass().await;
    assert!(after_a_flush.full_check, "{after_a_flush:?}");
    app.stop().await;
}

/// apalis's own fetch fails for good once about 8,000 pushed tasks wait in its scheduled set;
/// genq keeps them in its lanes and moves them to the ready list as slots free, so a worker
/// starts on a backlog of 10,000.
#[tokio::test]
async fn a_worker_takes_jobs_from_a_bulk_backlog_beyond_apalis_fetch_limit() {
    let app = TestApp::spawn().await;
    let jobs = submit_many(&app, 10_000).await;
    let config = queue::storage_config(&app.model_queue());
    let (scheduled, ready): (u64, u64) = redis::pipe()
        .zcard(config.scheduled_jobs_set())
        .llen(config.active_jobs_list())
        .query_async(&mut redis_connection().await)
        .await
        .unwrap();
    // One made ready for an idle worker; the rest wait their turn in the lanes.
    assert_eq!((scheduled, ready), (0, 1));
    assert_eq!(waiting_tasks(&app.model_queue()).await.len(), 10_000);

    let worker = app.start_worker(1).await;
    assert_eq!(app.wait_final(jobs[0]).await.status, JobStatus::Completed);
    worker.stop().await;
    app.stop().await;
}

/// Tasks due in apalis's scheduled set beyond the 8,000 its fetch can move (delayed
/// re-dispatches falling due together, say) are moved by a reconciler pass, page by page.
#[tokio::test]
async fn a_reconciler_pass_makes_every_due_task_ready() {
    let app = TestApp::spawn().await;
    let config = queue::storage_config(&app.model_queue());
    let mut redis = redis_connection().await;
    let mut schedule = redis::cmd("ZADD");
    schedule.arg(config.scheduled_jobs_set());
    for i in 0..9_000 {
        schedule.arg(1).arg(format!("task-{i}"));
    }
    schedule.query_async::<()>(&mut redis).await.unwrap();

    let pass = app.reconciler(0).await.pass().await;
    assert_eq!(pass.promoted, 9_000, "{pass:?}");
    let (scheduled, ready): (u64, Vec<String>) = redis::pipe()
        .zcard(config.scheduled_jobs_set())
        .lrange(config.active_jobs_list(), 0, -1)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(scheduled, 0);
    assert_eq!(ready.len(), 9_000);
    assert_eq!(
        ready.iter().collect::<HashSet<_>>().len(),
        9_000,
        "each once"
    );
    app.stop().await;
}

/// Deadlines or retention falling due for a whole backlog at once are worked off page by page
/// (short transactions), all within the one pass.
#[tokio::test]
async fn one_pass_expires_and_deletes_jobs_beyond_a_page() {
    let app = TestApp::spawn().await;
    let mut reconciler = app.reconciler(0).await;
    reconciler.config.retention_secs = 3600;
    let jobs = submit_many(&app, 2500).await;
    sqlx::query("update jobs set deadline = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();

    let expiring = reconciler.pass().await;
    assert_eq!(expiring.timed_out, jobs.len(), "{expiring:?}");
    sqlx::query("update jobs set finished_at = now() - interval '2 hours'")
        .execute(&app.pool)
        .await
        .unwrap();
    let deleting = reconciler.pass().await;
    assert_eq!(deleting.deleted, jobs.len(), "{deleting:?}");
    let left = app.job_count().await;
    assert_eq!(left, 0);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_passes_dispatch_each_lost_job_once() {
    let app = TestApp::spawn().await;
    let jobs = submit_many(&app, 300).await;
    lose_redis_data(&app).await;
    let (mut first, mut second) = (app.reconciler(0).await, app.reconciler(0).await);

    let (a, b) = tokio::join!(first.pass(), second.pass());

    assert_eq!(a.redispatched + b.redispatched, 300, "{a:?} {b:?}");
    assert_dispatched_once(&app, &jobs).await;
    app.stop().await;
}

#[tokio::test]
async fn two_api_replicas_reconciling_every_second_dispatch_each_lost_job_once() {
    let app = TestApp::spawn().await;
    let jobs = submit_many(&app, 1000).await;
    lose_redis_data(&app).await;
    let every_second = [("GENQ_RECONCILE_INTERVAL_SECS", "1")];
    let replicas = [
        app.spawn_api_process_with(&every_second).await,
        app.spawn_api_process_with(&every_second).await,
    ];

    until("the replicas never re-dispatched the jobs", || async {
        waiting_dispatches(&app).await.len() >= jobs.len()
    })
    .await;
    // Later passes check those re-dispatches again (once 10 s old): they must find them all.
    let dispatched_by: String = sqlx::query_scalar("select now()::text")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    until("no pass checked the re-dispatched jobs", || async {
        // A pass marks the queue checked up to its start less the 10 s grace: this one has
        // checked every re-dispatch against Redis again. No mark yet: no pass has finished.
        let checked: Option<bool> = sqlx::query_scalar(
            "select checked_until > $2::timestamptz from reconciler_marks where queue = $1",
        )
        .bind(&app.queue)
        .bind(&dispatched_by)
        .fetch_optional(&app.pool)
        .await
        .unwrap();
        checked == Some(true)
    })
    .await;

    assert_dispatched_once(&app, &jobs).await;
    for replica in replicas {
        let log = replica.stop().await;
        assert!(!log.contains("ERROR"), "{log}");
    }
    app.stop().await;
}

#[tokio::test]
async fn workers_take_only_the_jobs_they_can_start() {
    let app = TestApp::spawn().await;
    // Long enough that the first four are still running when checked.
    let prompts: Vec<String> = (0..8).map(|i| format!("Long story number {i}")).collect();
    let long = json!({ "prompts": prompts, "max_tokens": 200 });
    let jobs = futures::future::join_all((0..8).map(|_| app.submit(&long))).await;
    // The small worker starts first: taking a batch of tasks, it would hoard most of them.
    let small = app.start_worker(1).await;
    let large = app.start_worker(3).await;

    let running_per_worker = || async {
        let counts: Vec<i64> = sqlx::query_scalar(
            "select count(*) from jobs where status = 'running' group by worker order by 1",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        counts
    };
    until("the workers never ran four jobs at once", || async {
        running_per_worker().await == [1, 3]
    })
    .await;
    assert_eq!(
        waiting_dispatches(&app).await.len(),
        4,
        "the other jobs wait in Redis for whichever worker frees a slot first"
    );

    for id in jobs {
        let cancelled = app.post(&format!("/batch/{id}/cancel"), &json!({})).await;
        assert_eq!(cancelled.status(), 200);
    }
    small.stop().await;
    large.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn bulk_intake_records_every_job_in_order_or_none() {
    let app = TestApp::spawn().await;
    let jobs = json!([
        { "prompts": ["first"], "max_tokens": 4 },
        { "prompts": ["second", "and third"], "max_tokens": 4 },
        { "prompts": ["last"], "max_tokens": 4, "seed": 7 },
    ]);

    let mut bad = jobs.clone();
    bad[1]["max_tokens"] = json!(0);
    let refused = app.post("/batches", &json!({ "jobs": bad })).await;
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_field");
    assert_eq!(body["error"]["field"], "jobs[1].max_tokens");
    assert_eq!(body["error"]["job_index"], 1);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("jobs[1]: "),
        "{body}"
    );
    let recorded = app.job_count().await;
    assert_eq!(recorded, 0, "nothing recorded");
    assert!(
        waiting_dispatches(&app).await.is_empty(),
        "nothing dispatched"
    );

    let response = app.post("/batches", &json!({ "jobs": jobs })).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "queued");
    let ids: Vec<Uuid> = serde_json::from_value(body["task_ids"].clone()).unwrap();
    assert_eq!(ids.len(), 3);
    for (id, expected) in ids.iter().zip(&[1, 2, 1]) {
        let view = app.view(*id).await;
        assert_eq!(
            (view.status, view.counts.total),
            (JobStatus::Queued, *expected)
        );
    }
    assert_eq!(app.view(ids[2]).await.params.seed, Some(7));
    assert_dispatched_once(&app, &ids).await;

    let worker = app.start_worker(2).await;
    for id in &ids {
        assert_eq!(app.wait_final(*id).await.status, JobStatus::Completed);
    }
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn bulk_intake_names_the_job_whose_field_does_not_parse() {
    let app = TestApp::spawn().await;
    let one = json!({ "prompts": ["x"], "max_tokens": 1 });
    let cases = [
        (json!([one, { "max_tokens": 1 }]), 1, ".prompts"),
        (
            json!([one, one, { "prompts": ["x"], "max_tokens": "many" }]),
            2,
            ".max_tokens",
        ),
        (json!([{ "prompts": ["x"], "colour": 1 }]), 0, ".colour"),
        (json!([one, 1]), 1, ""),
    ];
    for (jobs, index, field) in cases {
        let response = app.post("/batches", &json!({ "jobs": jobs })).await;
        assert_eq!(response.status(), 422);
        let body: Value = response.json().await.unwrap();
        let error = &body["error"];
        assert_eq!(error["code"], "invalid_field", "{body}");
        assert_eq!(error["job_index"], index, "{body}");
        assert_eq!(error["field"], format!("jobs[{index}]{field}"), "{body}");
        let message = error["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("jobs[{index}]: ")), "{body}");
    }
    let recorded = app.job_count().await;
    assert_eq!(recorded, 0);
    app.stop().await;
}

#[tokio::test]
async fn bulk_intake_refuses_empty_oversized_and_idempotent_requests() {
    let app = TestApp::spawn().await;
    let one = json!({ "prompts": ["x"], "max_tokens": 1 });
    let cases = [
        (
            json!({ "jobs": [] }),
            "jobs",
            "give between 1 and 10000 jobs; got 0",
        ),
        (
            json!({ "jobs": vec![one.clone(); 10_001] }),
            "jobs",
            "give between 1 and 10000 jobs; got 10001",
        ),
    ];
    for (body, field, message) in cases {
        let response = app.post("/batches", &body).await;
        assert_eq!(response.status(), 422);
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({ "error": { "code": "invalid_field", "field": field, "message": message } })
        );
    }
    let keyed = app
        .client
        .post(format!("{}/batches", app.address))
        .header("Idempotency-Key", "once")
        .json(&json!({ "jobs": [one] }))
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 422);
    let body: Value = keyed.json().await.unwrap();
    assert_eq!(body["error"]["field"], "Idempotency-Key");
    let recorded = app.job_count().await;
    assert_eq!(recorded, 0);
    app.stop().await;
}
