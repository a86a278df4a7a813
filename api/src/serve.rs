//! Serving HTTP/1.1 with bounds on slow and idle clients. `axum::serve` sets no timer, so hyper's
//! header-read timeout never fires there, and a client that opens a connection and sends nothing,
//! dribbles its request head, or never reads its answer, holds a connection and a task forever.
//! Here a client must send each request head within `client_timeout` (which also closes idle
//! keep-alive connections: the wait for the next request is a header read), and take each part of
//! an answer within as long; the body's deadline is the JSON extractor's.

use std::{future::Future, io, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_io_timeout::TimeoutStream;

/// After shutdown is asked for, how long requests in flight may take to finish: the longest a
/// handler waits is `POST /generate`'s wait (60 s by default).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(90);

/// Serves `router` until `shutdown` resolves, then lets the requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    client_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(client_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // One client's connection failed before it was accepted: nothing to wait for.
                Err(e) if is_connection_error(&e) => continue,
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
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(client_timeout));
        let io = TokioIo::new(Box::pin(stream));
        let service = TowerToHyperService::new(router.clone());
        // No upgrades: genq serves no WebSockets.
        let connection = graceful.watch(builder.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // New connections are refused from here on rather than left waiting in the backlog.
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in flight {}s after shutdown began; stopping anyway",
            SHUTDOWN_GRACE.as_secs()
        );
    }
}

/// Errors of one connection, as axum::serve tells them from the listener's own.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
