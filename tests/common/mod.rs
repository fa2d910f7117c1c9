//! Shared helpers for the integration tests: an in-process broker on a free port, lapin
//! connections to it, and small assertions on AMQP errors.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use warren::{Config, Server};

/// A broker running in this test process.
pub struct TestBroker {
    /// Its AMQP address (the TLS one when the plain listener is off).
    pub addr: SocketAddr,
    /// Its AMQP-over-TLS address, when TLS is configured.
    pub tls_addr: Option<SocketAddr>,
    /// Its TLS state (to reload certificates), when TLS is configured.
    pub tls: Option<std::sync::Arc<warren::tls::Tls>>,
    /// Its data directory.
    pub data_dir: std::path::PathBuf,
    /// The broker itself (users, vhosts and permissions are managed through it).
    pub broker: std::sync::Arc<warren::broker::Broker>,
    /// Dropping this stops the broker.
    stop: tokio::sync::oneshot::Sender<()>,
    /// The server task.
    task: tokio::task::JoinHandle<()>,
}

impl TestBroker {
    /// Stops the broker gracefully and waits until it has finished.
    pub async fn stop(self) {
        // The test's handle goes first, so the broker (and its store) is dropped by the
        // server task as it ends; then its background tasks get to finish, so a broker
        // started next on the same directory finds it unlocked.
        let TestBroker { stop, task, broker, .. } = self;
        drop(broker);
        let _ = stop.send(());
        let _ = task.await;
        tokio::task::yield_now().await;
    }

    /// The amqp:// URI of the default vhost.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// A new lapin connection.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.uri(), ConnectionProperties::default()).await.expect("connect")
    }

    /// A new connection and a channel on it.
    pub async fn channel(&self) -> (Connection, Channel) {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.expect("channel");
        (conn, ch)
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Starts a broker on a free loopback port with `adjust` applied to the default config.
pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestBroker {
    let mut config = Config { bind: [127, 0, 0, 1].into(), port: 0, metrics_port: 0, management_port: 0, data_dir: fresh_data_dir(), ..Config::default() };
    adjust(&mut config);
    let config_dir = config.data_dir.clone();
    let server = Server::bind(config).await.expect("bind");
    let (tls_addr, tls, broker) = (server.tls_addr(), server.tls(), server.broker());
    let addr = server.local_addr().ok().or(tls_addr).expect("addr");
    let data_dir = config_dir;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    TestBroker { addr, tls_addr, tls, data_dir, broker, stop: tx, task }
}

/// A new, empty data directory under the system's temp dir.
pub fn fresh_data_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("warren-test-{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)))
}

/// Starts a broker with the default configuration.
pub async fn start() -> TestBroker {
    start_with(|_| {}).await
}

/// Fails the test instead of hanging.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// The reply code of a lapin protocol error.
pub fn reply_code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

/// The reply text of a lapin protocol error.
pub fn reply_text(err: &lapin::Error) -> String {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => e.get_message().to_string(),
        other => format!("{other:?}"),
    }
}

/// Declares a non-durable queue with default flags.
pub async fn declare(ch: &Channel, name: &str) -> lapin::Queue {
    ch.queue_declare(name.into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("queue.declare")
}

/// Publishes `body` to `exchange` with `key`.
pub async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8]) {
    ch.basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), body, BasicProperties::default())
        .await
        .expect("basic.publish");
}

/// basic.get with no-ack, returning the body.
pub async fn get_body(ch: &Channel, queue: &str) -> Option<Vec<u8>> {
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("basic.get").map(|m| m.delivery.data.clone())
}

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(3);
/// How long a test waits to be satisfied that something does not happen.
pub const QUIET: Duration = Duration::from_millis(150);

/// Asserts `r` failed with the AMQP reply `code`.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(r: lapin::Result<T>, code: u16, what: &str) {
    match r {
        Ok(v) => panic!("{what}: expected reply code {code}, got success {v:?}"),
        Err(e) => assert_eq!(reply_code(&e), Some(code), "{what}: expected reply code {code}, got {e:?}"),
    }
}

/// Runs `action` (which sends something the broker must refuse without a reply method,
/// such as a publish) and returns the reply code of the channel or connection close it
/// causes on `conn`.
pub async fn close_code(conn: &Connection, action: impl std::future::Future<Output = ()>) -> u16 {
    let mut events = Box::pin(conn.events_listener());
    action.await;
    let wait = async {
        loop {
            match events.next().await {
                Some(lapin::Event::Error(e)) => return reply_code(&e).unwrap_or_else(|| panic!("not an AMQP error: {e:?}")),
                Some(_) => {}
                None => panic!("connection events ended without an error"),
            }
        }
    };
    tokio::time::timeout(WAIT, wait).await.expect("the broker did not close the channel or connection")
}

