//! AMQP 0-9-1 framing (spec section 4.2.3): a 7-byte header (type, channel, size), a payload
//! and the frame-end octet.
//!
//! [`decode`] reads a frame out of a caller-owned read buffer. It refuses a frame whose header
//! announces a payload of more than `frame_max` octets before any payload is buffered, so a
//! client cannot make the broker allocate what it claims. The `encode_*` functions append
//! frames to a caller-owned write buffer; body payloads are passed as slices so a delivery
//! can be written straight from the shared message body.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use nom::number::complete::{be_u16, be_u32, u8 as octet};
use nom::Parser;

use crate::error::AmqpError;
use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::{gen_class, AMQPClass};

/// Octets before a frame's payload.
pub const FRAME_HEADER_SIZE: usize = 7;
/// Octets of framing around a payload: the header plus the frame-end octet.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_SIZE + 1;
/// The frame-end octet.
pub const FRAME_END: u8 = 0xCE;
/// The smallest `frame_max` a peer may negotiate (spec: frame-min-size).
pub const FRAME_MIN_SIZE: u32 = 4096;
/// The protocol header a 0-9-1 client sends first.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// The frame types of AMQP 0-9-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// A method frame (1).
    Method,
    /// A content header frame (2).
    Header,
    /// A content body frame (3).
    Body,
    /// A heartbeat frame (8).
    Heartbeat,
}

impl FrameType {
    fn from_octet(value: u8) -> Option<Self> {
        match value {
            1 => Some(FrameType::Method),
            2 => Some(FrameType::Header),
            3 => Some(FrameType::Body),
            8 => Some(FrameType::Heartbeat),
            _ => None,
        }
    }

    fn octet(self) -> u8 {
        match self {
            FrameType::Method => 1,
            FrameType::Header => 2,
            FrameType::Body => 3,
            FrameType::Heartbeat => 8,
        }
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The frame type.
    pub frame_type: FrameType,
    /// The channel the frame belongs to (0 for the connection).
    pub channel: u16,
    /// The payload size announced by the header.
    pub size: u32,
}

impl FrameHeader {
    /// Parses a frame header from the first [`FRAME_HEADER_SIZE`] octets of `input`.
    /// `Ok(None)` when fewer octets are available.
    pub fn parse(input: &[u8]) -> Result<Option<FrameHeader>, AmqpError> {
        if input.len() < FRAME_HEADER_SIZE {
            return Ok(None);
        }
        let parsed: nom::IResult<&[u8], (u8, u16, u32)> = (octet, be_u16, be_u32).parse(input);
        let (_, (kind, channel, size)) =
            parsed.map_err(|_| AmqpError::frame_error("truncated frame header"))?;
        let frame_type = match FrameType::from_octet(kind) {
            Some(t) => t,
            None if input.starts_with(b"AMQP") => {
                return Err(AmqpError::frame_error("unexpected protocol header"));
            }
            None => return Err(AmqpError::frame_error(format!("unknown frame type {kind}"))),
        };
        Ok(Some(FrameHeader { frame_type, channel, size }))
    }
}

/// A decoded frame. Payloads are zero-copy views of the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A method frame; the payload starts with the class and method ids.
    Method {
        /// The channel.
        channel: u16,
        /// The method payload.
        payload: Bytes,
    },
    /// A content header frame.
    Header {
        /// The channel.
        channel: u16,
        /// The content header payload.
        payload: Bytes,
    },
    /// A content body frame.
    Body {
        /// The channel.
        channel: u16,
        /// A piece of the body.
        payload: Bytes,
    },
    /// A heartbeat frame (valid only on channel 0).
    Heartbeat {
        /// The channel it arrived on.
        channel: u16,
    },
}

