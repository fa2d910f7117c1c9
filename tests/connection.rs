//! The connection lifecycle over real TCP: the protocol header, authentication (PLAIN and
//! AMQPLAIN), connection.start's server properties, tune negotiation, vhosts, the handshake
//! timeout, heartbeats and closing.

mod common;

use std::time::{Duration, Instant};

use common::raw::{self, Args, RawConn, Read, Table};
use common::*;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable as LapinTable;
use lapin::{Connection, ConnectionProperties};
use warren_protocol::types::parsing::parse_field_table;
use warren_protocol::types::{AMQPValue, FieldTable};

/// Reads a short string at `pos`, advancing it.
fn short_str(a: &[u8], pos: &mut usize) -> String {
    let len = a[*pos] as usize;
    let s = String::from_utf8(a[*pos + 1..*pos + 1 + len].to_vec()).expect("utf8");
    *pos += 1 + len;
    s
}

/// Reads a long string at `pos`, advancing it.
fn long_str(a: &[u8], pos: &mut usize) -> String {
    let len = u32::from_be_bytes(a[*pos..*pos + 4].try_into().expect("4")) as usize;
    let s = String::from_utf8(a[*pos + 4..*pos + 4 + len].to_vec()).expect("utf8");
    *pos += 4 + len;
    s
}

#[tokio::test]
async fn plain_handshake_with_lapin() {
    let broker = start().await;
    let conn = within("connect", broker.connect()).await;
    assert!(conn.status().connected());
    let ch = within("channel", conn.create_channel()).await.expect("channel");
    declare(&ch, "plain-ok").await;
    within("close", conn.close(200, "bye".into())).await.expect("close");
}

#[tokio::test]
async fn amqplain_handshake_on_a_raw_socket() {
    let broker = start().await;
    within("amqplain", async {
        let mut c = RawConn::connect(broker.addr).await;
        // AMQPLAIN: a field table without its length prefix, LOGIN and PASSWORD as long strings.
        let response = Table::new().str("LOGIN", "guest").str("PASSWORD", "guest").entries();
        let tune = c.start_and_login("AMQPLAIN", &response).await;
        c.send(&raw::tune_ok_frame(tune.channel_max, tune.frame_max, 0)).await;
        c.open_vhost("/").await;
        c.open_channel(1).await;
        c.send(&raw::queue_declare_frame(1, b"amqplain-ok", 0, &Table::new().encode())).await;
        let ok = c.expect_method(1, 50, 11).await;
        let mut pos = 0;
        assert_eq!(short_str(ok.args(), &mut pos), "amqplain-ok");
        // A clean close: close-ok, then the socket closes.
        c.send(&raw::method_frame(0, 10, 50, Args::new().short(200).sstr("bye").short(0).short(0))).await;
        c.expect_method(0, 10, 51).await;
        c.expect_socket_closed().await;
    })
    .await;
    assert_alive(&broker).await;
}

#[tokio::test]
async fn amqplain_with_a_wrong_password_is_refused() {
    let broker = start().await;
    within("amqplain refused", async {
        let mut c = RawConn::connect(broker.addr).await;
        c.send(raw::PROTOCOL_HEADER).await;
        c.expect_method(0, 10, 10).await;
        let response = Table::new().str("LOGIN", "guest").str("PASSWORD", "wrong").entries();
        c.send_start_ok("AMQPLAIN", &response).await;
        let close = c.expect_connection_close().await;
        assert_eq!((close.code, close.class_id, close.method_id), (403, 0, 0), "{close:?}");
    })
    .await;
    assert_alive(&broker).await;
}

