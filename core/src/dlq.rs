//! The dead-letter queue's contract: the record of an op that could not be applied, and
//! the administration port the HTTP layer lists, replays and purges it through.
//!
//! One [`DeadLetter`] per op (or per undecodable message) is appended, as JSON, to the DLQ
//! stream on `sluice.dlq.{collection}`, with a deterministic `msg_id` so a retried append
//! is not stored twice. The record carries the op itself (the document's canonical JSON,
//! or `"delete"`), its sequence and the failure history, so that it can be listed and
//! replayed. The workers write records; [`DeadLetterAdmin`] (implemented by the workers'
//! dead-letter queue over the log) operates on them; the binary wires the two.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::ids::{CollectionName, DocId, Generation, Seq};
use crate::log::{LogError, OutgoingMessage};
use crate::op::DocOp;
use crate::subjects;

/// Listing, replaying and purging dead letters, and their count per collection.
#[async_trait]
pub trait DeadLetterAdmin: Send + Sync + 'static {
    /// Entries after `after` (0: from the start), of `collection` or all, at most `limit`
    /// (clamped to 1..=[`MAX_LIST_LIMIT`]).
    async fn list(
        &self,
        collection: Option<&CollectionName>,
        after: Seq,
        limit: usize,
    ) -> Result<DlqPage, LogError>;

    /// Entries per collection, counted up to now.
    async fn depth(&self) -> Result<BTreeMap<CollectionName, u64>, LogError>;

    /// Re-appends the selected entries' ops to DOCS and removes them from the queue.
    /// `shards_of` names the shard count and the generation (the incarnation the ops
    /// are replayed into) of a collection that exists; an entry of a collection that
    /// does not is not replayed.
    async fn replay(
        &self,
        selection: &DlqSelection,
        shards_of: &(dyn for<'c> Fn(&'c CollectionName) -> Option<(u32, Generation)> + Send + Sync),
        limits: ReplayLimits,
    ) -> Result<ReplayReport, LogError>;

    /// Removes the selected entries; returns how many.
    async fn purge(&self, selection: &DlqSelection) -> Result<u64, LogError>;
}

/// Most entry ids one request may name.
pub const MAX_SELECTED_IDS: usize = 10_000;
/// Most entries one listing returns.
pub const MAX_LIST_LIMIT: usize = 500;

/// Which entries an operation applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DlqSelection {
    /// Every entry.
    All,
    /// The entries of one collection.
    Collection(CollectionName),
    /// The entries with these ids (DLQ stream sequences).
    Entries(Vec<Seq>),
}

/// One entry as listed.
#[derive(Clone, Debug)]
pub struct DlqEntry {
    /// Its id: its sequence in the DLQ stream.
    pub entry_id: Seq,
    /// When it was appended to the DLQ, ms since the Unix epoch.
    pub appended_at_ms: u64,
    /// The record.
    pub record: DeadLetter,
}

/// One page of a listing.
#[derive(Clone, Debug)]
pub struct DlqPage {
    /// The entries, by id.
    pub entries: Vec<DlqEntry>,
    /// Pass as `after` for the next page; `None` when this is the last.
    pub next_after: Option<Seq>,
}

/// An entry that could not be replayed; it stays in the queue.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayFailure {
    /// The entry id.
    pub entry_id: u64,
    /// Why, as a stable code.
    pub code: ErrorCode,
    /// Why, for humans.
    pub message: String,
}

/// What a replay did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplayReport {
    /// Entries re-appended to DOCS and removed from the queue.
    pub replayed: u64,
    /// Entries left in the queue because they cannot be replayed.
    pub failed: u64,
    /// Selected ids that are not (or no longer) in the queue.
    pub not_found: u64,
    /// Why each failed entry failed (at most [`MAX_LIST_LIMIT`] listed).
    pub failures: Vec<ReplayFailure>,
}

/// How big one replay message may grow (the same limits as ingest's batches).
#[derive(Clone, Copy, Debug)]
pub struct ReplayLimits {
    /// Most ops per DOCS message.
    pub max_docs: usize,
    /// Most bytes per DOCS message; a single larger op still travels alone.
    pub max_bytes: usize,
}

