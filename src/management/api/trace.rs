//! The protocol trace through the API (administrator), for a connection chosen by its
//! name or its client's `connection_name`: start, stop, read what was kept, or follow it
//! live as JSON lines (`application/x-ndjson`, streamed until the connection ends).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use futures_util::stream;

use super::{json, no_content, ApiResult, Params};
use crate::broker::connections::{Command, ConnectionInfo};
use crate::connection::trace::Trace;
use crate::management::auth::{ApiError, Caller};
use crate::management::Mgmt;

fn targets(mgmt: &Mgmt, name: &str) -> Result<Vec<Arc<ConnectionInfo>>, ApiError> {
    let found = mgmt.broker.connections.named(name);
    if found.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(found)
}

/// `POST /api/warren/connections/{name}/trace`: starts a fresh trace.
pub async fn start(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>) -> ApiResult {
    caller.need_admin()?;
    let found = targets(&mgmt, &name)?;
    for c in &found {
        let trace = Arc::new(Trace::default());
        *c.trace.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&trace));
        c.send(Command::Trace(Some(trace)));
    }
    json(serde_json::json!({ "connections": found.len() }))
}

/// `DELETE /api/warren/connections/{name}/trace`: stops recording (what was kept stays
/// readable).
pub async fn stop(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>) -> ApiResult {
    caller.need_admin()?;
    for c in targets(&mgmt, &name)? {
        c.send(Command::Trace(None));
    }
    no_content()
}

/// `GET /api/warren/connections/{name}/trace[?follow=true]`: the kept lines, oldest
/// first; with `follow`, then every new line as it happens.
pub async fn read(State(mgmt): State<Mgmt>, caller: Caller, Path(name): Path<String>, params: Params) -> ApiResult {
    caller.need_admin()?;
    let found = targets(&mgmt, &name)?;
    let Some(trace) = found.first().and_then(|c| c.trace.lock().unwrap_or_else(|e| e.into_inner()).clone()) else {
        return Err(ApiError::bad_request("no trace was started on this connection"));
    };
    let follow = params.get("follow").is_some_and(|v| v == "true");
    let mut kept = trace.lines().join("\n");
    if !kept.is_empty() {
        kept.push('\n');
    }
    if !follow {
        return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], kept).into_response());
    }
    let live = trace.follow();
    drop(trace);
    // The kept lines, then each new one; the stream ends with the connection.
    let head = stream::once(async move { Ok::<_, std::convert::Infallible>(kept) });
    let tail = stream::unfold(live, |mut live| async move {
        match live.recv().await {
            Ok(line) => Some((Ok(format!("{line}\n")), live)),
            // A follower too slow for the connection is told how many lines it missed.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => Some((Ok(format!("{{\"missed\":{missed}}}\n")), live)),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    });
    use futures_util::StreamExt;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(head.chain(tail))).into_response())
}
