//! `sluice-loadgen`: the stress-test tool for sluice.
//!
//! It answers the questions of a performance test — how many requests per second one node
//! holds, how latency behaves under load, whether writes hurt reads, how effective the cache
//! is, how fast an accepted document becomes searchable — with open-loop load free of
//! coordinated omission (latency from the scheduled start, as wrk2) or closed-loop load for
//! maximum throughput, HDR histograms, server-side `/metrics` deltas, JSON and self-contained
//! HTML reports, and thresholds for CI gating.
//!
//! Concurrency model: one tokio task per connection, each with its own keep-alive HTTP/1.1
//! connection and its own recorder; the only shared state on the request path is an atomic
//! ticket counter and three relaxed progress counters. Recorders merge when a stage ends.
//!
//! # Layout
//! - [`cli`]: the command line and exit codes.
//! - [`plan`]: the run as data — target, corpus, stages (TOML scenario files).
//! - [`corpus`]: the standard corpus generated in-process, or an NDJSON file.
//! - [`pyrandom`]: the CPython `random` port the standard corpus depends on.
//! - [`workload`]: request number in, request out (ingest batches, query mix, markers).
//! - [`driver`]: open and closed loop load models, connection tasks.
//! - [`http`]: the lean hyper client.
//! - [`record`]: HDR histograms, counters, per-second timeline.
//! - [`prom`]: `/metrics` parsing and server-side deltas.
//! - [`report`]: the report, its JSON form and text summary.
//! - [`html`]: the HTML report with inline SVG charts.
//! - [`threshold`]: pass/fail rules.
//! - [`runner`]: a whole run, setup to report.
//! - [`error`]: the error type.

pub mod cli;
pub mod corpus;
pub mod driver;
pub mod error;
pub mod html;
pub mod http;
pub mod plan;
pub mod prom;
pub mod pyrandom;
pub mod record;
pub mod report;
pub mod runner;
pub mod threshold;
pub mod workload;

pub use error::LoadgenError;
pub use plan::{Plan, ScenarioKind, Stage};
pub use report::Report;
