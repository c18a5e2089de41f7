//! The command line: a one-stage plan per scenario subcommand, `run FILE` for a scenario
//! file, `corpus` to print the standard corpus; then the reports and the exit code.
//!
//! Exit codes: 0 run finished and every threshold held; 1 the run could not start or finish
//! (bad input, target unreachable, report not writable); 2 usage error (from the argument
//! parser); 3 the run finished but a threshold was breached.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::corpus::{BODY_WORDS, DEFAULT_SEED};
use crate::error::LoadgenError;
use crate::plan::{Plan, ScenarioKind, Stage, WaitMode};
use crate::runner::{self, Progress};

/// Exit code when a threshold is breached.
pub const EXIT_THRESHOLD_BREACHED: u8 = 3;

/// Stress-test a sluice node: open or closed loop load, HDR latency, JSON and HTML reports.
#[derive(Debug, Parser)]
#[command(name = "sluice-loadgen", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bulk NDJSON POSTs of corpus documents.
    Ingest(ScenarioArgs),
    /// A query mix drawn from the corpus vocabulary.
    Search(ScenarioArgs),
    /// Ingest and search together (`--write-ratio`).
    Mixed(ScenarioArgs),
    /// Marker documents: time from the ingest 2xx to visible in search.
    Freshness(ScenarioArgs),
    /// GET one path (default the healthcheck): the load generator's own ceiling.
    Get(ScenarioArgs),
    /// Run a TOML scenario file (stages, ramps, thresholds).
    Run {
        /// The scenario file.
        file: PathBuf,
        /// Overrides of the file's settings.
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Print the standard corpus as NDJSON, or with `--schema` its collection schema
    /// (byte-identical to the reference `corpus.py N --seed S` and `corpus.py --schema`).
    Corpus {
        /// Documents.
        #[arg(default_value_t = 1000)]
        docs: usize,
        /// Seed.
        #[arg(long, default_value_t = DEFAULT_SEED)]
        seed: u64,
        /// Words per body (120 is the standard corpus).
        #[arg(long, default_value_t = BODY_WORDS)]
        body_words: usize,
        /// Print the collection schema instead.
        #[arg(long)]
        schema: bool,
    },
}

/// Settings shared by every way of running.
#[derive(Debug, Args, Default)]
pub struct CommonArgs {
    /// Base URL of the node.
    #[arg(long, env = "SLUICE_LOADGEN_TARGET")]
    pub target: Option<String>,
    /// Collection to write to and search.
    #[arg(long)]
    pub collection: Option<String>,
    /// Sent as `x-api-key`.
    #[arg(long, env = "SLUICE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Sent as `Authorization: Bearer`.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Per-request timeout (e.g. `30s`).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Pass/fail rule, repeatable: `p99<250ms`, `errors<0.1%`, `search.rps>100`.
    #[arg(long = "threshold")]
    pub thresholds: Vec<String>,
    /// Write the JSON report here (`-`: stdout, the summary then goes to stderr).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// No live progress even on a terminal.
    #[arg(long, short)]
    pub quiet: bool,
    /// Do not scrape `/metrics`.
    #[arg(long)]
    pub no_metrics: bool,
}

/// `?wait=` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum WaitArg {
    /// Durable in the log.
    Durable,
    /// Visible to search.
    Searchable,
}

/// Settings of a one-stage run.
#[derive(Debug, Args)]
pub struct ScenarioArgs {
    /// Shared settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Open loop: requests started per second (latency from the scheduled start).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: ramp linearly from `--rate` to this rate over `--duration`.
    #[arg(long, requires = "rate")]
    pub ramp_to: Option<f64>,
    /// Connections (closed loop: requests in flight; open loop: the most in flight).
    #[arg(long, short, default_value_t = 16)]
    pub connections: usize,
    /// Stop after this long (e.g. `30s`, `2m`).
    #[arg(long, short, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,
    /// Documents per ingest request.
    #[arg(long, default_value_t = 100)]
    pub docs_per_request: usize,
    /// `?wait=` of ingest requests.
    #[arg(long, value_enum, default_value = "durable")]
    pub wait: WaitArg,
    /// New ids for every ingested document (otherwise ids repeat: dedup).
    #[arg(long)]
    pub fresh_ids: bool,
    /// Share of ingest requests in `mixed` (0 to 1).
    #[arg(long, default_value_t = 0.1)]
    pub write_ratio: f64,
    /// Path for `get`.
    #[arg(long, default_value = "/_internal_/healthcheck")]
    pub path: String,
    /// Freshness: poll interval.
    #[arg(long, value_parser = parse_duration, default_value = "10ms")]
    pub poll_interval: Duration,
    /// Freshness: give up on a marker after this long.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub visibility_timeout: Duration,
    /// Standard corpus: documents to generate.
    #[arg(long, default_value_t = 10_000)]
    pub corpus_docs: usize,
    /// Standard corpus: seed.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Standard corpus: words per body (document size).
    #[arg(long, default_value_t = BODY_WORDS)]
    pub body_words: usize,
    /// Use this NDJSON file as the corpus.
    #[arg(long)]
    pub corpus_file: Option<PathBuf>,
    /// Ingest this many corpus documents (searchable, not measured) before the stage.
    #[arg(long, default_value_t = 0)]
    pub preload: usize,
    /// Do not create the collection from the standard schema first.
    #[arg(long)]
    pub no_create_collection: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(text).map_err(|e| e.to_string())
}

