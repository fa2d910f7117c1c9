//! Direct reply-to (RabbitMQ's `amq.rabbitmq.reply-to`): RPC replies that go straight to
//! the requesting channel's reply consumer, without a queue.
//!
//! A channel that consumes `amq.rabbitmq.reply-to` (auto-ack only) gets a token; its
//! requests published with `reply_to: amq.rabbitmq.reply-to` carry
//! `amq.rabbitmq.reply-to.<token>` instead, and a reply published to the default exchange
//! with that routing key is delivered to the channel at once. A reply for a channel that is
//! gone is unroutable (returned when mandatory). The registry maps tokens to channels
//! weakly; [`crate::connection`] registers on consume and unregisters on cancel and close.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

use crate::broker::consumer::ChannelDelivery;
use crate::broker::message::Message;

/// The pseudo-queue a reply consumer consumes and a request names in `reply_to`.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// The prefix of a channel's reply address (`amq.rabbitmq.reply-to.<token>`).
pub const REPLY_TO_PREFIX: &str = "amq.rabbitmq.reply-to.";

/// The reply consumers of a vhost, by token.
#[derive(Debug, Default)]
pub struct ReplyRegistry {
    channels: RwLock<HashMap<String, Weak<ChannelDelivery>>>,
}

impl ReplyRegistry {
    /// Registers `channel` as a reply consumer; returns its reply address.
    pub fn register(&self, channel: &Arc<ChannelDelivery>) -> String {
        let token = crate::broker::unique_name("");
        self.channels.write().unwrap_or_else(|p| p.into_inner()).insert(token.clone(), Arc::downgrade(channel));
        format!("{REPLY_TO_PREFIX}{token}")
    }

    /// Forgets a reply address.
    pub fn unregister(&self, address: &str) {
        if let Some(token) = address.strip_prefix(REPLY_TO_PREFIX) {
            self.channels.write().unwrap_or_else(|p| p.into_inner()).remove(token);
        }
    }

    /// The channel behind a reply address, if it is still there.
    pub fn channel(&self, address: &str) -> Option<Arc<ChannelDelivery>> {
        let token = address.strip_prefix(REPLY_TO_PREFIX)?;
        self.channels.read().unwrap_or_else(|p| p.into_inner()).get(token).and_then(Weak::upgrade)
    }

    /// Delivers a reply to the channel behind `address`; false when there is none (the
    /// reply is unroutable).
    pub fn deliver(&self, address: &str, msg: &Message) -> bool {
        self.channel(address).is_some_and(|ch| ch.deliver_reply(msg))
    }
}
