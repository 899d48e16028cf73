//! Finds the credential in a sub-request: `Authorization: Bearer`, `Authorization: Basic`,
//! `X-Auth-Token`, or the browser session cookie. Anything malformed is an error with a
//! reason (401), never a panic.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;

use crate::secret::{Secret, sha256};

#[cfg(test)]
mod props;

/// Longest credential accepted, in bytes (a JWT with many claims fits easily).
pub const MAX_CREDENTIAL_LEN: usize = 8192;

/// A credential as presented, before any provider looked at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `Authorization: Basic <base64(user:password)>`.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// `X-Auth-Token: <token>` (Astakos, Keystone, and authgate tokens alike).
    AuthToken(Secret),
    /// The browser session cookie: an opaque random id of a session in the store.
    Session(Secret),
}

/// Length of a session cookie's value: 32 random bytes in unpadded base64url.
pub const SESSION_COOKIE_LEN: usize = 43;

/// Why a presented credential cannot even be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// More than one `Authorization` or `X-Auth-Token` header.
    #[error("more than one {0} header")]
    Repeated(&'static str),
    /// Non-ASCII or control characters.
    #[error("the {0} header holds characters outside visible ASCII")]
    NotAscii(&'static str),
    /// The Authorization scheme is neither Bearer nor Basic.
    #[error("unsupported Authorization scheme (use Bearer or Basic)")]
    UnsupportedScheme,
    /// A scheme with nothing after it.
    #[error("the {0} credential is empty")]
    Empty(&'static str),
    /// A token with characters a token never has.
    #[error("the token holds characters that no token has")]
    BadTokenSyntax,
    /// Longer than [`MAX_CREDENTIAL_LEN`].
    #[error("the credential is longer than 8192 bytes")]
    TooLong,
    /// Basic credentials that are not base64.
    #[error("the Basic credential is not valid base64")]
    BadBase64,
    /// Basic credentials that decode to something other than UTF-8.
    #[error("the Basic credential is not UTF-8")]
    NotUtf8,
    /// Basic credentials without `user:password`.
    #[error("the Basic credential has no ':' between user and password")]
    NoColon,
    /// Basic credentials with an empty user name.
    #[error("the Basic credential has an empty user name")]
    EmptyUser,
    /// `Authorization` and `X-Auth-Token` carry different credentials.
    #[error("Authorization and X-Auth-Token carry different credentials")]
    Conflicting,
    /// The session cookie is not one authgate sets.
    #[error("the session cookie is malformed")]
    BadSessionCookie,
}

impl Credential {
    /// Key for the decision cache: SHA-256 over a form tag and the secret, so that the
    /// same bytes presented in another form (Bearer, X-Auth-Token, Basic) never share an
    /// entry: providers accept different forms, and the answer for one form must not
    /// decide the other.
    pub fn cache_key(&self) -> [u8; 32] {
        let mut buf = Vec::with_capacity(64);
        match self {
            Self::Bearer(t) => {
                buf.push(b't');
                buf.extend_from_slice(t.expose().as_bytes());
            }
            Self::AuthToken(t) => {
                buf.push(b'x');
                buf.extend_from_slice(t.expose().as_bytes());
            }
            Self::Session(t) => {
                buf.push(b's');
                buf.extend_from_slice(t.expose().as_bytes());
            }
            Self::Basic { username, password } => {
                buf.push(b'b');
                buf.extend_from_slice(&(username.len() as u64).to_be_bytes());
                buf.extend_from_slice(username.as_bytes());
                buf.extend_from_slice(password.expose().as_bytes());
            }
        }
        sha256(&buf)
    }

    /// The token of a Bearer or X-Auth-Token credential.
    pub fn token(&self) -> Option<&Secret> {
        match self {
            Self::Bearer(t) | Self::AuthToken(t) => Some(t),
            Self::Basic { .. } | Self::Session(_) => None,
        }
    }

    /// A short name for logs: the kind, never the value.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Bearer(_) => "bearer",
            Self::Basic { .. } => "basic",
            Self::AuthToken(_) => "x-auth-token",
            Self::Session(_) => "session",
        }
    }
}