#[tokio::test]
async fn start_announces_version_mechanisms_and_server_properties() {
    let broker = start().await;
    within("start", async {
        let mut c = RawConn::connect(broker.addr).await;
        c.send(raw::PROTOCOL_HEADER).await;
        let start = c.expect_method(0, 10, 10).await;
        let a = start.args();
        assert_eq!((a[0], a[1]), (0, 9), "version-major/minor");
        let (rest, props): (&[u8], FieldTable) = parse_field_table(&a[2..]).expect("server-properties table");
        let text = |key: &str| match props.inner().get(key) {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            other => panic!("server property {key}: {other:?}"),
        };
        assert_eq!(text("product"), "Warren");
        assert!(!text("version").is_empty());
        let Some(AMQPValue::FieldTable(caps)) = props.inner().get("capabilities") else {
            panic!("no capabilities table in {props:?}");
        };
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
            assert_eq!(caps.inner().get(cap), Some(&AMQPValue::Boolean(true)), "capability {cap}");
        }
        let mut pos = 0;
        let mechanisms = long_str(rest, &mut pos);
        let mechanisms: Vec<&str> = mechanisms.split(' ').collect();
        assert!(mechanisms.contains(&"PLAIN") && mechanisms.contains(&"AMQPLAIN"), "{mechanisms:?}");
        assert_eq!(long_str(rest, &mut pos), "en_US");
        assert_eq!(pos, rest.len(), "trailing octets in connection.start");
    })
    .await;
}

#[tokio::test]
async fn tune_proposes_the_configured_limits() {
    let broker = start().await;
    let tune = within("tune", async {
        let mut c = RawConn::connect(broker.addr).await;
        c.start_and_login("PLAIN", &raw::plain("guest", "guest")).await
    })
    .await;
    assert_eq!((tune.channel_max, tune.frame_max, tune.heartbeat), (2047, 131_072, 60));

    let broker = start_with(|c| {
        c.channel_max = 16;
        c.frame_max = 8192;
        c.heartbeat = 7;
    })
    .await;
    let tune = within("tune", async {
        let mut c = RawConn::connect(broker.addr).await;
        c.start_and_login("PLAIN", &raw::plain("guest", "guest")).await
    })
    .await;
    assert_eq!((tune.channel_max, tune.frame_max, tune.heartbeat), (16, 8192, 7));
}

#[tokio::test]
async fn wrong_password_gets_403_on_a_raw_socket() {
    let broker = start().await;
    within("refused", async {
        let mut c = RawConn::connect(broker.addr).await;
        c.send(raw::PROTOCOL_HEADER).await;
        c.expect_method(0, 10, 10).await;
        c.send_start_ok("PLAIN", &raw::plain("guest", "wrong")).await;
        let close = c.expect_connection_close().await;
        assert_eq!((close.code, close.class_id, close.method_id), (403, 0, 0), "{close:?}");
        assert!(close.text.starts_with("ACCESS_REFUSED"), "{close:?}");
    })
    .await;
    assert_alive(&broker).await;
}

#[tokio::test]
async fn unknown_user_and_unknown_mechanism_get_403() {
    let broker = start().await;
    for (mechanism, response) in [("PLAIN", raw::plain("nobody", "guest")), ("CRAM-MD5", b"guest".to_vec()), ("PLAIN", b"garbage".to_vec())] {
        within("refused", async {
            let mut c = RawConn::connect(broker.addr).await;
            c.send(raw::PROTOCOL_HEADER).await;
            c.expect_method(0, 10, 10).await;
            c.send_start_ok(mechanism, &response).await;
            let close = c.expect_connection_close().await;
            assert_eq!((close.code, close.class_id, close.method_id), (403, 0, 0), "{mechanism}: {close:?}");
        })
        .await;
    }
    assert_alive(&broker).await;
}

#[tokio::test]
async fn wrong_password_fails_lapin_connect() {
    let broker = start().await;
    let uri = format!("amqp://guest:wrong@{}/%2f", broker.addr);
    let err = within("connect", Connection::connect(&uri, ConnectionProperties::default())).await.expect_err("must be refused");
    // lapin announces authentication_failure_close and surfaces the connection.close.
    assert_eq!(reply_code(&err), Some(403), "{err:?}");
    assert_alive(&broker).await;
}

