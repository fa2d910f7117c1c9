//! The connection handshake, one straight sequence before the frame loop: protocol header,
//! `start`/`start-ok` (authentication), `tune`/`tune-ok`, `open`/`open-ok`.
//!
//! Any failure ends the connection: a wrong protocol header gets ours back, wrong
//! credentials get 403 ACCESS_REFUSED, an unknown vhost 530 NOT_ALLOWED, and the caller
//! bounds the whole sequence by the handshake timeout.
//!
//! Logins: PLAIN and AMQPLAIN check the password; EXTERNAL (offered only on TLS connections
//! whose client presented a verified certificate) takes the user name from the certificate
//! and checks only that the user exists. The `guest` loopback rule applies to all three.

use std::net::SocketAddr;
use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};
use warren_protocol::frame::{self, Frame, PROTOCOL_HEADER};
use warren_protocol::spec::connection;
use warren_protocol::tune::{self, Tuning};
use warren_protocol::{method, sasl, AMQPClass, AmqpError, ReplyCode};

use crate::access::{limit, take_slot, Grant, Usage};
use crate::broker::vhost::VHost;
use crate::broker::Broker;
use crate::tls::CertLogin;

/// A connection counted against its vhost's and its user's max-connections; dropping it
/// gives both slots back.
#[derive(Debug)]
pub struct ConnectionSlots {
    /// The vhost.
    pub vhost: Arc<VHost>,
    /// The user's counts.
    pub usage: Arc<Usage>,
    /// Whether the user slot was taken (the vhost's always is).
    user_counted: bool,
}

impl Drop for ConnectionSlots {
    fn drop(&mut self) {
        self.vhost.release_connection();
        if self.user_counted {
            self.usage.connections.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

/// What a finished handshake established.
#[derive(Debug)]
pub struct Session {
    /// The authenticated user's rights in the vhost.
    pub grant: Arc<Grant>,
    /// The vhost opened, and the connection's place in its and the user's limits.
    pub slots: ConnectionSlots,
    /// The negotiated limits.
    pub tuning: Tuning,
    /// The client announced `consumer_cancel_notify`.
    pub cancel_notify: bool,
    /// The client announced `connection.blocked` (it understands blocked/unblocked).
    pub blocked_notify: bool,
    /// The client's product name, for logs.
    pub client: String,
    /// What the client announced in start-ok (the management plane shows it).
    pub client_properties: FieldTable,
    /// The SASL mechanism it logged in with.
    pub mechanism: String,
}

/// Why a handshake ended without a session.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed or closed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The client spoke another protocol or version; our header was sent back.
    #[error("unsupported protocol header {0:?}")]
    ProtocolHeader([u8; 8]),
    /// A protocol error, reported to the client with connection.close.
    #[error("{error}")]
    Refused {
        /// What the client is told.
        error: AmqpError,
        /// For a refused login, the user it was for (for the log; never a password).
        user: Option<String>,
        /// A refused login of a client that did not announce `authentication_failure_close`:
        /// as the spec and RabbitMQ say, the socket is closed without connection.close.
        silent: bool,
    },
}

impl From<AmqpError> for HandshakeError {
    fn from(error: AmqpError) -> Self {
        HandshakeError::Refused { error, user: None, silent: false }
    }
}

/// Runs the handshake on `stream`; leftover octets stay in `rbuf`. `cert_login` is what a
/// verified TLS client certificate says (`None` on plain TCP and for clients without one):
/// with it EXTERNAL is offered.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    broker: &Broker,
    peer: SocketAddr,
    cert_login: Option<&CertLogin>,
) -> Result<Session, HandshakeError> {
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await?;
    if &header != PROTOCOL_HEADER {
        stream.write_all(PROTOCOL_HEADER).await?;
        return Err(HandshakeError::ProtocolHeader(header));
    }
    let config = &broker.config;
    let mut wbuf = BytesMut::with_capacity(1024);
    frame::encode_method(&mut wbuf, 0, &AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: server_properties(),
        mechanisms: LongString::from(sasl::mechanisms(cert_login.is_some())),
        locales: LongString::from("en_US"),
    })));
    stream.write_all(&wbuf).await?;
    wbuf.clear();

    let start_ok = match next_method(stream, rbuf, config.frame_max).await? {
        AMQPClass::Connection(connection::AMQPMethod::StartOk(m)) => m,
        other => return Err(unexpected(&other, "connection.start-ok").into()),
    };
    let mechanism = start_ok.mechanism.as_str().to_owned();
    let mechanism = mechanism.as_str();
    let loopback = peer.ip().is_loopback();
    let capabilities = match start_ok.client_properties.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(t)) => t.clone(),
        _ => FieldTable::default(),
    };
    let announces = |cap: &str| matches!(capabilities.inner().get(cap), Some(AMQPValue::Boolean(true)));
    // As RabbitMQ: the client hears only that the login was refused; the log says why.
    let refused = |user: Option<&str>, why: &str| {
        warn!(%peer, user = user.unwrap_or("?"), mechanism, reason = why, "{mechanism} login refused");
        HandshakeError::Refused {
            error: AmqpError::connection(
                ReplyCode::AccessRefused,
                format!("Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."),
            ),
            user: user.map(str::to_owned),
            silent: !announces("authentication_failure_close"),
        }
    };
    let user = match (mechanism, cert_login) {
        // SASL EXTERNAL: the response carries nothing we use (RabbitMQ ignores it too);
        // the certificate, verified during the TLS handshake, is the credential.
        (sasl::EXTERNAL, Some(Ok(name))) => broker.authenticate_external(name, loopback).map_err(|why| refused(Some(name), why))?,
        (sasl::EXTERNAL, Some(Err(why))) => return Err(refused(None, &why.to_string())),
        _ => {
            let credentials =
                sasl::parse(mechanism, start_ok.response.as_bytes()).ok_or_else(|| refused(None, "unsupported mechanism or malformed response"))?;
            broker
                .authenticate(&credentials.username, &credentials.password, loopback)
                .map_err(|why| refused(Some(&credentials.username), why))?
        }
    };
    let username = user.name.clone();
    let (cancel_notify, blocked_notify) = (announces("consumer_cancel_notify"), announces("connection.blocked"));
    let client = match start_ok.client_properties.inner().get("product") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        _ => "unknown".to_owned(),
    };

    let server_tuning = Tuning { channel_max: config.channel_max, frame_max: config.frame_max, heartbeat: config.heartbeat };
    frame::encode_method(&mut wbuf, 0, &AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
        channel_max: server_tuning.channel_max,
        frame_max: server_tuning.frame_max,
        heartbeat: server_tuning.heartbeat,
    })));
    stream.write_all(&wbuf).await?;
    wbuf.clear();

    let tune_ok = match next_method(stream, rbuf, config.frame_max).await? {
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(m)) => m,
        other => return Err(unexpected(&other, "connection.tune-ok").into()),
    };
    let tuning = tune::negotiate(server_tuning, Tuning { channel_max: tune_ok.channel_max, frame_max: tune_ok.frame_max, heartbeat: tune_ok.heartbeat })?;

    let open = match next_method(stream, rbuf, tuning.frame_max).await? {
        AMQPClass::Connection(connection::AMQPMethod::Open(m)) => m,
        other => return Err(unexpected(&other, "connection.open").into()),
    };
    // RabbitMQ's order: the vhost's connection limit (an unknown vhost fails here), the
    // user's, then the user's permissions in the vhost.
    let vhost_name = open.virtual_host.as_str();
    let not_allowed = |text: String| HandshakeError::Refused { error: AmqpError::connection(ReplyCode::NotAllowed, text).on_method(10, 40), user: Some(username.clone()), silent: false };
    let vhost = broker.vhost(vhost_name).ok_or_else(|| not_allowed(format!("vhost {vhost_name} not found")))?;
    if !vhost.take_connection() {
        let max = vhost.limits().max_connections.unwrap_or_default();
        return Err(not_allowed(format!("access to vhost '{vhost_name}' refused for user '{username}': connection limit ({max}) is reached")));
    }
    let mut slots = ConnectionSlots { vhost: Arc::clone(&vhost), usage: broker.access.usage(&username), user_counted: false };
    if !take_slot(&slots.usage.connections, limit(user.limits.max_connections)) {
        let max = user.limits.max_connections.unwrap_or_default();
        return Err(not_allowed(format!("connection refused for user '{username}': user connection limit ({max}) is reached")));
    }
    slots.user_counted = true;
    let grant = broker.access.grant(&user, vhost_name).ok_or_else(|| not_allowed(format!("access to vhost '{vhost_name}' refused for user '{username}'")))?;
    frame::encode_method(&mut wbuf, 0, &AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})));
    stream.write_all(&wbuf).await?;
    debug!(%peer, user = %username, mechanism, vhost = vhost_name, "handshake complete");
    Ok(Session {
        grant: Arc::new(grant),
        slots,
        tuning,
        cancel_notify,
        blocked_notify,
        client,
        client_properties: start_ok.client_properties,
        mechanism: mechanism.to_owned(),
    })
}

