//! Channels over real TCP: opening and closing, channel numbers up to channel_max, the
//! channel/connection scope of errors, the closing handshake after a channel error, and
//! channel.flow.

mod common;

use std::time::Duration;

use common::raw::{self, Args, RawConn, Table};
use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;

/// channel.close with reply-success.
fn channel_close_frame(channel: u16) -> Vec<u8> {
    raw::method_frame(channel, 20, 40, Args::new().short(200).sstr("bye").short(0).short(0))
}

/// channel.close-ok.
fn channel_close_ok_frame(channel: u16) -> Vec<u8> {
    raw::method_frame(channel, 20, 41, Args::new())
}

/// A passive queue.declare.
fn passive_declare_frame(channel: u16, name: &str) -> Vec<u8> {
    raw::queue_declare_frame(channel, name.as_bytes(), 1, &Table::new().encode())
}

/// A plain queue.declare.
fn declare_frame(channel: u16, name: &str) -> Vec<u8> {
    raw::queue_declare_frame(channel, name.as_bytes(), 0, &Table::new().encode())
}

/// basic.get with no-ack.
fn get_frame(channel: u16, queue: &str) -> Vec<u8> {
    raw::method_frame(channel, 60, 70, Args::new().short(0).sstr(queue).octet(1))
}

/// The message count of a queue.declare-ok.
fn declare_ok_count(f: &raw::RawFrame) -> u32 {
    let a = f.args();
    let len = a[0] as usize;
    u32::from_be_bytes(a[1 + len..5 + len].try_into().expect("4"))
}

#[tokio::test]
async fn open_use_and_close_channels_with_lapin() {
    let broker = start().await;
    let conn = within("connect", broker.connect()).await;
    let mut channels = Vec::new();
    for _ in 0..10 {
        channels.push(within("open", conn.create_channel()).await.expect("channel.open"));
    }
    let mut ids: Vec<u16> = channels.iter().map(|c| c.id()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10);
    // Close every other one; the rest keep working.
    for ch in channels.iter().step_by(2) {
        within("close", ch.close(200, "bye".into())).await.expect("channel.close");
        assert!(!ch.status().connected());
    }
    for (i, ch) in channels.iter().enumerate().skip(1).step_by(2) {
        let name = format!("lapin-ch-{i}");
        declare(ch, &name).await;
        publish(ch, "", &name, b"x").await;
        within("get", async {
            while get_body(ch, &name).await.is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
    // New channels can be opened after closes.
    let again = within("open", conn.create_channel()).await.expect("channel.open");
    declare(&again, "lapin-ch-again").await;
}

#[tokio::test]
async fn close_and_reopen_the_same_channel_number() {
    let broker = start().await;
    within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        for _ in 0..3 {
            c.open_channel(1).await;
            c.send(&declare_frame(1, "reopen")).await;
            c.expect_method(1, 50, 11).await;
            c.send(&channel_close_frame(1)).await;
            c.expect_method(1, 20, 41).await;
        }
    })
    .await;
}

#[tokio::test]
async fn channel_numbers_up_to_channel_max() {
    let broker = start().await;
    within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        for ch in [1u16, 2, 1000, 2047] {
            c.open_channel(ch).await;
            c.send(&declare_frame(ch, "numbers")).await;
            c.expect_method(ch, 50, 11).await;
        }
        // One above the negotiated maximum is a connection error.
        c.send(&raw::method_frame(2048, 20, 10, Args::new().sstr(""))).await;
        let close = c.expect_connection_close().await;
        assert_eq!((close.code, close.class_id, close.method_id), (504, 20, 10), "{close:?}");
    })
    .await;
    assert_alive(&broker).await;
}

#[tokio::test]
async fn client_negotiated_channel_max_is_enforced() {
    let broker = start().await;
    within("raw", async {
        let mut c = RawConn::connect(broker.addr).await;
        let tune = c.start_and_login("PLAIN", &raw::plain("guest", "guest")).await;
        c.send(&raw::tune_ok_frame(5, tune.frame_max, 0)).await;
        c.open_vhost("/").await;
        c.open_channel(5).await;
        c.send(&raw::method_frame(6, 20, 10, Args::new().sstr(""))).await;
        let close = c.expect_connection_close().await;
        assert_eq!(close.code, 504, "{close:?}");
    })
    .await;
    // A server configured with a small channel_max: lapin takes it and its channels work.
    let broker = start_with(|c| c.channel_max = 3).await;
    let conn = within("connect", broker.connect()).await;
    for i in 0..3 {
        let ch = within("open", conn.create_channel()).await.expect("channel within channel_max");
        assert!(ch.id() <= 3, "lapin used channel {}", ch.id());
        declare(&ch, &format!("small-max-{i}")).await;
    }
    assert!(conn.status().connected());
}

