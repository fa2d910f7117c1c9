//! Restarts through a real client: what RabbitMQ keeps across a restart, Warren keeps, and
//! nothing else.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

#[tokio::test]
async fn durable_topology_and_confirmed_persistent_messages_survive_a_restart() {
    let broker = start().await;
    let dir = broker.data_dir.clone();
    {
        let (conn, ch) = broker.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm");
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.queue_declare("d.q".into(), durable, FieldTable::default()).await.expect("durable queue");
        ch.queue_declare("t.q".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("transient queue");
        ch.exchange_declare("d.x".into(), ExchangeKind::Topic, ExchangeDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await.expect("durable exchange");
        ch.exchange_declare("t.x".into(), ExchangeKind::Fanout, ExchangeDeclareOptions::default(), FieldTable::default()).await.expect("transient exchange");
        ch.queue_bind("d.q".into(), "d.x".into(), "a.#".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
        let mut headers = FieldTable::default();
        headers.insert("k".into(), AMQPValue::LongString("v".into()));
        for i in 0..10u8 {
            let props = persistent().with_headers(headers.clone()).with_message_id(format!("m{i}").into());
            ch.basic_publish("d.x".into(), "a.b".into(), BasicPublishOptions::default(), &[i; 100], props).await.expect("publish");
        }
        ch.basic_publish("".into(), "d.q".into(), BasicPublishOptions::default(), b"transient", BasicProperties::default()).await.expect("publish");
        ch.basic_publish("".into(), "t.q".into(), BasicPublishOptions::default(), b"in transient queue", persistent()).await.expect("publish");
        assert!(within("confirms", ch.wait_for_confirms()).await.expect("confirms").is_empty());
        // Ack the first two, leave the third delivered but unacked.
        for i in 0..3u8 {
            let m = within("get", ch.basic_get("d.q".into(), BasicGetOptions { no_ack: false })).await.expect("get").expect("message");
            assert_eq!(m.delivery.data, vec![i; 100]);
            if i < 2 {
                m.delivery.ack(BasicAckOptions::default()).await.expect("ack");
            }
        }
        // Let the acks reach the broker before it stops.
        ch.queue_declare("t.q".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.expect("sync");
        std::mem::forget(conn);
    }
    broker.stop().await;

    let broker = start_with(|c| c.data_dir = dir.clone()).await;
    let (_conn, ch) = broker.channel().await;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let q = ch.queue_declare("d.q".into(), passive, FieldTable::default()).await.expect("durable queue is back");
    assert_eq!(q.message_count(), 8, "10 persistent - 2 acked; the transient message is gone");
    let err = ch.queue_declare("t.q".into(), passive, FieldTable::default()).await.expect_err("transient queue is gone");
    assert_eq!(reply_code(&err), Some(404));
    let ch = broker.channel().await.1;
    ch.exchange_declare("d.x".into(), ExchangeKind::Topic, ExchangeDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.expect("durable exchange is back");
    let err = ch.exchange_declare("t.x".into(), ExchangeKind::Fanout, ExchangeDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.expect_err("transient exchange is gone");
    assert_eq!(reply_code(&err), Some(404));
    let ch = broker.channel().await.1;
    for i in 2..10u8 {
        let m = within("get", ch.basic_get("d.q".into(), BasicGetOptions { no_ack: true })).await.expect("get").expect("message");
        assert_eq!(m.delivery.data, vec![i; 100], "queue order kept");
        assert_eq!(m.delivery.redelivered, i == 2, "only the delivered-unacked one is redelivered");
        assert_eq!(m.delivery.properties.message_id().as_ref().map(|s| s.to_string()), Some(format!("m{i}")));
        assert_eq!(m.delivery.properties.delivery_mode(), &Some(2));
        let h = m.delivery.properties.headers().as_ref().expect("headers");
        assert_eq!(h.inner().get("k"), Some(&AMQPValue::LongString("v".into())));
    }
    assert!(get_body(&ch, "d.q").await.is_none(), "acked messages never come back");
    // The binding came back: routing through d.x still reaches d.q.
    ch.basic_publish("d.x".into(), "a.z".into(), BasicPublishOptions::default(), b"routed", BasicProperties::default()).await.expect("publish");
    let got = within("routed", async {
        loop {
            if let Some(b) = get_body(&ch, "d.q").await {
                return b;
            }
        }
    })
    .await;
    assert_eq!(got, b"routed");
    broker.stop().await;
}

/// With no memory allowance every persistent message of a durable queue's backlog is paged
/// out to the store; consumers and basic.get still see every message byte-identical and in
/// order, transient ones (which stay in memory) included, and requeued ones come back.
#[tokio::test]
async fn a_backlog_paged_out_to_the_store_is_delivered_intact_and_in_order() {
    let broker = start_with(|c| c.queue_memory_mb = 0).await;
    let (conn, ch) = broker.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm");
    ch.queue_declare("paged".into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await.expect("durable queue");
    let body = |i: usize| -> Vec<u8> {
        // Sizes from empty to several frames.
        let len = [0, 1, 100, 4096, 300_000][i % 5];
        (0..len).map(|j| ((i * 7 + j) % 251) as u8).collect()
    };
    const N: usize = 60;
    for i in 0..N {
        let props = if i % 6 == 5 { BasicProperties::default() } else { persistent() };
        let props = props.with_message_id(format!("m{i}").into());
        ch.basic_publish("".into(), "paged".into(), BasicPublishOptions::default(), &body(i), props).await.expect("publish");
    }
    assert!(within("confirms", ch.wait_for_confirms()).await.expect("confirms").is_empty());

    let cch = conn.create_channel().await.expect("channel");
    cch.basic_qos(5, BasicQosOptions::default()).await.expect("qos");
    let mut c = consume(&cch, "paged", "c").await;
    // The first five are rejected back to the queue, then everything is taken in order.
    for i in 0..5 {
        let d = next(&mut c).await;
        assert_eq!(d.properties.message_id().as_ref().map(|s| s.to_string()), Some(format!("m{i}")));
        d.reject(BasicRejectOptions { requeue: true }).await.expect("reject");
    }
    for i in 0..N - 10 {
        let d = next(&mut c).await;
        assert_eq!(d.properties.message_id().as_ref().map(|s| s.to_string()), Some(format!("m{i}")), "queue order");
        assert!(d.data == body(i), "message {i}: body differs");
        assert_eq!(d.redelivered, i < 5, "message {i}: redelivered flag");
        assert_eq!(d.properties.delivery_mode(), &(i % 6 != 5).then_some(2), "message {i}: delivery mode");
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    // Closing the channel returns what the consumer had been sent beyond that.
    cch.close(200, "bye".into()).await.expect("close");
    for i in N - 10..N {
        let m = within("get", ch.basic_get("paged".into(), BasicGetOptions { no_ack: true })).await.expect("get").expect("message");
        assert!(m.delivery.data == body(i), "basic.get of message {i}: body differs");
    }
    assert!(get_body(&ch, "paged").await.is_none());
    broker.stop().await;
}