impl ScenarioArgs {
    fn into_plan(self, scenario: ScenarioKind) -> (Plan, CommonArgs) {
        let mut stage = Stage::new(scenario);
        stage.rate = self.rate;
        stage.ramp_to = self.ramp_to;
        stage.connections = self.connections;
        stage.duration = self.duration;
        stage.requests = self.requests;
        stage.docs_per_request = self.docs_per_request;
        stage.wait = match self.wait {
            WaitArg::Durable => WaitMode::Durable,
            WaitArg::Searchable => WaitMode::Searchable,
        };
        stage.fresh_ids = self.fresh_ids;
        stage.write_ratio = self.write_ratio;
        stage.path = self.path;
        stage.poll_interval = self.poll_interval;
        stage.visibility_timeout = self.visibility_timeout;
        let mut plan = Plan::new(vec![stage]);
        plan.corpus.docs = self.corpus_docs;
        plan.corpus.seed = self.seed;
        plan.corpus.body_words = self.body_words;
        plan.corpus.file = self.corpus_file;
        plan.preload = self.preload;
        plan.create_collection = !self.no_create_collection;
        (plan, self.common)
    }
}

impl CommonArgs {
    fn apply(&mut self, plan: &mut Plan) {
        if let Some(target) = self.target.take() {
            plan.target = target;
        }
        if let Some(collection) = self.collection.take() {
            plan.collection = collection;
        }
        if let Some(key) = self.api_key.take() {
            plan.api_key = Some(key);
        }
        if let Some(token) = self.token.take() {
            plan.token = Some(token);
        }
        if let Some(timeout) = self.timeout {
            plan.request_timeout = timeout;
        }
        plan.thresholds.append(&mut self.thresholds);
        if self.no_metrics {
            plan.scrape_metrics = false;
        }
    }
}

/// Runs the parsed command line; the process exit code.
pub async fn run_cli(cli: Cli) -> ExitCode {
    match execute(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sluice-loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: Cli) -> Result<ExitCode, LoadgenError> {
    let (mut plan, mut common) = match cli.command {
        Command::Corpus {
            docs,
            seed,
            body_words,
            schema,
        } => return print_corpus(docs, seed, body_words, schema),
        Command::Run { file, common } => (Plan::from_file(&file)?, common),
        Command::Ingest(args) => args.into_plan(ScenarioKind::Ingest),
        Command::Search(args) => args.into_plan(ScenarioKind::Search),
        Command::Mixed(args) => args.into_plan(ScenarioKind::Mixed),
        Command::Freshness(args) => args.into_plan(ScenarioKind::Freshness),
        Command::Get(args) => args.into_plan(ScenarioKind::Get),
    };
    common.apply(&mut plan);
    let json_to_stdout = common.json.as_deref() == Some(std::path::Path::new("-"));
    let progress = if common.quiet || json_to_stdout {
        Progress::Quiet
    } else {
        Progress::auto()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stop_on_signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop_on_signal.store(true, Ordering::Relaxed);
        }
    });

    let report = runner::run(&plan, progress, stop).await?;

    let summary = report.text_summary();
    if json_to_stdout {
        eprint!("{summary}");
    } else {
        print!("{summary}");
    }
    if let Some(path) = &common.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| LoadgenError::Invalid(format!("serializing the report: {e}")))?;
        if json_to_stdout {
            println!("{json}");
        } else {
            write_file(path, json.as_bytes())?;
        }
    }
    if let Some(path) = &common.html {
        write_file(path, crate::html::render(&report).as_bytes())?;
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_THRESHOLD_BREACHED)
    })
}

fn write_file(path: &std::path::Path, bytes: &[u8]) -> Result<(), LoadgenError> {
    std::fs::write(path, bytes).map_err(|source| LoadgenError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

fn print_corpus(
    docs: usize,
    seed: u64,
    body_words: usize,
    schema: bool,
) -> Result<ExitCode, LoadgenError> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let io_error = |source| LoadgenError::Io {
        what: "writing to stdout".into(),
        source,
    };
    if schema {
        writeln!(out, "{}", crate::corpus::STANDARD_SCHEMA_DOCUMENT).map_err(io_error)?;
    } else {
        crate::corpus::write_ndjson(&mut out, docs, seed, body_words).map_err(io_error)?;
    }
    out.flush().map_err(io_error)?;
    Ok(ExitCode::SUCCESS)
}
