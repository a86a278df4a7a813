//! API keys, tenants and admin rights, against the real API, PostgreSQL and Redis.

use genq_shared::db::keys::NewKey;
use genq_tests::{AppOptions, TestApp, client_with_key, key_change_heard, stdout};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const UNAUTHORIZED: &str = r#"{"error":{"code":"unauthorized","message":"a valid API key is required: send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`"}}"#;

async fn status_and_body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// The status, `WWW-Authenticate` and body of `request`.
async fn refusal(request: reqwest::RequestBuilder) -> (u16, Option<String>, String) {
    let response = request.send().await.expect("request");
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        response.status().as_u16(),
        challenge,
        response.text().await.unwrap(),
    )
}

#[tokio::test]
async fn no_key_an_unknown_key_and_a_revoked_key_get_the_same_401() {
    let app = TestApp::spawn().await;
    let revoked = app.tenant_key("leaver").await;
    let output = app.genqctl(&["keys", "revoke", "leaver"]).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let unknown = format!("genq_{}", "0".repeat(64));
    let body = json!({ "prompts": ["Hello"] });

    for key in [
        None,
        Some(unknown.as_str()),
        Some(revoked.as_str()),
        Some("not-a-key"),
    ] {
        let client = client_with_key(key);
        for request in [
            client.post(format!("{}/batch", app.address)).json(&body),
            client.get(format!("{}/history", app.address)),
            client.get(format!("{}/batch_result/{}", app.address, Uuid::now_v7())),
        ] {
            assert_eq!(
                refusal(request).await,
                (
                    401,
                    Some(r#"Bearer realm="genq""#.into()),
                    UNAUTHORIZED.into()
                ),
                "key {key:?}"
            );
        }
    }
    // Nothing was recorded for any of them.
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
}

#[tokio::test]
async fn a_key_works_in_either_header_and_health_ready_stay_open() {
    let app = TestApp::spawn().await;
    let plain = reqwest::Client::new();
    let response = plain
        .post(format!("{}/batch", app.address))
        .header("x-api-key", &app.key)
        .json(&json!({ "prompts": ["Hello"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let response = plain
        .get(format!("{}/history", app.address))
        .header("authorization", format!("bearer {}", app.key))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for path in ["/health", "/ready"] {
        let response = plain
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_jobs_results_and_history() {
    let app = TestApp::spawn().await;
    let worker = app.start_worker(2).await;
    let other = client_with_key(Some(&app.tenant_key("other").await));
    let ours = app
        .submit(&json!({ "prompts": ["Ours alone"], "max_tokens": 4, "seed": 1 }))
        .await;
    let view = app.wait_final(ours).await;
    assert_eq!(view.status.as_str(), "completed");

    // Another tenant's id answers exactly as an id that does not exist.
    let never = Uuid::now_v7();
    for (id, path) in [
        (ours, format!("/batch_result/{ours}")),
        (never, format!("/batch_result/{never}")),
    ] {
        let response = other
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(
            status_and_body(response).await,
            (
                404,
                json!({ "error": { "code": "not_found", "message": format!("no task {id}") } })
            )
        );
    }
    let response = other
        .post(format!("{}/batch/{ours}/cancel", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_and_body(response).await,
        (
            404,
            json!({ "error": { "code": "not_found", "message": format!("no task {ours}") } })
        )
    );

    // Each history holds its own tenant's generations only.
    let theirs = other
        .post(format!("{}/batch", app.address))
        .json(&json!({ "prompts": ["Theirs alone"], "max_tokens": 4, "seed": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 202);
    let theirs: Uuid = theirs.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    app.wait_final(theirs).await;
    let prompts_in = |page: Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["prompt"].as_str().unwrap().to_owned())
            .collect()
    };
    let our_history: Value = app.get("/history").await.json().await.unwrap();
    assert_eq!(prompts_in(our_history), ["Ours alone"]);
    let their_history: Value = other
        .get(format!("{}/history", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prompts_in(their_history), ["Theirs alone"]);
    // An admin's history is its own tenant's too (it reads others' jobs by id).
    let admin = client_with_key(Some(&app.admin_key("ops").await));
    let admin_history: Value = admin
        .get(format!("{}/history", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prompts_in(admin_history), Vec::<String>::new());
    worker.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_is_scoped_to_its_tenant() {
    let app = TestApp::spawn().await;
    let other = client_with_key(Some(&app.tenant_key("other").await));
    let submit = |client: &reqwest::Client, prompt: &str| {
        client
            .post(format!("{}/batch", app.address))
            .header("idempotency-key", "order-42")
            .json(&json!({ "prompts": [prompt] }))
            .send()
    };
    let ours = submit(&app.client, "Ours").await.unwrap();
    let theirs = submit(&other, "Theirs, a different body").await.unwrap();
    assert_eq!(
        (ours.status().as_u16(), theirs.status().as_u16()),
        (202, 202)
    );
    let ours: Value = ours.json().await.unwrap();
    let theirs: Value = theirs.json().await.unwrap();
    assert_ne!(ours["task_id"], theirs["task_id"]);
    // Within a tenant the key still holds: a repeat gets the first job.
    let again: Value = submit(&other, "Theirs, a different body")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["task_id"], theirs["task_id"]);
}

#[tokio::test]
async fn admin_keys_reach_every_tenant_and_tenant_keys_cannot_administer() {
    let app = TestApp::spawn().await;
    let admin = client_with_key(Some(&app.admin_key("ops").await));
    let url = |path: &str| format!("{}{path}", app.address);

    let response = app
        .client
        .post(url("/admin/intake/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_and_body(response).await,
        (
            403,
            json!({ "error": { "code": "forbidden", "message": "this route needs an admin key" } })
        )
    );
    for (method, path) in [("POST", "/admin/intake/resume"), ("GET", "/admin/queue")] {
        let request = app.client.request(method.parse().unwrap(), url(path));
        assert_eq!(request.send().await.unwrap().status(), 403, "{path}");
    }
    let response = admin.post(url("/admin/intake/pause")).send().await.unwrap();
    assert_eq!(
        status_and_body(response).await,
        (200, json!({ "intake_paused": true }))
    );
    let response = app.post("/batch", &json!({ "prompts": ["Hello"] })).await;
    assert_eq!(response.status(), 503);
    let response = admin
        .post(url("/admin/intake/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_and_body(response).await,
        (200, json!({ "intake_paused": false }))
    );

    let id = app.submit(&json!({ "prompts": ["A tenant's job"] })).await;
    let response = admin
        .get(url(&format!("/batch_result/{id}")))
        .send()
        .await
        .unwrap();
    let (status, view) = status_and_body(response).await;
    assert_eq!(
        (status, view["task_id"].as_str()),
        (200, Some(id.to_string().as_str()))
    );
    let response = admin
        .post(url(&format!("/batch/{id}/cancel")))
        .send()
        .await
        .unwrap();
    let (status, view) = status_and_body(response).await;
    assert_eq!((status, view["status"].as_str()), (200, Some("cancelled")));
    let response = admin.get(url("/admin/queue")).send().await.unwrap();
    let (status, stats) = status_and_body(response).await;
    assert_eq!((status, stats["cancelled"].as_i64()), (200, Some(1)));
}

#[tokio::test]
async fn genqctl_keys_create_prints_only_the_key_and_stores_only_its_hash() {
    let app = TestApp::spawn().await;
    let output = app
        .genqctl(&[
            "keys",
            "create",
            "--name",
            "alice",
            "--rate-per-min",
            "30",
            "--max-queued",
            "5",
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let printed = stdout(&output);
    let key = printed.strip_suffix('\n').expect("one line");
    assert!(
        key.len() == 69
            && key.starts_with("genq_")
            && key[5..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{printed:?}"
    );
    // The key authenticates.
    let response = client_with_key(Some(key))
        .get(format!("{}/history", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Only its hash is stored, and no column holds the key.
    let (hash, row): (Vec<u8>, String) = sqlx::query_as(
        "select hash, row_to_json(api_keys)::text from api_keys where name = 'alice'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(hash, Sha256::digest(key.as_bytes()).to_vec());
    assert!(!row.contains(&key[5..]), "{row}");

    let output = app.genqctl(&["keys", "list", "--json"]).await;
    assert_eq!(output.status.code(), Some(0));
    let listed: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let alice = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "alice")
        .expect("alice listed");
    assert_eq!(
        (
            &alice["tenant"],
            &alice["prefix"],
            &alice["admin"],
            &alice["rate_per_min"],
            &alice["max_queued"]
        ),
        (
            &json!("alice"),
            &json!(&key[..13]),
            &json!(false),
            &json!(30),
            &json!(5)
        )
    );
    let output = app.genqctl(&["keys", "list"]).await;
    assert!(!stdout(&output).contains(&key[13..]));

    // A second live key of the same name is refused; revoking twice finds nothing the second time.
    let output = app.genqctl(&["keys", "create", "--name", "alice"]).await;
    assert_eq!(
        (output.status.code(), stdout(&output).as_str()),
        (Some(1), "")
    );
    // The API has alice's key cached; the revocation reaches it as a notification.
    let mut key_changes = app.key_changes_from_now();
    let output = app.genqctl(&["keys", "revoke", "alice"]).await;
    assert_eq!(output.status.code(), Some(0));
    key_change_heard(&mut key_changes).await;
    let output = app.genqctl(&["keys", "revoke", "alice"]).await;
    assert_eq!(output.status.code(), Some(1));
    let response = client_with_key(Some(key))
        .get(format!("{}/history", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // By id: the name of a revoked key may be taken again, so an id names one key for good.
    let bob = app.tenant_key("bob").await;
    let id: uuid::Uuid = sqlx::query_scalar("select id from api_keys where name = 'bob'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let output = app.genqctl(&["keys", "revoke", &id.to_string()]).await;
    assert_eq!(
        (output.status.code(), stdout(&output)),
        (Some(0), format!("key \"bob\" ({id}) revoked\n"))
    );
    let response = client_with_key(Some(&bob))
        .get(format!("{}/history", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_rotated_key_of_the_same_tenant_keeps_its_jobs() {
    let app = TestApp::spawn().await;
    let first = app
        .create_key(NewKey {
            name: "v1".into(),
            tenant: Some("acme".into()),
            ..NewKey::default()
        })
        .await;
    let response = client_with_key(Some(&first))
        .post(format!("{}/batch", app.address))
        .json(&json!({ "prompts": ["Hello"] }))
        .send()
        .await
        .unwrap();
    let id = response.json::<Value>().await.unwrap()["task_id"].clone();
    let output = app
        .genqctl(&["keys", "create", "--name", "v2", "--tenant", "acme"])
        .await;
    let second = stdout(&output).trim().to_owned();
    let response = client_with_key(Some(&second))
        .get(format!(
            "{}/batch_result/{}",
            app.address,
            id.as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn with_auth_off_every_caller_is_the_local_admin() {
    let app = TestApp::spawn_with(AppOptions {
        extra_args: vec!["--auth=off".into()],
        ..AppOptions::default()
    })
    .await;
    let plain = reqwest::Client::new();
    let response = plain
        .post(format!("{}/batch", app.address))
        .json(&json!({ "prompts": ["Hello"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let response = plain
        .post(format!("{}/admin/intake/pause", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let tenant: String = sqlx::query_scalar("select tenant from jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(tenant, "local");
}
