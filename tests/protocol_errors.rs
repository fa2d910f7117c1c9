//! Hostile and malformed input on raw sockets: every case must end in the right close
//! method (code, and the failing class/method where one is to blame) and leave the broker
//! serving everyone else.

mod common;

use std::time::Duration;

use common::raw::{self, Args, Close, RawConn, Table};
use common::*;

/// Handshakes, opens channel 1, sends `bytes`, and returns the connection.close that must
/// follow (after answering close-ok and seeing the socket close). Then checks that a fresh
/// lapin connection still works.
async fn connection_error(broker: &TestBroker, bytes: &[u8]) -> Close {
    let close = within("connection error", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.send(bytes).await;
        c.expect_connection_close().await
    })
    .await;
    assert_alive(broker).await;
    close
}

/// A queue.declare of `name` with an empty arguments table.
fn declare_frame(channel: u16, name: &[u8]) -> Vec<u8> {
    raw::queue_declare_frame(channel, name, 0, &Table::new().encode())
}

/// `depth` tables nested as {"a": {"a": ... {}}}.
fn nested_table(depth: usize) -> Vec<u8> {
    let mut inner: Vec<u8> = 0u32.to_be_bytes().to_vec();
    for _ in 0..depth {
        let mut t = ((3 + inner.len()) as u32).to_be_bytes().to_vec();
        t.extend_from_slice(&[1, b'a', b'F']);
        t.extend_from_slice(&inner);
        inner = t;
    }
    inner
}

#[tokio::test]
async fn frame_above_frame_max_is_501_without_waiting_for_the_payload() {
    let broker = start().await;
    // Only the header of a 10 MB frame: the broker must answer from the header alone.
    let mut header = vec![1u8];
    header.extend_from_slice(&1u16.to_be_bytes());
    header.extend_from_slice(&(10u32 * 1024 * 1024).to_be_bytes());
    let close = connection_error(&broker, &header).await;
    assert_eq!(close.code, 501, "{close:?}");
    assert!(close.text.starts_with("FRAME_ERROR"), "{close:?}");
}

#[tokio::test]
async fn frame_payload_one_octet_above_frame_max_is_501() {
    let broker = start().await;
    // As RabbitMQ (rabbit_reader's FRAME_SIZE_FUDGE): a payload of frame_max octets is
    // accepted, though the frame is then 8 octets longer (rabbitpy sends such body frames);
    // one octet more is refused.
    let fits = raw::frame(3, 1, &vec![7u8; 131_072]);
    let too_big = raw::frame(3, 1, &vec![7u8; 131_073]);
    within("fits", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.send(&declare_frame(1, b"max-frame")).await;
        c.expect_method(1, 50, 11).await;
        c.send(&raw::publish_frame(1, "", "max-frame", 0)).await;
        c.send(&raw::header_frame(1, 131_072)).await;
        c.send(&fits).await;
        // Redeclaring tells the message count: the message was taken whole.
        c.send(&declare_frame(1, b"max-frame")).await;
        let ok = c.expect_method(1, 50, 11).await;
        let a = ok.args();
        let name_len = usize::from(a[0]);
        assert_eq!(a[1 + name_len..5 + name_len], 1u32.to_be_bytes(), "message count in {}", ok.describe());
    })
    .await;
    let close = within("too big", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.send(&raw::publish_frame(1, "", "nowhere", 0)).await;
        c.send(&raw::header_frame(1, 131_073)).await;
        c.send(&too_big).await;
        c.expect_connection_close().await
    })
    .await;
    assert_eq!(close.code, 501, "{close:?}");
    assert_eq!(close.text, "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,131073,131064}");
    assert_alive(&broker).await;
}

#[tokio::test]
async fn bad_frame_end_is_501() {
    let broker = start().await;
    let mut bytes = raw::frame_with_end(1, 1, &raw::method_payload(50, 10, &Args::new().short(0).sstr("q").octet(0).empty_table()), 0x00);
    // More octets after it must not be taken as frames.
    bytes.extend_from_slice(&declare_frame(1, b"q2"));
    let close = connection_error(&broker, &bytes).await;
    assert_eq!(close.code, 501, "{close:?}");
}

#[tokio::test]
async fn unknown_frame_type_is_501() {
    let broker = start().await;
    for kind in [0u8, 4, 9, 0xCE, 0xFF] {
        let close = connection_error(&broker, &raw::frame(kind, 1, b"x")).await;
        assert_eq!(close.code, 501, "type {kind}: {close:?}");
    }
}

