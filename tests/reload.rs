//! Hot reload (file change, ConfigMap symlink swap, explicit reload) and graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::{Backend, TestProxy, get, server};
use tollgate::app::reload::Reloaded;

fn anonymous_route(backend: &Backend, prefix: &str) -> String {
    format!(
        "{}[[routes]]\nprefix = \"{prefix}\"\nallow_anonymous = true\n",
        server(backend.addr(), "")
    )
}

/// How long a test watches for reloads that should not happen: ten times the watcher's
/// debounce, and the file is read after every reload.
const SETTLE: Duration = Duration::from_millis(1_500);

/// `(success, error)` reload counts once `SETTLE` has passed with nothing else written.
async fn settled(proxy: &TestProxy) -> (u64, u64) {
    tokio::time::sleep(SETTLE).await;
    (proxy.reloads("success"), proxy.reloads("error"))
}

#[tokio::test]
async fn a_valid_file_change_takes_effect() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous_route(&backend, "/a")).await;
    assert_eq!(proxy.get("/a").await.status, 200);
    assert_eq!(proxy.get("/b").await.status, 403);

    proxy.write_config(&anonymous_route(&backend, "/b"));
    support::eventually("the new routes apply", || async {
        proxy.get("/b").await.status == 200
    })
    .await;
    assert_eq!(proxy.get("/a").await.status, 403);
    assert_eq!(settled(&proxy).await, (1, 0), "one reload for one change");
}

#[tokio::test]
async fn a_plain_file_reloads_once_per_change_whatever_is_written() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous_route(&backend, "/a")).await;

    // Written in place (same inode): applied once.
    proxy.write_config_in_place(&anonymous_route(&backend, "/b"));
    support::eventually("the edited file applies", || async {
        proxy.get("/b").await.status == 200
    })
    .await;
    assert_eq!(settled(&proxy).await, (1, 0));

    // A touch changes no byte: no reload.
    proxy.touch_config();
    assert_eq!(settled(&proxy).await, (1, 0));

    // An invalid edit is refused once, not on every event in the directory.
    proxy.write_config_in_place("[[routes]]\nprefix = \"/c\"\nmethods = [\"GTE\"]\n");
    support::eventually("the bad file is counted", || async {
        proxy.reloads("error") == 1
    })
    .await;
    assert_eq!(settled(&proxy).await, (1, 1));
    assert_eq!(
        proxy.get("/b").await.status,
        200,
        "the running configuration stays"
    );

    // A touch of the invalid file does not report it again; SIGHUP (a forced reload) does.
    proxy.touch_config();
    assert_eq!(settled(&proxy).await, (1, 1));
    assert!(proxy.app.reload().is_err());
    assert_eq!(proxy.reloads("error"), 2);
}

#[tokio::test]
async fn an_invalid_file_is_refused_counted_and_changes_nothing() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous_route(&backend, "/a")).await;
    proxy.write_config("[server]\nupstream = \"http://127.0.0.1:1\"\n[[routes]]\nprefix = \"/b\"\nmethods = [\"GTE\"]\n");
    support::eventually("the bad file is counted", || async {
        proxy.reloads("error") == 1
    })
    .await;
    assert_eq!(
        proxy.get("/a").await.status,
        200,
        "the running configuration stays"
    );
    assert_eq!(proxy.get("/b").await.status, 403);
    assert_eq!(
        settled(&proxy).await,
        (0, 1),
        "refused once, not on every wake-up"
    );

    assert_eq!(proxy.metrics().config_last_reload_successful.get(), 0);

    // Fixing the file is a change like any other.
    proxy.write_config(&anonymous_route(&backend, "/b"));
    support::eventually("the fixed file applies", || async {
        proxy.get("/b").await.status == 200
    })
    .await;
    assert_eq!(settled(&proxy).await, (1, 1));
    assert_eq!(proxy.metrics().config_last_reload_successful.get(), 1);
}

