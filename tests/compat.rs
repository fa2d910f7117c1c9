//! Compatibility profiles: each behaviour where RabbitMQ 4.x differs from 3.13, under the
//! default profile (`rabbitmq-3.13`, unchanged) and under `rabbitmq-4`. What RabbitMQ 4
//! does, with source references, is in tests/fixtures/rabbitmq-4-compat.md.

mod common;

use std::time::Duration;

use common::*;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::Channel;
use warren::broker::policy::{ApplyTo, PolicyDef};
use warren::Compat;

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

fn int(n: i64) -> AMQPValue {
    AMQPValue::LongLongInt(n)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..Default::default() }
}

async fn declare_args(ch: &Channel, name: &str, opts: QueueDeclareOptions, args: &[(&str, AMQPValue)]) -> lapin::Result<lapin::Queue> {
    ch.queue_declare(name.into(), opts, table(args)).await
}

async fn count(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("passive declare")
        .message_count()
}

/// basic.get without ack, failing the test when the queue is empty.
async fn get(ch: &Channel, queue: &str) -> Delivery {
    within("basic.get", ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }))
        .await
        .expect("basic.get")
        .unwrap_or_else(|| panic!("queue {queue} is empty"))
        .delivery
}

/// How many deliveries `c` gets before it stays quiet for [`QUIET`].
async fn drain(c: &mut lapin::Consumer) -> usize {
    let mut n = 0;
    while let Ok(Some(Ok(_))) = tokio::time::timeout(QUIET, c.next()).await {
        n += 1;
    }
    n
}

/// basic.qos global=true: a channel-wide prefetch that quorum queues refuse (3.13); taken
/// as per consumer, qos-ok and all, under rabbitmq-4.
#[tokio::test]
async fn global_qos_is_per_consumer_under_rabbitmq_4() {
    for (compat, held, quorum_ok) in [(Compat::RabbitMq313, 1, false), (Compat::RabbitMq4, 2, true)] {
        let broker = start_with(|c| c.compat = compat).await;
        let (_conn, ch) = broker.channel().await;
        for q in ["a", "b"] {
            declare_args(&ch, q, durable(), &[]).await.expect("declare");
            for _ in 0..3 {
                publish(&ch, "", q, b"m").await;
            }
        }
        let (_cconn, cch) = broker.channel().await;
        within("qos", cch.basic_qos(1, BasicQosOptions { global: true })).await.expect("qos-ok");
        let mut a = consume(&cch, "a", "ca").await;
        let mut b = consume(&cch, "b", "cb").await;
        let got = drain(&mut a).await + drain(&mut b).await;
        assert_eq!(got, held, "{compat:?}: deliveries held under basic.qos(1, global)");
        declare_args(&ch, "qq", durable(), &[("x-queue-type", s("quorum"))]).await.expect("quorum");
        let r = cch.basic_consume("qq".into(), "cq".into(), BasicConsumeOptions::default(), FieldTable::default()).await;
        if quorum_ok {
            r.expect("a quorum queue consumer under a 'global' qos");
        } else {
            assert_code(r, 540, "quorum consumer with a global prefetch");
        }
        broker.stop().await;
    }
}

