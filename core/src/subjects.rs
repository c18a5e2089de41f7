//! Log subject names, shared by the embedded log and JetStream.
//!
//! `sluice.docs.{collection}.{partition}` carries batches of ops and
//! `sluice.docs.{collection}.drop` a collection's deletion, `sluice.events.{c}.{p}` the
//! changes workers applied, `sluice.dlq.{c}` ops that could not be applied.
//!
//! `{c}` is always the collection's token ([`crate::name_token`]), never the raw name: a
//! name may hold `.`, which separates subject tokens. Names of `a-z 0-9 _ -` are their own
//! token, so the subjects of collections created before dotted names were allowed are
//! unchanged. [`collection_of`] reads the collection back from a subject.

use crate::ids::{CollectionName, Partition};
use crate::name_token;

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
    format!("sluice.docs.{}.{partition}", collection.token())
}

/// `sluice.docs.{c}.>`: every partition of one collection's ops.
pub fn docs_of_collection(collection: &CollectionName) -> String {
    format!("sluice.docs.{}.>", collection.token())
}

/// `sluice.docs.{c}.drop`: the [`crate::op::CollectionDrop`] messages deleting the
/// collection, ordered in the DOCS log with its writes.
pub fn docs_drop(collection: &CollectionName) -> String {
    format!("sluice.docs.{}.{DROP_TOKEN}", collection.token())
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
    format!("sluice.events.{}.{partition}", collection.token())
}

/// `sluice.events.{c}.>`: every partition of one collection's events.
pub fn events_of_collection(collection: &CollectionName) -> String {
    format!("sluice.events.{}.>", collection.token())
}

/// `sluice.dlq.{c}`
pub fn dlq(collection: &CollectionName) -> String {
    format!("sluice.dlq.{}", collection.token())
}

/// The durable consumer every worker of every process shares on DOCS.
pub const WORKERS_CONSUMER: &str = "workers";

/// The collection a subject of any stream names (`sluice.{docs|events|dlq}.{c}...`), if it
/// names a valid one.
pub fn collection_of(subject: &str) -> Option<CollectionName> {
    let mut tokens = subject.split('.');
    match (tokens.next(), tokens.next()) {
        (Some("sluice"), Some("docs" | "events" | "dlq")) => name_token::decode(tokens.next()?),
        _ => None,
    }
}

/// The durable consumer of one index shard on EVENTS (`indexer-{c}-{p}`: the partition
/// is the part after the last `-`, so a token holding `-` is still read back whole).
pub fn indexer_consumer(collection: &CollectionName, partition: Partition) -> String {
    format!("indexer-{}-{partition}", collection.token())
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

    #[test]
    fn dotted_names_stay_one_token_and_read_back() {
        let c = CollectionName::new("logstash-2024.06.01").unwrap();
        assert_eq!(docs(&c, Partition(1)), "sluice.docs.logstash-2024~06~01.1");
        assert_eq!(
            events_of_collection(&c),
            "sluice.events.logstash-2024~06~01.>"
        );
        assert_eq!(dlq(&c), "sluice.dlq.logstash-2024~06~01");
        assert_eq!(
            indexer_consumer(&c, Partition(3)),
            "indexer-logstash-2024~06~01-3"
        );
        assert!(matches(&docs_of_collection(&c), &docs(&c, Partition(1))));
        assert!(matches(&docs_of_collection(&c), &docs_drop(&c)));
        assert!(is_docs_drop(&docs_drop(&c)));
        // A dotted name never reaches into another collection's subjects.
        let other = CollectionName::new("logstash-2024").unwrap();
        assert!(!matches(
            &docs_of_collection(&other),
            &docs(&c, Partition(1))
        ));
        for subject in [
            docs(&c, Partition(0)),
            docs_drop(&c),
            events(&c, Partition(2)),
            dlq(&c),
        ] {
            assert_eq!(collection_of(&subject).as_ref(), Some(&c), "{subject}");
        }
        assert_eq!(collection_of("sluice.docs.Bad.0"), None);
        assert_eq!(collection_of("other.docs.a.0"), None);
        for name in ["a.b", "a_b", "a-b", "a~b"] {
            let c = CollectionName::new(name).unwrap();
            let consumer = indexer_consumer(&c, Partition(0));
            assert!(
                !consumer.contains(['.', '*', '>', ' ', '/', '\\']),
                "{consumer}"
            );
            assert!(consumer.len() <= 255);
        }
    }
}
