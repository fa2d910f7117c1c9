//! Group commit: replies that promise durability (publisher confirms for stored messages,
//! `tx.commit-ok` of a transaction that stored some) wait here until the store has flushed.
//!
//! One task takes every request waiting when it wakes, runs a single flush for all of them,
//! then sends their replies in arrival order, so many publishers share one fsync and a
//! channel's confirms never overtake each other. A failed flush turns acks into nacks.
//! Replies are addressed to the channel instance that earned them: once it has closed they
//! are dropped, even if a new channel has taken its number meanwhile.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::error;
use warren_protocol::AMQPClass;
use warren_storage::Database;

use crate::broker::consumer::ChannelDelivery;

/// A reply held until the flush.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A publisher confirm.
    Confirm {
        /// ack (true) or nack.
        ack: bool,
        /// The publish sequence number.
        tag: u64,
        /// Covers every earlier unconfirmed one.
        multiple: bool,
    },
    /// A method, e.g. tx.commit-ok.
    Method(AMQPClass),
}

/// Replies for one channel, to be sent after the next flush.
#[derive(Debug)]
pub struct FlushRequest {
    /// The channel instance that earned them (its number may be reused after it closes).
    pub channel: Arc<ChannelDelivery>,
    /// What to send, in order.
    pub replies: Vec<Reply>,
    /// Whether anything in the request was written to the store (otherwise it only waits
    /// its turn behind earlier requests of the channel).
    pub needs_flush: bool,
    /// The channel's count of requests in flight, decremented when this one is sent.
    pub in_flight: Arc<AtomicUsize>,
}

/// The handle of the group-commit task.
#[derive(Debug)]
pub struct Flusher {
    tx: mpsc::UnboundedSender<FlushRequest>,
}

impl Flusher {
    /// Starts the task (needs a tokio runtime).
    pub fn start(store: Database) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx));
        Flusher { tx }
    }

    /// Queues a request.
    pub fn submit(&self, request: FlushRequest) {
        request.in_flight.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::error::SendError(request)) = self.tx.send(request) {
            // The task is gone only when the runtime is shutting down; nothing is durable
            // then, so the honest answer is a nack.
            send(request, false);
        }
    }
}

async fn run(store: Database, mut rx: mpsc::UnboundedReceiver<FlushRequest>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let ok = if batch.iter().any(|r| r.needs_flush) {
            match store.flush().await {
                Ok(()) => true,
                Err(e) => {
                    error!(error = %e, requests = batch.len(), "store flush failed; nacking");
                    false
                }
            }
        } else {
            true
        };
        for request in batch.drain(..) {
            send(request, ok);
        }
    }
}

fn send(request: FlushRequest, durable: bool) {
    let channel = &request.channel;
    // Written under the channel's delivery lock: its close (which sets `closed` under the
    // same lock before the close method is written) either comes first, and the replies
    // are dropped, or after, and they precede it.
    let state = channel.lock();
    if !state.closed {
        for reply in &request.replies {
            match reply {
                Reply::Confirm { ack, tag, multiple } => channel.outbound.confirm(channel.id, *ack && durable, *tag, *multiple),
                Reply::Method(m) => channel.outbound.method(channel.id, m),
            }
        }
    }
    drop(state);
    request.in_flight.fetch_sub(1, Ordering::AcqRel);
}
