//! Upgrade passthrough (WebSocket): once both sides have switched protocols, bytes are copied
//! both ways until either side closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Splices the client's and the upstream's upgraded connections on a tracked task; they are
/// closed when the shutdown grace period ends (`abort`).
pub fn splice(
    client: OnUpgrade,
    upstream: OnUpgrade,
    tracker: &TaskTracker,
    abort: CancellationToken,
) {
    tracker.spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        tokio::select! {
            result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(error) = result {
                    tracing::debug!(%error, "upgraded connection closed with an error");
                }
            }
            () = abort.cancelled() => {}
        }
    });
}
