//! The `jwt` provider against a real OpenID provider (npm oidc-provider): valid access
//! tokens, every way a JWT must be refused, key rotation at the provider, the provider down.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::oidc::Oidc;
use common::*;
use serde_json::{Value, json};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn segments(jwt: &str) -> (Value, Value) {
    let mut parts = jwt.split('.');
    let header = serde_json::from_slice(&B64.decode(parts.next().unwrap()).unwrap()).unwrap();
    let payload = serde_json::from_slice(&B64.decode(parts.next().unwrap()).unwrap()).unwrap();
    (header, payload)
}

async fn counts(oidc: &Oidc) -> Value {
    reqwest::get(format!("{}/_count", oidc.issuer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_access_tokens_from_a_real_provider() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut oidc = Oidc::start(port, &dir.path().join("keys-1.json"));
    let config = write_config(
        dir.path(),
        &format!(
            r#"
cache: {{ max_ttl: 10s, negative_ttl: 1s }}
providers:
  - {{ type: api_token }}
  - type: jwt
    issuer: "{}"
    audiences: [api]
    typ: at+jwt
    refetch_interval: 1s
    claims: {{ attributes: [tenant] }}
policy:
  rules:
    - {{ name: data, path: /data, require: {{ scopes: ["read:data"] }} }}
    - {{ name: admin, path: /admin, require: {{ roles: [admin] }} }}
"#,
            oidc.issuer
        ),
    );
    let authgate = Authgate::start(&config);
    let http = reqwest::Client::new();
    let decide = async |path: &str, token: &str| {
        http.get(authgate.url(&format!("/auth{path}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    };
    let reason =
        async |resp: reqwest::Response| resp.json::<Value>().await.unwrap()["reason"].clone();

    // A client_credentials JWT access token: 200, claims mapped into the minted JWT.
    let token = oidc.client_token("urn:api", "read:data").await;
    let (_, idp_claims) = segments(&token);
    let resp = decide("/data", &token).await;
    assert_eq!(resp.status(), 200);
    let claims = verify_jwt(&authgate, &bearer_jwt(&resp), "api").await;
    assert_eq!(claims["sub"], "machine");
    assert_eq!(claims["username"], "machine");
    assert_eq!(claims["provider"], "jwt");
    assert_eq!(claims["roles"], json!(["/ops", "machine", "reader"]));
    assert_eq!(claims["scopes"], json!(["read:data"]));
    assert_eq!(claims["attributes"], json!({"tenant": "acme"}));
    assert!(claims["exp"].as_i64().unwrap() <= idp_claims["exp"].as_i64().unwrap());
    // Scopes and roles from the IdP drive the policy.
    assert_eq!(decide("/admin", &token).await.status(), 403);

    // Every way a JWT must be refused: 401 with the reason.
    let kid = segments(&token).0["kid"].as_str().unwrap().to_owned();
    let base = json!({"iss": oidc.issuer, "sub": "machine", "aud": "api", "scope": "read:data"});
    let with = |extra: Value| {
        let mut c = base.clone();
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let other_audience = oidc.client_token("urn:other", "read:data").await;
    let expired = oidc.sign(&with(json!({"iat": now() - 900, "exp": now() - 120})));
    let not_yet = oidc.sign(&with(
        json!({"iat": now(), "nbf": now() + 600, "exp": now() + 900}),
    ));
    let future_iat = oidc.sign(&with(json!({"iat": now() + 600, "exp": now() + 900})));
    let (h, mut p) = segments(&token);
    p["scope"] = json!("read:data write:data");
    let sig = token.rsplit('.').next().unwrap();
    let tampered = format!(
        "{}.{}.{sig}",
        B64.encode(h.to_string()),
        B64.encode(p.to_string())
    );
    let payload = B64.encode(with(json!({"exp": now() + 600})).to_string());
    let alg_none = format!(
        "{}.{payload}.",
        B64.encode(json!({"alg": "none", "typ": "at+jwt"}).to_string())
    );
    // HS256 "signed" with the issuer's public key: the classic key-confusion forgery.
    let jwks: Value = reqwest::get(format!("{}/jwks", oidc.issuer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let public_n = B64.decode(jwks["keys"][0]["n"].as_str().unwrap()).unwrap();
    let hs_head = B64.encode(json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}).to_string());
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &public_n),
        format!("{hs_head}.{payload}").as_bytes(),
    );
    let hmac_forgery = format!("{hs_head}.{payload}.{}", B64.encode(mac.as_ref()));
    let unknown_key = format!(
        "{}.{payload}.{}",
        B64.encode(json!({"alg": "RS256", "typ": "at+jwt", "kid": "not-a-key"}).to_string()),
        B64.encode([7u8; 256])
    );
    let wrong_typ = {
        let (mut h, p) = segments(&token);
        h["typ"] = json!("JWT");
        format!(
            "{}.{}.{sig}",
            B64.encode(h.to_string()),
            B64.encode(p.to_string())
        )
    };
    let cases = [
        (&other_audience, "JWT audience not accepted"),
        (&expired, "JWT expired"),
        (&not_yet, "JWT not yet valid"),
        (&future_iat, "JWT issued in the future"),
        (&tampered, "JWT signature invalid"),
        (&alg_none, "malformed JWT"),
        (&hmac_forgery, "JWT algorithm not allowed"),
        (&unknown_key, "JWT signed by an unknown key"),
        (&wrong_typ, "JWT typ not accepted"),
    ];
    for (bad, expected) in cases {
        let resp = decide("/data", bad).await;
        assert_eq!(resp.status(), 401, "{expected}");
        assert_eq!(reason(resp).await, expected);
    }

    // A flood of random kids does not hammer the IdP: at most one refetch per interval.
    let before = counts(&oidc).await["jwks"].as_i64().unwrap();
    for i in 0..20 {
        let forged = format!(
            "{}.{payload}.{}",
            B64.encode(
                json!({"alg": "RS256", "typ": "at+jwt", "kid": format!("random-{i}")}).to_string()
            ),
            B64.encode([7u8; 256])
        );
        assert_eq!(decide("/data", &forged).await.status(), 401);
    }
    let fetched = counts(&oidc).await["jwks"].as_i64().unwrap() - before;
    assert!(
        fetched <= 2,
        "{fetched} JWKS fetches for 20 unknown kids within ~1 s"
    );

    // Key rotation at the provider (restart with a new key set): new tokens validate without
    // restarting authgate.
    oidc.stop();
    let mut oidc = Oidc::start(port, &dir.path().join("keys-2.json"));
    let rotated = oidc.client_token("urn:api", "read:data").await;
    assert_ne!(segments(&rotated).0["kid"], json!(kid));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(decide("/data", &rotated).await.status(), 200);

    // Provider down: an identity already in the decision cache keeps working until its entry
    // ends; a JWT with a key authgate does not know cannot be decided: 503, never 200 or 401.
    oidc.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = decide("/data", &rotated).await;
    assert_eq!(again.status(), 200);
    let resp = decide("/data", &unknown_key).await;
    assert_eq!(resp.status(), 503);
}
