//! How a collection name is written where only a narrow alphabet is allowed: NATS subject
//! tokens (`sluice.docs.{token}.{p}`: no `.`, `*`, `>` or whitespace), JetStream consumer
//! names (`indexer-{token}-{p}`: none of those, no `/` or `\`, at most 255 bytes) and
//! directory names on disk (`index/{token}/`).
//!
//! Collection names follow Elasticsearch's index-name rules ([`crate::CollectionName`]),
//! so they may hold `.` (`logstash-2024.06.01`), `+`, `~`, `%` and non-ASCII letters. The
//! token of a name is the name with every character outside `a-z 0-9 _ -` replaced:
//!
//! | in the name | in the token |
//! |---|---|
//! | `a`-`z`, `0`-`9`, `_`, `-` | itself |
//! | `.` | `~` |
//! | any other byte of the UTF-8 name (`+`, `~`, `%`, `é`'s two bytes, ...) | `%` and its two lowercase hex digits |
//!
//! So `logstash-2024.06.01` is `logstash-2024~06~01`, `a+b` is `a%2bb` and `a~b` is
//! `a%7eb`.
//!
//! # Invariants
//! - **Injective.** Each character maps to a code word whose first byte tells its length
//!   (`%` three bytes, anything else one), and no code word is another's prefix, so a
//!   token decodes back to exactly one name: `a.b` (`a~b`), `a_b`, `a-b`, `a~b` (`a%7eb`)
//!   and `a%7eb` (`a%257eb`) stay five distinct tokens. [`decode`] is the inverse.
//! - **Names valid before dotted names were allowed are their own token.** Those were
//!   `[a-z0-9_-]`, at most 64 bytes, so their subjects, consumer names and index
//!   directories are unchanged: existing data directories and JetStream streams need no
//!   migration.
//! - **Safe everywhere.** A token is printable ASCII from `a-z 0-9 _ - ~ %`: no subject
//!   separator or wildcard, no whitespace, no path separator, never `.` or `..`, and the
//!   same bytes on a case-insensitive file system (there are no capitals to fold).
//! - **Bounded.** A name is refused unless its token is at most [`MAX_TOKEN_BYTES`], which
//!   keeps `indexer-{token}-{p}` within JetStream's 255-byte names and `index/{token}`
//!   within a file system's 255-byte directory names.
//!
//! Store keys and the catalog keep the raw name (they are byte strings, and a name never
//! holds the 0x00 that separates a key's name from its id); metric labels and answers show
//! the raw name too. Only the places above use the token.

use std::borrow::Cow;

use crate::ids::CollectionName;

/// Longest token a collection name may have, in bytes: `indexer-` (8 bytes), the token,
/// `-` and a partition of up to 3 digits stay within JetStream's 255-byte consumer names.
pub const MAX_TOKEN_BYTES: usize = 240;

/// What a `.` of the name becomes.
const DOT: u8 = b'~';
/// What starts the escape of any other byte outside the kept set.
const ESCAPE: u8 = b'%';

/// Whether `byte` is written as itself.
fn is_kept(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-'
}

/// The length of `name`'s token, without building it.
pub(crate) fn token_len(name: &str) -> usize {
    name.bytes()
        .map(|b| if is_kept(b) || b == b'.' { 1 } else { 3 })
        .sum()
}

