//! An allocation-free view of the basic properties in a content header.
//!
//! The broker forwards a publisher's property octets to consumers unchanged, so headers
//! arrive byte-identical and nothing is re-encoded per delivery. It only needs a few fields
//! for itself (delivery mode, priority, expiration, user-id, the headers table for the
//! headers exchange); [`PropertiesView::parse`] finds them and validates the rest.

use crate::table::{skip_table, TableError};
use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{gen_properties, parse_properties, AMQPProperties};
use amq_protocol::types::{parsing::parse_field_table, FieldTable};

const CONTENT_TYPE: u16 = 1 << 15;
const CONTENT_ENCODING: u16 = 1 << 14;
const HEADERS: u16 = 1 << 13;
const DELIVERY_MODE: u16 = 1 << 12;
const PRIORITY: u16 = 1 << 11;
const CORRELATION_ID: u16 = 1 << 10;
const REPLY_TO: u16 = 1 << 9;
const EXPIRATION: u16 = 1 << 8;
const MESSAGE_ID: u16 = 1 << 7;
const TIMESTAMP: u16 = 1 << 6;
const TYPE: u16 = 1 << 5;
const USER_ID: u16 = 1 << 4;
const APP_ID: u16 = 1 << 3;
const CLUSTER_ID: u16 = 1 << 2;

/// The fields of a content header's properties that the broker acts on, borrowed from the
/// raw property octets (flags included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PropertiesView<'a> {
    /// delivery-mode: 2 means persistent.
    pub delivery_mode: Option<u8>,
    /// priority, 0-9 by the spec.
    pub priority: Option<u8>,
    /// The raw headers table, its length prefix included.
    pub headers: Option<&'a [u8]>,
    /// expiration, a per-message TTL in milliseconds as text.
    pub expiration: Option<&'a [u8]>,
    /// user-id, which RabbitMQ checks against the connection's user.
    pub user_id: Option<&'a [u8]>,
    /// reply-to, used by direct reply-to and RPC.
    pub reply_to: Option<&'a [u8]>,
}

impl<'a> PropertiesView<'a> {
    /// Parses property flags and values; every present value is bounds-checked and the
    /// headers table depth-checked.
    pub fn parse(raw: &'a [u8]) -> Result<Self, TableError> {
        let flags_bytes = raw.get(..2).ok_or(TableError::Truncated)?;
        let flags = u16::from_be_bytes([flags_bytes[0], flags_bytes[1]]);
        // Basic has 14 properties, so bits 1 and 0 flag none. Bit 0 is the spec's "another
        // flags word follows", but RabbitMQ (`decode_properties` matches the two low bits as
        // `_:2`), amq-protocol and the client libraries ignore both and read the values
        // right after this word. The view must read the octets they read: skipping words
        // here once let the broker check one user-id, priority or headers table (the one it
        // depth-guarded) while `decode` and consumers read another, unguarded one.
        let mut pos = 2;
        let mut view = PropertiesView::default();
        let short_str = |pos: &mut usize| -> Result<&'a [u8], TableError> {
            let len = *raw.get(*pos).ok_or(TableError::Truncated)? as usize;
            let s = raw.get(*pos + 1..*pos + 1 + len).ok_or(TableError::Truncated)?;
            *pos += 1 + len;
            Ok(s)
        };
        if flags & CONTENT_TYPE != 0 {
            short_str(&mut pos)?;
        }
        if flags & CONTENT_ENCODING != 0 {
            short_str(&mut pos)?;
        }
        if flags & HEADERS != 0 {
            let rest = raw.get(pos..).ok_or(TableError::Truncated)?;
            let len = skip_table(rest)?;
            view.headers = Some(&rest[..len]);
            pos += len;
        }
        if flags & DELIVERY_MODE != 0 {
            view.delivery_mode = Some(*raw.get(pos).ok_or(TableError::Truncated)?);
            pos += 1;
        }
        if flags & PRIORITY != 0 {
            view.priority = Some(*raw.get(pos).ok_or(TableError::Truncated)?);
            pos += 1;
        }
        if flags & CORRELATION_ID != 0 {
            short_str(&mut pos)?;
        }
        if flags & REPLY_TO != 0 {
            view.reply_to = Some(short_str(&mut pos)?);
        }
        if flags & EXPIRATION != 0 {
            view.expiration = Some(short_str(&mut pos)?);
        }
        if flags & MESSAGE_ID != 0 {
            short_str(&mut pos)?;
        }
        if flags & TIMESTAMP != 0 {
            raw.get(pos..pos + 8).ok_or(TableError::Truncated)?;
            pos += 8;
        }
        if flags & TYPE != 0 {
            short_str(&mut pos)?;
        }
        if flags & USER_ID != 0 {
            view.user_id = Some(short_str(&mut pos)?);
        }
        if flags & APP_ID != 0 {
            short_str(&mut pos)?;
        }
        if flags & CLUSTER_ID != 0 {
            short_str(&mut pos)?;
        }
        Ok(view)
    }

    /// True for delivery-mode 2.
    pub fn persistent(&self) -> bool {
        self.delivery_mode == Some(2)
    }

    /// Decodes the headers table (already depth-checked by [`Self::parse`]).
    pub fn headers_table(&self) -> Option<FieldTable> {
        let raw = self.headers?;
        parse_field_table(raw).ok().map(|(_, t)| t)
    }
}

