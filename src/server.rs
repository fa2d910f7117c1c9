//! The listener: accepts connections up to the configured limit, runs one task per
//! connection, serves metrics, and shuts down gracefully: on the shutdown signal every
//! connection is closed with 320 CONNECTION_FORCED and the server waits for them to finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{error, info, warn};

use crate::broker::Broker;
use crate::config::Config;
use crate::connection;
use crate::metrics::Metrics;

/// How long shutdown waits for connections to finish closing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A bound, not yet running, broker.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    broker: Arc<Broker>,
}

impl Server {
    /// Binds the AMQP port and, unless disabled, the metrics port.
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        let listener = TcpListener::bind(SocketAddr::new(config.bind, config.port)).await?;
        let metrics_listener = match config.metrics_port {
            0 => None,
            port => Some(TcpListener::bind(SocketAddr::new(config.bind, port)).await?),
        };
        let broker = Arc::new(Broker::open(config, Metrics::new()).map_err(std::io::Error::other)?);
        broker.start_mark_writer();
        Ok(Server { listener, metrics_listener, broker })
    }

    /// The AMQP address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The metrics address, if serving metrics.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Accepts connections until `shutdown` resolves, then closes them all.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { listener, metrics_listener, broker } = self;
        if let Some(l) = metrics_listener {
            tokio::spawn(broker.metrics.clone().serve(l));
        }
        let limit = Arc::new(Semaphore::new(broker.config.max_connections));
        let (stop_tx, stop_rx) = watch::channel(false);
        // Each connection task holds a clone; recv() returns None once all have ended.
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&limit).acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = &mut shutdown => break,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = &mut shutdown => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let broker = Arc::clone(&broker);
                    let stop = stop_rx.clone();
                    let done = done_tx.clone();
                    tokio::spawn(async move {
                        connection::serve(broker, stream, peer, stop).await;
                        drop(permit);
                        drop(done);
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        info!("shutting down: closing connections");
        let _ = stop_tx.send(true);
        drop(done_tx);
        if tokio::time::timeout(SHUTDOWN_GRACE, done_rx.recv()).await.is_err() {
            warn!("some connections did not close in time");
        }
        if let Err(e) = broker.flush() {
            error!(error = %e, "final store flush failed");
        }
        info!("shutdown complete");
    }
}
