//! The cookies of browser sign-in: the session cookie (an opaque random id; the session
//! lives in the store) and the short-lived pre-login cookie that binds `state`, `nonce`,
//! the PKCE verifier, the issuer and the return URL to the browser that started the
//! sign-in, signed with HMAC-SHA256 so that it cannot be forged or altered.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use ring::hmac;
use serde::{Deserialize, Serialize};

use super::config::CookieConfig;
use crate::secret::Secret;

/// Longest pre-login cookie accepted (it holds a return URL).
const MAX_PRELOGIN_LEN: usize = 6144;

/// The session cookie's attributes, fixed at start.
#[derive(Debug, Clone)]
pub struct SessionCookie {
    name: String,
    domain: Option<String>,
    secure: bool,
    max_age: u64,
}

impl SessionCookie {
    /// From `login.cookie`, living `max_age` seconds (the session's absolute lifetime).
    pub fn new(config: &CookieConfig, max_age: u64) -> Self {
        Self {
            name: config.name().to_owned(),
            domain: config.domain.clone(),
            secure: config.secure,
            max_age,
        }
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn attributes(&self, max_age: u64) -> String {
        let mut a = format!("; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax");
        if self.secure {
            a.push_str("; Secure");
        }
        if let Some(d) = &self.domain {
            a.push_str("; Domain=");
            a.push_str(d);
        }
        a
    }

    /// `Set-Cookie` for a new session whose cookie value is `value`.
    pub fn set(&self, value: &Secret) -> Option<HeaderValue> {
        let text = format!(
            "{}={}{}",
            self.name,
            value.expose(),
            self.attributes(self.max_age)
        );
        let mut h = HeaderValue::from_str(&text).ok()?;
        h.set_sensitive(true);
        Some(h)
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn clear(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!("{}={}", self.name, self.attributes(0))).ok()
    }

    /// The pre-login cookie's name: host-only always (`__Host-` when Secure).
    pub fn prelogin_name(&self) -> &'static str {
        if self.secure {
            "__Host-authgate-login"
        } else {
            "authgate-login"
        }
    }

    /// `Set-Cookie` of the pre-login cookie, living `max_age` seconds.
    pub fn set_prelogin(&self, value: &str, max_age: u64) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        let mut h = HeaderValue::from_str(&format!(
            "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
            self.prelogin_name()
        ))
        .ok()?;
        // It holds the PKCE verifier.
        h.set_sensitive(true);
        Some(h)
    }

    /// `Set-Cookie` that removes the pre-login cookie.
    pub fn clear_prelogin(&self) -> Option<HeaderValue> {
        self.set_prelogin("", 0)
    }
}

/// What the pre-login cookie carries.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreLogin {
    /// `state` sent to the IdP.
    #[serde(rename = "s")]
    pub state: String,
    /// `nonce` sent to the IdP.
    #[serde(rename = "n")]
    pub nonce: String,
    /// The PKCE code verifier.
    #[serde(rename = "v")]
    pub verifier: String,
    /// The configured issuer name.
    #[serde(rename = "i")]
    pub issuer: String,
    /// Where to return (already checked).
    #[serde(rename = "r")]
    pub return_to: String,
    /// Unix seconds after which it is refused.
    #[serde(rename = "e")]
    pub expires_at: i64,
}

