//! Exchanges, queues and bindings through the API: listing with statistics, declaring,
//! deleting, publishing, getting (peeking with RabbitMQ's ack modes) and purging. Changes go
//! through the same vhost operations and permission checks as AMQP methods.

use std::collections::HashMap;
use std::sync::Arc;

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{FieldTable, ShortString};
use axum::body::Bytes;
use axum::extract::{Path, State};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use warren_protocol::content::Payload;

use super::{body, created_or_updated, json, lenient, list, no_content, paged, node_name, one, ApiResult, Params};
use crate::access::{Perm, Resource};
use crate::broker::exchange::{Binding, Destination, Exchange};
use crate::broker::message::{Extra, Message};
use crate::broker::policy::Policy;
use crate::broker::queue::Queue;
use crate::broker::vhost::{ExchangeSpec, QueueSpec, VHost};
use crate::definitions::{amqp_table, json_table};
use crate::management::auth::{ApiError, Caller};
use crate::management::Mgmt;

/// The connection id of changes made through the API (no AMQP connection has it).
const API_CONNECTION: u64 = 0;

/// The default exchange's name in URLs.
const DEFAULT_EXCHANGE: &str = "amq.default";

fn exchange_name(url_name: &str) -> &str {
    if url_name == DEFAULT_EXCHANGE { "" } else { url_name }
}

/// A queue's identity for the unacknowledged counts.
pub fn queue_key(q: &Arc<Queue>) -> usize {
    Arc::as_ptr(q) as usize
}

/// Deliveries held unacknowledged, by queue, over every open channel (read on request, so
/// acks pay nothing for it).
pub fn unacked_by_queue(mgmt: &Mgmt) -> HashMap<usize, u64> {
    let mut out = HashMap::new();
    for c in mgmt.broker.connections.list() {
        for ch in c.channels() {
            for u in &ch.lock().unacked {
                *out.entry(queue_key(&u.queue)).or_insert(0) += 1;
            }
        }
    }
    out
}

/// The vhosts the caller sees, or just `only` (404 / 401 as [`Caller::need_vhost`]).
fn visible_vhosts(mgmt: &Mgmt, caller: &Caller, only: Option<&str>) -> Result<Vec<Arc<VHost>>, ApiError> {
    match only {
        Some(name) => Ok(vec![caller.need_vhost(mgmt, name)?]),
        None => Ok(mgmt.broker.vhost_names().iter().filter(|v| caller.sees_vhost(mgmt, v)).filter_map(|v| mgmt.broker.vhost(v)).collect()),
    }
}

fn exchange_json(vhost: &str, x: &Exchange) -> Value {
    json!({
        "name": x.name,
        "vhost": vhost,
        "type": x.kind.as_str(),
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": json_table(&x.arguments),
        "user_who_performed_action": "",
    })
}

fn queue_json(mgmt: &Mgmt, v: &VHost, policies: &[Arc<Policy>], q: &Arc<Queue>, unacked: &HashMap<usize, u64>) -> Value {
    let s = q.stats();
    let held = unacked.get(&queue_key(q)).copied().unwrap_or(0);
    let args = q.args();
    let key = format!("q\0{}\0{}", v.name, q.name);
    let stats = mgmt.rates.message_stats(&key, &["publish", "deliver", "deliver_no_ack", "get", "get_no_ack", "deliver_get", "redeliver", "ack"], &[s.publish, s.deliver, s.deliver_no_ack, s.get, s.get_no_ack, s.deliver + s.deliver_no_ack + s.get + s.get_no_ack, s.redeliver, s.ack]);
    let queued = mgmt.rates.rates(&format!("{key}\0queued"), &[s.ready + held, s.ready, held]);
    let policy = crate::broker::policy::choose(policies, |p| p.matches_queue(&q.name, args.kind)).map(|p| p.def.name.clone());
    let mut out = json!({
        "name": q.name,
        "vhost": v.name,
        "durable": q.durable(),
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive_owner.is_some(),
        "arguments": json_table(&q.arguments),
        "type": args.kind.as_str(),
        "node": node_name(),
        "state": "running",
        "consumers": s.consumers,
        "messages": s.ready + held,
        "messages_details": {"rate": queued[0]},
        "messages_ready": s.ready,
        "messages_ready_details": {"rate": queued[1]},
        "messages_unacknowledged": held,
        "messages_unacknowledged_details": {"rate": queued[2]},
        "message_bytes_ready": s.ready_bytes,
        "memory": s.ready_bytes,
    });
    // As RabbitMQ: a queue that never saw a message has no message_stats, and no policy
    // field without a policy (rabbitmqadmin cannot print a null).
    if s.publish + s.deliver + s.deliver_no_ack + s.get + s.get_no_ack + s.ack > 0 {
        out["message_stats"] = stats;
    }
    if let Some(p) = policy {
        out["policy"] = json!(p);
    }
    out
}

