//! The broker's model: virtual hosts with their exchanges, queues and bindings, the
//! messages they hold, and the consumers they deliver to. Connections (in
//! [`crate::connection`]) drive it; it never touches a socket itself, only the outbound
//! frame buffers of the channels it delivers to.

pub mod consumer;
pub mod exchange;
pub mod headers;
pub mod message;
pub mod queue;
pub mod topic;
pub mod vhost;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;
use vhost::VHost;

/// A server-generated name: `prefix` and 22 URL-safe base64 characters of randomness, like
/// RabbitMQ's `amq.gen-…` queue names and `amq.ctag-…` consumer tags.
pub fn unique_name(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let state = std::collections::hash_map::RandomState::new();
    let mut bits: u128 = 0;
    for salt in 0..2u64 {
        let mut h = state.build_hasher();
        h.write_u64(n);
        h.write_u64(salt);
        bits = (bits << 64) | u128::from(h.finish());
    }
    let mut name = String::with_capacity(prefix.len() + 22);
    name.push_str(prefix);
    for i in 0..22 {
        name.push(ALPHABET[((bits >> (i * 6)) & 63) as usize] as char);
    }
    name
}

/// The state of one broker: vhosts, users, limits and metrics.
#[derive(Debug)]
pub struct Broker {
    /// The configuration it runs with.
    pub config: Config,
    /// Its metrics.
    pub metrics: Metrics,
    vhosts: HashMap<String, Arc<VHost>>,
    next_connection_id: AtomicU64,
}

impl Broker {
    /// A broker with the default vhost `/`.
    pub fn new(config: Config, metrics: Metrics) -> Self {
        let mut vhosts = HashMap::new();
        vhosts.insert("/".to_owned(), Arc::new(VHost::new("/")));
        Broker { config, metrics, vhosts, next_connection_id: AtomicU64::new(1) }
    }

    /// The vhost called `name`.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.get(name).cloned()
    }

    /// A fresh connection id (used for exclusive queue ownership).
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Checks a username and password; the guest user only from loopback, as RabbitMQ.
    pub fn authenticate(&self, username: &str, password: &str, loopback: bool) -> Result<(), &'static str> {
        if username != self.config.default_user || password != self.config.default_pass {
            return Err("invalid credentials");
        }
        if username == "guest" && !loopback && !self.config.allow_remote_guest {
            return Err("user 'guest' can only connect via localhost");
        }
        Ok(())
    }
}
