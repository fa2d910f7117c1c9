//! The delivery side of a channel, shared between the channel's connection and the queues
//! that deliver to it: delivery tags, unacknowledged messages, prefetch limits, and the
//! channel's consumers.
//!
//! A queue delivering a message (from whichever task enqueued it) locks the queue, then the
//! channel's [`DeliveryState`], then the connection's outbound buffer; the channel's own task
//! never holds its delivery lock while taking a queue lock, so the order cannot invert.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::broker::message::Message;
use crate::broker::queue::args::QueueType;
use crate::broker::queue::ready::EntryMeta;
use crate::broker::queue::Queue;
use crate::config::Compat;
use crate::outbound::Outbound;

/// A consumer created by `basic.consume`.
#[derive(Debug)]
pub struct Consumer {
    /// The consumer tag, unique on its channel.
    pub tag: String,
    /// The channel it delivers to.
    pub channel: Arc<ChannelDelivery>,
    /// The queue it consumes from.
    pub queue: Arc<Queue>,
    /// no-ack: deliveries are settled when sent.
    pub no_ack: bool,
    /// Exclusive consumer: no other consumer may use the queue.
    pub exclusive: bool,
    /// Its prefetch limit (basic.qos with global=false before consume); 0 is unlimited.
    pub prefetch: u32,
    /// Its priority (`x-priority`; 0 by default): higher ones are served first.
    pub priority: i32,
    /// Deliveries to it not yet acknowledged.
    unacked: AtomicU32,
}

impl Consumer {
    /// A consumer on `channel` for `queue`.
    pub fn new(tag: String, channel: Arc<ChannelDelivery>, queue: Arc<Queue>, no_ack: bool, exclusive: bool, prefetch: u32, priority: i32) -> Self {
        Consumer { tag, channel, queue, no_ack, exclusive, prefetch, priority, unacked: AtomicU32::new(0) }
    }

    /// Delivers `msg` if this consumer and its channel have room; `false` if blocked (by
    /// prefetch, a congested socket, or a closed channel). `wire` is what is sent, `msg`
    /// what the queue holds (they differ when a quorum queue adds `x-delivery-count`).
    pub fn try_deliver(self: &Arc<Self>, offset: u64, msg: &Arc<Message>, wire: &Message, meta: EntryMeta) -> bool {
        let mut state = self.channel.lock();
        if state.closed {
            return false;
        }
        if !self.no_ack {
            // unacked only grows under the channel's delivery lock (it shrinks in
            // `release`, which can only make room).
            if self.prefetch != 0 && self.unacked.load(Ordering::Relaxed) >= self.prefetch {
                return false;
            }
            if state.prefetch_global != 0 && (state.unacked.len() + state.tx_held) as u32 >= state.prefetch_global {
                return false;
            }
        }
        if self.channel.outbound.is_congested() {
            return false;
        }
        state.next_tag += 1;
        let tag = state.next_tag;
        if !self.no_ack {
            self.unacked.fetch_add(1, Ordering::Relaxed);
            self.queue.hold_unacked(msg);
            state.unacked.push_back(Unacked {
                tag,
                queue: Arc::clone(&self.queue),
                offset,
                msg: Arc::clone(msg),
                meta,
                ack_by: UNSTAMPED,
                consumer: Some(Arc::clone(self)),
            });
        }
        self.channel.outbound.deliver(self.channel.id, &self.tag, tag, meta.redelivered, wire);
        true
    }
}

/// Checks `basic.consume` arguments as RabbitMQ 3.13 does for the queue's type: an
/// argument of another queue type, a bad value, or one Warren does not act on is 406 naming
/// it; names RabbitMQ does not know are ignored. Returns the consumer priority.
pub fn check_arguments(args: &amq_protocol::types::FieldTable, queue: &Queue) -> Result<i32, warren_protocol::AmqpError> {
    use crate::broker::queue::args::type_name;
    use amq_protocol::types::AMQPValue;
    use warren_protocol::AmqpError;
    /// Every consume argument RabbitMQ 3.13 knows, over all queue types.
    const KNOWN: &[&str] = &["x-cancel-on-ha-failover", "x-priority", "x-credit", "x-stream-offset", "x-stream-filter", "x-stream-match-unfiltered"];
    let rs = format!("queue '{}' in vhost '{}'", queue.name, queue.vhost);
    let kind = queue.args().kind;
    for (key, value) in args {
        let key = key.as_str();
        if !KNOWN.contains(&key) {
            continue;
        }
        if !kind.knows_consume_arg(key) {
            return Err(AmqpError::precondition_failed(format!("invalid arg '{key}' for {rs} of queue type {}", kind.module())));
        }
        match key {
            // A mirroring-era flag that means nothing on one node.
            "x-cancel-on-ha-failover" if !matches!(value, AMQPValue::Boolean(_)) => {
                return Err(AmqpError::precondition_failed(format!("invalid arg '{key}' for {rs}: {{unacceptable_type,{}}}", type_name(value))));
            }
            "x-cancel-on-ha-failover" => {}
            "x-priority" if crate::broker::queue::args::as_int(value).is_some() => {}
            "x-priority" => {
                return Err(AmqpError::precondition_failed(format!("invalid arg '{key}' for {rs}: \"expected integer, got {}\"", type_name(value))));
            }
            _ => return Err(AmqpError::precondition_failed(format!("invalid arg '{key}' for {rs}: not implemented by Warren"))),
        }
    }
    let priority = args.inner().get("x-priority").and_then(crate::broker::queue::args::as_int).unwrap_or(0);
    Ok(i32::try_from(priority).unwrap_or(if priority < 0 { i32::MIN } else { i32::MAX }))
}

