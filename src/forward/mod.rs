//! The original request, reconstructed from what the proxy sends in its sub-request.
//!
//! A proxy passes the client's own headers into the sub-request and overwrites only the
//! ones it sets itself, so the endpoint, never the client, decides which header family is
//! read ([`Family`]): a header of another family, a repeated header or a missing required
//! one is 400, never a fallback. The request target must pass [`target`]'s rules, so that
//! what authgate judges is what the upstream serves. The client address comes from
//! `X-Forwarded-For` / `X-Real-IP` only when the peer is a trusted proxy.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, Method, request::Parts};
use ipnet::IpNet;

pub mod target;

#[cfg(test)]
mod props;

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
    /// Method overrides that frameworks honour (Rails, Spring, Symfony, Express ...).
    pub static METHOD_OVERRIDES: [HeaderName; 3] = [
        HeaderName::from_static("x-http-method-override"),
        HeaderName::from_static("x-http-method"),
        HeaderName::from_static("x-method-override"),
    ];
}

use names::*;

/// Which proxy contract a decision endpoint speaks: the headers it reads, and the
/// headers of the other families that it refuses to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// nginx `auth_request` on `/auth`: `X-Original-URI`, `X-Original-Method` and `Host`
    /// (the proxy's `$host`); `X-Forwarded-Proto` for the scheme when set.
    Nginx,
    /// ingress-nginx `auth-url` on `/ingress-auth`: `X-Original-URL` and
    /// `X-Original-Method` (`X-Original-URI`, when sent, must agree with the URL).
    IngressNginx,
    /// Traefik ForwardAuth and Caddy `forward_auth` on `/forward-auth`:
    /// `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`.
    ForwardAuth,
    /// Envoy `ext_authz` (HTTP) on `/auth/<path>`: the path after the prefix, the check
    /// request's own method and `Host` (Envoy copies them from the original request).
    Envoy,
}

impl Family {
    /// The headers this family reads, for error messages.
    fn reads(self) -> &'static str {
        match self {
            Self::Nginx => "X-Original-URI, X-Original-Method and Host",
            Self::IngressNginx => "X-Original-URL and X-Original-Method",
            Self::ForwardAuth => {
                "X-Forwarded-Method, X-Forwarded-Proto, X-Forwarded-Host and X-Forwarded-Uri"
            }
            Self::Envoy => "the /auth/<path> suffix, the method and Host",
        }
    }

    /// Headers of other families: present in a sub-request of this family, they mean the
    /// client sent them and the proxy did not overwrite them.
    fn foreign(self) -> &'static [&'static HeaderName] {
        static NGINX: [&HeaderName; 4] = [
            &X_ORIGINAL_URL,
            &X_FORWARDED_URI,
            &X_FORWARDED_METHOD,
            &X_FORWARDED_HOST,
        ];
        static INGRESS: [&HeaderName; 3] =
            [&X_FORWARDED_URI, &X_FORWARDED_METHOD, &X_FORWARDED_HOST];
        static FORWARD: [&HeaderName; 3] = [&X_ORIGINAL_URI, &X_ORIGINAL_URL, &X_ORIGINAL_METHOD];
        static ENVOY: [&HeaderName; 6] = [
            &X_ORIGINAL_URI,
            &X_ORIGINAL_URL,
            &X_ORIGINAL_METHOD,
            &X_FORWARDED_URI,
            &X_FORWARDED_METHOD,
            &X_FORWARDED_HOST,
        ];
        match self {
            Self::Nginx => &NGINX,
            Self::IngressNginx => &INGRESS,
            Self::ForwardAuth => &FORWARD,
            Self::Envoy => &ENVOY,
        }
    }
}