/// Quotes a binding's routing key as RabbitMQ does: form-URL encoding (`k.#` is
/// `k.%23`, a space is `+`), letters, digits and `.-_` kept.
fn quote_binding(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// RabbitMQ's `properties_key`: the routing key, and a digest of the arguments if any
/// (`~` alone for neither). Clients only hand it back to delete the binding.
fn properties_key(routing_key: &str, arguments: &FieldTable) -> String {
    if arguments.inner().is_empty() {
        return if routing_key.is_empty() { "~".to_owned() } else { quote_binding(routing_key) };
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, serde_json::to_string(&json_table(arguments)).unwrap_or_default().as_bytes());
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]);
    format!("{}~{}", quote_binding(routing_key), hash)
}

fn binding_json(vhost: &str, source: &str, b: &Binding) -> Value {
    let (destination, kind) = match &b.destination {
        Destination::Queue(q) => (q.name.as_str(), "queue"),
        Destination::Exchange(x) => (x.name.as_str(), "exchange"),
    };
    json!({
        "source": source,
        "vhost": vhost,
        "destination": destination,
        "destination_type": kind,
        "routing_key": b.routing_key,
        "arguments": json_table(&b.arguments),
        "properties_key": properties_key(&b.routing_key, &b.arguments),
    })
}

/// The implicit binding of the default exchange to a queue.
fn default_binding_json(vhost: &str, queue: &str) -> Value {
    json!({
        "source": "",
        "vhost": vhost,
        "destination": queue,
        "destination_type": "queue",
        "routing_key": queue,
        "arguments": {},
        "properties_key": quote_binding(queue),
    })
}

/// Every binding of a vhost: the default exchange's to each queue first, as RabbitMQ lists.
fn vhost_binding_list(v: &VHost) -> Vec<Value> {
    let mut out: Vec<Value> = v.queues().iter().map(|q| default_binding_json(&v.name, &q.name)).collect();
    for x in v.exchanges().iter().filter(|x| !x.name.is_empty()) {
        out.extend(x.bindings().iter().map(|b| binding_json(&v.name, &x.name, b)));
    }
    out
}

// --- exchanges ---

fn exchange_list(mgmt: &Mgmt, caller: &Caller, only: Option<&str>, params: &Params) -> ApiResult {
    let mut items = Vec::new();
    for v in visible_vhosts(mgmt, caller, only)? {
        items.extend(v.exchanges().iter().map(|x| exchange_json(&v.name, x)));
    }
    paged(params, items)
}

/// `GET /api/exchanges`.
pub async fn exchanges(State(mgmt): State<Mgmt>, caller: Caller, params: Params) -> ApiResult {
    exchange_list(&mgmt, &caller, None, &params)
}

/// `GET /api/exchanges/{vhost}`.
pub async fn vhost_exchanges(State(mgmt): State<Mgmt>, caller: Caller, Path(vhost): Path<String>, params: Params) -> ApiResult {
    exchange_list(&mgmt, &caller, Some(&vhost), &params)
}

/// `GET /api/exchanges/{vhost}/{name}`.
pub async fn exchange(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>, params: Params) -> ApiResult {
    let v = caller.need_vhost(&mgmt, &vhost)?;
    let x = v.exchange(exchange_name(&name)).ok_or_else(ApiError::not_found)?;
    one(&params, exchange_json(&v.name, &x))
}

