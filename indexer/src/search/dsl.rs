//! The query DSL: a request's `query` object, in Elasticsearch's JSON shape, compiled into
//! one Tantivy query against a collection's index schema.
//!
//! Both APIs share it: the native search takes `query` in its JSON body (ANDed with `q`
//! and `filter`), and the Elasticsearch `_search`, `_msearch` and `_count` pass their
//! `query` through unchanged.
//!
//! Supported clauses: `match_all`, `match_none`, `match`, `match_phrase`, `multi_match`
//! (`best_fields`, `most_fields`, `phrase`), `query_string`, `simple_query_string`, `term`,
//! `terms`, `ids`, `range` (numbers, strings and dates with date math such as `now-1h/d`),
//! `exists`, `prefix`, `bool` (`must`, `should`, `filter`, `must_not`,
//! `minimum_should_match`) and `constant_score`, each with `boost` and `_name` (accepted,
//! not reported). Anything else, and any parameter a clause does not know, is refused
//! with a message naming it: a query is never answered with a different meaning.
//!
//! Fields: a declared field is queried with its own type (text fields with their
//! analyzer; keyword, string, numeric, bool and datetime fields by exact value); `_id`
//! by exact id; an undeclared field through the dynamic JSON field, which supports the
//! text clauses (`match`, `match_phrase`, `term` on strings, `prefix` and the query
//! strings) only.
//!
//! Dates in `term` and `range` are RFC 3339 (`2024-06-01T12:00:00Z`, the offset optional),
//! plain dates (`2024-06-01`), epoch milliseconds (numbers, Elasticsearch's
//! `epoch_millis`), or date math: an anchor (`now` or a date followed by `||`), then
//! `+N` / `-N` units (`y M w d h H m s`) and an optional rounding `/unit`. Like
//! Elasticsearch, rounding goes down for `gte` and `lt` and up (to the unit's last
//! millisecond) for `gt` and `lte`. `time_zone` takes fixed offsets (`+02:00`, `Z`);
//! `format` takes `epoch_millis`, `epoch_second` (strings of digits too) and the ISO 8601
//! formats whose strings these already are.
//!
//! Nesting is bounded by `indexer.max_query_depth` (compound clauses count one level
//! each); the text of each `query_string`, `match`-like and `prefix` clause by
//! `indexer.max_query_length` (and query strings by the depth limit of `q`); a `terms` or
//! `ids` clause holds at most [`MAX_TERMS`] values. Compilation runs on the parse thread
//! ([`crate::query_limits::on_parse_stack`]).

use std::ops::Bound;

use serde_json::{Map, Value};
use sluice_core::schema::FieldType;
use sluice_core::search::SearchError;
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, DisjunctionMaxQuery, EmptyQuery,
    ExistsQuery, Occur, PhraseQuery, Query, QueryParser, RangeQuery, RegexQuery, TermQuery,
    TermSetQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DateTime, Index, Term};
use time::{Date, Duration, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::index_schema::{DeclaredField, IndexSchema};
use crate::query_limits::{self, QueryLimits};

/// Most values of one `terms` or `ids` clause (Elasticsearch's `index.max_terms_count`).
pub const MAX_TERMS: usize = 65_536;

/// What a DSL query is compiled against.
pub(super) struct DslContext<'a> {
    pub index: &'a Index,
    pub schema: &'a IndexSchema,
    pub limits: &'a QueryLimits,
    /// The instant `now` stands for in date math (one per request).
    pub now: OffsetDateTime,
}

/// Compiles the `query` object of a request.
pub(super) fn compile(
    query: &Value,
    context: &DslContext<'_>,
) -> Result<Box<dyn Query>, SearchError> {
    Compiler { context }.clause(query, 0)
}

fn invalid(message: impl Into<String>) -> SearchError {
    SearchError::InvalidQuery(message.into())
}

