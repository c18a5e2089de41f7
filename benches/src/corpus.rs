//! The standard corpus (the repository's generator, `sluice_loadgen::corpus`), loaded once
//! into memory.
//!
//! Figures quoted anywhere in the project come from this generator (deterministic for a
//! given N and seed, byte for byte what the reference `corpus.py` prints), so they
//! compare across runs and machines. The criterion benches and the search index reuse
//! copies cached under `target/sluice-bench-cache/`, written to a temporary name and
//! renamed so an interrupted run never leaves a truncated copy.
//!
//! Invariant: [`Corpus::lines`] holds one byte range per document, newline excluded, in
//! file order; the file's bytes are shared ([`Bytes`]) so request bodies are zero-copy
//! slices of it.

use std::collections::HashMap;
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sluice_loadgen::corpus::{write_ndjson, BODY_WORDS, DEFAULT_SEED, STANDARD_SCHEMA_DOCUMENT};

use crate::error::BenchError;

/// The collection name the benchmarks ingest into.
pub const COLLECTION: &str = "corpus";

/// Where cached corpora and indexes live: `$CARGO_TARGET_DIR` or the workspace's
/// `target/`, under `sluice-bench-cache/`. Deleting it only costs a rebuild.
pub fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("sluice-bench-cache")
}

/// The collection schema document matching the corpus (`sluice-loadgen corpus --schema`).
pub fn schema_json() -> Result<Vec<u8>, BenchError> {
    Ok(format!("{STANDARD_SCHEMA_DOCUMENT}\n").into_bytes())
}

/// Writes `docs` corpus documents (seed 42) to `path` (NDJSON).
pub fn generate(docs: usize, path: &Path) -> Result<(), BenchError> {
    let what = || format!("writing the corpus to {}", path.display());
    let file = std::fs::File::create(path).map_err(BenchError::io(what()))?;
    let mut out = std::io::BufWriter::new(file);
    write_ndjson(&mut out, docs, DEFAULT_SEED, BODY_WORDS).map_err(BenchError::io(what()))?;
    out.flush().map_err(BenchError::io(what()))?;
    Ok(())
}

/// A corpus in memory.
#[derive(Clone, Debug)]
pub struct Corpus {
    bytes: Bytes,
    lines: Vec<Range<usize>>,
}

impl Corpus {
    /// Loads an NDJSON file.
    pub fn load(path: &Path) -> Result<Corpus, BenchError> {
        let bytes =
            std::fs::read(path).map_err(BenchError::io(format!("reading {}", path.display())))?;
        Ok(Corpus::from_bytes(Bytes::from(bytes)))
    }

    /// Splits NDJSON bytes into documents (blank lines skipped).
    pub fn from_bytes(bytes: Bytes) -> Corpus {
        let mut lines = Vec::new();
        let mut start = 0;
        for (at, byte) in bytes.iter().enumerate() {
            if *byte == b'\n' {
                if at > start {
                    lines.push(start..at);
                }
                start = at + 1;
            }
        }
        if bytes.len() > start {
            lines.push(start..bytes.len());
        }
        Corpus { bytes, lines }
    }

    /// Generates `docs` documents into `dir/corpus-{docs}.ndjson` and loads them.
    pub fn generate_in(dir: &Path, docs: usize) -> Result<Corpus, BenchError> {
        let path = dir.join(format!("corpus-{docs}.ndjson"));
        generate(docs, &path)?;
        Corpus::load(&path)
    }

