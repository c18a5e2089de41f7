//! `sluice-bench`: sluice end to end against the raw limits, in one run, one table.
//!
//! Generates the standard corpus into a temporary directory, measures raw Tantivy
//! indexing (1 and 2 threads, 256 MB writer) and, with `--nats`, raw JetStream publishing
//! (100 documents a message, 256 acks in flight); then runs the release `sluice serve`
//! as a child process: ingest (first and unchanged again), search latency cold and warm,
//! freshness at half the measured ingest rate and peak RSS — embedded, and with `--nats`
//! on JetStream too. Prints one markdown table (and writes it to `--out`).
//! Progress goes to stderr, the table to stdout.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use sluice_benches::corpus::{mixed_term_queries, schema_json, Corpus};
use sluice_benches::e2e::{Driver, IngestRun};
use sluice_benches::raw_jetstream::publish_corpus;
use sluice_benches::raw_tantivy::{corpus_schema, index_corpus, RAW_WRITER_BUDGET};
use sluice_benches::report::{
    machine_description, millis, rate, ratio_against, thousands, verdict, Report,
};
use sluice_benches::sluice_process::{default_binary, SluiceProcess};
use sluice_indexer::index_schema::IndexSchema;
use sluice_queue::testing::NatsServer;

#[derive(Parser, Debug)]
#[command(
    name = "sluice-bench",
    about = "sluice end to end against the raw limits"
)]
struct Args {
    /// Corpus documents.
    #[arg(long, default_value_t = 200_000)]
    docs: usize,
    /// Also measure raw JetStream publishing and sluice on JetStream (starts nats-server).
    #[arg(long)]
    nats: bool,
    /// Also write the table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Documents per ingest request.
    #[arg(long, default_value_t = 2_000)]
    request_docs: usize,
    /// Concurrent ingest producers.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// How long the freshness phase runs, in seconds.
    #[arg(long, default_value_t = 20)]
    freshness_secs: u64,
    /// The sluice binary (default: target/release/sluice, or $SLUICE_BIN).
    #[arg(long)]
    sluice: Option<PathBuf>,
}

/// Distinct single-term queries per frequency class (frequent, medium, rare).
const QUERIES_PER_CLASS: usize = 100;
/// Queries repeated in the warm pass, and how many times.
const WARM_QUERIES: usize = 30;
const WARM_ROUNDS: usize = 20;
/// Documents per freshness request (one marker each on top).
const FRESHNESS_REQUEST_DOCS: usize = 500;

/// Figures of one sluice run.
struct SluiceRun {
    first: IngestRun,
    again: IngestRun,
    /// VmHWM right after the first ingest: the peak of ingesting the corpus.
    ingest_peak_rss_bytes: u64,
    /// VmHWM at the end of the run (after search and freshness when they ran).
    peak_rss_bytes: u64,
    search: Option<sluice_benches::e2e::SearchLatency>,
    freshness: Option<sluice_benches::e2e::Freshness>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let binary = args.sluice.clone().unwrap_or_else(default_binary);
    anyhow::ensure!(
        binary.is_file(),
        "{} not found: build it first (cargo build --release -p sluice), or pass --sluice",
        binary.display()
    );
    let work = tempfile::tempdir().context("creating a temporary directory")?;
    let started = Instant::now();

    eprintln!("generating {} corpus documents ...", args.docs);
    let corpus = Corpus::generate_in(work.path(), args.docs)?;
    let schema = corpus_schema()?;
    let mapping = IndexSchema::new(&schema);

    let mut raw = Vec::new();
    for threads in [1, 2] {
        eprintln!("raw Tantivy, {threads} indexing thread(s) ...");
        let dir = work.path().join(format!("raw-tantivy-{threads}"));
        std::fs::create_dir_all(&dir)?;
        let run = tokio::task::block_in_place(|| {
            index_corpus(&corpus, &mapping, &dir, threads, RAW_WRITER_BUDGET)
        })?;
        eprintln!("  {}", rate(run.docs_per_sec()));
        std::fs::remove_dir_all(&dir)?;
        raw.push(run);
    }
    let raw2 = raw[1].docs_per_sec();

