//! Publisher confirms and transactions over the wire: every publish is confirmed (routable
//! or not), lapin copes with coalesced acks, the two modes exclude each other, and
//! transactional publishes and acks take effect only at commit.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};

// ---------------------------------------------------------------------------------------
// Helpers local to this file.


/// Declares "q" with one message, and a transactional channel that got it (unacked).
async fn transaction_holding_a_delivery(conn: &Connection, ch: &Channel) -> (Channel, u64) {
    declare(ch, "q").await;
    publish(ch, "", "q", b"m").await;
    let tch = conn.create_channel().await.expect("channel");
    tch.tx_select().await.expect("tx.select");
    let m = within("get", tch.basic_get("q".into(), BasicGetOptions { no_ack: false })).await.expect("basic.get").expect("message");
    (tch, m.delivery.delivery_tag)
}

/// Takes "q"'s message back with basic.get; returns its redelivered flag.
async fn taken_back(ch: &Channel) -> bool {
    let back = within("requeued", ch.basic_get("q".into(), BasicGetOptions { no_ack: true })).await.expect("basic.get").expect("the message is back");
    back.delivery.redelivered
}

async fn ready_count(conn: &Connection, queue: &str) -> u32 {
    let ch = conn.create_channel().await.expect("channel");
    let q = ch.queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.expect("passive declare");
    let _ = ch.close(200, "bye".into()).await;
    q.message_count()
}

async fn drain(ch: &Channel, queue: &str) -> Vec<Vec<u8>> {
    within("drain", async {
        let mut out = Vec::new();
        while let Some(b) = get_body(ch, queue).await {
            out.push(b);
        }
        out
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Publisher confirms.

#[tokio::test]
async fn a_thousand_publishes_are_all_confirmed() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let mut confirms = Vec::with_capacity(1000);
    for i in 0..1000u32 {
        let c = ch.basic_publish("".into(), "q".into(), BasicPublishOptions::default(), &i.to_be_bytes(), BasicProperties::default()).await.expect("publish");
        confirms.push(c);
    }
    let returned = within("wait_for_confirms", ch.wait_for_confirms()).await.expect("wait_for_confirms");
    assert!(returned.is_empty());
    for (i, c) in confirms.into_iter().enumerate() {
        let c = within("confirm", c).await.unwrap_or_else(|e| panic!("confirm {i}: {e:?}"));
        assert!(c.is_ack(), "publish {i} was nacked");
    }
    assert_eq!(ready_count(&conn, "q").await, 1000);
}

#[tokio::test]
async fn unroutable_publishes_are_confirmed_too() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for (exchange, key) in [("amq.direct", "nobody"), ("", "no-such-queue"), ("amq.fanout", "")] {
        let c = ch.basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), b"lost", BasicProperties::default()).await.expect("publish");
        let c = within("confirm", c).await.expect("confirmation");
        assert!(c.is_ack(), "an unroutable publish to {exchange:?} should be acked");
        assert!(c.take_message().is_none(), "not mandatory: nothing is returned");
    }
}

/// The broker may confirm a burst of publishes with one `multiple` ack; every publish
/// must still resolve, in whatever order the client waits for them.
#[tokio::test]
async fn coalesced_acks_resolve_every_confirm() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for round in 0..3 {
        let mut confirms = Vec::new();
        for i in 0..50u8 {
            confirms.push(ch.basic_publish("".into(), "q".into(), BasicPublishOptions::default(), &[i], BasicProperties::default()).await.expect("publish"));
        }
        // Newest first: it resolves with the rest.
        for (i, c) in confirms.into_iter().enumerate().rev() {
            let c = within("confirm", c).await.unwrap_or_else(|e| panic!("round {round}, confirm {i}: {e:?}"));
            assert!(c.is_ack());
        }
    }
    assert_eq!(ready_count(&conn, "q").await, 150);
    // The channel is still healthy: no confirm arrived for an unknown sequence number.
    assert!(ch.status().connected());
    ch.basic_qos(1, BasicQosOptions::default()).await.expect("round trip");
}

