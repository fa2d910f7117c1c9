//! The management plane: RabbitMQ's HTTP API (`api`), the web UI (`ui`) and the Prometheus
//! endpoints (`prometheus`), each a router served by the bounded HTTP listener
//! (`listener`). The API reads the broker's live state on request; message rates come from
//! counters sampled when read (`rates`), so statistics cost messaging nothing but the
//! counters themselves.

mod api;
pub mod auth;
pub mod listener;
mod prometheus;
mod query;
mod rates;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::broker::Broker;
pub use listener::{serve, Bounds};

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct Mgmt {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Message-rate samples.
    rates: Arc<rates::Rates>,
}

/// The management port's bounds: the UI polls a handful of routes per tab.
pub const MANAGEMENT_BOUNDS: Bounds = Bounds { connections: 64, header_timeout: Duration::from_secs(5), request_timeout: Duration::from_secs(60) };

/// The metrics port's bounds: a few scrapers.
pub const METRICS_BOUNDS: Bounds = Bounds { connections: 16, header_timeout: Duration::from_secs(5), request_timeout: Duration::from_secs(30) };

/// Request bodies accepted (RabbitMQ's default `management.http.max_body_size`, 20 MiB:
/// definitions files are the large ones).
const MAX_BODY: usize = 20 * 1024 * 1024;

/// The management port: the API under `/api`, the UI at `/`.
pub fn management_router(broker: Arc<Broker>) -> Router {
    let mgmt = Mgmt { broker, rates: Arc::default() };
    let app = api::routes().merge(ui::routes()).layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)).with_state(mgmt);
    // Before routing: `/api/queues/` is `/api/queues`, as in RabbitMQ.
    Router::new().fallback_service(tower::ServiceExt::map_request(app, trim_trailing_slash))
}

/// An API path without its trailing slash (`/api/` itself kept: the API's index).
fn trim_trailing_slash(mut req: axum::extract::Request) -> axum::extract::Request {
    let path = req.uri().path();
    if path.len() > "/api/".len() && path.starts_with("/api/") && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let rebuilt = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_owned(),
        };
        if let Ok(uri) = rebuilt.parse() {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// The metrics port: `/metrics`, `/metrics/per-object`, `/metrics/detailed`.
pub fn metrics_router(broker: Arc<Broker>) -> Router {
    prometheus::routes().with_state(Mgmt { broker, rates: Arc::default() })
}
