//! What a connection hears besides its socket: the memory and disk alarms, broker
//! shutdown, deletion of its vhost or user, management commands, and a writer that gave up.
//!
//! A helper task awaits them all and passes each on as one [`Event`], so the frame loop's
//! `select!` polls a single channel per pass. Awaited there directly, every pass would
//! register with each watch again (taking its waiter lock, which the alarm watches share
//! with every other connection) only to drop the registration when the socket wins.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::broker::connections::Command;
use crate::outbound::Outbound;

/// One thing that happened to the connection.
#[derive(Debug)]
pub(super) enum Event {
    /// An alarm was raised or cleared: whether memory, and disk, are low now.
    Alarm { low_memory: bool, low_disk: bool },
    /// The broker is stopping.
    Shutdown,
    /// The connection's vhost was deleted.
    VhostDeleted,
    /// The connection's user was deleted.
    UserDeleted,
    /// The management plane asks something of the connection.
    Command(Box<Command>),
    /// The writer gave up on the socket.
    Broken,
}

/// What the helper task awaits.
pub(super) struct Sources {
    pub alarm: watch::Receiver<bool>,
    pub disk_alarm: watch::Receiver<bool>,
    pub shutdown: watch::Receiver<bool>,
    pub vhost_deleted: watch::Receiver<bool>,
    pub user_deleted: watch::Receiver<bool>,
    pub commands: mpsc::Receiver<Box<Command>>,
    pub outbound: Arc<Outbound>,
}

/// Starts the helper task. Returns the alarms as they are now (later changes come as
/// [`Event::Alarm`]) and the receiving end; the task ends when that is dropped.
pub(super) fn spawn(mut sources: Sources) -> ((bool, bool), mpsc::Receiver<Event>) {
    let now = (*sources.alarm.borrow_and_update(), *sources.disk_alarm.borrow_and_update());
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(gather(sources, tx).in_current_span());
    (now, rx)
}

async fn gather(mut s: Sources, tx: mpsc::Sender<Event>) {
    // Each one-shot source is awaited until it fires once.
    let (mut shutdown, mut vhost, mut user, mut broken) = (true, true, true, true);
    loop {
        // None: an alarm changed (both are read once the select has let go of them).
        let event = tokio::select! {
            () = tx.closed() => return,
            Ok(()) = s.alarm.changed() => None,
            Ok(()) = s.disk_alarm.changed() => None,
            // A dropped sender (the server is gone) counts as shutdown too.
            _ = s.shutdown.changed(), if shutdown => {
                shutdown = false;
                Some(Event::Shutdown)
            }
            Ok(_) = s.vhost_deleted.wait_for(|deleted| *deleted), if vhost => {
                vhost = false;
                Some(Event::VhostDeleted)
            }
            Ok(_) = s.user_deleted.wait_for(|deleted| *deleted), if user => {
                user = false;
                Some(Event::UserDeleted)
            }
            Some(command) = s.commands.recv() => Some(Event::Command(command)),
            () = s.outbound.broken(), if broken => {
                broken = false;
                Some(Event::Broken)
            }
        };
        let event = event.unwrap_or_else(|| Event::Alarm { low_memory: *s.alarm.borrow_and_update(), low_disk: *s.disk_alarm.borrow_and_update() });
        if tx.send(event).await.is_err() {
            return;
        }
    }
}
