//! Newtypes for the identifiers that flow through the pipeline.
//!
//! Collection names follow Elasticsearch's index-name rules, so shippers' default names
//! (`logstash-2024.06.01`, `filebeat-8.15.0`) work unchanged; [`CollectionName::new`]
//! lists the rules and what sluice adds to them. Where a name goes into a log subject,
//! a consumer name or a directory, it is written as its token ([`crate::name_token`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

/// Longest document id accepted, in bytes.
pub const MAX_DOC_ID_BYTES: usize = 512;
/// Longest collection name accepted, in bytes of UTF-8 (Elasticsearch's limit).
pub const MAX_COLLECTION_NAME_BYTES: usize = 255;

/// Characters Elasticsearch refuses anywhere in an index name.
const FORBIDDEN_NAME_CHARS: &[char] =
    &['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':'];

/// A validated collection name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CollectionName(String);

/// Why a name or id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidIdentifier {
    /// The stable code users see.
    pub code: ErrorCode,
    /// What is wrong, without echoing the value back.
    pub message: String,
}

impl CollectionName {
    /// Validates `name` as a collection name.
    ///
    /// Elasticsearch's index-name rules: not empty, at most
    /// [`MAX_COLLECTION_NAME_BYTES`] bytes of UTF-8; lowercase only; none of
    /// `\ / * ? " < > |`, space, `,`, `#`, `:`; not starting with `-`, `_` or `+`; not `.`
    /// or `..`. sluice adds three rules: no control characters or other whitespace (they
    /// have no place in a log subject or a file name); not starting with `.` (those are
    /// Elasticsearch's hidden and system indices, which sluice does not hold); and a
    /// [token](crate::name_token) of at most [`crate::name_token::MAX_TOKEN_BYTES`] bytes,
    /// so that its consumer names and directories fit their systems' limits (a name of
    /// `a-z 0-9 _ - .` only may be that long; other characters take three bytes per UTF-8
    /// byte). The error message names the rule that failed, never the value.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidIdentifier> {
        let name = name.into();
        match Self::broken_rule(&name) {
            None => Ok(Self(name)),
            Some(rule) => Err(InvalidIdentifier {
                code: ErrorCode::InvalidCollectionName,
                message: format!("invalid collection name: {rule}"),
            }),
        }
    }

    /// The first naming rule `name` breaks, worded for the user.
    fn broken_rule(name: &str) -> Option<String> {
        use crate::name_token::{token_len, MAX_TOKEN_BYTES};
        if name.is_empty() {
            return Some("a collection name must not be empty".to_owned());
        }
        if name.len() > MAX_COLLECTION_NAME_BYTES {
            return Some(format!(
                "a collection name is at most {MAX_COLLECTION_NAME_BYTES} bytes"
            ));
        }
        if name == "." || name == ".." {
            return Some("a collection name must not be '.' or '..'".to_owned());
        }
        if name.starts_with(['-', '_', '+']) {
            return Some("a collection name must not start with '-', '_' or '+'".to_owned());
        }
        if name.starts_with('.') {
            return Some(
                "names starting with '.' are Elasticsearch's hidden and system indices, \
                 which sluice does not hold"
                    .to_owned(),
            );
        }
        if name.contains(FORBIDDEN_NAME_CHARS) {
            return Some(
                "a collection name must not contain '\\', '/', '*', '?', '\"', '<', '>', '|', \
                 ' ', ',', '#' or ':'"
                    .to_owned(),
            );
        }
        if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Some(
                "a collection name must not contain control characters or whitespace".to_owned(),
            );
        }
        if name
            .chars()
            .any(|c| c.to_lowercase().ne(std::iter::once(c)))
        {
            return Some("a collection name must be lowercase".to_owned());
        }
        if token_len(name) > MAX_TOKEN_BYTES {
            return Some(format!(
                "a collection name takes at most {MAX_TOKEN_BYTES} bytes in log subjects and \
                 file names, where a-z, 0-9, '_', '-' and '.' take one byte and any other \
                 character three per UTF-8 byte"
            ));
        }
        None
    }

    /// The name's token in log subjects, consumer names and directory names
    /// ([`crate::name_token`]): the name itself when it is only `a-z 0-9 _ -`.
    pub fn token(&self) -> std::borrow::Cow<'_, str> {
        crate::name_token::encode(self)
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CollectionName {
    type Error = InvalidIdentifier;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<CollectionName> for String {
    fn from(value: CollectionName) -> Self {
        value.0
    }
}

impl fmt::Display for CollectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A document's primary key value, as a string.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DocId(String);

impl DocId {
    /// Validates `id`: non-empty, at most [`MAX_DOC_ID_BYTES`], no control characters.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidIdentifier> {
        let id = id.into();
        if id.is_empty() || id.len() > MAX_DOC_ID_BYTES || id.chars().any(char::is_control) {
            return Err(InvalidIdentifier {
                code: ErrorCode::InvalidId,
                message: format!(
                    "document ids are 1 to {MAX_DOC_ID_BYTES} bytes with no control characters"
                ),
            });
        }
        Ok(Self(id))
    }

    /// A fresh, time-ordered id (UUIDv7) for a document that came without one.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// A deterministic id for line `line` of a request retried under `idempotency_key`:
    /// every retry of the request assigns the same ids (a UUIDv8 derived from both).
    pub fn derived(idempotency_key: &str, line: usize) -> Self {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(idempotency_key.as_bytes());
        hasher.update(&(line as u64).to_le_bytes());
        Self(uuid::Uuid::new_v8(hasher.digest128().to_be_bytes()).to_string())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The partition this id belongs to among `partitions`.
    pub fn partition(&self, partitions: u32) -> Partition {
        let hash = xxhash_rust::xxh3::xxh3_64(self.0.as_bytes());
        Partition((hash % u64::from(partitions.max(1))) as u32)
    }
}

impl TryFrom<String> for DocId {
    type Error = InvalidIdentifier;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<DocId> for String {
    fn from(value: DocId) -> Self {
        value.0
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A position in a log stream, assigned by the log when a message is appended.
///
/// Sequences only grow within a stream. Ops inside one batch message get an op sequence
/// derived from the message sequence (see [`Seq::for_op`]), so last-writer-wins can order
/// every op of every batch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Seq(pub u64);

/// Bits of an op sequence that number the op inside its batch message.
pub const OP_INDEX_BITS: u32 = 20;
/// Most ops one batch message may carry.
pub const MAX_OPS_PER_BATCH: usize = 1 << OP_INDEX_BITS;

impl Seq {
    /// The op sequence of the `index`-th op of the batch appended at message sequence `self`.
    ///
    /// Orders ops first by message, then by position in the message, so a later line of
    /// the same request wins over an earlier one for the same id.
    pub fn for_op(self, index: usize) -> Seq {
        debug_assert!(index < MAX_OPS_PER_BATCH);
        Seq((self.0 << OP_INDEX_BITS) | index as u64)
    }

    /// The message sequence an op sequence was derived from.
    pub fn message(self) -> Seq {
        Seq(self.0 >> OP_INDEX_BITS)
    }

    /// For a message sequence: the first op sequence of the message after it, so every
    /// op of this message and of earlier ones is below it (`Seq(u64::MAX)` when the next
    /// message's ops would not fit).
    pub fn ops_below_next_message(self) -> Seq {
        self.0
            .checked_add(1)
            .filter(|next| next.leading_zeros() >= OP_INDEX_BITS)
            .map_or(Seq(u64::MAX), |next| Seq(next).for_op(0))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One incarnation of a collection. A collection deleted and created again under the
/// same name is a new incarnation with a greater generation, and every op and event in
/// the logs carries the generation it was accepted for, so nothing of an earlier
/// incarnation (an op still in the log, an event on its way to an indexer, a write a
/// worker is retrying) can land in a later one: the store and the indexers drop what
/// carries another generation than the collection's current one.
///
/// Generations are taken from the wall clock in microseconds, kept strictly increasing
/// within a process ([`Generation::next`]). `Generation(0)` is the incarnation of a
/// collection created before generations were recorded, and of log messages written
/// then: the two match each other and nothing else.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Generation(pub u64);

impl Generation {
    /// A generation above every one this process handed out before, and above `after`
    /// (the incarnation being replaced, if any).
    pub fn next(after: Option<Generation>) -> Generation {
        static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_micros() as u64);
        let floor = after.map_or(0, |g| g.0);
        let mut last = LAST.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            let candidate = now_us.max(last + 1).max(floor + 1);
            match LAST.compare_exchange_weak(
                last,
                candidate,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            ) {
                Ok(_) => return Generation(candidate),
                Err(seen) => last = seen,
            }
        }
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A partition of a collection: documents are spread over partitions by id hash, and
/// each partition maps to one index shard.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Partition(pub u32);

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_names_follow_elasticsearch() {
        for good in [
            "docs_2026-a",
            "logstash-2024.06.01",
            "filebeat-8.15.0",
            "vector-2024.06.01",
            "a+b",
            "a..b",
            "a.",
            "données",
            "中文",
            "a~b%c!d=e@f",
            &"a".repeat(MAX_COLLECTION_NAME_BYTES - 15),
        ] {
            assert!(CollectionName::new(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn refused_collection_names_name_the_rule() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            (".", "'.' or '..'"),
            ("..", "'.' or '..'"),
            ("-a", "start with '-'"),
            ("_a", "start with '-'"),
            ("+a", "start with '-'"),
            (".kibana", "hidden and system"),
            ("Docs", "lowercase"),
            ("logstash-É", "lowercase"),
            ("a b", "must not contain '\\'"),
            ("a\\b", "must not contain '\\'"),
            ("a/b", "must not contain '\\'"),
            ("a*", "must not contain '\\'"),
            ("a?", "must not contain '\\'"),
            ("a\"b", "must not contain '\\'"),
            ("a<b", "must not contain '\\'"),
            ("a>b", "must not contain '\\'"),
            ("a|b", "must not contain '\\'"),
            ("a,b", "must not contain '\\'"),
            ("a#b", "must not contain '\\'"),
            ("a:b", "must not contain '\\'"),
            ("a\tb", "control characters or whitespace"),
            ("a\u{0}b", "control characters or whitespace"),
            ("a\u{a0}b", "control characters or whitespace"),
        ];
        for (bad, rule) in cases {
            let error = CollectionName::new(*bad).expect_err(bad);
            assert_eq!(error.code, ErrorCode::InvalidCollectionName);
            assert!(error.message.contains(rule), "{bad:?}: {}", error.message);
        }
        let too_long = "a".repeat(MAX_COLLECTION_NAME_BYTES + 1);
        let error = CollectionName::new(too_long).unwrap_err();
        assert!(
            error.message.contains("at most 255 bytes"),
            "{}",
            error.message
        );
        // Within 255 bytes, but not within the token bound.
        let wide = "é".repeat(50);
        let error = CollectionName::new(wide).unwrap_err();
        assert!(
            error.message.contains("log subjects and file names"),
            "{}",
            error.message
        );
        assert!(CollectionName::new("é".repeat(40)).is_ok());
    }

    #[test]
    fn doc_ids_refuse_control_characters_and_empty() {
        assert!(DocId::new("doc-1").is_ok());
        assert!(DocId::new("").is_err());
        assert!(DocId::new("a\nb").is_err());
        assert!(DocId::new("x".repeat(MAX_DOC_ID_BYTES + 1)).is_err());
    }

    #[test]
    fn derived_ids_are_deterministic_per_key_and_line() {
        assert_eq!(DocId::derived("k", 1), DocId::derived("k", 1));
        assert_ne!(DocId::derived("k", 1), DocId::derived("k", 2));
        assert_ne!(DocId::derived("k", 1), DocId::derived("j", 1));
        assert_eq!(
            uuid::Uuid::parse_str(DocId::derived("k", 1).as_str())
                .unwrap()
                .get_version_num(),
            8
        );
    }

    #[test]
    fn op_sequences_order_by_message_then_position() {
        let a = Seq(7).for_op(3);
        let b = Seq(7).for_op(4);
        let c = Seq(8).for_op(0);
        assert!(a < b && b < c);
        assert_eq!(c.message(), Seq(8));
    }

    #[test]
    fn partition_is_stable_and_in_range() {
        let id = DocId::new("doc-42").unwrap();
        assert_eq!(id.partition(4), id.partition(4));
        assert!(id.partition(4).0 < 4);
    }
}
