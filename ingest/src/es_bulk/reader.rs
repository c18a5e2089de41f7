//! Reading an Elasticsearch `_bulk` body: action/metadata lines paired with their source
//! lines, with an error per item instead of per request wherever pairing survives.
//!
//! The body is NDJSON: an action line (`{"index": {...}}`, `{"create": {...}}`,
//! `{"update": {...}}` or `{"delete": {...}}`), followed by a source line for every action
//! but `delete`. Line boundaries never depend on a line's content, so a bad *source* line
//! only fails its own item. A bad *action* line is different: without knowing the action,
//! the reader cannot tell whether the next line is its source or the next action, so, as
//! Elasticsearch does, it refuses the whole request ([`ReadError`]) before anything is
//! written.
//!
//! Sources are not parsed here: an item keeps the byte range of its source line, and the
//! handler parses and validates items one at a time, so a request never holds more than
//! one parsed document besides the canonical bytes it keeps anyway.

use std::ops::Range;
use std::sync::Arc;

use serde_json::{Map, Value};
use sluice_core::document::{parse_line, LineError, LineLimits};
use sluice_core::ErrorCode;

/// What an item asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Insert or replace.
    Index,
    /// Insert only if the id is not taken.
    Create,
    /// Merge a partial document into the current one (or upsert).
    Update,
    /// Delete by id.
    Delete,
}

impl Action {
    /// The action's name on the wire (the key of its response item).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Index => "index",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "index" => Action::Index,
            "create" => Action::Create,
            "update" => Action::Update,
            "delete" => Action::Delete,
            _ => return None,
        })
    }

    fn has_source(self) -> bool {
        self != Action::Delete
    }
}

/// One action with its metadata and the place of its source line.
#[derive(Clone, Debug, PartialEq)]
pub struct BulkItem {
    /// 1-based line number of the action line.
    pub line: usize,
    /// What the item asks for.
    pub action: Action,
    /// The target index: `_index` of the action, else the one from the path (shared by
    /// the items that use it, not copied into each).
    pub index: Option<Arc<str>>,
    /// `_id` of the action, if given.
    pub id: Option<String>,
    /// Byte range of the source line in the body (`None` for `delete`).
    pub source: Option<Range<usize>>,
    /// Why the item fails whatever its source says (an unsupported metadata field, a
    /// missing `_id` for `delete`/`update`...).
    pub error: Option<LineError>,
    /// Optimistic concurrency: the item applies only if the current document has this
    /// sequence (`_seq_no`) and primary term (always 1 here).
    pub if_seq_no: Option<(u64, u64)>,
}

/// Why the whole body was refused: an action line that does not parse as one, or an
/// action whose source line is missing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ReadError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong (names keys, never values).
    pub message: String,
}

/// Metadata keys accepted and ignored: `routing` (sluice partitions by id),
/// `retry_on_conflict` (updates do not conflict here), `require_alias` (no aliases).
const IGNORED_METADATA: [&str; 3] = ["routing", "retry_on_conflict", "require_alias"];
/// Metadata keys of Elasticsearch features sluice does not have; the item fails rather
/// than silently losing what the key asked for (a precondition, a pipeline).
const UNSUPPORTED_METADATA: [&str; 5] = [
    "version",
    "version_type",
    "pipeline",
    "dynamic_templates",
    "_source",
];

/// Reads `body` into items. `default_index` is the `{index}` of `POST /{index}/_bulk`.
/// Blank lines where an action is expected are skipped.
pub fn read(
    body: &[u8],
    default_index: Option<&str>,
    limits: &LineLimits,
) -> Result<Vec<BulkItem>, ReadError> {
    let mut items = Vec::new();
    let default_index: Option<Arc<str>> = default_index.map(Arc::from);
    let mut lines = line_ranges(body).enumerate().peekable();
    while let Some((index, range)) = lines.next() {
        let line = &body[range];
        if is_blank(line) {
            continue;
        }
        let number = index + 1;
        let (action, meta) = read_action(line, limits).map_err(|message| ReadError {
            line: number,
            message,
        })?;
        let source = if action.has_source() {
            match lines.next() {
                Some((_, range)) => Some(range),
                None => {
                    return Err(ReadError {
                        line: number,
                        message: format!(
                            "the {} action has no source line after it",
                            action.as_str()
                        ),
                    })
                }
            }
        } else {
            None
        };
        let mut item = BulkItem {
            line: number,
            action,
            index: default_index.clone(),
            id: None,
            source,
            error: None,
            if_seq_no: None,
        };
        apply_metadata(&mut item, meta).map_err(|message| ReadError {
            line: number,
            message,
        })?;
        items.push(item);
    }
    Ok(items)
}

