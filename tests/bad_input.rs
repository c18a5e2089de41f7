//! Hostile and broken input against a real `sluice serve`: every case gets a clear 4xx
//! with a stable code, the good lines of the same request are accepted, and the server
//! keeps serving. Cases already covered in `tests/api.rs` (malformed JSON, invalid UTF-8,
//! wrong content type, truncated gzip, small bombs) are not repeated here.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(4);
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(4);

/// A server with short slow-client timeouts and a 16 MiB body limit, and a client that
/// does not keep idle connections (the server closes them after the header timeout).
async fn start(dir: &std::path::Path) -> Server {
    let config = format!(
        "[server]\nheader_read_timeout = \"{}s\"\nbody_read_timeout = \"{}s\"\n\
         [ingest]\nmax_body_size = \"16MiB\"\n",
        HEADER_READ_TIMEOUT.as_secs(),
        BODY_READ_TIMEOUT.as_secs()
    );
    let mut server = Server::start(&dir.join("data"), Some(&config)).await;
    server.client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let schema = json!({"strict": true, "fields": [
        {"name": "id", "type": "string"},
        {"name": "title", "type": "text"},
        {"name": "n", "type": "i64", "required": false},
        {"name": "u", "type": "u64", "required": false},
        {"name": "x", "type": "f64", "required": false},
        {"name": "j", "type": "json", "required": false}]});
    assert_eq!(server.put_schema("strict", &schema).await.status(), 201);
    server
}

