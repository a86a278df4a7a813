//! PostgreSQL or Redis unreachable for one API (through a cut proxy): readiness says which, with
//! `Retry-After`; a job recorded while Redis is down keeps its id and runs once Redis is back; a
//! reconciler step that fails does not skip the others; a worker whose link to PostgreSQL goes
//! silent stops taking jobs (its `/ready` says why), its job runs on another, and it comes back;
//! an API started before PostgreSQL and Redis accept it waits for them, and one refused for a
//! reason that waiting cannot mend exits at once, naming it; Redis connections end a dead link.

use std::{net::SocketAddr, os::fd::BorrowedFd, time::Duration};

use genq_harness::relay::{Mode, Relay};
use genq_shared::{
    config::QueueConfig,
    db::{self, jobs::CLAIM_LOCK_WAIT},
    queue,
    reconcile::{ReconcileConfig, Reconciler},
    types::JobStatus,
};
use genq_tests::{
    AppOptions, TestApp, consumers, free_port,
    proxy::{Proxy, host_port, through},
    redis_url, until,
};
use serde_json::{Value, json};
use socket2::SockRef;
use uuid::Uuid;

/// How many claims of job `id` reached PostgreSQL (its attempts).
async fn claims_of(app: &TestApp, id: Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from job_attempts where job_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_api_started_before_postgresql_and_redis_accept_it_waits_for_them() {
    let app = TestApp::spawn().await;
    let postgres = Proxy::start(host_port(&app.database_url)).await;
    let redis = Proxy::start(host_port(&redis_url())).await;
    postgres.cut();
    redis.cut();
    // Each is let in only once the API has retried rather than exit: after two refusals for
    // PostgreSQL; for Redis, one more than redis's connection manager makes in one connect.
    let tries_per_redis_connect =
        redis::aio::ConnectionManagerConfig::new().number_of_retries() + 1;
    let let_in_after_retries = async {
        postgres.refused(2).await;
        postgres.restore();
        redis.refused(tries_per_redis_connect + 1).await;
        redis.restore();
    };
    let database_url = through(&app.database_url, &postgres);
    let redis_via_proxy = through(&redis_url(), &redis);
    let settings = [
        ("DATABASE_URL", database_url.as_str()),
        ("REDIS_URL", redis_via_proxy.as_str()),
    ];
    let (api, ()) = tokio::join!(app.spawn_api_process_with(&settings), let_in_after_retries);
    let health = app
        .client
        .get(format!("{}/ready", api.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let log = api.stop().await;
    for waited_for in [
        "PostgreSQL is not reachable yet",
        "Redis is not reachable yet",
    ] {
        assert!(
            log.contains(waited_for),
            "no {waited_for:?} in the log:\n{log}"
        );
    }
}

#[tokio::test]
async fn an_api_refused_for_a_reason_waiting_cannot_mend_exits_naming_it() {
    let app = TestApp::spawn().await;
    // This machine's PostgreSQL has no TLS, and genq's sqlx is built without it; the Redis has no
    // password.
    let tls_required = format!("{}?sslmode=require", app.database_url);
    let redis_with_password = redis_url().replacen("redis://", "redis://:not-the-password@", 1);
    for (setting, url, reason) in [
        ("DATABASE_URL", tls_required.as_str(), "TLS"),
        (
            "REDIS_URL",
            redis_with_password.as_str(),
            "authentication failed",
        ),
    ] {
        let log = app.api_process_exit_log(&[(setting, url)]).await;
        assert!(
            log.contains(reason),
            "{setting}: no {reason:?} in the log:\n{log}"
        );
        assert!(
            !log.contains("is not reachable yet"),
            "{setting}: retried a refusal that waiting cannot mend:\n{log}"
        );
    }
}

async fn app_behind(postgres: Option<&Proxy>, redis: Option<&Proxy>) -> TestApp {
    TestApp::spawn_with(AppOptions {
        postgres_via: postgres.map(Proxy::address),
        redis_via: redis.map(Proxy::address),
        ..AppOptions::default()
    })
    .await
}

async fn assert_unready_naming(app: &TestApp, service: &str) {
    let response = app.get("/ready").await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("30")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "error": { "code": "unavailable", "message": format!("unreachable: {service}") } })
    );
}

