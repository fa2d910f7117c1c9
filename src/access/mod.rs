//! Who may do what, decided as RabbitMQ decides it: users (RabbitMQ password hashes, tags,
//! limits), the vhosts that exist (with their limits), and for each user and vhost the
//! configure / write / read patterns and the topic patterns per exchange.
//!
//! [`Access`] owns these and keeps them in the store's access records, in the same JSON
//! shapes as RabbitMQ's definitions ([`definitions`]). A connection takes a [`Grant`] when
//! it opens a vhost, with the patterns compiled, and checks every operation against it; as
//! in RabbitMQ, permission changes reach connections opened after them.

pub mod password;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use warren_protocol::{AmqpError, ReplyCode};
use warren_storage::{Database, StoreError};

use crate::definitions;
use password::{HashError, Hashing, PasswordHash};

/// The tag that lets a user publish with another user's `user_id`.
pub const IMPERSONATOR: &str = "impersonator";

/// A user's limits (`rabbitmqctl set_user_limits`); absent or negative means none. Other
/// limit names are refused, not ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserLimits {
    /// Connections the user may have open at once.
    #[serde(rename = "max-connections", default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    /// Channels the user may have open at once, over all its connections.
    #[serde(rename = "max-channels", default, skip_serializing_if = "Option::is_none")]
    pub max_channels: Option<i64>,
}

/// A vhost's limits (`rabbitmqctl set_vhost_limits`); absent or negative means none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostLimits {
    /// Connections to the vhost at once.
    #[serde(rename = "max-connections", default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    /// Queues in the vhost.
    #[serde(rename = "max-queues", default, skip_serializing_if = "Option::is_none")]
    pub max_queues: Option<i64>,
}

/// A limit as a count: `None` for no limit (RabbitMQ treats negative values as none).
pub fn limit(value: Option<i64>) -> Option<u64> {
    value.and_then(|v| u64::try_from(v).ok())
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The name.
    pub name: String,
    /// The password hash.
    pub hash: PasswordHash,
    /// Tags (`administrator`, `monitoring`, `management`, `policymaker`, `impersonator`, or
    /// any other word, kept as given).
    pub tags: Vec<String>,
    /// Limits.
    pub limits: UserLimits,
}

impl User {
    /// Whether the user has `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// A vhost's description, tags and limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VhostInfo {
    /// The name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Limits.
    pub limits: VhostLimits,
}

/// A user's permission patterns in one vhost, as set (regular expressions; `""` allows
/// nothing, as RabbitMQ reads it as `^$`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    /// Declare and delete.
    pub configure: String,
    /// Publish, and bind to.
    pub write: String,
    /// Consume, get, purge, and bind from.
    pub read: String,
}

/// A user's topic permission patterns for one topic exchange in one vhost (matched against
/// routing keys, with `{username}` and `{vhost}` expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPermission {
    /// The exchange.
    pub exchange: String,
    /// Routing keys the user may publish with.
    pub write: String,
    /// Binding keys the user may bind a queue with.
    pub read: String,
}

/// Why an access change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// No such user.
    #[error("user '{0}' does not exist")]
    NoUser(String),
    /// No such vhost.
    #[error("vhost '{0}' does not exist")]
    NoVhost(String),
    /// A pattern is not a regular expression Warren can run.
    #[error("invalid {what} pattern '{pattern}': {why}")]
    Pattern {
        /// Which pattern.
        what: &'static str,
        /// The pattern.
        pattern: String,
        /// What is wrong.
        why: String,
    },
    /// A password hash is unusable.
    #[error("user '{user}': {error}")]
    Hash {
        /// The user.
        user: String,
        /// What is wrong.
        error: HashError,
    },
    /// A hashing algorithm RabbitMQ does not have.
    #[error("user '{user}': unknown hashing_algorithm '{algorithm}'")]
    Hashing {
        /// The user.
        user: String,
        /// The name given.
        algorithm: String,
    },
    /// A name that cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// A compiled permission pattern.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// `.*` (and friends): everything, without running a regex.
    Any,
    /// `""`, which RabbitMQ reads as `^$`: only the empty name.
    Empty,
    /// A stored pattern that no longer compiles: nothing.
    Nothing,
    /// A regular expression, searched for anywhere in the name as Erlang's `re:run` does.
    Regex(regex::Regex),
}

