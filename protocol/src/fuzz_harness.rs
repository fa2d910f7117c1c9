//! Fuzz harnesses: one function per `cargo fuzz` target in `protocol/fuzz`, shared with the
//! replay test (`tests/fuzz_corpus.rs`) so every committed corpus input runs through the same
//! code on every `cargo test`, on stable.
//!
//! Each harness takes arbitrary octets, drives the public API the broker calls with them, and
//! asserts what must hold whatever the input: a panic is a finding. The oracles are
//! differential where a second implementation exists (amq-protocol's parsers against the
//! allocation-free views, a small iterative table walker written from the spec against
//! [`skip_table`], whole-buffer against chunked frame decoding) and model-based for the
//! content assembler. Each returns how far the input got (frames decoded, messages assembled,
//! values accepted), so the replay test can check that the seeds reach the code under test
//! instead of bouncing off the first length check.
//!
//! [`seeds`] builds each target's initial corpus with amq-protocol's encoders.
//!
//! Not part of the broker's API: hidden from the docs, kept public only for the fuzz crate
//! and the integration test.

use std::collections::HashMap;

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{self, AMQPProperties};
use amq_protocol::protocol::{
    access, channel, confirm, connection, exchange, gen_class, parse_class, queue, tx, AMQPClass,
};
use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString};
use bytes::{BufMut, BytesMut};

use crate::content::Assembler;
use crate::error::{ReplyCode, Scope};
use crate::frame::{self, Frame, FrameHeader, FrameType, FRAME_END, FRAME_HEADER_SIZE, FRAME_OVERHEAD};
use crate::properties::{self, PropertiesView, MAX_EXPIRATION};
use crate::sasl::{self, Credentials};
use crate::table::{skip_table, TableError, MAX_TABLE_DEPTH};
use crate::{method, AmqpError};

/// A harness: arbitrary input in, how far it got out; panics on a finding.
pub type Harness = fn(&[u8]) -> usize;

/// The fuzz targets by name, as `protocol/fuzz/fuzz_targets/<name>.rs` calls them.
pub const TARGETS: &[(&str, Harness)] = &[
    ("frame", frame),
    ("method", method),
    ("content", content),
    ("table", table),
    ("properties", properties),
    ("sasl", sasl),
];

/// The largest `frame_max` the frame target picks. Large enough to cover the broker's
/// default (131072) and far more, small enough that a header claiming the maximum does not
/// make [`frame::decode`] reserve more than the fuzzer's memory limit.
pub const FUZZ_FRAME_MAX_CAP: u32 = 1 << 20;

/// The `frame_max` of the content target: the broker's default.
const CONTENT_FRAME_MAX: u32 = 131_072;

// ---------------------------------------------------------------------------------------
// frame
// ---------------------------------------------------------------------------------------

/// Frame decoding. The first four octets pick `frame_max` (big-endian, modulo
/// [`FUZZ_FRAME_MAX_CAP`] + 1, at least 1); the rest is a byte stream decoded frame after
/// frame until it is incomplete or an error stops it, once from one buffer and once fed in
/// chunks as a socket would deliver it. Both must give the same frames and the same end;
/// every frame must be what its octets say and re-encode to them; `Ok(None)` must leave the
/// buffer as it was; an error must be a connection-level 501 with a reason in the header.
/// Returns the number of frames decoded.
pub fn frame(data: &[u8]) -> usize {
    let Some((max_bytes, stream)) = data.split_first_chunk::<4>() else { return 0 };
    let frame_max = (u32::from_be_bytes(*max_bytes) % (FUZZ_FRAME_MAX_CAP + 1)).max(1);

    let mut whole = BytesMut::from(stream);
    let mut frames = Vec::new();
    let whole_end = loop {
        match checked_decode(&mut whole, frame_max) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => break Ok(whole.len()),
            Err(e) => break Err(e),
        }
    };

    // The same stream in chunks of 1 to 64 octets, sizes drawn from the stream itself.
    let mut chunked = BytesMut::new();
    let mut chunked_frames = Vec::new();
    let mut fed = 0;
    let chunked_end = 'feed: loop {
        loop {
            match checked_decode(&mut chunked, frame_max) {
                Ok(Some(f)) => chunked_frames.push(f),
                Ok(None) => break,
                Err(e) => break 'feed Err(e),
            }
        }
        if fed == stream.len() {
            break Ok(chunked.len());
        }
        let n = (1 + usize::from(stream[fed]) % 64).min(stream.len() - fed);
        chunked.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
    };
    assert_eq!(frames, chunked_frames, "chunked decoding must give the same frames");
    assert_eq!(whole_end, chunked_end, "chunked decoding must end the same way");
    frames.len()
}

