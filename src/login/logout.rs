//! Ending sessions: `/oauth2/sign_out` (the browser's own, same-origin only; optionally
//! RP-initiated logout at the IdP) and `/oauth2/backchannel-logout` (OpenID Connect
//! Back-Channel Logout 1.0: the IdP posts a signed logout token).

use http::{HeaderMap, Method};
use serde_json::Value;

use super::{Login, LoginError, LoginReply, safe_return};
use crate::store::SessionMatch;

/// The `events` member a logout token must carry.
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// How old a logout token may be.
const MAX_LOGOUT_TOKEN_AGE: i64 = 600;
/// Largest back-channel request body.
pub const MAX_LOGOUT_BODY: usize = 16 * 1024;

/// Whether a request that changes state with the cookie comes from the site itself:
/// `Sec-Fetch-Site` (sent by every current browser) must be `same-origin` or `none` (typed,
/// bookmarked); an `Origin` must be this host's.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let one = |name: &str| {
        let mut all = headers.get_all(name).iter();
        let first = all.next();
        if all.next().is_some() {
            return Err(());
        }
        Ok(first.and_then(|v| v.to_str().ok()))
    };
    let (Ok(site), Ok(origin), Ok(host)) = (one("sec-fetch-site"), one("origin"), one("host"))
    else {
        return false;
    };
    if site.is_some_and(|s| s != "same-origin" && s != "none") {
        return false;
    }
    match origin {
        None => true,
        Some(o) => {
            let authority = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"));
            matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
        }
    }
}

impl Login {
    /// `/oauth2/sign_out[?rd=<url>]`: ends the browser's session, clears its cookie, and
    /// sends it on (through the IdP's `end_session_endpoint` when `end_session` is on).
    pub async fn sign_out(
        &self,
        method: &Method,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<LoginReply, LoginError> {
        if method != Method::GET && method != Method::POST {
            return Err(LoginError::BadRequest("use GET or POST"));
        }
        if !same_origin(headers) {
            return Err(LoginError::CrossSite);
        }
        let rd = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .find(|(k, _)| k == "rd")
            .map(|(_, v)| v.into_owned());
        let return_to = safe_return(
            rd.as_deref().unwrap_or(&self.post_logout),
            &self.return_hosts,
        );
        let mut ended = Vec::new();
        let mut location = return_to.clone();
        if let Ok(Some(credential)) = crate::credential::session_cookie(headers, self.cookie.name())
        {
            let hash = credential.cache_key();
            let now = crate::unix_now();
            let session = self
                .store
                .get_session(&hash, now)
                .await
                .map_err(|e| LoginError::Unavailable(e.to_string()))?;
            self.store
                .delete_session(&hash)
                .await
                .map_err(|e| LoginError::Unavailable(e.to_string()))?;
            ended.push(hash);
            if let Some(session) = session
                && let Some(issuer) = self.issuer(&session.issuer)
                && issuer.config.end_session
            {
                match issuer.verifier.discovered("end_session_endpoint").await {
                    Ok(end) => {
                        let q = form_urlencoded::Serializer::new(String::new())
                            .append_pair("id_token_hint", session.id_token.expose())
                            .append_pair("client_id", &issuer.config.client_id)
                            .append_pair("post_logout_redirect_uri", &self.absolute(&return_to))
                            .finish();
                        let sep = if end.contains('?') { '&' } else { '?' };
                        location = format!("{end}{sep}{q}");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "no end_session_endpoint: signed out here only")
                    }
                }
            }
            tracing::info!("signed out");
        }
        let mut reply = LoginReply::redirect(location, self.cookie.clear().into_iter().collect());
        reply.ended = ended;
        Ok(reply)
    }

    /// `url` made absolute against the callback's origin.
    fn absolute(&self, url: &str) -> String {
        if !url.starts_with('/') {
            return url.to_owned();
        }
        let origin = self
            .redirect_url
            .strip_suffix("/oauth2/callback")
            .unwrap_or(&self.redirect_url);
        format!("{origin}{url}")
    }

