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
//! a bounded time, while every other connection is served by its own task. A body also
//! has to keep `server.min_body_rate` once `server.body_rate_grace` has passed
//! ([`crate::body::MinBodyRate`]), and one client address holds at most
//! `server.max_connections_per_client` connections (more are closed at accept) and
//! `server.max_in_flight_per_client` requests in flight ([`crate::admission`]), so many
//! slow connections from one address cannot take the ingest permits others need.
//!
//! Around the API, outermost first: the trace id, [`crate::error::uniform_errors`] (every
//! error answer in the documented shape), a catch-panic layer (a handler panic answers
//! 500 `internal` and the connection keeps serving), the request target length (414
//! `uri_too_long`), the per-client request limit.
//!
//! On shutdown the listener stops accepting at once; in-flight requests finish and idle
//! connections are closed before [`serve`] returns.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use sluice_core::config::ServerConfig;
use sluice_core::ErrorCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;

use crate::admission::{self, ClientTable};
use crate::body::MinBodyRate;
use crate::error::{self, ApiError};
use crate::es_compat;

/// Serves `app` on `listener` until `shutdown` is cancelled, then stops accepting and
/// lets in-flight requests finish. `app` is the API (see [`crate::router`]), or the
/// [`crate::StartupGate`] in front of it while the node recovers.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let max_uri_length = config.max_uri_length;
    let min_body_rate = MinBodyRate {
        bytes_per_sec: config.min_body_rate.as_u64(),
        grace: config.body_rate_grace,
    };
    let app = app
        .layer(middleware::from_fn(admission::limit_client_requests))
        .layer(middleware::from_fn(move |request, next| {
            limit_uri_length(max_uri_length, request, next)
        }))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(middleware::from_fn(error::uniform_errors))
        .layer(middleware::from_fn(error::trace_requests))
        // Outermost: every answer, refusals and the starting gate's included.
        .layer(middleware::from_fn(es_compat::elastic_product));
    let clients = ClientTable::new(
        config.max_connections_per_client,
        config.max_in_flight_per_client,
    );
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Some(client) = clients.open(peer.ip()) else {
            // Dropping the stream closes it: the address holds all it may.
            tracing::debug!(client = %peer.ip(), "connection refused: too many from this address");
            continue;
        };
        // Responses are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let service =
            TowerToHyperService::new(app.clone().map_request(move |request: Request<Incoming>| {
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(client.clone());
                request.extensions_mut().insert(min_body_rate);
                request
            }));
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

/// Middleware: a request target (path and query) longer than `max` bytes answers 414
/// `uri_too_long` (hyper refuses targets past 64 KiB itself, with an empty answer).
async fn limit_uri_length(max: usize, request: Request, next: Next) -> Response {
    let length = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if length > max {
        return ApiError::new(
            ErrorCode::UriTooLong,
            format!("the request target is {length} bytes, over the limit of {max}; send long searches as POST"),
        )
        .into_response();
    }
    next.run(request).await
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