    let raw_jetstream = if args.nats {
        eprintln!("raw JetStream publish ...");
        let server = NatsServer::try_start()?;
        let run = publish_corpus(&server.url(), &corpus, 100, 256).await?;
        eprintln!("  {}", rate(run.docs_per_sec()));
        Some(run)
    } else {
        None
    };

    eprintln!("sluice, embedded ...");
    let embedded = run_sluice(
        &args,
        &binary,
        &corpus,
        work.path().join("embedded"),
        None,
        true,
    )
    .await?;
    let jetstream = if args.nats {
        eprintln!("sluice on JetStream ...");
        let server = NatsServer::try_start()?;
        Some(
            run_sluice(
                &args,
                &binary,
                &corpus,
                work.path().join("jetstream"),
                Some(server.url()),
                false,
            )
            .await?,
        )
    } else {
        None
    };

    let mut report = Report::default();
    report
        .preamble
        .push(format!("machine: {}", machine_description()));
    report.preamble.push(format!(
        "command: `cargo run --release -p sluice-benches --bin sluice-bench -- --docs {}{}` \
         ({} docs per request, {} producers; whole run {:.0} s)",
        args.docs,
        if args.nats { " --nats" } else { "" },
        args.request_docs,
        args.producers,
        started.elapsed().as_secs_f64()
    ));
    report.row(
        "corpus",
        format!(
            "{} docs, {:.0} MB",
            args.docs,
            corpus.total_bytes() as f64 / 1e6
        ),
        "`corpus.py N`, seed 42",
    );
    report.row(
        "raw Tantivy, 1 thread (256 MB writer, JSON parse included)",
        rate(raw[0].docs_per_sec()),
        format!("{:.2}× 2 threads", raw[0].docs_per_sec() / raw2),
    );
    report.row(
        "raw Tantivy, 2 threads (256 MB writer, JSON parse included)",
        rate(raw2),
        "the limit e2e is held against",
    );
    if let Some(run) = raw_jetstream {
        report.row(
            "raw JetStream publish (100 docs/msg, 256 acks in flight)",
            rate(run.docs_per_sec()),
            format!("{:.1}× raw Tantivy 2 threads", run.docs_per_sec() / raw2),
        );
    }
    add_sluice_rows(&mut report, "embedded", &embedded, raw2, 0.6);
    if let Some(jetstream) = &jetstream {
        add_sluice_rows(&mut report, "JetStream", jetstream, raw2, 0.5);
    }

