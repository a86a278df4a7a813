//! Serving HTTP/1.1 with a bound on slow and idle clients. `axum::serve` sets no timer, so hyper's
//! header-read timeout never fires there and a client that opens a connection and sends nothing,
//! or dribbles its request head, holds a connection and a task forever. Here a client must send
//! each request head within `header_read_timeout` (which also closes idle keep-alive connections:
//! the wait for the next request is a header read); the body's deadline is the JSON extractor's.

use std::{future::Future, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;

/// Serves `router` until `shutdown` resolves, then lets the requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, mostly: give connections time to close, as
                    // axum::serve does, rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers are small; don't let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        // No upgrades: genq serves no WebSockets.
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}
