//! The official Elasticsearch clients against a real `sluice serve`, unchanged and with
//! their default settings.
//!
//! The Node.js client (npm `@elastic/elasticsearch`, 9.x) runs too: `./scripts/test`
//! installs it into `.tools/node` (`SLUICE_ES_NODE_CLIENT` names another directory).
//! The Python client (PyPI `elasticsearch`, 9.x) is the first (`info`, the bulk helpers,
//! `get`, `exists`, `count`, `indices.exists`, `cluster.health`): `./scripts/test` installs
//! it into `.tools/venv` and names its interpreter in `SLUICE_ES_PYTHON`. Without it the
//! test fails and says how to get it; it never passes by skipping. The client sends
//! `PUT /_bulk` with `application/vnd.elasticsearch+x-ndjson; compatible-with=9` and
//! refuses any answer without `X-Elastic-Product: Elasticsearch`; its helpers raise on
//! the first failed item, so a run that prints its summary wrote everything.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{corpus, eventually, Server};

/// Names the Python interpreter that has the `elasticsearch` package.
const PYTHON_ENV: &str = "SLUICE_ES_PYTHON";

/// Documents written through the client: half with `helpers.bulk`, half with
/// `helpers.streaming_bulk`.
const DOCS: usize = 2_000;

/// What the script does with the client; prints one JSON summary line.
const CLIENT_SCRIPT: &str = r#"
import json, sys, time
from elasticsearch import Elasticsearch, helpers

url, corpus_path = sys.argv[1], sys.argv[2]
es = Elasticsearch(url, request_timeout=120)
info = es.info()
docs = [json.loads(line) for line in open(corpus_path)]
half = len(docs) // 2
actions = lambda part: ({"_index": "esclient", "_id": d["id"], "_source": d} for d in part)
bulk_ok, bulk_errors = helpers.bulk(es, actions(docs[:half]), chunk_size=250)
streamed_ok = sum(1 for ok, _ in helpers.streaming_bulk(es, actions(docs[half:]), chunk_size=250) if ok)
probe = docs[len(docs) // 3]
got = es.get(index="esclient", id=probe["id"])
deadline = time.time() + 60
while es.count(index="esclient")["count"] < len(docs) and time.time() < deadline:
    time.sleep(0.2)
word = probe["title"].split()[0]
print(json.dumps({
    "get_found": got["found"],
    "get_source_matches": got["_source"] == probe,
    "doc_exists": bool(es.exists(index="esclient", id=probe["id"])),
    "doc_missing": bool(es.exists(index="esclient", id="no-such-id")),
    "count": es.count(index="esclient")["count"],
    "count_q": es.count(index="esclient", q="title:" + word)["count"],
    "word": word,
    "version": info["version"]["number"],
    "tagline": info["tagline"],
    "bulk_ok": bulk_ok,
    "bulk_errors": len(bulk_errors),
    "streamed_ok": streamed_ok,
    "exists": bool(es.indices.exists(index="esclient")),
    "missing": bool(es.indices.exists(index="no-such-index")),
    "health": es.cluster.health()["status"],
}))
"#;

/// Names a directory whose `node_modules` holds `@elastic/elasticsearch`.
const NODE_CLIENT_ENV: &str = "SLUICE_ES_NODE_CLIENT";

/// What the Node.js script does with the client; prints one JSON summary line.
const NODE_CLIENT_SCRIPT: &str = r#"
const { Client } = require('@elastic/elasticsearch');
const fs = require('fs');
(async () => {
  const [url, corpusPath] = process.argv.slice(1);
  const client = new Client({ node: url });
  const info = await client.info();
  const docs = fs.readFileSync(corpusPath, 'utf8').split('\n').filter((l) => l).map((l) => JSON.parse(l));
  const result = await client.helpers.bulk({
    datasource: docs,
    onDocument: (doc) => ({ index: { _index: 'esnode', _id: doc.id } }),
  });
  const probe = docs[Math.floor(docs.length / 3)];
  const got = await client.get({ index: 'esnode', id: probe.id });
  console.log(JSON.stringify({
    version: info.version.number,
    total: result.total,
    successful: result.successful,
    failed: result.failed,
    found: got.found,
    source_matches: require('util').isDeepStrictEqual(got._source, probe),
    exists: await client.indices.exists({ index: 'esnode' }),
  }));
})().catch((error) => { console.error(error); process.exit(1); });
"#;

/// The `node_modules` directory with the Node.js client: [`NODE_CLIENT_ENV`]'s, else the
/// repository's `.tools/node`.
fn node_client_modules() -> PathBuf {
    let dir = std::env::var_os(NODE_CLIENT_ENV)
        .filter(|path| !path.is_empty())
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/node"),
            PathBuf::from,
        );
    let modules = dir.join("node_modules");
    let resolvable = Command::new("node")
        .args(["-e", "require('@elastic/elasticsearch')"])
        .env("NODE_PATH", &modules)
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        resolvable,
        "node cannot load @elastic/elasticsearch from {}: run ./scripts/test (it installs it \
         into .tools/node), or set {NODE_CLIENT_ENV} to a directory whose node_modules has it",
        modules.display()
    );
    modules
}

