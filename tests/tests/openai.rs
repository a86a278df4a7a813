//! The `/v1` routes driven by the official `openai` Python SDK (tests/openai/sdk.py), checked
//! against what PostgreSQL recorded.

use std::path::PathBuf;

use genq_shared::db::keys::NewKey;
use genq_tests::{TestApp, assert_exit, stderr, stdout};
use serde_json::{Value, json};
use uuid::Uuid;

/// The pinned SDK's interpreter: `GENQ_OPENAI_PYTHON`, else the venv `scripts/openai-sdk-setup.sh`
/// makes.
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("GENQ_OPENAI_PYTHON") {
        return path.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.genq/openai-venv/bin/python");
    assert!(
        venv.exists(),
        "the openai SDK is not installed: run scripts/openai-sdk-setup.sh (scripts/test.sh does)"
    );
    venv
}

/// Runs a scenario of sdk.py against the app with `key`; its JSON output.
pub(crate) async fn sdk(app: &TestApp, key: &str, scenario: &str, args: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openai/sdk.py");
    let output = tokio::process::Command::new(python())
        .arg(script)
        .args([scenario, &app.address, key])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("running sdk.py");
    assert_exit(&output, 0);
    serde_json::from_str(stdout(&output).trim()).unwrap_or_else(|e| {
        panic!(
            "sdk.py printed no JSON ({e}): {}\n{}",
            stdout(&output),
            stderr(&output)
        )
    })
}

async fn model_name(app: &TestApp) -> String {
    let models: Value = app.get("/v1/models").await.json().await.unwrap();
    models["data"][0]["id"]
        .as_str()
        .expect("a served model")
        .to_owned()
}

/// The job an answer id (`cmpl-<uuid>`, `chatcmpl-<uuid>`, a batch line's `request_id`) names.
fn job_of(id: &str) -> Uuid {
    let hex = id.rsplit(['-', '_']).next().unwrap();
    Uuid::parse_str(hex).unwrap_or_else(|_| id.parse().expect("a job id"))
}

