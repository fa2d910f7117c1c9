//! The `basic` class over the wire: message bodies of every size and properties untouched,
//! consumers (tags, exclusivity, cancel, round-robin, prefetch), acknowledgements
//! (ack, multiple, nack, reject, requeue order, errors), recover, get and no-ack.

mod common;

use std::time::Duration;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Consumer};

// ---------------------------------------------------------------------------------------
// Helpers local to this file.


async fn consume_with(ch: &Channel, queue: &str, tag: &str, opts: BasicConsumeOptions) -> Consumer {
    ch.basic_consume(queue.into(), tag.into(), opts, FieldTable::default()).await.unwrap_or_else(|e| panic!("basic.consume on {queue}: {e:?}"))
}

/// basic.get with manual ack.
async fn get(ch: &Channel, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    within("basic.get", ch.basic_get(queue.into(), BasicGetOptions { no_ack: false })).await.expect("basic.get")
}

/// A body of `len` bytes that is not periodic in any frame size.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + i / 251) % 253) as u8).collect()
}

/// A round trip on `ch`, so that everything sent before it has been handled.
async fn sync(ch: &Channel) {
    within("sync", ch.basic_qos(0, BasicQosOptions { global: true })).await.expect("basic.qos as a round trip");
}

// ---------------------------------------------------------------------------------------
// Bodies and properties.

async fn check_bodies(broker: &TestBroker, sizes: &[usize]) {
    let (conn, ch) = broker.channel().await;
    declare(&ch, "bodies").await;
    for &len in sizes {
        let body = pattern(len);
        publish(&ch, "", "bodies", &body).await;
        let got = get(&ch, "bodies").await.unwrap_or_else(|| panic!("no message for a {len}-byte body"));
        assert_eq!(got.delivery.data.len(), len, "basic.get of a {len}-byte body");
        assert!(got.delivery.data == body, "basic.get of a {len}-byte body: the bytes differ");
        got.delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let cch = conn.create_channel().await.unwrap();
    let mut c = consume(&cch, "bodies", "c").await;
    for &len in sizes {
        publish(&ch, "", "bodies", &pattern(len)).await;
    }
    for &len in sizes {
        let d = next(&mut c).await;
        assert_eq!(d.data.len(), len, "delivery of a {len}-byte body");
        assert!(d.data == pattern(len), "delivery of a {len}-byte body: the bytes differ");
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
}

#[tokio::test]
async fn bodies_of_every_size_arrive_intact() {
    let broker = start().await;
    let conn = broker.connect().await;
    let frame_max = conn.configuration().frame_max() as usize;
    assert!(frame_max >= 4096, "negotiated frame_max {frame_max}");
    // frame_max - 8 is the largest body that fits one body frame.
    check_bodies(&broker, &[0, 1, frame_max - 8, frame_max - 7, 2 * (frame_max - 8), 1 << 20, 10 << 20]).await;
}

#[tokio::test]
async fn bodies_split_by_a_small_frame_max_arrive_intact() {
    // lapin never negotiates below 8192 (its FRAME_MIN_SIZE), so that is the smallest usable.
    let broker = start_with(|c| c.frame_max = 8192).await;
    let conn = broker.connect().await;
    let frame_max = conn.configuration().frame_max() as usize;
    check_bodies(&broker, &[frame_max - 9, frame_max - 8, frame_max - 7, 100_000, 1 << 20]).await;
}

fn all_properties() -> BasicProperties {
    let mut inner = FieldTable::default();
    inner.insert("deep".into(), AMQPValue::LongString(LongString::from("yes")));
    inner.insert("n".into(), AMQPValue::LongLongInt(-5));
    inner.insert("empty".into(), AMQPValue::FieldTable(FieldTable::default()));
    let array = FieldArray::from(vec![
        AMQPValue::LongInt(1),
        AMQPValue::LongString(LongString::from("two")),
        AMQPValue::FieldTable(inner.clone()),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(true), AMQPValue::Void])),
        AMQPValue::FieldArray(FieldArray::default()),
    ]);
    let mut headers = FieldTable::default();
    for (k, v) in [
        ("bool", AMQPValue::Boolean(true)),
        ("i8", AMQPValue::ShortShortInt(-8)),
        ("u8", AMQPValue::ShortShortUInt(200)),
        ("i16", AMQPValue::ShortInt(-1600)),
        ("u16", AMQPValue::ShortUInt(60000)),
        ("i32", AMQPValue::LongInt(-320_000)),
        ("u32", AMQPValue::LongUInt(4_000_000_000)),
        ("i64", AMQPValue::LongLongInt(-64_000_000_000)),
        ("f32", AMQPValue::Float(1.5)),
        ("f64", AMQPValue::Double(-2.25)),
        ("decimal", AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 12345 })),
        ("text", AMQPValue::LongString(LongString::from("héllo wörld"))),
        ("array", AMQPValue::FieldArray(array)),
        ("timestamp", AMQPValue::Timestamp(1_700_000_000)),
        ("table", AMQPValue::FieldTable(inner)),
        ("bytes", AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 255]))),
        ("void", AMQPValue::Void),
    ] {
        headers.insert(k.into(), v);
    }
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("identity".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-1".into())
        .with_reply_to("reply.queue".into())
        .with_expiration("600000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_123)
        .with_type("test.kind".into())
        .with_user_id("guest".into())
        .with_app_id("warren-tests".into())
        .with_cluster_id("cluster-1".into())
}

#[tokio::test]
async fn all_properties_and_nested_headers_arrive_untouched() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "props").await;
    let props = all_properties();
    for body in [&b"via get"[..], b"via consume"] {
        ch.basic_publish("".into(), "props".into(), BasicPublishOptions::default(), body, props.clone()).await.expect("publish");
    }
    let got = get(&ch, "props").await.expect("message");
    assert_eq!(got.delivery.data, b"via get");
    assert_eq!(got.delivery.properties, props, "properties through basic.get");
    let cch = conn.create_channel().await.unwrap();
    let mut c = consume(&cch, "props", "c").await;
    let d = next(&mut c).await;
    assert_eq!(d.data, b"via consume");
    assert_eq!(d.properties, props, "properties through basic.deliver");
    // No properties at all stays no properties.
    publish(&ch, "", "props", b"bare").await;
    let d = next(&mut c).await;
    assert_eq!(d.properties, BasicProperties::default());
}

