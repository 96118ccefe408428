//! The rig: `tollgate dev` (issuer and OAuth provider), an echo backend, tollgate with
//! `[login]`, and a browser (a cookie jar over reqwest, no redirects followed).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use tollgate::dev::oauth::{DEV_CLIENT_SECRET, DEV_WEB_CLIENT_ID, DevUser, sign_in_form};
use tollgate::dev::server::DevServer;

use crate::support::TestProxy;
use crate::support::echo::Backend;

/// A session key for the tests (32 bytes, base64).
pub const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Another deployment's key.
pub const OTHER_KEY: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

pub struct Rig {
    pub dev: DevServer,
    pub backend: Backend,
    pub proxy: TestProxy,
}

/// What `[login]` and the routes say, on top of the rig's defaults.
pub struct Setup<'a> {
    /// Extra `[login]` lines.
    pub login: &'a str,
    /// The credential section's body (after `[credentials.web]`).
    pub credential: Option<String>,
    pub key: &'a str,
    /// Extra `[[issuers]]` lines for the dev issuer.
    pub issuer: &'a str,
    /// Extra sections (before `[login]`).
    pub sections: &'a str,
    /// Routes before the rig's own.
    pub routes: &'a str,
    /// More sections, after the routes (`[egress]`, say).
    pub extra: String,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            login: "",
            credential: None,
            key: KEY,
            issuer: "",
            sections: "",
            routes: "",
            extra: String::new(),
        }
    }
}

impl Rig {
    pub async fn start() -> Rig {
        Rig::with(Setup::default()).await
    }

    pub async fn with(setup: Setup<'_>) -> Rig {
        let dev = DevServer::builder()
            .start()
            .await
            .expect("tollgate dev starts");
        Rig::on(dev, setup).await
    }

    /// Another tollgate (its own backend) against the same provider.
    pub async fn on(dev: DevServer, setup: Setup<'_>) -> Rig {
        Rig::on_with_env(dev, setup, &[]).await
    }

    /// A rig whose `[credentials.web]` is `kind_and_settings` (the kind and its own keys) for
    /// the dev web client of `dev`'s tenant, with `vars` in the environment.
    pub async fn with_credential(
        dev: DevServer,
        kind_and_settings: &str,
        vars: &[(&str, &str)],
    ) -> Rig {
        let credential = format!(
            "{kind_and_settings}tenant_id = \"{}\"\nclient_id = \"{DEV_WEB_CLIENT_ID}\"\n",
            dev.oauth().tenant_id()
        );
        let setup = Setup {
            credential: Some(credential),
            ..Setup::default()
        };
        Rig::on_with_env(dev, setup, vars).await
    }

    /// [`Rig::on`] with more environment variables.
    pub async fn on_with_env(dev: DevServer, setup: Setup<'_>, vars: &[(&str, &str)]) -> Rig {
        // Before any tollgate code logs: the capturing subscriber (tests/signin/logs.rs).
        crate::capture::init();
        let backend = Backend::start().await;
        let credential = setup.credential.unwrap_or_else(|| {
            format!(
                "kind = \"client_secret\"\ntenant_id = \"{}\"\nclient_id = \"{DEV_WEB_CLIENT_ID}\"\nsecret_env = \"WEB_SECRET\"\n",
                dev.oauth().tenant_id()
            )
        });
        let toml = format!(
            r#"{server}
[[issuers]]
name = "dev"
issuer = "{iss}"
discovery = "{dev}/.well-known/openid-configuration"
audiences = ["api://tollgate-dev", "api://orders"]
{issuer_lines}

[credentials.web]
{credential}
{sections}
[login]
issuer = "dev"
client_id = "{DEV_WEB_CLIENT_ID}"
credential = "web"
session_keys = ["{key}"]
scopes = ["openid", "profile", "offline_access", "api://orders/Orders.Read"]
{login}

{routes}

[[routes]]
prefix = "/public"
allow_anonymous = true

[[routes]]
prefix = "/admin"
roles_any = ["Admin"]
unauthenticated = "redirect"

[[routes]]
prefix = "/api"
unauthenticated = "401"

[[routes]]
prefix = "/"
unauthenticated = "redirect"
{extra}
"#,
            server = crate::support::server(backend.addr(), ""),
            iss = dev.issuer().issuer,
            dev = dev.url(),
            key = setup.key,
            login = setup.login,
            issuer_lines = setup.issuer,
            sections = setup.sections,
            routes = setup.routes,
            extra = setup.extra,
        );
        let mut env = HashMap::from([("WEB_SECRET".to_owned(), DEV_CLIENT_SECRET.to_owned())]);
        env.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let proxy = TestProxy::start_with_env(&toml, env).await;
        Rig {
            dev,
            backend,
            proxy,
        }
    }

