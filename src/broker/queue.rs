//! A queue: its ready messages in order, its consumers in round-robin order, and dispatch.
//!
//! Dispatch runs in whichever task changed the queue (a publisher enqueueing, a consumer
//! acking, a congested socket draining) under the queue's lock: the next ready message goes
//! to the next consumer in rotation that has room, and a consumer blocked by its prefetch is
//! skipped until an ack frees it. Every message carries an offset so a requeued message
//! returns to its original place.
//!
//! A durable queue keeps at most `memory_limit` octets of ready persistent messages in
//! memory; beyond that (and for everything recovered at start) a ready entry is only its
//! offset, and the content is read back from the store when it reaches the front. A long
//! backlog therefore costs a few dozen octets per message, not its size.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use amq_protocol::types::{AMQPValue, FieldTable};
use tracing::error;
use warren_protocol::AmqpError;
use warren_storage::{QueueStore, StoredMessage};

use crate::broker::consumer::Consumer;
use crate::broker::memory::MemoryMonitor;
use crate::broker::message::Message;
use crate::broker::vhost::as_int;

/// A ready (not yet delivered) message.
#[derive(Debug, Clone)]
struct Ready {
    /// Its position in the queue, kept across redeliveries.
    offset: u64,
    /// The message, or None while its content is only in the store (paged out).
    msg: Option<Arc<Message>>,
    /// True once it has been delivered and returned.
    redelivered: bool,
    /// When it expires (x-message-ttl), in milliseconds since the queue was created;
    /// `NEVER` without a TTL.
    expires: u32,
}

/// `Ready::expires` of a message that does not expire.
const NEVER: u32 = u32::MAX;

/// What a queue's arguments ask of it (RabbitMQ's x-max-length, x-overflow and
/// x-message-ttl; validated at declare).
#[derive(Debug)]
struct Limits {
    /// x-max-length: most ready messages.
    max_length: Option<usize>,
    /// x-overflow = reject-publish: refuse (nack) new messages at the limit instead of
    /// dropping the oldest.
    reject_publish: bool,
    /// x-message-ttl in milliseconds.
    ttl_ms: Option<u32>,
    /// The clock `Ready::expires` counts from.
    created: Instant,
}

impl Limits {
    fn from_arguments(args: &FieldTable) -> Self {
        let int = |key: &str| args.inner().get(key).and_then(as_int).filter(|n| *n >= 0);
        let overflow = args.inner().get("x-overflow").and_then(|v| match v {
            AMQPValue::LongString(s) => Some(s.as_bytes().to_vec()),
            AMQPValue::ShortString(s) => Some(s.as_str().as_bytes().to_vec()),
            _ => None,
        });
        Limits {
            max_length: int("x-max-length").map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            reject_publish: overflow.is_some_and(|o| o.starts_with(b"reject-publish")),
            ttl_ms: int("x-message-ttl").map(|n| u32::try_from(n).unwrap_or(u32::MAX - 1)),
            created: Instant::now(),
        }
    }

