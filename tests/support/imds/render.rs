//! What each mocked service checks and how it answers: each managed-identity source's wire
//! format and the Entra token endpoint's, quirks included.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::{Flavor, Id, Logged, Reply, State};

/// Status, extra headers and JSON body.
pub(crate) type Answer = (u16, Vec<(&'static str, String)>, Value);

/// How App Service 2017 writes `expires_on`.
#[derive(Clone, Copy, Debug)]
pub enum DateStyle {
    /// Linux hosts: `06/20/2019 02:57:58 +00:00`.
    Linux,
    /// Windows hosts: `1/16/2020 5:24:12 AM +00:00`.
    Windows,
    /// Azure ML under the same variables: an integer epoch.
    IntEpoch,
}

/// A JWT-shaped token with `claims` (signed by no one: the downstream here is an echo).
pub fn mint_jwt(claims: &Value) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "mock"});
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(b"mock-signature")
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn imds_error(status: u16, error: &str, description: &str) -> Answer {
    (
        status,
        vec![],
        json!({"error": error, "error_description": description}),
    )
}

/// The refusal a real service gives before looking at the script, if any.
pub(crate) fn check(state: &State, l: &Logged) -> Option<Answer> {
    match &state.flavor {
        Flavor::Imds => check_imds(state, l),
        Flavor::Arc { key_dir, key } => check_arc(key_dir, key, l),
        Flavor::AppService { header } => {
            if l.header("x-identity-header") != Some(header) {
                return Some(app_error(400, "X-IDENTITY-HEADER is missing or invalid"));
            }
            if l.param("api-version") != Some("2019-08-01") || !has_resource(l) {
                return Some(app_error(
                    400,
                    "api-version 2019-08-01 and resource are required",
                ));
            }
            let names = [
                ("client_id", 'c'),
                ("principal_id", 'o'),
                ("object_id", 'o'),
                ("mi_res_id", 'r'),
            ];
            selected_ok(state, select(l, &names))
        }
        Flavor::AppService2017 { secret, .. } => {
            if l.header("secret") != Some(secret) {
                return Some(app_error(400, "secret header is missing or invalid"));
            }
            if l.param("api-version") != Some("2017-09-01") || !has_resource(l) {
                return Some(app_error(
                    400,
                    "api-version 2017-09-01 and resource are required",
                ));
            }
            selected_ok(state, select(l, &[("clientid", 'c')]))
        }
        Flavor::ServiceFabric { secret } => check_service_fabric(secret, l),
        Flavor::CloudShell => {
            let form_resource = l.field("resource").is_some_and(|r| !r.is_empty());
            let metadata = l.header("metadata") == Some("true");
            (l.method != "POST" || !metadata || !form_resource).then(|| {
                nested(
                    400,
                    "BadRequest",
                    "POST a form with resource and Metadata: true",
                )
            })
        }
        Flavor::Entra(config) => super::entra::check(state, config, l),
    }
}

fn has_resource(l: &Logged) -> bool {
    l.param("resource").is_some_and(|r| !r.is_empty())
}

fn no_metadata(l: &Logged) -> Option<Answer> {
    // IMDS's SSRF guard: 400 bad_request_102 unless `Metadata: true`, the lower-case value
    // exactly.
    (l.header("metadata") != Some("true")).then(|| {
        imds_error(
            400,
            "bad_request_102",
            "Required metadata header not specified",
        )
    })
}

fn check_imds(state: &State, l: &Logged) -> Option<Answer> {
    if let Some(refusal) = no_metadata(l) {
        return Some(refusal);
    }
    if l.param("api-version").is_none_or(|v| v < "2018-02-01") {
        return Some(imds_error(400, "invalid_request", "Invalid api-version"));
    }
    if !has_resource(l) {
        return Some(imds_error(
            400,
            "invalid_request",
            "Required query variable 'resource' is missing",
        ));
    }
    let selected = select(
        l,
        &[("client_id", 'c'), ("object_id", 'o'), ("msi_res_id", 'r')],
    );
    selected_ok(state, selected)
}