/// Where a field name leads.
#[derive(Clone, Copy)]
enum Target<'a> {
    Declared(&'a str, DeclaredField),
    Id,
    /// An undeclared field, inside the dynamic JSON field.
    Dynamic(&'a str),
}

struct Compiler<'a, 'c> {
    context: &'c DslContext<'a>,
}

impl Compiler<'_, '_> {
    fn clause(&self, query: &Value, depth: usize) -> Result<Box<dyn Query>, SearchError> {
        let limit = self.context.limits.max_tree_depth();
        if depth > limit {
            return Err(SearchError::QueryTooComplex(format!(
                "the query nests deeper than {limit} clauses (indexer.max_query_depth)"
            )));
        }
        let object = query.as_object().ok_or_else(|| {
            invalid("a query clause must be a JSON object such as {\"match_all\": {}}")
        })?;
        let mut entries = object.iter();
        let (Some((name, body)), None) = (entries.next(), entries.next()) else {
            return Err(invalid(format!(
                "a query clause must have exactly one key, the clause name; got {}",
                key_list(object)
            )));
        };
        let name = name.as_str();
        match name {
            "match_all" => {
                let params = Params::new(name, body, &["boost", "_name"])?;
                Ok(boosted(Box::new(AllQuery), params.boost()?))
            }
            "match_none" => {
                Params::new(name, body, &["boost", "_name"])?;
                Ok(Box::new(EmptyQuery))
            }
            "match" => self.field_clause(name, body, "query", |field, params| {
                self.match_query(name, field, params)
            }),
            "match_phrase" => self.field_clause(name, body, "query", |field, params| {
                self.phrase_query(name, field, params)
            }),
            "term" => self.field_clause(name, body, "value", |field, params| {
                params.check(&["value", "boost", "_name", "case_insensitive"])?;
                if params.get("case_insensitive").and_then(Value::as_bool) == Some(true) {
                    return Err(invalid("[term] case_insensitive: true is not supported"));
                }
                let value = params.required("value")?;
                let term = self.exact_term(name, field, value)?;
                Ok(boosted(
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
                    params.boost()?,
                ))
            }),
            "prefix" => self.field_clause(name, body, "value", |field, params| {
                params.check(&["value", "boost", "_name", "rewrite"])?;
                let value = params.required("value")?;
                let prefix = value
                    .as_str()
                    .ok_or_else(|| invalid("[prefix] value must be a string"))?;
                self.context.limits.check_length([prefix])?;
                let query = self.prefix_query(field, prefix)?;
                Ok(boosted(query, params.boost()?))
            }),
            "range" => self.field_clause(name, body, "", |field, params| {
                self.range_query(field, params)
            }),
            "terms" => self.terms_query(body),
            "ids" => {
                let params = Params::new(name, body, &["values", "boost", "_name"])?;
                let values = params
                    .required("values")?
                    .as_array()
                    .ok_or_else(|| invalid("[ids] values must be an array of ids"))?;
                if values.len() > MAX_TERMS {
                    return Err(SearchError::QueryTooComplex(format!(
                        "[ids] has {} values; the limit is {MAX_TERMS}",
                        values.len()
                    )));
                }
                let terms = values
                    .iter()
                    .map(|value| self.exact_term(name, Target::Id, value))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(constant(Box::new(TermSetQuery::new(terms)), params.boost()?))
            }
            "exists" => {
                let params = Params::new(name, body, &["field", "boost", "_name"])?;
                let field = params
                    .required("field")?
                    .as_str()
                    .ok_or_else(|| invalid("[exists] field must be a string"))?;
                let query = self.exists_query(field)?;
                Ok(constant(query, params.boost()?))
            }
            "multi_match" => self.multi_match(body),
            "query_string" => self.query_string(body),
            "simple_query_string" => self.simple_query_string(body),
            "bool" => self.bool_query(body, depth),
            "constant_score" => {
                let params = Params::new(name, body, &["filter", "boost", "_name"])?;
                let inner = self.clause(params.required("filter")?, depth + 1)?;
                Ok(constant(inner, params.boost()?))
            }
            other => Err(invalid(format!(
                "query clause [{other}] is not supported; supported clauses: match_all, match_none, match, match_phrase, multi_match, query_string, simple_query_string, term, terms, ids, range, exists, prefix, bool, constant_score"
            ))),
        }
    }

    /// A clause of the `{"clause": {"field": value | {params}}}` shape; a bare value is
    /// the parameter `shorthand`.
    fn field_clause(
        &self,
        clause: &str,
        body: &Value,
        shorthand: &str,
        build: impl FnOnce(Target<'_>, &Params<'_>) -> Result<Box<dyn Query>, SearchError>,
    ) -> Result<Box<dyn Query>, SearchError> {
        let object = body
            .as_object()
            .ok_or_else(|| invalid(format!("[{clause}] must be an object naming one field")))?;
        let mut fields = object
            .iter()
            .filter(|(key, _)| key.as_str() != "_name" && key.as_str() != "boost");
        let (Some((field, value)), None) = (fields.next(), fields.next()) else {
            return Err(invalid(format!(
                "[{clause}] must name exactly one field; got {}",
                key_list(object)
            )));
        };
        let owned;
        let params = match value {
            Value::Object(_) => Params::new(clause, value, &[])?,
            _ if !shorthand.is_empty() => {
                owned = Value::Object(Map::from_iter([(shorthand.to_owned(), value.clone())]));
                Params::new(clause, &owned, &[])?
            }
            _ => {
                return Err(invalid(format!(
                    "[{clause}] on {field:?} takes an object of parameters"
                )))
            }
        };
        build(self.target(field), &params)
    }

    fn target<'f>(&self, field: &'f str) -> Target<'f> {
        if field == "_id" {
            return Target::Id;
        }
        match self.context.schema.declared(field) {
            Some(declared) => Target::Declared(field, *declared),
            None => Target::Dynamic(field),
        }
    }

    fn match_query(
        &self,
        clause: &str,
        target: Target<'_>,
        params: &Params<'_>,
    ) -> Result<Box<dyn Query>, SearchError> {
        params.check(&[
            "query",
            "operator",
            "minimum_should_match",
            "boost",
            "_name",
            "zero_terms_query",
            "lenient",
        ])?;
        if let Some(zero) = params.get("zero_terms_query") {
            if zero != "none" {
                return Err(invalid(format!(
                    "[{clause}] zero_terms_query {zero} is not supported (only \"none\")"
                )));
            }
        }
        let text = params.required("query")?;
        let and = parse_operator(clause, params.get("operator"))?;
        let query = match self.analyzed_terms(clause, target, text)? {
            Analyzed::Exact(term) => {
                Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)) as Box<dyn Query>
            }
            Analyzed::Tokens(terms) if terms.is_empty() => Box::new(EmptyQuery),
            Analyzed::Tokens(mut terms) if terms.len() == 1 => Box::new(TermQuery::new(
                terms.pop().expect("one term"),
                IndexRecordOption::WithFreqs,
            )),
            Analyzed::Tokens(terms) => {
                let count = terms.len();
                let occur = if and { Occur::Must } else { Occur::Should };
                let clauses: Vec<(Occur, Box<dyn Query>)> = terms
                    .into_iter()
                    .map(|term| {
                        (
                            occur,
                            Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))
                                as Box<dyn Query>,
                        )
                    })
                    .collect();
                let minimum = match params.get("minimum_should_match") {
                    Some(spec) if !and => minimum_should_match(clause, spec, count)?.max(1),
                    _ if and => 0,
                    _ => 1,
                };
                if minimum > count {
                    return Ok(Box::new(EmptyQuery));
                }
                Box::new(BooleanQuery::with_minimum_required_clauses(
                    clauses, minimum,
                ))
            }
        };
        Ok(boosted(query, params.boost()?))
    }

    fn phrase_query(
        &self,
        clause: &str,
        target: Target<'_>,
        params: &Params<'_>,
    ) -> Result<Box<dyn Query>, SearchError> {
        params.check(&["query", "slop", "boost", "_name", "zero_terms_query"])?;
        let text = params.required("query")?;
        let slop = match params.get("slop") {
            None => 0,
            Some(slop) => slop
                .as_u64()
                .and_then(|slop| u32::try_from(slop).ok())
                .ok_or_else(|| {
                    invalid(format!("[{clause}] slop must be a non-negative integer"))
                })?,
        };
        let query: Box<dyn Query> = match self.analyzed_terms(clause, target, text)? {
            Analyzed::Exact(term) => Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
            Analyzed::Tokens(terms) if terms.is_empty() => Box::new(EmptyQuery),
            Analyzed::Tokens(mut terms) if terms.len() == 1 => Box::new(TermQuery::new(
                terms.pop().expect("one term"),
                IndexRecordOption::WithFreqs,
            )),
            Analyzed::Tokens(terms) => {
                let terms = terms.into_iter().enumerate().collect();
                Box::new(PhraseQuery::new_with_offset_and_slop(terms, slop))
            }
        };
        Ok(boosted(query, params.boost()?))
    }

    /// The terms a full-text clause looks for in `target`: the analyzed tokens of a text
    /// (or undeclared) field, or the one exact value of any other field.
    fn analyzed_terms(
        &self,
        clause: &str,
        target: Target<'_>,
        text: &Value,
    ) -> Result<Analyzed, SearchError> {
        let (field, json_path) = match target {
            Target::Declared(_, declared) if declared.field_type == FieldType::Text => {
                (declared.field, None)
            }
            Target::Dynamic(path) => (self.context.schema.dynamic, Some(path)),
            Target::Declared(name, declared) if declared.field_type == FieldType::Json => {
                return Err(invalid(format!(
                    "[{clause}] on {name:?}: json fields are searched through q and query_string"
                )))
            }
            exact => return self.exact_term(clause, exact, text).map(Analyzed::Exact),
        };
        let text = match text {
            Value::String(text) => text.clone(),
            Value::Number(_) | Value::Bool(_) => text.to_string(),
            _ => return Err(invalid(format!("[{clause}] query must be a string"))),
        };
        // Every token becomes a clause: bounded like query text.
        self.context.limits.check_length([text.as_str()])?;
        let mut analyzer = self
            .context
            .index
            .tokenizer_for_field(field)
            .map_err(|error| invalid(format!("[{clause}]: {error}")))?;
        let mut stream = analyzer.token_stream(&text);
        let mut terms = Vec::new();
        while stream.advance() {
            let token = &stream.token().text;
            let term = match json_path {
                None => Term::from_field_text(field, token),
                Some(path) => {
                    let mut term = Term::from_field_json_path(field, path, false);
                    term.append_type_and_str(token);
                    term
                }
            };
            terms.push(term);
        }
        Ok(Analyzed::Tokens(terms))
    }

    /// The exact term of `value` in `target` (no analysis), typed by the field.
    fn exact_term(
        &self,
        clause: &str,
        target: Target<'_>,
        value: &Value,
    ) -> Result<Term, SearchError> {
        let schema = self.context.schema;
        let text_of = |value: &Value| -> Result<String, SearchError> {
            match value {
                Value::String(text) => Ok(text.clone()),
                Value::Number(_) | Value::Bool(_) => Ok(value.to_string()),
                _ => Err(invalid(format!(
                    "[{clause}] value must be a string, number or boolean"
                ))),
            }
        };
        let (name, declared) = match target {
            Target::Id => return Ok(Term::from_field_text(schema.id, &text_of(value)?)),
            Target::Dynamic(path) => {
                let text = value
                    .as_str()
                    .ok_or_else(|| invalid(format!("[{clause}] on undeclared field {path:?} takes a string value; declare the field in the schema to query it by number, date or bool")))?;
                let mut term = Term::from_field_json_path(schema.dynamic, path, false);
                term.append_type_and_str(text);
                return Ok(term);
            }
            Target::Declared(name, declared) => (name, declared),
        };
        let field = declared.field;
        let mistyped = |expected: &str| {
            invalid(format!(
                "[{clause}] on {name:?}: {value} is not {expected}, the field's type"
            ))
        };
        Ok(match declared.field_type {
            FieldType::String | FieldType::Keyword | FieldType::Text => {
                Term::from_field_text(field, &text_of(value)?)
            }
            FieldType::I64 => {
                Term::from_field_i64(field, as_i64(value).ok_or_else(|| mistyped("an i64"))?)
            }
            FieldType::U64 => {
                Term::from_field_u64(field, as_u64(value).ok_or_else(|| mistyped("a u64"))?)
            }
            FieldType::F64 => {
                Term::from_field_f64(field, as_f64(value).ok_or_else(|| mistyped("an f64"))?)
            }
            FieldType::Bool => {
                Term::from_field_bool(field, as_bool(value).ok_or_else(|| mistyped("a bool"))?)
            }
            FieldType::Datetime => {
                let epoch = Epoch::Millis {
                    digit_strings: false,
                };
                let millis =
                    self.date_millis(clause, value, Rounding::Down, UtcOffset::UTC, epoch)?;
                Term::from_field_date(field, DateTime::from_timestamp_millis(millis))
            }
            FieldType::Json => {
                return Err(invalid(format!(
                    "[{clause}] on {name:?}: json fields are searched through q and query_string"
                )))
            }
        })
    }

    fn terms_query(&self, body: &Value) -> Result<Box<dyn Query>, SearchError> {
        let object = body
            .as_object()
            .ok_or_else(|| invalid("[terms] must be an object naming one field"))?;
        let mut boost = 1.0;
        let mut field_values = None;
        for (key, value) in object {
            match key.as_str() {
                "boost" => boost = boost_of("terms", value)?,
                "_name" => {}
                field if field_values.is_none() => field_values = Some((field, value)),
                _ => {
                    return Err(invalid(format!(
                        "[terms] must name exactly one field; got {}",
                        key_list(object)
                    )))
                }
            }
        }
        let (field, values) = field_values.ok_or_else(|| invalid("[terms] names no field"))?;
        let values = values.as_array().ok_or_else(|| {
            invalid("[terms] takes an array of values (terms lookup is not supported)")
        })?;
        if values.len() > MAX_TERMS {
            return Err(SearchError::QueryTooComplex(format!(
                "[terms] has {} values; the limit is {MAX_TERMS}, as Elasticsearch's index.max_terms_count",
                values.len()
            )));
        }
        let target = self.target(field);
        let terms = values
            .iter()
            .map(|value| self.exact_term("terms", target, value))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(constant(Box::new(TermSetQuery::new(terms)), boost))
    }

    fn prefix_query(
        &self,
        target: Target<'_>,
        prefix: &str,
    ) -> Result<Box<dyn Query>, SearchError> {
        let schema = self.context.schema;
        let field = match target {
            Target::Id => schema.id,
            Target::Declared(_, declared)
                if matches!(
                    declared.field_type,
                    FieldType::String | FieldType::Keyword | FieldType::Text
                ) =>
            {
                declared.field
            }
            Target::Declared(name, declared) => {
                return Err(invalid(format!(
                "[prefix] on {name:?}: prefix applies to keyword, string and text fields, not {}",
                declared.field_type.as_str()
            )))
            }
            Target::Dynamic(name) => {
                return Err(invalid(format!(
                    "[prefix] on {name:?}: the collection declares no such field"
                )))
            }
        };
        let pattern = format!("{}.*", regex_syntax::escape(prefix));
        let query = RegexQuery::from_pattern(&pattern, field)
            .map_err(|error| invalid(format!("[prefix] {prefix:?}: {error}")))?;
        Ok(constant(Box::new(query), 1.0))
    }

    fn exists_query(&self, field: &str) -> Result<Box<dyn Query>, SearchError> {
        match self.target(field) {
            Target::Id => Ok(Box::new(AllQuery)),
            Target::Declared(name, declared) => match declared.field_type {
                FieldType::Text => {
                    let query = RegexQuery::from_pattern(".+", declared.field)
                        .map_err(|error| invalid(format!("[exists] {name:?}: {error}")))?;
                    Ok(Box::new(query))
                }
                FieldType::Json => Err(invalid(format!(
                    "[exists] on {name:?}: json fields are not supported by exists"
                ))),
                _ => Ok(Box::new(ExistsQuery::new(name.to_owned(), false))),
            },
            Target::Dynamic(name) => Err(invalid(format!(
                "[exists] on {name:?}: the collection declares no such field"
            ))),
        }
    }

    fn range_query(
        &self,
        target: Target<'_>,
        params: &Params<'_>,
    ) -> Result<Box<dyn Query>, SearchError> {
        params.check(&[
            "gt",
            "gte",
            "lt",
            "lte",
            "boost",
            "_name",
            "format",
            "time_zone",
            "relation",
        ])?;
        let epoch = match params.get("format") {
            None => Epoch::Millis {
                digit_strings: false,
            },
            Some(format) => parse_date_format(format)?,
        };
        if let Some(relation) = params.get("relation") {
            if !relation
                .as_str()
                .is_some_and(|r| r.eq_ignore_ascii_case("intersects"))
            {
                return Err(invalid(format!(
                    "[range] relation {relation} is not supported"
                )));
            }
        }
        let zone = match params.get("time_zone") {
            None => UtcOffset::UTC,
            Some(zone) => parse_zone(zone)?,
        };
        let (name, declared) = match target {
            Target::Declared(name, declared) => (name, declared),
            Target::Id => ("_id", DeclaredField { field: self.context.schema.id, field_type: FieldType::String }),
            Target::Dynamic(name) => {
                return Err(invalid(format!(
                    "[range] on {name:?}: the collection declares no such field; declare it to query ranges"
                )))
            }
        };
        if matches!(declared.field_type, FieldType::Json | FieldType::Bool) {
            return Err(invalid(format!(
                "[range] on {name:?}: ranges apply to numeric, datetime, keyword, string and text fields"
            )));
        }
        let bound = |key: &str, rounding: Rounding| -> Result<Option<Term>, SearchError> {
            let Some(value) = params.get(key) else {
                return Ok(None);
            };
            if value.is_null() {
                return Ok(None);
            }
            if declared.field_type == FieldType::Datetime {
                let millis = self.date_millis("range", value, rounding, zone, epoch)?;
                return Ok(Some(Term::from_field_date(
                    declared.field,
                    DateTime::from_timestamp_millis(millis),
                )));
            }
            let target = Target::Declared(name, declared);
            self.exact_term("range", target, value).map(Some)
        };
        let lower = match (bound("gt", Rounding::Up)?, bound("gte", Rounding::Down)?) {
            (Some(_), Some(_)) => return Err(invalid("[range] takes gt or gte, not both")),
            (Some(term), None) => Bound::Excluded(term),
            (None, Some(term)) => Bound::Included(term),
            (None, None) => Bound::Unbounded,
        };
        let upper = match (bound("lt", Rounding::Down)?, bound("lte", Rounding::Up)?) {
            (Some(_), Some(_)) => return Err(invalid("[range] takes lt or lte, not both")),
            (Some(term), None) => Bound::Excluded(term),
            (None, Some(term)) => Bound::Included(term),
            (None, None) => Bound::Unbounded,
        };
        let query: Box<dyn Query> = match (&lower, &upper) {
            (Bound::Unbounded, Bound::Unbounded) => self.exists_query(name)?,
            _ => Box::new(RangeQuery::new(lower, upper)),
        };
        Ok(constant(query, params.boost()?))
    }

    fn multi_match(&self, body: &Value) -> Result<Box<dyn Query>, SearchError> {
        let clause = "multi_match";
        let params = Params::new(
            clause,
            body,
            &[
                "query",
                "fields",
                "type",
                "operator",
                "minimum_should_match",
                "tie_breaker",
                "slop",
                "boost",
                "_name",
                "zero_terms_query",
                "lenient",
            ],
        )?;
        let kind = params
            .get("type")
            .map_or(Some("best_fields"), Value::as_str);
        let phrase = match kind {
            Some("best_fields" | "most_fields") => false,
            Some("phrase") => true,
            _ => {
                return Err(invalid(format!(
                    "[multi_match] type {} is not supported (best_fields, most_fields, phrase)",
                    params.get("type").unwrap_or(&Value::Null)
                )))
            }
        };
        let fields: Vec<(String, f32)> = match params.get("fields") {
            None => self.all_text_fields(),
            Some(Value::Array(fields)) => {
                let mut resolved = Vec::new();
                for field in fields {
                    let spec = field
                        .as_str()
                        .ok_or_else(|| invalid("[multi_match] fields must be strings"))?;
                    resolved.extend(self.field_pattern(spec)?);
                }
                resolved
            }
            Some(other) => {
                return Err(invalid(format!(
                    "[multi_match] fields must be an array, got {other}"
                )))
            }
        };
        let mut per_field = Map::new();
        for key in [
            "query",
            "operator",
            "minimum_should_match",
            "slop",
            "zero_terms_query",
        ] {
            if let Some(value) = params.get(key) {
                if phrase && matches!(key, "operator" | "minimum_should_match") {
                    continue;
                }
                if !phrase && key == "slop" {
                    continue;
                }
                per_field.insert(key.to_owned(), value.clone());
            }
        }
        let per_field = Value::Object(per_field);
        let per_field = Params::new(clause, &per_field, &[])?;
        let mut queries = Vec::with_capacity(fields.len());
        for (field, boost) in &fields {
            let target = self.target(field);
            let query = if phrase {
                self.phrase_query(clause, target, &per_field)?
            } else {
                self.match_query(clause, target, &per_field)?
            };
            queries.push(boosted(query, *boost));
        }
        let query: Box<dyn Query> = if kind == Some("most_fields") {
            Box::new(BooleanQuery::new(
                queries.into_iter().map(|q| (Occur::Should, q)).collect(),
            ))
        } else {
            let tie_breaker = match params.get("tie_breaker") {
                None => 0.0,
                Some(value) => value
                    .as_f64()
                    .ok_or_else(|| invalid("[multi_match] tie_breaker must be a number"))?
                    as f32,
            };
            Box::new(DisjunctionMaxQuery::with_tie_breaker(queries, tie_breaker))
        };
        Ok(boosted(query, params.boost()?))
    }

    /// Declared text fields, each with boost 1.
    fn all_text_fields(&self) -> Vec<(String, f32)> {
        self.context
            .schema
            .text_fields()
            .iter()
            .map(|(name, _)| (name.clone(), 1.0))
            .collect()
    }

    /// `title`, `title^2`, `*` or a `*` glob over declared text fields.
    fn field_pattern(&self, spec: &str) -> Result<Vec<(String, f32)>, SearchError> {
        let (pattern, boost) = match spec.rsplit_once('^') {
            Some((pattern, boost)) => (
                pattern,
                boost.parse::<f32>().map_err(|_| {
                    invalid(format!(
                        "field {spec:?}: the boost after ^ must be a number"
                    ))
                })?,
            ),
            None => (spec, 1.0),
        };
        if !pattern.contains('*') {
            return Ok(vec![(pattern.to_owned(), boost)]);
        }
        let (prefix, suffix) = pattern.split_once('*').expect("contains *");
        if suffix.contains('*') {
            return Err(invalid(format!(
                "field pattern {spec:?}: only one * is supported"
            )));
        }
        Ok(self
            .all_text_fields()
            .into_iter()
            .filter(|(name, _)| name.starts_with(prefix) && name.ends_with(suffix))
            .map(|(name, _)| (name, boost))
            .collect())
    }

    fn query_string(&self, body: &Value) -> Result<Box<dyn Query>, SearchError> {
        let clause = "query_string";
        let params = Params::new(
            clause,
            body,
            &[
                "query",
                "default_field",
                "fields",
                "default_operator",
                "boost",
                "_name",
                "lenient",
            ],
        )?;
        let text = params
            .required("query")?
            .as_str()
            .ok_or_else(|| invalid("[query_string] query must be a string"))?;
        let and = parse_operator(clause, params.get("default_operator"))?;
        let mut fields = Vec::new();
        if let Some(field) = params.get("default_field") {
            let field = field
                .as_str()
                .ok_or_else(|| invalid("[query_string] default_field must be a string"))?;
            fields.extend(self.field_pattern(field)?);
        }
        if let Some(list) = params.get("fields") {
            let list = list
                .as_array()
                .ok_or_else(|| invalid("[query_string] fields must be an array"))?;
            for field in list {
                let field = field
                    .as_str()
                    .ok_or_else(|| invalid("[query_string] fields must be strings"))?;
                fields.extend(self.field_pattern(field)?);
            }
        }
        let query = self.parse_query_text(clause, text, &fields, and)?;
        Ok(boosted(query, params.boost()?))
    }

    /// `simple_query_string` where its syntax and the query grammar mean the same:
    /// words, `"phrases"`, and `-word` exclusions under `default_operator: AND`. Its
    /// `|`, `+`, `~`, `*` and parentheses operators, and exclusions under OR (`a OR NOT
    /// b` there), are refused, since the grammar reads them differently.
    fn simple_query_string(&self, body: &Value) -> Result<Box<dyn Query>, SearchError> {
        let clause = "simple_query_string";
        let params = Params::new(
            clause,
            body,
            &[
                "query",
                "fields",
                "default_operator",
                "boost",
                "_name",
                "lenient",
                "flags",
                "analyze_wildcard",
            ],
        )?;
        let text = params
            .required("query")?
            .as_str()
            .ok_or_else(|| invalid("[simple_query_string] query must be a string"))?;
        if let Some(operator) = text.chars().find(|c| {
            matches!(
                c,
                '|' | '+' | '~' | '*' | '(' | ')' | ':' | '[' | ']' | '{' | '}' | '^' | '\\'
            )
        }) {
            return Err(invalid(format!(
                "[simple_query_string] the operator {operator:?} is not supported; use query_string"
            )));
        }
        let and = parse_operator(clause, params.get("default_operator"))?;
        // With OR, `a -b` means `a OR NOT b` there, but `a AND NOT b` in the grammar.
        if !and && text.split_whitespace().any(|word| word.starts_with('-')) {
            return Err(invalid(
                "[simple_query_string] a -exclusion with default_operator OR is not supported; use default_operator AND or a bool query",
            ));
        }
        let mut fields = Vec::new();
        if let Some(list) = params.get("fields") {
            let list = list
                .as_array()
                .ok_or_else(|| invalid("[simple_query_string] fields must be an array"))?;
            for field in list {
                let field = field
                    .as_str()
                    .ok_or_else(|| invalid("[simple_query_string] fields must be strings"))?;
                fields.extend(self.field_pattern(field)?);
            }
        }
        let query = self.parse_query_text(clause, text, &fields, and)?;
        Ok(boosted(query, params.boost()?))
    }

    /// Query text in the query grammar (the one `q` uses) over `fields` (every text
    /// field and the dynamic field when empty), under the same limits as `q`.
    fn parse_query_text(
        &self,
        clause: &str,
        text: &str,
        fields: &[(String, f32)],
        and: bool,
    ) -> Result<Box<dyn Query>, SearchError> {
        let limits = self.context.limits;
        limits.check_length([text])?;
        limits.check_depth(clause, text)?;
        let schema = self.context.schema;
        let default_fields: Vec<Field> = if fields.is_empty() {
            schema.default_query_fields()
        } else {
            let mut resolved = Vec::new();
            for (name, _) in fields {
                match self.target(name) {
                    Target::Declared(_, declared) => resolved.push(declared.field),
                    Target::Id => resolved.push(schema.id),
                    Target::Dynamic(name) => {
                        return Err(invalid(format!(
                            "[{clause}] field {name:?}: the collection declares no such field"
                        )))
                    }
                }
            }
            resolved
        };
        let mut parser = QueryParser::for_index(self.context.index, default_fields.clone());
        if and {
            parser.set_conjunction_by_default();
        }
        for ((_, boost), field) in fields.iter().zip(&default_fields) {
            if *boost != 1.0 {
                parser.set_field_boost(*field, *boost);
            }
        }
        let ast = query_limits::parse_checked(text, clause, limits, || {
            invalid(format!("[{clause}] invalid query syntax: {text:?}"))
        })?;
        parser
            .build_query_from_user_input_ast(ast)
            .map_err(|error| invalid(format!("[{clause}] {error}")))
    }

    fn bool_query(&self, body: &Value, depth: usize) -> Result<Box<dyn Query>, SearchError> {
        let params = Params::new(
            "bool",
            body,
            &[
                "must",
                "should",
                "filter",
                "must_not",
                "minimum_should_match",
                "boost",
                "_name",
            ],
        )?;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut should = 0;
        let mut required = 0;
        for (key, occur) in [
            ("must", Occur::Must),
            ("filter", Occur::Must),
            ("should", Occur::Should),
            ("must_not", Occur::MustNot),
        ] {
            let items: Vec<&Value> = match params.get(key) {
                None => Vec::new(),
                Some(Value::Array(items)) => items.iter().collect(),
                Some(item) => vec![item],
            };
            for item in items {
                let mut query = self.clause(item, depth + 1)?;
                if key == "filter" {
                    query = Box::new(ConstScoreQuery::new(query, 0.0));
                }
                match key {
                    "should" => should += 1,
                    "must" | "filter" => required += 1,
                    _ => {}
                }
                clauses.push((occur, query));
            }
        }
        let minimum = match params.get("minimum_should_match") {
            Some(spec) => minimum_should_match("bool", spec, should)?,
            None if required == 0 && should > 0 => 1,
            None => 0,
        };
        if minimum > should {
            return Ok(Box::new(EmptyQuery));
        }
        if required == 0 && should == 0 {
            // Only exclusions (or nothing): they exclude from every document.
            clauses.push((Occur::Must, Box::new(AllQuery)));
        }
        let query = BooleanQuery::with_minimum_required_clauses(clauses, minimum);
        Ok(boosted(Box::new(query), params.boost()?))
    }

    /// Milliseconds since the epoch of a date value or date math expression.
    fn date_millis(
        &self,
        clause: &str,
        value: &Value,
        rounding: Rounding,
        zone: UtcOffset,
        epoch: Epoch,
    ) -> Result<i64, SearchError> {
        let bad = || {
            invalid(format!(
                "[{clause}] {value} is not a date: use RFC 3339, yyyy-MM-dd, epoch milliseconds or date math such as now-1h"
            ))
        };
        let (unit_ms, digit_strings) = match epoch {
            Epoch::Millis { digit_strings } => (1, digit_strings),
            Epoch::Seconds => (1_000, true),
        };
        match value {
            Value::Number(number) => number
                .as_i64()
                .and_then(|n| n.checked_mul(unit_ms))
                .ok_or_else(bad),
            Value::String(text)
                if digit_strings
                    && !text.is_empty()
                    && text.bytes().all(|b| b.is_ascii_digit()) =>
            {
                text.parse::<i64>()
                    .ok()
                    .and_then(|n| n.checked_mul(unit_ms))
                    .ok_or_else(bad)
            }
            Value::String(text) => {
                let (anchor, math) = if let Some(math) = text.strip_prefix("now") {
                    (self.context.now, math)
                } else if let Some((date, math)) = text.split_once("||") {
                    (parse_date(date, zone).ok_or_else(bad)?, math)
                } else {
                    (parse_date(text, zone).ok_or_else(bad)?, "")
                };
                let instant =
                    apply_date_math(anchor.to_offset(zone), math, rounding).ok_or_else(bad)?;
                let nanos = instant.unix_timestamp_nanos();
                i64::try_from(nanos.div_euclid(1_000_000)).map_err(|_| bad())
            }
            _ => Err(bad()),
        }
    }
}