#[tokio::test]
async fn method_on_an_unopened_channel_is_504() {
    let broker = start().await;
    within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.send(&declare_frame(3, "q")).await;
        let close = c.expect_connection_close().await;
        assert_eq!((close.code, close.class_id, close.method_id), (504, 50, 10), "{close:?}");
        assert!(close.text.starts_with("CHANNEL_ERROR"), "{close:?}");
    })
    .await;
    assert_alive(&broker).await;
}

#[tokio::test]
async fn method_on_a_closed_channel_is_504() {
    let broker = start().await;
    within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.send(&channel_close_frame(1)).await;
        c.expect_method(1, 20, 41).await;
        c.send(&declare_frame(1, "q")).await;
        let close = c.expect_connection_close().await;
        assert_eq!((close.code, close.class_id, close.method_id), (504, 50, 10), "{close:?}");
    })
    .await;
    assert_alive(&broker).await;
}

#[tokio::test]
async fn channel_open_twice_is_504() {
    let broker = start().await;
    within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.send(&raw::method_frame(1, 20, 10, Args::new().sstr(""))).await;
        let close = c.expect_connection_close().await;
        assert_eq!((close.code, close.class_id, close.method_id), (504, 20, 10), "{close:?}");
    })
    .await;
    assert_alive(&broker).await;
}

#[tokio::test]
async fn channel_error_closes_only_that_channel_lapin() {
    let broker = start().await;
    let conn = within("connect", broker.connect()).await;
    let ch1 = within("open", conn.create_channel()).await.expect("channel");
    let ch2 = within("open", conn.create_channel()).await.expect("channel");
    declare(&ch2, "scope-ok").await;
    let mut consumer = within(
        "consume",
        ch2.basic_consume("scope-ok".into(), "scope-c".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()),
    )
    .await
    .expect("consume");

    let err = within(
        "passive",
        ch1.queue_declare("no-such-queue".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()),
    )
    .await
    .expect_err("passive declare of a missing queue");
    assert_eq!(reply_code(&err), Some(404), "{err:?}");
    assert!(!ch1.status().connected(), "the failing channel is closed");
    assert!(conn.status().connected(), "the connection stays open");

    // The other channel and its consumer keep working; new channels open.
    publish(&ch2, "", "scope-ok", b"still here").await;
    let d = within("deliver", consumer.next()).await.expect("stream").expect("delivery");
    assert_eq!(d.data, b"still here");
    let ch3 = within("open", conn.create_channel()).await.expect("channel after a channel error");
    declare(&ch3, "scope-ok-3").await;
}

#[tokio::test]
async fn channel_error_closes_only_that_channel_raw() {
    let broker = start().await;
    within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.open_channel(2).await;
        c.send(&passive_declare_frame(1, "no-such-queue")).await;
        let close = c.expect_channel_close(1).await;
        assert_eq!((close.code, close.class_id, close.method_id), (404, 50, 10), "{close:?}");
        assert!(close.text.starts_with("NOT_FOUND"), "{close:?}");
        c.send(&declare_frame(2, "other-channel")).await;
        c.expect_method(2, 50, 11).await;
        c.send(&channel_close_ok_frame(1)).await;
        c.send(&declare_frame(2, "other-channel")).await;
        c.expect_method(2, 50, 11).await;
    })
    .await;
}

#[tokio::test]
async fn frames_after_a_server_channel_close_are_ignored_until_close_ok() {
    let broker = start().await;
    within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.send(&passive_declare_frame(1, "no-such-queue")).await;
        let close = c.expect_channel_close(1).await;
        assert_eq!(close.code, 404, "{close:?}");

        // All of these are dropped: no reply, no connection error, no message routed.
        c.send(&declare_frame(1, "ignored-queue")).await;
        c.send(&raw::method_frame(1, 20, 10, Args::new().sstr(""))).await;
        c.send(&raw::publish_frame(1, "", "ignored-queue", 0)).await;
        c.send(&raw::header_frame(1, 3)).await;
        c.send(&raw::body_frame(1, b"abc")).await;
        c.send(&raw::body_frame(1, b"def")).await;
        c.send(&get_frame(1, "ignored-queue")).await;
        c.expect_silence(Duration::from_millis(200)).await;

        // close-ok ends the closing; the channel number can be reused.
        c.send(&channel_close_ok_frame(1)).await;
        c.open_channel(1).await;
        c.send(&passive_declare_frame(1, "ignored-queue")).await;
        let close = c.expect_channel_close(1).await;
        assert_eq!(close.code, 404, "the queue.declare sent while closing must have been dropped: {close:?}");
        c.send(&channel_close_ok_frame(1)).await;

        c.open_channel(1).await;
        c.send(&declare_frame(1, "after-reopen")).await;
        let ok = c.expect_method(1, 50, 11).await;
        assert_eq!(declare_ok_count(&ok), 0);
    })
    .await;
    assert_alive(&broker).await;
}

