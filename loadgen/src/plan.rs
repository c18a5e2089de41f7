//! What a run does: the target, the corpus and a chain of stages, from a TOML scenario file
//! or from the command line (which builds a one-stage plan).
//!
//! A stage is one scenario under one load model with a bound: an open loop (requests start
//! on a schedule at `rate`, optionally ramping linearly to `ramp_to`, latency measured from
//! the scheduled time) or a closed loop (`connections` requests in flight, each starting when
//! the previous one on its connection ends). Every stage needs a `duration` or a `requests`
//! bound, so a run always stops by itself. [`Plan::validate`] enforces that before anything
//! is sent.
//!
//! ```toml
//! target = "http://127.0.0.1:7171"
//! collection = "corpus"
//! preload = 2000
//! thresholds = ["p99<250ms", "errors<0.1%"]
//! [corpus]
//! docs = 10000
//! seed = 42
//! [[stage]]
//! scenario = "ingest"
//! rate = 50
//! ramp_to = 200
//! duration = "20s"
//! [[stage]]
//! scenario = "search"
//! connections = 32
//! requests = 20000
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::corpus::{CorpusSource, BODY_WORDS, DEFAULT_SEED};
use crate::error::LoadgenError;

/// A whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Base URL of the sluice node (`http://host:port`).
    #[serde(default = "default_target")]
    pub target: String,
    /// Collection the scenarios write to and search.
    #[serde(default = "default_collection")]
    pub collection: String,
    /// Where the documents come from.
    #[serde(default)]
    pub corpus: CorpusConfig,
    /// Sent as `x-api-key` when given.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Sent as `Authorization: Bearer` when given.
    #[serde(default)]
    pub token: Option<String>,
    /// Longest one request may take; a slower one counts as a `timeout` error.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Corpus documents ingested (`wait=searchable`, not measured) before the first stage.
    #[serde(default)]
    pub preload: usize,
    /// Create the collection from the standard schema before the run (standard corpus only;
    /// a collection that already exists keeps its schema when it is compatible).
    #[serde(default = "default_true")]
    pub create_collection: bool,
    /// Scrape `/metrics` before and after and report the server-side deltas.
    #[serde(default = "default_true")]
    pub scrape_metrics: bool,
    /// Pass/fail rules such as `p99<250ms`, `errors<0.1%` (see [`crate::threshold`]).
    #[serde(default)]
    pub thresholds: Vec<String>,
    /// The stages, run one after the other.
    #[serde(rename = "stage", default)]
    pub stages: Vec<Stage>,
}

/// `[corpus]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorpusConfig {
    /// Documents of the standard corpus to generate.
    pub docs: usize,
    /// Seed of the standard corpus (`corpus.py --seed`).
    pub seed: u64,
    /// Words per body; 120 is the standard corpus, other values change the document size.
    pub body_words: usize,
    /// An NDJSON file to use instead of the standard corpus.
    pub file: Option<PathBuf>,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        Self {
            docs: 10_000,
            seed: DEFAULT_SEED,
            body_words: BODY_WORDS,
            file: None,
        }
    }
}

impl CorpusConfig {
    /// The source this configuration names.
    pub fn source(&self) -> CorpusSource {
        match &self.file {
            Some(path) => CorpusSource::File(path.clone()),
            None => CorpusSource::Standard {
                docs: self.docs,
                seed: self.seed,
                body_words: self.body_words,
            },
        }
    }
}

/// The workload of a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioKind {
    /// Bulk NDJSON POSTs.
    Ingest,
    /// A query mix drawn from the corpus vocabulary.
    Search,
    /// Ingest and search together, at `write_ratio`.
    Mixed,
    /// Marker documents; time from the 2xx to visible in search.
    Freshness,
    /// `GET path` (a trivial endpoint: the load generator's own ceiling).
    Get,
}

impl ScenarioKind {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Search => "search",
            Self::Mixed => "mixed",
            Self::Freshness => "freshness",
            Self::Get => "get",
        }
    }
}

/// `?wait=` of ingest requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitMode {
    /// Answer once the log made the documents durable.
    #[default]
    Durable,
    /// Answer once the documents are searchable.
    Searchable,
}

impl WaitMode {
    /// The query parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Durable => "durable",
            Self::Searchable => "searchable",
        }
    }
}

