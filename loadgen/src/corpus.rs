//! The documents a run sends: the standard corpus generated in-process, or any NDJSON file.
//!
//! This is the project's corpus generator: the tests, the README quickstart, the benches
//! and `sluice-loadgen corpus` all use it. [`StandardCorpus`] yields exactly the bytes the
//! reference script `corpus.py N --seed S` prints (one compact JSON object per line,
//! ASCII-escaped as Python's `json.dumps` does), and [`STANDARD_SCHEMA_DOCUMENT`] what
//! `corpus.py --schema` prints, so figures measured with either describe the same
//! documents; `loadgen/tests/loadgen.rs` compares the two byte for byte when the script is
//! beside the repository. Generation is deterministic and single-threaded; the whole
//! corpus is held in memory as ready-to-send lines ([`Corpus`]) so the hot path only
//! copies bytes.

use std::fmt::Write as _;
use std::path::Path;

use bytes::Bytes;

use crate::error::LoadgenError;
use crate::pyrandom::PyRandom;

/// Words in the standard vocabulary.
pub const VOCAB_SIZE: usize = 50_000;
/// Words in a standard document's title.
pub const TITLE_WORDS: usize = 8;
/// Words in a standard document's body.
pub const BODY_WORDS: usize = 120;
/// Seed `corpus.py` uses when none is given.
pub const DEFAULT_SEED: u64 = 42;

/// The collection schema of the standard corpus as compact JSON (the same document as
/// [`STANDARD_SCHEMA_DOCUMENT`]).
pub const STANDARD_SCHEMA: &str = r#"{"description":"synthetic benchmark documents","primary_key":"id","fields":[{"name":"id","type":"string"},{"name":"title","type":"text"},{"name":"body","type":"text"},{"name":"tags","type":"keyword","array":true,"required":false},{"name":"author","type":"keyword"},{"name":"ts","type":"datetime"},{"name":"price","type":"i64","required":false,"default":0}]}"#;

/// The collection schema of the standard corpus as `corpus.py --schema` prints it
/// (indented by two, keys in declaration order), without the final newline.
pub const STANDARD_SCHEMA_DOCUMENT: &str = r#"{
  "description": "synthetic benchmark documents",
  "primary_key": "id",
  "fields": [
    {
      "name": "id",
      "type": "string"
    },
    {
      "name": "title",
      "type": "text"
    },
    {
      "name": "body",
      "type": "text"
    },
    {
      "name": "tags",
      "type": "keyword",
      "array": true,
      "required": false
    },
    {
      "name": "author",
      "type": "keyword"
    },
    {
      "name": "ts",
      "type": "datetime"
    },
    {
      "name": "price",
      "type": "i64",
      "required": false,
      "default": 0
    }
  ]
}"#;

/// Unix time of 2026-01-01T00:00:00Z, the first document's `ts`.
const START_UNIX_SECONDS: i64 = 1_767_225_600;

/// Generator of the standard corpus, document by document.
pub struct StandardCorpus {
    rng: PyRandom,
    words: Vec<String>,
    cumulative_weights: Vec<f64>,
    total_weight: f64,
    tags: Vec<String>,
    body_words: usize,
    next_index: u64,
}

impl StandardCorpus {
    /// The corpus for `seed`, with `body_words` words per body (`BODY_WORDS` reproduces
    /// `corpus.py`; other values change the document size for ingest tests).
    pub fn new(seed: u64, body_words: usize) -> Self {
        let mut rng = PyRandom::new(seed);
        let words = vocabulary(&mut rng);
        // itertools.accumulate sums left to right; the same order gives the same floats.
        let mut cumulative_weights = Vec::with_capacity(VOCAB_SIZE);
        let mut sum = 0.0f64;
        for rank in 0..VOCAB_SIZE {
            sum += 1.0 / (rank as f64 + 1.0);
            cumulative_weights.push(sum);
        }
        let total_weight = sum;
        Self {
            rng,
            words,
            cumulative_weights,
            total_weight,
            tags: (0..20).map(|i| format!("tag{i:02}")).collect(),
            body_words,
            next_index: 0,
        }
    }

    /// The vocabulary, most frequent word first (index = Zipf rank).
    pub fn vocabulary(&self) -> &[String] {
        &self.words
    }

