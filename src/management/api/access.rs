//! Vhosts, users, permissions, topic permissions and policies through the API, with
//! RabbitMQ's tag rules: users, vhost changes and permissions need `administrator`;
//! policies need `policymaker`; vhosts are listed to anyone who may use them.

use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{body, created_or_updated, list, no_content, paged, one, ApiResult, Params};
use crate::access::{Permission, TopicPermission, VhostInfo};
use crate::broker::policy::{ApplyTo, PolicyDef};
use crate::definitions::{Tags, UserDef};
use crate::management::auth::{ApiError, Caller};
use crate::management::Mgmt;

// --- vhosts ---

fn vhost_json(mgmt: &Mgmt, info: &VhostInfo) -> Value {
    let (mut ready, mut unacked) = (0u64, 0u64);
    let held = super::topology::unacked_by_queue(mgmt);
    if let Some(v) = mgmt.broker.vhost(&info.name) {
        for q in v.queues() {
            ready += q.stats().ready;
            unacked += held.get(&super::topology::queue_key(&q)).copied().unwrap_or(0);
        }
    }
    json!({
        "name": info.name,
        "description": info.description,
        "tags": info.tags,
        "default_queue_type": "classic",
        "metadata": {"description": info.description, "tags": info.tags, "default_queue_type": "classic"},
        "tracing": false,
        "cluster_state": {super::node_name(): "running"},
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
    })
}

/// `GET /api/vhosts`: those the caller may use (all for monitors).
pub async fn vhosts(State(mgmt): State<Mgmt>, caller: Caller, params: Params) -> ApiResult {
    let items = mgmt.broker.access.vhosts().iter().filter(|v| caller.lists_vhost(&mgmt, &v.name)).map(|v| vhost_json(&mgmt, v)).collect();
    paged(&params, items)
}

/// `GET /api/vhosts/{vhost}` (administrator, as RabbitMQ).
pub async fn vhost(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>, params: Params) -> ApiResult {
    caller.need_admin()?;
    let info = mgmt.broker.access.vhost(&name).ok_or_else(ApiError::not_found)?;
    one(&params, vhost_json(&mgmt, &info))
}

/// The body of `PUT /api/vhosts/{vhost}`.
#[derive(Debug, Deserialize)]
struct VhostBody {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Option<Tags>,
    #[serde(default)]
    default_queue_type: Option<String>,
    #[serde(default)]
    tracing: Option<bool>,
}

/// `PUT /api/vhosts/{vhost}` (administrator): creates it, or replaces its description and
/// tags (limits are kept), as RabbitMQ does.
pub async fn put_vhost(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>, raw: Bytes) -> ApiResult {
    caller.need_admin()?;
    let b: VhostBody = body(&raw, &[])?;
    if b.default_queue_type.as_deref().is_some_and(|t| t != "classic") {
        return Err(ApiError::bad_request("default_queue_type: Warren creates classic queues by default; only 'classic' is accepted"));
    }
    if b.tracing == Some(true) {
        return Err(ApiError::bad_request("tracing: the firehose tracer is not implemented"));
    }
    let existing = mgmt.broker.access.vhost(&name);
    let created = existing.is_none();
    let mut info = existing.unwrap_or(VhostInfo { name: name.clone(), description: String::new(), tags: Vec::new(), limits: Default::default() });
    info.description = b.description.unwrap_or_default();
    info.tags = b.tags.map(|t| t.to_vec()).unwrap_or_default();
    mgmt.broker.add_vhost(info)?;
    if created {
        // As RabbitMQ: the creator gets full permissions in the new vhost.
        mgmt.broker.access.set_permissions(&caller.user.name, &name, Permission { configure: ".*".into(), write: ".*".into(), read: ".*".into() })?;
    }
    created_or_updated(created)
}

/// `DELETE /api/vhosts/{vhost}` (administrator).
pub async fn delete_vhost(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>) -> ApiResult {
    caller.need_admin()?;
    mgmt.broker.delete_vhost(&name)?;
    no_content()
}

// --- users ---

fn user_json(u: &crate::access::User) -> Value {
    let def = UserDef::from_user(u);
    json!({
        "name": u.name,
        "password_hash": def.password_hash,
        "hashing_algorithm": def.hashing_algorithm,
        "tags": u.tags,
        "limits": u.limits,
    })
}

/// `GET /api/users` (administrator).
pub async fn users(State(mgmt): State<Mgmt>, caller: Caller, params: Params) -> ApiResult {
    caller.need_admin()?;
    list(&params, mgmt.broker.access.users().iter().map(|u| user_json(u)).collect())
}