/// The body of `PUT /api/exchanges/{vhost}/{name}`.
/// Absent flags are false, as RabbitMQ's API has them.
#[derive(Debug, Deserialize)]
struct ExchangeBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient::flag")]
    durable: Option<bool>,
    #[serde(default, deserialize_with = "lenient::flag")]
    auto_delete: Option<bool>,
    #[serde(default, deserialize_with = "lenient::flag")]
    internal: Option<bool>,
    #[serde(default)]
    arguments: Map<String, Value>,
}

/// `PUT /api/exchanges/{vhost}/{name}`: declares; 201 new, 204 existing and equivalent.
pub async fn put_exchange(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>, raw: Bytes) -> ApiResult {
    let b: ExchangeBody = body(&raw, &[])?;
    let grant = caller.grant(&mgmt, &vhost)?;
    let v = caller.need_vhost(&mgmt, &vhost)?;
    if name.starts_with("amq.") && v.exchange(&name).is_none() {
        return Err(ApiError::not_authorised("Access refused."));
    }
    grant.check(Perm::Configure, Resource::Exchange, &name)?;
    let existed = v.exchange(&name).is_some();
    let spec = ExchangeSpec {
        name,
        kind: b.kind.unwrap_or_else(|| "direct".to_owned()),
        durable: b.durable.unwrap_or(false),
        auto_delete: b.auto_delete.unwrap_or(false),
        internal: b.internal.unwrap_or(false),
        arguments: amqp_table(&b.arguments),
    };
    v.declare_exchange(spec, false)?;
    created_or_updated(!existed)
}

/// `DELETE /api/exchanges/{vhost}/{name}[?if-unused=true]`.
pub async fn delete_exchange(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>, params: Params) -> ApiResult {
    let grant = caller.grant(&mgmt, &vhost)?;
    let v = caller.need_vhost(&mgmt, &vhost)?;
    let name = exchange_name(&name);
    if v.exchange(name).is_none() {
        return Err(ApiError::not_found());
    }
    if name.is_empty() || name.starts_with("amq.") {
        return Err(ApiError::not_authorised("Access refused."));
    }
    grant.check(Perm::Configure, Resource::Exchange, name)?;
    v.delete_exchange(name, flag(&params, "if-unused"))?;
    no_content()
}

fn flag(params: &Params, key: &str) -> bool {
    params.get(key).is_some_and(|v| v == "true")
}

/// The body of `POST /api/exchanges/{vhost}/{name}/publish`.
#[derive(Debug, Deserialize)]
struct PublishBody {
    properties: Map<String, Value>,
    routing_key: String,
    payload: String,
    payload_encoding: String,
}

