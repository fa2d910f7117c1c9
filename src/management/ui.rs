//! The web UI: three static files compiled into the binary (no network, no build step),
//! served at `/` of the management port. The page itself talks only to the API.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::Mgmt;

const INDEX: &str = include_str!("ui/index.html");
const APP: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

/// The UI's routes.
pub fn routes() -> Router<Mgmt> {
    Router::new()
        .route("/", get(|| asset(INDEX, "text/html; charset=utf-8")))
        .route("/index.html", get(|| asset(INDEX, "text/html; charset=utf-8")))
        .route("/app.js", get(|| asset(APP, "text/javascript; charset=utf-8")))
        .route("/style.css", get(|| asset(STYLE, "text/css; charset=utf-8")))
}

async fn asset(body: &'static str, kind: &'static str) -> axum::response::Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}
