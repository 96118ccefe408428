//! The claims of a verified token, with typed accessors for the ones routes and identity
//! headers use.

use serde_json::Value;

/// A date claim that is present but not a JSON number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the claim is not a number")]
pub struct NotANumber;

/// A token's claims (the JSON payload), parsed once per request, in the token's own order
/// (App Service's principal keeps it). A list, looked up by scanning: a token has a few dozen
/// claims, a request looks up about twenty, and a scan of short names costs no more than a
/// tree and far less than hashing them.
#[derive(Clone, Debug, Default)]
pub struct Claims(Vec<(String, Value)>);

impl Claims {
    /// Parses a JSON object. A claim named twice makes the payload invalid: the upstream's
    /// parser might keep the other value than the one tollgate checked.
    pub fn parse(json: &[u8]) -> Option<Claims> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let list = serde::de::DeserializeSeed::deserialize(UniqueKeys, &mut de).ok()?;
        de.end().ok()?;
        Some(Claims(list))
    }

    /// A claim, any type.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// A string claim.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// Every claim, in the token's own order (App Service's principal keeps it).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter().map(|(n, v)| (n, v))
    }

    /// The string values of a claim that is a string or an array of strings.
    pub fn strings<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let value = self.get(name);
        let one = value.and_then(Value::as_str);
        let many = value
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        one.into_iter().chain(many)
    }

    /// Whether the token says its `groups` did not fit (an overage token): `_claim_names`
    /// names `groups`, or `hasgroups` is `true` (implicit-flow tokens). Its `_claim_sources`
    /// URL is never used: groups are resolved from the configured Graph endpoint.
    pub fn is_groups_overage(&self) -> bool {
        let named = self
            .get("_claim_names")
            .and_then(Value::as_object)
            .is_some_and(|names| names.contains_key("groups"));
        named || self.get("hasgroups") == Some(&Value::Bool(true))
    }

    /// These claims with `groups` set to `groups` (resolved with Graph) in place of the
    /// overage markers (`_claim_names`, `_claim_sources`, `hasgroups`), so identity headers and
    /// the Easy Auth principal carry the resolved groups.
    pub fn with_groups<'g>(&self, groups: impl Iterator<Item = &'g str>) -> Claims {
        let mut list: Vec<(String, Value)> = self
            .0
            .iter()
            .filter(|(n, _)| {
                !matches!(
                    n.as_str(),
                    "groups" | "_claim_names" | "_claim_sources" | "hasgroups"
                )
            })
            .cloned()
            .collect();
        let groups = groups.map(|g| Value::String(g.to_owned())).collect();
        list.push(("groups".to_owned(), Value::Array(groups)));
        Claims(list)
    }

    /// `roles`: app roles (an array).
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.strings("roles")
    }

    /// `scp`: delegated scopes, space separated.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.str("scp")
            .into_iter()
            .flat_map(str::split_ascii_whitespace)
    }

    /// The calling application: `azp` (v2 tokens) or `appid` (v1).
    pub fn client_app(&self) -> Option<&str> {
        self.str("azp").or_else(|| self.str("appid"))
    }

    /// `tid`: the tenant.
    pub fn tenant(&self) -> Option<&str> {
        self.str("tid")
    }

    /// `oid`: the caller's object id.
    pub fn object_id(&self) -> Option<&str> {
        self.str("oid")
    }

    /// `iss`.
    pub fn issuer(&self) -> Option<&str> {
        self.str("iss")
    }

    /// A NumericDate claim (`exp`, `nbf`, `iat`): `Ok(None)` when absent, `Err` when present
    /// but not a number.
    pub fn numeric_date(&self, name: &str) -> Result<Option<f64>, NotANumber> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or(NotANumber),
        }
    }

    /// Whether the claim (or, for an array claim, one element) equals one of `allowed`.
    /// Numbers and booleans compare by their JSON text (`2` matches `"2"`).
    pub fn matches(&self, name: &str, allowed: &[String]) -> bool {
        fn one(value: &Value, allowed: &[String]) -> bool {
            match value {
                Value::String(s) => allowed.iter().any(|a| a == s),
                Value::Number(n) => allowed.iter().any(|a| *a == n.to_string()),
                Value::Bool(b) => allowed
                    .iter()
                    .any(|a| a == if *b { "true" } else { "false" }),
                Value::Array(items) => items.iter().any(|v| !v.is_array() && one(v, allowed)),
                Value::Null | Value::Object(_) => false,
            }
        }
        self.get(name).is_some_and(|v| one(v, allowed))
    }

    /// A claim as header text: strings as they are, arrays joined with `,`, other values as
    /// JSON. `None` when absent.
    pub fn header_text(&self, name: &str) -> Option<String> {
        fn text(v: &Value) -> String {
            match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }
        }
        match self.get(name)? {
            Value::Array(items) => Some(items.iter().map(text).collect::<Vec<_>>().join(",")),
            Value::Null => None,
            other => Some(text(other)),
        }
    }
}

/// Deserializes a JSON object, refusing duplicate member names at the top level.
struct UniqueKeys;

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys {
    type Value = Vec<(String, Value)>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = Vec<(String, Value)>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object with unique member names")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut access: A,
    ) -> Result<Self::Value, A::Error> {
        let mut list = Vec::with_capacity(access.size_hint().unwrap_or(16).min(64));
        while let Some(entry) = access.next_entry::<String, Value>()? {
            list.push(entry);
        }
        // Duplicates by sorting the names, not by comparing each with all: a 16 KiB payload
        // of tiny claims must not cost a quadratic scan before its signature is checked.
        let mut names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(serde::de::Error::custom(format_args!(
                "duplicate claim {}",
                pair[0]
            )));
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: &str) -> Claims {
        Claims::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn accessors() {
        let c = claims(
            r#"{"roles":["a","b"],"scp":"read  write","appid":"app1","tid":"t","oid":"o","exp":17.5,"nbf":"x","n":2,"ok":true}"#,
        );
        assert_eq!(c.roles().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(c.scopes().collect::<Vec<_>>(), ["read", "write"]);
        assert_eq!(c.client_app(), Some("app1"));
        assert_eq!((c.tenant(), c.object_id()), (Some("t"), Some("o")));
        assert_eq!(c.numeric_date("exp"), Ok(Some(17.5)));
        assert_eq!(c.numeric_date("iat"), Ok(None));
        assert_eq!(c.numeric_date("nbf"), Err(NotANumber));
        assert!(c.matches("n", &["2".into()]));
        assert!(c.matches("ok", &["true".into()]));
        assert!(c.matches("roles", &["x".into(), "b".into()]));
        assert!(!c.matches("roles", &["ab".into()]));
        assert!(!c.matches("missing", &["x".into()]));
        assert_eq!(c.header_text("roles").as_deref(), Some("a,b"));
        assert_eq!(c.header_text("n").as_deref(), Some("2"));
        assert!(Claims::parse(b"[1]").is_none());
        assert!(Claims::parse(br#"{"roles":["a"],"roles":["Admin"]}"#).is_none());
        assert!(Claims::parse(br#"{"a":1} x"#).is_none());
        let azp = claims(r#"{"azp":"v2app","appid":"v1app"}"#);
        assert_eq!(azp.client_app(), Some("v2app"));
    }
}
