//! The admin listener: `/healthz` (the process runs) and `/readyz` (first config published and
//! not shutting down).

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use std::sync::Arc;

use proxy::Health;
use proxy::metrics::Metrics;

pub struct AdminApp {
    health: Health,
    metrics: Arc<Metrics>,
}

impl AdminApp {
    pub fn new(health: Health, metrics: Arc<Metrics>) -> Self {
        Self { health, metrics }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    let body = body.as_bytes().to_vec();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/metrics" => {
                self.metrics
                    .sync_log_lines_dropped(crate::cli::log_lines_dropped());
                let body = self.metrics.encode();
                Response::builder()
                    .status(StatusCode::OK)
                    .header(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )
                    .header(http::header::CONTENT_LENGTH, body.len())
                    .body(body)
                    .unwrap_or_default()
            }
            "/readyz" if self.health.is_ready() => text(StatusCode::OK, "ready\n"),
            "/readyz" if self.health.is_draining() => {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            }
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "waiting for first config load\n",
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}