    /// Milliseconds since the queue was created.
    fn now(&self) -> u32 {
        u32::try_from(self.created.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    /// The expiry of a message entering the queue now.
    fn expiry(&self) -> u32 {
        self.ttl_ms.map_or(NEVER, |ttl| self.now().saturating_add(ttl).min(NEVER - 1))
    }
}

/// A message taken from the queue by basic.get.
#[derive(Debug)]
pub struct Got {
    /// Its position in the queue.
    pub offset: u64,
    /// The message.
    pub msg: Arc<Message>,
    /// It had been delivered before.
    pub redelivered: bool,
    /// Ready messages left behind.
    pub remaining: u32,
}

/// The octets a message in memory counts against a queue's memory limit.
fn footprint(msg: &Message) -> usize {
    msg.body.len() + msg.properties.len() + msg.exchange.len() + msg.routing_key.len()
}

/// A queue of a virtual host.
#[derive(Debug)]
pub struct Queue {
    /// Its name.
    pub name: String,
    /// The vhost it lives in, for error texts.
    pub vhost: String,
    /// The connection that owns it when declared exclusive.
    pub exclusive_owner: Option<u64>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// The declare arguments.
    pub arguments: FieldTable,
    /// Where its persistent messages are kept: set for durable queues.
    store: Option<QueueStore>,
    /// Octets of ready stored messages kept in memory before new ones are paged out.
    memory_limit: usize,
    /// The offset the next enqueued message gets.
    next_offset: AtomicU64,
    /// The broker-wide count of message octets in memory (the memory alarm).
    memory: Arc<MemoryMonitor>,
    /// Delivery marks of stored messages (taken after the queue lock, never before it).
    marks: Mutex<Marks>,
    /// Length limit and message TTL from the arguments.
    limits: Limits,
    state: Mutex<QueueState>,
}

/// Which stored messages have been delivered, for the redelivered flag after a restart.
#[derive(Debug, Default)]
struct Marks {
    /// Delivered and unacknowledged, not yet marked in the store.
    pending: HashSet<u64>,
    /// Marked in the store (so an ack removes the mark too).
    written: HashSet<u64>,
    /// Settled messages to remove from the store, with whether each was marked.
    removals: Vec<(u64, bool)>,
}

/// What happened to an enqueued message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Held in memory only.
    Transient,
    /// Written to the store; durable after the next flush.
    Stored,
    /// The queue was deleted meanwhile.
    Gone,
    /// The store refused it; the publisher must be nacked.
    Failed,
    /// The queue is full and its x-overflow is reject-publish; the publisher is nacked.
    Rejected,
}

#[derive(Debug, Default)]
struct QueueState {
    ready: VecDeque<Ready>,
    /// Footprint of the ready messages held in memory.
    ready_bytes: usize,
    consumers: VecDeque<Arc<Consumer>>,
    /// Auto-delete applies only to a queue that has had a consumer.
    had_consumers: bool,
    deleted: bool,
}

impl Queue {
    /// A new, empty queue; `store` is given for a durable one, with the octets of ready
    /// messages it may keep in memory; `memory` counts what it holds broker-wide.
    pub fn new(name: String, vhost: String, exclusive_owner: Option<u64>, auto_delete: bool, arguments: FieldTable, store: Option<(QueueStore, usize)>, memory: Arc<MemoryMonitor>) -> Self {
        let limits = Limits::from_arguments(&arguments);
        let (store, memory_limit) = match store {
            Some((store, limit)) => (Some(store), limit),
            None => (None, usize::MAX),
        };
        Queue { name, vhost, exclusive_owner, auto_delete, arguments, store, memory_limit, next_offset: AtomicU64::new(0), memory, marks: Mutex::default(), limits, state: Mutex::new(QueueState::default()) }
    }

    /// Declared durable (durable queues, and only they, have a store).
    pub fn durable(&self) -> bool {
        self.store.is_some()
    }

    /// The store, when this queue keeps `msg` on disk.
    fn store_for(&self, msg: &Message) -> Option<&QueueStore> {
        self.store.as_ref().filter(|_| msg.persistent)
    }

    /// A ready entry for `msg`, paged out (content left in the store) when the queue is over
    /// its memory limit and the store has the message.
    fn ready_entry(&self, st: &mut QueueState, offset: u64, msg: Arc<Message>, redelivered: bool) -> Ready {
        let size = footprint(&msg);
        if self.store_for(&msg).is_some() && st.ready_bytes + size > self.memory_limit {
            return Ready { offset, msg: None, redelivered, expires: self.limits.expiry() };
        }
        st.ready_bytes += size;
        self.memory.add(size);
        Ready { offset, msg: Some(msg), redelivered, expires: self.limits.expiry() }
    }

    /// Drops a ready entry that leaves without being delivered (expired, pushed out by the
    /// length limit, purged): its memory, its marks and its stored copy.
    fn discard(&self, st: &mut QueueState, r: Ready) {
        self.forget(st, &r);
        let mut marks = self.marks();
        marks.pending.remove(&r.offset);
        marks.written.remove(&r.offset);
        drop(marks);
        // A paged-out message is in the store by definition.
        let stored = r.msg.as_ref().map_or(self.store.as_ref(), |m| self.store_for(m));
        if let Some(store) = stored {
            if let Err(e) = store.remove_message(r.offset) {
                error!(queue = %self.name, error = %e, "cannot drop a message from the store");
            }
        }
    }

    /// Drops expired messages from the head of the queue (RabbitMQ expires messages when
    /// they reach the head).
    fn expire(&self, st: &mut QueueState) {
        if self.limits.ttl_ms.is_none() {
            return;
        }
        let now = self.limits.now();
        while st.ready.front().is_some_and(|r| r.expires <= now) {
            if let Some(r) = st.ready.pop_front() {
                self.discard(st, r);
            }
        }
    }