/// `POST /api/exchanges/{vhost}/{name}/publish`: `{"routed": bool}`.
pub async fn publish(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>, raw: Bytes) -> ApiResult {
    let b: PublishBody = body(&raw, &["properties", "routing_key", "payload", "payload_encoding"])?;
    let grant = caller.grant(&mgmt, &vhost)?;
    let v = caller.need_vhost(&mgmt, &vhost)?;
    let name = exchange_name(&name);
    let x = v.exchange(name).ok_or_else(|| ApiError::bad_request(format!("404 NOT_FOUND - no exchange '{name}' in vhost '{vhost}'")))?;
    grant.check(Perm::Write, Resource::Exchange, name)?;
    let body = match b.payload_encoding.as_str() {
        "string" => b.payload.into_bytes(),
        "base64" => base64::engine::general_purpose::STANDARD.decode(b.payload.trim()).map_err(|_| ApiError::bad_value("not_base64", &b.payload))?,
        other => return Err(ApiError::bad_request(format!("payload_encoding must be string or base64, not '{other}'"))),
    };
    let props = properties_from_json(&b.properties)?;
    if let Some(user_id) = props.user_id() {
        grant.check_user_id(user_id.as_str().as_bytes())?;
    }
    let persistent = props.delivery_mode().is_some_and(|m| m == 2);
    let priority = props.priority().unwrap_or(0);
    let ttl = match props.expiration() {
        Some(e) => Some(e.as_str().parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid expiration '{}'", e.as_str())))?),
        None => None,
    };
    let encoded = warren_protocol::properties::encode(&props);
    let msg = Message {
        exchange: name.to_owned(),
        routing_key: b.routing_key,
        payload: Payload::new(encoded.into(), body.into()),
        persistent,
        from_store: false,
        priority,
        extra: Extra::new(ttl, Vec::new()),
    };
    mgmt.broker.metrics.messages_received.inc();
    let routed = v.publish(&x, Arc::new(msg));
    if routed {
        mgmt.broker.metrics.messages_routed.inc();
    } else {
        mgmt.broker.metrics.messages_unroutable_dropped.inc();
    }
    json(json!({ "routed": routed }))
}

/// Basic properties from the API's JSON (RabbitMQ's names); 400 for a wrong type or an
/// unknown property.
fn properties_from_json(p: &Map<String, Value>) -> Result<BasicProperties, ApiError> {
    let mut out = BasicProperties::default();
    let text = |k: &str, v: &Value| -> Result<ShortString, ApiError> {
        let s = v.as_str().ok_or_else(|| ApiError::bad_request(format!("property {k} must be a string")))?;
        ShortString::try_new(s).map_err(|_| ApiError::bad_request(format!("property {k} is too long")))
    };
    let number = |k: &str, v: &Value| -> Result<u64, ApiError> {
        v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).ok_or_else(|| ApiError::bad_value("not_int", k))
    };
    for (k, v) in p {
        out = match k.as_str() {
            "content_type" => out.with_content_type(text(k, v)?),
            "content_encoding" => out.with_content_encoding(text(k, v)?),
            "correlation_id" => out.with_correlation_id(text(k, v)?),
            "reply_to" => out.with_reply_to(text(k, v)?),
            "expiration" => out.with_expiration(text(k, v)?),
            "message_id" => out.with_message_id(text(k, v)?),
            "type" => out.with_type(text(k, v)?),
            "user_id" => out.with_user_id(text(k, v)?),
            "app_id" => out.with_app_id(text(k, v)?),
            "cluster_id" => out.with_cluster_id(text(k, v)?),
            "delivery_mode" => out.with_delivery_mode(u8::try_from(number(k, v)?).map_err(|_| ApiError::bad_request("delivery_mode must be 1 or 2"))?),
            "priority" => out.with_priority(u8::try_from(number(k, v)?).map_err(|_| ApiError::bad_request("priority must be 0 to 255"))?),
            "timestamp" => out.with_timestamp(number(k, v)?),
            "headers" => match v {
                Value::Object(h) => out.with_headers(amqp_table(h)),
                _ => return Err(ApiError::bad_request("property headers must be an object")),
            },
            other => return Err(ApiError::bad_request(format!("unknown property '{other}'"))),
        };
    }
    Ok(out)
}

/// The API's JSON of basic properties (RabbitMQ's names; absent ones left out; none at
/// all is `[]`, as RabbitMQ writes it).
pub(super) fn properties_json(raw: &[u8]) -> Value {
    let Some(p) = warren_protocol::properties::decode(raw) else { return json!([]) };
    let mut out = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            out.insert(k.to_owned(), v);
        }
    };
    put("content_type", p.content_type().as_ref().map(|s| json!(s.as_str())));
    put("content_encoding", p.content_encoding().as_ref().map(|s| json!(s.as_str())));
    put("headers", p.headers().as_ref().map(|h| Value::Object(json_table(h))));
    put("delivery_mode", p.delivery_mode().map(|m| json!(m)));
    put("priority", p.priority().map(|m| json!(m)));
    put("correlation_id", p.correlation_id().as_ref().map(|s| json!(s.as_str())));
    put("reply_to", p.reply_to().as_ref().map(|s| json!(s.as_str())));
    put("expiration", p.expiration().as_ref().map(|s| json!(s.as_str())));
    put("message_id", p.message_id().as_ref().map(|s| json!(s.as_str())));
    put("timestamp", p.timestamp().map(|t| json!(t)));
    put("type", p.kind().as_ref().map(|s| json!(s.as_str())));
    put("user_id", p.user_id().as_ref().map(|s| json!(s.as_str())));
    put("app_id", p.app_id().as_ref().map(|s| json!(s.as_str())));
    put("cluster_id", p.cluster_id().as_ref().map(|s| json!(s.as_str())));
    if out.is_empty() {
        return json!([]);
    }
    Value::Object(out)
}

