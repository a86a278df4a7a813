//! The worker's own small HTTP listener (`GENQ_WORKER_HTTP_ADDR`): `/health` (the process
//! answers), `/ready` (503 until the model is loaded and the worker registered, while PostgreSQL
//! is unreachable, and once the engine has died or shutdown began) and `/metrics` (Prometheus).
//! Jobs never come this way.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use anyhow::Context;
use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use genq_engine::EngineStats;
use genq_shared::metrics::{self as genq_metrics, names};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{reachability, registry::HeldJobs};

/// Where the listener binds unless told otherwise; taken, it falls back to a free port (several
/// workers on one host need no settings).
const DEFAULT_ADDR: &str = "127.0.0.1:9464";

/// What the listener reports on; filled in as the worker starts.
#[derive(Clone, Default)]
pub(crate) struct Probe {
    serving: Arc<OnceLock<Serving>>,
    stopping: CancellationToken,
}

struct Serving {
    engine: EngineStats,
    held: Arc<HeldJobs>,
    model: String,
    postgres: reachability::Postgres,
}

impl Probe {
    /// The model is loaded and the worker registered: ready, unless the engine dies or
    /// PostgreSQL cannot be reached.
    pub fn serving(
        &self,
        engine: EngineStats,
        held: Arc<HeldJobs>,
        model: String,
        postgres: reachability::Postgres,
    ) {
        let _ = self.serving.set(Serving {
            engine,
            held,
            model,
            postgres,
        });
    }

    /// Shutdown began: no longer ready, still alive.
    pub fn stopping(&self) {
        self.stopping.cancel();
    }
}

/// Binds the listener per `addr` (`off`: none) and serves until `stop` is cancelled.
pub(crate) async fn start(
    addr: Option<&str>,
    probe: Probe,
    stop: CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    let listener = match addr {
        Some(addr) if addr.eq_ignore_ascii_case("off") => return Ok(None),
        Some(addr) => {
            let addr: SocketAddr = addr.parse().with_context(|| {
                format!("GENQ_WORKER_HTTP_ADDR: {addr:?} is not an address such as 0.0.0.0:9464")
            })?;
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the worker's HTTP listener to {addr}"))?
        }
        None => match TcpListener::bind(DEFAULT_ADDR).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::info!(error = %e, "{DEFAULT_ADDR} is taken; the worker's HTTP listener takes a free port");
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .context("binding the worker's HTTP listener")?
            }
        },
    };
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "worker HTTP listener (/health, /ready, /metrics)");
    tokio::spawn(async move {
        let served = axum::serve(listener, router(probe))
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the worker's HTTP listener stopped");
        }
    });
    Ok(Some(local))
}

fn router(probe: Probe) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(probe)
}

async fn ready(State(probe): State<Probe>) -> Response {
    let not_ready = |message: &str| {
        let body = json!({ "error": { "code": "unavailable", "message": message } });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    };
    let Some(serving) = probe.serving.get() else {
        return not_ready("the model is loading");
    };
    if serving.engine.is_stopped() {
        return not_ready("the inference engine stopped");
    }
    if probe.stopping.is_cancelled() {
        return not_ready("the worker is shutting down");
    }
    if serving.postgres.is_unreachable() {
        return not_ready("PostgreSQL is unreachable: taking no jobs until it answers");
    }
    Json(json!({ "status": "ready", "model": serving.model })).into_response()
}

async fn metrics(State(probe): State<Probe>) -> Response {
    if let Some(serving) = probe.serving.get() {
        let engine = &serving.engine;
        metrics::gauge!(names::WORKER_SLOTS).set(engine.slots());
        metrics::gauge!(names::WORKER_SLOTS_BUSY).set(engine.slots_busy() as f64);
        metrics::gauge!(names::REQUESTS_WAITING).set(engine.requests_waiting() as f64);
        metrics::gauge!(names::WORKER_JOBS_RUNNING).set(serving.held.len() as f64);
        metrics::counter!(names::GENERATION_TOKENS).absolute(engine.generated_tokens());
        metrics::counter!(names::PROMPT_TOKENS).absolute(engine.prompt_tokens_decoded());
        metrics::counter!(names::SEQUENCES_MOVED).absolute(engine.sequences_moved());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        genq_metrics::render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::body::Body;
    use tower::ServiceExt;

    async fn get(probe: &Probe, path: &str) -> (StatusCode, String) {
        let request = axum::http::Request::get(path).body(Body::empty()).unwrap();
        let response = router(probe.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn ready_is_503_while_the_model_loads_and_health_answers() {
        let probe = Probe::default();

        let loading = get(&probe, "/ready").await;
        let alive = get(&probe, "/health").await;

        assert_eq!(
            loading,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":{"code":"unavailable","message":"the model is loading"}}"#.to_owned()
            )
        );
        assert_eq!(alive, (StatusCode::OK, r#"{"status":"ok"}"#.to_owned()));
    }
}