/// x-queue-mode: accepted and ignored by 3.13; refused with 406 naming it under rabbitmq-4.
#[tokio::test]
async fn queue_mode_is_refused_under_rabbitmq_4() {
    for compat in [Compat::RabbitMq313, Compat::RabbitMq4] {
        let broker = start_with(|c| c.compat = compat).await;
        let (_conn, ch) = broker.channel().await;
        let r = declare_args(&ch, "lazy", durable(), &[("x-queue-mode", s("lazy"))]).await;
        match compat {
            Compat::RabbitMq313 => {
                r.expect("x-queue-mode accepted");
            }
            Compat::RabbitMq4 => {
                let e = r.expect_err("x-queue-mode refused");
                assert_eq!(reply_code(&e), Some(406));
                let text = reply_text(&e);
                assert!(text.starts_with("PRECONDITION_FAILED - invalid arg 'x-queue-mode' for queue 'lazy' in vhost '/': "), "{text}");
                // Nothing was created.
                let (_c, ch) = broker.channel().await;
                let r = ch.queue_declare("lazy".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await;
                assert_code(r, 404, "the refused queue");
            }
        }
        // On a quorum queue it is refused as another type's argument by both.
        let (_c, ch) = broker.channel().await;
        let e = declare_args(&ch, "qlazy", durable(), &[("x-queue-type", s("quorum")), ("x-queue-mode", s("lazy"))]).await.expect_err("quorum");
        assert_eq!(reply_text(&e), "PRECONDITION_FAILED - invalid arg 'x-queue-mode' for queue 'qlazy' in vhost '/' of queue type rabbit_quorum_queue");
        broker.stop().await;
    }
}

/// A queue neither durable nor exclusive: allowed by 3.13; refused under rabbitmq-4 as
/// RabbitMQ 4.3 refuses it (its `transient_nonexcl_queues` feature denied): 541 on the
/// connection. Exclusive and durable queues, server-named ones too, stay allowed.
#[tokio::test]
async fn transient_non_exclusive_queues_are_refused_under_rabbitmq_4() {
    for compat in [Compat::RabbitMq313, Compat::RabbitMq4] {
        let broker = start_with(|c| c.compat = compat).await;
        for opts in [QueueDeclareOptions::default(), QueueDeclareOptions { auto_delete: true, ..Default::default() }] {
            let (conn, ch) = broker.channel().await;
            let r = ch.queue_declare("transient".into(), opts, FieldTable::default()).await;
            match compat {
                Compat::RabbitMq313 => {
                    r.expect("a transient queue");
                    ch.queue_delete("transient".into(), QueueDeleteOptions::default()).await.expect("delete");
                }
                Compat::RabbitMq4 => {
                    let e = r.expect_err("refused");
                    assert_eq!(reply_code(&e), Some(541), "{e:?}");
                    let text = reply_text(&e);
                    assert!(
                        text.starts_with("INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated.\nBy default, this feature is not permitted anymore."),
                        "{text}"
                    );
                    assert!(text.len() <= 255);
                    // A connection error: the whole connection is closed.
                    within("close", async {
                        while conn.status().connected() {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    })
                    .await;
                }
            }
        }
        let (_conn, ch) = broker.channel().await;
        let exclusive = QueueDeclareOptions { exclusive: true, ..Default::default() };
        ch.queue_declare("mine".into(), exclusive, FieldTable::default()).await.expect("exclusive transient");
        let reply = ch.queue_declare("".into(), exclusive, FieldTable::default()).await.expect("server-named exclusive (RPC reply queue)");
        assert!(reply.name().as_str().starts_with("amq.gen-"));
        ch.queue_declare("kept".into(), durable(), FieldTable::default()).await.expect("durable");
        ch.queue_declare("kept-ad".into(), QueueDeclareOptions { durable: true, auto_delete: true, ..Default::default() }, FieldTable::default())
            .await
            .expect("durable auto-delete");
        broker.stop().await;
    }
}

/// Returns the one message of `queue` to it with basic.nack requeue `times` times.
async fn bounce(ch: &Channel, queue: &str, times: usize) {
    for _ in 0..times {
        get(ch, queue).await.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
    }
}

/// The reason of a dead-lettered message's latest death.
fn death_reason(d: &Delivery) -> String {
    let Some(AMQPValue::FieldArray(deaths)) = d.properties.headers().as_ref().and_then(|h| h.inner().get("x-death")) else {
        panic!("no x-death: {:?}", d.properties.headers());
    };
    match deaths.as_slice().first() {
        Some(AMQPValue::FieldTable(t)) => match t.inner().get("reason") {
            Some(AMQPValue::LongString(r)) => r.to_string(),
            other => panic!("reason: {other:?}"),
        },
        other => panic!("x-death entry: {other:?}"),
    }
}

/// Quorum queues without a delivery limit: none in 3.13; 20 under rabbitmq-4, so the 21st
/// return dead-letters (reason delivery_limit). An argument or a policy overrides the
/// default, which is not an argument: redeclaring with `x-delivery-limit: 20` is not
/// equivalent.
#[tokio::test]
async fn quorum_queues_default_to_a_delivery_limit_of_20_under_rabbitmq_4() {
    for compat in [Compat::RabbitMq313, Compat::RabbitMq4] {
        let broker = start_with(|c| c.compat = compat).await;
        let (_conn, ch) = broker.channel().await;
        declare_args(&ch, "dead", durable(), &[]).await.expect("dlq");
        let dlx = [("x-queue-type", s("quorum")), ("x-dead-letter-exchange", s("")), ("x-dead-letter-routing-key", s("dead"))];
        declare_args(&ch, "jobs", durable(), &dlx).await.expect("quorum");
        publish(&ch, "", "jobs", b"poison").await;
        bounce(&ch, "jobs", 20).await;
        assert_eq!((count(&ch, "jobs").await, count(&ch, "dead").await), (1, 0), "{compat:?}: 20 returns are within the limit");
        bounce(&ch, "jobs", 1).await;
        match compat {
            Compat::RabbitMq313 => assert_eq!((count(&ch, "jobs").await, count(&ch, "dead").await), (1, 0), "no limit in 3.13"),
            Compat::RabbitMq4 => {
                assert_eq!(count(&ch, "jobs").await, 0);
                let dead = get(&ch, "dead").await;
                assert_eq!((dead.data.as_slice(), death_reason(&dead).as_str()), (&b"poison"[..], "delivery_limit"));
            }
        }
        // The default is not an argument: redeclaring as declared is equivalent, naming
        // the default's value is not.
        declare_args(&ch, "jobs", durable(), &dlx).await.expect("equivalent redeclare");
        let (_c, ch2) = broker.channel().await;
        let e = declare_args(&ch2, "jobs", durable(), &[dlx[0].clone(), dlx[1].clone(), dlx[2].clone(), ("x-delivery-limit", int(20))]).await.expect_err("inequivalent");
        assert_eq!(reply_code(&e), Some(406));
        assert!(reply_text(&e).contains("x-delivery-limit"), "{}", reply_text(&e));
        // An argument overrides the default.
        declare_args(&ch, "patient", durable(), &[("x-queue-type", s("quorum")), ("x-delivery-limit", int(30))]).await.expect("quorum");
        publish(&ch, "", "patient", b"m").await;
        bounce(&ch, "patient", 25).await;
        assert_eq!(count(&ch, "patient").await, 1, "{compat:?}: x-delivery-limit 30");
        // So does a policy.
        let definition = serde_json::json!({"delivery-limit": 2}).as_object().cloned().unwrap_or_default();
        broker
            .broker
            .set_policy(PolicyDef { vhost: "/".into(), name: "dl".into(), pattern: "^strict$".into(), apply_to: ApplyTo::QuorumQueues, priority: 0, definition })
            .expect("policy");
        declare_args(&ch, "strict", durable(), &[("x-queue-type", s("quorum"))]).await.expect("quorum");
        publish(&ch, "", "strict", b"m").await;
        bounce(&ch, "strict", 3).await;
        assert_eq!(count(&ch, "strict").await, 0, "{compat:?}: policy delivery-limit 2");
        broker.stop().await;
    }
}

/// Waits until `c` ends (the broker cancelled it), failing after [`WAIT`].
async fn cancelled(c: &mut lapin::Consumer) {
    match tokio::time::timeout(WAIT, c.next()).await {
        Ok(None) => {}
        other => panic!("expected the consumer to be cancelled, got {other:?}"),
    }
}

/// Consumer timeout on a quorum queue: 3.13 closes the channel with 406; rabbitmq-4 cancels
/// the consumer (basic.cancel), returns its message to the queue, keeps the channel open,
/// and accepts a late ack of the returned delivery. Classic queues keep the close.
#[tokio::test]
async fn quorum_consumer_timeout_cancels_the_consumer_under_rabbitmq_4() {
    for compat in [Compat::RabbitMq313, Compat::RabbitMq4] {
        let broker = start_with(|c| {
            c.compat = compat;
            c.consumer_timeout = 300;
        })
        .await;
        let (_conn, ch) = broker.channel().await;
        declare_args(&ch, "qq", durable(), &[("x-queue-type", s("quorum"))]).await.expect("quorum");
        declare_args(&ch, "classic", durable(), &[]).await.expect("classic");
        publish(&ch, "", "qq", b"job").await;
        let holder = broker.connect().await;
        let hch = holder.create_channel().await.expect("channel");
        hch.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
        match compat {
            Compat::RabbitMq313 => {
                let code = close_code(&holder, async {
                    let mut c = consume(&hch, "qq", "holder").await;
                    let _held = next(&mut c).await;
                    std::mem::forget(c);
                })
                .await;
                assert_eq!(code, 406);
            }
            Compat::RabbitMq4 => {
                let mut c = consume(&hch, "qq", "holder").await;
                let held = next(&mut c).await;
                // WAIT (3 s) covers the 300 ms timeout and the 1 s check.
                cancelled(&mut c).await;
                assert!(hch.status().connected(), "the channel stays open");
                // The late ack is accepted and does nothing.
                held.ack(BasicAckOptions::default()).await.expect("late ack");
                hch.queue_declare("qq".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
                    .await
                    .expect("the channel still works after the late ack");
            }
        }
        let d = get(&ch, "qq").await;
        assert!(d.redelivered, "{compat:?}: the message went back to the queue");
        d.ack(BasicAckOptions::default()).await.expect("ack");
        // A classic queue's consumer timeout closes the channel under both profiles.
        publish(&ch, "", "classic", b"job").await;
        let holder = broker.connect().await;
        let hch = holder.create_channel().await.expect("channel");
        let code = close_code(&holder, async {
            let mut c = consume(&hch, "classic", "holder").await;
            let _held = next(&mut c).await;
            std::mem::forget(c);
        })
        .await;
        assert_eq!(code, 406, "{compat:?}: classic queue");
        broker.stop().await;
    }
}
