//! The `basic` class on a channel: publishing (with mandatory returns, confirms and
//! transactions), consuming, basic.get, acknowledgements, qos and recover.

use std::sync::Arc;

use warren_protocol::content::Content;
use warren_protocol::properties::PropertiesView;
use warren_protocol::spec::basic;
use warren_protocol::{AMQPClass, AmqpError, ReplyCode};

use super::channel::{requeue, Channel, TxSettle};
use super::Context;
use crate::access::{Perm, Resource};
use crate::broker::consumer::{Consumer, DeliveryState, Unacked, UNSTAMPED};
use crate::broker::exchange::{Exchange, ExchangeKind};
use crate::broker::memory::Held;
use crate::broker::message::{with_reply_to, without_bcc, Extra, Message, SenderSelected};
use crate::broker::reply_to::{REPLY_TO, REPLY_TO_PREFIX};
use crate::broker::queue::{Enqueued, Queue};
use crate::config::Compat;

/// What publishing one message did.
pub(super) struct Published {
    /// It was written to the store (durable after the next flush).
    pub stored: bool,
    /// A queue's store refused it.
    pub failed: bool,
}
use crate::broker::unique_name;

impl Channel {
    /// basic.publish: content frames follow.
    pub(super) fn basic_publish(&mut self, _ctx: &Context, p: basic::Publish) -> Result<(), AmqpError> {
        if p.immediate {
            return Err(AmqpError::not_implemented("immediate=true"));
        }
        self.assembler.start(p);
        Ok(())
    }