/// [`frame::decode`] with the invariants of one call checked.
fn checked_decode(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, AmqpError> {
    let len_before = buf.len();
    let header = FrameHeader::parse(buf);
    // Only the octets of a complete frame are copied, so a long stream stays linear.
    let complete = match header {
        Ok(Some(h)) if (h.size as usize).saturating_add(FRAME_OVERHEAD) <= len_before => {
            Some(buf[..h.size as usize + FRAME_OVERHEAD].to_vec())
        }
        _ => None,
    };
    let edges = (buf.first().copied(), buf.last().copied());
    let result = frame::decode(buf, frame_max);
    match &result {
        Ok(Some(f)) => {
            let h = header.expect("a decoded frame has a valid header").expect("and a complete one");
            let octets = complete.expect("a decoded frame was complete");
            assert!(frame_max == 0 || h.size <= frame_max, "payload of {} over frame_max {frame_max}", h.size);
            assert_eq!(len_before - buf.len(), octets.len(), "a frame consumes exactly its octets");
            assert_eq!(octets[octets.len() - 1], FRAME_END);
            let payload = &octets[FRAME_HEADER_SIZE..octets.len() - 1];
            let (kind, channel, got) = match f {
                Frame::Method { channel, payload } => (FrameType::Method, *channel, Some(payload)),
                Frame::Header { channel, payload } => (FrameType::Header, *channel, Some(payload)),
                Frame::Body { channel, payload } => (FrameType::Body, *channel, Some(payload)),
                Frame::Heartbeat { channel } => (FrameType::Heartbeat, *channel, None),
            };
            assert_eq!((kind, channel), (h.frame_type, h.channel));
            if let Some(got) = got {
                assert_eq!(&got[..], payload);
            }
            assert_reencodes(f, &octets);
        }
        Ok(None) => {
            assert_eq!(buf.len(), len_before, "an incomplete frame leaves the buffer alone");
            assert_eq!((buf.first().copied(), buf.last().copied()), edges);
            match header {
                Ok(None) => assert!(len_before < FRAME_HEADER_SIZE),
                Ok(Some(h)) => {
                    assert!(frame_max == 0 || h.size <= frame_max, "an oversized frame must be refused from its header");
                    assert!(len_before < h.size as usize + FRAME_OVERHEAD);
                }
                Err(e) => panic!("a header that does not parse must be an error, not incomplete: {e}"),
            }
        }
        Err(e) => {
            assert_eq!((e.code, e.scope), (ReplyCode::FrameError, Scope::Connection), "{e}");
            match header {
                Err(_) => {}
                Ok(Some(h)) => {
                    let too_large = frame_max != 0 && h.size > frame_max;
                    let bad_end = complete.is_some_and(|o| o[o.len() - 1] != FRAME_END);
                    assert!(too_large || bad_end, "refused a well-formed frame: {e}");
                }
                Ok(None) => panic!("refused fewer octets than a header: {e}"),
            }
        }
    }
    result
}

/// Encodes `f` with the broker's encoders wherever one produces this frame, and compares.
fn assert_reencodes(f: &Frame, octets: &[u8]) {
    let mut out = BytesMut::new();
    match f {
        Frame::Method { channel, payload } if payload.len() >= 4 => {
            let (class_id, method_id) = method::ids(payload).expect("four octets hold the ids");
            frame::encode_method_with(&mut out, *channel, class_id, method_id, |b| b.put_slice(&payload[4..]));
        }
        Frame::Header { channel, payload } if payload.len() >= 12 && payload[..4] == [0, 60, 0, 0] => {
            let size = u64::from_be_bytes(payload[4..12].try_into().expect("eight octets"));
            frame::encode_content_header(&mut out, *channel, size, &payload[12..]);
        }
        Frame::Body { channel, payload } if !payload.is_empty() => {
            let frame_max = u32::try_from(payload.len() + FRAME_OVERHEAD).expect("under frame_max");
            frame::encode_body(&mut out, *channel, payload, frame_max);
        }
        Frame::Heartbeat { channel: 0 } if octets.len() == FRAME_OVERHEAD => frame::encode_heartbeat(&mut out),
        _ => return,
    }
    assert_eq!(&out[..], octets, "re-encoding {f:?}");
}

// ---------------------------------------------------------------------------------------
// method
// ---------------------------------------------------------------------------------------

/// Method payload decoding, as the broker decodes every method frame. A decoded method must
/// carry the ids it was read from, hold no table nested deeper than [`MAX_TABLE_DEPTH`] (a
/// deeper one means the guard was bypassed), re-encode to octets that decode to the same
/// octets again; a basic.publish must decode exactly as amq-protocol's generic parser does;
/// an error must be a connection-level 501 (no ids), 502 or 540 naming the method.
/// Returns 1 for a decoded method.
pub fn method(data: &[u8]) -> usize {
    let result = method::decode(data);
    let (class_id, method_id) = match method::ids(data) {
        Ok(ids) => ids,
        Err(_) => {
            let e = result.expect_err("no ids, no method");
            assert_eq!((e.code, e.scope), (ReplyCode::FrameError, Scope::Connection));
            return 0;
        }
    };
    if (class_id, method_id) == (60, 40) {
        // decode_publish is a hand-written fast path; it must agree with the generic parser.
        let generic = parse_class(data).ok().map(|(_, m)| m);
        assert_eq!(result.as_ref().ok(), generic.as_ref(), "basic.publish fast path");
    }
    let decoded = match result {
        Err(e) => {
            assert_eq!(e.scope, Scope::Connection, "{e}");
            assert_eq!((e.class_id, e.method_id), (class_id, method_id), "the error names the method: {e}");
            assert!(matches!(e.code, ReplyCode::SyntaxError | ReplyCode::NotImplemented), "{e}");
            return 0;
        }
        Ok(m) => m,
    };
    assert_eq!((decoded.get_amqp_class_id(), decoded.get_amqp_method_id()), (class_id, method_id));
    assert_ne!(method::name(class_id, method_id), "unknown");
    for t in method_tables(&decoded) {
        let depth = parsed_depth(t);
        assert!(depth <= MAX_TABLE_DEPTH, "a table {depth} deep got past the guard");
    }
    let encoded = encode_method(&decoded);
    let again = method::decode(&encoded).unwrap_or_else(|e| panic!("re-encoded {decoded:?} does not decode: {e}"));
    assert_eq!(encode_method(&again), encoded, "decode and encode are not inverse");
    1
}

/// The field tables a client method carries.
fn method_tables(m: &AMQPClass) -> Vec<&FieldTable> {
    match m {
        AMQPClass::Connection(connection::AMQPMethod::StartOk(m)) => vec![&m.client_properties],
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(m)) => vec![&m.arguments],
        AMQPClass::Exchange(exchange::AMQPMethod::Bind(m)) => vec![&m.arguments],
        AMQPClass::Exchange(exchange::AMQPMethod::Unbind(m)) => vec![&m.arguments],
        AMQPClass::Queue(queue::AMQPMethod::Declare(m)) => vec![&m.arguments],
        AMQPClass::Queue(queue::AMQPMethod::Bind(m)) => vec![&m.arguments],
        AMQPClass::Queue(queue::AMQPMethod::Unbind(m)) => vec![&m.arguments],
        AMQPClass::Basic(basic::AMQPMethod::Consume(m)) => vec![&m.arguments],
        _ => Vec::new(),
    }
}