/// `GET /api/exchanges/{vhost}/{name}/bindings/source`.
pub async fn exchange_bindings_source(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>, params: Params) -> ApiResult {
    let v = caller.need_vhost(&mgmt, &vhost)?;
    let name = exchange_name(&name);
    let x = v.exchange(name).ok_or_else(ApiError::not_found)?;
    let items = if name.is_empty() {
        v.queues().iter().map(|q| default_binding_json(&v.name, &q.name)).collect()
    } else {
        x.bindings().iter().map(|b| binding_json(&v.name, &x.name, b)).collect()
    };
    list(&params, items)
}

/// `GET /api/exchanges/{vhost}/{name}/bindings/destination`.
pub async fn exchange_bindings_destination(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>, params: Params) -> ApiResult {
    let v = caller.need_vhost(&mgmt, &vhost)?;
    let name = exchange_name(&name);
    v.exchange(name).ok_or_else(ApiError::not_found)?;
    let items = vhost_binding_list(&v).into_iter().filter(|b| b["destination_type"] == "exchange" && b["destination"] == name).collect();
    list(&params, items)
}

// --- queues ---

fn queue_list(mgmt: &Mgmt, caller: &Caller, only: Option<&str>, params: &Params) -> ApiResult {
    let unacked = unacked_by_queue(mgmt);
    let mut items = Vec::new();
    for v in visible_vhosts(mgmt, caller, only)? {
        let policies = v.policies();
        items.extend(v.queues().iter().map(|q| queue_json(mgmt, &v, &policies, q, &unacked)));
    }
    paged(params, items)
}

/// `GET /api/queues`.
pub async fn queues(State(mgmt): State<Mgmt>, caller: Caller, params: Params) -> ApiResult {
    queue_list(&mgmt, &caller, None, &params)
}

/// `GET /api/queues/{vhost}`.
pub async fn vhost_queues(State(mgmt): State<Mgmt>, caller: Caller, Path(vhost): Path<String>, params: Params) -> ApiResult {
    queue_list(&mgmt, &caller, Some(&vhost), &params)
}

/// `GET /api/queues/{vhost}/{name}`: the queue, with its consumers' details.
pub async fn queue(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>, params: Params) -> ApiResult {
    let v = caller.need_vhost(&mgmt, &vhost)?;
    let q = v.queue(&name).ok_or_else(ApiError::not_found)?;
    let mut item = queue_json(&mgmt, &v, &v.policies(), &q, &unacked_by_queue(&mgmt));
    let consumers: Vec<Value> = q.consumers().iter().map(|(c, active)| super::connections::consumer_json(&mgmt, &v.name, c, *active)).collect();
    item["consumer_details"] = Value::Array(consumers);
    one(&params, item)
}

/// The body of `PUT /api/queues/{vhost}/{name}`.
/// Absent flags are false, as RabbitMQ's API has them.
#[derive(Debug, Deserialize)]
struct QueueBody {
    #[serde(default, deserialize_with = "lenient::flag")]
    durable: Option<bool>,
    #[serde(default, deserialize_with = "lenient::flag")]
    auto_delete: Option<bool>,
    #[serde(default)]
    arguments: Map<String, Value>,
}

/// `PUT /api/queues/{vhost}/{name}`: declares; 201 new, 204 existing and equivalent, 400
/// with the AMQP text when not equivalent.
pub async fn put_queue(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>, raw: Bytes) -> ApiResult {
    let b: QueueBody = body(&raw, &[])?;
    let grant = caller.grant(&mgmt, &vhost)?;
    let v = caller.need_vhost(&mgmt, &vhost)?;
    if name.starts_with("amq.") {
        return Err(ApiError::not_authorised("Access refused."));
    }
    grant.check(Perm::Configure, Resource::Queue, &name)?;
    let existed = v.queue(&name).is_some();
    let spec = QueueSpec {
        name,
        server_named: false,
        durable: b.durable.unwrap_or(false),
        exclusive_owner: None,
        auto_delete: b.auto_delete.unwrap_or(false),
        arguments: amqp_table(&b.arguments),
    };
    v.declare_queue(spec, false, API_CONNECTION)?;
    created_or_updated(!existed)
}