/// The `ack_by` of a delivery no check has seen yet. Deliveries are not timed when they
/// are made (a clock read per delivery showed in profiles); the connection's once-a-second
/// check stamps them instead, so a timeout fires up to one check late, never early
/// (RabbitMQ checks once a minute).
pub const UNSTAMPED: u64 = 0;

/// A delivered, unacknowledged message.
#[derive(Debug)]
pub struct Unacked {
    /// Its delivery tag on the channel.
    pub tag: u64,
    /// The queue it came from (it returns there on requeue).
    pub queue: Arc<Queue>,
    /// Its position in that queue.
    pub offset: u64,
    /// The message.
    pub msg: Arc<Message>,
    /// What its queue knew about it (it goes back with it on requeue).
    pub meta: EntryMeta,
    /// When it must be acknowledged (the consumer timeout), in Unix milliseconds;
    /// [`UNSTAMPED`] until the connection's next check (see [`DeliveryState::overdue`]).
    pub ack_by: u64,
    /// The consumer it went to (None for basic.get).
    pub consumer: Option<Arc<Consumer>>,
}

/// The shared delivery state of one channel.
#[derive(Debug)]
pub struct ChannelDelivery {
    /// The channel number.
    pub id: u16,
    /// The connection's outbound frames.
    pub outbound: Arc<Outbound>,
    /// The client takes basic.cancel from the server (capability consumer_cancel_notify).
    pub cancel_notify: bool,
    /// The connection's id (the management plane names the channel by it).
    pub connection: u64,
    /// What the management plane shows of the channel's modes.
    pub mode: ChannelMode,
    state: Mutex<DeliveryState>,
}

/// A channel's modes, written by its connection and read by the management plane.
#[derive(Debug, Default)]
pub struct ChannelMode {
    /// basic.qos global=false: the prefetch of consumers created from now on.
    pub prefetch_count: std::sync::atomic::AtomicU32,
    /// In confirm mode.
    pub confirm: std::sync::atomic::AtomicBool,
    /// In transaction mode.
    pub transactional: std::sync::atomic::AtomicBool,
}

/// What a channel's delivery lock protects.
#[derive(Debug)]
pub struct DeliveryState {
    /// The last delivery tag handed out.
    pub next_tag: u64,
    /// Unacknowledged deliveries in tag order.
    pub unacked: VecDeque<Unacked>,
    /// Tags of deliveries returned to their queue when their consumer timed out, not yet
    /// settled by the client (see [`DeliveryState::time_out`]).
    pub timed_out: BTreeSet<u64>,
    /// Deliveries acked or rejected in an open transaction: off `unacked`, but still
    /// counted by a channel-wide prefetch until commit or rollback.
    pub tx_held: usize,
    /// basic.qos global=true limit for the whole channel; 0 is unlimited.
    pub prefetch_global: u32,
    /// Set when the channel closes; queues then skip its consumers.
    pub closed: bool,
    /// The channel's consumers by tag.
    pub consumers: HashMap<String, Arc<Consumer>>,
    /// Its direct reply-to consumer: the consumer tag and the channel's reply address.
    pub reply_consumer: Option<(String, String)>,
}

impl ChannelDelivery {
    /// The delivery state of channel `id` of connection `connection`, writing to `outbound`.
    pub fn new(id: u16, connection: u64, outbound: Arc<Outbound>, cancel_notify: bool) -> Self {
        ChannelDelivery {
            id,
            outbound,
            cancel_notify,
            connection,
            mode: ChannelMode::default(),
            state: Mutex::new(DeliveryState {
                next_tag: 0,
                unacked: VecDeque::new(),
                timed_out: BTreeSet::new(),
                tx_held: 0,
                prefetch_global: 0,
                closed: false,
                consumers: HashMap::new(),
                reply_consumer: None,
            }),
        }
    }

    /// Locks the delivery state.
    pub fn lock(&self) -> MutexGuard<'_, DeliveryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ChannelDelivery {
    /// Delivers a direct reply-to reply to this channel's reply consumer (auto-ack, no
    /// queue); false when the channel has none or is closed.
    pub fn deliver_reply(&self, msg: &Message) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        let Some((tag, _)) = &state.reply_consumer else { return false };
        let tag = tag.clone();
        state.next_tag += 1;
        let delivery_tag = state.next_tag;
        // Written under the delivery lock, so tags reach the wire in order.
        self.outbound.deliver(self.id, &tag, delivery_tag, false, msg);
        true
    }
}

