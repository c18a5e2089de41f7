//! What each request of a stage is: ticket number in, [`Operation`] out.
//!
//! Requests are numbered (tickets) in schedule order and every choice about a request — which
//! documents an ingest batch carries, which query a search runs, whether a mixed request
//! writes or reads — is a pure function of the ticket and the corpus. Runs with the same
//! plan therefore send the same requests in the same order, whatever the timing, and any
//! number of connection tasks can build requests from a shared `Arc<Workload>` without
//! coordination.
//!
//! The search query mix draws from the corpus vocabulary by Zipf rank: `frequent` words
//! (top ranks, large posting lists, cache-friendly), `rare` words (deep ranks, tiny posting
//! lists), `phrase`s lifted from document titles (so they match), `boolean` combinations,
//! and `filtered` queries with a keyword and a range filter, sorted on a numeric field.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::corpus::{push_json_string, Corpus};
use crate::plan::{QueryMixConfig, ScenarioKind, Stage};

/// One request to make.
#[derive(Debug)]
pub enum Operation {
    /// POST an NDJSON batch.
    Ingest {
        /// Path and query.
        path: String,
        /// The NDJSON body.
        body: Bytes,
        /// Documents in the body.
        docs: u64,
    },
    /// GET a search.
    Search {
        /// Path and query.
        path: String,
    },
    /// GET a path.
    Get {
        /// Path and query.
        path: String,
    },
    /// POST one marker document, then poll `search_path` until it is found.
    Freshness {
        /// Ingest path and query.
        path: String,
        /// The marker document as one NDJSON line.
        body: Bytes,
        /// The search that finds the marker.
        search_path: String,
    },
}

/// The request factory of one stage.
pub struct Workload {
    scenario: ScenarioKind,
    corpus: Arc<Corpus>,
    collection_path: String,
    ingest_path: String,
    docs_per_request: usize,
    fresh_ids: bool,
    write_ratio: f64,
    get_path: String,
    run_tag: String,
    queries: QueryMix,
}

impl Workload {
    /// The workload of `stage` on `collection`; `run_tag` makes fresh ids and markers unique
    /// to this run.
    pub fn new(stage: &Stage, corpus: Arc<Corpus>, collection: &str, run_tag: &str) -> Self {
        let collection_path = format!("/v1/collections/{}", encode_path_segment(collection));
        let ingest_path = format!("{collection_path}/documents?wait={}", stage.wait.as_str());
        let queries = QueryMix::new(&stage.query_mix, &corpus, &collection_path);
        Self {
            scenario: stage.scenario,
            corpus,
            collection_path,
            ingest_path,
            docs_per_request: stage.docs_per_request,
            fresh_ids: stage.fresh_ids,
            write_ratio: stage.write_ratio,
            get_path: stage.path.clone(),
            run_tag: run_tag.to_owned(),
            queries,
        }
    }

    /// The request of `ticket`.
    pub fn operation(&self, ticket: u64) -> Operation {
        match self.scenario {
            ScenarioKind::Ingest => self.ingest(ticket),
            ScenarioKind::Search => self.search(ticket),
            ScenarioKind::Get => Operation::Get {
                path: self.get_path.clone(),
            },
            ScenarioKind::Mixed => {
                if unit_float(mix(ticket ^ 0x5851_f42d_4c95_7f2d)) < self.write_ratio {
                    self.ingest(ticket)
                } else {
                    self.search(ticket)
                }
            }
            ScenarioKind::Freshness => self.freshness(ticket),
        }
    }

    fn ingest(&self, ticket: u64) -> Operation {
        let lines = &self.corpus.lines;
        let first = ticket.wrapping_mul(self.docs_per_request as u64);
        let mut body = BytesMut::with_capacity(self.docs_per_request * 1100);
        for offset in 0..self.docs_per_request as u64 {
            let number = first.wrapping_add(offset);
            let line = &lines[(number % lines.len() as u64) as usize];
            if self.fresh_ids {
                let id = format!("lg-{}-{number}", self.run_tag);
                body.put_slice(&with_id(line, &id));
            } else {
                body.put_slice(line);
            }
            body.put_u8(b'\n');
        }
        Operation::Ingest {
            path: self.ingest_path.clone(),
            body: body.freeze(),
            docs: self.docs_per_request as u64,
        }
    }

    fn search(&self, ticket: u64) -> Operation {
        Operation::Search {
            path: self.queries.path(ticket),
        }
    }

