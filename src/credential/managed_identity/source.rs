//! Which managed-identity source the environment offers, detected in the order MSAL Go and
//! MSAL Python use: App Service 2019 or Service Fabric, then App Service 2017 or Cloud Shell,
//! then Azure Arc, else IMDS. A pure function of the environment lookup and two file-system facts.

use std::path::{Path, PathBuf};

use url::Url;

use crate::config::Lookup;
use crate::credential::{CredentialError, env_var};
use crate::telemetry::redact::Secret;

/// The IMDS address on every Azure VM.
pub const IMDS_HOST: &str = "http://169.254.169.254";
/// The IMDS token path, appended to the base URL.
pub const IMDS_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
/// Arc's token endpoint when the agent is installed but the variables are not set.
pub const ARC_DEFAULT_ENDPOINT: &str = "http://127.0.0.1:40342/metadata/identity/oauth2/token";
/// Where the Arc agent writes its challenge key files on Linux.
pub const ARC_TOKEN_DIR: &str = "/var/opt/azcmagent/tokens";
/// Environment variable overriding [`ARC_TOKEN_DIR`] (tests, unusual installs).
pub const ARC_TOKEN_DIR_ENV: &str = "TOLLGATE_ARC_TOKEN_DIR";
/// The Arc agent binary, whose presence alone means Arc (the SDKs disagree on the path).
const ARC_AGENT_PATHS: [&str; 2] = ["/opt/azcmagent/bin/himds", "/var/opt/azcmagent/bin/himds"];

/// Facts about the machine that detection needs besides the environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Platform {
    /// The Azure Arc agent (`himds`) is installed.
    pub arc_agent: bool,
}

impl Platform {
    /// Looks at the file system.
    pub fn detect() -> Platform {
        Platform {
            arc_agent: ARC_AGENT_PATHS.iter().any(|p| Path::new(p).exists()),
        }
    }
}

/// A managed-identity source and what it needs to be called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// App Service / Functions / Container Apps: `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`.
    AppService {
        /// The token URL, used verbatim.
        endpoint: Url,
        /// Sent as `X-IDENTITY-HEADER`.
        header: Secret<String>,
    },
    /// Legacy App Service / Azure ML: `MSI_ENDPOINT` + `MSI_SECRET`.
    AppService2017 {
        /// The token URL, used verbatim.
        endpoint: Url,
        /// Sent as `secret`.
        secret: Secret<String>,
    },
    /// Service Fabric: as App Service plus `IDENTITY_SERVER_THUMBPRINT`.
    ServiceFabric {
        /// The https token URL.
        endpoint: Url,
        /// Sent as `Secret`.
        header: Secret<String>,
        /// SHA-1 of the token service's self-signed certificate, 40 hex digits.
        thumbprint: String,
    },
    /// Cloud Shell: `MSI_ENDPOINT` alone; a POST.
    CloudShell {
        /// The token URL.
        endpoint: Url,
    },
    /// Azure Arc: `IDENTITY_ENDPOINT` + `IMDS_ENDPOINT`, or the agent installed.
    Arc {
        /// The token URL.
        endpoint: Url,
        /// The only directory challenge key files are read from.
        key_dir: PathBuf,
    },
    /// The Instance Metadata Service.
    Imds {
        /// The full token URL.
        endpoint: Url,
    },
}

impl Source {
    /// The source's name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Source::AppService { .. } => "App Service",
            Source::AppService2017 { .. } => "App Service (2017-09-01)",
            Source::ServiceFabric { .. } => "Service Fabric",
            Source::CloudShell { .. } => "Cloud Shell",
            Source::Arc { .. } => "Azure Arc",
            Source::Imds { .. } => "IMDS",
        }
    }

    /// The token URL.
    pub fn endpoint(&self) -> &Url {
        match self {
            Source::AppService { endpoint, .. }
            | Source::AppService2017 { endpoint, .. }
            | Source::ServiceFabric { endpoint, .. }
            | Source::CloudShell { endpoint }
            | Source::Arc { endpoint, .. }
            | Source::Imds { endpoint } => endpoint,
        }
    }
}

/// Detects the source. `imds_override` (the credential's `endpoint`) forces IMDS at that
/// base URL: an explicit setting beats the environment.
pub fn detect(
    env: Lookup<'_>,
    platform: &Platform,
    imds_override: Option<&Url>,
) -> Result<Source, CredentialError> {
    if let Some(base) = imds_override {
        return Ok(Source::Imds {
            endpoint: imds_url(base.as_str())?,
        });
    }
    let var = |name| env_var(env, name);
    let url = |name: &str, value: String| {
        Url::parse(&value).map_err(|e| CredentialError::Setup(format!("{name} is not a URL ({e})")))
    };
    if let (Some(endpoint), Some(header)) = (var("IDENTITY_ENDPOINT"), var("IDENTITY_HEADER")) {
        let endpoint = url("IDENTITY_ENDPOINT", endpoint)?;
        let header = Secret::new(header);
        return match var("IDENTITY_SERVER_THUMBPRINT") {
            Some(thumbprint) => Ok(Source::ServiceFabric {
                endpoint,
                header,
                thumbprint: super::pinned::normalise_thumbprint(&thumbprint)?,
            }),
            None => Ok(Source::AppService { endpoint, header }),
        };
    }
    if let Some(endpoint) = var("MSI_ENDPOINT") {
        let endpoint = url("MSI_ENDPOINT", endpoint)?;
        return Ok(match var("MSI_SECRET") {
            Some(secret) => Source::AppService2017 {
                endpoint,
                secret: Secret::new(secret),
            },
            None => Source::CloudShell { endpoint },
        });
    }
    let arc_vars = var("IMDS_ENDPOINT").and(var("IDENTITY_ENDPOINT"));
    if arc_vars.is_some() || platform.arc_agent {
        let endpoint = arc_vars.unwrap_or_else(|| ARC_DEFAULT_ENDPOINT.to_owned());
        return Ok(Source::Arc {
            endpoint: url("IDENTITY_ENDPOINT", endpoint)?,
            key_dir: var(ARC_TOKEN_DIR_ENV)
                .map_or_else(|| PathBuf::from(ARC_TOKEN_DIR), PathBuf::from),
        });
    }
    // AZURE_POD_IDENTITY_AUTHORITY_HOST replaces the IMDS address, as the SDKs allow.
    let base = var("AZURE_POD_IDENTITY_AUTHORITY_HOST").unwrap_or_else(|| IMDS_HOST.to_owned());
    Ok(Source::Imds {
        endpoint: imds_url(&base)?,
    })
}

