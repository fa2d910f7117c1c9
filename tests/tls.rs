//! TLS: lapin over AMQPS, SASL EXTERNAL with client certificates, required client
//! certificates, plain and TLS listeners together, bad handshakes, certificate reload and
//! bad files at start. Certificates are made here with rcgen: a CA, a server certificate
//! for 127.0.0.1 and localhost, and client certificates with the CN each test needs.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::raw::{self, RawConn, Read};
use common::*;
use lapin::options::*;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair, SanType, SerialNumber};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use warren::config::CertLoginFrom;
use warren::tls::TlsError;
use warren::{Config, Server, StartError};

/// A certificate and its key, PEM encoded.
#[derive(Clone)]
struct Pem {
    cert: String,
    key: String,
}

/// A test CA and the files a broker is started with.
struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    ca_pem: String,
}

impl Pki {
    /// A new CA and a directory for the files.
    fn new() -> Pki {
        let dir = fresh_data_dir().with_extension("pki");
        std::fs::create_dir_all(&dir).expect("pki dir");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = name(&[(DnType::CommonName, "Warren Test CA")]);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        let ca_pem = ca.pem();
        Pki { dir, ca, ca_pem }
    }

    /// A certificate signed by the CA with subject `dn` and serial `serial`; with `server`
    /// it names 127.0.0.1 and localhost.
    fn issue(&self, dn: &[(DnType, &str)], serial: u64, server: bool) -> Pem {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(dn);
        params.serial_number = Some(SerialNumber::from(serial));
        if server {
            params.subject_alt_names =
                vec![SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)), SanType::DnsName("localhost".try_into().expect("dns name"))];
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        Pem { cert: cert.pem(), key: key.serialize_pem() }
    }

    /// A client certificate whose subject is just `CN=cn`.
    fn client(&self, cn: &str) -> Pem {
        self.issue(&[(DnType::CommonName, cn)], 100, false)
    }

    /// Writes `contents` to `file` in the directory and returns its path.
    fn write(&self, file: &str, contents: &str) -> PathBuf {
        let path = self.dir.join(file);
        std::fs::write(&path, contents).expect("write pem");
        path
    }

    /// Writes a server certificate (serial `serial`) to server.pem / server.key.
    fn write_server(&self, serial: u64, cn: &str) -> Pem {
        let pem = self.issue(&[(DnType::CommonName, cn)], serial, true);
        self.write("server.pem", &pem.cert);
        self.write("server.key", &pem.key);
        pem
    }

    /// Sets the TLS settings of `config` to this PKI's files (server.pem must exist); with
    /// `verify_clients` the CA verifies client certificates.
    fn configure(&self, config: &mut Config, verify_clients: bool) {
        config.tls_port = 0;
        config.tls_cert = Some(self.dir.join("server.pem"));
        config.tls_key = Some(self.dir.join("server.key"));
        if verify_clients {
            config.tls_client_ca = Some(self.write("ca.pem", &self.ca_pem));
        }
    }

    /// The lapin TLS settings: trust the CA, present `client` if given.
    fn lapin_tls(&self, client: Option<&Pem>) -> OwnedTLSConfig {
        OwnedTLSConfig {
            identity: client.map(|c| OwnedIdentity::PKCS8 { pem: c.cert.clone().into_bytes(), key: c.key.clone().into_bytes() }),
            cert_chain: Some(self.ca_pem.clone()),
        }
    }

    /// A rustls client that trusts the CA and presents `client` if given.
    fn connector(&self, client: Option<&Pem>) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("ca der")).expect("root");
        let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match client {
            Some(c) => {
                let chain = vec![CertificateDer::from_pem_slice(c.cert.as_bytes()).expect("cert der")];
                let key = PrivateKeyDer::from_pem_slice(c.key.as_bytes()).expect("key der");
                builder.with_client_auth_cert(chain, key).expect("client auth")
            }
            None => builder.with_no_client_auth(),
        };
        TlsConnector::from(Arc::new(config))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn name(dn: &[(DnType, &str)]) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    for (t, v) in dn {
        name.push(t.clone(), *v);
    }
    name
}

/// Starts a broker with TLS from `pki` (and a fresh server certificate) and `adjust`.
async fn start_tls(pki: &Pki, verify_clients: bool, adjust: impl FnOnce(&mut Config)) -> TestBroker {
    pki.write_server(1, "warren-server-1");
    start_with(|c| {
        pki.configure(c, verify_clients);
        adjust(c);
    })
    .await
}