/// Byte ranges of the lines of `body`: `\n` separated, a trailing `\r` dropped, no empty
/// last line (the same framing as the native NDJSON endpoint).
fn line_ranges(body: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let end = body.len() - usize::from(body.ends_with(b"\n"));
    let mut start = 0;
    let mut done = end == 0;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let stop = memchr::memchr(b'\n', &body[start..end]).map_or(end, |i| start + i);
        let mut range = start..stop;
        if body[range.clone()].ends_with(b"\r") {
            range.end -= 1;
        }
        if stop == end {
            done = true;
        } else {
            start = stop + 1;
        }
        Some(range)
    })
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

fn read_action(line: &[u8], limits: &LineLimits) -> Result<(Action, Map<String, Value>), String> {
    let object = parse_line(line, limits)
        .map_err(|e| format!("malformed action/metadata line ({}: {})", e.code, e.message))?;
    let mut entries = object.into_iter();
    let (Some((name, meta)), None) = (entries.next(), entries.next()) else {
        return Err(
            "an action/metadata line is an object with exactly one key: index, create, update or delete"
                .to_owned(),
        );
    };
    let action = Action::from_name(&name).ok_or_else(|| {
        format!("unknown action {name:?}; expected one of index, create, update, delete")
    })?;
    match meta {
        Value::Object(meta) => Ok((action, meta)),
        _ => Err(format!("the {name} action's metadata must be an object")),
    }
}

fn apply_metadata(item: &mut BulkItem, meta: Map<String, Value>) -> Result<(), String> {
    let (mut seq_no, mut primary_term) = (None, None);
    for (key, value) in meta {
        match key.as_str() {
            "if_seq_no" | "if_primary_term" => {
                let number = value
                    .as_u64()
                    .ok_or_else(|| format!("{key} must be a non-negative integer"))?;
                if key == "if_seq_no" {
                    seq_no = Some(number);
                } else {
                    primary_term = Some(number);
                }
            }
            "_index" => match value {
                Value::String(index) => item.index = Some(Arc::from(index)),
                _ => return Err("_index must be a string".to_owned()),
            },
            "_id" => match value {
                Value::String(id) => item.id = Some(id),
                Value::Number(n) => item.id = Some(n.to_string()),
                Value::Null => {}
                _ => return Err("_id must be a string".to_owned()),
            },
            k if IGNORED_METADATA.contains(&k) => {}
            k if UNSUPPORTED_METADATA.contains(&k) => {
                item.error.get_or_insert(LineError {
                    code: ErrorCode::InvalidRequest,
                    message: format!("metadata field {k:?} is not supported by sluice"),
                });
            }
            other => {
                return Err(format!(
                    "the {} action has an unknown metadata field {other:?}",
                    item.action.as_str()
                ))
            }
        }
    }
    match (seq_no, primary_term) {
        (None, None) => {}
        (Some(_), Some(_)) if item.action == Action::Create => {
            item.error.get_or_insert(LineError {
                code: ErrorCode::InvalidRequest,
                message: "create does not take if_seq_no; use index".to_owned(),
            });
        }
        (Some(_), Some(_)) if item.id.is_none() => {
            item.error.get_or_insert(LineError {
                code: ErrorCode::InvalidRequest,
                message: "if_seq_no needs an _id".to_owned(),
            });
        }
        (Some(seq_no), Some(primary_term)) => item.if_seq_no = Some((seq_no, primary_term)),
        _ => {
            item.error.get_or_insert(LineError {
                code: ErrorCode::InvalidRequest,
                message: "if_seq_no and if_primary_term go together".to_owned(),
            });
        }
    }
    if item.id.is_none() && matches!(item.action, Action::Delete | Action::Update) {
        item.error.get_or_insert(LineError {
            code: ErrorCode::InvalidId,
            message: format!("the {} action needs an _id", item.action.as_str()),
        });
    }
    if item.index.is_none() {
        item.error.get_or_insert(LineError {
            code: ErrorCode::InvalidCollectionName,
            message: "no _index in the action and none in the path".to_owned(),
        });
    }
    Ok(())
}

/// The body of an `update` item.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdateSpec {
    /// The partial document merged into the current one.
    pub doc: Option<Map<String, Value>>,
    /// Insert `doc` when the document does not exist.
    pub doc_as_upsert: bool,
    /// The document inserted when it does not exist.
    pub upsert: Option<Map<String, Value>>,
    /// Skip the write when the merge changes nothing (default true).
    pub detect_noop: bool,
}

