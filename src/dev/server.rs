//! The `tollgate dev` listener: one loopback port serving the local issuer (discovery and
//! JWKS) and the identity endpoint (IMDS and App Service paths), until stopped.
//!
//! The decisions live in [`super::identity`] and [`super::issuer`]; this file accepts
//! connections, hands each request to them, and logs one line per identity request (never
//! the token, never the `X-IDENTITY-HEADER` value).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::http::LoopbackServer;

use super::identity::IdentityEndpoint;
use super::issuer::LocalIssuer;

/// A running development server. Stops when dropped.
pub struct DevServer {
    /// Where it listens.
    pub addr: SocketAddr,
    server: LoopbackServer,
}

/// What the server answers from.
struct Surfaces {
    issuer: Arc<LocalIssuer>,
    identity: Arc<IdentityEndpoint>,
}

impl DevServer {
    /// Binds `addr` (port 0 for any free port) and serves `issuer` and `identity` there.
    pub async fn start(
        addr: SocketAddr,
        issuer: Arc<LocalIssuer>,
        identity: Arc<IdentityEndpoint>,
    ) -> std::io::Result<DevServer> {
        // The base URL is known once bound; the handler reads it from here.
        let base = Arc::new(OnceLock::new());
        let surfaces = Arc::new(Surfaces { issuer, identity });
        let handler = {
            let (surfaces, base) = (surfaces.clone(), base.clone());
            move |req: Request<Incoming>| {
                let response = respond(&surfaces, base.get().map_or("", String::as_str), &req);
                async move { response }
            }
        };
        let server = LoopbackServer::start(addr, handler).await?;
        let _ = base.set(format!("http://{}", server.addr));
        Ok(DevServer {
            addr: server.addr,
            server,
        })
    }

    /// `http://127.0.0.1:port`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, closes open connections and waits for their tasks.
    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// Identity paths first, then the issuer's documents, else 404.
fn respond(surfaces: &Surfaces, base: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let identity =
        surfaces
            .identity
            .respond(req.method(), req.uri(), req.headers(), SystemTime::now());
    if let Some((protocol, answer)) = identity {
        if answer.status.is_success() {
            tracing::info!(
                protocol = protocol.as_str(),
                status = answer.status.as_u16(),
                "{}",
                answer.summary
            );
        } else {
            tracing::warn!(
                protocol = protocol.as_str(),
                status = answer.status.as_u16(),
                "{}",
                answer.summary
            );
        }
        return json_response(answer.status, &answer.body);
    }
    match surfaces.issuer.respond(req.uri().path(), base) {
        Some(document) => json_response(StatusCode::OK, &document),
        None => json_response(StatusCode::NOT_FOUND, &not_found()),
    }
}

fn not_found() -> Value {
    json!({"error": "not_found", "error_description": "tollgate dev serves /.well-known/openid-configuration, /keys, /metadata/identity/oauth2/token and /msi/token"})
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}