/// The credential of a request: `Ok(None)` when it carries none.
pub fn extract(headers: &HeaderMap) -> Result<Option<Credential>, CredentialError> {
    let authorization = one_header(headers, &http::header::AUTHORIZATION, "Authorization")?
        .map(parse_authorization)
        .transpose()?;
    use crate::forward::names::{X_AUTH_TOKEN, X_STORAGE_TOKEN};
    let auth_token = match one_header(headers, &X_AUTH_TOKEN, "X-Auth-Token")? {
        Some(v) => Some(parse_token(v, "X-Auth-Token")?),
        // Swift clients send X-Storage-Token; keystonemiddleware falls back to it.
        None => one_header(headers, &X_STORAGE_TOKEN, "X-Storage-Token")?
            .map(|v| parse_token(v, "X-Storage-Token"))
            .transpose()?,
    };
    match (authorization, auth_token) {
        (Some(a), None) => Ok(Some(a)),
        (None, Some(t)) => Ok(Some(Credential::AuthToken(t))),
        (None, None) => Ok(None),
        // The same token in both places is harmless (clients of OpenStack do it).
        (Some(Credential::Bearer(a)), Some(t)) if a == t => Ok(Some(Credential::Bearer(a))),
        (Some(_), Some(_)) => Err(CredentialError::Conflicting),
    }
}

/// The session cookie `name` of a request, if any. The cookie must appear once in all
/// `Cookie` headers together (a second one may have been planted by a sibling host:
/// refused, never a choice between them), and hold exactly what authgate sets.
pub fn session_cookie(
    headers: &HeaderMap,
    name: &str,
) -> Result<Option<Credential>, CredentialError> {
    let mut found: Option<&[u8]> = None;
    for header in headers.get_all(http::header::COOKIE) {
        for pair in header.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                continue;
            };
            if &pair[..eq] != name.as_bytes() {
                continue;
            }
            if found.is_some() {
                return Err(CredentialError::Repeated("session cookie"));
            }
            found = Some(&pair[eq + 1..]);
        }
    }
    let Some(value) = found else {
        return Ok(None);
    };
    let value = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    if value.len() != SESSION_COOKIE_LEN
        || !value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    {
        return Err(CredentialError::BadSessionCookie);
    }
    // Checked above: ASCII only.
    let text = std::str::from_utf8(value).map_err(|_| CredentialError::BadSessionCookie)?;
    Ok(Some(Credential::Session(Secret::new(text))))
}

/// The `X-Service-Token` of a request (Keystone composite authentication), if any.
pub fn service_token(headers: &HeaderMap) -> Result<Option<Secret>, CredentialError> {
    one_header(
        headers,
        &crate::forward::names::X_SERVICE_TOKEN,
        "X-Service-Token",
    )?
    .map(|v| parse_token(v, "X-Service-Token"))
    .transpose()
}

/// The token in the header `name` (one a provider names, such as `X-ECMWF-Key`), read
/// like `X-Auth-Token`: once, visible ASCII, token syntax.
pub fn from_named_header(
    headers: &HeaderMap,
    name: &http::HeaderName,
) -> Result<Option<Secret>, CredentialError> {
    one_header(headers, name, "token")?
        .map(|v| parse_token(v, "token header"))
        .transpose()
}

/// The token of `?X-Auth-Token=` in the original query (synnefo services accept it there).
/// The query is read as a form (`application/x-www-form-urlencoded`, as Django reads it):
/// `+` is a space, names and values are percent-decoded.
pub fn from_query(query: &str) -> Result<Option<Credential>, CredentialError> {
    let mut found = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name != "X-Auth-Token" {
            continue;
        }
        if found.is_some() {
            return Err(CredentialError::Repeated("X-Auth-Token"));
        }
        // The decoder replaces bytes that are not UTF-8 with U+FFFD.
        if value.contains('\u{FFFD}') {
            return Err(CredentialError::NotAscii("X-Auth-Token"));
        }
        found = Some(Credential::AuthToken(parse_token(&value, "X-Auth-Token")?));
    }
    Ok(found)
}

