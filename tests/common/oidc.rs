//! A real OpenID provider (npm `oidc-provider`, `tests/peers/oidc/provider.mjs`) on a free
//! loopback port; its packages are installed by scripts/test.sh (`npm ci`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub struct Oidc {
    child: Child,
    pub issuer: String,
    pub keys: PathBuf,
}

pub fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/oidc")
}

impl Oidc {
    /// Starts the provider on `port` with the signing keys in `keys` (made when missing).
    pub fn start(port: u16, keys: &Path) -> Self {
        Self::start_env(port, keys, &[])
    }

    /// As [`Oidc::start`], with environment variables for provider.mjs (the `web` client's
    /// URLs, `OIDC_ACCESS_TTL`).
    pub fn start_env(port: u16, keys: &Path, env: &[(&str, String)]) -> Self {
        assert!(
            peer_dir().join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed: run scripts/test.sh (npm ci in tests/peers/oidc)"
        );
        let mut child = Command::new("node")
            .arg(peer_dir().join("provider.mjs"))
            .arg(port.to_string())
            .arg(keys)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("ready ") {
                    let _ = tx.send(issuer.to_owned());
                }
            }
        });
        let issuer = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("oidc-provider did not start");
        Self {
            child,
            issuer,
            keys: keys.to_owned(),
        }
    }

    /// A client_credentials access token for `resource` with `scope`.
    pub async fn client_token(&self, resource: &str, scope: &str) -> String {
        let resp = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth("machine", Some("machine-secret"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", resource),
                ("scope", scope),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// An opaque client_credentials access token (for introspection) with `scope`.
    pub async fn opaque_token(&self, scope: &str) -> String {
        self.client_token("urn:opaque", scope).await
    }

    /// Revokes `token` at the provider (as the client it was issued to).
    pub async fn revoke(&self, token: &str, client: &str) {
        let resp = reqwest::Client::new()
            .post(format!("{}/token/revocation", self.issuer))
            .basic_auth(client, Some(format!("{client}-secret")))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "revocation");
    }

    /// Signs `user` in through the provider's login and consent pages (authorization code
    /// with PKCE, `offline_access`) as `client`, and returns the refresh token.
    pub async fn refresh_token(&self, client: &str, user: &str) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let browser = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        let verifier = b64.encode(format!("verifier-{user}-{client}-0123456789abcdef"));
        let challenge = b64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            verifier.as_bytes(),
        ));
        let redirect_uri = format!("{}/cb", self.issuer);
        let login = browser
            .get(format!("{}/auth", self.issuer))
            .query(&[
                ("client_id", client),
                ("response_type", "code"),
                ("redirect_uri", &redirect_uri),
                ("scope", "openid offline_access read:data"),
                ("prompt", "consent"),
                ("resource", "urn:api"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("state", "s1"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 200, "login page");
        let consent = browser
            .post(login.url().clone())
            .form(&[("prompt", "login"), ("login", user), ("password", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(consent.status(), 200, "consent page");
        let back = browser
            .post(consent.url().clone())
            .form(&[("prompt", "consent")])
            .send()
            .await
            .unwrap();
        let code = back
            .url()
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no code in {}", back.url()));
        let resp = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(client, Some(format!("{client}-secret")))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &redirect_uri),
                ("code_verifier", &verifier),
                ("resource", "urn:api"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "code exchange");
        let body: Value = resp.json().await.unwrap();
        body["refresh_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no refresh token: {body}"))
            .to_owned()
    }

    /// How often the token endpoint and the JWKS were called.
    pub async fn counts(&self) -> Value {
        reqwest::get(format!("{}/_count", self.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `claims` signed with the provider's own key.
    pub fn sign(&self, claims: &Value) -> String {
        let out = Command::new("node")
            .arg(peer_dir().join("sign.mjs"))
            .arg(&self.keys)
            .arg(claims.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Oidc {
    fn drop(&mut self) {
        self.stop();
    }
}
