//! The original request, reconstructed from what the proxy sends in its sub-request:
//! nginx (`X-Original-URI`, `X-Original-Method`), ingress-nginx (`X-Original-URL`),
//! Traefik and Caddy (`X-Forwarded-Method/-Proto/-Host/-Uri`), Envoy (`/auth/<path>`).
//! The client address comes from `X-Forwarded-For` / `X-Real-IP` only when the peer is a
//! trusted proxy.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, Method, Uri, request::Parts};
use ipnet::IpNet;

/// Header names built once: a lookup by `&str` parses the name on every call.
pub mod names {
    use http::HeaderName;

    /// ingress-nginx: the whole original URL.
    pub static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
    /// nginx: path and query.
    pub static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
    /// nginx, ingress-nginx: the method.
    pub static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
    /// Traefik, Caddy: path and query.
    pub static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
    /// Traefik, Caddy: the method.
    pub static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
    /// The scheme.
    pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    /// The host.
    pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    /// Client and proxy addresses.
    pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    /// The client address (nginx convention).
    pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
    /// A request id set by the proxy.
    pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    /// OpenStack and Astakos tokens.
    pub static X_AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");
    /// Swift's name for the same.
    pub static X_STORAGE_TOKEN: HeaderName = HeaderName::from_static("x-storage-token");
    /// A Keystone service token (composite authentication).
    pub static X_SERVICE_TOKEN: HeaderName = HeaderName::from_static("x-service-token");
}

use names::*;

/// Where the proxy said the request was going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalRequest {
    /// Method of the original request.
    pub method: Method,
    /// `http` or `https`.
    pub scheme: String,
    /// Lower-case host, without port.
    pub host: String,
    /// Decoded path with dot segments resolved and repeated slashes collapsed.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Address of the end client.
    pub client_ip: IpAddr,
}

/// A sub-request that does not say clearly what the original request was (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// A header occurs more than once where one is expected.
    #[error("header {0} is given more than once")]
    Repeated(&'static str),
    /// A header is not valid UTF-8 / visible ASCII or does not parse.
    #[error("header {0} is malformed")]
    Malformed(&'static str),
    /// The original path cannot be decoded safely.
    #[error("the original path is malformed: {0}")]
    BadPath(&'static str),
    /// Nothing says which URI the original request had.
    #[error(
        "the original URI is unknown: send X-Original-URI, X-Original-URL or X-Forwarded-Uri, or call /auth/<path>"
    )]
    MissingUri,
}

/// The CIDRs whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// From the configured CIDR list.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }
}

impl OriginalRequest {
    /// Reads the original request from a sub-request. `suffix` is the `<path>` of
    /// `/auth/<path>` (Envoy's path-prefix form), when the sub-request used it.
    pub fn from_parts(
        parts: &Parts,
        peer: IpAddr,
        suffix: Option<&str>,
        trusted: &TrustedProxies,
    ) -> Result<Self, ForwardError> {
        let headers = &parts.headers;
        let original_url = single(headers, &X_ORIGINAL_URL)?
            .map(|v| {
                v.parse::<Uri>()
                    .map_err(|_| ForwardError::Malformed("X-Original-URL"))
            })
            .transpose()?;
        let (raw_path, query) = if let Some(suffix) = suffix {
            let path_and_query = format!("/{suffix}");
            split_query(&path_and_query)
        } else if let Some(url) = &original_url {
            if url.scheme().is_none() || url.authority().is_none() {
                return Err(ForwardError::Malformed("X-Original-URL"));
            }
            (url.path().to_owned(), url.query().map(str::to_owned))
        } else if let Some(uri) = single(headers, &X_ORIGINAL_URI)? {
            parse_path_and_query(uri, "X-Original-URI")?
        } else if let Some(uri) = single(headers, &X_FORWARDED_URI)? {
            parse_path_and_query(uri, "X-Forwarded-Uri")?
        } else {
            return Err(ForwardError::MissingUri);
        };
        let path = normalize_path(&raw_path)?;

        let method = match single(headers, &X_ORIGINAL_METHOD)?
            .map(|m| ("X-Original-Method", m))
            .or(single(headers, &X_FORWARDED_METHOD)?.map(|m| ("X-Forwarded-Method", m)))
        {
            Some((name, m)) => Method::from_bytes(m.as_bytes())
                .ok()
                .filter(|_| m.bytes().all(|b| b.is_ascii_uppercase()))
                .ok_or(ForwardError::Malformed(name))?,
            None => parts.method.clone(),
        };

        let scheme = match &original_url {
            Some(url) => url.scheme_str().unwrap_or("http").to_ascii_lowercase(),
            None => match single(headers, &X_FORWARDED_PROTO)? {
                Some(p) if p.eq_ignore_ascii_case("https") => "https".to_owned(),
                Some(p) if p.eq_ignore_ascii_case("http") => "http".to_owned(),
                Some(_) => return Err(ForwardError::Malformed("X-Forwarded-Proto")),
                None => "http".to_owned(),
            },
        };

        let host = match original_url.as_ref().and_then(|u| u.host()) {
            Some(h) => h.to_owned(),
            None => {
                let (name, raw) = match single(headers, &X_FORWARDED_HOST)? {
                    Some(h) => ("X-Forwarded-Host", h),
                    None => ("Host", single(headers, &http::header::HOST)?.unwrap_or("")),
                };
                host_without_port(raw)
                    .ok_or(ForwardError::Malformed(name))?
                    .to_owned()
            }
        }
        .to_ascii_lowercase();

        let client_ip = client_ip(headers, peer, trusted)?;
        Ok(Self {
            method,
            scheme,
            host,
            path,
            query,
            client_ip,
        })
    }

