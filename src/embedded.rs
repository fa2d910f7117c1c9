//! A broker inside a test process: started on free ports, with its store in memory or
//! in a directory, stopped, and restarted on the same directory and ports, so a test can
//! watch its client reconnect.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties};
//!
//! let broker = warren::embedded::EmbeddedBroker::start(warren::embedded::Store::Memory).await.unwrap();
//! let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default()).await.unwrap();
//! let ch = conn.create_channel().await.unwrap();
//! ch.queue_declare("jobs".into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
//! ch.basic_publish("".into(), "jobs".into(), BasicPublishOptions::default(), b"hello", BasicProperties::default()).await.unwrap();
//! let got = ch.basic_get("jobs".into(), BasicGetOptions { no_ack: true }).await.unwrap().expect("a message");
//! assert_eq!(got.delivery.data, b"hello");
//! conn.close(200, "done".into()).await.unwrap();
//! broker.stop().await;
//! # });
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::{Config, Server, StartError};

/// Where an embedded broker keeps durable entities and persistent messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// In memory (gone when the broker stops; a restart starts empty).
    Memory,
    /// In this data directory (kept across [`EmbeddedBroker::restart`]).
    Dir(PathBuf),
}

/// A running broker on loopback free ports, with the management API on.
#[derive(Debug)]
pub struct EmbeddedBroker {
    config: Config,
    amqp: SocketAddr,
    management: Option<SocketAddr>,
    broker: Arc<Broker>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Starts a broker with `store` on free loopback ports (AMQP and management).
    pub async fn start(store: Store) -> Result<EmbeddedBroker, StartError> {
        let mut config = Config { bind: [127, 0, 0, 1].into(), port: 0, metrics_port: 0, free_ports: true, ..Config::default() };
        match store {
            Store::Memory => config.ephemeral = true,
            Store::Dir(dir) => config.data_dir = dir,
        }
        Self::start_with(config).await
    }

    /// Starts a broker with `config` as it is (its ports, its store).
    pub async fn start_with(config: Config) -> Result<EmbeddedBroker, StartError> {
        let server = Server::bind(config.clone()).await?;
        let amqp = server.local_addr().map_err(|source| StartError::Listen { what: "AMQP", addr: SocketAddr::new(config.bind, config.port), source })?;
        let management = server.management_addr();
        let broker = server.broker();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Ok(EmbeddedBroker { config, amqp, management, broker, stop, task })
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2F`.
    pub fn amqp_url(&self) -> String {
        format!("amqp://{}:{}@{}/%2F", self.config.default_user, self.config.default_pass, self.amqp)
    }

    /// The AMQP address.
    pub fn amqp_addr(&self) -> SocketAddr {
        self.amqp
    }

    /// The management API's base URL (`http://127.0.0.1:<port>/`), if on.
    pub fn management_url(&self) -> Option<String> {
        self.management.map(|a| format!("http://{a}/"))
    }

    /// The broker itself (users, vhosts, policies in process).
    pub fn broker(&self) -> Arc<Broker> {
        Arc::clone(&self.broker)
    }

    /// Stops it gracefully: clients get 320 CONNECTION_FORCED, the store is flushed.
    pub async fn stop(self) {
        let EmbeddedBroker { stop, task, broker, .. } = self;
        drop(broker);
        let _ = stop.send(());
        let _ = task.await;
        // Let the store's background threads release it before anyone reopens it.
        tokio::task::yield_now().await;
    }

    /// Stops it and starts it again on the same ports and store (an on-disk store keeps
    /// its durable entities and persistent messages; a memory store starts empty).
    pub async fn restart(self) -> Result<EmbeddedBroker, StartError> {
        let mut config = self.config.clone();
        config.port = self.amqp.port();
        if let Some(m) = self.management {
            config.management_port = m.port();
            config.free_ports = false;
            config.metrics_port = 0;
        }
        self.stop().await;
        Self::start_with(config).await
    }
}
