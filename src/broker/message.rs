//! A published message, shared by every queue it was routed to and every delivery of it;
//! RabbitMQ's sender-selected distribution (`CC` / `BCC` headers); and the broker's clock
//! for message deadlines.

use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use warren_protocol::content::Payload;

/// An immutable message. Queues hold it in an `Arc`; its body is the publisher's `Bytes`,
/// so routing to many queues and delivering to many consumers copies nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The exchange it was published to.
    pub exchange: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The basic properties as the publisher encoded them (flags and values), and the body.
    pub payload: Payload,
    /// delivery-mode 2.
    pub persistent: bool,
    /// Read back from the store (a paged-out message of a backlog), not received just now.
    pub from_store: bool,
    /// The priority property (0 without one).
    pub priority: u8,
    /// What few messages carry, boxed so that the rest stay small: see [`Extra`].
    pub extra: Option<Box<Extra>>,
}

/// The rarer parts of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extra {
    /// The expiration property: a per-message TTL in milliseconds.
    pub ttl: Option<u64>,
    /// Routing keys of the `BCC` header, which is removed before the message is stored or
    /// delivered; dead-lettering still routes with them, as RabbitMQ does.
    pub bcc: Box<[String]>,
}

impl Extra {
    /// The extra parts, or None when there are none.
    pub fn new(ttl: Option<u64>, bcc: Vec<String>) -> Option<Box<Extra>> {
        (ttl.is_some() || !bcc.is_empty()).then(|| Box::new(Extra { ttl, bcc: bcc.into_boxed_slice() }))
    }
}

impl Message {
    /// The per-message TTL (the expiration property) in milliseconds.
    pub fn ttl(&self) -> Option<u64> {
        self.extra.as_ref().and_then(|e| e.ttl)
    }

    /// The `BCC` routing keys it was published with.
    pub fn bcc(&self) -> &[String] {
        self.extra.as_ref().map_or(&[], |e| &e.bcc)
    }

    /// The basic properties as the publisher encoded them (flags and values).
    pub fn properties(&self) -> &[u8] {
        self.payload.properties()
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        self.payload.body()
    }
}

/// The extra routing keys a publisher selected with the `CC` and `BCC` headers (arrays of
/// strings; other values are ignored, as RabbitMQ ignores them).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SenderSelected {
    /// `CC`: kept in the message.
    pub cc: Vec<String>,
    /// `BCC`: removed from the message.
    pub bcc: Vec<String>,
    /// The message had a `BCC` header (of any type), which must go.
    pub has_bcc: bool,
}

impl SenderSelected {
    /// Reads `CC` and `BCC` from raw headers (a field table with its length prefix), or
    /// None when neither is there. A byte scan rules most messages out without decoding
    /// the table.
    pub fn from_raw(raw: &[u8], decode: impl FnOnce() -> Option<FieldTable>) -> Option<Self> {
        let mentions = |name: &[u8]| raw.windows(name.len()).any(|w| w == name);
        if !mentions(b"\x02CC") && !mentions(b"\x03BCC") {
            return None;
        }
        let table = decode()?;
        let keys = |name: &str| match table.inner().get(name) {
            Some(AMQPValue::FieldArray(a)) => a
                .as_slice()
                .iter()
                .filter_map(|v| match v {
                    AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
                    AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let out = SenderSelected { cc: keys("CC"), bcc: keys("BCC"), has_bcc: table.contains_key("BCC") };
        (out != SenderSelected::default()).then_some(out)
    }
}

/// The properties with `reply_to` set to `address` (direct reply-to requests).
pub fn with_reply_to(raw: &[u8], address: &str) -> Option<Bytes> {
    let props = warren_protocol::properties::decode(raw)?;
    let address = amq_protocol::types::ShortString::try_new(address).ok()?;
    Some(warren_protocol::properties::encode(&props.with_reply_to(address)).into())
}

/// The properties without the `BCC` header (re-encoded; only messages that carry one pay).
pub fn without_bcc(raw: &[u8]) -> Option<Bytes> {
    let props = warren_protocol::properties::decode(raw)?;
    let mut headers = props.headers().clone().unwrap_or_default().inner().clone();
    headers.remove("BCC");
    Some(warren_protocol::properties::encode(&props.with_headers(FieldTable::from(headers))).into())
}

/// Milliseconds since the Unix epoch: deadlines are absolute, so they survive a restart,
/// and 64-bit, so they never saturate.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_keeps_its_rare_parts_boxed() {
        // A backlog holds millions of these; the TTL and BCC keys of the few messages
        // that have them must not make every message larger.
        assert!(std::mem::size_of::<Message>() <= 136, "Message is {} octets", std::mem::size_of::<Message>());
        assert!(Extra::new(None, Vec::new()).is_none());
        let m = Message {
            exchange: String::new(),
            routing_key: String::new(),
            payload: Payload::copied(&[0, 0], b""),
            persistent: false,
            from_store: false,
            priority: 0,
            extra: Extra::new(Some(5), vec!["k".into()]),
        };
        assert_eq!((m.ttl(), m.bcc()), (Some(5), &["k".to_string()][..]));
    }
}