    /// The original URL, for a redirect back after sign-in.
    pub fn url(&self) -> String {
        match &self.query {
            Some(q) => format!("{}://{}{}?{q}", self.scheme, self.host, self.path),
            None => format!("{}://{}{}", self.scheme, self.host, self.path),
        }
    }
}

/// One header value as visible ASCII; `Ok(None)` when absent; an error when repeated.
fn single<'a>(
    headers: &'a HeaderMap,
    name: &'static HeaderName,
) -> Result<Option<&'a str>, ForwardError> {
    let name_str = name.as_str();
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ForwardError::Repeated(name_str));
    }
    first
        .to_str()
        .map(|s| Some(s.trim()))
        .map_err(|_| ForwardError::Malformed(name_str))
}

fn split_query(path_and_query: &str) -> (String, Option<String>) {
    match path_and_query.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (path_and_query.to_owned(), None),
    }
}

fn parse_path_and_query(
    value: &str,
    name: &'static str,
) -> Result<(String, Option<String>), ForwardError> {
    if !value.starts_with('/') {
        return Err(ForwardError::Malformed(name));
    }
    let pq: http::uri::PathAndQuery = value.parse().map_err(|_| ForwardError::Malformed(name))?;
    Ok((pq.path().to_owned(), pq.query().map(str::to_owned)))
}

/// `host[:port]` or `[v6]:port` -> host; `None` when empty or not a plausible host.
fn host_without_port(raw: &str) -> Option<&str> {
    let host = if let Some(rest) = raw.strip_prefix('[') {
        let end = rest.find(']')?;
        &raw[..end + 2]
    } else {
        raw.split(':').next().unwrap_or("")
    };
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    ok.then_some(host)
}

