//! RabbitMQ's definitions: the JSON that `rabbitmqctl export_definitions` and the management
//! API write (users, vhosts, permissions, topic permissions, vhost limits, queues,
//! exchanges, bindings). [`Definitions::parse`] reads a file, [`Broker::import`] checks all
//! of it before changing anything and then applies it; applying the same file twice
//! changes nothing. The access records in the store use these same shapes.
//!
//! Keys RabbitMQ writes as metadata (`rabbit_version`, `product_name`, vhost `metadata`...)
//! are accepted and ignored; things Warren does not implement (runtime parameters other
//! than vhost limits, global parameters other than the cluster's name and id, policy keys
//! it does not act on) are refused with a message naming them.

use std::collections::{BTreeMap, BTreeSet};

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::access::password::{Hashing, PasswordHash};
use crate::access::{AccessError, Pattern, Permission, TopicPermission, User, UserLimits, VhostInfo, VhostLimits};
use crate::broker::policy::{Policy, PolicyDef};
use crate::broker::vhost::{ExchangeSpec, QueueSpec};
use crate::broker::Broker;

/// Why a definitions file was refused.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionsError {
    /// The file could not be read.
    #[error("cannot read definitions file {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not JSON of the expected shape.
    #[error("definitions are not valid: {0}")]
    Json(#[from] serde_json::Error),
    /// Parsed, but inconsistent or unsupported; nothing was applied.
    #[error("definitions refused, nothing applied: {0}")]
    Invalid(String),
    /// Applying failed part way (the store failed).
    #[error("applying definitions failed: {0}")]
    Apply(String),
}

fn invalid(why: impl Into<String>) -> DefinitionsError {
    DefinitionsError::Invalid(why.into())
}

/// Tags as RabbitMQ writes them: a list, or (before 3.9) one comma-separated string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Tags {
    /// `["administrator", "monitoring"]`.
    List(Vec<String>),
    /// `"administrator,monitoring"`.
    Text(String),
}

impl Default for Tags {
    fn default() -> Self {
        Tags::List(Vec::new())
    }
}

impl Tags {
    /// The tags, empty ones left out.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Tags::List(v) => v.iter().filter(|t| !t.is_empty()).cloned().collect(),
            Tags::Text(s) => s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect(),
        }
    }
}

/// A user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserDef {
    /// Name.
    pub name: String,
    /// Base64 salt and digest.
    #[serde(default)]
    pub password_hash: String,
    /// A plain password to hash on import (RabbitMQ accepts it instead of a hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// `rabbit_password_hashing_sha256` (the default), `_sha512` or `_md5`.
    #[serde(default = "default_hashing")]
    pub hashing_algorithm: String,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
    /// Limits.
    #[serde(default)]
    pub limits: UserLimits,
}

fn default_hashing() -> String {
    Hashing::default().name().to_owned()
}

impl UserDef {
    /// The user it describes, or why it cannot be one.
    pub fn to_user(&self) -> Result<User, AccessError> {
        let hashing = Hashing::parse(&self.hashing_algorithm)
            .ok_or_else(|| AccessError::Hashing { user: self.name.clone(), algorithm: self.hashing_algorithm.clone() })?;
        let hash = match &self.password {
            Some(_) if !self.password_hash.is_empty() => {
                return Err(AccessError::Invalid(format!("user '{}': both password and password_hash are provided", self.name)));
            }
            Some(password) => PasswordHash::new(Hashing::default(), password),
            None => PasswordHash::decode(hashing, &self.password_hash).map_err(|error| AccessError::Hash { user: self.name.clone(), error })?,
        };
        if self.name.is_empty() {
            return Err(AccessError::Invalid("a user name cannot be empty".to_owned()));
        }
        Ok(User { name: self.name.clone(), hash, tags: self.tags.to_vec(), limits: self.limits })
    }

    /// How `user` is exported.
    pub fn from_user(user: &User) -> UserDef {
        UserDef {
            name: user.name.clone(),
            password_hash: user.hash.encode(),
            password: None,
            hashing_algorithm: user.hash.hashing().name().to_owned(),
            tags: Tags::List(user.tags.clone()),
            limits: user.limits,
        }
    }
}