    /// A whole message arrived: publish it now, or hold it for tx.commit.
    pub(super) fn published(&mut self, ctx: &Context, content: Content<basic::Publish>) -> Result<(), AmqpError> {
        // RabbitMQ's order: write permission, 404, internal, topic permission.
        let name = content.method.exchange.as_str();
        if self.write_allowed.as_deref() != Some(name) {
            ctx.grant.check(Perm::Write, Resource::Exchange, name)?;
            self.write_allowed = Some(name.to_owned());
        }
        let exchange = ctx.vhost.exchange_cached(&mut self.names, content.method.exchange.as_str())?;
        if exchange.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal exchange '{}' in vhost '{}'",
                exchange.name, ctx.vhost.name
            )));
        }
        if exchange.kind == ExchangeKind::Topic && ctx.grant.has_topic_permissions(&exchange.name) {
            ctx.grant.check_topic(Perm::Write, &exchange.name, content.method.routing_key.as_str())?;
        }
        if let Some(tx) = self.tx.as_mut() {
            // Checked now, and the exchange kept, so that commit cannot fail half-way.
            check_properties(ctx, &PropertiesView::parse(content.payload.properties()).unwrap_or_default())?;
            // Bounded, so a transaction never committed cannot grow without limit.
            let size = content.payload.len();
            let held = tx.held.get_or_insert_with(|| Held::new(Arc::clone(&ctx.broker.memory)));
            let limit = usize::try_from(ctx.broker.config.max_message_size).unwrap_or(usize::MAX);
            if held.octets() + size > limit {
                return Err(AmqpError::precondition_failed(format!(
                    "transaction too large: its uncommitted publishes would exceed {limit} octets (the max message size)"
                )));
            }
            held.add(size);
            tx.publishes.push((exchange, content));
            return Ok(());
        }
        self.publish(ctx, &exchange, content).map(drop)
    }

    /// Routes a message to its queues; returns it if mandatory and unroutable; counts it
    /// for publisher confirms (nacked if a queue could not store it).
    pub(super) fn publish(&mut self, ctx: &Context, exchange: &Arc<Exchange>, content: Content<basic::Publish>) -> Result<Published, AmqpError> {
        let Content { method, payload } = content;
        // The assembler already validated the properties.
        let view = PropertiesView::parse(payload.properties()).unwrap_or_default();
        let ttl = check_properties(ctx, &view)?;
        let persistent = view.persistent();
        let priority = view.priority.unwrap_or(0);
        // Sender-selected distribution: CC and BCC add routing keys; BCC is removed.
        let selected = view.headers.and_then(|raw| SenderSelected::from_raw(raw, || view.headers_table()));
        let rewritten = if selected.as_ref().is_some_and(|s| s.has_bcc) { without_bcc(payload.properties()) } else { None };
        // Direct reply-to: a request names the channel's own reply address.
        let rewritten = if view.reply_to == Some(REPLY_TO.as_bytes()) {
            let address = self.delivery.lock().reply_consumer.as_ref().map(|(_, a)| a.clone());
            let address = address.ok_or_else(|| AmqpError::precondition_failed("fast reply consumer does not exist"))?;
            let base = rewritten.as_deref().unwrap_or(payload.properties());
            with_reply_to(base, &address).or(rewritten)
        } else {
            rewritten
        };
        let bcc = selected.as_ref().map(|s| s.bcc.clone()).unwrap_or_default();
        // Routing matches the headers as published (a rewrite keeps a copy of them).
        let (payload, published) = match rewritten {
            Some(properties) => (payload.with_properties(properties), Some(payload)),
            None => (payload, None),
        };
        let msg = Arc::new(Message {
            exchange: String::from(method.exchange),
            routing_key: String::from(method.routing_key),
            payload,
            persistent,
            from_store: false,
            priority,
            extra: Extra::new(ttl, bcc),
        });
        ctx.broker.metrics.messages_received.inc();
        if let Some(c) = self.confirms.as_mut() {
            c.next += 1;
        }
        if exchange.name.is_empty() && msg.routing_key.starts_with(REPLY_TO_PREFIX) {
            // A direct reply-to reply: straight to the requester's channel, no queue.
            let delivered = ctx.vhost.reply_to.deliver(&msg.routing_key, &msg);
            self.routed_or_returned(ctx, delivered, method.mandatory, &msg);
            return Ok(Published { stored: false, failed: false });
        }
        // Headers are parsed only if a headers exchange asks for them.
        let as_published = published.as_ref().map_or(msg.properties(), |p| p.properties());
        let mut headers = || PropertiesView::parse(as_published).ok().and_then(|v| v.headers_table());
        let mut queues = std::mem::take(&mut self.route_buf);
        ctx.vhost.route(exchange, &msg.routing_key, &mut headers, &mut self.dest_buf, &mut queues, Some(&mut self.names));
        if let Some(s) = &selected {
            for key in s.cc.iter().chain(&s.bcc) {
                ctx.vhost.route(exchange, key, &mut headers, &mut self.dest_buf, &mut queues, None);
            }
        }
        let (mut delivered, mut stored, mut failed, mut rejected) = (false, false, false, false);
        for q in queues.drain(..) {
            match q.enqueue(Arc::clone(&msg)) {
                Enqueued::Transient => delivered = true,
                Enqueued::Stored => (delivered, stored) = (true, true),
                Enqueued::Failed => failed = true,
                // Refused by a full queue (x-overflow reject-publish): nacked, not returned.
                Enqueued::Rejected => (delivered, rejected) = (true, true),
                Enqueued::Gone => {}
            }
        }
        self.route_buf = queues;
        if let Some(c) = self.confirms.as_mut() {
            if failed || rejected {
                c.nacked.push(c.next);
            }
            c.needs_flush |= stored;
        }
        self.routed_or_returned(ctx, delivered, method.mandatory, &msg);
        Ok(Published { stored, failed })
    }

    /// Counts a published message as routed, or returns it (312) when mandatory, or drops it.
    fn routed_or_returned(&self, ctx: &Context, delivered: bool, mandatory: bool, msg: &Message) {
        if delivered {
            ctx.broker.metrics.messages_routed.inc();
        } else if mandatory {
            ctx.broker.metrics.messages_unroutable_returned.inc();
            ctx.outbound.basic_return(self.id, ReplyCode::NoRoute.code(), "NO_ROUTE", msg);
        } else {
            ctx.broker.metrics.messages_unroutable_dropped.inc();
        }
    }

    /// The queue a consume, get or purge names ("" means the channel's last declared
    /// queue), after RabbitMQ's checks in its order: read permission, 404, exclusivity.
    pub(super) fn readable_queue(&self, ctx: &Context, name: &str) -> Result<Arc<Queue>, AmqpError> {
        let name = self.queue_name(name)?;
        ctx.grant.check(Perm::Read, Resource::Queue, &name)?;
        let q = ctx.vhost.queue_or_404(&name)?;
        q.check_access(ctx.id)?;
        Ok(q)
    }

    /// A queue name with "" resolved to the last declared queue (404 if none).
    pub(super) fn queue_name(&self, name: &str) -> Result<String, AmqpError> {
        if !name.is_empty() {
            return Ok(name.to_owned());
        }
        self.last_queue.clone().ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    /// basic.qos: a channel-wide prefetch with global=true, else the prefetch of consumers
    /// created from now on. Under the RabbitMQ 4 profile global=true is taken as
    /// global=false, qos-ok and all, as RabbitMQ 4 does once its `global_qos` deprecated
    /// feature is denied.
    pub(super) fn basic_qos(&mut self, ctx: &Context, q: basic::Qos) -> Result<(), AmqpError> {
        if q.global && ctx.broker.config.compat == Compat::RabbitMq313 {
            self.delivery.lock().prefetch_global = u32::from(q.prefetch_count);
            self.redispatch();
        } else {
            self.consumer_prefetch = u32::from(q.prefetch_count);
            self.delivery.mode.prefetch_count.store(self.consumer_prefetch, std::sync::atomic::Ordering::Relaxed);
        }
        self.reply(ctx, AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})));
        Ok(())
    }

    pub(super) fn basic_consume(&mut self, ctx: &Context, c: basic::Consume) -> Result<(), AmqpError> {
        if c.queue.as_str() == REPLY_TO {
            return self.reply_consume(ctx, c);
        }
        let q = self.readable_queue(ctx, c.queue.as_str())?;
        let priority = crate::broker::consumer::check_arguments(&c.arguments, &q)?;
        if !q.args().kind.allows_global_qos() && self.delivery.lock().prefetch_global != 0 {
            return Err(AmqpError::connection(
                ReplyCode::NotImplemented,
                format!("queue '{}' in vhost '{}' does not support global qos", q.name, q.vhost),
            ));
        }
        let tag = if c.consumer_tag.as_str().is_empty() { unique_name("amq.ctag-") } else { c.consumer_tag.to_string() };
        let consumer = Arc::new(Consumer::new(tag.clone(), Arc::clone(&self.delivery), Arc::clone(&q), c.no_ack, c.exclusive, self.consumer_prefetch, priority));
        {
            let mut st = self.delivery.lock();
            if st.consumers.contains_key(&tag) {
                return Err(AmqpError::connection(ReplyCode::NotAllowed, format!("attempt to reuse consumer tag '{tag}'")));
            }
            st.consumers.insert(tag.clone(), Arc::clone(&consumer));
        }
        let reply = (!c.nowait).then(|| AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk { consumer_tag: tag.clone().into() })));
        let outbound = Arc::clone(&ctx.outbound);
        let id = self.id;
        // consume-ok is written under the queue lock, before the first delivery.
        if let Err(e) = q.add_consumer(consumer, || {
            if let Some(m) = &reply {
                outbound.method(id, m);
            }
        }) {
            self.delivery.lock().consumers.remove(&tag);
            return Err(e);
        }
        Ok(())
    }

    /// basic.consume of `amq.rabbitmq.reply-to`: the channel's direct reply-to consumer
    /// (auto-ack only, one per channel, as in RabbitMQ).
    fn reply_consume(&mut self, ctx: &Context, c: basic::Consume) -> Result<(), AmqpError> {
        if !c.no_ack {
            return Err(AmqpError::precondition_failed("reply consumer cannot acknowledge"));
        }
        let tag = if c.consumer_tag.as_str().is_empty() { unique_name("amq.ctag-") } else { c.consumer_tag.to_string() };
        let mut st = self.delivery.lock();
        if st.reply_consumer.is_some() {
            return Err(AmqpError::precondition_failed("reply consumer already set"));
        }
        if st.consumers.contains_key(&tag) {
            return Err(AmqpError::connection(ReplyCode::NotAllowed, format!("attempt to reuse consumer tag '{tag}'")));
        }
        let address = ctx.vhost.reply_to.register(&self.delivery);
        st.reply_consumer = Some((tag.clone(), address));
        if !c.nowait {
            // Under the delivery lock: consume-ok goes before any reply.
            self.reply(ctx, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk { consumer_tag: tag.into() })));
        }
        Ok(())
    }

    pub(super) fn basic_cancel(&mut self, ctx: &Context, c: basic::Cancel) -> Result<(), AmqpError> {
        {
            let mut st = self.delivery.lock();
            if st.reply_consumer.as_ref().is_some_and(|(tag, _)| tag == c.consumer_tag.as_str()) {
                if let Some((_, address)) = st.reply_consumer.take() {
                    ctx.vhost.reply_to.unregister(&address);
                }
            }
        }
        let removed = self.delivery.lock().consumers.remove(c.consumer_tag.as_str());
        if let Some(consumer) = removed {
            if consumer.queue.remove_consumer(&consumer) {
                ctx.vhost.delete_queue_now(&consumer.queue);
            }
        }
        if !c.nowait {
            self.reply(ctx, AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk { consumer_tag: c.consumer_tag })));
        }
        Ok(())
    }

    pub(super) fn basic_get(&mut self, ctx: &Context, g: basic::Get) -> Result<(), AmqpError> {
        let q = self.readable_queue(ctx, g.queue.as_str())?;
        match q.get(g.no_ack) {
            None => self.reply(ctx, AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {}))),
            Some(got) => {
                q.delivered(got.offset, &got.msg, g.no_ack);
                let mut st = self.delivery.lock();
                st.next_tag += 1;
                let tag = st.next_tag;
                // Written under the delivery lock so tags reach the wire in order.
                ctx.outbound.get_ok(self.id, tag, got.meta.redelivered, got.remaining, &got.wire);
                if !g.no_ack {
                    q.hold_unacked(&got.msg);
                    st.unacked.push_back(Unacked { tag, ack_by: UNSTAMPED, queue: Arc::clone(&q), offset: got.offset, msg: got.msg, meta: got.meta, consumer: None });
                }
            }
        }
        Ok(())
    }

    pub(super) fn basic_ack(&mut self, ctx: &Context, tag: u64, multiple: bool) -> Result<(), AmqpError> {
        self.settle(ctx, tag, multiple, None)
    }

    pub(super) fn basic_reject(&mut self, ctx: &Context, tag: u64, multiple: bool, requeue: bool) -> Result<(), AmqpError> {
        self.settle(ctx, tag, multiple, Some(requeue))
    }

    /// Acks (`requeue_them` None) or rejects the deliveries `tag` names; 406 for a tag that
    /// is not outstanding. In a transaction they leave the unacknowledged list now (so a
    /// second ack is refused at once, as in RabbitMQ) and take effect at commit.
    fn settle(&mut self, ctx: &Context, tag: u64, multiple: bool, requeue_them: Option<bool>) -> Result<(), AmqpError> {
        let mut st = self.delivery.lock();
        let taken = st.take(tag, multiple).ok_or_else(|| unknown_tag(tag))?;
        match self.tx.as_mut() {
            Some(tx) => {
                // Held deliveries still count against a channel-wide prefetch until commit.
                st.tx_held += taken.len();
                drop(st);
                tx.settles.push(TxSettle { taken, requeue: requeue_them });
            }
            None => {
                drop(st);
                self.apply_settle(ctx, taken, requeue_them);
            }
        }
        Ok(())
    }

    /// Acks (`requeue_them` None), requeues or drops taken deliveries, then lets consumers
    /// they held back resume.
    pub(super) fn apply_settle(&mut self, ctx: &Context, taken: Vec<Unacked>, requeue_them: Option<bool>) {
        DeliveryState::release(&taken);
        let global_limit = self.delivery.lock().prefetch_global != 0;
        // Consumers this ack may have freed (parked by their queues until then).
        let mut unblocked: Vec<Arc<Consumer>> = Vec::new();
        for u in &taken {
            if let Some(c) = &u.consumer {
                if c.prefetch != 0 && !unblocked.iter().any(|x| Arc::ptr_eq(x, c)) {
                    unblocked.push(Arc::clone(c));
                }
            }
        }
        match requeue_them {
            Some(true) => requeue(taken),
            ack_or_drop => {
                if ack_or_drop.is_none() {
                    ctx.broker.metrics.messages_acknowledged.inc_by(taken.len() as u64);
                }
                for u in &taken {
                    u.queue.release_unacked(&u.msg);
                    if ack_or_drop.is_none() {
                        u.queue.count_acks(1);
                        u.queue.settled(u.offset, &u.msg);
                    } else {
                        u.queue.rejected(u.offset, &u.msg);
                    }
                }
            }
        }
        if global_limit {
            self.redispatch();
        } else {
            for c in unblocked {
                c.queue.unpark(&c);
            }
        }
    }

    /// basic.recover / recover-async: every unacked delivery goes back to its queue,
    /// redelivered. requeue=false (redeliver to the same consumer) is 540, as in RabbitMQ.
    pub(super) fn basic_recover(&mut self, _ctx: &Context, requeue_them: bool) -> Result<(), AmqpError> {
        if !requeue_them {
            return Err(AmqpError::not_implemented("requeue=false"));
        }
        let unacked: Vec<Unacked> = self.delivery.lock().settle(0, true).unwrap_or_default();
        requeue(unacked);
        // The channel's consumers have room again.
        self.redispatch();
        Ok(())
    }
}

/// The checks RabbitMQ makes of a published message's properties: 406 when user_id names
/// someone other than the authenticated user (unless an impersonator), or when expiration
/// is not a valid TTL.
/// Returns the per-message TTL.
fn check_properties(ctx: &Context, view: &PropertiesView<'_>) -> Result<Option<u64>, AmqpError> {
    if let Some(user_id) = view.user_id {
        ctx.grant.check_user_id(user_id)?;
    }
    view.expiration
        .map(|raw| {
            warren_protocol::properties::parse_expiration(raw).map_err(|why| {
                AmqpError::precondition_failed(format!("invalid expiration '{}': {why}", String::from_utf8_lossy(raw)))
            })
        })
        .transpose()
}

fn unknown_tag(tag: u64) -> AmqpError {
    AmqpError::precondition_failed(format!("unknown delivery tag {tag}"))
}
