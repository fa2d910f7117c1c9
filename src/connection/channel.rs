//! A channel's state on its connection's reader side: its phase, content assembly, qos,
//! confirm and transaction modes, and the dispatch of methods to their handlers
//! ([`super::basic`] and [`super::topology`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use warren_protocol::content::{Assembler, Content};
use warren_protocol::spec::{basic, channel as chan, confirm, exchange, queue, tx};
use warren_protocol::{AMQPClass, AmqpError, ReplyCode};

use super::Context;
use crate::access::ChannelSlot;
use crate::broker::consumer::{ChannelDelivery, Unacked};
use crate::broker::durability::{FlushRequest, Reply};
use crate::broker::memory::Held;
use crate::broker::exchange::{Destination, Exchange};
use crate::broker::queue::Queue;
use crate::broker::vhost::NameCache;
use crate::outbound::Outbound;

/// Whether a channel accepts methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelPhase {
    /// Open and working.
    Open,
    /// We sent channel.close; everything but close-ok is dropped.
    Closing,
}

/// Publisher-confirm bookkeeping: every publish gets the next sequence number; acks go out
/// coalesced (`multiple`) once per batch of frames read, after a store flush when the batch
/// stored anything.
#[derive(Debug, Default)]
pub(crate) struct Confirms {
    /// The last sequence number given to a publish.
    pub next: u64,
    /// Every sequence number up to this one has been answered (or handed to the flusher).
    pub settled: u64,
    /// Publishes of this batch that could not be stored, in order.
    pub nacked: Vec<u64>,
    /// This batch wrote to the store.
    pub needs_flush: bool,
    /// Requests of this channel still waiting in the flusher.
    pub in_flight: Arc<AtomicUsize>,
}

impl Confirms {
    /// The acks and nacks earned since the last call, nacks singled out so that no
    /// `multiple` ack covers them.
    fn take_replies(&mut self) -> Vec<Reply> {
        let mut out = Vec::new();
        for n in std::mem::take(&mut self.nacked) {
            if n > self.settled + 1 {
                out.push(Reply::Confirm { ack: true, tag: n - 1, multiple: n - 1 - self.settled > 1 });
            }
            out.push(Reply::Confirm { ack: false, tag: n, multiple: false });
            self.settled = n;
        }
        if self.next > self.settled {
            out.push(Reply::Confirm { ack: true, tag: self.next, multiple: self.next - self.settled > 1 });
            self.settled = self.next;
        }
        out
    }
}

/// Deliveries acked or rejected in a transaction: off the unacknowledged list, applied at
/// commit, put back on rollback.
#[derive(Debug)]
pub(crate) struct TxSettle {
    /// The deliveries.
    pub taken: Vec<Unacked>,
    /// None for basic.ack; the requeue flag of basic.nack / basic.reject.
    pub requeue: Option<bool>,
}

/// Work held back until tx.commit.
#[derive(Debug, Default)]
pub(crate) struct Tx {
    /// Messages published in the transaction, with the exchange each was published to.
    pub publishes: Vec<(Arc<Exchange>, Content<basic::Publish>)>,
    /// Acks and rejects in the transaction.
    pub settles: Vec<TxSettle>,
    /// Octets of the held publishes, counted toward the memory alarm until the
    /// transaction ends (commit, rollback or close).
    pub held: Option<Held>,
}

