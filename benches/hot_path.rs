//! Criterion benches of the per-message hot path, through the crates' public APIs:
//!
//! - `frame_decode`: one publish (basic.publish method, content header, 16-byte body frames)
//!   taken off a read buffer with `frame::decode`, the method decoded with `method::decode`
//!   and the content assembled by `content::Assembler`;
//! - `route`: `Exchange::route` for a direct exchange with 1 binding, a fanout with 10, a
//!   topic exchange with 1,000 bindings and a headers exchange with 10;
//! - `deliver`: `Outbound::deliver` (basic.deliver + header + body frames) of a 16-byte and a
//!   1 KiB message into a connection's long-lived frame buffer.
//!
//! Run with `cargo bench --bench hot_path` (or `make bench-micro`). Throughput is reported
//! per message (`Throughput::Elements`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{gen_properties, AMQPProperties};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use warren::broker::exchange::{Destination, Exchange, ExchangeKind};
use warren::broker::memory::MemoryMonitor;
use warren::broker::message::Message;
use warren::broker::queue::args::{DeclareFlags, QueueArgs};
use warren::broker::queue::{Queue, QueueSetup};
use warren::outbound::Outbound;
use warren_protocol::content::{Assembler, Content, Payload};
use warren_protocol::frame::{self, Frame};
use warren_protocol::properties::PropertiesView;
use warren_protocol::spec::basic;
use warren_protocol::{method, AMQPClass};

/// The broker's default frame_max.
const FRAME_MAX: u32 = 131_072;
/// The broker's default max message size.
const MAX_MESSAGE_SIZE: u64 = 128 * 1024 * 1024;
/// A server-generated consumer tag is `amq.ctag-` and 22 characters.
const CONSUMER_TAG: &str = "amq.ctag-AbCdEfGhIjKlMnOpQrStUv";
/// Deliveries appended to the `Outbound` between two drains.
const DELIVER_BATCH: u64 = 1000;

/// Raw basic properties with delivery-mode 2 (flags word, then the mode octet).
const PERSISTENT_PROPERTIES: &[u8] = &[0x10, 0x00, 0x02];

fn queue(name: &str) -> Arc<Queue> {
    let flags = DeclareFlags { durable: false, exclusive: false, auto_delete: false, server_named: false };
    Queue::create(QueueSetup {
        name: name.to_owned(),
        vhost: std::sync::Weak::new(),
        vhost_name: "/".to_owned(),
        exclusive_owner: None,
        auto_delete: false,
        arguments: FieldTable::default(),
        args: QueueArgs::parse(&FieldTable::default(), name, "/", flags).expect("no arguments"),
        store: None,
        memory: Arc::new(MemoryMonitor::new(usize::MAX, prometheus::IntGauge::new("alarm", "alarm").expect("gauge"))),
        consumer_timeout: 0,
    })
}

fn exchange(name: &str, kind: ExchangeKind) -> Exchange {
    Exchange::new(name.to_owned(), kind, false, false, false, FieldTable::default())
}

fn encode_properties(p: &AMQPProperties) -> Bytes {
    Bytes::from(gen_properties(p)(WriteContext::from(Vec::new())).expect("properties encode").write)
}

/// The frames of one publish of a 16-byte body to `amq.topic` with key `a.b.c`.
fn publish_frames() -> BytesMut {
    let mut buf = BytesMut::new();
    let publish = basic::Publish { exchange: "amq.topic".into(), routing_key: "a.b.c".into(), mandatory: false, immediate: false };
    frame::encode_method(&mut buf, 1, &AMQPClass::Basic(basic::AMQPMethod::Publish(publish)));
    let body = [0x5au8; 16];
    frame::encode_content_header(&mut buf, 1, body.len() as u64, PERSISTENT_PROPERTIES);
    frame::encode_body(&mut buf, 1, &body, FRAME_MAX);
    buf
}

/// What the connection's frame loop does for one publish, minus routing.
fn decode_publish(mut buf: BytesMut) -> Content<basic::Publish> {
    let mut assembler = Assembler::default();
    let mut done = None;
    while let Some(f) = frame::decode(&mut buf, FRAME_MAX).expect("valid frame") {
        match f {
            Frame::Method { payload, .. } => match method::decode(&payload).expect("valid method") {
                AMQPClass::Basic(basic::AMQPMethod::Publish(p)) => assembler.start(p),
                other => panic!("unexpected method {other:?}"),
            },
            Frame::Header { payload, .. } => done = assembler.header(payload, MAX_MESSAGE_SIZE).expect("valid header"),
            Frame::Body { payload, .. } => done = assembler.body(payload).expect("valid body"),
            Frame::Heartbeat { .. } => {}
        }
    }
    done.expect("a complete message")
}

