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

/// The minted `sub` of the IdP user `sub` of `issuer`: qualified by the issuer (`%` and `:`
/// percent-encoded), so that it cannot pass for a local user or another IdP's.
fn qualified(issuer: &str, sub: &str) -> String {
    format!(
        "oidc:{}:{sub}",
        issuer.replace('%', "%25").replace(':', "%3A")
    )
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
    assert_eq!(claims["sub"], qualified(&oidc.issuer, "machine"));
    assert_eq!(claims["username"], "machine");
    assert_eq!(claims["provider"], "jwt");
    assert_eq!(claims["roles"], json!(["/ops", "machine", "reader"]));
    assert_eq!(claims["scope"], "read:data");
    assert!(claims.get("scope_all").is_none(), "{claims}");
    assert!(idp_claims["client_id"].is_string(), "{idp_claims}");
    assert_eq!(
        claims["client_id"], idp_claims["client_id"],
        "the IdP's client"
    );
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
    let flood = std::time::Instant::now();
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
    let took = flood.elapsed();
    // Fetches are at least refetch_interval (1 s) apart: 2 when the flood is fast, as
    // before, and one more per further second a slow machine spends on it.
    let allowed = 2.max(1 + took.as_secs() as i64);
    assert!(
        fetched <= allowed,
        "{fetched} JWKS fetches for 20 unknown kids within {took:?}"
    );

    // Key rotation at the provider (restart with a new key set): new tokens validate without
    // restarting authgate.
    oidc.stop();
    let mut oidc = Oidc::start(port, &dir.path().join("keys-2.json"));
    let rotated = oidc.client_token("urn:api", "read:data").await;
    assert_ne!(segments(&rotated).0["kid"], json!(kid));
    // The new kid is unknown until the refetch interval (1 s) since the flood's last fetch
    // allows a new fetch: 401 until then, 200 from then on, nothing else.
    let accepted = eventually(Duration::from_secs(10), async || {
        let status = decide("/data", &rotated).await.status();
        assert!(status == 200 || status == 401, "{status}");
        status == 200
    })
    .await;
    assert!(
        accepted,
        "a token signed with the rotated key is still refused"
    );

    // Provider down: an identity already in the decision cache keeps working until its entry
    // ends; a JWT with a key authgate does not know cannot be decided: 503, never 200. (Until
    // the refetch interval allows a new fetch the kid is plainly absent from a key set
    // fetched just now: 401.)
    oidc.stop();
    assert_eq!(decide("/data", &rotated).await.status(), 200);
    let undecidable = eventually(Duration::from_secs(10), async || {
        let status = decide("/data", &unknown_key).await.status();
        assert!(status == 401 || status == 503, "{status}");
        status == 503
    })
    .await;
    assert!(
        undecidable,
        "an unknown kid with the provider down is not 503"
    );
    assert_eq!(decide("/data", &rotated).await.status(), 200);
}

/// An authgate in its own folder of `dir` with `providers` (YAML list items) and a policy
/// that needs `read:data` on /data.
fn authgate_with(dir: &std::path::Path, name: &str, cache: &str, providers: &str) -> Authgate {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let config = write_config(
        &home,
        &format!(
            r#"
cache: {cache}
providers:
{providers}
policy:
  rules:
    - {{ name: data, path: /data, require: {{ scopes: ["read:data"] }} }}
"#
        ),
    );
    Authgate::start(&config)
}