/// A channel.
#[derive(Debug)]
pub(crate) struct Channel {
    /// Its number.
    pub id: u16,
    /// Open or closing.
    pub phase: ChannelPhase,
    /// The delivery state shared with queues.
    pub delivery: Arc<ChannelDelivery>,
    /// Content assembly for basic.publish.
    pub assembler: Assembler<basic::Publish>,
    /// basic.qos global=false: the limit for consumers created from now on.
    pub consumer_prefetch: u32,
    /// Confirm mode.
    pub confirms: Option<Confirms>,
    /// Transaction mode.
    pub tx: Option<Tx>,
    /// The last queue declared on this channel ("" in later methods means it).
    pub last_queue: Option<String>,
    /// Reused routing result, so a publish allocates nothing for it.
    pub route_buf: Vec<Arc<Queue>>,
    /// Reused scratch space of routing.
    pub dest_buf: Vec<Destination>,
    /// Octets of the body being assembled, counted toward the memory alarm.
    pub assembling: Option<Held>,
    /// The exchange this channel last published to, its write permission checked: the
    /// grant is fixed for the connection, so the check (a regex for most users) runs once
    /// per exchange change, as RabbitMQ caches permission checks per channel.
    pub write_allowed: Option<String>,
    /// The exchange and default-exchange queue this channel last published to.
    pub names: NameCache,
    /// The channel's place in its user's max-channels.
    _slot: ChannelSlot,
}

impl Channel {
    /// A newly opened channel.
    pub fn new(id: u16, connection: u64, outbound: Arc<Outbound>, cancel_notify: bool, slot: ChannelSlot) -> Self {
        Channel {
            id,
            phase: ChannelPhase::Open,
            delivery: Arc::new(ChannelDelivery::new(id, connection, outbound, cancel_notify)),
            assembler: Assembler::default(),
            consumer_prefetch: 0,
            confirms: None,
            tx: None,
            last_queue: None,
            route_buf: Vec::new(),
            dest_buf: Vec::new(),
            assembling: None,
            write_allowed: None,
            names: NameCache::default(),
            _slot: slot,
        }
    }

    /// True when no content is being assembled (a method may arrive).
    pub fn assembler_idle(&self) -> bool {
        self.assembler.is_idle()
    }

