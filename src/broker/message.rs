//! A published message, shared by every queue it was routed to and every delivery of it,
//! and the broker's clock for message deadlines.

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
    /// The priority property (0 without one).
    pub priority: u8,
    /// The expiration property: a per-message TTL in milliseconds.
    pub ttl: Option<u64>,
}

/// Milliseconds since the Unix epoch: deadlines are absolute, so they survive a restart,
/// and 64-bit, so they never saturate.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
