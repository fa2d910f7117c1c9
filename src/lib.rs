//! Warren, an AMQP 0-9-1 broker that RabbitMQ clients use unchanged.
//!
//! Layers, from the socket inwards:
//! - [`server`]: the listeners (plain and TLS), connection limit, graceful shutdown;
//! - [`tls`]: the TLS configuration, its reload, client certificates as EXTERNAL logins;
//! - [`connection`]: per connection, the handshake, the frame loop and channel state
//!   machines, mapping methods to the broker and errors to close methods;
//! - [`outbound`]: the per-connection frame buffer drained by the writer task;
//! - [`broker`]: vhosts, exchanges, queues, bindings, consumers: the model;
//! - [`access`]: users, permissions, limits: who may do what;
//! - [`definitions`]: RabbitMQ's definitions format, imported and exported;
//! - `warren_protocol` (crate `protocol/`): framing and codecs, no I/O;
//! - `warren_storage` (crate `storage/`): persistence.
//!
//! [`config`] and [`metrics`] serve all of them. Beside the broker: [`management`] (the HTTP
//! API, web UI and Prometheus endpoints), [`ctl`] (`warren ctl`) and [`embedded`] (a broker
//! inside a test process).

pub mod access;
pub mod broker;
pub mod config;
pub mod connection;
pub mod ctl;
pub mod definitions;
pub mod embedded;
pub mod management;
pub mod metrics;
pub mod outbound;
pub mod server;
pub mod tls;

pub use config::{Cli, Compat, Config};
pub use server::{Server, StartError};
