//! Cross-site request forgery: a browser attaches HTTP Basic credentials and cookies to any
//! request to the portal's origin by itself, whichever site made the request. So every
//! state-changing request carried by such an *ambient* credential must prove that it comes
//! from the portal's own pages:
//!
//! 1. **Same origin.** `Sec-Fetch-Site` (set by the browser, never by a page's script),
//!    when present, must be `same-origin`; otherwise `Origin` must be present and name
//!    the request's own scheme, host and port. A request with neither is refused: every
//!    current browser sends one of them on a POST or DELETE, and a script that uses Basic
//!    can send `Origin` itself (or use an API token, which is not ambient).
//! 2. **A form token** in every form the portal serves: HMAC-SHA256, under a server key
//!    (`portal.csrf_key`, else random per process), of the caller's credential (its
//!    cache key, a SHA-256 of the secret). Another site can neither read it from the
//!    portal's pages (the same-origin policy) nor compute it (the key), and it is
//!    different for every credential, so a token seen by one user is useless for another.
//!    Stateless: nothing is stored, and replicas that share the key accept each other's.
//!
//! A Bearer or `X-Auth-Token` credential is never attached by a browser on its own, so the
//! JSON API skips the origin check for it (the form token is checked on forms whatever the
//! credential).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use ring::hmac;

use crate::secret::{RandomError, Secret, constant_time_eq, random_bytes};

/// Where the request says it is going: the origin its own pages have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// Lower-case host without a trailing dot.
    pub host: String,
    /// The port, when the request named one.
    pub port: Option<u16>,
}

impl Origin {
    fn default_port(&self) -> u16 {
        if self.scheme == "https" { 443 } else { 80 }
    }

    fn effective_port(&self) -> u16 {
        self.port.unwrap_or(self.default_port())
    }

    /// `scheme://host[:port]`, as a browser writes it in `Origin`.
    pub fn url(&self) -> String {
        match self.port {
            Some(p) if p != self.default_port() => format!("{}://{}:{p}", self.scheme, self.host),
            _ => format!("{}://{}", self.scheme, self.host),
        }
    }

    /// Parses an `Origin` header value (`null` and anything else but `scheme://authority`
    /// are `None`).
    fn parse(value: &str) -> Option<Self> {
        let (scheme, authority) = value.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if !(scheme == "http" || scheme == "https") || authority.contains(['/', '?', '#']) {
            return None;
        }
        let (host, port) = crate::forward::target::host_and_port(authority, "Origin").ok()?;
        Some(Self { scheme, host, port })
    }

    fn same_as(&self, other: &Self) -> bool {
        self.scheme == other.scheme
            && self.host == other.host
            && self.effective_port() == other.effective_port()
    }
}

/// Why a state-changing request was refused (403; nothing changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    /// `Sec-Fetch-Site` says another site (or none: the address bar) made the request.
    #[error("cross-site request refused: Sec-Fetch-Site is not same-origin")]
    CrossSite,
    /// `Origin` names another origin, or is `null`.
    #[error("cross-origin request refused: Origin is not this portal's origin")]
    CrossOrigin,
    /// Neither `Sec-Fetch-Site` nor `Origin`: the origin cannot be told.
    #[error(
        "request refused: a request carried by a browser credential (Basic, a cookie) must send Origin or Sec-Fetch-Site"
    )]
    NoOrigin,
    /// Two values of one of those headers.
    #[error("request refused: Origin or Sec-Fetch-Site is given more than once")]
    Repeated,
    /// The form's token is missing or wrong.
    #[error(
        "the form token is missing or not valid for this credential: reload the page and try again"
    )]
    FormToken,
}

/// Checks that a state-changing request comes from `own` (the portal's own origin).
pub fn check_same_origin(headers: &HeaderMap, own: &Origin) -> Result<(), CsrfError> {
    let one = |name: &str| -> Result<Option<&str>, CsrfError> {
        let mut values = headers.get_all(name).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(CsrfError::Repeated);
        }
        Ok(first.map(|v| v.to_str().unwrap_or("")))
    };
    let fetch_site = one("sec-fetch-site")?;
    let origin = one("origin")?;
    if let Some(site) = fetch_site {
        if !site.eq_ignore_ascii_case("same-origin") {
            return Err(CsrfError::CrossSite);
        }
        // A browser that sends Sec-Fetch-Site has judged the origin itself; a proxy that
        // rewrites Host would make the Origin comparison below refuse good requests.
        return Ok(());
    }
    match origin {
        None => Err(CsrfError::NoOrigin),
        Some(value) => match Origin::parse(value.trim()) {
            Some(o) if o.same_as(own) => Ok(()),
            _ => Err(CsrfError::CrossOrigin),
        },
    }
}

/// Makes and checks form tokens: see the module documentation.
pub struct FormTokens {
    key: hmac::Key,
}

impl FormTokens {
    /// Under `key` (from `portal.csrf_key`), or a random key when `None`.
    pub fn new(key: Option<&Secret>) -> Result<Self, RandomError> {
        let key = match key {
            Some(k) => hmac::Key::new(hmac::HMAC_SHA256, k.expose().as_bytes()),
            None => hmac::Key::new(hmac::HMAC_SHA256, &random_bytes::<32>()?),
        };
        Ok(Self { key })
    }

