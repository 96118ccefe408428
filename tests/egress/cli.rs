//! `tollgate token`: in process for the report, and once as a binary for argv and exit codes.

use std::process::Command;

use super::*;

fn write_config(dir: &std::path::Path, imds: &Mock) -> std::path::PathBuf {
    let text = format!(
        "[egress]\nlisten = \"127.0.0.1:0\"\n[[egress.targets]]\nname = \"api\"\nurl = \"https://orders.example.com\"\ncredential = \"mi\"\nscope = \"api://orders/.default\"\n{}",
        imds_credential("mi", imds, "")
    );
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn token_report_shows_expiry_and_claims_but_not_the_token() {
    let imds = Mock::imds().start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &imds);
    let env = |_: &str| None;
    let out = tollgate::cli::token::acquire(&path, "api", &env, false)
        .await
        .unwrap();
    let token = imds.last_token();
    assert!(!out.contains(&token), "{out}");
    for expected in [
        "target      api -> https://orders.example.com/",
        "managed identity (system-assigned) from IMDS",
        "scope       api://orders/.default",
        "expires     ",
        "(in 0h 59m",
        "signature is NOT verified",
        "aud       api://orders",
        "appid     a0a0a0a0-0000-0000-0000-000000000001",
        "oid       0b0b0b0b-0000-0000-0000-000000000002",
        "tid       11111111-1111-1111-1111-111111111111",
        "roles     Orders.Read, Orders.Write",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }

    let raw = tollgate::cli::token::acquire(&path, "api", &env, true)
        .await
        .unwrap();
    assert!(
        raw.contains(&format!("token       {}", imds.last_token())),
        "{raw}"
    );

    let err = tollgate::cli::token::acquire(&path, "nope", &env, false)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no egress target \"nope\" (targets: api)");
}

#[tokio::test]
async fn token_reports_the_identity_error() {
    let imds = Mock::imds()
        .reply(support::imds::Reply::IdentityNotFound)
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &imds);
    let env = |_: &str| None;
    let err = tollgate::cli::token::acquire(&path, "api", &env, false)
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("credential \"mi\" could not get a token"),
        "{text}"
    );
    assert!(
        text.contains("IMDS answered HTTP 400: invalid_request: Identity not found"),
        "{text}"
    );
}

#[tokio::test]
async fn token_binary_prints_the_report_and_exits_0_or_1() {
    let imds = Mock::imds().start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &imds);
    let run = |target: &'static str| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_tollgate"))
                .args(["token", "--config"])
                .arg(&path)
                .args(["--target", target])
                .output()
                .unwrap()
        })
    };
    let ok = run("api").await.unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("roles     Orders.Read, Orders.Write"),
        "{stdout}"
    );
    assert!(!stdout.contains(&imds.last_token()));

    let bad = run("missing").await.unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no egress target \"missing\""));
}