/// A vhost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VhostDef {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
    /// Limits: an object in Warren's records; RabbitMQ exports a list of `[name, value]`
    /// pairs here, and the same limits again as `vhost-limits` parameters.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub limits: Value,
    /// RabbitMQ 3.13's copy of description and tags, and its default queue type.
    #[serde(default, skip_serializing)]
    pub metadata: Option<Value>,
}

impl VhostDef {
    /// The vhost record it describes.
    pub fn to_info(&self) -> VhostInfo {
        let meta = |key: &str| self.metadata.as_ref().and_then(|m| m.get(key));
        let description = if self.description.is_empty() {
            meta("description").and_then(Value::as_str).unwrap_or_default().to_owned()
        } else {
            self.description.clone()
        };
        let mut tags = self.tags.to_vec();
        if tags.is_empty() {
            match meta("tags") {
                Some(Value::Array(list)) => tags = list.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
                Some(Value::String(s)) => tags = Tags::Text(s.clone()).to_vec(),
                _ => {}
            }
        }
        VhostInfo { name: self.name.clone(), description, tags, limits: self.limits().unwrap_or_default() }
    }

    /// The limits, from an object or RabbitMQ's list of pairs.
    pub fn limits(&self) -> Result<VhostLimits, DefinitionsError> {
        match &self.limits {
            Value::Null => Ok(VhostLimits::default()),
            Value::Array(pairs) => {
                let mut map = serde_json::Map::new();
                for pair in pairs {
                    match pair.as_array().map(Vec::as_slice) {
                        Some([Value::String(k), v]) => {
                            map.insert(k.clone(), v.clone());
                        }
                        _ => return Err(invalid(format!("vhost '{}': limits must be [name, value] pairs", self.name))),
                    }
                }
                parse_vhost_limits(&self.name, &Value::Object(map))
            }
            other => parse_vhost_limits(&self.name, other),
        }
    }

    /// How `info` is recorded.
    pub fn from_info(info: &VhostInfo) -> VhostDef {
        let limits = if info.limits == VhostLimits::default() { Value::Null } else { serde_json::to_value(info.limits).unwrap_or_default() };
        VhostDef { name: info.name.clone(), description: info.description.clone(), tags: Tags::List(info.tags.clone()), limits, metadata: None }
    }
}

/// Vhost limits from a JSON object, refusing limits Warren does not know.
fn parse_vhost_limits(vhost: &str, value: &Value) -> Result<VhostLimits, DefinitionsError> {
    if let Some(other) = value.as_object().and_then(|o| o.keys().find(|k| *k != "max-connections" && *k != "max-queues")) {
        return Err(invalid(format!("limits of vhost '{vhost}': unknown limit '{other}'")));
    }
    serde_json::from_value(value.clone()).map_err(|e| invalid(format!("limits of vhost '{vhost}': {e}")))
}

/// A user's permissions in a vhost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PermissionDef {
    /// User.
    pub user: String,
    /// Vhost.
    pub vhost: String,
    /// Configure pattern.
    pub configure: String,
    /// Write pattern.
    pub write: String,
    /// Read pattern.
    pub read: String,
}

impl PermissionDef {
    /// The patterns.
    pub fn to_permission(&self) -> Permission {
        Permission { configure: self.configure.clone(), write: self.write.clone(), read: self.read.clone() }
    }

    /// How a permission is recorded.
    pub fn from_permission(user: &str, vhost: &str, p: &Permission) -> PermissionDef {
        PermissionDef { user: user.to_owned(), vhost: vhost.to_owned(), configure: p.configure.clone(), write: p.write.clone(), read: p.read.clone() }
    }
}

/// A user's topic permissions for one exchange in a vhost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicPermissionDef {
    /// User.
    pub user: String,
    /// Vhost.
    pub vhost: String,
    /// Exchange.
    pub exchange: String,
    /// Write pattern.
    pub write: String,
    /// Read pattern.
    pub read: String,
}

impl TopicPermissionDef {
    /// The patterns.
    pub fn to_topic_permission(&self) -> TopicPermission {
        TopicPermission { exchange: self.exchange.clone(), write: self.write.clone(), read: self.read.clone() }
    }

