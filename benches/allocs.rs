//! Heap allocations per message on the real path: an in-process broker on a loopback port,
//! a raw-frame client on a plain `TcpStream`, and `dhat` counting every allocation of the
//! process (broker and client) while N messages are published, routed and delivered.
//!
//! Every frame the client sends is encoded before the measurement (one buffer holding all
//! the publishes), and it reads deliveries into a fixed buffer, parsing frame headers only,
//! so what dhat counts is the broker's work. Per case: a fresh connection, channel 1, a
//! queue, optionally `confirm.select`, a no-ack consumer; 10,000 warm-up messages, then the
//! measured 100,000 (16-byte bodies), ending once every delivery (and every confirm) is in.
//!
//! Run with `cargo bench --bench allocs` (or `make bench-micro`). Without `--bench` (as under
//! `cargo test --benches`) it runs a quick smoke pass of 1,000 messages. Each case of a real
//! run also leaves a dhat profile of its measured window in `target/dhat/allocs-<case>.json`
//! (view it with DHAT's viewer; in the JSON, `tbk` is a site's block count and `tb` its
//! bytes, so the per-message sites are those whose `tbk` is a multiple of N).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Barrier;

use bytes::BytesMut;
use warren::{Config, Server};
use warren_protocol::frame::{self, FRAME_END, FRAME_HEADER_SIZE, PROTOCOL_HEADER};
use warren_protocol::spec::{basic, channel, confirm, connection, queue};
use warren_protocol::types::{FieldTable, LongString};
use warren_protocol::AMQPClass;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const FRAME_MAX: u32 = 131_072;
const BODY: [u8; 16] = [0x5a; 16];
/// Basic properties with no flags set (transient).
const TRANSIENT: &[u8] = &[0x00, 0x00];
/// Basic properties with delivery-mode 2 (persistent).
const PERSISTENT: &[u8] = &[0x10, 0x00, 0x02];

/// One measured scenario.
struct Case {
    /// The label printed before the figures.
    label: &'static str,
    /// A short name for the profile file.
    file: &'static str,
    /// The queue (and routing key).
    queue: &'static str,
    /// The exchange published to ("" is the default exchange).
    exchange: &'static str,
    durable: bool,
    persistent: bool,
    confirms: bool,
}

const CASES: &[Case] = &[
    Case {
        label: "(a) transient, non-durable queue",
        file: "transient",
        queue: "allocs-transient",
        exchange: "",
        durable: false,
        persistent: false,
        confirms: false,
    },
    Case {
        label: "(b) transient, non-durable queue, confirms",
        file: "transient-confirms",
        queue: "allocs-confirms",
        exchange: "",
        durable: false,
        persistent: false,
        confirms: true,
    },
    Case {
        label: "(c) persistent, durable queue, confirms",
        file: "persistent-confirms",
        queue: "allocs-durable",
        exchange: "",
        durable: true,
        persistent: true,
        confirms: true,
    },
    Case {
        label: "(d) as (a) but through amq.direct",
        file: "transient-amq-direct",
        queue: "allocs-direct",
        exchange: "amq.direct",
        durable: false,
        persistent: false,
        confirms: false,
    },
];

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (warmup, n) = if bench { (10_000, 100_000) } else { (100, 1_000) };
    let profiles = profile_dir();
    std::fs::create_dir_all(&profiles).expect("create the profile directory");

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let data_dir = std::env::temp_dir().join(format!("warren-bench-allocs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let config = Config {
        bind: [127, 0, 0, 1].into(),
        port: 0,
        metrics_port: 0,
        heartbeat: 0,
        data_dir: data_dir.clone(),
        ..Config::default()
    };
    let server = runtime.block_on(Server::bind(config)).expect("bind the broker");
    let addr = server.local_addr().expect("broker address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = runtime.spawn(server.run(async move {
        let _ = stopped.await;
    }));

    println!("allocations per message over {n} messages of {} bytes after {warmup} warm-up ones", BODY.len());
    for case in CASES {
        let json = profiles.join(format!("allocs-{}.json", case.file));
        let m = run_case(addr, case, warmup, n, &json, bench);
        println!(
            "{:<44} allocations per message: {:.2} (bytes per message: {:.0})",
            case.label,
            m.blocks as f64 / n as f64,
            m.bytes as f64 / n as f64
        );
    }
    if bench {
        eprintln!("dhat profiles of the measured windows: {}", profiles.join("allocs-*.json").display());
    }

    let _ = stop.send(());
    let _ = runtime.block_on(task);
    drop(runtime);
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// `target/dhat`, next to the directory of this bench binary (`target/release/deps`).
fn profile_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(|target| target.join("dhat")))
        .unwrap_or_else(|| std::env::temp_dir().join("warren-dhat"))
}