impl Pattern {
    /// Compiles `pattern` (`what` names it in the error).
    pub(crate) fn check(what: &'static str, pattern: &str) -> Result<(), AccessError> {
        Self::compile(what, pattern).map(drop)
    }

    pub fn compile(what: &'static str, pattern: &str) -> Result<Pattern, AccessError> {
        match pattern {
            ".*" | "^.*" | "^.*$" | ".*$" => Ok(Pattern::Any),
            "" => Ok(Pattern::Empty),
            p => regex::Regex::new(&pcre_braces(p)).map(Pattern::Regex).map_err(|e| invalid(what, pattern, &e)),
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Empty => name.is_empty(),
            Pattern::Nothing => false,
            Pattern::Regex(r) => r.is_match(name),
        }
    }
}

/// Erlang's `re` (PCRE) reads a `{` that does not start a `{n}`, `{n,}` or `{n,m}`
/// quantifier as a literal, so RabbitMQ patterns use `{username}`-style text freely; Rust's
/// regex syntax does not, so such braces are escaped.
fn pcre_braces(pattern: &str) -> String {
    let bytes = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\\' && i + 1 < bytes.len() {
            let next = pattern[i + 1..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&pattern[i..i + 1 + next]);
            i += 1 + next;
            continue;
        }
        if c == b'{' {
            let rest = &pattern[i + 1..];
            let end = rest.find('}');
            let quantifier = end.is_some_and(|e| {
                let body = &rest[..e];
                let (lo, hi) = body.split_once(',').unwrap_or((body, "0"));
                !lo.is_empty() && lo.bytes().all(|b| b.is_ascii_digit()) && hi.bytes().all(|b| b.is_ascii_digit())
            });
            if let (true, Some(e)) = (quantifier, end) {
                out.push_str(&pattern[i..i + e + 2]);
                i += e + 2;
                continue;
            }
            out.push_str("\\{");
            i += 1;
            continue;
        }
        if c == b'}' {
            out.push_str("\\}");
            i += 1;
            continue;
        }
        let ch = pattern[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&pattern[i..i + ch]);
        i += ch;
    }
    out
}

fn invalid(what: &'static str, pattern: &str, e: &regex::Error) -> AccessError {
    AccessError::Pattern { what, pattern: pattern.to_owned(), why: e.to_string().lines().last().unwrap_or_default().trim().to_owned() }
}

/// The three permissions RabbitMQ checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// Declare, delete.
    Configure,
    /// Publish, bind to.
    Write,
    /// Consume, get, purge, bind from.
    Read,
}

impl Perm {
    fn name(self) -> &'static str {
        match self {
            Perm::Configure => "configure",
            Perm::Write => "write",
            Perm::Read => "read",
        }
    }
}

/// What a permission is checked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// An exchange (`""` is checked as `amq.default`, as RabbitMQ does).
    Exchange,
    /// A queue.
    Queue,
}

/// One connection's rights in its vhost, compiled once at `connection.open`.
#[derive(Debug)]
pub struct Grant {
    /// The user.
    pub user: Arc<User>,
    /// The vhost.
    pub vhost: String,
    configure: Pattern,
    write: Pattern,
    read: Pattern,
    /// Topic patterns by exchange, `{username}` and `{vhost}` already expanded.
    topics: Vec<(String, Option<Pattern>, Option<Pattern>)>,
}

impl Grant {
    /// 403 ACCESS_REFUSED on the channel unless the user has `perm` on the resource.
    pub fn check(&self, perm: Perm, kind: Resource, name: &str) -> Result<(), AmqpError> {
        let (kind_name, name) = match kind {
            Resource::Exchange if name.is_empty() => ("exchange", "amq.default"),
            Resource::Exchange => ("exchange", name),
            Resource::Queue => ("queue", name),
        };
        let pattern = match perm {
            Perm::Configure => &self.configure,
            Perm::Write => &self.write,
            Perm::Read => &self.read,
        };
        if pattern.matches(name) {
            return Ok(());
        }
        Err(AmqpError::channel(
            ReplyCode::AccessRefused,
            format!("{} access to {kind_name} '{name}' in vhost '{}' refused for user '{}'", perm.name(), self.vhost, self.user.name),
        ))
    }

