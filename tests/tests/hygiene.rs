//! What genq must never let out: keys, passwords, prompts and generated text stay out of logs and
//! error bodies, even at the most verbose log level.

use genq_tests::{AppOptions, PATIENCE, TestApp, binary, client_with_key, free_port, until};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The `genq-worker` binary at `RUST_LOG=trace`, its stderr in a file of its own.
fn spawn_worker(app: &TestApp) -> (tokio::process::Child, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = tokio::process::Command::new(binary("genq-worker"))
        .args(&app.worker_args(2)[1..])
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("starting genq-worker");
    (child, log)
}

/// SIGTERM, then what the worker logged.
async fn stop_worker(mut child: tokio::process::Child, log: tempfile::NamedTempFile) -> String {
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let stopped = tokio::time::timeout(PATIENCE, child.wait()).await;
    assert!(matches!(stopped, Ok(Ok(s)) if s.success()), "{stopped:?}");
    std::fs::read_to_string(log.path()).unwrap()
}

#[tokio::test]
async fn logs_and_errors_never_carry_keys_passwords_or_prompts() {
    let app = TestApp::spawn().await;
    let (worker, worker_log) = spawn_worker(&app);
    // PostgreSQL trusts local connections here, so a password in the URL is accepted and unused.
    let password = "pw-must-not-leak-5521";
    let with_password = app.database_url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{password}@"),
        1,
    );
    assert_ne!(with_password, app.database_url);
    let api = app
        .spawn_api_process_with(&[("DATABASE_URL", &with_password), ("RUST_LOG", "trace")])
        .await;
    let prompt = "zebra orchid lantern 7731";
    let wrong_key = format!("genq_{}", "ab".repeat(32));

    let response = app
        .client
        .post(format!("{}/batch", api.address))
        .json(&json!({ "prompts": [prompt], "max_tokens": 8, "seed": 3 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id: uuid::Uuid = response.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let view = app.wait_final(id).await;
    let generated = view.results[0].generated_text.clone();
    assert!(generated.len() > 8, "{generated:?}");
    let response = app
        .client
        .get(format!("{}/batch_result/{id}", api.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let refused = client_with_key(Some(&wrong_key))
        .get(format!("{}/history", api.address))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refusal = refused.text().await.unwrap();
    assert!(!refusal.contains(&wrong_key[5..]), "{refusal}");

    let api_log = api.stop().await;
    let worker_log = stop_worker(worker, worker_log).await;
    // The logs are there and verbose: they did record the request and the job.
    assert!(api_log.contains("/batch"), "{api_log}");
    assert!(worker_log.contains(&id.to_string()), "{worker_log}");
    for (what, secret) in [
        ("a key", &app.key[5..]),
        ("a wrong key", &wrong_key[5..]),
        ("the database password", password),
        ("a prompt", prompt),
        ("generated text", generated.trim()),
    ] {
        assert!(!api_log.contains(secret), "the API's log carries {what}");
        assert!(
            !worker_log.contains(secret),
            "the worker's log carries {what}"
        );
    }
}

#[tokio::test]
async fn turning_auth_off_is_said_in_the_log_at_start() {
    let app = TestApp::spawn().await;
    let api = app.spawn_api_process_with(&[("GENQ_AUTH", "off")]).await;
    let response = reqwest::Client::new()
        .get(format!("{}/history", api.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let log = api.stop().await;
    assert!(
        log.contains("GENQ_AUTH=off: no API key is asked for"),
        "{log}"
    );
}

#[tokio::test]
async fn callbacks_are_logged_as_scheme_and_host_and_idempotency_keys_as_hashes() {
    // Only the API process below delivers webhooks.
    let app = TestApp::spawn_with(AppOptions {
        extra_args: vec!["--webhook-concurrency=0".into()],
        ..AppOptions::default()
    })
    .await;
    let _worker = app.start_worker(2).await;
    let api = app
        .spawn_api_process_with(&[
            (
                "GENQ_WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
            ("GENQ_WEBHOOK_ALLOW_PRIVATE", "true"),
            ("RUST_LOG", "trace"),
        ])
        .await;
    // Nothing listens there: the call fails to connect, and reqwest's error names the URL.
    let port = free_port();
    let (path, token) = ("hooks-path-7345", "token-must-not-leak-8812");
    let callback = format!("http://127.0.0.1:{port}/{path}?token={token}");
    let idempotency_key = "idem-must-not-leak-3319";
    let client = client_with_key(Some(&app.key));
    let submit = |prompt: &str| {
        client
            .post(format!("{}/batch", api.address))
            .header("idempotency-key", idempotency_key)
            .json(&json!({ "prompts": [prompt], "max_tokens": 2, "callback_url": callback }))
            .send()
    };

    let first = submit("once").await.unwrap();
    assert_eq!(first.status(), 202);
    let id: uuid::Uuid = first.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let repeat = submit("once").await.unwrap();
    assert_eq!(repeat.status(), 202);
    let reused = submit("another").await.unwrap();
    assert_eq!(reused.status(), 409);
    until("the first webhook attempt is recorded", || async {
        app.view(id)
            .await
            .webhook
            .is_some_and(|w| !w.attempts.is_empty())
    })
    .await;
    let log = api.stop().await;

    let view = app.view(id).await;
    let attempt = &view.webhook.unwrap().attempts[0];
    assert!(
        attempt
            .error
            .as_deref()
            .unwrap()
            .contains("Connection refused"),
        "{attempt:?}"
    );
    assert!(
        log.contains(&format!("destination=http://127.0.0.1:{port}")),
        "{log}"
    );
    let hash: String = Sha256::digest(idempotency_key)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        log.contains(&format!("idempotency_key=sha256:{hash}")),
        "{log}"
    );
    for (what, secret) in [
        ("the callback's path", path),
        ("the callback's query", token),
        ("the idempotency key", idempotency_key),
    ] {
        assert!(!log.contains(secret), "the API's log carries {what}");
    }
    app.stop().await;
}
