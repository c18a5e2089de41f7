//! Stable error codes and the one table that maps them to HTTP statuses.
//!
//! Codes are part of the API: clients match on them, so a code is never renamed or
//! reused. Messages may improve over time; codes do not.

use serde::{Deserialize, Serialize};

/// Every error code sluice reports, in requests and in per-line ingest errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    // --- per-line document errors ---
    /// The line is not valid JSON.
    MalformedJson,
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The line is valid JSON but not an object.
    NotAnObject,
    /// A field's value does not match its declared type.
    WrongType,
    /// A required field is missing or null.
    MissingField,
    /// A field not in a strict schema.
    UnknownField,
    /// The primary key value is not a valid id.
    InvalidId,
    /// A number does not fit the field's numeric type.
    NumberOutOfRange,
    /// A line longer than the line size limit.
    LineTooLarge,
    /// A document nested deeper than the depth limit.
    NestingTooDeep,
    /// A JSON object with the same key twice.
    DuplicateKey,
    /// A document that would take its collection past the maximum number of fields.
    TooManyFields,

    // --- request errors ---
    /// The collection name is not valid.
    InvalidCollectionName,
    /// The schema document is not valid.
    InvalidSchema,
    /// The schema change would break documents already stored.
    IncompatibleSchema,
    /// No such collection.
    CollectionNotFound,
    /// No such document.
    DocumentNotFound,
    /// A document with this id exists and the request asked to create it only
    /// (Elasticsearch `_create`, `op_type=create`).
    DocumentExists,
    /// A collection of this name exists and the request asked to create it only
    /// (Elasticsearch `PUT /{index}`; 400, as Elasticsearch answers it).
    CollectionExists,
    /// No stored definition (index template, component template, lifecycle policy) of
    /// this name.
    DefinitionNotFound,
    /// The search query could not be parsed or run as asked.
    InvalidQuery,
    /// The search query or filter is nested deeper, or is longer, than the limits allow.
    QueryTooComplex,
    /// Creating the collection would take the node past its maximum number of collections.
    TooManyCollections,
    /// The collection is being deleted; it can be created again once that has finished.
    CollectionBeingDeleted,
    /// The request target (path and query string) is longer than the server accepts.
    UriTooLong,
    /// A request parameter or body is not valid.
    InvalidRequest,
    /// The request body is larger than the body size limit.
    PayloadTooLarge,
    /// The request body's encoding or content type is not supported.
    UnsupportedMediaType,
    /// The client did not send the request body within the body read timeout.
    RequestTimeout,
    /// No such route.
    NotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// A dead-letter entry that cannot be replayed (no op to replay, or its collection
    /// is gone); purge it instead.
    NotReplayable,

    // --- server-side conditions ---
    /// Too many requests in flight; retry after the indicated delay.
    Overloaded,
    /// A dependency (log, store, index) is unavailable; retry after the indicated delay.
    Unavailable,
    /// The server is still recovering after a start.
    Starting,
    /// Waiting for durability or visibility took longer than allowed.
    Timeout,
    /// An unexpected internal failure; details are in the server log under the trace id.
    Internal,
}

impl ErrorCode {
    /// The HTTP status a request failing with this code answers.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            MalformedJson
            | InvalidUtf8
            | NotAnObject
            | WrongType
            | MissingField
            | UnknownField
            | InvalidId
            | NumberOutOfRange
            | NestingTooDeep
            | DuplicateKey
            | TooManyFields
            | QueryTooComplex
            | InvalidCollectionName
            | InvalidSchema
            | InvalidQuery
            | InvalidRequest
            | CollectionExists => 400,
            LineTooLarge | PayloadTooLarge => 413,
            IncompatibleSchema
            | NotReplayable
            | TooManyCollections
            | CollectionBeingDeleted
            | DocumentExists => 409,
            UriTooLong => 414,
            CollectionNotFound | DocumentNotFound | DefinitionNotFound | NotFound => 404,
            MethodNotAllowed => 405,
            UnsupportedMediaType => 415,
            RequestTimeout => 408,
            Overloaded => 429,
            Unavailable | Starting => 503,
            Timeout => 504,
            Internal => 500,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MalformedJson => "malformed_json",
            InvalidUtf8 => "invalid_utf8",
            NotAnObject => "not_an_object",
            WrongType => "wrong_type",
            MissingField => "missing_field",
            UnknownField => "unknown_field",
            InvalidId => "invalid_id",
            NumberOutOfRange => "number_out_of_range",
            LineTooLarge => "line_too_large",
            NestingTooDeep => "nesting_too_deep",
            DuplicateKey => "duplicate_key",
            TooManyFields => "too_many_fields",
            InvalidCollectionName => "invalid_collection_name",
            InvalidSchema => "invalid_schema",
            IncompatibleSchema => "incompatible_schema",
            CollectionNotFound => "collection_not_found",
            DocumentNotFound => "document_not_found",
            DocumentExists => "document_exists",
            CollectionExists => "collection_exists",
            DefinitionNotFound => "definition_not_found",
            InvalidQuery => "invalid_query",
            QueryTooComplex => "query_too_complex",
            TooManyCollections => "too_many_collections",
            CollectionBeingDeleted => "collection_being_deleted",
            UriTooLong => "uri_too_long",
            InvalidRequest => "invalid_request",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            RequestTimeout => "request_timeout",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            NotReplayable => "not_replayable",
            Overloaded => "overloaded",
            Unavailable => "unavailable",
            Starting => "starting",
            Timeout => "timeout",
            Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for code in [
            ErrorCode::MalformedJson,
            ErrorCode::NumberOutOfRange,
            ErrorCode::IncompatibleSchema,
            ErrorCode::RequestTimeout,
            ErrorCode::QueryTooComplex,
            ErrorCode::TooManyCollections,
            ErrorCode::CollectionBeingDeleted,
            ErrorCode::TooManyFields,
            ErrorCode::UriTooLong,
            ErrorCode::DocumentExists,
            ErrorCode::CollectionExists,
            ErrorCode::DefinitionNotFound,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
