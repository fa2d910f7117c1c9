//! A queue: its ready messages in delivery order, its consumers in round-robin order,
//! dispatch, and the queue extensions RabbitMQ defines (length limits, TTLs, `x-expires`,
//! priorities, dead-lettering, a quorum queue's delivery limit).
//!
//! Dispatch runs in whichever task changed the queue (a publisher enqueueing, a consumer
//! acking, a congested socket draining) under the queue's lock: the next ready message goes
//! to the next consumer in rotation that has room, and a consumer blocked by its prefetch is
//! skipped until an ack frees it. Every message carries an offset so a requeued message
//! returns to its original place.
//!
//! What the queue decides under its lock (a message expired, pushed out by a length limit,
//! rejected, over its delivery limit) becomes a [`DeadLetter`] that is routed only after the
//! lock is released ([`Queue::unlock`]), so two queues that dead-letter into each other
//! never hold both locks. Deadlines (message TTLs, `x-expires`) are kept by a timer task the
//! queue starts when it first needs one, so a message expires at its time even when no
//! client touches the queue.
//!
//! A durable queue keeps at most `memory_limit` octets of ready persistent messages in
//! memory; beyond that (and for everything recovered at start) a ready entry is only its
//! offset and metadata, and the content is read back from the store when it reaches the
//! front. A long backlog therefore costs a few dozen octets per message, not its size.

pub mod args;
pub mod consumers;
pub mod ready;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use amq_protocol::types::{AMQPValue, FieldTable};
use tokio::sync::Notify;
use tracing::error;
use warren_protocol::content::Payload;
use warren_protocol::AmqpError;
use warren_storage::{QueueStore, RecoveredMessage, StoredMessage};

use crate::broker::consumer::Consumer;
use crate::broker::dead_letter::{DeadLetter, Reason};
use crate::broker::memory::MemoryMonitor;
use crate::broker::message::{now_ms, Message};
use arc_swap::ArcSwap;
use crate::broker::vhost::VHost;
use args::{Overflow, QueueArgs};
use consumers::Consumers;
use ready::{EntryMeta, Ready, ReadyList, NEVER};

/// A message taken from the queue by basic.get.
#[derive(Debug)]
pub struct Got {
    /// Its position in the queue.
    pub offset: u64,
    /// The message as the queue holds it.
    pub msg: Arc<Message>,
    /// The message as sent (a quorum queue's redelivery carries `x-delivery-count`).
    pub wire: Arc<Message>,
    /// What the queue knew about it (it returns with it on requeue).
    pub meta: EntryMeta,
    /// Ready messages left behind.
    pub remaining: u32,
}

/// The octets a message in memory counts against a queue's memory limit.
/// A queue's settings as read for one operation.
pub enum Args {
    /// [`QueueArgs::PLAIN`].
    Plain,
    /// Set by arguments or a policy.
    Set(arc_swap::Guard<Arc<QueueArgs>>),
}

/// Where [`Args::Plain`] points.
static PLAIN: QueueArgs = QueueArgs::PLAIN;

impl std::ops::Deref for Args {
    type Target = QueueArgs;
    fn deref(&self) -> &QueueArgs {
        match self {
            Args::Plain => &PLAIN,
            Args::Set(args) => args,
        }
    }
}

fn footprint(msg: &Message) -> usize {
    msg.payload.len() + msg.exchange.len() + msg.routing_key.len()
}

/// What a queue is made of, from its declaration or its record.
#[derive(Debug)]
pub struct QueueSetup {
    /// Its name.
    pub name: String,
    /// The vhost it lives in.
    pub vhost: Weak<VHost>,
    /// The vhost's name, for error texts.
    pub vhost_name: String,
    /// The connection that owns it when declared exclusive.
    pub exclusive_owner: Option<u64>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// The declare arguments as sent.
    pub arguments: FieldTable,
    /// The same, validated.
    pub args: QueueArgs,
    /// Its message store (durable queues) and the octets of ready stored messages it may
    /// keep in memory.
    pub store: Option<(QueueStore, usize)>,
    /// The broker-wide message memory.
    pub memory: Arc<MemoryMonitor>,
    /// The broker's consumer timeout in milliseconds (0: none), unless `x-consumer-timeout`
    /// sets the queue's own.
    pub consumer_timeout: u64,
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
    /// The declare arguments as sent (redeclare equivalence compares them).
    pub arguments: FieldTable,
    /// What the arguments, with the policy that applies, ask for now (a policy change
    /// swaps it; readers take the current one without a lock).
    args: ArcSwap<QueueArgs>,
    /// `args` is [`QueueArgs::PLAIN`]: readers skip the swap's load (a few atomic
    /// operations per message, which showed in fanout profiles).
    plain: AtomicBool,
    /// The vhost, to route dead letters into and to delete an expired queue from.
    home: Weak<VHost>,
    /// This queue, for the timer task it starts.
    me: Weak<Queue>,
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
    /// Wakes the timer task when a deadline earlier than the one it sleeps to appears (or
    /// the queue goes). Shared with the task, which holds the queue itself only weakly.
    timer: Arc<Notify>,
    /// The timer task runs.
    timer_started: AtomicBool,
    /// The deadline the timer task sleeps until ([`NEVER`] when idle).
    armed: AtomicU64,
    /// When the queue was last used (x-expires), in Unix milliseconds.
    last_used: AtomicU64,
    /// Milliseconds a delivery may stay unacknowledged (0: no limit).
    consumer_timeout: AtomicU64,
    /// The broker's consumer timeout, for when neither argument nor policy sets one.
    default_consumer_timeout: u64,
    /// Deliveries acknowledged (counted by the acking channel, outside the queue lock).
    acked: AtomicU64,
    /// Publishes still to refuse (an injected fault: their publishers get basic.nack).
    refuse_next: AtomicU64,
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
    /// The `last_used` value written to the store last.
    last_used_written: u64,
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
    /// The queue is full and its x-overflow refuses publishes; the publisher is nacked.
    Rejected,
}