enum Analyzed {
    /// One exact value of a non-text field.
    Exact(Term),
    /// The analyzed tokens of a text.
    Tokens(Vec<Term>),
}

/// How a range reads numbers (and, with an epoch `format`, strings of digits) on a date
/// field.
#[derive(Clone, Copy)]
enum Epoch {
    /// Epoch milliseconds (Elasticsearch's default `epoch_millis`).
    Millis { digit_strings: bool },
    /// Epoch seconds (`format: epoch_second`).
    Seconds,
}

/// The date formats a range may name, `||`-separated as in Elasticsearch: the ones whose
/// strings sluice parses anyway (ISO 8601 dates and times), and the epoch formats.
fn parse_date_format(format: &Value) -> Result<Epoch, SearchError> {
    const ISO: [&str; 8] = [
        "strict_date_optional_time",
        "date_optional_time",
        "strict_date_optional_time_nanos",
        "strict_date_time",
        "date_time",
        "strict_date",
        "date",
        "yyyy-MM-dd",
    ];
    let refused = || {
        invalid(format!(
            "[range] format {format} is not supported: use epoch_millis, epoch_second or an ISO 8601 format (strict_date_optional_time)"
        ))
    };
    let text = format.as_str().ok_or_else(refused)?;
    let mut epoch = Epoch::Millis {
        digit_strings: false,
    };
    for part in text.split("||").map(str::trim) {
        match part {
            "epoch_millis" => {
                epoch = Epoch::Millis {
                    digit_strings: true,
                }
            }
            "epoch_second" => epoch = Epoch::Seconds,
            iso if ISO.contains(&iso) => {}
            _ => return Err(refused()),
        }
    }
    Ok(epoch)
}

