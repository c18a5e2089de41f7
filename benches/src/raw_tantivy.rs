//! Raw Tantivy: how fast Tantivy alone indexes the corpus, and the cached search index.
//!
//! A raw run does what sluice's indexing must do at the very least, and nothing more:
//! parse each document's JSON, build its Tantivy document with the indexer's own mapping
//! ([`IndexSchema`], the very code a shard runs), add it, commit once at the end. No log, no store, no deletes, no
//! intermediate commits. Parsing runs on the calling thread while Tantivy's indexing
//! threads consume, as in sluice. The timer stops when the commit returns.
//!
//! The search index for the criterion search benches is built the same way once and
//! kept under `target/sluice-bench-cache/search-index-{N}/`; a `complete` marker written
//! after the commit tells a finished build from an interrupted one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_core::schema::Schema;
use sluice_core::{DocId, Seq};
use sluice_indexer::index_schema::{ensure_tokenizers, IndexSchema};
use tantivy::{Index, IndexWriter, TantivyDocument};

use crate::corpus::{cache_dir, schema_json, Corpus};
use crate::error::BenchError;
use crate::sluice_process::cpu_time;

/// Tantivy writer memory budget of the raw runs: what Tantivy wants to run at full speed.
pub const RAW_WRITER_BUDGET: usize = 256 * 1024 * 1024;

/// The corpus collection schema (from the generator), validated.
pub fn corpus_schema() -> Result<Schema, BenchError> {
    Schema::from_json(&schema_json()?).map_err(|error| BenchError::Corpus {
        reason: format!("schema refused: {error}"),
    })
}

/// The result of one raw indexing run.
#[derive(Clone, Copy, Debug)]
pub struct RawIndexRun {
    /// Documents indexed.
    pub docs: usize,
    /// Indexing threads.
    pub threads: usize,
    /// From the first document to the commit's return.
    pub elapsed: Duration,
    /// CPU time this process used over `elapsed` (every thread: parsing, Tantivy's
    /// indexing and doc-store threads).
    pub cpu: Duration,
}

impl RawIndexRun {
    /// Documents per second.
    pub fn docs_per_sec(&self) -> f64 {
        self.docs as f64 / self.elapsed.as_secs_f64()
    }

    /// Documents per CPU-second.
    pub fn docs_per_cpu_sec(&self) -> f64 {
        self.docs as f64 / self.cpu.as_secs_f64()
    }
}

/// Adds every corpus document through `writer` (JSON parse and mapping included).
pub fn add_corpus(
    writer: &IndexWriter<TantivyDocument>,
    mapping: &IndexSchema,
    corpus: &Corpus,
) -> Result<(), BenchError> {
    for (index, line) in corpus.lines().enumerate() {
        let id = corpus_line_id(line).unwrap_or_else(|| index.to_string());
        let id = DocId::new(&id).map_err(|error| {
            BenchError::Sluice(format!(
                "corpus line {} has an invalid id: {error}",
                index + 1
            ))
        })?;
        writer.add_document(mapping.document(&id, Seq(index as u64 + 1), line))?;
    }
    Ok(())
}

/// The id of a corpus line: the generator writes `id` first, so reading it costs no parse
/// (the mapping parses the line once, as a shard does).
fn corpus_line_id(line: &[u8]) -> Option<String> {
    const ID: &[u8] = b"{\"id\":\"";
    let rest = line.strip_prefix(ID)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok().map(str::to_owned)
}

/// Indexes `corpus` into a new index in `dir` with `threads` indexing threads and a
/// `budget`-byte writer; commits once.
pub fn index_corpus(
    corpus: &Corpus,
    mapping: &IndexSchema,
    dir: &Path,
    threads: usize,
    budget: usize,
) -> Result<RawIndexRun, BenchError> {
    let index = Index::create_in_dir(dir, mapping.schema.clone())?;
    // As a shard does on open, so a schema naming a tokenizer indexes the same way.
    ensure_tokenizers(&index);
    let mut writer: IndexWriter<TantivyDocument> =
        index.writer_with_num_threads(threads, budget)?;
    let started = Instant::now();
    let cpu_before = cpu_time(0)?;
    add_corpus(&writer, mapping, corpus)?;
    writer.commit()?;
    let elapsed = started.elapsed();
    let cpu = cpu_time(0)? - cpu_before;
    // Merges triggered by the commit are not part of the rate; let them finish so the
    // next run does not compete with them.
    writer.wait_merging_threads()?;
    Ok(RawIndexRun {
        docs: corpus.len(),
        threads,
        elapsed,
        cpu,
    })
}

/// Where the cached search index of `docs` documents lives.
pub fn search_index_dir(docs: usize) -> PathBuf {
    cache_dir().join(format!("search-index-{docs}"))
}

/// The search index of the first `docs` corpus documents with its mapping, built on
/// first use (a couple of minutes for 200k on 2 cores) and reopened afterwards.
pub fn cached_search_index(docs: usize) -> Result<(Index, IndexSchema), BenchError> {
    let mapping = IndexSchema::new(&corpus_schema()?);
    let dir = search_index_dir(docs);
    let marker = dir.join("complete");
    if marker.is_file() {
        return Ok((open_index(&dir)?, mapping));
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(BenchError::io(format!("removing {}", dir.display())))?;
    }
    std::fs::create_dir_all(&dir).map_err(BenchError::io(format!("creating {}", dir.display())))?;
    let corpus = Corpus::cached(docs)?;
    index_corpus(&corpus, &mapping, &dir, 2, RAW_WRITER_BUDGET)?;
    std::fs::write(&marker, b"")
        .map_err(BenchError::io(format!("writing {}", marker.display())))?;
    Ok((open_index(&dir)?, mapping))
}

/// Opens an index built here, with the tokenizers a shard registers (query parsing uses them).
fn open_index(dir: &Path) -> Result<Index, BenchError> {
    let index = Index::open_in_dir(dir)?;
    ensure_tokenizers(&index);
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::collector::Count;
    use tantivy::query::QueryParser;

    #[test]
    fn reads_the_id_a_corpus_line_starts_with() {
        assert_eq!(
            corpus_line_id(br#"{"id":"doc-7","body":"x"}"#).as_deref(),
            Some("doc-7")
        );
        assert_eq!(corpus_line_id(br#"{"body":"x","id":"doc-7"}"#), None);
    }

    #[test]
    fn a_raw_run_indexes_every_document_searchably() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = Corpus::generate_in(dir.path(), 300).unwrap();
        let mapping = IndexSchema::new(&corpus_schema().unwrap());
        let index_dir = dir.path().join("index");
        std::fs::create_dir_all(&index_dir).unwrap();
        let run = index_corpus(&corpus, &mapping, &index_dir, 1, 15_000_000).unwrap();
        assert_eq!(run.docs, 300);
        assert!(run.docs_per_sec() > 0.0);
        let index = Index::open_in_dir(&index_dir).unwrap();
        let searcher = index.reader().unwrap().searcher();
        assert_eq!(searcher.num_docs(), 300);
        let parser = QueryParser::for_index(&index, mapping.default_query_fields());
        let word = &corpus.body_words_by_frequency()[0].0;
        let query = parser.parse_query(&format!("body:{word}")).unwrap();
        assert!(searcher.search(&query, &Count).unwrap() > 0);
        let query = parser.parse_query("body:notacorpusword").unwrap();
        assert_eq!(searcher.search(&query, &Count).unwrap(), 0);
    }
}