/// `DELETE /api/queues/{vhost}/{name}[?if-empty=true&if-unused=true]`.
pub async fn delete_queue(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>, params: Params) -> ApiResult {
    let grant = caller.grant(&mgmt, &vhost)?;
    let v = caller.need_vhost(&mgmt, &vhost)?;
    v.queue(&name).ok_or_else(ApiError::not_found)?;
    grant.check(Perm::Configure, Resource::Queue, &name)?;
    let deleted = v.delete_queue(&name, flag(&params, "if-unused"), flag(&params, "if-empty"), API_CONNECTION)?;
    drop(deleted);
    no_content()
}

/// `DELETE /api/queues/{vhost}/{name}/contents`: purge.
pub async fn purge_queue(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>) -> ApiResult {
    let grant = caller.grant(&mgmt, &vhost)?;
    let v = caller.need_vhost(&mgmt, &vhost)?;
    let q = v.queue(&name).ok_or_else(ApiError::not_found)?;
    grant.check(Perm::Read, Resource::Queue, &name)?;
    q.check_access(API_CONNECTION)?;
    q.purge();
    no_content()
}

/// The body of `POST /api/queues/{vhost}/{name}/get`.
#[derive(Debug, Deserialize)]
struct GetBody {
    #[serde(deserialize_with = "lenient::number")]
    count: Option<u64>,
    ackmode: String,
    encoding: String,
    #[serde(default, deserialize_with = "lenient::number")]
    truncate: Option<u64>,
}

/// What happens to messages got through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckMode {
    AckRequeue,
    Ack,
    RejectRequeue,
    Reject,
}

/// `POST /api/queues/{vhost}/{name}/get`: up to `count` messages, then requeued, acked or
/// rejected (dead-lettered) as `ackmode` says.
pub async fn get_messages(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>, raw: Bytes) -> ApiResult {
    let b: GetBody = body(&raw, &["count", "ackmode", "encoding"])?;
    let mode = match b.ackmode.as_str() {
        "ack_requeue_true" => AckMode::AckRequeue,
        "ack_requeue_false" => AckMode::Ack,
        "reject_requeue_true" => AckMode::RejectRequeue,
        "reject_requeue_false" => AckMode::Reject,
        other => return Err(ApiError::bad_request(format!("invalid ackmode '{other}'"))),
    };
    let base64_only = match b.encoding.as_str() {
        "auto" => false,
        "base64" => true,
        _ => return Err(ApiError::bad_request("Unsupported encoding. Please use auto or base64.")),
    };
    let count = b.count.ok_or_else(|| ApiError::bad_request("[{key_missing,count}]"))?;
    let truncate = b.truncate.map(|t| usize::try_from(t).unwrap_or(usize::MAX));
    let grant = caller.grant(&mgmt, &vhost)?;
    let v = caller.need_vhost(&mgmt, &vhost)?;
    let q = v.queue(&name).ok_or_else(|| ApiError { status: axum::http::StatusCode::NOT_FOUND, error: "not_found", reason: format!("NOT_FOUND - no queue '{name}' in vhost '{vhost}'").into() })?;
    grant.check(Perm::Read, Resource::Queue, &name)?;
    q.check_access(API_CONNECTION)?;
    let mut out = Vec::new();
    let mut requeue = Vec::new();
    for _ in 0..count {
        let Some(got) = q.get(mode == AckMode::Ack) else { break };
        let body = got.wire.body();
        let shown = &body[..truncate.map_or(body.len(), |t| t.min(body.len()))];
        let (payload, encoding) = match std::str::from_utf8(shown) {
            Ok(text) if !base64_only => (text.to_owned(), "string"),
            _ => (base64::engine::general_purpose::STANDARD.encode(shown), "base64"),
        };
        out.push(json!({
            "payload_bytes": body.len(),
            "redelivered": got.meta.redelivered,
            "exchange": got.msg.exchange,
            "routing_key": got.msg.routing_key,
            "message_count": got.remaining,
            "properties": properties_json(got.wire.properties()),
            "payload": payload,
            "payload_encoding": encoding,
        }));
        match mode {
            AckMode::Ack => {
                q.delivered(got.offset, &got.msg, true);
                q.count_acks(1);
            }
            AckMode::AckRequeue | AckMode::RejectRequeue => {
                q.delivered(got.offset, &got.msg, false);
                requeue.push((got.offset, got.msg, got.meta));
            }
            AckMode::Reject => {
                q.delivered(got.offset, &got.msg, false);
                q.rejected(got.offset, &got.msg);
            }
        }
    }
    if !requeue.is_empty() {
        q.requeue(requeue);
    }
    json(Value::Array(out))
}

