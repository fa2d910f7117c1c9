//! Method payload decoding and the names of AMQP methods.
//!
//! [`decode`] peeks the class and method ids first, so every error names the method (the
//! close frame carries them), refuses methods a server never receives, depth-checks the one
//! field table a client method may carry, and only then hands the payload to amq-protocol;
//! it also refuses a basic.qos prefetch-size, a field amq-protocol does not keep.

use crate::error::AmqpError;
use crate::table::{skip_table, TableError};
use amq_protocol::protocol::{basic, parse_class, AMQPClass};

/// The spec's dotted name of a method, e.g. `queue.declare`.
pub fn name(class_id: u16, method_id: u16) -> &'static str {
    match (class_id, method_id) {
        (10, 10) => "connection.start",
        (10, 11) => "connection.start-ok",
        (10, 20) => "connection.secure",
        (10, 21) => "connection.secure-ok",
        (10, 30) => "connection.tune",
        (10, 31) => "connection.tune-ok",
        (10, 40) => "connection.open",
        (10, 41) => "connection.open-ok",
        (10, 50) => "connection.close",
        (10, 51) => "connection.close-ok",
        (10, 60) => "connection.blocked",
        (10, 61) => "connection.unblocked",
        (10, 70) => "connection.update-secret",
        (10, 71) => "connection.update-secret-ok",
        (20, 10) => "channel.open",
        (20, 11) => "channel.open-ok",
        (20, 20) => "channel.flow",
        (20, 21) => "channel.flow-ok",
        (20, 40) => "channel.close",
        (20, 41) => "channel.close-ok",
        (30, 10) => "access.request",
        (30, 11) => "access.request-ok",
        (40, 10) => "exchange.declare",
        (40, 11) => "exchange.declare-ok",
        (40, 20) => "exchange.delete",
        (40, 21) => "exchange.delete-ok",
        (40, 30) => "exchange.bind",
        (40, 31) => "exchange.bind-ok",
        (40, 40) => "exchange.unbind",
        (40, 51) => "exchange.unbind-ok",
        (50, 10) => "queue.declare",
        (50, 11) => "queue.declare-ok",
        (50, 20) => "queue.bind",
        (50, 21) => "queue.bind-ok",
        (50, 30) => "queue.purge",
        (50, 31) => "queue.purge-ok",
        (50, 40) => "queue.delete",
        (50, 41) => "queue.delete-ok",
        (50, 50) => "queue.unbind",
        (50, 51) => "queue.unbind-ok",
        (60, 10) => "basic.qos",
        (60, 11) => "basic.qos-ok",
        (60, 20) => "basic.consume",
        (60, 21) => "basic.consume-ok",
        (60, 30) => "basic.cancel",
        (60, 31) => "basic.cancel-ok",
        (60, 40) => "basic.publish",
        (60, 50) => "basic.return",
        (60, 60) => "basic.deliver",
        (60, 70) => "basic.get",
        (60, 71) => "basic.get-ok",
        (60, 72) => "basic.get-empty",
        (60, 80) => "basic.ack",
        (60, 90) => "basic.reject",
        (60, 100) => "basic.recover-async",
        (60, 110) => "basic.recover",
        (60, 111) => "basic.recover-ok",
        (60, 120) => "basic.nack",
        (85, 10) => "confirm.select",
        (85, 11) => "confirm.select-ok",
        (90, 10) => "tx.select",
        (90, 11) => "tx.select-ok",
        (90, 20) => "tx.commit",
        (90, 21) => "tx.commit-ok",
        (90, 30) => "tx.rollback",
        (90, 31) => "tx.rollback-ok",
        _ => "unknown",
    }
}

/// The argument layout before the field table of the client methods that carry one.
#[derive(Clone, Copy)]
enum Field {
    Short,
    ShortStr,
    Octet,
}

fn table_position(class_id: u16, method_id: u16) -> Option<&'static [Field]> {
    use Field::*;
    Some(match (class_id, method_id) {
        (10, 11) => &[],
        (40, 10) => &[Short, ShortStr, ShortStr, Octet],
        (40, 30) | (40, 40) => &[Short, ShortStr, ShortStr, ShortStr, Octet],
        (50, 10) => &[Short, ShortStr, Octet],
        (50, 20) => &[Short, ShortStr, ShortStr, ShortStr, Octet],
        (50, 50) => &[Short, ShortStr, ShortStr, ShortStr],
        (60, 20) => &[Short, ShortStr, ShortStr, Octet],
        _ => return None,
    })
}