fn tls_addr(broker: &TestBroker) -> SocketAddr {
    broker.tls_addr.expect("TLS listener")
}

/// amqps:// URI of the default vhost as guest; `external` asks for SASL EXTERNAL.
fn amqps_uri(addr: SocketAddr, external: bool) -> String {
    let query = if external { "?auth_mechanism=external" } else { "" };
    format!("amqps://guest:guest@{addr}/%2f{query}")
}

/// A lapin connection over TLS.
async fn lapin_tls(uri: &str, tls: OwnedTLSConfig) -> lapin::Result<Connection> {
    let runtime = lapin::runtime::default_runtime()?;
    tokio::time::timeout(WAIT, Connection::connect_with_config(uri, ConnectionProperties::default(), tls, runtime))
        .await
        .unwrap_or_else(|_| panic!("lapin over TLS to {uri}: no answer within {WAIT:?}"))
}

/// Declares an exclusive queue, publishes to it and consumes the message back.
async fn round_trip(conn: &Connection, queue: &str) {
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare(queue.into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("queue.declare");
    let mut consumer = consume(&ch, queue, "c").await;
    ch.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), b"over tls", BasicProperties::default())
        .await
        .expect("publish");
    let d = next(&mut consumer).await;
    assert_eq!(d.data, b"over tls");
    d.ack(BasicAckOptions::default()).await.expect("ack");
}

/// A TLS client on the raw AMQP helper.
async fn raw_tls(pki: &Pki, addr: SocketAddr, client: Option<&Pem>) -> RawConn<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let tls = within("TLS handshake", pki.connector(client).connect(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), tcp))
        .await
        .expect("TLS handshake");
    RawConn::over(tls)
}

/// Sends the protocol header and returns the mechanisms connection.start offers.
async fn offered_mechanisms<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(c: &mut RawConn<S>) -> String {
    c.send(raw::PROTOCOL_HEADER).await;
    let start = c.expect_method(0, 10, 10).await;
    // version major and minor, then the server-properties table, then mechanisms.
    let a = start.args();
    let table_len = u32::from_be_bytes([a[2], a[3], a[4], a[5]]) as usize;
    let m = &a[6 + table_len..];
    let len = u32::from_be_bytes([m[0], m[1], m[2], m[3]]) as usize;
    String::from_utf8(m[4..4 + len].to_vec()).expect("mechanisms")
}

#[tokio::test]
async fn lapin_publishes_and_consumes_over_tls() {
    let pki = Pki::new();
    let broker = start_tls(&pki, false, |_| {}).await;
    let conn = lapin_tls(&amqps_uri(tls_addr(&broker), false), pki.lapin_tls(None)).await.expect("connect over TLS");
    round_trip(&conn, "tls-q").await;
    conn.close(200, "bye".into()).await.expect("close");
    broker.stop().await;
}

#[tokio::test]
async fn external_login_with_a_client_certificate() {
    let pki = Pki::new();
    let broker = start_tls(&pki, true, |_| {}).await;
    let guest = pki.client("guest");
    let conn = lapin_tls(&amqps_uri(tls_addr(&broker), true), pki.lapin_tls(Some(&guest))).await.expect("EXTERNAL login as guest");
    round_trip(&conn, "external-q").await;
    // A password login still works on a connection with a certificate.
    let plain = lapin_tls(&amqps_uri(tls_addr(&broker), false), pki.lapin_tls(Some(&guest))).await.expect("PLAIN over TLS with a certificate");
    round_trip(&plain, "plain-with-cert-q").await;
    // And without a certificate, since one is not required.
    let anonymous = lapin_tls(&amqps_uri(tls_addr(&broker), false), pki.lapin_tls(None)).await.expect("PLAIN over TLS without a certificate");
    round_trip(&anonymous, "plain-no-cert-q").await;
    for c in [conn, plain, anonymous] {
        c.close(200, "bye".into()).await.expect("close");
    }
    broker.stop().await;
}