    fn freshness(&self, ticket: u64) -> Operation {
        // Lowercase letters and digits only: one token for every tokenizer sluice offers.
        let marker = format!("mk{}x{ticket}", self.run_tag);
        let mut line = String::with_capacity(256);
        line.push_str("{\"id\":");
        push_json_string(&mut line, &format!("fresh-{}-{ticket}", self.run_tag));
        line.push_str(",\"title\":");
        push_json_string(&mut line, &format!("{marker} freshness marker"));
        line.push_str(",\"body\":");
        push_json_string(&mut line, &marker);
        line.push_str(",\"tags\":[\"freshness\"],\"author\":\"loadgen\",\"ts\":\"2026-01-01T00:00:00Z\",\"price\":0}\n");
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("q", &format!("title:{marker}"))
            .append_pair("limit", "1")
            .finish();
        Operation::Freshness {
            path: format!("{}/documents?wait=durable", self.collection_path),
            body: Bytes::from(line),
            search_path: format!("{}/search?{query}", self.collection_path),
        }
    }
}

/// `line` with its `id` member replaced by `id`: a cheap splice when the line starts with
/// `{"id":"...",` (the standard corpus), a JSON round trip otherwise.
fn with_id(line: &[u8], id: &str) -> Vec<u8> {
    const PREFIX: &[u8] = b"{\"id\":\"";
    let mut quoted_id = String::with_capacity(id.len() + 2);
    push_json_string(&mut quoted_id, id);
    if let Some(rest) = line.strip_prefix(PREFIX) {
        if let Some(end) = rest.iter().position(|&b| b == b'"' || b == b'\\') {
            if rest[end] == b'"' {
                let mut out = Vec::with_capacity(line.len() + id.len());
                out.extend_from_slice(b"{\"id\":");
                out.extend_from_slice(quoted_id.as_bytes());
                out.extend_from_slice(&rest[end + 1..]);
                return out;
            }
        }
    }
    match serde_json::from_slice::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert("id".into(), serde_json::Value::String(id.to_owned()));
            serde_json::to_vec(&map).unwrap_or_else(|_| line.to_vec())
        }
        // Not an object: send it as is and let the server report the line.
        _ => line.to_vec(),
    }
}

