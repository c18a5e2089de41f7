//! Newtypes for the identifiers that flow through the pipeline.
//!
//! Collection names double as log subject tokens (`sluice.docs.{c}.{p}`), so they are
//! restricted to characters every log and store accepts: lowercase ASCII letters, digits,
//! `_` and `-`, starting with a letter or digit, at most 64 bytes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

/// Longest document id accepted, in bytes.
pub const MAX_DOC_ID_BYTES: usize = 512;
/// Longest collection name accepted, in bytes.
pub const MAX_COLLECTION_NAME_BYTES: usize = 64;

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
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidIdentifier> {
        let name = name.into();
        let valid_chars = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        let valid_start = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if name.len() > MAX_COLLECTION_NAME_BYTES || !valid_chars || !valid_start {
            return Err(InvalidIdentifier {
                code: ErrorCode::InvalidCollectionName,
                message: format!(
                    "collection names are 1 to {MAX_COLLECTION_NAME_BYTES} characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
                ),
            });
        }
        Ok(Self(name))
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
    fn collection_names_are_subject_safe() {
        assert!(CollectionName::new("docs_2026-a").is_ok());
        for bad in ["", "Docs", "a.b", "a b", "-a", "é", &"a".repeat(65)] {
            assert!(CollectionName::new(bad).is_err(), "{bad:?} accepted");
        }
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