fn one_header<'a>(
    headers: &'a HeaderMap,
    name: &http::HeaderName,
    display: &'static str,
) -> Result<Option<&'a str>, CredentialError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(CredentialError::Repeated(display));
    }
    let bytes = value.as_bytes();
    if bytes.len() > MAX_CREDENTIAL_LEN + 16 {
        return Err(CredentialError::TooLong);
    }
    if !bytes
        .iter()
        .all(|b| (0x20..0x7f).contains(b) || *b == b'\t')
    {
        return Err(CredentialError::NotAscii(display));
    }
    // Checked above: visible ASCII, so this cannot fail.
    Ok(value.to_str().ok().map(str::trim))
}

fn parse_authorization(value: &str) -> Result<Credential, CredentialError> {
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim_start();
    if scheme.eq_ignore_ascii_case("bearer") {
        parse_token(rest, "Bearer").map(Credential::Bearer)
    } else if scheme.eq_ignore_ascii_case("basic") {
        parse_basic(rest)
    } else {
        Err(CredentialError::UnsupportedScheme)
    }
}

/// RFC 6750 `b64token`: `ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/"` then `=`s.
fn parse_token(value: &str, what: &'static str) -> Result<Secret, CredentialError> {
    if value.is_empty() {
        return Err(CredentialError::Empty(what));
    }
    if value.len() > MAX_CREDENTIAL_LEN {
        return Err(CredentialError::TooLong);
    }
    let body = value.trim_end_matches('=');
    let ok = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !ok {
        return Err(CredentialError::BadTokenSyntax);
    }
    Ok(Secret::new(value))
}

