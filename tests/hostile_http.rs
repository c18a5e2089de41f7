//! Hostile HTTP clients against a real `sluice serve`: slow bodies from one address do
//! not starve a producer on another, and every rejection has the documented error shape.
//!
//! Linux lets a client bind any 127.x.y.z source address, so the attacker connects from
//! 127.0.0.2 and the producer from 127.0.0.1: two client addresses on one machine.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{eventually, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const PRODUCER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// A TCP connection to `server` from `source`.
async fn connect_from(source: Ipv4Addr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(server).await
}

/// How one slow connection ended.
#[derive(Debug)]
struct SlowEnd {
    /// The status line's code, when the server answered before closing.
    status: Option<u16>,
    /// From the request head to the connection's end.
    lasted: Duration,
}

/// Sends a chunked ingest request a byte per `pause` until the server answers or closes.
async fn trickle(
    server: SocketAddr,
    pause: Duration,
    give_up: Duration,
    open: Arc<AtomicUsize>,
) -> SlowEnd {
    let started = Instant::now();
    let Ok(mut stream) = connect_from(ATTACKER, server).await else {
        return SlowEnd {
            status: None,
            lasted: started.elapsed(),
        };
    };
    open.fetch_add(1, Ordering::SeqCst);
    let head = "POST /v1/collections/victim/documents HTTP/1.1\r\nhost: sluice\r\n\
                content-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n";
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    if stream.write_all(head.as_bytes()).await.is_ok() {
        while started.elapsed() < give_up {
            if stream.write_all(b"1\r\n{\r\n").await.is_err() {
                break;
            }
            match tokio::time::timeout(pause, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                Err(_) => continue,
            }
        }
        // Whatever else the server sent before it closed.
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    }
    open.fetch_sub(1, Ordering::SeqCst);
    let status = std::str::from_utf8(&answer)
        .ok()
        .and_then(|text| text.strip_prefix("HTTP/1.1 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    SlowEnd {
        status,
        lasted: started.elapsed(),
    }
}

fn producer_client() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(PRODUCER))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_from_one_address_do_not_starve_a_producer_on_another() {
    let grace = Duration::from_secs(5);
    let dir = tempfile::tempdir().unwrap();
    // The node-wide bound stays the default 64 in-flight ingest requests; the body read
    // timeout is long, so only the minimum rate can cut the trickling bodies in time.
    let config = format!(
        "[server]\nbody_read_timeout = \"300s\"\nmin_body_rate = \"1KiB\"\nbody_rate_grace = \"{}s\"\n\
         max_connections_per_client = 100\nmax_in_flight_per_client = 16\n",
        grace.as_secs()
    );
    let server = Server::start(&dir.path().join("data"), Some(&config)).await;
    let address = server.socket_addr();
    let producer = producer_client();
    let ingest = |batch: usize| {
        let body: String = (0..100)
            .map(|i| format!("{{\"id\":\"p{batch}-{i}\",\"text\":\"producer line\"}}\n"))
            .collect();
        producer
            .post(server.url("/v1/collections/control/documents"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
    };
    assert_eq!(ingest(0).await.unwrap().status(), 200);

    // 200 connections, each sending its body a byte every 200 ms.
    let open = Arc::new(AtomicUsize::new(0));
    let give_up = Duration::from_secs(120);
    let attack: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(trickle(
                address,
                Duration::from_millis(200),
                give_up,
                open.clone(),
            ))
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || {
            let open = open.clone();
            async move { open.load(Ordering::SeqCst) >= 16 }
        })
        .await,
        "the attacker holds connections"
    );

    // While the attack holds what it can, the producer's ingest succeeds every time.
    let mut statuses = Vec::new();
    for batch in 1..=20 {
        statuses.push(ingest(batch).await.unwrap().status().as_u16());
    }
    let attack_open_after_producer = open.load(Ordering::SeqCst);
    assert!(
        statuses.iter().all(|&status| status == 200),
        "producer statuses during the attack: {statuses:?}"
    );
    assert!(
        attack_open_after_producer > 0,
        "the producer ran while attacker connections were open"
    );
    assert_eq!(
        producer
            .get(server.url("/_internal_/healthcheck"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Every attacker connection is cut: refused at accept, 429 past its in-flight share,
    // or 408 once the grace period is over; none lasts until the body read timeout.
    let bound = grace + Duration::from_secs(20);
    let mut by_status = std::collections::BTreeMap::<Option<u16>, usize>::new();
    for task in attack {
        let end = task.await.unwrap();
        assert!(
            end.lasted < bound,
            "an attacker connection lasted {:?} (bound {bound:?}): {end:?}",
            end.lasted
        );
        *by_status.entry(end.status).or_default() += 1;
    }
    let timed_out = by_status.get(&Some(408)).copied().unwrap_or(0);
    let refused = by_status.get(&Some(429)).copied().unwrap_or(0);
    assert!((1..=16).contains(&timed_out), "{by_status:?}");
    assert!(refused >= 1, "{by_status:?}");
    assert_eq!(by_status.values().sum::<usize>(), 200);

    // The producer's documents are all there; the victim got none.
    let response = producer
        .get(server.url("/v1/collections/control/search?q=*&limit=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let total = |body: Value| body["total"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body: Value = producer
            .get(server.url("/v1/collections/control/search?q=*&limit=0"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if total(body.clone()) == 2100 {
            break;
        }
        assert!(Instant::now() < deadline, "control documents: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.get("/_internal_/healthcheck").await.status(), 200);
}

/// Sends raw bytes as one request from the producer address; returns the status, the
/// headers (lower-cased) and the body of the answer.
async fn raw_request(server: SocketAddr, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = connect_from(PRODUCER, server).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head, answer[split + 4..].to_vec())
}

/// Asserts the documented error shape: JSON content type, `code`, a message and the
/// trace id (also in `x-trace-id`).
fn assert_shape(
    what: &str,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
    code: &str,
) {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: content type {content_type:?}, status {status}, body {:?}",
        String::from_utf8_lossy(body)
    );
    let body: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(
        !body["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{what}: {body}"
    );
    let trace_id = body["error"]["trace_id"].as_str().unwrap_or("");
    assert!(!trace_id.is_empty(), "{what}: {body}");
    assert_eq!(
        headers.get("x-trace-id").and_then(|v| v.to_str().ok()),
        Some(trace_id),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_has_the_documented_error_shape() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let config = "[server]\nmin_body_rate = \"1KiB\"\nbody_rate_grace = \"1s\"\n\
                  [faults]\nenabled = true\n";
    let server = Server::start_logging_to(&dir.path().join("data"), Some(config), &log_path).await;
    let client = &server.client;
    let long_query = format!("/v1/collections/c/search?q={}", "a".repeat(40 * 1024));
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "invalid UTF-8 in a path segment",
            client.get(server.url("/v1/collections/%FF%FE")),
            400,
            "invalid_request",
        ),
        (
            "invalid UTF-8 in a document id",
            client.get(server.url("/v1/collections/c/documents/%C3%28")),
            400,
            "invalid_request",
        ),
        (
            "a request target over the limit",
            client.get(server.url(&long_query)),
            414,
            "uri_too_long",
        ),
        (
            "an unknown content encoding on ingest",
            client
                .post(server.url("/v1/collections/c/documents"))
                .header("content-encoding", "compress")
                .body("{}\n"),
            415,
            "unsupported_media_type",
        ),
        (
            "an unknown content encoding on the bulk API",
            client
                .post(server.url("/_bulk"))
                .header("content-encoding", "lz4")
                .body("{}\n"),
            415,
            "unsupported_media_type",
        ),
        (
            "a content type that is not NDJSON",
            client
                .post(server.url("/v1/collections/c/documents"))
                .header("content-type", "application/xml")
                .body("<a/>"),
            415,
            "unsupported_media_type",
        ),
        (
            "a query string that does not parse",
            client.get(server.url("/v1/dlq?limit=many")),
            400,
            "invalid_request",
        ),
        (
            "an unknown query parameter",
            client.get(server.url("/v1/dlq?colection=c")),
            400,
            "invalid_request",
        ),
        (
            "an unknown wait mode",
            client
                .post(server.url("/v1/collections/c/documents?wait=forever"))
                .body("{}\n"),
            400,
            "invalid_request",
        ),
        (
            "a purge selector of the wrong type",
            client.delete(server.url("/v1/dlq?all=maybe")),
            400,
            "invalid_request",
        ),
        (
            "a fault plan that is not JSON",
            client
                .put(server.url("/_internal_/faults/store"))
                .header("content-type", "application/json")
                .body("{"),
            400,
            "invalid_request",
        ),
        (
            "a fault plan without a JSON content type",
            client
                .put(server.url("/_internal_/faults/store"))
                .body("{}"),
            400,
            "invalid_request",
        ),
        (
            "an empty search body",
            client.post(server.url("/v1/collections/c/search")),
            400,
            "invalid_request",
        ),
        (
            "no such route",
            client.get(server.url("/v2/nothing")),
            404,
            "not_found",
        ),
        (
            "a method the route does not take",
            client.patch(server.url("/v1/collections/c")),
            405,
            "method_not_allowed",
        ),
        (
            "a handler panic",
            client.post(server.url("/_internal_/panic")),
            500,
            "internal",
        ),
    ];
    for (what, request, status, code) in cases {
        let response = request.send().await.unwrap();
        let headers = response.headers().clone();
        let got = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        assert_eq!(got, status, "{what}: {:?}", String::from_utf8_lossy(&body));
        assert_shape(what, got, &headers, &body, code);
    }

    // Requests only a raw client sends: a malformed chunked body, a body slower than the
    // minimum rate.
    let address = server.socket_addr();
    let (status, head, body) = raw_request(
        address,
        b"POST /v1/collections/c/search HTTP/1.1\r\nhost: s\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    )
    .await;
    assert_raw_shape(
        "a malformed chunked body",
        status,
        &head,
        &body,
        400,
        "invalid_request",
    );
    // Bodies over the limit are refused from their Content-Length, before they are read:
    // sent as a head alone, so that the answer cannot race the client's upload.
    for (what, method, path) in [
        (
            "a schema body over the body limit",
            "PUT",
            "/v1/collections/big",
        ),
        (
            "a search body over the body limit",
            "POST",
            "/v1/collections/big/search",
        ),
        (
            "a replay body over the body limit",
            "POST",
            "/v1/dlq/replay",
        ),
    ] {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: s\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            3 << 20
        );
        let (status, head, body) = raw_request(address, head.as_bytes()).await;
        assert_raw_shape(what, status, &head, &body, 413, "payload_too_large");
    }
    let mut slow = connect_from(PRODUCER, address).await.unwrap();
    slow.write_all(
        b"PUT /v1/collections/slow HTTP/1.1\r\nhost: s\r\ncontent-length: 100000\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut answer))
        .await
        .expect("the slow body is cut")
        .unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    assert_raw_shape(
        "a body below the minimum rate",
        status,
        &head,
        &answer[split + 4..],
        408,
        "request_timeout",
    );

    // The panic was logged as an ERROR line with its message and location, and the server
    // still serves.
    assert_eq!(server.get("/_internal_/healthcheck").await.status(), 200);
    let logged = eventually(Duration::from_secs(10), || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        async move {
            log.lines().any(|line| {
                line.contains("ERROR")
                    && line.contains("panic requested through /_internal_/panic")
                    && line.contains("faults.rs:")
            })
        }
    })
    .await;
    assert!(logged, "no ERROR line for the panic in the log");
}

fn assert_raw_shape(what: &str, status: u16, head: &str, body: &[u8], want: u16, code: &str) {
    assert_eq!(
        status,
        want,
        "{what}: {head} {:?}",
        String::from_utf8_lossy(body)
    );
    let mut headers = reqwest::header::HeaderMap::new();
    for line in head.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(
                reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                value.trim().parse().unwrap(),
            );
        }
    }
    // A chunked answer: the JSON is inside the first chunk.
    let body = if headers.get("transfer-encoding").is_some() {
        let text = String::from_utf8_lossy(body);
        let start = text.find('{').unwrap_or(0);
        let end = text.rfind('}').map_or(text.len(), |i| i + 1);
        text[start..end].as_bytes().to_vec()
    } else {
        body.to_vec()
    };
    assert_shape(what, status, &headers, &body, code);
}
