//! How documents are laid out in the embedded store: keys and value records.
//!
//! # Keys
//! `collection bytes, 0x00, id bytes`: the raw name's UTF-8, not its token (a key is a
//! byte string, any name fits). Neither collection names nor document ids may contain
//! 0x00 (both refuse control characters), so the encoding is unambiguous, and every key of collection `c` sorts strictly between `c 0x00` and
//! `c 0x01`. That bound is what keeps a scan of `a` out of `ab`: `a 0x01 < a b ...`.
//! Within a collection, keys sort by id bytes, which is `DocId`'s order.
//!
//! # Records
//! A one-byte tag that is both the format version and the tombstone flag, then the
//! sequence (u64, little endian); a live document goes on with its content hash (u128,
//! little endian) and its canonical JSON. A tombstone's hash is zero by contract and it
//! has no source; a format 2 tombstone goes on with the wall-clock time its delete was
//! applied (milliseconds since the Unix epoch, u64, little endian), which is what
//! compaction ages it by. A format 1 tombstone stops after the sequence: it was written
//! before deletion times were recorded, and reads back with its time unknown. Format 1
//! tombstones are still read, and only written again by tests.
//!
//! Pure functions, no I/O; safe from any thread.

use bytes::Bytes;
use sluice_core::document::ContentHash;
use sluice_core::store::{DocVersion, StoreError, StoredDoc};
use sluice_core::{CollectionName, DocId, Seq};

/// Separates the collection from the id in a key.
const KEY_SEPARATOR: u8 = 0x00;
/// Tag of a live document record, format 1.
const TAG_LIVE_V1: u8 = 0x01;
/// Tag of a tombstone record, format 1 (no deletion time).
const TAG_TOMBSTONE_V1: u8 = 0x02;
/// Tag of a tombstone record, format 2 (with its deletion time).
const TAG_TOMBSTONE_V2: u8 = 0x03;
const SEQ_LEN: usize = 8;
const HASH_LEN: usize = 16;
const TIME_LEN: usize = 8;
const TOMBSTONE_V1_LEN: usize = 1 + SEQ_LEN;
const TOMBSTONE_V2_LEN: usize = 1 + SEQ_LEN + TIME_LEN;
const LIVE_HEADER_LEN: usize = 1 + SEQ_LEN + HASH_LEN;

/// The key prefix every document of `collection` starts with (`collection 0x00`).
pub(crate) fn collection_prefix(collection: &CollectionName) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(collection.as_str().len() + 1);
    prefix.extend_from_slice(collection.as_str().as_bytes());
    prefix.push(KEY_SEPARATOR);
    prefix
}

/// The first key past every document of `collection` (`collection 0x01`).
pub(crate) fn collection_end(collection: &CollectionName) -> Vec<u8> {
    let mut end = collection_prefix(collection);
    if let Some(last) = end.last_mut() {
        *last = KEY_SEPARATOR + 1;
    }
    end
}

/// The key of one document.
pub(crate) fn doc_key(collection: &CollectionName, id: &DocId) -> Vec<u8> {
    let mut key = collection_prefix(collection);
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

/// The id part of a key known to start with `prefix`.
pub(crate) fn id_from_key(key: &[u8], prefix_len: usize) -> Result<DocId, StoreError> {
    let id_bytes = key
        .get(prefix_len..)
        .ok_or_else(|| StoreError::Corrupt("document key shorter than its prefix".into()))?;
    let id = std::str::from_utf8(id_bytes)
        .map_err(|_| StoreError::Corrupt("document key holds a non UTF-8 id".into()))?;
    DocId::new(id)
        .map_err(|e| StoreError::Corrupt(format!("document key holds an invalid id: {e}")))
}

/// A record as stored, borrowing its source from the value bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub(crate) seq: Seq,
    pub(crate) hash: ContentHash,
    /// `None` for a tombstone.
    pub(crate) source: Option<&'a [u8]>,
    /// When a tombstone's delete was applied (milliseconds since the Unix epoch);
    /// `None` for a live document, and for a tombstone of format 1 (time unknown).
    pub(crate) deleted_at_ms: Option<u64>,
}