/// Where the proxy said the request was going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalRequest {
    /// Method of the original request.
    pub method: Method,
    /// `http` or `https`.
    pub scheme: String,
    /// Lower-case host, without port and trailing dot.
    pub host: String,
    /// The port the client named, if any (kept for the sign-in return URL).
    pub port: Option<u16>,
    /// The path once percent-decoded; only paths that [`target::judged_path`] accepts.
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
    /// A required header of the endpoint's family is absent.
    #[error("header {0} is missing; this endpoint reads {1}")]
    Missing(&'static str, &'static str),
    /// A header of another proxy's family: the client sent it.
    #[error("header {0} belongs to another proxy's contract; this endpoint reads {1}")]
    Foreign(&'static str, &'static str),
    /// Userinfo (`user@`) in a host or URL.
    #[error("{0} holds userinfo ('@')")]
    UserInfo(&'static str),
    /// A protected header (identity, credential, proxy family, keystonemiddleware)
    /// spelled with `_`: WSGI, CGI and PHP read `_` and `-` alike, so the upstream would
    /// take it for the real header, which the proxy neither sets nor removes.
    #[error("header {0} spells a protected header with '_', which WSGI, CGI and PHP read as '-'")]
    Underscored(HeaderName),
    /// A method override naming another method than the request's.
    #[error("{0} asks for another method than the request's")]
    MethodOverride(&'static str),
    /// The original path could be read differently by the upstream.
    #[error("the original path is refused: {0}")]
    BadPath(&'static str),
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
    /// Reads the original request from a sub-request of `family`. `suffix` is the
    /// `<path>` of `/auth/<path>` (Envoy's path-prefix form).
    pub fn from_parts(
        parts: &Parts,
        peer: IpAddr,
        family: Family,
        suffix: Option<&str>,
        trusted: &TrustedProxies,
    ) -> Result<Self, ForwardError> {
        let headers = &parts.headers;
        check_underscored(headers)?;
        let reads = family.reads();
        for name in family.foreign() {
            if headers.contains_key(*name) {
                return Err(ForwardError::Foreign(name.as_str(), reads));
            }
        }
        let required = |name: &'static HeaderName| {
            single(headers, name)?.ok_or(ForwardError::Missing(name.as_str(), reads))
        };
        let host_header = || -> Result<(String, Option<u16>), ForwardError> {
            target::host_and_port(required(&http::header::HOST)?, "Host")
        };
        let (method, scheme, (host, port), target) = match family {
            Family::Nginx => (
                parse_method(required(&X_ORIGINAL_METHOD)?, "X-Original-Method")?,
                parse_scheme(single(headers, &X_FORWARDED_PROTO)?)?,
                host_header()?,
                required(&X_ORIGINAL_URI)?.to_owned(),
            ),
            Family::IngressNginx => {
                let raw = required(&X_ORIGINAL_URL)?;
                let (scheme, authority, target) = split_url(raw)?;
                if let Some(uri) = single(headers, &X_ORIGINAL_URI)?
                    && uri != target
                {
                    return Err(ForwardError::Malformed("X-Original-URI"));
                }
                (
                    parse_method(required(&X_ORIGINAL_METHOD)?, "X-Original-Method")?,
                    scheme,
                    target::host_and_port(authority, "X-Original-URL")?,
                    target.to_owned(),
                )
            }
            Family::ForwardAuth => (
                parse_method(required(&X_FORWARDED_METHOD)?, "X-Forwarded-Method")?,
                parse_scheme(Some(required(&X_FORWARDED_PROTO)?))?,
                target::host_and_port(required(&X_FORWARDED_HOST)?, "X-Forwarded-Host")?,
                required(&X_FORWARDED_URI)?.to_owned(),
            ),
            Family::Envoy => (
                parts.method.clone(),
                parse_scheme(single(headers, &X_FORWARDED_PROTO)?)?,
                host_header()?,
                format!("/{}", suffix.unwrap_or("")),
            ),
        };
        let (path, query) = parse_target(&target, family)?;
        check_method_overrides(headers, query.as_deref(), &method)?;
        let client_ip = client_ip(headers, peer, trusted)?;
        Ok(Self {
            method,
            scheme,
            host,
            port,
            path,
            query,
            client_ip,
        })
    }

    /// The original URL (port kept), for a redirect back after sign-in.
    pub fn url(&self) -> String {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let query = self
            .query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        format!("{}://{}{port}{}{query}", self.scheme, self.host, self.path)
    }
}

/// `X-Original-URL`: an absolute `http(s)` URL -> (scheme, authority, path-and-query).
fn split_url(raw: &str) -> Result<(String, &str, &str), ForwardError> {
    const NAME: &str = "X-Original-URL";
    let (scheme, rest) = raw.split_once("://").ok_or(ForwardError::Malformed(NAME))?;
    let scheme = parse_scheme(Some(scheme)).map_err(|_| ForwardError::Malformed(NAME))?;
    let slash = rest.find('/').ok_or(ForwardError::Malformed(NAME))?;
    let (authority, target) = rest.split_at(slash);
    if authority.contains(['?', '#']) {
        return Err(ForwardError::Malformed(NAME));
    }
    Ok((scheme, authority, target))
}

fn parse_method(raw: &str, name: &'static str) -> Result<Method, ForwardError> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ForwardError::Malformed(name));
    }
    Method::from_bytes(raw.as_bytes()).map_err(|_| ForwardError::Malformed(name))
}

