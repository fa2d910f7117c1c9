//! A queue against a naive model (RabbitMQ's `classic_queue_prop_SUITE` idea): random
//! sequences of publishes (priorities, TTLs, sizes, persistence), gets, acks, requeues,
//! purges and restarts of the store, on a durable queue with random priority bands, length
//! limits and overflow modes and a tiny memory limit (so content pages out). After every
//! step what the queue would deliver must be what the model says.

use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::Bytes;
use proptest::prelude::*;
use warren::broker::memory::MemoryMonitor;
use warren::broker::message::{Extra, Message};
use warren_protocol::content::Payload;
use warren::broker::queue::args::{DeclareFlags, QueueArgs};
use warren::broker::queue::ready::EntryMeta;
use warren::broker::queue::{Enqueued, Queue, QueueSetup};
use warren_storage::{QueueRecord, Database, Store};

/// A TTL choice: none, zero (gone unless delivered at once; the model has no consumers),
/// or an hour (never reached in a test).
#[derive(Debug, Clone, Copy)]
enum Ttl {
    None,
    Zero,
    Hour,
}

#[derive(Debug, Clone)]
enum Op {
    Publish { priority: Option<u8>, ttl: Ttl, persistent: bool, len: usize },
    Get,
    Ack(usize),
    Requeue(usize),
    Purge,
    Restart,
}

#[derive(Debug, Clone)]
struct Config {
    max_priority: Option<u8>,
    max_length: Option<u64>,
    max_length_bytes: Option<u64>,
    reject_publish: bool,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (proptest::option::of(0u8..12), prop_oneof![Just(Ttl::None), Just(Ttl::Zero), Just(Ttl::Hour)], any::<bool>(), 0usize..40)
            .prop_map(|(priority, ttl, persistent, len)| Op::Publish { priority, ttl, persistent, len }),
        3 => Just(Op::Get),
        2 => (0usize..8).prop_map(Op::Ack),
        2 => (0usize..8).prop_map(Op::Requeue),
        1 => Just(Op::Purge),
        1 => Just(Op::Restart),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (proptest::option::of(1u8..6), proptest::option::of(0u64..6), proptest::option::of(0u64..120), any::<bool>())
        .prop_map(|(max_priority, max_length, max_length_bytes, reject_publish)| Config { max_priority, max_length, max_length_bytes, reject_publish })
}

/// A message in the model.
#[derive(Debug, Clone)]
struct M {
    id: u32,
    band: u8,
    persistent: bool,
    len: usize,
    redelivered: bool,
}

#[derive(Debug, Default)]
struct Model {
    /// Ready messages in publish order (the id is the order).
    ready: Vec<M>,
    /// Delivered, not settled.
    held: Vec<M>,
}

impl Model {
    /// Index of the message delivered next: highest band, then oldest.
    fn front(&self) -> Option<usize> {
        (0..self.ready.len()).max_by_key(|&i| (self.ready[i].band, std::cmp::Reverse(self.ready[i].id)))
    }
    fn bytes(&self) -> u64 {
        self.ready.iter().map(|m| m.len as u64).sum()
    }
}

fn arguments(c: &Config) -> FieldTable {
    let mut t = FieldTable::default();
    if let Some(p) = c.max_priority {
        t.insert("x-max-priority".into(), AMQPValue::LongLongInt(i64::from(p)));
    }
    if let Some(n) = c.max_length {
        t.insert("x-max-length".into(), AMQPValue::LongLongInt(n as i64));
    }
    if let Some(n) = c.max_length_bytes {
        t.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(n as i64));
    }
    if c.reject_publish {
        t.insert("x-overflow".into(), AMQPValue::LongString(LongString::from("reject-publish")));
    }
    t
}

fn open_queue(store: &Store, c: &Config) -> Arc<Queue> {
    let args = arguments(c);
    let flags = DeclareFlags { durable: true, exclusive: false, auto_delete: false, server_named: false };
    let parsed = QueueArgs::parse(&args, "q", "/", flags).expect("valid arguments");
    Queue::create(QueueSetup {
        name: "q".into(),
        vhost: std::sync::Weak::new(),
        vhost_name: "/".into(),
        exclusive_owner: None,
        auto_delete: false,
        arguments: args,
        args: parsed,
        // 64 octets in memory: most content is paged out to the store.
        store: Some((store.queue_store("q").expect("queue store"), 64)),
        memory: Arc::new(MemoryMonitor::new(usize::MAX, prometheus::IntGauge::new("alarm", "alarm").expect("gauge"))),
        consumer_timeout: 0,
    })
}

/// Properties with a priority, a delivery mode and an expiration.
fn properties(priority: Option<u8>, persistent: bool, ttl: Ttl) -> Bytes {
    let mut p = amq_protocol::protocol::BasicProperties::default();
    if let Some(pr) = priority {
        p = p.with_priority(pr);
    }
    if persistent {
        p = p.with_delivery_mode(2);
    }
    match ttl {
        Ttl::Zero => p = p.with_expiration("0".into()),
        Ttl::Hour => p = p.with_expiration("3600000".into()),
        Ttl::None => {}
    }
    warren_protocol::properties::encode(&p).into()
}

fn body(id: u32, len: usize) -> Bytes {
    let mut b = id.to_be_bytes().to_vec();
    b.resize(len.max(4), 0xAB);
    b.truncate(len.max(4));
    Bytes::from(b)
}

