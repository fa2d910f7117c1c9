//! Policies over TCP with lapin: a policy applies to the queues and exchanges whose names
//! it matches, combined with their arguments as RabbitMQ combines them, applies to
//! exchanges at once when set or cleared, refuses invalid definitions, and survives a
//! restart.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use warren::broker::policy::{ApplyTo, PolicyDef};

fn policy(name: &str, pattern: &str, apply_to: ApplyTo, priority: i64, definition: serde_json::Value) -> PolicyDef {
    PolicyDef { vhost: "/".into(), name: name.into(), pattern: pattern.into(), apply_to, priority, definition: definition.as_object().cloned().unwrap_or_default() }
}

async fn count(ch: &lapin::Channel, q: &str) -> u32 {
    ch.queue_declare(q.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.expect("passive").message_count()
}

#[tokio::test]
async fn a_queue_policy_limits_matching_queues_and_the_lower_limit_wins() {
    let b = start().await;
    b.broker.set_policy(policy("cap", "^capped\\.", ApplyTo::Queues, 0, serde_json::json!({"max-length": 2}))).expect("policy");
    b.broker.set_policy(policy("low", "^capped\\.", ApplyTo::Queues, -1, serde_json::json!({"max-length": 1}))).expect("lower priority");
    let (_conn, ch) = b.channel().await;
    ch.queue_declare("capped.a".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("queue");
    ch.queue_declare("capped.b".into(), QueueDeclareOptions::default(), table(&[("x-max-length", AMQPValue::LongInt(1))])).await.expect("queue");
    ch.queue_declare("free".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("queue");
    for q in ["capped.a", "capped.b", "free"] {
        for i in 0..4u8 {
            publish(&ch, "", q, &[i]).await;
        }
    }
    // Only the highest-priority policy applies (2, not 1); an argument lower than the
    // policy wins (1); other names are untouched.
    assert_eq!(count(&ch, "capped.a").await, 2);
    assert_eq!(count(&ch, "capped.b").await, 1);
    assert_eq!(count(&ch, "free").await, 4);
    // drop-head: the newest stay.
    assert_eq!(get_body(&ch, "capped.a").await, Some(vec![2]));
    b.stop().await;
}

#[tokio::test]
async fn an_exchange_policy_gives_an_alternate_exchange_at_once_and_the_argument_wins() {
    let b = start().await;
    let (_conn, ch) = b.channel().await;
    for x in ["main", "with-arg", "ae-pol", "ae-arg"] {
        let args = if x == "with-arg" { table(&[("alternate-exchange", AMQPValue::LongString("ae-arg".into()))]) } else { FieldTable::default() };
        let kind = if x.starts_with("ae-") { lapin::ExchangeKind::Fanout } else { lapin::ExchangeKind::Direct };
        ch.exchange_declare(x.into(), kind, ExchangeDeclareOptions::default(), args).await.expect("exchange");
    }
    for (q, x) in [("caught-pol", "ae-pol"), ("caught-arg", "ae-arg")] {
        declare(&ch, q).await;
        ch.queue_bind(q.into(), x.into(), "".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    }
    publish(&ch, "main", "nowhere", b"before").await;
    // A round trip: the publish has been routed (nowhere) before the policy is set.
    count(&ch, "caught-pol").await;
    // Set after the exchanges exist: applies to them at once.
    b.broker.set_policy(policy("ae", "^(main|with-arg)$", ApplyTo::Exchanges, 0, serde_json::json!({"alternate-exchange": "ae-pol"}))).expect("policy");
    publish(&ch, "main", "nowhere", b"after").await;
    publish(&ch, "with-arg", "nowhere", b"arg").await;
    assert_eq!(get_body(&ch, "caught-pol").await.as_deref(), Some(&b"after"[..]), "'before' was dropped, 'after' went to the policy's AE");
    assert_eq!(get_body(&ch, "caught-pol").await, None);
    assert_eq!(get_body(&ch, "caught-arg").await.as_deref(), Some(&b"arg"[..]), "the argument beats the policy");
    b.broker.clear_policy("/", "ae").expect("clear");
    publish(&ch, "main", "nowhere", b"cleared").await;
    assert_eq!(get_body(&ch, "caught-pol").await, None, "no alternate once the policy is gone");
    assert!(b.broker.clear_policy("/", "ae").is_err(), "clearing a missing policy is an error");
    b.stop().await;
}

#[tokio::test]
async fn invalid_policies_are_refused_with_a_reason() {
    let b = start().await;
    for (p, says) in [
        (policy("p", "(", ApplyTo::Queues, 0, serde_json::json!({"max-length": 1})), "pattern should be regular expression"),
        (policy("p", "^q", ApplyTo::Queues, 0, serde_json::json!({"max-length": -1})), "-1 is not a valid maximum length"),
        (policy("p", "^q", ApplyTo::Queues, 0, serde_json::json!({"foo": 1})), "'foo' is not a recognised policy setting"),
        (policy("p", "^q", ApplyTo::Queues, 0, serde_json::json!({})), "no policy provided"),
        (policy("p", "^q", ApplyTo::Queues, 0, serde_json::json!({"federation-upstream": "up"})), "not supported by Warren"),
        (PolicyDef { vhost: "nosuch".into(), ..policy("p", "^q", ApplyTo::Queues, 0, serde_json::json!({"max-length": 1})) }, "nosuch"),
    ] {
        let err = b.broker.set_policy(p).expect_err("refused");
        assert!(err.to_string().contains(says), "{err}");
    }
    b.stop().await;
}

// Multi-threaded: the stopped broker's store is released by its tasks while the next
// one waits for the directory's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_survive_a_restart_and_apply_to_recovered_queues() {
    let dir = fresh_data_dir();
    let b = start_with(|c| c.data_dir = dir.clone()).await;
    b.broker.set_policy(policy("cap", "^kept$", ApplyTo::All, 0, serde_json::json!({"max-length": 1}))).expect("policy");
    let (_conn, ch) = b.channel().await;
    ch.queue_declare("kept".into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await.expect("queue");
    drop((_conn, ch));
    b.stop().await;
    let b = start_with(|c| c.data_dir = dir.clone()).await;
    assert_eq!(b.broker.export().policies.len(), 1);
    let (_conn, ch) = b.channel().await;
    for i in 0..3u8 {
        publish(&ch, "", "kept", &[i]).await;
    }
    assert_eq!(count(&ch, "kept").await, 1, "the recovered queue has the stored policy");
    b.stop().await;
}

#[tokio::test]
async fn setting_changing_and_clearing_a_policy_applies_to_existing_queues() {
    let b = start().await;
    let (_conn, ch) = b.channel().await;
    declare(&ch, "live").await;
    for i in 0..5u8 {
        publish(&ch, "", "live", &[i]).await;
    }
    assert_eq!(count(&ch, "live").await, 5);
    // A drop-head limit set later trims the queue at once, oldest first.
    b.broker.set_policy(policy("cap", "^live$", ApplyTo::Queues, 0, serde_json::json!({"max-length": 2}))).expect("policy");
    assert_eq!(count(&ch, "live").await, 2);
    assert_eq!(get_body(&ch, "live").await, Some(vec![3]));
    // Changed: reject-publish at 1 (one message is in the queue: the next is refused).
    b.broker.set_policy(policy("cap", "^live$", ApplyTo::Queues, 0, serde_json::json!({"max-length": 1, "overflow": "reject-publish"}))).expect("changed");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let sent = ch.basic_publish("".into(), "live".into(), BasicPublishOptions::default(), b"over", lapin::BasicProperties::default()).await;
    assert!(sent.expect("publish").await.expect("confirm").is_nack(), "reject-publish nacks");
    // Cleared: no limit any more.
    b.broker.clear_policy("/", "cap").expect("clear");
    for _ in 0..3 {
        let sent = ch.basic_publish("".into(), "live".into(), BasicPublishOptions::default(), b"more", lapin::BasicProperties::default()).await;
        assert!(sent.expect("publish").await.expect("confirm").is_ack());
    }
    assert_eq!(count(&ch, "live").await, 4);
    b.stop().await;
}