fn encode_method(m: &AMQPClass) -> Vec<u8> {
    gen_class(m)(WriteContext::from(Vec::new())).expect("a decoded method encodes").write
}

// ---------------------------------------------------------------------------------------
// content
// ---------------------------------------------------------------------------------------

/// Content assembly. The first octet picks the message size limit; the rest is a stream of
/// frames (frame_max 131072) fed to one [`Assembler`] per channel as the broker feeds them:
/// a basic.publish starts a message, header and body frames continue it, channel.close
/// resets it, an error resets it (the broker closes the channel or connection). A model of
/// each channel (awaiting a header, or the body octets so far and how many remain) predicts
/// every result: which error, when a message completes, and its properties and body.
/// Returns the number of messages assembled.
pub fn content(data: &[u8]) -> usize {
    let Some((&config, stream)) = data.split_first() else { return 0 };
    let max_message_size: u64 = match config % 4 {
        0 => 128 << 20,
        1 => 0,
        2 => 16,
        _ => 4096,
    };
    let mut buf = BytesMut::from(stream);
    let mut channels: HashMap<u16, (Assembler<u32>, Model)> = HashMap::new();
    let mut published = 0u32;
    let mut completed = 0;
    while let Ok(Some(f)) = frame::decode(&mut buf, CONTENT_FRAME_MAX) {
        match f {
            Frame::Method { channel, payload } if channel != 0 => {
                let (a, model) = channels.entry(channel).or_default();
                assert_eq!(a.is_idle(), matches!(model, Model::Idle));
                if !a.is_idle() {
                    // 505 UNEXPECTED_FRAME in the broker, which closes the connection.
                    a.reset();
                    *model = Model::Idle;
                    continue;
                }
                match method::decode(&payload) {
                    Ok(AMQPClass::Basic(basic::AMQPMethod::Publish(_))) => {
                        published += 1;
                        a.start(published);
                        *model = Model::Header(published);
                    }
                    Ok(AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                        a.reset();
                        *model = Model::Idle;
                    }
                    _ => {}
                }
            }
            Frame::Header { channel, payload } => {
                let (a, model) = channels.entry(channel).or_default();
                let expected = model.header(&payload, max_message_size);
                let got = a.header(payload, max_message_size);
                completed += check_step(got, expected, a, model);
            }
            Frame::Body { channel, payload } => {
                let (a, model) = channels.entry(channel).or_default();
                let expected = model.body(&payload);
                let got = a.body(payload);
                completed += check_step(got, expected, a, model);
            }
            _ => {}
        }
    }
    completed
}

/// What a channel's assembler should be doing.
#[derive(Debug, Default)]
enum Model {
    #[default]
    Idle,
    /// A publish (numbered) awaits its header.
    Header(u32),
    /// A body is being gathered.
    Body { id: u32, properties: Vec<u8>, body: Vec<u8>, remaining: u64 },
}

/// A model step's prediction: an error code, nothing yet, or a finished message.
#[derive(Debug, PartialEq)]
enum Expect {
    Error(ReplyCode),
    Pending,
    Done { id: u32, properties: Vec<u8>, body: Vec<u8> },
}

impl Model {
    /// Predicts a header frame and moves to the state that follows it.
    fn header(&mut self, payload: &[u8], max_message_size: u64) -> Expect {
        let id = match std::mem::take(self) {
            Model::Header(id) => id,
            other => {
                // Refused, and the state is left as it was.
                *self = other;
                return Expect::Error(ReplyCode::UnexpectedFrame);
            }
        };
        if payload.len() < 14 {
            return Expect::Error(ReplyCode::FrameError);
        }
        if payload[..2] != [0, 60] {
            return Expect::Error(ReplyCode::UnexpectedFrame);
        }
        let properties = payload[12..].to_vec();
        if PropertiesView::parse(&properties).is_err() {
            return Expect::Error(ReplyCode::SyntaxError);
        }
        let size = u64::from_be_bytes(payload[4..12].try_into().expect("eight octets"));
        if size > max_message_size {
            return Expect::Error(ReplyCode::PreconditionFailed);
        }
        if size == 0 {
            return Expect::Done { id, properties, body: Vec::new() };
        }
        *self = Model::Body { id, properties, body: Vec::new(), remaining: size };
        Expect::Pending
    }

