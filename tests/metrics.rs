//! The Prometheus endpoint over HTTP: RabbitMQ's metric names, and a bounded listener that
//! idle sockets cannot exhaust.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

async fn scrape(port: u16) -> String {
    scrape_path(port, "/metrics").await
}

async fn scrape_path(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.expect("request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("response");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_use_rabbitmqs_names_and_idle_sockets_cannot_exhaust_the_listener() {
    let port = free_port();
    let b = start_with(|c| c.metrics_port = port).await;
    let (_conn, _ch) = b.channel().await;
    let text = within("scrape", scrape(port)).await;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    for name in ["rabbitmq_connections 1", "rabbitmq_alarms_memory_used_watermark 0", "rabbitmq_alarms_free_disk_space_watermark 0", "rabbitmq_channels_opened_total 1", "rabbitmq_identity_info{"] {
        assert!(text.contains(name), "{name} missing in {text}");
    }
    // More idle sockets than the listener serves at once (16): they are accepted a few at a
    // time and their slots come back after the request timeout (5 s), so a real scrape
    // behind them still gets through (a slot that leaked would starve it).
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(TcpStream::connect(("127.0.0.1", port)).await.expect("idle connect"));
    }
    let started = Instant::now();
    let text = tokio::time::timeout(Duration::from_secs(60), scrape(port)).await.expect("a scrape behind 40 idle sockets");
    assert!(text.contains("rabbitmq_connections"), "{text}");
    assert!(started.elapsed() >= Duration::from_secs(4), "served before the idle sockets timed out: the listener is not bounded");
    assert_alive(&b).await;
    drop(idle);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_object_and_detailed_metrics_have_rabbitmqs_queue_series() {
    let port = free_port();
    let b = start_with(|c| c.metrics_port = port).await;
    let (conn, ch) = b.channel().await;
    declare(&ch, "metrics-q").await;
    for _ in 0..3 {
        publish(&ch, "", "metrics-q", b"m").await;
    }
    let consumer_ch = conn.create_channel().await.expect("channel");
    consumer_ch.basic_qos(1, lapin::options::BasicQosOptions::default()).await.expect("qos");
    let mut consumer = consume(&consumer_ch, "metrics-q", "held").await;
    let _held = next(&mut consumer).await;
    let text = within("per-object", scrape_path(port, "/metrics/per-object")).await;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    for line in [
        r#"rabbitmq_queue_messages_ready{vhost="/",queue="metrics-q"} 2"#,
        r#"rabbitmq_queue_messages_unacked{vhost="/",queue="metrics-q"} 1"#,
        r#"rabbitmq_queue_messages{vhost="/",queue="metrics-q"} 3"#,
        r#"rabbitmq_queue_consumers{vhost="/",queue="metrics-q"} 1"#,
        r#"rabbitmq_queue_messages_published_total{vhost="/",queue="metrics-q"} 3"#,
        "rabbitmq_identity_info{",
        "rabbitmq_connection_channels{",
        "rabbitmq_channel_messages_unacked{",
    ] {
        assert!(text.contains(line), "{line} missing in {text}");
    }
    // The aggregated series RabbitMQ's Overview dashboard reads.
    let aggregated = within("aggregated", scrape_path(port, "/metrics")).await;
    for line in [
        "rabbitmq_queues 1",
        "rabbitmq_consumers 1",
        "rabbitmq_channels 2",
        "rabbitmq_queue_messages_ready 2",
        "rabbitmq_queue_messages_unacked 1",
        "rabbitmq_channel_messages_unacked 1",
        "rabbitmq_channel_messages_published_total 3",
        "rabbitmq_channel_messages_delivered_ack_total 1",
        "rabbitmq_channel_get_total 0",
        "rabbitmq_process_open_fds ",
        "rabbitmq_disk_space_available_bytes ",
    ] {
        assert!(aggregated.contains(line), "{line} missing in {aggregated}");
    }
    let detailed = within("detailed", scrape_path(port, "/metrics/detailed?family=queue_coarse_metrics&vhost=%2F")).await;
    assert!(detailed.contains(r#"rabbitmq_detailed_queue_messages_ready{vhost="/",queue="metrics-q"} 2"#), "{detailed}");
    assert!(!detailed.contains("rabbitmq_detailed_queue_consumers"), "family filter ignored: {detailed}");
    let exchanges = within("detailed exchanges", scrape_path(port, "/metrics/detailed?family=exchange_bindings&family=exchange_names")).await;
    assert!(exchanges.contains(r#"rabbitmq_cluster_exchange_name{vhost="/",exchange="amq.topic",type="topic"} 1"#), "{exchanges}");
    assert!(exchanges.contains(r#"rabbitmq_cluster_exchange_bindings{vhost="/",exchange="",type="direct"} 1"#), "{exchanges}");
    assert!(!exchanges.contains("rabbitmq_detailed_queue"), "{exchanges}");
    b.stop().await;
}