/// True for the methods a client may send to a server.
fn is_client_method(class_id: u16, method_id: u16) -> bool {
    matches!(
        (class_id, method_id),
        (10, 11 | 21 | 31 | 40 | 50 | 51 | 70)
            | (20, 10 | 20 | 21 | 40 | 41)
            | (30, 10)
            | (40, 10 | 20 | 30 | 40)
            | (50, 10 | 20 | 30 | 40 | 50)
            | (60, 10 | 20 | 30 | 40 | 70 | 80 | 90 | 100 | 110 | 120)
            | (85, 10)
            | (90, 10 | 20 | 30)
    )
}

/// Reads the class and method ids at the start of a method payload.
pub fn ids(payload: &[u8]) -> Result<(u16, u16), AmqpError> {
    match payload {
        [c0, c1, m0, m1, ..] => Ok((u16::from_be_bytes([*c0, *c1]), u16::from_be_bytes([*m0, *m1]))),
        _ => Err(AmqpError::frame_error("method frame shorter than its class and method ids")),
    }
}

/// Decodes a method the broker itself encoded (any class, server methods included), for
/// the protocol trace. Not for client input: it has none of [`decode`]'s guards.
pub fn decode_own(payload: &[u8]) -> Option<AMQPClass> {
    parse_class(payload).ok().map(|(_, m)| m)
}

/// Decodes a method a client sent.
///
/// Errors: 501 for a payload too short to hold ids; 540 for a class or method a server does
/// not receive; 502 for arguments that do not decode (truncated, invalid UTF-8 in a short
/// string, a field table nested too deep or of unknown value types); 540 for a basic.qos
/// with a prefetch-size. All are connection errors naming the method.
pub fn decode(payload: &[u8]) -> Result<AMQPClass, AmqpError> {
    let (class_id, method_id) = ids(payload)?;
    if !is_client_method(class_id, method_id) {
        return Err(AmqpError::not_implemented(format!(
            "unknown or server-only method {class_id}/{method_id} ({})",
            name(class_id, method_id)
        ))
        .on_method(class_id, method_id));
    }
    let syntax = |text: String| AmqpError::syntax_error(text).on_method(class_id, method_id);
    if let Some(layout) = table_position(class_id, method_id) {
        let args = &payload[4..];
        let mut pos = 0usize;
        for field in layout {
            pos += match field {
                Field::Short => 2,
                Field::Octet => 1,
                Field::ShortStr => 1 + *args.get(pos).unwrap_or(&0) as usize,
            };
        }
        let table = args.get(pos..).ok_or_else(|| {
            syntax(format!("{} arguments truncated", name(class_id, method_id)))
        })?;
        skip_table(table).map_err(|e: TableError| {
            syntax(format!("{} field table refused: {e}", name(class_id, method_id)))
        })?;
    }
    if (class_id, method_id) == (60, 40) {
        // The per-message method: decoded here, since the generic parser allocates for
        // every bit flag.
        return decode_publish(&payload[4..])
            .map(|p| AMQPClass::Basic(basic::AMQPMethod::Publish(p)))
            .ok_or_else(|| syntax("cannot decode basic.publish arguments (truncated or invalid UTF-8)".to_owned()));
    }
    let method = match parse_class(payload) {
        Ok((_, method)) => method,
        Err(_) => {
            return Err(syntax(format!(
                "cannot decode {} arguments (truncated, invalid UTF-8 or bad field value)",
                name(class_id, method_id)
            )))
        }
    };
    if let AMQPClass::Basic(basic::AMQPMethod::Qos(_)) = method {
        check_prefetch_size(&payload[4..])?;
    }
    Ok(method)
}

/// basic.qos with a prefetch-size limit is 540, as in RabbitMQ (rabbit_channel), which has
/// no limit in octets. Checked here because amq-protocol drops the field when parsing.
fn check_prefetch_size(args: &[u8]) -> Result<(), AmqpError> {
    let size = args.first_chunk::<4>().map_or(0, |b| u32::from_be_bytes(*b));
    if size != 0 {
        return Err(AmqpError::not_implemented(format!("prefetch_size!=0 ({size})")).on_method(60, 10));
    }
    Ok(())
}

/// basic.publish arguments: reserved short, exchange, routing key, mandatory and immediate
/// bits.
fn decode_publish(args: &[u8]) -> Option<basic::Publish> {
    let (_reserved, rest) = args.split_at_checked(2)?;
    let (exchange, rest) = short_str(rest)?;
    let (routing_key, rest) = short_str(rest)?;
    let bits = *rest.first()?;
    Some(basic::Publish { exchange: exchange.into(), routing_key: routing_key.into(), mandatory: bits & 1 != 0, immediate: bits & 2 != 0 })
}