    /// Predicts a body frame and moves to the state that follows it.
    fn body(&mut self, payload: &[u8]) -> Expect {
        let Model::Body { id, properties, mut body, remaining } = std::mem::take(self) else {
            return Expect::Error(ReplyCode::UnexpectedFrame);
        };
        let len = payload.len() as u64;
        if len > remaining {
            return Expect::Error(ReplyCode::FrameError);
        }
        body.extend_from_slice(payload);
        if len == remaining {
            return Expect::Done { id, properties, body };
        }
        *self = Model::Body { id, properties, body, remaining: remaining - len };
        Expect::Pending
    }
}

/// Compares one assembler step with the model's prediction; 1 when a message completed.
fn check_step(
    got: Result<Option<crate::content::Content<u32>>, AmqpError>,
    expected: Expect,
    a: &mut Assembler<u32>,
    model: &mut Model,
) -> usize {
    let got = match got {
        Err(e) => Expect::Error(e.code),
        Ok(None) => Expect::Pending,
        Ok(Some(c)) => Expect::Done { id: c.method, properties: c.payload.properties().to_vec(), body: c.payload.body().to_vec() },
    };
    assert_eq!(got, expected);
    assert_eq!(a.is_idle(), matches!(model, Model::Idle), "assembler state after {got:?}");
    if let Expect::Error(_) = got {
        // The broker closes the channel or the connection.
        a.reset();
        *model = Model::Idle;
    }
    usize::from(matches!(got, Expect::Done { .. }))
}

// ---------------------------------------------------------------------------------------
// table
// ---------------------------------------------------------------------------------------

/// A field table (length prefix included): [`skip_table`] must agree exactly with an
/// iterative walker written from the spec; only a table the guard passed is handed to
/// amq-protocol's recursive parser, which must then consume exactly the span the guard
/// measured, fail only for a key that is not UTF-8, build a table no deeper than the walker
/// saw, and re-encode to octets the guard passes and that round-trip unchanged.
/// Returns 1 when the guard passed, 2 when amq-protocol parsed it too.
pub fn table(data: &[u8]) -> usize {
    let guard = skip_table(data);
    let walk = walk_table(data);
    assert_eq!(guard, walk.as_ref().map(|w| w.span).map_err(|e| *e), "skip_table disagrees with the spec walker");
    let Ok(walk) = walk else { return 0 };
    let Ok((rest, parsed)) = parse_field_table(data) else {
        assert!(!walk.keys_utf8, "amq-protocol refused a table the guard passed");
        return 1;
    };
    assert!(walk.keys_utf8, "amq-protocol accepted a key that is not UTF-8");
    assert_eq!(data.len() - rest.len(), walk.span, "amq-protocol read a different span");
    // A repeated key keeps only its last value, which may be shallower than an earlier one.
    assert!(parsed_depth(&parsed) <= walk.depth);
    let encoded = encode_table(&parsed);
    assert_eq!(skip_table(&encoded), Ok(encoded.len()));
    let (_, again) = parse_field_table(&encoded[..]).expect("a re-encoded table parses");
    assert_eq!(encode_table(&again), encoded, "parse and encode are not inverse");
    2
}

fn encode_table(t: &FieldTable) -> Vec<u8> {
    gen_field_table(t)(WriteContext::from(Vec::new())).expect("a table encodes").write
}