#[tokio::test]
async fn a_user_id_other_than_the_login_is_406() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let code = close_code(&conn, async {
        ch.basic_publish("".into(), "q".into(), BasicPublishOptions::default(), b"m", BasicProperties::default().with_user_id("mallory".into()))
            .await
            .expect("publish");
    })
    .await;
    assert_eq!(code, 406);
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(get_body(&ch, "q").await, None);
}

#[tokio::test]
async fn immediate_publish_is_540() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let code = close_code(&conn, async {
        ch.basic_publish("".into(), "q".into(), BasicPublishOptions { immediate: true, ..Default::default() }, b"m", BasicProperties::default())
            .await
            .expect("publish");
    })
    .await;
    // NOT_IMPLEMENTED, a connection error.
    assert_eq!(code, 540);
}

// ---------------------------------------------------------------------------------------
// Consumers.

#[tokio::test]
async fn consume_with_a_server_generated_tag() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let mut c = consume(&ch, "q", "").await;
    let tag = c.tag().as_str().to_owned();
    assert!(tag.starts_with("amq.ctag-") && tag.len() > "amq.ctag-".len(), "generated tag {tag:?}");
    let c2 = consume(&ch, "q", "").await;
    assert_ne!(c2.tag().as_str(), tag);
    publish(&ch, "", "q", b"m").await;
    publish(&ch, "", "q", b"n").await;
    let d = next(&mut c).await;
    assert_eq!(d.data, b"m");
    ch.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await.expect("cancel by the generated tag");
}

#[tokio::test]
async fn reusing_a_consumer_tag_on_a_channel_is_refused() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let _c = consume(&ch, "q", "same").await;
    let r = ch.basic_consume("q".into(), "same".into(), BasicConsumeOptions::default(), FieldTable::default()).await;
    assert_code(r, 530, "basic.consume with a tag in use");
}

