//! Search on a 200k-document index (sluice's mapping, built once by raw Tantivy and
//! cached under `target/sluice-bench-cache/search-index-200000/`; delete that directory
//! to rebuild). Queries are planned like sluice plans them — the text query, filters
//! as constant-score `Must` clauses, tombstones excluded — and collect the top 10 with
//! an exact total, then load the hits' `_source` as a response would.
//!
//! `SLUICE_BENCH_SEARCH_DOCS` changes the index size (e.g. 20000 for a quick run).

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use sluice_benches::corpus::Corpus;
use sluice_benches::raw_tantivy::cached_search_index;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{Order, Searcher, TantivyDocument, Term};

const DEFAULT_DOCS: usize = 200_000;

fn search(c: &mut Criterion) {
    let docs = std::env::var("SLUICE_BENCH_SEARCH_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_DOCS);
    let (index, mapping) =
        cached_search_index(docs).unwrap_or_else(|e| panic!("cannot build the search index: {e}"));
    let corpus = Corpus::cached(docs).unwrap_or_else(|e| panic!("cannot load the corpus: {e}"));
    let ranked = corpus.body_words_by_frequency();
    let word = |rank: usize| ranked[rank.min(ranked.len() - 1)].0.clone();
    let (frequent, frequent2, medium, rare) =
        (word(0), word(5), word(2_000), word(ranked.len() - 1));
    // A phrase that occurs: the first two body words of the first document.
    let first: serde_json::Value =
        serde_json::from_slice(corpus.line(0)).expect("corpus line is JSON");
    let body_words: Vec<&str> = first["body"].as_str().unwrap_or("").split(' ').collect();
    let phrase = format!("body:\"{} {}\"", body_words[0], body_words[1]);

    let searcher = index.reader().expect("reader").searcher();
    let parser = QueryParser::for_index(&index, mapping.default_query_fields());
    let filter_parser = QueryParser::for_index(&index, Vec::new());
    let plan = |q: &str, filters: &[&str]| -> Box<dyn Query> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> =
            vec![(Occur::Must, parser.parse_query(q).expect("valid query"))];
        for filter in filters {
            let filter = filter_parser.parse_query(filter).expect("valid filter");
            clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(filter, 0.0))));
        }
        clauses.push((
            Occur::MustNot,
            Box::new(TermQuery::new(
                Term::from_field_u64(mapping.tombstone, 1),
                IndexRecordOption::Basic,
            )),
        ));
        Box::new(BooleanQuery::new(clauses))
    };
    let load_sources = |searcher: &Searcher, hits: Vec<tantivy::DocAddress>| -> usize {
        hits.into_iter()
            .map(|address| {
                let doc: TantivyDocument = searcher.doc(address).expect("stored document");
                doc.get_first(mapping.source)
                    .and_then(|v| v.as_bytes())
                    .map_or(0, <[u8]>::len)
            })
            .sum()
    };
    let by_score = |query: &dyn Query| -> (u64, usize) {
        let (top, total) = searcher
            .search(query, &(TopDocs::with_limit(10).order_by_score(), Count))
            .expect("search");
        let bytes = load_sources(&searcher, top.into_iter().map(|(_, a)| a).collect());
        (total as u64, bytes)
    };

    let cases: Vec<(&str, Box<dyn Query>)> = vec![
        ("term_frequent", plan(&format!("body:{frequent}"), &[])),
        ("term_medium", plan(&format!("body:{medium}"), &[])),
        ("term_rare", plan(&format!("body:{rare}"), &[])),
        ("phrase", plan(&phrase, &[])),
        (
            "boolean",
            plan(
                &format!("+body:{frequent} +body:{frequent2} -title:{medium}"),
                &[],
            ),
        ),
    ];
    let mut group = c.benchmark_group(format!("search_{docs}"));
    for (name, query) in &cases {
        assert!(by_score(query.as_ref()).0 > 0, "{name} matches nothing");
        group.bench_function(*name, |b| b.iter(|| black_box(by_score(query.as_ref()))));
    }
    let filtered = plan(
        &format!("body:{frequent2}"),
        &["tags:tag03", "price:[1000 TO 5000]"],
    );
    group.bench_function("filtered_sorted_by_price", |b| {
        b.iter(|| {
            let (top, total) = searcher
                .search(
                    filtered.as_ref(),
                    &(
                        TopDocs::with_limit(10).order_by_fast_field::<i64>("price", Order::Desc),
                        Count,
                    ),
                )
                .expect("search");
            let bytes = load_sources(&searcher, top.into_iter().map(|(_, a)| a).collect());
            black_box((total, bytes))
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = search
}
criterion_main!(benches);
