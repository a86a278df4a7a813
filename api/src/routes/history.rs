//! `GET /history`: stored generations, newest first, with a cursor for older pages.

use std::collections::HashMap;

use axum::{
    Extension, Json,
    extract::{Query, State, rejection::QueryRejection},
};
use genq_shared::{
    db::{self, Scope},
    types::HistoryPage,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::openapi::{ErrorBody, Internal, TooManyRequests, Unauthorized, Unavailable};
use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, Result},
};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(history))
}

/// List generations
///
/// Stored generations, newest first, a page at a time; pass `next` as `before` for the next
/// (older) page. Pages stay stable while new generations arrive. A tenant key sees its tenant's
/// only.
#[utoipa::path(
    get,
    path = "/history",
    tag = "generations",
    params(
        ("limit" = Option<i64>, Query, nullable = false, minimum = 1, maximum = 500,
            description = "Generations per page (default 50)"),
        ("before" = Option<String>, Query, nullable = false, pattern = "^[0-9]+$",
            description = "The `next` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of generations", body = HistoryPage),
        (status = 401, response = Unauthorized),
        (status = 422, body = ErrorBody,
            description = "`invalid_field`: `limit` or `before` (or the query string itself) is \
                not valid, named in `field`"),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn history(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<HistoryPage>> {
    let query = super::query_map(query)?;
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
        // One's own tenant's, admins included: an admin reads other tenants' jobs by id, not
        // everyone's generations mixed into one feed.
        db::generations::history(&state.db, limit, before, Scope::Tenant(&caller.tenant)).await?,
    ))
}