    /// The form token of the credential whose cache key is `binding`.
    pub fn token_for(&self, binding: &[u8; 32]) -> String {
        let mut message = Vec::with_capacity(48);
        message.extend_from_slice(b"authgate-portal-form\0");
        message.extend_from_slice(binding);
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, &message).as_ref())
    }

    /// Whether `presented` is the form token of `binding` (constant time).
    pub fn check(&self, binding: &[u8; 32], presented: Option<&str>) -> Result<(), CsrfError> {
        let expected = self.token_for(binding);
        match presented {
            Some(p) if constant_time_eq(p.as_bytes(), expected.as_bytes()) => Ok(()),
            _ => Err(CsrfError::FormToken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> Origin {
        Origin {
            scheme: "http".into(),
            host: "auth.example.org".into(),
            port: Some(8080),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn same_origin_table() {
        use CsrfError::*;
        type Case<'a> = (&'a [(&'a str, &'a str)], Result<(), CsrfError>);
        let cases: &[Case<'_>] = &[
            (&[("sec-fetch-site", "same-origin")], Ok(())),
            (&[("sec-fetch-site", "Same-Origin")], Ok(())),
            (&[("sec-fetch-site", "same-site")], Err(CrossSite)),
            (&[("sec-fetch-site", "cross-site")], Err(CrossSite)),
            (&[("sec-fetch-site", "none")], Err(CrossSite)),
            (
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "http://auth.example.org:8080"),
                ],
                Err(CrossSite),
            ),
            (&[("origin", "http://auth.example.org:8080")], Ok(())),
            (&[("origin", "http://AUTH.example.org.:8080")], Ok(())),
            (&[("origin", "http://auth.example.org")], Err(CrossOrigin)),
            (
                &[("origin", "https://auth.example.org:8080")],
                Err(CrossOrigin),
            ),
            (&[("origin", "http://evil.example:8080")], Err(CrossOrigin)),
            (
                &[("origin", "http://auth.example.org:8080.evil.example")],
                Err(CrossOrigin),
            ),
            (
                &[("origin", "http://u@auth.example.org:8080")],
                Err(CrossOrigin),
            ),
            (
                &[("origin", "http://auth.example.org:8080/x")],
                Err(CrossOrigin),
            ),
            (&[("origin", "null")], Err(CrossOrigin)),
            (&[("origin", "")], Err(CrossOrigin)),
            (&[], Err(NoOrigin)),
            (
                &[
                    ("origin", "http://auth.example.org:8080"),
                    ("origin", "http://auth.example.org:8080"),
                ],
                Err(Repeated),
            ),
            (
                &[
                    ("sec-fetch-site", "same-origin"),
                    ("sec-fetch-site", "same-origin"),
                ],
                Err(Repeated),
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(
                check_same_origin(&headers(pairs), &own()),
                *want,
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn default_ports_compare_equal() {
        let own = Origin {
            scheme: "https".into(),
            host: "auth.example.org".into(),
            port: None,
        };
        assert_eq!(own.url(), "https://auth.example.org");
        for ok in ["https://auth.example.org", "https://auth.example.org:443"] {
            assert_eq!(check_same_origin(&headers(&[("origin", ok)]), &own), Ok(()));
        }
        assert_eq!(
            check_same_origin(&headers(&[("origin", "http://auth.example.org")]), &own),
            Err(CsrfError::CrossOrigin)
        );
        assert_eq!(super::tests::own().url(), "http://auth.example.org:8080");
    }

    #[test]
    fn form_tokens_are_bound_to_key_and_credential() {
        let tokens = FormTokens::new(Some(&Secret::new("k".repeat(32)))).unwrap();
        let alice = [1u8; 32];
        let bob = [2u8; 32];
        let t = tokens.token_for(&alice);
        assert_eq!(tokens.check(&alice, Some(&t)), Ok(()));
        assert_eq!(tokens.check(&bob, Some(&t)), Err(CsrfError::FormToken));
        assert_eq!(tokens.check(&alice, None), Err(CsrfError::FormToken));
        assert_eq!(tokens.check(&alice, Some("")), Err(CsrfError::FormToken));
        let other = FormTokens::new(None).unwrap();
        assert_eq!(other.check(&alice, Some(&t)), Err(CsrfError::FormToken));
        // The same key on another replica accepts it.
        let replica = FormTokens::new(Some(&Secret::new("k".repeat(32)))).unwrap();
        assert_eq!(replica.check(&alice, Some(&t)), Ok(()));
    }

    proptest::proptest! {
        /// `Origin` is the client's: no value panics the check, and what passes names the
        /// portal's own scheme, host and port (up to case, a trailing dot, the default port).
        #[test]
        fn only_the_own_origin_passes(value in proptest::prop_oneof![
            "[ -~]{0,40}",
            "https?://[aA]uth\\.example\\.org\\.?(:[0-9]{1,6})?[/@?#.a-z]{0,3}",
            "[hH][tT]{2}[pP][sS]?://[a-z.]{0,20}(:8080)?",
        ]) {
            let Ok(header) = http::HeaderValue::from_str(&value) else { return Ok(()) };
            let mut h = HeaderMap::new();
            h.insert(http::header::ORIGIN, header);
            if check_same_origin(&h, &own()).is_ok() {
                let v = value.trim().to_ascii_lowercase();
                let port = v
                    .strip_prefix("http://auth.example.org")
                    .map(|rest| rest.strip_prefix('.').unwrap_or(rest))
                    .and_then(|rest| rest.strip_prefix(':'))
                    .and_then(|p| p.parse::<u16>().ok());
                proptest::prop_assert_eq!(port, Some(8080), "{:?} passed", value);
            }
        }
    }
}