#[tokio::test]
async fn exclusive_consumer_locks_out_others() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let _excl = consume_with(&ch, "q", "excl", BasicConsumeOptions { exclusive: true, ..Default::default() }).await;
    let other = conn.create_channel().await.unwrap();
    let r = other.basic_consume("q".into(), "second".into(), BasicConsumeOptions::default(), FieldTable::default()).await;
    assert_code(r, 403, "a second consumer beside an exclusive one");

    // And an exclusive consumer is refused on a queue that already has a consumer.
    declare(&ch, "q2").await;
    let _plain = consume(&ch, "q2", "plain").await;
    let other = conn.create_channel().await.unwrap();
    let r = other.basic_consume("q2".into(), "excl2".into(), BasicConsumeOptions { exclusive: true, ..Default::default() }, FieldTable::default()).await;
    assert_code(r, 403, "an exclusive consumer beside another consumer");

    // Once the exclusive consumer is cancelled, others are welcome.
    ch.basic_cancel("excl".into(), BasicCancelOptions::default()).await.expect("cancel");
    let other = conn.create_channel().await.unwrap();
    let _c = consume(&other, "q", "after").await;
}

#[tokio::test]
async fn cancel_stops_deliveries() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let mut c = consume(&ch, "q", "c").await;
    publish(&ch, "", "q", b"one").await;
    let d = next(&mut c).await;
    assert_eq!(d.data, b"one");
    d.ack(BasicAckOptions::default()).await.expect("ack");
    ch.basic_cancel("c".into(), BasicCancelOptions::default()).await.expect("cancel");
    publish(&ch, "", "q", b"two").await;
    let end = tokio::time::timeout(WAIT, c.next()).await.expect("the cancelled consumer's stream should end");
    assert!(end.is_none(), "expected the end of the stream, got {end:?}");
    // The message stayed in the queue.
    assert_eq!(get_body(&ch, "q").await.as_deref(), Some(&b"two"[..]));
    // Cancelling an unknown tag is not an error.
    ch.basic_cancel("nobody".into(), BasicCancelOptions::default()).await.expect("cancel of an unknown tag");
}

#[tokio::test]
async fn consumers_take_turns() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let cch = conn.create_channel().await.unwrap();
    let mut c1 = consume(&cch, "q", "c1").await;
    let mut c2 = consume(&cch, "q", "c2").await;
    for i in 0..6u8 {
        publish(&ch, "", "q", &[i]).await;
    }
    let mut got1 = Vec::new();
    let mut got2 = Vec::new();
    for _ in 0..3 {
        got1.push(next(&mut c1).await.data[0]);
        got2.push(next(&mut c2).await.data[0]);
    }
    assert_quiet(&mut c1).await;
    assert_quiet(&mut c2).await;
    let (evens, odds) = (vec![0, 2, 4], vec![1, 3, 5]);
    assert!(
        (got1 == evens && got2 == odds) || (got1 == odds && got2 == evens),
        "deliveries should alternate between the consumers: c1 got {got1:?}, c2 got {got2:?}"
    );
}

#[tokio::test]
async fn prefetch_one_holds_back_a_consumer_with_an_unacked_message() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let ch1 = conn.create_channel().await.unwrap();
    ch1.basic_qos(1, BasicQosOptions { global: false }).await.expect("qos");
    let mut c1 = consume(&ch1, "q", "c1").await;
    publish(&ch, "", "q", b"0").await;
    let held = next(&mut c1).await;
    assert_eq!(held.data, b"0");

    let ch2 = conn.create_channel().await.unwrap();
    ch2.basic_qos(1, BasicQosOptions { global: false }).await.expect("qos");
    let mut c2 = consume(&ch2, "q", "c2").await;
    for i in 1..=4u8 {
        publish(&ch, "", "q", &[b'0' + i]).await;
    }
    // c2 gets every one of them, one at a time, as it acks; c1 gets none.
    for i in 1..=4u8 {
        let d = next(&mut c2).await;
        assert_eq!(d.data, [b'0' + i]);
        assert_quiet(&mut c2).await;
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert_quiet(&mut c1).await;

    // Once c1 acks it is served again: with both free, each gets one of two messages.
    held.ack(BasicAckOptions::default()).await.expect("ack");
    publish(&ch, "", "q", b"5").await;
    publish(&ch, "", "q", b"6").await;
    let a = next(&mut c1).await;
    let b = next(&mut c2).await;
    let mut both = [a.data[0], b.data[0]];
    both.sort_unstable();
    assert_eq!(both, [b'5', b'6']);
}

