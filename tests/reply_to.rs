//! Direct reply-to over the wire with lapin: the RPC round trip through
//! `amq.rabbitmq.reply-to`, and RabbitMQ's refusals of its misuse.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

#[tokio::test]
async fn rpc_replies_go_straight_to_the_requesting_channel() {
    let broker = start().await;
    let (_sconn, server) = broker.channel().await;
    declare(&server, "rpc").await;
    let mut requests = consume(&server, "rpc", "server").await;
    let (_cconn, client) = broker.channel().await;
    let mut replies = client.basic_consume(REPLY_TO.into(), "".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()).await.expect("reply consumer");
    // Declaring the pseudo-queue (passive or not, as kombu does before consuming) is
    // answered as RabbitMQ does: empty, with its one consumer.
    for passive in [true, false] {
        let q = client.queue_declare(REPLY_TO.into(), QueueDeclareOptions { passive, ..Default::default() }, FieldTable::default()).await.expect("declare");
        assert_eq!((q.message_count(), q.consumer_count()), (0, 1));
    }
    for i in 0..3u8 {
        let props = BasicProperties::default().with_reply_to(REPLY_TO.into()).with_correlation_id(format!("c{i}").into());
        client.basic_publish("".into(), "rpc".into(), BasicPublishOptions::default(), &[i], props).await.expect("request");
        let req = next(&mut requests).await;
        let address = req.properties.reply_to().clone().expect("reply_to").to_string();
        assert!(address.starts_with("amq.rabbitmq.reply-to."), "rewritten to the channel's address: {address}");
        let props = BasicProperties::default().with_correlation_id(req.properties.correlation_id().clone().expect("correlation id"));
        server.basic_publish("".into(), address.as_str().into(), BasicPublishOptions::default(), &[i * 10], props).await.expect("reply");
        req.ack(BasicAckOptions::default()).await.expect("ack");
        let reply = next(&mut replies).await;
        assert_eq!(reply.data, [i * 10]);
        assert_eq!(reply.properties.correlation_id().as_ref().map(|c| c.to_string()), Some(format!("c{i}")));
    }
}

#[tokio::test]
async fn misuse_gets_rabbitmqs_codes_and_a_reply_for_a_gone_channel_is_returned() {
    let broker = start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.expect("channel");
    let err = ch.basic_consume(REPLY_TO.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await.expect_err("manual ack");
    assert_eq!(reply_code(&err), Some(406));
    let ch = conn.create_channel().await.expect("channel");
    declare(&ch, "rpc").await;
    let props = BasicProperties::default().with_reply_to(REPLY_TO.into());
    let code = close_code(&conn, async {
        ch.basic_publish("".into(), "rpc".into(), BasicPublishOptions::default(), b"q", props).await.expect("publish");
    })
    .await;
    assert_eq!(code, 406, "a request without a reply consumer on its channel");

    // A reply to a channel that has closed: unroutable, returned when mandatory.
    let requester_conn = broker.connect().await;
    let requester = requester_conn.create_channel().await.expect("channel");
    // Kept: lapin cancels a consumer it drops.
    let _replies = requester.basic_consume(REPLY_TO.into(), "".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()).await.expect("reply consumer");
    let (_sconn, server) = broker.channel().await;
    declare(&server, "rpc2").await;
    requester.basic_publish("".into(), "rpc2".into(), BasicPublishOptions::default(), b"q", BasicProperties::default().with_reply_to(REPLY_TO.into())).await.expect("request");
    let mut requests = consume(&server, "rpc2", "server").await;
    let req = next(&mut requests).await;
    let address = req.properties.reply_to().clone().expect("reply_to").to_string();
    requester.close(200, "done".into()).await.expect("close");
    server.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm");
    let mandatory = BasicPublishOptions { mandatory: true, ..Default::default() };
    let c = server.basic_publish("".into(), address.as_str().into(), mandatory, b"late", BasicProperties::default()).await.expect("publish").await.expect("confirm");
    assert!(c.take_message().is_some(), "returned: no such reply consumer");
    let err = server.queue_declare(address.as_str().into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.expect_err("gone");
    assert_eq!(reply_code(&err), Some(404));
}