/// A short string and what follows it.
fn short_str(b: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = b.split_first()?;
    let (s, rest) = rest.split_at_checked(usize::from(len))?;
    Some((std::str::from_utf8(s).ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReplyCode;
    use amq_protocol::frame::WriteContext;
    use amq_protocol::protocol::{gen_class, queue};

    fn encode(m: &AMQPClass) -> Vec<u8> {
        gen_class(m)(WriteContext::from(Vec::new())).expect("encodes").write
    }

    #[test]
    fn publish_decodes_as_the_generic_parser_does() {
        for (exchange, key, mandatory, immediate) in [("", "q", false, false), ("amq.topic", "a.b.c", true, false), ("x", "", false, true), ("é", "ü", true, true)] {
            let m = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: exchange.into(),
                routing_key: key.into(),
                mandatory,
                immediate,
            }));
            let bytes = encode(&m);
            assert_eq!(decode(&bytes), Ok(m.clone()));
            assert_eq!(parse_class(&bytes[..]).map(|(_, m)| m).ok(), Some(m));
            for cut in 4..bytes.len() {
                let e = decode(&bytes[..cut]).expect_err("truncated publish");
                assert_eq!((e.code, e.class_id, e.method_id), (ReplyCode::SyntaxError, 60, 40));
            }
        }
        let bad_utf8 = [0, 60, 0, 40, 0, 0, 1, 0xff, 0, 0];
        assert_eq!(decode(&bad_utf8).expect_err("invalid UTF-8").code, ReplyCode::SyntaxError);
    }

    #[test]
    fn round_trips_a_declare() {
        let m = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "q".into(),
            durable: true,
            ..Default::default()
        }));
        assert_eq!(decode(&encode(&m)), Ok(m));
    }

    #[test]
    fn unknown_method_names_itself() {
        let e = decode(&[0, 60, 0, 99]).expect_err("unknown");
        assert_eq!((e.code, e.class_id, e.method_id), (ReplyCode::NotImplemented, 60, 99));
        let e = decode(&[0, 60, 0, 60]).expect_err("server-only");
        assert_eq!(e.code, ReplyCode::NotImplemented);
    }

    #[test]
    fn qos_with_a_prefetch_size_is_not_implemented() {
        // prefetch-size, prefetch-count, global.
        let ok = [0, 60, 0, 10, 0, 0, 0, 0, 0, 10, 0];
        assert_eq!(decode(&ok), Ok(AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos { prefetch_count: 10, global: false }))));
        let e = decode(&[0, 60, 0, 10, 0, 0, 4, 0, 0, 10, 0]).expect_err("prefetch_size 1024");
        assert_eq!((e.code, e.scope, e.class_id, e.method_id), (ReplyCode::NotImplemented, crate::Scope::Connection, 60, 10));
        assert_eq!(e.reply_text(), "NOT_IMPLEMENTED - prefetch_size!=0 (1024)");
        // A truncated qos is still a syntax error first.
        assert_eq!(decode(&[0, 60, 0, 10, 0, 0, 4]).expect_err("truncated").code, ReplyCode::SyntaxError);
    }

    #[test]
    fn update_secret_is_a_client_method_and_its_ok_is_not() {
        use amq_protocol::protocol::connection;
        let m = AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(connection::UpdateSecret {
            new_secret: "token".into(),
            reason: "refresh".into(),
        }));
        assert_eq!(decode(&encode(&m)), Ok(m));
        let e = decode(&[0, 10, 0, 71]).expect_err("server-only");
        assert_eq!((e.code, e.class_id, e.method_id), (ReplyCode::NotImplemented, 10, 71));
    }

    #[test]
    fn truncated_and_invalid_utf8_are_syntax_errors() {
        let e = decode(&[0, 50, 0, 10, 0, 0, 5, b'a']).expect_err("truncated");
        assert_eq!((e.code, e.class_id, e.method_id), (ReplyCode::SyntaxError, 50, 10));
        // queue.declare with queue name 0xff 0xfe
        let e = decode(&[0, 50, 0, 10, 0, 0, 2, 0xff, 0xfe, 0, 0, 0, 0, 0]).expect_err("utf8");
        assert_eq!(e.code, ReplyCode::SyntaxError);
        assert!(decode(&[0, 50]).is_err());
    }

    #[test]
    fn deeply_nested_arguments_are_refused_without_recursion() {
        // basic.consume with arguments nested 10,000 levels deep.
        let mut inner: Vec<u8> = vec![0, 0, 0, 0];
        for _ in 0..10_000 {
            let mut t = ((3 + inner.len()) as u32).to_be_bytes().to_vec();
            t.extend_from_slice(&[1, b'a', b'F']);
            t.extend_from_slice(&inner);
            inner = t;
        }
        let mut payload = vec![0, 60, 0, 20, 0, 0, 1, b'q', 0, 0];
        payload.extend_from_slice(&inner);
        let e = decode(&payload).expect_err("too deep");
        assert_eq!((e.code, e.class_id, e.method_id), (ReplyCode::SyntaxError, 60, 20));
    }
}