/// The deepest nesting of a parsed table (the table itself is 1), counted without recursion.
fn parsed_depth(t: &FieldTable) -> usize {
    enum Node<'a> {
        Table(&'a FieldTable),
        Array(&'a FieldArray),
    }
    let mut stack = vec![(Node::Table(t), 1)];
    let mut deepest = 0;
    while let Some((node, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        let values: Box<dyn Iterator<Item = &AMQPValue>> = match node {
            Node::Table(t) => Box::new(t.inner().values()),
            Node::Array(a) => Box::new(a.as_slice().iter()),
        };
        for v in values {
            match v {
                AMQPValue::FieldTable(t) => stack.push((Node::Table(t), depth + 1)),
                AMQPValue::FieldArray(a) => stack.push((Node::Array(a), depth + 1)),
                _ => {}
            }
        }
    }
    deepest
}

/// What the spec walker learnt about a valid table.
#[derive(Debug)]
struct Walk<'a> {
    /// Octets spanned, length prefix included.
    span: usize,
    /// The deepest nesting reached (the table itself is 1).
    depth: usize,
    /// Whether every key, at every level, is UTF-8 (amq-protocol requires it).
    keys_utf8: bool,
    /// The outermost table's entries in order: key, type tag, value octets.
    entries: Vec<(&'a [u8], u8, &'a [u8])>,
}

/// An independent, iterative reading of AMQP 0-9-1 field tables (spec 4.2.5.5 with
/// RabbitMQ's type tags) that stops where [`skip_table`] must: at the first truncation, at
/// an unknown tag, or on entering a level deeper than [`MAX_TABLE_DEPTH`].
fn walk_table(input: &[u8]) -> Result<Walk<'_>, TableError> {
    struct Level {
        is_table: bool,
        end: usize,
        depth: usize,
    }
    let long = |pos: usize, end: usize| -> Result<usize, TableError> {
        let b = input.get(pos..pos + 4).filter(|_| pos + 4 <= end).ok_or(TableError::Truncated)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let len = long(0, input.len())?;
    let span = 4usize.checked_add(len).filter(|s| *s <= input.len()).ok_or(TableError::Truncated)?;
    let mut walk = Walk { span, depth: 1, keys_utf8: true, entries: Vec::new() };
    let mut stack = vec![Level { is_table: true, end: span, depth: 1 }];
    let mut pos = 4;
    while let Some(level) = stack.last() {
        let (end, depth, is_table) = (level.end, level.depth, level.is_table);
        if pos == end {
            stack.pop();
            continue;
        }
        let outermost = stack.len() == 1;
        let mut key: &[u8] = &[];
        if is_table {
            let key_len = usize::from(input[pos]);
            key = input.get(pos + 1..pos + 1 + key_len).filter(|_| pos + 1 + key_len <= end).ok_or(TableError::Truncated)?;
            walk.keys_utf8 &= std::str::from_utf8(key).is_ok();
            pos += 1 + key_len;
        }
        let tag = *input.get(pos).filter(|_| pos < end).ok_or(TableError::Truncated)?;
        pos += 1;
        let value_start = pos;
        let fixed = match tag {
            b't' | b'b' | b'B' => Some(1),
            b's' | b'u' | b'U' => Some(2),
            b'I' | b'i' | b'f' => Some(4),
            b'l' | b'L' | b'd' | b'T' => Some(8),
            b'D' => Some(5),
            b'V' => Some(0),
            b'S' | b'x' => Some(4 + long(pos, end)?),
            b'F' | b'A' => None,
            other => return Err(TableError::UnknownType(other)),
        };
        match fixed {
            Some(size) => {
                if pos + size > end {
                    return Err(TableError::Truncated);
                }
                pos += size;
            }
            None => {
                if depth + 1 > MAX_TABLE_DEPTH {
                    return Err(TableError::TooDeep);
                }
                let inner_end = pos + 4 + long(pos, end)?;
                if inner_end > end {
                    return Err(TableError::Truncated);
                }
                walk.depth = walk.depth.max(depth + 1);
                stack.push(Level { is_table: tag == b'F', end: inner_end, depth: depth + 1 });
                pos += 4;
            }
        }
        if outermost {
            // A nested value's octets end where its level does.
            let value_end = if fixed.is_some() { pos } else { stack.last().map_or(pos, |l| l.end) };
            walk.entries.push((key, tag, &input[value_start..value_end]));
        }
    }
    Ok(walk)
}

// ---------------------------------------------------------------------------------------
// properties
// ---------------------------------------------------------------------------------------

/// Basic properties as a content header carries them. [`PropertiesView::parse`] and
/// [`properties::decode`] (amq-protocol's parser behind the view's guard) must agree on every
/// field the broker reads; what decode returns must re-encode to properties the view reads
/// the same way (dead-lettering rewrites properties so); every expiration, and the whole
/// input taken as one, must parse as RabbitMQ parses a per-message TTL.
/// Returns 1 when the view accepted the input, 2 when decode did too.
pub fn properties(data: &[u8]) -> usize {
    check_expiration(data);
    let decoded = properties::decode(data);
    let Ok(view) = PropertiesView::parse(data) else {
        assert!(decoded.is_none(), "decode accepted properties the view refused");
        return 0;
    };
    if let Some(expiration) = view.expiration {
        check_expiration(expiration);
    }
    if let Some(raw) = view.headers {
        assert_eq!(skip_table(raw), Ok(raw.len()));
    }
    let _ = view.persistent();
    let headers = view.headers_table();
    let Some(p) = decoded else { return 1 };
    assert_view_matches(&view, &p);
    assert_eq!(headers.as_ref().map(encode_table), p.headers().as_ref().map(encode_table));

    let reencoded = properties::encode(&p);
    let again = PropertiesView::parse(&reencoded).expect("re-encoded properties parse");
    assert_view_matches(&again, &p);
    let p2 = properties::decode(&reencoded).expect("re-encoded properties decode");
    assert_eq!(properties::encode(&p2), reencoded, "decode and encode are not inverse");
    2
}

fn assert_view_matches(view: &PropertiesView<'_>, p: &AMQPProperties) {
    let short = |s: &Option<amq_protocol::types::ShortString>| s.as_ref().map(|s| s.as_str().as_bytes().to_vec());
    let got = (view.delivery_mode, view.priority, view.expiration.map(<[u8]>::to_vec), view.user_id.map(<[u8]>::to_vec), view.reply_to.map(<[u8]>::to_vec));
    let want = (*p.delivery_mode(), *p.priority(), short(p.expiration()), short(p.user_id()), short(p.reply_to()));
    assert_eq!(got, want, "the view and amq-protocol read different properties");
    assert_eq!(view.headers.is_some(), p.headers().is_some());
}

/// [`properties::parse_expiration`] against a reading of Erlang's `string:to_integer` rules.
fn check_expiration(raw: &[u8]) {
    let (negative, unsigned) = match raw.first() {
        Some(b'-') => (true, &raw[1..]),
        Some(b'+') => (false, &raw[1..]),
        _ => (false, raw),
    };
    let digits = unsigned.iter().take_while(|b| b.is_ascii_digit()).count();
    let got = properties::parse_expiration(raw);
    if digits == 0 {
        assert_eq!(got, Err("no_integer".to_owned()));
    } else if digits < unsigned.len() {
        let reason = got.expect_err("leftover octets");
        assert!(reason.starts_with("{leftover_string,\"") && reason.ends_with("\"}"), "{reason}");
    } else {
        let value = std::str::from_utf8(unsigned).expect("digits").parse::<u128>().unwrap_or(u128::MAX);
        match got {
            Ok(v) => {
                assert_eq!(u128::from(v), value);
                assert!(v <= MAX_EXPIRATION && (!negative || v == 0));
            }
            Err(reason) if negative && value != 0 => assert!(reason.starts_with("{value_negative,-"), "{reason}"),
            Err(reason) => {
                assert!(value > u128::from(MAX_EXPIRATION), "refused {value}: {reason}");
                assert!(reason.starts_with("{value_too_large,"), "{reason}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// sasl
// ---------------------------------------------------------------------------------------

/// SASL responses. The input is parsed as PLAIN and as AMQPLAIN, each against a reading of
/// its rules: PLAIN is `authzid NUL user NUL password` with both names UTF-8; AMQPLAIN is a
/// field table without its length prefix, refused unless the depth guard passes it, whose
/// last LOGIN and PASSWORD entries are UTF-8 long strings. An unknown mechanism yields
/// nothing. Returns how many of the two mechanisms accepted the input.
pub fn sasl(data: &[u8]) -> usize {
    assert_eq!(sasl::parse("EXTERNAL", data), None);

    let parts: Vec<&[u8]> = data.split(|b| *b == 0).collect();
    let plain = match parts[..] {
        [_authzid, user, password] => match (std::str::from_utf8(user), std::str::from_utf8(password)) {
            (Ok(u), Ok(p)) => Some(Credentials { username: u.to_owned(), password: p.to_owned() }),
            _ => None,
        },
        _ => None,
    };
    let got_plain = sasl::parse("PLAIN", data);
    assert_eq!(got_plain, plain, "PLAIN");

    let Ok(len) = u32::try_from(data.len()) else { return usize::from(plain.is_some()) };
    let mut table = len.to_be_bytes().to_vec();
    table.extend_from_slice(data);
    let amqplain = walk_table(&table).ok().filter(|w| w.keys_utf8).and_then(|w| {
        let text = |key: &[u8]| {
            let (_, tag, value) = w.entries.iter().rev().find(|(k, _, _)| *k == key)?;
            (*tag == b'S').then_some(())?;
            std::str::from_utf8(&value[4..]).ok().map(str::to_owned)
        };
        Some(Credentials { username: text(b"LOGIN")?, password: text(b"PASSWORD")? })
    });
    let got_amqplain = sasl::parse("AMQPLAIN", data);
    assert_eq!(got_amqplain, amqplain, "AMQPLAIN");
    usize::from(got_plain.is_some()) + usize::from(got_amqplain.is_some())
}

// ---------------------------------------------------------------------------------------
// seeds
// ---------------------------------------------------------------------------------------

/// Valid inputs for `target`'s initial corpus, built with amq-protocol's encoders (and by
/// hand where the input is deliberately at a limit, such as a table exactly
/// [`MAX_TABLE_DEPTH`] deep). Each is accepted by its harness (returns more than 0).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "frame" => frame_seeds(),
        "method" => method_seeds(),
        "content" => content_seeds(),
        "table" => table_seeds(),
        "properties" => properties_seeds(),
        "sasl" => sasl_seeds(),
        other => panic!("no fuzz target {other}"),
    }
}

/// A table holding one value of every type.
fn every_type_table() -> FieldTable {
    let mut inner = FieldTable::default();
    inner.insert("x-match".into(), AMQPValue::LongString(LongString::from("all")));
    let mut t = FieldTable::default();
    t.insert("bool".into(), AMQPValue::Boolean(true));
    t.insert("i8".into(), AMQPValue::ShortShortInt(-8));
    t.insert("u8".into(), AMQPValue::ShortShortUInt(8));
    t.insert("i16".into(), AMQPValue::ShortInt(-16));
    t.insert("u16".into(), AMQPValue::ShortUInt(16));
    t.insert("i32".into(), AMQPValue::LongInt(-32));
    t.insert("u32".into(), AMQPValue::LongUInt(32));
    t.insert("i64".into(), AMQPValue::LongLongInt(-64));
    t.insert("f32".into(), AMQPValue::Float(1.5));
    t.insert("f64".into(), AMQPValue::Double(-2.25));
    t.insert("dec".into(), AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 12345 }));
    t.insert("str".into(), AMQPValue::LongString(LongString::from("hello")));
    t.insert("ts".into(), AMQPValue::Timestamp(1_700_000_000));
    t.insert("bytes".into(), AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 0xff])));
    t.insert("void".into(), AMQPValue::Void);
    t.insert(
        "array".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongInt(1), AMQPValue::FieldTable(inner.clone()), AMQPValue::Void])),
    );
    t.insert("table".into(), AMQPValue::FieldTable(inner));
    t
}