/// Percent-encodes a path segment (collection names are plain, but stay safe).
fn encode_path_segment(segment: &str) -> String {
    form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// SplitMix64's finalizer: a well-mixed 64-bit value from a counter.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn unit_float(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The search scenario's queries.
struct QueryMix {
    search_path: String,
    config: QueryMixConfig,
    weights: [u32; 5],
    frequent: Vec<String>,
    common: Vec<String>,
    rare: Vec<String>,
    phrases: Vec<String>,
}

impl QueryMix {
    fn new(config: &QueryMixConfig, corpus: &Corpus, collection_path: &str) -> Self {
        let vocabulary = &corpus.vocabulary;
        let len = vocabulary.len();
        // Standard corpus: 50,000 ranks; frequent = top 100, rare = ranks past 10,000.
        // Smaller vocabularies (files) scale the same proportions.
        let frequent_end = (len / 500).clamp(1, 100).min(len);
        let common_end = (len / 50).clamp(1, 1000).min(len);
        let rare_start = (len / 5).min(len.saturating_sub(1));
        let phrases = corpus
            .lines
            .iter()
            .take(2000)
            .filter_map(|line| {
                let doc: serde_json::Value = serde_json::from_slice(line).ok()?;
                let text = doc.get(&config.phrase_field)?.as_str()?;
                let words: Vec<&str> = text.split_whitespace().collect();
                let pair = words.get(1..3)?;
                Some(format!("{} {}", pair[0], pair[1]))
            })
            .collect();
        Self {
            search_path: format!("{collection_path}/search"),
            config: config.clone(),
            weights: [
                config.frequent,
                config.rare,
                config.phrase,
                config.boolean,
                config.filtered,
            ],
            frequent: vocabulary[..frequent_end].to_vec(),
            common: vocabulary[..common_end].to_vec(),
            rare: vocabulary[rare_start..].to_vec(),
            phrases,
        }
    }

    fn pick(words: &[String], random: u64) -> &str {
        if words.is_empty() {
            "sluice"
        } else {
            &words[(random % words.len() as u64) as usize]
        }
    }

    fn path(&self, ticket: u64) -> String {
        let r = [
            mix(ticket),
            mix(ticket ^ 0xa076_1d64_78bd_642f),
            mix(ticket ^ 0xe703_7ed1_a0b4_28db),
            mix(ticket ^ 0x8ebc_6af0_9c88_c6e3),
        ];
        let total: u64 = self.weights.iter().map(|&w| u64::from(w)).sum();
        let mut point = r[0] % total.max(1);
        let mut kind = 0;
        for (index, &weight) in self.weights.iter().enumerate() {
            if point < u64::from(weight) {
                kind = index;
                break;
            }
            point -= u64::from(weight);
        }
        let c = &self.config;
        let text = &c.text_field;
        let mut query = form_urlencoded::Serializer::new(String::new());
        match kind {
            0 => {
                query.append_pair("q", &format!("{text}:{}", Self::pick(&self.frequent, r[1])));
            }
            1 => {
                query.append_pair("q", &format!("{text}:{}", Self::pick(&self.rare, r[1])));
            }
            2 => {
                let phrase = Self::pick(&self.phrases, r[1]);
                query.append_pair("q", &format!("{}:\"{phrase}\"", c.phrase_field));
            }
            3 => {
                let a = Self::pick(&self.common, r[1]);
                let b = Self::pick(&self.common, r[2]);
                let q = match r[3] % 3 {
                    0 => format!("{text}:{a} AND {text}:{b}"),
                    1 => format!("{text}:{a} OR {text}:{b}"),
                    _ => format!("{text}:{a} AND NOT {text}:{b}"),
                };
                query.append_pair("q", &q);
            }
            _ => {
                query.append_pair("q", &format!("{text}:{}", Self::pick(&self.common, r[1])));
                if !c.filter_values.is_empty() {
                    let value = Self::pick(&c.filter_values, r[2]);
                    query.append_pair("filter", &format!("{}:{value}", c.filter_field));
                }
                let max = c.numeric_max.max(2);
                let low = r[3] % (max / 2);
                let mut range = String::new();
                let _ = write!(range, "{}:[{low} TO {}]", c.numeric_field, low + max / 2);
                query.append_pair("filter", &range);
                let direction = if r[3] & 1 == 0 { "asc" } else { "desc" };
                query.append_pair("sort", &format!("{}:{direction}", c.numeric_field));
            }
        }
        query.append_pair("limit", &c.limit.to_string());
        format!("{}?{}", self.search_path, query.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::CorpusSource;

    fn corpus() -> Arc<Corpus> {
        Arc::new(
            Corpus::load(&CorpusSource::Standard {
                docs: 50,
                seed: 7,
                body_words: 120,
            })
            .expect("corpus"),
        )
    }

    #[test]
    fn ingest_batches_cycle_through_the_corpus_and_fresh_ids_are_new() {
        let mut stage = Stage::new(ScenarioKind::Ingest);
        stage.docs_per_request = 30;
        let workload = Workload::new(&stage, corpus(), "corpus", "t1");
        let Operation::Ingest { body, docs, path } = workload.operation(1) else {
            panic!("not an ingest");
        };
        assert_eq!(docs, 30);
        assert_eq!(path, "/v1/collections/corpus/documents?wait=durable");
        let lines: Vec<&[u8]> = body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 30);
        assert!(lines[0].starts_with(b"{\"id\":\"doc-30\""));
        assert!(
            lines[29].starts_with(b"{\"id\":\"doc-9\""),
            "wraps around the 50 docs"
        );

        stage.fresh_ids = true;
        let workload = Workload::new(&stage, corpus(), "corpus", "t1");
        let Operation::Ingest { body, .. } = workload.operation(0) else {
            panic!("not an ingest");
        };
        let first: serde_json::Value =
            serde_json::from_slice(body.split(|&b| b == b'\n').next().expect("a line"))
                .expect("json");
        assert_eq!(first["id"], "lg-t1-0");
        assert!(first["body"].as_str().is_some_and(|b| b.len() > 100));
    }

    #[test]
    fn query_mix_covers_every_kind_and_is_deterministic() {
        let stage = Stage::new(ScenarioKind::Search);
        let workload = Workload::new(&stage, corpus(), "corpus", "t1");
        let paths: Vec<String> = (0..400)
            .map(|t| match workload.operation(t) {
                Operation::Search { path } => path,
                other => panic!("not a search: {other:?}"),
            })
            .collect();
        let decoded: Vec<String> = paths
            .iter()
            .map(|p| {
                form_urlencoded::parse(p.split_once('?').map(|x| x.1).unwrap_or("").as_bytes())
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("&")
            })
            .collect();
        assert!(decoded.iter().any(|q| q.contains("title:\"")), "phrases");
        assert!(decoded.iter().any(|q| q.contains(" AND ")), "boolean");
        assert!(decoded
            .iter()
            .any(|q| q.contains("filter=tags:tag") && q.contains("sort=price:")));
        assert!(decoded
            .iter()
            .all(|q| q.starts_with("q=") && q.ends_with("limit=10")));
        let again = Workload::new(&stage, corpus(), "corpus", "t1");
        match again.operation(17) {
            Operation::Search { path } => assert_eq!(path, paths[17]),
            other => panic!("not a search: {other:?}"),
        }
    }

    #[test]
    fn mixed_follows_the_write_ratio() {
        let mut stage = Stage::new(ScenarioKind::Mixed);
        stage.write_ratio = 0.25;
        stage.docs_per_request = 1;
        let workload = Workload::new(&stage, corpus(), "corpus", "t1");
        let writes = (0..4000)
            .filter(|&t| matches!(workload.operation(t), Operation::Ingest { .. }))
            .count();
        assert!((850..1150).contains(&writes), "{writes} writes of 4000");
    }
}
