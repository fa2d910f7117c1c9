//! One client connection: the handshake, then the frame loop that feeds channels, and the
//! teardown that returns unacknowledged messages and drops exclusive queues.
//!
//! The task that runs [`serve`] is the connection's only reader; a second task runs the
//! writer ([`Outbound::run_writer`]). Both are generic over the [`Transport`] (plain TCP or
//! TLS), so the plain path keeps tokio's lock-free owned halves. Errors become close methods in one place
//! ([`Connection::fail`]): a channel error closes that channel (later frames on it are
//! dropped until `channel.close-ok`), a connection error sends `connection.close` and waits
//! for `close-ok` while ignoring everything else.

mod basic;
mod channel;
mod events;
pub mod handshake;
mod topology;
pub mod trace;

use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant as Deadline;
use tracing::{info, warn, Instrument};
use warren_protocol::frame::{self, Frame};
use warren_protocol::spec::{channel as chan, connection};
use warren_protocol::{method, AMQPClass, AmqpError, ReplyCode, Scope};

use crate::access::{ChannelSlot, Grant, Usage};
use crate::broker::consumer::Overdue;
use crate::broker::vhost::{cancel_consumer, VHost};
use crate::broker::connections::{Command, Opened, Registered};
use crate::broker::Broker;
use crate::outbound::Outbound;
use crate::tls::CertLogin;
use channel::{Channel, ChannelPhase};
use events::Event;
use handshake::{HandshakeError, Session};

/// How long a peer has to answer our `connection.close`.
const CLOSE_OK_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a peer has to answer the `connection.close` of a broker shutting down (a
/// test's broker should stop at once, even with clients that are not reading).
const SHUTDOWN_CLOSE_OK_TIMEOUT: Duration = Duration::from_millis(500);

/// How often the connection checks for missed heartbeats and for deliveries held past the
/// consumer timeout.
const TICK: Duration = Duration::from_secs(1);

/// What every channel handler needs from its connection.
#[derive(Debug)]
pub(crate) struct Context {
    /// Connection id (exclusive queue ownership).
    pub id: u64,
    /// The broker.
    pub broker: Arc<Broker>,
    /// The vhost opened by the handshake.
    pub vhost: Arc<VHost>,
    /// The user's rights in the vhost (every operation is checked against them).
    pub grant: Arc<Grant>,
    /// The user's open connections and channels (its limits).
    pub usage: Arc<Usage>,
    /// The frames going to the client.
    pub outbound: Arc<Outbound>,
    /// The client wants basic.cancel when a consumer's queue goes away.
    pub cancel_notify: bool,
}

/// A byte stream a connection runs on, split into the halves its reader and writer own.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Encrypted (the management plane shows it).
    const TLS: bool;
    /// Makes closing the socket send a TCP reset (an injected fault); false when the
    /// transport cannot.
    fn reset_on_close(reader: &Self::Reader) -> bool;
    /// Drops the writer half without shutting its direction down (no FIN before a reset).
    fn discard_writer(writer: Self::Writer);
    /// The half the frame loop reads.
    type Reader: AsyncRead + Unpin + Send + 'static;
    /// The half the writer task owns.
    type Writer: AsyncWrite + Unpin + Send + 'static;
    /// Splits the stream.
    fn split(self) -> (Self::Reader, Self::Writer);
}

impl Transport for TcpStream {
    const TLS: bool = false;
    fn reset_on_close(reader: &OwnedReadHalf) -> bool {
        // SO_LINGER 0: close() discards unsent data and sends RST.
        socket2::SockRef::from(reader.as_ref()).set_linger(Some(Duration::ZERO)).is_ok()
    }
    fn discard_writer(writer: OwnedWriteHalf) {
        writer.forget();
    }
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;
    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        // Owned halves: reads and writes go to the socket without a shared lock.
        self.into_split()
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    const TLS: bool = true;
    fn reset_on_close(_: &Self::Reader) -> bool {
        // The halves share the TLS session behind a lock; the socket is not reachable.
        false
    }
    fn discard_writer(writer: Self::Writer) {
        drop(writer);
    }
    type Reader = tokio::io::ReadHalf<Self>;
    type Writer = tokio::io::WriteHalf<Self>;
    fn split(self) -> (Self::Reader, Self::Writer) {
        // One rustls session holds both directions' state, so the halves share it.
        tokio::io::split(self)
    }
}

