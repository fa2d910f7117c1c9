//! Who is calling the HTTP API: HTTP basic credentials checked against the broker's users
//! (the guest user only from loopback, as over AMQP), and RabbitMQ's tag rules: any API
//! use needs `management` (or a tag that implies it), users and vhosts need
//! `administrator`, nodes and everyone's connections need `monitoring`, policies need
//! `policymaker`. Also the API's error answers, with RabbitMQ's `error` and `reason`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;
use tracing::warn;

use super::listener::Peer;
use super::Mgmt;
use crate::access::{AccessError, Grant, User};

/// An answer other than success, as RabbitMQ's management API words it.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// RabbitMQ's `error` word.
    pub error: &'static str,
    /// What went wrong: text, or RabbitMQ's `[word, detail]` array for a value of the
    /// wrong type (`["not_boolean", "yes"]`).
    pub reason: serde_json::Value,
}

impl ApiError {
    /// 404 Object Not Found.
    pub fn not_found() -> Self {
        ApiError { status: StatusCode::NOT_FOUND, error: "Object Not Found", reason: "Not Found".into() }
    }

    /// 400 with a reason.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, error: "bad_request", reason: serde_json::Value::String(reason.into()) }
    }

    /// 400 with RabbitMQ's array reason: `["not_int", "delivery_mode"]`.
    pub fn bad_value(word: &str, detail: &str) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, error: "bad_request", reason: json!([word, detail]) }
    }

    /// 401 for a user who may not do this (RabbitMQ answers a missing tag or permission
    /// with 401 too, spelled `not_authorised`).
    pub fn not_authorised(reason: impl Into<String>) -> Self {
        ApiError { status: StatusCode::UNAUTHORIZED, error: "not_authorised", reason: serde_json::Value::String(reason.into()) }
    }

    /// 401 for no credentials: an empty body and the challenge.
    fn no_credentials() -> Self {
        ApiError { status: StatusCode::UNAUTHORIZED, error: "", reason: serde_json::Value::Null }
    }

    /// 401 for credentials that do not log in (spelled `not_authorized`, as RabbitMQ).
    fn login_failed() -> Self {
        ApiError { status: StatusCode::UNAUTHORIZED, error: "not_authorized", reason: "Login failed".into() }
    }

    /// 405 for a method a route does not take (empty body, as RabbitMQ).
    pub fn method_not_allowed() -> Self {
        ApiError { status: StatusCode::METHOD_NOT_ALLOWED, error: "", reason: serde_json::Value::Null }
    }

    /// 401 for a vhost the caller has no permissions in.
    pub fn vhost_refused() -> Self {
        ApiError::not_authorised("User not authorised to access virtual host")
    }

    /// 500 for a failure of the broker itself.
    pub fn internal(reason: impl Into<String>) -> Self {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, error: "internal_error", reason: serde_json::Value::String(reason.into()) }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::NoUser(_) | AccessError::NoVhost(_) => ApiError::not_found(),
            AccessError::Store(e) => ApiError::internal(e.to_string()),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

impl From<warren_protocol::AmqpError> for ApiError {
    /// An AMQP refusal, as RabbitMQ's API reports one: 404 `not_found` with the AMQP text
    /// for NOT_FOUND, 401 `Access refused.` for ACCESS_REFUSED, 400 with the AMQP text
    /// otherwise (an inequivalent redeclare is 400 here, not 406).
    fn from(e: warren_protocol::AmqpError) -> Self {
        use warren_protocol::ReplyCode;
        match e.code {
            ReplyCode::NotFound => ApiError { status: StatusCode::NOT_FOUND, error: "not_found", reason: e.text.to_string().into() },
            ReplyCode::AccessRefused => ApiError::not_authorised("Access refused."),
            _ => ApiError::bad_request(e.text.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let challenge = self.error.is_empty() || self.error == "not_authorized";
        let mut response =
            if self.error.is_empty() { self.status.into_response() } else { (self.status, axum::Json(json!({ "error": self.error, "reason": self.reason }))).into_response() };
        if self.status == StatusCode::UNAUTHORIZED && challenge {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""));
        }
        response
    }
}