    /// How a topic permission is recorded.
    pub fn from_topic_permission(user: &str, vhost: &str, t: &TopicPermission) -> TopicPermissionDef {
        TopicPermissionDef { user: user.to_owned(), vhost: vhost.to_owned(), exchange: t.exchange.clone(), write: t.write.clone(), read: t.read.clone() }
    }
}

/// A runtime parameter (Warren implements the `vhost-limits` component).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParameterDef {
    /// Vhost.
    pub vhost: String,
    /// Component.
    pub component: String,
    /// Name.
    pub name: String,
    /// Value.
    pub value: Value,
}

/// A global parameter (cluster metadata).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GlobalParameterDef {
    /// Name.
    pub name: String,
    /// Value.
    pub value: Value,
}

/// A queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueDef {
    /// Name.
    pub name: String,
    /// Vhost.
    pub vhost: String,
    /// Durable.
    #[serde(default = "yes")]
    pub durable: bool,
    /// Auto-delete.
    #[serde(default)]
    pub auto_delete: bool,
    /// The queue type, which RabbitMQ exports beside `x-queue-type`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Arguments.
    #[serde(default)]
    pub arguments: serde_json::Map<String, Value>,
}

fn yes() -> bool {
    true
}

/// An exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExchangeDef {
    /// Name.
    pub name: String,
    /// Vhost.
    pub vhost: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Durable.
    #[serde(default = "yes")]
    pub durable: bool,
    /// Auto-delete.
    #[serde(default)]
    pub auto_delete: bool,
    /// Internal.
    #[serde(default)]
    pub internal: bool,
    /// Arguments.
    #[serde(default)]
    pub arguments: serde_json::Map<String, Value>,
}

/// A binding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BindingDef {
    /// Source exchange.
    pub source: String,
    /// Vhost.
    pub vhost: String,
    /// Destination.
    pub destination: String,
    /// `queue` or `exchange`.
    pub destination_type: String,
    /// Routing key.
    #[serde(default)]
    pub routing_key: String,
    /// Arguments.
    #[serde(default)]
    pub arguments: serde_json::Map<String, Value>,
}

/// A whole definitions document. Unknown top-level keys are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Definitions {
    /// Users.
    #[serde(default)]
    pub users: Vec<UserDef>,
    /// Vhosts.
    #[serde(default)]
    pub vhosts: Vec<VhostDef>,
    /// Permissions.
    #[serde(default)]
    pub permissions: Vec<PermissionDef>,
    /// Topic permissions.
    #[serde(default)]
    pub topic_permissions: Vec<TopicPermissionDef>,
    /// Runtime parameters.
    #[serde(default)]
    pub parameters: Vec<ParameterDef>,
    /// Global parameters.
    #[serde(default)]
    pub global_parameters: Vec<GlobalParameterDef>,
    /// Policies.
    #[serde(default)]
    pub policies: Vec<PolicyDef>,
    /// Queues.
    #[serde(default)]
    pub queues: Vec<QueueDef>,
    /// Exchanges.
    #[serde(default)]
    pub exchanges: Vec<ExchangeDef>,
    /// Bindings.
    #[serde(default)]
    pub bindings: Vec<BindingDef>,
}

/// Global parameters that are cluster metadata, which a single node has no use for.
const METADATA_GLOBALS: [&str; 2] = ["cluster_name", "internal_cluster_id"];

/// A JSON value as an AMQP field value, as RabbitMQ converts management arguments:
/// integers as long-long, other numbers as double, strings as long strings.
pub fn amqp_value(v: &Value) -> AMQPValue {
    match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(items.iter().map(amqp_value).collect::<Vec<_>>())),
        Value::Object(map) => AMQPValue::FieldTable(amqp_table(map)),
    }
}

/// A JSON object as an AMQP field table. Nesting is bounded by the JSON parser's own
/// recursion limit (128), so this recursion is too.
pub fn amqp_table(map: &serde_json::Map<String, Value>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in map {
        t.insert(k.as_str().into(), amqp_value(v));
    }
    t
}

impl Definitions {
    /// Parses a definitions document.
    pub fn parse(text: &str) -> Result<Definitions, DefinitionsError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Reads and parses a definitions file.
    pub fn read(path: &std::path::Path) -> Result<Definitions, DefinitionsError> {
        let text = std::fs::read_to_string(path).map_err(|source| DefinitionsError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text)
    }