/// Persistent messages to a durable queue are confirmed only once stored; interleaved with
/// transient ones, every confirm must still arrive, as an ack, with none out of order.
#[tokio::test]
async fn persistent_and_transient_publishes_are_all_confirmed() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    ch.queue_declare("durable".into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await.expect("declare durable");
    declare(&ch, "transient").await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let mut confirms = Vec::new();
    for i in 0..300u32 {
        let (queue, props) = if i % 3 == 0 {
            ("transient", BasicProperties::default())
        } else {
            ("durable", BasicProperties::default().with_delivery_mode(2))
        };
        confirms.push(ch.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &i.to_be_bytes(), props).await.expect("publish"));
    }
    for (i, c) in confirms.into_iter().enumerate() {
        let c = within("confirm", c).await.unwrap_or_else(|e| panic!("confirm {i}: {e:?}"));
        assert!(c.is_ack(), "publish {i} was nacked");
    }
    assert_eq!(ready_count(&conn, "durable").await, 200);
    assert_eq!(ready_count(&conn, "transient").await, 100);
    assert!(ch.status().connected());
}

#[tokio::test]
async fn confirm_select_on_a_transactional_channel_is_406() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    ch.tx_select().await.expect("tx.select");
    assert_code(ch.confirm_select(ConfirmSelectOptions::default()).await, 406, "confirm.select after tx.select");
}

#[tokio::test]
async fn tx_select_on_a_confirm_channel_is_406() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    // Selecting the same mode again is fine.
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select again");
    assert_code(ch.tx_select().await, 406, "tx.select after confirm.select");
}

// ---------------------------------------------------------------------------------------
// Transactions.

#[tokio::test]
async fn transactional_publishes_appear_at_commit_and_vanish_on_rollback() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let tch = conn.create_channel().await.unwrap();
    tch.tx_select().await.expect("tx.select");
    for b in [b"a", b"b", b"c"] {
        publish(&tch, "", "q", b).await;
    }
    // A round trip on the transactional channel: the publishes have been handled.
    tch.basic_qos(0, BasicQosOptions::default()).await.expect("round trip");
    assert_eq!(ready_count(&conn, "q").await, 0, "uncommitted publishes are invisible");
    assert_eq!(get_body(&ch, "q").await, None);
    tch.tx_commit().await.expect("tx.commit");
    assert_eq!(ready_count(&conn, "q").await, 3);

    for b in [b"x", b"y"] {
        publish(&tch, "", "q", b).await;
    }
    tch.tx_rollback().await.expect("tx.rollback");
    // An empty transaction commits nothing.
    tch.tx_commit().await.expect("empty tx.commit");
    assert_eq!(drain(&ch, "q").await, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);

    // The channel stays transactional: the next publish waits for the next commit.
    publish(&tch, "", "q", b"d").await;
    tch.basic_qos(0, BasicQosOptions::default()).await.expect("round trip");
    assert_eq!(ready_count(&conn, "q").await, 0);
    tch.tx_commit().await.expect("tx.commit");
    assert_eq!(drain(&ch, "q").await, [b"d".to_vec()]);
}

#[tokio::test]
async fn uncommitted_publishes_are_dropped_when_the_channel_closes() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let tch = conn.create_channel().await.unwrap();
    tch.tx_select().await.expect("tx.select");
    publish(&tch, "", "q", b"never").await;
    tch.close(200, "bye".into()).await.expect("close");
    assert_eq!(ready_count(&conn, "q").await, 0);
}

#[tokio::test]
async fn commit_or_rollback_without_tx_select_is_406() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    assert_code(ch.tx_commit().await, 406, "tx.commit on a non-transactional channel");
    let ch = conn.create_channel().await.unwrap();
    assert_code(ch.tx_rollback().await, 406, "tx.rollback on a non-transactional channel");
}

#[tokio::test]
async fn transactional_acks_take_effect_at_commit() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    for b in [b"0", b"1"] {
        publish(&ch, "", "q", b).await;
    }
    let tch = conn.create_channel().await.unwrap();
    tch.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    tch.tx_select().await.expect("tx.select");
    let mut c = tch.basic_consume("q".into(), "c".into(), BasicConsumeOptions::default(), FieldTable::default()).await.expect("consume");
    let d0 = next(&mut c).await;
    assert_eq!(d0.data, b"0");
    d0.ack(BasicAckOptions::default()).await.expect("ack in the transaction");
    // Uncommitted, the ack has not freed the prefetch slot.
    assert_quiet(&mut c).await;
    assert_eq!(ready_count(&conn, "q").await, 1);
    tch.tx_commit().await.expect("tx.commit");
    // Committed, it has.
    let d1 = next(&mut c).await;
    assert_eq!((d1.data.as_slice(), d1.redelivered), (&b"1"[..], false));

    // A rolled-back ack leaves the message unacked...
    d1.ack(BasicAckOptions::default()).await.expect("ack in the transaction");
    tch.tx_rollback().await.expect("tx.rollback");
    // ...so closing the channel returns it, redelivered.
    tch.close(200, "bye".into()).await.expect("close");
    let back = within("requeued", ch.basic_get("q".into(), BasicGetOptions { no_ack: true })).await.expect("basic.get").expect("the rolled-back message is back");
    assert_eq!(back.delivery.data, b"1");
    assert!(back.delivery.redelivered);
    assert_eq!(get_body(&ch, "q").await, None, "the committed ack removed the first message");
}

