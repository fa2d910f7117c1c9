//! Record layouts. Names are u8-length-prefixed, blobs u32-length-prefixed, all big-endian;
//! message keys are `[len][queue name][offset u64]`, so a queue's messages are one prefix
//! scan in offset order.
//!
//! A message record ends with an optional trailer, `[expires u64][priority u8]`, that
//! recovery reads without copying the content; records written before the trailer existed
//! (format `warren-store-2` from before TTLs and priorities) decode as never expiring, at
//! priority 0.

use bytes::Bytes;

use crate::StoreError;

/// A durable exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRecord {
    /// Name.
    pub name: String,
    /// Type name.
    pub kind: String,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Internal flag.
    pub internal: bool,
    /// Arguments, AMQP-encoded field table.
    pub arguments: Vec<u8>,
}

/// A durable queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRecord {
    /// Name.
    pub name: String,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Arguments, AMQP-encoded field table.
    pub arguments: Vec<u8>,
}

/// A binding between durable ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRecord {
    /// Source exchange.
    pub source: String,
    /// Destination queue or exchange.
    pub destination: String,
    /// The destination is an exchange.
    pub destination_is_exchange: bool,
    /// Routing key.
    pub routing_key: String,
    /// Arguments, AMQP-encoded field table.
    pub arguments: Vec<u8>,
}

/// A persistent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Exchange it was published to.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Raw basic properties.
    pub properties: Bytes,
    /// Body.
    pub body: Bytes,
    /// Its deadline in the queue, in Unix milliseconds (`u64::MAX`: never expires).
    pub expires: u64,
    /// Its priority band in the queue.
    pub priority: u8,
}

/// What recovery needs of a message without its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageMeta {
    pub body_len: u32,
    pub expires: u64,
    pub priority: u8,
}

struct Writer(Vec<u8>);

impl Writer {
    fn name(&mut self, s: &str) {
        let b = s.as_bytes();
        let len = b.len().min(255);
        self.0.push(len as u8);
        self.0.extend_from_slice(&b[..len]);
    }
    fn blob(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.0.extend_from_slice(b);
    }
    fn flag(&mut self, f: bool) {
        self.0.push(f as u8);
    }
}

struct Reader<'a>(&'a [u8]);

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("truncated or invalid {what} record"))
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(corrupt(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn name(&mut self, what: &str) -> Result<String, StoreError> {
        let len = self.take(1, what)?[0] as usize;
        let b = self.take(len, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| corrupt(what))
    }
    fn blob(&mut self, what: &str) -> Result<&'a [u8], StoreError> {
        let l = self.take(4, what)?;
        let len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
        self.take(len, what)
    }
    fn flag(&mut self, what: &str) -> Result<bool, StoreError> {
        Ok(self.take(1, what)?[0] != 0)
    }
}

pub(crate) fn encode_exchange(x: &ExchangeRecord) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.name(&x.name);
    w.name(&x.kind);
    w.flag(x.auto_delete);
    w.flag(x.internal);
    w.blob(&x.arguments);
    w.0
}

pub(crate) fn decode_exchange(b: &[u8]) -> Result<ExchangeRecord, StoreError> {
    let mut r = Reader(b);
    Ok(ExchangeRecord {
        name: r.name("exchange")?,
        kind: r.name("exchange")?,
        auto_delete: r.flag("exchange")?,
        internal: r.flag("exchange")?,
        arguments: r.blob("exchange")?.to_vec(),
    })
}

pub(crate) fn encode_queue(q: &QueueRecord) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.name(&q.name);
    w.flag(q.auto_delete);
    w.blob(&q.arguments);
    w.0
}

pub(crate) fn decode_queue(b: &[u8]) -> Result<QueueRecord, StoreError> {
    let mut r = Reader(b);
    Ok(QueueRecord { name: r.name("queue")?, auto_delete: r.flag("queue")?, arguments: r.blob("queue")?.to_vec() })
}

pub(crate) fn encode_binding(b: &BindingRecord) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.name(&b.source);
    w.name(&b.destination);
    w.flag(b.destination_is_exchange);
    w.name(&b.routing_key);
    w.blob(&b.arguments);
    w.0
}

pub(crate) fn decode_binding(b: &[u8]) -> Result<BindingRecord, StoreError> {
    let mut r = Reader(b);
    Ok(BindingRecord {
        source: r.name("binding")?,
        destination: r.name("binding")?,
        destination_is_exchange: r.flag("binding")?,
        routing_key: r.name("binding")?,
        arguments: r.blob("binding")?.to_vec(),
    })
}

