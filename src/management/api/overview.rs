//! The broker as a whole: overview, whoami, nodes, extensions, health checks and the
//! aliveness test.

use axum::extract::{Path, State};
use serde_json::{json, Value};

use super::{json, node_name, one, ApiResult, Params};
use crate::broker::exchange::ExchangeKind;
use crate::management::auth::{ApiError, Caller};
use crate::management::Mgmt;

/// The RabbitMQ version whose API Warren follows (clients and tools read it).
pub const RABBITMQ_VERSION: &str = "3.13.7";

/// Totals over the queues the caller sees: (ready, unacked, deliver+get, redeliver).
fn queue_totals(mgmt: &Mgmt, caller: &Caller) -> (u64, u64, u64, u64, u64) {
    let unacked = super::topology::unacked_by_queue(mgmt);
    let (mut ready, mut held, mut deliver_get, mut redeliver, mut queues) = (0, 0, 0, 0, 0);
    for vhost in mgmt.broker.vhost_names() {
        let Some(v) = mgmt.broker.vhost(&vhost) else { continue };
        if !caller.sees_vhost(mgmt, &vhost) {
            continue;
        }
        for q in v.queues() {
            let s = q.stats();
            ready += s.ready;
            held += unacked.get(&super::topology::queue_key(&q)).copied().unwrap_or(0);
            deliver_get += s.deliver + s.deliver_no_ack + s.get + s.get_no_ack;
            redeliver += s.redeliver;
            queues += 1;
        }
    }
    (ready, held, deliver_get, redeliver, queues)
}

/// `GET /api/overview`.
pub async fn overview(State(mgmt): State<Mgmt>, caller: Caller, params: Params) -> ApiResult {
    let b = &mgmt.broker;
    let m = &b.metrics;
    let (ready, unacked, deliver_get, redeliver, queues) = queue_totals(&mgmt, &caller);
    let counters = [m.messages_received.get(), m.messages_confirmed.get(), m.messages_routed.get(), deliver_get, redeliver, m.messages_acknowledged.get(), m.messages_unroutable_returned.get(), m.messages_unroutable_dropped.get()];
    let stats = mgmt.rates.message_stats(
        "overview",
        &["publish", "confirm", "route", "deliver_get", "redeliver", "ack", "return_unroutable", "drop_unroutable"],
        &counters,
    );
    let queued = mgmt.rates.rates("overview-queued", &[ready + unacked, ready, unacked]);
    let visible: Vec<String> = b.vhost_names().into_iter().filter(|v| caller.sees_vhost(&mgmt, v)).collect();
    let exchanges: usize = visible.iter().filter_map(|v| b.vhost(v)).map(|v| v.exchanges().len()).sum();
    let connections: Vec<_> = b.connections.list().into_iter().filter(|c| caller.is_monitor() || c.opened.user == caller.user.name).collect();
    let channels: usize = connections.iter().map(|c| c.channel_count()).sum();
    let consumers: usize = super::connections::all_consumers(&mgmt, &caller).len();
    let bound = b.listeners.get().map(Vec::as_slice).unwrap_or_default();
    let listeners: Vec<Value> =
        bound.iter().map(|l| json!({"node": node_name(), "protocol": l.protocol, "ip_address": l.addr.ip().to_string(), "port": l.addr.port()})).collect();
    let management_port = bound.iter().find(|l| l.protocol == "http").map_or(b.config.management_port, |l| l.addr.port());
    one(
        &params,
        json!({
            "management_version": RABBITMQ_VERSION,
            "rates_mode": "basic",
            "exchange_types": exchange_types(),
            "product_version": env!("CARGO_PKG_VERSION"),
            "product_name": "Warren",
            "rabbitmq_version": RABBITMQ_VERSION,
            "cluster_name": node_name(),
            "erlang_version": "none (Rust)",
            "erlang_full_version": "none (Rust)",
            "disable_stats": false,
            "enable_queue_totals": true,
            "message_stats": stats,
            "queue_totals": {
                "messages": ready + unacked,
                "messages_details": {"rate": queued[0]},
                "messages_ready": ready,
                "messages_ready_details": {"rate": queued[1]},
                "messages_unacknowledged": unacked,
                "messages_unacknowledged_details": {"rate": queued[2]},
            },
            "object_totals": {
                "channels": channels,
                "connections": connections.len(),
                "consumers": consumers,
                "exchanges": exchanges,
                "queues": queues,
            },
            "statistics_db_event_queue": 0,
            "node": node_name(),
            "listeners": listeners,
            "contexts": [{"node": node_name(), "description": "RabbitMQ Management", "path": "/", "port": management_port.to_string()}],
        }),
    )
}

