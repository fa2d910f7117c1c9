//! The outbound side of one connection: a buffer of encoded frames shared by everything that
//! writes to the client (the connection's own replies, and queues delivering from whichever
//! task published) and drained by the connection's single writer task.
//!
//! Writers append whole commands (a delivery's method, header and body frames together) under
//! one short lock, so frames of different commands never interleave. The writer swaps the
//! buffer out and writes it with one syscall per batch, which batches flushes for free. When
//! the client reads slower than deliveries arrive, [`Outbound::is_congested`] tells queues to
//! hold messages back, and the writer wakes the connection through [`Outbound::drained`]
//! once the backlog is written.
//!
//! Buffered octets count toward the memory alarm (replies a client does not read, such as
//! basic.return, grow it like any message). A write that makes no progress for the send
//! timeout (RabbitMQ's 15 s) breaks the connection: the buffer is dropped and the reader is
//! told through [`Outbound::broken`], so the connection ends and releases what it held.
//!
//! Injected faults (the management API's, for testing clients) act here too: a frozen
//! writer writes nothing (not even heartbeats) until thawed, a delay holds every batch
//! back, and an abort ends the writer without flushing or shutting the socket down.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::broker::memory::MemoryMonitor;
use crate::connection::trace::{Direction, Trace};
use crate::broker::message::Message;
use warren_protocol::frame::{self, put_short_str};
use warren_protocol::AMQPClass;

/// Above this many buffered octets a connection counts as congested.
const HIGH_WATER: usize = 1 << 20;

/// The frame buffer of one connection.
#[derive(Debug)]
pub struct Outbound {
    inner: Mutex<Inner>,
    /// Wakes the writer when frames were appended or the connection is closing.
    ready: Notify,
    /// Wakes the connection's reader after a congested buffer was written out.
    drained: Notify,
    /// The negotiated frame_max, which body frames are split by.
    frame_max: AtomicU32,
    /// Counts buffered octets for the memory alarm.
    memory: Option<Arc<MemoryMonitor>>,
    /// Wakes the connection's reader when the writer gave up (send timeout, socket error).
    broken: Notify,
    /// A fault is injected or a trace records (one relaxed load per batch when neither).
    faulted: AtomicBool,
    /// Injected: the writer writes nothing.
    frozen: AtomicBool,
    /// Injected: milliseconds every batch waits before it is written.
    delay_ms: AtomicU64,
    /// Wakes a frozen writer.
    thawed: Notify,
    /// Where written frames are recorded, while tracing.
    tracing: Mutex<Option<Arc<Trace>>>,
}

#[derive(Debug, Default)]
struct Inner {
    buf: BytesMut,
    closed: bool,
    /// Set by a queue that skipped a consumer because this buffer was congested. Kept under
    /// the same lock as `buf` so the writer cannot miss it between its write and its check.
    throttled: bool,
    /// The writer gave up; nothing more will be sent.
    broken: bool,
    /// Reset: the writer ends at once, without flushing or shutting down.
    aborted: bool,
    /// Octets of `buf` counted toward the memory alarm so far (counted in steps of
    /// [`COUNT_STEP`], so most writes touch no shared counter).
    counted: usize,
}

/// The granularity of the outbound buffer's memory accounting.
const COUNT_STEP: usize = 64 * 1024;

impl Outbound {
    /// A buffer for a connection whose frame_max is not negotiated yet.
    pub fn new(frame_max: u32) -> Self {
        Outbound {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            drained: Notify::new(),
            frame_max: AtomicU32::new(frame_max),
            memory: None,
            broken: Notify::new(),
            faulted: AtomicBool::new(false),
            frozen: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            thawed: Notify::new(),
            tracing: Mutex::new(None),
        }
    }

    /// Records every frame written from now on in `trace` (None: stops recording).
    pub fn trace(&self, trace: Option<Arc<Trace>>) {
        *self.tracing.lock().unwrap_or_else(|p| p.into_inner()) = trace;
        self.update_faulted();
    }