#[tokio::test]
async fn a_kubernetes_configmap_symlink_swap_is_seen() {
    use std::os::unix::fs::symlink;
    let backend = Backend::start().await;
    // The layout the kubelet writes: tollgate.toml -> ..data/tollgate.toml, ..data -> ..v1
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("..v1")).unwrap();
    std::fs::write(
        root.join("..v1/tollgate.toml"),
        anonymous_route(&backend, "/a"),
    )
    .unwrap();
    symlink("..v1", root.join("..data")).unwrap();
    symlink("..data/tollgate.toml", root.join("tollgate.toml")).unwrap();
    let path = root.join("tollgate.toml");
    let proxy = TestProxy::start_at(dir, path, HashMap::new()).await;
    assert_eq!(proxy.get("/a").await.status, 200);

    // The update: a new directory, a temporary link, renamed over ..data in one step.
    let root = proxy.dir();
    std::fs::create_dir(root.join("..v2")).unwrap();
    std::fs::write(
        root.join("..v2/tollgate.toml"),
        anonymous_route(&backend, "/swapped"),
    )
    .unwrap();
    symlink("..v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..v1")).unwrap();
    support::eventually("the swapped file applies", || async {
        proxy.get("/swapped").await.status == 200
    })
    .await;
    assert_eq!(proxy.get("/a").await.status, 403);
    assert_eq!(settled(&proxy).await, (1, 0));
}

#[tokio::test]
async fn explicit_reload_like_sighup() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous_route(&backend, "/a")).await;
    // Forced: counted even though the file is unchanged.
    assert_eq!(proxy.app.reload().unwrap(), Reloaded::Applied);
    assert_eq!(proxy.reloads("success"), 1);
    std::fs::write(&proxy.config_path, "not = [toml").unwrap();
    assert!(proxy.app.reload().is_err());
    assert_eq!(proxy.reloads("error"), 1);
    assert_eq!(proxy.get("/a").await.status, 200);
}

#[tokio::test]
async fn in_flight_requests_finish_on_the_snapshot_they_started_with() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous_route(&backend, "/a")).await;
    let slow = tokio::spawn(get(proxy.addr, "/a/slow", &[("x-echo-delay-ms", "700")]));
    support::eventually("the slow request reached the backend", || async {
        backend.count() == 1
    })
    .await;
    proxy.write_config(&anonymous_route(&backend, "/b"));
    support::eventually("the reload applied", || async {
        proxy.reloads("success") == 1
    })
    .await;
    assert_eq!(proxy.get("/a").await.status, 403);
    assert_eq!(
        slow.await.unwrap().status,
        200,
        "the request admitted under the old routes completes"
    );
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous_route(&backend, "/")).await;
    let addr = proxy.addr;
    let slow = tokio::spawn(get(addr, "/slow", &[("x-echo-delay-ms", "500")]));
    support::eventually("the slow request reached the backend", || async {
        backend.count() == 1
    })
    .await;
    let drained = proxy.app.shutdown_within(Duration::from_secs(5)).await;
    assert!(drained, "everything finished within the grace period");
    assert_eq!(slow.await.unwrap().status, 200);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn shutdown_gives_up_after_the_grace_period() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous_route(&backend, "/")).await;
    let stuck = tokio::spawn(get(proxy.addr, "/stuck", &[("x-echo-delay-ms", "30000")]));
    support::eventually("the request reached the backend", || async {
        backend.count() == 1
    })
    .await;
    let drained = proxy.app.shutdown_within(Duration::from_millis(200)).await;
    assert!(!drained);
    // The client sees the connection close rather than an answer.
    assert!(stuck.await.is_err(), "the stuck request was cut off");
}

#[tokio::test]
async fn shutdown_closes_connections_that_never_sent_a_byte_at_once() {
    use tokio::io::AsyncReadExt;
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous_route(&backend, "/")).await;
    let mut client = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    support::eventually("the connection was accepted", || async {
        proxy.open_connections("inbound") == 1
    })
    .await;
    let drained = proxy.app.shutdown_within(Duration::from_secs(2)).await;
    assert!(drained, "the silent connection held the drain");
    let mut buf = [0u8; 64];
    assert_eq!(
        client.read(&mut buf).await.unwrap(),
        0,
        "closed by the proxy"
    );
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&anonymous_route(&backend, "/")).await;
    // A keep-alive client that made one request and stays connected, idle.
    let mut client = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    client
        .write_all(b"GET /idle HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = client.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Nothing in flight: the drain must not wait for the idle connection (the grace period
    // is long enough only for a prompt close).
    let drained = proxy.app.shutdown_within(Duration::from_secs(2)).await;
    assert!(drained, "the idle connection held the drain");
    assert_eq!(
        client.read(&mut buf).await.unwrap(),
        0,
        "closed by the proxy"
    );
}