#[tokio::test]
async fn global_prefetch_is_shared_by_the_channels_consumers() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q1").await;
    declare(&ch, "q2").await;
    let cch = conn.create_channel().await.unwrap();
    cch.basic_qos(2, BasicQosOptions { global: true }).await.expect("qos global");
    let mut c1 = consume(&cch, "q1", "c1").await;
    let mut c2 = consume(&cch, "q2", "c2").await;
    for i in 0..3u8 {
        publish(&ch, "", "q1", &[i]).await;
        publish(&ch, "", "q2", &[10 + i]).await;
    }
    sync(&ch).await;
    // Two unacked deliveries in all on the channel, whichever consumer has them.
    let mut held = Vec::new();
    loop {
        tokio::select! {
            Some(Ok(d)) = c1.next() => held.push(d),
            Some(Ok(d)) = c2.next() => held.push(d),
            _ = tokio::time::sleep(QUIET) => break,
        }
    }
    assert_eq!(held.len(), 2, "deliveries under a global prefetch of 2: {:?}", held.iter().map(|d| d.data.clone()).collect::<Vec<_>>());
    // Acking one lets exactly one more through.
    held.remove(0).ack(BasicAckOptions::default()).await.expect("ack");
    let mut more = 0;
    loop {
        tokio::select! {
            Some(Ok(d)) = c1.next() => { more += 1; held.push(d) }
            Some(Ok(d)) = c2.next() => { more += 1; held.push(d) }
            _ = tokio::time::sleep(QUIET) => break,
        }
    }
    assert_eq!(more, 1, "deliveries after one ack");
}

// ---------------------------------------------------------------------------------------
// Acknowledgements.

#[tokio::test]
async fn ack_multiple_settles_everything_up_to_the_tag() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    for i in 0..5u8 {
        publish(&ch, "", "q", &[i]).await;
    }
    let cch = conn.create_channel().await.unwrap();
    let mut c = consume(&cch, "q", "c").await;
    let mut ds = Vec::new();
    for i in 0..5u8 {
        let d = next(&mut c).await;
        assert_eq!(d.data, [i]);
        ds.push(d);
    }
    assert!(ds.windows(2).all(|w| w[0].delivery_tag < w[1].delivery_tag), "tags grow");
    ds[3].ack(BasicAckOptions { multiple: true }).await.expect("ack multiple");
    // The last delivery is still outstanding: closing the channel returns it alone.
    cch.close(200, "bye".into()).await.expect("close");
    let q = declare(&ch, "q").await;
    assert_eq!(q.message_count(), 1, "only the message after the multiple ack returns");
    let m = get(&ch, "q").await.expect("message");
    assert_eq!(m.delivery.data, [4]);
    assert!(m.delivery.redelivered);
}

#[tokio::test]
async fn ack_of_tag_zero_with_multiple_settles_everything() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    for i in 0..3u8 {
        publish(&ch, "", "q", &[i]).await;
    }
    let gch = conn.create_channel().await.unwrap();
    let _m0 = get(&gch, "q").await.expect("m0");
    let _m1 = get(&gch, "q").await.expect("m1");
    gch.basic_ack(0, BasicAckOptions { multiple: true }).await.expect("ack 0 multiple");
    gch.close(200, "bye".into()).await.expect("close");
    // Nothing was outstanding any more, so nothing came back.
    assert_eq!(declare(&ch, "q").await.message_count(), 1);
}

