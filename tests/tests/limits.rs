//! Per-key rate limits and quotas, request limits and slow clients, against the real services.

use std::time::Duration;

use genq_shared::db::{self, keys::NewKey};
use genq_tests::{AppOptions, TestApp, client_with_key};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn header(response: &reqwest::Response, name: &str) -> Option<u64> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

#[tokio::test]
async fn the_rate_limit_is_one_bucket_shared_by_two_api_processes() {
    let app = TestApp::spawn().await;
    let second = app.spawn_api_process().await;
    let key = app
        .create_key(NewKey {
            name: "limited".into(),
            rate_per_min: Some(3),
            ..NewKey::default()
        })
        .await;
    let client = client_with_key(Some(&key));
    let mut remaining = Vec::new();
    // Alternate between the two processes: 3 requests a minute in all, not 3 each.
    for base in [&app.address, &second.address, &app.address] {
        let response = client.get(format!("{base}/history")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-limit"), Some(3));
        remaining.push(header(&response, "ratelimit-remaining").unwrap());
    }
    assert_eq!(remaining, [2, 1, 0]);

    let response = client
        .get(format!("{}/history", second.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    // A token comes back every 20 s; a few milliseconds of it have passed.
    let retry_after = header(&response, "retry-after").unwrap();
    assert!(
        (19..=20).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_eq!(header(&response, "ratelimit-remaining"), Some(0));
    let reset = header(&response, "ratelimit-reset").unwrap();
    assert!((59..=60).contains(&reset), "RateLimit-Reset {reset}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "error": { "code": "rate_limited", "message": format!("this key's rate limit is spent; retry in {retry_after} s") } })
    );
    // Another key has a bucket of its own.
    assert_eq!(app.get("/history").await.status(), 200);
    second.stop().await;
}

#[tokio::test]
async fn a_jobs_per_minute_limit_counts_every_job_of_a_bulk_request() {
    let app = TestApp::spawn().await;
    let key = app
        .create_key(NewKey {
            name: "bulk".into(),
            jobs_per_min: Some(5),
            ..NewKey::default()
        })
        .await;
    let client = client_with_key(Some(&key));
    let bulk = |jobs: usize| {
        let jobs: Vec<Value> = (0..jobs)
            .map(|i| json!({ "prompts": [format!("p{i}")] }))
            .collect();
        client
            .post(format!("{}/batches", app.address))
            .json(&json!({ "jobs": jobs }))
            .send()
    };

    let first = bulk(3).await.unwrap().status().as_u16();
    let over = bulk(3).await.unwrap();
    let over_status = over.status().as_u16();
    let retry_after = header(&over, "retry-after").unwrap();
    let over_body: Value = over.json().await.unwrap();
    let rest = bulk(2).await.unwrap().status().as_u16();
    let single = client
        .post(format!("{}/batch", app.address))
        .json(&json!({ "prompts": ["one more"] }))
        .send()
        .await
        .unwrap();
    let single_status = single.status().as_u16();
    let too_big = bulk(6).await.unwrap();
    let too_big_status = too_big.status();
    let too_big_body: Value = too_big.json().await.unwrap();

    assert_eq!(
        (first, over_status, rest, single_status),
        (202, 429, 202, 429)
    );
    // One job comes back every 12 s; the third needs 12 s more, less what has passed.
    assert!((1..=12).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        over_body,
        json!({ "error": { "code": "rate_limited", "message": format!(
            "this key may submit 5 jobs a minute, and too few are left for this request; retry in {retry_after} s"
        ) } })
    );
    assert_eq!(too_big_status, 422);
    assert_eq!(
        too_big_body,
        json!({ "error": { "code": "invalid_field", "field": "jobs", "message":
            "this request has 6 jobs and this key may submit 5 a minute: send them in smaller requests"
        } })
    );
    // Only the accepted requests' jobs were recorded.
    assert_eq!(app.job_count().await, 5);

    // A repeat of an accepted request is answered with its job, uncharged, even at the limit.
    let one = app
        .create_key(NewKey {
            name: "one a minute".into(),
            jobs_per_min: Some(1),
            ..NewKey::default()
        })
        .await;
    let client = client_with_key(Some(&one));
    let idempotent = || {
        client
            .post(format!("{}/batch", app.address))
            .header("Idempotency-Key", "only-once")
            .json(&json!({ "prompts": ["kept"] }))
            .send()
    };
    let first: Value = idempotent().await.unwrap().json().await.unwrap();
    let repeat = idempotent().await.unwrap();
    assert_eq!(repeat.status(), 202);
    let repeat: Value = repeat.json().await.unwrap();
    assert_eq!(repeat["task_id"], first["task_id"]);
    let another = client
        .post(format!("{}/batch", app.address))
        .json(&json!({ "prompts": ["new"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(another.status(), 429);
    app.stop().await;
}

#[tokio::test]
async fn a_key_at_its_queued_jobs_quota_gets_429_until_one_finishes() {
    let app = TestApp::spawn().await;
    let key = app
        .create_key(NewKey {
            name: "small".into(),
            max_queued: Some(2),
            ..NewKey::default()
        })
        .await;
    let client = client_with_key(Some(&key));
    let submit = || {
        client
            .post(format!("{}/batch", app.address))
            .json(&json!({ "prompts": ["Hello"] }))
            .send()
    };
    let first = submit().await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    assert_eq!(submit().await.unwrap().status(), 202);
    let refused = submit().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused.json::<Value>().await.unwrap(),
        json!({ "error": { "code": "quota_exceeded", "message": "this key may have 2 jobs queued or running; wait for some to finish" } })
    );
    let cancel = client
        .post(format!(
            "{}/batch/{}/cancel",
            app.address,
            first["task_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    assert_eq!(submit().await.unwrap().status(), 202);
    let recorded: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 3);
}

#[tokio::test]
async fn concurrent_submissions_cannot_pass_the_queued_quota_together() {
    let app = TestApp::spawn().await;
    let key = app
        .create_key(NewKey {
            name: "racer".into(),
            max_queued: Some(1),
            ..NewKey::default()
        })
        .await;
    let key_id: uuid::Uuid = sqlx::query_scalar("select id from api_keys where name = 'racer'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // Hold the key's quota lock, so that all five submissions reach their quota check at once:
    // counted together, each would see only its own job and pass.
    let mut holder = app.pool.begin().await.unwrap();
    db::keys::lock_for_quota(&mut holder, key_id).await.unwrap();
    let client = client_with_key(Some(&key));
    let address = app.address.clone();
    let submissions = tokio::spawn(async move {
        futures::future::join_all((0..5).map(|_| {
            client
                .post(format!("{address}/batch"))
                .json(&json!({ "prompts": ["Hello"] }))
                .send()
        }))
        .await
    });
    let give_up = tokio::time::Instant::now() + genq_tests::PATIENCE;
    while !submissions.is_finished() {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity
             where datname = current_database() and wait_event_type = 'Lock'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if waiting == 5 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{waiting} submissions waiting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holder.rollback().await.unwrap();
    let mut statuses: Vec<u16> = submissions
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    statuses.sort();
    assert_eq!(statuses, [202, 429, 429, 429, 429]);
}

#[tokio::test]
async fn a_key_past_its_tokens_per_day_gets_429_and_is_charged_only_for_accepted_jobs() {
    let app = TestApp::spawn().await;
    let new = NewKey {
        name: "metered".into(),
        tokens_per_day: Some(100),
        ..NewKey::default()
    };
    let key = app.create_key(new).await;
    let key_id: uuid::Uuid = sqlx::query_scalar("select id from api_keys where name = 'metered'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let client = client_with_key(Some(&key));
    let submit = |prompts: usize, max_tokens: u32| {
        client
            .post(format!("{}/batch", app.address))
            .json(&json!({ "prompts": vec!["Hello"; prompts], "max_tokens": max_tokens }))
            .send()
    };
    assert_eq!(submit(2, 40).await.unwrap().status(), 202);
    let refused = submit(1, 30).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused.json::<Value>().await.unwrap(),
        json!({ "error": { "code": "quota_exceeded", "message": "this key may use 100 tokens a day (UTC) and this job needs 30 (prompts x max_tokens)" } })
    );
    assert_eq!(submit(1, 20).await.unwrap().status(), 202);
    assert_eq!(
        db::keys::tokens_today(&app.pool, key_id).await.unwrap(),
        100
    );
}

#[tokio::test]
async fn a_job_over_the_token_limit_is_422_naming_it() {
    let app = TestApp::spawn_with(AppOptions {
        extra_args: vec!["--max-job-tokens=1000".into()],
        ..AppOptions::default()
    })
    .await;
    let response = app
        .post(
            "/batch",
            &json!({ "prompts": vec!["Hi"; 21], "max_tokens": 50 }),
        )
        .await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "error": {
            "code": "invalid_field",
            "field": "max_tokens",
            "message": "21 prompts x max_tokens 50 is 1050 tokens; a job may generate at most 1000 (GENQ_MAX_JOB_TOKENS)"
        } })
    );
    let response = app
        .post(
            "/batch",
            &json!({ "prompts": vec!["Hi"; 20], "max_tokens": 50 }),
        )
        .await;
    assert_eq!(response.status(), 202);
}

async fn slow_client_app() -> TestApp {
    TestApp::spawn_with(AppOptions {
        extra_args: vec![
            "--client-timeout-secs=1".into(),
            "--request-body-timeout-secs=1".into(),
        ],
        ..AppOptions::default()
    })
    .await
}

/// Reads until the server closes the connection; what it sent. Fails the test if it does not
/// within 5 s (its timeouts are 1 s; the defaults, 30 s).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&received).into_owned()
}

fn connect_to(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    let app = slow_client_app().await;
    let mut stream = TcpStream::connect(connect_to(&app)).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(!answer.contains("200 OK"), "{answer}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = slow_client_app().await;
    let mut stream = TcpStream::connect(connect_to(&app)).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

#[tokio::test]
async fn a_body_sent_too_slowly_is_408() {
    let app = slow_client_app().await;
    let mut stream = TcpStream::connect(connect_to(&app)).await.unwrap();
    let head = format!(
        "POST /batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"prompts\":",
        app.key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout"),
        "{answer}"
    );
    assert!(
        answer.ends_with(r#"{"error":{"code":"request_timeout","message":"the request body did not arrive within 1 s"}}"#),
        "{answer}"
    );
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_disconnected() {
    let app = slow_client_app().await;
    let bundle = app
        .get("/docs/swagger-ui-bundle.js")
        .await
        .bytes()
        .await
        .unwrap()
        .len();
    let mut stream = TcpStream::connect(connect_to(&app)).await.unwrap();
    // 40 pipelined requests for 1.7 MB each: far more than socket buffers hold.
    let requests = "GET /docs/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n".repeat(40);
    stream.write_all(requests.as_bytes()).await.unwrap();
    // The client in question: it reads nothing for a while (longer than the 1 s timeout).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut received = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    assert!(
        received.len() < 40 * bundle,
        "all {} bytes were sent: the server waited for the reader",
        received.len()
    );
}