#[tokio::test]
async fn ready_is_503_with_retry_after_while_redis_is_unreachable() {
    let redis = Proxy::start(host_port(&redis_url())).await;
    let app = app_behind(None, Some(&redis)).await;
    assert_eq!(app.get("/ready").await.status(), 200);

    redis.cut();

    assert_unready_naming(&app, "redis").await;
    redis.restore();
    app.stop().await;
}

#[tokio::test]
async fn ready_is_503_with_retry_after_while_postgresql_is_unreachable() {
    let postgres = Proxy::start(host_port(&genq_tests::postgres_base())).await;
    let app = app_behind(Some(&postgres), None).await;
    assert_eq!(app.get("/ready").await.status(), 200);

    postgres.cut();

    assert_unready_naming(&app, "postgresql").await;
    postgres.restore();
    app.stop().await;
}

#[tokio::test]
async fn a_job_recorded_while_redis_is_down_keeps_its_id_and_runs_once_redis_is_back() {
    let redis = Proxy::start(host_port(&redis_url())).await;
    let app = app_behind(None, Some(&redis)).await;
    redis.cut();

    // Two requests with one Idempotency-Key race: both must get the one job's id, and that id
    // must answer, although Redis refuses its dispatch.
    let send = || {
        app.client
            .post(format!("{}/batch", app.address))
            .header("Idempotency-Key", "while-redis-is-down")
            .json(&json!({ "prompts": ["kept"], "max_tokens": 4 }))
            .send()
    };
    let (first, second) = tokio::join!(send(), send());
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (202, 202)
    );
    let id_of = |body: Value| body["task_id"].as_str().unwrap().parse::<Uuid>().unwrap();
    let id = id_of(first.json().await.unwrap());
    assert_eq!(id_of(second.json().await.unwrap()), id);
    let answer = app.get(&format!("/batch_result/{id}")).await;
    assert_eq!(answer.status(), 200);
    let view: Value = answer.json().await.unwrap();
    assert_eq!(view["status"], "queued");

    redis.restore();
    let out = app.genqctl(&["queue", "reconcile", "--json"]).await;
    let pass: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pass["redispatched"], 1, "{pass}");
    let worker = app.start_worker(1).await;
    let view = app.wait_final(id).await;
    assert_eq!(view.status, JobStatus::Completed);
    assert_eq!(view.results.len(), 1);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_failed_reconciler_step_does_not_skip_the_others() {
    let app = TestApp::spawn().await;
    // One finished job past retention, one queued job past its deadline, one queued job that
    // waited long enough to be checked against Redis.
    let finished = app.submit(&json!({ "prompts": ["old"] })).await;
    let expired = app.submit(&json!({ "prompts": ["late"] })).await;
    let waiting = app.submit(&json!({ "prompts": ["waiting"] })).await;
    db::jobs::cancel(&app.pool, finished, db::Scope::All)
        .await
        .unwrap();
    sqlx::query("update jobs set finished_at = now() - interval '2 hours' where id = $1")
        .bind(finished)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("update jobs set deadline = now() - interval '1 second' where id = $1")
        .bind(expired)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("update jobs set queued_at = now() - interval '1 minute' where id = $1")
        .bind(waiting)
        .execute(&app.pool)
        .await
        .unwrap();
    let redis = Proxy::start(host_port(&redis_url())).await;
    let connection = queue::connect(&QueueConfig {
        redis_url: through(&redis_url(), &redis).parse().unwrap(),
        queue: app.queue.clone(),
    })
    .await
    .unwrap();
    let config = ReconcileConfig {
        worker_stale_secs: 15,
        redispatch_after_secs: 10,
        retention_secs: 3600,
    };
    let mut reconciler = Reconciler::new(app.pool.clone(), connection, app.queue.clone(), config);

    redis.cut();
    let pass = tokio::time::timeout(Duration::from_secs(60), reconciler.pass())
        .await
        .expect("a pass ends although Redis is unreachable");

    let failed: Vec<&str> = pass.failed_steps.iter().map(|f| f.step).collect();
    assert_eq!(
        failed,
        ["promote_due", "redispatch_lost", "vacuum_redis"],
        "{pass:?}"
    );
    assert_eq!((pass.timed_out, pass.deleted), (1, 1), "{pass:?}");
    assert_eq!(app.status(expired).await, JobStatus::Failed);
    assert_eq!(db::jobs::status(&app.pool, finished).await.unwrap(), None);
    redis.restore();
    app.stop().await;
}