    /// `docs` documents from the cache under `target/`, generated on first use.
    pub fn cached(docs: usize) -> Result<Corpus, BenchError> {
        let dir = cache_dir();
        std::fs::create_dir_all(&dir)
            .map_err(BenchError::io(format!("creating {}", dir.display())))?;
        let path = dir.join(format!("corpus-{docs}.ndjson"));
        if !path.is_file() {
            let partial = dir.join(format!("corpus-{docs}.ndjson.partial"));
            generate(docs, &partial)?;
            std::fs::rename(&partial, &path)
                .map_err(BenchError::io(format!("renaming {}", partial.display())))?;
        }
        Corpus::load(&path)
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether there is no document.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Document `index`'s JSON line, without its newline.
    pub fn line(&self, index: usize) -> &[u8] {
        &self.bytes[self.lines[index].clone()]
    }

    /// Every document's JSON line, in order.
    pub fn lines(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.lines.iter().map(|range| &self.bytes[range.clone()])
    }

    /// The NDJSON of documents `range` (newlines included), sharing the corpus bytes.
    pub fn ndjson(&self, range: Range<usize>) -> Bytes {
        if range.is_empty() {
            return Bytes::new();
        }
        let start = self.lines[range.start].start;
        let last = &self.lines[range.end - 1];
        // Include the last line's newline when the file has one.
        let end = (last.end + 1).min(self.bytes.len());
        self.bytes.slice(start..end)
    }

    /// Total bytes of the documents.
    pub fn total_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Words of the `body` fields with how many times each occurs, most frequent first
    /// (ties by word, so the order is deterministic).
    pub fn body_words_by_frequency(&self) -> Vec<(String, u64)> {
        const BODY: &[u8] = b"\"body\":\"";
        let mut counts: HashMap<&[u8], u64> = HashMap::new();
        for line in self.lines() {
            let Some(at) = find(line, BODY) else { continue };
            let rest = &line[at + BODY.len()..];
            // Corpus words are ASCII letters: the body ends at the first quote.
            let end = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len());
            for word in rest[..end].split(|&b| b == b' ').filter(|w| !w.is_empty()) {
                *counts.entry(word).or_default() += 1;
            }
        }
        let mut ranked: Vec<(String, u64)> = counts
            .into_iter()
            .map(|(word, count)| (String::from_utf8_lossy(word).into_owned(), count))
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Single-term body queries mixing frequent, medium and rare words: `per_class` words
/// from each class, interleaved (frequent, medium, rare, frequent, ...).
///
/// Classes by frequency rank: frequent = the top 300, medium = ranks 1,000 to 5,000,
/// rare = the least frequent words that still occur.
pub fn mixed_term_queries(ranked: &[(String, u64)], per_class: usize) -> Vec<String> {
    let frequent = ranked.iter().take(300.min(ranked.len()));
    let medium = ranked.iter().skip(1_000).take(4_000);
    let rare = ranked.iter().rev();
    let pick = |words: &mut dyn Iterator<Item = &(String, u64)>| -> Vec<String> {
        words.take(per_class).map(|(w, _)| w.clone()).collect()
    };
    let classes = [
        pick(&mut frequent.into_iter()),
        pick(&mut medium.into_iter().step_by(7)),
        pick(&mut rare.into_iter()),
    ];
    let mut queries = Vec::with_capacity(per_class * 3);
    for i in 0..per_class {
        for class in &classes {
            if let Some(word) = class.get(i) {
                queries.push(format!("body:{word}"));
            }
        }
    }
    queries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_slices_ndjson() {
        let corpus = Corpus::from_bytes(Bytes::from_static(b"{\"a\":1}\n{\"a\":2}\n\n{\"a\":3}"));
        assert_eq!(corpus.len(), 3);
        assert_eq!(corpus.line(1), b"{\"a\":2}");
        assert_eq!(&corpus.ndjson(0..2)[..], b"{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(&corpus.ndjson(2..3)[..], b"{\"a\":3}");
    }

    #[test]
    fn ranks_body_words_and_mixes_classes() {
        let corpus = Corpus::from_bytes(Bytes::from_static(
            b"{\"id\":\"1\",\"body\":\"aa bb aa\"}\n{\"id\":\"2\",\"body\":\"aa cc\"}\n",
        ));
        let ranked = corpus.body_words_by_frequency();
        assert_eq!(ranked[0], ("aa".to_owned(), 3));
        assert_eq!(ranked.len(), 3);
        let queries = mixed_term_queries(&ranked, 1);
        assert_eq!(queries.first().map(String::as_str), Some("body:aa"));
        assert!(queries.contains(&"body:cc".to_owned()));
    }

    #[test]
    fn the_generator_writes_the_requested_documents() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = Corpus::generate_in(dir.path(), 50).unwrap();
        assert_eq!(corpus.len(), 50);
        let first: serde_json::Value = serde_json::from_slice(corpus.line(0)).unwrap();
        assert_eq!(first["id"], "doc-0");
        assert!(schema_json().unwrap().starts_with(b"{"));
    }
}
