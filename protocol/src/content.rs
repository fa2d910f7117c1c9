//! Content assembly: a `basic.publish` method, then a content header, then body frames
//! until the announced size is reached (spec section 4.2.6).
//!
//! [`Assembler`] is a small pure state machine per channel. A body that arrives in one
//! frame of [`COPY_BELOW`] octets or more is kept as that frame's zero-copy `Bytes`; a body
//! in several frames is gathered once into a buffer sized from the header. Smaller bodies
//! and the properties are copied out together, inline or into one allocation (a
//! [`Payload`]): a zero-copy slice keeps the whole read buffer it came from alive (64 KiB or
//! more for a 1-octet message sitting in a queue), which the memory alarm, counting message
//! octets, would not see. Errors are precise: a frame of the wrong kind is 505
//! UNEXPECTED_FRAME, a body larger than announced is 501, a message over the size limit is
//! a channel-level 406 as in RabbitMQ.

use bytes::{Bytes, BytesMut};

/// Bodies below this size (a frame at the default frame_max) are copied out of the read
/// buffer rather than sliced from it.
pub const COPY_BELOW: usize = 128 * 1024;

/// Properties and body on allocations of their own (see the module header): a small body
/// and its properties are copied together, a large body stays a zero-copy slice of its
/// frame.
fn detach(properties: &Bytes, body: Bytes) -> Payload {
    if body.len() >= COPY_BELOW {
        return Payload::new(Bytes::copy_from_slice(properties), body);
    }
    Payload::copied(properties, &body)
}

/// A message's properties and body. Small copied ones are kept inline, in the message
/// itself (no allocation of their own); larger copied ones live in one buffer that is never
/// split: splitting a `Bytes` that owns its buffer allocates a shared header, so a message
/// would cost two allocations instead of one (usually freed on another thread).
#[derive(Debug, Clone)]
pub struct Payload(Parts);

/// The most octets of properties and body kept inline: as large as the two handles of
/// [`Parts::Apart`], so inlining makes no payload larger.
pub const INLINE: usize = 62;

#[derive(Debug, Clone)]
enum Parts {
    /// Properties, then the body from octet `at` on, `len` octets in all.
    Inline { len: u8, at: u8, octets: [u8; INLINE] },
    /// Properties, then the body from the offset on.
    Joined(Bytes, usize),
    /// Each on its own (a large body, or properties rewritten by the broker).
    Apart { properties: Bytes, body: Bytes },
}

impl Payload {
    /// Properties and body kept as they are (no copy).
    pub fn new(properties: Bytes, body: Bytes) -> Self {
        Payload(Parts::Apart { properties, body })
    }

    /// Properties and body copied: inline when they fit, else into one allocation of
    /// exactly their size.
    pub fn copied(properties: &[u8], body: &[u8]) -> Self {
        let total = properties.len() + body.len();
        if let (Ok(len), Ok(at)) = (u8::try_from(total), u8::try_from(properties.len())) {
            if total <= INLINE {
                let mut octets = [0u8; INLINE];
                octets[..properties.len()].copy_from_slice(properties);
                octets[properties.len()..total].copy_from_slice(body);
                return Payload(Parts::Inline { len, at, octets });
            }
        }
        let mut all = Vec::with_capacity(total);
        all.extend_from_slice(properties);
        all.extend_from_slice(body);
        // From a boxed slice, `Bytes` takes the allocation over without another.
        Payload(Parts::Joined(Bytes::from(all.into_boxed_slice()), properties.len()))
    }

    /// The property flags and values, exactly as the publisher sent them.
    pub fn properties(&self) -> &[u8] {
        match &self.0 {
            Parts::Inline { at, octets, .. } => &octets[..usize::from(*at)],
            Parts::Joined(all, at) => &all[..*at],
            Parts::Apart { properties, .. } => properties,
        }
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        match &self.0 {
            Parts::Inline { len, at, octets } => &octets[usize::from(*at)..usize::from(*len)],
            Parts::Joined(all, at) => &all[*at..],
            Parts::Apart { body, .. } => body,
        }
    }

    /// The properties as a shared handle (allocates for an inline payload and for the
    /// first handle of a joined one).
    pub fn properties_bytes(&self) -> Bytes {
        match &self.0 {
            Parts::Inline { .. } => Bytes::copy_from_slice(self.properties()),
            Parts::Joined(all, at) => all.slice(..*at),
            Parts::Apart { properties, .. } => properties.clone(),
        }
    }