/// Relative weights of the query kinds of the search scenario, and the fields they use
/// (the defaults fit the standard corpus).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryMixConfig {
    /// One of the most frequent words.
    pub frequent: u32,
    /// A rare word.
    pub rare: u32,
    /// A two-word phrase taken from a document title.
    pub phrase: u32,
    /// `AND`, `OR` and `NOT` of two words.
    pub boolean: u32,
    /// A word with a keyword filter and a range filter, sorted by a numeric field.
    pub filtered: u32,
    /// Field for term and boolean queries.
    pub text_field: String,
    /// Field phrases are taken from and searched in.
    pub phrase_field: String,
    /// Keyword field for filters; its values are `filter_values`.
    pub filter_field: String,
    /// Values of `filter_field`.
    pub filter_values: Vec<String>,
    /// Numeric field for the range filter and the sort.
    pub numeric_field: String,
    /// Upper end of `numeric_field` values (ranges are drawn below it).
    pub numeric_max: u64,
    /// `limit` of each search.
    pub limit: usize,
}

impl Default for QueryMixConfig {
    fn default() -> Self {
        Self {
            frequent: 30,
            rare: 20,
            phrase: 15,
            boolean: 15,
            filtered: 20,
            text_field: "body".into(),
            phrase_field: "title".into(),
            filter_field: "tags".into(),
            filter_values: (0..20).map(|i| format!("tag{i:02}")).collect(),
            numeric_field: "price".into(),
            numeric_max: 10_000,
            limit: 10,
        }
    }
}

/// One stage: a scenario, a load model and a bound.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Shown in reports; defaults to the scenario name.
    #[serde(default)]
    pub name: Option<String>,
    /// The workload.
    pub scenario: ScenarioKind,
    /// Open loop: requests started per second (at the stage start when ramping).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Open loop: the rate at the end of the stage; linear ramp from `rate` (needs
    /// `duration`).
    #[serde(default)]
    pub ramp_to: Option<f64>,
    /// Connections: requests in flight in a closed loop, the most in flight in an open
    /// loop (a schedule that needs more queues, and the queueing counts as latency).
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// Stop after this long.
    #[serde(default, with = "humantime_serde")]
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    #[serde(default)]
    pub requests: Option<u64>,
    /// Documents per ingest request.
    #[serde(default = "default_docs_per_request")]
    pub docs_per_request: usize,
    /// `?wait=` of ingest requests.
    #[serde(default)]
    pub wait: WaitMode,
    /// Give every ingested document a new id (otherwise the corpus ids repeat once the
    /// corpus is exhausted, which exercises dedup).
    #[serde(default)]
    pub fresh_ids: bool,
    /// Share of ingest requests in the mixed scenario (0 to 1).
    #[serde(default = "default_write_ratio")]
    pub write_ratio: f64,
    /// The search query mix.
    #[serde(default)]
    pub query_mix: QueryMixConfig,
    /// Path of the `get` scenario.
    #[serde(default = "default_get_path")]
    pub path: String,
    /// How often the freshness scenario polls search for its marker.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long the freshness scenario waits for a marker before counting a timeout.
    #[serde(default = "default_visibility_timeout", with = "humantime_serde")]
    pub visibility_timeout: Duration,
}

impl Stage {
    /// A stage of `scenario` with every default.
    pub fn new(scenario: ScenarioKind) -> Self {
        Self {
            name: None,
            scenario,
            rate: None,
            ramp_to: None,
            connections: default_connections(),
            duration: None,
            requests: None,
            docs_per_request: default_docs_per_request(),
            wait: WaitMode::default(),
            fresh_ids: false,
            write_ratio: default_write_ratio(),
            query_mix: QueryMixConfig::default(),
            path: default_get_path(),
            poll_interval: default_poll_interval(),
            visibility_timeout: default_visibility_timeout(),
        }
    }

