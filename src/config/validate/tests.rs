use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::config::{
    Algorithm, ClientSecretSettings, ConfigError, CredentialKind, KeySource, LogFormat,
    ManagedIdentitySettings, Mode, PathMatch, SecretSource, parse,
};

const MINIMAL: &str = r#"
[server]
upstream = "http://127.0.0.1:3000"

[[routes]]
prefix = "/"
allow_anonymous = true
"#;

fn load(text: &str) -> Result<crate::config::Loaded, ConfigError> {
    let env = HashMap::from([("TENANT_ID", "t-1"), ("PORT", "8081")]);
    parse(text, Path::new("/etc/tollgate/tollgate.toml"), &|k| {
        env.get(k).map(|v| v.to_string())
    })
}

/// The error lines for `text`, as `tollgate check` prints them.
fn errors(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(ConfigError::Invalid(list)) => list.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn assert_error(text: &str, want: &str) {
    let all = errors(text);
    assert!(
        all.iter().any(|e| e.contains(want)),
        "no error containing {want:?} in {all:#?}"
    );
}

#[test]
fn minimal_file_takes_defaults() {
    let c = load(MINIMAL).unwrap().config;
    let s = c.server.unwrap();
    assert_eq!(s.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(s.upstream.to_string(), "http://127.0.0.1:3000/");
    assert!(s.preserve_host);
    assert_eq!(s.request_timeout, Duration::from_secs(30));
    assert_eq!(s.max_header_bytes, 65536);
    assert_eq!(s.token_cache_entries, 10000);
    assert_eq!(s.shutdown_grace, Duration::from_secs(10));
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(c.identity.easy_auth_headers && c.identity.forward_token);
    assert_eq!(c.routes[0].name, "/");
    assert!(c.egress.is_none());
}

#[test]
fn full_example_parses_in_full() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/full.toml")).unwrap();
    let loaded = load(&text).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    let issuer = &c.issuers[0];
    assert_eq!(issuer.issuer, "https://login.microsoftonline.com/t-1/v2.0");
    assert!(
        matches!(&issuer.keys, KeySource::Discovery(u) if u.as_str().contains("/t-1/v2.0/.well-known"))
    );
    assert_eq!(
        issuer.audiences,
        ["api://orders", "22222222-2222-2222-2222-222222222222"]
    );
    assert_eq!(issuer.algorithms, [Algorithm::RS256]);
    assert_eq!(c.identity.claims.len(), 2);
    assert_eq!(c.routes.len(), 4);
    assert_eq!(c.routes[1].methods.as_ref().unwrap().len(), 3);
    assert_eq!(c.routes[2].mode, Mode::Audit);
    assert_eq!(
        c.routes[3].require.claims,
        [("azpacr".to_string(), vec!["2".to_string()])]
    );
    assert_eq!(c.routes[3].mode, Mode::Enforce);
    let egress = c.egress.unwrap();
    assert_eq!(
        egress.targets[0].url.to_string(),
        "https://integration.example.com/"
    );
    assert!(matches!(
        c.credentials["mi"].kind,
        CredentialKind::ManagedIdentity(ManagedIdentitySettings {
            user_assigned: Some(_),
            endpoint: None,
        })
    ));
    assert_eq!(c.credentials.len(), 8);
}

#[test]
fn env_expansion_and_relative_paths() {
    let c = load(
        r#"
[server]
listen = "127.0.0.1:${PORT}"
upstream = "https://backend:${MISSING:-8443}"
ca_file = "ca.pem"
tls = { cert = "/abs/tls.crt", key = "tls.key" }
[[routes]]
prefix = "/"
allow_anonymous = true
"#,
    )
    .unwrap()
    .config;
    let s = c.server.unwrap();
    assert_eq!(s.listen.port(), 8081);
    assert_eq!(s.upstream.to_string(), "https://backend:8443/");
    assert_eq!(s.ca_file.unwrap(), Path::new("/etc/tollgate/ca.pem"));
    let tls = s.tls.unwrap();
    assert_eq!(tls.cert, Path::new("/abs/tls.crt"));
    assert_eq!(tls.key, Path::new("/etc/tollgate/tls.key"));
}

#[test]
fn errors_name_file_line_column_and_key() {
    let text = "[server]\nupstream = \"http://127.0.0.1:3000\"\nlisten = \"nowhere\"\n[[routes]]\nprefix = \"/\"\nallow_anonymous = true\n";
    assert_eq!(
        errors(text),
        [
            "/etc/tollgate/tollgate.toml:3:10: server.listen: invalid listen address \"nowhere\": expected IP:PORT, such as \"0.0.0.0:8080\""
        ]
    );
}

#[test]
fn every_error_is_collected() {
    let text = r#"
[server]
upstream = "ftp://x"
bogus = 1
[[routes]]
prefix = "/a"
exact = "/b"
[[routes]]
prefix = "/"
methods = ["GTE"]
[[issuers]]
name = "e"
issuer = "https://x/${UNSET}"
jwks_uri = "http://keys.example.com/jwks"
audiences = ["a"]
algorithms = ["HS256"]
"#;
    let all = errors(text);
    // A section that fails to parse does not also count as missing.
    assert!(
        !all.iter()
            .any(|e| e.contains("no [server]") || e.contains("nothing to run")),
        "{all:#?}"
    );
    for want in [
        "4:1: server: unknown field `bogus`",
        "6:10: routes[0]: give prefix or exact, not both",
        "10:12: routes[1].methods: unknown HTTP method \"GTE\"",
        "13:21: issuers.1.issuer: environment variable UNSET is not set",
        "issuers[0].jwks_uri: must be https",
        "issuers[0].algorithms: \"HS256\" is never accepted",
    ] {
        let want = want.replace("issuers.1", "issuers[0]");
        assert!(
            all.iter().any(|e| e.contains(&want)),
            "no {want:?} in {all:#?}"
        );
    }
}

#[test]
fn semantic_checks() {
    let route = "[[routes]]\nprefix = \"/\"\nallow_anonymous = true\n";
    let server = "[server]\nupstream = \"http://127.0.0.1:1\"\n";
    let issuer = |name: &str| {
        format!(
            "[[issuers]]\nname = \"{name}\"\nissuer = \"https://i\"\njwks_uri = \"https://i/keys\"\naudiences = [\"a\"]\n"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{server}{}{}{route}", issuer("e"), issuer("e")),
            "duplicate issuer name \"e\"",
        ),
        (
            format!(
                "{server}{}[[routes]]\nprefix = \"/\"\nissuers = [\"nope\"]\n",
                issuer("e")
            ),
            "unknown issuer \"nope\"",
        ),
        (
            format!("{server}[[routes]]\nprefix = \"/\"\n"),
            "a route requires a token but no [[issuers]] are configured",
        ),
        (
            format!(
                "{server}[[routes]]\nname = \"r\"\nprefix = \"/a\"\nallow_anonymous = true\n[[routes]]\nname = \"r\"\nprefix = \"/b\"\nallow_anonymous = true\n"
            ),
            "duplicate route name \"r\"",
        ),
        (
            format!("{server}[[routes]]\nprefix = \"/a//b\"\nallow_anonymous = true\n"),
            "must not contain //",
        ),
        (
            format!("{server}[[routes]]\nprefix = \"/a/../b\"\nallow_anonymous = true\n"),
            "must not contain . or .. segments",
        ),
        (
            format!("{server}[[routes]]\nprefix = \"/a%2Fb\"\nallow_anonymous = true\n"),
            "must not contain percent-encoding",
        ),
        (
            format!("{server}[[routes]]\nexact = \"x\"\nallow_anonymous = true\n"),
            "must start with /",
        ),
        (
            format!("{server}[[routes]]\nprefix = \"/caf\u{e9}\"\nallow_anonymous = true\n"),
            "must not contain '\u{e9}': only letters, digits",
        ),
        (
            format!("{server}[[routes]]\nprefix = \"/a b\"\nallow_anonymous = true\n"),
            "must not contain ' '",
        ),
        (
            format!("{server}[[routes]]\nprefix = \"/a;b\"\nallow_anonymous = true\n"),
            "must not contain ; (parameters are removed",
        ),
        (
            format!(
                "{server}[[routes]]\nprefix = \"/\"\nmethods = [\"get\"]\nallow_anonymous = true\n"
            ),
            "methods are case-sensitive: write \"GET\"",
        ),
        (
            format!(
                "{server}[[routes]]\nprefix = \"/\"\nallow_anonymous = true\nroles_any = [\"x\"]\n"
            ),
            "cannot also have token requirements",
        ),
        (
            format!(
                "{server}[[routes]]\nprefix = \"/\"\nallow_anonymous = true\nmode = \"loud\"\n"
            ),
            "expected \"enforce\" or \"audit\"",
        ),
        (
            "[server]\nupstream = \"http://h/base\"\n".to_string() + route,
            "no path, query or credentials",
        ),
        (
            "[server]\nlisten = \"0.0.0.0:1\"\n".to_string() + route,
            "server.upstream: missing",
        ),
        (
            format!(
                "{server}{route}[egress]\n[[egress.targets]]\nname = \"t\"\nurl = \"https://t\"\nscope = \"s\"\ncredential = \"nope\"\n"
            ),
            "unknown credential \"nope\"",
        ),
        (
            format!(
                "{server}{route}[egress]\n[[egress.targets]]\nname = \"t\"\nurl = \"http://remote.example.com\"\nscope = \"s\"\ncredential = \"c\"\n[credentials.c]\nkind = \"managed_identity\"\n"
            ),
            "must be https",
        ),
        (
            format!("{server}{route}[credentials.c]\nkind = \"magic\"\n"),
            "unknown kind \"magic\"",
        ),
        (
            format!(
                "{server}{route}[credentials.c]\nkind = \"client_secret\"\ntenant_id = \"t\"\nclient_id = \"c\"\nsecret = \"hunter2\"\n"
            ),
            "unknown field `secret`",
        ),
        (
            format!(
                "{server}{route}[credentials.c]\nkind = \"client_secret\"\ntenant_id = \"t\"\nclient_id = \"c\"\n"
            ),
            "missing secret_file or secret_env",
        ),
        (
            format!(
                "{server}{route}[credentials.c]\nkind = \"managed_identity\"\nclient_id = \"a\"\nobject_id = \"b\"\n"
            ),
            "at most one of client_id, object_id and resource_id",
        ),
        (
            format!("{server}{route}[identity.claims]\n\"Authorization\" = \"oid\"\n"),
            "reserved",
        ),
        (
            format!("{server}{route}[identity.claims]\n\"X-MS-CLIENT-PRINCIPAL-ID\" = \"oid\"\n"),
            "reserved",
        ),
        (
            format!(
                "{server}{route}[[issuers]]\nname = \"m\"\nissuer = \"https://login/{{tenantid}}/v2.0\"\njwks_uri = \"https://k\"\naudiences = [\"a\"]\n"
            ),
            "needs a tenants allow-list",
        ),
        (
            format!(
                "{server}{route}[[issuers]]\nname = \"m\"\nissuer = \"https://login/x\"\njwks_uri = \"https://k\"\n"
            ),
            "issuers[0].audiences: missing",
        ),
        (
            format!("{server}{route}[[issuers]]\nname = \"m\"\nissuer = \"https://login/x\"\n"),
            "missing discovery or jwks_uri",
        ),
        (format!("{server}{route}[surprise]\n"), "unknown section"),
        (
            format!("{server}{route}[log]\nformat = \"xml\"\n"),
            "expected \"json\" or \"text\"",
        ),
        (
            format!("{server}request_timeout = \"30\"\n{route}"),
            "missing unit",
        ),
        ("[admin]\n".to_string(), "nothing to run"),
        ("[server\n".to_string(), "1:"),
    ];
    for (text, want) in cases {
        assert_error(&text, want);
    }
}

#[test]
fn loopback_http_allowed_for_keys_and_targets() {
    let text = r#"
[server]
upstream = "http://127.0.0.1:1"
[[issuers]]
name = "dev"
issuer = "http://127.0.0.1:9/"
jwks_uri = "http://localhost:9/jwks"
audiences = ["a"]
algorithms = ["ES256", "RS256", "EdDSA"]
[[routes]]
prefix = "/"
[egress]
[[egress.targets]]
name = "local"
url = "http://[::1]:8000/base"
scope = "api://x/.default"
credential = "secret"
host = "Local.Internal"
[credentials.secret]
kind = "client_secret"
tenant_id = "t"
client_id = "c"
secret_env = "MY_SECRET"
"#;
    let c = load(text).unwrap().config;
    assert_eq!(
        c.issuers[0].algorithms,
        [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA]
    );
    let t = &c.egress.as_ref().unwrap().targets[0];
    assert_eq!(t.url.to_string(), "http://[::1]:8000/base");
    assert_eq!(t.host.as_deref(), Some("local.internal"));
    assert!(
        matches!(&c.credentials["secret"].kind, CredentialKind::ClientSecret(ClientSecretSettings { secret: SecretSource::Env(e), .. }) if e == "MY_SECRET")
    );
}

#[test]
fn shadowed_routes_warn() {
    let text = |routes: &str| format!("[server]\nupstream = \"http://127.0.0.1:1\"\n{routes}");
    let r = |body: &str| format!("[[routes]]\n{body}\nallow_anonymous = true\n");
    let cases = [
        (r("prefix = \"/\"") + &r("prefix = \"/x\""), true),
        (r("prefix = \"/api\"") + &r("exact = \"/api/v1\""), true),
        (r("prefix = \"/api\"") + &r("prefix = \"/apis\""), false),
        (r("exact = \"/a\"") + &r("prefix = \"/a\""), false),
        (
            r("prefix = \"/a\"\nmethods = [\"GET\"]") + &r("prefix = \"/a\""),
            false,
        ),
        (
            r("prefix = \"/a\"") + &r("prefix = \"/a/b\"\nmethods = [\"GET\"]"),
            true,
        ),
        (
            r("prefix = \"/a\"") + &r("prefix = \"/A\"\ncase_insensitive = true"),
            false,
        ),
        (
            r("prefix = \"/a\"\ncase_insensitive = true") + &r("prefix = \"/A/b\""),
            true,
        ),
        // A trailing slash is not significant: `/a/` covers `/a`.
        (r("prefix = \"/a/\"") + &r("prefix = \"/a\""), true),
        (r("exact = \"/a\"") + &r("exact = \"/a/\""), true),
        // GET brings HEAD along.
        (
            r("prefix = \"/a\"\nmethods = [\"GET\"]") + &r("prefix = \"/a\"\nmethods = [\"HEAD\"]"),
            true,
        ),
    ];
    for (routes, shadowed) in cases {
        let loaded = load(&text(&routes)).unwrap();
        assert_eq!(!loaded.warnings.is_empty(), shadowed, "{routes}");
        if shadowed {
            assert!(
                loaded.warnings[0]
                    .to_string()
                    .contains("routes[1]: never matches"),
                "{}",
                loaded.warnings[0]
            );
        }
    }
}

#[test]
fn path_match_is_segment_aware() {
    let p = PathMatch::Prefix("/admin".into());
    assert!(p.matches("/admin", false));
    assert!(p.matches("/admin/x", false));
    assert!(!p.matches("/administrator", false));
    assert!(!p.matches("/ADMIN", false));
    assert!(p.matches("/ADMIN/x", true));
    assert!(!p.matches("/adm", false));
    assert!(PathMatch::Prefix("/".into()).matches("/anything", false));
    let slash = PathMatch::Prefix("/a/".into());
    assert!(
        slash.matches("/a/", false) && slash.matches("/a/b", false) && slash.matches("/a", false)
    );
    let exact = PathMatch::Exact("/x".into());
    assert!(exact.matches("/x", false) && exact.matches("/x/", false) && exact.matches("/X", true));
    assert!(!exact.matches("/x/y", false) && !exact.matches("/xy", false));
}

#[test]
fn a_case_sensitive_route_before_a_weaker_one_warns() {
    let text = |routes: &str| {
        format!(
            "[server]\nupstream = \"http://127.0.0.1:1\"\n[[issuers]]\nname = \"e\"\nissuer = \"https://i\"\njwks_uri = \"https://i/keys\"\naudiences = [\"a\"]\n{routes}"
        )
    };
    let admin = "[[routes]]\nprefix = \"/admin\"\nroles_all = [\"Admin\"]\n";
    let cases = [
        // The README's legacy recipe shape: /ADMIN falls to the catch-all.
        (format!("{admin}[[routes]]\nprefix = \"/\"\nallow_anonymous = true\n"), true),
        (format!("{admin}[[routes]]\nprefix = \"/\"\nroles_any = [\"reader\"]\n"), true),
        (format!("{admin}[[routes]]\nprefix = \"/\"\nroles_all = [\"Admin\"]\nmode = \"audit\"\n"), true),
        (format!("{admin}[[routes]]\nprefix = \"/ADMIN\"\nallow_anonymous = true\n"), true),
        (format!("{admin}[[routes]]\nprefix = \"/\"\nroles_all = [\"Admin\", \"x\"]\nmode = \"audit\"\n"), true),
        (
            "[[routes]]\nprefix = \"/api/admin\"\nroles_any = [\"Admin\"]\n[[routes]]\nprefix = \"/api\"\nroles_any = [\"Admin\", \"Reader\"]\n".to_owned(),
            true,
        ),
        // Case-insensitive, or followed by the same rules, or nothing takes the variant.
        (
            "[[routes]]\nprefix = \"/admin\"\nroles_all = [\"Admin\"]\ncase_insensitive = true\n[[routes]]\nprefix = \"/\"\nallow_anonymous = true\n".to_owned(),
            false,
        ),
        (format!("{admin}[[routes]]\nprefix = \"/\"\nroles_all = [\"Admin\"]\n"), false),
        (format!("{admin}[[routes]]\nprefix = \"/public\"\nallow_anonymous = true\n"), false),
        (format!("{admin}[[routes]]\nprefix = \"/\"\nroles_all = [\"Admin\", \"Owner\"]\n"), false),
        // The shipped ConfigMap: the later route on the same path takes no other spelling,
        // and asks a subset of the roles anyway.
        (
            "[[routes]]\nprefix = \"/orders\"\nmethods = [\"GET\"]\nroles_any = [\"Read\", \"Write\"]\n[[routes]]\nprefix = \"/orders\"\nroles_any = [\"Write\"]\n".to_owned(),
            false,
        ),
        (
            "[[routes]]\nprefix = \"/api/admin\"\nroles_any = [\"Admin\", \"Owner\"]\n[[routes]]\nprefix = \"/api\"\nroles_any = [\"Admin\"]\n".to_owned(),
            false,
        ),
        (
            "[[routes]]\nprefix = \"/admin\"\nmethods = [\"POST\"]\nroles_all = [\"Admin\"]\n[[routes]]\nprefix = \"/\"\nmethods = [\"GET\"]\nallow_anonymous = true\n".to_owned(),
            false,
        ),
    ];
    for (routes, warned) in cases {
        let loaded = load(&text(&routes)).unwrap();
        let warning = loaded
            .warnings
            .iter()
            .find(|w| w.to_string().contains("ignores case"));
        assert_eq!(warning.is_some(), warned, "{routes}\n{:?}", loaded.warnings);
        if let Some(w) = warning {
            assert!(w.to_string().contains("routes[0]"), "{w}");
        }
    }
}

#[test]
fn an_egress_listener_off_loopback_warns() {
    let text = |listen: &str| {
        format!(
            "[egress]\nlisten = \"{listen}\"\n[[egress.targets]]\nname = \"t\"\nurl = \"https://t\"\nscope = \"s\"\ncredential = \"c\"\n[credentials.c]\nkind = \"managed_identity\"\n"
        )
    };
    for (listen, warned) in [
        ("0.0.0.0:15001", true),
        ("10.1.2.3:15001", true),
        ("[::]:15001", true),
        ("127.0.0.1:15001", false),
        ("[::1]:15001", false),
    ] {
        let loaded = load(&text(listen)).unwrap();
        let warning = loaded
            .warnings
            .iter()
            .any(|w| w.to_string().contains("egress.listen") && w.to_string().contains("loopback"));
        assert_eq!(warning, warned, "{listen}: {:?}", loaded.warnings);
    }
}

#[test]
fn claim_headers_refuse_every_name_tollgate_strips_or_sets() {
    let head = "[server]\nupstream = \"http://127.0.0.1:3000\"\n[[routes]]\nprefix = \"/\"\nallow_anonymous = true\n[identity.claims]\n\"X-User-Roles\" = \"roles\"\n";
    let mut names: Vec<String> = crate::header_names::FORWARDING_HEADERS
        .iter()
        .map(|n| n.to_string())
        .collect();
    names.extend(
        [
            "X-Forwarded-For",
            "X-Forwarded-Anything",
            "X-MS-Original-URL",
            "X-MS-CLIENT-PRINCIPAL-ID",
            "X-MS-Anything",
            "Forwarded",
            "X-Real-IP",
            "Host",
            "Authorization",
        ]
        .map(String::from),
    );
    for name in names {
        for spelling in [name.clone(), name.replace('-', "_")] {
            let text = format!("{head}{spelling:?} = \"oid\"\n");
            // File and line of the mapping, then its key.
            let at = "/etc/tollgate/tollgate.toml:8:";
            let want = format!("identity.claims.{spelling:?}: header {spelling:?} is reserved");
            let all = errors(&text);
            assert!(
                all.iter().any(|e| e.starts_with(at) && e.contains(&want)),
                "no {at}…{want:?} in {all:#?}"
            );
        }
    }
    // Names tollgate neither strips nor sets stay usable.
    let text = format!("{head}\"X-Msft-Tenant\" = \"tid\"\n\"X_Caller_App\" = \"azp\"\n");
    assert_eq!(load(&text).unwrap().config.identity.claims.len(), 3);
}

const LOGIN: &str = r#"
[server]
upstream = "http://127.0.0.1:3000"

[[issuers]]
name = "entra"
issuer = "https://login.microsoftonline.com/t/v2.0"
discovery = "https://login.microsoftonline.com/t/v2.0/.well-known/openid-configuration"
audiences = ["api://web"]

[credentials.web]
kind = "managed_identity_federation"
tenant_id = "t"
client_id = "web-client"
identity_client_id = "mi"

[login]
issuer = "entra"
client_id = "web-client"
credential = "web"
session_keys = ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]

