//! Header rewriting on the way through: hop-by-hop removal (RFC 9110 §7.6.1), the
//! forwarding headers only a proxy may set, and `X-Forwarded-For/-Proto/-Host`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1, plus the
/// non-standard `Keep-Alive` and `Proxy-Connection` that old clients still send). A `static`,
/// not a `const`: a `const` array is built anew (and dropped) at every use.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop headers and every header the `Connection` header names. Returns the
/// `Upgrade` value when the message asks for a protocol upgrade (`Connection: upgrade`), so
/// the caller can put it back for the next hop; otherwise `Upgrade` is removed too.
///
/// Runs twice per proxied request (request and response), so it first finds which of the
/// fixed names are present in one pass over the message's names (`hop_by_hop_index`) and
/// removes only those: hashing all nine names for `remove` when, as almost always, at most
/// `Connection: keep-alive` is there, cost ~3,100 instructions per proxied request, of
/// ~45,000 in all (callgrind, bench/load.sh setup); this way it costs about a third of that.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    let mut present = [false; HOP_BY_HOP.len()];
    let mut has_upgrade = false;
    for name in headers.keys() {
        match hop_by_hop_index(name) {
            Some(i) => present[i] = true,
            None => has_upgrade |= name == header::UPGRADE,
        }
    }
    let mut upgrade_requested = false;
    // HOP_BY_HOP[0] is Connection.
    if present[0] {
        // Names listed in Connection are hop-by-hop too. Collect them first: the list is
        // usually just "keep-alive" or "upgrade", so this rarely allocates.
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if token.eq_ignore_ascii_case("upgrade") {
                    upgrade_requested = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    // The usual token, and a name of HOP_BY_HOP: removed below if present.
                } else if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(name);
                }
            }
        }
        for name in &named {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    let upgrade = if has_upgrade {
        headers.remove(header::UPGRADE)
    } else {
        None
    };
    if upgrade_requested { upgrade } else { None }
}

/// Whether a header is hop-by-hop whatever `Connection` says: the fixed names and `Upgrade`.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop_index(name).is_some() || name == header::UPGRADE
}

/// The index in [`HOP_BY_HOP`] of a header name. Matching the name's text costs a length
/// comparison for most names; comparing `HeaderName`s with each entry cost ~550 instructions
/// per message (callgrind).
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    let index = match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        _ => return None,
    };
    debug_assert_eq!(HOP_BY_HOP[index], name);
    Some(index)
}

/// Joins several `Cookie` headers into one, `; `-separated: HTTP/2 clients may send each
/// cookie as its own field (RFC 9113 §8.2.3), an HTTP/1.1 message must carry one (RFC 6265
/// §5.4), and the upstream is spoken to in HTTP/1.1.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for value in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(joined) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, joined);
    }
}

/// Puts an upgrade request back for the next hop after [`strip_hop_by_hop`].
pub fn restore_upgrade(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

/// Removes every header through which a backend could be told something about the
/// connection or the request that only a proxy may say: the client's address, the scheme,
/// host, port or path prefix it came in by, the URL or method it "originally" had, or a
/// client certificate (Spring's `ForwardedHeaderFilter`, ASP.NET Core's forwarded-headers
/// and certificate-forwarding middleware, IIS URL rewrite and Symfony honour these). Each is
/// matched in either spelling, `-` or `_` (CGI-style servers read both alike).
/// `X-Forwarded-For`, `-Proto` and `-Host` stay for [`Forwarded::apply`] or the lean client
/// to rewrite; from a `trusted` peer (`[server] trusted_proxies`) so does `X-Forwarded-Port`.
/// `Forwarded` (RFC 7239) is always removed: tollgate speaks `X-Forwarded-*` only, so a
/// backend never sees two accounts that disagree.
pub fn strip_forwarding(headers: &mut HeaderMap, trusted: bool) {
    // Collecting into an empty Vec does not allocate: the usual request pays one pass over
    // its names, each matched by length first.
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            if name.contains('_') {
                // Even the ones kept or rewritten: tollgate keeps and rewrites only the `-`
                // spelling.
                let folded = name.replace('_', "-");
                return is_forwarding(&folded, false)
                    || matches!(
                        folded.as_str(),
                        "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
                    );
            }
            is_forwarding(name, trusted)
        })
        .cloned()
        .collect();
    for name in doomed {
        tracing::debug!(header = %name, "removed client-supplied forwarding header");
        headers.remove(name);
    }
}