impl std::fmt::Debug for PreLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreLogin")
            .field("issuer", &self.issuer)
            .field("return_to", &self.return_to)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl PreLogin {
    /// `base64url(json).base64url(hmac)`.
    pub fn seal(&self, key: &hmac::Key) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let body = URL_SAFE_NO_PAD.encode(json);
        let tag = hmac::sign(key, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The pre-login of a sealed `value` if its signature holds and it has not expired.
    pub fn open(value: &str, key: &hmac::Key, now: i64) -> Option<Self> {
        if value.len() > MAX_PRELOGIN_LEN {
            return None;
        }
        let (body, tag) = value.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        // Constant time (ring's verify).
        hmac::verify(key, body.as_bytes(), &tag).ok()?;
        let json = URL_SAFE_NO_PAD.decode(body).ok()?;
        let pre: Self = serde_json::from_slice(&json).ok()?;
        (pre.expires_at > now).then_some(pre)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, when it is there once.
pub fn cookie_value<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for header in headers.get_all(http::header::COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((n, v)) = pair.trim().split_once('=')
                && n == name
            {
                if found.is_some() {
                    return None;
                }
                found = Some(v);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &[7; 32])
    }

    /// The default attributes: `__Host-authgate`, Secure, HttpOnly, SameSite=Lax, Path=/,
    /// no Domain; a Domain drops the prefix; development drops Secure.
    #[test]
    fn set_cookie_attributes() {
        let value = Secret::new("v".repeat(43));
        let default = SessionCookie::new(&CookieConfig::default(), 86400);
        assert_eq!(
            default.set(&value).unwrap(),
            format!(
                "__Host-authgate={}; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax; Secure",
                "v".repeat(43)
            )
            .as_str()
        );
        assert_eq!(
            default.clear().unwrap(),
            "__Host-authgate=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure"
        );
        let sso = SessionCookie::new(
            &CookieConfig {
                domain: Some("example.org".into()),
                ..CookieConfig::default()
            },
            60,
        );
        assert_eq!(
            sso.set(&value).unwrap(),
            format!(
                "authgate={}; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure; Domain=example.org",
                "v".repeat(43)
            )
            .as_str()
        );
        let dev = SessionCookie::new(
            &CookieConfig {
                secure: false,
                ..CookieConfig::default()
            },
            60,
        );
        let set = dev.set(&value).unwrap();
        assert!(set.to_str().unwrap().starts_with("authgate="));
        assert!(!set.to_str().unwrap().contains("Secure"));
        assert_eq!(default.prelogin_name(), "__Host-authgate-login");
        assert!(
            default
                .set_prelogin("x", 600)
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("; Path=/; Max-Age=600; HttpOnly; SameSite=Lax; Secure")
        );
    }

    #[test]
    fn prelogin_is_sealed() {
        let pre = PreLogin {
            state: "st".into(),
            nonce: "no".into(),
            verifier: "ve".into(),
            issuer: "main".into(),
            return_to: "/x".into(),
            expires_at: 100,
        };
        let sealed = pre.seal(&key());
        assert_eq!(PreLogin::open(&sealed, &key(), 99), Some(pre.clone()));
        assert_eq!(PreLogin::open(&sealed, &key(), 100), None, "expired");
        let other = hmac::Key::new(hmac::HMAC_SHA256, &[8; 32]);
        assert_eq!(PreLogin::open(&sealed, &other, 99), None, "another key");
        // Any change of the body or the tag.
        let (body, tag) = sealed.split_once('.').unwrap();
        let mut forged = pre.clone();
        forged.return_to = "https://evil.example/".into();
        let forged_body = forged.seal(&key()).split_once('.').unwrap().0.to_owned();
        assert_eq!(
            PreLogin::open(&format!("{forged_body}.{tag}"), &key(), 99),
            None
        );
        assert_eq!(PreLogin::open(&format!("{body}.{tag}A"), &key(), 99), None);
        assert_eq!(PreLogin::open(body, &key(), 99), None);
        assert_eq!(PreLogin::open("", &key(), 99), None);
        assert!(!format!("{pre:?}").contains("ve"));
    }

    proptest::proptest! {
        /// Whatever a client puts in the pre-login cookie: no panic, and nothing opens
        /// without the key's signature.
        #[test]
        fn unsigned_prelogins_never_open(value in "[ -~]{0,200}", body in "[A-Za-z0-9_-]{0,80}") {
            proptest::prop_assert!(PreLogin::open(&value, &key(), 0).is_none());
            let forged = format!("{body}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
            proptest::prop_assert!(PreLogin::open(&forged, &key(), 0).is_none());
        }
    }
}