impl<'a> Record<'a> {
    /// Decodes a stored value.
    pub(crate) fn decode(value: &'a [u8]) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("document record: {what}"));
        let (&tag, rest) = value.split_first().ok_or_else(|| corrupt("empty"))?;
        let seq_bytes: [u8; SEQ_LEN] = rest
            .get(..SEQ_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("truncated sequence"))?;
        let seq = Seq(u64::from_le_bytes(seq_bytes));
        match tag {
            TAG_TOMBSTONE_V1 if value.len() == TOMBSTONE_V1_LEN => Ok(Self {
                seq,
                hash: ContentHash(0),
                source: None,
                deleted_at_ms: None,
            }),
            TAG_TOMBSTONE_V2 if value.len() == TOMBSTONE_V2_LEN => {
                let time_bytes: [u8; TIME_LEN] = value[1 + SEQ_LEN..]
                    .try_into()
                    .map_err(|_| corrupt("truncated deletion time"))?;
                Ok(Self {
                    seq,
                    hash: ContentHash(0),
                    source: None,
                    deleted_at_ms: Some(u64::from_le_bytes(time_bytes)),
                })
            }
            TAG_TOMBSTONE_V1 | TAG_TOMBSTONE_V2 => Err(corrupt("tombstone of the wrong length")),
            TAG_LIVE_V1 => {
                let hash_bytes: [u8; HASH_LEN] = value
                    .get(1 + SEQ_LEN..LIVE_HEADER_LEN)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| corrupt("truncated hash"))?;
                Ok(Self {
                    seq,
                    hash: ContentHash(u128::from_le_bytes(hash_bytes)),
                    source: Some(&value[LIVE_HEADER_LEN..]),
                    deleted_at_ms: None,
                })
            }
            other => Err(corrupt(&format!("unknown tag {other:#04x}"))),
        }
    }

    /// A tombstone for a delete at `seq` applied at `deleted_at_ms`.
    pub(crate) fn tombstone(seq: Seq, deleted_at_ms: u64) -> Self {
        Self {
            seq,
            hash: ContentHash(0),
            source: None,
            deleted_at_ms: Some(deleted_at_ms),
        }
    }

    /// Encodes the record for storage (a tombstone without a time in format 1).
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self.source {
            None => {
                let mut value = Vec::with_capacity(TOMBSTONE_V2_LEN);
                match self.deleted_at_ms {
                    Some(deleted_at_ms) => {
                        value.push(TAG_TOMBSTONE_V2);
                        value.extend_from_slice(&self.seq.0.to_le_bytes());
                        value.extend_from_slice(&deleted_at_ms.to_le_bytes());
                    }
                    None => {
                        value.push(TAG_TOMBSTONE_V1);
                        value.extend_from_slice(&self.seq.0.to_le_bytes());
                    }
                }
                value
            }
            Some(source) => {
                let mut value = Vec::with_capacity(LIVE_HEADER_LEN + source.len());
                value.push(TAG_LIVE_V1);
                value.extend_from_slice(&self.seq.0.to_le_bytes());
                value.extend_from_slice(&self.hash.0.to_le_bytes());
                value.extend_from_slice(source);
                value
            }
        }
    }

    /// The version facts, without the body.
    pub(crate) fn version(&self) -> DocVersion {
        DocVersion {
            seq: self.seq,
            hash: self.hash,
            deleted: self.source.is_none(),
        }
    }

    /// The record as the `Store` port returns it (the source is copied out).
    pub(crate) fn into_stored(self, id: DocId) -> StoredDoc {
        StoredDoc {
            id,
            seq: self.seq,
            hash: self.hash,
            source: self.source.map(Bytes::copy_from_slice),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> CollectionName {
        CollectionName::new(s).unwrap()
    }

    #[test]
    fn live_and_tombstone_records_round_trip() {
        let live = Record {
            seq: Seq(u64::MAX - 1),
            hash: ContentHash(u128::MAX - 7),
            source: Some(br#"{"id":"a"}"#),
            deleted_at_ms: None,
        };
        assert_eq!(Record::decode(&live.encode()).unwrap(), live);
        let tombstone = Record::tombstone(Seq(42), 1_767_225_600_123);
        let bytes = tombstone.encode();
        assert_eq!(bytes.len(), TOMBSTONE_V2_LEN);
        assert_eq!(bytes[0], TAG_TOMBSTONE_V2);
        assert_eq!(Record::decode(&bytes).unwrap(), tombstone);
        assert!(Record::decode(&bytes).unwrap().version().deleted);
        let empty_source = Record {
            seq: Seq(1),
            hash: ContentHash(3),
            source: Some(b""),
            deleted_at_ms: None,
        };
        assert_eq!(
            Record::decode(&empty_source.encode()).unwrap(),
            empty_source
        );
    }

    /// Tombstones written before deletion times were recorded: tag 0x02 and the
    /// sequence, nothing else. They must keep reading, with their time unknown.
    #[test]
    fn format_1_tombstones_read_with_their_time_unknown() {
        let mut written_by_format_1 = vec![0x02];
        written_by_format_1.extend_from_slice(&77u64.to_le_bytes());
        let record = Record::decode(&written_by_format_1).unwrap();
        assert_eq!(record.seq, Seq(77));
        assert_eq!(record.source, None);
        assert_eq!(record.deleted_at_ms, None);
        assert_eq!(record.hash, ContentHash(0));
        assert_eq!(record.encode(), written_by_format_1, "re-encodes the same");
    }

    #[test]
    fn damaged_records_are_corrupt_not_panics() {
        let live = Record {
            seq: Seq(9),
            hash: ContentHash(9),
            source: Some(b"{}"),
            deleted_at_ms: None,
        }
        .encode();
        let tombstone = Record::tombstone(Seq(9), 9).encode();
        for bad in [
            &[][..],
            &[0x7f, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &live[..12],
            &[0x02, 1, 2][..],
            &tombstone[..TOMBSTONE_V2_LEN - 1],
            &tombstone[..TOMBSTONE_V1_LEN],
        ] {
            assert!(
                matches!(Record::decode(bad), Err(StoreError::Corrupt(_))),
                "{bad:?} decoded"
            );
        }
        for mut long_tombstone in [
            Record {
                deleted_at_ms: None,
                ..Record::tombstone(Seq(1), 0)
            }
            .encode(),
            tombstone,
        ] {
            long_tombstone.push(0);
            assert!(Record::decode(&long_tombstone).is_err());
        }
    }

    #[test]
    fn keys_of_a_collection_stay_inside_its_bounds() {
        let (a, ab) = (name("a"), name("ab"));
        let id = DocId::new("zzz").unwrap();
        let key_a = doc_key(&a, &id);
        let key_ab = doc_key(&ab, &DocId::new("0").unwrap());
        assert!(collection_prefix(&a) <= key_a && key_a < collection_end(&a));
        assert!(
            key_ab >= collection_end(&a),
            "a's range must not reach into ab"
        );
        assert!(!key_ab.starts_with(&collection_prefix(&a)));
        assert_eq!(
            id_from_key(&key_a, collection_prefix(&a).len()).unwrap(),
            id
        );
    }

    #[test]
    fn keys_sort_like_ids() {
        let c = name("c");
        let mut ids: Vec<DocId> = ["b", "a", "a0", "a-", "Z", "é", "10", "9"]
            .into_iter()
            .map(|s| DocId::new(s).unwrap())
            .collect();
        let mut keys: Vec<Vec<u8>> = ids.iter().map(|id| doc_key(&c, id)).collect();
        ids.sort();
        keys.sort();
        let prefix_len = collection_prefix(&c).len();
        let decoded: Vec<DocId> = keys
            .iter()
            .map(|k| id_from_key(k, prefix_len).unwrap())
            .collect();
        assert_eq!(decoded, ids);
    }
}
