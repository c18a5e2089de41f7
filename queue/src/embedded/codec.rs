//! Byte layouts of everything the embedded log keeps on disk.
//!
//! Pure functions, no I/O. Every record starts with (or every key is framed by) enough
//! structure to be decoded without outside context, and every decoder refuses short or
//! unknown input with a [`CorruptRecord`] instead of panicking, so a damaged file surfaces
//! as [`LogError::Corrupt`] rather than a crash.
//!
//! Layouts (integers big-endian, so byte order is numeric order):
//! - message, in the stream's keyspace: key `seq:u64`, value
//!   `version:u8 | appended_at_ms:u64 | subject_len:u32 | subject | payload`.
//! - msg-id index: key `stream:u8 | msg_id`, value `seq:u64 | appended_at_ms:u64`.
//! - stream high-water mark: key `last_seq/{STREAM}`, value `seq:u64`.
//! - consumer: keys share `stream:u8 | name_len:u32 | name`, then either `h` (header:
//!   `version:u8 | cursor:u64 | ack_wait_ms:u64 | max_ack_pending:u64 | filter`) or
//!   `p | seq:u64` (a delivered, unacked message: `delivery_count:u32`).

use sluice_core::log::LogError;
use sluice_core::subjects::StreamKind;

/// Version byte of the message and consumer header layouts.
const FORMAT_VERSION: u8 = 1;
/// Tag of a consumer's header record.
const HEADER_TAG: u8 = b'h';
/// Tag of a consumer's pending-delivery record.
const PENDING_TAG: u8 = b'p';