#[tokio::test]
async fn reject_and_nack_with_requeue_restore_the_original_order() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    for b in [b"a", b"b", b"c", b"d"] {
        publish(&ch, "", "q", b).await;
    }
    let a = get(&ch, "q").await.expect("a");
    let b = get(&ch, "q").await.expect("b");
    assert!(!a.delivery.redelivered && !b.delivery.redelivered);
    // Requeued in reverse order, they still come back in their original places.
    b.delivery.reject(BasicRejectOptions { requeue: true }).await.expect("reject b");
    a.delivery.nack(BasicNackOptions { requeue: true, multiple: false }).await.expect("nack a");
    let order: Vec<(Vec<u8>, bool)> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            let m = get(&ch, "q").await.expect("message");
            v.push((m.delivery.data.clone(), m.delivery.redelivered));
            m.delivery.ack(BasicAckOptions::default()).await.expect("ack");
        }
        v
    };
    assert_eq!(order, [(b"a".to_vec(), true), (b"b".to_vec(), true), (b"c".to_vec(), false), (b"d".to_vec(), false)]);
}

#[tokio::test]
async fn nack_multiple_with_requeue_returns_them_all_in_order() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    for i in 0..4u8 {
        publish(&ch, "", "q", &[i]).await;
    }
    let cch = conn.create_channel().await.unwrap();
    cch.basic_qos(3, BasicQosOptions::default()).await.expect("qos");
    let mut c = consume(&cch, "q", "c").await;
    let ds = [next(&mut c).await, next(&mut c).await, next(&mut c).await];
    assert_eq!(ds.iter().map(|d| d.data[0]).collect::<Vec<_>>(), [0, 1, 2]);
    assert_quiet(&mut c).await;
    cch.basic_cancel("c".into(), BasicCancelOptions::default()).await.expect("cancel");
    ds[1].nack(BasicNackOptions { multiple: true, requeue: true }).await.expect("nack multiple");
    sync(&cch).await;
    let mut got = Vec::new();
    while let Some(m) = get(&ch, "q").await {
        got.push((m.delivery.data[0], m.delivery.redelivered));
    }
    assert_eq!(got, [(0, true), (1, true), (3, false)]);
}

#[tokio::test]
async fn redelivery_to_a_consumer_is_flagged_and_in_order() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    for i in 0..3u8 {
        publish(&ch, "", "q", &[i]).await;
    }
    let cch = conn.create_channel().await.unwrap();
    cch.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let mut c = consume(&cch, "q", "c").await;
    let first = next(&mut c).await;
    assert_eq!((first.data[0], first.redelivered), (0, false));
    first.reject(BasicRejectOptions { requeue: true }).await.expect("reject");
    let again = next(&mut c).await;
    assert_eq!((again.data[0], again.redelivered), (0, true), "the rejected message comes back first");
    again.ack(BasicAckOptions::default()).await.expect("ack");
    let second = next(&mut c).await;
    assert_eq!((second.data[0], second.redelivered), (1, false));
    second.ack(BasicAckOptions::default()).await.expect("ack");
}

#[tokio::test]
async fn reject_without_requeue_drops_the_message() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish(&ch, "", "q", b"a").await;
    publish(&ch, "", "q", b"b").await;
    let a = get(&ch, "q").await.expect("a");
    a.delivery.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
    let b = get(&ch, "q").await.expect("b");
    b.delivery.nack(BasicNackOptions { requeue: false, multiple: false }).await.expect("nack");
    assert!(get(&ch, "q").await.is_none());
    assert_eq!(declare(&ch, "q").await.message_count(), 0);
}

#[tokio::test]
async fn double_ack_is_406() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish(&ch, "", "q", b"m").await;
    let m = get(&ch, "q").await.expect("message");
    let tag = m.delivery.delivery_tag;
    ch.basic_ack(tag, BasicAckOptions::default()).await.expect("first ack");
    let code = close_code(&conn, async {
        ch.basic_ack(tag, BasicAckOptions::default()).await.expect("second ack sent");
    })
    .await;
    assert_eq!(code, 406);
    // The connection is fine and the message is gone.
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(get_body(&ch, "q").await, None);
}

