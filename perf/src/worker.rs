//! Producers and consumers.
//!
//! lapin's `basic_publish` is an `async fn` that queues the frames for the connection's I/O
//! thread synchronously on its first poll, then waits until they are written to the socket
//! (and, with confirms, returns a second future for the broker's ack). Awaiting each publish
//! would cost a cross-thread round trip per message, so producers poll each publish once
//! (which enqueues it, in order) and then:
//!  * without confirms, drop it, except one "checkpoint" every CHECKPOINT_EVERY messages that
//!    is kept and awaited when more than --write-window messages are unwritten (writes
//!    complete in order, so this bounds the client-side backlog);
//!  * with confirms, hand it to a per-producer reaper task that awaits confirms in order and
//!    releases a semaphore permit for each, so at most WINDOW are outstanding.
//!
//! Acks are sent the same way (poll once, drop): the broker's prefetch bounds them.

use crate::cli::KeyOrder;
use crate::stats::{now_ns, Counters, Latency};
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicPublishOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Consumer};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Semaphore};

const CHECKPOINT_EVERY: u64 = 64;

/// Poll a future exactly once with the current task's context.
async fn poll_once<F: Future + ?Sized>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

pub struct ProducerSpec {
    pub index: u32,
    pub channel: Channel,
    pub exchange: ShortString,
    /// Routing keys with the properties to publish with (headers carry the key for
    /// headers exchanges).
    pub keys: Vec<(ShortString, BasicProperties)>,
    pub key_order: KeyOrder,
    pub size: usize,
    pub rate: f64,
    pub limit: Option<u64>,
    pub confirm: Option<u32>,
    pub write_window: u64,
    pub drain_timeout: Duration,
    pub counters: Arc<Counters>,
    pub stop: Arc<AtomicBool>,
    pub stop_rx: watch::Receiver<bool>,
}

/// Cheap per-producer PRNG for random routing keys.
struct XorShift(u64);