/// Serves one accepted connection until it closes or `shutdown` fires. The AMQP handshake
/// must be done by `deadline` (which a TLS handshake before it has used part of);
/// `cert_login` is what a verified TLS client certificate says, for EXTERNAL.
pub async fn serve<S: Transport>(
    broker: Arc<Broker>,
    mut stream: S,
    (peer, local): (SocketAddr, SocketAddr),
    cert_login: Option<CertLogin>,
    deadline: Deadline,
    shutdown: watch::Receiver<bool>,
) {
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut session = match tokio::time::timeout_at(deadline, handshake::handshake(&mut stream, &mut rbuf, &broker, peer, cert_login.as_ref())).await {
        Ok(Ok(session)) => session,
        Ok(Err(HandshakeError::Refused { error: e, user, silent })) => {
            match user {
                Some(user) => warn!(%peer, %user, code = e.code.code(), error = %e, "login refused"),
                None => warn!(%peer, code = e.code.code(), error = %e, "connection refused during handshake"),
            }
            if silent {
                return;
            }
            let mut wbuf = BytesMut::new();
            frame::encode_method(&mut wbuf, 0, &close_method(&e));
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, &wbuf).await;
            // Give the client a moment to read the close and answer close-ok.
            let mut sink = [0u8; 256];
            let _ = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut sink)).await;
            return;
        }
        Ok(Err(e)) => {
            info!(%peer, error = %e, "connection ended during handshake");
            return;
        }
        Err(_) => {
            warn!(%peer, timeout_secs = broker.config.handshake_timeout, "handshake timed out; closing");
            return;
        }
    };
    let id = broker.next_connection_id();
    let span = tracing::info_span!("connection", id, %peer, user = %session.grant.user.name, vhost = %session.slots.vhost.name);
    let (registered, commands) = broker.connections.register(Opened {
        id,
        peer,
        local,
        tls: S::TLS,
        user: session.grant.user.name.clone(),
        vhost: session.slots.vhost.name.clone(),
        auth_mechanism: std::mem::take(&mut session.mechanism),
        client_properties: std::mem::take(&mut session.client_properties),
        channel_max: session.tuning.channel_max,
        frame_max: session.tuning.frame_max,
        heartbeat: session.tuning.heartbeat,
    });
    run(broker, stream, rbuf, session, registered, commands, shutdown).instrument(span).await;
}

async fn run<S: Transport>(
    broker: Arc<Broker>,
    stream: S,
    rbuf: BytesMut,
    session: Session,
    registered: Registered,
    commands: mpsc::Receiver<Box<Command>>,
    shutdown: watch::Receiver<bool>,
) {
    let Session { grant, slots, tuning, cancel_notify, blocked_notify, client, .. } = session;
    let (id, peer) = (registered.info.opened.id, registered.info.opened.peer);
    let vhost = Arc::clone(&slots.vhost);
    let usage = Arc::clone(&slots.usage);
    info!(client = %client, channel_max = tuning.channel_max, frame_max = tuning.frame_max, heartbeat = tuning.heartbeat, "connection opened");
    broker.metrics.connections_opened.inc();
    broker.metrics.connections.inc();
    let outbound = Arc::new(Outbound::counted(tuning.frame_max, Arc::clone(&broker.memory)));
    let (mut reader, mut writer) = stream.split();
    let heartbeat = Duration::from_secs(u64::from(tuning.heartbeat));
    let writer_task = {
        let outbound = Arc::clone(&outbound);
        // Heartbeats go out at half the interval, as RabbitMQ sends them.
        let send_timeout = Duration::from_secs(broker.config.send_timeout);
        tokio::spawn(
            async move {
                if let Err(e) = outbound.run_writer(&mut writer, heartbeat / 2, send_timeout).await {
                    warn!(error = %e, "writing to the client failed; closing the connection");
                }
                if outbound.is_aborted() {
                    S::discard_writer(writer);
                }
            }
            .in_current_span(),
        )
    };
    let mut conn = Connection {
        ctx: Context { id, broker: Arc::clone(&broker), vhost, grant, usage, outbound: Arc::clone(&outbound), cancel_notify },
        channels: FxHashMap::default(),
        channel_max: tuning.channel_max,
        frame_max: tuning.frame_max,
        closing: None,
        blocked: false,
        blocked_notify,
        registered,
        frozen_until: None,
        reset: false,
        trace: None,
    };
    let reason = conn.frame_loop(&mut reader, rbuf, heartbeat, shutdown, commands).await;
    if conn.reset && !S::reset_on_close(&reader) {
        warn!("cannot reset this transport; closing it plainly");
    }
    // Teardown is the connection's Drop, so it also happens when this task panics.
    drop(conn);
    drop(slots);
    let _ = writer_task.await;
    info!(%peer, reason = %reason, "connection closed");
}