    /// The vhost limits the `vhost-limits` parameters set, by vhost.
    fn vhost_limits(&self) -> Result<BTreeMap<String, VhostLimits>, DefinitionsError> {
        let mut out = BTreeMap::new();
        for p in &self.parameters {
            if p.component != "vhost-limits" {
                return Err(invalid(format!(
                    "runtime parameter '{}' of component '{}' in vhost '{}': Warren implements only the 'vhost-limits' component",
                    p.name, p.component, p.vhost
                )));
            }
            out.insert(p.vhost.clone(), parse_vhost_limits(&p.vhost, &p.value)?);
        }
        Ok(out)
    }
}

impl Broker {
    /// Imports `defs`: checks everything first (references, patterns, hashes, queue and
    /// exchange arguments, equivalence with what exists), then applies it in RabbitMQ's
    /// order. Nothing changes when a check fails.
    pub fn import(&self, defs: &Definitions) -> Result<(), DefinitionsError> {
        let plan = self.check_definitions(defs)?;
        self.apply_definitions(defs, plan).map_err(|e| DefinitionsError::Apply(e.to_string()))
    }

    fn check_definitions(&self, defs: &Definitions) -> Result<Plan, DefinitionsError> {
        for g in &defs.global_parameters {
            if !METADATA_GLOBALS.contains(&g.name.as_str()) {
                return Err(invalid(format!("global parameter '{}' is not supported", g.name)));
            }
        }
        let mut users = Vec::new();
        for u in &defs.users {
            users.push(u.to_user().map_err(|e| invalid(e.to_string()))?);
        }
        let limits = defs.vhost_limits()?;
        let mut vhosts: BTreeSet<String> = self.vhost_names().into_iter().collect();
        for v in &defs.vhosts {
            if v.name.is_empty() {
                return Err(invalid("a vhost name cannot be empty"));
            }
            v.limits()?;
            // RabbitMQ 3.13's per-vhost default queue type: only classic, Warren's default,
            // is honoured; another is refused rather than ignored.
            if let Some(kind) = v.metadata.as_ref().and_then(|m| m.get("default_queue_type")).and_then(Value::as_str) {
                if kind != "classic" && kind != "undefined" {
                    return Err(invalid(format!("vhost '{}': default_queue_type '{kind}' is not supported (queues default to classic)", v.name)));
                }
            }
            vhosts.insert(v.name.clone());
        }
        let mut user_names: BTreeSet<String> = self.access.users().iter().map(|u| u.name.clone()).collect();
        user_names.extend(users.iter().map(|u| u.name.clone()));
        let known = |kind: &str, user: &str, vhost: &str| {
            if !user_names.contains(user) {
                return Err(invalid(format!("{kind} of user '{user}' in vhost '{vhost}': no such user")));
            }
            if !vhosts.contains(vhost) {
                return Err(invalid(format!("{kind} of user '{user}' in vhost '{vhost}': no such vhost")));
            }
            Ok(())
        };
        for p in &defs.permissions {
            known("permission", &p.user, &p.vhost)?;
            for (what, pattern) in [("configure", &p.configure), ("write", &p.write), ("read", &p.read)] {
                Pattern::check(what, pattern).map_err(|e| invalid(format!("permission of user '{}' in vhost '{}': {e}", p.user, p.vhost)))?;
            }
        }
        for t in &defs.topic_permissions {
            known("topic permission", &t.user, &t.vhost)?;
            for (what, pattern) in [("write", &t.write), ("read", &t.read)] {
                Pattern::check(what, pattern).map_err(|e| invalid(format!("topic permission of user '{}' in vhost '{}': {e}", t.user, t.vhost)))?;
            }
        }
        for p in &defs.policies {
            if !vhosts.contains(&p.vhost) {
                return Err(invalid(format!("policy '{}': no such vhost '{}'", p.name, p.vhost)));
            }
            Policy::new(p.clone()).map_err(|e| invalid(e.to_string()))?;
        }
        for vhost in limits.keys() {
            if !vhosts.contains(vhost) {
                return Err(invalid(format!("vhost-limits of vhost '{vhost}': no such vhost")));
            }
        }
        // Topology: each entity must be declarable, or equivalent to what exists.
        let mut exchanges: BTreeSet<(String, String)> = BTreeSet::new();
        for x in &defs.exchanges {
            if !vhosts.contains(&x.vhost) {
                return Err(invalid(format!("exchange '{}': no such vhost '{}'", x.name, x.vhost)));
            }
            if let Some(vhost) = self.vhost(&x.vhost) {
                vhost.check_exchange(&exchange_spec(x)).map_err(|e| invalid(format!("exchange '{}' in vhost '{}': {}", x.name, x.vhost, e.text)))?;
            } else {
                crate::broker::vhost::VHost::check_new_exchange(&exchange_spec(x), &x.vhost)
                    .map_err(|e| invalid(format!("exchange '{}' in vhost '{}': {}", x.name, x.vhost, e.text)))?;
            }
            exchanges.insert((x.vhost.clone(), x.name.clone()));
        }
        let mut queues: BTreeSet<(String, String)> = BTreeSet::new();
        for q in &defs.queues {
            if !vhosts.contains(&q.vhost) {
                return Err(invalid(format!("queue '{}': no such vhost '{}'", q.name, q.vhost)));
            }
            let spec = queue_spec(q);
            let checked = match self.vhost(&q.vhost) {
                Some(vhost) => vhost.check_queue(&spec),
                None => crate::broker::vhost::VHost::check_new_queue(&spec, &q.vhost, self.config.compat),
            };
            checked.map_err(|e| invalid(format!("queue '{}' in vhost '{}': {}", q.name, q.vhost, e.text)))?;
            queues.insert((q.vhost.clone(), q.name.clone()));
        }
        for b in &defs.bindings {
            let exists_x = |name: &str| {
                name.starts_with("amq.") || exchanges.contains(&(b.vhost.clone(), name.to_owned())) || self.vhost(&b.vhost).is_some_and(|v| v.exchange(name).is_some())
            };
            if b.source.is_empty() {
                return Err(invalid(format!("binding to '{}' in vhost '{}': the default exchange cannot be bound", b.destination, b.vhost)));
            }
            if !exists_x(&b.source) {
                return Err(invalid(format!("binding from exchange '{}' in vhost '{}': no such exchange", b.source, b.vhost)));
            }
            let destination_exists = match b.destination_type.as_str() {
                "queue" => queues.contains(&(b.vhost.clone(), b.destination.clone())) || self.vhost(&b.vhost).is_some_and(|v| v.queue(&b.destination).is_some()),
                "exchange" => exists_x(&b.destination),
                other => return Err(invalid(format!("binding in vhost '{}': unknown destination_type '{other}'", b.vhost))),
            };
            if !destination_exists {
                return Err(invalid(format!("binding to {} '{}' in vhost '{}': no such {}", b.destination_type, b.destination, b.vhost, b.destination_type)));
            }
        }
        Ok(Plan { users, limits })
    }