/// Reads frames until a method arrives (heartbeats are skipped) and decodes it.
async fn next_method<S: AsyncRead + Unpin>(stream: &mut S, rbuf: &mut BytesMut, frame_max: u32) -> Result<AMQPClass, HandshakeError> {
    loop {
        match frame::decode(rbuf, frame_max)? {
            Some(Frame::Method { channel: 0, payload }) => return Ok(method::decode(&payload)?),
            Some(Frame::Method { channel, .. }) => {
                return Err(AmqpError::command_invalid(format!("method on channel {channel} before the connection was open")).into());
            }
            Some(Frame::Heartbeat { .. }) => continue,
            Some(_) => return Err(AmqpError::unexpected_frame("content frame during the handshake").into()),
            None => {
                if stream.read_buf(rbuf).await? == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
                }
            }
        }
    }
}

fn unexpected(got: &AMQPClass, expected: &str) -> AmqpError {
    let (c, m) = (got.get_amqp_class_id(), got.get_amqp_method_id());
    AmqpError::command_invalid(format!("expected '{expected}', got '{}'", method::name(c, m))).on_method(c, m)
}

/// The server-properties of `connection.start`: who we are and the RabbitMQ extensions that
/// work here.
fn server_properties() -> FieldTable {
    let mut capabilities = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "per_consumer_qos",
        "authentication_failure_close",
        "connection.blocked",
        "consumer_priorities",
        "direct_reply_to",
    ] {
        capabilities.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    props.insert("product".into(), text("Warren"));
    props.insert("version".into(), text(env!("CARGO_PKG_VERSION")));
    props.insert("platform".into(), text(concat!("Rust (", env!("CARGO_PKG_NAME"), ")")));
    props.insert("copyright".into(), text("Copyright (c) the Warren authors"));
    props.insert("information".into(), text("Licensed under MIT or Apache-2.0"));
    props.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    props
}
