//! End-to-end tests of the load generator against a real sluice node started in-process
//! (`sluice::run` on a `127.0.0.1:0` listener and a temporary data directory), plus the
//! byte-for-byte cross-check of `sluice-loadgen corpus` with a reference script
//! `corpus.py` named by `SLUICE_CORPUS_REFERENCE`; without one the cross-check reports
//! itself skipped. Nothing here reads a file outside the repository unless told to.
//!
//! Bounds are short (a few hundred requests or a couple of seconds) so the whole file runs
//! in seconds. Every node in this process shares one Prometheus recorder, so server-side
//! deltas are checked as lower bounds.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sluice_core::config::Config;
use sluice_loadgen::corpus::{StandardCorpus, BODY_WORDS};
use sluice_loadgen::plan::{Plan, ScenarioKind, Stage};
use sluice_loadgen::runner::{self, Progress};
use sluice_loadgen::Report;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Names the reference `corpus.py` the cross-check compares the generator with.
const CORPUS_REFERENCE_ENV: &str = "SLUICE_CORPUS_REFERENCE";

/// The reference script named by [`CORPUS_REFERENCE_ENV`], if any.
fn corpus_reference() -> Option<PathBuf> {
    std::env::var_os(CORPUS_REFERENCE_ENV)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

/// Says on the terminal, past the harness's output capture, that a test was skipped.
fn report_skipped(test: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Stdout of a successful run of `command`.
fn stdout_of(command: &mut Command, what: &str) -> Vec<u8> {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("install the metrics recorder once per test process")
        })
        .clone()
}