    /// The body as a shared handle (allocates for an inline payload and for the first
    /// handle of a joined one).
    pub fn body_bytes(&self) -> Bytes {
        match &self.0 {
            Parts::Inline { .. } => Bytes::copy_from_slice(self.body()),
            Parts::Joined(all, at) => all.slice(*at..),
            Parts::Apart { body, .. } => body.clone(),
        }
    }

    /// The same body with other properties.
    pub fn with_properties(&self, properties: Bytes) -> Self {
        Payload::new(properties, self.body_bytes())
    }

    /// Octets of properties and body.
    pub fn len(&self) -> usize {
        self.properties().len() + self.body().len()
    }

    /// No properties and no body.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.properties() == other.properties() && self.body() == other.body()
    }
}

impl Eq for Payload {}

use crate::error::AmqpError;
use crate::properties::PropertiesView;

/// A finished message: the method that started it, its properties and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content<M> {
    /// The method that carried the content (basic.publish).
    pub method: M,
    /// The properties and the body.
    pub payload: Payload,
}

#[derive(Debug, Default)]
enum State<M> {
    #[default]
    Idle,
    AwaitingHeader(M),
    AwaitingBody { method: M, properties: Bytes, body: Body, remaining: u64 },
}

#[derive(Debug)]
enum Body {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

/// The content assembly state of one channel.
#[derive(Debug)]
pub struct Assembler<M> {
    state: State<M>,
}

impl<M> Default for Assembler<M> {
    fn default() -> Self {
        Assembler { state: State::Idle }
    }
}

impl<M> Assembler<M> {
    /// True when a method frame may arrive (no content is in progress).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Starts a message; the caller has checked [`Self::is_idle`].
    pub fn start(&mut self, method: M) {
        self.state = State::AwaitingHeader(method);
    }

    /// Drops any message in progress (on channel close).
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }

    /// Accepts a content header frame payload. Returns the message when its body is empty.
    pub fn header(&mut self, payload: Bytes, max_message_size: u64) -> Result<Option<Content<M>>, AmqpError> {
        let method = match std::mem::take(&mut self.state) {
            State::AwaitingHeader(method) => method,
            other => {
                self.state = other;
                return Err(AmqpError::unexpected_frame("content header frame without a method that carries content"));
            }
        };
        if payload.len() < 14 {
            return Err(AmqpError::frame_error("content header frame too short"));
        }
        let class_id = u16::from_be_bytes([payload[0], payload[1]]);
        if class_id != 60 {
            return Err(AmqpError::unexpected_frame(format!("content header for class {class_id}, expected basic (60)")));
        }
        let mut size_bytes = [0u8; 8];
        size_bytes.copy_from_slice(&payload[4..12]);
        let body_size = u64::from_be_bytes(size_bytes);
        let properties = payload.slice(12..);
        PropertiesView::parse(&properties)
            .map_err(|e| AmqpError::syntax_error(format!("invalid content header properties: {e}")).on_method(60, 40))?;
        if body_size > max_message_size {
            return Err(AmqpError::precondition_failed(format!(
                "message size {body_size} is larger than configured max size {max_message_size}"
            ))
            .on_method(60, 40));
        }
        if body_size == 0 {
            return Ok(Some(Content { method, payload: detach(&properties, Bytes::new()) }));
        }
        self.state = State::AwaitingBody { method, properties, body: Body::Empty, remaining: body_size };
        Ok(None)
    }

