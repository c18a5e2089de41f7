//! `sluice-bench`: sluice end to end against the raw limits, in one run, one table.
//!
//! Generates the standard corpus into a temporary directory, measures raw Tantivy
//! indexing (1 and 2 threads, 256 MB writer) and, with `--nats`, raw JetStream publishing
//! (100 documents a message, 256 acks in flight); then runs the release `sluice serve`
//! as a child process: ingest (first and unchanged again), search latency cold and warm,
//! freshness at half the measured ingest rate and peak RSS — embedded, and with `--nats`
//! on JetStream too. The sluice process's CPU time over the first ingest is read from
//! `/proc` and set against raw Tantivy's per CPU-second. With `--rounds N`, raw Tantivy
//! (2 threads) and the first ingests are measured N times in pairs, and the table gives
//! medians of the per-round ratios. Prints one markdown table (and writes it to `--out`).
//! Progress goes to stderr, the table to stdout.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use sluice_benches::corpus::{mixed_term_queries, schema_json, Corpus};
use sluice_benches::e2e::{Driver, IngestRun};
use sluice_benches::raw_jetstream::publish_corpus;
use sluice_benches::raw_tantivy::{corpus_schema, index_corpus, RawIndexRun, RAW_WRITER_BUDGET};
use sluice_benches::report::{
    machine_description, millis, per_cpu, rate, ratio_against, thousands, verdict, Report,
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
    /// Paired rounds of the throughput figures: each round measures raw Tantivy (2
    /// threads) and then sluice's first ingest (embedded, and on JetStream with `--nats`)
    /// afresh, and the table gives the medians of the rounds' ratios. Shared machines are
    /// noisy; one round is one sample.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
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

/// A first ingest: the wall-clock run and the CPU time the sluice process spent on it.
#[derive(Clone, Copy, Debug)]
struct FirstIngest {
    run: IngestRun,
    cpu: Duration,
}

impl FirstIngest {
    fn docs_per_cpu_sec(&self) -> f64 {
        self.run.docs as f64 / self.cpu.as_secs_f64()
    }
}

/// What a sluice process is put through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phases {
    /// The first ingest only (the extra rounds).
    FirstIngest,
    /// The first ingest and the unchanged re-ingest.
    Ingests,
    /// Both ingests, search latency and freshness.
    Everything,
}

/// Figures of one sluice process.
struct SluiceRun {
    first: FirstIngest,
    /// The unchanged re-ingest (not in [`Phases::FirstIngest`]).
    again: Option<IngestRun>,
    /// VmHWM right after the first ingest: the peak of ingesting the corpus.
    ingest_peak_rss_bytes: u64,
    /// VmHWM at the end of the run (after search and freshness when they ran).
    peak_rss_bytes: u64,
    search: Option<sluice_benches::e2e::SearchLatency>,
    freshness: Option<sluice_benches::e2e::Freshness>,
}

/// One round's throughput figures, measured back to back so they share the machine's
/// conditions.
struct Round {
    raw2: RawIndexRun,
    embedded: FirstIngest,
    jetstream: Option<FirstIngest>,
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

    let raw1 = raw_tantivy(&corpus, &mapping, work.path(), 1)?;
    let raw_jetstream = if args.nats {
        eprintln!("raw JetStream publish ...");
        let server = NatsServer::try_start()?;
        let run = publish_corpus(&server.url(), &corpus, 100, 256).await?;
        eprintln!("  {}", rate(run.docs_per_sec()));
        Some(run)
    } else {
        None
    };

