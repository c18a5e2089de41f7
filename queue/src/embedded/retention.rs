//! Background truncation: removes what every consumer of a stream has acked.
//!
//! Acks and consumer deletions only request a run (a `try_send` into a channel of one:
//! when a request is already queued, the queued run will see the newer floors too), so
//! an ack never waits for message deletes, which share the streams journal with the
//! committer's fsyncs. One thread serves the requests, truncating every stream up to
//! the minimum ack floor of its consumers (see [`Shared::truncate`]).
//!
//! Lifecycle: [`EmbeddedLog`](super::EmbeddedLog) sends [`RetentionWork::Stop`] and joins
//! the thread when it is dropped; requests made after that are dropped, which only
//! postpones truncation to the next open.

use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;

use sluice_core::subjects::StreamKind;

use super::storage::Shared;

/// What the retention thread is asked to do.
pub(crate) enum RetentionWork {
    /// Truncate every stream up to its consumers' minimum ack floor.
    Truncate,
    /// Exit.
    Stop,
}

/// Starts the retention thread.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    work: Receiver<RetentionWork>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sluice-log-retention".to_owned())
        .spawn(move || {
            while let Ok(RetentionWork::Truncate) = work.recv() {
                for stream in StreamKind::ALL {
                    if let Err(error) = shared.truncate(stream) {
                        // Nothing is lost: the messages stay until a later run succeeds.
                        tracing::warn!(stream = stream.name(), %error, "log truncation failed");
                    }
                }
            }
        })
}
