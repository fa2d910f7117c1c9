//! Warren's storage: durable exchanges, queues and bindings, and persistent messages in
//! durable queues, kept in an embedded sled database.
//!
//! The broker calls [`Store`] on every change to durable state; nothing is acknowledged to a
//! client as durable until [`Store::flush`] has returned (publisher confirms wait for it,
//! and many publishers share one flush). At start [`Store::recover`] returns what survived.
//! Records are opaque to this crate where the broker owns the meaning (field tables arrive
//! already AMQP-encoded); the layout of each record is in [`codec`].

mod codec;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use codec::{BindingRecord, ExchangeRecord, QueueRecord, StoredMessage};

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: &str = "warren-store-1";

/// Why the store failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The data directory could not be created or opened.
    #[error("cannot open data directory {path}: {source}")]
    Open {
        /// The directory.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// Another process holds the data directory.
    #[error("data directory {0} is locked by another running broker")]
    Locked(PathBuf),
    /// The directory was written by an unknown format version.
    #[error("data directory {path} has format '{found}', this build reads '{FORMAT_VERSION}'")]
    UnknownVersion {
        /// The directory.
        path: PathBuf,
        /// What it says.
        found: String,
    },
    /// A record could not be decoded, or sled reported corruption.
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    /// A read or write failed (disk full, I/O error).
    #[error("store I/O failed: {0}")]
    Io(#[from] sled::Error),
}

/// A message found at recovery: where it is, not what it holds (its content stays on disk
/// until [`Store::get_message`] reads it for delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveredMessage {
    /// Its position in its queue.
    pub offset: u64,
    /// It had been delivered before the stop (so it comes back redelivered).
    pub delivered: bool,
}

/// Everything that survived a restart.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Durable exchanges.
    pub exchanges: Vec<ExchangeRecord>,
    /// Durable queues with their messages in queue order.
    pub queues: Vec<(QueueRecord, Vec<RecoveredMessage>)>,
    /// Bindings between durable ends.
    pub bindings: Vec<BindingRecord>,
}

/// The sled database of one data directory.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    exchanges: sled::Tree,
    queues: sled::Tree,
    bindings: sled::Tree,
    messages: sled::Tree,
    delivered: sled::Tree,
}

/// sled's page cache when the caller does not choose: small, since the broker keeps what
/// dispatch needs in memory and reads message content once per delivery.
pub const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