/// A sluice node running on the test's runtime; stopped on drop.
struct Node {
    base: String,
    shutdown: CancellationToken,
    _data: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_node() -> Node {
    let data = tempfile::tempdir().expect("temp dir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let config = Config::for_test(data.path());
    tokio::spawn(sluice::run(
        config,
        listener,
        shutdown.clone(),
        Some(metrics_handle()),
    ));
    // The load generator itself waits (bounded) for the healthcheck before a run.
    Node {
        base: format!("http://{addr}"),
        shutdown,
        _data: data,
    }
}

fn plan(node: &Node, collection: &str, stages: Vec<Stage>) -> Plan {
    let mut plan = Plan::new(stages);
    plan.target = node.base.clone();
    plan.collection = collection.to_owned();
    plan.corpus.docs = 400;
    plan.request_timeout = Duration::from_secs(20);
    plan
}

async fn run(plan: &Plan) -> Report {
    runner::run(plan, Progress::Quiet, Arc::new(AtomicBool::new(false)))
        .await
        .expect("the run completes")
}

fn assert_latency_recorded(report: &Report) {
    let latency = &report.total.all.latency_ms;
    assert!(latency.count > 0);
    assert!(latency.p50 > 0.0 && latency.p50 <= latency.p90);
    assert!(latency.p90 <= latency.p99 && latency.p99 <= latency.p99_9);
    assert!(latency.p99_9 <= latency.max);
    assert!(!report.timeline.is_empty());
    assert_eq!(
        report.timeline.iter().map(|p| p.requests).sum::<u64>(),
        report.total.all.requests,
        "the timeline accounts for every request"
    );
    assert!(!report.latency_distribution.is_empty());
}

#[test]
fn corpus_verb_matches_corpus_py_byte_for_byte() {
    const TEST: &str = "corpus_verb_matches_corpus_py_byte_for_byte";
    let Some(reference) = corpus_reference() else {
        report_skipped(
            TEST,
            &format!("no reference corpus.py: set {CORPUS_REFERENCE_ENV} to compare with one"),
        );
        return;
    };
    if !reference.is_file() {
        report_skipped(
            TEST,
            &format!(
                "the reference {} ({CORPUS_REFERENCE_ENV}) is missing",
                reference.display()
            ),
        );
        return;
    }
    if Command::new("python3").arg("--version").output().is_err() {
        report_skipped(TEST, "python3, which runs the reference, is missing");
        return;
    }
    // No arguments (1,000 documents, seed 42), then sizes and seeds around the edges:
    // no document, one, multi-word seeds (CPython seeds with each 32-bit word).
    let cases: [&[&str]; 7] = [
        &[],
        &["0"],
        &["1", "--seed", "0"],
        &["37", "--seed", "7"],
        &["500", "--seed", "42"],
        &["250", "--seed", "4294967301"],
        &["--schema"],
    ];
    for args in cases {
        let expected = stdout_of(
            Command::new("python3").arg(&reference).args(args),
            &format!("python3 {} {args:?}", reference.display()),
        );
        let ours = stdout_of(
            Command::new(env!("CARGO_BIN_EXE_sluice-loadgen"))
                .arg("corpus")
                .args(args),
            &format!("sluice-loadgen corpus {args:?}"),
        );
        if ours != expected {
            let line = ours
                .split(|&b| b == b'\n')
                .zip(expected.split(|&b| b == b'\n'))
                .position(|(a, b)| a != b);
            panic!(
                "sluice-loadgen corpus {args:?} differs from corpus.py ({} bytes, theirs {}), first at line {line:?}",
                ours.len(),
                expected.len()
            );
        }
    }
}

#[test]
fn corpus_verb_prints_the_schema_and_the_documents() {
    let schema = stdout_of(
        Command::new(env!("CARGO_BIN_EXE_sluice-loadgen")).args(["corpus", "--schema"]),
        "sluice-loadgen corpus --schema",
    );
    let schema: serde_json::Value = serde_json::from_slice(&schema).expect("schema JSON");
    assert_eq!(schema["primary_key"], "id");
    let ndjson = stdout_of(
        Command::new(env!("CARGO_BIN_EXE_sluice-loadgen")).args(["corpus", "20"]),
        "sluice-loadgen corpus 20",
    );
    let mut generator = StandardCorpus::new(42, BODY_WORDS);
    let expected: Vec<u8> = (0..20)
        .flat_map(|_| format!("{}\n", generator.next_document()).into_bytes())
        .collect();
    assert_eq!(ndjson, expected, "20 documents of seed 42, one per line");
    assert!(ndjson.len() > 16_000, "about 1 KB per document");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_scenario_reports_throughput_errors_and_server_deltas() {
    let node = start_node().await;
    let mut stage = Stage::new(ScenarioKind::Ingest);
    stage.connections = 4;
    stage.requests = Some(24);
    stage.docs_per_request = 50;
    let mut plan = plan(&node, "ingest", vec![stage]);
    plan.corpus.docs = 300; // 1,200 documents sent: every id four times, so dedup has work.
    let report = run(&plan).await;

    let all = &report.total.all;
    assert_eq!(all.requests, 24);
    assert_eq!(all.ok, 24, "errors: {:?}", all.errors_by_status);
    assert_eq!(all.docs, 1200);
    assert_eq!(all.docs_accepted, 1200);
    assert!(all.docs_per_second > 0.0 && all.mb_per_second > 0.0);
    assert!(all.bytes_sent > 1_000_000, "about 1 KB per document");
    assert!(report.total.ops.contains_key("ingest"));
    assert_latency_recorded(&report);
    let server = report.server.as_ref().expect("metrics were scraped");
    assert!(
        server.ingest_documents_accepted >= 1200.0,
        "server saw {} accepted",
        server.ingest_documents_accepted
    );
    assert!(!server.counters.is_empty());

    let json = serde_json::to_value(&report).expect("serializes");
    for key in ["p50", "p90", "p99", "p99_9", "max"] {
        assert!(json["total"]["latency_ms"][key].as_f64().is_some(), "{key}");
    }
    for key in [
        "requests_per_second",
        "docs_per_second",
        "mb_per_second",
        "errors_by_status",
        "errors_by_code",
    ] {
        assert!(!json["total"][key].is_null(), "{key}");
    }
    assert!(json["server"]["dedup_skips"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_scenario_runs_the_query_mix_open_loop_without_errors() {
    let node = start_node().await;
    let mut stage = Stage::new(ScenarioKind::Search);
    stage.rate = Some(150.0);
    stage.duration = Some(Duration::from_secs(2));
    stage.connections = 8;
    let mut plan = plan(&node, "search", vec![stage]);
    plan.preload = 400;
    let report = run(&plan).await;

    let search = report.total.ops.get("search").expect("searches were made");
    assert!(
        (250..=301).contains(&search.requests),
        "an open loop at 150/s for 2 s sends 300 requests, sent {}",
        search.requests
    );
    // Every query of the mix (terms, phrases, boolean, filters, sort) must be valid.
    assert_eq!(
        search.errors, 0,
        "errors: {:?} {:?}",
        search.errors_by_status, search.errors_by_code
    );
    assert_latency_recorded(&report);
    let server = report.server.as_ref().expect("metrics were scraped");
    assert!(
        server.search_cache_hits + server.search_cache_misses >= 250.0,
        "cache lookups: {server:?}"
    );
    assert!(server.search_cache_hit_ratio.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_scenario_reports_reads_and_writes_separately() {
    let node = start_node().await;
    let mut stage = Stage::new(ScenarioKind::Mixed);
    stage.requests = Some(200);
    stage.connections = 6;
    stage.write_ratio = 0.3;
    stage.docs_per_request = 10;
    let mut plan = plan(&node, "mixed", vec![stage]);
    plan.preload = 100;
    let report = run(&plan).await;

    let ingest = report.total.ops.get("ingest").expect("writes");
    let search = report.total.ops.get("search").expect("reads");
    assert_eq!(ingest.requests + search.requests, 200);
    assert!(
        (30..=90).contains(&ingest.requests),
        "{} writes",
        ingest.requests
    );
    assert_eq!(ingest.errors + search.errors, 0, "{ingest:?} {search:?}");
    assert_eq!(ingest.docs, ingest.requests * 10);
    assert_latency_recorded(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_scenario_measures_time_to_visible() {
    let node = start_node().await;
    let mut stage = Stage::new(ScenarioKind::Freshness);
    stage.requests = Some(6);
    stage.connections = 2;
    stage.visibility_timeout = Duration::from_secs(20);
    let report = run(&plan(&node, "fresh", vec![stage])).await;

    let freshness = report.total.freshness.as_ref().expect("freshness figures");
    assert_eq!(freshness.visible, 6, "{freshness:?}");
    assert_eq!(freshness.timeouts, 0);
    assert!(freshness.polls >= 6);
    assert!(freshness.lag_ms.p50 > 0.0 && freshness.lag_ms.max < 20_000.0);
    assert_eq!(
        report.stages[0]
            .summary
            .freshness
            .as_ref()
            .map(|f| f.visible),
        Some(6)
    );
}

/// The HTML report's structure: one page, three charts, each with drawn points.
fn assert_html_report(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert!(!html.contains("<script"), "self-contained, no script");
    assert!(
        !html.contains("http://cdn") && !html.contains("https://"),
        "no network"
    );
    assert_eq!(html.matches("<svg").count(), 3);
    assert_eq!(html.matches("</svg>").count(), 3);
    for title in [
        "Throughput over time",
        "Latency over time",
        "Latency distribution",
    ] {
        assert!(html.contains(title), "{title}");
    }
    let drawn: Vec<usize> = html
        .split("data-points=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next()?.parse().ok())
        .collect();
    assert!(drawn.len() >= 5, "series: {drawn:?}");
    assert!(
        drawn.iter().all(|&n| n > 0),
        "every series has points: {drawn:?}"
    );
    assert!(
        drawn.iter().any(|&n| n >= 3),
        "timelines span seconds: {drawn:?}"
    );
    for (open, close) in [("<table", "</table>"), ("<tr", "</tr>"), ("<svg", "</svg>")] {
        assert_eq!(
            html.matches(open).count(),
            html.matches(close).count(),
            "{open}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toml_stages_with_a_ramp_render_an_html_report() {
    let node = start_node().await;
    let scenario = format!(
        r#"
        target = "{}"
        collection = "staged"
        preload = 200
        [corpus]
        docs = 200
        [[stage]]
        name = "warm-up ramp"
        scenario = "get"
        rate = 20
        ramp_to = 200
        duration = "3s"
        [[stage]]
        scenario = "search"
        connections = 4
        requests = 60
        [stage.query_mix]
        rare = 0
        "#,
        node.base
    );
    let plan: Plan = toml::from_str(&scenario).expect("scenario parses");
    let report = run(&plan).await;

    assert_eq!(report.stages.len(), 2);
    let ramp = &report.stages[0].summary.all;
    // 20 -> 200/s over 3 s: (20 + 200) / 2 * 3 = 330 requests.
    assert!(
        (300..=331).contains(&ramp.requests),
        "{} requests",
        ramp.requests
    );
    assert_eq!(report.stages[1].summary.all.requests, 60);
    assert!(report.timeline.len() >= 3);
    assert!(report.stages[0].load_model.contains("ramping"));
    assert_html_report(&sluice_loadgen::html::render(&report));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breached_threshold_fails_the_run_with_a_non_zero_exit() {
    let node = start_node().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let html = dir.path().join("report.html");
    let base = node.base.clone();
    let (json_path, html_path) = (json.clone(), html.clone());
    let loadgen = move |threshold: &str| {
        Command::new(env!("CARGO_BIN_EXE_sluice-loadgen"))
            .args(["get", "--target", &base, "-n", "200", "-c", "4"])
            .args(["--threshold", threshold, "--threshold", "errors<0.1%"])
            .arg("--json")
            .arg(&json_path)
            .arg("--html")
            .arg(&html_path)
            .output()
            .expect("runs sluice-loadgen")
    };
    let breached = tokio::task::spawn_blocking(move || loadgen("p99<1us"))
        .await
        .expect("joins");
    assert_eq!(
        breached.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&breached.stderr)
    );
    let stdout = String::from_utf8_lossy(&breached.stdout);
    assert!(stdout.contains("BREACHED"), "{stdout}");
    assert!(!stdout.contains('\r'), "no live progress on a pipe");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json report")).expect("valid json");
    assert_eq!(report["passed"], false);
    assert_eq!(report["total"]["requests"], 200);
    assert_eq!(report["thresholds"][0]["passed"], false);
    assert_eq!(report["thresholds"][1]["passed"], true);
    assert_html_report(&std::fs::read_to_string(&html).expect("html report"));

    let base = node.base.clone();
    let held = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sluice-loadgen"))
            .args([
                "get",
                "--target",
                &base,
                "-n",
                "100",
                "--threshold",
                "p99<30s",
            ])
            .output()
            .expect("runs sluice-loadgen")
    })
    .await
    .expect("joins");
    assert_eq!(
        held.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&held.stderr)
    );
}
