//! The test backdoor (`/api/warren/…`, administrator): peek at a queue's messages without
//! taking them, wait (long-poll) until a queue holds a number of messages or sees a number
//! of acks, and empty a vhost in one call between tests.

use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use base64::Engine;
use serde_json::{json, Value};

use super::topology::{properties_json, queue_key, unacked_by_queue};
use super::{json, ApiResult, Params};
use crate::broker::queue::Queue;
use crate::management::auth::{ApiError, Caller};
use crate::management::Mgmt;

/// Messages one peek shows at most.
const MAX_PEEK: usize = 1000;

/// The longest wait.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(10);

fn queue(mgmt: &Mgmt, vhost: &str, name: &str) -> Result<std::sync::Arc<Queue>, ApiError> {
    mgmt.broker.vhost(vhost).and_then(|v| v.queue(name)).ok_or_else(ApiError::not_found)
}

fn number(params: &Params, key: &str) -> Result<Option<u64>, ApiError> {
    params.get(key).map(|v| v.parse::<u64>().map_err(|_| ApiError::bad_request(format!("{key} must be a non-negative integer")))).transpose()
}

/// `GET /api/warren/queues/{vhost}/{name}/messages[?count=10]`: the first ready messages
/// in delivery order, left in place (not redelivered, not counted as delivered).
pub async fn peek(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>, params: Params) -> ApiResult {
    caller.need_admin()?;
    let q = queue(&mgmt, &vhost, &name)?;
    let count = usize::try_from(number(&params, "count")?.unwrap_or(10)).unwrap_or(MAX_PEEK).min(MAX_PEEK);
    let items: Vec<Value> = q
        .peek(count)
        .iter()
        .map(|(m, meta)| {
            let body = m.body();
            let (payload, encoding) = match std::str::from_utf8(body) {
                Ok(text) => (text.to_owned(), "string"),
                Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), "base64"),
            };
            json!({
                "payload": payload,
                "payload_encoding": encoding,
                "payload_bytes": body.len(),
                "redelivered": meta.redelivered,
                "exchange": m.exchange,
                "routing_key": m.routing_key,
                "properties": properties_json(m.properties()),
            })
        })
        .collect();
    json(Value::Array(items))
}

/// What a wait reports.
fn state(mgmt: &Mgmt, q: &std::sync::Arc<Queue>) -> (u64, u64, u64) {
    let s = q.stats();
    let unacked = unacked_by_queue(mgmt).get(&queue_key(q)).copied().unwrap_or(0);
    (s.ready, unacked, s.ack)
}

/// `GET /api/warren/queues/{vhost}/{name}/wait?messages=N | empty=true | acks=N
/// [&timeout=ms]`: answers once the queue holds N messages (ready and unacknowledged), is
/// empty, or saw N more acks than when the request came; 408 at the timeout (10 s by
/// default, 60 s at most).
pub async fn wait(State(mgmt): State<Mgmt>, caller: Caller, Path((vhost, name)): Path<(String, String)>, params: Params) -> ApiResult {
    caller.need_admin()?;
    let q = queue(&mgmt, &vhost, &name)?;
    let timeout = Duration::from_millis(number(&params, "timeout")?.unwrap_or(10_000)).min(MAX_WAIT);
    let (_, _, acks_before) = state(&mgmt, &q);
    let messages = if params.get("empty").is_some_and(|v| v == "true") { Some(0) } else { number(&params, "messages")? };
    let acks = number(&params, "acks")?;
    if messages.is_none() && acks.is_none() {
        return Err(ApiError::bad_request("wait for what: messages=N, empty=true or acks=N"));
    }
    let deadline = Instant::now() + timeout;
    loop {
        let (ready, unacked, acked) = state(&mgmt, &q);
        let met = messages.is_none_or(|n| ready + unacked == n) && acks.is_none_or(|n| acked.saturating_sub(acks_before) >= n);
        let report = json!({"messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked, "acks": acked.saturating_sub(acks_before)});
        if met {
            return json(report);
        }
        if Instant::now() >= deadline {
            return Err(ApiError { status: axum::http::StatusCode::REQUEST_TIMEOUT, error: "timeout", reason: format!("not reached in {} ms: {report}", timeout.as_millis()).into() });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `DELETE /api/warren/vhosts/{vhost}/contents`: deletes the vhost's queues, exchanges
/// (but the predeclared ones), bindings and policies; keeps the vhost and its users'
/// permissions.
pub async fn reset_vhost(State(mgmt): State<Mgmt>, caller: Caller, Path(vhost): Path<String>) -> ApiResult {
    caller.need_admin()?;
    let (queues, exchanges, policies) = mgmt.broker.reset_vhost(&vhost)?;
    json(json!({"queues": queues, "exchanges": exchanges, "policies": policies}))
}