    fn apply_definitions(&self, defs: &Definitions, plan: Plan) -> Result<(), Box<dyn std::error::Error>> {
        for v in &defs.vhosts {
            let mut info = v.to_info();
            if let Some(limits) = plan.limits.get(&v.name) {
                info.limits = *limits;
            } else if let Some(existing) = self.access.vhost(&v.name) {
                info.limits = existing.limits;
            }
            self.add_vhost(info)?;
        }
        for (vhost, limits) in &plan.limits {
            if let Some(mut info) = self.access.vhost(vhost) {
                info.limits = *limits;
                self.add_vhost(info)?;
            }
        }
        for user in plan.users {
            self.access.put_user(user)?;
        }
        for p in &defs.permissions {
            self.access.set_permissions(&p.user, &p.vhost, p.to_permission())?;
        }
        for t in &defs.topic_permissions {
            self.access.set_topic_permission(&t.user, &t.vhost, t.to_topic_permission())?;
        }
        for x in &defs.exchanges {
            if let Some(vhost) = self.vhost(&x.vhost) {
                vhost.declare_exchange(exchange_spec(x), false).map_err(|e| e.text)?;
            }
        }
        for p in &defs.policies {
            self.set_policy(p.clone())?;
        }
        for q in &defs.queues {
            if let Some(vhost) = self.vhost(&q.vhost) {
                vhost.declare_queue(queue_spec(q), false, 0).map_err(|e| e.text)?;
            }
        }
        for b in &defs.bindings {
            let Some(vhost) = self.vhost(&b.vhost) else { continue };
            let arguments = amqp_table(&b.arguments);
            if b.destination_type == "queue" {
                vhost.bind_queue(&b.destination, &b.source, &b.routing_key, &arguments, 0).map_err(|e| e.text)?;
            } else {
                vhost.bind_exchange(&b.destination, &b.source, &b.routing_key, &arguments).map_err(|e| e.text)?;
            }
        }
        Ok(())
    }