    /// `POST /oauth2/backchannel-logout` with `logout_token=<JWT>`: verifies the token and
    /// ends every session it names; the hashes of the sessions ended.
    pub async fn backchannel_logout(
        &self,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Vec<[u8; 32]>, LoginError> {
        let form = content_type
            .and_then(|c| c.split(';').next())
            .is_some_and(|c| {
                c.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form {
            return Err(LoginError::BadRequest(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let mut token = None;
        for (k, v) in form_urlencoded::parse(body) {
            if k == "logout_token" {
                if token.is_some() {
                    return Err(LoginError::BadRequest("logout_token is repeated"));
                }
                token = Some(v.into_owned());
            }
        }
        let token = token.ok_or(LoginError::BadRequest("no logout_token"))?;
        let claims = self.verify_logout_token(&token).await?;
        let (issuer_url, sub, sid) = (
            claims["iss"].as_str().unwrap_or(""),
            claims["sub"].as_str(),
            claims["sid"].as_str(),
        );
        let mut ended = Vec::new();
        for issuer in self
            .issuers
            .iter()
            .filter(|i| i.config.issuer == issuer_url)
        {
            let which = SessionMatch {
                issuer: &issuer.config.name,
                subject: sub,
                sid,
            };
            ended.extend(
                self.store
                    .end_sessions(which)
                    .await
                    .map_err(|e| LoginError::Unavailable(e.to_string()))?,
            );
        }
        tracing::info!(ended = ended.len(), "back-channel logout");
        Ok(ended)
    }

    /// The claims of a logout token that passes every check of the specification (2.6).
    async fn verify_logout_token(&self, token: &str) -> Result<Value, LoginError> {
        let bad = |why: &str| LoginError::BadAnswer(format!("logout token: {why}"));
        let iss = crate::providers::unverified_issuer(token).ok_or_else(|| bad("no issuer"))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or_else(|| bad("unknown issuer"))?;
        let claims = issuer
            .verifier
            .verify_requiring(token, &["iss", "aud"])
            .await
            .map_err(|e| match e {
                crate::providers::AuthError::Unavailable(w) => LoginError::Unavailable(w),
                other => bad(&other.to_string()),
            })?;
        let now = crate::unix_now();
        let iat = claims["iat"].as_i64().ok_or_else(|| bad("no iat"))?;
        let leeway = issuer.config.leeway.as_secs() as i64;
        if iat > now + leeway || iat < now - MAX_LOGOUT_TOKEN_AGE - leeway {
            return Err(bad("iat is out of range"));
        }
        if !claims["events"][BACKCHANNEL_EVENT].is_object() {
            return Err(bad("no back-channel logout event"));
        }
        if claims.get("nonce").is_some() {
            return Err(bad("a nonce is not allowed"));
        }
        let has = |name: &str| claims[name].as_str().is_some_and(|s| !s.is_empty());
        if !has("sub") && !has("sid") {
            return Err(bad("neither sub nor sid"));
        }
        let jti = claims["jti"]
            .as_str()
            .filter(|j| !j.is_empty())
            .ok_or_else(|| bad("no jti"))?;
        if !self
            .used_jtis
            .entry(format!("{iss}\u{0}{jti}"))
            .or_insert(())
            .is_fresh()
        {
            return Err(bad("replayed"));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_table() {
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("host", "app.example.org")], true),
            (
                &[
                    ("host", "app.example.org"),
                    ("sec-fetch-site", "same-origin"),
                ],
                true,
            ),
            (
                &[("host", "app.example.org"), ("sec-fetch-site", "none")],
                true,
            ),
            (
                &[
                    ("host", "app.example.org"),
                    ("sec-fetch-site", "cross-site"),
                ],
                false,
            ),
            (
                &[("host", "app.example.org"), ("sec-fetch-site", "same-site")],
                false,
            ),
            (
                &[
                    ("host", "app.example.org"),
                    ("origin", "https://app.example.org"),
                ],
                true,
            ),
            (
                &[
                    ("host", "app.example.org:8443"),
                    ("origin", "http://APP.example.org:8443"),
                ],
                true,
            ),
            (
                &[
                    ("host", "app.example.org"),
                    ("origin", "https://evil.example"),
                ],
                false,
            ),
            (&[("host", "app.example.org"), ("origin", "null")], false),
            (
                &[
                    ("host", "app.example.org"),
                    ("origin", "https://app.example.org"),
                    ("origin", "https://app.example.org"),
                ],
                false,
            ),
        ];
        for (pairs, want) in cases {
            let mut h = HeaderMap::new();
            for (k, v) in *pairs {
                h.append(
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                );
            }
            assert_eq!(same_origin(&h), *want, "{pairs:?}");
        }
    }
}
