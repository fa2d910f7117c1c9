//! The HTTP side of `warren ctl`: requests to the management API with basic auth, and
//! what can go wrong with them (with the exit code each maps to, as rabbitmqctl's).

use std::time::Duration;

use base64::Engine;
use serde_json::Value;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The broker could not be reached.
    #[error("cannot reach the broker at {url}: {reason}")]
    Unreachable {
        /// The API's base URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The API refused the request.
    #[error("{reason}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// RabbitMQ's `reason` (or the status line).
        reason: String,
    },
    /// The command's input was unusable (a file, a JSON argument).
    #[error("{0}")]
    Input(String),
}

impl CtlError {
    /// rabbitmqctl's exit codes: 69 unavailable, 65 bad input data, 70 refused.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Unreachable { .. } => 69,
            CtlError::Input(_) => 65,
            CtlError::Refused { .. } => 70,
        }
    }
}

/// A management API endpoint with credentials.
#[derive(Debug)]
pub struct Client {
    base: String,
    authorization: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the API at `url` (`http://host:port`), logging in as `user`.
    pub fn new(url: &str, user: &str, password: &str, timeout: Duration) -> Client {
        let config = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Client { base: url.trim_end_matches('/').to_owned(), authorization: format!("Basic {token}"), agent: ureq::Agent::new_with_config(config) }
    }

    /// `GET path` as JSON.
    pub fn get(&self, path: &str) -> Result<Value, CtlError> {
        self.call("GET", path, None, &[])
    }

    /// `PUT path` with a JSON body.
    pub fn put(&self, path: &str, body: &Value) -> Result<(), CtlError> {
        self.call("PUT", path, Some(body), &[]).map(drop)
    }

    /// `POST path` with a JSON body; the answer's JSON (null when empty).
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, CtlError> {
        self.call("POST", path, Some(body), &[])
    }

    /// `DELETE path` with extra headers.
    pub fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Result<(), CtlError> {
        self.call("DELETE", path, None, headers).map(drop)
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>, headers: &[(&str, &str)]) -> Result<Value, CtlError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |e: ureq::Error| CtlError::Unreachable { url: self.base.clone(), reason: e.to_string() };
        let mut request = ureq::http::Request::builder().method(method).uri(&url).header("authorization", &self.authorization);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let result = match body {
            Some(b) => {
                let request = request.header("content-type", "application/json").body(b.to_string()).map_err(|e| CtlError::Input(e.to_string()))?;
                self.agent.run(request)
            }
            None => {
                let request = request.body(()).map_err(|e| CtlError::Input(e.to_string()))?;
                self.agent.run(request)
            }
        };
        let mut response = result.map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(unreachable)?;
        if status == 404 {
            return Err(CtlError::Refused { status, reason: format!("not found: {method} {path}") });
        }
        if status >= 400 {
            let reason = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("reason").map(|r| r.as_str().map_or_else(|| r.to_string(), str::to_owned)))
                .unwrap_or_else(|| match status {
                    401 => "access refused: wrong user or password, or the user lacks the tag this needs".to_owned(),
                    _ => format!("HTTP {status}"),
                });
            return Err(CtlError::Refused { status, reason });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| CtlError::Refused { status, reason: format!("the broker's answer is not JSON: {e}") })
    }
}

/// A path segment, percent-encoded (`/` is `%2F`, as the API expects vhost names).
pub fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