#[tokio::test]
async fn protocol_header_after_the_handshake_is_501() {
    let broker = start().await;
    let close = connection_error(&broker, raw::PROTOCOL_HEADER).await;
    assert_eq!(close.code, 501, "{close:?}");
}

#[tokio::test]
async fn method_frame_too_short_for_its_ids_is_an_error() {
    let broker = start().await;
    let close = connection_error(&broker, &raw::frame(1, 1, &[0, 50])).await;
    assert_eq!(close.code, 501, "{close:?}");
    let close = connection_error(&broker, &raw::frame(1, 0, &[0])).await;
    assert_eq!(close.code, 501, "{close:?}");
}

#[tokio::test]
async fn unknown_class_is_540_naming_the_class() {
    let broker = start().await;
    for channel in [1u16, 0] {
        let close = connection_error(&broker, &raw::method_frame(channel, 99, 10, Args::new())).await;
        assert_eq!((close.code, close.class_id, close.method_id), (540, 99, 10), "channel {channel}: {close:?}");
        assert!(close.text.starts_with("NOT_IMPLEMENTED"), "{close:?}");
    }
    // A known class with an unknown method.
    let close = connection_error(&broker, &raw::method_frame(1, 50, 99, Args::new())).await;
    assert_eq!((close.code, close.class_id, close.method_id), (540, 50, 99), "{close:?}");
}

#[tokio::test]
async fn truncated_method_arguments_are_502() {
    let broker = start().await;
    // queue.declare: reserved short, then a short string announcing 5 octets with 1 present.
    let close = connection_error(&broker, &raw::method_frame(1, 50, 10, Args::new().short(0).octet(5).raw(b"a"))).await;
    assert_eq!((close.code, close.class_id, close.method_id), (502, 50, 10), "{close:?}");
    // basic.ack with half a delivery tag.
    let close = connection_error(&broker, &raw::method_frame(1, 60, 80, Args::new().long(1))).await;
    assert_eq!((close.code, close.class_id, close.method_id), (502, 60, 80), "{close:?}");
    // connection.close with nothing after its reply code.
    let close = connection_error(&broker, &raw::method_frame(0, 10, 50, Args::new().short(200))).await;
    assert_eq!((close.code, close.class_id, close.method_id), (502, 10, 50), "{close:?}");
}

#[tokio::test]
async fn invalid_utf8_in_a_short_string_is_502() {
    let broker = start().await;
    let close = connection_error(&broker, &declare_frame(1, &[b'q', 0xFF, 0xFE])).await;
    assert_eq!((close.code, close.class_id, close.method_id), (502, 50, 10), "{close:?}");
    assert!(close.text.starts_with("SYNTAX_ERROR"), "{close:?}");
}

