//! Warren's storage: durable exchanges, queues and bindings, and persistent messages in
//! durable queues, per vhost, and the broker's access records (users, vhosts, permissions,
//! policies), kept in an embedded sled database.
//!
//! [`Database`] is the data directory; [`Store`] is one vhost's part of it (its trees are
//! named after the vhost, so deleting a vhost drops them whole). The broker calls [`Store`]
//! on every change to durable state; nothing is acknowledged to a
//! client as durable until [`Store::flush`] has returned (publisher confirms wait for it,
//! and many publishers share one flush). At start [`Store::recover`] returns what survived.
//! Records are opaque to this crate where the broker owns the meaning (field tables arrive
//! already AMQP-encoded); the layout of each record is in [`codec`].

mod codec;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use codec::{BindingRecord, ExchangeRecord, QueueRecord, StoredMessage};

/// The on-disk format this build reads and writes: every key and tree carries its vhost.
pub const FORMAT_VERSION: &str = "warren-store-3";

/// The format before vhosts, migrated in place when opened ([`migrate`]).
const FORMAT_2: &str = "warren-store-2";

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
    /// It had been delivered before the stop, or the stop was a crash (it comes back
    /// redelivered).
    pub delivered: bool,
    /// Body octets (length limits count them).
    pub body_len: u32,
    /// Its deadline in Unix milliseconds (`u64::MAX`: never).
    pub expires: u64,
    /// Its priority band.
    pub priority: u8,
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
    /// When queues with `x-expires` were last used, in Unix milliseconds, by name.
    pub last_used: std::collections::HashMap<String, u64>,
}

/// The key in the `meta` tree present only while the store is closed after a clean
/// shutdown: opening a store without it finds the marks of the last deliveries missing.
const CLEAN_SHUTDOWN: &str = "clean-shutdown";

/// The sled database of one data directory.
#[derive(Debug, Clone)]
pub struct Database {
    db: sled::Db,
    /// The broker's access records by `kind \0 key`, opaque here.
    access: sled::Tree,
    /// The previous run ended without [`Database::close_cleanly`] (a crash or kill -9).
    crashed: bool,
}

/// One vhost's durable topology and messages.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    /// The vhost's tree-name prefix, `v/<hex of the vhost name>/`.
    prefix: Vec<u8>,
    exchanges: sled::Tree,
    queues: sled::Tree,
    bindings: sled::Tree,
    /// Delivery marks of all queues, by `(queue, offset)`.
    delivered: sled::Tree,
    /// When each queue with `x-expires` was last used, by queue name.
    last_used: sled::Tree,
    /// The previous run crashed: [`Store::recover`] marks every message delivered.
    crashed: bool,
}

/// The stored messages of one durable queue: a sled tree of its own keyed by offset (so a
/// queue's messages are one ordered scan, and deleting the queue drops the tree whole),
/// plus its delivery marks in the shared marks tree.
///
/// A handle of a deleted queue turns into a no-op: writes that race the deletion (a late
/// ack, a publish the queue lock then refuses) find the tree gone and have nothing to do.
#[derive(Debug, Clone)]
pub struct QueueStore {
    name: String,
    messages: sled::Tree,
    delivered: sled::Tree,
    last_used: sled::Tree,
}

/// sled's answer for a tree that was dropped: the queue is gone.
fn gone_is_ok<T: Default>(r: sled::Result<T>) -> Result<T, StoreError> {
    match r {
        Err(sled::Error::CollectionNotFound(_)) => Ok(T::default()),
        other => Ok(other?),
    }
}

impl QueueStore {
    /// Stores a persistent message at `offset` (durable once flushed).
    pub fn put_message(&self, offset: u64, m: &StoredMessage) -> Result<(), StoreError> {
        gone_is_ok(self.messages.insert(offset.to_be_bytes(), codec::encode_message(m)).map(drop))
    }

    /// Reads a stored message back (to deliver a message whose content is not in memory).
    pub fn get_message(&self, offset: u64) -> Result<Option<StoredMessage>, StoreError> {
        match gone_is_ok(self.messages.get(offset.to_be_bytes()))? {
            Some(v) => Ok(Some(codec::decode_message(&v)?)),
            None => Ok(None),
        }
    }

    /// Notes that a stored message was delivered (it comes back redelivered). Returns
    /// false, marking nothing, when the message is no longer stored (an ack overtook the
    /// mark).
    pub fn mark_delivered(&self, offset: u64) -> Result<bool, StoreError> {
        if !gone_is_ok(self.messages.contains_key(offset.to_be_bytes()))? {
            return Ok(false);
        }
        self.delivered.insert(codec::message_key(&self.name, offset), &[])?;
        Ok(true)
    }

