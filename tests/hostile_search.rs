//! Hostile searches against a real `sluice serve`: queries and filters nested or long
//! enough to overflow the parser's stack are refused with `400 query_too_complex` (and
//! the process, its other collections and their results are untouched), distinct large
//! searches keep the result cache within its byte budget and the memory bounded, and a
//! page of thousands of hits gets highlights only for its first ones.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::Server;

/// `indexer.search_cache_size` of these servers.
const CACHE_BUDGET: u64 = 16 * 1024 * 1024;
/// `indexer.highlight_max_hits` of these servers.
const HIGHLIGHT_MAX_HITS: usize = 20;

async fn start(dir: &std::path::Path) -> Server {
    let config = format!(
        "[indexer]\nsearch_cache_size = \"{}MiB\"\nhighlight_max_hits = {HIGHLIGHT_MAX_HITS}\n",
        CACHE_BUDGET >> 20
    );
    Server::start(&dir.join("data"), Some(&config)).await
}

/// A collection of the first `docs` corpus documents, searchable.
async fn corpus_collection(server: &Server, name: &str, docs: usize) {
    assert_eq!(
        server
            .put_schema(name, &support::corpus_schema())
            .await
            .status(),
        201
    );
    let (lines, _) = support::corpus(docs);
    for chunk in lines.chunks(1000) {
        let (status, result) = server
            .ingest(name, chunk.join("\n") + "\n", "searchable")
            .await;
        assert_eq!(status, 200, "{result}");
        assert_eq!(result["rejected"], 0, "{result}");
    }
}