    let mut rounds = Vec::new();
    let (mut embedded_full, mut jetstream_full) = (None, None);
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            eprintln!("round {round} of {}", args.rounds);
        }
        let first_round = round == 1;
        let raw2 = raw_tantivy(&corpus, &mapping, work.path(), 2)?;
        eprintln!("sluice, embedded ...");
        let embedded = run_sluice(
            &args,
            &binary,
            &corpus,
            &work.path().join(format!("embedded-{round}")),
            None,
            if first_round {
                Phases::Everything
            } else {
                Phases::FirstIngest
            },
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
                    &work.path().join(format!("jetstream-{round}")),
                    Some(server.url()),
                    if first_round {
                        Phases::Ingests
                    } else {
                        Phases::FirstIngest
                    },
                )
                .await?,
            )
        } else {
            None
        };
        rounds.push(Round {
            raw2,
            embedded: embedded.first,
            jetstream: jetstream.as_ref().map(|run| run.first),
        });
        if first_round {
            embedded_full = Some(embedded);
            jetstream_full = jetstream;
        }
    }
    let embedded_full = embedded_full.context("no round ran")?;

    let mut report = Report::default();
    report
        .preamble
        .push(format!("machine: {}", machine_description()));
    report.preamble.push(format!(
        "command: `cargo run --release -p sluice-benches --bin sluice-bench -- --docs {}{}{}` \
         ({} docs per request, {} producers; whole run {:.0} s)",
        args.docs,
        if args.nats { " --nats" } else { "" },
        if args.rounds > 1 {
            format!(" --rounds {}", args.rounds)
        } else {
            String::new()
        },
        args.request_docs,
        args.producers,
        started.elapsed().as_secs_f64()
    ));
    if args.rounds > 1 {
        report.preamble.push(format!(
            "throughput figures: median of {} paired rounds (each: raw Tantivy 2 threads, then \
             sluice's first ingest), min–max in brackets; ratios are the medians of each \
             round's own ratio",
            args.rounds
        ));
    }
    report.row(
        "corpus",
        format!(
            "{} docs, {:.0} MB",
            args.docs,
            corpus.total_bytes() as f64 / 1e6
        ),
        "`sluice-loadgen corpus N`, seed 42",
    );
    let raw2_rates = Spread::of(rounds.iter().map(|r| r.raw2.docs_per_sec()));
    report.row(
        "raw Tantivy, 1 thread (256 MB writer, JSON parse included)",
        rate(raw1.docs_per_sec()),
        format!("{:.2}× 2 threads", raw1.docs_per_sec() / raw2_rates.median),
    );
    report.row(
        "raw Tantivy, 2 threads (256 MB writer, JSON parse included)",
        raw2_rates.show(rate),
        "the limit e2e is held against",
    );
    report.row(
        "raw Tantivy, 2 threads: documents per CPU-second",
        Spread::of(rounds.iter().map(|r| r.raw2.docs_per_cpu_sec())).show(per_cpu),
        "the per-core limit",
    );
    if let Some(run) = raw_jetstream {
        report.row(
            "raw JetStream publish (100 docs/msg, 256 acks in flight)",
            rate(run.docs_per_sec()),
            format!(
                "{:.1}× raw Tantivy 2 threads",
                run.docs_per_sec() / raw2_rates.median
            ),
        );
    }
    let embedded_firsts: Vec<(&RawIndexRun, &FirstIngest)> =
        rounds.iter().map(|r| (&r.raw2, &r.embedded)).collect();
    add_sluice_rows(
        &mut report,
        "embedded",
        &embedded_full,
        &embedded_firsts,
        0.6,
    );
    if let Some(jetstream_full) = &jetstream_full {
        let jetstream_firsts: Vec<(&RawIndexRun, &FirstIngest)> = rounds
            .iter()
            .filter_map(|r| r.jetstream.as_ref().map(|first| (&r.raw2, first)))
            .collect();
        add_sluice_rows(
            &mut report,
            "JetStream",
            jetstream_full,
            &jetstream_firsts,
            0.5,
        );
    }

    let table = report.to_markdown();
    println!("{table}");
    if let Some(out) = &args.out {
        std::fs::write(out, &table).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// Raw Tantivy with `threads` indexing threads, in a directory removed afterwards.
fn raw_tantivy(
    corpus: &Corpus,
    mapping: &IndexSchema,
    work: &Path,
    threads: usize,
) -> anyhow::Result<RawIndexRun> {
    eprintln!("raw Tantivy, {threads} indexing thread(s) ...");
    let dir = work.join(format!("raw-tantivy-{threads}"));
    std::fs::create_dir_all(&dir)?;
    let run = tokio::task::block_in_place(|| {
        index_corpus(corpus, mapping, &dir, threads, RAW_WRITER_BUDGET)
    })?;
    eprintln!(
        "  {}, {:.1} CPU-s",
        rate(run.docs_per_sec()),
        run.cpu.as_secs_f64()
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(run)
}

/// The median and range of one figure over the rounds.
#[derive(Clone, Copy, Debug)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    samples: usize,
}

impl Spread {
    fn of(values: impl Iterator<Item = f64>) -> Spread {
        let mut values: Vec<f64> = values.collect();
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => values[n / 2],
            _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        };
        Spread {
            median,
            min: values.first().copied().unwrap_or(f64::NAN),
            max: values.last().copied().unwrap_or(f64::NAN),
            samples: n,
        }
    }

    /// The median through `format`, with the range when there are several samples.
    fn show(&self, format: impl Fn(f64) -> String) -> String {
        if self.samples > 1 {
            format!(
                "{} ({}–{})",
                format(self.median),
                thousands(self.min.round() as u64),
                thousands(self.max.round() as u64)
            )
        } else {
            format(self.median)
        }
    }
}

