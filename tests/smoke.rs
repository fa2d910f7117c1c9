//! The shortest path through the broker: declare, publish, consume, get.

mod common;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;

#[tokio::test]
async fn publish_then_consume_and_get() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "smoke").await;
    publish(&ch, "", "smoke", b"one").await;
    publish(&ch, "", "smoke", b"two").await;
    let got = within("get", async {
        loop {
            if let Some(b) = get_body(&ch, "smoke").await {
                return b;
            }
        }
    })
    .await;
    assert_eq!(got, b"one");
    let mut consumer = ch.basic_consume("smoke".into(), "c1".into(), BasicConsumeOptions::default(), FieldTable::default()).await.expect("consume");
    let d = within("deliver", consumer.next()).await.expect("stream").expect("delivery");
    assert_eq!(d.data, b"two");
    assert!(!d.redelivered);
    d.ack(BasicAckOptions::default()).await.expect("ack");
}
