//! The failure paths of the Elasticsearch document, index and setup routes over real HTTP,
//! and the durability of what the setup routes store. Errors carry Elasticsearch's shape
//! (`error.type`, `error.reason`, `status`) and sluice's (`error.code`).

use serde_json::{json, Value};

use crate::support::Server;

/// Sends `method path` with an optional JSON body; the status and the JSON answer.
async fn call(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = server.client.request(method, server.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Asserts an error answer in both shapes.
fn assert_error(answer: &(u16, Value), status: u16, es_type: &str, code: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["error"]["type"], es_type, "{body}");
    assert_eq!(body["error"]["root_cause"][0]["type"], es_type, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["trace_id"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es_mappings_sluice_cannot_honour_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    for (mappings, named) in [
        (json!({"properties": {"addr": {"type": "ip"}}}), "[ip]"),
        (
            json!({"properties": {"tag": {"type": "keyword", "ignore_above": 256}}}),
            "ignore_above",
        ),
        (
            json!({"properties": {"title": {"type": "text", "fields": {"raw": {"type": "keyword"}}}}}),
            "[fields]",
        ),
        (json!({"dynamic": false}), "dynamic"),
    ] {
        let answer = call(
            &server,
            "PUT",
            "/refused",
            Some(json!({ "mappings": mappings })),
        )
        .await;
        assert_error(&answer, 400, "mapper_parsing_exception", "invalid_schema");
        let reason = answer.1["error"]["reason"].as_str().unwrap();
        assert!(reason.contains(named), "{mappings}: {reason}");
        assert_eq!(
            server.get("/v1/collections/refused").await.status(),
            404,
            "nothing is created"
        );
    }
    let created = call(
        &server,
        "PUT",
        "/accepted",
        Some(json!({"mappings": {"properties": {"n": {"type": "integer"}}}})),
    )
    .await;
    assert_eq!(created.0, 200, "{}", created.1);
    let schema = server.get_json("/v1/collections/accepted").await;
    let n = schema["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|field| field["name"] == "n")
        .cloned()
        .unwrap();
    assert_eq!(n["type"], "i64", "{schema}");
    let caps = server.get_json("/accepted/_field_caps?fields=n,i*").await;
    assert_eq!(caps["indices"], json!(["accepted"]), "{caps}");
    assert_eq!(
        caps["fields"],
        json!({"n": {"long": {"type": "long", "metadata_field": false, "searchable": true, "aggregatable": true}},
               "id": {"keyword": {"type": "keyword", "metadata_field": false, "searchable": true, "aggregatable": true}}}),
        "{caps}"
    );
    let again = call(&server, "PUT", "/accepted", None).await;
    assert_error(
        &again,
        400,
        "resource_already_exists_exception",
        "collection_exists",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es_create_of_an_existing_id_is_a_409_and_keeps_the_first_document() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    let first = call(
        &server,
        "PUT",
        "/books/_create/1",
        Some(json!({"title": "first"})),
    )
    .await;
    assert_eq!(first.0, 201, "{}", first.1);
    assert_eq!(first.1["result"], "created");
    for (method, path) in [
        ("PUT", "/books/_create/1"),
        ("POST", "/books/_create/1"),
        ("PUT", "/books/_doc/1?op_type=create"),
    ] {
        let again = call(&server, method, path, Some(json!({"title": "second"}))).await;
        assert_error(
            &again,
            409,
            "version_conflict_engine_exception",
            "document_exists",
        );
    }
    let stored = server.get_json("/books/_doc/1").await;
    assert_eq!(stored["_source"]["title"], "first", "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es_deletes_of_a_missing_index_or_document_are_404s() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    let missing_index = call(&server, "DELETE", "/nosuch", None).await;
    assert_error(
        &missing_index,
        404,
        "index_not_found_exception",
        "collection_not_found",
    );
    assert_eq!(missing_index.1["error"]["index"], "nosuch");
    let in_missing_index = call(&server, "DELETE", "/nosuch/_doc/1", None).await;
    assert_error(
        &in_missing_index,
        404,
        "index_not_found_exception",
        "collection_not_found",
    );
    let written = call(
        &server,
        "PUT",
        "/books/_doc/1?refresh=true",
        Some(json!({"title": "kept"})),
    )
    .await;
    assert_eq!(written.0, 201, "{}", written.1);
    let missing_doc = call(&server, "DELETE", "/books/_doc/2", None).await;
    assert_eq!(missing_doc.0, 404, "{}", missing_doc.1);
    assert_eq!(missing_doc.1["result"], "not_found");
    assert_eq!(server.total("books", "*").await, 1, "nothing else changed");
    let deleted = call(&server, "DELETE", "/books/_doc/1?refresh=wait_for", None).await;
    assert_eq!(deleted.0, 200, "{}", deleted.1);
    assert_eq!(deleted.1["result"], "deleted");
    assert_eq!(server.total("books", "*").await, 0);
    let index_deleted = call(&server, "DELETE", "/books", None).await;
    assert_eq!(index_deleted, (200, json!({"acknowledged": true})));
    assert_error(
        &call(&server, "GET", "/books/_mapping", None).await,
        404,
        "index_not_found_exception",
        "collection_not_found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es_templates_and_policies_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    let index_template = json!({"index_patterns": ["logs-*"], "priority": 3,
        "template": {"mappings": {"properties": {"msg": {"type": "text"}}}}});
    let component = json!({"template": {"settings": {"number_of_shards": 1}}});
    let legacy = json!({"index_patterns": ["old-*"], "order": 2});
    let policy =
        json!({"policy": {"phases": {"delete": {"min_age": "30d", "actions": {"delete": {}}}}}});
    for (path, body) in [
        ("/_index_template/logs", &index_template),
        ("/_component_template/base", &component),
        ("/_template/old", &legacy),
        ("/_ilm/policy/retention", &policy),
    ] {
        let answer = call(&server, "PUT", path, Some(body.clone())).await;
        assert_eq!(answer, (200, json!({"acknowledged": true})), "{path}");
    }
    let missing = call(&server, "GET", "/_index_template/nope", None).await;
    assert_error(
        &missing,
        404,
        "resource_not_found_exception",
        "definition_not_found",
    );
    let no_patterns = call(
        &server,
        "PUT",
        "/_index_template/bad",
        Some(json!({"template": {}})),
    )
    .await;
    assert_eq!(no_patterns.0, 400, "{}", no_patterns.1);

    let server = server.kill9_and_restart().await;
    assert_eq!(
        server.get_json("/_index_template/logs").await,
        json!({"index_templates": [{"name": "logs", "index_template": index_template}]})
    );
    assert_eq!(
        server.get_json("/_component_template/base").await,
        json!({"component_templates": [{"name": "base", "component_template": component}]})
    );
    assert_eq!(
        server.get_json("/_template/old").await,
        json!({"old": {"index_patterns": ["old-*"], "order": 2, "settings": {}, "mappings": {}, "aliases": {}}})
    );
    let got = server.get_json("/_ilm/policy/retention").await;
    assert_eq!(got["retention"]["policy"], policy["policy"], "{got}");
    assert_eq!(got["retention"]["version"], 1, "{got}");
    assert!(server.get_json("/_template").await.get("old").is_some());
    for (path, status) in [
        ("/_component_template/base", 200),
        ("/_component_template/nope", 404),
        ("/_index_template/logs", 200),
        ("/_template/old", 200),
    ] {
        let head = server.client.head(server.url(path)).send().await.unwrap();
        assert_eq!(head.status(), status, "HEAD {path}");
    }

    // A second put bumps the version; a delete removes it for good.
    call(
        &server,
        "PUT",
        "/_ilm/policy/retention",
        Some(policy.clone()),
    )
    .await;
    let got = server.get_json("/_ilm/policy/retention").await;
    assert_eq!(got["retention"]["version"], 2, "{got}");
    let deleted = call(&server, "DELETE", "/_index_template/logs", None).await;
    assert_eq!(deleted, (200, json!({"acknowledged": true})));
    let server = server.kill9_and_restart().await;
    assert_eq!(server.get("/_index_template/logs").await.status(), 404);
    assert_eq!(
        server.get_json("/_index_template/*").await,
        json!({"index_templates": []})
    );
    assert_eq!(
        server.get_json("/_ilm/policy").await["retention"]["version"],
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es_an_index_template_shapes_an_index_its_first_write_creates() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    let component =
        json!({"template": {"mappings": {"properties": {"host": {"type": "keyword"}}}}});
    let low = json!({"index_patterns": ["logs-*"], "priority": 1,
        "template": {"mappings": {"properties": {"level": {"type": "text"}}}}});
    let high = json!({"index_patterns": ["logs-app*"], "priority": 5, "composed_of": ["hosts"],
        "template": {"settings": {"number_of_shards": 3},
                     "mappings": {"properties": {"level": {"type": "keyword"}, "n": {"type": "long"}}}}});
    let bad = json!({"index_patterns": ["bad-*"], "template": {"mappings": {"properties": {"ip": {"type": "ip"}}}}});
    for (path, body) in [
        ("/_component_template/hosts", &component),
        ("/_index_template/low", &low),
        ("/_index_template/high", &high),
        ("/_index_template/bad", &bad),
    ] {
        let answer = call(&server, "PUT", path, Some(body.clone())).await;
        assert_eq!(answer.0, 200, "{path}: {}", answer.1);
    }
    let bulk = concat!(
        "{\"index\":{\"_index\":\"logs-app1\",\"_id\":\"1\"}}\n{\"level\":\"warn\",\"n\":5,\"host\":\"a\"}\n",
        "{\"index\":{\"_index\":\"logs-app1\",\"_id\":\"2\"}}\n{\"n\":\"five\"}\n",
        "{\"index\":{\"_index\":\"logs-other\",\"_id\":\"1\"}}\n{\"level\":\"warn\"}\n",
        "{\"index\":{\"_index\":\"bad-1\",\"_id\":\"1\"}}\n{\"ip\":\"10.0.0.1\"}\n",
        "{\"index\":{\"_index\":\"plain\",\"_id\":\"1\"}}\n{\"n\":\"five\"}\n",
    );
    let response = server
        .client
        .post(server.url("/_bulk?refresh=wait_for"))
        .header("content-type", "application/x-ndjson")
        .body(bulk)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let statuses: Vec<(u64, &str)> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let item = &item["index"];
            (
                item["status"].as_u64().unwrap(),
                item["error"]["type"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            (201, ""),
            (400, "wrong_type"),
            (201, ""),
            (400, "invalid_schema"),
            (201, "")
        ],
        "{body}"
    );
    let reason = body["items"][3]["index"]["error"]["reason"]
        .as_str()
        .unwrap();
    assert!(
        reason.contains("[bad]") && reason.contains("[ip]"),
        "{reason}"
    );
    assert_eq!(server.get("/v1/collections/bad-1").await.status(), 404);

    // The higher priority template, with its component's fields, and its shards.
    let mapping = server.get_json("/logs-app1/_mapping").await;
    let properties = &mapping["logs-app1"]["mappings"]["properties"];
    assert_eq!(properties["level"]["type"], "keyword", "{mapping}");
    assert_eq!(properties["n"]["type"], "long", "{mapping}");
    assert_eq!(properties["host"]["type"], "keyword", "{mapping}");
    let index = server.get_json("/logs-app1").await;
    assert_eq!(
        index["logs-app1"]["settings"]["index"]["number_of_shards"],
        "3"
    );
    let other = server.get_json("/logs-other/_mapping").await;
    assert_eq!(
        other["logs-other"]["mappings"]["properties"]["level"]["type"], "text",
        "{other}"
    );
    assert_eq!(server.total("logs-app1", "level:warn").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es_node_selectors_name_this_node_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    let address = server.base.trim_start_matches("http://").to_owned();
    for (path, nodes) in [
        ("/_nodes/http", 1),
        ("/_nodes/_all/http", 1),
        ("/_nodes/_local,other/http", 1),
        ("/_nodes/other/http", 0),
    ] {
        let answer = server.get_json(path).await;
        let listed = answer["nodes"].as_object().unwrap();
        assert_eq!(listed.len(), nodes, "{path}: {answer}");
        assert_eq!(answer["_nodes"]["total"], nodes, "{path}: {answer}");
        if let Some(node) = listed.values().next() {
            assert_eq!(
                node["http"]["publish_address"],
                address.as_str(),
                "{answer}"
            );
        }
    }
    let xpack = server.get_json("/_xpack").await;
    assert_eq!(xpack["features"]["ilm"]["available"], false, "{xpack}");
    assert_eq!(xpack["license"]["status"], "active", "{xpack}");
}
