//! Fault injection for testing clients (`/api/warren/…`, administrator): close, reset,
//! freeze or slow down a connection chosen by its name or its client's `connection_name`;
//! raise and clear the memory alarm; nack a queue's next publishes; cancel a queue's
//! consumers; simulate a restart. Each acts through the same paths a real fault takes
//! (a close method, a dropped socket, an alarm, a failed store write, a deleted queue's
//! cancel, a shutdown), so the client sees exactly what it would see then.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::json;

use super::{body, json, lenient, no_content, ApiResult};
use crate::broker::connections::Command;
use crate::management::auth::{ApiError, Caller};
use crate::management::Mgmt;

/// The longest freeze, delay or simulated downtime accepted (an hour).
const MAX_FAULT: Duration = Duration::from_secs(3600);

/// Sends `command` to every connection called `name`; 404 when there is none.
fn to_connections(mgmt: &Mgmt, name: &str, command: &Command) -> ApiResult {
    let targets = mgmt.broker.connections.named(name);
    if targets.is_empty() {
        return Err(ApiError::not_found());
    }
    for c in &targets {
        if matches!(command, Command::Reset) && c.opened.tls {
            return Err(ApiError::bad_request("reset is not available on TLS connections (use close or freeze)"));
        }
    }
    let sent = targets.iter().filter(|c| c.send(command.clone())).count();
    tracing::info!(connection = name, ?command, connections = sent, "fault injected");
    json(json!({ "connections": sent }))
}

/// The body of a close.
#[derive(Debug, Deserialize)]
struct CloseBody {
    #[serde(default, deserialize_with = "lenient::number")]
    code: Option<u64>,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/warren/connections/{name}/close` `{"code": 320, "reason": "…"}`.
pub async fn close(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>, raw: Bytes) -> ApiResult {
    caller.need_admin()?;
    let b: CloseBody = body(&raw, &[])?;
    let code = match b.code {
        None => warren_protocol::ReplyCode::ConnectionForced,
        Some(n) => u16::try_from(n).ok().and_then(warren_protocol::ReplyCode::from_code).ok_or_else(|| ApiError::bad_request(format!("code {n} is not an AMQP reply code")))?,
    };
    let text = b.reason.unwrap_or_else(|| "Closed via Warren fault injection".to_owned());
    to_connections(&mgmt, &name, &Command::Close { code, text })
}

/// `POST /api/warren/connections/{name}/reset`: TCP reset, no close method.
pub async fn reset(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>) -> ApiResult {
    caller.need_admin()?;
    to_connections(&mgmt, &name, &Command::Reset)
}

/// The body of a freeze.
#[derive(Debug, Deserialize)]
struct FreezeBody {
    #[serde(deserialize_with = "lenient::number")]
    seconds: Option<u64>,
}

/// `POST /api/warren/connections/{name}/freeze` `{"seconds": 30}`: nothing read or
/// written (heartbeats included) for that long, the socket open.
pub async fn freeze(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>, raw: Bytes) -> ApiResult {
    caller.need_admin()?;
    let b: FreezeBody = body(&raw, &["seconds"])?;
    let d = duration(b.seconds.ok_or_else(|| ApiError::bad_request("[{key_missing,seconds}]"))?.saturating_mul(1000))?;
    to_connections(&mgmt, &name, &Command::Freeze(d))
}

/// The body of a delay.
#[derive(Debug, Deserialize)]
struct DelayBody {
    #[serde(deserialize_with = "lenient::number")]
    ms: Option<u64>,
}

/// `POST /api/warren/connections/{name}/delay` `{"ms": 200}` (0 clears it).
pub async fn delay(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>, raw: Bytes) -> ApiResult {
    caller.need_admin()?;
    let b: DelayBody = body(&raw, &["ms"])?;
    let d = duration(b.ms.ok_or_else(|| ApiError::bad_request("[{key_missing,ms}]"))?)?;
    to_connections(&mgmt, &name, &Command::Delay(d))
}

fn duration(ms: u64) -> Result<Duration, ApiError> {
    let d = Duration::from_millis(ms);
    if d > MAX_FAULT {
        return Err(ApiError::bad_request(format!("at most {} seconds", MAX_FAULT.as_secs())));
    }
    Ok(d)
}

/// `PUT /api/warren/alarms/memory`: raises the memory alarm (publishers get
/// connection.blocked).
pub async fn raise_memory_alarm(State(mgmt): State<Mgmt>, caller: Caller) -> ApiResult {
    caller.need_admin()?;
    mgmt.broker.memory.force(true);
    no_content()
}

/// `DELETE /api/warren/alarms/memory`: clears the alarm raised on demand.
pub async fn clear_memory_alarm(State(mgmt): State<Mgmt>, caller: Caller) -> ApiResult {
    caller.need_admin()?;
    mgmt.broker.memory.force(false);
    no_content()
}

/// The body of nack-publishes.
#[derive(Debug, Deserialize)]
struct CountBody {
    #[serde(deserialize_with = "lenient::number")]
    count: Option<u64>,
}

/// `POST /api/warren/queues/{vhost}/{name}/nack-publishes` `{"count": 3}`: the next
/// publishes routed to the queue are refused (basic.nack to confirm-mode publishers).
pub async fn nack_publishes(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>, raw: Bytes) -> ApiResult {
    caller.need_admin()?;
    let b: CountBody = body(&raw, &["count"])?;
    let count = b.count.ok_or_else(|| ApiError::bad_request("[{key_missing,count}]"))?;
    let q = mgmt.broker.vhost(&vhost).and_then(|v| v.queue(&name)).ok_or_else(ApiError::not_found)?;
    q.refuse_publishes(count);
    no_content()
}

/// `POST /api/warren/queues/{vhost}/{name}/cancel-consumers`: basic.cancel to each.
pub async fn cancel_consumers(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>) -> ApiResult {
    caller.need_admin()?;
    let v = mgmt.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    let q = v.queue(&name).ok_or_else(ApiError::not_found)?;
    json(json!({ "cancelled": v.cancel_consumers(&q) }))
}

/// The body of a simulated restart.
#[derive(Debug, Deserialize)]
struct RestartBody {
    #[serde(default, deserialize_with = "lenient::number")]
    seconds: Option<u64>,
}

/// `POST /api/warren/restart` `{"seconds": 5}`: every connection closed with 320 and new
/// ones refused for that long (the management API stays up).
pub async fn restart(State(mgmt): State<Mgmt>, caller: Caller, raw: Bytes) -> ApiResult {
    caller.need_admin()?;
    let b: RestartBody = body(&raw, &[])?;
    let down = duration(b.seconds.unwrap_or(5).saturating_mul(1000))?;
    json(json!({ "closed": mgmt.broker.simulate_restart(down) }))
}
