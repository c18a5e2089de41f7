//! Reading one document by id from the index: the fallback of `GET` by id when the store
//! (the source of truth) is unavailable.
//!
//! Every indexed document keeps its canonical JSON in the stored `_source` field and each
//! id has at most one live Tantivy document per shard (a document or a tombstone), so the
//! id's shard (`id.partition(shards)`) answers from its committed searcher: the version
//! with the highest `_seq` among live documents with that `_id`. The answer is as fresh as
//! the last commit; callers flag it as degraded.
//!
//! Concurrency: runs on a blocking thread against a searcher snapshot; no writer lock.

use bytes::Bytes;
use sluice_core::{DocId, Partition, Seq};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocAddress, DocSet, TantivyDocument, Term, TERMINATED};

use sluice_core::search::{IndexedCopy, SearchError};

use crate::error::internal;
use crate::index_schema::SEQ_FIELD;
use crate::shard::ShardIndex;

/// The shard of `id` among `shards`.
pub(crate) fn shard_of<'a, T>(shards: &'a [T], id: &DocId) -> Option<&'a T> {
    let Partition(shard) = id.partition(u32::try_from(shards.len()).ok()?);
    shards.get(shard as usize)
}

/// The committed copy of `id` in `shard`, if any.
pub(crate) fn lookup(shard: &ShardIndex, id: &DocId) -> Result<Option<IndexedCopy>, SearchError> {
    let schema = shard.schema();
    let searcher = shard.searcher();
    let term = Term::from_field_text(schema.id, id.as_str());
    let mut best: Option<(u64, DocAddress)> = None;
    for (ord, segment) in searcher.segment_readers().iter().enumerate() {
        let postings = segment
            .inverted_index(schema.id)
            .map_err(internal)?
            .read_postings(&term, IndexRecordOption::Basic)
            .map_err(|e| SearchError::Internal(e.to_string()))?;
        let Some(mut postings) = postings else {
            continue;
        };
        let seqs = segment.fast_fields().u64(SEQ_FIELD).map_err(internal)?;
        let alive = segment.alive_bitset();
        let mut doc = postings.doc();
        while doc != TERMINATED {
            if alive.is_none_or(|alive| alive.is_alive(doc)) {
                if let Some(seq) = seqs.first(doc) {
                    if best.is_none_or(|(b, _)| seq > b) {
                        best = Some((seq, DocAddress::new(ord as u32, doc)));
                    }
                }
            }
            doc = postings.advance();
        }
    }
    let Some((seq, address)) = best else {
        return Ok(None);
    };
    let doc: TantivyDocument = searcher.doc(address).map_err(internal)?;
    let seq = Seq(seq);
    // A tombstone carries no source.
    Ok(Some(
        match doc.get_first(schema.source).and_then(|v| {
            use tantivy::schema::Value;
            v.as_bytes()
        }) {
            Some(source) => IndexedCopy::Live {
                source: Bytes::copy_from_slice(source),
                seq,
            },
            None => IndexedCopy::Deleted { seq },
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::tests::{delete, open_shard, upsert};

    #[test]
    fn the_latest_committed_version_or_its_tombstone() {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 0);
        let id = DocId::new("a").unwrap();
        assert_eq!(lookup(&shard, &id).unwrap(), None);
        shard
            .apply(vec![upsert("a", 1, r#"{"id":"a","title":"first"}"#)])
            .unwrap();
        assert_eq!(lookup(&shard, &id).unwrap(), None, "uncommitted");
        shard.commit().unwrap();
        shard
            .apply(vec![upsert("a", 2, r#"{"id":"a","title":"second"}"#)])
            .unwrap();
        shard.commit().unwrap();
        let Some(IndexedCopy::Live { source, seq }) = lookup(&shard, &id).unwrap() else {
            panic!("a live copy");
        };
        assert_eq!(seq, Seq(2));
        assert!(std::str::from_utf8(&source).unwrap().contains("second"));
        shard.apply(vec![delete("a", 3)]).unwrap();
        shard.commit().unwrap();
        assert_eq!(
            lookup(&shard, &id).unwrap(),
            Some(IndexedCopy::Deleted { seq: Seq(3) })
        );
    }
}