/// The fault suite's target for a partition's jobs, after the healing.
const PARTITION_RECOVERY: Duration = Duration::from_secs(30);

async fn dispatch_of(app: &TestApp, id: Uuid) -> Uuid {
    sqlx::query_scalar("select dispatch_id from jobs where id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_replica_cut_from_redis_does_not_keep_the_reconciler_from_the_others() {
    let app = TestApp::spawn().await;
    // A job Redis lost (its queue's keys gone), waiting long enough to be checked.
    let lost = app.submit(&json!({ "prompts": ["lost"] })).await;
    app.empty_redis_namespace().await;
    sqlx::query("update jobs set queued_at = now() - interval '1 minute' where id = $1")
        .bind(lost)
        .execute(&app.pool)
        .await
        .unwrap();
    let first_dispatch = dispatch_of(&app, lost).await;

    // Replica A reaches Redis through a link that goes silent: each of its passes waits out
    // Redis's timeouts, about a second of them while it holds the queue's lock. B reaches Redis
    // and starts while A holds the lock, at the API's default interval: at a fixed interval,
    // B's every try would come while A holds it, as in the fault suite's run.
    let redis_address = host_port(&redis_url()).to_owned();
    let link = Relay::start("127.0.0.1:0".parse().unwrap(), redis_address.clone())
        .await
        .unwrap();
    let silent_redis = QueueConfig {
        redis_url: redis_url()
            .replacen(&redis_address, &link.address().to_string(), 1)
            .parse()
            .unwrap(),
        queue: app.queue.clone(),
    };
    let config = ReconcileConfig {
        worker_stale_secs: 15,
        redispatch_after_secs: 10,
        retention_secs: 0,
    };
    let a = Reconciler::new(
        app.pool.clone(),
        queue::connect(&silent_redis).await.unwrap(),
        app.queue.clone(),
        config.clone(),
    );
    link.set_mode(Mode::Stall);
    let b = app.reconciler(0).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = |reconciler: Reconciler| {
        let mut stopped = stopped.clone();
        tokio::spawn(reconciler.run(Duration::from_secs(5), async move {
            let _ = stopped.wait_for(|s| *s).await;
        }))
    };
    let replica_a = run(a);
    until("replica A holds the reconciler's lock", || async {
        sqlx::query_scalar::<_, bool>(
            "select exists (select 1 from pg_locks l join pg_database d on d.oid = l.database
                            where l.locktype = 'advisory' and l.granted
                              and d.datname = current_database())",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap()
    })
    .await;
    let replica_b = run(b);

    let dispatched_again = tokio::time::timeout(
        PARTITION_RECOVERY,
        until("replica B dispatches the lost job again", || async {
            dispatch_of(&app, lost).await != first_dispatch
        }),
    )
    .await;
    stop.send_replace(true);
    link.set_mode(Mode::Pass);
    replica_a.await.unwrap();
    replica_b.await.unwrap();
    assert!(
        dispatched_again.is_ok(),
        "no replica dispatched the lost job within {:?}",
        PARTITION_RECOVERY
    );
    app.stop().await;
}

#[tokio::test]
async fn a_worker_cut_off_from_postgresql_stops_taking_jobs_and_its_job_runs_on_another() {
    let app = TestApp::spawn().await;
    // A partition, not a refused connection: the worker's connections stay open and go silent.
    let local: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let database = host_port(&app.database_url);
    let link = Relay::start(local, database.into()).await.unwrap();
    let mut args = app.worker_args(2);
    let through_link = app
        .database_url
        .replacen(database, &link.address().to_string(), 1);
    args[2] = format!("--database-url={through_link}");
    let http = format!("127.0.0.1:{}", free_port());
    args.push(format!("--http-addr={http}"));
    let cut_off = app.start_worker_from(args).await;
    until("the worker has started consuming", || async {
        consumers(&app.model_queue()).await == 1
    })
    .await;
    let ready = || async {
        let response = reqwest::get(format!("http://{http}/ready")).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    assert_eq!(ready().await.0, 200);

    link.set_mode(Mode::Stall);
    let id = app
        .submit(&json!({ "prompts": ["handed over"], "max_tokens": 4 }))
        .await;
    // The only worker takes the job's task from Redis, which it still reaches, fails to claim
    // it, hands it back and stops taking jobs.
    let unreachable = r#"{"error":{"code":"unavailable","message":"PostgreSQL is unreachable: taking no jobs until it answers"}}"#;
    until("the cut-off worker says it takes no jobs", || async {
        ready().await == (503, unreachable.to_owned())
    })
    .await;
    let other = app.start_worker(2).await;

    let view = app.wait_final(id).await;
    assert_eq!(view.status, JobStatus::Completed);
    let claims = claims_of(&app, id).await;
    assert_eq!(
        claims, 1,
        "only the other worker's claim reached PostgreSQL"
    );
    link.set_mode(Mode::Pass);
    until("the healed worker is ready again", || async {
        ready().await.0 == 200
    })
    .await;
    cut_off.stop().await;
    other.stop().await;
    app.stop().await;
}

/// A job's row locked by another session (as a peer cut off mid-transaction holds it until
/// PostgreSQL ends that session): the claim gives up after `CLAIM_LOCK_WAIT` and its delivery is
/// retried, again and again past the claim patience, while the worker stays ready; once the lock
/// goes, the job runs, claimed once.
#[tokio::test]
async fn a_claim_on_a_locked_row_is_retried_and_its_worker_stays_ready() {
    let app = TestApp::spawn().await;
    let id = app
        .submit(&json!({ "prompts": ["held by another"], "max_tokens": 4 }))
        .await;
    let mut holder = app.pool.begin().await.unwrap();
    db::allow_idle_in(&mut holder).await.unwrap();
    sqlx::query("select 1 from jobs where id = $1 for update")
        .bind(id)
        .execute(&mut *holder)
        .await
        .unwrap();

    let mut args = app.worker_args(2);
    let http = format!("127.0.0.1:{}", free_port());
    args.push(format!("--http-addr={http}"));
    let worker = app.start_worker_from(args).await;
    // Each claim shows in pg_stat_activity as a statement waiting on the lock, with the time it
    // started. Four of them (each waits 1 s, its retries 1, 2 and 3 s later) span past the 5 s
    // claim patience; none may wait near that patience, nor two at once (one not given up), and
    // the worker answers ready throughout.
    let too_long = 3.0 * CLAIM_LOCK_WAIT.as_secs_f64();
    let waits = std::sync::Mutex::new(std::collections::HashSet::new());
    // Status 0: not listening yet.
    let ready = || async {
        match reqwest::get(format!("http://{http}/ready")).await {
            Ok(response) => (response.status().as_u16(), response.text().await.unwrap()),
            Err(e) => (0, e.to_string()),
        }
    };
    until("the worker has loaded its model", || async {
        ready().await.0 == 200
    })
    .await;
    until(
        "four claims waited on the locked row, each given up",
        || async {
            let waiting: Vec<(chrono::DateTime<chrono::Utc>, f64)> = sqlx::query_as(
                "select query_start, extract(epoch from now() - query_start)::float8
             from pg_stat_activity
             where datname = current_database() and wait_event_type = 'Lock'
               and query like 'update jobs set status = ''running''%'",
            )
            .fetch_all(&app.pool)
            .await
            .unwrap();
            assert!(
                waiting.len() <= 1,
                "claims piled up on the lock: {waiting:?}"
            );
            if let Some((started, waited)) = waiting.first() {
                assert!(*waited < too_long, "a claim waited {waited} s on the lock");
                waits.lock().unwrap().insert(*started);
            }
            let (status, body) = ready().await;
            assert_eq!(status, 200, "{body}");
            waits.lock().unwrap().len() >= 4
        },
    )
    .await;

    holder.rollback().await.unwrap();
    let view = app.wait_final(id).await;
    assert_eq!(view.status, JobStatus::Completed);
    let claims = claims_of(&app, id).await;
    assert_eq!(claims, 1, "the claims given up left no attempt behind");
    worker.stop().await;
    app.stop().await;
}

/// Every genq session asks PostgreSQL to end it when left idle in a transaction and to probe it
/// when it goes quiet (`db::IDLE_IN_TRANSACTION`, `db::SERVER_KEEPALIVE`): session settings, sent
/// at connecting, so no server configuration is needed.
#[tokio::test]
async fn genq_sessions_carry_their_idle_and_keepalive_limits() {
    let app = TestApp::spawn().await;
    let settings: Vec<(String, String)> = sqlx::query_as(
        "select name, setting from pg_settings
         where name in ('idle_in_transaction_session_timeout', 'tcp_keepalives_idle',
                        'tcp_keepalives_interval', 'tcp_keepalives_count', 'tcp_user_timeout')
         order by name",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let keepalive = db::SERVER_KEEPALIVE;
    let expected = [
        (
            "idle_in_transaction_session_timeout",
            db::IDLE_IN_TRANSACTION.as_millis(),
        ),
        ("tcp_keepalives_count", u128::from(keepalive.count)),
        ("tcp_keepalives_idle", u128::from(keepalive.idle.as_secs())),
        (
            "tcp_keepalives_interval",
            u128::from(keepalive.interval.as_secs()),
        ),
        ("tcp_user_timeout", keepalive.gives_up_after().as_millis()),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    assert_eq!(settings, expected);
    app.stop().await;
}

/// Every genq connection to Redis ends a link that stops acknowledging what it sent, probes one
/// gone quiet, and sends small commands at once (`queue::client`, `queue::CLIENT_KEEPALIVE`).
/// Without them an API replica cut from Redis kept its dead connection 56 s after the link came
/// back. A cut the kernel sees needs root (the fault suite makes it); this reads the settings off
/// the socket of the connection `queue::connect` makes (found by its addresses: Redis must be
/// reached directly, not through NAT).
#[tokio::test]
async fn redis_connections_end_a_dead_link_and_probe_a_quiet_one() {
    let mut redis = queue::connect(&QueueConfig {
        redis_url: redis_url().parse().unwrap(),
        queue: "unused".into(),
    })
    .await
    .unwrap();
    let info: String = redis::cmd("CLIENT")
        .arg("INFO")
        .query_async(&mut redis)
        .await
        .unwrap();
    // The connection as Redis sees it: `addr` the client's end, `laddr` its own.
    let address = |name: &str| -> SocketAddr {
        info.split_whitespace()
            .find_map(|field| field.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in CLIENT INFO: {info}"))
            .parse()
            .unwrap()
    };
    let (ours, redis_end) = (address("addr="), address("laddr="));
    let keepalive = queue::CLIENT_KEEPALIVE;
    let settings = socket_connecting(ours, redis_end, |socket| {
        (
            socket.tcp_nodelay().unwrap(),
            socket.keepalive().unwrap(),
            socket.tcp_keepalive_time().unwrap(),
            socket.tcp_keepalive_interval().unwrap(),
            socket.tcp_keepalive_retries().unwrap(),
            socket.tcp_user_timeout().unwrap(),
        )
    });
    assert_eq!(
        settings,
        (
            true,
            true,
            keepalive.idle,
            keepalive.interval,
            keepalive.count,
            Some(keepalive.gives_up_after()),
        )
    );
}

/// Reads what `read` wants off this process's TCP socket from `local` to `peer`.
fn socket_connecting<T>(
    local: SocketAddr,
    peer: SocketAddr,
    read: impl Fn(&SockRef<'_>) -> T,
) -> T {
    let address = |a: std::io::Result<socket2::SockAddr>| a.ok().and_then(|a| a.as_socket());
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // SAFETY: only getsockname, getpeername and getsockopt are called on it. Should another
        // test close it meanwhile, they fail or read another socket's addresses: no memory is
        // touched.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = SockRef::from(&fd);
        if address(socket.local_addr()) == Some(local) && address(socket.peer_addr()) == Some(peer)
        {
            return read(&socket);
        }
    }
    panic!("no socket of this process connects {local} to {peer}");
}
