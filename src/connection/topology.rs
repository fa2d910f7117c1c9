//! The `exchange` and `queue` classes on a channel: declare, delete, bind, unbind, purge.
//! The rules live in [`crate::broker::vhost`]; this maps methods to them and replies.

use amq_protocol::types::ShortString;
use warren_protocol::spec::{exchange, queue};
use warren_protocol::{AMQPClass, AmqpError};

use super::channel::Channel;
use super::Context;
use crate::broker::reply_to::{REPLY_TO, REPLY_TO_PREFIX};
use crate::broker::unique_name;
use crate::broker::vhost::{ExchangeSpec, QueueSpec};

impl Channel {
    pub(super) fn exchange_declare(&mut self, ctx: &Context, d: exchange::Declare) -> Result<(), AmqpError> {
        let spec = ExchangeSpec {
            name: d.exchange.to_string(),
            kind: d.kind.to_string(),
            durable: d.durable,
            auto_delete: d.auto_delete,
            internal: d.internal,
            arguments: d.arguments,
        };
        ctx.vhost.declare_exchange(spec, d.passive)?;
        if !d.nowait {
            self.reply(ctx, AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})));
        }
        Ok(())
    }

    pub(super) fn exchange_delete(&mut self, ctx: &Context, d: exchange::Delete) -> Result<(), AmqpError> {
        ctx.vhost.delete_exchange(d.exchange.as_str(), d.if_unused)?;
        if !d.nowait {
            self.reply(ctx, AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})));
        }
        Ok(())
    }

    pub(super) fn exchange_bind(&mut self, ctx: &Context, b: exchange::Bind) -> Result<(), AmqpError> {
        ctx.vhost.bind_exchange(b.destination.as_str(), b.source.as_str(), b.routing_key.as_str(), &b.arguments)?;
        if !b.nowait {
            self.reply(ctx, AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})));
        }
        Ok(())
    }

    pub(super) fn exchange_unbind(&mut self, ctx: &Context, u: exchange::Unbind) -> Result<(), AmqpError> {
        ctx.vhost.unbind_exchange(u.destination.as_str(), u.source.as_str(), u.routing_key.as_str(), &u.arguments)?;
        if !u.nowait {
            self.reply(ctx, AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})));
        }
        Ok(())
    }

    pub(super) fn queue_declare(&mut self, ctx: &Context, d: queue::Declare) -> Result<(), AmqpError> {
        // Direct reply-to's pseudo-queues: any declare of them is answered as a passive one,
        // with the one consumer they have by definition (404 once the requester is gone),
        // as RabbitMQ does; kombu declares before it consumes.
        let name = d.queue.as_str();
        if name == REPLY_TO || name.starts_with(REPLY_TO_PREFIX) {
            if name != REPLY_TO && ctx.vhost.reply_to.channel(name).is_none() {
                return Err(AmqpError::not_found(format!("no queue '{name}' in vhost '{}'", ctx.vhost.name)));
            }
            if !d.nowait {
                self.reply(ctx, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk { queue: d.queue, message_count: 0, consumer_count: 1 })));
            }
            return Ok(());
        }
        let server_named = d.queue.as_str().is_empty() && !d.passive;
        let name = if server_named { unique_name("amq.gen-") } else { self.queue_name(d.queue.as_str())? };
        let spec = QueueSpec {
            name,
            server_named,
            durable: d.durable,
            exclusive_owner: d.exclusive.then_some(ctx.id),
            auto_delete: d.auto_delete,
            arguments: d.arguments,
        };
        let q = ctx.vhost.declare_queue(spec, d.passive, ctx.id)?;
        self.last_queue = Some(q.name.clone());
        if !d.nowait {
            // A declare that asks for the counts is a use (x-expires), as in RabbitMQ.
            q.touch();
            self.reply(ctx, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                queue: ShortString::from(q.name.clone()),
                message_count: q.message_count(),
                consumer_count: q.consumer_count(),
            })));
        }
        Ok(())
    }

    pub(super) fn queue_bind(&mut self, ctx: &Context, b: queue::Bind) -> Result<(), AmqpError> {
        let name = self.queue_name(b.queue.as_str())?;
        // Spec: an empty routing key with an empty queue name means the queue's name.
        let key = if b.routing_key.as_str().is_empty() && b.queue.as_str().is_empty() { name.clone() } else { b.routing_key.to_string() };
        ctx.vhost.bind_queue(&name, b.exchange.as_str(), &key, &b.arguments, ctx.id)?;
        if !b.nowait {
            self.reply(ctx, AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})));
        }
        Ok(())
    }

    pub(super) fn queue_unbind(&mut self, ctx: &Context, u: queue::Unbind) -> Result<(), AmqpError> {
        let name = self.queue_name(u.queue.as_str())?;
        // As for bind: an empty routing key with an empty queue name means the queue's name.
        let key = if u.routing_key.as_str().is_empty() && u.queue.as_str().is_empty() { name.clone() } else { u.routing_key.to_string() };
        ctx.vhost.unbind_queue(&name, u.exchange.as_str(), &key, &u.arguments, ctx.id)?;
        self.reply(ctx, AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})));
        Ok(())
    }

    pub(super) fn queue_purge(&mut self, ctx: &Context, p: queue::Purge) -> Result<(), AmqpError> {
        let q = self.resolve_queue(ctx, p.queue.as_str())?;
        let message_count = q.purge();
        if !p.nowait {
            self.reply(ctx, AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk { message_count })));
        }
        Ok(())
    }

    pub(super) fn queue_delete(&mut self, ctx: &Context, d: queue::Delete) -> Result<(), AmqpError> {
        let name = self.queue_name(d.queue.as_str())?;
        let deleted = ctx.vhost.delete_queue(&name, d.if_unused, d.if_empty, ctx.id)?;
        if !d.nowait {
            self.reply(ctx, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk { message_count: deleted.message_count })));
        }
        // As in RabbitMQ, this channel's own consumers of the queue hear basic.cancel only
        // after delete-ok.
        drop(deleted);
        Ok(())
    }
}