    /// The name shown in reports.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.scenario.as_str().to_owned())
    }

    /// The load model in words, for reports.
    pub fn load_model(&self) -> String {
        match (self.rate, self.ramp_to) {
            (Some(from), Some(to)) => format!(
                "open loop, {from}/s ramping to {to}/s, up to {} connections",
                self.connections
            ),
            (Some(rate), None) => {
                format!(
                    "open loop, {rate}/s, up to {} connections",
                    self.connections
                )
            }
            _ => format!("closed loop, {} connections", self.connections),
        }
    }

    fn validate(&self, index: usize) -> Result<(), LoadgenError> {
        let at = |message: &str| {
            LoadgenError::Invalid(format!(
                "stage {} ({}): {message}",
                index + 1,
                self.display_name()
            ))
        };
        if self.duration.is_none() && self.requests.is_none() {
            return Err(at("needs a duration or a requests bound"));
        }
        if self.duration.is_some_and(|d| d.is_zero()) || self.requests == Some(0) {
            return Err(at("bounds must be positive"));
        }
        if self.connections == 0 {
            return Err(at("connections must be at least 1"));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate >= 0.0) {
                return Err(at("rate must be a non-negative number"));
            }
        }
        match (self.rate, self.ramp_to) {
            (None, Some(_)) => return Err(at("ramp_to needs a starting rate")),
            (Some(from), Some(to)) => {
                if !(to.is_finite() && to >= 0.0) || from + to <= 0.0 {
                    return Err(at("a ramp needs non-negative rates, not both zero"));
                }
                if self.duration.is_none() {
                    return Err(at("a ramp needs a duration"));
                }
            }
            (Some(rate), None) if rate <= 0.0 => return Err(at("rate must be positive")),
            _ => {}
        }
        if self.docs_per_request == 0 {
            return Err(at("docs_per_request must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.write_ratio) {
            return Err(at("write_ratio must be between 0 and 1"));
        }
        let mix = &self.query_mix;
        if mix.frequent + mix.rare + mix.phrase + mix.boolean + mix.filtered == 0 {
            return Err(at("the query mix needs one non-zero weight"));
        }
        if !self.path.starts_with('/') {
            return Err(at("path must start with '/'"));
        }
        Ok(())
    }
}

impl Plan {
    /// A plan with every default and the given stages.
    pub fn new(stages: Vec<Stage>) -> Self {
        Self {
            target: default_target(),
            collection: default_collection(),
            corpus: CorpusConfig::default(),
            api_key: None,
            token: None,
            request_timeout: default_request_timeout(),
            preload: 0,
            create_collection: true,
            scrape_metrics: true,
            thresholds: Vec::new(),
            stages,
        }
    }

    /// Reads a TOML scenario file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, LoadgenError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadgenError::Io {
            what: format!("reading the scenario file {}", path.display()),
            source,
        })?;
        toml::from_str(&text).map_err(|source| LoadgenError::PlanFile {
            path: path.display().to_string(),
            source,
        })
    }

    /// Refuses a plan that could not run or could run forever.
    pub fn validate(&self) -> Result<(), LoadgenError> {
        if self.stages.is_empty() {
            return Err(LoadgenError::Invalid("the plan has no stage".into()));
        }
        for (index, stage) in self.stages.iter().enumerate() {
            stage.validate(index)?;
        }
        for expression in &self.thresholds {
            crate::threshold::Threshold::parse(expression)?;
        }
        if self.corpus.file.is_none() && self.corpus.docs == 0 {
            return Err(LoadgenError::Invalid(
                "the corpus needs at least one document".into(),
            ));
        }
        Ok(())
    }
}

fn default_target() -> String {
    "http://127.0.0.1:7171".into()
}
fn default_collection() -> String {
    "corpus".into()
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_true() -> bool {
    true
}
fn default_connections() -> usize {
    16
}
fn default_docs_per_request() -> usize {
    100
}
fn default_write_ratio() -> f64 {
    0.1
}
fn default_get_path() -> String {
    "/_internal_/healthcheck".into()
}
fn default_poll_interval() -> Duration {
    Duration::from_millis(10)
}
fn default_visibility_timeout() -> Duration {
    Duration::from_secs(30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_file_parses_and_validates() {
        let plan: Plan = toml::from_str(
            r#"
            target = "http://127.0.0.1:9"
            thresholds = ["p99<250ms"]
            [corpus]
            docs = 10
            [[stage]]
            scenario = "ingest"
            rate = 5
            ramp_to = 50
            duration = "2s"
            [[stage]]
            scenario = "search"
            requests = 100
            [stage.query_mix]
            rare = 0
            "#,
        )
        .expect("parses");
        plan.validate().expect("valid");
        assert_eq!(plan.stages.len(), 2);
        assert_eq!(plan.stages[0].duration, Some(Duration::from_secs(2)));
        assert_eq!(plan.stages[1].query_mix.rare, 0);
        assert_eq!(plan.stages[1].query_mix.frequent, 30);
    }

    #[test]
    fn unbounded_or_inconsistent_stages_are_refused() {
        let unbounded = Plan::new(vec![Stage::new(ScenarioKind::Search)]);
        assert!(unbounded.validate().is_err());
        let mut ramp_without_duration = Stage::new(ScenarioKind::Ingest);
        ramp_without_duration.rate = Some(1.0);
        ramp_without_duration.ramp_to = Some(10.0);
        ramp_without_duration.requests = Some(10);
        assert!(Plan::new(vec![ramp_without_duration]).validate().is_err());
        let typo = toml::from_str::<Plan>("[[stage]]\nscenario = \"search\"\nrequest = 5\n");
        assert!(typo.is_err());
    }
}
