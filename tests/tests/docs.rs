//! The API's documentation: the OpenAPI document and Swagger UI, both open (no key), served from
//! the binary; and the odd paths and queries a fuzzer sends, answered as genq errors.

use genq_tests::{AppOptions, TestApp, client_with_key};
use serde_json::{Value, json};

const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; \
    form-action 'none'";

/// No model: these tests run no job.
async fn spawn() -> TestApp {
    TestApp::spawn_with(AppOptions {
        with_model: false,
        ..AppOptions::default()
    })
    .await
}

fn header<'r>(response: &'r reqwest::Response, name: &str) -> &'r str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn the_openapi_document_is_open_and_describes_every_route() {
    // Arrange
    let app = spawn().await;

    // Act
    let response = reqwest::Client::new()
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "application/json");
    let doc: Value = response.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    // The router and the document are built together (utoipa-axum), so a route cannot be
    // served undescribed; here, every described operation is served: the router answers it,
    // not its fallbacks for unknown paths (404 "no route") and methods (405).
    let admin = client_with_key(Some(&app.admin_key("docs-admin").await));
    let task_id = uuid::Uuid::new_v4().to_string();
    let mut served = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = format!("{}{}", app.address, path.replace("{task_id}", &task_id));
            let request = match method.as_str() {
                "get" => admin.get(&url),
                "post" => admin.post(&url).json(&json!({})),
                "delete" => admin.delete(&url),
                other => panic!("{other} {path}: a method genq does not serve"),
            };
            let response = request.send().await.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert!(
                status != 405 && !body.contains("no route for"),
                "{method} {path} is described but not served: {status} {body}"
            );
            served += 1;
        }
    }
    assert!(served >= 14, "only {served} operations described");

    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["type"], "apiKey");
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    // Either scheme on every route, but health, readiness and metrics need none.
    assert_eq!(
        doc["security"],
        json!([{ "bearer": [] }, { "api_key": [] }])
    );
    for path in ["/health", "/ready", "/metrics"] {
        assert_eq!(doc["paths"][path]["get"]["security"], json!([{}]), "{path}");
    }
    assert_eq!(doc["paths"]["/batch"]["post"].get("security"), None);
    let batch = &doc["paths"]["/batch"]["post"];
    assert_eq!(batch["parameters"][0]["name"], "Idempotency-Key");
    assert_eq!(batch["parameters"][0]["in"], "header");
    let generate = &doc["paths"]["/generate"]["post"];
    assert_eq!(generate["parameters"][0]["name"], "Idempotency-Key");
    // What the API refuses, the schema says: an empty callback_url is no URL.
    let callback = &doc["components"]["schemas"]["BatchRequest"]["properties"]["callback_url"];
    assert_eq!(
        (&callback["minLength"], &callback["maxLength"]),
        (&json!(1), &json!(2048))
    );
    let statuses: Vec<&str> = batch["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        statuses,
        [
            "202", "400", "401", "408", "409", "413", "422", "429", "500", "503"
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn the_docs_page_is_open_with_its_own_csp() {
    // Arrange
    let app = spawn().await;

    // Act
    let response = reqwest::Client::new()
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type"),
        "text/html; charset=utf-8"
    );
    assert_eq!(header(&response, "content-security-policy"), DOCS_CSP);
    assert_eq!(
        response.text().await.unwrap(),
        include_str!("../../api/assets/swagger-ui/index.html")
    );
    app.stop().await;
}

#[tokio::test]
async fn swagger_ui_is_served_whole_from_the_binary() {
    // Arrange
    let app = spawn().await;
    let client = reqwest::Client::new();
    let assets: [(&str, &[u8], &str); 4] = [
        (
            "swagger-ui-bundle.js",
            include_bytes!("../../api/assets/swagger-ui/swagger-ui-bundle.js"),
            "text/javascript; charset=utf-8",
        ),
        (
            "init.js",
            include_bytes!("../../api/assets/swagger-ui/init.js"),
            "text/javascript; charset=utf-8",
        ),
        (
            "swagger-ui.css",
            include_bytes!("../../api/assets/swagger-ui/swagger-ui.css"),
            "text/css; charset=utf-8",
        ),
        (
            "favicon-32x32.png",
            include_bytes!("../../api/assets/swagger-ui/favicon-32x32.png"),
            "image/png",
        ),
    ];

    for (name, file, content_type) in assets {
        // Act
        let response = client
            .get(format!("{}/docs/{name}", app.address))
            .send()
            .await
            .unwrap();

        // Assert
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(header(&response, "content-type"), content_type, "{name}");
        assert_eq!(
            header(&response, "content-security-policy"),
            DOCS_CSP,
            "{name}"
        );
        let body = response.bytes().await.unwrap();
        assert_eq!(body.len(), file.len(), "{name}");
        assert!(
            body == file,
            "{name}: the body differs from the vendored file"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_task_id_or_query_that_cannot_be_decoded_is_a_genq_error() {
    // Arrange
    let app = spawn().await;

    // Act: %FF decodes to a byte that is not UTF-8.
    let path = app
        .client
        .get(format!("{}/batch_result/%FF", app.address))
        .send()
        .await
        .unwrap();
    let query = app
        .client
        .get(format!("{}/history?limit=%FF", app.address))
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(path.status(), 400);
    let body: Value = path.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_id", "{body}");
    assert_eq!(query.status(), 422);
    let body: Value = query.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_field", "{body}");
    assert_eq!(body["error"]["field"], "limit", "{body}");
    app.stop().await;
}