    /// Freezes (or thaws) the writer: nothing reaches the client while frozen.
    pub fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::Relaxed);
        self.update_faulted();
        if !frozen {
            self.thawed.notify_one();
        }
    }

    /// Delays every batch written to the client by `delay` (zero: no delay).
    pub fn delay(&self, delay: Duration) {
        self.delay_ms.store(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.update_faulted();
    }

    fn update_faulted(&self) {
        let tracing = self.tracing.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        let faulted = tracing || self.frozen.load(Ordering::Relaxed) || self.delay_ms.load(Ordering::Relaxed) != 0;
        self.faulted.store(faulted, Ordering::Relaxed);
    }

    /// Ends the writer without writing what is buffered and without shutting the socket
    /// down (a reset: the connection drops the socket unannounced).
    pub fn abort(&self) {
        let mut inner = self.lock();
        inner.aborted = true;
        inner.closed = true;
        drop(inner);
        self.ready.notify_one();
        self.freeze(false);
    }

    /// Whether the writer was aborted (a reset).
    pub fn is_aborted(&self) -> bool {
        self.lock().aborted
    }

    /// Waits out the injected faults before a batch is written.
    async fn hold_back(&self) {
        while self.frozen.load(Ordering::Relaxed) {
            let thawed = self.thawed.notified();
            if !self.frozen.load(Ordering::Relaxed) {
                break;
            }
            thawed.await;
        }
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay != 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }

    /// A buffer whose octets count toward `memory`.
    pub fn counted(frame_max: u32, memory: Arc<MemoryMonitor>) -> Self {
        Outbound { memory: Some(memory), ..Self::new(frame_max) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the buffer inconsistent beyond a
        // partial frame on a connection that is going away anyway.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the negotiated frame_max.
    pub fn set_frame_max(&self, frame_max: u32) {
        self.frame_max.store(frame_max, Ordering::Relaxed);
    }

    /// Appends frames written by `encode`; dropped if the connection is closed.
    pub fn write(&self, encode: impl FnOnce(&mut BytesMut)) {
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        encode(&mut inner.buf);
        let uncounted = inner.buf.len().saturating_sub(inner.counted);
        let count = self.memory.is_some() && uncounted >= COUNT_STEP;
        if count {
            inner.counted += uncounted;
        }
        drop(inner);
        if let (true, Some(m)) = (count, &self.memory) {
            m.add(uncounted);
        }
        self.ready.notify_one();
    }

    /// Appends one method frame.
    pub fn method(&self, channel: u16, method: &AMQPClass) {
        self.write(|buf| frame::encode_method(buf, channel, method));
    }

    /// Appends a `basic.deliver` with the message's header and body frames.
    pub fn deliver(&self, channel: u16, consumer_tag: &str, delivery_tag: u64, redelivered: bool, msg: &Message) {
        let frame_max = self.frame_max.load(Ordering::Relaxed);
        self.write(|buf| {
            buf.reserve(64 + consumer_tag.len() + msg.exchange.len() + msg.routing_key.len() + msg.payload.len());
            frame::encode_method_with(buf, channel, 60, 60, |b| {
                put_short_str(b, consumer_tag);
                b.put_u64(delivery_tag);
                b.put_u8(redelivered as u8);
                put_short_str(b, &msg.exchange);
                put_short_str(b, &msg.routing_key);
            });
            encode_content(buf, channel, msg, frame_max);
        });
    }

    /// Appends a `basic.get-ok` with the message's content.
    pub fn get_ok(&self, channel: u16, delivery_tag: u64, redelivered: bool, message_count: u32, msg: &Message) {
        let frame_max = self.frame_max.load(Ordering::Relaxed);
        self.write(|buf| {
            frame::encode_method_with(buf, channel, 60, 71, |b| {
                b.put_u64(delivery_tag);
                b.put_u8(redelivered as u8);
                put_short_str(b, &msg.exchange);
                put_short_str(b, &msg.routing_key);
                b.put_u32(message_count);
            });
            encode_content(buf, channel, msg, frame_max);
        });
    }

    /// Appends a `basic.return` with the message's content.
    pub fn basic_return(&self, channel: u16, reply_code: u16, reply_text: &str, msg: &Message) {
        let frame_max = self.frame_max.load(Ordering::Relaxed);
        self.write(|buf| {
            frame::encode_method_with(buf, channel, 60, 50, |b| {
                b.put_u16(reply_code);
                put_short_str(b, reply_text);
                put_short_str(b, &msg.exchange);
                put_short_str(b, &msg.routing_key);
            });
            encode_content(buf, channel, msg, frame_max);
        });
    }

    /// Appends a publisher-confirm `basic.ack` or `basic.nack`.
    pub fn confirm(&self, channel: u16, ack: bool, delivery_tag: u64, multiple: bool) {
        self.write(|buf| {
            frame::encode_method_with(buf, channel, 60, if ack { 80 } else { 120 }, |b| {
                b.put_u64(delivery_tag);
                // basic.nack packs multiple and requeue in one octet; requeue stays 0.
                b.put_u8(multiple as u8);
            });
        });
    }

    /// True when the client is behind; queues then keep messages instead of buffering more.
    pub fn is_congested(&self) -> bool {
        let mut inner = self.lock();
        let congested = inner.buf.len() >= HIGH_WATER;
        inner.throttled |= congested;
        congested
    }

    /// Resolves after a congested buffer has been written out.
    pub async fn drained(&self) {
        self.drained.notified().await;
    }

    /// Stops accepting frames; the writer flushes what is buffered and ends.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// The writer gives up: what is buffered is dropped and the reader is woken.
    fn give_up(&self, in_flight: usize) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.broken = true;
        inner.buf = BytesMut::new();
        let dropped = std::mem::take(&mut inner.counted);
        drop(inner);
        if let Some(m) = &self.memory {
            m.sub(dropped + in_flight);
        }
        self.broken.notify_one();
    }

    /// Resolves once the writer has given up on the socket.
    pub async fn broken(&self) {
        loop {
            let notified = self.broken.notified();
            if self.lock().broken {
                return;
            }
            notified.await;
        }
    }

    /// Waits for frames and swaps them into `out` (which must be empty), returning how many
    /// of their octets were counted toward the memory alarm; `None` once the buffer is
    /// closed and fully taken.
    async fn take(&self, out: &mut BytesMut) -> Option<usize> {
        loop {
            {
                let mut inner = self.lock();
                if inner.aborted {
                    return None;
                }
                if !inner.buf.is_empty() {
                    std::mem::swap(&mut inner.buf, out);
                    return Some(std::mem::take(&mut inner.counted));
                }
                if inner.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// The writer task: writes batches to `sink` until closed, sending a heartbeat frame
    /// when nothing was written for a while, so that the peer never goes `heartbeat` (if
    /// non-zero) without hearing from the broker. Returns when the buffer is closed and
    /// written, or the socket fails.
    pub async fn run_writer<W: AsyncWrite + Unpin>(&self, sink: &mut W, heartbeat: Duration, send_timeout: Duration) -> std::io::Result<()> {
        // Grown by what is written (and then kept), so an idle connection holds no more
        // than it sent.
        let mut batch = BytesMut::new();
        // One timer ticking every half interval, rather than one armed per wait for frames
        // (a timer-wheel insert and removal per batch showed in profiles): a tick after
        // which nothing was written sends a heartbeat.
        let tick = heartbeat / 2;
        let mut idle = (!heartbeat.is_zero()).then(|| Box::pin(tokio::time::sleep(tick)));
        let mut wrote = false;
        loop {
            // `counted`: octets of the batch that were counted toward the memory alarm
            // (heartbeats are not).
            let taken = match idle.as_mut() {
                None => self.take(&mut batch).await,
                Some(timer) => tokio::select! {
                    biased;
                    taken = self.take(&mut batch) => {
                        wrote = true;
                        taken
                    }
                    () = timer.as_mut() => {
                        timer.as_mut().reset(tokio::time::Instant::now() + tick);
                        if std::mem::take(&mut wrote) {
                            continue;
                        }
                        frame::encode_heartbeat(&mut batch);
                        Some(0)
                    }
                },
            };
            let Some(counted) = taken else { break };
            if self.faulted.load(Ordering::Relaxed) {
                self.hold_back().await;
                if self.lock().aborted {
                    self.give_up(counted);
                    return Ok(());
                }
                let trace = self.tracing.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let Some(t) = trace {
                    t.batch(Direction::Out, &batch);
                }
            }
            let written = match within(send_timeout, sink.write_all(&batch)).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no write progress for {}s (send timeout)", send_timeout.as_secs()))),
            };
            if let Err(e) = written {
                self.give_up(counted);
                return Err(e);
            }
            if let Some(m) = &self.memory {
                m.sub(counted);
            }
            // Keep the allocation unless a large batch grew it far beyond the usual size.
            if batch.capacity() > 4 * HIGH_WATER {
                batch = BytesMut::with_capacity(64 * 1024);
            } else {
                batch.clear();
            }
            let wake = {
                let mut inner = self.lock();
                let wake = inner.throttled && inner.buf.len() < HIGH_WATER;
                inner.throttled &= !wake;
                wake
            };
            if wake {
                self.drained.notify_one();
            }
        }
        if self.lock().aborted {
            // What was buffered is dropped unsent (and uncounted).
            self.give_up(0);
            return Ok(());
        }
        sink.flush().await?;
        sink.shutdown().await
    }
}

/// Runs `fut` with a time limit, but reads the clock and arms a timer only when it does
/// not complete at its first poll: a busy connection's takes and writes mostly do, and a
/// clock read per batch showed in profiles.
async fn within<F: Future>(limit: Duration, fut: F) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut fut = std::pin::pin!(fut);
    if let Poll::Ready(out) = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        return Ok(out);
    }
    tokio::time::timeout(limit, fut).await
}

/// Appends a content header and body frames for `msg`.
fn encode_content(buf: &mut BytesMut, channel: u16, msg: &Message, frame_max: u32) {
    frame::encode_content_header(buf, channel, msg.body().len() as u64, msg.properties());
    frame::encode_body(buf, channel, msg.body(), frame_max);
}