    pub fn browser(&self) -> Browser {
        Browser {
            base: format!("http://{}", self.proxy.addr),
            jar: Arc::new(Mutex::new(BTreeMap::new())),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// `tollgate_logins_total{result}`.
    pub fn logins(&self, result: &str) -> u64 {
        self.proxy
            .metrics()
            .logins
            .with_label_values(&[result])
            .get()
    }

    /// A browser signed in as `user`, back at `/hello`.
    pub async fn signed_in(&self, user: &DevUser) -> Browser {
        let browser = self.browser();
        let authorize = browser.start_login("/hello").await;
        let callback = browser.authorize(&authorize, user).await;
        let reply = browser.get_url(&callback, &[]).await;
        assert_eq!(reply.status(), 302, "callback: {:?}", reply.headers());
        assert_eq!(location(&reply), "/hello");
        browser
    }
}

/// A cookie jar and an HTTP client that follows nothing.
#[derive(Clone)]
pub struct Browser {
    pub base: String,
    pub jar: Arc<Mutex<BTreeMap<String, String>>>,
    pub http: reqwest::Client,
}

pub fn location(reply: &reqwest::Response) -> String {
    reply
        .headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

impl Browser {
    /// The `Cookie` header the jar sends.
    pub fn cookie_header(&self) -> String {
        self.jar
            .lock()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Applies a response's `Set-Cookie` values (`Max-Age=0` deletes).
    pub fn take_cookies(&self, reply: &reqwest::Response) {
        for value in reply.headers().get_all(SET_COOKIE) {
            let c = cookie::Cookie::parse(value.to_str().unwrap().to_owned()).unwrap();
            let gone = c.max_age().is_some_and(|a| a.is_zero()) || c.value().is_empty();
            let mut jar = self.jar.lock();
            if gone {
                jar.remove(c.name());
            } else {
                jar.insert(c.name().to_owned(), c.value().to_owned());
            }
        }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        self.send(method, &format!("{}{path}", self.base), headers)
            .await
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        self.request(reqwest::Method::GET, path, headers).await
    }

    pub async fn get_url(&self, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let url = if url.starts_with('/') {
            format!("{}{url}", self.base)
        } else {
            url.to_owned()
        };
        self.send(reqwest::Method::GET, &url, headers).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.http.request(method, url);
        let cookies = self.cookie_header();
        if url.starts_with(&self.base) && !cookies.is_empty() {
            req = req.header(COOKIE, cookies);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let reply = req.send().await.expect("request sent");
        if url.starts_with(&self.base) {
            self.take_cookies(&reply);
        }
        reply
    }

    /// `/.auth/login/aad?post_login_redirect_uri=<target>`: the authorize URL it sends to.
    pub async fn start_login(&self, target: &str) -> String {
        let path = format!(
            "/.auth/login/aad?post_login_redirect_uri={}",
            url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
        );
        let reply = self.get(&path, &[]).await;
        assert_eq!(reply.status(), 302, "login start");
        assert!(self.jar.lock().contains_key("TollgateLogin"));
        location(&reply)
    }

    /// Signs `user` in at the provider: the callback URL it sends the browser to.
    pub async fn authorize(&self, authorize_url: &str, user: &DevUser) -> String {
        let reply = self
            .http
            .post(authorize_url)
            .form(&sign_in_form(authorize_url, user))
            .send()
            .await
            .unwrap();
        assert_eq!(
            reply.status(),
            302,
            "authorize: {}",
            reply.text().await.unwrap()
        );
        location(&reply)
    }

    /// The session cookie chunks in the jar.
    pub fn session_chunks(&self) -> Vec<(String, String)> {
        self.jar
            .lock()
            .iter()
            .filter(|(k, _)| k.starts_with("AppServiceAuthSession"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A user with `groups` many group ids: a session that needs several cookie chunks.
pub fn user_in_groups(groups: usize) -> DevUser {
    DevUser {
        groups: (0..groups)
            .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
            .collect(),
        ..DevUser::default()
    }
}
