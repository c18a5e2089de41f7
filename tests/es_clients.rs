//! The official Elasticsearch clients against a real `sluice serve`, unchanged and with
//! their default settings.
//!
//! The Node.js client (npm `@elastic/elasticsearch`, 9.x) runs too: `./scripts/test`
//! installs it into `.tools/node` (`SLUICE_ES_NODE_CLIENT` names another directory).
//! The Python client (PyPI `elasticsearch`, 9.x) is the first (`info`, the bulk helpers,
//! `get`, `exists`, `count`, `indices.exists`, `cluster.health`): `./scripts/test` installs
//! it into `.tools/venv` and names its interpreter in `SLUICE_ES_PYTHON`. Its document,
//! index-management and setup APIs are tested in a second script. Without it the
//! test fails and says how to get it; it never passes by skipping. The client sends
//! `PUT /_bulk` with `application/vnd.elasticsearch+x-ndjson; compatible-with=9` and
//! refuses any answer without `X-Elastic-Product: Elasticsearch`; its helpers raise on
//! the first failed item, so a run that prints its summary wrote everything.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
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

/// What the script does with the client's document, index and setup APIs; prints one
/// JSON summary line of what the client got back, which the test checks against what the
/// script wrote.
const MANAGEMENT_SCRIPT: &str = r#"
import json, sys
from elasticsearch import Elasticsearch, BadRequestError, ConflictError, NotFoundError

url = sys.argv[1]
es = Elasticsearch(url, request_timeout=120)
out = {}
mappings = {"properties": {"title": {"type": "text"}, "tags": {"type": "keyword"},
                           "n": {"type": "long"}, "price": {"type": "double"},
                           "ok": {"type": "boolean"}, "ts": {"type": "date"}}}
created = es.indices.create(index="esdocs", mappings=mappings,
                            settings={"number_of_shards": 2, "number_of_replicas": 1})
out["created"] = [created["acknowledged"], created["index"]]
try:
    es.indices.create(index="esdocs")
    out["created_again"] = "no error"
except BadRequestError as e:
    out["created_again"] = [e.meta.status, e.error]
out["mapping"] = es.indices.get_mapping(index="esdocs")["esdocs"]["mappings"]
out["shards"] = es.indices.get(index="esdocs")["esdocs"]["settings"]["index"]["number_of_shards"]

docs = {"d1": {"title": "red fox", "tags": ["a", "b"], "n": 3, "price": 1.5, "ok": True,
               "ts": "2024-05-01T10:00:00Z"},
        "c1": {"title": "created once"}}
r = es.index(index="esdocs", id="d1", document=dict(docs["d1"], n=2))
out["index_id"] = [r["result"], r["_id"], r.meta.status]
r = es.index(index="esdocs", id="d1", document=docs["d1"])
out["reindex_id"] = [r["result"], r.meta.status]
r = es.index(index="esdocs", document={"title": "auto id"})
out["index_auto"] = r["result"]
docs[r["_id"]] = {"title": "auto id"}
r = es.create(index="esdocs", id="c1", document=docs["c1"])
out["create"] = [r["result"], r.meta.status]
try:
    es.create(index="esdocs", id="c1", document={"title": "again"})
    out["create_twice"] = "no error"
except ConflictError as e:
    out["create_twice"] = [e.meta.status, e.error]
es.index(index="esdocs", id="gone", document={"title": "to delete"})
out["delete"] = es.delete(index="esdocs", id="gone")["result"]
try:
    es.delete(index="esdocs", id="gone")
    out["delete_again"] = "no error"
except NotFoundError as e:
    out["delete_again"] = e.meta.status
ids = sorted(docs) + ["gone"]
got = es.mget(index="esdocs", ids=ids)["docs"]
out["mget"] = [[d["_id"], d["found"], d.get("_source")] for d in got]
out["written"] = docs
mixed = es.mget(docs=[{"_index": "esdocs", "_id": "d1"}, {"_index": "nosuch", "_id": "x"}])["docs"]
out["mget_mixed"] = [mixed[0]["found"], mixed[1]["error"]["type"]]
out["refresh_failed"] = es.indices.refresh(index="esdocs")["_shards"]["failed"]
out["count_after_refresh"] = es.count(index="esdocs")["count"]

es.indices.put_index_template(name="logs-tpl", index_patterns=["logs-*"], priority=7,
                              template={"settings": {"number_of_shards": 1}})
out["template"] = es.indices.get_index_template(name="logs-tpl")["index_templates"]
out["template_exists"] = bool(es.indices.exists_index_template(name="logs-tpl"))
policy = {"phases": {"hot": {"actions": {"rollover": {"max_age": "1d"}}}}}
es.ilm.put_lifecycle(name="hot-only", policy=policy)
got = es.ilm.get_lifecycle(name="hot-only")["hot-only"]
out["policy"] = [got["policy"] == policy, got["version"]]
lic = es.license.get()["license"]
out["license"] = [lic["type"], lic["status"]]
nodes = list(es.nodes.info(metric="http")["nodes"].values())
out["nodes"] = [len(nodes), nodes[0]["http"]["publish_address"]]