    let table = report.to_markdown();
    println!("{table}");
    if let Some(out) = &args.out {
        std::fs::write(out, &table).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

fn add_sluice_rows(report: &mut Report, mode: &str, run: &SluiceRun, raw2: f64, target: f64) {
    let first = run.first.docs_per_sec();
    report.row(
        format!("sluice {mode}: first ingest, first POST to searchable"),
        format!(
            "{} ({:.1} s, {} requests, {} retried)",
            rate(first),
            run.first.elapsed.as_secs_f64(),
            run.first.requests,
            run.first.retries
        ),
        format!(
            "{} raw Tantivy 2 threads",
            ratio_against(first / raw2, target)
        ),
    );
    let again = run.again.docs_per_sec();
    report.row(
        format!("sluice {mode}: re-ingest unchanged corpus (dedup)"),
        format!(
            "{} ({:.1} s, {} retried)",
            rate(again),
            run.again.elapsed.as_secs_f64(),
            run.again.retries
        ),
        format!("{} first ingest", ratio_against(again / first, 3.0)),
    );
    if let Some(search) = &run.search {
        report.row(
            format!(
                "sluice {mode}: search p50 / p99, cold ({} distinct single-term queries)",
                search.cold.count
            ),
            format!("{} / {}", millis(search.cold.p50), millis(search.cold.p99)),
            format!(
                "target p99 ≤ 20 ms: {}",
                verdict(search.cold.p99 <= Duration::from_millis(20))
            ),
        );
        report.row(
            format!(
                "sluice {mode}: search p50 / p99, warm ({} repeated queries)",
                search.warm.count
            ),
            format!("{} / {}", millis(search.warm.p50), millis(search.warm.p99)),
            format!(
                "target p99 ≤ 1 ms: {}",
                verdict(search.warm.p99 <= Duration::from_millis(1))
            ),
        );
    }
    if let Some(fresh) = &run.freshness {
        report.row(
            format!(
                "sluice {mode}: freshness p50 / p99, 2xx to searchable ({} markers, {} retried)",
                fresh.latency.count, fresh.retries
            ),
            format!(
                "{} / {}",
                millis(fresh.latency.p50),
                millis(fresh.latency.p99)
            ),
            format!(
                "at {} (asked {}, half the first ingest); target p99 ≤ 2 s: {}",
                rate(fresh.achieved_docs_per_sec),
                rate(fresh.target_docs_per_sec),
                verdict(fresh.latency.p99 <= Duration::from_secs(2))
            ),
        );
    }
    let gib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0 * 1024.0);
    report.row(
        format!("sluice {mode}: peak RSS (VmHWM) after the first ingest"),
        format!("{} MiB", thousands(run.ingest_peak_rss_bytes >> 20)),
        format!(
            "target ≤ 1.5 GiB for the whole ingest: {}",
            verdict(gib(run.ingest_peak_rss_bytes) <= 1.5)
        ),
    );
    let after = if run.freshness.is_some() {
        "after re-ingest, search and freshness"
    } else {
        "after re-ingest"
    };
    report.row(
        format!("sluice {mode}: peak RSS (VmHWM) at the end, {after}"),
        format!("{} MiB", thousands(run.peak_rss_bytes >> 20)),
        "",
    );
}

async fn run_sluice(
    args: &Args,
    binary: &std::path::Path,
    corpus: &Corpus,
    dir: PathBuf,
    nats_url: Option<String>,
    full: bool,
) -> anyhow::Result<SluiceRun> {
    std::fs::create_dir_all(&dir)?;
    let env: Vec<(&str, String)> = nats_url
        .into_iter()
        .map(|url| ("SLUICE_NATS_URL", url))
        .collect();
    let process = SluiceProcess::start(binary, &dir, &env).await?;
    let driver = Driver::new(process.base_url());
    driver.put_schema(schema_json()?).await?;

    let first = driver
        .ingest(corpus, args.request_docs, args.producers)
        .await?;
    eprintln!(
        "  first ingest: {} in {:.1} s",
        rate(first.docs_per_sec()),
        first.elapsed.as_secs_f64()
    );
    let ingest_peak_rss_bytes = process.peak_rss_bytes()?;
    let total = driver.search_total(None).await?;
    anyhow::ensure!(
        total == corpus.len() as u64,
        "after the searchable answer, search finds {total} of {} documents",
        corpus.len()
    );
    let again = driver
        .ingest(corpus, args.request_docs, args.producers)
        .await?;
    eprintln!(
        "  re-ingest: {} in {:.1} s",
        rate(again.docs_per_sec()),
        again.elapsed.as_secs_f64()
    );

    let (search, freshness) = if full {
        let queries = mixed_term_queries(&corpus.body_words_by_frequency(), QUERIES_PER_CLASS);
        let search = driver
            .search_latency(&queries, WARM_QUERIES, WARM_ROUNDS)
            .await?;
        eprintln!(
            "  search cold p99 {}, warm p99 {}",
            millis(search.cold.p99),
            millis(search.warm.p99)
        );
        let target = first.docs_per_sec() / 2.0;
        let freshness = driver
            .freshness(
                corpus,
                target,
                Duration::from_secs(args.freshness_secs),
                FRESHNESS_REQUEST_DOCS,
            )
            .await?;
        eprintln!(
            "  freshness p50 {} p99 {} at {}",
            millis(freshness.latency.p50),
            millis(freshness.latency.p99),
            rate(freshness.achieved_docs_per_sec)
        );
        (Some(search), Some(freshness))
    } else {
        (None, None)
    };
    let peak_rss_bytes = process.peak_rss_bytes()?;
    Ok(SluiceRun {
        first,
        again,
        ingest_peak_rss_bytes,
        peak_rss_bytes,
        search,
        freshness,
    })
}
