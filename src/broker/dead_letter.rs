//! Dead-lettering: the message a queue gives up (rejected, expired, pushed out by a length
//! limit, over its delivery limit) rewritten as RabbitMQ 3.13 rewrites it, and RabbitMQ's
//! rule for dropping messages that cycle.
//!
//! Queues decide dead letters under their lock and hand them to
//! [`crate::broker::vhost::VHost::dead_letter`] after releasing it; that routes them
//! iteratively, so a chain of queues dead-lettering into each other never recurses.

use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use warren_protocol::properties;

use crate::broker::message::{now_ms, Message};
use crate::broker::queue::args::{as_text, DeadLetterTarget};

/// Why a message was dead-lettered (the `reason` of its `x-death` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// basic.reject or basic.nack with requeue=false.
    Rejected,
    /// Its TTL ran out.
    Expired,
    /// A length limit pushed it out (or refused it, with `reject-publish-dlx`).
    Maxlen,
    /// A quorum queue's `x-delivery-limit` was exceeded.
    DeliveryLimit,
}

impl Reason {
    /// RabbitMQ's name for the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Maxlen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A message a queue gave up, on its way to the queue's dead-letter exchange.
#[derive(Debug)]
pub struct DeadLetter {
    /// The message as the queue held it.
    pub msg: Arc<Message>,
    /// Why.
    pub reason: Reason,
    /// The queue's name.
    pub queue: String,
    /// Where the queue dead-letters to.
    pub target: DeadLetterTarget,
}

/// A dead letter ready to be routed.
#[derive(Debug)]
pub struct Republish {
    /// The rewritten message (published to the dead-letter exchange).
    pub msg: Arc<Message>,
    /// The routing keys to route it with.
    pub routing_keys: Vec<String>,
    /// Its `x-death` entries, most recent first, as `(queue, reason)`, for the cycle rule.
    pub deaths: Vec<(String, String)>,
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// The strings of an array header (CC, BCC, routing-keys).
fn strings(v: Option<&AMQPValue>) -> Vec<String> {
    match v {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().iter().filter_map(as_text).map(|t| String::from_utf8_lossy(t).into_owned()).collect(),
        _ => Vec::new(),
    }
}

fn text_of(t: &FieldTable, key: &str) -> Option<String> {
    t.inner().get(key).and_then(as_text).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// Rewrites a dead letter as RabbitMQ does: an `x-death` entry for (queue, reason) added
/// at the front, or the existing one moved there with its count incremented;
/// `x-first-death-*` set once and `x-last-death-*` every time; the `expiration` property
/// removed (kept as the entry's `original-expiration`); routed with the dead-letter routing
/// key (and then without its `CC` header) or with the message's own routing keys.
pub fn rewrite(letter: &DeadLetter) -> Republish {
    let msg = &letter.msg;
    let props = properties::decode(msg.properties()).unwrap_or_default();
    let mut headers = props.headers().clone().unwrap_or_default();
    let mut own_keys = vec![msg.routing_key.clone()];
    own_keys.extend(strings(headers.inner().get("CC")));
    let reason = letter.reason.as_str();

    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let same = |v: &AMQPValue| match v {
        AMQPValue::FieldTable(t) => text_of(t, "queue").as_deref() == Some(letter.queue.as_str()) && text_of(t, "reason").as_deref() == Some(reason),
        _ => false,
    };
    let entry = match deaths.iter().position(same) {
        Some(i) => {
            let mut t = match deaths.remove(i) {
                AMQPValue::FieldTable(t) => t,
                _ => FieldTable::default(),
            };
            let count = t.inner().get("count").and_then(crate::broker::queue::args::as_int).unwrap_or(0);
            t.insert("count".into(), AMQPValue::LongLongInt(count.saturating_add(1)));
            t
        }
        None => {
            let mut t = FieldTable::default();
            t.insert("count".into(), AMQPValue::LongLongInt(1));
            t.insert("reason".into(), long(reason));
            t.insert("queue".into(), long(&letter.queue));
            t.insert("time".into(), AMQPValue::Timestamp(now_ms() / 1000));
            t.insert("exchange".into(), long(&msg.exchange));
            t.insert("routing-keys".into(), AMQPValue::FieldArray(FieldArray::from(own_keys.iter().map(|k| long(k)).collect::<Vec<_>>())));
            if let Some(exp) = props.expiration() {
                t.insert("original-expiration".into(), long(exp.as_str()));
            }
            t
        }
    };
    deaths.insert(0, AMQPValue::FieldTable(entry));
    let death_keys: Vec<(String, String)> = deaths
        .iter()
        .filter_map(|v| match v {
            AMQPValue::FieldTable(t) => Some((text_of(t, "queue").unwrap_or_default(), text_of(t, "reason").unwrap_or_default())),
            _ => None,
        })
        .collect();
    headers.insert("x-death".into(), AMQPValue::FieldArray(FieldArray::from(deaths)));
    if !headers.inner().contains_key("x-first-death-reason") {
        headers.insert("x-first-death-reason".into(), long(reason));
        headers.insert("x-first-death-queue".into(), long(&letter.queue));
        headers.insert("x-first-death-exchange".into(), long(&msg.exchange));
    }
    headers.insert("x-last-death-reason".into(), long(reason));
    headers.insert("x-last-death-queue".into(), long(&letter.queue));
    headers.insert("x-last-death-exchange".into(), long(&msg.exchange));

    let routing_keys = match &letter.target.routing_key {
        // 3.13 keeps the CC header here (3.12 removed it).
        Some(rk) => vec![rk.clone()],
        // All the keys it was published with, BCC included (not recorded in x-death).
        None => own_keys.into_iter().chain(msg.bcc().iter().cloned()).collect(),
    };
    let mut props = props.with_headers(headers);
    props = clear_expiration(props);
    let msg = Message {
        exchange: letter.target.exchange.clone(),
        routing_key: routing_keys.first().cloned().unwrap_or_default(),
        payload: msg.payload.with_properties(properties::encode(&props).into()),
        persistent: msg.persistent,
        from_store: false,
        priority: msg.priority,
        extra: None,
    };
    Republish { msg: Arc::new(msg), routing_keys, deaths: death_keys }
}

/// The properties without `expiration` (amq-protocol has no clearer for one field).
fn clear_expiration(p: amq_protocol::protocol::BasicProperties) -> amq_protocol::protocol::BasicProperties {
    if p.expiration().is_none() {
        return p;
    }
    let mut out = amq_protocol::protocol::BasicProperties::default();
    macro_rules! keep {
        ($get:ident, $with:ident) => {
            if let Some(v) = p.$get().clone() {
                out = out.$with(v);
            }
        };
    }
    keep!(content_type, with_content_type);
    keep!(content_encoding, with_content_encoding);
    keep!(headers, with_headers);
    keep!(delivery_mode, with_delivery_mode);
    keep!(priority, with_priority);
    keep!(correlation_id, with_correlation_id);
    keep!(reply_to, with_reply_to);
    keep!(message_id, with_message_id);
    keep!(timestamp, with_timestamp);
    keep!(kind, with_type);
    keep!(user_id, with_user_id);
    keep!(app_id, with_app_id);
    keep!(cluster_id, with_cluster_id);
    out
}

/// RabbitMQ's cycle rule: a message dead-lettered into `queue` is dropped there when it
/// already died in that queue and none of the deaths since (that one included) was a
/// rejection, i.e. no client took part in the loop.
pub fn is_cycle(deaths: &[(String, String)], queue: &str) -> bool {
    match deaths.iter().position(|(q, _)| q == queue) {
        Some(i) => deaths[..=i].iter().all(|(_, reason)| reason != Reason::Rejected.as_str()),
        None => false,
    }
}