/// The `op` value of a dead-lettered delete.
pub const DELETE_OP: &str = "delete";

/// Collection named in the DLQ record of a message whose subject names no valid
/// collection (never produced by ingest; kept so such a message is not lost).
pub const UNROUTABLE_COLLECTION: &str = "unroutable";

/// Why an op was dead-lettered. Stable snake_case codes, like `sluice_core::ErrorCode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeadLetterCode {
    /// The DOCS message could not be decoded at all.
    MalformedMessage,
    /// The store failed the op permanently on every delivery up to `max_deliver`.
    StoreRejected,
    /// The message was delivered more than `max_deliver` times (e.g. a crash loop).
    DeliveryLimitExceeded,
}

impl DeadLetterCode {
    /// The code as it appears in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterCode::MalformedMessage => "malformed_message",
            DeadLetterCode::StoreRejected => "store_rejected",
            DeadLetterCode::DeliveryLimitExceeded => "delivery_limit_exceeded",
        }
    }
}

/// One dead-lettered op, as stored (JSON) in the DLQ stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The collection of the op.
    pub collection: CollectionName,
    /// The document id; `None` when the message could not be decoded.
    pub id: Option<DocId>,
    /// The op: the document's canonical JSON for an upsert, `"delete"` for a delete,
    /// `null` when the message could not be decoded.
    pub op: serde_json::Value,
    /// The op sequence last-writer-wins orders it by (the message sequence for an
    /// undecodable message). A replay applies the op with this sequence again.
    pub seq: Seq,
    /// Where in DOCS it failed: the op sequence of its position in the message that was
    /// dead-lettered. Equal to `seq` except for a replayed op; names the DLQ append.
    #[serde(default)]
    pub docs_seq: Seq,
    /// Why it was dead-lettered.
    pub code: DeadLetterCode,
    /// The last error, for humans. Never contains document values.
    pub message: String,
    /// Deliveries of the DOCS message when it was dead-lettered.
    pub attempts: u32,
    /// First failure seen by this process, milliseconds since the Unix epoch.
    pub first_failure_ms: u64,
    /// Last failure, milliseconds since the Unix epoch.
    pub last_failure_ms: u64,
    /// The undecodable message's bytes, hex-encoded (only for `malformed_message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_message_hex: Option<String>,
}

/// Failure timing and attempt count shared by the records of one dead-lettering.
#[derive(Clone, Copy, Debug)]
pub struct FailureHistory {
    /// Deliveries of the DOCS message so far.
    pub attempts: u32,
    /// First failure, milliseconds since the Unix epoch.
    pub first_failure_ms: u64,
    /// Last failure, milliseconds since the Unix epoch.
    pub last_failure_ms: u64,
}