/// Reads an `update` item's source line.
pub fn parse_update(line: &[u8], limits: &LineLimits) -> Result<UpdateSpec, LineError> {
    let object = parse_line(line, limits)?;
    let invalid = |message: String| LineError {
        code: ErrorCode::InvalidRequest,
        message,
    };
    let mut spec = UpdateSpec {
        detect_noop: true,
        ..UpdateSpec::default()
    };
    for (key, value) in object {
        match (key.as_str(), value) {
            ("doc", Value::Object(doc)) => spec.doc = Some(doc),
            ("upsert", Value::Object(doc)) => spec.upsert = Some(doc),
            ("doc_as_upsert", Value::Bool(b)) => spec.doc_as_upsert = b,
            ("detect_noop", Value::Bool(b)) => spec.detect_noop = b,
            ("doc" | "upsert", _) => return Err(invalid(format!("{key} must be an object"))),
            ("doc_as_upsert" | "detect_noop", _) => {
                return Err(invalid(format!("{key} must be true or false")))
            }
            ("script" | "scripted_upsert", _) => {
                return Err(invalid(
                    "scripted updates are not supported by sluice".to_owned(),
                ))
            }
            ("_source" | "lang" | "params", _) => {
                return Err(invalid(format!(
                    "update field {key:?} is not supported by sluice"
                )))
            }
            (other, _) => return Err(invalid(format!("unknown update field {other:?}"))),
        }
    }
    if spec.doc.is_none() {
        return Err(invalid("an update needs a \"doc\" object".to_owned()));
    }
    Ok(spec)
}