/// Queue arguments as clients send them.
fn queue_arguments() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-message-ttl".into(), AMQPValue::LongInt(60_000));
    t.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(9));
    t.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from("dlx")));
    t.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    t
}

/// A table nested `depth` levels deep along one path of `{"a": ...}` entries; with `array`,
/// every second level is an array instead, so both kinds count towards the limit.
fn nested_table(depth: usize, array: bool) -> Vec<u8> {
    // Level 0 is the outermost, a table; the innermost is empty, and an empty array is
    // encoded like an empty table.
    let is_array = |level: usize| array && level % 2 == 1;
    let mut inner: Vec<u8> = vec![0, 0, 0, 0];
    for level in (0..depth.saturating_sub(1)).rev() {
        let tag = if is_array(level + 1) { b'A' } else { b'F' };
        let mut outer = Vec::with_capacity(inner.len() + 7);
        if is_array(level) {
            outer.extend_from_slice(&((1 + inner.len()) as u32).to_be_bytes());
            outer.push(tag);
        } else {
            outer.extend_from_slice(&((3 + inner.len()) as u32).to_be_bytes());
            outer.extend_from_slice(&[1, b'a', tag]);
        }
        outer.extend_from_slice(&inner);
        inner = outer;
    }
    inner
}

fn client_methods() -> Vec<AMQPClass> {
    let mut props = FieldTable::default();
    props.insert("product".into(), AMQPValue::LongString(LongString::from("warren-fuzz")));
    let mut caps = FieldTable::default();
    caps.insert("publisher_confirms".into(), AMQPValue::Boolean(true));
    caps.insert("consumer_cancel_notify".into(), AMQPValue::Boolean(true));
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    vec![
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: props,
            mechanism: "PLAIN".into(),
            response: LongString::from(&b"\0guest\0guest"[..]),
            locale: "en_US".into(),
        })),
        AMQPClass::Connection(connection::AMQPMethod::SecureOk(connection::SecureOk { response: LongString::from("x") })),
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk { channel_max: 2047, frame_max: 131_072, heartbeat: 60 })),
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open { virtual_host: "/".into() })),
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close { reply_code: 200, reply_text: "bye".into(), class_id: 0, method_id: 0 })),
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
        AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(connection::UpdateSecret { new_secret: LongString::from("t"), reason: "r".into() })),
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        AMQPClass::Channel(channel::AMQPMethod::Flow(channel::Flow { active: true })),
        AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk { active: false })),
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close { reply_code: 406, reply_text: "x".into(), class_id: 50, method_id: 10 })),
        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
        AMQPClass::Access(access::AMQPMethod::Request(access::Request { realm: "/data".into(), exclusive: false, passive: true, active: true, write: true, read: true })),
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
            exchange: "amq.x".into(),
            kind: "headers".into(),
            durable: true,
            arguments: every_type_table(),
            ..Default::default()
        })),
        AMQPClass::Exchange(exchange::AMQPMethod::Delete(exchange::Delete { exchange: "x".into(), if_unused: true, nowait: false })),
        AMQPClass::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
            destination: "d".into(),
            source: "s".into(),
            routing_key: "a.*".into(),
            nowait: false,
            arguments: FieldTable::default(),
        })),
        AMQPClass::Exchange(exchange::AMQPMethod::Unbind(exchange::Unbind {
            destination: "d".into(),
            source: "s".into(),
            routing_key: "#".into(),
            nowait: true,
            arguments: FieldTable::default(),
        })),
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare { queue: "q".into(), durable: true, arguments: queue_arguments(), ..Default::default() })),
        AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
            queue: "q".into(),
            exchange: "amq.headers".into(),
            routing_key: "".into(),
            nowait: false,
            arguments: every_type_table(),
        })),
        AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge { queue: "q".into(), nowait: false })),
        AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete { queue: "q".into(), if_unused: false, if_empty: true, nowait: false })),
        AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
            queue: "q".into(),
            exchange: "amq.topic".into(),
            routing_key: "a.b".into(),
            arguments: FieldTable::default(),
        })),
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos { prefetch_count: 10, global: true })),
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "q".into(),
            consumer_tag: "ctag".into(),
            no_ack: true,
            exclusive: true,
            arguments: queue_arguments(),
            ..Default::default()
        })),
        AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel { consumer_tag: "ctag".into(), nowait: false })),
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish { exchange: "amq.direct".into(), routing_key: "k".into(), mandatory: true, immediate: false })),
        AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get { queue: "q".into(), no_ack: false })),
        AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: 7, multiple: true })),
        AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject { delivery_tag: 3, requeue: true })),
        AMQPClass::Basic(basic::AMQPMethod::RecoverAsync(basic::RecoverAsync { requeue: true })),
        AMQPClass::Basic(basic::AMQPMethod::Recover(basic::Recover { requeue: false })),
        AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack { delivery_tag: 9, multiple: false, requeue: true })),
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select { nowait: false })),
        AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {})),
        AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {})),
        AMQPClass::Tx(tx::AMQPMethod::Rollback(tx::Rollback {})),
    ]
}