/// `GET /api/users/without-permissions` (administrator).
pub async fn users_without_permissions(State(mgmt): State<Mgmt>, caller: Caller, params: Params) -> ApiResult {
    caller.need_admin()?;
    let with: Vec<String> = mgmt.broker.access.permissions().into_iter().map(|(u, _, _)| u).collect();
    list(&params, mgmt.broker.access.users().iter().filter(|u| !with.contains(&u.name)).map(|u| user_json(u)).collect())
}

/// `GET /api/users/{user}` (administrator).
pub async fn user(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>, params: Params) -> ApiResult {
    caller.need_admin()?;
    let u = mgmt.broker.access.user(&name).ok_or_else(ApiError::not_found)?;
    one(&params, user_json(&u))
}

/// The body of `PUT /api/users/{user}`.
#[derive(Debug, Deserialize)]
struct UserBody {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_hash: Option<String>,
    #[serde(default)]
    hashing_algorithm: Option<String>,
    #[serde(default)]
    tags: Option<Tags>,
}

/// `PUT /api/users/{user}` (administrator): creates or replaces; `tags` is required, as in
/// RabbitMQ; without a password or hash the user cannot log in with a password.
pub async fn put_user(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>, raw: Bytes) -> ApiResult {
    caller.need_admin()?;
    let b: UserBody = body(&raw, &[])?;
    let existing = mgmt.broker.access.user(&name);
    let mut def = match &existing {
        Some(u) => UserDef::from_user(u),
        None => UserDef {
            name: name.clone(),
            password_hash: String::new(),
            password: None,
            hashing_algorithm: crate::access::password::Hashing::default().name().to_owned(),
            tags: Tags::default(),
            limits: Default::default(),
        },
    };
    match (b.password, b.password_hash) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("provide password or password_hash, not both")),
        (Some(p), None) => {
            def.password = Some(p);
            def.password_hash = String::new();
        }
        (None, Some(h)) => {
            def.password_hash = h;
            if let Some(a) = b.hashing_algorithm {
                def.hashing_algorithm = a;
            }
        }
        (None, None) => {}
    }
    def.tags = b.tags.ok_or_else(|| ApiError::bad_request("tags_not_present"))?;
    mgmt.broker.access.put_user(def.to_user()?)?;
    created_or_updated(existing.is_none())
}

/// `DELETE /api/users/{user}` (administrator).
pub async fn delete_user(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>) -> ApiResult {
    caller.need_admin()?;
    mgmt.broker.delete_user(&name)?;
    no_content()
}

// --- permissions ---

fn permission_json(user: &str, vhost: &str, p: &Permission) -> Value {
    json!({"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read})
}

fn topic_json(user: &str, vhost: &str, t: &TopicPermission) -> Value {
    json!({"user": user, "vhost": vhost, "exchange": t.exchange, "write": t.write, "read": t.read})
}

fn permission_list(mgmt: &Mgmt, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    let mut all = mgmt.broker.access.permissions();
    all.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    all.iter().filter(|(u, v, _)| keep(u, v)).map(|(u, v, p)| permission_json(u, v, p)).collect()
}

fn topic_list(mgmt: &Mgmt, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    let mut all = mgmt.broker.access.topic_permissions();
    all.sort_by(|a, b| (&a.1, &a.0, &a.2.exchange).cmp(&(&b.1, &b.0, &b.2.exchange)));
    all.iter().filter(|(u, v, _)| keep(u, v)).map(|(u, v, t)| topic_json(u, v, t)).collect()
}

/// `GET /api/permissions` (administrator).
pub async fn permissions(State(mgmt): State<Mgmt>, caller: Caller, params: Params) -> ApiResult {
    caller.need_admin()?;
    list(&params, permission_list(&mgmt, |_, _| true))
}

/// `GET /api/vhosts/{vhost}/permissions` (administrator).
pub async fn vhost_permissions(State(mgmt): State<Mgmt>, caller: Caller, Path(vhost): Path<String>, params: Params) -> ApiResult {
    caller.need_admin()?;
    mgmt.broker.access.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    list(&params, permission_list(&mgmt, |_, v| v == vhost))
}

/// `GET /api/users/{user}/permissions` (administrator).
pub async fn user_permissions(State(mgmt): State<Mgmt>, caller: Caller, Path(user): Path<String>, params: Params) -> ApiResult {
    caller.need_admin()?;
    mgmt.broker.access.user(&user).ok_or_else(ApiError::not_found)?;
    list(&params, permission_list(&mgmt, |u, _| u == user))
}

/// `GET /api/permissions/{vhost}/{user}` (administrator).
pub async fn permission(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, user)): Path<(String, String)>, params: Params) -> ApiResult {
    caller.need_admin()?;
    let p = mgmt.broker.access.permission(&user, &vhost).ok_or_else(ApiError::not_found)?;
    one(&params, permission_json(&user, &vhost, &p))
}