/// (prompt, generated_text, completion_tokens, prompt_tokens) of a job's first result.
async fn stored(app: &TestApp, job: Uuid) -> (String, String, i32, Option<i32>) {
    sqlx::query_as(
        "select prompt, generated_text, completion_tokens, prompt_tokens from generations \
         where job_id = $1 and prompt_index = 0",
    )
    .bind(job)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_sdk_completes_and_streams_the_same_text_for_the_same_seed() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker(4).await;
    let model = model_name(&app).await;

    let seen = sdk(&app, &app.key, "completions", &[&model]).await;

    assert_eq!(seen["object"], "text_completion");
    let (prompt, text, completion_tokens, prompt_tokens) =
        stored(&app, job_of(seen["id"].as_str().unwrap())).await;
    assert_eq!(prompt, "Once upon a time");
    assert_eq!(seen["text"], text.as_str());
    assert_eq!(
        seen["streamed"],
        text.as_str(),
        "the streamed chunks join to the stored text"
    );
    assert!(seen["chunks"].as_u64().unwrap() >= 2, "{seen}");
    let usage = json!({
        "prompt_tokens": prompt_tokens.expect("the worker stores prompt tokens"),
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens.unwrap() + completion_tokens,
        "completion_tokens_details": null,
        "prompt_tokens_details": null,
    });
    assert_eq!(seen["usage"], usage);
    assert_eq!(seen["stream_usage"], json!([usage]));
    let many = seen["many"].as_array().unwrap();
    let indexes: Vec<u64> = many.iter().map(|c| c["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [0, 1, 2, 3]);
    for (i, choice) in many.iter().enumerate() {
        let prompt = if i < 2 { "The sea" } else { "The sky" };
        assert!(
            choice["text"].as_str().unwrap().starts_with(prompt),
            "echo: {choice}"
        );
    }
}

#[tokio::test]
async fn the_sdk_chats_through_the_plain_template_and_streams_the_same_reply() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker(2).await;
    let model = model_name(&app).await;

    let seen = sdk(&app, &app.key, "chat", &[&model]).await;

    assert_eq!(seen["object"], "chat.completion");
    assert_eq!(seen["role"], "assistant");
    let job: Uuid = sqlx::query_scalar("select id from jobs order by created_at limit 1")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let (prompt, text, ..) = stored(&app, job).await;
    assert_eq!(prompt, "System: Be brief.\nUser: Hello\nAssistant:");
    assert_eq!(seen["content"], text.as_str());
    assert_eq!(seen["streamed"], text.as_str());
}

#[tokio::test]
async fn the_sdk_lists_the_model_genq_serves() {
    let app = TestApp::spawn().await;

    let seen = sdk(&app, &app.key, "models", &[]).await;

    assert_eq!(seen, json!({ "ids": ["gpt2-tiny-synthetic"] }));
}

#[tokio::test]
async fn a_batch_through_the_sdk_answers_every_line_once_with_the_stored_text() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker(4).await;
    let model = model_name(&app).await;

    let seen = sdk(&app, &app.key, "batch", &[&model, "20"]).await;

    assert_eq!(seen["file"]["purpose"], "batch");
    assert_eq!(seen["file"]["status"], "processed");
    assert_eq!(seen["created_status"], "validating");
    assert_eq!(seen["status"], "completed");
    assert_eq!(
        seen["counts"],
        json!({ "total": 20, "completed": 20, "failed": 0 })
    );
    assert_eq!(seen["metadata"], json!({ "run": "sdk" }));
    assert_eq!(seen["error_file_id"], Value::Null);
    assert_eq!(seen["listed"][0], seen["id"]);
    let times = &seen["timestamps"];
    for (earlier, later) in [
        ("created_at", "in_progress_at"),
        ("in_progress_at", "finalizing_at"),
        ("finalizing_at", "completed_at"),
    ] {
        assert!(
            times[earlier].as_i64().unwrap() <= times[later].as_i64().unwrap(),
            "{times}"
        );
    }
    let output = seen["output"].as_array().unwrap();
    let mut custom_ids: Vec<&str> = output
        .iter()
        .map(|o| o["custom_id"].as_str().unwrap())
        .collect();
    custom_ids.sort_unstable();
    let mut expected: Vec<String> = (0..20).map(|i| format!("req-{i}")).collect();
    expected.sort_unstable();
    assert_eq!(custom_ids, expected, "every line answered once");
    for line in output {
        assert_eq!(line["status_code"], 200);
        let (prompt, text, completion_tokens, _) =
            stored(&app, job_of(line["request_id"].as_str().unwrap())).await;
        let n: usize = line["custom_id"].as_str().unwrap()[4..].parse().unwrap();
        assert_eq!(prompt, format!("Story {n}:"));
        assert_eq!(line["text"], text.as_str());
        assert_eq!(line["usage"]["completion_tokens"], completion_tokens);
    }
    assert_eq!(app.job_count().await, 20);
}

#[tokio::test]
async fn a_batch_with_bad_lines_fails_naming_each_line_and_runs_nothing() {
    let app = TestApp::spawn().await;
    let model = model_name(&app).await;

    let seen = sdk(&app, &app.key, "bad_batch", &[&model]).await;

    assert_eq!(seen["status"], "failed");
    assert!(seen["failed_at"].is_i64());
    assert_eq!(
        seen["errors"],
        json!([
            { "code": "duplicate_custom_id", "line": 2, "param": "custom_id" },
            { "code": "mismatched_url", "line": 3, "param": "url" },
            { "code": "model_not_found", "line": 4, "param": "body.model" },
            { "code": "invalid_method", "line": 5, "param": "method" },
        ])
    );
    assert_eq!(seen["output_file_id"], Value::Null);
    assert_eq!(
        app.job_count().await,
        0,
        "a batch that fails validation records no job"
    );
}