fn method_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = client_methods().iter().map(encode_method).collect();
    // basic.consume whose arguments are exactly as deep as the guard allows, one of tables
    // only and one alternating arrays: a mutation that adds a level must be refused.
    for array in [false, true] {
        let consume = AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume { queue: "q".into(), ..Default::default() }));
        let mut m = encode_method(&consume);
        m.truncate(m.len() - 4);
        m.extend_from_slice(&nested_table(MAX_TABLE_DEPTH, array));
        seeds.push(m);
    }
    seeds
}

fn sample_properties() -> AMQPProperties {
    let mut headers = FieldTable::default();
    headers.insert("x-death".into(), AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(queue_arguments())])));
    headers.insert("k".into(), AMQPValue::LongString(LongString::from("v")));
    AMQPProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(5)
        .with_correlation_id("corr".into())
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_expiration("60000".into())
        .with_message_id("m-1".into())
        .with_timestamp(1_700_000_000)
        .with_type("t".into())
        .with_user_id("guest".into())
        .with_app_id("app".into())
        .with_cluster_id("c".into())
}

fn properties_seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![
        properties::encode(&sample_properties()),
        properties::encode(&AMQPProperties::default()),
        properties::encode(&AMQPProperties::default().with_delivery_mode(2)),
        properties::encode(&AMQPProperties::default().with_headers(every_type_table()).with_priority(9)),
    ];
    for expiration in ["0", "+5", "-0", "315360000000", "315360000001", "-1", "10abc", "abc", ""] {
        seeds.push(properties::encode(&AMQPProperties::default().with_expiration(expiration.into()).with_user_id("u".into())));
    }
    // headers exactly as deep as the guard allows.
    let mut deep = 0x2000u16.to_be_bytes().to_vec();
    deep.extend_from_slice(&nested_table(MAX_TABLE_DEPTH, true));
    seeds.push(deep);
    seeds
}

