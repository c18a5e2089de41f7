//! `Log` adapters for sluice.
//!
//! The embedded durable log ([`EmbeddedLog`]) keeps the DOCS, EVENTS and DLQ streams in
//! one process on fjall, with JetStream's guarantees: durable group-committed appends,
//! msg-id deduplication, durable consumers shared by name with ack/nak/redelivery, and
//! truncation of what every consumer has acked. [`JetStreamLog`] runs the same port on
//! NATS JetStream for the distributed path. [`conformance`] is the adapter-neutral suite
//! every [`sluice_core::log::Log`] implementation must pass.
//!
//! # Layout
//! - `embedded`: the embedded log (storage, group commit, consumers, byte layouts).
//! - `jetstream`: the JetStream adapter (streams, pipelined appends, pull consumers).
//! - [`guarded`]: the `Log` wrapper that puts every call behind the node's log breakers.
//! - [`conformance`]: the `Log` conformance suite, public so every adapter runs it.
//! - `testing` (feature `testing`): a nats-server fixture for tests of any crate.

pub mod conformance;
mod embedded;
pub mod guarded;
mod jetstream;
#[cfg(feature = "testing")]
pub mod testing;

pub use embedded::EmbeddedLog;
pub use guarded::GuardedLog;
pub use jetstream::{JetStreamConfig, JetStreamLog};
