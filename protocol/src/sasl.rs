//! SASL responses of `connection.start-ok`: PLAIN (`\0user\0password`, RFC 4616) and
//! RabbitMQ's AMQPLAIN (a field table without its length prefix holding LOGIN and PASSWORD).
//! EXTERNAL (RFC 4422 appendix A) has no response to parse: the server takes the identity
//! from the transport, a TLS client certificate.

use crate::table::skip_table;
use amq_protocol::types::{parsing::parse_field_table, AMQPValue};

/// The mechanisms the broker offers in `connection.start` on a connection without a
/// verified client certificate.
pub const MECHANISMS: &str = "PLAIN AMQPLAIN";

/// The name of the EXTERNAL mechanism.
pub const EXTERNAL: &str = "EXTERNAL";

/// The mechanisms to offer: EXTERNAL too when the client presented a verified certificate.
pub fn mechanisms(external: bool) -> &'static str {
    if external {
        "PLAIN AMQPLAIN EXTERNAL"
    } else {
        MECHANISMS
    }
}

/// A username and password taken from a SASL response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user to authenticate as.
    pub username: String,
    /// The password.
    pub password: String,
}

/// Parses a SASL response for `mechanism`; `None` if the mechanism is unknown or the
/// response malformed.
pub fn parse(mechanism: &str, response: &[u8]) -> Option<Credentials> {
    match mechanism {
        "PLAIN" => plain(response),
        "AMQPLAIN" => amqplain(response),
        _ => None,
    }
}

fn plain(response: &[u8]) -> Option<Credentials> {
    let mut parts = response.split(|b| *b == 0);
    let _authzid = parts.next()?;
    let username = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let password = String::from_utf8(parts.next()?.to_vec()).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(Credentials { username, password })
}

fn amqplain(response: &[u8]) -> Option<Credentials> {
    let mut table = Vec::with_capacity(response.len() + 4);
    table.extend_from_slice(&(response.len() as u32).to_be_bytes());
    table.extend_from_slice(response);
    skip_table(&table).ok()?;
    let (_, fields) = parse_field_table(&table[..]).ok()?;
    let text = |key: &str| match fields.inner().get(key)? {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    };
    Some(Credentials { username: text("LOGIN")?, password: text("PASSWORD")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_with_and_without_authzid() {
        let c = parse("PLAIN", b"\0guest\0secret").expect("valid");
        assert_eq!((c.username.as_str(), c.password.as_str()), ("guest", "secret"));
        assert!(parse("PLAIN", b"admin\0guest\0secret").is_some());
        assert!(parse("PLAIN", b"guest").is_none());
        assert!(parse("PLAIN", b"\0a\0b\0c").is_none());
        assert!(parse("CRAM-MD5", b"\0a\0b").is_none());
    }

    #[test]
    fn external_is_offered_only_when_asked() {
        assert_eq!(mechanisms(false), MECHANISMS);
        assert_eq!(mechanisms(true).split(' ').collect::<Vec<_>>(), ["PLAIN", "AMQPLAIN", EXTERNAL]);
        // EXTERNAL has no response to parse: the handshake takes the certificate instead.
        assert!(parse(EXTERNAL, b"").is_none());
    }

    #[test]
    fn amqplain() {
        let mut r = Vec::new();
        r.extend_from_slice(&[5]);
        r.extend_from_slice(b"LOGIN");
        r.push(b'S');
        r.extend_from_slice(&5u32.to_be_bytes());
        r.extend_from_slice(b"guest");
        r.extend_from_slice(&[8]);
        r.extend_from_slice(b"PASSWORD");
        r.push(b'S');
        r.extend_from_slice(&3u32.to_be_bytes());
        r.extend_from_slice(b"pwd");
        let c = parse("AMQPLAIN", &r).expect("valid");
        assert_eq!((c.username.as_str(), c.password.as_str()), ("guest", "pwd"));
        assert!(parse("AMQPLAIN", &r[..r.len() - 1]).is_none());
    }
}