#[tokio::test]
async fn uncommitted_acks_are_undone_when_the_channel_closes() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    let (tch, tag) = transaction_holding_a_delivery(&conn, &ch).await;
    tch.basic_ack(tag, BasicAckOptions::default()).await.expect("ack in the transaction");
    tch.close(200, "bye".into()).await.expect("close");
    assert!(taken_back(&ch).await, "the message comes back redelivered");
}

/// RabbitMQ takes a transactional ack's tag off the unacked list at once, so acking the
/// same tag twice in one transaction is 406 right away, before any commit.
#[tokio::test]
async fn double_ack_in_a_transaction_is_406_at_once() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    let (tch, tag) = transaction_holding_a_delivery(&conn, &ch).await;
    tch.basic_ack(tag, BasicAckOptions::default()).await.expect("first ack");
    let code = close_code(&conn, async {
        tch.basic_ack(tag, BasicAckOptions::default()).await.expect("second ack sent");
    })
    .await;
    assert_eq!(code, 406);
    // Nothing was committed: the message is back in the queue.
    assert!(taken_back(&ch).await, "the message comes back redelivered");
}

/// A commit that fails leaves nothing half-done: RabbitMQ rejects the bad ack when it is
/// sent, so the transaction's publishes are never committed.
#[tokio::test]
async fn a_failed_transaction_publishes_nothing() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "out").await;
    let (tch, tag) = transaction_holding_a_delivery(&conn, &ch).await;
    publish(&tch, "", "out", b"published in the transaction").await;
    tch.basic_ack(tag, BasicAckOptions::default()).await.expect("first ack");
    let _ = tch.basic_ack(tag, BasicAckOptions::default()).await;
    let _ = tch.tx_commit().await;
    // However the broker reports the error, the transaction must not be half applied.
    within("channel closed", async {
        while tch.status().connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(ready_count(&conn, "out").await, 0, "a failed transaction published its messages");
}

/// A transaction's publishes were routed when published: deleting their exchange before
/// the commit does not lose them or fail the commit.
#[tokio::test]
async fn a_transactions_publishes_survive_their_exchange_being_deleted_before_commit() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    ch.exchange_declare("x".into(), lapin::ExchangeKind::Fanout, ExchangeDeclareOptions::default(), FieldTable::default()).await.expect("declare x");
    ch.queue_bind("q".into(), "x".into(), "".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    let tch = conn.create_channel().await.expect("channel");
    tch.tx_select().await.expect("tx.select");
    publish(&tch, "x", "", b"in the transaction").await;
    ch.exchange_delete("x".into(), ExchangeDeleteOptions::default()).await.expect("delete x");
    within("commit", tch.tx_commit()).await.expect("tx.commit");
    assert_eq!(drain(&ch, "q").await, vec![b"in the transaction".to_vec()]);
}

/// Acks held by an open transaction still count against a channel-wide prefetch (RabbitMQ
/// frees its limiter at commit), so no further delivery arrives until the commit.
#[tokio::test]
async fn acks_in_an_open_transaction_hold_a_global_prefetch_until_commit() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let cch = conn.create_channel().await.expect("channel");
    cch.basic_qos(1, BasicQosOptions { global: true }).await.expect("qos");
    cch.tx_select().await.expect("tx.select");
    let mut c = consume(&cch, "q", "c").await;
    publish(&ch, "", "q", b"1").await;
    publish(&ch, "", "q", b"2").await;
    let first = next(&mut c).await;
    assert_eq!(first.data, b"1");
    first.ack(BasicAckOptions::default()).await.expect("ack in the transaction");
    assert_quiet(&mut c).await;
    within("commit", cch.tx_commit()).await.expect("tx.commit");
    assert_eq!(next(&mut c).await.data, b"2");
}
