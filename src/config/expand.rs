//! `${VAR}` and `${VAR:-default}` expansion in string values, with the environment passed in.

/// Looks a variable up in some environment: the process's in production, a map in tests.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// An environment shareable across tasks: reloads expand with it, credentials read from it.
pub type SharedEnv = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Expands `${VAR}` and `${VAR:-default}` in `text`.
///
/// - `${VAR}` must be set (an empty value counts as set); an unset variable is an error, so a
///   forgotten `TENANT_ID` cannot silently become an empty issuer.
/// - `${VAR:-default}` takes `default` when `VAR` is unset or empty, as the shell does.
/// - `$${` writes a literal `${`; any other `$` is kept as it is.
///
/// Returns the byte offset (into `text`) of the failing reference with the message.
pub fn expand(text: &str, env: Lookup<'_>) -> Result<String, (usize, String)> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let offset = text.len() - rest.len() + at;
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(close) = tail.find('}') else {
                return Err((
                    offset,
                    "unclosed \"${\": write ${NAME} or $${ for a literal".into(),
                ));
            };
            let inner = &tail[..close];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_variable_name(name) {
                return Err((
                    offset,
                    format!("invalid environment variable name {name:?}"),
                ));
            }
            match (env(name), default) {
                (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err((
                        offset,
                        format!(
                            "environment variable {name} is not set (use ${{{name}:-default}} to give a default)"
                        ),
                    ));
                }
            }
            rest = &tail[close + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env() -> HashMap<&'static str, &'static str> {
        HashMap::from([("TENANT", "t1"), ("EMPTY", ""), ("PORT", "8080")])
    }

    fn run(text: &str) -> Result<String, (usize, String)> {
        let env = env();
        expand(text, &|name| env.get(name).map(|v| v.to_string()))
    }

    #[test]
    fn expands() {
        let cases = [
            ("plain", "plain"),
            ("${TENANT}", "t1"),
            ("https://x/${TENANT}/v2.0", "https://x/t1/v2.0"),
            ("${MISSING:-d}", "d"),
            ("${EMPTY:-d}", "d"),
            ("${EMPTY}", ""),
            ("${TENANT:-d}", "t1"),
            ("${MISSING:-}", ""),
            ("0.0.0.0:${PORT}", "0.0.0.0:8080"),
            ("$${TENANT}", "${TENANT}"),
            ("cost $5", "cost $5"),
            ("$", "$"),
            ("${TENANT}${PORT}", "t18080"),
        ];
        for (text, want) in cases {
            assert_eq!(run(text).as_deref(), Ok(want), "expand({text:?})");
        }
    }

    #[test]
    fn refuses() {
        let cases = [
            ("${MISSING}", 0, "MISSING is not set"),
            ("ab${MISSING}", 2, "MISSING is not set"),
            ("${TENANT", 0, "unclosed"),
            ("${1X}", 0, "invalid environment variable name"),
            ("${}", 0, "invalid environment variable name"),
        ];
        for (text, offset, message) in cases {
            let (at, got) = run(text).unwrap_err();
            assert_eq!(at, offset, "{text:?}");
            assert!(got.contains(message), "{text:?}: {got}");
        }
    }
}
