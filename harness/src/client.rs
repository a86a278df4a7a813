//! What the tools' clients do over HTTP, as users' clients do.

use anyhow::{Context, ensure};
use serde_json::Value;
use uuid::Uuid;

/// `POST /batch`; the task id of the accepted job, or an error naming the status it got. `http`
/// must send an API key: [`crate::Cluster::client`] makes one that does.
pub async fn submit(http: &reqwest::Client, base_url: &str, body: &Value) -> anyhow::Result<Uuid> {
    let response = http
        .post(format!("{base_url}/batch"))
        .json(body)
        .send()
        .await?;
    ensure!(
        response.status() == 202,
        "submit answered {}",
        response.status()
    );
    let accepted: Value = response.json().await?;
    Ok(accepted["task_id"]
        .as_str()
        .context("no task_id")?
        .parse()?)
}

/// The first model `GET /v1/models` lists: on a cluster of one model, the one its workers serve.
pub async fn first_model(http: &reqwest::Client, base_url: &str) -> anyhow::Result<String> {
    let response = http.get(format!("{base_url}/v1/models")).send().await?;
    ensure!(
        response.status() == 200,
        "GET /v1/models answered {}",
        response.status()
    );
    let models: Value = response.json().await?;
    models["data"][0]["id"]
        .as_str()
        .map(str::to_owned)
        .context("GET /v1/models listed no model")
}
