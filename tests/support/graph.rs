//! A Microsoft Graph stand-in for groups overage: `tollgate dev`'s own ([`GraphMock`]: paging
//! with `@odata.nextLink`, 429 with `Retry-After`, a page failing mid-way, outages, 403), on
//! a development server whose managed-identity endpoint gives tollgate its app-only Graph
//! token. Knobs and counters are the mock's.
#![allow(dead_code)]

use std::sync::Arc;

use tollgate::dev::graph::{Faults, GraphMock, group_id, overage_user};
use tollgate::dev::server::DevServer;

/// The Graph stand-in and the identity endpoint tollgate's `[credentials.graph]` uses.
pub struct GraphRig {
    /// The development server serving both.
    pub dev: DevServer,
}

impl GraphRig {
    /// Starts on a free loopback port.
    pub async fn start() -> GraphRig {
        let dev = DevServer::builder()
            .graph(Arc::new(GraphMock::new()))
            .start()
            .await
            .expect("the dev server starts");
        GraphRig { dev }
    }

    /// The mock: directory, faults, counters.
    pub fn graph(&self) -> &Arc<GraphMock> {
        self.dev.graph()
    }

    /// `http://127.0.0.1:port`: the `graph_endpoint`.
    pub fn url(&self) -> String {
        self.dev.url()
    }

    /// Lines for an `[[issuers]]` block: resolve overage with this Graph, as `graph`.
    pub fn issuer_lines(&self) -> String {
        format!(
            "groups_overage = \"graph\"\ngraph_credential = \"graph\"\ngraph_endpoint = \"{}\"\n",
            self.url()
        )
    }

    /// The `[credentials.graph]` section: a managed identity at the dev identity endpoint.
    pub fn credential(&self) -> String {
        format!(
            "[credentials.graph]\nkind = \"managed_identity\"\nendpoint = \"{}\"\n",
            self.url()
        )
    }

    /// Sets the faults.
    pub fn faults(&self, faults: Faults) {
        self.graph().set_faults(faults);
    }
}

/// The `oid` of a user in `n` groups, and group number `i`'s id.
pub fn user(n: u32) -> String {
    overage_user(n)
}

/// Group number `i`'s id.
pub fn group(i: u32) -> String {
    group_id(i)
}