    /// Accepts a body frame payload. Returns the message when the body is complete.
    pub fn body(&mut self, payload: Bytes) -> Result<Option<Content<M>>, AmqpError> {
        let State::AwaitingBody { method, properties, body, remaining } = std::mem::take(&mut self.state) else {
            return Err(AmqpError::unexpected_frame("content body frame without a content header"));
        };
        let len = payload.len() as u64;
        if len > remaining {
            return Err(AmqpError::frame_error(format!("content body frame of {len} octets exceeds the {remaining} announced")));
        }
        let remaining = remaining - len;
        let body = match body {
            Body::Empty if remaining == 0 => Body::One(payload),
            Body::Empty => {
                // Capacity from the header, capped so a false claim costs little up front.
                let total = len + remaining;
                let mut buf = BytesMut::with_capacity(total.min(1 << 20) as usize);
                buf.extend_from_slice(&payload);
                Body::Many(buf)
            }
            Body::One(first) => {
                let mut buf = BytesMut::with_capacity(first.len() + payload.len());
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&payload);
                Body::Many(buf)
            }
            Body::Many(mut buf) => {
                buf.extend_from_slice(&payload);
                Body::Many(buf)
            }
        };
        if remaining > 0 {
            self.state = State::AwaitingBody { method, properties, body, remaining };
            return Ok(None);
        }
        let body = match body {
            Body::Empty => Bytes::new(),
            Body::One(b) => b,
            Body::Many(b) => b.freeze(),
        };
        Ok(Some(Content { method, payload: detach(&properties, body) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReplyCode;

    fn header(size: u64) -> Bytes {
        let mut h = vec![0, 60, 0, 0];
        h.extend_from_slice(&size.to_be_bytes());
        h.extend_from_slice(&[0x10, 0, 2]); // delivery-mode 2
        Bytes::from(h)
    }

    #[test]
    fn small_bodies_and_properties_do_not_pin_the_read_buffer() {
        let read = Bytes::from(vec![9u8; 2 * COPY_BELOW]);
        let inside = |b: &[u8]| {
            let (start, end) = (read.as_ptr() as usize, read.as_ptr() as usize + read.len());
            (start..end).contains(&(b.as_ptr() as usize))
        };
        let mut a: Assembler<u8> = Assembler::default();
        a.start(1);
        assert!(a.header(header(1), 1 << 20).expect("header").is_none());
        let c = a.body(read.slice(100..101)).expect("body").expect("complete");
        assert!(!inside(c.payload.body()), "a 1-octet body is copied out");
        let mut a: Assembler<u8> = Assembler::default();
        a.start(1);
        assert!(a.header(header(COPY_BELOW as u64), 1 << 20).expect("header").is_none());
        let c = a.body(read.slice(0..COPY_BELOW)).expect("body").expect("complete");
        assert!(inside(c.payload.body()), "a large body stays zero-copy");
    }

    #[test]
    fn payloads_read_back_whatever_their_layout() {
        let long = vec![7u8; 300];
        for (props, body) in [(&b""[..], &b""[..]), (&[0x10, 0, 2][..], &b"hello"[..]), (&[1u8; 2][..], &[2u8; INLINE - 2][..]), (&[1u8; 2][..], &[2u8; INLINE - 1][..]), (&[0x10, 0, 2][..], &long[..])] {
            let copied = Payload::copied(props, body);
            let apart = Payload::new(Bytes::copy_from_slice(props), Bytes::copy_from_slice(body));
            assert_eq!((copied.properties(), copied.body()), (props, body));
            assert_eq!((&copied.properties_bytes()[..], &copied.body_bytes()[..]), (props, body));
            assert_eq!(copied, apart);
            assert_eq!(copied.len(), props.len() + body.len());
        }
        assert!(std::mem::size_of::<Payload>() <= 72, "inline payloads make no payload larger");
    }

    #[test]
    fn assembles_one_and_many_frames() {
        let mut a = Assembler::default();
        a.start(1u8);
        assert_eq!(a.header(header(5), 100), Ok(None));
        let c = a.body(Bytes::from_static(b"hello")).expect("ok").expect("done");
        assert_eq!((c.method, c.payload.body(), c.payload.properties()), (1, &b"hello"[..], &[0x10, 0, 2][..]));
        assert!(a.is_idle());

        a.start(2u8);
        assert_eq!(a.header(header(6), 100), Ok(None));
        assert_eq!(a.body(Bytes::from_static(b"ab")), Ok(None));
        assert_eq!(a.body(Bytes::from_static(b"cd")), Ok(None));
        let c = a.body(Bytes::from_static(b"ef")).expect("ok").expect("done");
        assert_eq!(c.payload.body(), b"abcdef");
    }

    #[test]
    fn empty_body_completes_at_header() {
        let mut a = Assembler::default();
        a.start(());
        let c = a.header(header(0), 100).expect("ok").expect("done");
        assert!(c.payload.body().is_empty());
    }

    #[test]
    fn errors() {
        let mut a: Assembler<()> = Assembler::default();
        assert_eq!(a.header(header(1), 10).expect_err("no method").code, ReplyCode::UnexpectedFrame);
        assert_eq!(a.body(Bytes::from_static(b"x")).expect_err("no header").code, ReplyCode::UnexpectedFrame);
        a.start(());
        let e = a.header(header(11), 10).expect_err("too big");
        assert_eq!((e.code, e.scope), (ReplyCode::PreconditionFailed, crate::Scope::Channel));
        a.start(());
        assert_eq!(a.header(header(2), 10), Ok(None));
        assert_eq!(a.body(Bytes::from_static(b"xyz")).expect_err("overflow").code, ReplyCode::FrameError);
    }
}