    /// Whether any topic permission applies to `exchange` (the publish path skips the
    /// check when none does).
    pub fn has_topic_permissions(&self, exchange: &str) -> bool {
        self.topics.iter().any(|(x, _, _)| x == exchange)
    }

    /// 403 unless the topic permissions of `exchange` (if any) allow `routing_key` for
    /// `perm` (write on publish, read on queue.bind). Only topic exchanges are checked.
    pub fn check_topic(&self, perm: Perm, exchange: &str, routing_key: &str) -> Result<(), AmqpError> {
        let Some((_, write, read)) = self.topics.iter().find(|(x, _, _)| x == exchange) else { return Ok(()) };
        let pattern = if perm == Perm::Write { write } else { read };
        if pattern.as_ref().is_some_and(|p| p.matches(routing_key)) {
            return Ok(());
        }
        Err(AmqpError::channel(
            ReplyCode::AccessRefused,
            format!(
                "{} access to topic '{routing_key}' in exchange '{exchange}' in vhost '{}' refused for user '{}'",
                perm.name(),
                self.vhost,
                self.user.name
            ),
        ))
    }

    /// RabbitMQ's user_id check: a published `user_id` must name the user, unless the
    /// user is an impersonator.
    pub fn check_user_id(&self, user_id: &[u8]) -> Result<(), AmqpError> {
        if user_id == self.user.name.as_bytes() || self.user.has_tag(IMPERSONATOR) {
            return Ok(());
        }
        Err(AmqpError::precondition_failed(format!(
            "user_id property set to '{}' but authenticated user was '{}'",
            String::from_utf8_lossy(user_id),
            self.user.name
        )))
    }
}

/// How many connections and channels a user has open, for its limits, and the signal
/// that closes them when the user is deleted.
#[derive(Debug)]
pub struct Usage {
    /// Open connections.
    pub connections: AtomicU64,
    /// Open channels over all connections.
    pub channels: AtomicU64,
    deleted: tokio::sync::watch::Sender<bool>,
}

impl Default for Usage {
    fn default() -> Self {
        Usage { connections: AtomicU64::new(0), channels: AtomicU64::new(0), deleted: tokio::sync::watch::Sender::new(false) }
    }
}

impl Usage {
    /// Resolves when the user is deleted.
    pub fn deleted(&self) -> tokio::sync::watch::Receiver<bool> {
        self.deleted.subscribe()
    }

    /// Tells the user's connections to close (the user was deleted).
    pub fn close_connections(&self) {
        self.deleted.send_replace(true);
    }
}

/// A channel counted against its user's max-channels; dropping it gives the slot back.
#[derive(Debug)]
pub struct ChannelSlot(Arc<Usage>);

impl ChannelSlot {
    /// Takes a channel slot for the user of `usage`: 530 NOT_ALLOWED on the connection
    /// when the user's max-channels is reached, as RabbitMQ.
    pub fn take(usage: &Arc<Usage>, user: &User) -> Result<ChannelSlot, AmqpError> {
        if take_slot(&usage.channels, limit(user.limits.max_channels)) {
            return Ok(ChannelSlot(Arc::clone(usage)));
        }
        Err(AmqpError::connection(
            ReplyCode::NotAllowed,
            format!(
                "number of channels opened for user '{}' has reached the maximum allowed user limit of ({})",
                user.name,
                user.limits.max_channels.unwrap_or_default()
            ),
        ))
    }
}

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        self.0.channels.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts one more of something against a limit: false (and nothing counted) when that
/// would pass the limit.
pub fn take_slot(counter: &AtomicU64, limit: Option<u64>) -> bool {
    let Some(max) = limit else {
        counter.fetch_add(1, Ordering::Relaxed);
        return true;
    };
    counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
}