#[tokio::test]
async fn ack_of_an_unknown_tag_is_406() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish(&ch, "", "q", b"m").await;
    let m = get(&ch, "q").await.expect("message");
    let code = close_code(&conn, async {
        ch.basic_ack(m.delivery.delivery_tag + 100, BasicAckOptions::default()).await.expect("ack sent");
    })
    .await;
    assert_eq!(code, 406);
    // The channel's unacked message went back to the queue.
    let ch = conn.create_channel().await.unwrap();
    let back = get(&ch, "q").await.expect("requeued by the channel close");
    assert!(back.delivery.redelivered);
}

#[tokio::test]
async fn reject_of_an_unknown_tag_is_406() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    let code = close_code(&conn, async {
        ch.basic_reject(7, BasicRejectOptions { requeue: true }).await.expect("reject sent");
    })
    .await;
    assert_eq!(code, 406);
}

#[tokio::test]
async fn closing_a_channel_returns_its_unacked_messages() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    for i in 0..3u8 {
        publish(&ch, "", "q", &[i]).await;
    }
    let cch = conn.create_channel().await.unwrap();
    cch.basic_qos(2, BasicQosOptions::default()).await.expect("qos");
    let mut c = consume(&cch, "q", "c").await;
    let d0 = next(&mut c).await;
    let d1 = next(&mut c).await;
    assert_eq!((d0.data[0], d1.data[0]), (0, 1));
    cch.close(200, "bye".into()).await.expect("close");
    let mut got = Vec::new();
    while let Some(m) = get(&ch, "q").await {
        got.push((m.delivery.data[0], m.delivery.redelivered));
        m.delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert_eq!(got, [(0, true), (1, true), (2, false)]);
}

