//! The one table every figure of a run ends up in, as markdown.
//!
//! Each row is a figure, its value, and how it compares: a ratio to the raw limit it is
//! held against and the issue-5 target with whether this run meets it. Formatting lives
//! here so the numbers in `BENCHMARKS.md` and on the terminal read the same.

use std::fmt::Write as _;
use std::time::Duration;

/// One row: figure, value, comparison.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was measured.
    pub figure: String,
    /// The measurement.
    pub value: String,
    /// Ratio to a limit and/or target verdict; may be empty.
    pub comparison: String,
}

/// A titled table.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Lines printed above the table (machine, command).
    pub preamble: Vec<String>,
    /// The rows, in order.
    pub rows: Vec<Row>,
}

impl Report {
    /// Appends a row.
    pub fn row(
        &mut self,
        figure: impl Into<String>,
        value: impl Into<String>,
        comparison: impl Into<String>,
    ) {
        self.rows.push(Row {
            figure: figure.into(),
            value: value.into(),
            comparison: comparison.into(),
        });
    }

    /// The report as markdown: preamble lines, a blank line, the table.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        for line in &self.preamble {
            let _ = writeln!(out, "{line}  ");
        }
        if !self.preamble.is_empty() {
            out.push('\n');
        }
        out.push_str("| figure | value | ratio / target |\n|---|---:|---|\n");
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                escape(&row.figure),
                escape(&row.value),
                escape(&row.comparison)
            );
        }
        out
    }
}

fn escape(cell: &str) -> String {
    cell.replace('|', "\\|")
}

/// `12,345 docs/s`
pub fn rate(docs_per_sec: f64) -> String {
    format!("{} docs/s", thousands(docs_per_sec.round() as u64))
}

/// `12,345 docs/CPU-s`
pub fn per_cpu(docs_per_cpu_sec: f64) -> String {
    format!("{} docs/CPU-s", thousands(docs_per_cpu_sec.round() as u64))
}

/// `12,345`
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Milliseconds with a precision that suits the magnitude: `0.42 ms`, `12.3 ms`, `1,234 ms`.
pub fn millis(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{} ms", thousands(ms.round() as u64))
    }
}

/// `0.62× (target ≥ 0.60: met)`
pub fn ratio_against(ratio: f64, target_at_least: f64) -> String {
    format!(
        "{ratio:.2}× (target ≥ {target_at_least:.2}: {})",
        verdict(ratio >= target_at_least)
    )
}

/// `met` or `missed`.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "missed"
    }
}

/// `2 cores, AMD EPYC, 23.4 GiB RAM` from `/proc`.
pub fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim())
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let ram_gib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    format!("{cores} cores, {model}, {ram_gib:.1} GiB RAM")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_and_tables() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(millis(Duration::from_micros(420)), "0.42 ms");
        assert_eq!(millis(Duration::from_millis(1234)), "1,234 ms");
        assert_eq!(ratio_against(0.5, 0.6), "0.50× (target ≥ 0.60: missed)");
        let mut report = Report::default();
        report.row("a|b", rate(1000.4), "");
        let table = report.to_markdown();
        assert!(table.contains("| a\\|b | 1,000 docs/s |  |"), "{table}");
        assert!(machine_description().contains("cores"));
    }
}
