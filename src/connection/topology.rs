//! The `exchange` and `queue` classes on a channel: declare, delete, bind, unbind, purge.
//! The rules live in [`crate::broker::vhost`]; this maps methods to them and replies.

use amq_protocol::types::ShortString;
use warren_protocol::spec::{exchange, queue};
use warren_protocol::{AMQPClass, AmqpError};

use super::channel::Channel;
use super::Context;
use crate::access::{Perm, Resource};
use crate::broker::exchange::ExchangeKind;
use crate::broker::reply_to::{REPLY_TO, REPLY_TO_PREFIX};
use crate::broker::unique_name;
use crate::broker::vhost::{ExchangeSpec, QueueSpec};

impl Channel {
    pub(super) fn exchange_declare(&mut self, ctx: &Context, d: exchange::Declare) -> Result<(), AmqpError> {
        // RabbitMQ: a passive declare needs no permission; creating an exchange with an
        // alternate exchange also needs read on it and write on the alternate.
        let name = d.exchange.as_str();
        if !d.passive && !name.is_empty() {
            ctx.grant.check(Perm::Configure, Resource::Exchange, name)?;
            if ctx.vhost.exchange(name).is_none() {
                if let Some(ae) = text_arg(&d.arguments, "alternate-exchange") {
                    ctx.grant.check(Perm::Read, Resource::Exchange, name)?;
                    ctx.grant.check(Perm::Write, Resource::Exchange, &ae)?;
                }
            }
        }
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
        // The default and amq.* exchanges are refused by the vhost before permissions count.
        let name = d.exchange.as_str();
        if !name.is_empty() && !name.starts_with("amq.") {
            ctx.grant.check(Perm::Configure, Resource::Exchange, name)?;
        }
        ctx.vhost.delete_exchange(d.exchange.as_str(), d.if_unused)?;
        if !d.nowait {
            self.reply(ctx, AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})));
        }
        Ok(())
    }

    pub(super) fn exchange_bind(&mut self, ctx: &Context, b: exchange::Bind) -> Result<(), AmqpError> {
        check_binding(ctx, Resource::Exchange, b.destination.as_str(), b.source.as_str(), b.routing_key.as_str())?;
        ctx.vhost.bind_exchange(b.destination.as_str(), b.source.as_str(), b.routing_key.as_str(), &b.arguments)?;
        if !b.nowait {
            self.reply(ctx, AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})));
        }
        Ok(())
    }

    pub(super) fn exchange_unbind(&mut self, ctx: &Context, u: exchange::Unbind) -> Result<(), AmqpError> {
        check_binding(ctx, Resource::Exchange, u.destination.as_str(), u.source.as_str(), u.routing_key.as_str())?;
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
        // RabbitMQ: the reserved prefix is refused first; a passive declare needs no
        // permission; a server-named queue is checked under its generated name; creating a
        // queue with a dead-letter exchange also needs read on it and write on the DLX.
        if !d.passive && (server_named || !name.starts_with("amq.")) {
            ctx.grant.check(Perm::Configure, Resource::Queue, &name)?;
            if ctx.vhost.queue(&name).is_none() {
                if let Some(dlx) = text_arg(&d.arguments, "x-dead-letter-exchange") {
                    ctx.grant.check(Perm::Read, Resource::Queue, &name)?;
                    ctx.grant.check(Perm::Write, Resource::Exchange, &dlx)?;
                }
            }
        }
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
        check_binding(ctx, Resource::Queue, &name, b.exchange.as_str(), &key)?;
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
        check_binding(ctx, Resource::Queue, &name, u.exchange.as_str(), &key)?;
        ctx.vhost.unbind_queue(&name, u.exchange.as_str(), &key, &u.arguments, ctx.id)?;
        self.reply(ctx, AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})));
        Ok(())
    }

    pub(super) fn queue_purge(&mut self, ctx: &Context, p: queue::Purge) -> Result<(), AmqpError> {
        let q = self.readable_queue(ctx, p.queue.as_str())?;
        let message_count = q.purge();
        if !p.nowait {
            self.reply(ctx, AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk { message_count })));
        }
        Ok(())
    }

    pub(super) fn queue_delete(&mut self, ctx: &Context, d: queue::Delete) -> Result<(), AmqpError> {
        let name = self.queue_name(d.queue.as_str())?;
        ctx.grant.check(Perm::Configure, Resource::Queue, &name)?;
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

/// RabbitMQ's checks of a bind or unbind, in its order: write on the destination, the
/// default exchange refused as either end, read on the source, then (for an existing topic
/// exchange) the topic read permission on the binding key.
fn check_binding(ctx: &Context, destination_kind: Resource, destination: &str, source: &str, key: &str) -> Result<(), AmqpError> {
    ctx.grant.check(Perm::Write, destination_kind, destination)?;
    if source.is_empty() || (destination_kind == Resource::Exchange && destination.is_empty()) {
        return Err(AmqpError::access_refused("operation not permitted on the default exchange"));
    }
    ctx.grant.check(Perm::Read, Resource::Exchange, source)?;
    if let Some(x) = ctx.vhost.exchange(source).filter(|x| x.kind == ExchangeKind::Topic) {
        ctx.grant.check_topic(Perm::Read, &x.name, key)?;
    }
    Ok(())
}

/// A string argument (an exchange name), if given as one.
fn text_arg(arguments: &amq_protocol::types::FieldTable, key: &str) -> Option<String> {
    arguments.inner().get(key).and_then(crate::broker::queue::args::as_text).map(|b| String::from_utf8_lossy(b).into_owned())
}
