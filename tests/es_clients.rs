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
from elasticsearch import Elasticsearch, BadRequestError, ConflictError, NotFoundError, helpers

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
current = es.get(index="esdocs", id="c1")
r = es.index(index="esdocs", id="c1", document={"title": "changed once"},
             if_seq_no=current["_seq_no"], if_primary_term=current["_primary_term"])
out["if_seq_no"] = [r["result"], r["_seq_no"] > current["_seq_no"],
                    es.get(index="esdocs", id="c1")["_seq_no"] == r["_seq_no"]]
docs["c1"] = {"title": "changed once"}
try:
    es.index(index="esdocs", id="c1", document={"title": "stale"},
             if_seq_no=current["_seq_no"], if_primary_term=current["_primary_term"])
    out["if_seq_no_stale"] = "no error"
except ConflictError as e:
    out["if_seq_no_stale"] = [e.meta.status, e.error]
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
es.indices.create_data_stream(name="logs-app-default")
events = ({"_op_type": "create", "_index": "logs-app-default",
           "_source": {"@timestamp": f"2024-06-01T00:00:{i:02d}Z", "message": f"event {i}"}}
          for i in range(20))
ok, errors = helpers.bulk(es, events, refresh="wait_for")
streams = es.indices.get_data_stream(name="logs-app-*")["data_streams"]
out["data_stream"] = [ok, len(errors), es.count(index="logs-app-default")["count"],
                      [s["name"] for s in streams], streams[0]["timestamp_field"]["name"]]
es.indices.delete_data_stream(name="logs-app-default")
try:
    es.indices.get_data_stream(name="logs-app-default")
    out["data_stream_gone"] = "still there"