fn table_seeds() -> Vec<Vec<u8>> {
    vec![
        encode_table(&every_type_table()),
        encode_table(&queue_arguments()),
        encode_table(&FieldTable::default()),
        nested_table(MAX_TABLE_DEPTH, false),
        nested_table(MAX_TABLE_DEPTH, true),
        nested_table(7, true),
    ]
}

fn sasl_seeds() -> Vec<Vec<u8>> {
    let amqplain = |entries: &[(&str, AMQPValue)]| {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert((*k).into(), v.clone());
        }
        encode_table(&t)[4..].to_vec()
    };
    let s = |v: &str| AMQPValue::LongString(LongString::from(v));
    vec![
        b"\0guest\0guest".to_vec(),
        b"admin\0user\0secret".to_vec(),
        "\0\u{e9}l\u{e8}ve\0mot de passe".as_bytes().to_vec(),
        amqplain(&[("LOGIN", s("guest")), ("PASSWORD", s("guest"))]),
        amqplain(&[("LOGIN", s("u")), ("PASSWORD", s("")), ("extra", AMQPValue::FieldTable(every_type_table()))]),
    ]
}

/// Frames of a session: start-ok, tune-ok, open, a channel, a publish of `body_frames`
/// body frames, a heartbeat.
fn session(channel_id: u16, frame_max: u32, body: &[u8], properties: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    for m in client_methods().iter().take(4) {
        frame::encode_method(&mut b, 0, m);
    }
    frame::encode_heartbeat(&mut b);
    frame::encode_method(&mut b, channel_id, &AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})));
    publish(&mut b, channel_id, frame_max, body, properties);
    b
}

fn publish(b: &mut BytesMut, channel_id: u16, frame_max: u32, body: &[u8], properties: &[u8]) {
    let m = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish { exchange: "".into(), routing_key: "q".into(), mandatory: false, immediate: false }));
    frame::encode_method(b, channel_id, &m);
    frame::encode_content_header(b, channel_id, body.len() as u64, properties);
    frame::encode_body(b, channel_id, body, frame_max);
}

fn frame_seeds() -> Vec<Vec<u8>> {
    let with_max = |frame_max: u32, stream: &[u8]| {
        let mut s = frame_max.to_be_bytes().to_vec();
        s.extend_from_slice(stream);
        s
    };
    let props = properties::encode(&AMQPProperties::default().with_delivery_mode(2));
    let mut exact = BytesMut::new();
    // A body frame whose payload is exactly frame_max (accepted, as RabbitMQ does).
    frame::put_frame_header(&mut exact, FrameType::Body, 1, 4096);
    exact.put_slice(&[0x5a; 4096]);
    exact.put_u8(FRAME_END);
    let mut small = BytesMut::new();
    frame::encode_heartbeat(&mut small);
    frame::encode_method_with(&mut small, 3, 60, 80, |b| {
        b.put_u64(42);
        b.put_u8(1);
    });
    let mut partial = session(1, 4096, b"hello", &props).to_vec();
    partial.truncate(partial.len() - 3);
    vec![
        with_max(131_072, &session(1, 131_072, b"hello world", &props)),
        with_max(4096, &session(7, 4096, &[0xab; 9000], &props)),
        with_max(4096, &exact),
        with_max(64, &small),
        with_max(131_072, &partial),
    ]
}

fn content_seeds() -> Vec<Vec<u8>> {
    let props = properties::encode(&sample_properties());
    let plain = properties::encode(&AMQPProperties::default());
    let mut seeds = Vec::new();
    // One body frame, three body frames, an empty body, two channels interleaved.
    seeds.push([&[0u8][..], &session(1, CONTENT_FRAME_MAX, b"hello", &props)].concat());
    seeds.push([&[3u8][..], &session(2, 16, &[7u8; 20], &plain)].concat());
    seeds.push([&[0u8][..], &session(1, CONTENT_FRAME_MAX, b"", &props)].concat());
    let mut b = BytesMut::new();
    let m = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish::default()));
    for ch in [1u16, 2] {
        frame::encode_method(&mut b, ch, &m);
        frame::encode_content_header(&mut b, ch, 6, &plain);
    }
    for ch in [1u16, 2, 1, 2] {
        frame::encode_body(&mut b, ch, b"abc", CONTENT_FRAME_MAX);
    }
    seeds.push([&[0u8][..], &b[..]].concat());
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_reaches_the_code_under_test() {
        for (name, harness) in TARGETS {
            // Tables and properties must get through amq-protocol's parser as well.
            let full = if matches!(*name, "table" | "properties") { 2 } else { 1 };
            for (i, seed) in seeds(name).iter().enumerate() {
                assert!(harness(seed) >= full, "{name} seed {i} stopped early");
            }
        }
    }

    #[test]
    fn nested_seed_tables_are_as_deep_as_allowed() {
        for array in [false, true] {
            let t = nested_table(MAX_TABLE_DEPTH, array);
            assert_eq!(walk_table(&t).map(|w| w.depth), Ok(MAX_TABLE_DEPTH));
            let deeper = nested_table(MAX_TABLE_DEPTH + 1, array);
            assert_eq!(skip_table(&deeper), Err(TableError::TooDeep));
            assert_eq!(walk_table(&deeper).map(|w| w.depth), Err(TableError::TooDeep));
        }
    }
}