#[tokio::test]
async fn crossing_channel_close_gets_close_ok() {
    // The server closes a channel while the client closes it too: the client's close gets
    // a close-ok and the client's close-ok finishes the server's close.
    let broker = start().await;
    within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.send(&passive_declare_frame(1, "no-such-queue")).await;
        c.send(&channel_close_frame(1)).await;
        let close = c.expect_channel_close(1).await;
        assert_eq!(close.code, 404, "{close:?}");
        c.expect_method(1, 20, 41).await;
        c.send(&channel_close_ok_frame(1)).await;
        c.open_channel(1).await;
        c.send(&declare_frame(1, "crossing")).await;
        c.expect_method(1, 50, 11).await;
    })
    .await;
}

#[tokio::test]
async fn unacked_messages_return_when_their_channel_closes() {
    let broker = start().await;
    let conn = within("connect", broker.connect()).await;
    let ch1 = within("open", conn.create_channel()).await.expect("channel");
    declare(&ch1, "unacked-close").await;
    publish(&ch1, "", "unacked-close", b"m").await;
    let mut consumer = within("consume", ch1.basic_consume("unacked-close".into(), "c".into(), BasicConsumeOptions::default(), FieldTable::default()))
        .await
        .expect("consume");
    let d = within("deliver", consumer.next()).await.expect("stream").expect("delivery");
    assert!(!d.redelivered);
    // A channel error (not a clean close) must also give the message back.
    let err = within("passive", ch1.queue_declare("missing".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()))
        .await
        .expect_err("404");
    assert_eq!(reply_code(&err), Some(404));
    let ch2 = within("open", conn.create_channel()).await.expect("channel");
    let got = within("get", async {
        loop {
            if let Some(m) = ch2.basic_get("unacked-close".into(), BasicGetOptions { no_ack: true }).await.expect("get") {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(got.delivery.data, b"m");
    assert!(got.delivery.redelivered);
}

#[tokio::test]
async fn channel_flow_active_is_answered_and_deliveries_go_on() {
    let broker = start().await;
    let (_conn, ch) = within("connect", broker.channel()).await;
    let (_pconn, publisher) = within("connect", broker.channel()).await;
    declare(&ch, "flow").await;
    let mut consumer = within("consume", ch.basic_consume("flow".into(), "flow-c".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()))
        .await
        .expect("consume");
    let active = within("flow on", ch.channel_flow(ChannelFlowOptions { active: true })).await.expect("channel.flow");
    assert!(active, "flow-ok must echo active=true");
    publish(&publisher, "", "flow", b"m").await;
    let d = within("deliver", consumer.next()).await.expect("stream").expect("delivery");
    assert_eq!(d.data, b"m");
}

#[tokio::test]
async fn channel_flow_inactive_from_a_client_is_540() {
    // rabbit_channel: a client may not stop the server's deliveries with channel.flow.
    let broker = start().await;
    let (conn, ch) = within("connect", broker.channel()).await;
    let r = within("flow off", ch.channel_flow(ChannelFlowOptions { active: false })).await;
    assert_code(r, 540, "channel.flow active=false");
    assert!(!conn.status().connected(), "540 closes the connection");
    assert_alive(&broker).await;
}

#[tokio::test]
async fn channel_flow_on_a_raw_socket() {
    let broker = start().await;
    within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.send(&raw::method_frame(1, 20, 20, Args::new().octet(1))).await;
        let ok = c.expect_method(1, 20, 21).await;
        assert_eq!(ok.args(), &[1]);
        c.send(&raw::method_frame(1, 20, 20, Args::new().octet(0))).await;
        let close = c.expect_connection_close().await;
        assert_eq!((close.code, close.class_id, close.method_id), (540, 20, 20), "{close:?}");
        assert_eq!(close.text, "NOT_IMPLEMENTED - active=false");
    })
    .await;
}
