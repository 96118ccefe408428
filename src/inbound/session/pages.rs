//! The answers sign-in writes itself: a short HTML page for a browser, the JSON error body for
//! anything else, never a token, code or cookie in either.

use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::proxy::{Body, full, json_error};

/// Whether the client reads HTML (a browser's `Accept` names `text/html`).
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

/// A failure of a sign-in step: `error` is the code (also the metric's `result`), `message`
/// what the user should know.
pub fn failure(
    status: StatusCode,
    error: &'static str,
    message: &str,
    html: bool,
) -> Response<Body> {
    if !html {
        return json_error(status, error, message);
    }
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign-in failed</title></head>\n\
         <body><h1>Sign-in failed</h1>\n<p>{}</p>\n<p><small>error: {}</small></p>\n\
         <p><a href=\"/.auth/login/aad\">Sign in again</a></p></body></html>\n",
        escape(message),
        escape(error)
    );
    html_response(status, body)
}

/// A small page saying something went well (signed out).
pub fn notice(title: &str, message: &str) -> Response<Body> {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{0}</title></head>\n\
         <body><h1>{0}</h1>\n<p>{1}</p></body></html>\n",
        escape(title),
        escape(message)
    );
    html_response(StatusCode::OK, body)
}

/// `302 Found` to `location`, not to be cached.
pub fn redirect(location: &str) -> Response<Body> {
    let mut r = Response::new(full(String::new()));
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(value) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, value);
    } else {
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn html_response(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// HTML text escaping: `& < > " '`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        let r = failure(StatusCode::FORBIDDEN, "provider_error", "<script>", true);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        let r = failure(StatusCode::BAD_REQUEST, "state_mismatch", "x", false);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(
            redirect("/a\nb").status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