async fn decide(authgate: &Authgate, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(authgate.url("/auth/data"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn reason_of(resp: reqwest::Response) -> Value {
    resp.json::<Value>().await.unwrap()["reason"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn opaque_tokens_by_introspection() {
    let dir = tempfile::tempdir().unwrap();
    let oidc = Oidc::start(free_port(), &dir.path().join("keys.json"));
    let issuer = &oidc.issuer;
    // client_secret_post, answers cached for 5 s.
    let cached = authgate_with(
        dir.path(),
        "cached",
        "{ max_ttl: 60s, negative_ttl: 1s }",
        &format!(
            "  - {{ type: introspect, issuer: \"{issuer}\", client_id: gateway-post, \
             client_secret: gateway-post-secret, client_auth: client_secret_post, \
             audiences: [api], cache_ttl: 5s, claims: {{ attributes: [tenant] }} }}"
        ),
    );
    // client_secret_basic from a file, caching off.
    std::fs::write(dir.path().join("secret"), "gateway-basic-secret\n").unwrap();
    let uncached = authgate_with(
        dir.path(),
        "uncached",
        "{ max_ttl: 60s, negative_ttl: 1s }",
        &format!(
            "  - {{ type: introspect, issuer: \"{issuer}\", client_id: gateway-basic, \
             client_secret_file: \"{}\", audiences: [api], cache_ttl: 0s }}",
            dir.path().join("secret").display()
        ),
    );
    // A wrong client secret: the IdP refuses authgate, which is not the token's fault.
    let misconfigured = authgate_with(
        dir.path(),
        "misconfigured",
        "{ max_ttl: 60s, negative_ttl: 1s }",
        &format!(
            "  - {{ type: introspect, issuer: \"{issuer}\", client_id: gateway-basic, \
             client_secret: wrong, audiences: [api] }}"
        ),
    );

    let token = oidc.opaque_token("read:data").await;
    assert!(!token.contains('.'), "an opaque token, not a JWT: {token}");
    for authgate in [&cached, &uncached] {
        let resp = decide(authgate, &token).await;
        assert_eq!(resp.status(), 200);
        let claims = verify_jwt(authgate, &bearer_jwt(&resp), "api").await;
        assert_eq!(claims["sub"], qualified(issuer, "machine"));
        assert_eq!(claims["provider"], "introspect");
        assert_eq!(claims["scope"], "read:data");
        assert_eq!(claims["roles"], json!(["/ops", "machine", "reader"]));
    }
    let claims = verify_jwt(&cached, &bearer_jwt(&decide(&cached, &token).await), "api").await;
    assert_eq!(claims["attributes"], json!({"tenant": "acme"}));
    let resp = decide(&misconfigured, &token).await;
    assert_eq!(resp.status(), 503);

    // Not for this API, unknown, a token without the scope.
    let other = oidc.client_token("urn:other-opaque", "read:data").await;
    let write_only = oidc.opaque_token("write:data").await;
    for (bad, status, reason) in [
        (
            "not-a-token-the-idp-knows",
            401,
            json!("token is not active"),
        ),
        (other.as_str(), 401, json!("token audience not accepted")),
        (write_only.as_str(), 403, Value::Null),
    ] {
        let resp = decide(&cached, bad).await;
        assert_eq!(resp.status(), status, "{reason}");
        if status == 401 {
            assert_eq!(reason_of(resp).await, reason);
        }
    }

    // Revoked at the provider: 401 at once without caching, once the entry ends with it.
    // A token neither authgate has seen, so that the cached entry starts with the request
    // right before the revocation and "still cached" has the whole 5 s.
    let doomed = oidc.opaque_token("read:data").await;
    assert_eq!(decide(&uncached, &doomed).await.status(), 200);
    assert_eq!(decide(&cached, &doomed).await.status(), 200);
    oidc.revoke(&doomed, "machine").await;
    assert_eq!(decide(&cached, &doomed).await.status(), 200, "still cached");
    let resp = decide(&uncached, &doomed).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(reason_of(resp).await, "token is not active");
    let ended = eventually(Duration::from_secs(10), async || {
        decide(&cached, &doomed).await.status() == 401
    })
    .await;
    assert!(
        ended,
        "a revoked token is still accepted after the 5 s cache entry"
    );
    let logs = cached.stop_and_log_text().await
        + &uncached.stop_and_log_text().await
        + &misconfigured.stop_and_log_text().await;
    for secret in [
        token.as_str(),
        doomed.as_str(),
        "gateway-post-secret",
        "gateway-basic-secret",
        "wrong",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_refresh_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut oidc = Oidc::start(free_port(), &dir.path().join("keys.json"));
    let issuer = oidc.issuer.clone();
    // Introspection first: it hands refresh tokens on to `offline`.
    let authgate = authgate_with(
        dir.path(),
        "main",
        "{ max_ttl: 5s, negative_ttl: 1s }",
        &format!(
            "  - {{ type: api_token }}
  - {{ type: jwt, issuer: \"{issuer}\", audiences: [api] }}
  - {{ type: introspect, issuer: \"{issuer}\", client_id: gateway-basic, \
             client_secret: gateway-basic-secret, audiences: [api], cache_ttl: 3s }}
  - {{ type: offline, issuer: \"{issuer}\", client_id: app, client_secret: app-secret, \
             resource: \"urn:api\" }}"
        ),
    );
    let refresh = oidc.refresh_token("app", "alice").await;
    let resp = decide(&authgate, &refresh).await;
    assert_eq!(resp.status(), 200);
    let claims = verify_jwt(&authgate, &bearer_jwt(&resp), "api").await;
    assert_eq!(claims["sub"], qualified(&issuer, "alice"));
    assert_eq!(claims["username"], "alice");
    assert_eq!(claims["provider"], "offline");
    assert_eq!(claims["scope"], "read:data");

    // 200 parallel first requests with one new refresh token: exactly one exchange.
    let fresh = oidc.refresh_token("app", "bob").await;
    let before = oidc.counts().await["token"].as_i64().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let (url, fresh) = (authgate.url("/auth/data"), fresh.clone());
        tasks.spawn(async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(fresh)
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    let statuses = tasks.join_all().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let exchanges = oidc.counts().await["token"].as_i64().unwrap() - before;
    assert_eq!(
        exchanges, 1,
        "token endpoint calls for 200 parallel requests"
    );
    // The identity is kept until the access token (600 s) expires, past cache.max_ttl (5 s).
    // An API token's entry lasts exactly max_ttl: once the entry of one decided after
    // `fresh` has ended, max_ttl has passed for `fresh` too.
    let sentinel = create_token(
        &authgate.config,
        &["--user", "dave", "--scopes", "read:data"],
    );
    let decided_anew = async || {
        let misses = authgate.metric("authgate_cache_misses_total").await;
        assert_eq!(decide(&authgate, &sentinel).await.status(), 200);
        authgate.metric("authgate_cache_misses_total").await > misses
    };
    assert!(
        decided_anew().await,
        "the sentinel's first answer is a miss"
    );
    let max_ttl_passed = eventually(Duration::from_secs(20), decided_anew).await;
    assert!(
        max_ttl_passed,
        "an API token's entry outlived cache.max_ttl"
    );
    let hits = authgate.metric("authgate_cache_hits_total").await;
    assert_eq!(decide(&authgate, &fresh).await.status(), 200);
    assert_eq!(
        authgate.metric("authgate_cache_hits_total").await,
        hits + 1.0,
        "answered from the cache past max_ttl"
    );
    assert_eq!(oidc.counts().await["token"].as_i64().unwrap() - before, 1);

    // An unknown refresh token: 401, not 503.
    let resp = decide(&authgate, "no-such-refresh-token").await;
    assert_eq!(resp.status(), 401);
    assert_eq!(reason_of(resp).await, "token is not active");

    // /readyz names every provider while the IdP answers.
    let ready = reqwest::get(authgate.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["providers"][format!("offline {issuer}")], "ok");
    assert_eq!(body["providers"][format!("introspect {issuer}")], "ok");
    assert_eq!(body["providers"][format!("jwt {issuer}")], "ok");
    assert_eq!(body["providers"]["api_token"], "ok");

    // The provider stopped: cached identities keep working until their entry ends, new
    // refresh and opaque tokens get 503 (never 200 or 401), /readyz reports it.
    let unseen_opaque = oidc.opaque_token("read:data").await;
    let unseen = oidc.refresh_token("app", "carol").await;
    let opaque = oidc.opaque_token("read:data").await;
    assert_eq!(decide(&authgate, &opaque).await.status(), 200);
    oidc.stop();
    // First the one with the short entry: its 3 s started with the request above.
    assert_eq!(
        decide(&authgate, &opaque).await.status(),
        200,
        "cached for 3 s"
    );
    assert_eq!(decide(&authgate, &refresh).await.status(), 200);
    assert_eq!(decide(&authgate, &fresh).await.status(), 200);
    assert_eq!(decide(&authgate, &unseen).await.status(), 503);
    assert_eq!(decide(&authgate, &unseen_opaque).await.status(), 503);
    // Once its entry ends, the introspected token cannot be decided either.
    let ended = eventually(Duration::from_secs(5), async || {
        decide(&authgate, &opaque).await.status() == 503
    })
    .await;
    assert!(
        ended,
        "the introspected token's cache entry outlived its 3 s"
    );
    let ready = reqwest::get(authgate.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "not ready");
    for kind in ["offline", "introspect", "jwt"] {
        let state = body["providers"][format!("{kind} {issuer}")]
            .as_str()
            .unwrap();
        assert!(state.contains("unreachable"), "{kind}: {state}");
    }
    assert_eq!(body["providers"]["api_token"], "ok");
    let logs = authgate.stop_and_log_text().await;
    for secret in [
        refresh.as_str(),
        fresh.as_str(),
        unseen.as_str(),
        "app-secret",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_refresh_tokens_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let oidc = Oidc::start(free_port(), &dir.path().join("keys.json"));
    let issuer = oidc.issuer.clone();
    let authgate = authgate_with(
        dir.path(),
        "main",
        "{ max_ttl: 5s, negative_ttl: 1s }",
        &format!(
            "  - {{ type: jwt, issuer: \"{issuer}\", audiences: [api] }}
  - {{ type: offline, issuer: \"{issuer}\", client_id: rotating, \
             client_secret: rotating-secret, resource: \"urn:api\", cache_ttl: 1s }}"
        ),
    );
    let refresh = oidc.refresh_token("rotating", "alice").await;
    assert_eq!(decide(&authgate, &refresh).await.status(), 200);
    let warned = eventually(Duration::from_secs(10), async || {
        authgate
            .log_text()
            .contains("the IdP rotated a refresh token")
    })
    .await;
    assert!(warned, "no warning about the rotation");
    // The IdP consumed the presented token: once the entry (1 s) ends, the client is
    // refused; until then it is answered from the cache.
    let mut reason = Value::Null;
    let refused = eventually(Duration::from_secs(10), async || {
        let resp = decide(&authgate, &refresh).await;
        match resp.status().as_u16() {
            200 => false,
            401 => {
                reason = reason_of(resp).await;
                true
            }
            other => panic!("{other}"),
        }
    })
    .await;
    assert!(refused, "a consumed refresh token is still accepted");
    assert_eq!(reason, "refresh token not valid");
}
