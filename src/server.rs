//! The listeners: plain AMQP and AMQP over TLS side by side (either can be off, not both),
//! accepting connections up to one shared limit, one task per connection; starts the
//! management and metrics HTTP listeners;
//! shuts down gracefully: on the shutdown signal every connection is closed with 320
//! CONNECTION_FORCED and the server waits for them to finish.
//!
//! A TLS connection's slot is taken at accept like any other; a TLS handshake that fails
//! or outlasts the handshake timeout is one log line and gives the slot back.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::broker::{Broker, Listener};
use crate::config::{Config, ConfigError};
use crate::connection;
use crate::management;
use crate::metrics::Metrics;
use crate::tls::{CertLogin, Tls, TlsError};

/// How long shutdown waits for connections to finish closing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The settings are inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS certificate, key or client CAs could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// A port could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        source: io::Error,
    },
    /// The store or the access records could not be opened.
    #[error("{0}")]
    Open(#[from] crate::broker::OpenError),
    /// The definitions file was refused.
    #[error("{0}")]
    Definitions(#[from] crate::definitions::DefinitionsError),
}

/// A bound, not yet running, broker.
#[derive(Debug)]
pub struct Server {
    /// Plain AMQP; `None` with `no_plain`.
    listener: Option<TcpListener>,
    /// AMQP over TLS, with the TLS state it serves; `None` unless a certificate is set.
    tls: Option<(TcpListener, Arc<Tls>)>,
    metrics_listener: Option<TcpListener>,
    /// The management API and web UI; `None` when disabled.
    management_listener: Option<TcpListener>,
    broker: Arc<Broker>,
}

impl Server {
    /// Loads the TLS files (if any), binds the AMQP ports and, unless disabled, the metrics
    /// port, and opens the store.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        config.validate()?;
        // The files first: a bad certificate is reported before any port is taken.
        let tls = Tls::load(&config)?;
        let listen = |what: &'static str, port: u16| {
            let addr = SocketAddr::new(config.bind, port);
            async move { TcpListener::bind(addr).await.map_err(|source| StartError::Listen { what, addr, source }) }
        };
        let listener = if config.no_plain { None } else { Some(listen("AMQP", config.port).await?) };
        let tls = match tls {
            Some(tls) => Some((listen("AMQP over TLS", config.tls_port).await?, Arc::new(tls))),
            None => None,
        };
        // `free_ports`: the HTTP listeners that are on take any free port too.
        let http_port = |port: u16| if config.free_ports { 0 } else { port };
        let metrics_listener = match config.metrics_port {
            0 => None,
            port => Some(listen("metrics", http_port(port)).await?),
        };
        let management_listener = match config.management_port {
            0 => None,
            port => Some(listen("the management API", http_port(port)).await?),
        };
        // The file is read before the store opens: a bad file changes nothing.
        let definitions = config.definitions.as_deref().map(crate::definitions::Definitions::read).transpose()?;
        let broker = Arc::new(Broker::open(config, Metrics::new())?);
        if let Some(defs) = definitions {
            broker.import(&defs)?;
            info!(users = defs.users.len(), vhosts = defs.vhosts.len(), queues = defs.queues.len(), exchanges = defs.exchanges.len(), bindings = defs.bindings.len(), "definitions imported");
        }
        let bound = [("amqp", listener.as_ref()), ("amqp/ssl", tls.as_ref().map(|(l, _)| l)), ("http", management_listener.as_ref()), ("http/prometheus", metrics_listener.as_ref())]
            .into_iter()
            .filter_map(|(protocol, l)| Some(Listener { protocol, addr: l?.local_addr().ok()? }))
            .collect();
        let _ = broker.listeners.set(bound);
        broker.start_mark_writer();
        broker.disk.start();
        broker.memory.start();
        Ok(Server { listener, tls, metrics_listener, management_listener, broker })
    }

    /// The plain AMQP address actually bound (useful with port 0); an error when the plain
    /// listener is off.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.listener {
            Some(l) => l.local_addr(),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "the plain AMQP listener is off (no_plain)")),
        }
    }

    /// The TLS address actually bound, if serving TLS.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The TLS state, kept to reload the certificates while the server runs (SIGHUP).
    pub fn tls(&self) -> Option<Arc<Tls>> {
        self.tls.as_ref().map(|(_, tls)| Arc::clone(tls))
    }

    /// The broker (to manage users, vhosts and permissions in process).
    pub fn broker(&self) -> Arc<Broker> {
        Arc::clone(&self.broker)
    }

    /// The metrics address, if serving metrics.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The management API address, if serving it.
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.management_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// One JSON line a test fixture reads to find the broker: its AMQP (and AMQPS) URL,
    /// management and metrics URLs (those that are on) and its process id.
    pub fn ready_line(&self) -> String {
        let config = &self.broker.config;
        let user = percent_encoding::utf8_percent_encode(&config.default_user, percent_encoding::NON_ALPHANUMERIC);
        let pass = percent_encoding::utf8_percent_encode(&config.default_pass, percent_encoding::NON_ALPHANUMERIC);
        let vhost = percent_encoding::utf8_percent_encode(&config.default_vhost, percent_encoding::NON_ALPHANUMERIC);
        let host = |a: SocketAddr| if a.ip().is_unspecified() { SocketAddr::new([127, 0, 0, 1].into(), a.port()) } else { a };
        let mut line = serde_json::Map::new();
        if let Ok(a) = self.local_addr() {
            line.insert("amqp_url".into(), format!("amqp://{user}:{pass}@{}/{vhost}", host(a)).into());
        }
        if let Some(a) = self.tls_addr() {
            line.insert("amqps_url".into(), format!("amqps://{user}:{pass}@{}/{vhost}", host(a)).into());
        }
        if let Some(a) = self.management_addr() {
            line.insert("management_url".into(), format!("http://{}/", host(a)).into());
        }
        if let Some(a) = self.metrics_addr() {
            line.insert("metrics_url".into(), format!("http://{}/metrics", host(a)).into());
        }
        line.insert("pid".into(), std::process::id().into());
        serde_json::Value::Object(line).to_string()
    }

    /// Accepts connections until `shutdown` resolves, then closes them all.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { listener, tls, metrics_listener, management_listener, broker } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        if let Some(l) = metrics_listener {
            tokio::spawn(management::serve(l, management::metrics_router(Arc::clone(&broker)), management::METRICS_BOUNDS, stop_rx.clone()));
        }
        if let Some(l) = management_listener {
            tokio::spawn(management::serve(l, management::management_router(Arc::clone(&broker)), management::MANAGEMENT_BOUNDS, stop_rx.clone()));
        }
        let (tls_listener, tls) = tls.unzip();
        let limit = Arc::new(Semaphore::new(broker.config.max_connections));
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
            let (accepted, tls) = tokio::select! {
                accepted = accept(listener.as_ref()) => (accepted, None),
                accepted = accept(tls_listener.as_ref()) => (accepted, tls.clone()),
                _ = &mut shutdown => break,
            };
            match accepted {
                Ok((stream, _)) if broker.refusing_connections() => {
                    // A simulated restart: the client sees its connection reset at once.
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    drop(stream);
                }
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().unwrap_or_else(|_| SocketAddr::new(broker.config.bind, 0));
                    // One deadline for the TLS and the AMQP handshake together.
                    let deadline = Instant::now() + Duration::from_secs(broker.config.handshake_timeout);
                    let broker = Arc::clone(&broker);
                    let stop = stop_rx.clone();
                    let done = done_tx.clone();
                    // Each kind of connection is boxed: inline, every plain connection's task
                    // would also hold room for a TLS session (11.6 KiB instead of 1.4).
                    tokio::spawn(async move {
                        let serving: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match tls {
                            None => Box::pin(connection::serve(broker, stream, (peer, local), None, deadline, stop)),
                            Some(tls) => Box::pin(serve_tls(tls, broker, stream, (peer, local), deadline, stop)),
                        };
                        serving.await;
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
        let all_closed = tokio::time::timeout(SHUTDOWN_GRACE, done_rx.recv()).await.is_ok();
        if !all_closed {
            warn!("some connections did not close in time");
        }
        if let Err(e) = broker.close_store(all_closed) {
            error!(error = %e, "final store flush failed");
        }
        info!("shutdown complete");
    }
}

/// Accepts on `listener`; never resolves without one, so a listener that is off simply
/// never wins the accept loop's `select!`.
async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// A TLS connection: the TLS handshake, then the AMQP connection over it.
async fn serve_tls(tls: Arc<Tls>, broker: Arc<Broker>, stream: TcpStream, addrs: (SocketAddr, SocketAddr), deadline: Instant, stop: watch::Receiver<bool>) {
    if let Some((stream, login)) = tls_handshake(&tls, stream, addrs.0, deadline, &broker, stop.clone()).await {
        connection::serve(broker, stream, addrs, login, deadline, stop).await;
    }
}

/// The TLS handshake of an accepted socket, bounded by `deadline` and given up at
/// shutdown. A failure is one log line; the caller's task then ends, which frees the
/// connection slot.
async fn tls_handshake(
    tls: &Tls,
    stream: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    broker: &Broker,
    mut stop: watch::Receiver<bool>,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Option<CertLogin>)> {
    tokio::select! {
        done = tokio::time::timeout_at(deadline, tls.accept(stream)) => match done {
            Ok(Ok(accepted)) => Some(accepted),
            Ok(Err(e)) => {
                warn!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                warn!(%peer, timeout_secs = broker.config.handshake_timeout, "TLS handshake timed out");
                None
            }
        },
        _ = stop.changed() => None,
    }
}