    /// Removes an acknowledged message and its delivery mark.
    pub fn remove_message(&self, offset: u64) -> Result<(), StoreError> {
        // Mark first: a crash in between leaves a message without its mark (it comes back
        // unflagged), never a mark that a later message at this offset would inherit.
        self.delivered.remove(codec::message_key(&self.name, offset))?;
        self.remove_unmarked_message(offset)
    }

    /// Removes acknowledged messages, batched (marks first, then messages); each comes
    /// with whether it was marked delivered.
    pub fn remove_messages(&self, settled: &[(u64, bool)]) -> Result<(), StoreError> {
        // sled frees the node copies a batch makes only when the batch ends: small batches
        // keep that garbage to a few MiB.
        for chunk in settled.chunks(REMOVE_BATCH) {
            let mut marks = sled::Batch::default();
            let mut messages = sled::Batch::default();
            for &(offset, marked) in chunk {
                if marked {
                    marks.remove(codec::message_key(&self.name, offset));
                }
                messages.remove(&offset.to_be_bytes());
            }
            self.delivered.apply_batch(marks)?;
            gone_is_ok(self.messages.apply_batch(messages))?;
        }
        Ok(())
    }

    /// Records when the queue was last used (its `x-expires` countdown goes on from there
    /// after a restart).
    pub fn put_last_used(&self, unix_ms: u64) -> Result<(), StoreError> {
        self.last_used.insert(self.name.as_bytes(), &unix_ms.to_be_bytes())?;
        Ok(())
    }

    /// Removes an acknowledged message the caller knows was never marked delivered (one
    /// write instead of two).
    pub fn remove_unmarked_message(&self, offset: u64) -> Result<(), StoreError> {
        gone_is_ok(self.messages.remove(offset.to_be_bytes()).map(drop))
    }
}

/// Delivery marks per sled batch when [`Store::recover`] marks a crashed run's messages.
const MARK_BATCH: usize = 4096;

/// Removals per sled batch in [`QueueStore::remove_messages`].
const REMOVE_BATCH: usize = 64;