#[tokio::test]
async fn external_is_offered_only_with_a_verified_certificate() {
    let pki = Pki::new();
    let broker = start_tls(&pki, true, |_| {}).await;
    let guest = pki.client("guest");
    let mut with_cert = raw_tls(&pki, tls_addr(&broker), Some(&guest)).await;
    assert_eq!(offered_mechanisms(&mut with_cert).await, "PLAIN AMQPLAIN EXTERNAL");
    let mut without = raw_tls(&pki, tls_addr(&broker), None).await;
    assert_eq!(offered_mechanisms(&mut without).await, "PLAIN AMQPLAIN");
    let mut plain = RawConn::connect(broker.addr).await;
    assert_eq!(offered_mechanisms(&mut plain).await, "PLAIN AMQPLAIN");
    // EXTERNAL where it was not offered is refused like any unknown mechanism.
    without.send_start_ok("EXTERNAL", b"").await;
    let close = without.expect_connection_close().await;
    assert_eq!((close.code, close.class_id, close.method_id), (403, 0, 0), "{close:?}");
    plain.send_start_ok("EXTERNAL", b"").await;
    assert_eq!(plain.expect_connection_close().await.code, 403);
    // The certificate login completes the handshake on the raw client too.
    with_cert.send_start_ok("EXTERNAL", b"").await;
    let tune = with_cert.expect_method(0, 10, 30).await;
    assert!(tune.args().len() >= 8);
    broker.stop().await;
}

#[tokio::test]
async fn unknown_certificate_user_is_refused_with_403() {
    let pki = Pki::new();
    let broker = start_tls(&pki, true, |_| {}).await;
    let mallory = pki.client("mallory");
    let err = lapin_tls(&amqps_uri(tls_addr(&broker), true), pki.lapin_tls(Some(&mallory))).await.expect_err("unknown user");
    assert_eq!(reply_code(&err), Some(403), "{err:?}");
    let mut raw = raw_tls(&pki, tls_addr(&broker), Some(&mallory)).await;
    assert!(offered_mechanisms(&mut raw).await.ends_with("EXTERNAL"));
    raw.send_start_ok("EXTERNAL", b"").await;
    let close = raw.expect_connection_close().await;
    assert_eq!(close.code, 403);
    assert!(close.text.contains("EXTERNAL"), "{close:?}");
    // A certificate without a CN names no user.
    let nameless = pki.issue(&[(DnType::OrganizationName, "No Name Inc")], 7, false);
    let mut raw = raw_tls(&pki, tls_addr(&broker), Some(&nameless)).await;
    offered_mechanisms(&mut raw).await;
    raw.send_start_ok("EXTERNAL", b"").await;
    let close = raw.expect_connection_close().await;
    // As RabbitMQ, the client hears only that the login was refused (the log says why).
    assert_eq!(close.code, 403);
    assert!(close.text.contains("Login was refused using authentication mechanism EXTERNAL"), "{close:?}");
    broker.stop().await;
}

#[tokio::test]
async fn distinguished_name_login() {
    let pki = Pki::new();
    let broker = start_tls(&pki, true, |c| {
        c.tls_cert_login_from = CertLoginFrom::DistinguishedName;
        c.default_user = "CN=app,O=Warren Tests".into();
    })
    .await;
    let app = pki.issue(&[(DnType::OrganizationName, "Warren Tests"), (DnType::CommonName, "app")], 8, false);
    let conn = lapin_tls(&amqps_uri(tls_addr(&broker), true), pki.lapin_tls(Some(&app))).await.expect("EXTERNAL with the DN");
    round_trip(&conn, "dn-q").await;
    conn.close(200, "bye".into()).await.expect("close");
    // With the DN as user name, the CN alone is not a user.
    let cn_only = pki.client("app");
    let err = lapin_tls(&amqps_uri(tls_addr(&broker), true), pki.lapin_tls(Some(&cn_only))).await.expect_err("CN=app is another DN");
    assert_eq!(reply_code(&err), Some(403), "{err:?}");
    broker.stop().await;
}