/// What dhat counted over the measured window.
struct Measured {
    blocks: u64,
    bytes: u64,
}

fn run_case(addr: SocketAddr, case: &Case, warmup: u64, n: u64, json: &std::path::Path, save_profile: bool) -> Measured {
    let mut client = Client::connect(addr);
    client.send(|b| frame::encode_method(b, 1, &AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}))));
    client.expect_method(1, 20, 11);
    let declare = queue::Declare { queue: case.queue.into(), durable: case.durable, ..Default::default() };
    client.send(|b| frame::encode_method(b, 1, &AMQPClass::Queue(queue::AMQPMethod::Declare(declare))));
    client.expect_method(1, 50, 11);
    if !case.exchange.is_empty() {
        let bind = queue::Bind {
            queue: case.queue.into(),
            exchange: case.exchange.into(),
            routing_key: case.queue.into(),
            nowait: false,
            arguments: FieldTable::default(),
        };
        client.send(|b| frame::encode_method(b, 1, &AMQPClass::Queue(queue::AMQPMethod::Bind(bind))));
        client.expect_method(1, 50, 21);
    }
    if case.confirms {
        let select = confirm::Select { nowait: false };
        client.send(|b| frame::encode_method(b, 1, &AMQPClass::Confirm(confirm::AMQPMethod::Select(select))));
        client.expect_method(1, 85, 11);
    }
    let consume = basic::Consume {
        queue: case.queue.into(),
        consumer_tag: "".into(),
        no_local: false,
        no_ack: true,
        exclusive: false,
        nowait: false,
        arguments: FieldTable::default(),
    };
    client.send(|b| frame::encode_method(b, 1, &AMQPClass::Basic(basic::AMQPMethod::Consume(consume))));
    client.expect_method(1, 60, 21);

    // Every publish is the same octets, so one is encoded and repeated.
    let mut one = BytesMut::new();
    let publish = basic::Publish { exchange: case.exchange.into(), routing_key: case.queue.into(), mandatory: false, immediate: false };
    frame::encode_method(&mut one, 1, &AMQPClass::Basic(basic::AMQPMethod::Publish(publish)));
    frame::encode_content_header(&mut one, 1, BODY.len() as u64, if case.persistent { PERSISTENT } else { TRANSIENT });
    frame::encode_body(&mut one, 1, &BODY, FRAME_MAX);
    let mut publishes = Vec::with_capacity(one.len() * (warmup + n) as usize);
    for _ in 0..warmup + n {
        publishes.extend_from_slice(&one);
    }
    let (warm_bytes, measured_bytes) = publishes.split_at(one.len() * warmup as usize);

    let mut writer = client.stream.try_clone().expect("clone the socket");
    let barrier = Barrier::new(2);
    let measured = std::thread::scope(|s| {
        s.spawn(|| {
            writer.write_all(warm_bytes).expect("write warm-up publishes");
            barrier.wait();
            writer.write_all(measured_bytes).expect("write measured publishes");
        });
        client.pump(warmup, case.confirms);
        let builder = dhat::Profiler::builder().file_name(json).trim_backtraces(Some(16));
        // A smoke pass keeps the profiles of the last real run.
        let profiler = if save_profile { builder } else { builder.testing() }.build();
        let before = dhat::HeapStats::get();
        barrier.wait();
        client.pump(warmup + n, case.confirms);
        let after = dhat::HeapStats::get();
        drop(profiler);
        Measured { blocks: after.total_blocks - before.total_blocks, bytes: after.total_bytes - before.total_bytes }
    });
    client.close();
    measured
}

/// A raw AMQP client: pre-encoded frames out, frame headers in.
struct Client {
    stream: TcpStream,
    /// Read buffer; `head..tail` is unparsed.
    buf: Vec<u8>,
    head: usize,
    tail: usize,
    /// basic.deliver frames seen on the connection.
    delivered: u64,
    /// Highest publisher-confirm tag acked.
    acked: u64,
}