[[routes]]
prefix = "/"
unauthenticated = "redirect"
"#;

#[test]
fn login_takes_defaults() {
    let c = load(LOGIN).unwrap().config;
    let login = c.login.unwrap();
    assert_eq!(
        login.scopes,
        ["openid", "profile", "email", "offline_access"]
    );
    assert_eq!(login.session_lifetime, Duration::from_secs(8 * 3600));
    assert_eq!(login.refresh_extension, Duration::from_secs(72 * 3600));
    assert_eq!(login.cookie_name, "AppServiceAuthSession");
    assert!(login.token_headers && !login.refresh_token_header && !login.me_tokens);
    assert_eq!(login.session_keys.len(), 1);
    assert_eq!(login.session_keys[0].0[31], 31);
    assert!(login.session_store.is_none());
    assert_eq!(
        c.routes[0].unauthenticated,
        crate::config::Unauthenticated::Redirect
    );
    // A key's bytes never reach a debug print.
    assert!(!format!("{login:?}").contains("AAECAw"));
}

#[test]
fn login_checks() {
    let with = |from: &str, to: &str| {
        assert!(LOGIN.contains(from), "{from}");
        LOGIN.replacen(from, to, 1)
    };
    let cases = [
        (
            with("issuer = \"entra\"\nclient", "issuer = \"other\"\nclient"),
            "login.issuer: no [[issuers]] entry is named \"other\"",
        ),
        (
            with("credential = \"web\"", "credential = \"nope\""),
            "no [credentials.nope] section",
        ),
        (
            with(
                "client_id = \"web-client\"\ncredential",
                "client_id = \"another\"\ncredential",
            ),
            "authenticates client \"web-client\", not login.client_id \"another\"",
        ),
        (
            with(
                "session_keys = [\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"]",
                "session_keys = [\"c2hvcnQ=\"]",
            ),
            "a session key is the base64 of 32 random bytes",
        ),
        (
            with(
                "session_keys = [\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"]",
                "session_keys = []",
            ),
            "give at least one key",
        ),
        (
            with(
                "session_keys = [\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"]",
                "session_keys = [\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\", \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\"]",
            ),
            "listed twice",
        ),
        (
            with(
                "credential = \"web\"",
                "credential = \"web\"\nscopes = [\"profile\"]",
            ),
            "must include \"openid\"",
        ),
        (
            with(
                "credential = \"web\"",
                "credential = \"web\"\nsession_lifetime = \"0s\"",
            ),
            "login.session_lifetime: must be longer than zero",
        ),
        (
            with(
                "credential = \"web\"",
                "credential = \"web\"\ncookie_name = \"a;b\"",
            ),
            "login.cookie_name",
        ),
        (
            with(
                "credential = \"web\"",
                "credential = \"web\"\ncookie_name = \"Session2\"",
            ),
            "not ending with a digit",
        ),
        (
            with(
                "credential = \"web\"",
                "credential = \"web\"\nallowed_origins = [\"https://app.example.com/path\"]",
            ),
            "with no path",
        ),
        (
            with(
                "credential = \"web\"",
                "credential = \"web\"\nsession_store = \"http://user:hunter2@redis\"",
            ),
            "expected a Redis URL",
        ),
        (
            with(
                "discovery = \"https://login.microsoftonline.com/t/v2.0/.well-known/openid-configuration\"",
                "jwks_uri = \"https://login.microsoftonline.com/t/discovery/v2.0/keys\"",
            ),
            "needs `discovery`",
        ),
        (
            with(
                "kind = \"managed_identity_federation\"\ntenant_id = \"t\"\nclient_id = \"web-client\"\nidentity_client_id = \"mi\"",
                "kind = \"managed_identity\"",
            ),
            "is a managed identity, which cannot sign in users",
        ),
        (
            with(
                "unauthenticated = \"redirect\"",
                "unauthenticated = \"302\"",
            ),
            "expected \"401\", \"403\" or \"redirect\"",
        ),
        (
            with(
                "unauthenticated = \"redirect\"",
                "allow_anonymous = true\nunauthenticated = \"403\"",
            ),
            "has no effect there",
        ),
        (with("[login]", "[unused]"), "unknown section"),
    ];
    for (text, want) in cases {
        let all = errors(&text);
        assert!(
            all.iter().any(|e| e.contains(want)),
            "no error containing {want:?} in {all:#?}"
        );
        // A key or a store password is never echoed.
        assert!(
            all.iter()
                .all(|e| !e.contains("hunter2") && !e.contains("c2hvcnQ")),
            "{all:#?}"
        );
    }
    let no_login = LOGIN[..LOGIN.find("[login]").unwrap()].to_owned()
        + "[[routes]]\nprefix = \"/\"\nunauthenticated = \"redirect\"\n";
    assert_error(&no_login, "needs a [login] section");
    let origins = with(
        "credential = \"web\"",
        "credential = \"web\"\nallowed_origins = [\"https://App.example.com:8443\", \"https://b.example.com/\"]",
    );
    let login = load(&origins).unwrap().config.login.unwrap();
    assert_eq!(
        login.allowed_origins,
        ["https://app.example.com:8443", "https://b.example.com"]
    );
}