#[tokio::test]
async fn deeply_nested_arguments_are_502_and_others_are_unaffected() {
    let broker = start().await;
    // A bystander connected before the attack, used after it.
    let (_bystander_conn, bystander) = within("bystander", broker.channel()).await;
    declare(&bystander, "bystander").await;

    let table = nested_table(10_000);
    let frame = raw::queue_declare_frame(1, b"deep", 0, &table);
    assert!(frame.len() < 131_072 && frame.len() > 60_000, "frame of {} octets", frame.len());
    let close = connection_error(&broker, &frame).await;
    assert_eq!((close.code, close.class_id, close.method_id), (502, 50, 10), "{close:?}");

    // The same attack in basic.consume, exchange.declare and the content header's headers.
    let consume = raw::method_frame(1, 60, 20, Args::new().short(0).sstr("bystander").sstr("").octet(0).table(&table));
    let close = connection_error(&broker, &consume).await;
    assert_eq!((close.code, close.class_id, close.method_id), (502, 60, 20), "{close:?}");
    let exchange = raw::method_frame(1, 40, 10, Args::new().short(0).sstr("deep-x").sstr("headers").octet(0).table(&table));
    let close = connection_error(&broker, &exchange).await;
    assert_eq!((close.code, close.class_id, close.method_id), (502, 40, 10), "{close:?}");
    let mut header = Vec::new();
    header.extend_from_slice(&60u16.to_be_bytes());
    header.extend_from_slice(&0u16.to_be_bytes());
    header.extend_from_slice(&0u64.to_be_bytes());
    header.extend_from_slice(&0x2000u16.to_be_bytes()); // headers present
    header.extend_from_slice(&table);
    let mut bytes = raw::publish_frame(1, "", "bystander", 0);
    bytes.extend_from_slice(&raw::frame(2, 1, &header));
    let close = connection_error(&broker, &bytes).await;
    assert_eq!(close.code, 502, "{close:?}");

    // The bystander's connection never noticed.
    publish(&bystander, "", "bystander", b"still serving").await;
    let got = within("get", async {
        loop {
            if let Some(b) = get_body(&bystander, "bystander").await {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(got, b"still serving");
}

#[tokio::test]
async fn nesting_within_the_limit_is_accepted() {
    let broker = start().await;
    within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.send(&raw::queue_declare_frame(1, b"nested-ok", 0, &nested_table(50))).await;
        c.expect_method(1, 50, 11).await;
    })
    .await;
}

#[tokio::test]
async fn content_header_without_publish_is_505() {
    let broker = start().await;
    let close = connection_error(&broker, &raw::header_frame(1, 3)).await;
    assert_eq!(close.code, 505, "{close:?}");
    assert!(close.text.starts_with("UNEXPECTED_FRAME"), "{close:?}");
    // A body frame out of nowhere too.
    let close = connection_error(&broker, &raw::body_frame(1, b"abc")).await;
    assert_eq!(close.code, 505, "{close:?}");
}

#[tokio::test]
async fn content_on_channel_zero_is_505() {
    let broker = start().await;
    let close = connection_error(&broker, &raw::header_frame(0, 3)).await;
    assert_eq!(close.code, 505, "{close:?}");
    let close = connection_error(&broker, &raw::body_frame(0, b"abc")).await;
    assert_eq!(close.code, 505, "{close:?}");
}

#[tokio::test]
async fn content_on_an_unopened_channel_is_a_connection_error() {
    // Warren says 504 CHANNEL_ERROR, RabbitMQ 505 UNEXPECTED_FRAME; both close the connection.
    let broker = start().await;
    let close = connection_error(&broker, &raw::header_frame(7, 3)).await;
    assert!([504, 505].contains(&close.code), "{close:?}");
    let close = connection_error(&broker, &raw::body_frame(7, b"abc")).await;
    assert!([504, 505].contains(&close.code), "{close:?}");
}

#[tokio::test]
async fn channel_methods_on_channel_zero_and_connection_methods_out_of_order() {
    // RabbitMQ: 504 "unexpected method in connection state running"; Warren: 503.
    let broker = start().await;
    let close = connection_error(&broker, &declare_frame(0, b"q")).await;
    assert!([503, 504].contains(&close.code) && (close.class_id, close.method_id) == (50, 10), "{close:?}");
    let close = connection_error(&broker, &raw::method_frame(0, 10, 40, Args::new().sstr("/").sstr("").octet(0))).await;
    assert!([503, 504].contains(&close.code) && (close.class_id, close.method_id) == (10, 40), "{close:?}");
    // channel.close-ok for a channel nobody is closing: 503 as in RabbitMQ.
    let close = connection_error(&broker, &raw::method_frame(1, 20, 41, Args::new())).await;
    assert_eq!((close.code, close.class_id, close.method_id), (503, 20, 41), "{close:?}");
}

#[tokio::test]
async fn client_that_never_answers_close_ok_is_dropped() {
    let broker = start().await;
    let t = within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.send(&raw::publish_frame(1, "", "q", 2)).await;
        let f = c.next_frame().await;
        assert_eq!(f.ids(), Some((10, 50)), "{}", f.describe());
        let t = std::time::Instant::now();
        c.expect_socket_closed().await;
        t.elapsed()
    })
    .await;
    assert!(t < Duration::from_millis(4500), "dropped after {t:?}");
    assert_alive(&broker).await;
}

#[tokio::test]
async fn method_in_the_middle_of_content_is_505() {
    let broker = start().await;
    let mut bytes = raw::publish_frame(1, "", "nowhere", 0);
    bytes.extend_from_slice(&raw::header_frame(1, 5));
    bytes.extend_from_slice(&declare_frame(1, b"q"));
    let close = connection_error(&broker, &bytes).await;
    // RabbitMQ names the publish whose content was cut; naming the intruder is fine too.
    assert_eq!(close.code, 505, "{close:?}");
    assert!([(50, 10), (60, 40)].contains(&(close.class_id, close.method_id)), "{close:?}");
    // Between publish and its header, too.
    let mut bytes = raw::publish_frame(1, "", "nowhere", 0);
    bytes.extend_from_slice(&raw::publish_frame(1, "", "nowhere", 0));
    let close = connection_error(&broker, &bytes).await;
    assert_eq!((close.code, close.class_id, close.method_id), (505, 60, 40), "{close:?}");
}