/// Merges `patch` into `target` the way Elasticsearch merges a partial document: objects
/// merge key by key, recursively; anything else (arrays included) is replaced.
pub fn merge(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (key, value) in patch {
        match (target.get_mut(&key), value) {
            (Some(Value::Object(current)), Value::Object(patch)) => merge(current, patch),
            (_, value) => {
                target.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn limits() -> LineLimits {
        LineLimits {
            max_line_bytes: 4096,
            max_depth: 16,
        }
    }

    #[test]
    fn pairs_actions_with_sources() {
        let body = concat!(
            "{\"index\":{\"_index\":\"a\",\"_id\":\"1\"}}\n{\"x\":1}\r\n",
            "\n",
            "{\"delete\":{\"_id\":\"2\"}}\n",
            "{\"create\":{\"_id\":3}}\nnot even json\n",
            "{\"update\":{\"_id\":\"4\",\"routing\":\"r\"}}\n{\"doc\":{\"y\":2}}",
        );
        let items = read(body.as_bytes(), Some("b"), &limits()).unwrap();
        let summary: Vec<_> = items
            .iter()
            .map(|i| {
                (
                    i.line,
                    i.action,
                    i.index.as_deref(),
                    i.id.as_deref(),
                    i.source.clone().map(|r| &body[r]),
                    i.error.is_some(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    1,
                    Action::Index,
                    Some("a"),
                    Some("1"),
                    Some("{\"x\":1}"),
                    false
                ),
                (4, Action::Delete, Some("b"), Some("2"), None, false),
                (
                    5,
                    Action::Create,
                    Some("b"),
                    Some("3"),
                    Some("not even json"),
                    false
                ),
                (
                    7,
                    Action::Update,
                    Some("b"),
                    Some("4"),
                    Some("{\"doc\":{\"y\":2}}"),
                    false
                ),
            ]
        );
    }

    #[test]
    fn item_errors_keep_the_pairing() {
        let body = concat!(
            "{\"delete\":{\"_index\":\"a\"}}\n",
            "{\"index\":{\"if_seq_no\":3}}\n{}\n",
            "{\"index\":{}}\n{}\n",
        );
        let items = read(body.as_bytes(), None, &limits()).unwrap();
        let codes: Vec<_> = items
            .iter()
            .map(|i| i.error.as_ref().map(|e| e.code))
            .collect();
        assert_eq!(
            codes,
            vec![
                Some(ErrorCode::InvalidId),
                Some(ErrorCode::InvalidRequest),
                Some(ErrorCode::InvalidCollectionName),
            ]
        );
        assert_eq!(items[2].line, 4);
    }

    #[test]
    fn a_bad_action_line_refuses_the_request() {
        let cases: [(&str, usize); 7] = [
            ("{\"index\":{}}\n{}\nnot json\n", 3),
            ("{\"upsert\":{}}\n{}\n", 1),
            ("{\"index\":{},\"delete\":{}}\n", 1),
            ("{\"index\":[]}\n{}\n", 1),
            ("{\"index\":{\"_type\":\"doc\"}}\n{}\n", 1),
            ("{\"delete\":{\"_id\":\"1\"}}\n{\"index\":{}}\n", 2),
            ("[1]\n", 1),
        ];
        for (body, line) in cases {
            let err = read(body.as_bytes(), Some("i"), &limits()).unwrap_err();
            assert_eq!(err.line, line, "{body}");
        }
        assert_eq!(read(b"", None, &limits()).unwrap(), vec![]);
        assert_eq!(read(b"\n\n", None, &limits()).unwrap(), vec![]);
    }

    #[test]
    fn update_specs() {
        let spec = parse_update(br#"{"doc":{"a":1},"doc_as_upsert":true}"#, &limits()).unwrap();
        assert!(spec.doc_as_upsert && spec.detect_noop);
        for bad in [
            r#"{"script":{"source":"x"}}"#,
            r#"{"doc":1}"#,
            r#"{"upsert":{"a":1}}"#,
            r#"{"doc":{},"other":1}"#,
        ] {
            let err = parse_update(bad.as_bytes(), &limits()).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest, "{bad}");
        }
        assert_eq!(
            parse_update(b"{\"doc\":", &limits()).unwrap_err().code,
            ErrorCode::MalformedJson
        );
    }

    #[test]
    fn merge_is_recursive_for_objects_only() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "l": [1, 2], "k": "v"})
            .as_object()
            .cloned()
            .unwrap();
        let patch = json!({"a": {"c": 3, "d": 4}, "l": [3], "n": null})
            .as_object()
            .cloned()
            .unwrap();
        merge(&mut doc, patch);
        assert_eq!(
            Value::Object(doc),
            json!({"a": {"b": 1, "c": 3, "d": 4}, "l": [3], "k": "v", "n": null})
        );
    }

    fn action_line() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec!["index", "create", "update", "delete"]),
            prop::option::of("[a-z]{1,8}"),
            prop::option::of("[a-z0-9]{1,8}"),
        )
            .prop_map(|(action, index, id)| {
                let mut meta = Map::new();
                if let Some(index) = index {
                    meta.insert("_index".into(), Value::String(index));
                }
                if let Some(id) = id {
                    meta.insert("_id".into(), Value::String(id));
                }
                json!({ action: meta }).to_string()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary bytes never panic the reader, and every item it returns points at
        /// a line of the body.
        #[test]
        fn never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(items) = read(&body, Some("i"), &limits()) {
                for item in items {
                    if let Some(range) = item.source {
                        prop_assert!(range.end <= body.len());
                        prop_assert!(!body[range].contains(&b'\n'));
                    }
                }
            }
        }

        /// Well-formed bodies read back as exactly the items they were written from,
        /// whatever the sources contain.
        #[test]
        fn well_formed_bodies_round_trip(
            items in prop::collection::vec((action_line(), "[ -~]{0,40}"), 0..20),
            crlf in any::<bool>(),
        ) {
            let newline = if crlf { "\r\n" } else { "\n" };
            let mut body = String::new();
            let mut expected = Vec::new();
            let mut line = 1;
            for (action, source) in &items {
                body.push_str(action);
                body.push_str(newline);
                let meta: Value = serde_json::from_str(action).unwrap();
                let (name, meta) = meta.as_object().unwrap().iter().next().unwrap();
                let has_source = name != "delete";
                // A blank source line would still be this item's source, but keep
                // generated sources non-blank so the expectations stay simple.
                let source = format!("x{source}");
                if has_source {
                    body.push_str(&source);
                    body.push_str(newline);
                }
                expected.push((
                    line,
                    name.clone(),
                    meta.get("_index").and_then(Value::as_str).unwrap_or("dflt").to_owned(),
                    meta.get("_id").and_then(Value::as_str).map(str::to_owned),
                    has_source.then_some(source),
                ));
                line += 1 + usize::from(has_source);
            }
            let read_items = read(body.as_bytes(), Some("dflt"), &limits()).unwrap();
            let got: Vec<_> = read_items
                .iter()
                .map(|i| (
                    i.line,
                    i.action.as_str().to_owned(),
                    i.index.as_deref().unwrap().to_owned(),
                    i.id.clone(),
                    i.source.clone().map(|r| body[r].to_owned()),
                ))
                .collect();
            prop_assert_eq!(got, expected);
        }
    }
}
