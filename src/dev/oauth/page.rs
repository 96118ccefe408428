//! The HTML the provider serves: the sign-in page (a plain form, no script), the page that
//! posts a `form_post` response to the redirect URI, and the error and signed-out pages.
//! Every value written into a page goes through [`escape`].

use std::fmt::Write;

use super::DevUser;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem}\
label{display:block;margin-top:.8rem}input[type=text]{width:100%;padding:.3rem}\
.error{color:#a00}code{word-break:break-all}button{margin-top:1.2rem;padding:.4rem 1rem}";

/// What the sign-in page shows and sends back.
pub(super) struct SignIn<'a> {
    /// Where the form posts: the authorize path the page was asked for.
    pub action: &'a str,
    /// The authorize parameters, echoed as hidden fields.
    pub hidden: &'a [(&'a str, &'a str)],
    /// The client asking.
    pub client_id: &'a str,
    /// The scopes asked for.
    pub scope: &'a str,
    /// The values the fields start with.
    pub user: &'a DevUser,
    /// Why the last submission was refused, if it was.
    pub message: Option<&'a str>,
}

/// Text with `&`, `<`, `>`, `"` and `'` replaced by entities: the sign-in pages' escaping.
pub(super) use crate::inbound::session::pages::escape;

/// The page that picks the user. Field names and ids: `name`, `preferred_username`, `oid`,
/// `roles`, `groups`; buttons `sign-in` and `cancel` (both `name="action"`).
pub(super) fn sign_in(page: &SignIn<'_>) -> String {
    let mut body = format!(
        "<h1>Sign in to tollgate dev</h1>\n<p>Application <code>{}</code> asks for <code>{}</code>.</p>\n",
        escape(page.client_id),
        escape(page.scope)
    );
    if let Some(message) = page.message {
        let _ = writeln!(
            body,
            "<p class=\"error\" id=\"error\">{}</p>",
            escape(message)
        );
    }
    let _ = writeln!(
        body,
        "<form method=\"post\" action=\"{}\">",
        escape(page.action)
    );
    for (name, value) in page.hidden {
        let _ = writeln!(body, "{}", hidden(name, value));
    }
    let user = page.user;
    let fields = [
        ("name", "Name (name)", user.name.clone()),
        (
            "preferred_username",
            "User name (preferred_username)",
            user.preferred_username.clone(),
        ),
        ("oid", "Object id (oid, a GUID)", user.oid.clone()),
        (
            "roles",
            "App roles (roles, comma separated)",
            user.roles.join(","),
        ),
        (
            "groups",
            "Group object ids (groups, comma separated)",
            user.groups.join(","),
        ),
    ];
    for (name, label, value) in fields {
        let _ = writeln!(
            body,
            "<label for=\"{name}\">{label}</label><input type=\"text\" id=\"{name}\" name=\"{name}\" value=\"{}\">",
            escape(&value)
        );
    }
    body.push_str(
        "<button type=\"submit\" id=\"sign-in\" name=\"action\" value=\"sign_in\">Sign in</button>\n\
         <button type=\"submit\" id=\"cancel\" name=\"action\" value=\"cancel\">Cancel</button>\n</form>\n",
    );
    document("Sign in - tollgate dev", &body, "")
}

/// The `form_post` response: a form posting `fields` to `redirect_uri`, submitted on load
/// (with a button for browsers without script), as Entra's page does.
pub(super) fn form_post(redirect_uri: &str, fields: &[(&str, &str)]) -> String {
    let mut body = format!(
        "<form method=\"post\" action=\"{}\">\n",
        escape(redirect_uri)
    );
    for (name, value) in fields {
        let _ = writeln!(body, "{}", hidden(name, value));
    }
    body.push_str(
        "<noscript><p>Script is disabled. Click Submit to continue.</p><input type=\"submit\" value=\"Submit\"></noscript>\n</form>\n",
    );
    document(
        "Working...",
        &body,
        " onload=\"document.forms[0].submit()\"",
    )
}

/// An error that cannot go back to the client (unknown client, unregistered redirect URI).
pub(super) fn error(code: u32, message: &str) -> String {
    let body = format!(
        "<h1>Sorry, but we're having trouble signing you in.</h1>\n<p id=\"error\">AADSTS{code}: {}</p>\n",
        escape(message)
    );
    document("Sign in error - tollgate dev", &body, "")
}

/// Sign-out without a registered place to go back to.
pub(super) fn signed_out() -> String {
    let body =
        "<h1>You have signed out</h1>\n<p>It's a good idea to close all browser windows.</p>\n";
    document("Signed out - tollgate dev", body, "")
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        escape(name),
        escape(value)
    )
}

fn document(title: &str, body: &str, body_attributes: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style></head>\n<body{body_attributes}>\n{body}</body>\n</html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_escaped() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        let user = DevUser {
            name: "\"><script>alert(1)</script>".into(),
            ..DevUser::default()
        };
        let html = sign_in(&SignIn {
            action: "/oauth2/v2.0/authorize",
            hidden: &[("state", "\"><img src=x onerror=alert(2)>")],
            client_id: "<c>",
            scope: "openid <b>",
            user: &user,
            message: Some("<i>bad</i>"),
        });
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<i>bad"), "{html}");
        assert!(!html.contains("<c>"), "{html}");
        assert!(
            html.contains("id=\"sign-in\"") && html.contains("id=\"cancel\""),
            "{html}"
        );
        let posted = form_post("http://127.0.0.1:1/cb?a=\"b\"", &[("code", "<x>")]);
        assert!(
            posted.contains("action=\"http://127.0.0.1:1/cb?a=&quot;b&quot;\""),
            "{posted}"
        );
        assert!(posted.contains("value=\"&lt;x&gt;\""), "{posted}");
    }
}