#[tokio::test]
async fn body_larger_than_announced_is_501() {
    let broker = start().await;
    let mut bytes = raw::publish_frame(1, "", "nowhere", 0);
    bytes.extend_from_slice(&raw::header_frame(1, 5));
    bytes.extend_from_slice(&raw::body_frame(1, b"0123456789"));
    let close = connection_error(&broker, &bytes).await;
    assert_eq!(close.code, 501, "{close:?}");
    // Over several frames.
    let mut bytes = raw::publish_frame(1, "", "nowhere", 0);
    bytes.extend_from_slice(&raw::header_frame(1, 5));
    bytes.extend_from_slice(&raw::body_frame(1, b"012"));
    bytes.extend_from_slice(&raw::body_frame(1, b"345"));
    let close = connection_error(&broker, &bytes).await;
    assert_eq!(close.code, 501, "{close:?}");
}

#[tokio::test]
async fn message_above_max_message_size_is_406_on_the_channel_only() {
    let broker = start_with(|c| c.max_message_size = 1000).await;
    within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.open_channel(2).await;
        c.send(&declare_frame(1, b"sized")).await;
        c.expect_method(1, 50, 11).await;

        // Exactly the limit is fine.
        c.send(&raw::publish_frame(1, "", "sized", 0)).await;
        c.send(&raw::header_frame(1, 1000)).await;
        c.send(&raw::body_frame(1, &[b'a'; 1000])).await;

        // One octet more: channel.close 406 naming basic.publish; the body is dropped.
        c.send(&raw::publish_frame(1, "", "sized", 0)).await;
        c.send(&raw::header_frame(1, 1001)).await;
        c.send(&raw::body_frame(1, &[b'b'; 1001])).await;
        let close = c.expect_channel_close(1).await;
        assert_eq!((close.code, close.class_id, close.method_id), (406, 60, 40), "{close:?}");
        assert!(close.text.starts_with("PRECONDITION_FAILED"), "{close:?}");

        // The connection and channel 2 are fine.
        c.send(&raw::method_frame(2, 60, 70, Args::new().short(0).sstr("sized").octet(1))).await;
        let get_ok = c.expect_method(2, 60, 71).await;
        let message_count = u32::from_be_bytes(get_ok.args()[get_ok.args().len() - 4..].try_into().expect("4"));
        assert_eq!(message_count, 0, "the oversized message must not have been queued");
        let h = c.next_frame().await;
        assert_eq!((h.kind, h.channel), (2, 2));
        let mut body = Vec::new();
        while body.len() < 1000 {
            let b = c.next_frame().await;
            assert_eq!((b.kind, b.channel), (3, 2));
            body.extend_from_slice(&b.payload);
        }
        assert_eq!(body, vec![b'a'; 1000]);

        // Channel 1 comes back after close-ok.
        c.send(&raw::method_frame(1, 20, 41, Args::new())).await;
        c.open_channel(1).await;
        c.send(&raw::publish_frame(1, "", "sized", 0)).await;
        c.send(&raw::header_frame(1, 2)).await;
        c.send(&raw::body_frame(1, b"ok")).await;
        c.send(&raw::method_frame(1, 60, 70, Args::new().short(0).sstr("sized").octet(1))).await;
        c.expect_method(1, 60, 71).await;
        c.next_frame().await;
        let b = c.next_frame().await;
        assert_eq!(b.payload, b"ok");
    })
    .await;
    assert_alive(&broker).await;
}