out["deleted_index"] = es.indices.delete(index="esdocs")["acknowledged"]
out["exists_after_delete"] = bool(es.indices.exists(index="esdocs"))
try:
    es.indices.delete(index="esdocs")
    out["delete_index_again"] = "no error"
except NotFoundError as e:
    out["delete_index_again"] = [e.meta.status, e.error]
print(json.dumps(out))
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

/// The Python client's document, index-management and setup APIs against a real node:
/// `index` (with and without an id), `create` twice, `delete`, `mget`, `indices.create`
/// with mappings, `get_mapping`, `refresh`, `delete` and `exists`, index templates,
/// lifecycle policies, `license.get` and `nodes.info`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_manages_documents_indexes_and_setup() {
    let python = python_with_client();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    let mut command = Command::new(python);
    command.args(["-c", MANAGEMENT_SCRIPT]);
    let summary = run_client(command, server.url(""), dir.path().join("unused")).await;

    assert_eq!(summary["created"], json!([true, "esdocs"]), "{summary}");
    assert_eq!(
        summary["created_again"],
        json!([400, "resource_already_exists_exception"]),
        "{summary}"
    );
    // The mappings read back are the ones written (integers as long, floats as double),
    // plus the primary key.
    let properties = &summary["mapping"]["properties"];
    for (field, es_type) in [
        ("title", "text"),
        ("tags", "keyword"),
        ("n", "long"),
        ("price", "double"),
        ("ok", "boolean"),
        ("ts", "date"),
        ("id", "keyword"),
    ] {
        assert_eq!(properties[field]["type"], es_type, "{field}: {summary}");
    }
    assert_eq!(properties.as_object().unwrap().len(), 7, "{summary}");
    assert_eq!(summary["shards"], "2", "{summary}");

    assert_eq!(
        summary["index_id"],
        json!(["created", "d1", 201]),
        "{summary}"
    );
    assert_eq!(summary["reindex_id"], json!(["updated", 200]), "{summary}");
    assert_eq!(summary["index_auto"], "created", "{summary}");
    assert_eq!(summary["create"], json!(["created", 201]), "{summary}");
    assert_eq!(
        summary["create_twice"],
        json!([409, "version_conflict_engine_exception"]),
        "{summary}"
    );
    assert_eq!(summary["delete"], "deleted", "{summary}");
    assert_eq!(summary["delete_again"], 404, "{summary}");

    // Every document reads back as the script wrote it (the primary key filled from
    // `_id` aside), the deleted one is not found.
    let written = summary["written"].as_object().unwrap();
    let mget = summary["mget"].as_array().unwrap();
    assert_eq!(mget.len(), written.len() + 1, "{summary}");
    for entry in mget {
        let id = entry[0].as_str().unwrap();
        match written.get(id) {
            Some(doc) => {
                assert_eq!(entry[1], true, "{id}: {summary}");
                let mut source = entry[2].as_object().unwrap().clone();
                source.remove("id");
                assert_eq!(&Value::Object(source), doc, "{id}");
            }
            None => {
                assert_eq!(id, "gone");
                assert_eq!(entry[1], false, "{summary}");
            }
        }
    }
    let auto_id = written
        .keys()
        .find(|id| !["d1", "c1"].contains(&id.as_str()))
        .unwrap();
    assert_eq!(auto_id.len(), 36, "an assigned id is a UUID: {auto_id}");
    assert_eq!(
        summary["mget_mixed"],
        json!([true, "index_not_found_exception"]),
        "{summary}"
    );
    // Right after the refresh, a count sees every document written before it.
    assert_eq!(summary["refresh_failed"], 0, "{summary}");
    assert_eq!(
        summary["count_after_refresh"],
        written.len() as u64,
        "{summary}"
    );

    assert_eq!(
        summary["template"],
        json!([{"name": "logs-tpl", "index_template": {
            "index_patterns": ["logs-*"], "priority": 7,
            "template": {"settings": {"number_of_shards": 1}}}}]),
        "{summary}"
    );
    assert_eq!(summary["template_exists"], true, "{summary}");
    assert_eq!(summary["policy"], json!([true, 1]), "{summary}");
    assert_eq!(summary["license"], json!(["basic", "active"]), "{summary}");
    let address = server
        .base
        .trim_start_matches("http://")
        .trim_end_matches('/');
    assert_eq!(summary["nodes"], json!([1, address]), "{summary}");

    assert_eq!(summary["deleted_index"], true, "{summary}");
    assert_eq!(summary["exists_after_delete"], false, "{summary}");
    assert_eq!(
        summary["delete_index_again"],
        json!([404, "index_not_found_exception"]),
        "{summary}"
    );
    assert_eq!(
        server.get("/v1/collections/esdocs").await.status(),
        404,
        "the collection is gone"
    );
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