/// Takes one complete frame off the front of `buf`.
///
/// Returns `Ok(None)` when more octets are needed; `buf` is then untouched, so a read can
/// resume. The size is checked from the header against `frame_max` (0: no limit) before the
/// payload is waited for; a wrong frame-end octet is a 501 FRAME_ERROR.
///
/// The spec's `frame_max` bounds the whole frame, but RabbitMQ (`rabbit_reader`'s
/// `FRAME_SIZE_FUDGE`) lets the payload itself reach `frame_max`, because many clients count
/// the limit off by the 8 octets of framing (rabbitpy sends body frames that large). Warren
/// accepts the same frames: a payload of `frame_max` octets passes, one more is 501.
pub fn decode(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, AmqpError> {
    let Some(header) = FrameHeader::parse(buf)? else {
        return Ok(None);
    };
    if frame_max != 0 && header.size > frame_max {
        // RabbitMQ's text, which reports the limit the spec means.
        return Err(AmqpError::frame_error(format!(
            "type {}, all octets = <<>>: {{frame_too_large,{},{}}}",
            header.frame_type.octet(),
            header.size,
            frame_max.saturating_sub(FRAME_OVERHEAD as u32)
        )));
    }
    let total = header.size as usize + FRAME_OVERHEAD;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(AmqpError::frame_error(format!(
            "frame end octet was {:#04x}, expected 0xce",
            buf[total - 1]
        )));
    }
    buf.advance(FRAME_HEADER_SIZE);
    let payload = buf.split_to(header.size as usize).freeze();
    buf.advance(1);
    let channel = header.channel;
    Ok(Some(match header.frame_type {
        FrameType::Method => Frame::Method { channel, payload },
        FrameType::Header => Frame::Header { channel, payload },
        FrameType::Body => Frame::Body { channel, payload },
        FrameType::Heartbeat => Frame::Heartbeat { channel },
    }))
}

/// Appends a frame header for a payload of `size` octets.
pub fn put_frame_header(buf: &mut BytesMut, frame_type: FrameType, channel: u16, size: u32) {
    buf.put_u8(frame_type.octet());
    buf.put_u16(channel);
    buf.put_u32(size);
}

/// Appends a heartbeat frame.
pub fn encode_heartbeat(buf: &mut BytesMut) {
    put_frame_header(buf, FrameType::Heartbeat, 0, 0);
    buf.put_u8(FRAME_END);
}

/// Appends a method frame, serialising `method` with amq-protocol's generator.
pub fn encode_method(buf: &mut BytesMut, channel: u16, method: &AMQPClass) {
    // The generator writes into a Vec (it needs to seek back for bit fields); methods the
    // server sends this way are small and off the per-message path.
    let payload = match gen_class(method)(WriteContext::from(Vec::with_capacity(64))) {
        Ok(ctx) => ctx.write,
        // Generation into a Vec cannot run out of room; an error here means a value that
        // cannot be encoded, which the broker never builds.
        Err(_) => return,
    };
    put_frame_header(buf, FrameType::Method, channel, payload.len() as u32);
    buf.put_slice(&payload);
    buf.put_u8(FRAME_END);
}

/// Appends a method frame whose payload the caller writes with `write_args` after the
/// class and method ids. Used for the per-message methods (deliver, get-ok, return, ack)
/// which are hand-encoded to avoid the generic generator's allocations.
pub fn encode_method_with(
    buf: &mut BytesMut,
    channel: u16,
    class_id: u16,
    method_id: u16,
    write_args: impl FnOnce(&mut BytesMut),
) {
    let start = buf.len();
    put_frame_header(buf, FrameType::Method, channel, 0);
    buf.put_u16(class_id);
    buf.put_u16(method_id);
    write_args(buf);
    let size = (buf.len() - start - FRAME_HEADER_SIZE) as u32;
    buf[start + 3..start + 7].copy_from_slice(&size.to_be_bytes());
    buf.put_u8(FRAME_END);
}

/// Appends a short string; `s` must be at most 255 octets (longer input is truncated on a
/// character boundary, which only happens for server-built texts).
pub fn put_short_str(buf: &mut BytesMut, s: &str) {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    buf.put_u8(end as u8);
    buf.put_slice(&s.as_bytes()[..end]);
}

/// Appends a content header frame: class 60, weight 0, body size, then the properties
/// exactly as the publisher encoded them.
pub fn encode_content_header(buf: &mut BytesMut, channel: u16, body_size: u64, properties: &[u8]) {
    put_frame_header(buf, FrameType::Header, channel, (12 + properties.len()) as u32);
    buf.put_u16(60);
    buf.put_u16(0);
    buf.put_u64(body_size);
    buf.put_slice(properties);
    buf.put_u8(FRAME_END);
}