    fn draw(&mut self, count: usize, out: &mut String) {
        for i in 0..count {
            if i > 0 {
                out.push(' ');
            }
            let target = self.rng.random() * self.total_weight;
            // bisect.bisect_left: the first index whose value is >= target.
            let rank = self.cumulative_weights.partition_point(|&c| c < target);
            out.push_str(&self.words[rank.min(VOCAB_SIZE - 1)]);
        }
    }

    /// The next document as one compact JSON line, without the trailing newline.
    pub fn next_document(&mut self) -> String {
        let index = self.next_index;
        self.next_index += 1;
        let mut title = String::new();
        self.draw(TITLE_WORDS, &mut title);
        let mut body = String::new();
        self.draw(self.body_words, &mut body);
        let tag_count = self.rng.randint(1, 3) as usize;
        let tags = self.rng.sample(&self.tags, tag_count);
        let author = self.rng.randrange(1000);
        let price = self.rng.randrange(10_000);

        let mut line = String::with_capacity(1200);
        line.push_str("{\"id\":");
        push_json_string(&mut line, &format!("doc-{index}"));
        line.push_str(",\"title\":");
        push_json_string(&mut line, &title);
        line.push_str(",\"body\":");
        push_json_string(&mut line, &body);
        line.push_str(",\"tags\":[");
        for (i, tag) in tags.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            push_json_string(&mut line, tag);
        }
        line.push_str("],\"author\":");
        push_json_string(&mut line, &format!("author{author:04}"));
        line.push_str(",\"ts\":");
        push_json_string(&mut line, &rfc3339_utc(START_UNIX_SECONDS + index as i64));
        let _ = write!(line, ",\"price\":{price}}}");
        line
    }
}

/// Writes `docs` documents of the corpus for `seed` as NDJSON (each line ends with a
/// newline): what `corpus.py N --seed S` prints when `body_words` is [`BODY_WORDS`].
pub fn write_ndjson(
    out: &mut impl std::io::Write,
    docs: usize,
    seed: u64,
    body_words: usize,
) -> std::io::Result<()> {
    let mut corpus = StandardCorpus::new(seed, body_words);
    for _ in 0..docs {
        out.write_all(corpus.next_document().as_bytes())?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// The first `docs` documents of the standard corpus (seed [`DEFAULT_SEED`]), one JSON
/// line each, without newlines.
pub fn standard_lines(docs: usize) -> Vec<String> {
    let mut corpus = StandardCorpus::new(DEFAULT_SEED, BODY_WORDS);
    (0..docs).map(|_| corpus.next_document()).collect()
}

fn vocabulary(rng: &mut PyRandom) -> Vec<String> {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    let mut seen = std::collections::HashSet::with_capacity(VOCAB_SIZE);
    let mut words = Vec::with_capacity(VOCAB_SIZE);
    while words.len() < VOCAB_SIZE {
        // range(rng.randint(3, 9)) is evaluated before the generator draws letters.
        let length = rng.randint(3, 9);
        let word: String = (0..length).map(|_| *rng.choice(LETTERS) as char).collect();
        if seen.insert(word.clone()) {
            words.push(word);
        }
    }
    words
}

/// `datetime.isoformat()` of a whole-second UTC time, with `+00:00` written `Z`.
fn rfc3339_utc(unix_seconds: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix_seconds) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        // Out of range only for absurd document counts; keep the line valid JSON anyway.
        Err(_) => "1970-01-01T00:00:00Z".to_owned(),
    }
}

