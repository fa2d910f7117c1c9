//! RPC over direct reply-to (`--rpc`): servers answer requests from the queue by publishing
//! each body back to the request's `reply_to`; clients send one request at a time with
//! `reply_to: amq.rabbitmq.reply-to` and time the round trip.

use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use tokio::sync::watch;

use crate::stats::{now_ns, Counters, Latency};
use crate::worker::ConsumerSpec;

/// The pseudo-queue of direct reply-to.
const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// An RPC server: every request is answered with its own body (auto-ack consumer).
pub async fn run_server(mut c: ConsumerSpec) -> lapin::Result<()> {
    let mut received: u64 = 0;
    let mut stop = pin!(c.stop_rx.wait_for(|v| *v));
    loop {
        let delivery = tokio::select! {
            biased;
            d = c.consumer.next() => d,
            _ = &mut stop => break,
        };
        let d = match delivery {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(e),
            None => break,
        };
        if let Some(reply_to) = d.properties.reply_to().clone() {
            let props = d.properties.correlation_id().clone().map_or_else(BasicProperties::default, |id| BasicProperties::default().with_correlation_id(id));
            c.channel.basic_publish(ShortString::from(""), reply_to, BasicPublishOptions::default(), &d.data, props).await?;
        }
        received += 1;
        c.counters.received.store(received, Relaxed);
        c.counters.last_ns.store(now_ns(), Relaxed);
    }
    c.counters.done_ns.store(now_ns().max(1), Relaxed);
    Ok(())
}

/// What an RPC client needs.
pub struct ClientSpec {
    pub channel: Channel,
    /// The request queue.
    pub queue: ShortString,
    pub size: usize,
    pub limit: Option<u64>,
    pub counters: Arc<Counters>,
    pub latency: Arc<Latency>,
    /// Set when clients must stop sending.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    pub stop_rx: watch::Receiver<bool>,
}

/// An RPC client: one request in flight at a time; each round trip is a latency sample.
pub async fn run_client(c: ClientSpec) -> lapin::Result<()> {
    let mut replies = c
        .channel
        .basic_consume(ShortString::from(REPLY_TO), ShortString::from(""), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
        .await?;
    let mut body = vec![0u8; c.size.max(8)];
    let props = BasicProperties::default().with_reply_to(ShortString::from(REPLY_TO));
    let mut sent: u64 = 0;
    loop {
        if c.stop.load(Relaxed) || *c.stop_rx.borrow() || c.limit.is_some_and(|l| sent >= l) {
            break;
        }
        let start = now_ns();
        body[..8].copy_from_slice(&start.to_le_bytes());
        c.channel.basic_publish(ShortString::from(""), c.queue.clone(), BasicPublishOptions::default(), &body, props.clone()).await?;
        sent += 1;
        c.counters.sent.store(sent, Relaxed);
        let mut stop_rx = c.stop_rx.clone();
        let reply = tokio::select! {
            r = replies.next() => r,
            _ = stop_rx.wait_for(|v| *v) => break,
        };
        match reply {
            Some(Ok(_)) => {
                let now = now_ns();
                c.latency.record(now.saturating_sub(start));
                c.counters.last_ns.store(now, Relaxed);
            }
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    c.counters.done_ns.store(now_ns().max(1), Relaxed);
    Ok(())
}