#[tokio::test]
async fn a_refused_login_without_authentication_failure_close_just_closes_the_socket() {
    let broker = start().await;
    within("refusal", async {
        let mut c = RawConn::connect(broker.addr).await;
        c.send(raw::PROTOCOL_HEADER).await;
        c.expect_method(0, 10, 10).await;
        // Client properties without capabilities: the spec's old clients.
        let props = Table::new().str("product", "old-client").encode();
        let args = Args::new().raw(&props).sstr("PLAIN").lstr(raw::plain("guest", "wrong")).sstr("en_US");
        c.send(&raw::method_frame(0, 10, 11, args)).await;
        match c.read_within(Duration::from_secs(5)).await {
            Read::Closed => {}
            other => panic!("expected the socket closed without a frame, got {other:?}"),
        }
    })
    .await;
    assert_alive(&broker).await;
}

#[tokio::test]
async fn unknown_vhost_gets_530() {
    let broker = start().await;
    within("vhost", async {
        let mut c = RawConn::connect(broker.addr).await;
        let tune = c.start_and_login("PLAIN", &raw::plain("guest", "guest")).await;
        c.send(&raw::tune_ok_frame(tune.channel_max, tune.frame_max, 0)).await;
        c.send(&raw::method_frame(0, 10, 40, Args::new().sstr("no-such-vhost").sstr("").octet(0))).await;
        let close = c.expect_connection_close().await;
        assert_eq!((close.code, close.class_id, close.method_id), (530, 10, 40), "{close:?}");
    })
    .await;
    let uri = format!("amqp://guest:guest@{}/no-such-vhost", broker.addr);
    let err = within("connect", Connection::connect(&uri, ConnectionProperties::default())).await.expect_err("must be refused");
    assert_eq!(reply_code(&err), Some(530), "{err:?}");
    assert_alive(&broker).await;
}

#[tokio::test]
async fn wrong_protocol_header_gets_ours_back_and_the_socket_closes() {
    let broker = start().await;
    // 0-9-0, AMQP 1.0, and not AMQP at all.
    for header in [&b"AMQP\x00\x00\x09\x00"[..], b"AMQP\x00\x01\x00\x00", b"AMQP\x03\x01\x00\x00", b"HTTP/1.1"] {
        within("header", async {
            let mut c = RawConn::connect(broker.addr).await;
            c.send(header).await;
            assert_eq!(c.read_exact_raw(8).await, raw::PROTOCOL_HEADER, "after {header:?}");
            c.expect_socket_closed().await;
        })
        .await;
    }
    assert_alive(&broker).await;
}