/// The codes of the rejected lines, by line number.
fn line_codes(result: &Value) -> Vec<(u64, String)> {
    result["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn assert_still_serving(server: &Server) {
    let (status, result) = server
        .ingest(
            "strict",
            "{\"id\":\"alive\",\"title\":\"still here\"}\n",
            "durable",
        )
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["accepted"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lines_are_refused_by_code_and_the_good_ones_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;

    let good = |i: usize| format!("{{\"id\":\"good-{i}\",\"title\":\"fine line {i}\"}}");
    let mut body: Vec<u8> = Vec::new();
    let mut push = |line: &[u8]| {
        body.extend_from_slice(line);
        body.push(b'\n');
    };
    push(good(1).as_bytes()); // 1
    push(b"{\"id\":\"nul\",\"title\":\"a\0b\"}"); // 2: a raw NUL inside a string
    push(b"{\"id\":\"nul2\",\0\"title\":\"ab\"}"); // 3: a raw NUL between tokens
    push(br#"{"id":"nul-escaped","title":"a\u0000b"}"#); // 4: an escaped NUL is JSON
    let ten_mib = format!("{{\"id\":\"huge\",\"title\":\"{}\"}}", "y".repeat(10 << 20));
    push(ten_mib.as_bytes()); // 5
    push(good(2).as_bytes()); // 6
    let deep = format!(
        "{{\"id\":\"deep\",\"j\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    push(deep.as_bytes()); // 7
    push(br#"{"id":"i64","title":"t","n":9223372036854775808}"#); // 8
    push(br#"{"id":"u64","title":"t","u":18446744073709551616}"#); // 9
    push(br#"{"id":"u64neg","title":"t","u":-1}"#); // 10
    push(br#"{"id":"float","title":"t","x":1e400}"#); // 11
    push(br#"{"id":"float-in-json","title":"t","j":{"deep":-2e999}}"#); // 12
    push(br#"{"id":"dup","title":"t","title":"u"}"#); // 13
    push(br#"{"id":"unknown","title":"t","color":"magenta-secret"}"#); // 14
    push(br#"{"id":"max","title":"t","n":-9223372036854775808,"u":18446744073709551615,"x":1.7976931348623157e308}"#); // 15
    push(good(3).as_bytes()); // 16

    let (status, result) = server.ingest("strict", body, "searchable").await;
    assert_eq!(status, 200, "{result}");
    let codes = line_codes(&result);
    let expected: Vec<(u64, String)> = [
        (2, "malformed_json"),
        (3, "malformed_json"),
        (5, "line_too_large"),
        (7, "nesting_too_deep"),
        (8, "number_out_of_range"),
        (9, "number_out_of_range"),
        (10, "number_out_of_range"),
        (11, "number_out_of_range"),
        (12, "number_out_of_range"),
        (13, "duplicate_key"),
        (14, "unknown_field"),
    ]
    .into_iter()
    .map(|(l, c)| (l, c.to_owned()))
    .collect();
    assert_eq!(codes, expected);
    assert_eq!(result["accepted"], 5);
    for message in result["errors"].as_array().unwrap() {
        let message = message["message"].as_str().unwrap();
        assert!(
            !message.contains("magenta") && !message.contains("yyyy"),
            "{message}"
        );
    }
    // The good lines, the escaped NUL and the extreme-but-valid numbers are stored.
    assert_eq!(server.total("strict", "*").await, 5);
    let doc = server
        .get_json("/v1/collections/strict/documents/nul-escaped")
        .await;
    assert_eq!(doc["title"], "a\u{0}b");
    let doc = server
        .get_json("/v1/collections/strict/documents/max")
        .await;
    assert_eq!(doc["u"], json!(u64::MAX));
    assert_eq!(doc["n"], json!(i64::MIN));
    assert_still_serving(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_level_refusals_keep_the_server_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;

    // Empty and whitespace-only bodies, on both ingest endpoints.
    for (path, body) in [
        ("/v1/collections/strict/documents", ""),
        ("/v1/collections/strict/documents", " \n\r\n\t\n"),
        ("/_bulk", ""),
        ("/strict/_bulk", "\n\n"),
    ] {
        let response = server
            .client
            .post(server.url(path))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path} {body:?}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_request");
        assert!(error["error"]["trace_id"].as_str().is_some());
    }
    // An empty body does not create a collection either.
    let response = server
        .client
        .post(server.url("/v1/collections/never_created/documents"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        server.get("/v1/collections/never_created").await.status(),
        404
    );

    // Wrong content type on the bulk API.
    let response = server
        .client
        .post(server.url("/_bulk"))
        .header("content-type", "text/csv")
        .body("a,b\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unsupported_media_type");

    // A malformed action line refuses the whole bulk request, nothing written.
    let response = server
        .client
        .post(server.url("/strict/_bulk"))
        .header("content-type", "application/x-ndjson")
        .body(
            "{\"index\":{\"_id\":\"before\"}}\n{\"title\":\"t\"}\n{\"index\":\n{\"title\":\"t\"}\n",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_request");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("line 3"));
    // Bad sources fail alone in the bulk API too.
    let response = server
        .client
        .post(server.url("/strict/_bulk?refresh=wait_for"))
        .header("content-type", "application/json")
        .body(
            [
                "{\"index\":{\"_id\":\"b1\"}}",
                "{\"title\":\"ok\"}",
                "{\"index\":{\"_id\":\"b2\"}}",
                "{\"title\":\"ok\",\"title\":\"dup\"}",
                "{\"index\":{\"_id\":\"b3\"}}",
                "{\"title\":\"ok\",\"n\":1e400}",
                "{\"create\":{\"_id\":\"b4\"}}",
                "not json at all",
                "{\"index\":{\"_id\":\"b5\"}}",
                "{\"title\":\"ok\"}",
            ]
            .join("\n"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.unwrap();
    assert_eq!(result["errors"], true);
    let statuses: Vec<(u64, Option<&str>)> = result["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let item = item.as_object().unwrap().values().next().unwrap();
            (
                item["status"].as_u64().unwrap(),
                item["error"]["type"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            (201, None),
            (400, Some("duplicate_key")),
            (400, Some("number_out_of_range")),
            (400, Some("malformed_json")),
            (201, None)
        ]
    );
    assert_eq!(server.total("strict", "_id:b1 OR _id:b5").await, 2);
    assert_eq!(server.total("strict", "*").await, 2);

    // Invalid queries: 400 invalid_query, never a 500.
    for q in [
        "title:(unclosed",
        "\"unterminated phrase",
        "n:[1 TO",
        "n:[a TO b]",
        "title:",
        "AND OR NOT",
    ] {
        let (status, body) = server.search("strict", &[("q", q)]).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{q}");
    }
    let (status, body) = server
        .search("strict", &[("q", "*"), ("filter", "n:[1 TO")])
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_query");

    // A 1 GiB zstd bomb (a few KiB on the wire) stops at the 16 MiB body limit; the
    // server's peak memory does not follow the decoded size.
    let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
    let zeros = vec![b' '; 1 << 20];
    for _ in 0..1024 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "the bomb is small on the wire");
    let peak_before = server.peak_rss_bytes();
    let response = server
        .client
        .post(server.url("/v1/collections/strict/documents"))
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "zstd")
        .body(bomb.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "payload_too_large");
    let response = server
        .client
        .post(server.url("/strict/_bulk"))
        .header("content-encoding", "zstd")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let grown = server.peak_rss_bytes().saturating_sub(peak_before);
    assert!(
        grown < 256 << 20,
        "peak memory grew by {} MiB for a body limited to 16 MiB",
        grown >> 20
    );
    assert_still_serving(&server).await;
}

/// Writes `head` then `trickle` one byte every 200 ms until the server stops the
/// connection; returns what the server answered and how long the connection lasted.
async fn slow_client(addr: &str, head: Vec<u8>, trickle: Vec<u8>) -> (String, Duration) {
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let read = tokio::spawn(async move {
        let mut answer = Vec::new();
        // EOF or a reset both end the connection; keep what arrived before.
        let _ = reader.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    });
    let _ = writer.write_all(&head).await;
    for byte in trickle {
        if read.is_finished() || writer.write_all(&[byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the server cut the slow client off")
        .unwrap();
    (answer, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let addr = server.base.trim_start_matches("http://").to_owned();

    // Long enough that only the timeouts can end them (200 ms a byte).
    let endless = vec![b'a'; 1000];
    let header_slow = (0..4).map(|_| {
        let head =
            b"POST /v1/collections/strict/documents HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec();
        tokio::spawn(slow_client_owned(addr.clone(), head, endless.clone()))
    });
    let body_slow = (0..4).map(|_| {
        let head = format!(
            "POST /v1/collections/strict/documents HTTP/1.1\r\nHost: x\r\n\
             Content-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
            endless.len()
        )
        .into_bytes();
        tokio::spawn(slow_client_owned(addr.clone(), head, endless.clone()))
    });
    let header_slow: Vec<_> = header_slow.collect();
    let body_slow: Vec<_> = body_slow.collect();

    // Meanwhile, everyone else is served.
    for i in 0..5 {
        let (status, result) = server
            .ingest(
                "strict",
                format!("{{\"id\":\"meanwhile-{i}\",\"title\":\"served\"}}\n"),
                "durable",
            )
            .await;
        assert_eq!(status, 200, "{result}");
        assert_eq!(server.get("/_internal_/healthcheck").await.status(), 200);
    }
    let still_open = header_slow
        .iter()
        .chain(&body_slow)
        .filter(|t| !t.is_finished())
        .count();

    for task in header_slow {
        let (answer, lasted) = task.await.unwrap();
        // hyper closes the connection without a response when the head is late.
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
        assert!(lasted >= HEADER_READ_TIMEOUT, "{lasted:?}");
    }
    let mut answered_408 = 0;
    for task in body_slow {
        let (answer, lasted) = task.await.unwrap();
        answered_408 += usize::from(answer.starts_with("HTTP/1.1 408"));
        // The 408 is sent, though a reset of the half-read connection may beat it.
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
        if !answer.is_empty() {
            assert!(answer.contains("request_timeout"), "{answer}");
            assert!(answer.to_ascii_lowercase().contains("connection: close"));
        }
        assert!(lasted >= BODY_READ_TIMEOUT, "{lasted:?}");
    }
    assert!(answered_408 > 0, "no slow body got its 408");
    assert!(
        still_open > 0,
        "the other requests finished while slow clients were connected"
    );
    // Nothing the slow clients sent was stored, and the server still serves.
    assert_eq!(server.total("strict", "title:served").await, 5);
    assert_still_serving(&server).await;
}

async fn slow_client_owned(addr: String, head: Vec<u8>, trickle: Vec<u8>) -> (String, Duration) {
    slow_client(&addr, head, trickle).await
}