#[derive(Debug, Default)]
struct State {
    users: BTreeMap<String, Arc<User>>,
    vhosts: BTreeMap<String, VhostInfo>,
    /// By (user, vhost).
    permissions: BTreeMap<(String, String), Permission>,
    /// By (user, vhost, exchange).
    topic_permissions: BTreeMap<(String, String, String), TopicPermission>,
}

/// The access model and its records in the store.
#[derive(Debug)]
pub struct Access {
    state: RwLock<State>,
    usage: Mutex<BTreeMap<String, Arc<Usage>>>,
    db: Database,
}

/// Record kinds in the store.
const USER: &str = "user";
const VHOST: &str = "vhost";
const PERMISSION: &str = "permission";
const TOPIC_PERMISSION: &str = "topic-permission";

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn pair_key(a: &str, b: &str) -> String {
    format!("{a}\0{b}")
}

impl Access {
    /// Loads the records in `db`.
    pub fn load(db: Database) -> Result<Access, AccessError> {
        let mut state = State::default();
        let corrupt = |kind: &str, key: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{kind} record '{key}': {e}"));
        for (key, raw) in db.records(USER)? {
            let def: definitions::UserDef = serde_json::from_slice(&raw).map_err(|e| corrupt(USER, &key, &e))?;
            let user = def.to_user()?;
            state.users.insert(user.name.clone(), Arc::new(user));
        }
        for (key, raw) in db.records(VHOST)? {
            let def: definitions::VhostDef = serde_json::from_slice(&raw).map_err(|e| corrupt(VHOST, &key, &e))?;
            state.vhosts.insert(def.name.clone(), def.to_info());
        }
        for (key, raw) in db.records(PERMISSION)? {
            let p: definitions::PermissionDef = serde_json::from_slice(&raw).map_err(|e| corrupt(PERMISSION, &key, &e))?;
            state.permissions.insert((p.user.clone(), p.vhost.clone()), p.to_permission());
        }
        for (key, raw) in db.records(TOPIC_PERMISSION)? {
            let p: definitions::TopicPermissionDef = serde_json::from_slice(&raw).map_err(|e| corrupt(TOPIC_PERMISSION, &key, &e))?;
            state.topic_permissions.insert((p.user.clone(), p.vhost.clone(), p.exchange.clone()), p.to_topic_permission());
        }
        Ok(Access { state: RwLock::new(state), usage: Mutex::default(), db })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// True when nothing has been recorded yet (a first boot).
    pub fn is_empty(&self) -> bool {
        let st = self.read();
        st.users.is_empty() && st.vhosts.is_empty()
    }

    /// A user by name.
    pub fn user(&self, name: &str) -> Option<Arc<User>> {
        self.read().users.get(name).cloned()
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<Arc<User>> {
        self.read().users.values().cloned().collect()
    }

    /// Adds or replaces a user.
    pub fn put_user(&self, user: User) -> Result<(), AccessError> {
        if user.name.is_empty() {
            return Err(AccessError::Invalid("a user name cannot be empty".to_owned()));
        }
        self.db.put_record(USER, &user.name, &json(&definitions::UserDef::from_user(&user)))?;
        self.write().users.insert(user.name.clone(), Arc::new(user));
        Ok(())
    }

    /// Deletes a user and its permissions; its usage record is handed back so the caller
    /// can close its connections.
    pub fn delete_user(&self, name: &str) -> Result<Arc<Usage>, AccessError> {
        let mut st = self.write();
        if st.users.remove(name).is_none() {
            return Err(AccessError::NoUser(name.to_owned()));
        }
        self.db.delete_record(USER, name)?;
        let perms: Vec<_> = st.permissions.keys().filter(|(u, _)| u == name).cloned().collect();
        for (u, v) in perms {
            st.permissions.remove(&(u.clone(), v.clone()));
            self.db.delete_record(PERMISSION, &pair_key(&u, &v))?;
        }
        let topics: Vec<_> = st.topic_permissions.keys().filter(|(u, _, _)| u == name).cloned().collect();
        for key in topics {
            self.db.delete_record(TOPIC_PERMISSION, &pair_key(&pair_key(&key.0, &key.1), &key.2))?;
            st.topic_permissions.remove(&key);
        }
        drop(st);
        // A user made again later under this name starts with fresh counts.
        let usage = self.usage.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        Ok(usage.unwrap_or_default())
    }

    /// Records a vhost's description, tags and limits (the broker opens its queues).
    pub fn put_vhost(&self, info: VhostInfo) -> Result<(), AccessError> {
        self.db.put_record(VHOST, &info.name, &json(&definitions::VhostDef::from_info(&info)))?;
        self.write().vhosts.insert(info.name.clone(), info);
        Ok(())
    }

    /// A vhost's record.
    pub fn vhost(&self, name: &str) -> Option<VhostInfo> {
        self.read().vhosts.get(name).cloned()
    }

    /// Every vhost's record, by name.
    pub fn vhosts(&self) -> Vec<VhostInfo> {
        self.read().vhosts.values().cloned().collect()
    }

    /// Forgets a vhost and every permission in it.
    pub fn delete_vhost(&self, name: &str) -> Result<(), AccessError> {
        let mut st = self.write();
        st.vhosts.remove(name);
        self.db.delete_record(VHOST, name)?;
        let perms: Vec<_> = st.permissions.keys().filter(|(_, v)| v == name).cloned().collect();
        for (u, v) in perms {
            self.db.delete_record(PERMISSION, &pair_key(&u, &v))?;
            st.permissions.remove(&(u, v));
        }
        let topics: Vec<_> = st.topic_permissions.keys().filter(|(_, v, _)| v == name).cloned().collect();
        for key in topics {
            self.db.delete_record(TOPIC_PERMISSION, &pair_key(&pair_key(&key.0, &key.1), &key.2))?;
            st.topic_permissions.remove(&key);
        }
        Ok(())
    }

    /// Sets a user's permissions in a vhost (both must exist; the patterns must compile).
    pub fn set_permissions(&self, user: &str, vhost: &str, p: Permission) -> Result<(), AccessError> {
        Pattern::compile("configure", &p.configure)?;
        Pattern::compile("write", &p.write)?;
        Pattern::compile("read", &p.read)?;
        let mut st = self.write();
        if !st.users.contains_key(user) {
            return Err(AccessError::NoUser(user.to_owned()));
        }
        if !st.vhosts.contains_key(vhost) {
            return Err(AccessError::NoVhost(vhost.to_owned()));
        }
        let def = definitions::PermissionDef::from_permission(user, vhost, &p);
        self.db.put_record(PERMISSION, &pair_key(user, vhost), &json(&def))?;
        st.permissions.insert((user.to_owned(), vhost.to_owned()), p);
        Ok(())
    }

    /// Removes a user's permissions in a vhost (nothing to remove is fine).
    pub fn clear_permissions(&self, user: &str, vhost: &str) -> Result<(), AccessError> {
        self.db.delete_record(PERMISSION, &pair_key(user, vhost))?;
        self.write().permissions.remove(&(user.to_owned(), vhost.to_owned()));
        Ok(())
    }

    /// A user's permissions in a vhost.
    pub fn permission(&self, user: &str, vhost: &str) -> Option<Permission> {
        self.read().permissions.get(&(user.to_owned(), vhost.to_owned())).cloned()
    }

    /// Every permission as (user, vhost, patterns).
    pub fn permissions(&self) -> Vec<(String, String, Permission)> {
        self.read().permissions.iter().map(|((u, v), p)| (u.clone(), v.clone(), p.clone())).collect()
    }

    /// Sets a user's topic permissions for one exchange in a vhost.
    pub fn set_topic_permission(&self, user: &str, vhost: &str, t: TopicPermission) -> Result<(), AccessError> {
        Pattern::compile("write", &t.write)?;
        Pattern::compile("read", &t.read)?;
        let mut st = self.write();
        if !st.users.contains_key(user) {
            return Err(AccessError::NoUser(user.to_owned()));
        }
        if !st.vhosts.contains_key(vhost) {
            return Err(AccessError::NoVhost(vhost.to_owned()));
        }
        let def = definitions::TopicPermissionDef::from_topic_permission(user, vhost, &t);
        self.db.put_record(TOPIC_PERMISSION, &pair_key(&pair_key(user, vhost), &t.exchange), &json(&def))?;
        st.topic_permissions.insert((user.to_owned(), vhost.to_owned(), t.exchange.clone()), t);
        Ok(())
    }

    /// Removes a user's topic permissions in a vhost: for one exchange, or all.
    pub fn clear_topic_permissions(&self, user: &str, vhost: &str, exchange: Option<&str>) -> Result<(), AccessError> {
        let mut st = self.write();
        let keys: Vec<_> = st
            .topic_permissions
            .keys()
            .filter(|(u, v, x)| u == user && v == vhost && exchange.is_none_or(|e| e == x))
            .cloned()
            .collect();
        for key in keys {
            self.db.delete_record(TOPIC_PERMISSION, &pair_key(&pair_key(&key.0, &key.1), &key.2))?;
            st.topic_permissions.remove(&key);
        }
        Ok(())
    }

    /// Every topic permission as (user, vhost, patterns).
    pub fn topic_permissions(&self) -> Vec<(String, String, TopicPermission)> {
        self.read().topic_permissions.iter().map(|((u, v, _), t)| (u.clone(), v.clone(), t.clone())).collect()
    }

    /// Checks a password login: the user's hash must verify.
    pub fn authenticate(&self, username: &str, password: &str) -> Option<Arc<User>> {
        self.user(username).filter(|u| u.hash.verify(password))
    }

    /// The rights of `user` in `vhost`: `None` when the user has no permissions there
    /// (RabbitMQ's vhost access check).
    pub fn grant(&self, user: &Arc<User>, vhost: &str) -> Option<Grant> {
        let st = self.read();
        let p = st.permissions.get(&(user.name.clone(), vhost.to_owned()))?;
        let compile = |what, pattern: &str| {
            Pattern::compile(what, pattern).unwrap_or_else(|e| {
                tracing::warn!(user = %user.name, vhost, error = %e, "a stored pattern does not compile; it allows nothing");
                Pattern::Nothing
            })
        };
        let expand = |pattern: &str| pattern.replace("{username}", &user.name).replace("{vhost}", vhost);
        let topics = st
            .topic_permissions
            .iter()
            .filter(|((u, v, _), _)| *u == user.name && v == vhost)
            .map(|((_, _, x), t)| (x.clone(), Pattern::compile("write", &expand(&t.write)).ok(), Pattern::compile("read", &expand(&t.read)).ok()))
            .collect();
        Some(Grant {
            user: Arc::clone(user),
            vhost: vhost.to_owned(),
            configure: compile("configure", &p.configure),
            write: compile("write", &p.write),
            read: compile("read", &p.read),
            topics,
        })
    }

    /// The connection and channel counts of a user.
    pub fn usage(&self, user: &str) -> Arc<Usage> {
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(usage.entry(user.to_owned()).or_default())
    }

    /// Adds `name` with `password` hashed the default way, `tags`, and no limits.
    pub fn add_user(&self, name: &str, password: &str, tags: &[&str]) -> Result<(), AccessError> {
        self.put_user(User {
            name: name.to_owned(),
            hash: PasswordHash::new(Hashing::default(), password),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            limits: UserLimits::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_that_are_not_quantifiers_are_literal_as_in_pcre() {
        assert_eq!(pcre_braces("^orders\\.{username}\\."), "^orders\\.\\{username\\}\\.");
        assert_eq!(pcre_braces("a{2,3}b{4}c{5,}"), "a{2,3}b{4}c{5,}");
        let p = Pattern::compile("read", "^({client_id}|lab)\\.").expect("compiles");
        assert!(p.matches("{client_id}.x") && p.matches("lab.x") && !p.matches("myclient.x"));
        assert!(Pattern::compile("read", "(").is_err());
        assert!(Pattern::compile("read", "").expect("empty").matches("") && !Pattern::compile("read", "").expect("empty").matches("a"));
    }
}
