//! Limits on the query text of a search, and a parse that no input can turn into a stack
//! overflow.
//!
//! Tantivy's query grammar is recursive descent: every `(` (a `field:(` group too) and
//! every `NOT` is a level of recursion in the parser, and a level of the syntax tree that
//! every later step walks recursively (building the query, scoring, dropping it). A stack
//! overflow is not a panic that a thread can survive: it aborts the whole process. Three
//! guards stand in the way, each covering what the one before it could miss:
//!
//! 1. [`QueryLimits::check_length`] and [`QueryLimits::check_depth`], before anything
//!    parses, on the request's thread: the total length of the query text (`q` and every
//!    filter), then one linear scan of each string for its nesting depth
//!    ([`nesting_depth`]). Refusals are [`SearchError::QueryTooComplex`] naming the limit.
//! 2. [`on_parse_stack`]: parsing (grammar, syntax tree, query building) runs on a thread
//!    whose stack holds the deepest nesting any string within the length limit could
//!    reach, one level per byte, so a miscount by the scan cannot overflow it.
//! 3. [`parse_checked`] measures the parsed tree on that thread and refuses one deeper
//!    than [`QueryLimits::max_tree_depth`]; the refused tree is dropped there too. So the
//!    search threads (tokio's blocking pool, 2 MiB stacks) only ever see trees a few
//!    hundred levels deep at most.
//!
//! The scan counts a level for each open parenthesis plus the prefix operators (`NOT`,
//! `+`, `-`) waiting before it, and for each prefix operator waiting for its operand; a
//! term ends the wait. A quoted phrase is a term whatever it holds, as is a regex
//! (`/.../`). The scan is conservative: where the grammar may read a quote as part of a
//! range bound (inside `[...]` or `{...}`, after `>` or `<=`), or in the middle of a
//! word, it is no phrase and what follows still counts. The tree the grammar builds
//! from a string the scan let through is at most three levels per counted level deep
//! (a group's clause, an `AND` run inside an `OR`, a boost), plus three for the top
//! level: that is [`QueryLimits::max_tree_depth`], and a property test holds it.
//!
//! Stack use: the abort this guards against was seen at about 3,000 nested `(` on the
//! serving path (tokio's blocking threads, 2 MiB stacks), so at most about 700 bytes of
//! stack per level there. The defaults (depth 32, trees of at most 99 levels; at most
//! [`sluice_core::config::MAX_QUERY_DEPTH`] = 128, trees of 387) stay an order of
//! magnitude below that. The parse thread gets [`PARSE_STACK_PER_BYTE`] for every byte
//! the length limit allows, over four times that figure, since one byte can open one
//! level. (The `probe` test below measures where the grammar overflows on a 2 MiB
//! stack, per input shape.)

use sluice_core::config::IndexerConfig;
use tantivy::query_grammar::UserInputAst;

use crate::error::SearchError;

/// Stack the parse thread gets per byte of the longest allowed query (one byte can open
/// one level of recursion): over four times the ~700 bytes a level was seen to take.
pub(crate) const PARSE_STACK_PER_BYTE: usize = 3 * 1024;
/// Stack the parse thread gets whatever the length (query building, the tree check).
const PARSE_STACK_BASE: usize = 2 * 1024 * 1024;

/// The configured limits on a search's query text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryLimits {
    /// Longest query text, `q` and filters together, in bytes.
    pub max_length: usize,
    /// Deepest nesting of one string, as [`nesting_depth`] counts it.
    pub max_depth: usize,
}

impl QueryLimits {
    /// The limits of `config` (`max_query_length`, `max_query_depth`).
    pub fn from_config(config: &IndexerConfig) -> Self {
        Self {
            max_length: config.max_query_length,
            max_depth: config.max_query_depth,
        }
    }

    /// Refuses query text longer than `max_length` in total. Constant work per string,
    /// so it runs before anything else looks at the text.
    pub fn check_length<'a>(
        &self,
        texts: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), SearchError> {
        let total = texts
            .into_iter()
            .fold(0usize, |sum, text| sum.saturating_add(text.len()));
        if total > self.max_length {
            return Err(SearchError::QueryTooComplex(format!(
                "the query text is {total} bytes long (q and filters together); the limit is {} bytes (indexer.max_query_length)",
                self.max_length
            )));
        }
        Ok(())
    }

    /// Refuses `text` (named `what` in the message: `q`, `filter 2`) when it nests deeper
    /// than `max_depth`. Linear in the length, without recursion.
    pub fn check_depth(&self, what: &str, text: &str) -> Result<(), SearchError> {
        if nesting_depth(text, self.max_depth) > self.max_depth {
            return Err(self.too_deep(what));
        }
        Ok(())
    }

    /// Deepest syntax tree the grammar builds from a string within `max_depth` (see the
    /// module docs); a deeper one means the scan undercounted, and is refused too.
    pub fn max_tree_depth(&self) -> usize {
        3 * (self.max_depth + 1)
    }

    /// Stack of the parse thread: enough for a string of `max_length` bytes nested one
    /// level per byte.
    pub fn parse_stack_size(&self) -> usize {
        PARSE_STACK_BASE.saturating_add(self.max_length.saturating_mul(PARSE_STACK_PER_BYTE))
    }

    fn too_deep(&self, what: &str) -> SearchError {
        SearchError::QueryTooComplex(format!(
            "{what} is nested deeper than {} levels (indexer.max_query_depth): each parenthesis, field group and NOT, + or - before its operand is a level",
            self.max_depth
        ))
    }
}