    /// Handles a method other than channel.open/close.
    pub fn handle_method(&mut self, ctx: &Context, m: AMQPClass) -> Result<(), AmqpError> {
        match m {
            AMQPClass::Basic(m) => match m {
                basic::AMQPMethod::Publish(p) => self.basic_publish(ctx, p),
                basic::AMQPMethod::Ack(a) => self.basic_ack(ctx, a.delivery_tag, a.multiple),
                basic::AMQPMethod::Nack(n) => self.basic_reject(ctx, n.delivery_tag, n.multiple, n.requeue),
                basic::AMQPMethod::Reject(r) => self.basic_reject(ctx, r.delivery_tag, false, r.requeue),
                basic::AMQPMethod::Qos(q) => self.basic_qos(ctx, q),
                basic::AMQPMethod::Consume(c) => self.basic_consume(ctx, c),
                basic::AMQPMethod::Cancel(c) => self.basic_cancel(ctx, c),
                basic::AMQPMethod::Get(g) => self.basic_get(ctx, g),
                basic::AMQPMethod::Recover(r) => {
                    self.basic_recover(ctx, r.requeue)?;
                    self.reply(ctx, AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})));
                    Ok(())
                }
                basic::AMQPMethod::RecoverAsync(r) => self.basic_recover(ctx, r.requeue),
                _ => Err(AmqpError::command_invalid("method not valid from a client")),
            },
            AMQPClass::Exchange(m) => match m {
                exchange::AMQPMethod::Declare(d) => self.exchange_declare(ctx, d),
                exchange::AMQPMethod::Delete(d) => self.exchange_delete(ctx, d),
                exchange::AMQPMethod::Bind(b) => self.exchange_bind(ctx, b),
                exchange::AMQPMethod::Unbind(u) => self.exchange_unbind(ctx, u),
                _ => Err(AmqpError::command_invalid("method not valid from a client")),
            },
            AMQPClass::Queue(m) => match m {
                queue::AMQPMethod::Declare(d) => self.queue_declare(ctx, d),
                queue::AMQPMethod::Bind(b) => self.queue_bind(ctx, b),
                queue::AMQPMethod::Unbind(u) => self.queue_unbind(ctx, u),
                queue::AMQPMethod::Purge(p) => self.queue_purge(ctx, p),
                queue::AMQPMethod::Delete(d) => self.queue_delete(ctx, d),
                _ => Err(AmqpError::command_invalid("method not valid from a client")),
            },
            // As RabbitMQ (rabbit_channel): a client may not stop the server's deliveries
            // with channel.flow, only confirm they may go on; prefetch is the way to pause.
            AMQPClass::Channel(chan::AMQPMethod::Flow(f)) => {
                if !f.active {
                    return Err(AmqpError::not_implemented("active=false"));
                }
                self.reply(ctx, AMQPClass::Channel(chan::AMQPMethod::FlowOk(chan::FlowOk { active: true })));
                Ok(())
            }
            // A flow-ok answers a channel.flow the server never sends; nothing to do.
            AMQPClass::Channel(chan::AMQPMethod::FlowOk(_)) => Ok(()),
            AMQPClass::Channel(_) => Err(AmqpError::command_invalid("unexpected channel method")),
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                if self.tx.is_some() {
                    return Err(AmqpError::precondition_failed("cannot switch from tx to confirm mode"));
                }
                if self.confirms.is_none() {
                    self.confirms = Some(Confirms::default());
                    self.delivery.mode.confirm.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                if !s.nowait {
                    self.reply(ctx, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})));
                }
                Ok(())
            }
            AMQPClass::Tx(m) => self.tx_method(ctx, m),
            AMQPClass::Access(_) => {
                // access.request is deprecated; RabbitMQ answers it with a dummy ticket.
                self.reply(ctx, AMQPClass::Access(warren_protocol::spec::access::AMQPMethod::RequestOk(warren_protocol::spec::access::RequestOk {})));
                Ok(())
            }
            _ => Err(AmqpError::command_invalid("unexpected method on a channel")),
        }
    }

    fn tx_method(&mut self, ctx: &Context, m: tx::AMQPMethod) -> Result<(), AmqpError> {
        match m {
            tx::AMQPMethod::Select(_) => {
                if self.confirms.is_some() {
                    return Err(AmqpError::precondition_failed("cannot switch from confirm to tx mode"));
                }
                if self.tx.is_none() {
                    self.tx = Some(Tx::default());
                    self.delivery.mode.transactional.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                self.reply(ctx, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
                Ok(())
            }
            tx::AMQPMethod::Commit(_) => {
                let Some(tx) = self.tx.as_mut() else {
                    return Err(AmqpError::precondition_failed("channel is not transactional"));
                };
                let work = std::mem::take(tx);
                // Settlements and publishes were checked when they arrived and cannot fail
                // now (short of the store failing).
                for settle in work.settles {
                    self.delivery.lock().tx_held -= settle.taken.len();
                    self.apply_settle(ctx, settle.taken, settle.requeue);
                }
                let (mut stored, mut failed) = (false, false);
                for (exchange, content) in work.publishes {
                    let published = self.publish(ctx, &exchange, content)?;
                    stored |= published.stored;
                    failed |= published.failed;
                }
                if failed {
                    return Err(AmqpError::connection(ReplyCode::InternalError, "the store refused a message of the transaction"));
                }
                let commit_ok = AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {}));
                if stored {
                    // Committed persistent messages are on disk before commit-ok.
                    ctx.broker.after_flush(FlushRequest {
                        channel: Arc::clone(&self.delivery),
                        replies: vec![Reply::Method(commit_ok)],
                        needs_flush: true,
                        in_flight: Arc::default(),
                    });
                } else {
                    self.reply(ctx, commit_ok);
                }
                Ok(())
            }
            tx::AMQPMethod::Rollback(_) => {
                let Some(tx) = self.tx.as_mut() else {
                    return Err(AmqpError::precondition_failed("channel is not transactional"));
                };
                let work = std::mem::take(tx);
                // Rolled-back acks make their deliveries unacknowledged again.
                let mut st = self.delivery.lock();
                for settle in work.settles {
                    st.tx_held -= settle.taken.len();
                    st.restore(settle.taken);
                }
                drop(st);
                self.reply(ctx, AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})));
                Ok(())
            }
            _ => Err(AmqpError::command_invalid("method not valid from a client")),
        }
    }

    /// Sends a reply method on this channel.
    pub fn reply(&self, ctx: &Context, m: AMQPClass) {
        ctx.outbound.method(self.id, &m);
    }

    /// A content header frame arrived.
    pub fn content_header(&mut self, ctx: &Context, payload: Bytes) -> Result<(), AmqpError> {
        match self.assembler.header(payload, ctx.broker.config.max_message_size)? {
            // A refused publish names basic.publish, as RabbitMQ's close does.
            Some(content) => self.published(ctx, content).map_err(|e| e.on_method(60, 40)),
            None => Ok(()),
        }
    }

    /// A content body frame arrived.
    pub fn content_body(&mut self, ctx: &Context, payload: Bytes) -> Result<(), AmqpError> {
        let n = payload.len();
        match self.assembler.body(payload)? {
            Some(content) => {
                self.assembling = None;
                self.published(ctx, content).map_err(|e| e.on_method(60, 40))
            }
            None => {
                self.assembling.get_or_insert_with(|| Held::new(Arc::clone(&ctx.broker.memory))).add(n);
                Ok(())
            }
        }
    }

    /// Sends the confirms earned since the last call, as one `multiple` ack when it can;
    /// through the flusher when they promise stored messages or must queue behind earlier
    /// confirms that do.
    pub fn flush_confirms(&mut self, ctx: &Context) {
        let Some(c) = self.confirms.as_mut() else { return };
        if c.next == c.settled {
            return;
        }
        ctx.broker.metrics.messages_confirmed.inc_by(c.next - c.settled);
        let replies = c.take_replies();
        if !c.needs_flush && c.in_flight.load(Ordering::Acquire) == 0 {
            for r in replies {
                if let Reply::Confirm { ack, tag, multiple } = r {
                    ctx.outbound.confirm(self.id, ack, tag, multiple);
                }
            }
            return;
        }
        ctx.broker.after_flush(FlushRequest {
            channel: Arc::clone(&self.delivery),
            replies,
            needs_flush: std::mem::take(&mut c.needs_flush),
            in_flight: Arc::clone(&c.in_flight),
        });
    }

    /// Offers ready messages again to this channel's consumers' queues (after a global
    /// prefetch frees room or the socket drains).
    pub fn redispatch(&self) {
        let queues: Vec<Arc<Queue>> = self.delivery.lock().consumers.values().map(|c| Arc::clone(&c.queue)).collect();
        for q in queues {
            q.dispatch();
        }
    }

    /// Closes the delivery side: consumers are cancelled (auto-delete queues may go) and
    /// unacknowledged messages return to their queues in order.
    pub fn teardown(&mut self, ctx: &Context) {
        self.assembler.reset();
        self.assembling = None;
        let (consumers, unacked) = {
            let mut st = self.delivery.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            st.tx_held = 0;
            if let Some((_, address)) = st.reply_consumer.take() {
                ctx.vhost.reply_to.unregister(&address);
            }
            let consumers: Vec<_> = st.consumers.drain().map(|(_, c)| c).collect();
            (consumers, std::mem::take(&mut st.unacked))
        };
        // Deliveries settled in an uncommitted transaction return too.
        let mut unacked: Vec<Unacked> = unacked.into();
        if let Some(tx) = self.tx.take() {
            unacked.extend(tx.settles.into_iter().flat_map(|s| s.taken));
        }
        requeue(unacked);
        for c in consumers {
            if c.queue.remove_consumer(&c) {
                ctx.vhost.delete_queue_now(&c.queue);
            }
        }
    }
}

/// Returns settled-with-requeue messages to their queues, grouped by queue, in tag order.
pub(crate) fn requeue(mut unacked: Vec<Unacked>) {
    for u in &unacked {
        u.queue.release_unacked(&u.msg);
    }
    while !unacked.is_empty() {
        let queue = Arc::clone(&unacked[0].queue);
        let (mine, rest): (Vec<_>, Vec<_>) = unacked.into_iter().partition(|u| Arc::ptr_eq(&u.queue, &queue));
        queue.requeue(mine.into_iter().map(|u| (u.offset, u.msg, u.meta)));
        unacked = rest;
    }
}