/// An authenticated user with at least one management tag.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user.
    pub user: Arc<User>,
}

/// The tags that open the management API at all.
const MANAGEMENT_TAGS: [&str; 4] = ["management", "policymaker", "monitoring", "administrator"];

impl Caller {
    /// Has the `administrator` tag.
    pub fn is_admin(&self) -> bool {
        self.user.has_tag("administrator")
    }

    /// Sees every vhost's objects and every connection (`monitoring` or `administrator`).
    pub fn is_monitor(&self) -> bool {
        self.user.has_tag("monitoring") || self.is_admin()
    }

    /// May manage policies (`policymaker` or `administrator`).
    pub fn is_policymaker(&self) -> bool {
        self.user.has_tag("policymaker") || self.is_admin()
    }

    /// 401 unless an administrator.
    pub fn need_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() { Ok(()) } else { Err(ApiError::not_authorised("Not administrator user")) }
    }

    /// 401 unless a monitor.
    pub fn need_monitor(&self) -> Result<(), ApiError> {
        if self.is_monitor() { Ok(()) } else { Err(ApiError::not_authorised("Not monitor user")) }
    }

    /// 401 unless a policymaker (RabbitMQ's words for a policy change by anyone else).
    pub fn need_policymaker(&self) -> Result<(), ApiError> {
        if self.is_policymaker() { Ok(()) } else { Err(ApiError::not_authorised("User not authorised to access object")) }
    }

    /// Whether the caller sees `vhost`'s queues, exchanges, bindings and policies:
    /// administrators see all; others (monitors too) need a permission entry there.
    pub fn sees_vhost(&self, mgmt: &Mgmt, vhost: &str) -> bool {
        self.is_admin() || mgmt.broker.access.permission(&self.user.name, vhost).is_some()
    }

    /// Whether `vhost` is in the caller's list of vhosts: monitors list all.
    pub fn lists_vhost(&self, mgmt: &Mgmt, vhost: &str) -> bool {
        self.is_monitor() || mgmt.broker.access.permission(&self.user.name, vhost).is_some()
    }

    /// The caller's rights in `vhost` for changes made through the API: 404 if the vhost
    /// does not exist, 401 without a permission entry there.
    pub fn grant(&self, mgmt: &Mgmt, vhost: &str) -> Result<Grant, ApiError> {
        if mgmt.broker.vhost(vhost).is_none() {
            return Err(ApiError { status: StatusCode::NOT_FOUND, error: "not_found", reason: "vhost_not_found".into() });
        }
        mgmt.broker.access.grant(&self.user, vhost).ok_or_else(ApiError::vhost_refused)
    }

    /// 404 for a vhost that does not exist, 401 for one the caller does not see.
    pub fn need_vhost(&self, mgmt: &Mgmt, vhost: &str) -> Result<Arc<crate::broker::vhost::VHost>, ApiError> {
        let v = mgmt.broker.vhost(vhost).ok_or_else(ApiError::not_found)?;
        if !self.sees_vhost(mgmt, vhost) {
            return Err(ApiError::vhost_refused());
        }
        Ok(v)
    }
}

impl FromRequestParts<Mgmt> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, mgmt: &Mgmt) -> Result<Self, ApiError> {
        let peer = parts.extensions.get::<Peer>().map(|p| p.0);
        let Some(header) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::no_credentials());
        };
        let Some((username, password)) = basic_credentials(header) else {
            return Err(ApiError::login_failed());
        };
        let loopback = peer.is_some_and(|p| p.ip().is_loopback());
        let user = mgmt.broker.authenticate(&username, &password, loopback).map_err(|why| {
            warn!(user = %username, peer = ?peer, reason = why, "HTTP API login refused");
            ApiError::login_failed()
        })?;
        if !MANAGEMENT_TAGS.iter().any(|t| user.has_tag(t)) {
            warn!(user = %username, "HTTP API login refused: the user has no management tag");
            return Err(ApiError::not_authorised("Not management user"));
        }
        Ok(Caller { user })
    }
}

/// The user and password of an `Authorization: Basic` header.
fn basic_credentials(header: &HeaderValue) -> Option<(String, String)> {
    let value = header.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}
