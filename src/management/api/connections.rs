//! Connections, channels and consumers through the API: listed from the broker's registry
//! of open connections (a `management` user sees its own, `monitoring` everyone's), and
//! closing a connection with the `X-Reason` header as its reason.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{json, Value};

use super::{list, no_content, node_name, one, paged, ApiResult, Params};
use crate::broker::connections::{Command, ConnectionInfo};
use crate::broker::consumer::{ChannelDelivery, Consumer};
use crate::definitions::json_table;
use crate::management::auth::{ApiError, Caller};
use crate::management::Mgmt;

/// What a client is told when no `X-Reason` is given (RabbitMQ's words).
const DEFAULT_REASON: &str = "Closed via management plugin";

fn visible_connections(mgmt: &Mgmt, caller: &Caller, vhost: Option<&str>) -> Vec<Arc<ConnectionInfo>> {
    mgmt.broker
        .connections
        .list()
        .into_iter()
        .filter(|c| caller.is_monitor() || c.opened.user == caller.user.name)
        .filter(|c| vhost.is_none_or(|v| c.opened.vhost == v))
        .collect()
}

fn connection_json(c: &Arc<ConnectionInfo>) -> Value {
    let props = json_table(&c.opened.client_properties);
    let provided = props.get("connection_name").cloned();
    let mut out = json!({
        "name": c.name,
        "node": node_name(),
        "type": "network",
        "protocol": "AMQP 0-9-1",
        "auth_mechanism": c.opened.auth_mechanism,
        "user": c.opened.user,
        "user_who_performed_action": c.opened.user,
        "vhost": c.opened.vhost,
        "host": c.opened.local.ip().to_string(),
        "port": c.opened.local.port(),
        "peer_host": c.opened.peer.ip().to_string(),
        "peer_port": c.opened.peer.port(),
        "ssl": c.opened.tls,
        "state": if c.is_blocked() { "blocked" } else { "running" },
        "channels": c.channel_count(),
        "channel_max": c.opened.channel_max,
        "frame_max": c.opened.frame_max,
        "timeout": c.opened.heartbeat,
        "connected_at": c.connected_at,
        "client_properties": props,
    });
    if let Some(name) = provided {
        out["user_provided_name"] = name;
    }
    out
}

fn channel_name(c: &ConnectionInfo, number: u16) -> String {
    format!("{} ({number})", c.name)
}

fn channel_json(c: &ConnectionInfo, ch: &ChannelDelivery) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let st = ch.lock();
    json!({
        "name": channel_name(c, ch.id),
        "node": node_name(),
        "number": ch.id,
        "user": c.opened.user,
        "user_who_performed_action": c.opened.user,
        "vhost": c.opened.vhost,
        "connection_details": {"name": c.name, "peer_host": c.opened.peer.ip().to_string(), "peer_port": c.opened.peer.port()},
        "state": if c.is_blocked() { "blocked" } else { "running" },
        "consumer_count": st.consumers.len() + usize::from(st.reply_consumer.is_some()),
        "messages_unacknowledged": st.unacked.len(),
        "prefetch_count": ch.mode.prefetch_count.load(Relaxed),
        "global_prefetch_count": st.prefetch_global,
        "confirm": ch.mode.confirm.load(Relaxed),
        "transactional": ch.mode.transactional.load(Relaxed),
    })
}

/// RabbitMQ's consumer object; `active` is false for a single-active-consumer queue's
/// waiting consumers.
pub fn consumer_json(mgmt: &Mgmt, vhost: &str, c: &Consumer, active: bool) -> Value {
    let conn = mgmt.broker.connections.get(c.channel.connection);
    let channel_details = match &conn {
        Some(conn) => json!({
            "connection_name": conn.name,
            "name": channel_name(conn, c.channel.id),
            "node": node_name(),
            "number": c.channel.id,
            "peer_host": conn.opened.peer.ip().to_string(),
            "peer_port": conn.opened.peer.port(),
            "user": conn.opened.user,
        }),
        None => json!({"number": c.channel.id, "node": node_name()}),
    };
    let arguments = if c.priority != 0 { json!({"x-priority": c.priority}) } else { json!({}) };
    json!({
        "consumer_tag": c.tag,
        "queue": {"name": c.queue.name, "vhost": vhost},
        "channel_details": channel_details,
        "ack_required": !c.no_ack,
        "exclusive": c.exclusive,
        "prefetch_count": c.prefetch,
        "active": active,
        "activity_status": if active { "up" } else { "waiting" },
        "arguments": arguments,
    })
}

/// Every consumer the caller sees (of its own connections unless a monitor).
pub fn all_consumers(mgmt: &Mgmt, caller: &Caller) -> Vec<Value> {
    consumers_in(mgmt, caller, None)
}

