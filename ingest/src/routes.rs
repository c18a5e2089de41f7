//! The route table and the middleware stack around it.
//!
//! Outermost first: trace id, HTTP metrics (route label from the matched route template,
//! never the raw path), the body read deadline, then the routes. Request-body
//! decompression wraps only the ingest routes (native and bulk API), so their size limit
//! counts decoded bytes. The fault plan routes exist only on a node started with
//! `[faults] enabled` (test configuration).

use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::handler::Handler;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, head, on, post, put, MethodFilter, MethodRouter};
use axum::Router;
use sluice_core::metrics as m;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;

use crate::state::AppState;
use crate::{
    body, bulk, collections, dlq, documents, error, es_bulk, es_compat, es_data_streams,
    es_documents, es_indices, es_search, es_setup, faults, ops, search,
};

/// The whole API. A request body must arrive within `body_read_timeout`.
pub fn router(state: AppState, body_read_timeout: Duration) -> Router {
    let mut routes = Router::new()
        .route("/v1/collections", get(collections::list_collections))
        .route(
            "/v1/collections/{c}",
            control(
                put(collections::put_collection)
                    .get(collections::get_collection)
                    .delete(collections::delete_collection),
            ),
        )
        .route(
            "/v1/collections/{c}/documents",
            ingest(bulk::ingest_documents),
        )
        .route(
            "/v1/collections/{c}/documents/{id}",
            get(documents::get_document).delete(documents::delete_document),
        )
        .route(
            "/v1/collections/{c}/search",
            control(get(search::search_get).post(search::search_post)),
        )
        .route("/v1/dlq", get(dlq::list_dlq).delete(dlq::purge_dlq))
        .route("/v1/dlq/replay", control(post(dlq::replay_dlq)))
        .route("/", get(es_compat::info))
        .route("/_cluster/health", get(es_compat::cluster_health))
        .route(
            "/{index}",
            control(
                head(es_compat::index_exists)
                    .get(es_indices::get_index)
                    .put(es_indices::create_index)
                    .delete(es_indices::delete_index),
            ),
        )
        .route(
            "/{index}/_doc/{id}",
            get(es_compat::get_doc)
                .delete(es_documents::delete)
                .merge(es_ingest(es_documents::index_with_id)),
        )
        .route("/{index}/_doc", es_ingest_post(es_documents::index_auto_id))
        .route("/{index}/_create/{id}", es_ingest(es_documents::create))
        .route(
            "/_mget",
            control(get(es_documents::mget).post(es_documents::mget)),
        )
        .route(
            "/{index}/_mget",
            control(get(es_documents::mget_for_index).post(es_documents::mget_for_index)),
        )
        .route("/_mapping", get(es_indices::all_mappings))
        .route("/{index}/_mapping", get(es_indices::index_mappings))
        .route(
            "/_field_caps",
            control(get(es_indices::all_field_caps).post(es_indices::all_field_caps)),
        )
        .route(
            "/{index}/_field_caps",
            control(get(es_indices::index_field_caps).post(es_indices::index_field_caps)),
        )
        .route(
            "/_refresh",
            get(es_indices::refresh_all).post(es_indices::refresh_all),
        )
        .route(
            "/{index}/_refresh",
            get(es_indices::refresh_index).post(es_indices::refresh_index),
        )
        .route("/_nodes/http", get(es_setup::nodes_http))
        .route("/_nodes/{node_id}/http", get(es_setup::selected_nodes_http))
        .route("/_license", get(es_setup::license))
        .route("/_xpack", get(es_setup::xpack))
        .route("/_index_template", get(es_setup::all_index_templates))
        .route(
            "/_index_template/{name}",
            control(
                put(es_setup::put_index_template)
                    .post(es_setup::put_index_template)
                    .get(es_setup::get_index_template)
                    .head(es_setup::index_template_exists)
                    .delete(es_setup::delete_index_template),
            ),
        )
        .route(
            "/_component_template",
            get(es_setup::all_component_templates),
        )
        .route(
            "/_component_template/{name}",
            control(
                put(es_setup::put_component_template)
                    .post(es_setup::put_component_template)
                    .get(es_setup::get_component_template)
                    .head(es_setup::component_template_exists)
                    .delete(es_setup::delete_component_template),
            ),
        )
        .route("/_template", get(es_setup::all_legacy_templates))
        .route(
            "/_template/{name}",
            control(
                put(es_setup::put_legacy_template)
                    .post(es_setup::put_legacy_template)
                    .get(es_setup::get_legacy_template)
                    .head(es_setup::legacy_template_exists)
                    .delete(es_setup::delete_legacy_template),
            ),
        )
        .route("/_data_stream", get(es_data_streams::all_data_streams))
        .route(
            "/_data_stream/{name}",
            control(
                put(es_data_streams::put_data_stream)
                    .get(es_data_streams::get_data_stream)
                    .delete(es_data_streams::delete_data_stream),
            ),
        )
        .route("/_ilm/policy", get(es_setup::all_lifecycle_policies))
        .route(
            "/_ilm/policy/{name}",
            control(
                put(es_setup::put_lifecycle_policy)
                    .get(es_setup::get_lifecycle_policy)
                    .delete(es_setup::delete_lifecycle_policy),
            ),
        )
        .route(
            "/{index}/_count",
            control(get(es_search::count).post(es_search::count)),
        )
        .route(
            "/{index}/_search",
            control(get(es_search::search).post(es_search::search)),
        )
        .route(
            "/_search",
            control(get(es_search::search_all).post(es_search::search_all)),
        )
        .route(
            "/_count",
            control(get(es_search::count_all).post(es_search::count_all)),
        )
        .route(
            "/_msearch",
            control(get(es_search::msearch_default).post(es_search::msearch_default)),
        )
        .route(
            "/{index}/_msearch",
            control(get(es_search::msearch_for_index).post(es_search::msearch_for_index)),
        )
        .route("/_bulk", es_ingest(es_bulk::bulk))
        .route("/{index}/_bulk", es_ingest(es_bulk::bulk_for_index))
        .route("/_internal_/healthcheck", get(ops::healthcheck))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi));
    if state.inner.faults.is_enabled() {
        routes = routes.route(
            "/_internal_/faults/{point}",
            put(faults::set_fault).delete(faults::clear_fault),
        );
        routes = routes.route("/_internal_/panic", post(faults::panic_now));
    }
    routes
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn(move |request, next| {
            body::enforce_body_deadline(body_read_timeout, request, next)
        }))
        .layer(middleware::from_fn(record_http_metrics))
        .layer(middleware::from_fn(error::trace_requests))
        .with_state(state)
}

