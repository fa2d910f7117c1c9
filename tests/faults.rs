//! Fault injection over the management API, each fault seen by a real client: a close
//! with a chosen code, a TCP reset, a freeze that starves heartbeats, a delay, the memory
//! alarm on demand, nacked publishes, cancelled consumers and a simulated restart.

mod common;

use std::time::{Duration, Instant};

use common::raw::{body_frame, header_frame, publish_frame, RawConn};
use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{json, Value};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// An HTTP call to the management API as guest: (status, JSON body or null).
async fn api(port: u16, method: &'static str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{port}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut request = ureq::http::Request::builder().method(method).uri(&url).header("authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=");
        let response = match body {
            Some(b) => agent.run(request.header("content-type", "application/json").body(b.to_string()).expect("request")),
            None => {
                request = request.header("content-length", "0");
                agent.run(request.body(()).expect("request"))
            }
        };
        let mut response = response.expect("HTTP call");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    })
    .await
    .expect("join")
}

async fn named(b: &TestBroker, name: &str) -> Connection {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(&b.uri(), props).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_reset_freeze_and_delay_reach_the_chosen_connection() {
    let port = free_port();
    let b = start_with(|c| c.management_port = port).await;

    // Close with a chosen code and text, the connection chosen by its client-given name.
    let victim = named(&b, "victim").await;
    let bystander = named(&b, "bystander").await;
    let mut events = Box::pin(victim.events_listener());
    let (status, answer) = api(port, "POST", "/api/warren/connections/victim/close", Some(json!({"code": 541, "reason": "injected failure"}))).await;
    assert_eq!((status, answer["connections"].as_u64()), (200, Some(1)));
    let err = within("the close", async {
        loop {
            if let Some(lapin::Event::Error(e)) = events.next().await {
                return e;
            }
        }
    })
    .await;
    assert_eq!(reply_code(&err), Some(541), "{err:?}");
    assert!(reply_text(&err).contains("injected failure"), "{err:?}");
    assert!(bystander.status().connected(), "another connection was closed too");

    // Reset: no close method, the socket drops; what the client held goes back.
    let ch = bystander.create_channel().await.expect("channel");
    declare(&ch, "held").await;
    publish(&ch, "", "held", b"m").await;
    let reset = named(&b, "reset-me").await;
    let rch = reset.create_channel().await.expect("channel");
    let mut consumer = consume(&rch, "held", "holder").await;
    let _unacked = next(&mut consumer).await;
    let mut events = Box::pin(reset.events_listener());
    assert_eq!(api(port, "POST", "/api/warren/connections/reset-me/reset", None).await.0, 200);
    let err = within("the reset", async {
        loop {
            if let Some(lapin::Event::Error(e)) = events.next().await {
                return e;
            }
        }
    })
    .await;
    assert_eq!(reply_code(&err), None, "a reset must not send a close method: {err:?}");
    within("the unacked message back in its queue", async {
        while declare(&ch, "held").await.message_count() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // Freeze: no heartbeats reach the client, which gives up on its own timeout.
    let uri = format!("{}?heartbeat=1", b.uri());
    let frozen = Connection::connect(&uri, ConnectionProperties::default().with_connection_name("frozen".into())).await.expect("connect");
    let mut events = Box::pin(frozen.events_listener());
    assert_eq!(api(port, "POST", "/api/warren/connections/frozen/freeze", Some(json!({"seconds": 30}))).await.0, 200);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Some(lapin::Event::Error(_)) = events.next().await {
                return;
            }
        }
    })
    .await
    .expect("the client noticed the missing heartbeats");
    eprintln!("client gave up on the frozen connection after {:?}", started.elapsed());

    // A close ends a freeze: the close method goes out at once.
    let iced = named(&b, "iced").await;
    assert_eq!(api(port, "POST", "/api/warren/connections/iced/freeze", Some(json!({"seconds": 600}))).await.0, 200);
    let code = close_code(&iced, async {
        assert_eq!(api(port, "POST", "/api/warren/connections/iced/close", Some(json!({"code": 320, "reason": "thawed to close"}))).await.0, 200);
    })
    .await;
    assert_eq!(code, 320);

    // Delay: every frame to the client comes that much later; others are not slowed.
    let slow = named(&b, "slow").await;
    let sch = slow.create_channel().await.expect("channel");
    assert_eq!(api(port, "POST", "/api/warren/connections/slow/delay", Some(json!({"ms": 400}))).await.0, 200);
    let t = Instant::now();
    sch.queue_declare("slow-q".into(), QueueDeclareOptions::default(), Default::default()).await.expect("declare");
    assert!(t.elapsed() >= Duration::from_millis(350), "declare-ok came after {:?}", t.elapsed());
    assert_eq!(api(port, "POST", "/api/warren/connections/slow/delay", Some(json!({"ms": 0}))).await.0, 200);

    // Unknown names and bad bodies.
    assert_eq!(api(port, "POST", "/api/warren/connections/nobody/reset", None).await.0, 404);
    assert_eq!(api(port, "POST", "/api/warren/connections/slow/close", Some(json!({"code": 999}))).await.0, 400);
    assert_eq!(api(port, "POST", "/api/warren/connections/slow/freeze", Some(json!({}))).await.0, 400);
    assert_alive(&b).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_nacks_cancels_and_a_simulated_restart_are_seen_by_clients() {
    let port = free_port();
    let b = start_with(|c| c.management_port = port).await;
    let (conn, ch) = b.channel().await;
    declare(&ch, "q").await;

    // The memory alarm on demand: a publisher is blocked, then unblocked.
    let mut publisher = RawConn::handshake(b.addr).await;
    publisher.open_channel(1).await;
    assert_eq!(api(port, "PUT", "/api/warren/alarms/memory", None).await.0, 204);
    assert_eq!(api(port, "GET", "/api/health/checks/alarms", None).await.0, 503);
    let mut frames = publish_frame(1, "", "q", 0);
    frames.extend(header_frame(1, 4));
    frames.extend(body_frame(1, b"held"));
    publisher.send(&frames).await;
    let blocked = publisher.expect_method(0, 10, 60).await;
    assert!(String::from_utf8_lossy(blocked.args()).contains("low on memory"), "{}", blocked.describe());
    assert_eq!(api(port, "DELETE", "/api/warren/alarms/memory", None).await.0, 204);
    publisher.expect_method(0, 10, 61).await;

    // The next two publishes to the queue are nacked, the third is acked.
    let confirms = conn.create_channel().await.expect("channel");
    confirms.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
    assert_eq!(api(port, "POST", "/api/warren/queues/%2F/q/nack-publishes", Some(json!({"count": 2}))).await.0, 204);
    let mut outcomes = Vec::new();
    for i in 0..3u8 {
        let confirm = confirms.basic_publish("".into(), "q".into(), BasicPublishOptions::default(), &[i], BasicProperties::default()).await.expect("publish");
        outcomes.push(confirm.await.expect("confirm").is_ack());
    }
    assert_eq!(outcomes, [false, false, true]);

    // Cancelling a queue's consumers: the client gets basic.cancel, its stream ends.
    let cch = conn.create_channel().await.expect("channel");
    let mut consumer = consume(&cch, "q", "to-cancel").await;
    let (status, answer) = api(port, "POST", "/api/warren/queues/%2F/q/cancel-consumers", None).await;
    assert_eq!((status, answer["cancelled"].as_u64()), (200, Some(1)));
    within("the consumer's end", async {
        while let Some(d) = consumer.next().await {
            d.expect("delivery").ack(BasicAckOptions::default()).await.expect("ack");
        }
    })
    .await;

    // A simulated restart: 320 with RabbitMQ's shutdown text, connections refused for a
    // while, then accepted again.
    let close = close_code(&conn, async {
        let (status, answer) = api(port, "POST", "/api/warren/restart", Some(json!({"seconds": 2}))).await;
        assert_eq!(status, 200);
        assert!(answer["closed"].as_u64() >= Some(1));
    })
    .await;
    assert_eq!(close, 320);
    assert!(Connection::connect(&b.uri(), ConnectionProperties::default()).await.is_err(), "a connection was accepted during the restart");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if Connection::connect(&b.uri(), ConnectionProperties::default()).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "connections still refused after the simulated downtime");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_trace_records_both_directions_and_can_be_followed_live() {
    let port = free_port();
    let b = start_with(|c| c.management_port = port).await;
    let traced = named(&b, "traced").await;
    let ch = traced.create_channel().await.expect("channel");
    assert_eq!(api(port, "GET", "/api/warren/connections/traced/trace", None).await.0, 400, "no trace yet");
    assert_eq!(api(port, "POST", "/api/warren/connections/traced/trace", None).await.0, 200);
    // The command reaches the connection's task asynchronously; a round trip after it
    // is recorded.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        declare(&ch, "traced-q").await;
        let text = trace_text(port).await;
        if text.contains("queue.declare-ok") {
            break;
        }
        assert!(Instant::now() < deadline, "nothing traced: {text}");
    }
    publish(&ch, "", "traced-q", b"hello trace").await;
    let _ = get_body(&ch, "traced-q").await;
    let text = trace_text(port).await;
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let has = |dir: &str, method: &str| lines.iter().any(|l| l["dir"] == dir && l["method"] == method);
    assert!(has("in", "queue.declare") && has("out", "queue.declare-ok"), "{text}");
    assert!(has("in", "basic.publish") && has("in", "basic.get") && has("out", "basic.get-ok"), "{text}");
    assert!(lines.iter().any(|l| l["type"] == "header" && l["body_size"] == 11 && l["dir"] == "in"), "{text}");
    assert!(lines.iter().any(|l| l["type"] == "body" && l["prefix"] == "hello trace" && l["dir"] == "out"), "{text}");
    assert!(lines.iter().all(|l| l["ts"].as_u64().is_some() && l["channel"].as_u64().is_some()), "{text}");

    // Following: a line for a frame sent after the follower joined arrives on the stream.
    let url = format!("http://127.0.0.1:{port}/api/warren/connections/traced/trace?follow=true");
    let follower = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut response = agent.get(&url).header("authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=").call().expect("follow");
        let reader = std::io::BufReader::new(response.body_mut().as_reader());
        for line in std::io::BufRead::lines(reader) {
            let line = line.expect("line");
            if line.contains("exchange.declare-ok") {
                return line;
            }
        }
        panic!("the follow stream ended without the new frame");
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    ch.exchange_declare("traced-x".into(), lapin::ExchangeKind::Fanout, Default::default(), Default::default()).await.expect("exchange");
    let line = within("the followed line", follower).await.expect("follower");
    assert!(line.contains("\"dir\":\"out\""), "{line}");

    // Stopped: later frames are not recorded, what was kept stays readable.
    assert_eq!(api(port, "DELETE", "/api/warren/connections/traced/trace", None).await.0, 204);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = trace_text(port).await.lines().count();
    declare(&ch, "after-stop").await;
    assert_eq!(trace_text(port).await.lines().count(), before, "recorded after the trace stopped");
    b.stop().await;
}

