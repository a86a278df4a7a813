//! Model files: synthesis is deterministic, `genqctl model download` fetches and checks a GGUF,
//! and `genqctl model pull` fetches one from Hugging Face's URL layout, resuming and checking it
//! (here from local HTTP servers standing in for the hub).

use std::process::Output;

use axum::{Router, routing::get};
use genq_model::synth::{Shape, write_model};
use genq_tests::{binary, tiny_model_path};
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

#[test]
fn synthesis_is_deterministic_per_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.gguf"),
        dir.path().join("b.gguf"),
        dir.path().join("c.gguf"),
    );
    write_model(&a, Shape::Tiny, 42).unwrap();
    write_model(&b, Shape::Tiny, 42).unwrap();
    write_model(&c, Shape::Tiny, 43).unwrap();
    let read = |p: &std::path::Path| sha256(&std::fs::read(p).unwrap());
    assert_eq!(read(&a), read(&b));
    assert_ne!(read(&a), read(&c));
}

/// Serves `/model.gguf` (the tiny model) and `/page.html` on a port-0 listener.
async fn serve_files() -> String {
    let model = std::fs::read(tiny_model_path()).unwrap();
    let app = Router::new()
        .route("/model.gguf", get(move || async move { model }))
        .route("/page.html", get(|| async { "<html>not a model</html>" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

async fn download(args: Vec<String>) -> Output {
    tokio::process::Command::new(binary("genqctl"))
        .arg("model")
        .arg("download")
        .args(args)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn download_fetches_and_verifies_a_gguf() {
    let server = serve_files().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("models/gpt2.gguf");
    let expected = sha256(&std::fs::read(tiny_model_path()).unwrap());

    let ok = download(vec![
        format!("{server}/model.gguf"),
        format!("--out={}", out.display()),
        format!("--sha256={expected}"),
    ])
    .await;

    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(sha256(&std::fs::read(&out).unwrap()), expected);
}

#[tokio::test]
async fn download_refuses_wrong_checksums_and_non_models_leaving_nothing() {
    let server = serve_files().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gpt2.gguf");

    let wrong = download(vec![
        format!("{server}/model.gguf"),
        format!("--out={}", out.display()),
        "--sha256=00".into(),
    ])
    .await;
    let html = download(vec![
        format!("{server}/page.html"),
        format!("--out={}", out.display()),
    ])
    .await;
    let missing = download(vec![
        format!("{server}/nothing.gguf"),
        format!("--out={}", out.display()),
    ])
    .await;

    // Exit code 1 is a refused download; a usage error would be 2. Each message names its reason.
    for (case, output, reason) in [
        ("checksum", wrong, "checksum mismatch"),
        ("not gguf", html, "is not a GGUF file"),
        ("404", missing, "answered HTTP 404 Not Found"),
    ] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{case}: {stderr}");
        assert!(
            stderr.contains(reason),
            "{case} must say {reason:?}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{case}: nothing on stdout");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no partial or bad file is left"
    );
}

/// What the local hub's storage saw of one download request: its `Range` header.
#[derive(Debug, Clone)]
struct Seen {
    range: Option<String>,
}

type Requests = std::sync::Arc<std::sync::Mutex<Vec<Seen>>>;

/// Stands in for Hugging Face in its URL layout: `/{repo}/resolve/{revision}/{file}` answers a
/// redirect to `/storage/{file}` with the file's SHA-256 in `X-Linked-Etag` (as the hub does for
/// LFS files), and the storage serves byte ranges. `linked_etag` is what the hub claims.
/// `resume_early`: the storage resumes that many bytes before where it is asked to (and says so
/// in `Content-Range`), as a server with a stale cache might.
async fn serve_hub(linked_etag: String, resume_early: usize) -> (String, Requests) {
    use axum::{
        extract::State,
        http::{HeaderMap, StatusCode, header},
        response::{IntoResponse, Response},
    };
    let model = std::sync::Arc::new(std::fs::read(tiny_model_path()).unwrap());
    let seen: Requests = Default::default();
    let resolve = move |headers: HeaderMap| {
        let etag = linked_etag.clone();
        async move {
            if headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                != Some("Bearer hf_test_token")
            {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            (
                StatusCode::FOUND,
                [
                    (header::LOCATION, "/storage/gpt2.Q8_0.gguf".to_owned()),
                    (
                        header::HeaderName::from_static("x-linked-etag"),
                        format!("\"{etag}\""),
                    ),
                ],
            )
                .into_response()
        }
    };
    let storage = move |State((model, seen)): State<(std::sync::Arc<Vec<u8>>, Requests)>,
                        headers: HeaderMap| async move {
        let range = headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        seen.lock().unwrap().push(Seen {
            range: range.clone(),
        });
        let start: usize = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .map_or(0, |n: &str| n.parse::<usize>().unwrap())
            .saturating_sub(resume_early);
        let response: Response = if start == 0 {
            (StatusCode::OK, model[..].to_vec()).into_response()
        } else {
            let content_range = format!("bytes {start}-{}/{}", model.len() - 1, model.len());
            (
                StatusCode::PARTIAL_CONTENT,
                [(header::CONTENT_RANGE, content_range)],
                model[start..].to_vec(),
            )
                .into_response()
        };
        response
    };
    let app = Router::new()
        .route("/{owner}/{repo}/resolve/{revision}/{file}", get(resolve))
        .route("/storage/{file}", get(storage))
        .with_state((model, seen.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, seen)
}

async fn pull(hub: &str, out: &std::path::Path) -> Output {
    tokio::process::Command::new(binary("genqctl"))
        .args(["model", "pull", "--repo=openai-community/gpt2-gguf"])
        .arg(format!("--out={}", out.display()))
        .env("HF_ENDPOINT", hub)
        .env("HF_TOKEN", "hf_test_token")
        .env_remove("GENQ_MODEL_REPO")
        .env_remove("GENQ_MODEL_FILE")
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn pull_resumes_a_partial_file_and_checks_it_against_the_hubs_checksum() {
    let model = std::fs::read(tiny_model_path()).unwrap();
    let (hub, seen) = serve_hub(sha256(&model), 0).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("models/model.gguf");
    // An earlier try stopped a third of the way.
    let cut = model.len() / 3;
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(out.with_extension("gguf.partial"), &model[..cut]).unwrap();

    let pulled = pull(&hub, &out).await;

    let stderr = String::from_utf8_lossy(&pulled.stderr);
    assert_eq!(pulled.status.code(), Some(0), "{stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), model);
    assert!(!out.with_extension("gguf.partial").exists());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].range.as_deref(),
        Some(format!("bytes={cut}-").as_str())
    );
    // The hub answered at all: it refuses a request without the token (HF_TOKEN).
    assert!(
        stderr.contains(&format!("resuming {}", out.display())),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&pulled.stdout);
    assert!(
        stdout.starts_with("pulled openai-community/gpt2-gguf/gpt2.Q8_0.gguf@main to "),
        "{stdout}"
    );
    assert!(stdout.contains(&sha256(&model)), "{stdout}");
}

#[tokio::test]
async fn pull_refuses_a_file_whose_checksum_differs_from_the_hubs_leaving_nothing() {
    let (hub, _) = serve_hub("ab".repeat(32), 0).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.gguf");

    let pulled = pull(&hub, &out).await;
    let unauthorized = tokio::process::Command::new(binary("genqctl"))
        .args(["model", "pull", "--repo=openai-community/gpt2-gguf"])
        .arg(format!("--out={}", out.display()))
        .env("HF_ENDPOINT", &hub)
        .env_remove("HF_TOKEN")
        .output()
        .await
        .unwrap();

    let stderr = String::from_utf8_lossy(&pulled.stderr);
    assert_eq!(pulled.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("expected SHA-256 {}", "ab".repeat(32))),
        "{stderr}"
    );
    assert_eq!(unauthorized.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unauthorized.stderr).contains("needs HF_TOKEN"),
        "{}",
        String::from_utf8_lossy(&unauthorized.stderr)
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no partial or bad file is left"
    );
}

#[tokio::test]
async fn pull_refuses_a_resume_from_the_wrong_offset_and_drops_the_partial_file() {
    let model = std::fs::read(tiny_model_path()).unwrap();
    let (hub, _) = serve_hub(sha256(&model), 7).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.gguf");
    let cut = model.len() / 2;
    std::fs::write(out.with_extension("gguf.partial"), &model[..cut]).unwrap();

    let pulled = pull(&hub, &out).await;
    let again = pull(&hub, &out).await;

    let stderr = String::from_utf8_lossy(&pulled.stderr);
    assert_eq!(pulled.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "asked to resume at byte {cut}, the server sent bytes from {}",
            cut - 7
        )),
        "{stderr}"
    );
    // Nothing was spliced in: the next run starts over and gets the whole file.
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(std::fs::read(&out).unwrap(), model);
}