#[tokio::test]
async fn http_request_gets_the_protocol_header_back() {
    // A whole HTTP request, more than the 8 octets the broker reads: the reply must still
    // arrive before the close (no reset that would discard it).
    let broker = start().await;
    within("http", async {
        let mut c = RawConn::connect(broker.addr).await;
        c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\nAccept: */*\r\n\r\n").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(c.read_exact_raw(8).await, raw::PROTOCOL_HEADER);
    })
    .await;
    assert_alive(&broker).await;
}

#[tokio::test]
async fn tune_ok_frame_max_out_of_range_gets_530() {
    let broker = start().await;
    for frame_max in [1u32, 4095, 131_073, u32::MAX] {
        within("tune-ok", async {
            let mut c = RawConn::connect(broker.addr).await;
            let tune = c.start_and_login("PLAIN", &raw::plain("guest", "guest")).await;
            c.send(&raw::tune_ok_frame(tune.channel_max, frame_max, 0)).await;
            c.send(&raw::method_frame(0, 10, 40, Args::new().sstr("/").sstr("").octet(0))).await;
            let close = c.expect_connection_close().await;
            assert_eq!((close.code, close.class_id, close.method_id), (530, 10, 31), "frame_max {frame_max}: {close:?}");
        })
        .await;
    }
    // The bounds themselves are fine.
    for frame_max in [4096u32, 131_072] {
        within("tune-ok", async {
            let mut c = RawConn::connect(broker.addr).await;
            let tune = c.start_and_login("PLAIN", &raw::plain("guest", "guest")).await;
            c.send(&raw::tune_ok_frame(tune.channel_max, frame_max, 0)).await;
            c.open_vhost("/").await;
            c.open_channel(1).await;
        })
        .await;
    }
    assert_alive(&broker).await;
}

#[tokio::test]
async fn tune_ok_channel_max_above_the_servers_gets_530() {
    let broker = start().await;
    within("tune-ok", async {
        let mut c = RawConn::connect(broker.addr).await;
        let tune = c.start_and_login("PLAIN", &raw::plain("guest", "guest")).await;
        c.send(&raw::tune_ok_frame(2048, tune.frame_max, 0)).await;
        c.send(&raw::method_frame(0, 10, 40, Args::new().sstr("/").sstr("").octet(0))).await;
        let close = c.expect_connection_close().await;
        assert_eq!((close.code, close.class_id, close.method_id), (530, 10, 31), "{close:?}");
    })
    .await;
}

#[tokio::test]
async fn negotiated_frame_max_binds_the_client() {
    // A client that negotiated 4096 may not send a bigger frame, though the server's own
    // limit is 131072.
    let broker = start().await;
    within("small frame_max", async {
        let mut c = RawConn::connect(broker.addr).await;
        let tune = c.start_and_login("PLAIN", &raw::plain("guest", "guest")).await;
        c.send(&raw::tune_ok_frame(tune.channel_max, 4096, 0)).await;
        c.open_vhost("/").await;
        c.open_channel(1).await;
        c.send(&raw::publish_frame(1, "", "nowhere", 0)).await;
        c.send(&raw::header_frame(1, 5000)).await;
        c.send(&raw::body_frame(1, &[b'x'; 5000])).await;
        let close = c.expect_connection_close().await;
        assert_eq!(close.code, 501, "{close:?}");
    })
    .await;
    assert_alive(&broker).await;
}

#[tokio::test]
async fn pipelined_handshake_tail_and_first_commands() {
    // tune-ok, connection.open, channel.open and a queue.declare in one write: whatever the
    // handshake reads past connection.open must reach the frame loop.
    let broker = start().await;
    within("pipelined", async {
        let mut c = RawConn::connect(broker.addr).await;
        let tune = c.start_and_login("PLAIN", &raw::plain("guest", "guest")).await;
        let mut bytes = raw::tune_ok_frame(tune.channel_max, tune.frame_max, 0);
        bytes.extend_from_slice(&raw::method_frame(0, 10, 40, Args::new().sstr("/").sstr("").octet(0)));
        bytes.extend_from_slice(&raw::method_frame(1, 20, 10, Args::new().sstr("")));
        bytes.extend_from_slice(&raw::queue_declare_frame(1, b"pipelined", 0, &Table::new().encode()));
        c.send(&bytes).await;
        c.expect_method(0, 10, 41).await;
        c.expect_method(1, 20, 11).await;
        c.expect_method(1, 50, 11).await;
    })
    .await;
}

#[tokio::test]
async fn handshake_and_commands_one_octet_at_a_time() {
    let broker = start().await;
    within("trickle", async {
        let mut c = RawConn::connect(broker.addr).await;
        async fn trickle(c: &mut RawConn, bytes: &[u8]) {
            for b in bytes {
                c.send(&[*b]).await;
                tokio::task::yield_now().await;
            }
        }
        trickle(&mut c, raw::PROTOCOL_HEADER).await;
        c.expect_method(0, 10, 10).await;
        let start_ok = raw::method_frame(
            0,
            10,
            11,
            Args::new().raw(&raw::client_properties()).sstr("PLAIN").lstr(raw::plain("guest", "guest")).sstr("en_US"),
        );
        trickle(&mut c, &start_ok).await;
        c.expect_method(0, 10, 30).await;
        let mut rest = raw::tune_ok_frame(2047, 131_072, 0);
        rest.extend_from_slice(&raw::method_frame(0, 10, 40, Args::new().sstr("/").sstr("").octet(0)));
        rest.extend_from_slice(&raw::method_frame(1, 20, 10, Args::new().sstr("")));
        rest.extend_from_slice(&raw::queue_declare_frame(1, b"trickle", 0, &Table::new().encode()));
        rest.extend_from_slice(&raw::publish_frame(1, "", "trickle", 0));
        rest.extend_from_slice(&raw::header_frame(1, 5));
        rest.extend_from_slice(&raw::body_frame(1, b"hello"));
        rest.extend_from_slice(&raw::method_frame(1, 60, 70, Args::new().short(0).sstr("trickle").octet(1)));
        trickle(&mut c, &rest).await;
        c.expect_method(0, 10, 41).await;
        c.expect_method(1, 20, 11).await;
        c.expect_method(1, 50, 11).await;
        c.expect_method(1, 60, 71).await;
        let h = c.next_frame().await;
        assert_eq!((h.kind, h.channel), (2, 1));
        let b = c.next_frame().await;
        assert_eq!((b.kind, b.payload.as_slice()), (3, &b"hello"[..]));
    })
    .await;
}

#[tokio::test]
async fn silent_client_is_dropped_after_the_handshake_timeout() {
    let broker = start_with(|c| c.handshake_timeout = 1).await;
    // Sends nothing at all.
    let t = Instant::now();
    let mut c = RawConn::connect(broker.addr).await;
    match c.read_within(Duration::from_secs(4)).await {
        Read::Closed => {}
        other => panic!("expected the socket to close, got {other:?}"),
    }
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(800) && waited < Duration::from_secs(3), "closed after {waited:?}");

    // Sends the header, then nothing after connection.start.
    let t = Instant::now();
    let mut c = RawConn::connect(broker.addr).await;
    c.send(raw::PROTOCOL_HEADER).await;
    c.expect_method(0, 10, 10).await;
    match c.read_within(Duration::from_secs(4)).await {
        Read::Closed => {}
        other => panic!("expected the socket to close, got {other:?}"),
    }
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(800) && waited < Duration::from_secs(3), "closed after {waited:?}");

    // Stalls after tune.
    let mut c = RawConn::connect(broker.addr).await;
    c.start_and_login("PLAIN", &raw::plain("guest", "guest")).await;
    match c.read_within(Duration::from_secs(4)).await {
        Read::Closed => {}
        other => panic!("expected the socket to close, got {other:?}"),
    }
    assert_alive(&broker).await;
}

#[tokio::test]
async fn handshake_timeout_does_not_apply_to_an_open_connection() {
    let broker = start_with(|c| c.handshake_timeout = 1).await;
    let mut c = within("handshake", RawConn::handshake(broker.addr)).await;
    c.expect_silence(Duration::from_millis(1600)).await;
    within("still open", c.open_channel(1)).await;
}

#[tokio::test]
async fn server_sends_heartbeats_at_the_negotiated_interval() {
    let broker = start().await;
    let mut c = RawConn::connect(broker.addr).await;
    let tune = within("login", c.start_and_login("PLAIN", &raw::plain("guest", "guest"))).await;
    c.send(&raw::tune_ok_frame(tune.channel_max, tune.frame_max, 1)).await;
    within("open", c.open_vhost("/")).await;
    // Over 2.5 s, keep sending our heartbeats and count the broker's.
    let t = Instant::now();
    let mut beats = 0;
    let mut next_send = Instant::now();
    while t.elapsed() < Duration::from_millis(2500) {
        if Instant::now() >= next_send {
            c.send(&raw::heartbeat_frame(0)).await;
            next_send += Duration::from_millis(400);
        }
        match c.read_within(Duration::from_millis(100)).await {
            Read::Frame(f) => {
                assert_eq!((f.kind, f.channel, f.payload.len()), (8, 0, 0), "unexpected frame {f:?}");
                beats += 1;
            }
            Read::Timeout => {}
            Read::Closed => panic!("broker closed a connection that sent heartbeats"),
        }
    }
    assert!(beats >= 2, "only {beats} heartbeats in 2.5 s with heartbeat = 1");
    // The connection is alive.
    within("channel", c.open_channel(1)).await;
}

#[tokio::test]
async fn lapin_connection_with_one_second_heartbeats_stays_up() {
    let broker = start_with(|c| c.heartbeat = 1).await;
    let (conn, ch) = within("connect", broker.channel()).await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(conn.status().connected());
    declare(&ch, "after-idle").await;
}

#[tokio::test]
async fn heartbeat_zero_in_tune_ok_turns_heartbeats_off() {
    // The server proposes 1 s; the client answers 0: no heartbeats either way, and an idle
    // client is not dropped.
    let broker = start_with(|c| c.heartbeat = 1).await;
    let mut c = RawConn::connect(broker.addr).await;
    let tune = within("login", c.start_and_login("PLAIN", &raw::plain("guest", "guest"))).await;
    assert_eq!(tune.heartbeat, 1);
    c.send(&raw::tune_ok_frame(tune.channel_max, tune.frame_max, 0)).await;
    within("open", c.open_vhost("/")).await;
    match c.read_within(Duration::from_millis(2500)).await {
        Read::Timeout => {}
        Read::Frame(f) => panic!("heartbeats are off, got {}", f.describe()),
        Read::Closed => panic!("idle client dropped with heartbeats off"),
    }
    within("still open", c.open_channel(1)).await;
}

#[tokio::test]
async fn silent_client_is_dropped_after_two_heartbeat_intervals() {
    let broker = start().await;
    let mut c = RawConn::connect(broker.addr).await;
    let tune = within("login", c.start_and_login("PLAIN", &raw::plain("guest", "guest"))).await;
    c.send(&raw::tune_ok_frame(tune.channel_max, tune.frame_max, 1)).await;
    within("open", c.open_vhost("/")).await;
    let t = Instant::now();
    loop {
        match c.read_within(Duration::from_secs(5)).await {
            Read::Frame(f) => assert_eq!(f.kind, 8, "unexpected frame {f:?}"),
            Read::Closed => break,
            Read::Timeout => panic!("silent client not dropped after 5 s with heartbeat = 1"),
        }
    }
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_millis(4000), "dropped after {waited:?}");
    assert_alive(&broker).await;
}

#[tokio::test]
async fn client_close_gets_close_ok() {
    let broker = start().await;
    within("close", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.send(&raw::method_frame(0, 10, 50, Args::new().short(200).sstr("bye").short(0).short(0))).await;
        c.expect_method(0, 10, 51).await;
        c.expect_socket_closed().await;
    })
    .await;
    // And with lapin.
    let conn = within("connect", broker.connect()).await;
    within("close", conn.close(200, "bye".into())).await.expect("close-ok");
    assert!(!conn.status().connected());
}

#[tokio::test]
async fn update_secret_gets_update_secret_ok() {
    let broker = start().await;
    let (conn, ch) = within("connect", broker.channel()).await;
    within("update-secret", conn.update_secret("guest".into(), "token refresh".into())).await.expect("update-secret-ok");
    // The connection and its channel carry on.
    ch.queue_declare("after-update".into(), QueueDeclareOptions::default(), LapinTable::default()).await.expect("queue.declare");
    assert!(conn.status().connected());
}

/// RabbitMQ 3.13 (rabbit_access_control:update_state) passes the new secret only to auth
/// backends whose credentials expire; its internal user database never does, so any secret
/// is taken without a check and the connection keeps its user.
#[tokio::test]
async fn update_secret_on_a_raw_socket_is_not_checked_for_internal_users() {
    let broker = start().await;
    within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.send(&raw::method_frame(0, 10, 70, Args::new().lstr("not-the-password").sstr("rotation"))).await;
        c.expect_method(0, 10, 71).await;
        c.open_channel(1).await;
        c.send(&raw::method_frame(0, 10, 50, Args::new().short(200).sstr("bye").short(0).short(0))).await;
        c.expect_method(0, 10, 51).await;
    })
    .await;
}

#[tokio::test]
async fn exclusive_queue_is_dropped_with_its_connection() {
    let broker = start().await;
    within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.send(&raw::queue_declare_frame(1, b"excl-conn", 4, &Table::new().encode())).await;
        c.expect_method(1, 50, 11).await;
        c.send(&raw::method_frame(0, 10, 50, Args::new().short(200).sstr("bye").short(0).short(0))).await;
        c.expect_method(0, 10, 51).await;
        c.expect_socket_closed().await;
    })
    .await;
    let conn = broker.connect().await;
    within("exclusive queue gone", async {
        // The teardown runs after close-ok is written; poll with passive declares.
        loop {
            let ch = conn.create_channel().await.expect("channel");
            let passive = QueueDeclareOptions { passive: true, ..Default::default() };
            match ch.queue_declare("excl-conn".into(), passive, LapinTable::default()).await {
                Err(e) => {
                    assert_eq!(reply_code(&e), Some(404), "{e:?}");
                    break;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
}

#[tokio::test]
async fn server_named_queue_gets_an_amq_gen_name() {
    let broker = start().await;
    within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.send(&raw::queue_declare_frame(1, b"", 4, &Table::new().encode())).await;
        let ok = c.expect_method(1, 50, 11).await;
        let mut pos = 0;
        let name = short_str(ok.args(), &mut pos);
        assert!(name.starts_with("amq.gen-"), "{name}");
        // A client may not pick such a name itself.
        c.send(&raw::queue_declare_frame(1, b"amq.gen-mine", 0, &Table::new().encode())).await;
        let close = c.expect_channel_close(1).await;
        assert_eq!((close.code, close.class_id, close.method_id), (403, 50, 10), "{close:?}");
    })
    .await;
    let (_conn, ch) = broker.channel().await;
    let q = within("declare", ch.queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, LapinTable::default()))
        .await
        .expect("server-named queue.declare");
    assert!(q.name().as_str().starts_with("amq.gen-"), "{:?}", q.name());
    publish(&ch, "", q.name().as_str(), b"x").await;
    within("get", async {
        while get_body(&ch, q.name().as_str()).await.is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// The user, password and vhost a compose file sets for the rabbitmq image (here through
/// the settings they map to): the application connects to its own vhost as its own user;
/// the vhost "/" no longer exists and guest is gone.
#[tokio::test]
async fn default_user_password_and_vhost_from_settings() {
    let broker = start_with(|c| {
        c.default_user = "app".into();
        c.default_pass = "secret".into();
        c.default_vhost = "orders".into();
    })
    .await;
    let conn = lapin::Connection::connect(&format!("amqp://app:secret@{}/orders", broker.addr), lapin::ConnectionProperties::default()).await.expect("app on orders");
    let ch = conn.create_channel().await.expect("channel");
    declare(&ch, "work").await;
    let err = lapin::Connection::connect(&format!("amqp://app:secret@{}/%2f", broker.addr), lapin::ConnectionProperties::default()).await.expect_err("no vhost /");
    assert_eq!(reply_code(&err), Some(530), "{err:?}");
    let err = lapin::Connection::connect(&format!("amqp://guest:guest@{}/orders", broker.addr), lapin::ConnectionProperties::default()).await.expect_err("no guest");
    assert!(matches!(reply_code(&err), Some(403) | None), "{err:?}");
}