#[tokio::test]
async fn required_client_certificate_is_checked_at_the_tls_handshake() {
    let pki = Pki::new();
    let broker = start_tls(&pki, true, |c| c.tls_require_client_cert = true).await;
    let guest = pki.client("guest");
    let served = lapin_tls(&amqps_uri(tls_addr(&broker), true), pki.lapin_tls(Some(&guest))).await.expect("client with a certificate");
    let ch = served.create_channel().await.expect("channel");
    declare(&ch, "required-q").await;

    // No certificate: the TLS handshake fails (with TLS 1.3 the client learns it on its
    // first read), before any AMQP.
    let refused = lapin_tls(&amqps_uri(tls_addr(&broker), false), pki.lapin_tls(None)).await;
    assert!(refused.is_err(), "a client without a certificate was let in");
    let tcp = TcpStream::connect(tls_addr(&broker)).await.expect("tcp");
    let refused = match pki.connector(None).connect(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), tcp).await {
        Err(_) => true,
        Ok(mut tls) => {
            let _ = tls.write_all(raw::PROTOCOL_HEADER).await;
            let mut buf = [0u8; 64];
            !matches!(within("alert", tls.read(&mut buf)).await, Ok(n) if n > 0)
        }
    };
    assert!(refused, "a TLS client without a certificate got AMQP");
    // A certificate from another CA fails too.
    let other = Pki::new();
    let stranger = other.client("guest");
    assert!(lapin_tls(&amqps_uri(tls_addr(&broker), true), pki.lapin_tls(Some(&stranger))).await.is_err());

    // The client with a certificate is still served.
    publish(&ch, "", "required-q", b"still here").await;
    assert_eq!(within("get", async {
        loop {
            if let Some(b) = get_body(&ch, "required-q").await {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await, b"still here");
    served.close(200, "bye".into()).await.expect("close");
    broker.stop().await;
}

#[tokio::test]
async fn plain_and_tls_listeners_serve_together() {
    let pki = Pki::new();
    let broker = start_tls(&pki, false, |_| {}).await;
    assert_ne!(broker.addr, tls_addr(&broker));
    let (plain, plain_ch) = broker.channel().await;
    declare(&plain_ch, "both-q").await;
    let tls = lapin_tls(&amqps_uri(tls_addr(&broker), false), pki.lapin_tls(None)).await.expect("TLS");
    let tls_ch = tls.create_channel().await.expect("channel");
    let mut consumer = consume(&tls_ch, "both-q", "tls-consumer").await;
    publish(&plain_ch, "", "both-q", b"plain to tls").await;
    assert_eq!(next(&mut consumer).await.data, b"plain to tls");
    plain.close(200, "bye".into()).await.expect("close");
    tls.close(200, "bye".into()).await.expect("close");
    broker.stop().await;
}

#[tokio::test]
async fn tls_only_when_the_plain_listener_is_off() {
    let pki = Pki::new();
    let broker = start_tls(&pki, false, |c| c.no_plain = true).await;
    assert_eq!(broker.addr, tls_addr(&broker));
    let conn = lapin_tls(&amqps_uri(tls_addr(&broker), false), pki.lapin_tls(None)).await.expect("TLS");
    round_trip(&conn, "tls-only-q").await;
    conn.close(200, "bye".into()).await.expect("close");
    broker.stop().await;
}

#[tokio::test]
async fn a_bad_handshake_disturbs_no_one() {
    let pki = Pki::new();
    // One slot for the good connection and one that bad handshakes must give back.
    let broker = start_tls(&pki, false, |c| {
        c.max_connections = 2;
        c.handshake_timeout = 1;
    })
    .await;
    let good = lapin_tls(&amqps_uri(tls_addr(&broker), false), pki.lapin_tls(None)).await.expect("TLS");
    let ch = good.create_channel().await.expect("channel");
    declare(&ch, "undisturbed-q").await;
    let mut consumer = consume(&ch, "undisturbed-q", "c").await;

    for _ in 0..3 {
        // Plain AMQP to the TLS port: not a ClientHello, so the broker closes the socket.
        let mut c = RawConn::connect(tls_addr(&broker)).await;
        c.send(raw::PROTOCOL_HEADER).await;
        let mut sink = Vec::new();
        let read = within("the broker closes a non-TLS client", c.stream.read_to_end(&mut sink)).await;
        assert!(read.is_err() || sink.iter().all(|b| *b != b'A'), "got an AMQP answer: {sink:?}");
    }
    // A client that never starts the TLS handshake is dropped at the handshake timeout.
    let mut silent = RawConn::connect(tls_addr(&broker)).await;
    assert_eq!(silent.read_within(Duration::from_secs(4)).await, Read::Closed);

    // The slot came back each time: a new connection gets in, and the old one still works.
    let again = lapin_tls(&amqps_uri(tls_addr(&broker), false), pki.lapin_tls(None)).await.expect("TLS after bad handshakes");
    publish(&ch, "", "undisturbed-q", b"fine").await;
    assert_eq!(next(&mut consumer).await.data, b"fine");
    again.close(200, "bye".into()).await.expect("close");
    good.close(200, "bye".into()).await.expect("close");
    broker.stop().await;
}

/// The DER of the certificate the broker presents on a new TLS connection.
async fn served_certificate(pki: &Pki, addr: SocketAddr) -> Vec<u8> {
    let tcp = TcpStream::connect(addr).await.expect("tcp");
    let tls = within("TLS handshake", pki.connector(None).connect(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), tcp))
        .await
        .expect("TLS handshake");
    tls.get_ref().1.peer_certificates().and_then(|c| c.first()).expect("server certificate").to_vec()
}

fn der(pem: &Pem) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.cert.as_bytes()).expect("der").to_vec()
}

