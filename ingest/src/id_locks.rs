//! Per-document write locks for the writes that depend on the current document:
//! Elasticsearch's `create`, `update` and `if_seq_no` items.
//!
//! Such a write reads the current document (after every earlier append is applied),
//! decides, and appends. Holding the locks of its ids from before that read until its
//! append is durable makes the three steps one: a second conditional write on the same
//! id waits, then reads after the first one's append is applied, so it sees it. Two
//! concurrent `create`s of one id give one `201` and one `409`; concurrent `update`s
//! never lose each other's changes; `if_seq_no` compares with the version the write
//! will replace.
//!
//! Blind writes (`index` and `delete` without `if_seq_no`, native ingest) take no lock:
//! they are ordered by the log as ever. The locks are this node's: several ingest
//! processes writing one id conditionally would need them in a shared place.
//!
//! The locks are striped (a fixed number of mutexes chosen by a hash of collection and
//! id), so memory stays bounded however many ids are written; a request takes its
//! stripes in ascending order, so two requests never wait for each other in a cycle.

use std::sync::Arc;

use sluice_core::{CollectionName, DocId};
use tokio::sync::{Mutex, OwnedMutexGuard};

/// Stripes: enough that unrelated ids rarely share one.
const STRIPES: usize = 4096;

/// The node's conditional-write locks.
pub struct IdLocks {
    stripes: Box<[Arc<Mutex<()>>]>,
}

/// Held locks; dropping them releases the ids.
#[must_use = "the ids are locked only while the guard lives"]
pub struct IdGuard {
    _held: Vec<OwnedMutexGuard<()>>,
}

impl Default for IdLocks {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Arc::new(Mutex::new(()))).collect(),
        }
    }
}

impl IdLocks {
    fn stripe(&self, collection: &CollectionName, id: &DocId) -> usize {
        let mut key = Vec::with_capacity(collection.as_str().len() + 1 + id.as_str().len());
        key.extend_from_slice(collection.as_str().as_bytes());
        key.push(0);
        key.extend_from_slice(id.as_str().as_bytes());
        (xxhash_rust::xxh3::xxh3_64(&key) % STRIPES as u64) as usize
    }

    /// Locks every id of `ids`, waiting for writes that hold any of them.
    pub async fn lock<'a>(
        &self,
        ids: impl IntoIterator<Item = (&'a CollectionName, &'a DocId)>,
    ) -> IdGuard {
        let mut stripes: Vec<usize> = ids
            .into_iter()
            .map(|(collection, id)| self.stripe(collection, id))
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut held = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            held.push(self.stripes[stripe].clone().lock_owned().await);
        }
        IdGuard { _held: held }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_locked_id_waits_and_others_do_not() {
        let locks = Arc::new(IdLocks::default());
        let books = CollectionName::new("books").unwrap();
        let (a, b) = (DocId::new("a").unwrap(), DocId::new("b").unwrap());
        let held = locks.lock([(&books, &a)]).await;
        // Another id (on another stripe) goes through at once.
        let other = if locks.stripe(&books, &a) == locks.stripe(&books, &b) {
            DocId::new("c").unwrap()
        } else {
            b
        };
        let free = tokio::time::timeout(Duration::from_secs(1), locks.lock([(&books, &other)]));
        drop(free.await.expect("an unrelated id is not blocked"));
        let waiting = {
            let (locks, books, a) = (locks.clone(), books.clone(), a.clone());
            tokio::spawn(async move { drop(locks.lock([(&books, &a), (&books, &a)]).await) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the same id must wait");
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("released")
            .unwrap();
    }
}