impl Store {
    /// Opens (or creates) the store in `dir` with the default cache size.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the store in `dir`, checking its format version; sled caches at
    /// most `cache_bytes` of pages in memory.
    ///
    /// A lock held by this same process is waited for briefly: sled releases its file lock
    /// from a background thread after the previous handle is dropped.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let mut attempts = 0;
        let db = loop {
            match sled::Config::new().path(dir.join("sled")).cache_capacity(cache_bytes).open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    attempts += 1;
                    if attempts > 40 {
                        return Err(StoreError::Locked(dir.to_path_buf()));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(sled::Error::Corruption { .. }) => {
                    return Err(StoreError::Corrupt(format!("sled reports corruption in {}", dir.display())));
                }
                Err(source) => return Err(StoreError::Open { path: dir.to_path_buf(), source }),
            }
        };
        let meta = db.open_tree("meta")?;
        match meta.get("format")? {
            Some(v) if v.as_ref() == FORMAT_VERSION.as_bytes() => {}
            Some(v) => {
                return Err(StoreError::UnknownVersion { path: dir.to_path_buf(), found: String::from_utf8_lossy(&v).into_owned() });
            }
            None if db.was_recovered() && db.tree_names().len() > 2 => {
                return Err(StoreError::UnknownVersion { path: dir.to_path_buf(), found: "none".to_owned() });
            }
            None => {
                meta.insert("format", FORMAT_VERSION.as_bytes())?;
                db.flush()?;
            }
        }
        Ok(Store {
            exchanges: db.open_tree("exchanges")?,
            queues: db.open_tree("queues")?,
            bindings: db.open_tree("bindings")?,
            messages: db.open_tree("messages")?,
            delivered: db.open_tree("delivered")?,
            db,
        })
    }

    /// Records a durable exchange.
    pub fn put_exchange(&self, x: &ExchangeRecord) -> Result<(), StoreError> {
        self.exchanges.insert(x.name.as_bytes(), codec::encode_exchange(x))?;
        Ok(())
    }

    /// Forgets an exchange and the bindings from or to it.
    pub fn delete_exchange(&self, name: &str) -> Result<(), StoreError> {
        self.exchanges.remove(name.as_bytes())?;
        self.delete_bindings_where(|b| b.source == name || (b.destination_is_exchange && b.destination == name))
    }

    /// Records a durable queue.
    pub fn put_queue(&self, q: &QueueRecord) -> Result<(), StoreError> {
        self.queues.insert(q.name.as_bytes(), codec::encode_queue(q))?;
        Ok(())
    }

    /// Forgets a queue, its bindings and its messages.
    pub fn delete_queue(&self, name: &str) -> Result<(), StoreError> {
        self.queues.remove(name.as_bytes())?;
        self.purge_queue(name)?;
        self.delete_bindings_where(|b| !b.destination_is_exchange && b.destination == name)
    }

    /// Forgets every message of a queue.
    pub fn purge_queue(&self, name: &str) -> Result<(), StoreError> {
        let prefix = codec::queue_prefix(name);
        for tree in [&self.messages, &self.delivered] {
            let mut batch = sled::Batch::default();
            for key in tree.scan_prefix(&prefix).keys() {
                batch.remove(key?);
            }
            tree.apply_batch(batch)?;
        }
        Ok(())
    }

    /// Records a binding between durable ends.
    pub fn put_binding(&self, b: &BindingRecord) -> Result<(), StoreError> {
        self.bindings.insert(codec::encode_binding(b), &[])?;
        Ok(())
    }

    /// Forgets a binding.
    pub fn delete_binding(&self, b: &BindingRecord) -> Result<(), StoreError> {
        self.bindings.remove(codec::encode_binding(b))?;
        Ok(())
    }

    fn delete_bindings_where(&self, pred: impl Fn(&BindingRecord) -> bool) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in self.bindings.iter().keys() {
            let key = key?;
            if pred(&codec::decode_binding(&key)?) {
                batch.remove(key);
            }
        }
        self.bindings.apply_batch(batch)?;
        Ok(())
    }

    /// Stores a persistent message at `offset` in `queue` (durable once flushed).
    pub fn put_message(&self, queue: &str, offset: u64, m: &StoredMessage) -> Result<(), StoreError> {
        self.messages.insert(codec::message_key(queue, offset), codec::encode_message(m))?;
        Ok(())
    }

    /// Reads a stored message back (to deliver a message whose content is not in memory).
    pub fn get_message(&self, queue: &str, offset: u64) -> Result<Option<StoredMessage>, StoreError> {
        match self.messages.get(codec::message_key(queue, offset))? {
            Some(v) => Ok(Some(codec::decode_message(&v)?)),
            None => Ok(None),
        }
    }

    /// Notes that a stored message was delivered (it comes back redelivered). Returns
    /// false, marking nothing, when the message is no longer stored (an ack overtook the
    /// mark).
    pub fn mark_delivered(&self, queue: &str, offset: u64) -> Result<bool, StoreError> {
        let key = codec::message_key(queue, offset);
        if !self.messages.contains_key(&key)? {
            return Ok(false);
        }
        self.delivered.insert(key, &[])?;
        Ok(true)
    }

    /// Removes an acknowledged message and its delivery mark.
    pub fn remove_message(&self, queue: &str, offset: u64) -> Result<(), StoreError> {
        let key = codec::message_key(queue, offset);
        self.messages.remove(&key)?;
        self.delivered.remove(&key)?;
        Ok(())
    }

    /// Removes an acknowledged message the caller knows was never marked delivered (one
    /// write instead of two).
    pub fn remove_unmarked_message(&self, queue: &str, offset: u64) -> Result<(), StoreError> {
        self.messages.remove(codec::message_key(queue, offset))?;
        Ok(())
    }

    /// Makes every change so far durable. Concurrent callers share one sled flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Makes every change so far durable, blocking the thread.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Reads back everything stored: exchanges, queues with their messages in order, and
    /// bindings.
    pub fn recover(&self) -> Result<Recovered, StoreError> {
        let mut out = Recovered::default();
        for v in self.exchanges.iter().values() {
            out.exchanges.push(codec::decode_exchange(&v?)?);
        }
        for v in self.queues.iter().values() {
            let q = codec::decode_queue(&v?)?;
            let prefix = codec::queue_prefix(&q.name);
            let mut delivered = std::collections::HashSet::new();
            for k in self.delivered.scan_prefix(&prefix).keys() {
                delivered.insert(codec::offset_of(&k?)?);
            }
            let mut messages = Vec::new();
            for k in self.messages.scan_prefix(&prefix).keys() {
                let offset = codec::offset_of(&k?)?;
                messages.push(RecoveredMessage { offset, delivered: delivered.contains(&offset) });
            }
            out.queues.push((q, messages));
        }
        for k in self.bindings.iter().keys() {
            out.bindings.push(codec::decode_binding(&k?)?);
        }
        Ok(out)
    }
}