/// Whether a (lower-case, `-` spelled) name is one of [`FORWARDING_HEADERS`](crate::header_names::FORWARDING_HEADERS) to remove
/// (`X-Forwarded-Port` only from peers that are not trusted proxies): a
/// `match`, which compares lengths first, where a scan of the list would not.
fn is_forwarding(name: &str, trusted: bool) -> bool {
    match name {
        "x-forwarded-port" => !trusted,
        // RFC 7239, and the client's address.
        "forwarded"
        | "x-real-ip"
        | "x-client-ip"
        | "client-ip"
        | "true-client-ip"
        | "x-cluster-client-ip"
        | "cf-connecting-ip"
        | "fastly-client-ip"
        | "x-original-forwarded-for"
        | "x-original-for"
        | "x-azure-clientip"
        | "x-azure-socketip" => true,
        // The scheme, host and path prefix the request came in by.
        "x-forwarded-prefix" | "x-forwarded-server" | "x-forwarded-scheme" | "x-forwarded-ssl"
        | "x-forwarded-path" | "x-forwarded-uri" | "x-url-scheme" | "front-end-https"
        | "x-original-host" | "x-original-proto" | "x-host" | "x-arr-ssl"
        | "x-appservice-proto" => true,
        // The URL or method the request "originally" had.
        "x-original-url"
        | "x-rewrite-url"
        | "x-original-uri"
        | "x-original-method"
        | "x-http-method-override"
        | "x-http-method"
        | "x-method-override"
        | "x-waws-unencoded-url" => true,
        // A client certificate vouched for by a proxy.
        "x-arr-clientcert"
        | "x-client-cert"
        | "x-ssl-client-cert"
        | "x-forwarded-client-cert"
        | "ssl-client-cert"
        | "x-ssl-cert"
        | "x-client-verify"
        | "x-ssl-client-verify" => true,
        _ => false,
    }
}

/// The `X-Forwarded-*` values of this hop, for [`Forwarded::apply`], or for the lean client to
/// write as it encodes the request head (no insertions into the header map).
#[derive(Clone, Copy, Debug)]
pub struct Forwarded<'a> {
    /// The client's IP: `X-Forwarded-For`.
    pub peer_ip: &'a HeaderValue,
    /// `http` or `https`: `X-Forwarded-Proto`.
    pub scheme: &'static str,
    /// The host the client asked for: `X-Forwarded-Host` (removed when `None`).
    pub host: Option<&'a HeaderValue>,
    /// The peer is a trusted proxy: its `X-Forwarded-For` is appended to, and its
    /// `X-Forwarded-Proto` and `-Host` are kept when present. Otherwise the client's are
    /// replaced by this hop's.
    pub trusted: bool,
}

impl Forwarded<'_> {
    /// Sets the headers on a header map.
    pub fn apply(self, headers: &mut HeaderMap) {
        if self.trusted {
            append_forwarded_for(headers, self.peer_ip);
        } else {
            headers.insert(X_FORWARDED_FOR.clone(), self.peer_ip.clone());
        }
        if !(self.trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
            headers.insert(
                X_FORWARDED_PROTO.clone(),
                HeaderValue::from_static(self.scheme),
            );
        }
        if !(self.trusted && headers.contains_key(&X_FORWARDED_HOST)) {
            match self.host {
                Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host.clone()),
                None => headers.remove(&X_FORWARDED_HOST),
            };
        }
    }
}

