//! `GET /history`: stored generations, newest first, with a cursor for older pages.

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Query, State},
    routing::get,
};
use genq_shared::{db, types::HistoryPage};

use crate::{
    AppState,
    error::{ApiError, Result},
};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

pub fn router() -> Router<AppState> {
    Router::new().route("/history", get(history))
}

async fn history(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<HistoryPage>> {
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("limit must be an integer between 1 and {MAX_LIMIT}"),
                )
            })?,
    };
    let before = match query.get("before") {
        None => None,
        Some(raw) => Some(raw.parse::<i64>().map_err(|_| {
            ApiError::invalid(
                "before",
                "before must be a cursor from a previous page's `next`",
            )
        })?),
    };
    Ok(Json(
        db::generations::history(&state.db, limit, before).await?,
    ))
}
