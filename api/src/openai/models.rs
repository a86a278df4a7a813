//! `GET /v1/models` and `GET /v1/models/{model}`: the models genq serves, which are the model the
//! API was given (`GENQ_MODEL`) and those of the live workers.

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
};
use genq_shared::db;
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
    /// When the first live worker of the model started (seconds since the epoch), or 0.
    pub created: i64,
    pub owned_by: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<Model>,
}

/// The models served now: the API's own and the live workers', by name.
pub(super) async fn served(state: &AppState) -> Result<Vec<Model>> {
    let mut models: Vec<Model> = Vec::new();
    for worker in db::workers::live(&state.db).await? {
        let started = worker.started_at.timestamp();
        match models.iter_mut().find(|m| m.id == worker.model) {
            Some(model) => model.created = model.created.min(started),
            None => models.push(model(worker.model, started)),
        }
    }
    if let Some(name) = &state.model_name
        && !models.iter().any(|m| &m.id == name)
    {
        models.push(model(name.clone(), 0));
    }
    models.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(models)
}

fn model(id: String, created: i64) -> Model {
    Model {
        id,
        object: "model",
        created,
        owned_by: "genq",
    }
}

/// Refuses a model genq does not serve, naming those it does. With none known (no `GENQ_MODEL`,
/// no worker yet) any name is taken: the job waits for a worker, as genq's own routes' do.
pub(super) async fn check_model(state: &AppState, name: &str) -> Result<()> {
    let models = served(state).await?;
    if models.is_empty() || models.iter().any(|m| m.id == name) {
        return Ok(());
    }
    let names: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
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
/// The models genq serves: the API's own (`GENQ_MODEL`) and those of the live workers.
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
