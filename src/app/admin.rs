//! The admin listener: `/healthz` (the process is up), `/readyz` (configuration loaded,
//! listeners bound, every issuer has keys, not draining) and `/metrics` (Prometheus text).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::state::Live;
use crate::proxy::{Body, full};
use crate::telemetry::metrics::Metrics;

/// Process-wide readiness facts that are not part of a snapshot.
#[derive(Debug, Default)]
pub struct Health {
    /// Every listener is bound.
    pub bound: AtomicBool,
    /// Shutdown has begun: stop sending traffic here.
    pub draining: AtomicBool,
}

/// What the admin endpoints read.
pub struct Admin {
    /// The current snapshot.
    pub live: Live,
    /// Metric families.
    pub metrics: Arc<Metrics>,
    /// Listener and drain state.
    pub health: Arc<Health>,
}

impl Admin {
    /// Why the process is not ready, or `None` when it is.
    pub fn not_ready(&self) -> Option<String> {
        if self.health.draining.load(Ordering::Acquire) {
            return Some("shutting down".into());
        }
        if !self.health.bound.load(Ordering::Acquire) {
            return Some("listeners are not bound yet".into());
        }
        let snapshot = self.live.load();
        let waiting = snapshot
            .inbound
            .as_ref()
            .map(|i| i.issuers.not_ready())
            .unwrap_or_default();
        if !waiting.is_empty() {
            return Some(format!(
                "no signing keys yet for issuer(s) {}",
                waiting.join(", ")
            ));
        }
        None
    }
}

/// Serves one admin request.
pub async fn serve(req: Request<Incoming>, admin: &Admin) -> Result<Response<Body>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        ));
    }
    let response = match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let not_ready = admin.not_ready();
            admin.metrics.ready.set(i64::from(not_ready.is_none()));
            match not_ready {
                None => text(StatusCode::OK, "ready\n".into()),
                Some(reason) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {reason}\n"),
                ),
            }
        }
        "/metrics" => {
            admin
                .metrics
                .ready
                .set(i64::from(admin.not_ready().is_none()));
            let mut r = text(StatusCode::OK, admin.metrics.encode());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz or /metrics\n".into(),
        ),
    };
    if req.method() == Method::HEAD {
        return Ok(crate::proxy::for_head(response));
    }
    Ok(response)
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