/// Appends `value` as a JSON string the way Python's `json.dumps` (`ensure_ascii=True`)
/// writes it: printable ASCII as is, `"`/`\\` and the usual control escapes by name,
/// everything else as `\uXXXX` (UTF-16, surrogate pairs above the BMP).
pub fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(ch),
            _ => {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Where a run's documents come from.
#[derive(Clone, Debug)]
pub enum CorpusSource {
    /// The standard corpus: `docs` documents from `seed`.
    Standard {
        /// Documents to generate.
        docs: usize,
        /// `corpus.py --seed`.
        seed: u64,
        /// Words per body (120 is the standard corpus).
        body_words: usize,
    },
    /// Any NDJSON file, one document per non-empty line.
    File(std::path::PathBuf),
}

/// A loaded corpus: the documents as ready-to-send NDJSON lines.
pub struct Corpus {
    /// One document per entry, without the newline.
    pub lines: Vec<Bytes>,
    /// Words of the corpus, most frequent first (the standard vocabulary's Zipf ranks, or
    /// counted from a file's string values).
    pub vocabulary: Vec<String>,
    /// Whether this is the standard corpus (its schema is [`STANDARD_SCHEMA`]).
    pub is_standard: bool,
}

impl Corpus {
    /// Loads or generates the corpus.
    pub fn load(source: &CorpusSource) -> Result<Self, LoadgenError> {
        match source {
            CorpusSource::Standard {
                docs,
                seed,
                body_words,
            } => {
                let mut generator = StandardCorpus::new(*seed, *body_words);
                let lines = (0..*docs)
                    .map(|_| Bytes::from(generator.next_document()))
                    .collect();
                Ok(Self {
                    lines,
                    vocabulary: generator.words,
                    is_standard: true,
                })
            }
            CorpusSource::File(path) => Self::from_file(path),
        }
    }

    fn from_file(path: &Path) -> Result<Self, LoadgenError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadgenError::Io {
            what: format!("reading the corpus file {}", path.display()),
            source,
        })?;
        let lines: Vec<Bytes> = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| Bytes::copy_from_slice(line.as_bytes()))
            .collect();
        if lines.is_empty() {
            return Err(LoadgenError::Invalid(format!(
                "the corpus file {} holds no documents",
                path.display()
            )));
        }
        let vocabulary = count_vocabulary(&lines);
        Ok(Self {
            lines,
            vocabulary,
            is_standard: false,
        })
    }
}

/// Words of every string value of every document, most frequent first.
fn count_vocabulary(lines: &[Bytes]) -> Vec<String> {
    let mut counts: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    fn visit(value: &serde_json::Value, counts: &mut std::collections::HashMap<String, u64>) {
        match value {
            serde_json::Value::String(s) => {
                for word in s
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| w.len() >= 2)
                {
                    *counts.entry(word.to_lowercase()).or_default() += 1;
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| visit(v, counts)),
            serde_json::Value::Object(map) => map.values().for_each(|v| visit(v, counts)),
            _ => {}
        }
    }
    for line in lines {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) {
            visit(&value, &mut counts);
        }
    }
    let mut ranked: Vec<(String, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.into_iter().map(|(word, _)| word).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_like_python() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\u{1}é😀\u{7f}");
        assert_eq!(out, r#""a\"b\\c\nd\u0001\u00e9\ud83d\ude00\u007f""#);
    }

    #[test]
    fn an_ndjson_file_is_a_corpus_with_its_own_vocabulary() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("docs.ndjson");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"text\":\"Red fox\"}\n\n{\"id\":\"b\",\"text\":\"red red hen\",\"n\":3}\n",
        )
        .expect("write");
        let corpus = Corpus::load(&CorpusSource::File(path)).expect("loads");
        assert_eq!(corpus.lines.len(), 2, "blank lines are skipped");
        assert!(!corpus.is_standard);
        assert_eq!(corpus.vocabulary.first().map(String::as_str), Some("red"));
        assert!(corpus.vocabulary.iter().any(|w| w == "hen"));
        let empty = dir.path().join("empty.ndjson");
        std::fs::write(&empty, "\n").expect("write");
        assert!(Corpus::load(&CorpusSource::File(empty)).is_err());
    }

    #[test]
    fn both_schema_texts_are_the_same_document() {
        let compact: serde_json::Value = serde_json::from_str(STANDARD_SCHEMA).expect("json");
        let indented: serde_json::Value =
            serde_json::from_str(STANDARD_SCHEMA_DOCUMENT).expect("json");
        assert_eq!(compact, indented);
        assert_eq!(compact["fields"].as_array().map(Vec::len), Some(7));
    }

    #[test]
    fn ndjson_is_the_documents_one_per_line() {
        let mut out = Vec::new();
        write_ndjson(&mut out, 3, DEFAULT_SEED, BODY_WORDS).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.ends_with('\n'));
        assert_eq!(text.lines().collect::<Vec<_>>(), standard_lines(3));
        assert!(text.starts_with("{\"id\":\"doc-0\","));
    }

    #[test]
    fn timestamps_roll_over_days() {
        assert_eq!(rfc3339_utc(START_UNIX_SECONDS), "2026-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_utc(START_UNIX_SECONDS + 86_400 + 61),
            "2026-01-02T00:01:01Z"
        );
    }
}