fn parse_scheme(raw: Option<&str>) -> Result<String, ForwardError> {
    match raw {
        None => Ok("http".to_owned()),
        Some(p) if p.eq_ignore_ascii_case("https") => Ok("https".to_owned()),
        Some(p) if p.eq_ignore_ascii_case("http") => Ok("http".to_owned()),
        Some(_) => Err(ForwardError::Malformed("X-Forwarded-Proto")),
    }
}

/// The request target (`/path?query`) -> judged path and raw query.
fn parse_target(raw: &str, family: Family) -> Result<(String, Option<String>), ForwardError> {
    let name = match family {
        Family::Nginx => "X-Original-URI",
        Family::IngressNginx => "X-Original-URL",
        Family::ForwardAuth => "X-Forwarded-Uri",
        Family::Envoy => "the /auth/<path> suffix",
    };
    if !raw.starts_with('/') || raw.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        return Err(ForwardError::Malformed(name));
    }
    // Before splitting off the query: `/healthz#/../admin?x` holds a fragment too.
    if raw.contains('#') {
        return Err(ForwardError::BadPath("it holds a fragment ('#')"));
    }
    let (path, query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (raw, None),
    };
    Ok((target::judged_path(path)?, query))
}

/// Headers that an upstream must only get from the proxy or from authgate, by their
/// lower-case name: exact names, then prefixes.
const PROTECTED: [&str; 14] = [
    // Credentials: authgate reads them; the proxy removes the raw forms.
    "authorization",
    "x-auth-token",
    "x-storage-token",
    "x-service-token",
    // The client address and method overrides, which upstream frameworks believe.
    "x-real-ip",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    // keystonemiddleware's identity headers (`deploy/nginx/keystone.conf`).
    "x-identity-status",
    "x-roles",
    "x-role",
    "x-user",
    "x-is-admin-project",
    "openstack-system-scope",
];
const PROTECTED_PREFIXES: [&str; 8] = [
    // authgate's identity headers.
    "x-auth-request-",
    // The proxy families.
    "x-original-",
    "x-forwarded-",
    // keystonemiddleware's (`x-tenant`, `x-tenant-id`, `x-tenant-name` ...).
    "x-user-",
    "x-project-",
    "x-domain-",
    "x-tenant",
    "x-service-",
];

/// 400 when a header name holds `_` and, read with `_` as `-` (as WSGI, CGI and PHP do:
/// both become `HTTP_X_AUTH_REQUEST_ROLES`), is a [`PROTECTED`] header. Proxies remove or
/// overwrite only the `-` spelling, so the client's `X_Auth_Request_Roles` would reach
/// such an upstream as authgate's roles once the real header is removed or left empty.
/// nginx drops these headers by default (`underscores_in_headers off`); Caddy, Traefik and
/// Envoy pass them on.
fn check_underscored(headers: &HeaderMap) -> Result<(), ForwardError> {
    for name in headers.keys() {
        // `HeaderName` is lower-case already.
        if !name.as_str().contains('_') {
            continue;
        }
        let read_as = name.as_str().replace('_', "-");
        if PROTECTED.contains(&read_as.as_str())
            || PROTECTED_PREFIXES.iter().any(|p| read_as.starts_with(p))
        {
            return Err(ForwardError::Underscored(name.clone()));
        }
    }
    Ok(())
}

