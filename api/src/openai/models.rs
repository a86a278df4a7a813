//! `GET /v1/models` and `GET /v1/models/{model}`: the catalogue (docs/models.md), its models and
//! aliases, each with its live workers.

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
};
use genq_shared::{db, routing::Arm};
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::OpenAiErrorBody;
use crate::{AppState, error::ApiError, error::Result};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_models))
        .routes(routes!(retrieve_model))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Model {
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// When it was registered (seconds since the epoch).
    pub created: i64,
    pub owned_by: &'static str,
    /// genq: workers serving it now (an alias: its models' together).
    pub live_workers: i64,
    /// genq: jobs waiting for it.
    pub queued: i64,
    /// genq: SHA-256 of the GGUF its last registering worker loaded; none for an alias.
    pub version: Option<String>,
    /// genq: whether requests that name no model go to it.
    pub default: bool,
    /// genq: an alias's models and their weights (percent of users); none for a model.
    pub arms: Option<Vec<Arm>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<Model>,
}

/// Every model and alias of the catalogue, by name.
pub(super) async fn served(state: &AppState) -> Result<Vec<Model>> {
    let overview = db::models::overview(&state.db).await?;
    let catalogue = state.models.catalogue(&state.db, true).await?;
    let mut models: Vec<Model> = overview
        .iter()
        .map(|m| Model {
            id: m.name.clone(),
            object: "model",
            created: m.created_at.timestamp(),
            owned_by: "genq",
            live_workers: m.live_workers,
            queued: m.queued,
            version: m.version.clone(),
            default: m.is_default,
            arms: None,
        })
        .collect();
    for alias in &catalogue.aliases {
        let of_arms = |figure: fn(&db::models::ModelOverview) -> i64| -> i64 {
            overview
                .iter()
                .filter(|m| alias.arms.iter().any(|a| a.model == m.name))
                .map(figure)
                .sum()
        };
        models.push(Model {
            id: alias.name.clone(),
            object: "model",
            created: 0,
            owned_by: "genq",
            live_workers: of_arms(|m| m.live_workers),
            queued: of_arms(|m| m.queued),
            version: None,
            default: false,
            arms: Some(alias.arms.clone()),
        });
    }
    models.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(models)
}

/// Refuses a model or alias the catalogue lacks, naming those it has. With an empty catalogue
/// any name passes, and the job is refused as genq's own routes refuse it (no model yet).
pub(super) async fn check_model(state: &AppState, name: &str) -> Result<()> {
    let known = |c: &genq_shared::routing::Catalogue| c.names().iter().any(|n| n == name);
    let catalogue = state.models.catalogue(&state.db, false).await?;
    if catalogue.models.is_empty() || known(&catalogue) {
        return Ok(());
    }
    let catalogue = state.models.catalogue(&state.db, true).await?;
    if known(&catalogue) {
        return Ok(());
    }
    let names = catalogue.names();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    Err(not_found(name, &names))
}

fn not_found(name: &str, served: &[&str]) -> ApiError {
    ApiError::OpenAi {
        status: axum::http::StatusCode::NOT_FOUND,
        code: "model_not_found",
        param: Some("model"),
        message: format!(
            "the model '{name}' does not exist; genq serves: {}",
            served.join(", ")
        ),
    }
}

/// List models
///
/// The catalogue's models and aliases (docs/models.md), with their live workers and queued jobs.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    responses(
        (status = 200, description = "The models", body = ModelList),
        (status = 401, body = OpenAiErrorBody, description = "No valid API key"),
        (status = 429, body = OpenAiErrorBody, description = "The key's rate limit is spent"),
        (status = 500, body = OpenAiErrorBody, description = "Internal error"),
        (status = 503, body = OpenAiErrorBody, description = "PostgreSQL is unavailable"),
    )
)]
async fn list_models(State(state): State<AppState>) -> Result<Json<ModelList>> {
    Ok(Json(ModelList {
        object: "list",
        data: served(&state).await?,
    }))
}

/// Retrieve a model
#[utoipa::path(
    get,
    path = "/v1/models/{model}",
    tag = "openai",
    params(("model" = String, Path, description = "A model's id")),
    responses(
        (status = 200, description = "The model", body = Model),
        (status = 401, body = OpenAiErrorBody, description = "No valid API key"),
        (status = 404, body = OpenAiErrorBody, description = "`model_not_found`"),
        (status = 429, body = OpenAiErrorBody, description = "The key's rate limit is spent"),
        (status = 500, body = OpenAiErrorBody, description = "Internal error"),
        (status = 503, body = OpenAiErrorBody, description = "PostgreSQL is unavailable"),
    )
)]
async fn retrieve_model(
    State(state): State<AppState>,
    model: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<Model>> {
    // A path axum cannot decode is answered as an unknown model, in JSON, not axum's text.
    let name = super::files::path_id(model)?;
    let mut models = served(&state).await?;
    match models.iter().position(|m| m.id == name) {
        Some(found) => Ok(Json(models.swap_remove(found))),
        None => {
            let names: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
            Err(not_found(&name, &names))
        }
    }
}
