//! `genqctl`'s contract as a program, through the real binary: only `genqctl migrate` creates or
//! migrates the database and the other commands check the schema; stdout carries only the
//! command's output; Redis is best effort where PostgreSQL holds the change; exit codes tell
//! success (0), failure (1) and usage errors (2) apart.

use std::process::Output;

use genq_shared::{db, queue, types::JobStatus, types::QueueStats};
use genq_tests::{TestApp, Throwaway, binary, postgres_base, redis_url, stdout};
use serde_json::{Value, json};
use uuid::Uuid;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Where `genqctl` points and how loud it logs; [`TestApp::genqctl`] fixes these, these tests
/// need to vary them.
struct Env<'a> {
    database_url: &'a str,
    redis_url: &'a str,
    queue: &'a str,
    rust_log: &'a str,
}

impl<'a> Env<'a> {
    fn of(app: &'a TestApp, redis_url: &'a str) -> Self {
        Env {
            database_url: &app.database_url,
            redis_url,
            queue: &app.queue,
            rust_log: "warn",
        }
    }
}

async fn genqctl(env: &Env<'_>, args: &[&str]) -> Output {
    tokio::process::Command::new(binary("genqctl"))
        .args(args)
        .env("DATABASE_URL", env.database_url)
        .env("REDIS_URL", env.redis_url)
        .env("GENQ_QUEUE", env.queue)
        .env("RUST_LOG", env.rust_log)
        .env_remove("GENQ_LOG_FORMAT")
        .output()
        .await
        .expect("running genqctl")
}

/// A Redis URL nobody answers at, while the socket it returns is kept: a port bound but not
/// listening refuses every connection, and no other process can take it meanwhile.
fn dead_redis_url() -> (String, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("binding a port");
    let port = socket.local_addr().unwrap().port();
    (format!("redis://127.0.0.1:{port}"), socket)
}