/// How date math rounds a `/unit` suffix.
#[derive(Clone, Copy, PartialEq)]
enum Rounding {
    /// To the unit's start (`gte`, `lt`, and exact values in `term`).
    Down,
    /// To the last millisecond of the unit.
    Up,
}

/// A clause's parameter object, with the keys it may hold.
struct Params<'a> {
    clause: &'a str,
    object: &'a Map<String, Value>,
}

impl<'a> Params<'a> {
    /// `body` as the parameters of `clause`; `allowed` (when not empty) are checked.
    fn new(clause: &'a str, body: &'a Value, allowed: &[&str]) -> Result<Self, SearchError> {
        let object = body
            .as_object()
            .ok_or_else(|| invalid(format!("[{clause}] takes an object, got {body}")))?;
        let params = Self { clause, object };
        if !allowed.is_empty() {
            params.check(allowed)?;
        }
        Ok(params)
    }

    fn check(&self, allowed: &[&str]) -> Result<(), SearchError> {
        match self
            .object
            .keys()
            .find(|key| !allowed.contains(&key.as_str()))
        {
            Some(unknown) => Err(invalid(format!(
                "[{}] does not support the parameter [{unknown}]",
                self.clause
            ))),
            None => Ok(()),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.object.get(key)
    }

    fn required(&self, key: &str) -> Result<&'a Value, SearchError> {
        self.get(key)
            .ok_or_else(|| invalid(format!("[{}] requires [{key}]", self.clause)))
    }

