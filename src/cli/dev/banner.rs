//! What `tollgate dev` prints at start: what it serves, the environment for an app (managed
//! identity in two styles, the Entra token endpoint over https for the SDKs), and tollgate
//! config blocks (trust the issuer, egress with the identity endpoint, browser sign-in).

use std::path::Path;

use crate::dev::identity::{APP_SERVICE_TOKEN_PATH, Identity};
use crate::dev::issuer::{DEV_AUDIENCE, DEV_ISSUER};
use crate::dev::oauth::{CALLBACK_PATH, TOKEN_EXCHANGE_AUDIENCE};

/// The environment variable the printed `[credentials.web]` reads the client secret from.
pub const SECRET_ENV: &str = "TOLLGATE_DEV_CLIENT_SECRET";

/// Everything the banner names.
pub(super) struct Banner<'a> {
    pub base: &'a str,
    /// `https://127.0.0.1:port` and the CA file, unless https is off.
    pub https: Option<(&'a str, &'a Path)>,
    pub iss: &'a str,
    pub kid: &'a str,
    pub key_file: &'a Path,
    pub identity: &'a Identity,
    pub header: &'a str,
    pub web_client_id: &'a str,
    pub web_client_secret: &'a str,
    pub redirect_uris: &'a [String],
}

impl Banner<'_> {
    pub(super) fn render(&self) -> String {
        let mut lines = self.summary();
        lines.extend(self.managed_identity());
        lines.extend(self.entra());
        lines.extend(self.config());
        lines.join("\n")
    }

    fn summary(&self) -> Vec<String> {
        let Banner { base, iss, .. } = self;
        let id = self.identity;
        let roles = if id.roles.is_empty() {
            "none (add --role R)".to_owned()
        } else {
            id.roles.join(", ")
        };
        let on = match self.https {
            Some((https, _)) => format!("{base} and {https}"),
            None => (*base).to_owned(),
        };
        let mut redirects =
            format!("any http(s)://127.0.0.1|localhost|[::1]:PORT/…{CALLBACK_PATH}");
        for uri in self.redirect_uris {
            redirects.push_str(", ");
            redirects.push_str(uri);
        }
        let https = match self.https {
            Some((https, ca)) => format!(
                "  https      {https}, certificate from the dev CA {}",
                ca.display()
            ),
            None => "  https      off (--no-https)".to_owned(),
        };
        vec![
            format!(
                "tollgate dev: local issuer, managed-identity endpoint and sign-in provider on {on} (Ctrl-C stops)"
            ),
            String::new(),
            format!(
                "  issuer     {iss}  (discovery {base}/.well-known/openid-configuration; the same iss over https)"
            ),
            format!(
                "  key        {}  (kid {})",
                self.key_file.display(),
                self.kid
            ),
            format!(
                "  identity   tid {}, client_id {}, oid {}",
                id.tenant_id, id.client_id, id.object_id
            ),
            format!(
                "  roles      {roles}; tokens live {}s; any user-assigned id asked for is granted",
                id.lifetime.as_secs()
            ),
            format!(
                "  sign-in    web app client_id {}; {base}/oauth2/v2.0/authorize, /token, /logout (also under /{{tenant}}/)",
                self.web_client_id
            ),
            format!("  redirects  {redirects}"),
            format!(
                "  graph      {base}/v1.0/users/{{oid}}/transitiveMemberOf/... for groups overage: graph_endpoint = \"{base}\"; `tollgate dev token --groups-overage 500` mints a user in 500 groups"
            ),
            https,
            String::new(),
        ]
    }

    fn managed_identity(&self) -> Vec<String> {
        let base = self.base;
        vec![
            "# App Service style: every Azure SDK and tollgate's egress detect these.".into(),
            format!("export IDENTITY_ENDPOINT={base}{APP_SERVICE_TOKEN_PATH}"),
            format!("export IDENTITY_HEADER={}", self.header),
            String::new(),
            "# Or IMDS style, with IDENTITY_ENDPOINT and IDENTITY_HEADER unset: read by azure-identity".into(),
            "# and MSAL for Python, Azure.Identity (.NET), @azure/identity (JavaScript) and tollgate.".into(),
            "# Not IMDS_ENDPOINT: the SDKs take that for Azure Arc. Go and Rust: use App Service style.".into(),
            format!("export AZURE_POD_IDENTITY_AUTHORITY_HOST={base}"),
            String::new(),
        ]
    }

    /// The SDKs' Entra credentials need an https authority: only with https on.
    fn entra(&self) -> Vec<String> {
        let Some((https, ca)) = self.https else {
            return Vec::new();
        };
        let ca = ca.display();
        vec![
            "# Entra style, for ClientSecretCredential, WorkloadIdentityCredential and the like: the token".into(),
            "# endpoint over https, trusting the dev CA. SSL_CERT_FILE replaces OpenSSL's default trust,".into(),
            "# so set these for the app's process only. Python: disable_instance_discovery=True.".into(),
            format!("export SSL_CERT_FILE={ca}"),
            format!("export REQUESTS_CA_BUNDLE={ca}"),
            format!("export NODE_EXTRA_CA_CERTS={ca}"),
            format!("export AZURE_AUTHORITY_HOST={https}/"),
            format!("export AZURE_TENANT_ID={}", self.identity.tenant_id),
            format!("export AZURE_CLIENT_ID={}", self.web_client_id),
            format!("export AZURE_CLIENT_SECRET={}", self.web_client_secret),
            "# Workload identity instead of the secret:".into(),
            format!("#   tollgate dev token --aud {TOKEN_EXCHANGE_AUDIENCE} > token; export AZURE_FEDERATED_TOKEN_FILE=$PWD/token"),
            String::new(),
        ]
    }

    fn config(&self) -> Vec<String> {
        let (base, iss) = (self.base, self.iss);
        let id = self.identity;
        let token_iss = if iss == DEV_ISSUER {
            String::new()
        } else {
            format!(" --iss {iss}")
        };
        let client = self.web_client_id;
        vec![
            "# tollgate.toml, inbound: trust this issuer; audiences are the resources callers ask for".into(),
            "[[issuers]]".into(),
            "name = \"dev\"".into(),
            format!("issuer = \"{iss}\""),
            format!("discovery = \"{base}/.well-known/openid-configuration\""),
            format!("audiences = [\"{DEV_AUDIENCE}\", \"{client}\"]"),
            String::new(),
            "# tollgate.toml, egress: tokens from this endpoint over the IMDS protocol".into(),
            "[credentials.mi]".into(),
            "kind = \"managed_identity\"".into(),
            format!("endpoint = \"{base}\""),
            String::new(),
            "# tollgate.toml, browser sign-in with this provider (export SESSION_KEY=$(tollgate dev session-key))".into(),
            "[login]".into(),
            "issuer = \"dev\"".into(),
            format!("client_id = \"{client}\""),
            "credential = \"web\"".into(),
            "scopes = [\"openid\", \"profile\", \"offline_access\"]".into(),
            "session_keys = [\"${SESSION_KEY}\"]".into(),
            String::new(),
            format!("export {SECRET_ENV}={}", self.web_client_secret),
            String::new(),
            "[credentials.web]".into(),
            "kind = \"client_secret\"".into(),
            format!("tenant_id = \"{}\"", id.tenant_id),
            format!("client_id = \"{client}\""),
            format!("secret_env = \"{SECRET_ENV}\""),
            format!("authority_host = \"{base}/\""),
            String::new(),
            "# Or no secret anywhere: the dev managed identity as the app's federated credential".into(),
            "# (credential = \"web_fic\" in [login])".into(),
            "[credentials.web_fic]".into(),
            "kind = \"managed_identity_federation\"".into(),
            format!("tenant_id = \"{}\"", id.tenant_id),
            format!("client_id = \"{client}\""),
            format!("endpoint = \"{base}\""),
            format!("authority_host = \"{base}/\""),
            String::new(),
            "# A token by hand, from the same key and issuer:".into(),
            format!("#   tollgate dev token{token_iss} --aud {DEV_AUDIENCE} --role {}", id.roles.first().map_or("R", String::as_str)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::oauth::{DEV_CLIENT_SECRET, DEV_WEB_CLIENT_ID};

    fn banner(roles: &[&str], iss: &str, https: bool) -> String {
        let identity = Identity {
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Identity::default()
        };
        let ca = Path::new("/k/dev-ca.pem");
        Banner {
            base: "http://127.0.0.1:41000",
            https: https.then_some(("https://127.0.0.1:41443", ca)),
            iss,
            kid: "kid-1",
            key_file: Path::new("/k/dev-issuer.pem"),
            identity: &identity,
            header: "s3cret",
            web_client_id: DEV_WEB_CLIENT_ID,
            web_client_secret: DEV_CLIENT_SECRET,
            redirect_uris: &["https://app.example/.auth/login/aad/callback".to_owned()],
        }
        .render()
    }

    /// The lines from `first` up to the next blank line.
    fn block(text: &str, first: &str) -> String {
        let lines: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != first)
            .take_while(|l| !l.is_empty())
            .collect();
        assert!(!lines.is_empty(), "{first} not in\n{text}");
        lines.join("\n") + "\n"
    }

    #[test]
    fn the_printed_environment_names_every_style() {
        let text = banner(&["Orders.Read"], DEV_ISSUER, true);
        for line in [
            "export IDENTITY_ENDPOINT=http://127.0.0.1:41000/msi/token",
            "export IDENTITY_HEADER=s3cret",
            "export AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:41000",
            "export SSL_CERT_FILE=/k/dev-ca.pem",
            "export REQUESTS_CA_BUNDLE=/k/dev-ca.pem",
            "export NODE_EXTRA_CA_CERTS=/k/dev-ca.pem",
            "export AZURE_AUTHORITY_HOST=https://127.0.0.1:41443/",
            &format!("export AZURE_CLIENT_ID={DEV_WEB_CLIENT_ID}"),
            &format!("export {SECRET_ENV}={DEV_CLIENT_SECRET}"),
            "#   tollgate dev token --aud api://tollgate-dev --role Orders.Read",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
        assert!(
            text.contains("https://app.example/.auth/login/aad/callback"),
            "{text}"
        );
        assert!(!text.contains("export IMDS_ENDPOINT"), "{text}");
        let other = banner(&[], "http://example.test/", false);
        assert!(
            other.contains("tollgate dev token --iss http://example.test/ "),
            "{other}"
        );
        assert!(other.contains("none (add --role R)"), "{other}");
        assert!(
            !other.contains("AZURE_AUTHORITY_HOST"),
            "no https, no Entra style: {other}"
        );
        assert!(other.contains("https      off (--no-https)"), "{other}");
    }

    #[test]
    fn the_printed_config_blocks_are_valid_tollgate_config() {
        let text = banner(&["Orders.Read"], DEV_ISSUER, true);
        let toml = format!(
            "[server]\nupstream = \"http://127.0.0.1:3000\"\n{}[[routes]]\nprefix = \"/\"\nroles_any = [\"Orders.Read\"]\nunauthenticated = \"redirect\"\n[egress]\nlisten = \"127.0.0.1:0\"\n[[egress.targets]]\nname = \"api\"\nurl = \"http://127.0.0.1:3001\"\nscope = \"api://tollgate-dev/.default\"\ncredential = \"mi\"\n{}{}{}{}",
            block(&text, "[[issuers]]"),
            block(&text, "[credentials.mi]"),
            block(&text, "[credentials.web]"),
            block(&text, "[credentials.web_fic]"),
            block(&text, "[login]"),
        );
        let key = |name: &str| {
            (name == "SESSION_KEY")
                .then(|| "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned())
        };
        let loaded = crate::config::parse(&toml, Path::new("dev.toml"), &key)
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert!(loaded.config.login.is_some(), "{toml}");
        let issuer = &loaded.config.issuers[0];
        assert_eq!(issuer.issuer, DEV_ISSUER);
        for name in ["mi", "web", "web_fic"] {
            assert!(loaded.config.credentials.contains_key(name), "{name}");
        }
        let login = block(&text, "[login]");
        assert!(
            login.contains(&format!("client_id = \"{DEV_WEB_CLIENT_ID}\"")),
            "{login}"
        );
        assert!(
            login.contains("issuer = \"dev\"") && login.contains("credential = \"web\""),
            "{login}"
        );
    }
}