const GROUPS_ISSUER: &str = r#"
[server]
upstream = "http://127.0.0.1:3000"

[[issuers]]
name = "entra"
issuer = "https://login.example/t/v2.0"
jwks_uri = "https://login.example/keys"
audiences = ["api://orders"]
"#;

#[test]
fn groups_overage_defaults_to_deny_and_graph_takes_a_credential_and_endpoint() {
    use crate::config::{GraphSettings, GroupsOverage};
    let text = format!(
        "{GROUPS_ISSUER}groups_overage = \"graph\"\ngraph_credential = \"mi\"\n[credentials.mi]\nkind = \"managed_identity\"\n[[routes]]\nprefix = \"/\"\ngroups_any = [\"g-1\"]\n"
    );
    let c = load(&text).unwrap().config;
    assert_eq!(
        c.issuers[0].groups_overage,
        GroupsOverage::Graph(GraphSettings {
            credential: "mi".into(),
            endpoint: "https://graph.microsoft.com".parse().unwrap(),
        })
    );
    assert_eq!(c.routes[0].require.groups_any, ["g-1"]);
    let deny = format!("{GROUPS_ISSUER}[[routes]]\nprefix = \"/\"\n");
    assert_eq!(
        load(&deny).unwrap().config.issuers[0].groups_overage,
        GroupsOverage::Deny
    );
    let endpoint = format!(
        "{GROUPS_ISSUER}groups_overage = \"graph\"\ngraph_credential = \"mi\"\ngraph_endpoint = \"http://127.0.0.1:8079/\"\n[credentials.mi]\nkind = \"managed_identity\"\n"
    );
    let GroupsOverage::Graph(g) = &load(&endpoint).unwrap().config.issuers[0].groups_overage else {
        panic!("graph")
    };
    assert_eq!(g.endpoint.as_str(), "http://127.0.0.1:8079/");
}