/// Runs `parse` on a thread of its own whose stack is [`QueryLimits::parse_stack_size`],
/// and waits for it. Blocking: call it from a blocking thread. A panic while parsing is
/// an internal error (the process survives it); a thread that cannot be started makes
/// the search unavailable for now.
pub(crate) fn on_parse_stack<T: Send>(
    limits: &QueryLimits,
    parse: impl FnOnce() -> Result<T, SearchError> + Send,
) -> Result<T, SearchError> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("sluice-query-parse".into())
            .stack_size(limits.parse_stack_size())
            .spawn_scoped(scope, parse)
            .map_err(|e| SearchError::Unavailable(format!("no query parse thread: {e}")))?;
        thread
            .join()
            .map_err(|_| SearchError::Internal("parsing the query panicked".into()))?
    })
}

/// Parses `text` with Tantivy's grammar and refuses a tree deeper than
/// [`QueryLimits::max_tree_depth`] (named `what` in the message). Recurses once per
/// nesting level of the input: run it in [`on_parse_stack`]. `syntax_error` is the
/// error for text the grammar does not accept.
pub(crate) fn parse_checked(
    text: &str,
    what: &str,
    limits: &QueryLimits,
    syntax_error: impl FnOnce() -> SearchError,
) -> Result<UserInputAst, SearchError> {
    let ast = tantivy::query_grammar::parse_query(text).map_err(|_| syntax_error())?;
    if tree_depth(&ast) > limits.max_tree_depth() {
        return Err(limits.too_deep(what));
    }
    Ok(ast)
}

/// Levels of clauses and boosts above the deepest leaf (a lone leaf is 0). Iterative, so
/// it measures any tree on any stack.
pub(crate) fn tree_depth(ast: &UserInputAst) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(ast, 0usize)];
    while let Some((node, depth)) = pending.pop() {
        deepest = deepest.max(depth);
        match node {
            UserInputAst::Clause(children) => {
                pending.extend(children.iter().map(|(_, child)| (child, depth + 1)))
            }
            UserInputAst::Boost(inner, _) => pending.push((inner, depth + 1)),
            UserInputAst::Leaf(_) => {}
        }
    }
    deepest
}

/// The nesting depth of one query string as the module docs define it; the scan stops
/// as soon as the depth passes `limit` (and returns that depth), so its work and memory
/// are bounded by the length and the limit.
pub fn nesting_depth(text: &str, limit: usize) -> usize {
    let bytes = text.as_bytes();
    // The level of each enclosing open group, innermost last.
    let mut enclosing: Vec<usize> = Vec::new();
    let mut level = 0;
    let mut prefixes = 0;
    let mut in_brackets = false;
    let mut after_comparison = false;
    let mut deepest = 0;
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        if byte.is_ascii_whitespace() {
            at += 1;
            continue;
        }
        let mut comparison = false;
        match byte {
            b'(' => {
                enclosing.push(level);
                level += prefixes + 1;
                prefixes = 0;
                at += 1;
            }
            b')' => {
                level = enclosing.pop().unwrap_or(0);
                prefixes = 0;
                at += 1;
            }
            b'[' | b'{' => {
                in_brackets = true;
                at += 1;
            }
            b']' | b'}' => {
                in_brackets = false;
                prefixes = 0;
                at += 1;
            }
            b'+' | b'-' => {
                prefixes += 1;
                at += 1;
            }
            b'"' | b'\'' if !in_brackets && !after_comparison => {
                match closing_quote(bytes, at) {
                    Some(end) => {
                        prefixes = 0;
                        at = end + 1;
                    }
                    // Never closed: no phrase, and what follows counts.
                    None => at += 1,
                }
            }
            _ => {
                if let Some(end) = regex_end(bytes, at).filter(|_| !in_brackets) {
                    prefixes = 0;
                    at = end + 1;
                } else {
                    let end = word_end(bytes, at);
                    let word = &bytes[at..end];
                    at = end;
                    let next = skip_whitespace(bytes, at);
                    if bytes.get(next) == Some(&b':') {
                        // A field name: its value follows, the prefixes still wait.
                        at = next + 1;
                    } else if word == b"NOT" {
                        prefixes += 1;
                    } else if !matches!(word, b"AND" | b"OR" | b"IN" | b":") {
                        comparison = matches!(word.last(), Some(b'<' | b'>' | b'='));
                        prefixes = 0;
                    }
                }
            }
        }
        after_comparison = comparison;
        deepest = deepest.max(level + prefixes);
        if deepest > limit {
            break;
        }
    }
    deepest
}