/// The body of `PUT /api/permissions/{vhost}/{user}`.
#[derive(Debug, Deserialize)]
struct PermissionBody {
    configure: String,
    write: String,
    read: String,
}

/// `PUT /api/permissions/{vhost}/{user}` (administrator).
pub async fn put_permission(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, user)): Path<(String, String)>, raw: Bytes) -> ApiResult {
    caller.need_admin()?;
    let b: PermissionBody = body(&raw, &["configure", "write", "read"])?;
    if mgmt.broker.access.user(&user).is_none() || mgmt.broker.access.vhost(&vhost).is_none() {
        return Err(ApiError::bad_request("vhost_or_user_not_found"));
    }
    let existed = mgmt.broker.access.permission(&user, &vhost).is_some();
    mgmt.broker.access.set_permissions(&user, &vhost, Permission { configure: b.configure, write: b.write, read: b.read })?;
    created_or_updated(!existed)
}

/// `DELETE /api/permissions/{vhost}/{user}` (administrator): 404 if there were none.
pub async fn delete_permission(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, user)): Path<(String, String)>) -> ApiResult {
    caller.need_admin()?;
    mgmt.broker.access.permission(&user, &vhost).ok_or_else(ApiError::not_found)?;
    mgmt.broker.access.clear_permissions(&user, &vhost)?;
    no_content()
}

/// `GET /api/topic-permissions` (administrator).
pub async fn topic_permissions(State(mgmt): State<Mgmt>, caller: Caller, params: Params) -> ApiResult {
    caller.need_admin()?;
    list(&params, topic_list(&mgmt, |_, _| true))
}

/// `GET /api/vhosts/{vhost}/topic-permissions` (administrator).
pub async fn vhost_topic_permissions(State(mgmt): State<Mgmt>, caller: Caller, Path(vhost): Path<String>, params: Params) -> ApiResult {
    caller.need_admin()?;
    mgmt.broker.access.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    list(&params, topic_list(&mgmt, |_, v| v == vhost))
}

/// `GET /api/users/{user}/topic-permissions` (administrator).
pub async fn user_topic_permissions(State(mgmt): State<Mgmt>, caller: Caller, Path(user): Path<String>, params: Params) -> ApiResult {
    caller.need_admin()?;
    mgmt.broker.access.user(&user).ok_or_else(ApiError::not_found)?;
    list(&params, topic_list(&mgmt, |u, _| u == user))
}

/// `GET /api/topic-permissions/{vhost}/{user}` (administrator): 404 if none.
pub async fn topic_permission(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, user)): Path<(String, String)>, params: Params) -> ApiResult {
    caller.need_admin()?;
    let items = topic_list(&mgmt, |u, v| u == user && v == vhost);
    if items.is_empty() {
        return Err(ApiError::not_found());
    }
    list(&params, items)
}

/// The body of `PUT /api/topic-permissions/{vhost}/{user}`.
#[derive(Debug, Deserialize)]
struct TopicBody {
    exchange: String,
    write: String,
    read: String,
}

/// `PUT /api/topic-permissions/{vhost}/{user}` (administrator).
pub async fn put_topic_permission(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, user)): Path<(String, String)>, raw: Bytes) -> ApiResult {
    caller.need_admin()?;
    let b: TopicBody = body(&raw, &["exchange", "write", "read"])?;
    if mgmt.broker.access.user(&user).is_none() || mgmt.broker.access.vhost(&vhost).is_none() {
        return Err(ApiError::bad_request("vhost_or_user_not_found"));
    }
    // As RabbitMQ: 201 only for the user's first topic permission in the vhost (another
    // exchange's is an update of the same object).
    let existed = mgmt.broker.access.topic_permissions().iter().any(|(u, v, _)| *u == user && *v == vhost);
    mgmt.broker.access.set_topic_permission(&user, &vhost, TopicPermission { exchange: b.exchange, write: b.write, read: b.read })?;
    created_or_updated(!existed)
}

/// `DELETE /api/topic-permissions/{vhost}/{user}` (administrator): every exchange's.
pub async fn delete_topic_permission(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, user)): Path<(String, String)>) -> ApiResult {
    caller.need_admin()?;
    clear_topic(&mgmt, &vhost, &user)
}