#[test]
fn groups_overage_errors_have_positions() {
    let graph = |lines: &str| {
        format!("{GROUPS_ISSUER}{lines}\n[credentials.mi]\nkind = \"managed_identity\"\n")
    };
    assert_error(
        &graph("groups_overage = \"resolve\""),
        "tollgate.toml:10:18: issuers[0].groups_overage: expected \"deny\" or \"graph\"",
    );
    assert_error(
        &graph("groups_overage = \"graph\""),
        "tollgate.toml:10:18: issuers[0].graph_credential: groups_overage = \"graph\" needs graph_credential",
    );
    assert_error(
        &graph("groups_overage = \"graph\"\ngraph_credential = \"nope\""),
        "tollgate.toml:11:20: issuers[0].graph_credential: no [credentials.nope] section",
    );
    assert_error(
        &graph(
            "groups_overage = \"graph\"\ngraph_credential = \"mi\"\ngraph_endpoint = \"http://graph.example\"",
        ),
        "tollgate.toml:12:18: issuers[0].graph_endpoint: must be https",
    );
    assert_error(
        &graph(
            "groups_overage = \"graph\"\ngraph_credential = \"mi\"\ngraph_endpoint = \"https://graph.example/?x=1\"",
        ),
        "issuers[0].graph_endpoint: give only the base URL",
    );
    assert_error(
        &graph("graph_credential = \"mi\""),
        "tollgate.toml:10:20: issuers[0].graph_credential: graph_credential applies only with groups_overage = \"graph\"",
    );
}