/// Appends the body frames for `body`, each at most `frame_max` octets long in total.
pub fn encode_body(buf: &mut BytesMut, channel: u16, body: &[u8], frame_max: u32) {
    let max_payload = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for chunk in body.chunks(max_payload) {
        put_frame_header(buf, FrameType::Body, channel, chunk.len() as u32);
        buf.put_slice(chunk);
        buf.put_u8(FRAME_END);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, channel: u16, payload: &[u8], end: u8) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u8(kind);
        b.put_u16(channel);
        b.put_u32(payload.len() as u32);
        b.put_slice(payload);
        b.put_u8(end);
        b
    }

    #[test]
    fn decodes_a_frame_and_leaves_the_rest() {
        let mut b = frame(3, 5, b"hello", FRAME_END);
        b.put_slice(&[8, 0]);
        let f = decode(&mut b, 4096).expect("valid").expect("complete");
        assert_eq!(f, Frame::Body { channel: 5, payload: Bytes::from_static(b"hello") });
        assert_eq!(&b[..], &[8, 0]);
        assert_eq!(decode(&mut b, 4096), Ok(None));
    }

    #[test]
    fn partial_frame_waits() {
        let full = frame(1, 1, b"abcdef", FRAME_END);
        for cut in 0..full.len() {
            let mut b = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut b, 4096), Ok(None), "cut at {cut}");
            assert_eq!(b.len(), cut);
        }
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let mut b = BytesMut::new();
        b.put_u8(1);
        b.put_u16(1);
        b.put_u32(u32::MAX);
        let err = decode(&mut b, 131072).expect_err("too large");
        assert_eq!(err.code, crate::ReplyCode::FrameError);
        assert!(b.capacity() < 1 << 20);
    }

    #[test]
    fn payload_of_frame_max_is_accepted_one_more_is_refused() {
        // As RabbitMQ: the payload may be as large as frame_max (the frame is then 8 octets
        // longer); one octet more is refused from the header.
        let mut b = frame(3, 1, &[7u8; 4096], FRAME_END);
        let f = decode(&mut b, 4096).expect("payload of frame_max").expect("complete");
        assert_eq!(f, Frame::Body { channel: 1, payload: Bytes::from(vec![7u8; 4096]) });
        assert!(b.is_empty());

        let mut b = BytesMut::new();
        put_frame_header(&mut b, FrameType::Body, 1, 4097);
        let err = decode(&mut b, 4096).expect_err("payload of frame_max + 1");
        assert_eq!(err.code, crate::ReplyCode::FrameError);
        assert_eq!(err.scope, crate::Scope::Connection);
        assert_eq!(err.text, "type 3, all octets = <<>>: {frame_too_large,4097,4088}");
    }

    #[test]
    fn frame_max_zero_is_no_limit() {
        let mut b = frame(3, 1, &[1u8; 200_000], FRAME_END);
        assert!(matches!(decode(&mut b, 0), Ok(Some(Frame::Body { .. }))));
    }

    #[test]
    fn bad_frame_end_and_type_are_frame_errors() {
        let mut b = frame(1, 1, b"x", 0);
        assert_eq!(decode(&mut b, 0).expect_err("end").code, crate::ReplyCode::FrameError);
        let mut b = frame(9, 1, b"x", FRAME_END);
        assert_eq!(decode(&mut b, 0).expect_err("type").code, crate::ReplyCode::FrameError);
    }

    #[test]
    fn body_is_split_by_frame_max() {
        let mut b = BytesMut::new();
        encode_body(&mut b, 1, &[7u8; 10_000], 4096);
        let mut sizes = Vec::new();
        while let Some(Frame::Body { payload, .. }) = decode(&mut b, 4096).expect("valid") {
            sizes.push(payload.len());
        }
        assert_eq!(sizes, vec![4088, 4088, 1824]);
    }

    #[test]
    fn method_with_patches_size() {
        let mut b = BytesMut::new();
        encode_method_with(&mut b, 2, 60, 80, |b| {
            b.put_u64(9);
            b.put_u8(1);
        });
        let f = decode(&mut b, 0).expect("valid").expect("complete");
        assert_eq!(
            f,
            Frame::Method { channel: 2, payload: Bytes::from_static(&[0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 9, 1]) }
        );
    }
}
