//! The self-contained HTML report: summary tables and inline SVG charts generated here — no
//! script, no stylesheet or font from elsewhere, so the file opens anywhere, offline, and can
//! be attached to a CI run as is.
//!
//! Charts: throughput over time (requests/s, errors/s, docs/s), latency over time (p50, p99,
//! max per second) and the latency distribution (percentile spectrum, log scale of the tail,
//! as HdrHistogram plots it). Every polyline carries `data-points`, the number of points it
//! draws, which the tests check.

use std::fmt::Write as _;

use crate::report::{Report, Summary};

const WIDTH: f64 = 920.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 46.0;

/// One line of a chart.
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

/// Escapes text for HTML and SVG.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// A "nice" step for about `target` ticks over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / target;
    let magnitude = 10f64.powf(raw.log10().floor());
    let normalized = raw / magnitude;
    let nice = if normalized <= 1.0 {
        1.0
    } else if normalized <= 2.0 {
        2.0
    } else if normalized <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

fn format_tick(value: f64) -> String {
    if value == 0.0 {
        "0".into()
    } else if value.abs() >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.1}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// An SVG line chart. `x_ticks` overrides the x labels (position, label).
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
    x_ticks: Option<&[(f64, &str)]>,
) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_max) = (0.0f64, 0.0f64);
    let mut x_min = f64::INFINITY;
    for &(x, y) in all {
        if x.is_finite() && y.is_finite() {
            x_max = x_max.max(x);
            x_min = x_min.min(x);
            y_max = y_max.max(y);
        }
    }
    if !x_min.is_finite() {
        x_min = 0.0;
    }
    let x_min = x_min.min(0.0);
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    let y_step = nice_step(y_max, 5.0);
    let y_top = if y_max <= 0.0 {
        1.0
    } else {
        (y_max / y_step).ceil() * y_step
    };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * plot_w;
    let sy = |y: f64| TOP + plot_h - (y / y_top).clamp(0.0, 1.0) * plot_h;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{t}"><title>{t}</title><rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#fff"/><text x="{LEFT}" y="20" font-size="14" font-weight="bold">{t}</text>"##,
        t = escape(title)
    );
    // Horizontal grid and y labels.
    let mut y = 0.0;
    while y <= y_top + y_step / 2.0 {
        let py = sy(y);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            py + 4.0,
            format_tick(y)
        );
        y += y_step;
    }
    // X labels.
    match x_ticks {
        Some(ticks) => {
            for &(x, label) in ticks {
                if x >= x_min && x <= x_max {
                    let px = sx(x);
                    let _ = write!(
                        svg,
                        r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#f0f0f0"/><text x="{px:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
                        TOP + plot_h,
                        TOP + plot_h + 16.0,
                        escape(label)
                    );
                }
            }
        }
        None => {
            let step = nice_step(x_max - x_min, 10.0);
            let mut x = (x_min / step).ceil() * step;
            while x <= x_max + step / 1000.0 {
                let px = sx(x);
                let _ = write!(
                    svg,
                    r##"<text x="{px:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
                    TOP + plot_h + 16.0,
                    format_tick(x)
                );
                x += step;
            }
        }
    }
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b:.1}" stroke="#555"/><line x1="{LEFT}" y1="{b:.1}" x2="{:.1}" y2="{b:.1}" stroke="#555"/><text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text><text x="14" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"##,
        WIDTH - RIGHT,
        LEFT + plot_w / 2.0,
        HEIGHT - 8.0,
        escape(x_label),
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(y_label),
        b = TOP + plot_h,
    );
    for (index, line) in series.iter().enumerate() {
        let mut points = String::new();
        let mut count = 0;
        for &(x, y) in &line.points {
            if x.is_finite() && y.is_finite() {
                let _ = write!(points, "{:.1},{:.1} ", sx(x), sy(y));
                count += 1;
            }
        }
        let _ = write!(
            svg,
            r##"<polyline class="series" data-series="{name}" data-points="{count}" fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"##,
            points.trim_end(),
            name = escape(line.name),
            color = line.color,
        );
        // A single point draws no line: mark it.
        if count == 1 {
            if let Some(&(x, y)) = line.points.first() {
                let _ = write!(
                    svg,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"##,
                    sx(x),
                    sy(y),
                    line.color
                );
            }
        }
        let lx = LEFT + 10.0 + index as f64 * 150.0;
        let _ = write!(
            svg,
            r##"<rect x="{lx:.1}" y="{:.1}" width="12" height="3" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"##,
            TOP - 8.0,
            line.color,
            lx + 16.0,
            TOP - 4.0,
            escape(line.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn summary_rows(out: &mut String, name: &str, summary: &Summary) {
    for (op_name, op) in &summary.ops {
        let l = &op.latency_ms;
        let errors: Vec<String> = op
            .errors_by_status
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .chain(op.errors_by_code.iter().map(|(k, v)| format!("{k}: {v}")))
            .collect();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.2}</td><td>{:.3}%</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td></tr>",
            escape(name),
            op_name,
            op.requests,
            op.requests_per_second,
            op.docs_per_second,
            op.mb_per_second,
            op.error_rate * 100.0,
            l.p50,
            l.p90,
            l.p99,
            l.p99_9,
            l.max,
            escape(&errors.join(", "))
        );
    }
}

/// Renders the report as one HTML page.
pub fn render(report: &Report) -> String {
    let mut html = String::with_capacity(64 * 1024);
    let verdict = if report.passed { "passed" } else { "FAILED" };
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sluice-loadgen report — {target}</title>
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;max-width:980px}}
table{{border-collapse:collapse;margin:8px 0 20px;font-size:13px}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}
.passed{{color:#1a7f37}}.failed{{color:#cf222e}}
svg.chart{{display:block;margin:12px 0;border:1px solid #ddd}}
</style></head><body>
<h1>sluice-loadgen report</h1>
<p>Target <code>{target}</code>, collection <code>{collection}</code>, started {started}, {elapsed:.1}s, verdict <strong class="{class}">{verdict}</strong>.</p>
"#,
        target = escape(&report.target),
        collection = escape(&report.collection),
        started = escape(&report.started_at),
        elapsed = report.total.elapsed_seconds,
        class = verdict.to_lowercase(),
    );

    html.push_str("<h2>Stages</h2><table><tr><th>stage</th><th>scenario</th><th>load model</th><th>seconds</th><th>requests</th><th>errors</th></tr>");
    for stage in &report.stages {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            escape(&stage.name),
            escape(&stage.scenario),
            escape(&stage.load_model),
            stage.summary.elapsed_seconds,
            stage.summary.all.requests,
            stage.summary.all.errors
        );
    }
    html.push_str("</table>");

    html.push_str("<h2>Requests</h2><table><tr><th>stage</th><th>kind</th><th>requests</th><th>req/s</th><th>docs/s</th><th>MB/s</th><th>errors</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>errors by status / code</th></tr>");
    for stage in &report.stages {
        summary_rows(&mut html, &stage.name, &stage.summary);
    }
    if report.stages.len() > 1 {
        summary_rows(&mut html, "total", &report.total);
    }
    html.push_str("</table>");

    let freshness: Vec<_> = report
        .stages
        .iter()
        .filter_map(|s| s.summary.freshness.as_ref().map(|f| (&s.name, f)))
        .collect();
    if !freshness.is_empty() {
        html.push_str("<h2>Freshness (2xx to visible in search)</h2><table><tr><th>stage</th><th>visible</th><th>timeouts</th><th>polls</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th></tr>");
        for (name, f) in freshness {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
                escape(name),
                f.visible,
                f.timeouts,
                f.polls,
                f.lag_ms.p50,
                f.lag_ms.p99,
                f.lag_ms.max
            );
        }
        html.push_str("</table>");
    }

    html.push_str("<h2>Charts</h2>");
    let timeline = &report.timeline;
    let seconds = |f: fn(&crate::report::TimelinePoint) -> f64| -> Vec<(f64, f64)> {
        timeline.iter().map(|p| (p.second as f64, f(p))).collect()
    };
    let mut throughput = vec![
        Series {
            name: "requests/s",
            color: "#0969da",
            points: seconds(|p| p.requests as f64),
        },
        Series {
            name: "errors/s",
            color: "#cf222e",
            points: seconds(|p| p.errors as f64),
        },
    ];
    if timeline.iter().any(|p| p.docs > 0) {
        throughput.push(Series {
            name: "docs/s",
            color: "#1a7f37",
            points: seconds(|p| p.docs as f64),
        });
    }
    html.push_str(&line_chart(
        "Throughput over time",
        "seconds since start",
        "per second",
        &throughput,
        None,
    ));
    // Seconds without completions have no latency: leave them out rather than draw zeros.
    let latency_points = |f: fn(&crate::report::TimelinePoint) -> f64| -> Vec<(f64, f64)> {
        timeline
            .iter()
            .filter(|p| p.requests > 0)
            .map(|p| (p.second as f64, f(p)))
            .collect()
    };
    html.push_str(&line_chart(
        "Latency over time",
        "seconds since start",
        "milliseconds",
        &[
            Series {
                name: "p50",
                color: "#1a7f37",
                points: latency_points(|p| p.p50_ms),
            },
            Series {
                name: "p99",
                color: "#bf8700",
                points: latency_points(|p| p.p99_ms),
            },
            Series {
                name: "max",
                color: "#cf222e",
                points: latency_points(|p| p.max_ms),
            },
        ],
        None,
    ));
    let spectrum: Vec<(f64, f64)> = report
        .latency_distribution
        .iter()
        .map(|p| (nines(p.percentile), p.latency_ms))
        .collect();
    let ticks: [(f64, &str); 7] = [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
        (6.0, "max"),
    ];
    html.push_str(&line_chart(
        "Latency distribution (percentile spectrum)",
        "percentile",
        "milliseconds",
        &[Series {
            name: "latency",
            color: "#8250df",
            points: spectrum,
        }],
        Some(&ticks),
    ));

    if let Some(server) = &report.server {
        html.push_str("<h2>Server-side deltas (/metrics)</h2><table>");
        let ratio = server
            .search_cache_hit_ratio
            .map_or("n/a".to_owned(), |r| format!("{:.1}%", r * 100.0));
        for (name, value) in [
            ("dedup skips", server.dedup_skips.to_string()),
            ("search cache hit ratio", ratio),
            ("DLQ messages", server.dlq_messages.to_string()),
            ("log redeliveries", server.log_redeliveries.to_string()),
            (
                "documents accepted",
                server.ingest_documents_accepted.to_string(),
            ),
            (
                "documents rejected",
                server.ingest_documents_rejected.to_string(),
            ),
            ("store writes", server.store_writes.to_string()),
            ("index commits", server.indexer_commits.to_string()),
        ] {
            let _ = write!(html, "<tr><td>{name}</td><td>{}</td></tr>", escape(&value));
        }
        html.push_str(
            "</table><details><summary>every sluice_* counter that changed</summary><table>",
        );
        for (series, delta) in &server.counters {
            let _ = write!(html, "<tr><td>{}</td><td>{delta}</td></tr>", escape(series));
        }
        html.push_str("</table></details>");
    } else if let Some(note) = &report.server_note {
        let _ = write!(html, "<p>Server-side deltas: {}</p>", escape(note));
    }

    if !report.thresholds.is_empty() {
        html.push_str(
            "<h2>Thresholds</h2><table><tr><th>rule</th><th>actual</th><th>verdict</th></tr>",
        );
        for t in &report.thresholds {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                escape(&t.expression),
                escape(&t.actual_display),
                if t.passed { "passed" } else { "failed" },
                if t.passed { "ok" } else { "breached" }
            );
        }
        html.push_str("</table>");
    }
    let _ = writeln!(
        html,
        "<p><small>{} {}</small></p></body></html>",
        escape(&report.tool),
        escape(&report.version)
    );
    html
}

/// `-log10(1 - p)`: 1 at 90 %, 2 at 99 %, 3 at 99.9 %; 100 % is drawn at 6.
fn nines(percentile: f64) -> f64 {
    let tail = 1.0 - percentile / 100.0;
    if tail <= 1e-6 {
        6.0
    } else {
        -tail.log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_draw_their_points_and_escape_labels() {
        let svg = line_chart(
            "a <b>",
            "x",
            "y",
            &[Series {
                name: "s&t",
                color: "#000",
                points: vec![(0.0, 1.0), (1.0, 3.0), (2.0, f64::NAN)],
            }],
            None,
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("data-points=\"2\""));
        assert!(svg.contains("a &lt;b&gt;") && svg.contains("s&amp;t"));
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert_eq!(nines(100.0), 6.0);
    }
}