    /// Accounts for a ready entry leaving the queue.
    fn forget(&self, st: &mut QueueState, r: &Ready) {
        if let Some(msg) = &r.msg {
            let size = footprint(msg);
            st.ready_bytes -= size;
            self.memory.sub(size);
        }
    }

    /// Accounts for every ready entry leaving at once.
    fn forget_all(&self, st: &mut QueueState) {
        self.memory.sub(std::mem::take(&mut st.ready_bytes));
    }

    /// Reads a paged-out message back from the store: `Ok(None)` (logged) when the store
    /// no longer has it, so the caller skips it; an error (logged) when the store cannot be
    /// read, so the caller leaves it in place to try again later.
    fn load(&self, offset: u64) -> Result<Option<Arc<Message>>, ()> {
        let Some(store) = self.store.as_ref() else { return Ok(None) };
        match store.get_message(offset) {
            Ok(Some(m)) => Ok(Some(Arc::new(Message { exchange: m.exchange, routing_key: m.routing_key, properties: m.properties, body: m.body, persistent: true, from_store: true }))),
            Ok(None) => {
                error!(queue = %self.name, offset, "a paged-out message is missing from the store; skipping it");
                let mut marks = self.marks();
                marks.pending.remove(&offset);
                marks.written.remove(&offset);
                Ok(None)
            }
            Err(e) => {
                error!(queue = %self.name, offset, error = %e, "cannot read a paged-out message from the store; will retry");
                Err(())
            }
        }
    }

    /// Records that a message went to a consumer: a no-ack delivery is settled at once;
    /// otherwise the delivery is noted, and written to the store by [`Self::write_marks`]
    /// if it is still unacknowledged then, so that a restart brings it back redelivered.
    /// Most deliveries are acked before that and never cost a store write.
    pub fn delivered(&self, offset: u64, msg: &Message, settled: bool) {
        if self.store_for(msg).is_none() {
            return;
        }
        if settled {
            self.settled(offset, msg);
            return;
        }
        let mut marks = self.marks();
        if !marks.written.contains(&offset) {
            marks.pending.insert(offset);
        }
    }

    /// Forgets an acknowledged (or dropped) message.
    /// A message that was delivered from memory (the consumers keep up) is removed from
    /// the store by [`Self::write_marks`], off the consumer's path (acks are not synchronous
    /// in RabbitMQ either); one read back from the store (a backlog draining) is removed at
    /// once, which keeps sled's memory flat while a long backlog drains.
    pub fn settled(&self, offset: u64, msg: &Message) {
        let Some(store) = self.store_for(msg) else { return };
        let mut marks = self.marks();
        marks.pending.remove(&offset);
        let marked = marks.written.remove(&offset);
        if !msg.from_store {
            marks.removals.push((offset, marked));
            return;
        }
        drop(marks);
        let result = if marked { store.remove_message(offset) } else { store.remove_unmarked_message(offset) };
        if let Err(e) = result {
            error!(queue = %self.name, error = %e, "cannot remove an acknowledged message from the store");
        }
    }

    /// Removes the messages settled since the last call from the store, then writes the
    /// delivery marks of messages delivered since the last call and still unacknowledged.
    /// The broker calls this every 100 ms and at shutdown.
    pub fn write_marks(&self) {
        let Some(store) = &self.store else { return };
        let mut marks = self.marks();
        let Marks { pending, written, removals } = &mut *marks;
        if !removals.is_empty() {
            if let Err(e) = store.remove_messages(removals) {
                error!(queue = %self.name, error = %e, "cannot remove acknowledged messages from the store");
            }
            removals.clear();
        }
        for offset in pending.drain() {
            match store.mark_delivered(offset) {
                Ok(true) => {
                    written.insert(offset);
                }
                Ok(false) => {}
                Err(e) => error!(queue = %self.name, error = %e, "cannot record a delivery in the store"),
            }
        }
    }

