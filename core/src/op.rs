//! What travels through the logs: batches of ops (DOCS) and batches of events (EVENTS).
//!
//! Ingest groups the accepted lines of a request by partition into [`DocBatch`]es, one
//! log message each; the log's message sequence plus the op's index in the batch gives
//! each op its sequence ([`crate::Seq::for_op`]). Workers turn each applied op into one
//! [`Event`] and publish a partition's events of one batch as one [`EventBatch`].
//! Both are encoded with postcard: compact, no schema negotiation, document sources
//! carried as opaque canonical JSON bytes (never parsed twice on the way).
//!
//! Both carry the [`Generation`] of the collection incarnation they were accepted for, as
//! their last field; a message written before generations existed decodes with
//! `Generation(0)`. Deleting a collection is a message of its own on the DOCS log, a
//! [`CollectionDrop`] on [`crate::subjects::docs_drop`], ordered with the writes.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::document::ContentHash;
use crate::ids::{CollectionName, DocId, Generation, Partition, Seq};
use crate::log::OutgoingMessage;

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("undecodable {what} message: {source}")]
pub struct DecodeError {
    what: &'static str,
    #[source]
    source: postcard::Error,
}

/// One change to one document, as accepted by ingest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DocOp {
    /// Insert or replace the document.
    Upsert {
        /// The document id.
        id: DocId,
        /// Hash of `source`.
        hash: ContentHash,
        /// Canonical JSON of the whole document.
        source: Bytes,
    },
    /// Delete the document (stored as a tombstone).
    Delete {
        /// The document id.
        id: DocId,
    },
    /// An op replayed from the dead-letter queue. It is applied with the sequence it was
    /// first given (`seq`), not the one of the message replaying it, so last-writer-wins
    /// orders it where it was accepted: a newer write of the same id keeps winning.
    /// (Appended last among the variants, so messages written before it still decode.)
    Replayed {
        /// The op's original sequence.
        seq: Seq,
        /// The op; never itself a `Replayed` (see [`DocOp::replayed`]).
        op: Box<DocOp>,
    },
}

impl DocOp {
    /// The id the op applies to.
    pub fn id(&self) -> &DocId {
        match self {
            DocOp::Upsert { id, .. } | DocOp::Delete { id } => id,
            DocOp::Replayed { op, .. } => op.id(),
        }
    }

    /// `op`, to be applied again with its original sequence `seq`. An op that is
    /// already a replay keeps the sequence it carries: that one is the original.
    pub fn replayed(op: DocOp, seq: Seq) -> DocOp {
        match op {
            replayed @ DocOp::Replayed { .. } => replayed,
            op => DocOp::Replayed {
                seq,
                op: Box::new(op),
            },
        }
    }

    /// The plain op (`Upsert` or `Delete`) and the sequence it applies with, for the op
    /// carried at op sequence `position` of its message. (A nested replay, which
    /// [`DocOp::replayed`] never builds, applies with its outermost sequence.)
    pub fn sequenced(&self, position: Seq) -> (&DocOp, Seq) {
        match self {
            DocOp::Replayed { seq, op } => (op.sequenced(*seq).0, *seq),
            op => (op, position),
        }
    }
}

/// One DOCS message: ops of one collection and partition, in request order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocBatch {
    /// The collection.
    pub collection: CollectionName,
    /// The partition every op's id hashes to.
    pub partition: Partition,
    /// The ops; the `i`-th gets sequence `message_seq.for_op(i)`.
    pub ops: Vec<DocOp>,
    /// The incarnation of the collection the ops were accepted for.
    pub generation: Generation,
}

/// A [`DocBatch`] as written before generations existed.
#[derive(Deserialize)]
struct DocBatchWithoutGeneration {
    collection: CollectionName,
    partition: Partition,
    ops: Vec<DocOp>,
}

impl From<DocBatchWithoutGeneration> for DocBatch {
    fn from(old: DocBatchWithoutGeneration) -> Self {
        DocBatch {
            collection: old.collection,
            partition: old.partition,
            ops: old.ops,
            generation: Generation(0),
        }
    }
}

/// One DOCS message on [`crate::subjects::docs_drop`]: delete incarnation `generation` of
/// `collection`. Applying it drops the collection's documents and log messages, then
/// retires its catalog entry; every step may be repeated (see
/// [`crate::catalog`]), so the message is applied again after a crash at any point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionDrop {
    /// The collection.
    pub collection: CollectionName,
    /// The incarnation to drop; a later one under the same name is left alone.
    pub generation: Generation,
}

/// One applied change, published by a worker after the store accepted it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// The document now has this content.
    Upserted {
        /// The document id.
        id: DocId,
        /// The op sequence that wrote it; indexers never let a lower one win.
        seq: Seq,
        /// Hash of `source`.
        hash: ContentHash,
        /// Canonical JSON of the whole document.
        source: Bytes,
    },
    /// The document was deleted.
    Deleted {
        /// The document id.
        id: DocId,
        /// The op sequence of the delete.
        seq: Seq,
    },
}

impl Event {
    /// The document the event is about.
    pub fn id(&self) -> &DocId {
        match self {
            Event::Upserted { id, .. } | Event::Deleted { id, .. } => id,
        }
    }

    /// The op sequence that produced it.
    pub fn seq(&self) -> Seq {
        match self {
            Event::Upserted { seq, .. } | Event::Deleted { seq, .. } => *seq,
        }
    }
}

