//! Refreshing a session's IdP tokens (the `session` provider calls it when the access
//! token nears its expiry): a refused refresh ends the session.

use async_trait::async_trait;

use super::Login;
use crate::providers::{AuthError, SessionRefresher};
use crate::secret::Secret;
use crate::store::SessionRecord;

#[async_trait]
impl SessionRefresher for Login {
    async fn refresh(&self, session: &SessionRecord) -> Result<Option<SessionRecord>, AuthError> {
        let (Some(issuer), Some(refresh_token)) =
            (self.issuer(&session.issuer), &session.refresh_token)
        else {
            return Ok(Some(session.clone()));
        };
        let token_endpoint = issuer.verifier.discovered("token_endpoint").await?;
        let (status, body) = issuer
            .client
            .post_form(
                &self.http,
                &token_endpoint,
                vec![
                    ("grant_type", "refresh_token".into()),
                    ("refresh_token", refresh_token.expose().to_owned()),
                ],
                issuer.config.timeout,
            )
            .await?;
        if status == 400 || status == 401 {
            tracing::info!(issuer = %issuer.config.name, status, "refresh refused: the session ends");
            return Ok(None);
        }
        if status != 200 {
            return Err(AuthError::Unavailable(format!(
                "the token endpoint answered {status} to a refresh"
            )));
        }
        let now = crate::unix_now();
        let mut updated = session.clone();
        if let Some(rt) = body["refresh_token"].as_str() {
            updated.refresh_token = Some(Secret::new(rt));
        }
        updated.access_expires_at = body["expires_in"].as_i64().map(|s| now + s);
        if let Some(id_token) = body["id_token"].as_str()
            && let Ok(claims) = issuer.verifier.verify(id_token).await
            && claims["sub"].as_str() == Some(session.subject.as_str())
        {
            updated.id_token = Secret::new(id_token);
        }
        match self.store.replace_session(&updated).await {
            Ok(true) => Ok(Some(updated)),
            Ok(false) => Ok(None),
            Err(e) => Err(AuthError::Unavailable(format!("session store: {e}"))),
        }
    }
}