fn parse_basic(value: &str) -> Result<Credential, CredentialError> {
    if value.is_empty() {
        return Err(CredentialError::Empty("Basic"));
    }
    if value.len() > MAX_CREDENTIAL_LEN {
        return Err(CredentialError::TooLong);
    }
    let decoded = STANDARD
        .decode(value)
        .map_err(|_| CredentialError::BadBase64)?;
    let text = String::from_utf8(decoded).map_err(|_| CredentialError::NotUtf8)?;
    let (user, password) = text.split_once(':').ok_or(CredentialError::NoColon)?;
    if user.is_empty() {
        return Err(CredentialError::EmptyUser);
    }
    Ok(Credential::Basic {
        username: user.to_owned(),
        password: Secret::new(password),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Headers<'a> = Vec<(&'a str, &'a [u8])>;
    type OwnedHeaders<'a> = Vec<(&'a str, Vec<u8>)>;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    fn b64(s: &[u8]) -> Vec<u8> {
        let mut v = b"Basic ".to_vec();
        v.extend_from_slice(STANDARD.encode(s).as_bytes());
        v
    }

    #[test]
    fn accepted_table() {
        let basic = b64(b"alice:pa:ss");
        let cases: Vec<(Headers, Credential)> = vec![
            (
                vec![("authorization", b"Bearer abc.def-ghi_~+/==")],
                Credential::Bearer(Secret::new("abc.def-ghi_~+/==")),
            ),
            (
                vec![("authorization", b"bearer   tok")],
                Credential::Bearer(Secret::new("tok")),
            ),
            (
                vec![("authorization", b"BEARER tok ")],
                Credential::Bearer(Secret::new("tok")),
            ),
            (
                vec![("x-auth-token", b"tok")],
                Credential::AuthToken(Secret::new("tok")),
            ),
            (
                vec![("authorization", b"Bearer tok"), ("x-auth-token", b"tok")],
                Credential::Bearer(Secret::new("tok")),
            ),
            (
                vec![("authorization", &basic)],
                Credential::Basic {
                    username: "alice".into(),
                    password: Secret::new("pa:ss"),
                },
            ),
        ];
        for (h, expected) in cases {
            assert_eq!(extract(&headers(&h)).unwrap(), Some(expected), "{h:?}");
        }
        assert_eq!(extract(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn rejected_table() {
        use CredentialError as E;
        let long = format!("Bearer {}", "a".repeat(MAX_CREDENTIAL_LEN + 1));
        let long_basic = format!("Basic {}", "a".repeat(MAX_CREDENTIAL_LEN + 4));
        let cases: Vec<(OwnedHeaders, E)> = vec![
            (
                vec![("authorization", b"Bearer".to_vec())],
                E::Empty("Bearer"),
            ),
            (
                vec![("authorization", b"Bearer ".to_vec())],
                E::Empty("Bearer"),
            ),
            (
                vec![("authorization", b"Basic".to_vec())],
                E::Empty("Basic"),
            ),
            (
                vec![("authorization", b"Digest x".to_vec())],
                E::UnsupportedScheme,
            ),
            (
                vec![("authorization", b"tok".to_vec())],
                E::UnsupportedScheme,
            ),
            (vec![("authorization", b"".to_vec())], E::UnsupportedScheme),
            (
                vec![("authorization", b"Bearer a b".to_vec())],
                E::BadTokenSyntax,
            ),
            (
                vec![("authorization", b"Bearer ===".to_vec())],
                E::BadTokenSyntax,
            ),
            (
                vec![("authorization", b"Bearer a,b".to_vec())],
                E::BadTokenSyntax,
            ),
            (
                vec![("authorization", b"Bearer a\"b".to_vec())],
                E::BadTokenSyntax,
            ),
            (
                vec![("authorization", b"Bearer \xff\xfe".to_vec())],
                E::NotAscii("Authorization"),
            ),
            (
                vec![("authorization", b"Bearer caf\xc3\xa9".to_vec())],
                E::NotAscii("Authorization"),
            ),
            (vec![("authorization", long.into_bytes())], E::TooLong),
            (vec![("authorization", long_basic.into_bytes())], E::TooLong),
            (
                vec![
                    ("authorization", b"Bearer a".to_vec()),
                    ("authorization", b"Bearer a".to_vec()),
                ],
                E::Repeated("Authorization"),
            ),
            (
                vec![
                    ("x-auth-token", b"a".to_vec()),
                    ("x-auth-token", b"b".to_vec()),
                ],
                E::Repeated("X-Auth-Token"),
            ),
            (
                vec![("x-auth-token", b"".to_vec())],
                E::Empty("X-Auth-Token"),
            ),
            (vec![("x-auth-token", b"a b".to_vec())], E::BadTokenSyntax),
            (
                vec![
                    ("authorization", b"Bearer a".to_vec()),
                    ("x-auth-token", b"b".to_vec()),
                ],
                E::Conflicting,
            ),
            (
                vec![
                    ("authorization", b64(b"alice:x")),
                    ("x-auth-token", b"b".to_vec()),
                ],
                E::Conflicting,
            ),
            (vec![("authorization", b"Basic !!!".to_vec())], E::BadBase64),
            (
                vec![("authorization", b"Basic YWxpY2U".to_vec())],
                E::BadBase64,
            ),
            (vec![("authorization", b64(b"alice"))], E::NoColon),
            (vec![("authorization", b64(b":pw"))], E::EmptyUser),
            (vec![("authorization", b64(b"al\xffce:pw"))], E::NotUtf8),
        ];
        for (h, expected) in cases {
            let borrowed: Vec<(&str, &[u8])> = h.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            assert_eq!(extract(&headers(&borrowed)), Err(expected), "{h:?}");
        }
    }

    #[test]
    fn query_token_table() {
        use CredentialError as E;
        let cases: Vec<(&str, Result<Option<Credential>, E>)> = vec![
            (
                "a=1&X-Auth-Token=abc",
                Ok(Some(Credential::AuthToken(Secret::new("abc")))),
            ),
            (
                "X-Auth-Token=a%2Bb",
                Ok(Some(Credential::AuthToken(Secret::new("a+b")))),
            ),
            ("x-auth-token=abc", Ok(None)),
            ("", Ok(None)),
            ("X-Auth-Token=", Err(E::Empty("X-Auth-Token"))),
            (
                "X-Auth-Token=a&X-Auth-Token=a",
                Err(E::Repeated("X-Auth-Token")),
            ),
            ("X-Auth-Token=a%20b", Err(E::BadTokenSyntax)),
            // A form: `+` is a space, and the name is decoded too.
            ("X-Auth-Token=a+b", Err(E::BadTokenSyntax)),
            (
                "X%2DAuth-Token=abc",
                Ok(Some(Credential::AuthToken(Secret::new("abc")))),
            ),
            ("X-Auth-Token=%ff", Err(E::NotAscii("X-Auth-Token"))),
        ];
        for (query, expected) in cases {
            assert_eq!(from_query(query), expected, "{query}");
        }
    }

    #[test]
    fn cache_keys_separate_kinds_and_users() {
        let bearer = Credential::Bearer(Secret::new("x"));
        let token = Credential::AuthToken(Secret::new("x"));
        let basic1 = Credential::Basic {
            username: "ab".into(),
            password: Secret::new("c"),
        };
        let basic2 = Credential::Basic {
            username: "a".into(),
            password: Secret::new("bc"),
        };
        assert_ne!(
            bearer.cache_key(),
            token.cache_key(),
            "one token in two forms: two entries"
        );
        assert_ne!(basic1.cache_key(), basic2.cache_key());
        assert_ne!(bearer.cache_key(), basic1.cache_key());
        assert!(!format!("{basic1:?}").contains("\"c\""));
    }

    /// The session cookie: exactly once, exactly the shape authgate sets; other cookies
    /// and look-alike names are ignored.
    #[test]
    fn session_cookie_table() {
        let id = "A".repeat(SESSION_COOKIE_LEN);
        let ok = |v: &str| Ok(Some(Credential::Session(Secret::new(v))));
        let one = format!("__Host-authgate={id}");
        type Want = Result<Option<Credential>, CredentialError>;
        let cases: Vec<(Vec<String>, Want)> = vec![
            (vec![], Ok(None)),
            (vec!["other=1; x=2".into()], Ok(None)),
            (vec![one.clone()], ok(&id)),
            (vec![format!("a=1;  {one} ; b=2")], ok(&id)),
            (vec![format!("__Host-authgate=\"{id}\"")], ok(&id)),
            (vec![format!("__host-authgate={id}")], Ok(None)),
            (vec![format!("X__Host-authgate={id}")], Ok(None)),
            (
                vec![format!("{one}; {one}")],
                Err(CredentialError::Repeated("session cookie")),
            ),
            (
                vec![one.clone(), one.clone()],
                Err(CredentialError::Repeated("session cookie")),
            ),
            (
                vec![format!("__Host-authgate={id}A")],
                Err(CredentialError::BadSessionCookie),
            ),
            (
                vec![format!(
                    "__Host-authgate={}",
                    "%".repeat(SESSION_COOKIE_LEN)
                )],
                Err(CredentialError::BadSessionCookie),
            ),
            (
                vec!["__Host-authgate=".into()],
                Err(CredentialError::BadSessionCookie),
            ),
        ];
        for (cookies, want) in cases {
            let mut h = HeaderMap::new();
            for c in &cookies {
                h.append(
                    http::header::COOKIE,
                    http::HeaderValue::from_str(c).unwrap(),
                );
            }
            assert_eq!(session_cookie(&h, "__Host-authgate"), want, "{cookies:?}");
        }
        // A cookie and a Bearer token of the same bytes never share a cache entry.
        let session = Credential::Session(Secret::new(id.clone()));
        assert_ne!(
            session.cache_key(),
            Credential::Bearer(Secret::new(id)).cache_key()
        );
        assert!(!format!("{session:?}").contains("AAAA"));
    }
}
