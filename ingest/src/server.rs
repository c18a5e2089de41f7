//! Accepting connections: HTTP/1.1 on hyper, with deadlines for slow clients and a
//! graceful stop.
//!
//! `axum::serve` cannot set hyper's header read timeout, so connections are served here
//! directly: one task per connection, a [`GracefulShutdown`] watching all of them.
//! Slow clients are cut off twice: a request head that does not arrive within
//! `server.header_read_timeout` closes the connection (hyper's timer, which also bounds
//! how long an idle keep-alive connection stays open), and a body that does not arrive
//! within `server.body_read_timeout` answers 408 ([`crate::body::enforce_body_deadline`]).
//! A slowloris client therefore holds a connection, and at most one ingest permit, for
//! a bounded time, while every other connection is served by its own task.
//!
//! On shutdown the listener stops accepting at once; in-flight requests finish and idle
//! connections are closed before [`serve`] returns.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use sluice_core::config::ServerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Serves `app` on `listener` until `shutdown` is cancelled, then stops accepting and
/// lets in-flight requests finish. `app` is the API (see [`crate::router`]), or the
/// [`crate::StartupGate`] in front of it while the node recovers.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = app.map_request(|request: Request<Incoming>| request.map(Body::new));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Responses are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Timeouts and clients going away land here; nothing to answer.
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Per-connection accept errors (the peer went away) are skipped; others (out of file
/// descriptors) are logged and retried after a pause instead of spinning.
async fn accept_error(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %error, "accept failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