/// `POST /v1/collections/{c}/search` with a JSON body: status and body.
async fn search_post(server: &Server, collection: &str, body: &Value) -> (u16, Value) {
    let response = server
        .client
        .post(server.url(&format!("/v1/collections/{collection}/search")))
        .json(body)
        .send()
        .await
        .expect("POST search");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// Asserts the documented error shape with code `query_too_complex`, and that the
/// message names `limit`.
fn assert_too_complex(case: &str, status: u16, body: &Value, limit: &str) {
    assert_eq!(status, 400, "{case}: {body}");
    let object = body.as_object().expect("an object");
    assert_eq!(
        object.keys().collect::<Vec<_>>(),
        ["error"],
        "{case}: {body}"
    );
    let error = body["error"].as_object().expect("error object");
    let mut keys: Vec<&String> = error.keys().collect();
    keys.sort();
    assert_eq!(keys, ["code", "message", "trace_id"], "{case}: {body}");
    assert_eq!(error["code"], "query_too_complex", "{case}: {body}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(limit), "{case}: {message}");
    assert!(message.len() < 300, "{case}: the message echoes the query");
    assert!(
        !error["trace_id"].as_str().unwrap().is_empty(),
        "{case}: {body}"
    );
}

/// What a control search answers, without `took_ms` (which varies).
async fn control_results(server: &Server) -> Vec<Value> {
    let mut results = Vec::new();
    for query in [
        vec![("q", "body:daxihhex"), ("limit", "50")],
        vec![("q", "title:(snb OR cgh)"), ("sort", "price:desc")],
        vec![("filter", "tags:tag15"), ("limit", "100")],
    ] {
        let (status, mut body) = server.search("control", &query).await;
        assert_eq!(status, 200, "{body}");
        body.as_object_mut().unwrap().remove("took_ms");
        results.push(body);
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_long_queries_are_refused_and_harm_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    corpus_collection(&server, "control", 300).await;
    corpus_collection(&server, "target", 50).await;
    let control_doc = server
        .get_json("/v1/collections/control/documents/doc-7")
        .await;
    let before = control_results(&server).await;

    let nested = |inner: &str| format!("{}{inner}{}", "(".repeat(3000), ")".repeat(3000));
    let depth = "indexer.max_query_depth";
    let length = "indexer.max_query_length";
    let posted = [
        (
            "3,000 nested groups in q",
            json!({"q": nested("body:x")}),
            depth,
        ),
        (
            "3,000 nested groups in a filter",
            json!({"filter": ["tags:tag01", nested("tags:tag01")]}),
            depth,
        ),
        (
            "2,000 nested field groups in q",
            json!({"q": format!("{}x{}", "body:(".repeat(2000), ")".repeat(2000))}),
            depth,
        ),
        (
            "100k unmatched ( in q",
            json!({"q": "(".repeat(100_000)}),
            length,
        ),
        (
            "100k unmatched ( in a filter",
            json!({"filter": ["(".repeat(100_000)]}),
            length,
        ),
        (
            "100k NOT in q",
            json!({"q": format!("{}x", "NOT ".repeat(100_000))}),
            length,
        ),
        (
            "1,000 NOT in a filter",
            json!({"filter": [format!("{}tags:tag01", "NOT ".repeat(1000))]}),
            depth,
        ),
        (
            "a long filter list",
            json!({"filter": vec!["tags:tag01"; 2000]}),
            length,
        ),
    ];
    for (case, body, limit) in &posted {
        let (status, answer) = search_post(&server, "target", body).await;
        assert_too_complex(case, status, &answer, limit);
    }
    // The same through query parameters (short enough for any URI limit).
    let deep_q = format!("{}body:x{}", "(".repeat(40), ")".repeat(40));
    let deep_filter = format!("{}tags:tag01", "NOT ".repeat(40));
    for (case, query) in [
        ("GET: 40 nested groups in q", vec![("q", deep_q.as_str())]),
        (
            "GET: 40 NOT in a filter",
            vec![("q", "body:x"), ("filter", deep_filter.as_str())],
        ),
    ] {
        let (status, answer) = server.search("target", &query).await;
        assert_too_complex(case, status, &answer, depth);
    }
    // Just within the limit is a search like any other.
    let within = format!("{}body:daxihhex{}", "(".repeat(32), ")".repeat(32));
    let (status, answer) = server.search("target", &[("q", within.as_str())]).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["total"].as_u64().unwrap() > 0, "{answer}");

    // The process is the one that was hit, healthy, and the control collection is as
    // it was: its document, its search results, and it still takes writes.
    let health = server.get("/_internal_/healthcheck").await;
    assert_eq!(health.status(), 200);
    assert!(server.rss_bytes() > 0, "the same process answers");
    assert_eq!(
        server
            .get_json("/v1/collections/control/documents/doc-7")
            .await,
        control_doc
    );
    assert_eq!(control_results(&server).await, before);
    let (status, result) = server
        .ingest(
            "control",
            "{\"id\":\"after\",\"title\":\"written after the attack\",\"body\":\"qqafter\",\"author\":\"a\",\"ts\":0}\n",
            "searchable",
        )
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(server.total("control", "body:qqafter").await, 1);
    assert!(
        server.metric("sluice_search_requests_total").await >= posted.len() as f64,
        "refusals are counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_large_searches_keep_the_cache_within_its_byte_budget() {
    const DOCS: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    corpus_collection(&server, "big", DOCS).await;
    let server = &server;
    let page = |limit: usize| {
        let limit = limit.to_string();
        async move {
            let (status, body) = server
                .search("big", &[("limit", limit.as_str()), ("highlight", "false")])
                .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["hits"].as_array().unwrap().len(), DOCS);
        }
    };
    // One page first, so the allocator's working set for a page is in the baseline.
    page(9000).await;
    let baseline = server.rss_bytes();

    // 60 distinct requests, each answering every document (about 3.4 MB of hits).
    let mut cached_bytes = Vec::new();
    for limit in 9941..=10_000 {
        page(limit).await;
        let weighed = server.metric("sluice_search_cache_bytes").await;
        assert!(
            weighed <= CACHE_BUDGET as f64,
            "after limit={limit}: {weighed} weighed bytes, budget {CACHE_BUDGET}"
        );
        cached_bytes.push(weighed);
    }
    // The budget holds some of them: caching works, it is bounded, not off.
    assert!(
        cached_bytes.iter().all(|&w| w >= (DOCS * 1000) as f64),
        "{cached_bytes:?}"
    );

    // Unbounded, 60 such answers kept ~200 MB; allow the budget and room for the
    // allocator's slack.
    let grown = server.rss_bytes().saturating_sub(baseline);
    assert!(
        grown < CACHE_BUDGET + 64 * 1024 * 1024,
        "RSS grew by {} MiB over 60 distinct large searches",
        grown >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_thousands_of_hits_gets_highlights_for_its_first_hits_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    corpus_collection(&server, "pages", 1000).await;
    let (status, body) = server
        .search(
            "pages",
            &[
                ("q", "body:daxihhex"),
                ("limit", "10000"),
                ("highlight", "true"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let hits = body["hits"].as_array().unwrap();
    assert!(hits.len() > 10 * HIGHLIGHT_MAX_HITS, "{} hits", hits.len());
    assert_eq!(hits.len() as u64, body["total"].as_u64().unwrap());
    for (position, hit) in hits.iter().enumerate() {
        let highlights = hit["highlights"].as_object().expect("highlights object");
        if position < HIGHLIGHT_MAX_HITS {
            let snippet = highlights
                .get("body")
                .and_then(|snippets| snippets[0].as_str())
                .unwrap_or_default();
            assert!(
                snippet.contains("<em>daxihhex</em>"),
                "hit {position}: {highlights:?}"
            );
        } else {
            assert!(highlights.is_empty(), "hit {position}: {highlights:?}");
        }
    }
    // The server answered within the client's timeout and is still healthy.
    assert!(
        support::eventually(Duration::from_secs(5), || async {
            server.get("/_internal_/healthcheck").await.status() == 200
        })
        .await
    );
}