const RESOURCES: &str = r#"
[server]
upstream = "http://127.0.0.1:3000"

[[issuers]]
name = "entra"
issuer = "https://login.microsoftonline.com/{tenantid}/v2.0"
jwks_uri = "https://login.microsoftonline.com/common/discovery/v2.0/keys"
audiences = ["api://mcp"]
tenants = ["11111111-1111-1111-1111-111111111111"]

[[routes]]
prefix = "/mcp"
scopes_any = ["tools.read"]

[[routes]]
prefix = "/"
allow_anonymous = true

[[resources]]
resource = "https://mcp.contoso.com/mcp"
prefix = "/mcp"
issuer = "entra"
scopes_supported = ["api://mcp/tools.read"]
resource_documentation = "https://contoso.com/docs/mcp"

[[resources]]
resource = "https://api.contoso.com"
prefix = "/"
issuer = "entra"
"#;

#[test]
fn resources_take_defaults_and_their_metadata_paths() {
    let c = load(RESOURCES).unwrap().config;
    let [mcp, api] = &c.resources[..] else {
        panic!("two resources: {:?}", c.resources)
    };
    assert_eq!(mcp.resource, "https://mcp.contoso.com/mcp");
    assert_eq!(
        mcp.metadata_path,
        "/.well-known/oauth-protected-resource/mcp"
    );
    assert_eq!(mcp.scopes_supported, ["api://mcp/tools.read"]);
    assert_eq!(
        mcp.resource_documentation.as_ref().map(url::Url::as_str),
        Some("https://contoso.com/docs/mcp")
    );
    assert_eq!(mcp.position.line, 20);
    // As written: the URL parser would add a slash the token's `aud` does not have.
    assert_eq!(api.resource, "https://api.contoso.com");
    assert_eq!(api.metadata_path, "/.well-known/oauth-protected-resource");
    assert!(api.scopes_supported.is_empty() && api.resource_documentation.is_none());
    let loopback = RESOURCES.replace("https://api.contoso.com", "http://127.0.0.1:8080");
    assert_eq!(load(&loopback).unwrap().config.resources.len(), 2);
}

