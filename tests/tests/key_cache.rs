//! The API's cache of keys that authenticated: a poll does not look its key up again, and a
//! revoked key is refused once the API hears of any change to the keys, or of a reconnection that
//! may have missed one.

use genq_tests::{
    AppOptions, TestApp, client_with_key, key_change_heard, postgres_base,
    proxy::{Proxy, host_port},
    until,
};

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
