//! `sluice dlq list|replay|purge`: the dead-letter queue routes of a running node, from
//! the command line.
//!
//! The node holds its data directory's lock, so the CLI talks to it over HTTP rather than
//! opening the log itself. One request per call (a listing follows `next_after` pages),
//! on one HTTP/1.1 connection (hyper's low-level client: no pool is needed). Output is a
//! table for humans, or the server's JSON with `--json`.

use std::fmt::Write as _;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// `sluice dlq ...`
#[derive(Subcommand)]
pub enum DlqCommand {
    /// Lists dead-letter entries (never document values).
    List {
        #[command(flatten)]
        target: Target,
        /// Only this collection's entries.
        #[arg(long)]
        collection: Option<String>,
        /// Only entries with an id above this one.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Most entries shown.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Replays entries into the pipeline (a newer write of the same document still wins).
    Replay {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        selection: Selection,
    },
    /// Deletes entries for good.
    Purge {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        selection: Selection,
    },
}

/// Which node, and how to print.
#[derive(Args)]
pub struct Target {
    /// The node's base URL.
    #[arg(long, env = "SLUICE_URL", default_value = "http://127.0.0.1:7171")]
    url: String,
    /// Print the server's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

/// Which entries: exactly one of `--all`, `--collection`, or entry ids.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct Selection {
    /// Every entry.
    #[arg(long)]
    all: bool,
    /// One collection's entries.
    #[arg(long)]
    collection: Option<String>,
    /// These entry ids.
    ids: Vec<u64>,
}

/// Runs a `dlq` subcommand; the text to print on stdout.
pub async fn run(command: DlqCommand) -> anyhow::Result<String> {
    match command {
        DlqCommand::List {
            target,
            collection,
            after,
            limit,
        } => list(&target, collection.as_deref(), after, limit).await,
        DlqCommand::Replay { target, selection } => {
            let body = match (&selection.collection, selection.all) {
                (Some(c), _) => json!({ "collection": c }),
                (None, true) => json!({ "all": true }),
                (None, false) => json!({ "ids": selection.ids }),
            };
            let answer = call(&target.url, Method::POST, "/v1/dlq/replay", Some(body)).await?;
            if target.json {
                return Ok(format!("{answer}\n"));
            }
            let mut out = format!(
                "replayed {}, failed {}, not found {}\n",
                answer["replayed"], answer["failed"], answer["not_found"]
            );
            for failure in answer["failures"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "  entry {}: {} ({})",
                    failure["entry_id"],
                    text(&failure["code"]),
                    text(&failure["message"])
                );
            }
            Ok(out)
        }
        DlqCommand::Purge { target, selection } => {
            let query = match (&selection.collection, selection.all) {
                (Some(c), _) => format!("collection={}", encode(c)),
                (None, true) => "all=true".to_owned(),
                (None, false) => {
                    let ids: Vec<String> = selection.ids.iter().map(u64::to_string).collect();
                    format!("ids={}", ids.join(","))
                }
            };
            let answer = call(
                &target.url,
                Method::DELETE,
                &format!("/v1/dlq?{query}"),
                None,
            )
            .await?;
            if target.json {
                return Ok(format!("{answer}\n"));
            }
            Ok(format!("purged {}\n", answer["purged"]))
        }
    }
}

async fn list(
    target: &Target,
    collection: Option<&str>,
    mut after: u64,
    limit: usize,
) -> anyhow::Result<String> {
    let mut entries: Vec<Value> = Vec::new();
    let mut depth = Value::Null;
    let mut more = None;
    while entries.len() < limit {
        let page_limit = (limit - entries.len()).min(500);
        let mut path = format!("/v1/dlq?after={after}&limit={page_limit}");
        if let Some(c) = collection {
            let _ = write!(path, "&collection={}", encode(c));
        }
        let page = call(&target.url, Method::GET, &path, None).await?;
        entries.extend(page["entries"].as_array().cloned().unwrap_or_default());
        depth = page["depth"].clone();
        more = page["next_after"].as_u64();
        match more {
            Some(next) => after = next,
            None => break,
        }
    }
    if target.json {
        let answer = json!({"entries": entries, "next_after": more, "depth": depth});
        return Ok(format!("{answer}\n"));
    }
    let rows: Vec<[String; 8]> = entries
        .iter()
        .map(|e| {
            [
                e["entry_id"].to_string(),
                text(&e["collection"]),
                text(&e["id"]),
                text(&e["op"]),
                text(&e["code"]),
                e["attempts"].to_string(),
                text(&e["last_failure"]),
                text(&e["message"]),
            ]
        })
        .collect();
    let header = [
        "ENTRY",
        "COLLECTION",
        "ID",
        "OP",
        "CODE",
        "ATTEMPTS",
        "LAST FAILURE",
        "MESSAGE",
    ]
    .map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    let depths: Vec<String> = depth
        .as_object()
        .into_iter()
        .flatten()
        .map(|(c, n)| format!("{c}={n}"))
        .collect();
    let _ = writeln!(
        out,
        "{} entries shown; depth: {}",
        rows.len(),
        if depths.is_empty() {
            "0".to_owned()
        } else {
            depths.join(", ")
        }
    );
    if let Some(next) = more {
        let _ = writeln!(out, "more entries: pass --after {next}");
    }
    Ok(out)
}

/// A JSON string without quotes; anything else as JSON; `-` for null.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// One request to the node; the JSON answer of a 2xx, else the server's error as an error.
async fn call(
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let rest = base
        .strip_prefix("http://")
        .context("--url must be an http:// URL")?;
    let (authority, prefix) = match rest.find('/') {
        Some(slash) => (&rest[..slash], rest[slash..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to {base}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{prefix}{path}"))
        .header(HOST, authority);
    let payload = match body {
        Some(body) => {
            request = request.header(CONTENT_TYPE, "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    let response = sender
        .send_request(request.body(Full::new(payload))?)
        .await
        .with_context(|| format!("calling {base}"))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .context("reading the answer")?
        .to_bytes();
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let error = &answer["error"];
        bail!(
            "{} {}: {} (trace id {})",
            status.as_u16(),
            text(&error["code"]),
            text(&error["message"]),
            text(&error["trace_id"])
        );
    }
    Ok(answer)
}
