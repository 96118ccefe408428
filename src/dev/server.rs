//! The `tollgate dev` listener: one loopback port serving the local issuer (discovery and
//! JWKS) and the identity endpoint (IMDS and App Service paths), until stopped.
//!
//! The decisions live in [`super::identity`] and [`super::issuer`]; this file accepts
//! connections, hands each request to them, and logs one line per identity request (never
//! the token, never the `X-IDENTITY-HEADER` value).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::identity::IdentityEndpoint;
use super::issuer::LocalIssuer;

/// A running development server. Stops when dropped.
pub struct DevServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: CancellationToken,
    tracker: TaskTracker,
}

/// What the server answers from.
struct Surfaces {
    issuer: Arc<LocalIssuer>,
    identity: Arc<IdentityEndpoint>,
    base: String,
}

impl DevServer {
    /// Binds `addr` (port 0 for any free port) and serves `issuer` and `identity` there.
    pub async fn start(
        addr: SocketAddr,
        issuer: Arc<LocalIssuer>,
        identity: Arc<IdentityEndpoint>,
    ) -> std::io::Result<DevServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let surfaces = Arc::new(Surfaces {
            issuer,
            identity,
            base: format!("http://{addr}"),
        });
        let (stop, tracker) = (CancellationToken::new(), TaskTracker::new());
        tracker.spawn(accept(listener, surfaces, stop.clone(), tracker.clone()));
        Ok(DevServer {
            addr,
            stop,
            tracker,
        })
    }

    /// `http://127.0.0.1:port`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, closes open connections and waits for their tasks.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    surfaces: Arc<Surfaces>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            () = stop.cancelled() => return,
        };
        let (surfaces, stop) = (surfaces.clone(), stop.clone());
        tracker.spawn(async move {
            let service = service_fn(move |req| {
                let response = respond(&surfaces, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// Identity paths first, then the issuer's documents, else 404.
fn respond(surfaces: &Surfaces, req: &Request<Incoming>) -> Response<Full<Bytes>> {
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
    match surfaces.issuer.respond(req.uri().path(), &surfaces.base) {
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