    fn marks(&self) -> MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts recovered messages back at start-up, in offset order, paged out: their content
    /// is read from the store as they are delivered.
    pub fn restore(&self, messages: impl IntoIterator<Item = (u64, bool)>) {
        let mut st = self.lock();
        let messages = messages.into_iter();
        st.ready.reserve_exact(messages.size_hint().0);
        let mut marks = self.marks();
        for (offset, redelivered) in messages {
            self.next_offset.fetch_max(offset + 1, Ordering::Relaxed);
            if redelivered {
                marks.written.insert(offset);
            }
            st.ready.push_back(Ready { offset, msg: None, redelivered, expires: self.limits.expiry() });
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a message (storing it first when persistent in a durable queue) and
    /// dispatches. The store write happens before the queue lock is taken, so publishers
    /// and consumers of a durable queue do not wait on each other's disk work.
    pub fn enqueue(&self, msg: Arc<Message>) -> Enqueued {
        if let (Some(max), true) = (self.limits.max_length, self.limits.reject_publish) {
            let mut st = self.lock();
            self.expire(&mut st);
            if st.ready.len() >= max {
                return Enqueued::Rejected;
            }
        }
        let offset = self.next_offset.fetch_add(1, Ordering::Relaxed);
        let outcome = match self.store_for(&msg) {
            Some(store) => {
                let stored = StoredMessage {
                    exchange: msg.exchange.clone(),
                    routing_key: msg.routing_key.clone(),
                    properties: msg.properties.clone(),
                    body: msg.body.clone(),
                };
                if let Err(e) = store.put_message(offset, &stored) {
                    error!(queue = %self.name, error = %e, "cannot store a persistent message; it will be nacked");
                    return Enqueued::Failed;
                }
                Enqueued::Stored
            }
            None => Enqueued::Transient,
        };
        let mut st = self.lock();
        if st.deleted {
            drop(st);
            if outcome == Enqueued::Stored {
                self.settled(offset, &msg);
            }
            return Enqueued::Gone;
        }
        // Fast path: nothing waiting, so the message can go straight to a consumer.
        if st.ready.is_empty() && self.offer(&mut st, offset, &msg, false) {
            return outcome;
        }
        let entry = self.ready_entry(&mut st, offset, msg, false);
        // Another publisher may have taken a later offset and got the lock first.
        match st.ready.back() {
            Some(last) if last.offset > offset => {
                let pos = st.ready.partition_point(|r| r.offset < offset);
                st.ready.insert(pos, entry);
            }
            _ => st.ready.push_back(entry),
        }
        if let Some(max) = self.limits.max_length {
            // x-overflow drop-head: the oldest messages make room.
            while st.ready.len() > max {
                if let Some(r) = st.ready.pop_front() {
                    self.discard(&mut st, r);
                }
            }
        }
        self.dispatch_locked(&mut st);
        outcome
    }

    /// Offers one message to the consumers in rotation; true if one took it.
    fn offer(&self, st: &mut QueueState, offset: u64, msg: &Arc<Message>, redelivered: bool) -> bool {
        for _ in 0..st.consumers.len() {
            st.consumers.rotate_left(1);
            if let Some(c) = st.consumers.back() {
                if c.try_deliver(offset, msg, redelivered) {
                    self.delivered(offset, msg, c.no_ack);
                    return true;
                }
            }
        }
        false
    }

    fn dispatch_locked(&self, st: &mut QueueState) {
        self.expire(st);
        while let Some(front) = st.ready.front() {
            let (offset, redelivered) = (front.offset, front.redelivered);
            let msg = match &front.msg {
                Some(msg) => Arc::clone(msg),
                None if st.consumers.is_empty() => return,
                None => match self.load(offset) {
                    Ok(Some(msg)) => msg,
                    Ok(None) => {
                        st.ready.pop_front();
                        continue;
                    }
                    Err(()) => return,
                },
            };
            if !self.offer(st, offset, &msg, redelivered) {
                if let Some(front) = st.ready.front_mut().filter(|f| f.msg.is_none()) {
                    // Keep what was read, so the next attempt does not read it again.
                    let size = footprint(&msg);
                    st.ready_bytes += size;
                    self.memory.add(size);
                    front.msg = Some(msg);
                }
                return;
            }
            if let Some(r) = st.ready.pop_front() {
                self.forget(st, &r);
            }
        }
    }

    /// Delivers ready messages to consumers with room.
    pub fn dispatch(&self) {
        let mut st = self.lock();
        if !st.ready.is_empty() && !st.consumers.is_empty() {
            self.dispatch_locked(&mut st);
        }
    }

    /// Puts delivered messages back in their original places, marked redelivered.
    pub fn requeue(&self, messages: impl IntoIterator<Item = (u64, Arc<Message>)>) {
        let mut st = self.lock();
        if st.deleted {
            return;
        }
        for (offset, msg) in messages {
            let pos = st.ready.partition_point(|r| r.offset < offset);
            let entry = self.ready_entry(&mut st, offset, msg, true);
            st.ready.insert(pos, entry);
        }
        self.dispatch_locked(&mut st);
    }

    /// Takes the next ready message for basic.get, with the count left behind.
    pub fn get(&self) -> Option<Got> {
        let mut st = self.lock();
        self.expire(&mut st);
        loop {
            let r = st.ready.pop_front()?;
            self.forget(&mut st, &r);
            let msg = match r.msg {
                Some(msg) => msg,
                None => match self.load(r.offset) {
                    Ok(Some(msg)) => msg,
                    Ok(None) => continue,
                    Err(()) => {
                        // Unreadable for now: it stays first in line.
                        st.ready.push_front(r);
                        return None;
                    }
                },
            };
            return Some(Got { offset: r.offset, msg, redelivered: r.redelivered, remaining: st.ready.len() as u32 });
        }
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> u32 {
        let mut st = self.lock();
        let n = st.ready.len();
        for r in std::mem::take(&mut st.ready) {
            self.discard(&mut st, r);
        }
        n as u32
    }

    /// Ready messages.
    pub fn message_count(&self) -> u32 {
        let mut st = self.lock();
        self.expire(&mut st);
        st.ready.len() as u32
    }

    /// Active consumers.
    pub fn consumer_count(&self) -> u32 {
        self.lock().consumers.len() as u32
    }

    /// Adds a consumer and starts delivering to it; `on_added` runs under the queue lock
    /// before the first delivery (it writes consume-ok). 403 when an exclusive consumer
    /// holds the queue or an exclusive consumer is asked for a queue in use.
    pub fn add_consumer(&self, consumer: Arc<Consumer>, on_added: impl FnOnce()) -> Result<(), AmqpError> {
        let mut st = self.lock();
        if st.deleted {
            return Err(AmqpError::not_found(format!("no queue '{}' in vhost '{}'", self.name, self.vhost)));
        }
        if st.consumers.iter().any(|c| c.exclusive) || (consumer.exclusive && !st.consumers.is_empty()) {
            return Err(AmqpError::access_refused(format!("queue '{}' in vhost '{}' in exclusive use", self.name, self.vhost)));
        }
        on_added();
        st.consumers.push_back(consumer);
        st.had_consumers = true;
        self.dispatch_locked(&mut st);
        Ok(())
    }

    /// Removes a consumer. Returns true when the queue is auto-delete and has just lost its
    /// last consumer, so the caller deletes it.
    pub fn remove_consumer(&self, consumer: &Arc<Consumer>) -> bool {
        let mut st = self.lock();
        st.consumers.retain(|c| !Arc::ptr_eq(c, consumer));
        self.auto_delete && st.had_consumers && st.consumers.is_empty() && !st.deleted
    }

    /// Marks the queue deleted; returns its ready message count and its consumers (to be
    /// cancelled).
    pub fn mark_deleted(&self) -> (u32, Vec<Arc<Consumer>>) {
        let mut st = self.lock();
        st.deleted = true;
        let count = st.ready.len() as u32;
        st.ready.clear();
        self.forget_all(&mut st);
        // The store forgets the whole queue; nothing is left to mark.
        *self.marks() = Marks::default();
        (count, st.consumers.drain(..).collect())
    }

    /// True when `connection` may use this queue (it is not another's exclusive queue).
    pub fn accessible_by(&self, connection: u64) -> bool {
        self.exclusive_owner.is_none_or(|owner| owner == connection)
    }

    /// 405 for a connection that does not own this exclusive queue.
    pub fn check_access(&self, connection: u64) -> Result<(), AmqpError> {
        if self.accessible_by(connection) {
            Ok(())
        } else {
            Err(self.locked_error())
        }
    }

    /// The 405 for a use of this queue its exclusivity forbids.
    pub fn locked_error(&self) -> AmqpError {
        AmqpError::resource_locked(format!(
            "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
            self.name, self.vhost
        ))
    }
}
