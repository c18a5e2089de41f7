//! Log subject names, shared by the embedded log and JetStream.
//!
//! `sluice.docs.{collection}.{partition}` carries batches of ops and
//! `sluice.docs.{collection}.drop` a collection's deletion, `sluice.events.{c}.{p}` the
//! changes workers applied, `sluice.dlq.{c}` ops that could not be applied.

use crate::ids::{CollectionName, Partition};

/// The three streams sluice keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKind {
    /// Accepted document ops, written by ingest, read by workers.
    Docs,
    /// Applied changes, written by workers, read by indexers and other subscribers.
    Events,
    /// Ops that could not be applied.
    Dlq,
}

impl StreamKind {
    /// Every stream.
    pub const ALL: [StreamKind; 3] = [StreamKind::Docs, StreamKind::Events, StreamKind::Dlq];

    /// The stream's name (JetStream stream name, embedded log keyspace name).
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Docs => "DOCS",
            StreamKind::Events => "EVENTS",
            StreamKind::Dlq => "DLQ",
        }
    }

    /// The subject filter covering the whole stream.
    pub fn all_subjects(self) -> &'static str {
        match self {
            StreamKind::Docs => "sluice.docs.>",
            StreamKind::Events => "sluice.events.>",
            StreamKind::Dlq => "sluice.dlq.>",
        }
    }
}

/// `sluice.docs.{c}.{p}`
pub fn docs(collection: &CollectionName, partition: Partition) -> String {
    format!("sluice.docs.{collection}.{partition}")
}

/// `sluice.docs.{c}.>`: every partition of one collection's ops.
pub fn docs_of_collection(collection: &CollectionName) -> String {
    format!("sluice.docs.{collection}.>")
}

/// `sluice.docs.{c}.drop`: the [`crate::op::CollectionDrop`] messages deleting the
/// collection, ordered in the DOCS log with its writes.
pub fn docs_drop(collection: &CollectionName) -> String {
    format!("sluice.docs.{collection}.{DROP_TOKEN}")
}

/// Whether a DOCS subject is a collection's drop subject ([`docs_drop`]).
pub fn is_docs_drop(subject: &str) -> bool {
    subject
        .strip_prefix("sluice.docs.")
        .and_then(|rest| rest.rsplit_once('.'))
        .is_some_and(|(_, last)| last == DROP_TOKEN)
}

/// The last token of a drop subject (never a partition number).
const DROP_TOKEN: &str = "drop";

/// `sluice.events.{c}.{p}`
pub fn events(collection: &CollectionName, partition: Partition) -> String {
    format!("sluice.events.{collection}.{partition}")
}

/// `sluice.events.{c}.>`: every partition of one collection's events.
pub fn events_of_collection(collection: &CollectionName) -> String {
    format!("sluice.events.{collection}.>")
}

/// `sluice.dlq.{c}`
pub fn dlq(collection: &CollectionName) -> String {
    format!("sluice.dlq.{collection}")
}

/// The durable consumer every worker of every process shares on DOCS.
pub const WORKERS_CONSUMER: &str = "workers";

/// The durable consumer of one index shard on EVENTS.
pub fn indexer_consumer(collection: &CollectionName, partition: Partition) -> String {
    format!("indexer-{collection}-{partition}")
}

/// Whether `subject` matches NATS-style `filter` (`*` one token, `>` the rest).
pub fn matches(filter: &str, subject: &str) -> bool {
    let mut filter_tokens = filter.split('.');
    let mut subject_tokens = subject.split('.');
    loop {
        match (filter_tokens.next(), subject_tokens.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(f), Some(s)) if f == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(matches("sluice.docs.>", "sluice.docs.a.0"));
        assert!(!matches("sluice.docs.>", "sluice.docs"));
        assert!(matches("sluice.events.a.*", "sluice.events.a.3"));
        assert!(!matches("sluice.events.a.*", "sluice.events.b.3"));
        assert!(!matches("sluice.events.a.*", "sluice.events.a.3.x"));
        assert!(matches("sluice.dlq.a", "sluice.dlq.a"));
    }

    #[test]
    fn subjects_follow_the_contract() {
        let c = CollectionName::new("books").unwrap();
        assert_eq!(docs(&c, Partition(2)), "sluice.docs.books.2");
        assert_eq!(events(&c, Partition(0)), "sluice.events.books.0");
        assert_eq!(dlq(&c), "sluice.dlq.books");
        assert_eq!(docs_drop(&c), "sluice.docs.books.drop");
        assert!(is_docs_drop(&docs_drop(&c)));
        assert!(matches(&docs_of_collection(&c), &docs_drop(&c)));
        let named_drop = CollectionName::new("drop").unwrap();
        assert!(!is_docs_drop(&docs(&named_drop, Partition(0))));
        assert!(!is_docs_drop("sluice.events.books.drop"));
    }
}
