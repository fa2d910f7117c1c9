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