#[tokio::test]
async fn cancelling_a_batch_cancels_what_has_not_run_and_keeps_what_has() {
    let app = TestApp::spawn().await;
    let _worker = app.start_worker(1).await;
    let model = model_name(&app).await;

    let seen = sdk(&app, &app.key, "cancel", &[&model, "12", "1"]).await;

    assert_eq!(seen["cancelling_status"], "cancelling");
    assert_eq!(seen["status"], "cancelled");
    let completed = seen["counts"]["completed"].as_i64().unwrap();
    assert!((1..12).contains(&completed), "{seen}");
    assert_eq!(seen["counts"]["total"], 12);
    assert_eq!(seen["counts"]["failed"].as_i64().unwrap(), 12 - completed);
    assert_eq!(
        seen["output"].as_i64().unwrap(),
        completed,
        "finished requests keep their answers"
    );
    let errors = seen["errors"].as_array().unwrap();
    assert_eq!(errors.len() as i64, 12 - completed);
    assert!(
        errors.iter().all(|code| code == "batch_cancelled"),
        "{errors:?}"
    );
    let (finished, cancelled): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where status = 'completed'), count(*) filter (where status = 'cancelled') from jobs",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((finished, cancelled), (completed, 12 - completed));
}

#[tokio::test]
async fn the_sdk_raises_the_right_exception_for_each_error() {
    let app = TestApp::spawn().await;
    let model = model_name(&app).await;
    let other = app.tenant_key("other").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("other.jsonl");
    std::fs::write(&file, "{\"custom_id\": \"a\"}\n").unwrap();
    let others = sdk(&app, &other, "upload", &[file.to_str().unwrap()]).await;
    let others_batch = sdk(&app, &other, "create", &[&model, "1"]).await;
    let limited = app
        .create_key(NewKey {
            name: "limited".into(),
            rate_per_min: Some(1),
            ..NewKey::default()
        })
        .await;

    let seen = sdk(
        &app,
        &app.key,
        "errors",
        &[
            &model,
            others["id"].as_str().unwrap(),
            others_batch["id"].as_str().unwrap(),
            &limited,
        ],
    )
    .await;

    let class = |case: &str| {
        (
            seen[case]["class"].as_str().unwrap_or("none").to_owned(),
            seen[case]["status"].clone(),
        )
    };
    for (case, expected, status) in [
        ("bad_key", "AuthenticationError", 401),
        ("unknown_model", "NotFoundError", 404),
        ("logprobs", "BadRequestError", 400),
        ("bad_temperature", "BadRequestError", 400),
        ("unknown_file", "NotFoundError", 404),
        ("other_tenants_file", "NotFoundError", 404),
        ("other_tenants_file_content", "NotFoundError", 404),
        ("unknown_batch", "NotFoundError", 404),
        ("other_tenants_batch", "NotFoundError", 404),
        ("other_tenants_batch_cancel", "NotFoundError", 404),
        ("deleted_file_batch", "NotFoundError", 404),
        ("batch_from_unknown_file", "NotFoundError", 404),
        ("not_jsonl", "BadRequestError", 400),
        ("assistants_file_batch", "BadRequestError", 400),
        ("rate_limited", "RateLimitError", 429),
    ] {
        assert_eq!(
            class(case),
            (expected.to_owned(), json!(status)),
            "{case}: {}",
            seen[case]
        );
    }
    assert_eq!(seen["unknown_model"]["code"], "model_not_found");
    assert_eq!(seen["unknown_model"]["param"], "model");
    assert_eq!(seen["logprobs"]["param"], "logprobs");
    assert_eq!(seen["bad_temperature"]["param"], "temperature");
    assert_eq!(seen["assistants_file_batch"]["param"], "input_file_id");
}