fn check_arc(key_dir: &std::path::Path, key: &str, l: &Logged) -> Option<Answer> {
    if let Some(refusal) = no_metadata(l) {
        return Some(refusal);
    }
    // Arc: challenge first; the key file's raw contents are the answer.
    if l.header("authorization") != Some(&format!("Basic {key}")) {
        let realm = format!("Basic realm={}", key_dir.join("mock.key").display());
        return Some((
            401,
            vec![("www-authenticate", realm)],
            json!({"error": "unauthorized"}),
        ));
    }
    (!has_resource(l)).then(|| imds_error(400, "invalid_request", "resource is missing"))
}

fn check_service_fabric(secret: &str, l: &Logged) -> Option<Answer> {
    if l.header("secret") != Some(secret) {
        return Some(nested(
            401,
            "SecretHeaderNotFound",
            "Secret is not found in the request headers.",
        ));
    }
    if l.param("api-version") != Some("2019-07-01-preview") {
        return Some(nested(
            400,
            "InvalidApiVersion",
            "The api-version '' is not supported. Supported version is '2019-07-01-preview'.",
        ));
    }
    (!has_resource(l)).then(|| nested(400, "ArgumentNullOrEmpty", "resource is missing"))
}

/// The identity a request selects with this service's parameter names; more than one is an
/// error (`Err`), as the services allow at most one.
fn select(l: &Logged, names: &[(&str, char)]) -> Result<Option<Id>, ()> {
    let mut found = names.iter().filter_map(|(n, kind)| {
        l.param(n).map(|v| match kind {
            'c' => Id::Client(v.to_owned()),
            'o' => Id::Object(v.to_owned()),
            _ => Id::Resource(v.to_owned()),
        })
    });
    let first = found.next();
    if found.next().is_some() {
        Err(())
    } else {
        Ok(first)
    }
}

fn selected_ok(state: &State, selected: Result<Option<Id>, ()>) -> Option<Answer> {
    match selected {
        Err(()) => Some(imds_error(
            400,
            "invalid_request",
            "Only one of client_id, object_id or msi_res_id may be given",
        )),
        Ok(id) if !state.assigned(id.as_ref()) => {
            Some(imds_error(400, "invalid_request", "Identity not found"))
        }
        Ok(_) => None,
    }
}

fn app_error(status: u16, message: &str) -> Answer {
    (
        status,
        vec![],
        json!({"statusCode": status, "message": message, "correlationId": "00000000-0000-0000-0000-000000000000"}),
    )
}

fn nested(status: u16, code: &str, message: &str) -> Answer {
    (
        status,
        vec![],
        json!({"error": {"correlationId": "c0ffee", "code": code, "message": message}}),
    )
}

/// The answer for a request that passed the checks.
pub(crate) fn reply(state: &State, l: &Logged, reply: Reply) -> Answer {
    match reply {
        Reply::Token { lifetime } => token(state, l, lifetime),
        Reply::Status {
            status,
            retry_after,
        } => {
            let mut answer = error_for(&state.flavor, status);
            if let Some(secs) = retry_after {
                answer.1.push(("retry-after", secs.to_string()));
            }
            answer
        }
        Reply::IdentityNotFound => imds_error(400, "invalid_request", "Identity not found"),
        Reply::Json { status, body } => (status, vec![], body),
    }
}

fn error_for(flavor: &Flavor, status: u16) -> Answer {
    let (error, description) = match status {
        404 => ("not_found", "IMDS endpoint is updating"),
        410 => (
            "gone",
            "IMDS is going through updates; available within 70 seconds",
        ),
        429 => ("too_many_requests", "Too many requests"),
        _ => (
            "unknown",
            "Failed to retrieve token from the Active directory. For details see logs",
        ),
    };
    match flavor {
        Flavor::Imds | Flavor::Arc { .. } => imds_error(status, error, description),
        Flavor::AppService { .. } | Flavor::AppService2017 { .. } => app_error(status, description),
        Flavor::ServiceFabric { .. } | Flavor::CloudShell => nested(status, error, description),
        Flavor::Entra(_) => {
            super::entra::error(status, "temporarily_unavailable", 50196, description)
        }
    }
}