/// `GET /api/queues/{vhost}/{name}/bindings`.
pub async fn queue_bindings(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>, params: Params) -> ApiResult {
    let v = caller.need_vhost(&mgmt, &vhost)?;
    v.queue(&name).ok_or_else(ApiError::not_found)?;
    let items = vhost_binding_list(&v).into_iter().filter(|b| b["destination_type"] == "queue" && b["destination"] == name.as_str()).collect();
    list(&params, items)
}

/// Declares `queue` (transient), publishes `payload` to it through the default exchange
/// and gets it back: the aliveness test.
pub fn round_trip(v: &VHost, queue: &str, payload: &[u8]) -> bool {
    let spec = QueueSpec { name: queue.to_owned(), server_named: false, durable: false, exclusive_owner: None, auto_delete: false, arguments: FieldTable::default() };
    let Ok(q) = v.declare_queue(spec, false, API_CONNECTION) else { return false };
    let Some(default) = v.exchange("") else { return false };
    let msg = Message {
        exchange: String::new(),
        routing_key: queue.to_owned(),
        payload: Payload::copied(&warren_protocol::properties::encode(&BasicProperties::default()), payload),
        persistent: false,
        from_store: false,
        priority: 0,
        extra: None,
    };
    if !v.publish(&default, Arc::new(msg)) {
        return false;
    }
    // Older test messages may be waiting; the one just sent is among them.
    while let Some(got) = q.get(true) {
        q.delivered(got.offset, &got.msg, true);
        if got.msg.body() == payload {
            return true;
        }
    }
    false
}

// --- bindings ---

fn binding_list(mgmt: &Mgmt, caller: &Caller, only: Option<&str>, params: &Params) -> ApiResult {
    let mut items = Vec::new();
    for v in visible_vhosts(mgmt, caller, only)? {
        items.extend(vhost_binding_list(&v));
    }
    list(params, items)
}

/// `GET /api/bindings`.
pub async fn bindings(State(mgmt): State<Mgmt>, caller: Caller, params: Params) -> ApiResult {
    binding_list(&mgmt, &caller, None, &params)
}

/// `GET /api/bindings/{vhost}`.
pub async fn vhost_bindings(State(mgmt): State<Mgmt>, caller: Caller, Path(vhost): Path<String>, params: Params) -> ApiResult {
    binding_list(&mgmt, &caller, Some(&vhost), &params)
}

/// The destination kind of a binding URL: `q` or `e`.
fn destination_kind(kind: &str) -> Result<Resource, ApiError> {
    match kind {
        "q" => Ok(Resource::Queue),
        "e" => Ok(Resource::Exchange),
        _ => Err(ApiError::not_found()),
    }
}

/// The bindings from `source` to `destination` (404 when either does not exist).
fn bindings_from_to(v: &VHost, source: &str, kind: Resource, destination: &str) -> Result<Vec<Value>, ApiError> {
    let source = exchange_name(source);
    v.exchange(source).ok_or_else(ApiError::not_found)?;
    let wanted = match kind {
        Resource::Queue => {
            v.queue(destination).ok_or_else(ApiError::not_found)?;
            "queue"
        }
        Resource::Exchange => {
            v.exchange(exchange_name(destination)).ok_or_else(ApiError::not_found)?;
            "exchange"
        }
    };
    let destination = if kind == Resource::Exchange { exchange_name(destination) } else { destination };
    Ok(vhost_binding_list(v).into_iter().filter(|b| b["source"] == source && b["destination"] == destination && b["destination_type"] == wanted).collect())
}

/// `GET /api/bindings/{vhost}/e/{source}/{q|e}/{destination}`.
pub async fn bindings_between(
    State(mgmt): State<Mgmt>,
    caller: Caller,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
    params: Params,
) -> ApiResult {
    let v = caller.need_vhost(&mgmt, &vhost)?;
    // As RabbitMQ: bindings between objects that do not exist are simply none.
    list(&params, bindings_from_to(&v, &source, destination_kind(&kind)?, &destination).unwrap_or_default())
}