fn id_of(body: &[u8]) -> u32 {
    u32::from_be_bytes([body[0], body[1], body[2], body[3]])
}

fn run(c: Config, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempdir();
    let mut db = Database::open(&dir, "/").expect("store");
    let mut store = db.vhost("/").expect("vhost store");
    store.put_queue(&QueueRecord { name: "q".into(), auto_delete: false, arguments: Vec::new() }).expect("queue record");
    let mut queue = open_queue(&store, &c);
    let mut model = Model::default();
    let mut held: Vec<(u64, Arc<Message>, EntryMeta)> = Vec::new();
    let mut next_id = 0u32;
    for op in ops {
        match op {
            Op::Publish { priority, ttl, persistent, len } => {
                let len = len.max(4);
                let id = next_id;
                next_id += 1;
                let msg = Arc::new(Message {
                    exchange: String::new(),
                    routing_key: "q".into(),
                    payload: Payload::new(properties(priority, persistent, ttl), body(id, len)),
                    persistent,
                    from_store: false,
                    priority: priority.unwrap_or(0),
                    extra: Extra::new(
                        match ttl {
                            Ttl::None => None,
                            Ttl::Zero => Some(0),
                            Ttl::Hour => Some(3_600_000),
                        },
                        Vec::new(),
                    ),
                });
                let full = c.max_length.is_some_and(|m| model.ready.len() as u64 >= m) || c.max_length_bytes.is_some_and(|m| model.bytes() + len as u64 > m);
                let outcome = queue.enqueue(msg);
                if c.reject_publish && full {
                    prop_assert_eq!(outcome, Enqueued::Rejected);
                    continue;
                }
                prop_assert!(matches!(outcome, Enqueued::Stored | Enqueued::Transient), "{:?}", outcome);
                if matches!(ttl, Ttl::Zero) {
                    continue;
                }
                let band = c.max_priority.map_or(0, |max| priority.unwrap_or(0).min(max));
                model.ready.push(M { id, band, persistent, len, redelivered: false });
                // drop-head: the next message to be delivered makes room.
                while c.max_length.is_some_and(|m| model.ready.len() as u64 > m) || c.max_length_bytes.is_some_and(|m| model.bytes() > m) {
                    let i = model.front().expect("non-empty");
                    model.ready.remove(i);
                }
            }
            Op::Get => {
                let got = queue.get(true);
                match model.front() {
                    None => prop_assert!(got.is_none(), "queue gave a message the model lacks"),
                    Some(i) => {
                        let m = model.ready.remove(i);
                        let got = got.ok_or_else(|| TestCaseError::fail(format!("expected message {}", m.id)))?;
                        prop_assert_eq!(id_of(got.msg.body()), m.id);
                        prop_assert_eq!(got.msg.body().len(), m.len);
                        prop_assert_eq!(got.meta.redelivered, m.redelivered, "redelivered flag of {}", m.id);
                        prop_assert_eq!(got.remaining as usize, model.ready.len());
                        queue.delivered(got.offset, &got.msg, false);
                        held.push((got.offset, got.msg, got.meta));
                        model.held.push(m);
                    }
                }
            }
            Op::Ack(i) if !held.is_empty() => {
                let i = i % held.len();
                let (offset, msg, _) = held.remove(i);
                model.held.remove(i);
                queue.settled(offset, &msg);
            }
            Op::Requeue(i) if !held.is_empty() => {
                let i = i % held.len();
                let entry = held.remove(i);
                let mut m = model.held.remove(i);
                m.redelivered = true;
                queue.requeue([entry]);
                model.ready.push(m);
                model.ready.sort_by_key(|m| m.id);
                // drop-head applies to requeued messages too (RabbitMQ).
                while !c.reject_publish && (c.max_length.is_some_and(|max| model.ready.len() as u64 > max) || c.max_length_bytes.is_some_and(|max| model.bytes() > max)) {
                    let i = model.front().expect("non-empty");
                    model.ready.remove(i);
                }
            }
            Op::Ack(_) | Op::Requeue(_) => {}
            Op::Purge => {
                let n = queue.purge();
                prop_assert_eq!(n as usize, model.ready.len());
                model.ready.clear();
            }
            Op::Restart => {
                // A clean stop: marks written, the store closed cleanly (after a crash
                // every message would come back redelivered).
                queue.write_marks();
                db.close_cleanly().expect("close");
                drop(queue);
                drop((store, db));
                db = Database::open(&dir, "/").expect("reopen");
                store = db.vhost("/").expect("vhost store");
                let recovered = store.recover().expect("recover");
                queue = open_queue(&store, &c);
                let (_, messages) = recovered.queues.into_iter().find(|(q, _)| q.name == "q").expect("queue recovered");
                queue.restore(messages, None);
                // Persistent messages survive, unacknowledged ones come back redelivered.
                held.clear();
                for mut m in model.held.drain(..) {
                    m.redelivered = true;
                    model.ready.push(m);
                }
                model.ready.retain(|m| m.persistent);
                model.ready.sort_by_key(|m| m.id);
            }
        }
        prop_assert_eq!(queue.message_count() as usize, model.ready.len());
    }
    drop(queue);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempdir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!("warren-qmodel-{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&d);
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn queue_matches_the_model(c in config(), ops in proptest::collection::vec(op(), 1..60)) {
        run(c, ops)?;
    }
}