#[derive(Debug, Default)]
struct QueueState {
    ready: ReadyList,
    /// Footprint of the ready messages held in memory.
    ready_bytes: usize,
    /// Deadlines of messages with a per-message TTL, which may expire before they reach
    /// the head: `(expires, priority, offset)`. Entries of messages since delivered are
    /// skipped when they come up.
    deadlines: BinaryHeap<Reverse<(u64, u8, u64)>>,
    consumers: Consumers,
    /// Auto-delete applies only to a queue that has had a consumer.
    had_consumers: bool,
    deleted: bool,
    /// Messages in and out, for the management plane (counted under the lock the
    /// enqueue and the delivery take anyway).
    counts: Counts,
}

/// A queue's message counters since it was created.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    publish: u64,
    deliver: u64,
    deliver_no_ack: u64,
    redeliver: u64,
    get: u64,
    get_no_ack: u64,
}

/// What the management plane shows of a queue: counts now, and counters since creation.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueStats {
    /// Ready messages.
    pub ready: u64,
    /// Octets of ready message bodies in memory.
    pub ready_bytes: u64,
    /// Consumers.
    pub consumers: u64,
    /// Messages enqueued.
    pub publish: u64,
    /// Deliveries to consumers that acknowledge.
    pub deliver: u64,
    /// Deliveries to consumers in automatic-acknowledgement (no-ack) mode.
    pub deliver_no_ack: u64,
    /// Deliveries of messages delivered before.
    pub redeliver: u64,
    /// Messages taken with basic.get to be acknowledged.
    pub get: u64,
    /// Messages taken with basic.get in no-ack mode.
    pub get_no_ack: u64,
    /// Deliveries acknowledged.
    pub ack: u64,
}

/// More entries than this are let go on a blocking thread (a purge of a long backlog).
const LONG: usize = 10_000;

/// Dead letters decided under the lock, routed after it (usually none: no allocation).
type Letters = Vec<DeadLetter>;

impl Queue {
    /// A new, empty queue.
    pub fn create(setup: QueueSetup) -> Arc<Queue> {
        let QueueSetup { name, vhost, vhost_name, exclusive_owner, auto_delete, arguments, args, store, memory, consumer_timeout } = setup;
        let default_consumer_timeout = consumer_timeout;
        let consumer_timeout = AtomicU64::new(args.consumer_timeout.unwrap_or(consumer_timeout));
        let (store, memory_limit) = match store {
            Some((store, limit)) => (Some(store), limit),
            None => (None, usize::MAX),
        };
        let bands = args.bands();
        let single_active = args.single_active;
        let now = now_ms();
        let queue = Arc::new_cyclic(|me| Queue {
            name,
            vhost: vhost_name,
            exclusive_owner,
            auto_delete,
            arguments,
            plain: AtomicBool::new(args == QueueArgs::PLAIN),
            args: ArcSwap::from_pointee(args),
            home: vhost,
            me: me.clone(),
            store,
            memory_limit,
            next_offset: AtomicU64::new(0),
            memory,
            marks: Mutex::default(),
            timer: Arc::new(Notify::new()),
            timer_started: AtomicBool::new(false),
            armed: AtomicU64::new(NEVER),
            last_used: AtomicU64::new(now),
            consumer_timeout,
            default_consumer_timeout,
            acked: AtomicU64::new(0),
            refuse_next: AtomicU64::new(0),
            state: Mutex::new(QueueState { ready: ReadyList::new(bands), consumers: Consumers::new(single_active), ..QueueState::default() }),
        });
        if let Some(expires) = queue.args().expires {
            queue.arm(now.saturating_add(expires));
        }
        queue
    }

    /// What the arguments, with the policy that applies, ask for now.
    pub fn args(&self) -> Args {
        if self.plain.load(Ordering::Acquire) {
            Args::Plain
        } else {
            Args::Set(self.args.load())
        }
    }

    /// Takes new effective settings (a policy was set, changed or cleared), as RabbitMQ
    /// applies policy changes to existing queues: a lower drop-head length limit drops at
    /// once, an expiry starts counting, the consumer timeout changes for new deliveries.
    pub fn set_args(&self, args: QueueArgs) {
        let (expires, drop_head) = (args.expires, args.overflow == Overflow::DropHead);
        self.consumer_timeout.store(args.consumer_timeout.unwrap_or(self.default_consumer_timeout), Ordering::Relaxed);
        let plain = args == QueueArgs::PLAIN;
        self.args.store(Arc::new(args));
        self.plain.store(plain, Ordering::Release);
        let mut letters = Letters::new();
        let mut st = self.lock();
        if !st.deleted && drop_head {
            self.drop_over_limit(&mut st, &mut letters, &self.args());
        }
        self.unlock(st, letters);
        if let Some(expires) = expires {
            self.arm(now_ms().saturating_add(expires));
        }
    }