impl Client {
    /// Connects and runs the handshake as guest on vhost `/`, heartbeats off.
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to the broker");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let mut client = Client { stream, buf: vec![0; 1 << 20], head: 0, tail: 0, delivered: 0, acked: 0 };
        client.stream.write_all(PROTOCOL_HEADER).expect("write the protocol header");
        client.expect_method(0, 10, 10);
        let start_ok = connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongString::from("\0guest\0guest"),
            locale: "en_US".into(),
        };
        client.send(|b| frame::encode_method(b, 0, &AMQPClass::Connection(connection::AMQPMethod::StartOk(start_ok))));
        client.expect_method(0, 10, 30);
        let tune_ok = connection::TuneOk { channel_max: 2047, frame_max: FRAME_MAX, heartbeat: 0 };
        client.send(|b| frame::encode_method(b, 0, &AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune_ok))));
        let open = connection::Open { virtual_host: "/".into() };
        client.send(|b| frame::encode_method(b, 0, &AMQPClass::Connection(connection::AMQPMethod::Open(open))));
        client.expect_method(0, 10, 41);
        client
    }

    fn send(&mut self, encode: impl FnOnce(&mut BytesMut)) {
        let mut b = BytesMut::new();
        encode(&mut b);
        self.stream.write_all(&b).expect("write to the broker");
    }

    /// The next frame: its type, channel and payload range in `buf` (valid until the next
    /// call).
    fn next_frame(&mut self) -> (u8, u16, std::ops::Range<usize>) {
        loop {
            let avail = &self.buf[self.head..self.tail];
            if avail.len() >= FRAME_HEADER_SIZE {
                let size = u32::from_be_bytes([avail[3], avail[4], avail[5], avail[6]]) as usize;
                let total = FRAME_HEADER_SIZE + size + 1;
                assert!(total <= self.buf.len(), "frame of {size} octets is over frame_max");
                if avail.len() >= total {
                    assert_eq!(avail[total - 1], FRAME_END, "frame end octet");
                    let (kind, channel) = (avail[0], u16::from_be_bytes([avail[1], avail[2]]));
                    let start = self.head + FRAME_HEADER_SIZE;
                    self.head += total;
                    return (kind, channel, start..start + size);
                }
            }
            if self.head > 0 {
                self.buf.copy_within(self.head..self.tail, 0);
                self.tail -= self.head;
                self.head = 0;
            }
            let read = self.stream.read(&mut self.buf[self.tail..]).expect("read from the broker");
            assert!(read > 0, "the broker closed the connection");
            self.tail += read;
        }
    }

    /// Class and method ids of a method frame's payload.
    fn ids(&self, payload: &std::ops::Range<usize>) -> (u16, u16) {
        let p = &self.buf[payload.clone()];
        (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]]))
    }

    /// Panics with the reply of a connection.close or channel.close.
    fn fail_on_close(&self, ids: (u16, u16), payload: &std::ops::Range<usize>) {
        if matches!(ids, (10, 50) | (20, 40)) {
            let p = &self.buf[payload.clone()];
            let code = u16::from_be_bytes([p[4], p[5]]);
            let text = String::from_utf8_lossy(&p[7..7 + p[6] as usize]).into_owned();
            panic!("the broker closed: {code} {text}");
        }
    }

    /// Reads until a method frame (class_id, method_id) on `channel`, skipping others.
    fn expect_method(&mut self, channel: u16, class_id: u16, method_id: u16) {
        loop {
            let (kind, ch, payload) = self.next_frame();
            if kind != 1 {
                continue;
            }
            let ids = self.ids(&payload);
            self.fail_on_close(ids, &payload);
            if ch == channel && ids == (class_id, method_id) {
                return;
            }
        }
    }

    /// Reads until `deliveries` basic.deliver frames (and, with confirms, acks up to that
    /// many publishes) have arrived in all.
    fn pump(&mut self, deliveries: u64, confirms: bool) {
        while self.delivered < deliveries || (confirms && self.acked < deliveries) {
            let (kind, _, payload) = self.next_frame();
            if kind != 1 {
                continue;
            }
            match self.ids(&payload) {
                (60, 60) => self.delivered += 1,
                (60, 80) => {
                    let p = &self.buf[payload];
                    let tag = u64::from_be_bytes([p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11]]);
                    self.acked = self.acked.max(tag);
                }
                (60, 120) => panic!("a publish was nacked"),
                ids => self.fail_on_close(ids, &payload),
            }
        }
    }

    /// connection.close, then waits for close-ok.
    fn close(mut self) {
        let close = connection::Close { reply_code: 200, reply_text: "bye".into(), class_id: 0, method_id: 0 };
        self.send(|b| frame::encode_method(b, 0, &AMQPClass::Connection(connection::AMQPMethod::Close(close))));
        loop {
            let (kind, channel, payload) = self.next_frame();
            if kind == 1 && channel == 0 && self.ids(&payload) == (10, 51) {
                return;
            }
        }
    }
}