    fn boost(&self) -> Result<f32, SearchError> {
        self.get("boost")
            .map_or(Ok(1.0), |value| boost_of(self.clause, value))
    }
}

fn boost_of(clause: &str, value: &Value) -> Result<f32, SearchError> {
    value
        .as_f64()
        .filter(|boost| *boost >= 0.0)
        .map(|boost| boost as f32)
        .ok_or_else(|| invalid(format!("[{clause}] boost must be a non-negative number")))
}

fn boosted(query: Box<dyn Query>, boost: f32) -> Box<dyn Query> {
    if boost == 1.0 {
        query
    } else {
        Box::new(BoostQuery::new(query, boost))
    }
}

/// Elasticsearch scores term-level filters (`terms`, `range`, `exists`, `ids`, `prefix`)
/// as a constant: the boost.
fn constant(query: Box<dyn Query>, boost: f32) -> Box<dyn Query> {
    Box::new(ConstScoreQuery::new(query, boost))
}

fn key_list(object: &Map<String, Value>) -> String {
    if object.is_empty() {
        return "none".to_owned();
    }
    object
        .keys()
        .map(|key| format!("[{key}]"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `true` for AND, `false` for OR (the default).
fn parse_operator(clause: &str, operator: Option<&Value>) -> Result<bool, SearchError> {
    match operator.map(|op| op.as_str().map(str::to_ascii_lowercase)) {
        None => Ok(false),
        Some(Some(op)) if op == "or" => Ok(false),
        Some(Some(op)) if op == "and" => Ok(true),
        Some(_) => Err(invalid(format!(
            "[{clause}] operator must be \"and\" or \"or\""
        ))),
    }
}

/// How many of `optional` clauses must match, from an Elasticsearch
/// `minimum_should_match`: `2`, `-1`, `"75%"`, `"-25%"`; more than `optional` (which
/// no document can satisfy) is kept, as Elasticsearch keeps it.
fn minimum_should_match(clause: &str, spec: &Value, optional: usize) -> Result<usize, SearchError> {
    let bad = || {
        invalid(format!(
            "[{clause}] minimum_should_match {spec} is not supported: use an integer or a percentage such as \"75%\""
        ))
    };
    let optional = optional as i64;
    let count = match spec {
        Value::Number(n) => n.as_i64().ok_or_else(bad)?,
        Value::String(text) => match text.trim().strip_suffix('%') {
            Some(percent) => {
                let percent: i64 = percent.trim().parse().map_err(|_| bad())?;
                // Elasticsearch rounds the computed number down.
                optional * percent / 100
            }
            None => text.trim().parse().map_err(|_| bad())?,
        },
        _ => return Err(bad()),
    };
    let required = if count < 0 { optional + count } else { count };
    // More than there are matches nothing, as in Elasticsearch.
    Ok(required.max(0) as usize)
}

fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

/// A fixed offset: `Z`, `UTC`, `+02:00`, `-0530`.
pub(super) fn parse_zone(zone: &Value) -> Result<UtcOffset, SearchError> {
    let bad = || {
        invalid(format!(
            "time_zone {zone} is not supported: use a fixed offset such as \"+02:00\" or \"Z\""
        ))
    };
    let text = zone.as_str().ok_or_else(bad)?;
    if matches!(text, "Z" | "UTC" | "utc" | "Etc/UTC" | "GMT") {
        return Ok(UtcOffset::UTC);
    }
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let hours: i8 = digits[..2].parse().map_err(|_| bad())?;
    let minutes: i8 = digits[2..].parse().map_err(|_| bad())?;
    UtcOffset::from_hms(sign * hours, sign * minutes, 0).map_err(|_| bad())
}

/// RFC 3339, `yyyy-MM-ddTHH:mm:ss[.fff]` (in `zone`) or `yyyy-MM-dd` (midnight in `zone`).
fn parse_date(text: &str, zone: UtcOffset) -> Option<OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(instant) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(instant);
    }
    let date_format = time::format_description::parse_borrowed::<1>("[year]-[month]-[day]").ok()?;
    if let Ok(date) = Date::parse(text, &date_format) {
        return Some(PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_offset(zone));
    }
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let local = time::format_description::parse_borrowed::<1>(
        "[year]-[month]-[day]T[hour]:[minute]:[second]",
    )
    .ok()?;
    let mut instant = PrimitiveDateTime::parse(whole, &local)
        .ok()?
        .assume_offset(zone);
    if let Some(fraction) = fraction {
        if fraction.is_empty()
            || fraction.len() > 9
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let nanos: u32 = format!("{fraction:0<9}").parse().ok()?;
        instant = instant.replace_nanosecond(nanos).ok()?;
    }
    Some(instant)
}

/// Applies `+1d-2h/d` style math to `anchor`.
fn apply_date_math(
    mut instant: OffsetDateTime,
    mut math: &str,
    rounding: Rounding,
) -> Option<OffsetDateTime> {
    while !math.is_empty() {
        let op = math.as_bytes()[0];
        math = &math[1..];
        match op {
            b'+' | b'-' => {
                let digits = math.bytes().take_while(u8::is_ascii_digit).count();
                let amount: i64 = if digits == 0 {
                    1
                } else {
                    math[..digits].parse().ok()?
                };
                let unit = *math.as_bytes().get(digits)?;
                math = &math[digits + 1..];
                let amount = if op == b'-' { -amount } else { amount };
                instant = add_units(instant, amount, unit)?;
            }
            b'/' => {
                let unit = *math.as_bytes().first()?;
                math = &math[1..];
                let start = round_down(instant, unit)?;
                instant = match rounding {
                    Rounding::Up => add_units(start, 1, unit)? - Duration::milliseconds(1),
                    Rounding::Down => start,
                };
            }
            _ => return None,
        }
    }
    Some(instant)
}

fn add_units(instant: OffsetDateTime, amount: i64, unit: u8) -> Option<OffsetDateTime> {
    let fixed = |seconds: i64| instant.checked_add(Duration::seconds(amount.checked_mul(seconds)?));
    match unit {
        b's' => fixed(1),
        b'm' => fixed(60),
        b'h' | b'H' => fixed(3_600),
        b'd' => fixed(86_400),
        b'w' => fixed(7 * 86_400),
        b'M' => add_months(instant, amount),
        b'y' => add_months(instant, amount.checked_mul(12)?),
        _ => None,
    }
}

/// Calendar months, the day clamped to the target month's length.
fn add_months(instant: OffsetDateTime, months: i64) -> Option<OffsetDateTime> {
    let index = i64::from(instant.year()) * 12 + i64::from(u8::from(instant.month())) - 1 + months;
    let year = i32::try_from(index.div_euclid(12)).ok()?;
    let month = Month::try_from(u8::try_from(index.rem_euclid(12) + 1).ok()?).ok()?;
    let day = instant.day().min(time::util::days_in_month(month, year));
    let date = Date::from_calendar_date(year, month, day).ok()?;
    Some(instant.replace_date(date))
}

fn round_down(instant: OffsetDateTime, unit: u8) -> Option<OffsetDateTime> {
    let midnight = instant.replace_time(Time::MIDNIGHT);
    Some(match unit {
        b's' => instant.replace_nanosecond(0).ok()?,
        b'm' => instant.replace_second(0).ok()?.replace_nanosecond(0).ok()?,
        b'h' | b'H' => instant.replace_time(Time::from_hms(instant.hour(), 0, 0).ok()?),
        b'd' => midnight,
        b'w' => midnight - Duration::days(i64::from(instant.weekday().number_days_from_monday())),
        b'M' => midnight.replace_day(1).ok()?,
        b'y' => {
            midnight.replace_date(Date::from_calendar_date(instant.year(), Month::January, 1).ok()?)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    }

    #[test]
    fn date_math_adds_calendar_units_and_rounds_by_direction() {
        let now = at("2024-03-31T10:30:15Z");
        let math = |expr: &str, rounding| apply_date_math(now, expr, rounding).unwrap();
        assert_eq!(math("-1h", Rounding::Down), at("2024-03-31T09:30:15Z"));
        assert_eq!(math("-1M", Rounding::Down), at("2024-02-29T10:30:15Z"));
        assert_eq!(math("+1y-2d", Rounding::Down), at("2025-03-29T10:30:15Z"));
        assert_eq!(math("/d", Rounding::Down), at("2024-03-31T00:00:00Z"));
        assert_eq!(math("/d", Rounding::Up), at("2024-03-31T23:59:59.999Z"));
        assert_eq!(math("/M", Rounding::Up), at("2024-03-31T23:59:59.999Z"));
        assert_eq!(math("/w", Rounding::Down), at("2024-03-25T00:00:00Z"));
        assert_eq!(math("-1d/y", Rounding::Down), at("2024-01-01T00:00:00Z"));
        assert!(apply_date_math(now, "-1q", Rounding::Down).is_none());
        assert!(apply_date_math(now, "x", Rounding::Down).is_none());
    }

    #[test]
    fn dates_parse_with_or_without_zone() {
        let plus_two = UtcOffset::from_hms(2, 0, 0).unwrap();
        assert_eq!(
            parse_date("2024-06-01", UtcOffset::UTC),
            Some(at("2024-06-01T00:00:00Z"))
        );
        assert_eq!(
            parse_date("2024-06-01", plus_two),
            Some(at("2024-05-31T22:00:00Z"))
        );
        assert_eq!(
            parse_date("2024-06-01T12:00:00", UtcOffset::UTC),
            Some(at("2024-06-01T12:00:00Z"))
        );
        assert_eq!(
            parse_date("2024-06-01T12:00:00+01:00", plus_two),
            Some(at("2024-06-01T11:00:00Z"))
        );
        assert_eq!(
            parse_date("2024-06-01T12:00:00.5", UtcOffset::UTC),
            Some(at("2024-06-01T12:00:00.5Z"))
        );
        assert_eq!(parse_date("June 1st", UtcOffset::UTC), None);
        assert_eq!(parse_zone(&Value::from("+02:00")).unwrap(), plus_two);
        assert!(parse_zone(&Value::from("Europe/Paris")).is_err());
    }

    #[test]
    fn minimum_should_match_takes_counts_and_percentages() {
        let msm = |spec: Value, optional| minimum_should_match("bool", &spec, optional).unwrap();
        assert_eq!(msm(Value::from(2), 3), 2);
        assert_eq!(msm(Value::from(-1), 3), 2);
        assert_eq!(msm(Value::from("75%"), 4), 3);
        assert_eq!(msm(Value::from("-25%"), 4), 3);
        assert_eq!(msm(Value::from(9), 3), 9);
        assert_eq!(msm(Value::from(-9), 3), 0);
        assert!(minimum_should_match("bool", &Value::from("2<75%"), 3).is_err());
    }
}