    /// The consumer timeout in milliseconds (0: none).
    pub fn consumer_timeout(&self) -> u64 {
        self.consumer_timeout.load(Ordering::Relaxed)
    }

    /// When a delivery made at `now` must be acknowledged by ([`NEVER`] without a timeout).
    pub fn ack_deadline(&self, now: u64) -> u64 {
        let timeout = self.consumer_timeout.load(Ordering::Relaxed);
        if timeout == 0 {
            NEVER
        } else {
            now.saturating_add(timeout)
        }
    }

    /// Counts a delivery held unacknowledged toward the memory alarm (a consumer that never
    /// acks must not grow the broker unnoticed).
    pub fn hold_unacked(&self, msg: &Message) {
        self.memory.add(footprint(msg));
    }

    /// Stops counting an unacknowledged delivery (acked, rejected or requeued).
    pub fn release_unacked(&self, msg: &Message) {
        self.memory.sub(footprint(msg));
    }

    /// Declared durable (durable queues, and only they, have a store).
    pub fn durable(&self) -> bool {
        self.store.is_some()
    }

    /// The store, when this queue keeps `msg` on disk: persistent messages of a durable
    /// queue, and every message of a quorum queue.
    fn store_for(&self, msg: &Message, args: &QueueArgs) -> Option<&QueueStore> {
        self.store.as_ref().filter(|_| msg.persistent || args.kind.stores_every_message())
    }

    /// The band a message of `priority` goes to.
    fn band_of(&self, priority: u8) -> u8 {
        self.args().max_priority.map_or(0, |max| priority.min(max))
    }