    /// Everything the broker holds, as a definitions document (what
    /// `rabbitmqctl export_definitions` writes): durable exchanges and queues and the
    /// bindings between them, with users, vhosts and permissions.
    pub fn export(&self) -> Definitions {
        let mut defs = Definitions::default();
        for user in self.access.users() {
            defs.users.push(UserDef::from_user(&user));
        }
        for info in self.access.vhosts() {
            if info.limits != VhostLimits::default() {
                defs.parameters.push(ParameterDef {
                    vhost: info.name.clone(),
                    component: "vhost-limits".to_owned(),
                    name: "limits".to_owned(),
                    value: serde_json::to_value(info.limits).unwrap_or_default(),
                });
            }
            defs.vhosts.push(VhostDef { limits: Value::Null, ..VhostDef::from_info(&info) });
        }
        for (user, vhost, p) in self.access.permissions() {
            defs.permissions.push(PermissionDef::from_permission(&user, &vhost, &p));
        }
        for (user, vhost, t) in self.access.topic_permissions() {
            defs.topic_permissions.push(TopicPermissionDef::from_topic_permission(&user, &vhost, &t));
        }
        for name in self.vhost_names() {
            let Some(vhost) = self.vhost(&name) else { continue };
            defs.policies.extend(vhost.policies().iter().map(|p| p.def.clone()));
            vhost.export(&mut defs);
        }
        defs
    }
}

/// What the checks produced for the apply step.
struct Plan {
    users: Vec<User>,
    limits: BTreeMap<String, VhostLimits>,
}

fn exchange_spec(x: &ExchangeDef) -> ExchangeSpec {
    ExchangeSpec {
        name: x.name.clone(),
        kind: x.kind.clone(),
        durable: x.durable,
        auto_delete: x.auto_delete,
        internal: x.internal,
        arguments: amqp_table(&x.arguments),
    }
}

fn queue_spec(q: &QueueDef) -> QueueSpec {
    let mut arguments = amqp_table(&q.arguments);
    if let Some(kind) = q.kind.as_deref().filter(|k| *k != "classic" && !q.arguments.contains_key("x-queue-type")) {
        arguments.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from(kind.as_bytes().to_vec())));
    }
    QueueSpec { name: q.name.clone(), server_named: false, durable: q.durable, exclusive_owner: None, auto_delete: q.auto_delete, arguments }
}

/// A JSON value of an AMQP field value (for export), the inverse of [`amqp_value`] where
/// JSON can say it.
pub fn json_value(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => Value::from(*i),
        AMQPValue::ShortShortUInt(i) => Value::from(*i),
        AMQPValue::ShortInt(i) => Value::from(*i),
        AMQPValue::ShortUInt(i) => Value::from(*i),
        AMQPValue::LongInt(i) => Value::from(*i),
        AMQPValue::LongUInt(i) => Value::from(*i),
        AMQPValue::LongLongInt(i) => Value::from(*i),
        AMQPValue::Float(f) => Value::from(f64::from(*f)),
        AMQPValue::Double(f) => Value::from(*f),
        AMQPValue::DecimalValue(d) => Value::from(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => Value::from(s.as_str()),
        AMQPValue::LongString(s) => Value::from(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(json_value).collect()),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldTable(t) => Value::Object(json_table(t)),
        AMQPValue::ByteArray(b) => Value::from(String::from_utf8_lossy(b.as_slice()).into_owned()),
        AMQPValue::Void => Value::Null,
    }
}

/// A field table as a JSON object.
pub fn json_table(t: &FieldTable) -> serde_json::Map<String, Value> {
    t.inner().iter().map(|(k, v)| (k.to_string(), json_value(v))).collect()
}
