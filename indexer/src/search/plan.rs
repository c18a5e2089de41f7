//! Parsing a request's query and filters into one Tantivy query, with the collection's
//! tokenizers, on the parse thread whose stack no input can overflow.

use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, TermQuery,
};
use tantivy::query_grammar::{UserInputAst, UserInputLeaf};
use tantivy::schema::IndexRecordOption;
use tantivy::Term;

use tantivy::query::QueryParserError;

use sluice_core::search::SearchError;

use crate::index_schema::IndexSchema;
use crate::query_limits;
use crate::shard::ShardIndex;

use super::aggs::AggregationPlan;
use super::dsl::{self, DslContext};
use super::{NormalizedRequest, SearchSettings, SortSpec};

/// The parsed queries of a request, shared by every shard of the collection.
pub(crate) struct QueryPlan {
    /// What is collected: text query AND filters AND NOT tombstones.
    pub(super) query: Box<dyn Query>,
    /// The scored text query alone (`q` and the DSL `query`), for highlights.
    pub(super) text_query: Option<Box<dyn Query>>,
    /// The request's aggregations, if it asked for any.
    pub(super) aggs: Option<AggregationPlan>,
    pub(super) sort: Option<SortSpec>,
    pub(super) highlight: bool,
    /// Hits of the page that get highlights (the first ones).
    pub(super) highlight_max_hits: usize,
    /// Bytes of one field's text analysed for highlights.
    pub(super) highlight_max_analyzed: usize,
}

/// [`plan`] on the parse thread ([`query_limits::on_parse_stack`]): the grammar
/// recurses once per nesting level, and the syntax trees it builds are dropped there.
/// Blocking: call it from a blocking thread.
pub(crate) fn plan_on_parse_stack(
    shard: &ShardIndex,
    request: &NormalizedRequest,
    settings: &SearchSettings,
) -> Result<QueryPlan, SearchError> {
    query_limits::on_parse_stack(&settings.query, || plan(shard, request, settings))
}

/// Parses the request's query and filters with the collection's tokenizers. Recursive in
/// the query's nesting: run it through [`plan_on_parse_stack`].
pub(super) fn plan(
    shard: &ShardIndex,
    request: &NormalizedRequest,
    settings: &SearchSettings,
) -> Result<QueryPlan, SearchError> {
    let schema = shard.schema();
    let limits = &settings.query;
    let text_query = match &request.q {
        None => None,
        Some(q) => {
            let ast = query_limits::parse_checked(q, "q", limits, || {
                SearchError::InvalidQuery(format!(
                    "invalid query: {}",
                    QueryParserError::SyntaxError(q.clone())
                ))
            })?;
            let parser = QueryParser::for_index(shard.index(), schema.default_query_fields());
            Some(
                parser
                    .build_query_from_user_input_ast(ast)
                    .map_err(|e| SearchError::InvalidQuery(format!("invalid query: {e}")))?,
            )
        }
    };
    let dsl_query = match &request.query {
        None => None,
        Some(query) => {
            let context = DslContext {
                index: shard.index(),
                schema,
                limits,
                now: time::OffsetDateTime::now_utc(),
            };
            Some(dsl::compile(query.value(), &context)?)
        }
    };
    let text_query = match (text_query, dsl_query) {
        (Some(q), Some(dsl)) => Some(Box::new(BooleanQuery::new(vec![
            (Occur::Must, q),
            (Occur::Must, dsl),
        ])) as Box<dyn Query>),
        (q, dsl) => q.or(dsl),
    };
    let aggs = request
        .aggs
        .as_ref()
        .map(|aggs| AggregationPlan::new(aggs.value(), schema))
        .transpose()?;
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(
        Occur::Must,
        text_query
            .as_ref()
            .map_or_else(|| Box::new(AllQuery) as Box<dyn Query>, |q| q.box_clone()),
    )];
    let filter_parser = QueryParser::for_index(shard.index(), Vec::new());
    for filter in &request.filters {
        let ast = query_limits::parse_checked(filter, "a filter", limits, || {
            SearchError::InvalidQuery(format!("filter {filter:?}: invalid query syntax"))
        })?;
        check_filter_fields(&ast, schema, filter)?;
        let query = filter_parser
            .build_query_from_user_input_ast(ast)
            .map_err(|e| SearchError::InvalidQuery(format!("filter {filter:?}: {e}")))?;
        // Filters restrict, they do not rank.
        clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(query, 0.0))));
    }
    clauses.push((
        Occur::MustNot,
        Box::new(TermQuery::new(
            Term::from_field_u64(schema.tombstone, 1),
            IndexRecordOption::Basic,
        )),
    ));
    Ok(QueryPlan {
        query: Box::new(BooleanQuery::new(clauses)),
        text_query,
        aggs,
        sort: request.sort.clone(),
        highlight: request.highlight,
        highlight_max_hits: settings.highlight_max_hits,
        highlight_max_analyzed: settings.highlight_max_analyzed,
    })
}

/// Refuses filter clauses on anything but declared exact-value fields.
pub(super) fn check_filter_fields(
    ast: &UserInputAst,
    schema: &IndexSchema,
    filter: &str,
) -> Result<(), SearchError> {
    let check = |field: Option<&str>| -> Result<(), SearchError> {
        let Some(field) = field else {
            return Err(SearchError::InvalidQuery(format!(
                "filter {filter:?}: every term must name a field, e.g. tags:foo"
            )));
        };
        match schema.declared(field) {
            Some(declared) if declared.is_filterable() => Ok(()),
            Some(declared) => Err(SearchError::InvalidQuery(format!(
                "filter {filter:?}: field {field:?} is a {} field; filters apply to keyword, string, numeric, bool and datetime fields (use q for text)",
                declared.field_type.as_str()
            ))),
            None => Err(SearchError::InvalidQuery(format!(
                "filter {filter:?}: the collection declares no field {field:?}"
            ))),
        }
    };
    match ast {
        UserInputAst::Clause(clauses) => clauses
            .iter()
            .try_for_each(|(_, sub)| check_filter_fields(sub, schema, filter)),
        UserInputAst::Boost(sub, _) => check_filter_fields(sub, schema, filter),
        UserInputAst::Leaf(leaf) => match leaf.as_ref() {
            UserInputLeaf::All => Ok(()),
            UserInputLeaf::Literal(literal) => check(literal.field_name.as_deref()),
            UserInputLeaf::Range { field, .. }
            | UserInputLeaf::Set { field, .. }
            | UserInputLeaf::Regex { field, .. } => check(field.as_deref()),
            UserInputLeaf::Exists { field } => check(Some(field)),
        },
    }
}
