//! A published message, shared by every queue it was routed to and every delivery of it.

use bytes::Bytes;

/// An immutable message. Queues hold it in an `Arc`; its body is the publisher's `Bytes`,
/// so routing to many queues and delivering to many consumers copies nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The exchange it was published to.
    pub exchange: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The basic properties as the publisher encoded them (flags and values).
    pub properties: Bytes,
    /// The body.
    pub body: Bytes,
    /// delivery-mode 2.
    pub persistent: bool,
    /// Read back from the store (a paged-out message of a backlog), not received just now.
    pub from_store: bool,
}
