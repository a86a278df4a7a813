//! The API's cache of keys that authenticated: a poll does not look its key up again, and a
//! revoked key is refused once the API hears of any change to the keys, or of a reconnection that
//! may have missed one.

use genq_tests::{
    AppOptions, PATIENCE, TestApp, client_with_key, key_change_heard, postgres_base,
    proxy::{Proxy, host_port},
    sse::EventStream,
    submit_to, until,
};
use serde_json::{Value, json};

/// Far longer than a test runs: a 401 then comes from a change heard, never from a key's time
/// running out.
const CACHE_FOR_AN_HOUR: &str = "--key-cache-secs=3600";

/// Revokes the key named `name` with the table's trigger off in that transaction, so that no API
/// hears of it: to an API, what a notification lost on a dead connection looks like.
async fn revoke_unannounced(app: &TestApp, name: &str) {
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query(r#"alter table api_keys disable trigger api_keys_changed"#)
        .execute(&mut *tx)
        .await
        .unwrap();
    let revoked = sqlx::query(
        r#"update api_keys set revoked_at = now() where name = $1 and revoked_at is null"#,
    )
    .bind(name)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(r#"alter table api_keys enable trigger api_keys_changed"#)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(revoked.rows_affected(), 1, "{name} revoked");
}

async fn history_status(app: &TestApp, key: &str) -> u16 {
    client_with_key(Some(key))
        .get(format!("{}/history", app.address))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_key_that_authenticated_is_not_looked_up_again_until_the_keys_change() {
    let app = TestApp::spawn_with(AppOptions {
        extra_args: vec![CACHE_FOR_AN_HOUR.into()],
        ..AppOptions::default()
    })
    .await;
    let key = app.tenant_key("poller").await;
    app.tenant_key("other").await;
    let mut key_changes = app.key_changes_from_now();
    assert_eq!(history_status(&app, &key).await, 200);

    revoke_unannounced(&app, "poller").await;
    // Still let in: the API did not ask PostgreSQL about this key again.
    let from_the_cache = history_status(&app, &key).await;
    // Any announced change empties the cache; here, another key's revocation.
    let output = app.genqctl(&["keys", "revoke", "other"]).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    key_change_heard(&mut key_changes).await;
    let after_the_change = history_status(&app, &key).await;

    assert_eq!((from_the_cache, after_the_change), (200, 401));
}

#[tokio::test]
async fn an_api_that_lost_postgresql_checks_its_cached_keys_again_once_reconnected() {
    let postgres = Proxy::start(host_port(&postgres_base())).await;
    let app = TestApp::spawn_with(AppOptions {
        postgres_via: Some(postgres.address()),
        extra_args: vec![CACHE_FOR_AN_HOUR.into()],
        ..AppOptions::default()
    })
    .await;
    let key = app.tenant_key("poller").await;
    assert_eq!(history_status(&app, &key).await, 200);
    let mut key_changes = app.key_changes_from_now();

    // The API's connections, its listener's among them, are dropped (it says so on /ready); the
    // revocation is made meanwhile (the test's own pool reaches PostgreSQL directly) and announced
    // to nobody.
    postgres.cut();
    until("the API finds PostgreSQL unreachable", || async {
        app.get("/ready").await.status() == 503
    })
    .await;
    revoke_unannounced(&app, "poller").await;
    postgres.restore();
    key_change_heard(&mut key_changes).await;

    assert_eq!(history_status(&app, &key).await, 401);
    app.stop().await;
}

#[tokio::test]
async fn with_the_key_cache_off_every_request_looks_its_key_up() {
    let app = TestApp::spawn_with(AppOptions {
        extra_args: vec!["--key-cache-secs=0".into()],
        ..AppOptions::default()
    })
    .await;
    let key = app.tenant_key("poller").await;
    assert_eq!(history_status(&app, &key).await, 200);

    revoke_unannounced(&app, "poller").await;

    assert_eq!(history_status(&app, &key).await, 401);
}

/// Opens an event stream and a long poll with `key`, each on a job that no worker runs, and waits
/// until the API holds both.
async fn stream_and_long_poll(
    app: &TestApp,
    key: &str,
) -> (EventStream, tokio::task::JoinHandle<(u16, Value)>) {
    let client = client_with_key(Some(key));
    let followed = submit_to(&client, &app.address, &json!({ "prompts": ["followed"] })).await;
    let polled = submit_to(&client, &app.address, &json!({ "prompts": ["polled"] })).await;
    let url = format!("{}/batch_result/{followed}/events", app.address);
    let mut stream = EventStream::open(&client, &url, None).await;
    assert_eq!(stream.next().await.unwrap().data["status"], "queued");
    let poll = tokio::spawn({
        let url = format!("{}/batch_result/{polled}?wait=60", app.address);
        async move {
            let response = client.get(url).send().await.unwrap();
            (response.status().as_u16(), response.json().await.unwrap())
        }
    });
    until("the API holds the stream and the long poll", || async {
        app.api_watch.watched_jobs() == 2
    })
    .await;
    (stream, poll)
}

/// The stream's last event, and the long poll's answer, each well before the poll's own 60 s.
async fn how_they_ended(
    mut stream: EventStream,
    poll: tokio::task::JoinHandle<(u16, Value)>,
) -> (Vec<String>, u16, Value) {
    let events = stream.rest().await;
    let (status, body) = tokio::time::timeout(PATIENCE, poll).await.unwrap().unwrap();
    let names = events
        .iter()
        .map(|e| format!("{}: {}", e.event, e.data))
        .collect();
    (names, status, body["error"]["code"].clone())
}

#[tokio::test]
async fn open_streams_and_long_polls_end_when_their_key_is_revoked() {
    let app = TestApp::spawn_with(AppOptions {
        extra_args: vec![CACHE_FOR_AN_HOUR.into()],
        ..AppOptions::default()
    })
    .await;
    let key = app.tenant_key("follower").await;
    let (stream, poll) = stream_and_long_poll(&app, &key).await;

    let output = app.genqctl(&["keys", "revoke", "follower"]).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let (events, status, code) = how_they_ended(stream, poll).await;

    assert_eq!(
        events,
        [
            r#"error: {"code":"unauthorized","message":"the key this stream was opened with was revoked"}"#
        ]
    );
    assert_eq!((status, code), (401, json!("unauthorized")));
    app.stop().await;
}

#[tokio::test]
async fn an_unannounced_revocation_ends_open_streams_within_the_key_cache_bound() {
    let app = TestApp::spawn_with(AppOptions {
        extra_args: vec!["--key-cache-secs=1".into()],
        ..AppOptions::default()
    })
    .await;
    let key = app.tenant_key("follower").await;
    let (stream, poll) = stream_and_long_poll(&app, &key).await;

    revoke_unannounced(&app, "follower").await;
    let revoked = std::time::Instant::now();
    let (events, status, code) = how_they_ended(stream, poll).await;
    let ended_after = revoked.elapsed();

    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].starts_with(r#"error: {"code":"unauthorized""#),
        "{events:?}"
    );
    assert_eq!((status, code), (401, json!("unauthorized")));
    // The bound is the cache's 1 s; the rest is slack for a loaded machine, far below the long
    // poll's own 60 s.
    assert!(
        ended_after < std::time::Duration::from_secs(10),
        "{ended_after:?}"
    );
    app.stop().await;
}
