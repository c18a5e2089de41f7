//! The dead-letter record, defined in [`sluice_core::dlq`] (the HTTP layer reads what the
//! workers write); re-exported here for the workers' own use.

pub use sluice_core::dlq::{
    now_ms, DeadLetter, DeadLetterCode, FailureHistory, DELETE_OP, UNROUTABLE_COLLECTION,
};