/// Percent-decodes the path, resolves `.`/`..` segments and collapses `//`, so that
/// `/data/../admin` and `/%61dmin` are judged as `/admin`.
pub fn normalize_path(raw: &str) -> Result<String, ForwardError> {
    if !raw.starts_with('/') {
        return Err(ForwardError::BadPath("it does not start with '/'"));
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ForwardError::BadPath("it is not UTF-8 once decoded"))?;
    if decoded.bytes().any(|b| b.is_ascii_control()) {
        return Err(ForwardError::BadPath("it holds control characters"));
    }
    if decoded.contains('\\') {
        return Err(ForwardError::BadPath("it holds a backslash"));
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (decoded.ends_with('/') && !segments.is_empty()) {
        out.push('/');
    }
    Ok(out)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The end client: the peer itself unless it is a trusted proxy; then the right-most
/// untrusted address of `X-Forwarded-For`, else `X-Real-IP`.
pub fn client_ip(
    headers: &HeaderMap,
    peer: IpAddr,
    trusted: &TrustedProxies,
) -> Result<IpAddr, ForwardError> {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return Ok(peer);
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        let value = value
            .to_str()
            .map_err(|_| ForwardError::Malformed("X-Forwarded-For"))?;
        for part in value.split(',') {
            let ip = part
                .trim()
                .parse::<IpAddr>()
                .map_err(|_| ForwardError::Malformed("X-Forwarded-For"))?;
            hops.push(canonical(ip));
        }
    }
    if let Some(ip) = hops.iter().rev().find(|ip| !trusted.contains(**ip)) {
        return Ok(*ip);
    }
    if let Some(first) = hops.first() {
        return Ok(*first);
    }
    match single(headers, &X_REAL_IP)? {
        Some(v) => v
            .parse::<IpAddr>()
            .map(canonical)
            .map_err(|_| ForwardError::Malformed("X-Real-IP")),
        None => Ok(peer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Headers<'a> = Vec<(&'a str, &'a [u8])>;

    fn parts(method: &str, headers: &[(&str, &[u8])]) -> Parts {
        let mut b = http::Request::builder().method(method).uri("/auth");
        for (k, v) in headers {
            b = b.header(*k, http::HeaderValue::from_bytes(v).unwrap());
        }
        b.body(()).unwrap().into_parts().0
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ])
    }

    const PEER: &str = "127.0.0.1";
    const STRANGER: &str = "192.0.2.9";

    #[test]
    fn header_forms_table() {
        type Case<'a> = (
            &'a str,
            Vec<(&'a str, &'a [u8])>,
            Option<&'a str>,
            &'a str,
            &'a str,
            &'a str,
            &'a str,
            Option<&'a str>,
            &'a str,
        );
        let cases: Vec<Case> = vec![
            // nginx auth_request
            (
                "GET",
                vec![
                    ("host", b"api.example.org"),
                    ("x-original-uri", b"/data/x?a=1"),
                    ("x-original-method", b"POST"),
                ],
                None,
                PEER,
                "POST",
                "http",
                "api.example.org",
                Some("a=1"),
                "/data/x",
            ),
            // ingress-nginx
            (
                "GET",
                vec![
                    ("host", b"authgate"),
                    ("x-original-url", b"https://API.example.org:8443/d?q"),
                    ("x-original-method", b"PUT"),
                ],
                None,
                PEER,
                "PUT",
                "https",
                "api.example.org",
                Some("q"),
                "/d",
            ),
            // Traefik / Caddy
            (
                "GET",
                vec![
                    ("host", b"authgate"),
                    ("x-forwarded-host", b"app.example.org:443"),
                    ("x-forwarded-proto", b"https"),
                    ("x-forwarded-uri", b"/p/../admin"),
                    ("x-forwarded-method", b"DELETE"),
                ],
                None,
                PEER,
                "DELETE",
                "https",
                "app.example.org",
                None,
                "/admin",
            ),
            // Envoy path prefix
            (
                "PATCH",
                vec![("host", b"svc.example.org")],
                Some("v1/items?x=2"),
                PEER,
                "PATCH",
                "http",
                "svc.example.org",
                Some("x=2"),
                "/v1/items",
            ),
            // percent-encoded and doubled slashes
            (
                "GET",
                vec![("host", b"h"), ("x-original-uri", b"//a/%61dmin/./x/")],
                None,
                PEER,
                "GET",
                "http",
                "h",
                None,
                "/a/admin/x/",
            ),
            (
                "GET",
                vec![("host", b"[::1]:8080"), ("x-original-uri", b"/")],
                None,
                PEER,
                "GET",
                "http",
                "[::1]",
                None,
                "/",
            ),
            (
                "GET",
                vec![("host", b"h"), ("x-original-uri", b"/../../..")],
                None,
                PEER,
                "GET",
                "http",
                "h",
                None,
                "/",
            ),
        ];
        for (method, headers, suffix, peer, m, scheme, host, query, path) in cases {
            let p = parts(method, &headers);
            let r = OriginalRequest::from_parts(&p, peer.parse().unwrap(), suffix, &trusted())
                .unwrap_or_else(|e| panic!("{headers:?}: {e}"));
            assert_eq!(r.method.as_str(), m, "{headers:?}");
            assert_eq!(r.scheme, scheme, "{headers:?}");
            assert_eq!(r.host, host, "{headers:?}");
            assert_eq!(r.query.as_deref(), query, "{headers:?}");
            assert_eq!(r.path, path, "{headers:?}");
        }
    }

    #[test]
    fn malformed_forms_table() {
        let cases: Vec<(Headers, ForwardError)> = vec![
            (vec![("host", b"h")], ForwardError::MissingUri),
            (
                vec![("x-original-uri", b"data")],
                ForwardError::Malformed("X-Original-URI"),
            ),
            (
                vec![("x-original-uri", b"/a"), ("x-original-uri", b"/b")],
                ForwardError::Repeated("x-original-uri"),
            ),
            (
                vec![("x-original-url", b"/relative")],
                ForwardError::Malformed("X-Original-URL"),
            ),
            (
                vec![("x-original-url", b"ht tp://x")],
                ForwardError::Malformed("x-original-url"),
            ),
            (
                vec![("x-original-uri", b"/%ff%fe")],
                ForwardError::BadPath("it is not UTF-8 once decoded"),
            ),
            (
                vec![("x-original-uri", b"/a%00b")],
                ForwardError::BadPath("it holds control characters"),
            ),
            (
                vec![("x-original-uri", b"/a%5c..%5cadmin")],
                ForwardError::BadPath("it holds a backslash"),
            ),
            (
                vec![("x-original-uri", b"/"), ("x-original-method", b"get")],
                ForwardError::Malformed("X-Original-Method"),
            ),
            (
                vec![("x-original-uri", b"/"), ("x-forwarded-proto", b"gopher")],
                ForwardError::Malformed("X-Forwarded-Proto"),
            ),
            (
                vec![("x-original-uri", b"/"), ("host", b"bad host")],
                ForwardError::Malformed("Host"),
            ),
            (
                vec![("x-original-uri", b"/"), ("host", b"")],
                ForwardError::Malformed("Host"),
            ),
            (
                vec![
                    ("x-original-uri", b"/"),
                    ("host", b"h"),
                    ("x-forwarded-for", b"not-an-ip"),
                ],
                ForwardError::Malformed("X-Forwarded-For"),
            ),
            (
                vec![("x-original-uri", b"/\xc3\xa9")],
                ForwardError::Malformed("x-original-uri"),
            ),
        ];
        for (headers, expected) in cases {
            let p = parts("GET", &headers);
            let got = OriginalRequest::from_parts(&p, PEER.parse().unwrap(), None, &trusted());
            match got {
                Err(e) => {
                    // Malformed(name) may carry the header's wire name or display name.
                    assert_eq!(
                        e.to_string().to_lowercase(),
                        expected.to_string().to_lowercase(),
                        "{headers:?}"
                    );
                }
                Ok(r) => panic!("{headers:?} accepted as {r:?}"),
            }
        }
    }

    #[test]
    fn client_ip_table() {
        let cases: Vec<(&str, Headers, &str)> = vec![
            // untrusted peer: its own address, whatever it claims
            (STRANGER, vec![("x-forwarded-for", b"1.2.3.4")], STRANGER),
            (STRANGER, vec![("x-real-ip", b"1.2.3.4")], STRANGER),
            // trusted peer: right-most untrusted hop
            (
                PEER,
                vec![("x-forwarded-for", b"6.6.6.6, 1.2.3.4, 10.1.1.1")],
                "1.2.3.4",
            ),
            (
                PEER,
                vec![
                    ("x-forwarded-for", b"6.6.6.6"),
                    ("x-forwarded-for", b"1.2.3.4"),
                ],
                "1.2.3.4",
            ),
            (
                PEER,
                vec![("x-forwarded-for", b"10.0.0.2, 10.0.0.1")],
                "10.0.0.2",
            ),
            (PEER, vec![("x-real-ip", b"5.5.5.5")], "5.5.5.5"),
            (PEER, vec![], PEER),
            (
                "::ffff:10.0.0.7",
                vec![("x-forwarded-for", b"::ffff:8.8.8.8")],
                "8.8.8.8",
            ),
        ];
        for (peer, headers, expected) in cases {
            let mut all = headers.clone();
            all.push(("x-original-uri", b"/"));
            all.push(("host", b"h"));
            let p = parts("GET", &all);
            let r =
                OriginalRequest::from_parts(&p, peer.parse().unwrap(), None, &trusted()).unwrap();
            assert_eq!(r.client_ip.to_string(), expected, "{peer} {headers:?}");
        }
    }
}