impl XorShift {
    #[inline]
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Count one broker confirm; called from the producer and its reaper (hence fetch_add).
fn count_confirm(counters: &Counters, conf: &Confirmation) {
    if matches!(conf, Confirmation::Nack(_)) {
        counters.nacked.fetch_add(1, Relaxed);
    } else {
        counters.confirmed.fetch_add(1, Relaxed);
    }
    counters.last_confirm_ns.store(now_ns(), Relaxed);
}

type ConfirmFuture = Pin<Box<dyn Future<Output = lapin::Result<Confirmation>> + Send>>;

pub async fn run_producer(mut p: ProducerSpec) -> lapin::Result<()> {
    let mut buf = vec![0u8; p.size];
    buf[8..12].copy_from_slice(&p.index.to_le_bytes());
    let mut rng = XorShift(
        0x9E37_79B9_7F4A_7C15 ^ (u64::from(p.index) + 1).wrapping_mul(0x2545_F491_4F6C_DD1D),
    );
    let nkeys = p.keys.len() as u64;
    let opts = BasicPublishOptions::default();
    let start = Instant::now();
    let mut sent: u64 = 0;

    // Confirm mode: reaper task + window semaphore.
    let channel = Arc::new(p.channel.clone());
    let mut reaper = None;
    let mut window = None;
    let mut to_reaper = None;
    if let Some(w) = p.confirm {
        let sem = Arc::new(Semaphore::new(w as usize));
        let (tx, mut rx) = mpsc::unbounded_channel::<ConfirmFuture>();
        let counters = p.counters.clone();
        let sem2 = sem.clone();
        reaper = Some(tokio::spawn(async move {
            while let Some(fut) = rx.recv().await {
                let res = fut.await;
                sem2.add_permits(1);
                count_confirm(&counters, &res?);
            }
            lapin::Result::Ok(())
        }));
        window = Some(sem);
        to_reaper = Some(tx);
    }

    let mut checkpoints: VecDeque<Pin<Box<dyn Future<Output = lapin::Result<()>> + Send + '_>>> =
        VecDeque::new();
    let max_checkpoints = (p.write_window / CHECKPOINT_EVERY).max(1) as usize;
    let mut result = Ok(());

    loop {
        if p.stop.load(Relaxed) || p.limit.is_some_and(|l| sent >= l) {
            break;
        }
        if p.rate > 0.0 {
            let due = start + Duration::from_secs_f64(sent as f64 / p.rate);
            if Instant::now() < due {
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = p.stop_rx.changed() => {}
                }
                continue;
            }
        }
        let ki = match (nkeys, p.key_order) {
            (1, _) => 0,
            (n, KeyOrder::Random) => (rng.next() % n) as usize,
            (n, KeyOrder::RoundRobin) => (sent % n) as usize,
        };
        let (key, props) = &p.keys[ki];

        if let Some(sem) = &window {
            match sem.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
            let ts = now_ns();
            buf[..8].copy_from_slice(&ts.to_le_bytes());
            let (ch, ex, rk, pr, body) = (
                channel.clone(),
                p.exchange.clone(),
                key.clone(),
                props.clone(),
                buf.clone(),
            );
            let mut fut: ConfirmFuture =
                Box::pin(async move { ch.basic_publish(ex, rk, opts, &body, pr).await?.await });
            // First poll: frames are queued and the confirm is registered, in order.
            if let Poll::Ready(res) = poll_once(fut.as_mut()).await {
                // An error, or the confirm already arrived (this task was descheduled
                // between queueing the frames and polling the promises).
                match res {
                    Ok(conf) => {
                        sem.add_permits(1);
                        count_confirm(&p.counters, &conf);
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            } else if let Some(tx) = &to_reaper {
                if tx.send(fut).is_err() {
                    break;
                }
            }
            sent += 1;
            p.counters.sent.store(sent, Relaxed);
            p.counters.last_ns.store(ts, Relaxed);
        } else {
            let ts = now_ns();
            buf[..8].copy_from_slice(&ts.to_le_bytes());
            if sent % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1 {
                let (ch, ex, rk, pr, body) = (
                    &p.channel,
                    p.exchange.clone(),
                    key.clone(),
                    props.clone(),
                    buf.clone(),
                );
                let mut fut: Pin<Box<dyn Future<Output = lapin::Result<()>> + Send + '_>> =
                    Box::pin(
                        async move { ch.basic_publish(ex, rk, opts, &body, pr).await.map(drop) },
                    );
                match poll_once(fut.as_mut()).await {
                    Poll::Ready(Err(e)) => {
                        result = Err(e);
                        break;
                    }
                    Poll::Ready(Ok(())) => {}
                    Poll::Pending => checkpoints.push_back(fut),
                }
                while checkpoints.len() > max_checkpoints {
                    if let Some(front) = checkpoints.pop_front() {
                        if let Err(e) = front.await {
                            result = Err(e);
                            break;
                        }
                    }
                }
                if result.is_err() {
                    break;
                }
            } else {
                let fut = pin!(p.channel.basic_publish(
                    p.exchange.clone(),
                    key.clone(),
                    opts,
                    &buf,
                    props.clone()
                ));
                if let Poll::Ready(Err(e)) = poll_once(fut).await {
                    result = Err(e);
                    break;
                }
            }
            sent += 1;
            p.counters.sent.store(sent, Relaxed);
            p.counters.last_ns.store(ts, Relaxed);
        }
    }

    // Let the last messages reach the socket / the last confirms arrive.
    let deadline = tokio::time::Instant::now() + p.drain_timeout;
    for fut in checkpoints.drain(..) {
        match tokio::time::timeout_at(deadline, fut).await {
            Ok(Err(e)) if result.is_ok() => result = Err(e),
            _ => {}
        }
    }
    drop(to_reaper);
    if let Some(reaper) = reaper {
        match tokio::time::timeout_at(deadline, reaper).await {
            Ok(Ok(Err(e))) if result.is_ok() => result = Err(e),
            Ok(_) => {}
            Err(_) => eprintln!(
                "producer {}: gave up waiting for confirms after {:?}",
                p.index, p.drain_timeout
            ),
        }
    }
    p.counters.done_ns.store(now_ns().max(1), Relaxed);
    result
}

pub struct ConsumerSpec {
    pub channel: Channel,
    pub consumer: Consumer,
    pub auto_ack: bool,
    pub multi_ack_every: Option<u32>,
    pub limit: Option<u64>,
    pub counters: Arc<Counters>,
    pub latency: Arc<Latency>,
    pub stop_rx: watch::Receiver<bool>,
}

#[inline]
async fn send_ack(channel: &Channel, tag: u64, multiple: bool) -> lapin::Result<()> {
    let fut = pin!(channel.basic_ack(tag, BasicAckOptions { multiple }));
    match poll_once(fut).await {
        Poll::Ready(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

pub async fn run_consumer(mut c: ConsumerSpec) -> lapin::Result<()> {
    let mut received: u64 = 0;
    let mut unacked: u32 = 0;
    let mut last_tag: u64 = 0;
    let every = c.multi_ack_every.unwrap_or(1);
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
        let now = now_ns();
        if let Some(ts) = d.data.get(..8) {
            let ts = u64::from_le_bytes(ts.try_into().unwrap_or_default());
            if ts != 0 && ts <= now {
                c.latency.record(now - ts);
            }
        }
        received += 1;
        c.counters.received.store(received, Relaxed);
        c.counters.last_ns.store(now, Relaxed);
        if !c.auto_ack {
            unacked += 1;
            last_tag = d.delivery_tag;
            if unacked >= every {
                send_ack(&c.channel, last_tag, every > 1).await?;
                unacked = 0;
            }
        }
        if c.limit.is_some_and(|l| received >= l) {
            break;
        }
    }
    if unacked > 0 {
        send_ack(&c.channel, last_tag, true).await?;
    }
    c.counters.done_ns.store(now_ns().max(1), Relaxed);
    Ok(())
}
