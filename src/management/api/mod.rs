//! RabbitMQ's management HTTP API: the route table and what its handlers share. JSON field
//! names, status codes and error words are RabbitMQ's (measured on RabbitMQ 3.10, see
//! `tests/fixtures/rabbitmq-3.10-management-api.md`): PUT answers 201 when it creates and
//! 204 when it changes, DELETE 204, unknown objects 404.

mod access;
mod backdoor;
mod connections;
mod definitions;
mod faults;
mod overview;
mod topology;
mod trace;

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;

use super::auth::ApiError;
use super::query::ListQuery;
use super::Mgmt;
pub(crate) use overview::RABBITMQ_VERSION;
pub(crate) use topology::{queue_key, unacked_by_queue};

/// A handler's answer.
type ApiResult = Result<Response, ApiError>;

/// The list parameters of a request.
type Params = Query<HashMap<String, String>>;

/// Every API route.
pub fn routes() -> Router<Mgmt> {
    Router::new()
        .route("/api/overview", get(overview::overview))
        .route("/api/whoami", get(overview::whoami))
        .route("/api/cluster-name", get(overview::cluster_name))
        .route("/api/nodes", get(overview::nodes))
        .route("/api/nodes/{node}", get(overview::node))
        .route("/api/extensions", get(overview::extensions))
        .route("/api/health/checks/alarms", get(overview::alarms))
        .route("/api/health/checks/local-alarms", get(overview::alarms))
        .route("/api/aliveness-test/{vhost}", get(overview::aliveness))
        .route("/api/vhosts", get(access::vhosts))
        .route("/api/vhosts/{vhost}", get(access::vhost).put(access::put_vhost).delete(access::delete_vhost))
        .route("/api/vhosts/{vhost}/permissions", get(access::vhost_permissions))
        .route("/api/vhosts/{vhost}/topic-permissions", get(access::vhost_topic_permissions))
        .route("/api/vhosts/{vhost}/connections", get(connections::vhost_connections))
        .route("/api/vhosts/{vhost}/channels", get(connections::vhost_channels))
        .route("/api/users", get(access::users))
        .route("/api/users/without-permissions", get(access::users_without_permissions))
        .route("/api/users/{user}", get(access::user).put(access::put_user).delete(access::delete_user))
        .route("/api/users/{user}/permissions", get(access::user_permissions))
        .route("/api/users/{user}/topic-permissions", get(access::user_topic_permissions))
        .route("/api/permissions", get(access::permissions))
        .route("/api/permissions/{vhost}/{user}", get(access::permission).put(access::put_permission).delete(access::delete_permission))
        .route("/api/topic-permissions", get(access::topic_permissions))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(access::topic_permission).put(access::put_topic_permission).delete(access::delete_topic_permission),
        )
        .route("/api/topic-permissions/{vhost}/{user}/{exchange}", axum::routing::delete(access::delete_exchange_topic_permission))
        .route("/api/policies", get(access::policies))
        .route("/api/policies/{vhost}", get(access::vhost_policies))
        .route("/api/policies/{vhost}/{name}", get(access::policy).put(access::put_policy).delete(access::delete_policy))
        .route("/api/exchanges", get(topology::exchanges))
        .route("/api/exchanges/{vhost}", get(topology::vhost_exchanges))
        .route("/api/exchanges/{vhost}/{name}", get(topology::exchange).put(topology::put_exchange).delete(topology::delete_exchange))
        .route("/api/exchanges/{vhost}/{name}/publish", post(topology::publish))
        .route("/api/exchanges/{vhost}/{name}/bindings/source", get(topology::exchange_bindings_source))
        .route("/api/exchanges/{vhost}/{name}/bindings/destination", get(topology::exchange_bindings_destination))
        .route("/api/queues", get(topology::queues))
        .route("/api/queues/{vhost}", get(topology::vhost_queues))
        .route("/api/queues/{vhost}/{name}", get(topology::queue).put(topology::put_queue).delete(topology::delete_queue))
        .route("/api/queues/{vhost}/{name}/contents", axum::routing::delete(topology::purge_queue))
        .route("/api/queues/{vhost}/{name}/get", post(topology::get_messages))
        .route("/api/queues/{vhost}/{name}/bindings", get(topology::queue_bindings))
        .route("/api/bindings", get(topology::bindings))
        .route("/api/bindings/{vhost}", get(topology::vhost_bindings))
        .route("/api/bindings/{vhost}/e/{source}/{kind}/{destination}", get(topology::bindings_between).post(topology::add_binding))
        .route("/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}", get(topology::binding).delete(topology::delete_binding))
        .route("/api/connections", get(connections::connections))
        .route("/api/connections/{name}", get(connections::connection).delete(connections::close_connection))
        .route("/api/connections/{name}/channels", get(connections::connection_channels))
        .route("/api/channels", get(connections::channels))
        .route("/api/channels/{name}", get(connections::channel))
        .route("/api/consumers", get(connections::consumers))
        .route("/api/consumers/{vhost}", get(connections::vhost_consumers))
        .route("/api/definitions", get(definitions::export).post(definitions::import))
        .route("/api/definitions/{vhost}", get(definitions::export_vhost).post(definitions::import_vhost))
        .route("/api/warren/connections/{name}/close", post(faults::close))
        .route("/api/warren/connections/{name}/reset", post(faults::reset))
        .route("/api/warren/connections/{name}/freeze", post(faults::freeze))
        .route("/api/warren/connections/{name}/delay", post(faults::delay))
        .route("/api/warren/alarms/memory", axum::routing::put(faults::raise_memory_alarm).delete(faults::clear_memory_alarm))
        .route("/api/warren/queues/{vhost}/{name}/nack-publishes", post(faults::nack_publishes))
        .route("/api/warren/queues/{vhost}/{name}/cancel-consumers", post(faults::cancel_consumers))
        .route("/api/warren/restart", post(faults::restart))
        .route("/api/warren/queues/{vhost}/{name}/messages", get(backdoor::peek))
        .route("/api/warren/queues/{vhost}/{name}/wait", get(backdoor::wait))
        .route("/api/warren/vhosts/{vhost}/contents", axum::routing::delete(backdoor::reset_vhost))
        .route("/api/warren/connections/{name}/trace", get(trace::read).post(trace::start).delete(trace::stop))
        .route("/api/{*rest}", axum::routing::any(|| async { ApiError::not_found() }))
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
}