/// Largest body of a control route (a schema, a search, a replay selection): axum's
/// default limit, stated once.
const CONTROL_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// A control route (schema, search, replay): bodies up to [`CONTROL_BODY_LIMIT`], and a
/// declared `Content-Length` over it answers 413 before the body is read, so the client
/// gets its answer instead of a connection closed under its upload.
fn control(route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    route
        .layer::<_, std::convert::Infallible>(RequestBodyLimitLayer::new(CONTROL_BODY_LIMIT))
        .layer(DefaultBodyLimit::max(CONTROL_BODY_LIMIT))
}

/// `POST` to an ingest handler: the body decoded (gzip, zstd, br) in a streaming layer and
/// not limited by axum, because the handler limits the decoded bytes itself.
fn ingest<H, T>(handler: H) -> MethodRouter<AppState>
where
    H: Handler<T, AppState>,
    T: 'static,
{
    ingest_on(MethodFilter::POST, handler)
}

/// An Elasticsearch ingest route: like [`ingest`], for `PUT` as well, which the official
/// clients send to `_bulk`.
fn es_ingest<H, T>(handler: H) -> MethodRouter<AppState>
where
    H: Handler<T, AppState>,
    T: 'static,
{
    ingest_on(MethodFilter::POST.or(MethodFilter::PUT), handler)
}

/// An Elasticsearch ingest route taking `POST` only (`POST /{index}/_doc`).
fn es_ingest_post<H, T>(handler: H) -> MethodRouter<AppState>
where
    H: Handler<T, AppState>,
    T: 'static,
{
    ingest_on(MethodFilter::POST, handler)
}

fn ingest_on<H, T>(methods: MethodFilter, handler: H) -> MethodRouter<AppState>
where
    H: Handler<T, AppState>,
    T: 'static,
{
    on(methods, handler)
        .layer::<_, std::convert::Infallible>(RequestDecompressionLayer::new())
        .layer(DefaultBodyLimit::disable())
}

async fn record_http_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(m::HTTP_REQUESTS_TOTAL, "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(m::HTTP_REQUEST_DURATION_SECONDS, "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}
