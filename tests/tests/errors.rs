//! Every error class of the HTTP contract: a clear JSON error, never a 500.

use genq_tests::{AppOptions, PATIENCE, TestApp};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert!(
        body["error"]["code"].is_string() && body["error"]["message"].is_string(),
        "{body}"
    );
    (status, body["error"].clone())
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestApp::spawn().await;
    for body in [r#"{"prompts": ["#, "not json", ""] {
        let (status, error) = error_of(app.post_raw("/batch", body).await).await;
        assert_eq!(status, 400, "{body:?}");
        assert_eq!(error["code"], "malformed_json");
    }
    // Text after the body is not ignored, on either submission route.
    for (path, body, column) in [
        ("/batch", r#"{"prompts": ["x"]} xx"#, 20),
        ("/batch", r#"{"prompts": ["x"]}{}"#, 19),
        ("/generate", r#"{"prompts": ["x"]}]"#, 19),
        ("/batches", r#"{"jobs": [{"prompts": ["x"]}]} 1"#, 32),
    ] {
        let (status, error) = error_of(app.post_raw(path, body).await).await;
        assert_eq!(
            (status, error["code"].as_str(), error["message"].as_str()),
            (
                400,
                Some("malformed_json"),
                Some(
                    format!(
                        "the body is not valid JSON: trailing characters at line 1 column {column}"
                    )
                    .as_str()
                )
            ),
            "{path} {body:?}"
        );
    }
    assert_eq!(app.job_count().await, 0, "no job was recorded");
    app.stop().await;
}

#[tokio::test]
async fn forbidden_words_are_400_inappropriate_content_as_whole_words_only() {
    let app = TestApp::spawn().await;
    let disguised = [
        "I h\u{200b}ate this",              // zero-width space
        "I ｈａｔｅ this",                  // fullwidth letters
        "I h\u{0430}te this",               // Cyrillic a
        "so much vio\u{0406}ence",          // Cyrillic I for l
        "h\u{336}a\u{336}t\u{336}e\u{336}", // strikethrough overlay
        "ha\u{301}te",                      // combining acute
        "\u{29C}\u{1D00}\u{1D1B}\u{1D07}",  // small capitals
        "\u{127}ate",                       // h with stroke
        "vio\u{140}ence",                   // l with middle dot
    ];
    for prompt in ["I hate rainy days", "VIOLENCE!", "so much hate."]
        .into_iter()
        .chain(disguised)
    {
        let (status, error) = error_of(
            app.post("/batch", &json!({ "prompts": ["fine", prompt] }))
                .await,
        )
        .await;
        assert_eq!(status, 400, "{prompt}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("inappropriate content"),
            "{error}"
        );
        assert!(
            error["message"].as_str().unwrap().contains("prompts[1]"),
            "{error}"
        );
    }
    for fine in [
        "a chateau in whatever weather",
        "a ｃｈａｔｅａｕ, whatever",
    ] {
        let response = app.post("/batch", &json!({ "prompts": [fine] })).await;
        assert_eq!(response.status(), 202, "{fine}");
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_field_values_are_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let long_prompt = "word ".repeat(300);
    let cases = [
        (json!({}), "prompts"),
        (json!({ "prompts": [] }), "prompts"),
        (json!({ "prompts": "one" }), "prompts"),
        (json!({ "prompts": vec!["x"; 257] }), "prompts"),
        (json!({ "prompts": ["ok", "  "] }), "prompts[1]"),
        (json!({ "prompts": [1] }), "prompts[0]"),
        (json!({ "prompts": ["x"], "max_tokens": 0 }), "max_tokens"),
        (json!({ "prompts": ["x"], "max_tokens": 513 }), "max_tokens"),
        (
            json!({ "prompts": ["x"], "max_tokens": "ten" }),
            "max_tokens",
        ),
        (json!({ "prompts": ["x"], "max_tokens": 256 }), "max_tokens"),
        (json!({ "prompts": [long_prompt] }), "prompts[0]"),
        (
            json!({ "prompts": ["x"], "temperature": 5.0 }),
            "temperature",
        ),
        (json!({ "prompts": ["x"], "top_p": 0 }), "top_p"),
        (json!({ "prompts": ["x"], "top_k": -1 }), "top_k"),
        (json!({ "prompts": ["x"], "seed": -1 }), "seed"),
        (json!({ "prompts": ["x"], "stop": [""] }), "stop"),
        (json!({ "prompts": ["x"], "max_token": 5 }), "max_token"),
        (
            json!({ "prompts": ["ok", "y".repeat(16_385)] }),
            "prompts[1]",
        ),
    ];
    for (body, field) in cases {
        let (status, error) = error_of(app.post("/batch", &body).await).await;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["field"], field, "{body}: {error}");
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_tasks_are_404_and_malformed_ids_400() {
    let app = TestApp::spawn().await;
    let (status, error) = error_of(
        app.get(&format!("/batch_result/{}", uuid::Uuid::now_v7()))
            .await,
    )
    .await;
    assert_eq!((status, error["code"].as_str()), (404, Some("not_found")));
    let (status, error) = error_of(app.get("/batch_result/not-a-uuid").await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("malformed_id"))
    );
    let (status, _) = error_of(app.get("/history?limit=0").await).await;
    assert_eq!(status, 422);
    let (status, _) = error_of(app.get("/history?before=yesterday").await).await;
    assert_eq!(status, 422);
    let (status, _) = error_of(app.get("/no/such/route").await).await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn a_method_a_route_does_not_serve_is_405_in_json() {
    let app = TestApp::spawn().await;
    let (status, error) = error_of(app.get("/batch").await).await;
    assert_eq!(
        (status, error),
        (
            405,
            json!({ "code": "method_not_allowed", "message": "GET is not served on /batch" })
        )
    );
    let response = app
        .client
        .delete(format!("{}/health", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    app.stop().await;
}

#[tokio::test]
async fn odd_bodies_get_the_exact_client_error_or_are_accepted() {
    let app = TestApp::spawn().await;
    // (body, status, error code, field) — 202 rows have no error.
    let cases = [
        (json!(null), 422, "invalid_field", "body"),
        (json!([]), 422, "invalid_field", "body"),
        (json!("prompts"), 422, "invalid_field", "body"),
        (json!({ "prompts": null }), 422, "invalid_field", "prompts"),
        (
            json!({ "prompts": [null] }),
            422,
            "invalid_field",
            "prompts[0]",
        ),
        (
            json!({ "prompts": ["x"], "stop": 5 }),
            422,
            "invalid_field",
            "stop",
        ),
        (
            json!({ "prompts": ["x"], "stop": vec!["s"; 10] }),
            422,
            "invalid_field",
            "stop",
        ),
        (
            json!({ "prompts": ["x"], "max_tokens": 1e30 }),
            422,
            "invalid_field",
            "max_tokens",
        ),
        (
            json!({ "prompts": ["x"], "top_p": f64::MAX }),
            422,
            "invalid_field",
            "top_p",
        ),
        // PostgreSQL text cannot hold NUL.
        (
            json!({ "prompts": ["a\u{0000}b"], "max_tokens": 1 }),
            422,
            "invalid_field",
            "prompts[0]",
        ),
        // An explicit null is the default; a noncharacter is text like any other.
        (
            json!({ "prompts": ["x"], "temperature": null }),
            202,
            "",
            "",
        ),
        (
            json!({ "prompts": ["\u{FFFF}"], "max_tokens": 1 }),
            202,
            "",
            "",
        ),
    ];
    for (body, status, code, field) in cases {
        let response = app.post("/batch", &body).await;
        assert_eq!(response.status(), status, "{body}");
        let answer: Value = response.json().await.unwrap();
        if status == 202 {
            assert_eq!(answer["status"], "queued", "{body}: {answer}");
        } else {
            assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
            assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = TestApp::spawn().await;
    let prompt = "x".repeat(genq_api::BODY_LIMIT);
    let (status, error) = error_of(app.post("/batch", &json!({ "prompts": [prompt] })).await).await;
    assert_eq!(status, 413);
    assert_eq!(error["code"], "payload_too_large");
    assert_eq!(
        error["message"],
        format!(
            "the request body is larger than {} bytes",
            genq_api::BODY_LIMIT
        )
    );
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
    app.stop().await;
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = TestApp::spawn().await;
    let health: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready = app.get("/ready").await;
    assert_eq!(ready.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn every_answer_says_nosniff_and_forbids_active_content() {
    let app = TestApp::spawn().await;
    let answers = [
        app.get("/health").await,
        app.get(&format!("/batch_result/{}", uuid::Uuid::now_v7()))
            .await,
        app.post_raw("/batch", "not json").await,
        app.post("/batch", &json!({ "prompts": ["fine"] })).await,
    ];
    for answer in answers {
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
        assert_eq!(
            header("content-security-policy").as_deref(),
            Some("default-src 'none'; frame-ancestors 'none'"),
            "{}",
            answer.status()
        );
    }
    app.stop().await;
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, format!("{}/batch", app.address))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_is_off_unless_origins_are_configured() {
    let closed = TestApp::spawn().await;
    let answer = preflight(&closed, "https://app.example").await;
    assert_eq!(answer.headers().get("access-control-allow-origin"), None);
    closed.stop().await;

    let open = TestApp::spawn_with(AppOptions {
        extra_args: vec!["--cors-origins=https://app.example".into()],
        ..AppOptions::default()
    })
    .await;
    let allowed = preflight(&open, "https://app.example").await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .unwrap(),
        "https://app.example"
    );
    let other = preflight(&open, "https://evil.example").await;
    assert_eq!(other.headers().get("access-control-allow-origin"), None);
    open.stop().await;
}

#[tokio::test]
async fn limits_are_named_and_deep_nesting_is_a_client_error() {
    let app = TestApp::spawn_with(AppOptions {
        with_model: false,
        ..AppOptions::default()
    })
    .await;
    let (status, error) = error_of(
        app.post("/batch", &json!({ "prompts": ["z".repeat(16_385)] }))
            .await,
    )
    .await;
    assert_eq!((status, error["field"].as_str()), (422, Some("prompts[0]")));
    assert_eq!(
        error["message"],
        "prompts[0] is 16385 characters; the limit is 16384 (GENQ_MAX_PROMPT_CHARS)"
    );
    // Deep nesting is refused at the first level that has the wrong type (serde_json would stop
    // at 128 levels anyway): a named client error, never a stack overflow or a 500.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let response = app
        .client
        .post(format!("{}/batch", app.address))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(response).await;
    assert_eq!(
        (status, error["code"].as_str(), error["field"].as_str()),
        (422, Some("invalid_field"), Some("[0][0]"))
    );
    // Where a field takes more than one shape (`stop`), the value is read whole first, and
    // serde_json stops at 128 levels: 422 as well, naming the field.
    let deep_stop = format!(
        r#"{{"prompts": ["x"], "stop": {}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let (status, error) = error_of(app.post_raw("/batch", deep_stop).await).await;
    assert_eq!(
        (status, error["code"].as_str(), error["field"].as_str()),
        (422, Some("invalid_field"), Some("stop"))
    );
    assert_eq!(
        error["message"],
        "invalid request body: JSON nested more than 128 levels deep"
    );
    // In bulk intake, with the job it is in.
    let deep_in_bulk = format!(
        r#"{{"jobs": [{{"prompts": ["x"]}}, {{"prompts": ["x"], "stop": {}{}}}]}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let (status, error) = error_of(app.post_raw("/batches", deep_in_bulk).await).await;
    assert_eq!(
        (status, error["field"].as_str(), error["job_index"].as_u64()),
        (422, Some("jobs[1].stop"), Some(1))
    );
    app.stop().await;
}

/// The whole answer to `request`, sent as raw bytes on a connection of its own.
async fn raw_answer(app: &TestApp, request: &str) -> String {
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the API answered and closed")
        .unwrap();
    String::from_utf8(answer).unwrap()
}

#[tokio::test]
async fn a_request_that_parses_gets_json_and_the_security_headers_and_one_that_does_not_a_bare_status()
 {
    let app = TestApp::spawn().await;
    let parsed = [
        "GET /no-such-route HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "POST /batch HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        "DELETE /batch HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ];
    for request in parsed {
        let answer = raw_answer(&app, request).await.to_lowercase();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains("\r\nx-content-type-options: nosniff\r\n"),
            "{answer}"
        );
        assert!(
            head.contains(
                "\r\ncontent-security-policy: default-src 'none'; frame-ancestors 'none'"
            ),
            "{answer}"
        );
        assert!(
            head.contains("\r\ncontent-type: application/json"),
            "{answer}"
        );
        let error: Value = serde_json::from_str(body).unwrap();
        assert!(error["error"]["code"].is_string(), "{answer}");
    }
    // hyper answers what it cannot parse as HTTP/1.1 itself, before genq sees a request: as
    // docs/api.md says, with the bare status and an empty body.
    let unparsed = [
        "NOT AN HTTP REQUEST\r\n\r\n",
        "POST /batch HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
    ];
    for request in unparsed {
        let answer = raw_answer(&app, request).await.to_lowercase();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("http/1.1 400 bad request\r\n"), "{answer}");
        assert!(head.contains("\r\ncontent-length: 0"), "{answer}");
        assert_eq!(body, "", "{request:?}");
    }
    app.stop().await;
}