fn consumers_in(mgmt: &Mgmt, caller: &Caller, only: Option<&str>) -> Vec<Value> {
    let mine: Vec<u64> = visible_connections(mgmt, caller, only).iter().map(|c| c.opened.id).collect();
    let mut out = Vec::new();
    for name in mgmt.broker.vhost_names() {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let Some(v) = mgmt.broker.vhost(&name) else { continue };
        for q in v.queues() {
            for (c, active) in q.consumers() {
                if mine.contains(&c.channel.connection) {
                    out.push(consumer_json(mgmt, &name, &c, active));
                }
            }
        }
    }
    out
}

/// `GET /api/connections`.
pub async fn connections(State(mgmt): State<Mgmt>, caller: Caller, params: Params) -> ApiResult {
    paged(&params, visible_connections(&mgmt, &caller, None).iter().map(connection_json).collect())
}

/// `GET /api/vhosts/{vhost}/connections`.
pub async fn vhost_connections(State(mgmt): State<Mgmt>, caller: Caller, Path(vhost): Path<String>, params: Params) -> ApiResult {
    mgmt.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    paged(&params, visible_connections(&mgmt, &caller, Some(&vhost)).iter().map(connection_json).collect())
}

fn find_connection(mgmt: &Mgmt, caller: &Caller, name: &str) -> Result<Arc<ConnectionInfo>, ApiError> {
    mgmt.broker.connections.by_name(name).filter(|c| caller.is_monitor() || c.opened.user == caller.user.name).ok_or_else(ApiError::not_found)
}

/// `GET /api/connections/{name}`.
pub async fn connection(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>, params: Params) -> ApiResult {
    one(&params, connection_json(&find_connection(&mgmt, &caller, &name)?))
}

/// `DELETE /api/connections/{name}`: the client gets 320 CONNECTION_FORCED with the
/// `X-Reason` header's text.
pub async fn close_connection(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>, headers: HeaderMap) -> ApiResult {
    let c = find_connection(&mgmt, &caller, &name)?;
    if !caller.is_admin() && c.opened.user != caller.user.name {
        return Err(ApiError::not_authorised("User not authorised to access object"));
    }
    let reason = headers.get("x-reason").and_then(|v| v.to_str().ok()).filter(|r| !r.is_empty()).unwrap_or(DEFAULT_REASON);
    tracing::info!(connection = %c.name, user = %caller.user.name, reason, "closing a connection through the management API");
    c.send(Command::Close { code: warren_protocol::ReplyCode::ConnectionForced, text: reason.to_owned() });
    no_content()
}

fn channels_of(conns: &[Arc<ConnectionInfo>]) -> Vec<Value> {
    conns.iter().flat_map(|c| c.channels().into_iter().map(move |ch| channel_json(c, &ch))).collect()
}

/// `GET /api/connections/{name}/channels`.
pub async fn connection_channels(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>, params: Params) -> ApiResult {
    paged(&params, channels_of(&[find_connection(&mgmt, &caller, &name)?]))
}

/// `GET /api/channels`.
pub async fn channels(State(mgmt): State<Mgmt>, caller: Caller, params: Params) -> ApiResult {
    paged(&params, channels_of(&visible_connections(&mgmt, &caller, None)))
}

/// `GET /api/vhosts/{vhost}/channels`.
pub async fn vhost_channels(State(mgmt): State<Mgmt>, caller: Caller, Path(vhost): Path<String>, params: Params) -> ApiResult {
    mgmt.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    paged(&params, channels_of(&visible_connections(&mgmt, &caller, Some(&vhost))))
}

/// `GET /api/channels/{name}`: the channel with its consumers.
pub async fn channel(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>, params: Params) -> ApiResult {
    for c in visible_connections(&mgmt, &caller, None) {
        for ch in c.channels() {
            if channel_name(&c, ch.id) == name {
                let mut item = channel_json(&c, &ch);
                let held: Vec<Arc<Consumer>> = ch.lock().consumers.values().cloned().collect();
                let consumers: Vec<Value> = held.iter().map(|k| consumer_json(&mgmt, &c.opened.vhost, k, true)).collect();
                item["consumer_details"] = Value::Array(consumers);
                return one(&params, item);
            }
        }
    }
    Err(ApiError::not_found())
}

/// `GET /api/consumers`.
pub async fn consumers(State(mgmt): State<Mgmt>, caller: Caller, params: Params) -> ApiResult {
    list(&params, all_consumers(&mgmt, &caller))
}

/// `GET /api/consumers/{vhost}`.
pub async fn vhost_consumers(State(mgmt): State<Mgmt>, caller: Caller, Path(vhost): Path<String>, params: Params) -> ApiResult {
    caller.need_vhost(&mgmt, &vhost)?;
    list(&params, consumers_in(&mgmt, &caller, Some(&vhost)))
}
