//! The protocol trace of one connection: every frame both ways, decoded (method name and
//! fields, content properties, body size and a prefix) and timestamped, as JSON lines.
//! Kept in a bounded ring (the oldest lines go first) and sent to live followers (who
//! miss lines when they fall behind rather than grow a buffer). Off by default, and free
//! when off: the reader and the writer check one `Option` per frame or batch.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::BytesMut;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use warren_protocol::frame::{self, Frame};
use warren_protocol::method;

/// Lines kept for readers who come later.
const KEPT_LINES: usize = 10_000;

/// Octets of a body shown.
const BODY_PREFIX: usize = 64;

/// Characters of a method's fields or a header's properties kept (a field table can be
/// nearly a frame long; the ring holds at most this times [`KEPT_LINES`]).
const FIELDS_KEPT: usize = 2048;

/// Lines a live follower may be behind before it misses some.
const FOLLOW_BACKLOG: usize = 1024;

/// Which way a frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client.
    In,
    /// To the client.
    Out,
}

/// One connection's trace.
#[derive(Debug)]
pub struct Trace {
    kept: Mutex<VecDeque<String>>,
    live: broadcast::Sender<String>,
}

impl Default for Trace {
    fn default() -> Self {
        Trace { kept: Mutex::new(VecDeque::new()), live: broadcast::channel(FOLLOW_BACKLOG).0 }
    }
}

impl Trace {
    /// Records one frame.
    pub fn frame(&self, dir: Direction, frame: &Frame) {
        let line = describe(dir, frame).to_string();
        let _ = self.live.send(line.clone());
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == KEPT_LINES {
            kept.pop_front();
        }
        kept.push_back(line);
    }

    /// Records every frame of an encoded batch (what the writer sends).
    pub fn batch(&self, dir: Direction, encoded: &[u8]) {
        let mut buf = BytesMut::from(encoded);
        while let Ok(Some(f)) = frame::decode(&mut buf, 0) {
            self.frame(dir, &f);
        }
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// Lines from now on.
    pub fn follow(&self) -> broadcast::Receiver<String> {
        self.live.subscribe()
    }
}

fn describe(dir: Direction, frame: &Frame) -> Value {
    let ts = crate::broker::message::now_ms();
    let dir = match dir {
        Direction::In => "in",
        Direction::Out => "out",
    };
    match frame {
        Frame::Method { channel, payload } => {
            let (name, fields) = match method::ids(payload) {
                // What a client sent goes through the guarded decoder; the broker's own
                // frames through the plain one.
                Ok((c, m)) if dir == "in" => (method::name(c, m), method::decode(payload).map_or_else(|e| format!("undecodable: {e}"), |m| format!("{m:?}"))),
                Ok((c, m)) => (method::name(c, m), method::decode_own(payload).map_or_else(|| "undecodable".to_owned(), |m| format!("{m:?}"))),
                Err(e) => ("?", format!("undecodable: {e}")),
            };
            json!({"ts": ts, "dir": dir, "channel": channel, "type": "method", "method": name, "fields": shorten(fields)})
        }
        Frame::Header { channel, payload } => {
            // class (2), weight (2), body size (8), then the properties.
            let size = payload.get(4..12).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes);
            let properties = payload.get(12..).and_then(warren_protocol::properties::decode).map(|p| shorten(format!("{p:?}")));
            json!({"ts": ts, "dir": dir, "channel": channel, "type": "header", "body_size": size, "properties": properties})
        }
        Frame::Body { channel, payload } => {
            let prefix = &payload[..payload.len().min(BODY_PREFIX)];
            json!({"ts": ts, "dir": dir, "channel": channel, "type": "body", "size": payload.len(), "prefix": String::from_utf8_lossy(prefix)})
        }
        Frame::Heartbeat { channel } => json!({"ts": ts, "dir": dir, "channel": channel, "type": "heartbeat"}),
    }
}

/// `text` cut to [`FIELDS_KEPT`] characters, marked when cut.
fn shorten(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(FIELDS_KEPT) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_protocol::spec::channel;
    use warren_protocol::AMQPClass;

    #[test]
    fn frames_are_described_both_ways_and_the_ring_is_bounded() {
        let t = Trace::default();
        let mut out = BytesMut::new();
        frame::encode_method(&mut out, 1, &AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})));
        frame::encode_heartbeat(&mut out);
        t.batch(Direction::Out, &out);
        let lines = t.lines();
        assert_eq!(lines.len(), 2);
        let first: Value = serde_json::from_str(&lines[0]).expect("json");
        assert_eq!((first["dir"].as_str(), first["method"].as_str(), first["channel"].as_u64()), (Some("out"), Some("channel.open-ok"), Some(1)));
        assert!(first["fields"].as_str().is_some_and(|f| f.contains("OpenOk")), "{first}");
        for _ in 0..KEPT_LINES {
            t.frame(Direction::In, &Frame::Heartbeat { channel: 0 });
        }
        assert_eq!(t.lines().len(), KEPT_LINES);
        assert_eq!(shorten("x".repeat(FIELDS_KEPT + 10)).chars().count(), FIELDS_KEPT + 1);
        assert_eq!(shorten("short".to_owned()), "short");
    }
}