/// One EVENTS message: the events of one collection and partition from one DOCS batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// The collection.
    pub collection: CollectionName,
    /// The partition (= index shard) the events belong to.
    pub partition: Partition,
    /// The events, in op order.
    pub events: Vec<Event>,
    /// The incarnation of the collection the events belong to; indexers drop events of
    /// any other.
    pub generation: Generation,
}

/// An [`EventBatch`] as written before generations existed.
#[derive(Deserialize)]
struct EventBatchWithoutGeneration {
    collection: CollectionName,
    partition: Partition,
    events: Vec<Event>,
}

impl From<EventBatchWithoutGeneration> for EventBatch {
    fn from(old: EventBatchWithoutGeneration) -> Self {
        EventBatch {
            collection: old.collection,
            partition: old.partition,
            events: old.events,
            generation: Generation(0),
        }
    }
}

macro_rules! postcard_codec {
    ($ty:ty, $what:literal $(, $older:ty)?) => {
        impl $ty {
            /// Encodes the message for the log.
            pub fn encode(&self) -> Bytes {
                Bytes::from(postcard::to_stdvec(self).expect("in-memory encoding cannot fail"))
            }

            /// Decodes a message read from the log, also one written in the older
            /// layout without a trailing generation (which then reads as 0).
            pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
                let decoded = postcard::from_bytes::<$ty>(bytes);
                $(
                    // An older message ends exactly where the generation would start;
                    // anything left over means a damaged newer one.
                    let decoded = decoded.or_else(|error| {
                        match postcard::take_from_bytes::<$older>(bytes) {
                            Ok((older, [])) => Ok(<$ty>::from(older)),
                            _ => Err(error),
                        }
                    });
                )?
                decoded.map_err(|source| DecodeError {
                    what: $what,
                    source,
                })
            }
        }
    };
}

impl CollectionDrop {
    /// The DOCS message that asks the workers to apply the drop. Its deduplication id is
    /// unique to this append: a drop appended again (to resume a deletion) must not be
    /// taken for a duplicate of one the log has since purged.
    pub fn to_outgoing(&self) -> OutgoingMessage {
        static APPENDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let append = APPENDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        OutgoingMessage {
            subject: crate::subjects::docs_drop(&self.collection),
            msg_id: format!(
                "drop-{}-{}-{now_ns}-{append}",
                self.collection, self.generation
            ),
            payload: self.encode(),
        }
    }
}

postcard_codec!(DocBatch, "docs", DocBatchWithoutGeneration);
postcard_codec!(EventBatch, "events", EventBatchWithoutGeneration);
postcard_codec!(CollectionDrop, "collection drop");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip() {
        let c = CollectionName::new("c").unwrap();
        let batch = DocBatch {
            collection: c.clone(),
            partition: Partition(1),
            ops: vec![
                DocOp::Upsert {
                    id: DocId::new("a").unwrap(),
                    hash: ContentHash(7),
                    source: Bytes::from_static(br#"{"id":"a"}"#),
                },
                DocOp::Delete {
                    id: DocId::new("b").unwrap(),
                },
            ],
            generation: Generation(5),
        };
        assert_eq!(DocBatch::decode(&batch.encode()).unwrap(), batch);
        let events = EventBatch {
            collection: c,
            partition: Partition(1),
            events: vec![Event::Deleted {
                id: DocId::new("b").unwrap(),
                seq: Seq(9),
            }],
            generation: Generation(5),
        };
        assert_eq!(EventBatch::decode(&events.encode()).unwrap(), events);
        assert!(DocBatch::decode(b"\xff\xff").is_err());
    }

    #[test]
    fn replayed_ops_keep_their_original_sequence() {
        let delete = DocOp::Delete {
            id: DocId::new("b").unwrap(),
        };
        let once = DocOp::replayed(delete.clone(), Seq(40));
        let twice = DocOp::replayed(once.clone(), Seq(90));
        assert_eq!(once, twice, "a replay of a replay keeps the first sequence");
        assert_eq!(twice.id().as_str(), "b");
        assert_eq!(twice.sequenced(Seq(7)), (&delete, Seq(40)));
        assert_eq!(delete.sequenced(Seq(7)), (&delete, Seq(7)));
        let batch = DocBatch {
            collection: CollectionName::new("c").unwrap(),
            partition: Partition(0),
            ops: vec![once],
            generation: Generation(1),
        };
        assert_eq!(DocBatch::decode(&batch.encode()).unwrap(), batch);
    }

    /// Messages written before generations existed still decode, as generation 0.
    #[derive(Serialize)]
    struct OlderDocBatch<'a> {
        collection: &'a CollectionName,
        partition: Partition,
        ops: &'a [DocOp],
    }

    #[test]
    fn messages_without_a_generation_decode_as_generation_zero() {
        let c = CollectionName::new("c").unwrap();
        let ops = vec![DocOp::Delete {
            id: DocId::new("b").unwrap(),
        }];
        let older = postcard::to_stdvec(&OlderDocBatch {
            collection: &c,
            partition: Partition(3),
            ops: &ops,
        })
        .unwrap();
        let decoded = DocBatch::decode(&older).unwrap();
        assert_eq!(decoded.generation, Generation(0));
        assert_eq!((decoded.partition, decoded.ops), (Partition(3), ops));
        // And a damaged newer message is still refused, not read as an older one.
        let newer = DocBatch {
            collection: c,
            partition: Partition(3),
            ops: vec![],
            generation: Generation(u64::MAX),
        }
        .encode();
        assert!(DocBatch::decode(&newer[..newer.len() - 1]).is_err());
    }
}
