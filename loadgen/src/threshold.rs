//! Pass/fail rules for CI gating: `--threshold 'p99<250ms' --threshold 'errors<0.1%'`.
//!
//! Grammar: `[scope.]metric op value`, with
//! - scope: `ingest`, `search`, `get` (one kind of request) or `freshness` (the
//!   visibility lag); none means every request of the run;
//! - metric: `p50`, `p90`, `p99`, `p99.9`, `max`, `mean` (durations: `250ms`, `1.5s`,
//!   `800us`; a bare number is milliseconds), `errors` (a rate: `0.1%` or `0.001`), `rps`,
//!   `docs_per_s`, `mb_per_s`, `requests` (plain numbers);
//! - op: `<`, `<=`, `>`, `>=`.
//!
//! A rule whose scope saw no request is breached: a gate that measured nothing must not pass.

use serde::Serialize;

use crate::error::LoadgenError;
use crate::report::{Latency, Summary};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Comparison {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Metric {
    Percentile(f64),
    Max,
    Mean,
    Errors,
    Rps,
    DocsPerSecond,
    MbPerSecond,
    Requests,
}

impl Metric {
    fn is_latency(self) -> bool {
        matches!(self, Self::Percentile(_) | Self::Max | Self::Mean)
    }
}

/// A parsed rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    expression: String,
    scope: Option<String>,
    metric: Metric,
    comparison: Comparison,
    /// Milliseconds for latencies, a fraction for errors, a plain number otherwise.
    limit: f64,
}

/// A rule checked against a run.
#[derive(Clone, Debug, Serialize)]
pub struct ThresholdResult {
    /// The rule as written.
    pub expression: String,
    /// The measured value (ms, fraction or number), `None` when nothing was measured.
    pub actual: Option<f64>,
    /// The measured value for people.
    pub actual_display: String,
    /// Whether the rule held.
    pub passed: bool,
}

impl Threshold {
    /// Parses a rule.
    pub fn parse(expression: &str) -> Result<Self, LoadgenError> {
        let invalid = |why: &str| {
            LoadgenError::Invalid(format!(
                "threshold {expression:?}: {why} (expected e.g. 'p99<250ms', 'errors<0.1%', 'search.rps>100')"
            ))
        };
        let compact: String = expression.chars().filter(|c| !c.is_whitespace()).collect();
        let position = compact
            .find(['<', '>'])
            .ok_or_else(|| invalid("no comparison"))?;
        let (left, right) = compact.split_at(position);
        let (comparison, value) = if let Some(v) = right.strip_prefix("<=") {
            (Comparison::LessOrEqual, v)
        } else if let Some(v) = right.strip_prefix(">=") {
            (Comparison::GreaterOrEqual, v)
        } else if let Some(v) = right.strip_prefix('<') {
            (Comparison::Less, v)
        } else if let Some(v) = right.strip_prefix('>') {
            (Comparison::Greater, v)
        } else {
            return Err(invalid("no comparison"));
        };
        let (scope, metric_name) = match left.split_once('.') {
            Some((scope, rest)) if matches!(scope, "ingest" | "search" | "get" | "freshness") => {
                (Some(scope.to_owned()), rest)
            }
            _ => (None, left),
        };
        let metric = match metric_name.to_ascii_lowercase().as_str() {
            "max" => Metric::Max,
            "mean" | "avg" => Metric::Mean,
            "errors" | "error_rate" => Metric::Errors,
            "rps" | "requests_per_s" => Metric::Rps,
            "docs_per_s" | "dps" => Metric::DocsPerSecond,
            "mb_per_s" => Metric::MbPerSecond,
            "requests" => Metric::Requests,
            name => match name.strip_prefix('p').and_then(|p| p.parse::<f64>().ok()) {
                Some(p) if [50.0, 90.0, 99.0, 99.9].contains(&p) => Metric::Percentile(p),
                _ => {
                    return Err(invalid(
                        "unknown metric (percentiles: p50, p90, p99, p99.9)",
                    ))
                }
            },
        };
        if scope.as_deref() == Some("freshness") && !metric.is_latency() {
            return Err(invalid("freshness rules take a latency metric"));
        }
        let limit = if metric.is_latency() {
            parse_millis(value).ok_or_else(|| invalid("bad duration"))?
        } else if metric == Metric::Errors {
            match value.strip_suffix('%') {
                Some(percent) => percent.parse::<f64>().map(|p| p / 100.0),
                None => value.parse::<f64>(),
            }
            .map_err(|_| invalid("bad rate"))?
        } else {
            value.parse::<f64>().map_err(|_| invalid("bad number"))?
        };
        Ok(Self {
            expression: expression.to_owned(),
            scope,
            metric,
            comparison,
            limit,
        })
    }