/// The reader-side state of an open connection.
struct Connection {
    ctx: Context,
    channels: FxHashMap<u16, Channel>,
    channel_max: u16,
    frame_max: u32,
    /// Set once we sent connection.close: when to give up waiting for close-ok.
    closing: Option<Instant>,
    /// Blocked by the memory or disk alarm: the socket is not read.
    blocked: bool,
    /// The client takes connection.blocked / unblocked.
    blocked_notify: bool,
    /// Its entry in the broker's list of connections (removed when this is dropped).
    registered: Registered,
    /// Frozen (an injected fault) until then: nothing read or written.
    frozen_until: Option<Instant>,
    /// Reset (an injected fault): the socket is dropped with a TCP reset.
    reset: bool,
    /// Where frames from the client are recorded, while tracing.
    trace: Option<Arc<trace::Trace>>,
}

/// Why the frame loop ends the connection.
struct Exit(String);

impl Connection {
    async fn frame_loop<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        mut rbuf: BytesMut,
        heartbeat: Duration,
        shutdown: watch::Receiver<bool>,
        commands: mpsc::Receiver<Box<Command>>,
    ) -> String {
        let mut last_read = Instant::now();
        // One tick a second checks for a silent peer (dropped after two missed heartbeat
        // intervals) and for deliveries held unacknowledged past the consumer timeout, as
        // RabbitMQ's channel tick does.
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ((mut low_memory, mut low_disk), mut events) = events::spawn(events::Sources {
            alarm: self.ctx.broker.memory.subscribe(),
            disk_alarm: self.ctx.broker.disk.subscribe(),
            shutdown,
            vhost_deleted: self.ctx.vhost.deleted(),
            user_deleted: self.ctx.usage.deleted(),
            commands,
            outbound: Arc::clone(&self.ctx.outbound),
        });
        loop {
            // As RabbitMQ: under the memory alarm a connection runs until it sends a
            // basic.publish, which waits (with everything after it) until the alarm clears.
            let hold_publish = (low_memory || low_disk) && self.closing.is_none();
            let at_publish = match self.drain_frames(&mut rbuf, hold_publish) {
                Ok(at_publish) => at_publish,
                Err(Exit(reason)) => return reason,
            };
            let reason = match (low_memory, low_disk) {
                (true, _) => "low on memory",
                (_, true) => "low on disk",
                _ => "alarm cleared",
            };
            if self.set_blocked(at_publish, reason) {
                // Blocked time does not count as the client's silence.
                last_read = Instant::now();
            }
            for ch in self.channels.values_mut() {
                ch.flush_confirms(&self.ctx);
            }
            if rbuf.capacity() - rbuf.len() < 4096 {
                rbuf.reserve(64 * 1024);
            }
            // The timers are made only when they are armed: the async blocks defer them.
            let (closing, frozen_until) = (self.closing, self.frozen_until);
            tokio::select! {
                read = reader.read_buf(&mut rbuf), if !self.blocked && frozen_until.is_none() => match read {
                    Ok(0) => return if self.closing.is_some() { "closed by broker".into() } else { "client closed the socket".into() },
                    Ok(_) => last_read = Instant::now(),
                    Err(e) => return format!("socket error: {e}"),
                },
                () = async { tokio::time::sleep_until(closing.unwrap_or_else(Instant::now).into()).await }, if closing.is_some() => {
                    return "no close-ok from client".into();
                }
                () = async { tokio::time::sleep_until(frozen_until.unwrap_or_else(Instant::now).into()).await }, if frozen_until.is_some() => {
                    info!("thawed");
                    self.frozen_until = None;
                    self.ctx.outbound.freeze(false);
                    last_read = Instant::now();
                }
                _ = tick.tick() => {
                    if self.closing.is_none() && !self.blocked && self.frozen_until.is_none() && !heartbeat.is_zero() && last_read.elapsed() >= heartbeat * 2 {
                        warn!(timeout_secs = heartbeat.as_secs() * 2, "missed heartbeats from client; closing");
                        return "missed heartbeats".into();
                    }
                    if self.closing.is_none() {
                        self.close_overdue_channels();
                    }
                }
                _ = self.ctx.outbound.drained() => {
                    for ch in self.channels.values() {
                        ch.redispatch();
                    }
                }
                Some(event) = events.recv() => match event {
                    Event::Alarm { low_memory: memory, low_disk: disk } => (low_memory, low_disk) = (memory, disk),
                    Event::Broken => return "the client stopped reading (send timeout) or the socket failed".into(),
                    // After our connection.close only close-ok matters.
                    _ if self.closing.is_some() => {}
                    Event::Shutdown => {
                        self.fail(0, AmqpError::connection(ReplyCode::ConnectionForced, "broker shutdown"));
                        // A stopping broker waits less for close-ok than an error close does.
                        self.closing = Some(Instant::now() + SHUTDOWN_CLOSE_OK_TIMEOUT);
                    }
                    Event::VhostDeleted => {
                        let text = format!("vhost '{}' is deleted", self.ctx.vhost.name);
                        self.fail(0, AmqpError::connection(ReplyCode::ConnectionForced, text));
                    }
                    Event::UserDeleted => {
                        let text = format!("user '{}' is deleted", self.ctx.grant.user.name);
                        self.fail(0, AmqpError::connection(ReplyCode::ConnectionForced, text));
                    }
                    Event::Command(command) => {
                        if let Some(reason) = self.obey(*command) {
                            return reason;
                        }
                    }
                },
            }
        }
    }

    /// Carries out a management command; returns why the connection ends, if it does.
    fn obey(&mut self, command: Command) -> Option<String> {
        match command {
            Command::Close { code, text } => {
                info!(code = code.code(), reason = %text, "closed through the management API");
                self.fail(0, AmqpError::connection(code, text));
            }
            Command::Reset => {
                info!("reset through the management API");
                self.reset = true;
                self.ctx.outbound.abort();
                return Some("reset through the management API".into());
            }
            Command::Freeze(d) => {
                info!(seconds = d.as_secs(), "frozen through the management API");
                self.frozen_until = Some(Instant::now() + d);
                self.ctx.outbound.freeze(true);
            }
            Command::Delay(d) => {
                info!(delay_ms = d.as_millis() as u64, "outbound delay set through the management API");
                self.ctx.outbound.delay(d);
            }
            Command::Trace(trace) => {
                info!(on = trace.is_some(), "protocol trace switched through the management API");
                self.ctx.outbound.trace(trace.clone());
                self.trace = trace;
            }
            #[cfg(feature = "test-hooks")]
            Command::Panic => panic!("a panic injected by a test"),
        }
        None
    }

    /// Acts on deliveries held unacknowledged for longer than their queue's consumer
    /// timeout (see [`crate::broker::consumer::DeliveryState::overdue`]): closes the channel with 406 as RabbitMQ
    /// 3.13, its messages going back to their queues; or, under the RabbitMQ 4 profile,
    /// cancels a quorum queue's consumer (basic.cancel) and returns its deliveries.
    fn close_overdue_channels(&mut self) {
        let now = crate::broker::message::now_ms();
        let compat = self.ctx.broker.config.compat;
        let overdue: Vec<(u16, Overdue)> = self
            .channels
            .iter()
            .filter(|(_, ch)| ch.phase == ChannelPhase::Open)
            .filter_map(|(id, ch)| ch.delivery.lock().overdue(now, compat, ch.delivery.cancel_notify).map(|o| (*id, o)))
            .collect();
        for (id, found) in overdue {
            match found {
                Overdue::Close(timeout) => {
                    self.fail(
                        id,
                        AmqpError::precondition_failed(format!(
                            "delivery acknowledgement on channel {id} timed out. Timeout value used: {timeout} ms. This timeout value can be configured, see consumers doc guide to learn more"
                        )),
                    );
                }
                Overdue::Cancel(consumers) => {
                    for c in consumers {
                        warn!(consumer_tag = %c.tag, channel = id, queue = %c.queue.name, timeout_ms = c.queue.consumer_timeout(), "consumer timed out waiting for an acknowledgement; cancelled");
                        if c.queue.remove_consumer(&c) {
                            self.ctx.vhost.delete_queue_now(&c.queue);
                        }
                        let returned = c.channel.lock().time_out(&c);
                        cancel_consumer(&c);
                        channel::requeue(returned);
                    }
                }
            }
        }
    }

    /// Blocks or unblocks reading for the memory or disk alarm (`reason`), telling clients
    /// that take connection.blocked. Returns true when the state changed.
    fn set_blocked(&mut self, blocked: bool, reason: &str) -> bool {
        if blocked == self.blocked {
            return false;
        }
        self.blocked = blocked;
        self.registered.info.blocked.store(blocked, std::sync::atomic::Ordering::Relaxed);
        info!(blocked, reason, "alarm: connection {}", if blocked { "blocked" } else { "unblocked" });
        // After our connection.close only close-ok may follow.
        if self.blocked_notify && self.closing.is_none() {
            let m = if blocked {
                connection::AMQPMethod::Blocked(connection::Blocked { reason: reason.into() })
            } else {
                connection::AMQPMethod::Unblocked(connection::Unblocked {})
            };
            self.ctx.outbound.method(0, &AMQPClass::Connection(m));
        }
        true
    }

    /// Handles every complete frame in `rbuf`; with `hold_publish`, stops before a
    /// basic.publish method frame and returns true.
    fn drain_frames(&mut self, rbuf: &mut BytesMut, hold_publish: bool) -> Result<bool, Exit> {
        loop {
            // A method frame whose payload starts with class 60, method 40.
            if hold_publish && rbuf.len() >= 11 && rbuf[0] == 1 && rbuf[7..11] == [0, 60, 0, 40] {
                return Ok(true);
            }
            // So is one in the middle of a publish: its content frames wait too (bodies
            // spread over many channels would otherwise keep growing).
            if hold_publish && matches!(rbuf.first(), Some(2 | 3)) {
                return Ok(true);
            }
            let frame = match frame::decode(rbuf, self.frame_max) {
                Ok(Some(frame)) => {
                    if let Some(t) = &self.trace {
                        t.frame(trace::Direction::In, &frame);
                    }
                    frame
                }
                Ok(None) => return Ok(false),
                Err(e) => {
                    // The stream cannot be resynchronised after a framing error.
                    self.fail(0, e);
                    return Err(Exit("frame error".into()));
                }
            };
            if let Some(exit) = self.handle_frame(frame) {
                return Err(exit);
            }
        }
    }

    fn handle_frame(&mut self, frame: Frame) -> Option<Exit> {
        if self.closing.is_some() {
            // After connection.close only close-ok (or a crossing close) matters.
            if let Frame::Method { channel: 0, payload } = frame {
                match method::ids(&payload) {
                    Ok((10, 51)) => return Some(Exit("closed by broker".into())),
                    Ok((10, 50)) => {
                        self.ctx.outbound.method(0, &AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})));
                        return Some(Exit("closed by broker".into()));
                    }
                    _ => {}
                }
            }
            return None;
        }
        let channel = match &frame {
            Frame::Method { channel, .. } | Frame::Header { channel, .. } | Frame::Body { channel, .. } | Frame::Heartbeat { channel } => *channel,
        };
        let result = match frame {
            Frame::Heartbeat { channel: 0 } => Ok(()),
            // As RabbitMQ's reader: a hard error, whatever channel the heartbeat names.
            Frame::Heartbeat { .. } => Err(AmqpError::unexpected_frame("type 8, all octets = <<>>")),
            Frame::Method { channel: 0, payload } => return self.connection_method(&payload),
            Frame::Header { channel: 0, .. } | Frame::Body { channel: 0, .. } => Err(AmqpError::unexpected_frame("content frame on channel 0")),
            Frame::Method { channel, payload } => self.channel_method(channel, &payload),
            Frame::Header { channel, payload } => self.with_channel(channel, |ch, ctx| ch.content_header(ctx, payload)),
            Frame::Body { channel, payload } => self.with_channel(channel, |ch, ctx| ch.content_body(ctx, payload)),
        };
        match result {
            Ok(()) => None,
            Err(e) => self.fail(channel, e),
        }
    }

    fn connection_method(&mut self, payload: &[u8]) -> Option<Exit> {
        let m = match method::decode(payload) {
            Ok(m) => m,
            Err(e) => return self.fail(0, e),
        };
        match m {
            AMQPClass::Connection(connection::AMQPMethod::Close(close)) => {
                info!(reply_code = close.reply_code, reply_text = %close.reply_text, "client closed the connection");
                self.ctx.outbound.method(0, &AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})));
                Some(Exit("closed by client".into()))
            }
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(update)) => {
                // RabbitMQ (rabbit_access_control:update_state) hands the new secret only to
                // backends whose credentials expire (OAuth 2 tokens); the internal user
                // database, the only one Warren has, never expires, so the secret is not
                // checked and the connection keeps its user.
                info!(user = %self.ctx.grant.user.name, reason = %update.reason, "user updated secret");
                self.ctx.outbound.method(0, &AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(connection::UpdateSecretOk {})));
                None
            }
            other => {
                let (c, m) = (other.get_amqp_class_id(), other.get_amqp_method_id());
                self.fail(0, AmqpError::command_invalid(format!("unexpected '{}' on channel 0", method::name(c, m))).on_method(c, m))
            }
        }
    }

    fn channel_method(&mut self, id: u16, payload: &[u8]) -> Result<(), AmqpError> {
        let (class_id, method_id) = method::ids(payload)?;
        if id > self.channel_max {
            return Err(AmqpError::channel_error(format!("channel {id} is above the negotiated channel_max {}", self.channel_max)).on_method(class_id, method_id));
        }
        match self.channels.get_mut(&id) {
            None => {
                if (class_id, method_id) != (20, 10) {
                    return Err(AmqpError::channel_error(format!(
                        "expected 'channel.open' on channel {id}, got '{}'",
                        method::name(class_id, method_id)
                    ))
                    .on_method(class_id, method_id));
                }
                method::decode(payload)?;
                let slot = ChannelSlot::take(&self.ctx.usage, &self.ctx.grant.user)?;
                let ch = Channel::new(id, self.ctx.id, Arc::clone(&self.ctx.outbound), self.ctx.cancel_notify, slot);
                self.registered.info.add_channel(Arc::clone(&ch.delivery));
                self.channels.insert(id, ch);
                self.ctx.broker.metrics.channels_opened.inc();
                self.ctx.outbound.method(id, &AMQPClass::Channel(chan::AMQPMethod::OpenOk(chan::OpenOk {})));
                Ok(())
            }
            Some(ch) if ch.phase == ChannelPhase::Closing => {
                // After our channel.close, only close-ok (or a crossing close) counts.
                match (class_id, method_id) {
                    (20, 41) => {
                        self.channels.remove(&id);
                        self.registered.info.remove_channel(id);
                    }
                    (20, 40) => {
                        self.ctx.outbound.method(id, &AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})));
                    }
                    _ => {}
                }
                Ok(())
            }
            Some(ch) => {
                if !ch.assembler_idle() {
                    return Err(AmqpError::unexpected_frame(format!(
                        "expected content header or body on channel {id}, got '{}'",
                        method::name(class_id, method_id)
                    ))
                    .on_method(class_id, method_id));
                }
                let m = method::decode(payload)?;
                match m {
                    AMQPClass::Channel(chan::AMQPMethod::Close(close)) => {
                        if close.reply_code != ReplyCode::ReplySuccess.code() {
                            info!(channel = id, reply_code = close.reply_code, reply_text = %close.reply_text, "client closed channel with an error");
                        }
                        if let Some(mut ch) = self.channels.remove(&id) {
                            ch.teardown(&self.ctx);
                        }
                        self.registered.info.remove_channel(id);
                        self.ctx.outbound.method(id, &AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})));
                        Ok(())
                    }
                    AMQPClass::Channel(chan::AMQPMethod::Open(_)) => {
                        Err(AmqpError::channel_error(format!("channel {id} is already open")).on_method(20, 10))
                    }
                    m => ch.handle_method(&self.ctx, m).map_err(|e| e.on_method(class_id, method_id)),
                }
            }
        }
    }

    /// Runs `f` on an open channel; content frames on unknown channels are 504.
    fn with_channel(&mut self, id: u16, f: impl FnOnce(&mut Channel, &Context) -> Result<(), AmqpError>) -> Result<(), AmqpError> {
        match self.channels.get_mut(&id) {
            Some(ch) if ch.phase == ChannelPhase::Closing => Ok(()),
            Some(ch) => f(ch, &self.ctx),
            None => Err(AmqpError::channel_error(format!("content frame on channel {id}, which is not open"))),
        }
    }

    /// Reports an error with the right close method. Returns an exit for connection errors.
    fn fail(&mut self, channel: u16, e: AmqpError) -> Option<Exit> {
        match e.scope {
            Scope::Channel if channel != 0 => {
                warn!(channel, code = e.code.code(), class_id = e.class_id, method_id = e.method_id, error = %e.text, "channel error");
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.teardown(&self.ctx);
                    ch.phase = ChannelPhase::Closing;
                }
                self.ctx.outbound.method(channel, &AMQPClass::Channel(chan::AMQPMethod::Close(chan::Close {
                    reply_code: e.code.code(),
                    reply_text: e.reply_text().into(),
                    class_id: e.class_id,
                    method_id: e.method_id,
                })));
                None
            }
            _ => {
                warn!(channel, code = e.code.code(), class_id = e.class_id, method_id = e.method_id, error = %e.text, "connection error");
                // A frozen connection thaws: the close goes out and close-ok can come in.
                if self.frozen_until.take().is_some() {
                    self.ctx.outbound.freeze(false);
                }
                self.ctx.outbound.method(0, &close_method(&e));
                self.closing = Some(Instant::now() + CLOSE_OK_TIMEOUT);
                // Channels stop now; their unacked messages go back to their queues.
                for ch in self.channels.values_mut() {
                    ch.teardown(&self.ctx);
                }
                None
            }
        }
    }

}

/// However the connection's task ends (returning, or unwinding from a panic), its
/// consumers are cancelled, its unacknowledged messages return to their queues, its
/// exclusive queues go, its outbound buffer closes and it stops being counted.
impl Drop for Connection {
    fn drop(&mut self) {
        for (_, mut ch) in self.channels.drain() {
            ch.teardown(&self.ctx);
        }
        self.ctx.vhost.drop_exclusive_queues(self.ctx.id);
        self.ctx.outbound.close();
        self.ctx.broker.metrics.connections_closed.inc();
        self.ctx.broker.metrics.connections.dec();
    }
}

fn close_method(e: &AmqpError) -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: e.code.code(),
        reply_text: e.reply_text().into(),
        class_id: e.class_id,
        method_id: e.method_id,
    }))
}