#[tokio::test]
async fn reload_switches_the_served_certificate() {
    let pki = Pki::new();
    let first = pki.write_server(1, "warren-server-1");
    let broker = start_with(|c| pki.configure(c, false)).await;
    let addr = tls_addr(&broker);
    assert_eq!(served_certificate(&pki, addr).await, der(&first));
    let old = lapin_tls(&amqps_uri(addr, false), pki.lapin_tls(None)).await.expect("TLS");

    let second = pki.write_server(2, "warren-server-2");
    // Until the reload, new connections keep getting the first certificate.
    assert_eq!(served_certificate(&pki, addr).await, der(&first));
    let tls = broker.tls.as_ref().expect("TLS state");
    tls.reload().expect("reload");
    let served = served_certificate(&pki, addr).await;
    assert_eq!(served, der(&second));
    assert_ne!(served, der(&first));

    // A reload that fails keeps the certificate in use.
    pki.write("server.key", "not a key");
    assert!(matches!(tls.reload(), Err(TlsError::Pem { what: "key", .. })));
    assert_eq!(served_certificate(&pki, addr).await, der(&second));

    // Connections opened before the reload go on.
    round_trip(&old, "before-reload-q").await;
    old.close(200, "bye".into()).await.expect("close");
    broker.stop().await;
}

#[tokio::test]
async fn bad_tls_files_stop_the_start() {
    let pki = Pki::new();
    pki.write_server(1, "s");
    let base = || {
        let mut c = Config { bind: [127, 0, 0, 1].into(), port: 0, metrics_port: 0, management_port: 0, data_dir: fresh_data_dir(), ..Config::default() };
        pki.configure(&mut c, false);
        c
    };
    let missing = Config { tls_cert: Some(pki.dir.join("missing.pem")), ..base() };
    assert!(matches!(Server::bind(missing).await, Err(StartError::Tls(TlsError::Read { what: "certificate", .. }))));
    let garbage = Config { tls_cert: Some(pki.write("garbage.pem", "hello")), ..base() };
    assert!(matches!(Server::bind(garbage).await, Err(StartError::Tls(TlsError::Pem { what: "certificate", .. }))));
    let other_key = Config { tls_key: Some(pki.write("other.key", &KeyPair::generate().expect("key").serialize_pem())), ..base() };
    assert!(matches!(Server::bind(other_key).await, Err(StartError::Tls(TlsError::Pair { .. }))));
    let bad_ca = Config { tls_client_ca: Some(pki.write("bad-ca.pem", "nothing")), ..base() };
    assert!(matches!(Server::bind(bad_ca).await, Err(StartError::Tls(TlsError::Pem { what: "client CA bundle", .. }))));
    let no_listener = Config { no_plain: true, tls_cert: None, tls_key: None, ..base() };
    assert!(matches!(Server::bind(no_listener).await, Err(StartError::Config(_))));
}

#[test]
fn the_binary_exits_non_zero_on_a_bad_certificate() {
    let pki = Pki::new();
    let cert = pki.write("not-a-cert.pem", "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
    let key = pki.write("k.pem", &KeyPair::generate().expect("key").serialize_pem());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--bind", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--management-port", "0", "--tls-port", "0"])
        .arg("--data-dir")
        .arg(pki.dir.join("data"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .expect("run warren");
    assert!(!out.status.success(), "warren started with a bad certificate");
    let log = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("cannot start") && log.contains(cert.to_str().expect("utf8")), "{log}");
}
