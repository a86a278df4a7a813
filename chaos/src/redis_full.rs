//! Redis at `maxmemory`: filled, as a Redis whose memory ran out under `noeviction` is, and given
//! its settings back.

/// Redis refuses every write from now on (`maxmemory` 1 byte, no eviction); returns the
/// settings it had, for [`restore`].
pub async fn fill(client: &redis::Client) -> anyhow::Result<Vec<(String, String)>> {
    let mut redis = client.get_multiplexed_async_connection().await?;
    let mut saved = Vec::new();
    for name in ["maxmemory", "maxmemory-policy"] {
        let (_, value): (String, String) = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut redis)
            .await?;
        saved.push((name.to_owned(), value));
    }
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .arg("maxmemory")
        .arg(1)
        .query_async::<()>(&mut redis)
        .await?;
    let probe: redis::RedisResult<()> = redis::cmd("SET")
        .arg("genq-chaos:probe")
        .arg(1)
        .query_async(&mut redis)
        .await;
    anyhow::ensure!(
        probe.is_err_and(|e| e.to_string().contains("OOM")),
        "Redis still took a write at maxmemory 1 byte"
    );
    Ok(saved)
}

/// Gives Redis back the `settings` [`fill`] returned.
pub async fn restore(client: &redis::Client, settings: &[(String, String)]) -> anyhow::Result<()> {
    let mut redis = client.get_multiplexed_async_connection().await?;
    let mut restore = redis::cmd("CONFIG");
    restore.arg("SET");
    for (name, value) in settings {
        restore.arg(name).arg(value);
    }
    restore.query_async::<()>(&mut redis).await?;
    Ok(())
}
