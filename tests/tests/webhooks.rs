//! Webhooks: a job's `callback_url` is called once the job is final, signed, retried until the
//! receiver takes it (also across an API restart), and every attempt shows in the job.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode};
use genq_shared::{
    types::{JobStatus, JobView, WebhookStatus},
    webhook_signing,
};
use genq_tests::{
    AppOptions, PATIENCE, TestApp, assert_exit, client_with_key, stdout, submit_to, until,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One call the receiver got.
struct Call {
    headers: HeaderMap,
    body: Bytes,
    at: tokio::time::Instant,
}

/// A local HTTP receiver that answers 500 to its first `failures` calls to `url` and 204 after;
/// with `hang_first`, its first call is never answered. Calls to `dead_url`, on the same host and
/// port, are never answered, as by a dead service behind a load balancer, and counted.
struct Receiver {
    url: String,
    dead_url: String,
    calls: mpsc::UnboundedReceiver<Call>,
    /// Calls to `dead_url` waiting now, and the most that ever waited at once.
    dead_open: Arc<AtomicUsize>,
    dead_most_open: Arc<AtomicUsize>,
    _server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct ReceiverState {
    failures_left: Arc<Mutex<u32>>,
    hang_next: Arc<Mutex<bool>>,
    calls: mpsc::UnboundedSender<Call>,
    dead_open: Arc<AtomicUsize>,
    dead_most_open: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(failures: u32) -> Receiver {
        Self::start_with(failures, false).await
    }

    async fn start_with(failures: u32, hang_first: bool) -> Receiver {
        let (sender, calls) = mpsc::unbounded_channel();
        let state = ReceiverState {
            failures_left: Arc::new(Mutex::new(failures)),
            hang_next: Arc::new(Mutex::new(hang_first)),
            calls: sender,
            dead_open: Arc::default(),
            dead_most_open: Arc::default(),
        };
        let (dead_open, dead_most_open) = (state.dead_open.clone(), state.dead_most_open.clone());
        let app = Router::new()
            .route("/hook", axum::routing::post(receive))
            .route("/dead", axum::routing::post(never_answer))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url: format!("http://{address}/hook"),
            dead_url: format!("http://{address}/dead?token=t"),
            calls,
            dead_open,
            dead_most_open,
            _server: server,
        }
    }

    async fn next_call(&mut self) -> Call {
        tokio::time::timeout(PATIENCE, self.calls.recv())
            .await
            .expect("the webhook came")
            .expect("the receiver runs")
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let _ = state.calls.send(Call {
        headers,
        body,
        at: tokio::time::Instant::now(),
    });
    if std::mem::take(&mut *state.hang_next.lock().unwrap()) {
        std::future::pending::<()>().await;
    }
    let mut left = state.failures_left.lock().unwrap();
    if *left > 0 {
        *left -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

async fn never_answer(State(state): State<ReceiverState>) -> StatusCode {
    let now_open = state.dead_open.fetch_add(1, Ordering::SeqCst) + 1;
    state.dead_most_open.fetch_max(now_open, Ordering::SeqCst);
    let _gone = Departure(state.dead_open);
    std::future::pending().await
}

/// Counts a waiting call out when its future is dropped (the caller gave up).
struct Departure(Arc<AtomicUsize>);

impl Drop for Departure {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// This test's in-process API makes no deliveries: only the API processes it starts do, set up
/// with `env`.
async fn app_that_does_not_deliver() -> TestApp {
    TestApp::spawn_with(AppOptions {
        extra_args: vec!["--webhook-concurrency=0".into()],
        ..AppOptions::default()
    })
    .await
}

/// An API process's settings for delivering to the local receiver: the shared secret, private
/// addresses allowed, and `more`.
fn delivering<'a>(more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("GENQ_WEBHOOK_SECRET", SECRET),
        ("GENQ_WEBHOOK_ALLOW_PRIVATE", "true"),
    ];
    env.extend_from_slice(more);
    env
}

/// Submits through the API process at `api`; the job's task id.
async fn submit_via(app: &TestApp, api: &str, body: &Value) -> uuid::Uuid {
    submit_to(&client_with_key(Some(&app.key)), api, body).await
}

/// The job once its webhook delivery shows `status`.
async fn view_once_webhook_is(app: &TestApp, id: uuid::Uuid, status: WebhookStatus) -> JobView {
    until(&format!("the webhook delivery is {status:?}"), || async {
        app.view(id)
            .await
            .webhook
            .is_some_and(|w| w.status == status)
    })
    .await;
    app.view(id).await
}

fn header<'a>(call: &'a Call, name: &str) -> &'a str {
    call.headers[name].to_str().unwrap()
}

/// The call's `webhook-signature` is the one its id, timestamp and body give under `SECRET`.
fn assert_signed(call: &Call) {
    let timestamp: i64 = header(call, "webhook-timestamp").parse().unwrap();
    let expected =
        webhook_signing::signature(SECRET, header(call, "webhook-id"), timestamp, &call.body);
    assert_eq!(header(call, "webhook-signature"), expected);
}

#[tokio::test]
async fn a_refused_webhook_is_retried_across_an_api_restart_and_every_attempt_shows() {
    // Only the API processes below deliver, so the restart is the one that matters.
    let app = app_that_does_not_deliver().await;
    let mut receiver = Receiver::start(2).await;
    let env = delivering(&[("GENQ_WEBHOOK_RETRY_MIN_MS", "1000")]);
    let first_api = app.spawn_api_process_with(&env).await;
    let worker = app.start_worker(2).await;

    let body = json!({
        "prompts": ["Dear receiver,"], "max_tokens": 4, "seed": 3, "callback_url": receiver.url,
    });
    let id = submit_via(&app, &first_api.address, &body).await;
    let first = receiver.next_call().await;
    first_api.stop().await;
    let stopped_at = tokio::time::Instant::now();
    let second_api = app.spawn_api_process_with(&env).await;
    let second = receiver.next_call().await;
    let third = receiver.next_call().await;
    let view = view_once_webhook_is(&app, id, WebhookStatus::Delivered).await;

    assert_eq!(view.status, JobStatus::Completed);
    assert!(
        second.at > stopped_at,
        "the second call came from the second API"
    );
    for call in [&first, &second, &third] {
        assert_signed(call);
        assert_eq!(header(call, "webhook-id"), format!("{id}_1"));
        assert_eq!(header(call, "content-type"), "application/json");
        let sent: JobView = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(sent.task_id, id);
        assert_eq!(sent.status, JobStatus::Completed);
        assert_eq!(sent.results, view.results);
    }
    let webhook = view.webhook.expect("the job shows its webhook");
    assert_eq!(webhook.url, receiver.url);
    assert!(webhook.delivered_at.is_some());
    assert_eq!(webhook.next_attempt_at, None);
    let codes: Vec<Option<i32>> = webhook.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(500), Some(204)]);
    assert_eq!(
        webhook.attempts[0].error.as_deref(),
        Some("the receiver answered 500 Internal Server Error: ")
    );
    assert_eq!(webhook.attempts[2].error, None);
    let recorded: i64 =
        sqlx::query_scalar("select count(*) from webhook_attempts where job_id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(recorded, 3);
    // The last API stops gracefully, its calls in flight finished: any call it made after the
    // delivery reached the receiver (which records a call before answering it) by now.
    second_api.stop().await;
    assert!(
        receiver.calls.try_recv().is_err(),
        "a call after the delivery"
    );

    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_webhook_in_flight_when_its_api_is_killed_is_made_again_by_another_after_the_lease() {
    let app = app_that_does_not_deliver().await;
    let mut receiver = Receiver::start_with(0, true).await;
    // A call may take 1 s, shorter than the lease, as the API requires.
    let env = delivering(&[
        ("GENQ_WEBHOOK_LEASE_SECS", "2"),
        ("GENQ_WEBHOOK_TIMEOUT_SECS", "1"),
    ]);
    let first_api = app.spawn_api_process_with(&env).await;
    let worker = app.start_worker(2).await;
    let body = json!({
        "prompts": ["Who will tell them?"], "max_tokens": 4, "seed": 5,
        "callback_url": receiver.url,
    });
    let id = submit_via(&app, &first_api.address, &body).await;

    // The first call hangs at the receiver; its API dies before any answer.
    let first = receiver.next_call().await;
    first_api.kill().await;
    let second_api = app.spawn_api_process_with(&env).await;
    let second = receiver.next_call().await;
    let webhook = view_once_webhook_is(&app, id, WebhookStatus::Delivered)
        .await
        .webhook
        .unwrap();

    assert_signed(&first);
    assert_signed(&second);
    // The same delivery twice: the receiver tells by its id.
    assert_eq!(header(&first, "webhook-id"), format!("{id}_1"));
    assert_eq!(header(&second, "webhook-id"), format!("{id}_1"));
    assert!(
        second.at - first.at >= Duration::from_secs(2),
        "taken again only once the lease ran out: {:?}",
        second.at - first.at
    );
    // The killed API recorded nothing of its attempt; the second one is attempt 2.
    let attempts: Vec<(i32, Option<i32>)> = webhook
        .attempts
        .iter()
        .map(|a| (a.attempt, a.status_code))
        .collect();
    assert_eq!(attempts, [(2, Some(204))]);

    second_api.stop().await;
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_webhook_refused_past_its_retry_window_is_given_up_and_shows_failed() {
    let app = app_that_does_not_deliver().await;
    let mut receiver = Receiver::start(u32::MAX).await;
    let env = delivering(&[
        ("GENQ_WEBHOOK_RETRY_MIN_MS", "100"),
        ("GENQ_WEBHOOK_RETRY_FOR_SECS", "1"),
    ]);
    let api = app.spawn_api_process_with(&env).await;
    let worker = app.start_worker(2).await;
    let body =
        json!({ "prompts": ["Nobody listens"], "max_tokens": 2, "callback_url": receiver.url });
    let id = submit_via(&app, &api.address, &body).await;

    let webhook = view_once_webhook_is(&app, id, WebhookStatus::Failed)
        .await
        .webhook
        .unwrap();
    let mut calls = 0;
    while receiver.calls.try_recv().is_ok() {
        calls += 1;
    }

    assert_eq!(webhook.delivered_at, None);
    assert_eq!(webhook.next_attempt_at, None);
    assert!(!webhook.attempts.is_empty());
    assert_eq!(webhook.attempts.len(), calls, "every call is recorded");
    assert!(webhook.attempts.iter().all(|a| a.status_code == Some(500)));
    let last = webhook.attempts.last().unwrap();
    let first = &webhook.attempts[0];
    // Given up at the attempt whose retry would fall past the 1 s window: each attempt was due
    // within it, and made at most a poll (0.5 s, and the query) later.
    assert!((last.attempted_at - first.attempted_at).num_milliseconds() < 1700);

    api.stop().await;
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn callback_urls_must_be_public_and_need_a_signing_secret() {
    let app = TestApp::spawn().await;
    let submit = |url: &str| {
        let body = json!({ "prompts": ["hello"], "callback_url": url });
        let app = &app;
        async move { app.post("/batch", &body).await }
    };

    let private = submit("http://127.0.0.1:9/hook").await;
    let private_status = private.status();
    let private_body: Value = private.json().await.unwrap();
    let unsigned = submit("https://hooks.example.com/genq").await;
    let unsigned_status = unsigned.status();
    let unsigned_body: Value = unsigned.json().await.unwrap();
    let secret = app.genqctl(&["keys", "webhook-secret", "tests"]).await;
    let signed = submit("https://hooks.example.com/genq").await;
    let signed_status = signed.status();
    let signed_body: Value = signed.json().await.unwrap();

    assert_eq!(private_status, 422);
    assert_eq!(private_body["error"]["field"], "callback_url");
    assert_eq!(
        private_body["error"]["message"],
        "callback_url 127.0.0.1: not a public address the API may call \
         (GENQ_WEBHOOK_ALLOW_PRIVATE allows private ones)"
    );
    assert_eq!(unsigned_status, 422);
    assert_eq!(unsigned_body["error"]["field"], "callback_url");
    assert!(
        unsigned_body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("webhooks are not set up"),
        "{unsigned_body}"
    );
    assert_eq!(secret.status.code(), Some(0));
    assert!(stdout(&secret).trim().starts_with("whsec_"), "{secret:?}");
    assert_eq!(signed_status, 202, "{signed_body}");
    let id = signed_body["task_id"].as_str().unwrap().parse().unwrap();
    let webhook = app
        .view(id)
        .await
        .webhook
        .expect("the job shows its webhook");
    assert_eq!(webhook.url, "https://hooks.example.com/genq");
    assert_eq!(webhook.status, WebhookStatus::Waiting);
    assert!(webhook.attempts.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_tenants_dead_receiver_does_not_delay_another_tenants_webhook() {
    let app = app_that_does_not_deliver().await;
    // A tenant may have 8 calls at once, one destination of it 4: the receiver sees the latter.
    let api = app
        .spawn_api_process_with(&delivering(&[("GENQ_WEBHOOK_TENANT_CONCURRENCY", "8")]))
        .await;
    // One host for both tenants: A's path on it never answers, B's does.
    let mut receiver = Receiver::start(0).await;
    let tenant_a = client_with_key(Some(&app.tenant_key("a").await));
    let tenant_b = client_with_key(Some(&app.tenant_key("b").await));
    // 10,000 of tenant A's jobs, made final at once by a purge: 10,000 deliveries owed, all due
    // before B's, to a path that never answers (each call times out after 10 s).
    let jobs: Vec<Value> = (0..10_000)
        .map(|_| json!({ "prompts": ["a"], "callback_url": receiver.dead_url }))
        .collect();
    let bulk = tenant_a
        .post(format!("{}/batches", api.address))
        .json(&json!({ "jobs": jobs }))
        .send()
        .await
        .unwrap();
    assert_eq!(bulk.status(), 202);
    assert_exit(&app.genqctl(&["queue", "purge", "--yes"]).await, 0);
    until("A's calls hold their share of the slots", || async {
        receiver.dead_open.load(Ordering::SeqCst) == 4
    })
    .await;

    // B's job, made final by its cancel: its webhook is owed from that commit on.
    let id = submit_to(
        &tenant_b,
        &api.address,
        &json!({ "prompts": ["b"], "callback_url": receiver.url }),
    )
    .await;
    let ended = tokio::time::Instant::now();
    let cancel = tenant_b
        .post(format!("{}/batch/{id}/cancel", api.address))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let call = receiver.next_call().await;
    let delay = call.at - ended;
    let owed_to_a: i64 = sqlx::query_scalar(
        "select count(*) from webhook_deliveries where tenant = 'a' and delivered_at is null",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    eprintln!("B's webhook came {delay:?} after its job ended, {owed_to_a} of A's still owed");

    assert!(header(&call, "webhook-id").starts_with(&id.to_string()));
    assert!(owed_to_a > 9_900, "{owed_to_a} of A's deliveries owed");
    assert!(delay < Duration::from_secs(2), "B's webhook took {delay:?}");
    // A's share of the host never had more than its 4 calls at once
    // (GENQ_WEBHOOK_DESTINATION_CONCURRENCY).
    assert_eq!(receiver.dead_most_open.load(Ordering::SeqCst), 4);
    // The API process is killed: a graceful stop would wait out the calls left hanging.
    drop(api);
    app.stop().await;
}
