//! Who is calling. Every route but `/health`, `/ready`, `/metrics`, the docs and `/ui` needs an API
//! key, in `Authorization: Bearer <key>` or `X-API-Key: <key>`; the key names the caller's tenant,
//! its rights and its limits. A missing, unknown or revoked key gets one and the same 401, so the
//! answer tells a guesser nothing.

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use genq_shared::db::{
    Scope,
    keys::{KeyRecord, LOCAL_TENANT},
};

use crate::{AppState, error::ApiError, rate_limit::Decision};

/// The authenticated caller, put in the request's extensions for the handlers.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: String,
    /// `None` with `GENQ_AUTH=off`.
    pub key: Option<KeyRecord>,
    pub admin: bool,
}

impl Caller {
    /// Every request with `GENQ_AUTH=off`: the local tenant, with admin rights.
    fn local() -> Caller {
        Caller {
            tenant: LOCAL_TENANT.to_owned(),
            key: None,
            admin: true,
        }
    }

    /// The key's id; `None` with `GENQ_AUTH=off`.
    pub fn key_id(&self) -> Option<uuid::Uuid> {
        self.key.as_ref().map(|k| k.id)
    }

    /// Which jobs and results this caller may see: an admin's reach is every tenant.
    pub fn scope(&self) -> Scope<'_> {
        if self.admin {
            Scope::All
        } else {
            Scope::Tenant(&self.tenant)
        }
    }
}

/// The key a request presents, from either header; `Bearer` is matched in any case (RFC 7235).
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    headers.get("x-api-key")?.to_str().ok().map(str::trim)
}

/// Middleware: authenticates, applies the key's rate limit and hands the [`Caller`] on.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if !state.auth_enabled {
        request.extensions_mut().insert(Caller::local());
        return next.run(request).await;
    }
    let key = match presented_key(request.headers()) {
        None => None,
        Some(presented) => match state.key_cache.authenticate(&state.db, presented).await {
            Ok(key) => key,
            Err(e) => return ApiError::from(e).into_response(),
        },
    };
    let Some(key) = key else {
        return ApiError::Unauthorized.into_response();
    };
    let decision = match key.rate_per_min {
        None => None,
        Some(per_minute) => match state.rate_limiter.take(key.id, per_minute as u32).await {
            Ok(decision) => Some(decision),
            Err(e) => {
                // Redis is down: the request goes on unlimited rather than refused, as intake
                // itself goes on without Redis (the reconciler dispatches later).
                genq_shared::metrics::redis_error();
                tracing::warn!(error = %e, "rate limit not applied: Redis did not answer");
                None
            }
        },
    };
    if let Some(decision) = decision.filter(|d| !d.allowed) {
        let mut response = ApiError::RateLimited {
            retry_after_secs: decision.retry_after_secs,
        }
        .into_response();
        add_rate_limit_headers(response.headers_mut(), &decision);
        return response;
    }
    request.extensions_mut().insert(Caller {
        tenant: key.tenant.clone(),
        admin: key.admin,
        key: Some(key),
    });
    let mut response = next.run(request).await;
    if let Some(decision) = decision {
        add_rate_limit_headers(response.headers_mut(), &decision);
    }
    response
}

/// Middleware for admin routes, after [`authenticate`]: a tenant key gets 403.
pub async fn require_admin(request: Request, next: Next) -> Response {
    match request.extensions().get::<Caller>() {
        Some(caller) if caller.admin => next.run(request).await,
        _ => ApiError::Forbidden("this route needs an admin key".into()).into_response(),
    }
}

/// The IETF draft's `RateLimit-*` fields: the bucket's size, what is left, seconds to full.
fn add_rate_limit_headers(headers: &mut HeaderMap, decision: &Decision) {
    for (name, value) in [
        ("ratelimit-limit", u64::from(decision.limit)),
        ("ratelimit-remaining", u64::from(decision.remaining)),
        ("ratelimit-reset", decision.reset_secs),
    ] {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn a_key_is_read_from_either_header() {
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer genq_abc")])),
            Some("genq_abc")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "bearer  genq_abc")])),
            Some("genq_abc")
        );
        assert_eq!(
            presented_key(&headers(&[("x-api-key", "genq_abc")])),
            Some("genq_abc")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Basic Z2VucTo=")])),
            None
        );
        assert_eq!(presented_key(&headers(&[])), None);
    }
}
