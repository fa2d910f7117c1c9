//! Definitions through the API (administrator): `GET` exports in the format of
//! `--definitions` and RabbitMQ's export, `POST` imports it (checked whole, then applied).
//! The per-vhost forms leave the `vhost` keys out, as RabbitMQ does.

use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Map, Value};

use super::overview::RABBITMQ_VERSION;
use super::{json, no_content, ApiResult};
use crate::definitions::Definitions;
use crate::management::auth::{ApiError, Caller};
use crate::management::Mgmt;

/// The sections that carry a `vhost` key.
const VHOST_SECTIONS: [&str; 5] = ["queues", "exchanges", "bindings", "policies", "parameters"];

fn with_versions(defs: &Definitions) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(mut out) = serde_json::to_value(defs).map_err(|e| ApiError::internal(e.to_string()))? else {
        return Err(ApiError::internal("definitions did not serialise to an object"));
    };
    out.insert("rabbit_version".into(), Value::from(RABBITMQ_VERSION));
    out.insert("rabbitmq_version".into(), Value::from(RABBITMQ_VERSION));
    out.insert("product_name".into(), Value::from("Warren"));
    out.insert("product_version".into(), Value::from(env!("CARGO_PKG_VERSION")));
    Ok(out)
}

/// `GET /api/definitions`.
pub async fn export(State(mgmt): State<Mgmt>, caller: Caller) -> ApiResult {
    caller.need_admin()?;
    json(Value::Object(with_versions(&mgmt.broker.export())?))
}

/// `GET /api/definitions/{vhost}`: that vhost's policies, queues, exchanges and bindings.
pub async fn export_vhost(State(mgmt): State<Mgmt>, caller: Caller, Path(vhost): Path<String>) -> ApiResult {
    caller.need_admin()?;
    if mgmt.broker.vhost(&vhost).is_none() {
        return Err(ApiError::bad_request("vhost_not_found"));
    }
    let all = with_versions(&mgmt.broker.export())?;
    let mut out = Map::new();
    for (key, value) in all {
        match (key.as_str(), value) {
            (section, Value::Array(items)) if VHOST_SECTIONS.contains(&section) => {
                let mine = items
                    .into_iter()
                    .filter(|i| i.get("vhost").and_then(Value::as_str) == Some(vhost.as_str()))
                    .map(|mut i| {
                        if let Value::Object(o) = &mut i {
                            o.remove("vhost");
                        }
                        i
                    })
                    .collect();
                out.insert(key, Value::Array(mine));
            }
            ("rabbit_version" | "rabbitmq_version" | "product_name" | "product_version", v) => {
                out.insert(key, v);
            }
            _ => {}
        }
    }
    json(Value::Object(out))
}

fn parse(raw: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(ApiError::bad_request("failed_to_parse_json")),
    }
}

fn import_value(mgmt: &Mgmt, value: Value) -> ApiResult {
    let defs: Definitions = serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("definitions: {e}")))?;
    mgmt.broker.import(&defs).map_err(|e| ApiError::bad_request(e.to_string()))?;
    tracing::info!(users = defs.users.len(), vhosts = defs.vhosts.len(), queues = defs.queues.len(), exchanges = defs.exchanges.len(), "definitions imported through the management API");
    no_content()
}

/// `POST /api/definitions`: 204 once imported; 400 with the reason, nothing changed,
/// when any part is refused.
pub async fn import(State(mgmt): State<Mgmt>, caller: Caller, raw: Bytes) -> ApiResult {
    caller.need_admin()?;
    import_value(&mgmt, parse(&raw)?)
}

/// `POST /api/definitions/{vhost}`: objects without `vhost` keys go to this vhost.
pub async fn import_vhost(State(mgmt): State<Mgmt>, caller: Caller, Path(vhost): Path<String>, raw: Bytes) -> ApiResult {
    caller.need_admin()?;
    if mgmt.broker.vhost(&vhost).is_none() {
        return Err(ApiError { status: axum::http::StatusCode::NOT_FOUND, error: "not_found", reason: "vhost_not_found".into() });
    }
    let mut value = parse(&raw)?;
    for section in VHOST_SECTIONS {
        if let Some(Value::Array(items)) = value.get_mut(section) {
            for item in items.iter_mut() {
                if let Value::Object(o) = item {
                    o.insert("vhost".into(), Value::from(vhost.clone()));
                }
            }
        }
    }
    // Users, vhosts and permissions are broker-wide: not part of a vhost's definitions.
    if let Value::Object(o) = &mut value {
        for key in ["users", "vhosts", "permissions", "topic_permissions", "global_parameters"] {
            o.remove(key);
        }
    }
    import_value(&mgmt, value)
}