/// A stored record that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CorruptRecord {
    /// The record is shorter than its layout.
    #[error("{0} record is truncated")]
    Truncated(&'static str),
    /// The record was written by an unknown format version.
    #[error("{what} record has unknown format version {version}")]
    UnknownVersion {
        /// Which record.
        what: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// A stored name or subject is not UTF-8.
    #[error("{0} record holds text that is not UTF-8")]
    NotUtf8(&'static str),
    /// A key carries an unknown stream or record tag.
    #[error("{0} record has an unknown tag")]
    UnknownTag(&'static str),
}

impl From<CorruptRecord> for LogError {
    fn from(error: CorruptRecord) -> Self {
        LogError::Corrupt(format!("corrupt record: {error}"))
    }
}

/// One byte naming a stream inside shared keyspaces.
pub(crate) fn stream_tag(stream: StreamKind) -> u8 {
    match stream {
        StreamKind::Docs => 1,
        StreamKind::Events => 2,
        StreamKind::Dlq => 3,
    }
}

fn stream_from_tag(tag: u8, what: &'static str) -> Result<StreamKind, CorruptRecord> {
    StreamKind::ALL
        .into_iter()
        .find(|stream| stream_tag(*stream) == tag)
        .ok_or(CorruptRecord::UnknownTag(what))
}

/// Index of a stream in per-stream arrays.
pub(crate) fn stream_index(stream: StreamKind) -> usize {
    usize::from(stream_tag(stream) - 1)
}

fn read_u64(bytes: &[u8], at: usize, what: &'static str) -> Result<u64, CorruptRecord> {
    bytes
        .get(at..at + 8)
        .and_then(|slice| <[u8; 8]>::try_from(slice).ok())
        .map(u64::from_be_bytes)
        .ok_or(CorruptRecord::Truncated(what))
}

fn read_u32(bytes: &[u8], at: usize, what: &'static str) -> Result<u32, CorruptRecord> {
    bytes
        .get(at..at + 4)
        .and_then(|slice| <[u8; 4]>::try_from(slice).ok())
        .map(u32::from_be_bytes)
        .ok_or(CorruptRecord::Truncated(what))
}

fn check_version(bytes: &[u8], what: &'static str) -> Result<(), CorruptRecord> {
    match bytes.first() {
        None => Err(CorruptRecord::Truncated(what)),
        Some(&FORMAT_VERSION) => Ok(()),
        Some(&version) => Err(CorruptRecord::UnknownVersion { what, version }),
    }
}

/// Key of a message: its sequence, big-endian so keys sort by sequence.
pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The sequence a message key holds.
pub(crate) fn decode_seq_key(key: &[u8]) -> Result<u64, CorruptRecord> {
    if key.len() != 8 {
        return Err(CorruptRecord::Truncated("message key"));
    }
    read_u64(key, 0, "message key")
}

/// A stored message, borrowed from its encoded bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MessageRecord<'a> {
    /// When the committer appended it, in milliseconds since the Unix epoch.
    pub(crate) appended_at_ms: u64,
    /// Its subject.
    pub(crate) subject: &'a str,
    /// Its body.
    pub(crate) payload: &'a [u8],
}

/// Encodes a message value.
pub(crate) fn encode_message(appended_at_ms: u64, subject: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + 4 + subject.len() + payload.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&appended_at_ms.to_be_bytes());
    // Subjects are short; a subject over 4 GiB cannot reach here (payload limits are far lower).
    out.extend_from_slice(
        &u32::try_from(subject.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(subject.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decodes a message value.
pub(crate) fn decode_message(bytes: &[u8]) -> Result<MessageRecord<'_>, CorruptRecord> {
    const WHAT: &str = "message";
    check_version(bytes, WHAT)?;
    let appended_at_ms = read_u64(bytes, 1, WHAT)?;
    let subject_len = read_u32(bytes, 9, WHAT)? as usize;
    let subject_end = 13usize
        .checked_add(subject_len)
        .ok_or(CorruptRecord::Truncated(WHAT))?;
    let subject = bytes
        .get(13..subject_end)
        .ok_or(CorruptRecord::Truncated(WHAT))?;
    let subject = std::str::from_utf8(subject).map_err(|_| CorruptRecord::NotUtf8(WHAT))?;
    let payload = bytes.get(subject_end..).unwrap_or_default();
    Ok(MessageRecord {
        appended_at_ms,
        subject,
        payload,
    })
}

/// Key of a msg-id index entry.
pub(crate) fn msg_id_key(stream: StreamKind, msg_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + msg_id.len());
    key.push(stream_tag(stream));
    key.extend_from_slice(msg_id.as_bytes());
    key
}

/// The stream and msg-id a msg-id index key holds.
pub(crate) fn decode_msg_id_key(key: &[u8]) -> Result<(StreamKind, String), CorruptRecord> {
    const WHAT: &str = "msg-id key";
    let (&tag, id) = key.split_first().ok_or(CorruptRecord::Truncated(WHAT))?;
    let stream = stream_from_tag(tag, WHAT)?;
    let id = std::str::from_utf8(id).map_err(|_| CorruptRecord::NotUtf8(WHAT))?;
    Ok((stream, id.to_owned()))
}

/// Value of a msg-id index entry: the sequence it got and when.
pub(crate) fn encode_msg_id_entry(seq: u64, appended_at_ms: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&seq.to_be_bytes());
    out[8..].copy_from_slice(&appended_at_ms.to_be_bytes());
    out
}

/// Decodes a msg-id index value into `(seq, appended_at_ms)`.
pub(crate) fn decode_msg_id_entry(bytes: &[u8]) -> Result<(u64, u64), CorruptRecord> {
    Ok((
        read_u64(bytes, 0, "msg-id entry")?,
        read_u64(bytes, 8, "msg-id entry")?,
    ))
}

/// Key of a stream's high-water mark (the last sequence ever assigned).
pub(crate) fn last_seq_key(stream: StreamKind) -> Vec<u8> {
    format!("last_seq/{}", stream.name()).into_bytes()
}

/// Decodes a plain big-endian `u64` value.
pub(crate) fn decode_u64(bytes: &[u8], what: &'static str) -> Result<u64, CorruptRecord> {
    read_u64(bytes, 0, what)
}

/// The key prefix every record of one consumer shares.
pub(crate) fn consumer_prefix(stream: StreamKind, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + 4 + name.len() + 9);
    key.push(stream_tag(stream));
    key.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_be_bytes());
    key.extend_from_slice(name.as_bytes());
    key
}

/// Key of a consumer's header record.
pub(crate) fn consumer_header_key(prefix: &[u8]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.push(HEADER_TAG);
    key
}

/// Key of a consumer's pending-delivery record for `seq`.
pub(crate) fn consumer_pending_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 9);
    key.extend_from_slice(prefix);
    key.push(PENDING_TAG);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// What a consumer-state key names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ConsumerKey {
    /// The header of consumer `name` on `stream`.
    Header {
        /// Its stream.
        stream: StreamKind,
        /// Its durable name.
        name: String,
    },
    /// A pending delivery of consumer `name` on `stream`.
    Pending {
        /// Its stream.
        stream: StreamKind,
        /// Its durable name.
        name: String,
        /// The delivered message.
        seq: u64,
    },
}

/// Decodes a consumer-state key.
pub(crate) fn decode_consumer_key(key: &[u8]) -> Result<ConsumerKey, CorruptRecord> {
    const WHAT: &str = "consumer key";
    let (&tag, rest) = key.split_first().ok_or(CorruptRecord::Truncated(WHAT))?;
    let stream = stream_from_tag(tag, WHAT)?;
    let name_len = read_u32(rest, 0, WHAT)? as usize;
    let name_end = 4usize
        .checked_add(name_len)
        .ok_or(CorruptRecord::Truncated(WHAT))?;
    let name = rest
        .get(4..name_end)
        .ok_or(CorruptRecord::Truncated(WHAT))?;
    let name = std::str::from_utf8(name)
        .map_err(|_| CorruptRecord::NotUtf8(WHAT))?
        .to_owned();
    match rest.get(name_end..) {
        Some([HEADER_TAG]) => Ok(ConsumerKey::Header { stream, name }),
        Some([PENDING_TAG, seq @ ..]) if seq.len() == 8 => Ok(ConsumerKey::Pending {
            stream,
            name,
            seq: read_u64(seq, 0, WHAT)?,
        }),
        Some(_) => Err(CorruptRecord::UnknownTag(WHAT)),
        None => Err(CorruptRecord::Truncated(WHAT)),
    }
}