async fn database_exists(name: &str) -> bool {
    let pool = sqlx::PgPool::connect(&format!("{}/postgres", postgres_base()))
        .await
        .expect("connecting to the maintenance database");
    let exists =
        sqlx::query_scalar(r#"select exists (select 1 from pg_database where datname = $1)"#)
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    exists
}

#[tokio::test]
async fn a_missing_database_is_refused_and_left_alone_until_genqctl_migrate() {
    let name = format!("genq_test_{}", Uuid::new_v4().simple());
    let database_url = format!("{}/{name}", postgres_base());
    let _drop = Throwaway {
        database_url: database_url.clone(),
        queue: name.clone(),
    };
    let redis = redis_url();
    let env = Env {
        database_url: &database_url,
        redis_url: &redis,
        queue: &name,
        rust_log: "warn",
    };

    let refused = genqctl(&env, &["queue", "stats", "--json"]).await;

    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert_eq!(stdout(&refused), "");
    assert_eq!(
        stderr(&refused).trim_end(),
        format!("genqctl: the database at {database_url} does not exist: run genqctl migrate")
    );
    assert!(!database_exists(&name).await, "only migrate may create it");

    let migrated = genqctl(&env, &["migrate"]).await;
    assert_eq!(migrated.status.code(), Some(0), "{migrated:?}");
    assert!(database_exists(&name).await);

    let stats = genqctl(&env, &["queue", "stats", "--json"]).await;
    assert_eq!(stats.status.code(), Some(0), "{stats:?}");
    let stats: QueueStats = serde_json::from_slice(&stats.stdout).expect("stdout is the JSON");
    assert_eq!(
        (
            stats.queued,
            stats.running,
            stats.completed,
            stats.failed,
            stats.cancelled,
            stats.live_workers,
            stats.intake_paused
        ),
        (0, 0, 0, 0, 0, 0, false)
    );
}

#[tokio::test]
async fn a_database_behind_this_build_is_refused_and_one_ahead_is_warned_about() {
    let app = TestApp::spawn().await;
    let redis = redis_url();
    let env = Env::of(&app, &redis);
    let known = db::MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .count();
    let latest: i64 = sqlx::query_scalar(
        r#"delete from _sqlx_migrations
           where version = (select max(version) from _sqlx_migrations) returning version"#,
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();

    let behind = genqctl(&env, &["queue", "stats", "--json"]).await;

    assert_eq!(behind.status.code(), Some(1), "{behind:?}");
    assert_eq!(stdout(&behind), "");
    assert_eq!(
        stderr(&behind).trim_end(),
        format!(
            "genqctl: the database at {} is not migrated ({} of {known} migrations applied): \
             run genqctl migrate",
            app.database_url,
            known - 1
        )
    );

    // Put the latest back, and add one from a newer build.
    for version in [latest, 99_991_231_000_001] {
        sqlx::query(
            r#"insert into _sqlx_migrations (version, description, success, checksum, execution_time)
               values ($1, 'put back or from a newer build', true, '\x00', 0)"#,
        )
        .bind(version)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let ahead = genqctl(&env, &["queue", "stats", "--json"]).await;

    assert_eq!(ahead.status.code(), Some(0), "{ahead:?}");
    assert!(
        stderr(&ahead).contains("genqctl: warning:") && stderr(&ahead).contains("99991231000001"),
        "{}",
        stderr(&ahead)
    );
    let _: QueueStats = serde_json::from_slice(&ahead.stdout).expect("stdout is the JSON");
    app.stop().await;
}

#[tokio::test]
async fn cancel_is_recorded_and_exits_0_when_redis_is_down() {
    let app = TestApp::spawn().await;
    let id = app.submit(&json!({ "prompts": ["cancel me"] })).await;
    let (dead, _held) = dead_redis_url();

    let cancelled = genqctl(&Env::of(&app, &dead), &["jobs", "cancel", &id.to_string()]).await;

    assert_eq!(cancelled.status.code(), Some(0), "{cancelled:?}");
    assert!(
        stderr(&cancelled).contains("the job's task stays in Redis until a worker skips it"),
        "{}",
        stderr(&cancelled)
    );
    assert_eq!(stdout(&cancelled).trim_end(), format!("job {id} cancelled"));
    assert_eq!(app.status(id).await, JobStatus::Cancelled);
    app.stop().await;
}

#[tokio::test]
async fn purge_and_retry_are_recorded_and_exit_0_when_redis_is_down() {
    let app = TestApp::spawn().await;
    let queued = [
        app.submit(&json!({ "prompts": ["a"] })).await,
        app.submit(&json!({ "prompts": ["b"] })).await,
    ];
    let (dead, _held) = dead_redis_url();
    let env = Env::of(&app, &dead);

    let purged = genqctl(&env, &["queue", "purge", "--yes"]).await;

    assert_eq!(purged.status.code(), Some(0), "{purged:?}");
    assert!(
        stderr(&purged).contains("genqctl: warning:")
            && stderr(&purged).contains("until a worker skips them"),
        "{}",
        stderr(&purged)
    );
    assert_eq!(stdout(&purged).trim_end(), "purged 2 queued jobs");
    for id in queued {
        assert_eq!(app.status(id).await, JobStatus::Cancelled);
    }

    // Arrange a failed job to retry.
    sqlx::query(
        r#"update jobs set status = 'failed', finished_at = now(), error_code = 'worker_lost',
                  error_message = 'arranged by the test'
           where id = $1"#,
    )
    .bind(queued[0])
    .execute(&app.pool)
    .await
    .unwrap();

    let retried = genqctl(&env, &["jobs", "retry", &queued[0].to_string()]).await;

    assert_eq!(retried.status.code(), Some(0), "{retried:?}");
    assert!(
        stderr(&retried).contains("the reconciler dispatches them"),
        "{}",
        stderr(&retried)
    );
    assert_eq!(stdout(&retried).trim_end(), "1 job(s) queued again");
    assert_eq!(app.status(queued[0]).await, JobStatus::Queued);
    app.stop().await;
}

#[tokio::test]
async fn json_output_is_the_whole_stdout_even_with_debug_logs() {
    let app = TestApp::spawn().await;
    app.submit(&json!({ "prompts": ["count me"] })).await;
    let redis = redis_url();
    // Debug logs (sqlx logs every statement) make any log line on stdout break the parse.
    let env = Env {
        rust_log: "debug",
        ..Env::of(&app, &redis)
    };

    let stats = genqctl(&env, &["queue", "stats", "--json"]).await;
    let listed = genqctl(&env, &["jobs", "list", "--json"]).await;

    assert_eq!(stats.status.code(), Some(0), "{stats:?}");
    let stats: QueueStats = serde_json::from_slice(&stats.stdout).expect("stdout is the JSON");
    assert_eq!((stats.queued, stats.completed), (1, 0));
    assert_eq!(listed.status.code(), Some(0), "{listed:?}");
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("stdout is the JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    app.stop().await;
}

#[tokio::test]
async fn exit_codes_tell_usage_errors_from_failures() {
    let app = TestApp::spawn().await;
    let redis = redis_url();
    let env = Env::of(&app, &redis);

    let help = genqctl(&env, &["--help"]).await;
    let malformed = genqctl(&env, &["jobs", "cancel", "not-a-uuid"]).await;
    let unconfirmed = genqctl(&env, &["queue", "purge"]).await;
    let unknown = Uuid::new_v4().to_string();
    let unknown_cancel = genqctl(&env, &["jobs", "cancel", &unknown]).await;
    let unknown_show = genqctl(&env, &["jobs", "show", &unknown]).await;

    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("Exit codes:"), "{}", stdout(&help));
    assert_eq!(malformed.status.code(), Some(2), "{malformed:?}");
    assert_eq!(unconfirmed.status.code(), Some(2), "{unconfirmed:?}");
    assert!(stderr(&unconfirmed).contains("--yes"));
    for output in [unknown_cancel, unknown_show] {
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        assert_eq!(stderr(&output).trim_end(), format!("no job {unknown}"));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_failed_reconciler_step_is_named_and_exits_1_after_the_others_ran() {
    let app = TestApp::spawn().await;
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    // The vacuum step pops apalis's done set: a string under its key makes that step fail.
    let done_set = queue::storage_config(&app.model_queue()).done_jobs_set();
    redis::cmd("SET")
        .arg(&done_set)
        .arg("not a set")
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    // Retention runs after the vacuum: a finished job past it shows that the pass went on.
    let old = finished_long_ago(&app).await;

    let reconciled = app.genqctl(&["queue", "reconcile", "--json"]).await;

    assert_eq!(reconciled.status.code(), Some(1), "{reconciled:?}");
    assert!(
        stderr(&reconciled).contains("step vacuum_redis failed: "),
        "{}",
        stderr(&reconciled)
    );
    let pass: Value = serde_json::from_slice(&reconciled.stdout).expect("stdout is the pass");
    let failed = failed_steps(&pass);
    assert_eq!(failed, ["vacuum_redis"]);
    assert_eq!(pass["deleted"], 1, "{pass}");
    assert_eq!(db::jobs::status(&app.pool, old).await.unwrap(), None);
    redis::cmd("DEL")
        .arg(&done_set)
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    app.stop().await;
}

/// A cancelled job that finished eight days ago: past the default retention of seven.
async fn finished_long_ago(app: &TestApp) -> Uuid {
    let id = app.submit(&json!({ "prompts": ["old"] })).await;
    db::jobs::cancel(&app.pool, id, db::Scope::All)
        .await
        .unwrap();
    sqlx::query("update jobs set finished_at = now() - interval '8 days' where id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn reconcile_runs_its_postgresql_steps_while_redis_is_down() {
    let app = TestApp::spawn().await;
    let old = finished_long_ago(&app).await;
    let (dead_redis, _held) = dead_redis_url();
    let env = Env {
        database_url: &app.database_url,
        redis_url: &dead_redis,
        queue: &app.queue,
        rust_log: "warn",
    };

    let reconciled = genqctl(&env, &["queue", "reconcile", "--json"]).await;

    assert_eq!(reconciled.status.code(), Some(1), "{reconciled:?}");
    let pass: Value = serde_json::from_slice(&reconciled.stdout).expect("stdout is the pass");
    let failed = failed_steps(&pass);
    assert_eq!(
        failed,
        ["promote_due", "redispatch_lost", "vacuum_redis"],
        "{pass}"
    );
    assert_eq!(pass["deleted"], 1, "{pass}");
    assert_eq!(db::jobs::status(&app.pool, old).await.unwrap(), None);
    app.stop().await;
}

fn failed_steps(pass: &Value) -> Vec<&str> {
    pass["failed_steps"]
        .as_array()
        .expect("failed_steps is a list")
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect()
}