fn exchange_types() -> Value {
    let types = [
        (ExchangeKind::Direct, "AMQP direct exchange, as per the AMQP specification"),
        (ExchangeKind::Fanout, "AMQP fanout exchange, as per the AMQP specification"),
        (ExchangeKind::Headers, "AMQP headers exchange, as per the AMQP specification"),
        (ExchangeKind::Topic, "AMQP topic exchange, as per the AMQP specification"),
    ];
    Value::Array(types.iter().map(|(k, d)| json!({"name": k.as_str(), "description": d, "enabled": true})).collect())
}

/// `GET /api/whoami`.
pub async fn whoami(caller: Caller) -> ApiResult {
    json(json!({"name": caller.user.name, "tags": caller.user.tags}))
}

/// `GET /api/cluster-name`.
pub async fn cluster_name(_caller: Caller) -> ApiResult {
    json(json!({"name": node_name()}))
}

fn node_json(mgmt: &Mgmt) -> Value {
    let b = &mgmt.broker;
    let memory = b.memory.used() as u64;
    json!({
        "name": node_name(),
        "type": "disc",
        "running": true,
        "being_drained": false,
        "os_pid": std::process::id().to_string(),
        "uptime": b.started.elapsed().as_millis() as u64,
        "mem_used": memory,
        "mem_limit": b.memory.watermark() as u64,
        "mem_alarm": b.memory.alarm(),
        "disk_free_limit": b.config.disk_free_limit_mb.saturating_mul(1_000_000),
        "disk_free_alarm": b.disk.alarm(),
        "disk_free": b.disk.free(),
        "fd_total": 1_048_576,
        "sockets_total": b.config.max_connections,
        "proc_total": 1_048_576,
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "rates_mode": "basic",
        "exchange_types": exchange_types(),
        "applications": [{"name": "warren", "description": "Warren AMQP 0-9-1 broker", "version": env!("CARGO_PKG_VERSION")}],
        "partitions": [],
        "cluster_links": [],
    })
}

/// `GET /api/nodes` (monitoring).
pub async fn nodes(State(mgmt): State<Mgmt>, caller: Caller, params: Params) -> ApiResult {
    caller.need_monitor()?;
    super::list(&params, vec![node_json(&mgmt)])
}

/// `GET /api/nodes/{node}` (monitoring).
pub async fn node(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>, params: Params) -> ApiResult {
    caller.need_monitor()?;
    if name != node_name() {
        return Err(ApiError::not_found());
    }
    one(&params, node_json(&mgmt))
}

/// `GET /api/extensions`: the UI's plugins (none).
pub async fn extensions(_caller: Caller) -> ApiResult {
    json(json!([]))
}

/// `GET /api/health/checks/alarms` and `local-alarms`: 200 `{"status":"ok"}`, or 503
/// with the alarms in effect.
pub async fn alarms(State(mgmt): State<Mgmt>, _caller: Caller) -> ApiResult {
    let b = &mgmt.broker;
    let mut alarms = Vec::new();
    if b.memory.alarm() {
        alarms.push(json!({"node": node_name(), "resource": "memory"}));
    }
    if b.disk.alarm() {
        alarms.push(json!({"node": node_name(), "resource": "disk"}));
    }
    if alarms.is_empty() {
        return json(json!({"status": "ok"}));
    }
    let body = json!({"status": "failed", "reason": "resource alarm(s) in effect in the cluster", "alarms": alarms});
    Ok((axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response())
}

/// `GET /api/aliveness-test/{vhost}`: declares `aliveness-test` in the vhost, publishes
/// a message to it and gets it back, as RabbitMQ does.
pub async fn aliveness(State(mgmt): State<Mgmt>, caller: Caller, Path(vhost): Path<String>) -> ApiResult {
    let v = caller.need_vhost(&mgmt, &vhost)?;
    let ok = super::topology::round_trip(&v, "aliveness-test", b"test_message");
    if ok {
        json(json!({"status": "ok"}))
    } else {
        Err(ApiError { status: axum::http::StatusCode::SERVICE_UNAVAILABLE, error: "failed", reason: "the test message did not come back".into() })
    }
}

use axum::response::IntoResponse;