#[tokio::test]
async fn closing_the_connection_returns_its_unacked_messages() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish(&ch, "", "q", b"m").await;
    let (other, och) = broker.channel().await;
    let m = get(&och, "q").await.expect("message");
    assert!(!m.delivery.redelivered);
    other.close(200, "bye".into()).await.expect("close");
    let back = within("requeue", async {
        loop {
            if let Some(m) = get(&ch, "q").await {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(back.delivery.data, b"m");
    assert!(back.delivery.redelivered);
}

#[tokio::test]
async fn recover_requeues_unacked_messages() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    for i in 0..3u8 {
        publish(&ch, "", "q", &[i]).await;
    }
    let m0 = get(&ch, "q").await.expect("m0");
    let m1 = get(&ch, "q").await.expect("m1");
    assert_eq!((m0.delivery.data[0], m1.delivery.data[0]), (0, 1));
    ch.basic_recover(BasicRecoverOptions { requeue: true }).await.expect("basic.recover");
    let mut got = Vec::new();
    while let Some(m) = get(&ch, "q").await {
        got.push((m.delivery.data[0], m.delivery.redelivered));
        m.delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert_eq!(got, [(0, true), (1, true), (2, false)]);
}

/// RabbitMQ refuses `basic.recover` with requeue=false (540 NOT_IMPLEMENTED, which closes
/// the connection) instead of redelivering to the original consumer.
#[tokio::test]
async fn recover_without_requeue_is_540() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    let r = ch.basic_recover(BasicRecoverOptions { requeue: false }).await;
    assert_code(r, 540, "basic.recover requeue=false");
}

#[tokio::test]
async fn get_reports_the_remaining_count_and_get_empty() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    assert!(get(&ch, "q").await.is_none(), "get-empty on an empty queue");
    for i in 0..3u8 {
        publish(&ch, "", "q", &[i]).await;
    }
    for i in 0..3u8 {
        let m = get(&ch, "q").await.expect("message");
        assert_eq!(m.delivery.data, [i]);
        assert_eq!(m.message_count, u32::from(2 - i), "message_count after taking message {i}");
        assert_eq!(m.delivery.routing_key.as_str(), "q");
        assert_eq!(m.delivery.exchange.as_str(), "");
        m.delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert!(get(&ch, "q").await.is_none(), "get-empty after draining");
    let r = ch.basic_get("missing".into(), BasicGetOptions::default()).await;
    assert_code(r, 404, "basic.get on a missing queue");
}

#[tokio::test]
async fn no_ack_consumers_ignore_prefetch_and_lose_nothing_on_close() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let cch = conn.create_channel().await.unwrap();
    cch.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let mut c = consume_with(&cch, "q", "c", BasicConsumeOptions { no_ack: true, ..Default::default() }).await;
    for i in 0..5u8 {
        publish(&ch, "", "q", &[i]).await;
    }
    for i in 0..5u8 {
        let d = next(&mut c).await;
        assert_eq!(d.data, [i]);
    }
    cch.close(200, "bye".into()).await.expect("close");
    // Nothing was unacked, so nothing comes back.
    assert_eq!(declare(&ch, "q").await.message_count(), 0);
}

// ---------------------------------------------------------------------------------------
// Slow and stalled consumers.

/// 1 KiB messages, numbered in their first four bytes.
fn numbered(i: u32) -> Vec<u8> {
    let mut body = vec![0u8; 1024];
    body[..4].copy_from_slice(&i.to_be_bytes());
    body
}

/// Publishes `n` numbered messages to `queue` and waits until they are all enqueued.
async fn fill(ch: &Channel, queue: &str, n: u32) {
    for i in 0..n {
        publish(ch, "", queue, &numbered(i)).await;
    }
    within("the backlog to be enqueued", async {
        while declare(ch, queue).await.message_count() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A raw connection consuming `queue` on channel 1 (`no_ack` as given); returns once
/// consume-ok arrived.
async fn raw_consumer(broker: &TestBroker, queue: &str, no_ack: bool) -> raw::RawConn {
    let mut c = raw::RawConn::handshake(broker.addr).await;
    c.open_channel(1).await;
    let args = raw::Args::new().short(0).sstr(queue).sstr("raw").octet(if no_ack { 2 } else { 0 }).empty_table();
    c.send(&raw::method_frame(1, 60, 20, args)).await;
    c.expect_method(1, 60, 21).await;
    c
}

#[tokio::test]
async fn a_consumer_that_pauses_reading_gets_everything_once_it_reads_again() {
    // More than the broker buffers per connection plus what the sockets hold, so the
    // queue must hold messages back and resume when the client drains its socket.
    const N: u32 = 30_000;
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "paused").await;
    fill(&ch, "paused", N).await;
    let mut c = raw_consumer(&broker, "paused", true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seen = 0u32;
    while seen < N {
        match c.read_within(WAIT).await {
            raw::Read::Frame(f) if f.ids() == Some((60, 60)) => seen += 1,
            raw::Read::Frame(_) => {}
            other => panic!("after {seen} of {N} deliveries: {other:?}"),
        }
    }
    assert_eq!(declare(&ch, "paused").await.message_count(), 0);
}

#[tokio::test]
async fn a_stalled_consumer_does_not_hold_up_the_others_and_its_messages_return() {
    const N: u32 = 20_000;
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "stalled").await;
    fill(&ch, "stalled", N).await;
    // This client takes what fits in its socket and never reads or acks.
    let stalled = raw_consumer(&broker, "stalled", false).await;
    let cch = conn.create_channel().await.expect("channel");
    let mut c = consume(&cch, "stalled", "reader").await;
    let mut got = vec![false; N as usize];
    let mut count = 0u32;
    let mut take = |d: &lapin::message::Delivery| {
        let i = u32::from_be_bytes([d.data[0], d.data[1], d.data[2], d.data[3]]) as usize;
        assert!(!got[i], "message {i} delivered twice");
        got[i] = true;
    };
    // Everything the stalled client could not take reaches the reader...
    loop {
        match tokio::time::timeout(Duration::from_millis(500), c.next()).await {
            Ok(Some(Ok(d))) => {
                take(&d);
                count += 1;
                d.ack(BasicAckOptions::default()).await.expect("ack");
            }
            Ok(other) => panic!("reader: {other:?}"),
            Err(_) => break,
        }
    }
    assert!(count > 0 && count < N, "the reader got {count} of {N} while the other consumer stalled");
    // ...and when the stalled client goes away, its unacked messages come back redelivered.
    drop(stalled);
    while count < N {
        let d = next(&mut c).await;
        assert!(d.redelivered, "a message returned by the stalled consumer must be flagged redelivered");
        take(&d);
        count += 1;
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert_eq!(declare(&ch, "stalled").await.message_count(), 0);
}