#[test]
fn resources_checks() {
    let with = |from: &str, to: &str| {
        assert!(RESOURCES.contains(from), "{from}");
        RESOURCES.replacen(from, to, 1)
    };
    let cases = [
        (
            with("https://mcp.contoso.com/mcp", "http://mcp.contoso.com/mcp"),
            "tollgate.toml:21:12: resources[0].resource: must be an absolute https URL",
        ),
        (
            with("https://mcp.contoso.com/mcp", "/mcp"),
            "resources[0].resource: invalid URL",
        ),
        (
            with(
                "https://mcp.contoso.com/mcp",
                "https://mcp.contoso.com/mcp?x=1",
            ),
            "must not have a query or a fragment",
        ),
        (
            with(
                "https://mcp.contoso.com/mcp",
                "https://mcp.contoso.com/a%2Fb",
            ),
            "its path cannot be served",
        ),
        (
            with("prefix = \"/mcp\"\nissuer", "prefix = \"/mcp/\"\nissuer"),
            "",
        ),
        (
            with("prefix = \"/mcp\"\nissuer", "prefix = \"mcp\"\nissuer"),
            "resources[0].prefix: must start with /",
        ),
        (
            with("issuer = \"entra\"\nscopes", "issuer = \"other\"\nscopes"),
            "resources[0].issuer: no [[issuers]] entry is named \"other\"",
        ),
        (
            with("[\"api://mcp/tools.read\"]", "[\"tools read\"]"),
            "resources[0].scopes_supported: \"tools read\" is not a scope",
        ),
        (
            with("https://contoso.com/docs/mcp", "docs"),
            "resources[0].resource_documentation: invalid URL",
        ),
        (
            with("https://api.contoso.com", "https://mcp.contoso.com/mcp"),
            "resources[1]: duplicate resource \"https://mcp.contoso.com/mcp\"",
        ),
        (
            with("prefix = \"/\"\nissuer", "prefix = \"/mcp\"\nissuer"),
            "resources[1]: duplicate prefix \"/mcp\"",
        ),
        (
            with("https://api.contoso.com", "https://other.contoso.com/mcp"),
            "resources[1]: its metadata would be served at /.well-known/oauth-protected-resource/mcp",
        ),
        (
            with("[\"tools.read\"]", "[\"tools\\\"read\"]"),
            "routes[0].scopes_any: \"tools\\\"read\" is not a scope",
        ),
    ];
    for (text, want) in cases {
        if want.is_empty() {
            assert!(load(&text).is_ok(), "{text}");
        } else {
            assert_error(&text, want);
        }
    }
    // A prefix no route covers: its requests would get 403, never a challenge.
    let uncovered = with("[[routes]]\nprefix = \"/\"\nallow_anonymous = true\n", "").replacen(
        "prefix = \"/\"\nissuer",
        "prefix = \"/other\"\nissuer",
        1,
    );
    assert_error(
        &uncovered,
        "resources[1].prefix: no route covers /other: add a [[routes]] entry",
    );
}