/// The token of `name` (borrowed when the name is its own token). The name need not be
/// a valid collection name: the encoding is defined on every string.
pub(crate) fn encode_str(name: &str) -> Cow<'_, str> {
    if name.bytes().all(is_kept) {
        return Cow::Borrowed(name);
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut token = String::with_capacity(token_len(name));
    for byte in name.bytes() {
        if is_kept(byte) {
            token.push(char::from(byte));
        } else if byte == b'.' {
            token.push(char::from(DOT));
        } else {
            token.push(char::from(ESCAPE));
            token.push(char::from(HEX[usize::from(byte >> 4)]));
            token.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    Cow::Owned(token)
}

/// The token of `name`, for a subject, a consumer name or a directory.
pub fn encode(name: &CollectionName) -> Cow<'_, str> {
    encode_str(name.as_str())
}

/// The name whose token is `token`, if any: `None` for a string no valid collection name
/// encodes to (a malformed escape, an escape of a byte that is written as itself, a
/// decoded name the naming rules refuse).
pub fn decode(token: &str) -> Option<CollectionName> {
    let bytes = token.as_bytes();
    let mut name = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            DOT => {
                name.push(b'.');
                i += 1;
            }
            ESCAPE => {
                let hex = |b: u8| match b {
                    b'0'..=b'9' => Some(b - b'0'),
                    b'a'..=b'f' => Some(b - b'a' + 10),
                    _ => None,
                };
                let high = hex(*bytes.get(i + 1)?)?;
                let low = hex(*bytes.get(i + 2)?)?;
                let byte = (high << 4) | low;
                if is_kept(byte) || byte == b'.' {
                    // Never produced by `encode`: such a byte is written as itself.
                    return None;
                }
                name.push(byte);
                i += 3;
            }
            byte if is_kept(byte) => {
                name.push(byte);
                i += 1;
            }
            _ => return None,
        }
    }
    let name = String::from_utf8(name).ok()?;
    CollectionName::new(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn token(name: &str) -> String {
        encode(&CollectionName::new(name).unwrap()).into_owned()
    }

    #[test]
    fn shipper_defaults_stay_readable() {
        assert_eq!(token("logstash-2024.06.01"), "logstash-2024~06~01");
        assert_eq!(token("filebeat-8.15.0"), "filebeat-8~15~0");
        assert_eq!(token("vector-2024.06.01"), "vector-2024~06~01");
        assert_eq!(token("a+b"), "a%2bb");
        assert_eq!(token("a~b"), "a%7eb");
        assert_eq!(token("a%b"), "a%25b");
        assert_eq!(token("données"), "donn%c3%a9es");
    }

    #[test]
    fn names_valid_before_are_their_own_token() {
        for name in ["books", "docs_2026-a", "0", &"a".repeat(64), "probe-0042"] {
            let name = CollectionName::new(name).unwrap();
            assert!(matches!(encode(&name), Cow::Borrowed(t) if t == name.as_str()));
        }
    }

    #[test]
    fn look_alike_names_get_distinct_tokens() {
        let names = [
            "a.b", "a_b", "a-b", "a~b", "a%7eb", "a%257eb", "a..b", "a.~b",
        ];
        let tokens: std::collections::HashSet<String> = names.iter().map(|n| token(n)).collect();
        assert_eq!(tokens.len(), names.len(), "{tokens:?}");
        for name in names {
            assert_eq!(decode(&token(name)).unwrap().as_str(), name);
        }
    }

    #[test]
    fn strings_no_name_encodes_to_do_not_decode() {
        for bad in [
            "a%2",     // truncated escape
            "a%zz",    // not hex
            "a%2E",    // capital hex
            "a%61",    // an escaped byte that is written as itself
            "a%2e",    // an escaped '.', which is written '~'
            "a.b",     // '.' never appears in a token
            "A",       // capitals never do either
            "a b",     // nor spaces
            "%ff",     // not UTF-8 once decoded
            "_a",      // decodes to a name the rules refuse
            "~hidden", // a name starting with '.'
            "",
        ] {
            assert_eq!(decode(bad), None, "{bad:?} decoded");
        }
    }

    #[test]
    fn tokens_use_only_the_safe_alphabet_and_fit_the_bound() {
        let longest_plain = "a.".repeat(120);
        let longest_plain = &longest_plain[..longest_plain.len() - 1];
        assert!(token(longest_plain).len() <= MAX_TOKEN_BYTES);
        let token = token("é+~.x");
        assert!(token.bytes().all(|b| is_kept(b) || b == DOT || b == ESCAPE));
    }

    /// Characters Elasticsearch allows in index names, and a few it does not.
    fn name_char() -> impl Strategy<Value = char> {
        prop_oneof![
            4 => prop::char::range('a', 'z'),
            2 => prop::sample::select(vec!['0', '7', '_', '-', '.', '+', '~', '%', '!', '=', '@']),
            1 => prop::sample::select(vec!['é', 'ß', 'ж', '中', '𝄞', 'A', ' ', '/', '*', '>', '#']),
        ]
    }

    proptest! {
        #[test]
        fn the_encoding_is_injective_and_decode_inverts_it(
            a in prop::collection::vec(name_char(), 1..12),
            b in prop::collection::vec(name_char(), 1..12),
        ) {
            let a: String = a.into_iter().collect();
            let b: String = b.into_iter().collect();
            prop_assert_eq!(encode_str(&a) == encode_str(&b), a == b);
            if let Ok(name) = CollectionName::new(a.clone()) {
                let token = encode(&name);
                prop_assert!(token.bytes().all(|b| is_kept(b) || b == DOT || b == ESCAPE));
                prop_assert_eq!(token.len(), token_len(&a));
                prop_assert_eq!(decode(&token), Some(name.clone()));
            }
        }
    }
}