/// The kept trace lines of the connection "traced".
async fn trace_text(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/api/warren/connections/traced/trace");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        agent.get(&url).header("authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=").call().expect("trace").body_mut().read_to_string().expect("body")
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backdoor_peeks_waits_and_resets_a_vhost() {
    let port = free_port();
    let b = start_with(|c| c.management_port = port).await;
    let (conn, ch) = b.channel().await;
    declare(&ch, "bd").await;
    for body in [b"one".as_slice(), b"two", b"three"] {
        publish(&ch, "", "bd", body).await;
    }
    // The publishes are in once the wait answers (lapin does not wait for them).
    assert_eq!(api(port, "GET", "/api/warren/queues/%2F/bd/wait?messages=3", None).await.0, 200);
    // Peek: the first two, in order, left in place and not marked redelivered.
    let (status, peeked) = api(port, "GET", "/api/warren/queues/%2F/bd/messages?count=2", None).await;
    assert_eq!(status, 200);
    let payloads: Vec<&str> = peeked.as_array().expect("array").iter().map(|m| m["payload"].as_str().expect("payload")).collect();
    assert_eq!(payloads, ["one", "two"]);
    assert_eq!(declare(&ch, "bd").await.message_count(), 3);
    let first = ch.basic_get("bd".into(), BasicGetOptions { no_ack: false }).await.expect("get").expect("a message");
    assert_eq!(first.delivery.data, b"one");
    assert!(!first.delivery.redelivered, "peeking marked the message redelivered");

    // Wait: for a count that holds now, for an ack to come, and a timeout.
    let (status, state) = api(port, "GET", "/api/warren/queues/%2F/bd/wait?messages=3", None).await;
    assert_eq!((status, state["messages_unacknowledged"].as_u64()), (200, Some(1)));
    let acker = {
        let delivery = first.delivery;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
        })
    };
    let (status, state) = api(port, "GET", "/api/warren/queues/%2F/bd/wait?acks=1&timeout=10000", None).await;
    assert_eq!((status, state["acks"].as_u64(), state["messages"].as_u64()), (200, Some(1), Some(2)));
    acker.await.expect("acker");
    assert_eq!(api(port, "GET", "/api/warren/queues/%2F/bd/wait?messages=5&timeout=200", None).await.0, 408);
    assert_eq!(api(port, "GET", "/api/warren/queues/%2F/bd/wait", None).await.0, 400);

    // Reset: queues, exchanges and policies go; the vhost, amq.* and permissions stay.
    ch.exchange_declare("bd-x".into(), lapin::ExchangeKind::Topic, Default::default(), Default::default()).await.expect("exchange");
    assert_eq!(api(port, "PUT", "/api/policies/%2F/bd-p", Some(json!({"pattern": "^bd", "definition": {"max-length": 10}}))).await.0, 201);
    let (status, gone) = api(port, "DELETE", "/api/warren/vhosts/%2F/contents", None).await;
    assert_eq!(status, 200);
    assert_eq!((gone["queues"].as_u64(), gone["exchanges"].as_u64(), gone["policies"].as_u64()), (Some(1), Some(1), Some(1)));
    assert_eq!(api(port, "GET", "/api/queues/%2F/bd", None).await.0, 404);
    assert_eq!(api(port, "GET", "/api/exchanges/%2F/bd-x", None).await.0, 404);
    assert_eq!(api(port, "GET", "/api/exchanges/%2F/amq.topic", None).await.0, 200);
    assert_eq!(api(port, "GET", "/api/policies/%2F/bd-p", None).await.0, 404);
    let _ = conn.close(200, "bye".into()).await;
    b.stop().await;
}