pub(crate) fn encode_message(m: &StoredMessage) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(16 + m.exchange.len() + m.routing_key.len() + m.properties.len() + m.body.len()));
    w.name(&m.exchange);
    w.name(&m.routing_key);
    w.blob(&m.properties);
    w.blob(&m.body);
    if m.expires != u64::MAX || m.priority != 0 {
        w.0.extend_from_slice(&m.expires.to_be_bytes());
        w.0.push(m.priority);
    }
    w.0
}

/// The trailer of a message record, after the body: `(expires, priority)`.
fn trailer(r: &mut Reader<'_>) -> Result<(u64, u8), StoreError> {
    if r.0.is_empty() {
        return Ok((u64::MAX, 0));
    }
    let t = r.take(9, "message")?;
    let mut e = [0u8; 8];
    e.copy_from_slice(&t[..8]);
    Ok((u64::from_be_bytes(e), t[8]))
}

/// Reads a message record's body length, deadline and priority without copying it.
pub(crate) fn message_meta(b: &[u8]) -> Result<MessageMeta, StoreError> {
    let mut r = Reader(b);
    r.name("message")?;
    r.name("message")?;
    r.blob("message")?;
    let body_len = u32::try_from(r.blob("message")?.len()).unwrap_or(u32::MAX);
    let (expires, priority) = trailer(&mut r)?;
    Ok(MessageMeta { body_len, expires, priority })
}

pub(crate) fn decode_message(b: &[u8]) -> Result<StoredMessage, StoreError> {
    let mut r = Reader(b);
    let exchange = r.name("message")?;
    let routing_key = r.name("message")?;
    let properties = Bytes::copy_from_slice(r.blob("message")?);
    let body = Bytes::copy_from_slice(r.blob("message")?);
    let (expires, priority) = trailer(&mut r)?;
    Ok(StoredMessage { exchange, routing_key, properties, body, expires, priority })
}

pub(crate) fn queue_prefix(queue: &str) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(queue.len() + 9));
    w.name(queue);
    w.0
}

pub(crate) fn message_key(queue: &str, offset: u64) -> Vec<u8> {
    let mut k = queue_prefix(queue);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

/// Store-2's prefix of the trees that held each durable queue's messages.
pub(crate) const LEGACY_QUEUE_TREE_PREFIX: &[u8] = b"queue-messages/";

/// After a vhost's prefix, what names a tree of one queue's messages: `v/<hex>/q/<queue>`.
pub(crate) const QUEUE_TREE_INFIX: &[u8] = b"q/";

/// The key of an access record: `kind`, a NUL, then `key`.
pub(crate) fn record_key(kind: &str, key: &str) -> Vec<u8> {
    [kind.as_bytes(), b"\0", key.as_bytes()].concat()
}

pub(crate) fn offset_of(key: &[u8]) -> Result<u64, StoreError> {
    let tail = key.len().checked_sub(8).ok_or_else(|| corrupt("message key"))?;
    let mut o = [0u8; 8];
    o.copy_from_slice(&key[tail..]);
    Ok(u64::from_be_bytes(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_truncation_is_an_error() {
        let x = ExchangeRecord { name: "x".into(), kind: "topic".into(), auto_delete: true, internal: false, arguments: vec![0, 0, 0, 0] };
        let e = encode_exchange(&x);
        assert_eq!(decode_exchange(&e).expect("valid"), x);
        assert!(decode_exchange(&e[..e.len() - 1]).is_err());
        let b = BindingRecord { source: "s".into(), destination: "d".into(), destination_is_exchange: true, routing_key: "a.#".into(), arguments: vec![] };
        assert_eq!(decode_binding(&encode_binding(&b)).expect("valid"), b);
        let m = StoredMessage { exchange: "".into(), routing_key: "q".into(), properties: Bytes::from_static(&[0x10, 0, 2]), body: Bytes::from_static(b"hi"), expires: u64::MAX, priority: 0 };
        let enc = encode_message(&m);
        assert_eq!(decode_message(&enc).expect("valid"), m);
        assert!(decode_message(&enc[..3]).is_err());
        // With a deadline and a priority: a trailer, read back by the meta peek too.
        let timed = StoredMessage { expires: 1_700_000_000_123, priority: 7, ..m.clone() };
        let enc = encode_message(&timed);
        assert_eq!(decode_message(&enc).expect("valid"), timed);
        assert_eq!(message_meta(&enc).expect("valid"), MessageMeta { body_len: 2, expires: 1_700_000_000_123, priority: 7 });
        assert!(decode_message(&enc[..enc.len() - 1]).is_err());
        assert_eq!(offset_of(&message_key("q", 42)).expect("valid"), 42);
    }
}