fn token(state: &State, l: &Logged, lifetime: u64) -> Answer {
    let resource = match &state.flavor {
        Flavor::CloudShell => l.field("resource"),
        Flavor::Entra(_) => l.field("scope").map(|s| s.trim_end_matches("/.default")),
        _ => l.param("resource"),
    }
    .unwrap_or_default()
    .to_owned();
    let (iat, exp) = (now(), now() + lifetime);
    let n = state.count_issued() + 1;
    let mut claims = json!({
        "aud": resource, "iss": "https://sts.windows.net/11111111-1111-1111-1111-111111111111/",
        "iat": iat, "nbf": iat, "exp": exp, "appid": "a0a0a0a0-0000-0000-0000-000000000001",
        "oid": "0b0b0b0b-0000-0000-0000-000000000002", "tid": "11111111-1111-1111-1111-111111111111",
        "roles": ["Orders.Read", "Orders.Write"], "uti": format!("mock-{n}"),
    });
    // On behalf of a user: the assertion's user, the scope's permission, no app roles.
    if super::entra::is_obo(l)
        && let Some((_, user)) = l.field("assertion").and_then(super::entra::decode)
    {
        let scope = l.field("scope").unwrap_or_default();
        let scp = scope.rsplit('/').next().unwrap_or_default();
        for name in ["oid", "tid", "sub", "name", "preferred_username"] {
            claims[name] = user[name].clone();
        }
        claims["scp"] = json!(if scp == ".default" {
            "user_impersonation"
        } else {
            scp
        });
        claims.as_object_mut().expect("an object").remove("roles");
    }
    let access = state.issue(mint_jwt(&claims));
    let body = match &state.flavor {
        // IMDS: every value a string, the full field set.
        Flavor::Imds | Flavor::Arc { .. } => json!({
            "access_token": access, "refresh_token": "", "expires_in": lifetime.to_string(),
            "expires_on": exp.to_string(), "ext_expires_in": lifetime.to_string(),
            "not_before": iat.to_string(), "resource": resource, "token_type": "Bearer",
            "client_id": "a0a0a0a0-0000-0000-0000-000000000001",
        }),
        // App Service 2019: a string epoch, no expires_in.
        Flavor::AppService { .. } => json!({
            "access_token": access, "expires_on": exp.to_string(), "resource": resource,
            "token_type": "Bearer", "client_id": "a0a0a0a0-0000-0000-0000-000000000001",
        }),
        // App Service 2017: a date string, or Azure ML's integer.
        Flavor::AppService2017 { style, .. } => json!({
            "access_token": access, "expires_on": date(exp, *style), "resource": resource,
            "token_type": "Bearer",
        }),
        // Service Fabric: a number.
        Flavor::ServiceFabric { .. } => json!({
            "token_type": "Bearer", "access_token": access, "expires_on": exp, "resource": resource,
        }),
        Flavor::CloudShell => json!({
            "access_token": access, "expires_in": lifetime.to_string(), "expires_on": exp.to_string(),
            "resource": resource, "token_type": "Bearer",
        }),
        // Entra v2: numbers.
        Flavor::Entra(_) => json!({
            "token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
            "access_token": access,
        }),
    };
    (200, vec![], body)
}

/// `exp` in App Service 2017's formats, computed without the code under test.
fn date(exp: u64, style: DateStyle) -> Value {
    if let DateStyle::IntEpoch = style {
        return json!(exp);
    }
    let (mut days, rem) = (exp / 86_400, exp % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let mut year = 1970;
    loop {
        let len = if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) {
            366
        } else {
            365
        };
        if days < len {
            break;
        }
        days -= len;
        year += 1;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let months = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while days >= months[month] {
        days -= months[month];
        month += 1;
    }
    let (month, day) = (month + 1, days + 1);
    Value::String(match style {
        DateStyle::Linux => format!("{month:02}/{day:02}/{year} {h:02}:{m:02}:{s:02} +00:00"),
        _ => {
            let (h12, half) = match h {
                0 => (12, "AM"),
                1..=11 => (h, "AM"),
                12 => (12, "PM"),
                _ => (h - 12, "PM"),
            };
            format!("{month}/{day}/{year} {h12}:{m:02}:{s:02} {half} +00:00")
        }
    })
}