#[tokio::test]
async fn a_batch_file_of_more_lines_than_allowed_is_refused_naming_the_limit() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.jsonl");
    std::fs::write(&file, "{}\n".repeat(50_001)).unwrap();

    let seen = sdk(&app, &app.key, "upload", &[file.to_str().unwrap()]).await;

    assert_eq!(seen["class"], "BadRequestError");
    assert_eq!(seen["status"], 400);
    assert!(
        seen["message"]
            .as_str()
            .unwrap()
            .contains("more than 50000 lines"),
        "{seen}"
    );
    let files: i64 = sqlx::query_scalar("select count(*) from files")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(files, 0, "a refused upload leaves nothing");
}

/// A batch of `lines` completion requests, created with the SDK; its id.
pub async fn create_batch(app: &TestApp, lines: usize) -> String {
    let model = model_name(app).await;
    let created = sdk(app, &app.key, "create", &[&model, &lines.to_string()]).await;
    created["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn genqctl_shows_lists_and_cancels_a_batch() {
    let app = TestApp::spawn().await;
    let id = create_batch(&app, 3).await;
    let id = id.as_str();

    let shown = app.genqctl(&["batches", "show", id]).await;
    let cancelled = app.genqctl(&["batches", "cancel", id]).await;
    let status = || async {
        sqlx::query_scalar::<_, String>("select status from openai_batches where id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    genq_tests::until("the API's runner ends the cancelled batch", || async {
        status().await == "cancelled"
    })
    .await;
    let listed = app.genqctl(&["batches", "list", "--json"]).await;
    let again = app.genqctl(&["batches", "cancel", id]).await;
    let unknown = app.genqctl(&["batches", "show", "batch_none"]).await;

    assert_exit(&shown, 0);
    let shown: Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(shown["id"], id);
    assert_eq!(shown["tenant"], "tests");
    assert_eq!(shown["endpoint"], "/v1/completions");
    assert_exit(&cancelled, 0);
    assert_eq!(stdout(&cancelled), format!("batch {id} is cancelling\n"));
    assert_exit(&listed, 0);
    let listed: Value = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["status"], "cancelled");
    assert_eq!(listed[0]["request_counts"]["completed"], 0);
    assert_exit(&again, 1);
    assert_eq!(stderr(&again), format!("batch {id} is already cancelled\n"));
    assert_exit(&unknown, 1);
    assert_eq!(stderr(&unknown), "no batch batch_none\n");
}

#[tokio::test]
async fn a_batch_past_its_window_expires_and_says_so_for_every_request_left() {
    let app = TestApp::spawn().await;
    let id = create_batch(&app, 3).await;
    let status = || async {
        sqlx::query_scalar::<_, String>("select status from openai_batches where id = $1")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    genq_tests::until("the batch runs", || async {
        status().await == "in_progress"
    })
    .await;

    // No worker runs: its window ending is all that can happen to it.
    sqlx::query("update openai_batches set expires_at = now() where id = $1")
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();
    genq_tests::until("the batch expires", || async {
        status().await == "expired"
    })
    .await;
    let batch: Value = app
        .get(&format!("/v1/batches/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let errors = app
        .get(&format!(
            "/v1/files/{}/content",
            batch["error_file_id"].as_str().unwrap()
        ))
        .await
        .text()
        .await
        .unwrap();

    assert_eq!(batch["status"], "expired");
    assert!(batch["expired_at"].is_i64(), "{batch}");
    assert_eq!(batch["output_file_id"], Value::Null);
    assert_eq!(
        batch["request_counts"],
        json!({ "total": 3, "completed": 0, "failed": 3 })
    );
    let lines: Vec<Value> = errors
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        assert_eq!(line["response"], Value::Null);
        assert_eq!(line["error"]["code"], "batch_expired");
    }
    let unfinished: i64 =
        sqlx::query_scalar("select count(*) from jobs where status in ('queued', 'running')")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(unfinished, 0, "nothing of an expired batch is left to run");
}