/// A JSON answer.
fn json(v: Value) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

/// A list, with the request's sorting, paging and columns (the lists RabbitMQ pages:
/// queues, exchanges, vhosts, connections and channels).
fn paged(params: &Params, items: Vec<Value>) -> ApiResult {
    json(ListQuery::parse(params)?.apply(items)?)
}

/// A list, with the request's sorting and columns; paging parameters are ignored, as
/// RabbitMQ ignores them on these lists (users, bindings, policies, permissions...).
fn list(params: &Params, items: Vec<Value>) -> ApiResult {
    let plain: HashMap<String, String> = params.iter().filter(|(k, _)| !matches!(k.as_str(), "page" | "page_size" | "name" | "use_regex")).map(|(k, v)| (k.clone(), v.clone())).collect();
    json(ListQuery::parse(&plain)?.apply(items)?)
}

/// One object, with the request's columns.
fn one(params: &Params, item: Value) -> ApiResult {
    json(ListQuery::parse(params)?.project(&item))
}

/// 201 when something was created, 204 when it existed.
fn created_or_updated(created: bool) -> ApiResult {
    Ok(if created { StatusCode::CREATED } else { StatusCode::NO_CONTENT }.into_response())
}

/// 204.
fn no_content() -> ApiResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A request body as JSON (whatever its content type, an empty one as `{}`): 400
/// `not_json` when it is not a JSON object, `[{key_missing,write},{key_missing,read}]` as
/// RabbitMQ words the `required` keys that are absent (all of them, in that order), and
/// RabbitMQ's `["not_boolean","yes"]` arrays (or serde's words) for a wrong type.
fn body<T: serde::de::DeserializeOwned>(raw: &[u8], required: &[&str]) -> Result<T, ApiError> {
    let value: Value = if raw.iter().all(u8::is_ascii_whitespace) {
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_slice(raw).map_err(|_| ApiError::bad_request("not_json"))?
    };
    let Value::Object(fields) = &value else {
        return Err(ApiError::bad_request("not_json"));
    };
    let missing: Vec<String> = required.iter().filter(|k| !fields.contains_key(**k)).map(|k| format!("{{key_missing,{k}}}")).collect();
    if !missing.is_empty() {
        return Err(ApiError::bad_request(format!("[{}]", missing.join(","))));
    }
    serde_json::from_value(value).map_err(|e| {
        let text = e.to_string();
        if let Some(key) = text.strip_prefix("missing field `").and_then(|rest| rest.split('`').next()) {
            return ApiError::bad_request(format!("[{{key_missing,{key}}}]"));
        }
        // The lenient fields' errors are RabbitMQ's `[word, detail]` arrays.
        match serde_json::from_str::<Vec<String>>(&text) {
            Ok(pair) if pair.len() == 2 => ApiError::bad_value(&pair[0], &pair[1]),
            _ => ApiError::bad_request(text),
        }
    })
}

/// Fields that RabbitMQ's API takes as JSON values or as strings (rabbitmqadmin sends
/// `"durable": "true"` and `"count": "1"`).
mod lenient {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// RabbitMQ's `["not_boolean","yes"]`, as an error text `body` turns back into the array.
    pub fn refusal<E: Error>(word: &str, value: &Value) -> E {
        let detail = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        E::custom(serde_json::json!([word, detail]))
    }

    /// A boolean, or the string `"true"` / `"false"`.
    pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(Some(b)),
            Value::String(s) if s == "true" => Ok(Some(true)),
            Value::String(s) if s == "false" => Ok(Some(false)),
            Value::Null => Ok(None),
            other => Err(refusal("not_boolean", &other)),
        }
    }

    /// A non-negative integer, or a string of one.
    pub fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n.as_u64().map(Some).ok_or_else(|| refusal("not_int", &Value::Number(n))),
            Value::String(s) => match s.trim().parse() {
                Ok(n) => Ok(Some(n)),
                Err(_) => Err(refusal("not_int", &Value::String(s))),
            },
            Value::Null => Ok(None),
            other => Err(refusal("not_int", &other)),
        }
    }
}

/// The node's name, as RabbitMQ's `rabbit@host`.
pub(crate) fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "localhost".to_owned());
    format!("warren@{host}")
}
