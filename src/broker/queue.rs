//! A queue: its ready messages in order, its consumers in round-robin order, and dispatch.
//!
//! Dispatch runs in whichever task changed the queue (a publisher enqueueing, a consumer
//! acking, a channel re-enabling flow) under the queue's lock: the next ready message goes
//! to the next consumer in rotation that has room, and a consumer blocked by its prefetch is
//! skipped until an ack frees it. Every message carries an offset so a requeued message
//! returns to its original place.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use amq_protocol::types::FieldTable;
use tracing::error;
use warren_protocol::AmqpError;
use warren_storage::{Store, StoredMessage};

use crate::broker::consumer::Consumer;
use crate::broker::message::Message;

/// A ready (not yet delivered) message.
#[derive(Debug, Clone)]
pub struct Ready {
    /// Its position in the queue, kept across redeliveries.
    pub offset: u64,
    /// The message.
    pub msg: Arc<Message>,
    /// True once it has been delivered and returned.
    pub redelivered: bool,
}

/// A queue of a virtual host.
#[derive(Debug)]
pub struct Queue {
    /// Its name.
    pub name: String,
    /// The vhost it lives in, for error texts.
    pub vhost: String,
    /// Declared durable.
    pub durable: bool,
    /// The connection that owns it when declared exclusive.
    pub exclusive_owner: Option<u64>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// The declare arguments.
    pub arguments: FieldTable,
    /// Where its persistent messages are kept: set for durable, non-exclusive queues.
    store: Option<Store>,
    state: Mutex<QueueState>,
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
}

#[derive(Debug, Default)]
struct QueueState {
    ready: VecDeque<Ready>,
    next_offset: u64,
    consumers: VecDeque<Arc<Consumer>>,
    /// Auto-delete applies only to a queue that has had a consumer.
    had_consumers: bool,
    deleted: bool,
}

impl Queue {
    /// A new, empty queue.
    pub fn new(name: String, vhost: String, durable: bool, exclusive_owner: Option<u64>, auto_delete: bool, arguments: FieldTable, store: Option<Store>) -> Self {
        Queue { name, vhost, durable, exclusive_owner, auto_delete, arguments, store, state: Mutex::new(QueueState::default()) }
    }

    /// The store, when this queue keeps `msg` on disk.
    fn store_for(&self, msg: &Message) -> Option<&Store> {
        self.store.as_ref().filter(|_| msg.persistent)
    }

    /// Records that a message went to a consumer: a no-ack delivery is settled at once,
    /// otherwise it is marked delivered so a restart brings it back redelivered.
    pub fn delivered(&self, offset: u64, msg: &Message, settled: bool) {
        if let Some(store) = self.store_for(msg) {
            let result = if settled { store.remove_message(&self.name, offset) } else { store.mark_delivered(&self.name, offset) };
            if let Err(e) = result {
                error!(queue = %self.name, error = %e, "cannot record a delivery in the store");
            }
        }
    }

    /// Forgets an acknowledged (or dropped) message.
    pub fn settled(&self, offset: u64, msg: &Message) {
        if let Some(store) = self.store_for(msg) {
            if let Err(e) = store.remove_message(&self.name, offset) {
                error!(queue = %self.name, error = %e, "cannot remove an acknowledged message from the store");
            }
        }
    }

    /// Puts recovered messages back at start-up, in offset order.
    pub fn restore(&self, messages: impl IntoIterator<Item = (u64, Arc<Message>, bool)>) {
        let mut st = self.lock();
        for (offset, msg, redelivered) in messages {
            st.next_offset = st.next_offset.max(offset + 1);
            st.ready.push_back(Ready { offset, msg, redelivered });
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a message (storing it first when persistent in a durable queue) and
    /// dispatches.
    pub fn enqueue(&self, msg: Arc<Message>) -> Enqueued {
        let mut st = self.lock();
        if st.deleted {
            return Enqueued::Gone;
        }
        let offset = st.next_offset;
        let outcome = match self.store_for(&msg) {
            Some(store) => {
                let stored = StoredMessage {
                    exchange: msg.exchange.clone(),
                    routing_key: msg.routing_key.clone(),
                    properties: msg.properties.clone(),
                    body: msg.body.clone(),
                };
                if let Err(e) = store.put_message(&self.name, offset, &stored) {
                    error!(queue = %self.name, error = %e, "cannot store a persistent message; it will be nacked");
                    return Enqueued::Failed;
                }
                Enqueued::Stored
            }
            None => Enqueued::Transient,
        };
        st.next_offset += 1;
        // Fast path: nothing waiting, so the message can go straight to a consumer.
        if st.ready.is_empty() && self.offer(&mut st, offset, &msg, false) {
            return outcome;
        }
        st.ready.push_back(Ready { offset, msg, redelivered: false });
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
        while let Some(front) = st.ready.front() {
            let (offset, msg, redelivered) = (front.offset, Arc::clone(&front.msg), front.redelivered);
            if !self.offer(st, offset, &msg, redelivered) {
                return;
            }
            st.ready.pop_front();
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
            st.ready.insert(pos, Ready { offset, msg, redelivered: true });
        }
        self.dispatch_locked(&mut st);
    }

    /// Takes the next ready message for basic.get, with the count left behind.
    pub fn get(&self) -> Option<(Ready, u32)> {
        let mut st = self.lock();
        let ready = st.ready.pop_front()?;
        Some((ready, st.ready.len() as u32))
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> u32 {
        let mut st = self.lock();
        let n = st.ready.len();
        for r in st.ready.drain(..) {
            if let Some(store) = self.store_for(&r.msg) {
                if let Err(e) = store.remove_message(&self.name, r.offset) {
                    error!(queue = %self.name, error = %e, "cannot purge a message from the store");
                }
            }
        }
        n as u32
    }

    /// Ready messages.
    pub fn message_count(&self) -> u32 {
        self.lock().ready.len() as u32
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
