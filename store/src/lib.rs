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
//! - `record`: key and value encodings of the embedded store.
//! - [`conformance`]: the adapter-independent `Store` test suite.

pub mod conformance;
pub mod embedded;
mod record;

pub use embedded::EmbeddedStore;