#[tokio::test]
async fn oversized_message_with_lapin_closes_the_channel_not_the_connection() {
    let broker = start_with(|c| c.max_message_size = 1000).await;
    let (conn, ch) = within("connect", broker.channel()).await;
    declare(&ch, "sized-lapin").await;
    let _ = ch
        .basic_publish("".into(), "sized-lapin".into(), Default::default(), &[0u8; 2000], Default::default())
        .await;
    within("channel closed", async {
        while ch.status().connected() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(conn.status().connected());
    let ch2 = within("open", conn.create_channel()).await.expect("channel after 406");
    publish(&ch2, "", "sized-lapin", b"small").await;
    let got = within("get", async {
        loop {
            if let Some(b) = get_body(&ch2, "sized-lapin").await {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(got, b"small");
}

#[tokio::test]
async fn heartbeat_on_a_non_zero_channel_is_505() {
    // rabbit_reader: a heartbeat on a channel is an unexpected frame, a connection error.
    let broker = start().await;
    let close = connection_error(&broker, &raw::heartbeat_frame(1)).await;
    assert_eq!((close.code, close.class_id, close.method_id), (505, 0, 0), "{close:?}");
    assert_eq!(close.text, "UNEXPECTED_FRAME - type 8, all octets = <<>>");
}

#[tokio::test]
async fn qos_with_a_prefetch_size_is_540() {
    // rabbit_channel refuses a limit in octets with a connection error.
    let broker = start().await;
    let qos = raw::method_frame(1, 60, 10, Args::new().long(65_536).short(10).octet(0));
    let close = connection_error(&broker, &qos).await;
    assert_eq!((close.code, close.class_id, close.method_id), (540, 60, 10), "{close:?}");
    assert_eq!(close.text, "NOT_IMPLEMENTED - prefetch_size!=0 (65536)");
}

#[tokio::test]
async fn publish_with_immediate_is_540() {
    let broker = start().await;
    let close = connection_error(&broker, &raw::publish_frame(1, "", "q", 2)).await;
    assert_eq!((close.code, close.class_id, close.method_id), (540, 60, 40), "{close:?}");
}

#[tokio::test]
async fn server_only_methods_from_a_client_are_rejected() {
    let broker = start().await;
    // basic.deliver and connection.start are never sent by clients.
    let close = connection_error(&broker, &raw::method_frame(1, 60, 60, Args::new().sstr("c").longlong(1).octet(0).sstr("").sstr("q"))).await;
    assert_eq!((close.code, close.class_id, close.method_id), (540, 60, 60), "{close:?}");
    let close = connection_error(&broker, &raw::method_frame(0, 10, 10, Args::new().octet(0).octet(9).empty_table().lstr("PLAIN").lstr("en_US"))).await;
    assert_eq!((close.code, close.class_id), (540, 10), "{close:?}");
}

#[tokio::test]
async fn frames_after_a_connection_close_are_ignored_until_close_ok() {
    let broker = start().await;
    within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.send(&raw::publish_frame(1, "", "q", 2)).await;
        let f = c.next_frame().await;
        assert_eq!(f.ids(), Some((10, 50)), "{}", f.describe());
        // Everything but close-ok is dropped now.
        c.send(&declare_frame(1, b"late")).await;
        c.send(&raw::method_frame(2, 20, 10, Args::new().sstr(""))).await;
        c.expect_silence(Duration::from_millis(200)).await;
        c.send(&raw::method_frame(0, 10, 51, Args::new())).await;
        c.expect_socket_closed().await;
    })
    .await;
    assert_alive(&broker).await;
}

#[tokio::test]
async fn crossing_connection_close_gets_close_ok() {
    // The broker closed the connection; the client closes it too before reading that.
    let broker = start().await;
    within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.send(&raw::publish_frame(1, "", "q", 2)).await;
        c.send(&raw::method_frame(0, 10, 50, Args::new().short(200).sstr("bye").short(0).short(0))).await;
        let f = c.next_frame().await;
        assert_eq!(f.close().map(|c| c.code), Some(540), "{}", f.describe());
        c.expect_method(0, 10, 51).await;
        c.expect_socket_closed().await;
    })
    .await;
    assert_alive(&broker).await;
}

#[tokio::test]
async fn garbage_before_the_header_completes_or_in_the_handshake() {
    let broker = start().await;
    // A method on channel 1 during the handshake.
    within("handshake", async {
        let mut c = RawConn::connect(broker.addr).await;
        c.send(raw::PROTOCOL_HEADER).await;
        c.expect_method(0, 10, 10).await;
        c.send(&raw::method_frame(1, 20, 10, Args::new().sstr(""))).await;
        let close = c.expect_connection_close().await;
        assert!(close.code >= 500, "{close:?}");
    })
    .await;
    // Random octets instead of start-ok.
    within("handshake", async {
        let mut c = RawConn::connect(broker.addr).await;
        c.send(raw::PROTOCOL_HEADER).await;
        c.expect_method(0, 10, 10).await;
        c.send(&[0xFFu8; 64]).await;
        let close = c.expect_connection_close().await;
        assert_eq!(close.code, 501, "{close:?}");
    })
    .await;
    // The header of a 10 MB frame instead of start-ok.
    within("handshake", async {
        let mut c = RawConn::connect(broker.addr).await;
        c.send(raw::PROTOCOL_HEADER).await;
        c.expect_method(0, 10, 10).await;
        let mut header = vec![1u8, 0, 0];
        header.extend_from_slice(&(10u32 * 1024 * 1024).to_be_bytes());
        c.send(&header).await;
        let close = c.expect_connection_close().await;
        assert_eq!(close.code, 501, "{close:?}");
    })
    .await;
    assert_alive(&broker).await;
}
