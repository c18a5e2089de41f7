//! `Store` adapters for sluice: where documents and the collection catalog live.
//!
//! The embedded store keeps everything in one fjall database under the data directory,
//! compares op sequences itself to enforce last-writer-wins, keeps tombstones so that
//! late, older writes cannot resurrect deleted documents, and syncs every batch before
//! acknowledging it. The conformance suite states the `Store` contract as executable
//! cases, written once and run against every adapter.
//!
//! # Layout
//! - [`embedded`]: [`EmbeddedStore`], the fjall adapter (locking and durability).
//! - [`guarded`]: [`GuardedStore`], any store behind the node's store breaker and timeout.
//! - [`faulty`]: [`FaultInjectingStore`], any store failing as a test planned.
//! - `record`: key and value encodings of the embedded store.
//! - [`conformance`]: the adapter-independent `Store` test suite.

pub mod conformance;
pub mod embedded;
pub mod faulty;
pub mod guarded;
mod record;

pub use embedded::EmbeddedStore;
pub use faulty::FaultInjectingStore;
pub use guarded::GuardedStore;