    /// The metadata of a message entering the queue at `now`: its TTL is the lower of its
    /// own and the queue's.
    fn meta_for(&self, msg: &Message, now: u64, args: &QueueArgs) -> EntryMeta {
        let ttl = match (msg.ttl(), args.message_ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        EntryMeta {
            redelivered: false,
            priority: args.max_priority.map_or(0, |max| msg.priority.min(max)),
            body_len: u32::try_from(msg.body().len()).unwrap_or(u32::MAX),
            expires: ttl.map_or(NEVER, |t| now.saturating_add(t)),
            returns: 0,
        }
    }

    /// A ready entry for `msg`, paged out (content left in the store) when the queue is over
    /// its memory limit and the store has the message.
    fn ready_entry(&self, st: &mut QueueState, offset: u64, msg: Arc<Message>, meta: EntryMeta, args: &QueueArgs) -> Ready {
        let size = footprint(&msg);
        if self.store_for(&msg, args).is_some() && st.ready_bytes + size > self.memory_limit {
            return Ready { offset, msg: None, meta };
        }
        st.ready_bytes += size;
        self.memory.add(size);
        Ready { offset, msg: Some(msg), meta }
    }

    /// Drops a ready entry that leaves without being delivered (expired, pushed out by a
    /// length limit, purged): its memory, its marks and its stored copy. With `reason` it
    /// becomes a dead letter when the queue has a dead-letter exchange (its content read
    /// back from the store if it was paged out).
    fn discard(&self, st: &mut QueueState, r: Ready, reason: Option<Reason>, letters: &mut Letters) {
        self.forget(st, &r);
        if let (Some(reason), Some(target)) = (reason, &self.args().dead_letter) {
            let msg = match &r.msg {
                Some(m) => Some(Arc::clone(m)),
                None => self.load(r.offset, r.meta.priority).ok().flatten(),
            };
            if let Some(msg) = msg {
                letters.push(DeadLetter { msg, reason, queue: self.name.clone(), target: target.clone() });
            }
        }
        // A paged-out message is in the store by definition. Its removal joins the batch
        // the mark writer applies off the async workers: a purge or a mass expiry of a long
        // backlog costs the queue's lock no disk work.
        let stored = r.msg.as_ref().map_or(self.store.is_some(), |m| self.store_for(m, &self.args()).is_some());
        let mut marks = self.marks();
        marks.pending.remove(&r.offset);
        let marked = marks.written.remove(&r.offset);
        if stored {
            marks.removals.push((r.offset, marked));
        }
    }

    /// Drops many ready entries at once (expiry): with a dead-letter exchange each becomes a
    /// dead letter; without one, their accounting is settled in one step and their store
    /// removals join the mark writer's batch, so a mass expiry costs little under the lock.
    fn discard_all(&self, st: &mut QueueState, entries: Vec<Ready>, reason: Option<Reason>, letters: &mut Letters) {
        if entries.is_empty() {
            return;
        }
        if reason.is_some() && self.args().dead_letter.is_some() {
            for r in entries {
                self.discard(st, r, reason, letters);
            }
            return;
        }
        let in_memory: usize = entries.iter().filter_map(|r| r.msg.as_deref()).map(footprint).sum();
        st.ready_bytes -= in_memory;
        self.memory.sub(in_memory);
        match (self.me.upgrade(), tokio::runtime::Handle::try_current()) {
            (Some(me), Ok(rt)) if entries.len() > LONG => {
                rt.spawn_blocking(move || me.unstore(&entries));
            }
            _ => self.unstore(&entries),
        }
    }

    /// Queues the store removal of discarded entries (those the store holds).
    fn unstore(&self, entries: &[Ready]) {
        if self.store.is_none() {
            return;
        }
        let mut marks = self.marks();
        let Marks { pending, written, removals, .. } = &mut *marks;
        for r in entries {
            let stored = r.msg.as_ref().is_none_or(|m| self.store_for(m, &self.args()).is_some());
            if stored {
                pending.remove(&r.offset);
                removals.push((r.offset, written.remove(&r.offset)));
            }
        }
    }

    /// Expires, at `now`, every ready message whose deadline has passed: those at the
    /// heads (a queue TTL keeps them in order) and those with an earlier per-message TTL
    /// further back.
    fn expire(&self, st: &mut QueueState, now: u64, letters: &mut Letters) {
        let mut expired = Vec::new();
        if st.ready.earliest_head_expiry() <= now {
            st.ready.take_expired_heads(now, &mut expired);
        }
        while let Some(&Reverse((at, priority, offset))) = st.deadlines.peek() {
            if at > now {
                break;
            }
            st.deadlines.pop();
            if let Some(r) = st.ready.remove(priority, offset) {
                expired.push(r);
            }
        }
        self.discard_all(st, expired, Some(Reason::Expired), letters);
        // Entries of delivered messages pile up behind a long TTL: rebuild from what is
        // still ready once they dominate.
        if st.deadlines.len() > 1024 && st.deadlines.len() > 2 * st.ready.len() {
            let mut heap = BinaryHeap::new();
            st.ready.for_each(|r| {
                if r.meta.expires != NEVER {
                    heap.push(Reverse((r.meta.expires, r.meta.priority, r.offset)));
                }
            });
            st.deadlines = heap;
        }
    }

    /// The next deadline the timer must wake for: a message expiry, or the queue's own
    /// expiry while it has no consumers.
    fn next_deadline(&self, st: &QueueState) -> u64 {
        let mut at = st.ready.earliest_head_expiry();
        if let Some(Reverse((d, _, _))) = st.deadlines.peek() {
            at = at.min(*d);
        }
        if let Some(expires) = self.args().expires {
            if st.consumers.is_empty() {
                at = at.min(self.last_used.load(Ordering::Relaxed).saturating_add(expires));
            }
        }
        at
    }

    /// Makes sure the timer wakes by `deadline`.
    fn arm(&self, deadline: u64) {
        if deadline == NEVER || deadline >= self.armed.load(Ordering::Relaxed) {
            return;
        }
        self.armed.fetch_min(deadline, Ordering::Relaxed);
        if !self.timer_started.swap(true, Ordering::AcqRel) {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(run_timer(self.me.clone(), Arc::clone(&self.timer)));
                }
                Err(_) => self.timer_started.store(false, Ordering::Release),
            }
        }
        self.timer.notify_one();
    }

    /// The timer's work: expires what is due, deletes the queue when `x-expires` has run
    /// out, and returns when to come back.
    fn housekeeping(&self) -> u64 {
        let now = now_ms();
        let mut letters = Letters::new();
        let mut st = self.lock();
        if st.deleted {
            return NEVER;
        }
        self.expire(&mut st, now, &mut letters);
        let unused = self.args().expires.is_some_and(|e| st.consumers.is_empty() && now >= self.last_used.load(Ordering::Relaxed).saturating_add(e));
        let next = self.next_deadline(&st);
        // Published under the lock: an enqueue after it sees this deadline and wakes the
        // timer if its own is earlier; one before it is already counted in `next`.
        self.armed.store(if unused { NEVER } else { next }, Ordering::Relaxed);
        self.unlock(st, letters);
        if unused {
            if let (Some(home), Some(me)) = (self.home.upgrade(), self.me.upgrade()) {
                tracing::info!(queue = %self.name, vhost = %self.vhost, "queue expired (x-expires); deleting it");
                home.delete_queue_now(&me);
            }
            return NEVER;
        }
        next
    }

    /// Releases the lock, then routes the dead letters decided under it.
    fn unlock(&self, st: MutexGuard<'_, QueueState>, letters: Letters) {
        drop(st);
        if !letters.is_empty() {
            if let Some(home) = self.home.upgrade() {
                home.dead_letter(letters);
            }
        }
    }

    /// Notes a use of the queue (declare, basic.get, a consumer), which restarts the
    /// `x-expires` countdown.
    pub fn touch(&self) {
        if self.args().expires.is_some() {
            self.last_used.store(now_ms(), Ordering::Relaxed);
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
    fn load(&self, offset: u64, priority: u8) -> Result<Option<Arc<Message>>, ()> {
        let Some(store) = self.store.as_ref() else { return Ok(None) };
        match store.get_message(offset) {
            Ok(Some(m)) => Ok(Some(Arc::new(Message {
                exchange: m.exchange,
                routing_key: m.routing_key,
                payload: Payload::new(m.properties, m.body),
                persistent: true,
                from_store: true,
                priority,
                extra: None,
            }))),
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
        // A queue without a store has nothing to note, and skips loading its settings.
        if self.store.is_none() || self.store_for(msg, &self.args()).is_none() {
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
        if self.store.is_none() {
            return;
        }
        let Some(store) = self.store_for(msg, &self.args()) else { return };
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

    /// A delivery rejected without requeue (basic.reject / basic.nack): settled, and
    /// dead-lettered with reason `rejected` when the queue has a dead-letter exchange.
    pub fn rejected(&self, offset: u64, msg: &Arc<Message>) {
        self.settled(offset, msg);
        if let Some(target) = &self.args().dead_letter {
            if let Some(home) = self.home.upgrade() {
                home.dead_letter(vec![DeadLetter { msg: Arc::clone(msg), reason: Reason::Rejected, queue: self.name.clone(), target: target.clone() }]);
            }
        }
    }

    /// Removes the messages settled or discarded since the last call from the store, then
    /// writes the delivery marks of messages delivered since the last call and still
    /// unacknowledged, and the time of last use when `x-expires` counts it.
    /// The broker calls this every 100 ms (on a blocking thread) and at shutdown.
    pub fn write_marks(&self) {
        let Some(store) = &self.store else { return };
        // Settled messages are nobody's any more: their removal runs without the lock, so
        // a long batch (a purged backlog) never holds up acks and deliveries.
        let removals = std::mem::take(&mut self.marks().removals);
        if !removals.is_empty() {
            if let Err(e) = store.remove_messages(&removals) {
                error!(queue = %self.name, error = %e, "cannot remove settled messages from the store");
            }
        }
        let mut marks = self.marks();
        let Marks { pending, written, last_used_written, .. } = &mut *marks;
        for offset in pending.drain() {
            match store.mark_delivered(offset) {
                Ok(true) => {
                    written.insert(offset);
                }
                Ok(false) => {}
                Err(e) => error!(queue = %self.name, error = %e, "cannot record a delivery in the store"),
            }
        }
        if self.args().expires.is_some() {
            let used = self.last_used.load(Ordering::Relaxed);
            if used != *last_used_written {
                match store.put_last_used(used) {
                    Ok(()) => *last_used_written = used,
                    Err(e) => error!(queue = %self.name, error = %e, "cannot record the queue's last use"),
                }
            }
        }
    }

    fn marks(&self) -> MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts recovered messages back at start-up, in offset order, paged out: their content
    /// is read from the store as they are delivered. `last_used` is the stored time of last
    /// use (the `x-expires` countdown goes on from it).
    pub fn restore(&self, messages: Vec<RecoveredMessage>, last_used: Option<u64>) {
        let mut st = self.lock();
        st.ready.reserve(0, messages.len());
        let mut marks = self.marks();
        for m in messages {
            self.next_offset.fetch_max(m.offset + 1, Ordering::Relaxed);
            if m.delivered {
                marks.written.insert(m.offset);
            }
            let meta = EntryMeta {
                redelivered: m.delivered,
                priority: self.band_of(m.priority),
                body_len: m.body_len,
                expires: m.expires,
                returns: u32::from(m.delivered),
            };
            if meta.expires != NEVER {
                st.deadlines.push(Reverse((meta.expires, meta.priority, m.offset)));
            }
            st.ready.insert(Ready { offset: m.offset, msg: None, meta });
        }
        if let Some(used) = last_used {
            self.last_used.store(used, Ordering::Relaxed);
            marks.last_used_written = used;
        }
        drop(marks);
        let next = self.next_deadline(&st);
        drop(st);
        self.arm(next);
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when one more message of `body_len` octets would break a length limit.
    fn full(st: &QueueState, body_len: u64, args: &QueueArgs) -> bool {
        args.max_length.is_some_and(|max| st.ready.len() as u64 >= max) || args.max_length_bytes.is_some_and(|max| st.ready.bytes() + body_len > max)
    }

    /// Appends a message (storing it first when the queue keeps it on disk) and
    /// dispatches. The store write happens before the queue lock is taken, so publishers
    /// and consumers of a durable queue do not wait on each other's disk work.
    pub fn enqueue(&self, msg: Arc<Message>) -> Enqueued {
        if self.refuse_next.load(Ordering::Relaxed) != 0 && self.take_refusal() {
            return Enqueued::Failed;
        }
        // The settings as they are now, loaded once for the whole enqueue.
        let args = self.args();
        let timed = msg.ttl().is_some() || args.message_ttl.is_some();
        let now = if timed { now_ms() } else { 0 };
        let mut letters = Letters::new();
        if args.overflow != Overflow::DropHead && (args.max_length.is_some() || args.max_length_bytes.is_some()) {
            let mut st = self.lock();
            if timed {
                self.expire(&mut st, now, &mut letters);
            }
            if Self::full(&st, msg.body().len() as u64, &args) {
                if let (Overflow::RejectPublishDlx, Some(target)) = (args.overflow, &args.dead_letter) {
                    letters.push(DeadLetter { msg, reason: Reason::Maxlen, queue: self.name.clone(), target: target.clone() });
                }
                self.unlock(st, letters);
                return Enqueued::Rejected;
            }
        }
        let offset = self.next_offset.fetch_add(1, Ordering::Relaxed);
        let meta = self.meta_for(&msg, now, &args);
        let outcome = match self.store_for(&msg, &args) {
            Some(store) => {
                let stored = StoredMessage {
                    exchange: msg.exchange.clone(),
                    routing_key: msg.routing_key.clone(),
                    properties: msg.payload.properties_bytes(),
                    body: msg.payload.body_bytes(),
                    expires: meta.expires,
                    priority: meta.priority,
                };
                if let Err(e) = store.put_message(offset, &stored) {
                    error!(queue = %self.name, error = %e, "cannot store a message; it will be nacked");
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
        st.counts.publish += 1;
        if timed {
            self.expire(&mut st, now, &mut letters);
        }
        // Fast path: nothing waiting, so the message can go straight to a consumer.
        if st.ready.is_empty() && self.offer(&mut st, offset, &msg, meta) {
            self.unlock(st, letters);
            return outcome;
        }
        if meta.expires <= now {
            // A TTL of 0: delivered at once or not at all.
            let r = Ready { offset, msg: Some(msg), meta };
            self.discard_new(&mut st, r, &mut letters);
            self.unlock(st, letters);
            return outcome;
        }
        if msg.ttl().is_some() {
            st.deadlines.push(Reverse((meta.expires, meta.priority, offset)));
        }
        let entry = self.ready_entry(&mut st, offset, msg, meta, &args);
        // Another publisher may have taken a later offset and got the lock first.
        st.ready.insert(entry);
        self.drop_over_limit(&mut st, &mut letters, &args);
        self.dispatch_locked(&mut st, &mut letters);
        if meta.expires != NEVER {
            let next = self.next_deadline(&st);
            self.unlock(st, letters);
            self.arm(next);
        } else {
            self.unlock(st, letters);
        }
        outcome
    }

    /// x-overflow drop-head: the messages at the head make room (dead-lettered `maxlen`).
    fn drop_over_limit(&self, st: &mut QueueState, letters: &mut Letters, args: &QueueArgs) {
        if args.max_length.is_none() && args.max_length_bytes.is_none() {
            return;
        }
        while args.max_length.is_some_and(|max| st.ready.len() as u64 > max) || args.max_length_bytes.is_some_and(|max| st.ready.bytes() > max) {
            match st.ready.pop_front() {
                Some(r) => self.discard(st, r, Some(Reason::Maxlen), letters),
                None => break,
            }
        }
    }

    /// Discards a message that never became ready (counted nowhere yet).
    fn discard_new(&self, st: &mut QueueState, r: Ready, letters: &mut Letters) {
        // `discard` un-counts the memory of an entry with content; count it first.
        if let Some(msg) = &r.msg {
            let size = footprint(msg);
            st.ready_bytes += size;
            self.memory.add(size);
        }
        self.discard(st, r, Some(Reason::Expired), letters);
    }

    /// Offers one message to the consumers in order (priority, then rotation); true if one
    /// took it. Consumers that cannot are parked until something frees them.
    fn offer(&self, st: &mut QueueState, offset: u64, msg: &Arc<Message>, meta: EntryMeta) -> bool {
        if st.consumers.none_ready() {
            return false;
        }
        // A quorum queue's redelivery carries its count; the queue keeps the plain message.
        let counted = (meta.returns > 0 && self.args().kind.counts_deliveries()).then(|| with_delivery_count(msg, meta.returns));
        let wire = counted.as_ref().unwrap_or(msg);
        let mut no_ack = false;
        let took = st.consumers.offer(|c| {
            if c.try_deliver(offset, msg, wire, meta) {
                self.delivered(offset, msg, c.no_ack);
                no_ack = c.no_ack;
                true
            } else {
                false
            }
        });
        if took {
            if no_ack {
                st.counts.deliver_no_ack += 1;
            } else {
                st.counts.deliver += 1;
            }
            st.counts.redeliver += u64::from(meta.redelivered);
        }
        took
    }

    fn dispatch_locked(&self, st: &mut QueueState, letters: &mut Letters) {
        if st.consumers.none_ready() {
            return;
        }
        if st.ready.earliest_head_expiry() != NEVER || !st.deadlines.is_empty() {
            self.expire(st, now_ms(), letters);
        }
        while let Some(front) = st.ready.front() {
            let (offset, meta) = (front.offset, front.meta);
            let msg = match &front.msg {
                Some(msg) => Arc::clone(msg),
                None => match self.load(offset, meta.priority) {
                    Ok(Some(msg)) => msg,
                    Ok(None) => {
                        st.ready.pop_front();
                        continue;
                    }
                    Err(()) => return,
                },
            };
            if !self.offer(st, offset, &msg, meta) {
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

    /// Puts every parked consumer back in rotation and delivers ready messages to those
    /// with room (after a channel-wide prefetch frees room or a socket drains).
    pub fn dispatch(&self) {
        let mut st = self.lock();
        st.consumers.unpark_all();
        if !st.ready.is_empty() {
            let mut letters = Letters::new();
            self.dispatch_locked(&mut st, &mut letters);
            self.unlock(st, letters);
        }
    }

    /// Puts a parked consumer back in rotation (an ack freed its prefetch) and delivers.
    pub fn unpark(&self, consumer: &Arc<Consumer>) {
        let mut st = self.lock();
        st.consumers.unpark(consumer);
        if !st.ready.is_empty() {
            let mut letters = Letters::new();
            self.dispatch_locked(&mut st, &mut letters);
            self.unlock(st, letters);
        }
    }

    /// Puts delivered messages back in their original places, marked redelivered; a
    /// quorum queue dead-letters (or drops) a message returned more often than its
    /// `x-delivery-limit`.
    pub fn requeue(&self, messages: impl IntoIterator<Item = (u64, Arc<Message>, EntryMeta)>) {
        let mut st = self.lock();
        if st.deleted {
            return;
        }
        let mut letters = Letters::new();
        let mut over_limit = Vec::new();
        for (offset, msg, mut meta) in messages {
            meta.redelivered = true;
            meta.returns = meta.returns.saturating_add(1);
            if self.args().delivery_limit.is_some_and(|limit| u64::from(meta.returns) > limit) {
                over_limit.push((offset, msg));
                continue;
            }
            if meta.expires != NEVER {
                st.deadlines.push(Reverse((meta.expires, meta.priority, offset)));
            }
            let entry = self.ready_entry(&mut st, offset, msg, meta, &self.args());
            st.ready.insert(entry);
        }
        // The length limit applies to requeued messages too (drop-head takes the head, which
        // may be one just requeued), as in RabbitMQ.
        let args = self.args();
        if args.overflow == Overflow::DropHead {
            self.drop_over_limit(&mut st, &mut letters, &args);
        }
        self.dispatch_locked(&mut st, &mut letters);
        let next = self.next_deadline(&st);
        for (offset, msg) in over_limit {
            self.settled(offset, &msg);
            if let Some(target) = &self.args().dead_letter {
                letters.push(DeadLetter { msg, reason: Reason::DeliveryLimit, queue: self.name.clone(), target: target.clone() });
            }
        }
        self.unlock(st, letters);
        self.arm(next);
    }

    /// Takes the next ready message for basic.get, with the count left behind.
    pub fn get(&self, no_ack: bool) -> Option<Got> {
        self.touch();
        let mut st = self.lock();
        let mut letters = Letters::new();
        self.expire(&mut st, now_ms(), &mut letters);
        let got = loop {
            let Some(r) = st.ready.pop_front() else { break None };
            self.forget(&mut st, &r);
            let msg = match r.msg {
                Some(msg) => msg,
                None => match self.load(r.offset, r.meta.priority) {
                    Ok(Some(msg)) => msg,
                    Ok(None) => continue,
                    Err(()) => {
                        // Unreadable for now: it stays first in line.
                        st.ready.push_front(r);
                        break None;
                    }
                },
            };
            let wire = (r.meta.returns > 0 && self.args().kind.counts_deliveries()).then(|| with_delivery_count(&msg, r.meta.returns));
            if no_ack {
                st.counts.get_no_ack += 1;
            } else {
                st.counts.get += 1;
            }
            st.counts.redeliver += u64::from(r.meta.redelivered);
            break Some(Got { offset: r.offset, wire: wire.unwrap_or_else(|| Arc::clone(&msg)), msg, meta: r.meta, remaining: st.ready.len() as u32 });
        };
        self.unlock(st, letters);
        got
    }

    /// Drops every ready message; returns how many. Purged messages are not dead-lettered
    /// (RabbitMQ does not either).
    pub fn purge(&self) -> u32 {
        let mut st = self.lock();
        let all = st.ready.take();
        st.deadlines = BinaryHeap::new();
        self.forget_all(&mut st);
        drop(st);
        let n = all.len();
        // Marking a long backlog for removal (the store work itself is the mark writer's)
        // and freeing it happen outside the lock, and for a long one on a blocking thread:
        // an async worker busy for long is half the broker on two cores.
        match (self.me.upgrade(), tokio::runtime::Handle::try_current()) {
            (Some(me), Ok(rt)) if n > LONG => {
                rt.spawn_blocking(move || me.unstore_list(all));
            }
            _ => self.unstore_list(all),
        }
        n as u32
    }

    /// [`Self::unstore`] for a whole taken list.
    fn unstore_list(&self, list: ReadyList) {
        if self.store.is_none() {
            return;
        }
        let mut marks = self.marks();
        let Marks { pending, written, removals, .. } = &mut *marks;
        list.into_each(|r| {
            if r.msg.as_ref().is_none_or(|m| self.store_for(m, &self.args()).is_some()) {
                pending.remove(&r.offset);
                removals.push((r.offset, written.remove(&r.offset)));
            }
        });
    }

    /// Ready messages (expired ones are dead-lettered first).
    pub fn message_count(&self) -> u32 {
        let mut st = self.lock();
        let mut letters = Letters::new();
        if st.ready.earliest_head_expiry() != NEVER || !st.deadlines.is_empty() {
            self.expire(&mut st, now_ms(), &mut letters);
        }
        let n = st.ready.len() as u32;
        self.unlock(st, letters);
        n
    }

    /// Counts and counters for the management plane (expired messages are not dropped
    /// here: listing queues must not do their work).
    pub fn stats(&self) -> QueueStats {
        let st = self.lock();
        let c = st.counts;
        QueueStats {
            ready: st.ready.len() as u64,
            ready_bytes: st.ready_bytes as u64,
            consumers: st.consumers.len() as u64,
            publish: c.publish,
            deliver: c.deliver,
            deliver_no_ack: c.deliver_no_ack,
            redeliver: c.redeliver,
            get: c.get,
            get_no_ack: c.get_no_ack,
            ack: self.acked.load(Ordering::Relaxed),
        }
    }

    /// Refuses the next `n` messages published to this queue as if its store failed
    /// (their publishers get basic.nack in confirm mode): an injected fault.
    pub fn refuse_publishes(&self, n: u64) {
        self.refuse_next.store(n, Ordering::Relaxed);
    }

    /// Takes one of the refusals [`Self::refuse_publishes`] set, if any are left.
    fn take_refusal(&self) -> bool {
        self.refuse_next.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
    }

    /// The first `n` ready messages in delivery order, left where they are (nothing is
    /// delivered, redelivered or expired): the test backdoor's peek. Paged-out contents are
    /// read back from the store after the lock is released.
    pub fn peek(&self, n: usize) -> Vec<(Arc<Message>, EntryMeta)> {
        let seen: Vec<(u64, Option<Arc<Message>>, EntryMeta)> = self.lock().ready.iter().take(n).map(|r| (r.offset, r.msg.clone(), r.meta)).collect();
        seen.into_iter()
            .filter_map(|(offset, msg, meta)| match msg {
                Some(m) => Some((m, meta)),
                None => self.load(offset, meta.priority).ok().flatten().map(|m| (m, meta)),
            })
            .collect()
    }

    /// Counts `n` acknowledged deliveries.
    pub fn count_acks(&self, n: u64) {
        self.acked.fetch_add(n, Ordering::Relaxed);
    }

    /// Consumers, with whether each receives (single active consumer: one does).
    pub fn consumers(&self) -> Vec<(Arc<Consumer>, bool)> {
        self.lock().consumers.listed()
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
        st.consumers.add(consumer);
        st.had_consumers = true;
        let mut letters = Letters::new();
        self.dispatch_locked(&mut st, &mut letters);
        self.unlock(st, letters);
        Ok(())
    }

    /// Removes a consumer. Returns true when the queue is auto-delete and has just lost its
    /// last consumer, so the caller deletes it.
    pub fn remove_consumer(&self, consumer: &Arc<Consumer>) -> bool {
        let mut st = self.lock();
        st.consumers.remove(consumer);
        let last = st.consumers.is_empty() && !st.deleted;
        let auto_delete = self.auto_delete && last && st.had_consumers;
        // With single active consumer the next one may just have taken over.
        let mut letters = Letters::new();
        if self.args().single_active && !st.ready.is_empty() {
            self.dispatch_locked(&mut st, &mut letters);
        }
        self.unlock(st, letters);
        if last {
            // The x-expires countdown starts when the last consumer goes.
            self.touch();
            if let Some(expires) = self.args().expires {
                self.arm(now_ms().saturating_add(expires));
            }
        }
        auto_delete
    }

    /// Marks the queue deleted; returns its ready message count and its consumers (to be
    /// cancelled).
    pub fn mark_deleted(&self) -> (u32, Vec<Arc<Consumer>>) {
        let mut st = self.lock();
        st.deleted = true;
        let count = st.ready.len() as u32;
        let backlog = st.ready.take();
        st.deadlines = BinaryHeap::new();
        self.forget_all(&mut st);
        // The store forgets the whole queue; nothing is left to mark.
        *self.marks() = Marks::default();
        let consumers = st.consumers.drain();
        drop(st);
        // A long backlog is freed off the async workers.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if backlog.len() > LONG => {
                rt.spawn_blocking(move || drop(backlog));
            }
            _ => drop(backlog),
        }
        self.timer.notify_one();
        (count, consumers)
    }

    /// True once deleted.
    fn is_deleted(&self) -> bool {
        self.lock().deleted
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

impl Drop for Queue {
    fn drop(&mut self) {
        // Lets the timer task see the queue is gone and end.
        self.timer.notify_one();
    }
}

/// The timer task of one queue: sleeps until the next deadline (or until woken for an
/// earlier one), runs [`Queue::housekeeping`], and ends with the queue. It holds the queue
/// only while working, so a queue that is dropped (deleted, or its broker stopped) takes
/// its store with it.
async fn run_timer(queue: Weak<Queue>, timer: Arc<Notify>) {
    loop {
        let notified = timer.notified();
        tokio::pin!(notified);
        // Registered before the deadline is computed, so an `arm` in between is not lost.
        notified.as_mut().enable();
        let deadline = {
            let Some(q) = queue.upgrade() else { return };
            if q.is_deleted() {
                return;
            }
            let deadline = q.housekeeping();
            if q.is_deleted() {
                return;
            }
            deadline
        };
        if deadline == NEVER {
            notified.await;
        } else {
            let wait = Duration::from_millis(deadline.saturating_sub(now_ms()));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The message with a quorum queue's `x-delivery-count` header (its returns so far).
fn with_delivery_count(msg: &Arc<Message>, returns: u32) -> Arc<Message> {
    let Some(props) = warren_protocol::properties::decode(msg.properties()) else { return Arc::clone(msg) };
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(i64::from(returns)));
    let props = props.with_headers(headers);
    Arc::new(Message { payload: msg.payload.with_properties(warren_protocol::properties::encode(&props).into()), ..Message::clone(msg) })
}