/// A consumer's configuration and position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConsumerHeader {
    /// Every sequence at or below it was delivered, or did not match the filter.
    pub(crate) cursor: u64,
    /// Redelivery delay of unacked messages, in milliseconds.
    pub(crate) ack_wait_ms: u64,
    /// Most delivered-unacked messages.
    pub(crate) max_ack_pending: u64,
    /// The subject filter.
    pub(crate) filter: String,
}

/// Encodes a consumer header.
pub(crate) fn encode_consumer_header(header: &ConsumerHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(25 + header.filter.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&header.cursor.to_be_bytes());
    out.extend_from_slice(&header.ack_wait_ms.to_be_bytes());
    out.extend_from_slice(&header.max_ack_pending.to_be_bytes());
    out.extend_from_slice(header.filter.as_bytes());
    out
}

/// Decodes a consumer header.
pub(crate) fn decode_consumer_header(bytes: &[u8]) -> Result<ConsumerHeader, CorruptRecord> {
    const WHAT: &str = "consumer header";
    check_version(bytes, WHAT)?;
    let filter = bytes.get(25..).ok_or(CorruptRecord::Truncated(WHAT))?;
    Ok(ConsumerHeader {
        cursor: read_u64(bytes, 1, WHAT)?,
        ack_wait_ms: read_u64(bytes, 9, WHAT)?,
        max_ack_pending: read_u64(bytes, 17, WHAT)?,
        filter: std::str::from_utf8(filter)
            .map_err(|_| CorruptRecord::NotUtf8(WHAT))?
            .to_owned(),
    })
}

/// Decodes a pending-delivery value (its delivery count).
pub(crate) fn decode_delivery_count(bytes: &[u8]) -> Result<u32, CorruptRecord> {
    read_u32(bytes, 0, "pending delivery")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_refuse_damage() {
        let encoded = encode_message(42, "sluice.docs.a.0", b"{\"x\":1}");
        let decoded = decode_message(&encoded).expect("valid message");
        assert_eq!(
            decoded,
            MessageRecord {
                appended_at_ms: 42,
                subject: "sluice.docs.a.0",
                payload: b"{\"x\":1}",
            }
        );
        assert!(decode_message(&encoded[..10]).is_err());
        let mut wrong_version = encoded.clone();
        wrong_version[0] = 9;
        assert!(decode_message(&wrong_version).is_err());
    }

    #[test]
    fn sequence_keys_sort_numerically() {
        assert!(seq_key(255) < seq_key(256));
        assert_eq!(decode_seq_key(&seq_key(7)).expect("valid key"), 7);
        assert!(decode_seq_key(b"abc").is_err());
    }

    #[test]
    fn consumer_keys_round_trip_and_stay_apart() {
        let prefix = consumer_prefix(StreamKind::Events, "indexer-a-0");
        assert_eq!(
            decode_consumer_key(&consumer_header_key(&prefix)).expect("header key"),
            ConsumerKey::Header {
                stream: StreamKind::Events,
                name: "indexer-a-0".to_owned()
            }
        );
        assert_eq!(
            decode_consumer_key(&consumer_pending_key(&prefix, 9)).expect("pending key"),
            ConsumerKey::Pending {
                stream: StreamKind::Events,
                name: "indexer-a-0".to_owned(),
                seq: 9
            }
        );
        // A name that is a prefix of another must not share its key space.
        let short = consumer_prefix(StreamKind::Events, "a");
        let long = consumer_prefix(StreamKind::Events, "ab");
        assert!(!long.starts_with(&short));
    }

    #[test]
    fn headers_and_msg_ids_round_trip() {
        let header = ConsumerHeader {
            cursor: 12,
            ack_wait_ms: 30_000,
            max_ack_pending: 256,
            filter: "sluice.docs.>".to_owned(),
        };
        assert_eq!(
            decode_consumer_header(&encode_consumer_header(&header)).expect("header"),
            header
        );
        let key = msg_id_key(StreamKind::Dlq, "id-1");
        assert_eq!(
            decode_msg_id_key(&key).expect("msg-id key"),
            (StreamKind::Dlq, "id-1".to_owned())
        );
        assert_eq!(
            decode_msg_id_entry(&encode_msg_id_entry(5, 6)).expect("entry"),
            (5, 6)
        );
    }
}