/// sled's page cache when the caller does not choose: small, since the broker keeps what
/// dispatch needs in memory and reads message content once per delivery.
pub const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// The tree-name prefix of vhost `name`: hex keeps any name unambiguous.
fn vhost_prefix(name: &str) -> Vec<u8> {
    let mut p = b"v/".to_vec();
    for b in name.bytes() {
        p.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    p.push(b'/');
    p
}

/// The trees each vhost has, by their store-2 names (which [`migrate`] renames).
const VHOST_TREES: [&str; 5] = ["exchanges", "queues", "bindings", "delivered", "queue-last-used"];

/// Copies store-2's vhost-less trees into vhost `vhost`'s trees, then drops the old ones.
/// Each tree is copied, flushed, then dropped: a crash anywhere leaves the format at
/// store-2, and running again copies what is left (copies overwrite, so nothing doubles).
fn migrate(db: &sled::Db, vhost: &str) -> Result<(), StoreError> {
    let prefix = vhost_prefix(vhost);
    let mut renames: Vec<(Vec<u8>, Vec<u8>)> = VHOST_TREES.iter().map(|t| (t.as_bytes().to_vec(), [&prefix[..], t.as_bytes()].concat())).collect();
    for tree in db.tree_names() {
        if let Some(queue) = tree.strip_prefix(codec::LEGACY_QUEUE_TREE_PREFIX) {
            renames.push((tree.to_vec(), [&prefix[..], codec::QUEUE_TREE_INFIX, queue].concat()));
        }
    }
    for (old, new) in renames {
        let (from, to) = (db.open_tree(&old)?, db.open_tree(&new)?);
        for kv in from.iter() {
            let (k, v) = kv?;
            to.insert(k, v)?;
        }
        db.flush()?;
        db.drop_tree(&old)?;
    }
    Ok(())
}

/// Numbers the temporary stores of this process.
static TEMPORARY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Database {
    /// Opens (or creates) the data directory `dir` with the default cache size; a store-2
    /// directory is migrated, its contents going to vhost `legacy_vhost`.
    pub fn open(dir: &Path, legacy_vhost: &str) -> Result<Database, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES, legacy_vhost)
    }

    /// Opens (or creates) the data directory `dir`, checking its format version; sled
    /// caches at most `cache_bytes` of pages in memory. A directory in format store-2 (one
    /// vhost, unnamed in its keys) is migrated in place, its contents going to vhost
    /// `legacy_vhost` (the one vhost that build served).
    ///
    /// A lock held by this same process is waited for briefly: sled releases its file lock
    /// from a background thread after the previous handle is dropped.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64, legacy_vhost: &str) -> Result<Database, StoreError> {
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
        Self::checked(db, dir, legacy_vhost)
    }

    /// A store that lives only as long as this process holds it: sled's temporary mode,
    /// in /dev/shm (memory) where it exists, removed when dropped.
    pub fn open_temporary(cache_bytes: u64) -> Result<Database, StoreError> {
        let shm = Path::new("/dev/shm");
        let mut config = sled::Config::new().temporary(true).cache_capacity(cache_bytes);
        if shm.is_dir() {
            config = config.path(shm.join(format!("warren-{}-{}", std::process::id(), TEMPORARY.fetch_add(1, std::sync::atomic::Ordering::Relaxed))));
        }
        let db = config.open().map_err(|source| StoreError::Open { path: shm.to_path_buf(), source })?;
        Self::checked(db, shm, "/")
    }

    /// Checks (or writes) the format version of an opened store, migrating store-2.
    fn checked(db: sled::Db, dir: &Path, legacy_vhost: &str) -> Result<Database, StoreError> {
        let meta = db.open_tree("meta")?;
        match meta.get("format")? {
            Some(v) if v.as_ref() == FORMAT_VERSION.as_bytes() => {}
            Some(v) if v.as_ref() == FORMAT_2.as_bytes() => {
                migrate(&db, legacy_vhost)?;
                meta.insert("format", FORMAT_VERSION.as_bytes())?;
                db.flush()?;
            }
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
        // The marker is taken away at once, so that a crash of this run is seen as one.
        let crashed = match meta.remove(CLEAN_SHUTDOWN)? {
            Some(_) => {
                db.flush()?;
                false
            }
            None => db.was_recovered(),
        };
        Ok(Database { access: db.open_tree("access")?, db, crashed })
    }

    /// Whether the previous run ended without [`Database::close_cleanly`]: the delivery
    /// marks of its last moments may be missing, so every recovered message counts as
    /// delivered (RabbitMQ flags every message it recovers after a crash redelivered).
    pub fn recovered_from_crash(&self) -> bool {
        self.crashed
    }

    /// Flushes everything and notes that the store was closed cleanly: the next run
    /// trusts the delivery marks. Called last, once no client is connected.
    pub fn close_cleanly(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.db.open_tree("meta")?.insert(CLEAN_SHUTDOWN, &[])?;
        self.db.flush()?;
        Ok(())
    }

    /// The store of vhost `name` (empty if new).
    pub fn vhost(&self, name: &str) -> Result<Store, StoreError> {
        let prefix = vhost_prefix(name);
        let tree = |t: &str| self.db.open_tree([&prefix[..], t.as_bytes()].concat());
        Ok(Store {
            exchanges: tree("exchanges")?,
            queues: tree("queues")?,
            bindings: tree("bindings")?,
            delivered: tree("delivered")?,
            last_used: tree("queue-last-used")?,
            prefix,
            db: self.db.clone(),
            crashed: self.crashed,
        })
    }

    /// The vhosts that have trees in the store (a vhost is named here once opened).
    pub fn stored_vhosts(&self) -> Vec<String> {
        let mut names = Vec::new();
        for tree in self.db.tree_names() {
            let Some(rest) = tree.strip_prefix(b"v/") else { continue };
            let Some(hex) = rest.strip_suffix(b"/exchanges") else { continue };
            let bytes: Option<Vec<u8>> = hex.chunks(2).map(|h| std::str::from_utf8(h).ok().and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
            if let Some(name) = bytes.and_then(|b| String::from_utf8(b).ok()) {
                names.push(name);
            }
        }
        names
    }

    /// Drops everything vhost `name` stored: its topology and all its messages.
    pub fn delete_vhost(&self, name: &str) -> Result<(), StoreError> {
        let prefix = vhost_prefix(name);
        for tree in self.db.tree_names() {
            if tree.starts_with(&prefix) {
                self.db.drop_tree(&tree)?;
            }
        }
        Ok(())
    }

    /// Records an access record (`kind` as "user", "vhost", "permission"...; the value is
    /// the broker's encoding).
    pub fn put_record(&self, kind: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.access.insert(codec::record_key(kind, key), value)?;
        Ok(())
    }

    /// Forgets an access record.
    pub fn delete_record(&self, kind: &str, key: &str) -> Result<(), StoreError> {
        self.access.remove(codec::record_key(kind, key))?;
        Ok(())
    }

    /// Every access record of `kind`, as `(key, value)` in key order.
    pub fn records(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = codec::record_key(kind, "");
        let mut out = Vec::new();
        for kv in self.access.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let key = String::from_utf8(k[prefix.len()..].to_vec()).map_err(|_| StoreError::Corrupt(format!("{kind} record key")))?;
            out.push((key, v.to_vec()));
        }
        Ok(out)
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
}

impl Store {
    /// The tree of queue `name`'s messages.
    fn queue_tree(&self, name: &str) -> Vec<u8> {
        [&self.prefix[..], codec::QUEUE_TREE_INFIX, name.as_bytes()].concat()
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

    /// Forgets a queue, its bindings and its messages. The messages live in a tree of
    /// their own, which sled drops whole instead of message by message.
    pub fn delete_queue(&self, name: &str) -> Result<(), StoreError> {
        self.queues.remove(name.as_bytes())?;
        self.delete_bindings_where(|b| !b.destination_is_exchange && b.destination == name)?;
        self.drop_messages(name)
    }

    /// Drops every stored message of queue `name` and their delivery marks (a new queue of
    /// that name calls this first, in case a crash cut an earlier delete short).
    pub fn drop_messages(&self, name: &str) -> Result<(), StoreError> {
        self.db.drop_tree(self.queue_tree(name))?;
        self.last_used.remove(name.as_bytes())?;
        let mut batch = sled::Batch::default();
        for key in self.delivered.scan_prefix(codec::queue_prefix(name)).keys() {
            batch.remove(key?);
        }
        self.delivered.apply_batch(batch)?;
        Ok(())
    }

    /// The message store of durable queue `name` (created if new).
    pub fn queue_store(&self, name: &str) -> Result<QueueStore, StoreError> {
        Ok(QueueStore {
            name: name.to_owned(),
            messages: self.db.open_tree(self.queue_tree(name))?,
            delivered: self.delivered.clone(),
            last_used: self.last_used.clone(),
        })
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

    /// Reads back everything stored: exchanges, queues with their messages in order, and
    /// bindings. After a crash every message comes back delivered, and its mark is written
    /// so that it stays so across later restarts.
    pub fn recover(&self) -> Result<Recovered, StoreError> {
        let mut out = Recovered::default();
        for v in self.exchanges.iter().values() {
            out.exchanges.push(codec::decode_exchange(&v?)?);
        }
        for v in self.queues.iter().values() {
            let q = codec::decode_queue(&v?)?;
            let mut delivered = std::collections::HashSet::new();
            for k in self.delivered.scan_prefix(codec::queue_prefix(&q.name)).keys() {
                delivered.insert(codec::offset_of(&k?)?);
            }
            let mut messages = Vec::new();
            let mut new_marks = sled::Batch::default();
            for kv in self.db.open_tree(self.queue_tree(&q.name))?.iter() {
                let (k, v) = kv?;
                let offset = codec::offset_of(&k)?;
                let meta = codec::message_meta(&v)?;
                let marked = delivered.remove(&offset);
                if self.crashed && !marked {
                    new_marks.insert(codec::message_key(&q.name, offset), &[]);
                    if messages.len() % MARK_BATCH == MARK_BATCH - 1 {
                        self.delivered.apply_batch(std::mem::take(&mut new_marks))?;
                    }
                }
                messages.push(RecoveredMessage {
                    offset,
                    delivered: marked || self.crashed,
                    body_len: meta.body_len,
                    expires: meta.expires,
                    priority: meta.priority,
                });
            }
            if let Some(v) = self.last_used.get(q.name.as_bytes())? {
                let b: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt(format!("last-use record of queue '{}'", q.name)))?;
                out.last_used.insert(q.name.clone(), u64::from_be_bytes(b));
            }
            self.delivered.apply_batch(new_marks)?;
            // Marks left without their message (an ack cut short by a crash).
            for offset in delivered {
                self.delivered.remove(codec::message_key(&q.name, offset))?;
            }
            out.queues.push((q, messages));
        }
        // Message trees of queues deleted just before a crash.
        let known: std::collections::HashSet<Vec<u8>> = out.queues.iter().map(|(q, _)| self.queue_tree(&q.name)).collect();
        let queue_trees = [&self.prefix[..], codec::QUEUE_TREE_INFIX].concat();
        for tree in self.db.tree_names() {
            if tree.starts_with(&queue_trees) && !known.contains(tree.as_ref()) {
                self.db.drop_tree(&tree)?;
            }
        }
        for k in self.bindings.iter().keys() {
            out.bindings.push(codec::decode_binding(&k?)?);
        }
        Ok(out)
    }
}