/// 400 when a method override (header or `_method` query parameter) names another method
/// than the one judged: many frameworks would run the override.
fn check_method_overrides(
    headers: &HeaderMap,
    query: Option<&str>,
    method: &Method,
) -> Result<(), ForwardError> {
    for name in &METHOD_OVERRIDES {
        for value in headers.get_all(name) {
            if !value
                .as_bytes()
                .eq_ignore_ascii_case(method.as_str().as_bytes())
            {
                return Err(ForwardError::MethodOverride(name.as_str()));
            }
        }
    }
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
        if key.eq_ignore_ascii_case("_method") && !value.eq_ignore_ascii_case(method.as_str()) {
            return Err(ForwardError::MethodOverride("the _method query parameter"));
        }
    }
    Ok(())
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

    fn read(
        family: Family,
        method: &str,
        headers: &[(&str, &[u8])],
        suffix: Option<&str>,
    ) -> Result<OriginalRequest, ForwardError> {
        let p = parts(method, headers);
        OriginalRequest::from_parts(&p, PEER.parse().unwrap(), family, suffix, &trusted())
    }

    #[test]
    fn header_forms_table() {
        // (family, sub-request method, headers, suffix) -> (method, scheme, host, port, path, query)
        type Case<'a> = (Family, &'a str, Headers<'a>, Option<&'a str>);
        type Want<'a> = (
            &'a str,
            &'a str,
            &'a str,
            Option<u16>,
            &'a str,
            Option<&'a str>,
        );
        let cases: Vec<(Case, Want)> = vec![
            (
                (
                    Family::Nginx,
                    "GET",
                    vec![
                        ("host", b"api.example.org"),
                        ("x-original-uri", b"/data/x?a=1"),
                        ("x-original-method", b"POST"),
                    ],
                    None,
                ),
                (
                    "POST",
                    "http",
                    "api.example.org",
                    None,
                    "/data/x",
                    Some("a=1"),
                ),
            ),
            (
                (
                    Family::Nginx,
                    "GET",
                    vec![
                        ("host", b"API.example.org.:8443"),
                        ("x-original-uri", b"/%61dmin/x/"),
                        ("x-original-method", b"GET"),
                        ("x-forwarded-proto", b"https"),
                    ],
                    None,
                ),
                (
                    "GET",
                    "https",
                    "api.example.org",
                    Some(8443),
                    "/admin/x/",
                    None,
                ),
            ),
            (
                (
                    Family::IngressNginx,
                    "GET",
                    vec![
                        ("host", b"authgate.svc"),
                        ("x-original-url", b"https://API.example.org:8443/d?q"),
                        ("x-original-method", b"PUT"),
                        ("x-forwarded-proto", b""),
                    ],
                    None,
                ),
                (
                    "PUT",
                    "https",
                    "api.example.org",
                    Some(8443),
                    "/d",
                    Some("q"),
                ),
            ),
            (
                (
                    Family::IngressNginx,
                    "GET",
                    vec![
                        ("x-original-url", b"http://api.example.org/d"),
                        ("x-original-uri", b"/d"),
                        ("x-original-method", b"GET"),
                    ],
                    None,
                ),
                ("GET", "http", "api.example.org", None, "/d", None),
            ),
            (
                (
                    Family::ForwardAuth,
                    "GET",
                    vec![
                        ("host", b"authgate"),
                        ("x-forwarded-host", b"app.example.org:443"),
                        ("x-forwarded-proto", b"https"),
                        ("x-forwarded-uri", b"/p/admin"),
                        ("x-forwarded-method", b"DELETE"),
                    ],
                    None,
                ),
                (
                    "DELETE",
                    "https",
                    "app.example.org",
                    Some(443),
                    "/p/admin",
                    None,
                ),
            ),
            (
                (
                    Family::Envoy,
                    "PATCH",
                    vec![("host", b"svc.example.org")],
                    Some("v1/items?x=2"),
                ),
                (
                    "PATCH",
                    "http",
                    "svc.example.org",
                    None,
                    "/v1/items",
                    Some("x=2"),
                ),
            ),
            (
                (
                    Family::Nginx,
                    "GET",
                    vec![
                        ("host", b"[::1]:8080"),
                        ("x-original-uri", b"/"),
                        ("x-original-method", b"GET"),
                    ],
                    None,
                ),
                ("GET", "http", "[::1]", Some(8080), "/", None),
            ),
            // An override that names the same method is harmless.
            (
                (
                    Family::Nginx,
                    "GET",
                    vec![
                        ("host", b"h"),
                        ("x-original-uri", b"/d?_method=post"),
                        ("x-original-method", b"POST"),
                        ("x-http-method-override", b"POST"),
                    ],
                    None,
                ),
                ("POST", "http", "h", None, "/d", Some("_method=post")),
            ),
            // Other headers with '_' are none of authgate's business.
            (
                (
                    Family::ForwardAuth,
                    "GET",
                    vec![
                        ("x-forwarded-host", b"h"),
                        ("x-forwarded-proto", b"https"),
                        ("x-forwarded-uri", b"/d"),
                        ("x-forwarded-method", b"GET"),
                        ("x_custom_trace", b"1"),
                        ("x_auth", b"1"),
                        ("x_userland", b"1"),
                    ],
                    None,
                ),
                ("GET", "https", "h", None, "/d", None),
            ),
        ];
        for ((family, method, headers, suffix), want) in cases {
            let r = read(family, method, &headers, suffix)
                .unwrap_or_else(|e| panic!("{family:?} {headers:?}: {e}"));
            let got = (
                r.method.as_str(),
                r.scheme.as_str(),
                r.host.as_str(),
                r.port,
                r.path.as_str(),
                r.query.as_deref(),
            );
            assert_eq!(got, want, "{family:?} {headers:?}");
        }
    }

    #[test]
    fn malformed_forms_table() {
        let nginx = |extra: Headers<'static>| {
            let mut h: Headers = vec![
                ("host", b"api.example.org"),
                ("x-original-uri", b"/admin/users"),
                ("x-original-method", b"GET"),
            ];
            h.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
            h.extend(extra);
            h
        };
        let forward = |extra: Headers<'static>| {
            let mut h: Headers = vec![
                ("host", b"authgate"),
                ("x-forwarded-host", b"api.example.org"),
                ("x-forwarded-proto", b"http"),
                ("x-forwarded-uri", b"/admin"),
                ("x-forwarded-method", b"DELETE"),
            ];
            h.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
            h.extend(extra);
            h
        };
        let without = |mut h: Headers<'static>, name: &str| {
            h.retain(|(k, _)| *k != name);
            h
        };
        let cases: Vec<(Family, Headers, Option<&str>, &str)> = vec![
            // The client's headers of another family, sent through nginx.
            (
                Family::Nginx,
                nginx(vec![("x-original-url", b"http://x/healthz")]),
                None,
                "x-original-url belongs",
            ),
            (
                Family::Nginx,
                nginx(vec![("x-forwarded-host", b"compute.example.org")]),
                None,
                "x-forwarded-host belongs",
            ),
            (
                Family::Nginx,
                nginx(vec![("x-forwarded-uri", b"/healthz")]),
                None,
                "x-forwarded-uri belongs",
            ),
            (
                Family::Nginx,
                nginx(vec![("x-forwarded-method", b"GET")]),
                None,
                "x-forwarded-method belongs",
            ),
            // ... and through Traefik or Caddy.
            (
                Family::ForwardAuth,
                forward(vec![("x-original-uri", b"/healthz")]),
                None,
                "x-original-uri belongs",
            ),
            (
                Family::ForwardAuth,
                forward(vec![("x-original-method", b"GET")]),
                None,
                "x-original-method belongs",
            ),
            (
                Family::ForwardAuth,
                forward(vec![("x-original-url", b"http://x/")]),
                None,
                "x-original-url belongs",
            ),
            (
                Family::Envoy,
                vec![("host", b"h"), ("x-original-uri", b"/healthz")],
                Some("admin"),
                "x-original-uri belongs",
            ),
            (
                Family::Envoy,
                vec![("host", b"h"), ("x-forwarded-method", b"GET")],
                Some("admin"),
                "x-forwarded-method belongs",
            ),
            (
                Family::IngressNginx,
                vec![
                    ("x-original-url", b"http://h/a"),
                    ("x-original-method", b"GET"),
                    ("x-forwarded-host", b"h"),
                ],
                None,
                "x-forwarded-host belongs",
            ),
            // Protected headers spelled with '_' (WSGI, CGI and PHP read them as '-'), on
            // every family, upper or lower case, '_' anywhere in the name.
            (
                Family::ForwardAuth,
                forward(vec![("X_Auth_Request_Roles", b"admin")]),
                None,
                "x_auth_request_roles spells a protected header with '_'",
            ),
            (
                Family::ForwardAuth,
                forward(vec![("x-auth-request_user", b"root")]),
                None,
                "x-auth-request_user spells",
            ),
            (
                Family::Nginx,
                nginx(vec![("x_auth_request_email", b"root@example.org")]),
                None,
                "x_auth_request_email spells",
            ),
            (
                Family::Envoy,
                vec![("host", b"h"), ("x_auth-request-status", b"authenticated")],
                Some("admin"),
                "x_auth-request-status spells",
            ),
            (
                Family::IngressNginx,
                vec![
                    ("x-original-url", b"http://h/a"),
                    ("x-original-method", b"GET"),
                    ("x_auth_token", b"t"),
                ],
                None,
                "x_auth_token spells",
            ),
            (
                Family::ForwardAuth,
                forward(vec![("x_storage_token", b"t")]),
                None,
                "x_storage_token spells",
            ),
            (
                Family::ForwardAuth,
                forward(vec![("x_service_token", b"t")]),
                None,
                "x_service_token spells",
            ),
            (
                Family::ForwardAuth,
                forward(vec![("x_forwarded_uri", b"/healthz")]),
                None,
                "x_forwarded_uri spells",
            ),
            (
                Family::ForwardAuth,
                forward(vec![("x_original_uri", b"/healthz")]),
                None,
                "x_original_uri spells",
            ),
            (
                Family::Nginx,
                nginx(vec![("x_forwarded_for", b"192.0.2.1")]),
                None,
                "x_forwarded_for spells",
            ),
            (
                Family::Nginx,
                nginx(vec![("x_real_ip", b"192.0.2.1")]),
                None,
                "x_real_ip spells",
            ),
            (
                Family::Nginx,
                nginx(vec![("x_http_method_override", b"DELETE")]),
                None,
                "x_http_method_override spells",
            ),
            // keystonemiddleware's identity headers.
            (
                Family::Nginx,
                nginx(vec![("x_identity_status", b"Confirmed")]),
                None,
                "x_identity_status spells",
            ),
            (
                Family::Nginx,
                nginx(vec![("x_roles", b"admin")]),
                None,
                "x_roles spells",
            ),
            (
                Family::Nginx,
                nginx(vec![("x_role", b"admin")]),
                None,
                "x_role spells",
            ),
            (
                Family::Nginx,
                nginx(vec![("x_user", b"root")]),
                None,
                "x_user spells",
            ),
            (
                Family::Nginx,
                nginx(vec![("x_user_id", b"root")]),
                None,
                "x_user_id spells",
            ),
            (
                Family::Nginx,
                nginx(vec![("x_project_id", b"p")]),
                None,
                "x_project_id spells",
            ),
            (
                Family::Nginx,
                nginx(vec![("x_domain_name", b"d")]),
                None,
                "x_domain_name spells",
            ),
            (
                Family::Nginx,
                nginx(vec![("x_tenant", b"t")]),
                None,
                "x_tenant spells",
            ),
            (
                Family::Nginx,
                nginx(vec![("x_tenant_id", b"t")]),
                None,
                "x_tenant_id spells",
            ),
            (
                Family::Nginx,
                nginx(vec![("x_service_roles", b"admin")]),
                None,
                "x_service_roles spells",
            ),
            (
                Family::Nginx,
                nginx(vec![("x_is_admin_project", b"True")]),
                None,
                "x_is_admin_project spells",
            ),
            (
                Family::Nginx,
                nginx(vec![("openstack_system_scope", b"all")]),
                None,
                "openstack_system_scope spells",
            ),
            // A required header missing: never a fallback to the sub-request's own.
            (
                Family::Nginx,
                without(nginx(vec![]), "x-original-method"),
                None,
                "x-original-method is missing",
            ),
            (
                Family::Nginx,
                without(nginx(vec![]), "x-original-uri"),
                None,
                "x-original-uri is missing",
            ),
            (
                Family::Nginx,
                without(nginx(vec![]), "host"),
                None,
                "host is missing",
            ),
            (
                Family::ForwardAuth,
                without(forward(vec![]), "x-forwarded-method"),
                None,
                "x-forwarded-method is missing",
            ),
            (
                Family::ForwardAuth,
                without(forward(vec![]), "x-forwarded-host"),
                None,
                "x-forwarded-host is missing",
            ),
            (
                Family::ForwardAuth,
                without(forward(vec![]), "x-forwarded-uri"),
                None,
                "x-forwarded-uri is missing",
            ),
            (
                Family::ForwardAuth,
                without(forward(vec![]), "x-forwarded-proto"),
                None,
                "x-forwarded-proto is missing",
            ),
            (
                Family::IngressNginx,
                vec![("x-original-method", b"GET")],
                None,
                "x-original-url is missing",
            ),
            (Family::Envoy, vec![], Some("a"), "host is missing"),
            // Twice.
            (
                Family::Nginx,
                nginx(vec![("x-original-uri", b"/a"), ("x-original-uri", b"/b")]),
                None,
                "x-original-uri is given more than once",
            ),
            (
                Family::Nginx,
                nginx(vec![("host", b"a"), ("host", b"b")]),
                None,
                "host is given more than once",
            ),
            (
                Family::ForwardAuth,
                forward(vec![
                    ("x-forwarded-method", b"GET"),
                    ("x-forwarded-method", b"DELETE"),
                ]),
                None,
                "x-forwarded-method is given more than once",
            ),
            // Malformed values.
            (
                Family::Nginx,
                nginx(vec![("x-original-uri", b"data")]),
                None,
                "x-original-uri is malformed",
            ),
            (
                Family::Nginx,
                nginx(vec![("x-original-method", b"get")]),
                None,
                "x-original-method is malformed",
            ),
            (
                Family::Nginx,
                nginx(vec![("x-forwarded-proto", b"gopher")]),
                None,
                "x-forwarded-proto is malformed",
            ),
            (
                Family::Nginx,
                nginx(vec![("host", b"bad host")]),
                None,
                "host is malformed",
            ),
            (
                Family::Nginx,
                nginx(vec![("host", b"")]),
                None,
                "host is malformed",
            ),
            (
                Family::Nginx,
                nginx(vec![("host", b"api.example.org:1@www.example.org")]),
                None,
                "host holds userinfo",
            ),
            (
                Family::Nginx,
                nginx(vec![("x-original-uri", b"/\xc3\xa9")]),
                None,
                "x-original-uri is malformed",
            ),
            (
                Family::Nginx,
                nginx(vec![("x-original-uri", b"/a b")]),
                None,
                "x-original-uri is malformed",
            ),
            (
                Family::Nginx,
                nginx(vec![("x-forwarded-for", b"not-an-ip")]),
                None,
                "x-forwarded-for is malformed",
            ),
            (
                Family::IngressNginx,
                vec![
                    ("x-original-url", b"/relative"),
                    ("x-original-method", b"GET"),
                ],
                None,
                "x-original-url is malformed",
            ),
            (
                Family::IngressNginx,
                vec![
                    ("x-original-url", b"javascript://x/a"),
                    ("x-original-method", b"GET"),
                ],
                None,
                "x-original-url is malformed",
            ),
            (
                Family::IngressNginx,
                vec![
                    (
                        "x-original-url",
                        b"http://api.example.org@compute.example.org/a",
                    ),
                    ("x-original-method", b"GET"),
                ],
                None,
                "x-original-url holds userinfo",
            ),
            (
                Family::IngressNginx,
                vec![
                    (
                        "x-original-url",
                        b"http://api.example.org:1@www.example.org/a",
                    ),
                    ("x-original-method", b"GET"),
                ],
                None,
                "x-original-url holds userinfo",
            ),
            (
                Family::IngressNginx,
                vec![
                    ("x-original-url", b"http://h/admin"),
                    ("x-original-uri", b"/healthz"),
                    ("x-original-method", b"GET"),
                ],
                None,
                "x-original-uri is malformed",
            ),
            // Paths the upstream could read differently.
            (
                Family::Nginx,
                nginx(vec![("x-original-uri", b"/healthz#/../admin/users")]),
                None,
                "fragment",
            ),
            (
                Family::Nginx,
                nginx(vec![("x-original-uri", b"/admin/%2e%2e/healthz")]),
                None,
                "ends with '.'",
            ),
            (
                Family::Nginx,
                nginx(vec![("x-original-uri", b"/healthz/..;/admin")]),
                None,
                "(path parameters)",
            ),
            (
                Family::Nginx,
                nginx(vec![("x-original-uri", b"/a%5c..%5cadmin")]),
                None,
                "backslash",
            ),
            (
                Family::Nginx,
                nginx(vec![("x-original-uri", b"/a%00b")]),
                None,
                "control characters",
            ),
            (
                Family::Nginx,
                nginx(vec![("x-original-uri", b"/%ff%fe")]),
                None,
                "not UTF-8",
            ),
            (
                Family::Envoy,
                vec![("host", b"h")],
                Some("admin/../healthz"),
                "ends with '.'",
            ),
            (
                Family::ForwardAuth,
                forward(vec![("x-forwarded-uri", b"/admin//..//healthz")]),
                None,
                "empty segment",
            ),
            // Method overrides naming another method.
            (
                Family::Nginx,
                nginx(vec![
                    ("x-original-method", b"POST"),
                    ("x-http-method-override", b"DELETE"),
                ]),
                None,
                "x-http-method-override asks",
            ),
            (
                Family::Nginx,
                nginx(vec![
                    ("x-original-method", b"POST"),
                    ("x-http-method", b"DELETE"),
                ]),
                None,
                "x-http-method asks",
            ),
            (
                Family::Nginx,
                nginx(vec![
                    ("x-original-method", b"POST"),
                    ("x-method-override", b"PUT"),
                ]),
                None,
                "x-method-override asks",
            ),
            (
                Family::Nginx,
                nginx(vec![
                    ("x-original-method", b"POST"),
                    ("x-original-uri", b"/data?_method=DELETE"),
                ]),
                None,
                "_method query parameter",
            ),
        ];
        for (family, headers, suffix, expected) in cases {
            match read(family, "GET", &headers, suffix) {
                Err(e) => assert!(
                    e.to_string()
                        .to_lowercase()
                        .contains(&expected.to_lowercase()),
                    "{family:?} {headers:?}: '{e}' does not say '{expected}'"
                ),
                Ok(r) => panic!("{family:?} {headers:?} accepted as {r:?}"),
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
            all.push(("x-original-method", b"GET"));
            all.push(("host", b"h"));
            let p = parts("GET", &all);
            let r = OriginalRequest::from_parts(
                &p,
                peer.parse().unwrap(),
                Family::Nginx,
                None,
                &trusted(),
            )
            .unwrap();
            assert_eq!(r.client_ip.to_string(), expected, "{peer} {headers:?}");
        }
    }
}