/// The IMDS token URL under `base` (`http://169.254.169.254` → `…/metadata/identity/oauth2/token`).
pub fn imds_url(base: &str) -> Result<Url, CredentialError> {
    let joined = format!("{}{IMDS_TOKEN_PATH}", base.trim_end_matches('/'));
    Url::parse(&joined)
        .map_err(|e| CredentialError::Setup(format!("IMDS base URL {base:?} is not a URL ({e})")))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn run(vars: &[(&str, &str)], arc_agent: bool) -> Source {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |name: &str| map.get(name).cloned();
        detect(&env, &Platform { arc_agent }, None).unwrap()
    }

    #[test]
    fn detection_order() {
        let thumb = "0123456789abcdef0123456789ABCDEF01234567";
        type Case<'a> = (&'a [(&'a str, &'a str)], bool, &'a str);
        let cases: [Case; 10] = [
            (&[], false, "IMDS"),
            (
                &[
                    ("IDENTITY_ENDPOINT", "http://localhost:4141/MSI/token"),
                    ("IDENTITY_HEADER", "h"),
                ],
                false,
                "App Service",
            ),
            (
                &[
                    ("IDENTITY_ENDPOINT", "https://localhost:2377/t"),
                    ("IDENTITY_HEADER", "h"),
                    ("IDENTITY_SERVER_THUMBPRINT", thumb),
                ],
                false,
                "Service Fabric",
            ),
            (
                &[
                    ("MSI_ENDPOINT", "http://127.0.0.1:41741/t"),
                    ("MSI_SECRET", "s"),
                ],
                false,
                "App Service (2017-09-01)",
            ),
            (
                &[("MSI_ENDPOINT", "http://localhost:50342/oauth2/token")],
                false,
                "Cloud Shell",
            ),
            (
                &[
                    (
                        "IDENTITY_ENDPOINT",
                        "http://localhost:40342/metadata/identity/oauth2/token",
                    ),
                    ("IMDS_ENDPOINT", "http://localhost:40342"),
                ],
                false,
                "Azure Arc",
            ),
            (&[], true, "Azure Arc"),
            // Empty variables count as absent.
            (
                &[("IDENTITY_ENDPOINT", "http://x/t"), ("IDENTITY_HEADER", "")],
                false,
                "IMDS",
            ),
            (&[("MSI_ENDPOINT", "")], false, "IMDS"),
            // App Service wins over an installed Arc agent, as in the SDKs' order.
            (
                &[
                    ("IDENTITY_ENDPOINT", "http://localhost:4141/MSI/token"),
                    ("IDENTITY_HEADER", "h"),
                ],
                true,
                "App Service",
            ),
        ];
        for (vars, arc, want) in cases {
            assert_eq!(run(vars, arc).name(), want, "{vars:?} arc={arc}");
        }
    }

    #[test]
    fn endpoints_and_overrides() {
        let s = run(&[], false);
        assert_eq!(
            s.endpoint().as_str(),
            "http://169.254.169.254/metadata/identity/oauth2/token"
        );
        let s = run(
            &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://10.0.0.1:2579/")],
            false,
        );
        assert_eq!(
            s.endpoint().as_str(),
            "http://10.0.0.1:2579/metadata/identity/oauth2/token"
        );
        let s = run(&[], true);
        assert_eq!(
            s,
            Source::Arc {
                endpoint: Url::parse(ARC_DEFAULT_ENDPOINT).unwrap(),
                key_dir: PathBuf::from(ARC_TOKEN_DIR)
            }
        );
        let s = run(&[(ARC_TOKEN_DIR_ENV, "/tmp/keys")], true);
        assert!(matches!(s, Source::Arc { key_dir, .. } if key_dir == Path::new("/tmp/keys")));
        let forced = Url::parse("http://127.0.0.1:50342").unwrap();
        let env = |_: &str| Some("http://ignored".to_owned());
        let s = detect(&env, &Platform::default(), Some(&forced)).unwrap();
        assert_eq!(
            s.endpoint().as_str(),
            "http://127.0.0.1:50342/metadata/identity/oauth2/token"
        );
    }

    #[test]
    fn bad_values_are_setup_errors() {
        let env = |name: &str| match name {
            "IDENTITY_ENDPOINT" => Some("not a url".to_owned()),
            "IDENTITY_HEADER" => Some("h".to_owned()),
            _ => None,
        };
        assert!(matches!(
            detect(&env, &Platform::default(), None),
            Err(CredentialError::Setup(m)) if m.contains("IDENTITY_ENDPOINT")
        ));
        let env = |name: &str| match name {
            "IDENTITY_ENDPOINT" => Some("https://localhost:2377/t".to_owned()),
            "IDENTITY_HEADER" => Some("h".to_owned()),
            "IDENTITY_SERVER_THUMBPRINT" => Some("abc".to_owned()),
            _ => None,
        };
        assert!(detect(&env, &Platform::default(), None).is_err());
    }
}