/// The closing quote of the phrase opened at `open` (a backslash escapes any byte).
fn closing_quote(bytes: &[u8], open: usize) -> Option<usize> {
    let quote = bytes[open];
    let mut at = open + 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b if b == quote => return Some(at),
            _ => at += 1,
        }
    }
    None
}

/// The closing slash of a regex opened at `open`, when the grammar reads one there: a
/// non-empty pattern (`\/` escapes a slash) closed by a slash that whitespace, `)`, `^`
/// or the end follows.
fn regex_end(bytes: &[u8], open: usize) -> Option<usize> {
    if bytes[open] != b'/' {
        return None;
    }
    let mut at = open + 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' if bytes.get(at + 1) == Some(&b'/') => at += 2,
            b'/' => {
                let closes = at > open + 1
                    && bytes
                        .get(at + 1)
                        .is_none_or(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b')' | b'^'));
                return closes.then_some(at);
            }
            _ => at += 1,
        }
    }
    None
}

/// The end of the word starting at `start` (at least one byte): up to whitespace or a
/// group, range or field delimiter; a backslash escapes the next byte.
fn word_end(bytes: &[u8], start: usize) -> usize {
    let mut at = start;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'(' | b')' | b'[' | b']' | b'{' | b'}' | b':' if at > start => break,
            b if b.is_ascii_whitespace() => break,
            _ => at += 1,
        }
    }
    at.min(bytes.len()).max(start + 1)
}

fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(text: &str) -> usize {
        nesting_depth(text, usize::MAX)
    }

    #[test]
    fn the_scan_counts_groups_and_waiting_prefix_operators() {
        let cases = [
            ("", 0),
            ("red", 0),
            ("title:red body:fox", 0),
            ("(red)", 1),
            ("((red))", 2),
            ("(a) (b) (c)", 1),
            ("title:(red OR blue)", 1),
            ("NOT red", 1),
            ("NOT NOT NOT red", 3),
            ("a -b -c -d -e +f", 1),
            ("NOT (NOT red)", 3),
            ("NOT a:(NOT b:(c))", 4),
            ("-(-(x))", 4),
            ("price:[1 TO 5] tags:IN [a b]", 0),
            ("price:>=-3", 0),
            ("(a))))) (b)", 1),
            ("(((", 3),
        ];
        for (text, expected) in cases {
            assert_eq!(depth(text), expected, "{text:?}");
        }
    }

    #[test]
    fn phrases_and_regexes_do_not_nest_but_unclosed_quotes_and_range_bounds_do() {
        let cases = [
            ("\"((((\"", 0),
            ("title:\"((( NOT\" red", 0),
            ("'(((('", 0),
            ("\"a \\\" ((\" x", 0),
            ("/(((a)))/", 0),
            ("title:/a\"/ ((b))", 2),
            // Unclosed: no phrase.
            ("\"((", 2),
            // Inside a range, or after a comparison, a quote is part of a bound.
            ("price:[' TO b] ((x)) '", 2),
            ("price:> ' ((x)) '", 2),
            ("price:>' ((x)) '", 2),
            // In the middle of a word a quote is no phrase either.
            ("a\"b ((x)) \"", 2),
            // A slash that does not close a regex where the grammar wants it.
            ("/ ((x)) /y", 2),
            // Escaped brackets are word bytes.
            ("a\\(\\(\\(", 0),
        ];
        for (text, expected) in cases {
            assert_eq!(depth(text), expected, "{text:?}");
        }
    }

    #[test]
    fn the_scan_stops_past_the_limit() {
        let text = "(".repeat(1_000_000);
        assert_eq!(nesting_depth(&text, 32), 33);
        let limits = QueryLimits {
            max_length: 1 << 20,
            max_depth: 32,
        };
        assert!(limits.check_depth("q", &"(".repeat(32)).is_ok());
        match limits.check_depth("filter 2", &"(".repeat(33)) {
            Err(SearchError::QueryTooComplex(message)) => {
                assert!(message.contains("filter 2"), "{message}");
                assert!(message.contains("32 levels"), "{message}");
                assert!(message.contains("indexer.max_query_depth"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        match limits.check_length([
            "a".repeat(1 << 19).as_str(),
            "b".repeat(1 << 19).as_str(),
            "c",
        ]) {
            Err(SearchError::QueryTooComplex(message)) => {
                assert!(message.contains("1048577 bytes"), "{message}");
                assert!(message.contains("indexer.max_query_length"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(limits.check_length(["a".repeat(1 << 20).as_str()]).is_ok());
    }

    #[test]
    fn tree_depth_counts_clauses_and_boosts() {
        let depth = |q: &str| tree_depth(&tantivy::query_grammar::parse_query(q).unwrap());
        assert_eq!(depth("a"), 0);
        assert_eq!(depth("a b"), 1);
        assert_eq!(depth("(a (b (c d)))"), 3);
        assert_eq!(depth("NOT NOT a"), 2);
        assert_eq!(depth("(a)^2"), 1);
    }

    /// The worst input within the length limit, parsed without the scan: the grammar
    /// recurses once per byte on the sized stack, the tree check refuses it, and the
    /// process lives.
    #[test]
    fn the_parse_stack_holds_the_deepest_input_of_the_longest_allowed_length() {
        let limits = QueryLimits {
            max_length: 16 * 1024,
            max_depth: 32,
        };
        let half = limits.max_length / 2;
        let worst = [
            format!("{}a{}", "(".repeat(half - 1), ")".repeat(half - 1)),
            format!("{}a", "(".repeat(limits.max_length - 1)),
            format!("{}a", "NOT ".repeat(limits.max_length / 4 - 1)),
            format!(
                "{}b{}",
                "a:(".repeat(limits.max_length / 4),
                ")".repeat(limits.max_length / 4 - 1)
            ),
            format!("{})", "(a ".repeat(limits.max_length / 3 - 1)),
        ];
        for text in worst {
            assert!(text.len() <= limits.max_length);
            let parsed = on_parse_stack(&limits, || {
                parse_checked(&text, "q", &limits, || {
                    SearchError::InvalidQuery("syntax".into())
                })
                .map(|_| ())
            });
            // Parsed (nested groups around one term make no tree), refused by the tree
            // check, or a syntax error: never an abort, never a panic.
            assert!(
                matches!(
                    parsed,
                    Ok(()) | Err(SearchError::QueryTooComplex(_) | SearchError::InvalidQuery(_))
                ),
                "{}...: {parsed:?}",
                &text[..12]
            );
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    use super::*;

    /// Query text made of the grammar's nesting and quoting pieces.
    fn nesting_soup() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec![
            "(", ")", "(", ")", "NOT ", "+", "-", "\"", "'", "[", "]", "{", "}", " TO ", "/", "a",
            "b:", "title:", " ", " ", "AND ", "OR ", "IN [", ">", ">=", "^2", "*", "\\", "~1", "3",
        ]);
        prop::collection::vec(token, 0..80).prop_map(|t| t.concat())
    }

    /// The scan never undercounts so much that the tree check would fire: whatever it
    /// lets through parses to a tree within [`QueryLimits::max_tree_depth`].
    #[test]
    fn what_the_scan_lets_through_parses_to_a_tree_within_the_bound() {
        let mut runner = TestRunner::new(Config::with_cases(2048));
        runner
            .run(&(nesting_soup(), 0usize..6), |(text, max_depth)| {
                let limits = QueryLimits {
                    max_length: usize::MAX,
                    max_depth,
                };
                if limits.check_depth("q", &text).is_ok() {
                    if let Ok(ast) = tantivy::query_grammar::parse_query(&text) {
                        let depth = tree_depth(&ast);
                        prop_assert!(
                            depth <= limits.max_tree_depth(),
                            "{text:?}: scan <= {max_depth}, tree {depth}"
                        );
                    }
                }
                Ok(())
            })
            .unwrap();
    }
}

#[cfg(test)]
mod probe {
    /// Measures where the grammar overflows a 2 MiB stack: run with `PROBE_PATTERN`
    /// (`paren`, `open`, `not`, `group`, `clause`) and `PROBE_N` levels, `--ignored`;
    /// the process aborts past the limit.
    #[test]
    #[ignore]
    fn probe_parse_overflow() {
        let n: usize = std::env::var("PROBE_N").map_or(100, |n| n.parse().unwrap());
        let pattern = std::env::var("PROBE_PATTERN").unwrap_or_else(|_| "paren".into());
        let text = match pattern.as_str() {
            "paren" => format!("{}a{}", "(".repeat(n), ")".repeat(n)),
            "open" => format!("{}a", "(".repeat(n)),
            "not" => format!("{}a", "NOT ".repeat(n)),
            "group" => format!("{}b{}", "a:(".repeat(n), ")".repeat(n)),
            "clause" => format!("{}b{}", "(a ".repeat(n), ")".repeat(n)),
            other => panic!("unknown pattern {other}"),
        };
        let parsed = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || tantivy::query_grammar::parse_query(&text).is_ok())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(parsed, pattern != "open", "{pattern} x {n}");
    }
}
