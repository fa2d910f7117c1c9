//! Shared helpers for the integration tests: an in-process broker on a free port, lapin
//! connections to it, and small assertions on AMQP errors.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use warren::{Config, Server};

/// A broker running in this test process.
pub struct TestBroker {
    /// Its AMQP address.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data_dir: std::path::PathBuf,
    /// Dropping this stops the broker.
    stop: tokio::sync::oneshot::Sender<()>,
    /// The server task.
    task: tokio::task::JoinHandle<()>,
}

impl TestBroker {
    /// Stops the broker gracefully and waits until it has finished.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }

    /// The amqp:// URI of the default vhost.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// A new lapin connection.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.uri(), ConnectionProperties::default()).await.expect("connect")
    }

    /// A new connection and a channel on it.
    pub async fn channel(&self) -> (Connection, Channel) {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.expect("channel");
        (conn, ch)
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Starts a broker on a free loopback port with `adjust` applied to the default config.
pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestBroker {
    let mut config = Config { bind: [127, 0, 0, 1].into(), port: 0, metrics_port: 0, data_dir: fresh_data_dir(), ..Config::default() };
    adjust(&mut config);
    let config_dir = config.data_dir.clone();
    let server = Server::bind(config).await.expect("bind");
    let addr = server.local_addr().expect("addr");
    let data_dir = config_dir;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    TestBroker { addr, data_dir, stop: tx, task }
}

/// A new, empty data directory under the system's temp dir.
pub fn fresh_data_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("warren-test-{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)))
}

/// Starts a broker with the default configuration.
pub async fn start() -> TestBroker {
    start_with(|_| {}).await
}

/// Fails the test instead of hanging.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// The reply code of a lapin protocol error.
pub fn reply_code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

/// The reply text of a lapin protocol error.
pub fn reply_text(err: &lapin::Error) -> String {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => e.get_message().to_string(),
        other => format!("{other:?}"),
    }
}

/// Declares a non-durable queue with default flags.
pub async fn declare(ch: &Channel, name: &str) -> lapin::Queue {
    ch.queue_declare(name.into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("queue.declare")
}

/// Publishes `body` to `exchange` with `key`.
pub async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8]) {
    ch.basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), body, BasicProperties::default())
        .await
        .expect("basic.publish");
}

/// basic.get with no-ack, returning the body.
pub async fn get_body(ch: &Channel, queue: &str) -> Option<Vec<u8>> {
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("basic.get").map(|m| m.delivery.data.clone())
}