fn add_sluice_rows(
    report: &mut Report,
    mode: &str,
    run: &SluiceRun,
    firsts: &[(&RawIndexRun, &FirstIngest)],
    target: f64,
) {
    let rates = Spread::of(firsts.iter().map(|(_, first)| first.run.docs_per_sec()));
    let ratios = Spread::of(
        firsts
            .iter()
            .map(|(raw2, first)| first.run.docs_per_sec() / raw2.docs_per_sec()),
    );
    let first = &run.first.run;
    let value = if firsts.len() > 1 {
        rates.show(rate)
    } else {
        format!(
            "{} ({:.1} s, {} requests, {} retried)",
            rate(first.docs_per_sec()),
            first.elapsed.as_secs_f64(),
            first.requests,
            first.retries
        )
    };
    let comparison = if firsts.len() > 1 {
        format!(
            "{} raw Tantivy 2 threads (rounds {:.2}–{:.2})",
            ratio_against(ratios.median, target),
            ratios.min,
            ratios.max
        )
    } else {
        format!(
            "{} raw Tantivy 2 threads",
            ratio_against(ratios.median, target)
        )
    };
    report.row(
        format!("sluice {mode}: first ingest, first POST to searchable"),
        value,
        comparison,
    );
    let per_cpu_ratios = Spread::of(
        firsts
            .iter()
            .map(|(raw2, first)| first.docs_per_cpu_sec() / raw2.docs_per_cpu_sec()),
    );
    report.row(
        format!("sluice {mode}: first ingest, documents per CPU-second of the sluice process"),
        Spread::of(firsts.iter().map(|(_, first)| first.docs_per_cpu_sec())).show(per_cpu),
        format!(
            "{:.2}× raw Tantivy 2 threads per CPU-second",
            per_cpu_ratios.median
        ),
    );
    if let Some(again) = &run.again {
        report.row(
            format!("sluice {mode}: re-ingest unchanged corpus (dedup)"),
            format!(
                "{} ({:.1} s, {} retried)",
                rate(again.docs_per_sec()),
                again.elapsed.as_secs_f64(),
                again.retries
            ),
            format!(
                "{} first ingest (same process)",
                ratio_against(again.docs_per_sec() / first.docs_per_sec(), 3.0)
            ),
        );
    }
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
    binary: &Path,
    corpus: &Corpus,
    dir: &Path,
    nats_url: Option<String>,
    phases: Phases,
) -> anyhow::Result<SluiceRun> {
    std::fs::create_dir_all(dir)?;
    let env: Vec<(&str, String)> = nats_url
        .into_iter()
        .map(|url| ("SLUICE_NATS_URL", url))
        .collect();
    let process = SluiceProcess::start(binary, dir, &env).await?;
    let driver = Driver::new(process.base_url());
    driver.put_schema(schema_json()?).await?;

    let cpu_before = process.cpu_time()?;
    let run = driver
        .ingest(corpus, args.request_docs, args.producers)
        .await?;
    let first = FirstIngest {
        run,
        cpu: process.cpu_time()? - cpu_before,
    };
    eprintln!(
        "  first ingest: {} in {:.1} s, {:.1} CPU-s",
        rate(run.docs_per_sec()),
        run.elapsed.as_secs_f64(),
        first.cpu.as_secs_f64()
    );
    let ingest_peak_rss_bytes = process.peak_rss_bytes()?;
    let total = driver.search_total(None).await?;
    anyhow::ensure!(
        total == corpus.len() as u64,
        "after the searchable answer, search finds {total} of {} documents",
        corpus.len()
    );
    let again = if phases == Phases::FirstIngest {
        None
    } else {
        let again = driver
            .ingest(corpus, args.request_docs, args.producers)
            .await?;
        eprintln!(
            "  re-ingest: {} in {:.1} s",
            rate(again.docs_per_sec()),
            again.elapsed.as_secs_f64()
        );
        Some(again)
    };

    let (search, freshness) = if phases == Phases::Everything {
        let queries = mixed_term_queries(&corpus.body_words_by_frequency(), QUERIES_PER_CLASS);
        let search = driver
            .search_latency(&queries, WARM_QUERIES, WARM_ROUNDS)
            .await?;
        eprintln!(
            "  search cold p99 {}, warm p99 {}",
            millis(search.cold.p99),
            millis(search.warm.p99)
        );
        let target = run.docs_per_sec() / 2.0;
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
    drop(process);
    // Rounds add up: each process's data goes as soon as it is done with.
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(SluiceRun {
        first,
        again,
        ingest_peak_rss_bytes,
        peak_rss_bytes,
        search,
        freshness,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_gives_the_median_and_the_range() {
        let odd = Spread::of([3.0, 1.0, 2.0].into_iter());
        assert_eq!(
            (odd.median, odd.min, odd.max, odd.samples),
            (2.0, 1.0, 3.0, 3)
        );
        let even = Spread::of([4.0, 1.0, 3.0, 2.0].into_iter());
        assert_eq!((even.median, even.min, even.max), (2.5, 1.0, 4.0));
        assert_eq!(even.show(|x| format!("{x}")), "2.5 (1–4)");
        let one = Spread::of([1234.0].into_iter());
        assert_eq!(one.show(|x| format!("{x}")), "1234");
    }
}