/// The body of `POST /api/bindings/…`.
#[derive(Debug, Deserialize)]
struct BindingBody {
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    arguments: Map<String, Value>,
}

/// Write on the destination, read on the source, as for queue.bind / exchange.bind.
fn check_binding(grant: &crate::access::Grant, kind: Resource, destination: &str, source: &str) -> Result<(), ApiError> {
    grant.check(Perm::Write, kind, destination)?;
    if source.is_empty() {
        return Err(ApiError::not_authorised("Access refused."));
    }
    grant.check(Perm::Read, Resource::Exchange, source)?;
    Ok(())
}

/// What a properties key has escaped in a `Location`: all but RFC 3986's unreserved
/// characters (`k.%23` is `k.%2523`, `r.1~OfANRw` stays as it is).
const LOCATION_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Whether a properties key from a URL names `binding`'s: RabbitMQ reads a space there as the
/// `+` of the form encoding (`r 2` finds `r+2`).
fn same_key(binding: &Value, props: &str) -> bool {
    binding["properties_key"] == props || binding["properties_key"] == props.replace(' ', "+").as_str()
}

/// `POST /api/bindings/{vhost}/e/{source}/{q|e}/{destination}`: 201 with the new
/// binding's address in `Location`.
pub async fn add_binding(
    State(mgmt): State<Mgmt>,
    caller: Caller,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
    raw: Bytes,
) -> ApiResult {
    let b: BindingBody = body(&raw, &[])?;
    let kind = destination_kind(&kind)?;
    let grant = caller.grant(&mgmt, &vhost)?;
    let v = caller.need_vhost(&mgmt, &vhost)?;
    let source = exchange_name(&source);
    check_binding(&grant, kind, &destination, source)?;
    let arguments = amqp_table(&b.arguments);
    match kind {
        Resource::Queue => v.bind_queue(&destination, source, &b.routing_key, &arguments, API_CONNECTION)?,
        Resource::Exchange => v.bind_exchange(&destination, source, &b.routing_key, &arguments)?,
    }
    // RabbitMQ's Location is relative: the destination and the properties key.
    let location = format!("{destination}/{}", percent_encoding::utf8_percent_encode(&properties_key(&b.routing_key, &arguments), LOCATION_ESCAPED));
    let mut response = axum::response::IntoResponse::into_response(axum::http::StatusCode::CREATED);
    if let Ok(value) = axum::http::HeaderValue::from_str(&location) {
        response.headers_mut().insert(axum::http::header::LOCATION, value);
    }
    Ok(response)
}

/// `GET /api/bindings/{vhost}/e/{source}/{q|e}/{destination}/{props}`.
pub async fn binding(
    State(mgmt): State<Mgmt>,
    caller: Caller,
    Path((vhost, source, kind, destination, props)): Path<(String, String, String, String, String)>,
    params: Params,
) -> ApiResult {
    let v = caller.need_vhost(&mgmt, &vhost)?;
    let found = bindings_from_to(&v, &source, destination_kind(&kind)?, &destination)?.into_iter().find(|b| same_key(b, &props));
    one(&params, found.ok_or_else(ApiError::not_found)?)
}

/// `DELETE /api/bindings/{vhost}/e/{source}/{q|e}/{destination}/{props}`.
pub async fn delete_binding(
    State(mgmt): State<Mgmt>,
    caller: Caller,
    Path((vhost, source, kind, destination, props)): Path<(String, String, String, String, String)>,
) -> ApiResult {
    let kind = destination_kind(&kind)?;
    let grant = caller.grant(&mgmt, &vhost)?;
    let v = caller.need_vhost(&mgmt, &vhost)?;
    let found = bindings_from_to(&v, &source, kind, &destination)?.into_iter().find(|b| same_key(b, &props)).ok_or_else(ApiError::not_found)?;
    let source = exchange_name(&source);
    check_binding(&grant, kind, &destination, source)?;
    let key = found["routing_key"].as_str().unwrap_or_default().to_owned();
    let arguments = found["arguments"].as_object().map(amqp_table).unwrap_or_default();
    match kind {
        Resource::Queue => v.unbind_queue(&destination, source, &key, &arguments, API_CONNECTION)?,
        Resource::Exchange => v.unbind_exchange(&destination, source, &key, &arguments)?,
    }
    no_content()
}