/// `DELETE /api/topic-permissions/{vhost}/{user}/{exchange}` (administrator): one
/// exchange's (the web UI's), idempotent as in RabbitMQ.
pub async fn delete_exchange_topic_permission(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, user, exchange)): Path<(String, String, String)>) -> ApiResult {
    caller.need_admin()?;
    mgmt.broker.access.clear_topic_permissions(&user, &vhost, Some(&exchange))?;
    no_content()
}

fn clear_topic(mgmt: &Mgmt, vhost: &str, user: &str) -> ApiResult {
    let exists = mgmt.broker.access.topic_permissions().iter().any(|(u, v, _)| u == user && v == vhost);
    if !exists {
        return Err(ApiError::not_found());
    }
    mgmt.broker.access.clear_topic_permissions(user, vhost, None)?;
    no_content()
}

// --- policies ---

/// The policies of the vhosts the caller sees (any management user reads them, as in
/// RabbitMQ; changing them needs `policymaker`).
fn policy_list(mgmt: &Mgmt, caller: &Caller, only: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let names = match only {
        Some(v) => {
            caller.need_vhost(mgmt, v)?;
            vec![v.to_owned()]
        }
        None => mgmt.broker.vhost_names(),
    };
    let mut out = Vec::new();
    for name in names.iter().filter(|v| caller.sees_vhost(mgmt, v)) {
        let Some(v) = mgmt.broker.vhost(name) else { continue };
        let mut policies = v.policies();
        policies.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        out.extend(policies.iter().map(|p| serde_json::to_value(&p.def).unwrap_or_default()));
    }
    Ok(out)
}

/// `GET /api/policies`.
pub async fn policies(State(mgmt): State<Mgmt>, caller: Caller, params: Params) -> ApiResult {
    list(&params, policy_list(&mgmt, &caller, None)?)
}

/// `GET /api/policies/{vhost}`.
pub async fn vhost_policies(State(mgmt): State<Mgmt>, caller: Caller, Path(vhost): Path<String>, params: Params) -> ApiResult {
    list(&params, policy_list(&mgmt, &caller, Some(&vhost))?)
}

/// `GET /api/policies/{vhost}/{name}`.
pub async fn policy(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>, params: Params) -> ApiResult {
    let found = policy_list(&mgmt, &caller, Some(&vhost))?.into_iter().find(|p| p["name"] == name.as_str()).ok_or_else(ApiError::not_found)?;
    one(&params, found)
}

/// The body of `PUT /api/policies/{vhost}/{name}`.
#[derive(Debug, Deserialize)]
struct PolicyBody {
    pattern: String,
    definition: Map<String, Value>,
    #[serde(default)]
    priority: i64,
    #[serde(rename = "apply-to", default)]
    apply_to: Option<String>,
}

/// `apply-to`, refused in RabbitMQ's words (3.13's list of what it may be).
fn apply_to(given: Option<&str>) -> Result<ApplyTo, ApiError> {
    let Some(text) = given else { return Ok(ApplyTo::default()) };
    serde_json::from_value(Value::String(text.to_owned())).map_err(|_| {
        ApiError::bad_request(format!(
            "Validation failed\n\napply-to '{text}' unrecognised; should be 'queues', 'classic_queues', 'quorum_queues', 'streams', 'exchanges', or 'all'\n"
        ))
    })
}

/// `PUT /api/policies/{vhost}/{name}` (policymaker).
pub async fn put_policy(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>, raw: Bytes) -> ApiResult {
    caller.need_policymaker()?;
    caller.need_vhost(&mgmt, &vhost)?;
    let b: PolicyBody = body(&raw, &["pattern", "definition"])?;
    let apply_to = apply_to(b.apply_to.as_deref())?;
    let existed = mgmt.broker.vhost(&vhost).is_some_and(|v| v.policies().iter().any(|p| p.def.name == name));
    mgmt.broker.set_policy(PolicyDef { vhost, name, pattern: b.pattern, apply_to, priority: b.priority, definition: b.definition })?;
    created_or_updated(!existed)
}

/// `DELETE /api/policies/{vhost}/{name}` (policymaker): 404 if there is none.
pub async fn delete_policy(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>) -> ApiResult {
    caller.need_policymaker()?;
    let v = caller.need_vhost(&mgmt, &vhost)?;
    if !v.policies().iter().any(|p| p.def.name == name) {
        return Err(ApiError::not_found());
    }
    mgmt.broker.clear_policy(&vhost, &name)?;
    no_content()
}