/// Appends `peer_ip` to `X-Forwarded-For`, folding earlier values (possibly several headers)
/// into one list.
fn append_forwarded_for(headers: &mut HeaderMap, peer_ip: &HeaderValue) {
    // One hash of the name for the test and the insert.
    match headers.entry(&X_FORWARDED_FOR) {
        header::Entry::Vacant(entry) => {
            entry.insert(peer_ip.clone());
        }
        header::Entry::Occupied(mut entry) => {
            let mut list = Vec::with_capacity(64);
            for v in entry.iter() {
                if !list.is_empty() {
                    list.extend_from_slice(b", ");
                }
                list.extend_from_slice(v.as_bytes());
            }
            list.extend_from_slice(b", ");
            list.extend_from_slice(peer_ip.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&list) {
                // Replaces every earlier value.
                entry.insert(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header_names::FORWARDING_HEADERS;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn every_hop_by_hop_name_has_its_index() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop_index(&header::UPGRADE), None);
        assert_eq!(hop_by_hop_index(&header::HOST), None);
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret, x-other"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("upgrade", "h2c"),
            ("accept", "*/*"),
        ]);
        assert_eq!(strip_hop_by_hop(&mut h), None);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
    }

    #[test]
    fn leaves_end_to_end_headers_alone() {
        let mut h = map(&[("content-length", "3"), ("x-a", "1")]);
        assert_eq!(strip_hop_by_hop(&mut h), None);
        assert_eq!(h.len(), 2);
        let mut h = map(&[("connection", "keep-alive"), ("keep-alive", "timeout=5")]);
        assert_eq!(strip_hop_by_hop(&mut h), None);
        assert!(h.is_empty());
        // Upgrade without `Connection: upgrade` is not an upgrade request.
        let mut h = map(&[("upgrade", "websocket"), ("te", "trailers")]);
        assert_eq!(strip_hop_by_hop(&mut h), None);
        assert!(h.is_empty());
    }

    #[test]
    fn keeps_upgrade_for_the_next_hop() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        let upgrade = strip_hop_by_hop(&mut h).unwrap();
        assert_eq!(upgrade, "websocket");
        restore_upgrade(&mut h, upgrade);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "k");
    }

    fn forwarded<'a>(
        ip: &'a HeaderValue,
        host: Option<&'a HeaderValue>,
        trusted: bool,
    ) -> Forwarded<'a> {
        Forwarded {
            peer_ip: ip,
            scheme: "http",
            host,
            trusted,
        }
    }

    #[test]
    fn forwarded_headers_from_a_client_are_replaced() {
        let ip = HeaderValue::from_static("10.0.0.9");
        let host = HeaderValue::from_static("api.example.com");
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
        ]);
        forwarded(&ip, Some(&host), false).apply(&mut h);
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["10.0.0.9"]
        );
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");

        let mut h = map(&[("x-forwarded-host", "evil")]);
        forwarded(&ip, None, false).apply(&mut h);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert!(h.get("x-forwarded-host").is_none());
    }

    #[test]
    fn forwarded_headers_from_a_trusted_proxy_are_kept_and_appended_to() {
        let ip = HeaderValue::from_static("10.0.0.9");
        let host = HeaderValue::from_static("internal:8080");
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example.com"),
        ]);
        forwarded(&ip, Some(&host), true).apply(&mut h);
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["1.1.1.1, 2.2.2.2, 10.0.0.9"]
        );
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        // What the proxy did not say, this hop says.
        let mut h = HeaderMap::new();
        forwarded(&ip, Some(&host), true).apply(&mut h);
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "internal:8080");
    }

    #[test]
    fn every_listed_forwarding_header_is_matched() {
        for name in FORWARDING_HEADERS {
            assert!(is_forwarding(name, false), "{name}");
            assert_eq!(
                is_forwarding(name, true),
                name != "x-forwarded-port",
                "{name}"
            );
        }
        for name in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "host",
            "x",
        ] {
            assert!(!is_forwarding(name, false), "{name}");
        }
    }

    #[test]
    fn forwarding_headers_are_stripped_in_either_spelling() {
        let names = [
            "forwarded",
            "x-real-ip",
            "x-original-url",
            "x-rewrite-url",
            "x-http-method-override",
            "x-forwarded-prefix",
            "x-forwarded-port",
            "x_forwarded_port",
            "x-forwarded_port",
            "x_original_url",
            "x_forwarded_for",
            "x_forwarded_proto",
            "x-arr-clientcert",
            "x-forwarded-client-cert",
        ];
        let kept = [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "accept",
        ];
        for trusted in [false, true] {
            let mut h = map(&names
                .iter()
                .chain(&kept)
                .map(|n| (*n, "v"))
                .collect::<Vec<_>>());
            strip_forwarding(&mut h, trusted);
            let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
            left.sort_unstable();
            let mut want = kept.to_vec();
            if trusted {
                want.push("x-forwarded-port");
            }
            want.sort_unstable();
            assert_eq!(left, want, "trusted: {trusted}");
        }
    }
}
