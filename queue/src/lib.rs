//! `Log` adapters for sluice.
//!
//! The embedded durable log ([`EmbeddedLog`]) keeps the DOCS, EVENTS and DLQ streams in
//! one process on fjall, with JetStream's guarantees: durable group-committed appends,
//! msg-id deduplication, durable consumers shared by name with ack/nak/redelivery, and
//! truncation of what every consumer has acked. [`conformance`] is the adapter-neutral
//! suite every [`sluice_core::log::Log`] implementation must pass.
//!
//! # Layout
//! - `embedded`: the embedded log (storage, group commit, consumers, byte layouts).
//! - [`conformance`]: the `Log` conformance suite, public so every adapter runs it.

pub mod conformance;
mod embedded;

pub use embedded::EmbeddedLog;
