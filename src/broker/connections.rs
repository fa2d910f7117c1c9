//! The live client connections and their channels, as the management plane lists them,
//! and the handle through which it asks a connection to close.
//!
//! A connection registers once its handshake is done and is removed by its guard's Drop,
//! so a connection task that ends in any way leaves no entry behind. The registry holds
//! only descriptions and shared delivery state; the connection task stays the only one
//! that writes frames or changes channels.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use amq_protocol::types::FieldTable;
use tokio::sync::mpsc;

use super::consumer::ChannelDelivery;
use crate::connection::trace::Trace;

/// What the management plane may ask of a connection.
#[derive(Debug, Clone)]
pub enum Command {
    /// Close it with this reply code (320 CONNECTION_FORCED for RabbitMQ's
    /// `DELETE /api/connections/{name}`) and text.
    Close {
        /// The reply code.
        code: warren_protocol::ReplyCode,
        /// The reply text.
        text: String,
    },
    /// Drop the socket with a TCP reset, no close method (plain TCP only).
    Reset,
    /// Read and write nothing (heartbeats included) for this long, the socket open.
    Freeze(std::time::Duration),
    /// Delay everything written to the client by this much (zero: no delay).
    Delay(std::time::Duration),
    /// Record every frame both ways into this trace (None: stop recording).
    Trace(Option<Arc<Trace>>),
    /// Panic in the connection's task (tests of the teardown that must still happen).
    #[cfg(feature = "test-hooks")]
    Panic,
}

/// One open connection, as listed.
#[derive(Debug)]
pub struct ConnectionInfo {
    /// Who opened it, from where, and what was negotiated.
    pub opened: Opened,
    /// RabbitMQ's name: `peer -> local` (`127.0.0.1:53654 -> 127.0.0.1:5672`).
    pub name: String,
    /// When it opened, Unix milliseconds.
    pub connected_at: u64,
    /// Blocked by an alarm.
    pub blocked: AtomicBool,
    /// Its protocol trace, once one was started (kept for reading after it stops).
    pub trace: Mutex<Option<Arc<Trace>>>,
    channels: Mutex<BTreeMap<u16, Arc<ChannelDelivery>>>,
    /// Boxed: the channel allocates its slots up front, one block for every connection.
    commands: mpsc::Sender<Box<Command>>,
}

impl ConnectionInfo {
    /// Its open channels, by number.
    pub fn channels(&self) -> Vec<Arc<ChannelDelivery>> {
        self.lock_channels().values().cloned().collect()
    }

    /// How many channels are open.
    pub fn channel_count(&self) -> usize {
        self.lock_channels().len()
    }

    /// Records an opened channel.
    pub fn add_channel(&self, channel: Arc<ChannelDelivery>) {
        self.lock_channels().insert(channel.id, channel);
    }

    /// Forgets a closed channel.
    pub fn remove_channel(&self, id: u16) {
        self.lock_channels().remove(&id);
    }

    /// Asks the connection to do `command`; false when it is already gone or busy with
    /// earlier commands.
    pub fn send(&self, command: Command) -> bool {
        self.commands.try_send(Box::new(command)).is_ok()
    }

    /// The `connection_name` its client gave, if any.
    pub fn client_name(&self) -> Option<String> {
        match self.opened.client_properties.inner().get("connection_name") {
            Some(amq_protocol::types::AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            Some(amq_protocol::types::AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
            _ => None,
        }
    }

    /// Whether an alarm blocks it.
    pub fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::Relaxed)
    }

    fn lock_channels(&self) -> MutexGuard<'_, BTreeMap<u16, Arc<ChannelDelivery>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a connection tells the registry about itself.
#[derive(Debug)]
pub struct Opened {
    /// The broker's connection id.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The broker's address the client connected to.
    pub local: SocketAddr,
    /// Over TLS.
    pub tls: bool,
    /// The authenticated user.
    pub user: String,
    /// The vhost it opened.
    pub vhost: String,
    /// The SASL mechanism used.
    pub auth_mechanism: String,
    /// What the client announced in connection.start-ok.
    pub client_properties: FieldTable,
    /// Negotiated channel_max.
    pub channel_max: u16,
    /// Negotiated frame_max.
    pub frame_max: u32,
    /// Negotiated heartbeat, seconds.
    pub heartbeat: u16,
}

/// Every open connection.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<HashMap<u64, Arc<ConnectionInfo>>>,
}

/// Commands a connection may have waiting.
const COMMAND_BACKLOG: usize = 4;

impl Connections {
    /// Registers a connection; it stays listed until the returned guard is dropped. The
    /// receiver yields what the management plane asks of it.
    pub fn register(self: &Arc<Self>, opened: Opened) -> (Registered, mpsc::Receiver<Box<Command>>) {
        let (commands, rx) = mpsc::channel(COMMAND_BACKLOG);
        let id = opened.id;
        let info = Arc::new(ConnectionInfo {
            name: format!("{} -> {}", opened.peer, opened.local),
            opened,
            connected_at: super::message::now_ms(),
            blocked: AtomicBool::new(false),
            trace: Mutex::default(),
            channels: Mutex::default(),
            commands,
        });
        self.lock().insert(id, Arc::clone(&info));
        (Registered { registry: Arc::clone(self), info }, rx)
    }

    /// Every open connection, in the order they opened.
    pub fn list(&self) -> Vec<Arc<ConnectionInfo>> {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.sort_by_key(|c| c.opened.id);
        all
    }

    /// The connection of this id.
    pub fn get(&self, id: u64) -> Option<Arc<ConnectionInfo>> {
        self.lock().get(&id).cloned()
    }

    /// The connection of this RabbitMQ name.
    pub fn by_name(&self, name: &str) -> Option<Arc<ConnectionInfo>> {
        self.lock().values().find(|c| c.name == name).cloned()
    }

    /// The connections called `name`: by RabbitMQ's name, or else by the
    /// `connection_name` their clients gave (several may share one).
    pub fn named(&self, name: &str) -> Vec<Arc<ConnectionInfo>> {
        if let Some(c) = self.by_name(name) {
            return vec![c];
        }
        self.list().into_iter().filter(|c| c.client_name().as_deref() == Some(name)).collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<ConnectionInfo>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection's place in the registry: dropping it removes the entry.
#[derive(Debug)]
pub struct Registered {
    registry: Arc<Connections>,
    /// The entry.
    pub info: Arc<ConnectionInfo>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.info.opened.id);
    }
}