/// Runs `program` with `args`, the server URL and the corpus file; its last stdout line
/// parsed as JSON, or a failure with its stderr.
async fn run_client(mut command: Command, url: String, corpus_path: PathBuf) -> Value {
    let output = tokio::task::spawn_blocking(move || {
        command
            .arg(url.trim_end_matches('/'))
            .arg(&corpus_path)
            .output()
            .expect("run the client")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(
        output
            .stdout
            .split(|b| *b == b'\n')
            .rfind(|line| !line.is_empty())
            .expect("a summary line"),
    )
    .expect("a JSON summary")
}

/// The interpreter with the client: [`PYTHON_ENV`], else the repository's tools venv.
fn python_with_client() -> PathBuf {
    let python = std::env::var_os(PYTHON_ENV)
        .filter(|path| !path.is_empty())
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/python"),
            PathBuf::from,
        );
    let importable = Command::new(&python)
        .args(["-c", "import elasticsearch"])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        importable,
        "{} cannot import the elasticsearch client: run ./scripts/test (it installs it into \
         .tools/venv), or set {PYTHON_ENV} to a python that has it",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_bulk_helpers_write_the_corpus() {
    let python = python_with_client();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    let (lines, docs) = corpus(DOCS);
    let corpus_path = dir.path().join("corpus.ndjson");
    std::fs::write(&corpus_path, lines.join("\n")).unwrap();

    let mut command = Command::new(python);
    command.args(["-c", CLIENT_SCRIPT]);
    let summary = run_client(command, server.url(""), corpus_path).await;
    assert!(
        summary["version"].as_str().unwrap().starts_with("8."),
        "{summary}"
    );
    assert_eq!(summary["tagline"], "You Know, for Search");
    assert_eq!(summary["bulk_ok"], DOCS as u64 / 2, "{summary}");
    assert_eq!(summary["bulk_errors"], 0, "{summary}");
    assert_eq!(
        summary["streamed_ok"],
        (DOCS - DOCS / 2) as u64,
        "{summary}"
    );
    assert_eq!(summary["exists"], true, "{summary}");
    assert_eq!(summary["missing"], false, "{summary}");
    assert_eq!(summary["health"], "green", "{summary}");
    assert_eq!(summary["get_found"], true, "{summary}");
    assert_eq!(summary["get_source_matches"], true, "{summary}");
    assert_eq!(summary["doc_exists"], true, "{summary}");
    assert_eq!(summary["doc_missing"], false, "{summary}");
    assert_eq!(summary["count"], DOCS as u64, "{summary}");
    // The count of a word, against the corpus itself.
    let word = summary["word"].as_str().unwrap().to_lowercase();
    let with_word = docs
        .iter()
        .filter(|doc| {
            doc["title"]
                .as_str()
                .unwrap()
                .split(|c: char| !c.is_alphanumeric())
                .any(|token| token.to_lowercase() == word)
        })
        .count();
    assert_eq!(summary["count_q"], with_word as u64, "{summary}");

    // Everything the client wrote is stored and searchable, once.
    assert!(
        eventually(Duration::from_secs(60), || async {
            server.total("esclient", "*").await == DOCS as u64
        })
        .await,
        "searchable: {} of {DOCS}",
        server.total("esclient", "*").await
    );
    let some_id = docs[DOCS / 3]["id"].as_str().unwrap();
    let stored = server
        .get_json(&format!("/v1/collections/esclient/documents/{some_id}"))
        .await;
    assert_eq!(stored, docs[DOCS / 3]);
}

/// The official Node.js client (`@elastic/elasticsearch` 9) with its defaults:
/// `info()`, `helpers.bulk` of the corpus, `get`, `indices.exists`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_node_client_bulk_helper_writes_the_corpus() {
    let modules = node_client_modules();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    let (lines, docs) = corpus(DOCS);
    let corpus_path = dir.path().join("corpus.ndjson");
    std::fs::write(&corpus_path, lines.join("\n")).unwrap();
    let mut command = Command::new("node");
    command
        .args(["-e", NODE_CLIENT_SCRIPT])
        .env("NODE_PATH", modules);
    let summary = run_client(command, server.url(""), corpus_path).await;
    assert!(
        summary["version"].as_str().unwrap().starts_with("8."),
        "{summary}"
    );
    assert_eq!(summary["total"], DOCS as u64, "{summary}");
    assert_eq!(summary["successful"], DOCS as u64, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["found"], true, "{summary}");
    assert_eq!(summary["source_matches"], true, "{summary}");
    assert_eq!(summary["exists"], true, "{summary}");
    assert!(
        eventually(Duration::from_secs(60), || async {
            server.total("esnode", "*").await == docs.len() as u64
        })
        .await,
        "searchable: {} of {DOCS}",
        server.total("esnode", "*").await
    );
}

/// What the clients check, seen on the wire: the product header on every answer (errors
/// too), and the versioned media type echoed back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_says_elasticsearch_and_echoes_the_compatible_media_type() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    let vendor_ndjson = "application/vnd.elasticsearch+x-ndjson; compatible-with=9";
    let vendor_json = "application/vnd.elasticsearch+json; compatible-with=9";
    let response = server
        .client
        .put(server.url("/_bulk"))
        .header("content-type", vendor_ndjson)
        .header("accept", vendor_json)
        .body("{\"index\":{\"_index\":\"wire\",\"_id\":\"1\"}}\n{\"title\":\"red fox\"}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-elastic-product"], "Elasticsearch");
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.elasticsearch+json;compatible-with=9"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"], false, "{body}");

    for (method, path, status) in [
        (reqwest::Method::GET, "/", 200),
        (reqwest::Method::HEAD, "/", 200),
        (reqwest::Method::HEAD, "/wire", 200),
        (reqwest::Method::HEAD, "/absent", 404),
        (reqwest::Method::GET, "/_cluster/health", 200),
        (reqwest::Method::GET, "/no/such/route", 404),
    ] {
        let response = server
            .client
            .request(method.clone(), server.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        assert_eq!(
            response
                .headers()
                .get("x-elastic-product")
                .map(|v| v.as_bytes()),
            Some(&b"Elasticsearch"[..]),
            "{method} {path}"
        );
    }
    let info = server.get_json("/").await;
    assert_eq!(info["tagline"], "You Know, for Search");
}
