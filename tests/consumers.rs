//! RabbitMQ's consumer extensions over the wire with lapin: consumer priorities
//! (`x-priority`), single active consumer (`x-single-active-consumer`), and consumers
//! blocked by their prefetch parked without holding up the others.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Consumer};

async fn consume_with(ch: &Channel, queue: &str, tag: &str, prefetch: u16, args: FieldTable) -> Consumer {
    ch.basic_qos(prefetch, BasicQosOptions::default()).await.expect("qos");
    ch.basic_consume(queue.into(), tag.into(), BasicConsumeOptions::default(), args).await.expect("consume")
}

fn priority(p: i32) -> FieldTable {
    table(&[("x-priority", AMQPValue::LongInt(p))])
}

/// Higher-priority consumers get messages while they have prefetch room; lower ones get
/// the rest; an ack brings the higher one back.
#[tokio::test]
async fn higher_priority_consumers_are_served_first_while_they_have_room() {
    let broker = start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.expect("channel");
    declare(&ch, "work").await;
    let high_ch = conn.create_channel().await.expect("channel");
    let low_ch = conn.create_channel().await.expect("channel");
    let mut low = consume_with(&low_ch, "work", "low", 100, priority(-5)).await;
    let mut high = consume_with(&high_ch, "work", "high", 2, priority(10)).await;
    for i in 0..10u8 {
        publish(&ch, "", "work", &[i]).await;
    }
    let h1 = next(&mut high).await;
    let h2 = next(&mut high).await;
    assert_eq!((h1.data[0], h2.data[0]), (0, 1), "the high consumer takes what its prefetch allows");
    assert_quiet(&mut high).await;
    let mut lows = Vec::new();
    for _ in 0..8 {
        let d = next(&mut low).await;
        lows.push(d.data[0]);
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert_eq!(lows, (2..10).collect::<Vec<u8>>());
    h1.ack(BasicAckOptions::default()).await.expect("ack");
    h2.ack(BasicAckOptions::default()).await.expect("ack");
    for i in 10..12u8 {
        publish(&ch, "", "work", &[i]).await;
    }
    assert_eq!(next(&mut high).await.data, [10], "room again: the high consumer first");
    assert_eq!(next(&mut high).await.data, [11]);
    assert_quiet(&mut low).await;
}

#[tokio::test]
async fn equal_priorities_take_turns() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "rr").await;
    let opts = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut a = ch.basic_consume("rr".into(), "a".into(), opts, priority(3)).await.expect("a");
    let mut b = ch.basic_consume("rr".into(), "b".into(), opts, priority(3)).await.expect("b");
    let mut lower = ch.basic_consume("rr".into(), "c".into(), opts, FieldTable::default()).await.expect("c");
    for i in 0..6u8 {
        publish(&ch, "", "rr", &[i]).await;
    }
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    for _ in 0..3 {
        got_a.push(next(&mut a).await.data[0]);
        got_b.push(next(&mut b).await.data[0]);
    }
    got_a.sort_unstable();
    got_b.sort_unstable();
    assert_eq!(got_a.len() + got_b.len(), 6);
    assert!(got_a.iter().all(|x| !got_b.contains(x)));
    assert_quiet(&mut lower).await;
}