impl DeadLetter {
    /// The record of `op`, carried at op sequence `position` of its DOCS message.
    pub fn for_op(
        collection: &CollectionName,
        op: &DocOp,
        position: Seq,
        code: DeadLetterCode,
        message: String,
        history: FailureHistory,
    ) -> Self {
        let (op, seq) = op.sequenced(position);
        let op_value = match op {
            // The source is canonical JSON from ingest; if it somehow is not, keep it
            // as a string rather than lose the op.
            DocOp::Upsert { source, .. } => serde_json::from_slice(source).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(source).into_owned())
            }),
            DocOp::Delete { .. } | DocOp::Replayed { .. } => {
                serde_json::Value::String(DELETE_OP.to_owned())
            }
        };
        Self {
            collection: collection.clone(),
            id: Some(op.id().clone()),
            op: op_value,
            seq,
            docs_seq: position,
            code,
            message,
            attempts: history.attempts,
            first_failure_ms: history.first_failure_ms,
            last_failure_ms: history.last_failure_ms,
            raw_message_hex: None,
        }
    }

    /// The record of a DOCS message that could not be decoded.
    pub fn for_malformed_message(
        collection: &CollectionName,
        message_seq: Seq,
        payload: &[u8],
        message: String,
        history: FailureHistory,
    ) -> Self {
        Self {
            collection: collection.clone(),
            id: None,
            op: serde_json::Value::Null,
            seq: message_seq,
            docs_seq: message_seq,
            code: DeadLetterCode::MalformedMessage,
            message,
            attempts: history.attempts,
            first_failure_ms: history.first_failure_ms,
            last_failure_ms: history.last_failure_ms,
            raw_message_hex: Some(hex(payload)),
        }
    }

    /// The JSON bytes stored in the DLQ stream.
    pub fn encode(&self) -> Bytes {
        // A struct of strings, numbers and JSON values always serializes.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads a record back from the DLQ stream.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The message to append: subject `sluice.dlq.{c}`, deduplicated by DOCS position
    /// (op sequence, or message sequence for an undecodable message). Not by `seq`: a
    /// replayed op failing again is a new entry, not a duplicate of the one replayed.
    pub fn to_outgoing(&self) -> OutgoingMessage {
        let msg_id = match self.code {
            DeadLetterCode::MalformedMessage => format!("dlq-msg-{}", self.docs_seq),
            _ => format!("dlq-{}", self.docs_seq),
        };
        OutgoingMessage {
            subject: subjects::dlq(&self.collection),
            msg_id,
            payload: self.encode(),
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::ContentHash;

    fn history() -> FailureHistory {
        FailureHistory {
            attempts: 3,
            first_failure_ms: 10,
            last_failure_ms: 20,
        }
    }

    #[test]
    fn upsert_record_carries_the_document_and_round_trips() {
        let collection = CollectionName::new("books").unwrap();
        let op = DocOp::Upsert {
            id: DocId::new("b1").unwrap(),
            hash: ContentHash(1),
            source: Bytes::from_static(br#"{"id":"b1","title":"t"}"#),
        };
        let record = DeadLetter::for_op(
            &collection,
            &op,
            Seq(77),
            DeadLetterCode::StoreRejected,
            "store storage failure: x".into(),
            history(),
        );
        let json: serde_json::Value = serde_json::from_slice(&record.encode()).unwrap();
        assert_eq!(json["op"]["title"], "t");
        assert_eq!(json["code"], "store_rejected");
        assert_eq!(json["seq"], 77);
        assert_eq!(json["attempts"], 3);
        assert!(json.get("raw_message_hex").is_none());
        assert_eq!(DeadLetter::decode(&record.encode()).unwrap(), record);
        let outgoing = record.to_outgoing();
        assert_eq!(outgoing.subject, "sluice.dlq.books");
        assert_eq!(outgoing.msg_id, "dlq-77");
    }

    #[test]
    fn a_replayed_op_keeps_its_sequence_and_gets_a_new_msg_id() {
        let collection = CollectionName::new("books").unwrap();
        let delete = DocOp::Delete {
            id: DocId::new("b1").unwrap(),
        };
        let record = DeadLetter::for_op(
            &collection,
            &DocOp::replayed(delete, Seq(12)),
            Seq(900),
            DeadLetterCode::StoreRejected,
            String::new(),
            history(),
        );
        assert_eq!(record.seq, Seq(12), "replays apply with the first sequence");
        assert_eq!(record.docs_seq, Seq(900));
        assert_eq!(record.op, serde_json::Value::String(DELETE_OP.into()));
        assert_eq!(record.to_outgoing().msg_id, "dlq-900");
    }

    #[test]
    fn delete_and_malformed_records() {
        let collection = CollectionName::new("books").unwrap();
        let op = DocOp::Delete {
            id: DocId::new("b1").unwrap(),
        };
        let record = DeadLetter::for_op(
            &collection,
            &op,
            Seq(5),
            DeadLetterCode::DeliveryLimitExceeded,
            String::new(),
            history(),
        );
        assert_eq!(record.op, serde_json::Value::String(DELETE_OP.into()));
        let malformed = DeadLetter::for_malformed_message(
            &collection,
            Seq(9),
            &[0xff, 0x01],
            "undecodable".into(),
            history(),
        );
        assert_eq!(malformed.raw_message_hex.as_deref(), Some("ff01"));
        assert_eq!(malformed.id, None);
        assert_eq!(malformed.to_outgoing().msg_id, "dlq-msg-9");
        assert_eq!(
            DeadLetterCode::MalformedMessage.as_str(),
            "malformed_message"
        );
    }
}