    /// Checks the rule against the run's total summary.
    pub fn evaluate(&self, total: &Summary) -> ThresholdResult {
        let actual = self.actual(total);
        let passed = actual.is_some_and(|actual| match self.comparison {
            Comparison::Less => actual < self.limit,
            Comparison::LessOrEqual => actual <= self.limit,
            Comparison::Greater => actual > self.limit,
            Comparison::GreaterOrEqual => actual >= self.limit,
        });
        let actual_display = match actual {
            None => "nothing measured".to_owned(),
            Some(value) if self.metric.is_latency() => format!("{value:.3}ms"),
            Some(value) if self.metric == Metric::Errors => format!("{:.4}%", value * 100.0),
            Some(value) => format!("{value:.2}"),
        };
        ThresholdResult {
            expression: self.expression.clone(),
            actual,
            actual_display,
            passed,
        }
    }

    fn actual(&self, total: &Summary) -> Option<f64> {
        let latency_value = |latency: &Latency| match self.metric {
            Metric::Percentile(p) if (p - 50.0).abs() < 1e-9 => Some(latency.p50),
            Metric::Percentile(p) if (p - 90.0).abs() < 1e-9 => Some(latency.p90),
            Metric::Percentile(p) if (p - 99.0).abs() < 1e-9 => Some(latency.p99),
            Metric::Percentile(p) if (p - 99.9).abs() < 1e-9 => Some(latency.p99_9),
            Metric::Percentile(_) => None,
            Metric::Max => Some(latency.max),
            Metric::Mean => Some(latency.mean),
            _ => None,
        };
        if self.scope.as_deref() == Some("freshness") {
            let freshness = total.freshness.as_ref()?;
            if freshness.timeouts > 0 {
                // An invisible marker is an infinite lag.
                return Some(f64::INFINITY);
            }
            return latency_value(&freshness.lag_ms);
        }
        let op = match &self.scope {
            Some(scope) => total.ops.get(scope)?,
            None => &total.all,
        };
        if op.requests == 0 {
            return None;
        }
        match self.metric {
            Metric::Errors => Some(op.error_rate),
            Metric::Rps => Some(op.requests_per_second),
            Metric::DocsPerSecond => Some(op.docs_per_second),
            Metric::MbPerSecond => Some(op.mb_per_second),
            Metric::Requests => Some(op.requests as f64),
            _ => latency_value(&op.latency_ms),
        }
    }
}

fn parse_millis(value: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = value.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = value
        .strip_suffix("us")
        .or_else(|| value.strip_suffix("µs"))
    {
        (n, 0.001)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (value, 1.0)
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(|n| n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::OpSummary;

    fn summary(p99: f64, errors: u64, requests: u64) -> Summary {
        let mut all = OpSummary {
            requests,
            errors,
            error_rate: errors as f64 / requests.max(1) as f64,
            requests_per_second: 50.0,
            ..OpSummary::default()
        };
        all.latency_ms.p99 = p99;
        let mut total = Summary {
            all: all.clone(),
            ..Summary::default()
        };
        total.ops.insert("search".into(), all);
        total
    }

    #[test]
    fn rules_parse_and_evaluate() {
        let ok = summary(120.0, 0, 1000);
        let slow = summary(300.0, 5, 1000);
        let p99 = Threshold::parse("p99 < 250ms").expect("parses");
        assert!(p99.evaluate(&ok).passed);
        assert!(!p99.evaluate(&slow).passed);
        let errors = Threshold::parse("errors<0.1%").expect("parses");
        assert!(errors.evaluate(&ok).passed);
        assert!(!errors.evaluate(&slow).passed, "0.5% errors");
        assert!(
            Threshold::parse("search.p99<=0.3s")
                .expect("parses")
                .evaluate(&slow)
                .passed
        );
        assert!(
            Threshold::parse("rps>=50")
                .expect("parses")
                .evaluate(&ok)
                .passed
        );
        assert!(
            !Threshold::parse("ingest.rps>1")
                .expect("parses")
                .evaluate(&ok)
                .passed
        );
        assert!(
            !Threshold::parse("p99<1s")
                .expect("parses")
                .evaluate(&summary(1.0, 0, 0))
                .passed
        );
        for bad in [
            "p99",
            "p99<abc",
            "latency<3ms",
            "p100<1ms",
            "freshness.rps>1",
        ] {
            assert!(Threshold::parse(bad).is_err(), "{bad}");
        }
    }
}