#[test]
fn on_behalf_of_names_an_issuer_and_an_app_registration() {
    let with = |server: &str, issuer: &str, kind: &str| {
        format!(
            r#"{server}
[[issuers]]
name = "entra"
issuer = "https://login.microsoftonline.com/t/v2.0"
jwks_uri = "https://login.microsoftonline.com/t/discovery/v2.0/keys"
audiences = ["api://web"]

[egress]
obo_cache_entries = 500

[[egress.targets]]
name = "orders"
url = "https://orders.example.com"
scope = "api://orders/.default"
credential = "web"
on_behalf_of = "{issuer}"

[credentials.web]
{kind}
"#
        )
    };
    let server = "[server]\nupstream = \"http://127.0.0.1:3000\"\n[[routes]]\nprefix = \"/\"\nallow_anonymous = true";
    let secret =
        "kind = \"client_secret\"\ntenant_id = \"t\"\nclient_id = \"web\"\nsecret_env = \"S\"";
    let loaded = load(&with(server, "entra", secret)).unwrap();
    let egress = loaded.config.egress.unwrap();
    assert_eq!(egress.targets[0].on_behalf_of.as_deref(), Some("entra"));
    assert_eq!(egress.obo_cache_entries, 500);

    let lines = errors(&with(server, "nobody", secret));
    assert_eq!(
        lines,
        [
            "/etc/tollgate/tollgate.toml:20:16: egress.targets[0].on_behalf_of: unknown issuer \"nobody\": on_behalf_of names an [[issuers]] entry whose tokens may be exchanged"
        ]
    );
    assert_error(
        &with(server, "entra", "kind = \"managed_identity\""),
        "tollgate.toml:20:16: egress.targets[0].on_behalf_of: credential \"web\" is a managed identity, which cannot exchange a caller's token",
    );
    assert_error(
        &with("", "entra", secret),
        "egress.targets[0].on_behalf_of: needs a [server] section",
    );
    assert_error(
        &with(server, "entra", secret).replace("obo_cache_entries = 500", "obo_cache_entries = 0"),
        "egress.obo_cache_entries: must be between 1 and 1000000",
    );
}
