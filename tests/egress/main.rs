//! Egress end to end: the app calls the egress listener in plain HTTP and the target (the echo
//! backend) receives `Bearer <token from the mock>`. One test binary, one module per concern:
//! the request path, the managed-identity sources, the Entra credentials, the token cache's
//! timing (paused time), `tollgate token`, and tokens from `tollgate dev`'s identity endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod cache;
mod capture;
mod cli;
mod dev;
mod entra;
mod obo;
mod path;
mod sources;

use std::collections::HashMap;
use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use support::imds::Mock;
use support::{Backend, Reply, TestProxy};

/// A started tollgate with its egress address.
struct Running {
    proxy: TestProxy,
    egress: SocketAddr,
}

impl Running {
    /// GET `path` on the egress listener with extra headers.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        support::get(self.egress, path, headers).await
    }

    /// `tollgate_egress_token_requests_total{credential, result}`.
    fn token_requests(&self, credential: &str, result: &str) -> u64 {
        self.proxy
            .metrics()
            .egress_token_requests
            .with_label_values(&[credential, result])
            .get()
    }

    /// `tollgate_egress_requests_total{target, status}`.
    fn requests(&self, target: &str, status: &str) -> u64 {
        self.proxy
            .metrics()
            .egress_requests
            .with_label_values(&[target, status])
            .get()
    }

    /// `tollgate_egress_token_expiry_timestamp_seconds{credential, scope}`.
    fn expiry(&self, credential: &str, scope: &str) -> f64 {
        self.proxy
            .metrics()
            .egress_token_expiry
            .with_label_values(&[credential, scope])
            .get()
    }
}

/// Starts tollgate on `toml` with `env` as its whole environment.
async fn start(toml: &str, env: &[(&str, &str)]) -> Running {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // Before any tollgate code logs: see `capture`.
    capture::init();
    let proxy = TestProxy::start_with_env(toml, env).await;
    let egress = proxy.app.egress_addr.expect("an egress listener");
    Running { proxy, egress }
}

/// A whole configuration: `[server]` in front of `backend` (TestProxy needs an inbound
/// listener), then `[egress]` on port 0 followed by `egress` (targets, then credentials).
fn config(backend: &Backend, egress: &str) -> String {
    format!(
        "{}[[routes]]\nprefix = \"/\"\nallow_anonymous = true\n[egress]\nlisten = \"127.0.0.1:0\"\n{egress}",
        support::server(backend.addr(), "")
    )
}

/// One `[[egress.targets]]` to the echo backend.
fn target(name: &str, backend: &Backend, credential: &str, scope: &str) -> String {
    format!(
        "[[egress.targets]]\nname = \"{name}\"\nurl = \"http://{}\"\ncredential = \"{credential}\"\nscope = \"{scope}\"\n",
        backend.addr()
    )
}

/// A `managed_identity` credential pointed at the IMDS mock, plus `extra` lines.
fn imds_credential(name: &str, imds: &Mock, extra: &str) -> String {
    format!(
        "[credentials.{name}]\nkind = \"managed_identity\"\nendpoint = \"{}\"\n{extra}\n",
        imds.url()
    )
}

/// The usual setup: one target `api` (scope `api://orders/.default`) with credential `mi`.
fn simple(backend: &Backend, credential: &str) -> String {
    config(
        backend,
        &format!(
            "{}{credential}",
            target("api", backend, "mi", "api://orders/.default")
        ),
    )
}

/// The `exp` claim of a JWT, read without verification.
fn exp_of(token: &str) -> u64 {
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["exp"].as_u64().expect("exp")
}

/// Asserts a 503 `token_unavailable` whose description contains every one of `needles`.
fn assert_no_token(reply: &Reply, needles: &[&str]) {
    assert_eq!(reply.status, 503, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["error"], "token_unavailable", "{body}");
    let description = body["error_description"].as_str().unwrap();
    for needle in needles {
        assert!(
            description.contains(needle),
            "{needle:?} not in {description:?}"
        );
    }
}
