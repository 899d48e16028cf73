//! `/oauth2/callback`: the IdP's answer checked against the pre-login cookie, the code
//! exchanged, the ID token verified, and a new session created.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use serde_json::Value;

use super::cookie::{PreLogin, cookie_value};
use super::{Issuer, Login, LoginError, LoginReply};
use crate::credential::Credential;
use crate::providers::SessionProvider;
use crate::secret::{Secret, constant_time_eq, random_bytes, sha256};
use crate::store::SessionRecord;

impl Login {
    /// `/oauth2/callback?code=..&state=..` (or `?error=..`).
    pub async fn callback(
        &self,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<LoginReply, LoginError> {
        let mut q: std::collections::HashMap<String, String> = Default::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if q.insert(k.into_owned(), v.into_owned()).is_some() {
                return Err(LoginError::BadRequest("a parameter is repeated"));
            }
        }
        let now = crate::unix_now();
        let pre = cookie_value(headers, self.cookie.prelogin_name())
            .and_then(|v| PreLogin::open(v, &self.state_key, now))
            .ok_or(LoginError::NoLoginState)?;
        let state = q.get("state").ok_or(LoginError::BadState)?;
        if !constant_time_eq(state.as_bytes(), pre.state.as_bytes()) {
            return Err(LoginError::BadState);
        }
        // Single use: a replayed answer (the same state again) is refused.
        if !self
            .used_states
            .entry(sha256(state.as_bytes()))
            .or_insert(())
            .is_fresh()
        {
            return Err(LoginError::BadState);
        }
        if let Some(error) = q.get("error") {
            let code: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(LoginError::Denied(code));
        }
        let issuer = self.issuer(&pre.issuer).ok_or(LoginError::NoLoginState)?;
        // RFC 9207: an issuer named in the answer must be the one asked.
        if q.get("iss").is_some_and(|iss| iss != &issuer.config.issuer) {
            return Err(LoginError::BadAnswer(
                "the answer names another issuer".into(),
            ));
        }
        let code = q.get("code").ok_or(LoginError::BadRequest("no code"))?;
        let token_endpoint = issuer.verifier.discovered("token_endpoint").await?;
        let (status, body) = issuer
            .client
            .post_form(
                &self.http,
                &token_endpoint,
                vec![
                    ("grant_type", "authorization_code".into()),
                    ("code", code.clone()),
                    ("redirect_uri", self.redirect_url.clone()),
                    ("code_verifier", pre.verifier.clone()),
                ],
                issuer.config.timeout,
            )
            .await?;
        if status != 200 {
            let error = body["error"].as_str().unwrap_or("no error code").to_owned();
            tracing::info!(issuer = %issuer.config.name, status, %error, "code exchange refused");
            return Err(LoginError::BadAnswer(format!(
                "the code was refused ({error})"
            )));
        }
        let id_token = body["id_token"]
            .as_str()
            .ok_or_else(|| LoginError::BadAnswer("no ID token".into()))?;
        let mut claims = issuer.verifier.verify(id_token).await?;
        let nonce = claims["nonce"].as_str().unwrap_or("");
        if !constant_time_eq(nonce.as_bytes(), pre.nonce.as_bytes()) {
            return Err(LoginError::BadAnswer(
                "the ID token's nonce is not this sign-in's".into(),
            ));
        }
        check_azp(&claims, &issuer.config.client_id)?;
        let access_token = body["access_token"].as_str().map(str::to_owned);
        if issuer.config.userinfo
            && let Some(token) = &access_token
        {
            self.add_userinfo(issuer, token, &mut claims).await?;
        }
        let sub = claims["sub"].as_str().unwrap_or("").to_owned();
        // The mapping must accept the identity now, not at the first decision.
        issuer.config.claims.identity(
            &claims,
            SessionProvider::KIND,
            &issuer.config.issuer,
            None,
        )?;
        let value = Secret::new(
            URL_SAFE_NO_PAD
                .encode(random_bytes::<32>().map_err(|e| LoginError::Unavailable(e.to_string()))?),
        );
        let record = SessionRecord {
            hash: Credential::Session(value.clone()).cache_key(),
            issuer: issuer.config.name.clone(),
            subject: sub,
            sid: claims["sid"].as_str().map(str::to_owned),
            claims: claims.to_string(),
            id_token: Secret::new(id_token),
            refresh_token: body["refresh_token"].as_str().map(Secret::new),
            access_expires_at: body["expires_in"].as_i64().map(|s| now + s),
            created_at: now,
            last_seen_at: now,
            expires_at: now + self.lifetime.as_secs() as i64,
        };
        self.store
            .insert_session(&record)
            .await
            .map_err(|e| LoginError::Unavailable(e.to_string()))?;
        // A session the browser still held is over: a sign-in never continues one.
        let mut ended = Vec::new();
        if let Ok(Some(old)) = crate::credential::session_cookie(headers, self.cookie.name()) {
            let hash = old.cache_key();
            if self.store.delete_session(&hash).await.unwrap_or(false) {
                ended.push(hash);
            }
        }
        tracing::info!(issuer = %issuer.config.name, "signed in");
        let cookies = [self.cookie.set(&value), self.cookie.clear_prelogin()]
            .into_iter()
            .flatten()
            .collect();
        let mut reply = LoginReply::redirect(pre.return_to, cookies);
        reply.ended = ended;
        Ok(reply)
    }

    async fn add_userinfo(
        &self,
        issuer: &Issuer,
        access_token: &str,
        claims: &mut Value,
    ) -> Result<(), LoginError> {
        let url = issuer.verifier.discovered("userinfo_endpoint").await?;
        let response = self
            .http
            .get(&url)
            .bearer_auth(access_token)
            .timeout(issuer.config.timeout)
            .send()
            .await
            .map_err(|e| LoginError::Unavailable(format!("userinfo: {e}")))?;
        if !response.status().is_success() {
            return Err(LoginError::Unavailable(format!(
                "userinfo answered {}",
                response.status()
            )));
        }
        let info: Value = response
            .json()
            .await
            .map_err(|e| LoginError::BadAnswer(format!("userinfo is not JSON: {e}")))?;
        if info["sub"] != claims["sub"] {
            return Err(LoginError::BadAnswer(
                "userinfo names another subject".into(),
            ));
        }
        if let (Some(into), Some(from)) = (claims.as_object_mut(), info.as_object()) {
            for (k, v) in from {
                // The ID token's own claims (iss, aud, nonce, ...) are kept as signed.
                into.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        Ok(())
    }
}

/// `azp` (OIDC Core 3.1.3.7): when present it must be this client; with several
/// audiences it must be present.
fn check_azp(claims: &Value, client_id: &str) -> Result<(), LoginError> {
    let several = claims["aud"].as_array().is_some_and(|a| a.len() > 1);
    match claims["azp"].as_str() {
        Some(azp) if azp != client_id => Err(LoginError::BadAnswer(
            "the ID token was issued to another client (azp)".into(),
        )),
        None if several => Err(LoginError::BadAnswer(
            "the ID token has several audiences and no azp".into(),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn azp_table() {
        let cases = [
            (json!({"aud": "gw"}), true),
            (json!({"aud": "gw", "azp": "gw"}), true),
            (json!({"aud": "gw", "azp": "other"}), false),
            (json!({"aud": ["gw", "x"], "azp": "gw"}), true),
            (json!({"aud": ["gw", "x"]}), false),
            (json!({"aud": ["gw"]}), true),
        ];
        for (claims, ok) in cases {
            assert_eq!(check_azp(&claims, "gw").is_ok(), ok, "{claims}");
        }
    }
}
