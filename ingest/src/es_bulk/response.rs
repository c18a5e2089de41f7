//! The `_bulk` answer as Elasticsearch shapes it: one item per action,
//! `{"<action>": {"_index", "_id", "result", "status", "_seq_no", "_primary_term",
//! "error": {"type", "reason"}}}`,
//! under `{"took", "errors", "items"}`; streamed in chunks as it is written, never built
//! whole in memory, with the reasons of failed items past the reported ones left out.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use sluice_core::ErrorCode;

use super::reader::BulkItem;

/// The answer to one item (its action and index are the item's own).
#[derive(Debug, Clone)]
pub(super) struct Outcome {
    pub(super) id: Option<String>,
    pub(super) status: u16,
    pub(super) result: Option<&'static str>,
    pub(super) error: Option<ItemError>,
    /// The op sequence of a write appended to the log (`_seq_no`); unknown for one
    /// spilled while the log is down.
    pub(super) seq_no: Option<u64>,
}

/// Why an item failed: its type always, its reason unless past the reported ones.
#[derive(Debug, Clone)]
pub(super) struct ItemError {
    pub(super) kind: &'static str,
    pub(super) reason: Option<Cow<'static, str>>,
}

impl Outcome {
    pub(super) fn failed(id: Option<String>, code: ErrorCode, reason: String) -> Self {
        Self::failed_as(id, code.http_status(), code.as_str(), reason)
    }

    pub(super) fn failed_as(
        id: Option<String>,
        status: u16,
        kind: &'static str,
        reason: String,
    ) -> Self {
        Self {
            id,
            status,
            result: None,
            seq_no: None,
            error: Some(ItemError {
                kind,
                reason: Some(Cow::Owned(reason)),
            }),
        }
    }

    pub(super) fn is_error(&self) -> bool {
        self.error.is_some()
    }
}

/// One item of the answer as Elasticsearch shapes it: `{"<action>": {...}}`.
pub(super) struct ItemJson<'a>(pub(super) &'a BulkItem, pub(super) &'a Outcome);

impl Serialize for ItemJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        #[derive(Serialize)]
        struct Body<'a> {
            _index: Option<&'a str>,
            _id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            result: Option<&'static str>,
            status: u16,
            #[serde(skip_serializing_if = "Option::is_none")]
            _seq_no: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            _primary_term: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<ErrorJson<'a>>,
        }
        #[derive(Serialize)]
        struct ErrorJson<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            reason: Option<&'a str>,
        }
        let ItemJson(item, outcome) = self;
        let body = Body {
            _index: item.index.as_deref(),
            _id: outcome.id.as_deref(),
            result: outcome.result,
            status: outcome.status,
            _seq_no: outcome.seq_no,
            _primary_term: outcome.seq_no.map(|_| super::PRIMARY_TERM),
            error: outcome.error.as_ref().map(|e| ErrorJson {
                kind: e.kind,
                reason: e.reason.as_deref(),
            }),
        };
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(item.action.as_str(), &body)?;
        map.end()
    }
}

/// Keeps the reasons of the first `max_reported` failed items and drops the rest's;
/// returns how many failed items go without one.
pub(super) fn bound_reasons(outcomes: &mut [Outcome], max_reported: usize) -> usize {
    let mut failed = 0;
    for error in outcomes.iter_mut().filter_map(|o| o.error.as_mut()) {
        failed += 1;
        if failed > max_reported {
            error.reason = None;
        }
    }
    failed.saturating_sub(max_reported)
}

/// The answer to a `_bulk` request, streamed: the head, then the items in chunks.
pub struct BulkResponse {
    pub(super) took_ms: u64,
    pub(super) errors_omitted: usize,
    pub(super) items: Arc<Vec<BulkItem>>,
    pub(super) outcomes: Vec<Outcome>,
}

impl BulkResponse {
    /// The items as a JSON value (for the error answers that carry them).
    pub(super) fn items_value(items: &[BulkItem], outcomes: &[Outcome]) -> Value {
        Value::Array(
            items
                .iter()
                .zip(outcomes)
                .map(|(item, outcome)| {
                    serde_json::to_value(ItemJson(item, outcome)).unwrap_or(Value::Null)
                })
                .collect(),
        )
    }
}

/// What became of one item, for the routes that send a body of one
/// ([`BulkResponse::into_single`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemOutcome {
    /// The document id, given or assigned.
    pub id: Option<String>,
    /// The item's HTTP status.
    pub status: u16,
    /// `created`, `updated`, `deleted` or `noop`, when it succeeded.
    pub result: Option<&'static str>,
    /// The error type and reason, when it failed.
    pub error: Option<(&'static str, String)>,
    /// The op's log sequence (`_seq_no`), when appended to the log.
    pub seq_no: Option<u64>,
}

impl BulkResponse {
    /// The outcome of the first item (a body of one item has only that one).
    pub fn into_single(self) -> Option<ItemOutcome> {
        let outcome = self.outcomes.into_iter().next()?;
        Some(ItemOutcome {
            id: outcome.id,
            status: outcome.status,
            result: outcome.result,
            seq_no: outcome.seq_no,
            error: outcome
                .error
                .map(|e| (e.kind, e.reason.map(Cow::into_owned).unwrap_or_default())),
        })
    }
}

/// Bytes of the answer written per chunk of the streamed body.
const ANSWER_CHUNK_BYTES: usize = 64 * 1024;

impl IntoResponse for BulkResponse {
    fn into_response(self) -> Response {
        let mut head = format!(
            "{{\"took\":{},\"errors\":{}",
            self.took_ms,
            self.outcomes.iter().any(Outcome::is_error)
        );
        if self.errors_omitted > 0 {
            head.push_str(&format!(",\"errors_omitted\":{}", self.errors_omitted));
        }
        head.push_str(",\"items\":[");
        let Self {
            items, outcomes, ..
        } = self;
        let chunks = futures_util::stream::unfold(
            (Some(head.into_bytes()), 0usize, false),
            move |(head, next, done)| {
                let chunk = if let Some(head) = head {
                    Some((head, (None, next, done)))
                } else if done {
                    None
                } else {
                    let mut out = Vec::with_capacity(ANSWER_CHUNK_BYTES + 1024);
                    let mut i = next;
                    while i < outcomes.len() && out.len() < ANSWER_CHUNK_BYTES {
                        if i > 0 {
                            out.push(b',');
                        }
                        let _ = serde_json::to_writer(&mut out, &ItemJson(&items[i], &outcomes[i]));
                        i += 1;
                    }
                    let done = i == outcomes.len();
                    if done {
                        out.extend_from_slice(b"]}");
                    }
                    Some((out, (None, i, done)))
                };
                std::future::ready(chunk.map(|(bytes, state)| {
                    (Ok::<_, std::convert::Infallible>(Bytes::from(bytes)), state)
                }))
            },
        );
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            Body::from_stream(chunks),
        )
            .into_response()
    }
}