fn bench_frame_decode(c: &mut Criterion) {
    let input = publish_frames();
    let content = decode_publish(input.clone());
    assert_eq!((content.payload.body().len(), content.method.routing_key.as_str()), (16, "a.b.c"));

    let mut g = c.benchmark_group("frame_decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("publish_16B", |b| {
        b.iter_batched(
            || {
                // The first `split_to` of a fresh `BytesMut` allocates its shared header; in
                // the broker that is once per read buffer of many frames, so it is done here,
                // outside the measurement, and only per-message work is timed.
                let mut buf = BytesMut::with_capacity(input.len() + 64);
                buf.extend_from_slice(&input);
                drop(buf.split_off(buf.len()));
                buf
            },
            |buf| {
                let content = decode_publish(buf);
                black_box(&content);
                // Dropping the content (its strings and frame views) is part of the cost.
                drop(content);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_route(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(1));
    let mut out: Vec<Destination> = Vec::with_capacity(16);
    let no_headers = &mut || None;

    let direct = exchange("bench.direct", ExchangeKind::Direct);
    direct.bind(Destination::Queue(queue("q-direct")), "orders", &FieldTable::default()).expect("bind");
    direct.route("orders", no_headers, &mut out);
    assert_eq!(out.len(), 1);
    out.clear();
    g.bench_function("direct_1_binding", |b| {
        b.iter(|| {
            direct.route(black_box("orders"), no_headers, &mut out);
            black_box(&out);
            out.clear();
        })
    });

    let fanout = exchange("bench.fanout", ExchangeKind::Fanout);
    for i in 0..10 {
        fanout.bind(Destination::Queue(queue(&format!("q-fanout-{i}"))), "", &FieldTable::default()).expect("bind");
    }
    fanout.route("", no_headers, &mut out);
    assert_eq!(out.len(), 10);
    out.clear();
    g.bench_function("fanout_10_bindings", |b| {
        b.iter(|| {
            fanout.route(black_box("any"), no_headers, &mut out);
            black_box(&out);
            out.clear();
        })
    });

    // 1,000 bindings, one queue each: for every j in 0..250 the patterns `a.b.j`, `a.*.j`,
    // `a.#.j` and `#.j`. `a.b.42` matches four of them (four trie nodes, so the walk's
    // de-duplication runs); `x.y` matches none but walks the `#` branch.
    let topic = exchange("bench.topic", ExchangeKind::Topic);
    for i in 0..1000 {
        let j = i / 4;
        let pattern = match i % 4 {
            0 => format!("a.b.{j}"),
            1 => format!("a.*.{j}"),
            2 => format!("a.#.{j}"),
            _ => format!("#.{j}"),
        };
        topic.bind(Destination::Queue(queue(&format!("q-topic-{i}"))), &pattern, &FieldTable::default()).expect("bind");
    }
    topic.route("a.b.42", no_headers, &mut out);
    assert_eq!(out.len(), 4);
    out.clear();
    topic.route("x.y", no_headers, &mut out);
    assert_eq!(out.len(), 0);
    g.bench_function("topic_1000_bindings_4_matches", |b| {
        b.iter(|| {
            topic.route(black_box("a.b.42"), no_headers, &mut out);
            black_box(&out);
            out.clear();
        })
    });
    g.bench_function("topic_1000_bindings_no_match", |b| {
        b.iter(|| {
            topic.route(black_box("x.y"), no_headers, &mut out);
            black_box(&out);
            out.clear();
        })
    });

    // 10 bindings, alternately x-match all and any, on `format` and `n`. The message's
    // headers table is parsed from its raw properties inside the route, as on a publish.
    let headers = exchange("bench.headers", ExchangeKind::Headers);
    for i in 0..10i32 {
        let mut args = FieldTable::default();
        args.insert("x-match".into(), AMQPValue::LongString(LongString::from(if i % 2 == 0 { "all" } else { "any" })));
        args.insert("format".into(), AMQPValue::LongString(LongString::from(if i % 3 == 0 { "pdf" } else { "zip" })));
        args.insert("n".into(), AMQPValue::LongInt(i));
        headers.bind(Destination::Queue(queue(&format!("q-headers-{i}"))), "", &args).expect("bind");
    }
    let mut message_headers = FieldTable::default();
    message_headers.insert("format".into(), AMQPValue::LongString(LongString::from("pdf")));
    message_headers.insert("type".into(), AMQPValue::LongString(LongString::from("report")));
    message_headers.insert("n".into(), AMQPValue::LongInt(3));
    let raw = encode_properties(&AMQPProperties::default().with_headers(message_headers).with_delivery_mode(2));
    let view = PropertiesView::parse(&raw).expect("valid properties");
    headers.route("", &mut || view.headers_table(), &mut out);
    // The `any` bindings 3 and 9 match on `format`; no `all` binding has both keys equal.
    assert_eq!(out.len(), 2);
    out.clear();
    g.bench_function("headers_10_bindings", |b| {
        b.iter(|| {
            headers.route(black_box(""), &mut || view.headers_table(), &mut out);
            black_box(&out);
            out.clear();
        })
    });
    g.finish();
}

fn bench_deliver(c: &mut Criterion) {
    let mut g = c.benchmark_group("deliver");
    g.throughput(Throughput::Elements(1));
    for (name, size) in [("16B", 16usize), ("1KiB", 1024)] {
        let msg = Message {
            exchange: "amq.direct".to_owned(),
            routing_key: "orders".to_owned(),
            payload: Payload::copied(PERSISTENT_PROPERTIES, &vec![0x5au8; size]),
            persistent: true,
            from_store: false,
            priority: 0,
            extra: None,
        };
        // One long-lived buffer, as a connection has: deliveries are appended in batches and
        // the buffer is emptied between batches (outside the timing) through
        // `Outbound::write`, keeping its capacity the way the writer task's swap does.
        let outbound = Outbound::new(FRAME_MAX);
        let mut tag = 0u64;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut measured = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let batch = left.min(DELIVER_BATCH);
                    let start = Instant::now();
                    for _ in 0..batch {
                        tag += 1;
                        outbound.deliver(1, CONSUMER_TAG, tag, false, black_box(&msg));
                    }
                    measured += start.elapsed();
                    outbound.write(|buf| buf.clear());
                    left -= batch;
                }
                measured
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    // Short enough for `make bench-micro` on a 2-core machine; flags such as
    // `--measurement-time` still override it.
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_frame_decode, bench_route, bench_deliver
}
criterion_main!(benches);