except NotFoundError as e:
    out["data_stream_gone"] = e.meta.status
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
    assert_eq!(
        summary["if_seq_no"],
        json!(["updated", true, true]),
        "{summary}"
    );
    assert_eq!(
        summary["if_seq_no_stale"],
        json!([409, "version_conflict_engine_exception"]),
        "{summary}"
    );
    assert_eq!(summary["delete"], "deleted", "{summary}");
    assert_eq!(summary["delete_again"], 404, "{summary}");
    assert_eq!(
        summary["data_stream"],
        json!([20, 0, 20, ["logs-app-default"], "@timestamp"]),
        "{summary}"
    );
    assert_eq!(summary["data_stream_gone"], 404, "{summary}");

    // Every document reads back exactly as the script wrote it (one indexed without
    // `_id` has its assigned id written into its primary key), the deleted one is not
    // found.
    let written = summary["written"].as_object().unwrap();
    let mget = summary["mget"].as_array().unwrap();
    assert_eq!(mget.len(), written.len() + 1, "{summary}");
    for entry in mget {
        let id = entry[0].as_str().unwrap();
        match written.get(id) {
            Some(doc) => {
                assert_eq!(entry[1], true, "{id}: {summary}");
                let mut source = entry[2].as_object().unwrap().clone();
                if !["d1", "c1"].contains(&id) {
                    assert_eq!(source.remove("id"), Some(Value::from(id)), "{id}");
                }
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

/// What the search script does: writes the corpus with the client, then runs each
/// supported clause, `count`, `msearch` and aggregations, and prints, for each case,
/// what sluice answered beside what the corpus itself says (computed in Python from the
/// documents, never from sluice).
const SEARCH_SCRIPT: &str = r#"
import collections, datetime, json, re, sys
from elasticsearch import Elasticsearch, helpers, BadRequestError, NotFoundError

url, corpus_path = sys.argv[1], sys.argv[2]
es = Elasticsearch(url, request_timeout=120)
docs = [json.loads(line) for line in open(corpus_path)]
ok, errors = helpers.bulk(es, ({"_index": "essearch", "_id": d["id"], "_source": d} for d in docs),
                          chunk_size=500, refresh="wait_for")
assert ok == len(docs) and not errors, (ok, errors)

tokens = lambda text: [t for t in re.split(r"[^0-9a-z]+", text.lower()) if t]
words = {d["id"]: (set(tokens(d["title"])), tokens(d["body"])) for d in docs}
probe = docs[len(docs) // 2]
w1 = tokens(probe["title"])[0]
w2 = tokens(probe["body"])[3]
pair = tokens(probe["body"])[5:7]
epoch = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
secs = lambda d: (datetime.datetime.fromisoformat(d["ts"].replace("Z", "+00:00")) - epoch).total_seconds()
in_title = lambda d, w: w in words[d["id"]][0]
in_body = lambda d, w: w in words[d["id"]][1]
has_pair = lambda d: any(words[d["id"]][1][i:i + 2] == pair for i in range(len(words[d["id"]][1])))
expected = lambda pred: sum(1 for d in docs if pred(d))
tag = probe["tags"][0]

cases = {
    "match_all": ({"match_all": {}}, lambda d: True),
    "match": ({"match": {"title": w1}}, lambda d: in_title(d, w1)),
    "match_and": ({"match": {"body": {"query": f"{w1} {w2}", "operator": "and"}}},
                  lambda d: in_body(d, w1) and in_body(d, w2)),
    "match_phrase": ({"match_phrase": {"body": " ".join(pair)}}, has_pair),
    "multi_match": ({"multi_match": {"query": w1, "fields": ["title", "body"]}},
                    lambda d: in_title(d, w1) or in_body(d, w1)),
    "query_string": ({"query_string": {"query": f"title:{w1} OR body:{w2}"}},
                     lambda d: in_title(d, w1) or in_body(d, w2)),
    "simple_query_string": ({"simple_query_string": {"query": f"{w1} {w2}", "fields": ["title"]}},
                            lambda d: in_title(d, w1) or in_title(d, w2)),
    "term": ({"term": {"tags": tag}}, lambda d: tag in d["tags"]),
    "terms": ({"terms": {"author": [docs[0]["author"], docs[1]["author"]]}},
              lambda d: d["author"] in (docs[0]["author"], docs[1]["author"])),
    "range": ({"range": {"price": {"gte": 1000, "lt": 3000}}}, lambda d: 1000 <= d["price"] < 3000),
    "range_date_math": ({"range": {"ts": {"gte": "2026-01-01||+100s", "lt": "2026-01-01T00:00:00Z||+10m"}}},
                        lambda d: 100 <= secs(d) < 600),
    "exists": ({"exists": {"field": "tags"}}, lambda d: bool(d.get("tags"))),
    "prefix": ({"prefix": {"author": "author01"}}, lambda d: d["author"].startswith("author01")),
    "bool": ({"bool": {"must": [{"match": {"body": w2}}], "filter": [{"range": {"price": {"gte": 2000}}}],
                       "must_not": [{"term": {"tags": tag}}]}},
             lambda d: in_body(d, w2) and d["price"] >= 2000 and tag not in d["tags"]),
    "bool_should": ({"bool": {"should": [{"term": {"tags": tag}}, {"match": {"title": w1}}],
                              "minimum_should_match": 1}},
                    lambda d: tag in d["tags"] or in_title(d, w1)),
}
results = {}
for name, (query, pred) in cases.items():
    got = es.search(index="essearch", query=query, size=0, track_total_hits=True)["hits"]["total"]["value"]
    results[name] = [got, expected(pred)]
results["count"] = [es.count(index="essearch", query=cases["range"][0])["count"], expected(cases["range"][1])]

page = es.search(index="essearch", query={"match_all": {}}, sort=[{"price": {"order": "desc"}}], size=5, from_=2)
by_price = sorted(docs, key=lambda d: (-d["price"], d["id"]))[2:7]
results["sorted_page"] = [[h["_id"] for h in page["hits"]["hits"]], [d["id"] for d in by_price]]
results["sorted_sources"] = [[h["_source"] for h in page["hits"]["hits"]], by_price]
results["sort_values"] = [[h["sort"][0] for h in page["hits"]["hits"]], [d["price"] for d in by_price]]
filtered = es.search(index="essearch", query={"term": {"_id": probe["id"]}}, source=["title", "price"])
results["source_filter"] = [filtered["hits"]["hits"][0]["_source"], {"title": probe["title"], "price": probe["price"]}]
lit = es.search(index="essearch", query={"match": {"title": w1}}, highlight={"fields": {"title": {}}}, size=1)
results["highlight"] = [f"<em>{w1}</em>" in lit["hits"]["hits"][0]["highlight"]["title"][0].lower(), True]
multi = es.msearch(searches=[{"index": "essearch"}, {"query": cases["term"][0], "size": 0},
                             {"index": "essearch"}, {"query": cases["match"][0], "size": 0}])
results["msearch"] = [[r["hits"]["total"]["value"] for r in multi["responses"]],
                      [expected(cases["term"][1]), expected(cases["match"][1])]]
try:
    es.search(index="essearch", query={"wildcard": {"author": "a*"}})
    results["unsupported"] = ["answered", "refused"]
except BadRequestError as error:
    results["unsupported"] = ["refused" if "wildcard" in str(error) else str(error), "refused"]

aggs = {
    "tags": {"terms": {"field": "tags", "size": 100}, "aggs": {"avg_price": {"avg": {"field": "price"}}}},
    "top_authors": {"terms": {"field": "author", "size": 5}},
    "prices": {"stats": {"field": "price"}},
    "per_minute": {"date_histogram": {"field": "ts", "calendar_interval": "minute"}},
    "price_ranges": {"range": {"field": "price", "ranges": [{"to": 1000}, {"from": 1000, "to": 5000}, {"from": 5000}]}},
    "authors": {"cardinality": {"field": "author"}},
    "median": {"percentiles": {"field": "price", "percents": [50]}},
}
answer = es.search(index="essearch", size=0, aggs=aggs)
got = answer["aggregations"]
tag_docs = collections.defaultdict(list)
for d in docs:
    for t in d["tags"]:
        tag_docs[t].append(d["price"])
results["terms"] = [{b["key"]: b["doc_count"] for b in got["tags"]["buckets"]},
                    {t: len(p) for t, p in tag_docs.items()}]
results["terms_sub_avg"] = [{b["key"]: round(b["avg_price"]["value"], 6) for b in got["tags"]["buckets"]},
                            {t: round(sum(p) / len(p), 6) for t, p in tag_docs.items()}]
authors = collections.Counter(d["author"] for d in docs)
results["top_authors"] = [[b["doc_count"] for b in got["top_authors"]["buckets"]],
                          [n for _, n in authors.most_common(5)]]
results["top_authors_keys"] = [all(authors[b["key"]] == b["doc_count"] for b in got["top_authors"]["buckets"]), True]
prices = [d["price"] for d in docs]
results["stats"] = [[got["prices"][k] for k in ("count", "min", "max", "sum")],
                    [len(prices), float(min(prices)), float(max(prices)), float(sum(prices))]]
minutes = collections.Counter(int(secs(d) // 60) for d in docs)
results["date_histogram"] = [[b["doc_count"] for b in got["per_minute"]["buckets"]],
                             [minutes[m] for m in range(max(minutes) + 1)]]
results["date_histogram_first_key"] = [got["per_minute"]["buckets"][0]["key_as_string"][:19], "2026-01-01T00:00:00"]
results["range_agg"] = [[b["doc_count"] for b in got["price_ranges"]["buckets"]],
                        [sum(p < 1000 for p in prices), sum(1000 <= p < 5000 for p in prices), sum(p >= 5000 for p in prices)]]
results["cardinality_close"] = [abs(got["authors"]["value"] - len(authors)) <= 0.05 * len(authors), True,
                                got["authors"]["value"], len(authors)]
median = sorted(prices)[len(prices) // 2]
results["median_close"] = [abs(got["median"]["values"]["50.0"] - median) <= 0.03 * median, True,
                           got["median"]["values"]["50.0"], median]
# The same corpus split over two indices, searched as one through a pattern and a list.
halves = {"esmulti-a": docs[: len(docs) // 2], "esmulti-b": docs[len(docs) // 2:]}
for index, part in halves.items():
    ok, errors = helpers.bulk(es, ({"_index": index, "_id": d["id"], "_source": d} for d in part),
                              chunk_size=500, refresh="wait_for")
    assert ok == len(part) and not errors, (ok, errors)
home = {d["id"]: index for index, part in halves.items() for d in part}
for name in ("match", "bool", "range_date_math"):
    query, pred = cases[name]
    got_total = es.search(index="esmulti-*", query=query, size=0)["hits"]["total"]["value"]
    results["multi_" + name] = [got_total, expected(pred)]
results["multi_count"] = [es.count(index="esmulti-a,esmulti-b")["count"], len(docs)]
multi_page = es.search(index="esmulti-*", query={"match_all": {}}, sort=[{"price": "desc"}], size=5, from_=2)
results["multi_sorted_page"] = [[[h["_id"], h["_index"]] for h in multi_page["hits"]["hits"]],
                                [[d["id"], home[d["id"]]] for d in by_price]]
multi_aggs = es.search(index="esmulti-a,esmulti-b", size=0,
                       aggs={"tags": {"terms": {"field": "tags", "size": 100}}})["aggregations"]
results["multi_terms"] = [{b["key"]: b["doc_count"] for b in multi_aggs["tags"]["buckets"]},
                          {t: len(p) for t, p in tag_docs.items()}]
results["multi_no_match"] = [es.search(index="nomatch-*")["hits"]["total"]["value"], 0]
try:
    es.search(index="esmulti-a,nosuch")
    results["multi_missing"] = ["answered", 404]
except NotFoundError as error:
    results["multi_missing"] = [error.meta.status, 404]
print(json.dumps({"results": results, "aggs": aggs, "es_aggregations": got}))
"#;

/// The official Python client searches, counts and aggregates a collection it wrote;
/// every answer is checked against what the corpus itself holds, and the native search
/// API gives the same aggregations as `_search`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_searches_and_aggregates_the_corpus() {
    let python = python_with_client();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    assert_eq!(
        server
            .put_schema("essearch", &support::corpus_schema())
            .await
            .status(),
        201
    );
    for index in ["esmulti-a", "esmulti-b"] {
        let schema = support::corpus_schema();
        assert_eq!(server.put_schema(index, &schema).await.status(), 201);
    }
    let (lines, _) = corpus(DOCS);
    let corpus_path = dir.path().join("corpus.ndjson");
    std::fs::write(&corpus_path, lines.join("\n")).unwrap();

    let mut command = Command::new(python);
    command.args(["-c", SEARCH_SCRIPT]);
    let summary = run_client(command, server.url(""), corpus_path).await;
    let results = summary["results"].as_object().expect("results");
    assert!(results.len() >= 35, "{summary}");
    let mut mismatches = Vec::new();
    for (case, pair) in results {
        if pair[0] != pair[1] {
            mismatches.push(format!("{case}: sluice vs corpus: {pair}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // A case that matches nothing would prove little.
    for case in [
        "match",
        "match_phrase",
        "term",
        "bool",
        "range_date_math",
        "prefix",
    ] {
        assert!(
            results[case][1].as_u64().unwrap() > 0,
            "{case} matches nothing"
        );
    }

    // The native API answers the same aggregations.
    let native = server
        .client
        .post(server.url("/v1/collections/essearch/search"))
        .json(&serde_json::json!({"limit": 0, "aggs": summary["aggs"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(native.status(), 200);
    let native: Value = native.json().await.unwrap();
    assert_eq!(native["aggregations"], summary["es_aggregations"]);
}