/// Single active consumer: the first consumer gets everything; the others wait in
/// registration order and take over on cancel, channel close and connection loss, and
/// the unacked messages of the one that went come back to the next.
#[tokio::test]
async fn single_active_consumer_hands_over_in_registration_order() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    let args = table(&[("x-single-active-consumer", AMQPValue::Boolean(true))]);
    ch.queue_declare("sac".into(), QueueDeclareOptions::default(), args).await.expect("declare");
    let first_conn = broker.connect().await;
    let first_ch = first_conn.create_channel().await.expect("channel");
    let mut first = consume_with(&first_ch, "sac", "first", 0, FieldTable::default()).await;
    let second_ch = broker.connect().await.create_channel().await.expect("channel");
    let mut second = consume_with(&second_ch, "sac", "second", 0, FieldTable::default()).await;
    let third_ch = broker.connect().await.create_channel().await.expect("channel");
    let mut third = consume_with(&third_ch, "sac", "third", 0, FieldTable::default()).await;
    let q = ch.queue_declare("sac".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.expect("passive");
    assert_eq!(q.consumer_count(), 3, "declare-ok counts every consumer");
    for i in 0..4u8 {
        publish(&ch, "", "sac", &[i]).await;
    }
    let mut unacked = Vec::new();
    for i in 0..4u8 {
        let d = next(&mut first).await;
        assert_eq!(d.data, [i]);
        unacked.push(d);
    }
    assert_quiet(&mut second).await;
    // The first one's connection goes: its unacked messages go to the second, redelivered.
    drop(unacked);
    first_conn.close(200, "bye".into()).await.expect("close");
    for i in 0..4u8 {
        let d = next(&mut second).await;
        assert_eq!(d.data, [i]);
        assert!(d.redelivered);
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert_quiet(&mut third).await;
    second_ch.basic_cancel("second".into(), BasicCancelOptions::default()).await.expect("cancel");
    publish(&ch, "", "sac", b"x").await;
    assert_eq!(next(&mut third).await.data, b"x", "the third takes over after a cancel");
}

/// Consumers whose prefetch is full are parked: with 300 of them full, a consumer with room
/// still gets every new message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_consumers_are_parked_and_do_not_hold_up_others() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "busy").await;
    let stuck_conn = broker.connect().await;
    let mut stuck = Vec::new();
    for i in 0..300 {
        let c = stuck_conn.create_channel().await.expect("channel");
        let consumer = consume_with(&c, "busy", &format!("stuck{i}"), 1, FieldTable::default()).await;
        stuck.push((c, consumer));
    }
    for i in 0..300u32 {
        publish(&ch, "", "busy", &i.to_be_bytes()).await;
    }
    // Every stuck consumer now holds one message and never acks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let free_ch = broker.connect().await.create_channel().await.expect("channel");
    let mut free = free_ch.basic_consume("busy".into(), "free".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()).await.expect("consume");
    for i in 0..1000u32 {
        publish(&ch, "", "busy", &i.to_be_bytes()).await;
    }
    for i in 0..1000u32 {
        assert_eq!(next(&mut free).await.data, i.to_be_bytes());
    }
}

/// A delivery held unacknowledged past the consumer timeout (the queue's
/// x-consumer-timeout, or the broker's setting) closes its channel with 406 and the message
/// goes back to the queue, redelivered.
#[tokio::test]
async fn consumer_timeout_closes_the_channel_and_requeues() {
    let broker = start_with(|c| c.consumer_timeout = 400).await;
    let (_conn, ch) = broker.channel().await;
    ch.queue_declare("slow".into(), QueueDeclareOptions::default(), table(&[("x-consumer-timeout", AMQPValue::LongInt(300))])).await.expect("declare");
    publish(&ch, "", "slow", b"job").await;
    let holder = broker.connect().await;
    let hch = holder.create_channel().await.expect("channel");
    let code = close_code(&holder, async {
        let mut c = consume_with(&hch, "slow", "holder", 1, FieldTable::default()).await;
        let _held = next(&mut c).await;
        // Not acked; WAIT (3 s) covers the 300 ms timeout and the 1 s check.
        std::mem::forget(c);
    })
    .await;
    assert_eq!(code, 406);
    let d = within("get", ch.basic_get("slow".into(), BasicGetOptions { no_ack: true })).await.expect("get").expect("requeued");
    assert!(d.delivery.redelivered);
    // basic.get deliveries count too, with the broker's timeout on a queue without its own.
    declare(&ch, "plain").await;
    publish(&ch, "", "plain", b"x").await;
    let getter = broker.connect().await;
    let gch = getter.create_channel().await.expect("channel");
    let code = close_code(&getter, async {
        let _m = gch.basic_get("plain".into(), BasicGetOptions { no_ack: false }).await.expect("get").expect("message");
    })
    .await;
    assert_eq!(code, 406);
    let d = within("get", ch.basic_get("plain".into(), BasicGetOptions { no_ack: true })).await.expect("get").expect("requeued");
    assert!(d.delivery.redelivered);
}