/// A field table from `(key, value)` pairs.
pub fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// The consumer's next delivery, failing the test after [`WAIT`].
pub async fn next(c: &mut Consumer) -> Delivery {
    match tokio::time::timeout(WAIT, c.next()).await {
        Ok(Some(Ok(d))) => d,
        Ok(other) => panic!("consumer {}: expected a delivery, got {other:?}", c.tag()),
        Err(_) => panic!("consumer {}: no delivery within {WAIT:?}", c.tag()),
    }
}

/// Asserts the consumer gets nothing for [`QUIET`].
pub async fn assert_quiet(c: &mut Consumer) {
    if let Ok(got) = tokio::time::timeout(QUIET, c.next()).await {
        panic!("consumer {}: expected no delivery, got {got:?}", c.tag());
    }
}

/// Starts a consumer with default options.
pub async fn consume(ch: &Channel, queue: &str, tag: &str) -> Consumer {
    ch.basic_consume(queue.into(), tag.into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap_or_else(|e| panic!("basic.consume on {queue}: {e:?}"))
}

/// A hand-driven AMQP 0-9-1 client on a raw socket, for what lapin will not send: odd
/// mechanisms, bad tune values, malformed frames. Frames are built and read by hand so the
/// tests do not rely on the broker's own codec.
pub mod raw {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// The protocol header of AMQP 0-9-1.
    pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
    /// The frame-end octet.
    pub const FRAME_END: u8 = 0xCE;
    /// How long any single read waits before the test fails.
    pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

    /// Method arguments, encoded field by field.
    #[derive(Debug, Default, Clone)]
    pub struct Args(pub Vec<u8>);

    impl Args {
        /// No arguments yet.
        pub fn new() -> Self {
            Args(Vec::new())
        }
        /// An octet (also a packed set of bits).
        pub fn octet(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        /// A 16-bit integer.
        pub fn short(mut self, v: u16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        /// A 32-bit integer.
        pub fn long(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        /// A 64-bit integer.
        pub fn longlong(mut self, v: u64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        /// A short string (length octet, then the octets as given: may be invalid UTF-8).
        pub fn sstr(mut self, s: impl AsRef<[u8]>) -> Self {
            let s = s.as_ref();
            self.0.push(u8::try_from(s.len()).expect("short string"));
            self.0.extend_from_slice(s);
            self
        }
        /// A long string.
        pub fn lstr(mut self, s: impl AsRef<[u8]>) -> Self {
            let s = s.as_ref();
            self.0.extend_from_slice(&(s.len() as u32).to_be_bytes());
            self.0.extend_from_slice(s);
            self
        }
        /// An encoded field table (with its length prefix).
        pub fn table(mut self, t: &[u8]) -> Self {
            self.0.extend_from_slice(t);
            self
        }
        /// An empty field table.
        pub fn empty_table(self) -> Self {
            self.long(0)
        }
        /// Octets as given.
        pub fn raw(mut self, b: &[u8]) -> Self {
            self.0.extend_from_slice(b);
            self
        }
    }

    /// Field table entries, encoded by hand.
    #[derive(Debug, Default, Clone)]
    pub struct Table(Vec<u8>);

    impl Table {
        /// An empty table.
        pub fn new() -> Self {
            Table(Vec::new())
        }
        fn key(mut self, k: &str) -> Self {
            self.0.push(k.len() as u8);
            self.0.extend_from_slice(k.as_bytes());
            self
        }
        /// A boolean entry.
        pub fn bool(self, k: &str, v: bool) -> Self {
            let mut t = self.key(k);
            t.0.extend_from_slice(&[b't', v as u8]);
            t
        }
        /// A long-string entry.
        pub fn str(self, k: &str, v: &str) -> Self {
            let mut t = self.key(k);
            t.0.push(b'S');
            t.0.extend_from_slice(&(v.len() as u32).to_be_bytes());
            t.0.extend_from_slice(v.as_bytes());
            t
        }
        /// A nested table entry.
        pub fn table(self, k: &str, v: &Table) -> Self {
            let mut t = self.key(k);
            t.0.push(b'F');
            t.0.extend_from_slice(&v.encode());
            t
        }
        /// The entries without the length prefix (an AMQPLAIN response).
        pub fn entries(&self) -> Vec<u8> {
            self.0.clone()
        }
        /// The table with its length prefix.
        pub fn encode(&self) -> Vec<u8> {
            let mut out = (self.0.len() as u32).to_be_bytes().to_vec();
            out.extend_from_slice(&self.0);
            out
        }
    }

    /// A frame: type octet, channel, payload (the frame-end octet is checked and dropped).
    pub fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
        frame_with_end(kind, channel, payload, FRAME_END)
    }

    /// A frame with the given frame-end octet.
    pub fn frame_with_end(kind: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out.push(end);
        out
    }

    /// A method payload: class id, method id, arguments.
    pub fn method_payload(class_id: u16, method_id: u16, args: &Args) -> Vec<u8> {
        let mut p = class_id.to_be_bytes().to_vec();
        p.extend_from_slice(&method_id.to_be_bytes());
        p.extend_from_slice(&args.0);
        p
    }

    /// A method frame.
    pub fn method_frame(channel: u16, class_id: u16, method_id: u16, args: Args) -> Vec<u8> {
        frame(1, channel, &method_payload(class_id, method_id, &args))
    }

    /// A basic content header frame with no properties.
    pub fn header_frame(channel: u16, body_size: u64) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&60u16.to_be_bytes());
        p.extend_from_slice(&0u16.to_be_bytes());
        p.extend_from_slice(&body_size.to_be_bytes());
        p.extend_from_slice(&0u16.to_be_bytes());
        frame(2, channel, &p)
    }

    /// A content body frame.
    pub fn body_frame(channel: u16, body: &[u8]) -> Vec<u8> {
        frame(3, channel, body)
    }

    /// A heartbeat frame on `channel` (legal only on 0).
    pub fn heartbeat_frame(channel: u16) -> Vec<u8> {
        frame(8, channel, &[])
    }

    /// basic.publish (exchange, routing key, mandatory/immediate bits).
    pub fn publish_frame(channel: u16, exchange: &str, key: &str, bits: u8) -> Vec<u8> {
        method_frame(channel, 60, 40, Args::new().short(0).sstr(exchange).sstr(key).octet(bits))
    }

    /// queue.declare with the given name, flag bits (passive 1, durable 2, exclusive 4,
    /// auto-delete 8, nowait 16) and encoded arguments table.
    pub fn queue_declare_frame(channel: u16, name: &[u8], bits: u8, arguments: &[u8]) -> Vec<u8> {
        method_frame(channel, 50, 10, Args::new().short(0).sstr(name).octet(bits).table(arguments))
    }

    /// A PLAIN response.
    pub fn plain(user: &str, pass: &str) -> Vec<u8> {
        format!("\0{user}\0{pass}").into_bytes()
    }

    /// Client properties announcing the capabilities RabbitMQ looks at.
    pub fn client_properties() -> Vec<u8> {
        let caps = Table::new().bool("authentication_failure_close", true).bool("consumer_cancel_notify", true).bool("connection.blocked", true);
        Table::new().str("product", "warren-raw-test").table("capabilities", &caps).encode()
    }

    /// A frame read from the broker.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RawFrame {
        /// Frame type: 1 method, 2 header, 3 body, 8 heartbeat.
        pub kind: u8,
        /// Channel.
        pub channel: u16,
        /// Payload.
        pub payload: Vec<u8>,
    }

    impl RawFrame {
        /// Class and method ids of a method frame.
        pub fn ids(&self) -> Option<(u16, u16)> {
            (self.kind == 1 && self.payload.len() >= 4).then(|| {
                (u16::from_be_bytes([self.payload[0], self.payload[1]]), u16::from_be_bytes([self.payload[2], self.payload[3]]))
            })
        }
        /// The arguments of a method frame.
        pub fn args(&self) -> &[u8] {
            &self.payload[4..]
        }
        /// A short description for assertion messages.
        pub fn describe(&self) -> String {
            match (self.close(), self.ids()) {
                (Some(c), Some((class_id, method_id))) => {
                    format!("{class_id}.{method_id} on channel {}: {} {:?} ({}.{})", self.channel, c.code, c.text, c.class_id, c.method_id)
                }
                (None, Some((class_id, method_id))) => format!("method {class_id}.{method_id} on channel {}", self.channel),
                _ => format!("frame type {} on channel {} ({} octets)", self.kind, self.channel, self.payload.len()),
            }
        }

        /// The fields of a connection.close or channel.close.
        pub fn close(&self) -> Option<Close> {
            match self.ids()? {
                (10, 50) | (20, 40) => {}
                _ => return None,
            }
            let a = self.args();
            let code = u16::from_be_bytes([a[0], a[1]]);
            let len = a[2] as usize;
            let text = String::from_utf8_lossy(&a[3..3 + len]).into_owned();
            let rest = &a[3 + len..];
            Some(Close {
                code,
                text,
                class_id: u16::from_be_bytes([rest[0], rest[1]]),
                method_id: u16::from_be_bytes([rest[2], rest[3]]),
            })
        }
    }

    /// A close method's fields.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Close {
        /// Reply code.
        pub code: u16,
        /// Reply text.
        pub text: String,
        /// Class of the failing method.
        pub class_id: u16,
        /// Failing method.
        pub method_id: u16,
    }

    /// The fields of connection.tune.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Tune {
        /// Highest channel number.
        pub channel_max: u16,
        /// Largest frame.
        pub frame_max: u32,
        /// Heartbeat interval.
        pub heartbeat: u16,
    }

    /// What a read found.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Read {
        /// A complete frame.
        Frame(RawFrame),
        /// The broker closed the socket (FIN or RST).
        Closed,
        /// Nothing arrived in time.
        Timeout,
    }

    /// A client connection on a raw socket (or any other stream, such as a TLS one).
    #[derive(Debug)]
    pub struct RawConn<S = TcpStream> {
        /// The socket.
        pub stream: S,
        buf: Vec<u8>,
    }

    impl RawConn {
        /// Opens the TCP connection; nothing is sent.
        pub async fn connect(addr: SocketAddr) -> RawConn {
            let stream = TcpStream::connect(addr).await.expect("tcp connect");
            stream.set_nodelay(true).expect("nodelay");
            RawConn::over(stream)
        }

        /// Connects and completes the handshake as guest on "/" with the server's limits and
        /// heartbeats off.
        pub async fn handshake(addr: SocketAddr) -> RawConn {
            let mut c = RawConn::connect(addr).await;
            let tune = c.start_and_login("PLAIN", &plain("guest", "guest")).await;
            c.send(&tune_ok_frame(tune.channel_max, tune.frame_max, 0)).await;
            c.open_vhost("/").await;
            c
        }
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> RawConn<S> {
        /// A client on an established stream; nothing is sent.
        pub fn over(stream: S) -> RawConn<S> {
            RawConn { stream, buf: Vec::new() }
        }

        /// Sends the header, reads connection.start, answers start-ok with `mechanism` and
        /// `response`, and returns the connection.tune that follows.
        pub async fn start_and_login(&mut self, mechanism: &str, response: &[u8]) -> Tune {
            self.send(PROTOCOL_HEADER).await;
            self.expect_method(0, 10, 10).await;
            self.send_start_ok(mechanism, response).await;
            let tune = self.expect_method(0, 10, 30).await;
            let a = tune.args();
            Tune {
                channel_max: u16::from_be_bytes([a[0], a[1]]),
                frame_max: u32::from_be_bytes([a[2], a[3], a[4], a[5]]),
                heartbeat: u16::from_be_bytes([a[6], a[7]]),
            }
        }

        /// Sends connection.start-ok.
        pub async fn send_start_ok(&mut self, mechanism: &str, response: &[u8]) {
            let args = Args::new().raw(&client_properties()).sstr(mechanism).lstr(response).sstr("en_US");
            self.send(&method_frame(0, 10, 11, args)).await;
        }

        /// Sends connection.open for `vhost` and expects open-ok.
        pub async fn open_vhost(&mut self, vhost: &str) {
            self.send(&method_frame(0, 10, 40, Args::new().sstr(vhost).sstr("").octet(0))).await;
            self.expect_method(0, 10, 41).await;
        }

        /// Opens `channel` and expects open-ok.
        pub async fn open_channel(&mut self, channel: u16) {
            self.send(&method_frame(channel, 20, 10, Args::new().sstr(""))).await;
            self.expect_method(channel, 20, 11).await;
        }

        /// Writes octets; panics if the socket fails.
        pub async fn send(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).await.expect("send");
        }

        /// Writes octets, ignoring errors (the broker may already have closed).
        pub async fn try_send(&mut self, bytes: &[u8]) {
            let _ = self.stream.write_all(bytes).await;
        }

        /// Reads one frame, waiting at most `wait`.
        pub async fn read_within(&mut self, wait: Duration) -> Read {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                if self.buf.len() >= 7 {
                    let size = u32::from_be_bytes([self.buf[3], self.buf[4], self.buf[5], self.buf[6]]) as usize;
                    if self.buf.len() >= size + 8 {
                        let kind = self.buf[0];
                        let channel = u16::from_be_bytes([self.buf[1], self.buf[2]]);
                        assert_eq!(self.buf[7 + size], FRAME_END, "broker sent a bad frame end");
                        let payload = self.buf[7..7 + size].to_vec();
                        self.buf.drain(..size + 8);
                        return Read::Frame(RawFrame { kind, channel, payload });
                    }
                }
                self.buf.reserve(64 * 1024);
                match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                    Err(_) => return Read::Timeout,
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        assert!(self.buf.is_empty(), "socket closed inside a frame: {:?}", self.buf);
                        return Read::Closed;
                    }
                    Ok(Ok(_)) => {}
                }
            }
        }

        /// Reads octets that are not frames (the protocol header sent back on a mismatch).
        pub async fn read_exact_raw(&mut self, n: usize) -> Vec<u8> {
            while self.buf.len() < n {
                let got = tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("timed out reading")
                    .unwrap_or(0);
                assert!(got > 0, "socket closed after {:?}", self.buf);
            }
            self.buf.drain(..n).collect()
        }

        /// The next frame other than a heartbeat; panics on timeout or close.
        pub async fn next_frame(&mut self) -> RawFrame {
            loop {
                match self.read_within(READ_TIMEOUT).await {
                    Read::Frame(f) if f.kind == 8 => continue,
                    Read::Frame(f) => return f,
                    Read::Closed => panic!("expected a frame, the socket closed"),
                    Read::Timeout => panic!("expected a frame, nothing came in {READ_TIMEOUT:?}"),
                }
            }
        }

        /// The next non-heartbeat frame, which must be method `class_id.method_id` on `channel`.
        pub async fn expect_method(&mut self, channel: u16, class_id: u16, method_id: u16) -> RawFrame {
            let f = self.next_frame().await;
            assert_eq!((f.channel, f.ids()), (channel, Some((class_id, method_id))), "unexpected frame: {}", f.describe());
            f
        }

        /// Expects connection.close (skipping heartbeats), answers close-ok, and expects the
        /// socket to close. Returns the close's fields.
        pub async fn expect_connection_close(&mut self) -> Close {
            let f = self.next_frame().await;
            assert_eq!((f.channel, f.ids()), (0, Some((10, 50))), "expected connection.close, got {}", f.describe());
            let close = f.close().expect("close fields");
            self.try_send(&method_frame(0, 10, 51, Args::new())).await;
            self.expect_socket_closed().await;
            close
        }

        /// Expects channel.close on `channel` (skipping heartbeats) and returns its fields.
        pub async fn expect_channel_close(&mut self, channel: u16) -> Close {
            let f = self.expect_method(channel, 20, 40).await;
            f.close().expect("close fields")
        }

        /// Expects the broker to close the socket, with nothing but heartbeats before.
        pub async fn expect_socket_closed(&mut self) {
            loop {
                match self.read_within(READ_TIMEOUT).await {
                    Read::Closed => return,
                    Read::Frame(f) if f.kind == 8 => continue,
                    Read::Frame(f) => panic!("expected the socket to close, got {}", f.describe()),
                    Read::Timeout => panic!("expected the socket to close, still open after {READ_TIMEOUT:?}"),
                }
            }
        }

        /// Expects nothing (but heartbeats) to arrive for `wait`.
        pub async fn expect_silence(&mut self, wait: Duration) {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return;
                }
                match self.read_within(left).await {
                    Read::Timeout => return,
                    Read::Frame(f) if f.kind == 8 => continue,
                    Read::Frame(f) => panic!("expected silence, got {}", f.describe()),
                    Read::Closed => panic!("expected silence, the socket closed"),
                }
            }
        }
    }

    /// connection.tune-ok.
    pub fn tune_ok_frame(channel_max: u16, frame_max: u32, heartbeat: u16) -> Vec<u8> {
        method_frame(0, 10, 31, Args::new().short(channel_max).long(frame_max).short(heartbeat))
    }
}

/// Fails unless a fresh lapin connection can declare a queue, publish to it and get the
/// message back: the broker survived whatever the test did.
pub async fn assert_alive(broker: &TestBroker) {
    within("fresh connection", async {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!("alive-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let (conn, ch) = broker.channel().await;
        ch.queue_declare(name.as_str().into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
            .await
            .expect("queue.declare on a fresh connection");
        publish(&ch, "", &name, b"alive").await;
        loop {
            if let Some(body) = get_body(&ch, &name).await {
                assert_eq!(body, b"alive");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        conn.close(200, "bye".into()).await.expect("connection.close");
    })
    .await;
}