/// What a channel's consumer-timeout check found.
#[derive(Debug)]
pub enum Overdue {
    /// Close the channel with 406; the reply text gives this timeout (milliseconds).
    Close(i64),
    /// Cancel these consumers and return their deliveries (RabbitMQ 4 for quorum queues).
    Cancel(Vec<Arc<Consumer>>),
}

impl DeliveryState {
    /// What to do about deliveries held unacknowledged past their deadline at `now`.
    /// Deliveries made since the last call get their deadline from `now` (they were made
    /// at most one check interval ago).
    ///
    /// RabbitMQ 3.13 closes the channel, naming the timeout of the first overdue
    /// delivery's queue. Under the RabbitMQ 4 profile a consumer of a quorum queue is
    /// cancelled instead when the client takes basic.cancel (`cancel_notify`); otherwise
    /// the channel is closed with -1 as the timeout, RabbitMQ 4.3's fallback; classic
    /// queues keep the close.
    pub fn overdue(&mut self, now: u64, compat: Compat, cancel_notify: bool) -> Option<Overdue> {
        let mut close = None;
        let mut cancel: Vec<Arc<Consumer>> = Vec::new();
        for u in &mut self.unacked {
            if u.ack_by == UNSTAMPED {
                u.ack_by = u.queue.ack_deadline(now);
                continue;
            }
            if u.ack_by > now {
                continue;
            }
            if compat == Compat::RabbitMq313 || u.queue.args().kind != QueueType::Quorum {
                close.get_or_insert(i64::try_from(u.queue.consumer_timeout()).unwrap_or(i64::MAX));
                continue;
            }
            match &u.consumer {
                Some(c) if cancel_notify => {
                    if !cancel.iter().any(|x| Arc::ptr_eq(x, c)) {
                        cancel.push(Arc::clone(c));
                    }
                }
                _ => {
                    close.get_or_insert(-1);
                }
            }
        }
        match close {
            Some(timeout) => Some(Overdue::Close(timeout)),
            None if !cancel.is_empty() => Some(Overdue::Cancel(cancel)),
            None => None,
        }
    }

    /// Takes every delivery to `consumer` off the unacknowledged ones, freeing its prefetch,
    /// for its queue to have back: the consumer timed out. Their tags stay known, so a late
    /// ack or reject of one is accepted and does nothing, as in RabbitMQ 4.
    pub fn time_out(&mut self, consumer: &Arc<Consumer>) -> Vec<Unacked> {
        let mut mine = Vec::new();
        let mut kept = VecDeque::with_capacity(self.unacked.len());
        for u in self.unacked.drain(..) {
            if u.consumer.as_ref().is_some_and(|c| Arc::ptr_eq(c, consumer)) {
                mine.push(u);
            } else {
                kept.push_back(u);
            }
        }
        self.unacked = kept;
        self.timed_out.extend(mine.iter().map(|u| u.tag));
        Self::release(&mine);
        mine
    }

    /// Removes the deliveries `tag` names: it alone, or with `multiple` every one up to it
    /// (everything for tag 0). As in RabbitMQ the named tag must be outstanding: `None`
    /// means 406 "unknown delivery tag" for the caller.
    pub fn settle(&mut self, tag: u64, multiple: bool) -> Option<Vec<Unacked>> {
        let taken = self.take(tag, multiple)?;
        Self::release(&taken);
        Some(taken)
    }

    /// Like [`Self::settle`], but the deliveries keep counting against their consumers'
    /// prefetch until [`Self::release`]: a transaction holds its acks this way until commit.
    /// A tag of [`Self::time_out`] is outstanding too, with nothing behind it.
    pub fn take(&mut self, tag: u64, multiple: bool) -> Option<Vec<Unacked>> {
        if multiple && tag == 0 {
            self.timed_out.clear();
            return Some(self.unacked.drain(..).collect());
        }
        let timed_out = self.timed_out.remove(&tag);
        if multiple {
            self.timed_out = self.timed_out.split_off(&tag);
        }
        match self.unacked.binary_search_by_key(&tag, |u| u.tag) {
            Ok(idx) => Some(if multiple { self.unacked.drain(..=idx).collect() } else { self.unacked.remove(idx).into_iter().collect() }),
            Err(idx) if timed_out => Some(if multiple { self.unacked.drain(..idx).collect() } else { Vec::new() }),
            Err(_) => None,
        }
    }

    /// Frees the prefetch that taken deliveries held.
    pub fn release(taken: &[Unacked]) {
        for u in taken {
            if let Some(c) = &u.consumer {
                c.unacked.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Puts taken deliveries back among the unacknowledged ones (a rolled-back
    /// transaction's acks), keeping tag order.
    pub fn restore(&mut self, taken: Vec<Unacked>) {
        for u in taken {
            let pos = self.unacked.partition_point(|x| x.tag < u.tag);
            self.unacked.insert(pos, u);
        }
    }
}