/// Decodes every property, for the rare paths that rewrite them (dead-lettering, a quorum
/// queue's delivery count). `raw` must have passed [`PropertiesView::parse`], which bounds
/// the nesting of its headers before amq-protocol's recursive parser sees them.
pub fn decode(raw: &[u8]) -> Option<AMQPProperties> {
    PropertiesView::parse(raw).ok()?;
    parse_properties(raw).ok().map(|(_, p)| p)
}

/// Encodes properties (flags and values) as a content header carries them.
pub fn encode(p: &AMQPProperties) -> Vec<u8> {
    gen_properties(p)(WriteContext::from(Vec::new())).map(|c| c.write).unwrap_or_else(|_| vec![0, 0])
}

/// RabbitMQ's bound on a per-message TTL, in milliseconds (ten years).
pub const MAX_EXPIRATION: u64 = 315_360_000_000;

/// A per-message TTL (`expiration`) in milliseconds, parsed as RabbitMQ parses it (Erlang's
/// `string:to_integer` on the whole value). The error is RabbitMQ's reason, as its
/// 406 text prints it: `no_integer`, `{leftover_string,"…"}`, `{value_negative,N}`,
/// `{value_too_large,N}`.
pub fn parse_expiration(raw: &[u8]) -> Result<u64, String> {
    let (negative, digits_from) = match raw.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    let digits = raw[digits_from..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Err("no_integer".to_owned());
    }
    let end = digits_from + digits;
    if end < raw.len() {
        return Err(format!("{{leftover_string,\"{}\"}}", String::from_utf8_lossy(&raw[end..])));
    }
    // Digits only from here; a value too long for u64 is too large anyway.
    let text = std::str::from_utf8(&raw[digits_from..end]).unwrap_or("0");
    let value: u128 = text.parse().unwrap_or(u128::MAX);
    if negative && value != 0 {
        return Err(format!("{{value_negative,-{text}}}"));
    }
    match u64::try_from(value) {
        Ok(v) if v <= MAX_EXPIRATION => Ok(v),
        _ => Err(format!("{{value_too_large,{text}}}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::WriteContext;
    use amq_protocol::protocol::basic::{gen_properties, AMQPProperties};
    use amq_protocol::types::{AMQPValue, LongString};

    fn encode(p: &AMQPProperties) -> Vec<u8> {
        gen_properties(p)(WriteContext::from(Vec::new())).expect("encodes").write
    }

    #[test]
    fn finds_the_fields_among_all_fourteen() {
        let mut headers = FieldTable::default();
        headers.insert("k".into(), AMQPValue::LongString(LongString::from("v")));
        let p = AMQPProperties::default()
            .with_content_type("text/plain".into())
            .with_content_encoding("gzip".into())
            .with_headers(headers.clone())
            .with_delivery_mode(2)
            .with_priority(7)
            .with_correlation_id("c".into())
            .with_reply_to("r".into())
            .with_expiration("60000".into())
            .with_message_id("m".into())
            .with_timestamp(1234)
            .with_type("t".into())
            .with_user_id("guest".into())
            .with_app_id("a".into())
            .with_cluster_id("cl".into());
        let raw = encode(&p);
        let v = PropertiesView::parse(&raw).expect("valid");
        assert!(v.persistent());
        assert_eq!(v.priority, Some(7));
        assert_eq!(v.expiration, Some(&b"60000"[..]));
        assert_eq!(v.user_id, Some(&b"guest"[..]));
        assert_eq!(v.reply_to, Some(&b"r"[..]));
        assert_eq!(v.headers_table(), Some(headers));
        for cut in 2..raw.len() {
            assert!(PropertiesView::parse(&raw[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn expiration_is_parsed_like_rabbitmq() {
        assert_eq!(parse_expiration(b"60000"), Ok(60000));
        assert_eq!(parse_expiration(b"+5"), Ok(5));
        assert_eq!(parse_expiration(b"0"), Ok(0));
        assert_eq!(parse_expiration(b"abc").unwrap_err(), "no_integer");
        assert_eq!(parse_expiration(b"").unwrap_err(), "no_integer");
        assert_eq!(parse_expiration(b"10abc").unwrap_err(), "{leftover_string,\"abc\"}");
        assert_eq!(parse_expiration(b"1.5").unwrap_err(), "{leftover_string,\".5\"}");
        assert_eq!(parse_expiration(b"-1").unwrap_err(), "{value_negative,-1}");
        assert_eq!(parse_expiration(b"315360000001").unwrap_err(), "{value_too_large,315360000001}");
        assert_eq!(parse_expiration(b"99999999999999999999999").unwrap_err(), "{value_too_large,99999999999999999999999}");
    }

    #[test]
    fn empty_properties() {
        let v = PropertiesView::parse(&[0, 0]).expect("valid");
        assert_eq!(v, PropertiesView::default());
        assert!(PropertiesView::parse(&[]).is_err());
    }

    #[test]
    fn low_flag_bits_are_ignored_as_rabbitmq_does() {
        // Found by the `properties` fuzz target (fuzz/regressions/properties/): delivery-mode
        // and the continuation bit, then octets that are the delivery-mode to amq-protocol
        // and RabbitMQ. The view used to skip a "continuation word" and read 97.
        let raw = [0x10, 0x01, 0x01, b'b', b'a', b'c', 3, b'u'];
        let view = PropertiesView::parse(&raw).expect("valid");
        assert_eq!(view.delivery_mode, Some(1));
        assert_eq!(decode(&raw).map(|p| *p.delivery_mode()), Some(Some(1)));
        // Bit 1 flags nothing either.
        assert_eq!(PropertiesView::parse(&[0x08, 0x03, 9]).expect("valid").priority, Some(9));
    }

    #[test]
    fn decode_never_parses_headers_the_view_did_not_check() {
        // With the continuation bit set the view used to depth-check a shallow table four
        // octets further on, while amq-protocol parsed from right after the flags: a table
        // whose 'T' and 'x' entries, read two octets apart, hid 9,000 nested tables in a
        // byte array overflowed the stack in `decode` (dead-lettering, quorum returns).
        // 65,632 octets: a content header that fits the default frame_max.
        let mut nested: Vec<u8> = vec![0, 0, 0, 0];
        for _ in 1..9000 {
            let mut t = ((3 + nested.len()) as u32).to_be_bytes().to_vec();
            t.extend_from_slice(&[1, b'a', b'F']);
            t.extend_from_slice(&nested);
            nested = t;
        }
        let view_table_len: u32 = 0x0001_0054; // its last octet is 'T' to amq-protocol
        let array_len = view_table_len as usize - 6;
        let mut hidden = vec![0, 0, 1, b'a', b'F'];
        hidden.extend_from_slice(&nested);
        hidden.resize(array_len, 0);
        // headers + continuation, two "continuation words", then what the view took for the
        // headers: one entry with an empty key holding the byte array.
        let mut raw = vec![0x20, 0x01, 0x00, 0x01, 0x00, 0x01, 0x04, b'b'];
        raw.extend_from_slice(&view_table_len.to_be_bytes());
        raw.extend_from_slice(&[0, b'x']);
        raw.extend_from_slice(&(array_len as u32).to_be_bytes());
        raw.extend_from_slice(&hidden);
        assert_eq!(PropertiesView::parse(&raw), Err(TableError::TooDeep));
        assert!(decode(&raw).is_none());
    }
}
