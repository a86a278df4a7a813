//! Model files: synthesis is deterministic, and `genqctl model download` fetches and checks a GGUF
//! (here from a local HTTP server standing in for Hugging Face).

use std::process::Output;

use axum::{Router, routing::get};
use genq_engine::synth::{Shape, write_model};
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
