//! The decision endpoints called directly: malformed input, browser redirects, rate limits,
//! start-up errors, restarts, key rotation, the admin listener.

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::Value;

const POLICY: &str = r#"
cache: { max_ttl: 2s, negative_ttl: 1s }
providers:
  - { type: api_token }
  - { type: basic, max_failures: 3, failure_window: 1m }
policy:
  default: deny
  rules:
    - { name: health, path: /healthz, allow: anonymous }
    - { name: data-read, path: /data, methods: [GET], require: { scopes: ["read:data"] } }
"#;

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// 50+ malformed sub-requests: each gets exactly its status (400, 401 or 431) with a JSON
/// reason, never a 5xx, and the server keeps answering.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_input_gets_a_clear_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POLICY);
    let token = create_token(&config, &["--user", "alice", "--scopes", "read:data"]);
    let authgate = Authgate::start(&config);
    let ok = |extra: &str| {
        format!("GET /auth HTTP/1.1\r\nHost: h\r\nX-Original-URI: /data\r\nX-Original-Method: GET\r\n{extra}Connection: close\r\n\r\n").into_bytes()
    };
    let no_method = |extra: &str| {
        format!("GET /auth HTTP/1.1\r\nHost: h\r\nX-Original-URI: /data\r\n{extra}Connection: close\r\n\r\n").into_bytes()
    };
    let raw = |head: &[u8], extra: &[u8]| {
        let mut v =
            b"GET /auth HTTP/1.1\r\nHost: h\r\nX-Original-URI: /data\r\nX-Original-Method: GET\r\n"
                .to_vec();
        v.extend_from_slice(head);
        v.extend_from_slice(extra);
        v.extend_from_slice(b"Connection: close\r\n\r\n");
        v
    };
    let agt_short = format!("Authorization: Bearer agt_{}\r\n", "A".repeat(42));
    let agt_unknown = format!("Authorization: Bearer agt_{}\r\n", "A".repeat(43));
    let agt_bad_char = format!("Authorization: Bearer agt_{}*\r\n", "A".repeat(42));
    let big_token = format!("Authorization: Bearer {}\r\n", "a".repeat(9000));
    let many_headers: String = (0..90)
        .map(|i| format!("X-Filler-{i}: {}\r\n", "v".repeat(190)))
        .collect();
    let huge = format!("X-Huge: {}\r\n", "h".repeat(70_000));
    let basic = |s: &[u8]| format!("Authorization: Basic {}\r\n", b64(s));
    let cases: Vec<(Vec<u8>, u16)> = vec![
        // no credential / unknown and malformed credentials: 401
        (ok(""), 401),
        (ok("Authorization: \r\n"), 401),
        (ok("Authorization: Bearer\r\n"), 401),
        (ok("Authorization: Bearer \r\n"), 401),
        (ok("Authorization: Bearer    \r\n"), 401),
        (ok("Authorization: bearer x y\r\n"), 401),
        (ok("Authorization: Bearer a,b\r\n"), 401),
        (ok("Authorization: Bearer ====\r\n"), 401),
        (ok("Authorization: Bearer \"quoted\"\r\n"), 401),
        (ok("Authorization: Bearer not-ours\r\n"), 401),
        (ok(&agt_short), 401),
        (ok(&agt_unknown), 401),
        (ok(&agt_bad_char), 401),
        (ok(&big_token), 401),
        (ok("Authorization: Digest username=\"a\"\r\n"), 401),
        (ok("Authorization: Negotiate abc\r\n"), 401),
        (ok("Authorization: abc\r\n"), 401),
        (ok("Authorization: Basic\r\n"), 401),
        (ok("Authorization: Basic !!!!\r\n"), 401),
        (ok("Authorization: Basic YWxpY2U\r\n"), 401),
        (ok("Authorization: Basic YQ==YQ==\r\n"), 401),
        (ok(&basic(b"alice")), 401),
        (ok(&basic(b":password")), 401),
        (ok(&basic(b"alice:")), 401),
        (ok(&basic(b"nobody:password")), 401),
        (ok(&basic(b"al\xffce:pw")), 401),
        (ok(&basic(b"\x00:\x00")), 401),
        (ok("Authorization: Bearer a\r\nAuthorization: Bearer a\r\n"), 401),
        (ok("Authorization: Bearer a\r\nX-Auth-Token: b\r\n"), 401),
        (ok("X-Auth-Token: \r\n"), 401),
        (ok("X-Auth-Token: a b\r\n"), 401),
        (ok("X-Auth-Token: a\r\nX-Auth-Token: a\r\n"), 401),
        (ok(&format!("X-Auth-Token: {token}\r\nAuthorization: Bearer x\r\n")), 401),
        (raw(b"Authorization: Bearer caf\xc3\xa9\r\n", b""), 401),
        (raw(b"Authorization: Bearer \xff\xfe\r\n", b""), 401),
        (raw(b"X-Auth-Token: \x80\x81\r\n", b""), 401),
        (raw(b"Authorization: Basic \xe2\x82\xac\r\n", b""), 401),
        // malformed forwarding headers: 400
        (b"GET /auth HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (b"GET /auth HTTP/1.1\r\nHost: h\r\nX-Original-URI: data\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (b"GET /auth HTTP/1.1\r\nHost: h\r\nX-Original-URI: /a\r\nX-Original-URI: /b\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (b"GET /auth HTTP/1.1\r\nHost: h\r\nX-Original-URI: /%ff\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (b"GET /auth HTTP/1.1\r\nHost: h\r\nX-Original-URI: /a%00\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (b"GET /auth HTTP/1.1\r\nHost: h\r\nX-Original-URI: /a%5cb\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (b"GET /auth HTTP/1.1\r\nHost: h\r\nX-Original-URI: /\xc3\xa9\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (b"GET /auth HTTP/1.1\r\nHost: h\r\nX-Original-URL: /relative\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (b"GET /auth HTTP/1.1\r\nHost: h\r\nX-Original-URL: http://\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (no_method("X-Original-Method: get\r\n"), 400),
        (no_method("X-Original-Method: G(T\r\n"), 400),
        // a required header of the family missing, or one of another family: 400
        (no_method(""), 400),
        (ok("X-Original-Method: GET\r\n"), 400),
        (ok("X-Original-URL: http://h/healthz\r\n"), 400),
        (ok("X-Forwarded-Host: other.example.org\r\n"), 400),
        (ok("X-Forwarded-Uri: /healthz\r\n"), 400),
        (ok("X-Forwarded-Method: GET\r\n"), 400),
        (ok("X-HTTP-Method-Override: DELETE\r\n"), 400),
        // request targets the upstream could read differently: 400
        (b"GET /auth HTTP/1.1\r\nHost: h\r\nX-Original-Method: GET\r\nX-Original-URI: /data/../healthz\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (b"GET /auth HTTP/1.1\r\nHost: h\r\nX-Original-Method: GET\r\nX-Original-URI: /healthz/..;/data\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (b"GET /auth HTTP/1.1\r\nHost: h\r\nX-Original-Method: GET\r\nX-Original-URI: /healthz#/../data\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (b"GET /auth HTTP/1.1\r\nHost: h\r\nX-Original-Method: GET\r\nX-Original-URI: //data\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (b"GET /auth/healthz/%2e%2e/data HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (b"GET /auth HTTP/1.1\r\nHost: h:1@other\r\nX-Original-Method: GET\r\nX-Original-URI: /data\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (ok("X-Forwarded-Proto: gopher\r\n"), 400),
        (ok("X-Forwarded-For: not-an-ip\r\n"), 400),
        (ok("X-Forwarded-For: 1.2.3.4, 999.1.1.1\r\n"), 400),
        (ok("X-Real-IP: localhost\r\n"), 400),
        (ok("X-Forwarded-Host: bad host\r\n"), 400),
        (b"GET /auth HTTP/1.1\r\nHost: \r\nX-Original-URI: /\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (b"GET /forward-auth HTTP/1.1\r\nHost: h\r\nX-Forwarded-Uri: nope\r\nConnection: close\r\n\r\n".to_vec(), 400),
        // too large: 431 (ours with a JSON reason, or hyper's beyond its buffer)
        (ok(&many_headers), 431),
        (ok(&huge), 431),
    ];
    for (i, (request, expected)) in cases.iter().enumerate() {
        let (status, head, body) = raw_request(authgate.data, request).await;
        let shown = String::from_utf8_lossy(&request[..request.len().min(160)]);
        assert_eq!(status, *expected, "case {i}: {shown}\n{head}\n{body}");
        if status == 401 {
            assert!(
                head.to_ascii_lowercase()
                    .contains("www-authenticate: bearer realm=\"authgate\""),
                "case {i}: {head}"
            );
        }
        if !(status == 431 && body.is_empty()) {
            let v: Value =
                serde_json::from_str(&body).unwrap_or_else(|_| panic!("case {i}: body {body:?}"));
            assert!(
                v["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "case {i}: {body}"
            );
        }
    }
    // Still alive and still right.
    let http = reqwest::Client::new();
    let resp = http
        .get(authgate.url("/auth"))
        .header("X-Original-URI", "/data")
        .header("X-Original-Method", "GET")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let metrics = reqwest::get(authgate.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("outcome=\"unavailable\""), "{metrics}");
}

/// The proxies' header forms, and the browser rules of /auth and /forward-auth.
#[tokio::test(flavor = "multi_thread")]
async fn proxy_forms_and_browser_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let sections = format!(
        "{POLICY}\nserver: {{ listen: \"127.0.0.1:0\", signin_url: \"https://auth.example.org/oauth2/start\", redirect_hosts: [api.example.org] }}\n"
    );
    let config = write_config(dir.path(), &sections);
    let token = create_token(&config, &["--user", "alice", "--scopes", "read:data"]);
    let authgate = Authgate::start(&config);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let html = "text/html,application/xhtml+xml";

    // What Traefik and Caddy send: the four X-Forwarded-* headers.
    let forward = |method: &str, uri: &str| {
        http.get(authgate.url("/forward-auth"))
            .header("X-Forwarded-Method", method)
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Host", "api.example.org")
            .header("X-Forwarded-Uri", uri)
    };
    let resp = forward("GET", "/data?q=1")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Bearer ")
    );
    assert_eq!(resp.headers()["x-auth-request-user"], "alice");
    // Every identity header on every 200, empty where the identity has no value, and the
    // raw credentials named for Envoy to remove.
    assert_eq!(resp.headers()["x-auth-request-email"], "");
    assert_eq!(resp.headers()["x-auth-request-roles"], "");
    assert_eq!(resp.headers()["x-auth-request-scopes"], "read:data");
    assert_eq!(resp.headers()["x-auth-request-attributes"], "");
    assert_eq!(resp.headers()["x-auth-request-status"], "authenticated");
    assert_eq!(
        resp.headers()["x-envoy-auth-headers-to-remove"],
        "x-auth-token, x-storage-token, x-service-token"
    );
    // A missing family header is 400, never the sub-request's own value (a client can make
    // Traefik drop one by naming it in Connection).
    for missing in [
        "X-Forwarded-Method",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "X-Forwarded-Uri",
    ] {
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in [
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "api.example.org"),
            ("X-Forwarded-Uri", "/data"),
        ] {
            if name != missing {
                headers.insert(name, value.parse().unwrap());
            }
        }
        let resp = http
            .get(authgate.url("/forward-auth"))
            .headers(headers)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{missing} missing");
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["reason"]
                .as_str()
                .unwrap()
                .contains(&format!("{} is missing", missing.to_ascii_lowercase())),
            "{body}"
        );
    }
    // The client's nginx-family headers on /forward-auth: 400, whatever they say.
    let resp = forward("DELETE", "/data")
        .header("X-Original-URI", "/healthz")
        .header("X-Original-Method", "GET")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Envoy path-prefix form; only the method of the check request counts.
    let resp = http
        .get(authgate.url("/auth/data/x?y=1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .post(authgate.url("/auth/data"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "POST /data has no rule");
    // ingress-nginx form, on its own endpoint; /auth refuses X-Original-URL.
    let resp = http
        .get(authgate.url("/ingress-auth"))
        .header("X-Original-URL", "https://api.example.org/data")
        .header("X-Original-Method", "GET")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .get(authgate.url("/auth"))
        .header("X-Original-URL", "https://api.example.org/data")
        .header("X-Original-URI", "/data")
        .header("X-Original-Method", "GET")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Anonymous route: 200 with every identity header present and empty, so that a proxy
    // that copies only the headers of the answer overwrites the client's.
    let resp = http
        .get(authgate.url("/auth/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for name in [
        "authorization",
        "x-auth-request-user",
        "x-auth-request-email",
        "x-auth-request-roles",
        "x-auth-request-scopes",
        "x-auth-request-attributes",
    ] {
        assert_eq!(resp.headers()[name], "", "{name}");
    }
    assert_eq!(resp.headers()["x-auth-request-status"], "anonymous");
    assert_eq!(
        resp.headers()["x-envoy-auth-headers-to-remove"],
        "authorization, x-auth-token, x-storage-token, x-service-token"
    );

    // A browser without a credential: /forward-auth redirects to sign in ...
    let resp = forward("GET", "/data?q=1")
        .header("Accept", html)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert!(resp.headers().get("www-authenticate").is_none());
    assert_eq!(
        resp.headers()["location"],
        "https://auth.example.org/oauth2/start?rd=https%3A%2F%2Fapi%2Eexample%2Eorg%2Fdata%3Fq%3D1"
    );
    // ... /auth never redirects (nginx would make a 500 of it) but says where to go.
    let resp = http
        .get(authgate.url("/auth"))
        .header("X-Original-URI", "/data")
        .header("X-Original-Method", "GET")
        .header("Host", "api.example.org")
        .header("Accept", html)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["location"],
        "https://auth.example.org/oauth2/start?rd=http%3A%2F%2Fapi%2Eexample%2Eorg%2Fdata"
    );
    // An API client (no text/html) and a POST get the plain 401 from /forward-auth; the
    // browser check reads the judged method, not whichever header comes first.
    let resp = forward("GET", "/data").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("location").is_none());
    let resp = forward("POST", "/data")
        .header("Accept", html)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("location").is_none());
    // A browser with a valid credential but not allowed: 403, not a redirect.
    let resp = forward("GET", "/other")
        .header("Accept", html)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["rule"], "default");

    // Well-known documents: OpenID discovery and RFC 8414 metadata, the same fields, each
    // one a strict client (Authlib, the openidconnect crate) requires; the sign-in page as
    // authorization_endpoint; every algorithm authgate may sign with, the configured first.
    let expected = serde_json::json!({
        "issuer": "https://authgate.test",
        "jwks_uri": "https://authgate.test/.well-known/jwks.json",
        "authorization_endpoint": "https://auth.example.org/oauth2/start",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "EdDSA", "RS256"],
    });
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let resp = reqwest::get(authgate.url(path)).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], "application/json", "{path}");
        let discovery: Value = resp.json().await.unwrap();
        assert_eq!(discovery, expected, "{path}");
    }
    let resp = http
        .post(authgate.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
}

const HOST_RULES: &str = r#"
policy:
  default: deny
  rules:
    - { name: data-read, host: api.example.org, path: /data, methods: [GET], require: { scopes: ["read:data"] } }
    - { name: tenants, host: "*.tenants.example.org", require: { roles: [member] } }
"#;

const SIGNIN: &str = "https://auth.example.org/oauth2/start";

/// The decoded `rd` of a sign-in URL; the test fails if it holds more than one.
fn rd_of(location: &str) -> Option<String> {
    let query = location.split_once('?')?.1;
    let rds: Vec<&str> = query
        .split('&')
        .filter_map(|p| p.strip_prefix("rd="))
        .collect();
    assert!(rds.len() <= 1, "{location}");
    rds.first().map(|rd| {
        assert!(
            rd.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'%'),
            "rd not fully escaped: {location}"
        );
        percent_encoding::percent_decode_str(rd)
            .decode_utf8()
            .unwrap()
            .into_owned()
    })
}

/// The sign-in return URL: only from the endpoint's own header family, http(s) only, a host
/// of `server.redirect_hosts` (default: the hosts the rules name) or no `rd` at all, the
/// port kept, the whole original query inside one escaped `rd`.
#[tokio::test(flavor = "multi_thread")]
async fn sign_in_returns_only_to_listed_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("{HOST_RULES}\nserver: {{ listen: \"127.0.0.1:0\", signin_url: \"{SIGNIN}\" }}\n"),
    );
    let authgate = Authgate::start(&config);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let html = "text/html,application/xhtml+xml";
    let location = |resp: &reqwest::Response| {
        resp.headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned())
    };

    // /forward-auth: (X-Forwarded-Proto, X-Forwarded-Host, X-Forwarded-Uri) -> rd.
    let cases: [(&str, &str, &str, Option<&str>); 6] = [
        (
            "https",
            "api.example.org:8443",
            "/data?x=1&y=2",
            Some("https://api.example.org:8443/data?x=1&y=2"),
        ),
        (
            "http",
            "API.Example.org.",
            "/data?a=%26b&c=d+e",
            Some("http://api.example.org/data?a=%26b&c=d+e"),
        ),
        (
            "https",
            "a.tenants.example.org",
            "/x",
            Some("https://a.tenants.example.org/x"),
        ),
        // Hosts no rule names: the sign-in start without rd.
        ("https", "www.example.org", "/data", None),
        ("https", "a.b.tenants.example.org", "/", None),
        ("https", "tenants.example.org:8443", "/", None),
    ];
    for (proto, host, uri, rd) in cases {
        let resp = http
            .get(authgate.url("/forward-auth"))
            .header("X-Forwarded-Method", "GET")
            .header("X-Forwarded-Proto", proto)
            .header("X-Forwarded-Host", host)
            .header("X-Forwarded-Uri", uri)
            .header("Accept", html)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 302, "{host}{uri}");
        let location = location(&resp).unwrap();
        assert!(location.starts_with(SIGNIN), "{location}");
        assert_eq!(rd_of(&location).as_deref(), rd, "{host}{uri}");
        if rd.is_none() {
            assert_eq!(location, SIGNIN);
        }
    }
    // A scheme other than http(s) is refused, whichever family carries it.
    let resp = http
        .get(authgate.url("/forward-auth"))
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Proto", "javascript")
        .header("X-Forwarded-Host", "api.example.org")
        .header("X-Forwarded-Uri", "/data")
        .header("Accept", html)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(location(&resp).is_none());
    let ingress = |url: &str| {
        http.get(authgate.url("/ingress-auth"))
            .header("X-Original-URL", url)
            .header("X-Original-Method", "GET")
            .header("Accept", html)
            .send()
    };
    let resp = ingress("javascript://api.example.org/data").await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(location(&resp).is_none());
    // ingress-nginx and nginx keep the 401 and say where to go.
    let resp = ingress("https://api.example.org:8443/data?x=1&y=2")
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        rd_of(&location(&resp).unwrap()).as_deref(),
        Some("https://api.example.org:8443/data?x=1&y=2")
    );
    let resp = ingress("https://www.example.org/data").await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(location(&resp).as_deref(), Some(SIGNIN));
    let resp = http
        .get(authgate.url("/auth"))
        .header("Host", "api.example.org:8080")
        .header("X-Original-URI", "/data?x=1&y=2")
        .header("X-Original-Method", "GET")
        .header("Accept", html)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    assert_eq!(
        rd_of(&location(&resp).unwrap()).as_deref(),
        Some("http://api.example.org:8080/data?x=1&y=2")
    );
    // Envoy's path form without server.envoy_redirect: the 401, with the Location.
    let resp = http
        .get(authgate.url("/auth/data?x=1&y=2"))
        .header("Host", "api.example.org:8443")
        .header("Accept", html)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    assert_eq!(
        rd_of(&location(&resp).unwrap()).as_deref(),
        Some("http://api.example.org:8443/data?x=1&y=2")
    );
}

/// `server.envoy_redirect: true`: Envoy's `/auth/<path>` answers a browser navigation
/// without a credential with the same 302 as `/forward-auth`; API clients and POSTs keep the
/// 401, and `/auth` (nginx) never redirects.
#[tokio::test(flavor = "multi_thread")]
async fn envoy_path_form_redirects_browsers_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{HOST_RULES}\nserver: {{ listen: \"127.0.0.1:0\", signin_url: \"{SIGNIN}?client=gw\", redirect_hosts: [api.example.org], envoy_redirect: true }}\n"
        ),
    );
    let authgate = Authgate::start(&config);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let html = "text/html,application/xhtml+xml";
    let envoy = |method: reqwest::Method, path: &str, host: &str| {
        http.request(method, authgate.url(&format!("/auth{path}")))
            .header("Host", host)
            .header("X-Forwarded-Proto", "https")
    };
    let resp = envoy(
        reqwest::Method::GET,
        "/data?x=1&y=2",
        "api.example.org:8443",
    )
    .header("Accept", html)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("{SIGNIN}?client=gw&rd=")),
        "{location}"
    );
    assert_eq!(
        rd_of(location).as_deref(),
        Some("https://api.example.org:8443/data?x=1&y=2")
    );
    // Listed explicitly: the rules' other host is no longer a return target.
    let resp = envoy(reqwest::Method::GET, "/x", "a.tenants.example.org")
        .header("Accept", html)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], format!("{SIGNIN}?client=gw"));
    // An API client, and a browser's POST: the 401 with its challenge, no Location.
    for (method, accept) in [
        (reqwest::Method::GET, "application/json"),
        (reqwest::Method::POST, html),
    ] {
        let resp = envoy(method.clone(), "/data", "api.example.org")
            .header("Accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{method} {accept}");
        assert!(resp.headers().contains_key("www-authenticate"));
        assert!(
            resp.headers().get("location").is_none(),
            "{method} {accept}"
        );
    }
    // nginx's /auth: never a redirect, whatever envoy_redirect says.
    let resp = http
        .get(authgate.url("/auth"))
        .header("Host", "api.example.org")
        .header("X-Original-URI", "/data")
        .header("X-Original-Method", "GET")
        .header("Accept", html)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        rd_of(resp.headers()["location"].to_str().unwrap()).as_deref(),
        Some("http://api.example.org/data")
    );
}

/// Basic auth: argon2 once, then cached; failures are limited per user and address (429).
#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_is_cached_and_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POLICY);
    add_user(&config, &["carol", "--roles", "staff"], "carol-password");
    let authgate = Authgate::start(&config);
    let http = reqwest::Client::new();
    let get = |user: &'static str, pw: &'static str| {
        http.get(authgate.url("/auth/data"))
            .basic_auth(user, Some(pw))
            .send()
    };
    // The first answer's JWT is not kept (a credential seen once keeps nothing); from the
    // second request on, one JWT is kept and handed out again.
    let first = bearer_jwt(&get("carol", "carol-password").await.unwrap());
    let mut jwts = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let resp = get("carol", "carol-password").await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-auth-request-user"], "carol");
        assert_eq!(resp.headers()["x-auth-request-roles"], "staff");
        jwts.insert(bearer_jwt(&resp));
    }
    assert_eq!(jwts.len(), 1, "one JWT reused for the cached credential");
    assert!(
        !jwts.contains(&first),
        "the first request's JWT was not kept"
    );
    let claims = verify_jwt(&authgate, jwts.first().unwrap(), "api").await;
    assert_eq!(claims["sub"], "carol");
    let metrics = reqwest::get(authgate.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("authgate_cache_hits_total 20"),
        "argon2 ran once, the rest were hits:\n{metrics}"
    );
    assert!(
        metrics.contains("authgate_cache_misses_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authgate_decisions_total{outcome=\"allow\",provider=\"basic\"} 21"),
        "{metrics}"
    );
    let gauge = |name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(gauge("authgate_cache_entries "), 1.0, "{metrics}");
    let kept = gauge("authgate_cache_reuse_bytes ");
    assert!(
        (600.0..4000.0).contains(&kept),
        "the kept JWT and headers are charged to the reuse budget: {kept}"
    );

    for pw in ["wrong-1", "wrong-2", "wrong-3"] {
        let resp = http
            .get(authgate.url("/auth/data"))
            .basic_auth("carol", Some(pw))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    let resp = http
        .get(authgate.url("/auth/data"))
        .basic_auth("carol", Some("wrong-4"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // The cached success keeps working (the credential was verified before the attack).
    assert_eq!(get("carol", "carol-password").await.unwrap().status(), 200);
}

/// Tokens, users and keys survive a restart; a JWT minted before it verifies after it.
/// SIGTERM drains and exits 0. Token use is recorded without a write per request.
#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_state_and_shutdown_is_graceful() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POLICY);
    add_user(&config, &["dave"], "dave-password");
    let token = create_token(
        &config,
        &["--user", "dave", "--scopes", "read:data", "--name", "t1"],
    );
    let authgate = Authgate::start(&config);
    let http = reqwest::Client::new();
    let resp = http
        .get(authgate.url("/auth/data"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let jwt = bearer_jwt(&resp);
    assert_eq!(authgate.stop(), Some(0), "SIGTERM exits cleanly");

    let authgate = Authgate::start(&config);
    let claims = verify_jwt(&authgate, &jwt, "api").await;
    assert_eq!(claims["sub"], "dave");
    assert_eq!(
        http.get(authgate.url("/auth/data"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(authgate.url("/auth/data"))
            .basic_auth("dave", Some("dave-password"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = reqwest::get(authgate.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        reqwest::get(authgate.admin_url("/livez"))
            .await
            .unwrap()
            .status(),
        200
    );
    // last_used_at is written by the periodic flush (every 5 s) or at shutdown.
    assert_eq!(authgate.stop(), Some(0));
    let out = cli(&config, &["token", "list", "--json"], None);
    let tokens: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(tokens[0]["last_used_at"].as_i64().is_some(), "{tokens}");
}

/// `keys rotate` while the server runs: the new key is published first while the old one
/// still signs, signs once `mint.rotation_lead` has passed, and the old key stays published
/// (its JWTs still verify); `keys rotate --now` signs at once. `keys list` shows the states.
#[tokio::test(flavor = "multi_thread")]
async fn key_rotation_publishes_before_signing() {
    let dir = tempfile::tempdir().unwrap();
    // The lead exceeds the servers' key reload interval (10 s), so the next key shows in
    // the JWKS before it signs.
    let sections = format!(
        "{POLICY}\nmint: {{ issuer: \"https://authgate.test\", audience: api, rotation_lead: 20s }}\n"
    );
    let config = write_config(dir.path(), &sections);
    let token = create_token(&config, &["--user", "erin", "--scopes", "read:data"]);
    let authgate = Authgate::start(&config);
    let http = reqwest::Client::new();
    let mint = async || {
        let resp = http
            .get(authgate.url("/auth/data"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        bearer_jwt(&resp)
    };
    let kid_of = |jwt: &str| jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
    let jwks = async || -> jsonwebtoken::jwk::JwkSet {
        reqwest::get(authgate.url("/.well-known/jwks.json"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    let kids = |set: &jsonwebtoken::jwk::JwkSet| -> Vec<String> {
        set.keys
            .iter()
            .map(|k| k.common.key_id.clone().unwrap())
            .collect()
    };
    let states = || -> Vec<(String, String)> {
        let out = authgate.cli(&["keys", "list"], None);
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let cols: Vec<_> = l.split_whitespace().collect();
                (cols[0].to_owned(), cols[2].to_owned())
            })
            .collect()
    };
    let rotate = |args: &[&str]| {
        let out = authgate.cli(args, None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap().trim().to_owned(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let pair = |kid: &str, state: &str| (kid.to_owned(), state.to_owned());

    let old_jwt = mint().await;
    let old_kid = kid_of(&old_jwt);
    let (new_kid, note) = rotate(&["keys", "rotate"]);
    assert_ne!(new_kid, old_kid);
    assert!(note.contains("signs from"), "{note}");
    assert_eq!(states(), [pair(&new_kid, "next"), pair(&old_kid, "active")]);
    // Published within the reload interval, while the old key still signs.
    let published = eventually(Duration::from_secs(15), async || {
        kids(&jwks().await).contains(&new_kid)
    })
    .await;
    assert!(published, "the next key was not published");
    let still_old = mint().await;
    assert_eq!(
        kid_of(&still_old),
        old_kid,
        "the next key signs before its time"
    );
    // Then it signs; the old key stays published, its JWTs still verify.
    let switched = eventually(Duration::from_secs(30), async || {
        kid_of(&mint().await) == new_kid
    })
    .await;
    assert!(switched, "the next key did not start signing");
    let set = jwks().await;
    assert_eq!(kids(&set), [new_kid.clone(), old_kid.clone()]);
    verify_with(&set, &old_jwt, "api");
    verify_with(&set, &still_old, "api");
    verify_with(&set, &mint().await, "api");
    assert_eq!(
        states(),
        [pair(&new_kid, "active"), pair(&old_kid, "retiring")]
    );

    // The emergency path: signs at once (within the reload interval).
    let (now_kid, note) = rotate(&["keys", "rotate", "--now"]);
    assert!(note.contains("signs now"), "{note}");
    assert_eq!(
        states(),
        [
            pair(&now_kid, "active"),
            pair(&new_kid, "retiring"),
            pair(&old_kid, "retiring")
        ]
    );
    let switched = eventually(Duration::from_secs(15), async || {
        kid_of(&mint().await) == now_kid
    })
    .await;
    assert!(switched, "keys rotate --now did not switch");
    assert_eq!(kids(&jwks().await), [now_kid, new_kid, old_kid]);
}

/// A store that fails while running: /readyz says so, and /auth fails closed (503) for a
/// credential it has not cached.
#[tokio::test(flavor = "multi_thread")]
async fn failing_store_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POLICY);
    let token = create_token(&config, &["--user", "frank", "--scopes", "read:data"]);
    let authgate = Authgate::start(&config);
    let http = reqwest::Client::new();
    assert_eq!(
        reqwest::get(authgate.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    // Break the database under the running server (as a bad migration or a wrong file would).
    let db = rusqlite::Connection::open(dir.path().join("authgate.db")).unwrap();
    db.execute_batch("DROP TABLE api_tokens; DROP TABLE signing_keys;")
        .unwrap();
    let resp = http
        .get(authgate.url("/auth/data"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unavailable");
    let ready = reqwest::get(authgate.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["store"], "unreachable");
    let metrics = reqwest::get(authgate.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("authgate_decisions_total{outcome=\"unavailable\",provider=\"api_token\"} 1"),
        "{metrics}"
    );
}

/// The status of `GET /auth/data` with `token`.
async fn auth_status(authgate: &Authgate, token: &str) -> u16 {
    reqwest::Client::new()
        .get(authgate.url("/auth/data"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The store file deleted under a running server: /readyz says so and decisions fail closed
/// rather than being answered from the deleted file; the CLI will not create an empty store
/// in its place unless told to (`--create`), and the server then answers from that one.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_file_deleted_under_the_server_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POLICY);
    let token = create_token(&config, &["--user", "frank", "--scopes", "read:data"]);
    let authgate = Authgate::start(&config);
    assert_eq!(auth_status(&authgate, &token).await, 200);
    let db = dir.path().join("authgate.db");
    std::fs::remove_file(&db).unwrap();

    let gone = eventually(Duration::from_secs(10), async || {
        let ready = reqwest::get(authgate.admin_url("/readyz")).await.unwrap();
        let status = ready.status();
        let body: Value = ready.json().await.unwrap();
        status == 503 && body["store"] == "store file is gone"
    })
    .await;
    assert!(gone, "/readyz never reported the store file gone");
    // Past the cached answer (cache.max_ttl 2 s), the token's decision is a 503.
    let closed = eventually(Duration::from_secs(10), async || {
        auth_status(&authgate, &token).await == 503
    })
    .await;
    assert!(closed, "the deleted file kept answering");
    assert!(!db.exists(), "the server made no new file");

    let refused = authgate.cli(&["token", "create", "--user", "frank"], None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(73), "{stderr}");
    assert!(
        stderr.contains("does not exist, but a running server holds the store")
            && stderr.contains("--create"),
        "{stderr}"
    );
    assert!(!db.exists(), "no store was created");

    let new_token = create_token(
        &config,
        &["--user", "frank", "--scopes", "read:data", "--create"],
    );
    assert!(db.exists());
    let followed = eventually(Duration::from_secs(10), async || {
        auth_status(&authgate, &new_token).await == 200
    })
    .await;
    assert!(followed, "the server did not open the new store file");
    assert_eq!(
        auth_status(&authgate, &token).await,
        401,
        "not in the new store"
    );
}

/// A backup restored under a running server (renamed into place): the server answers from
/// the restored file within the cache TTL, and a revoke the CLI confirms takes effect.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_file_restored_under_the_server_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POLICY);
    let db = dir.path().join("authgate.db");
    let kept = create_token(&config, &["--user", "frank", "--scopes", "read:data"]);
    let authgate = Authgate::start(&config);
    let backup = dir.path().join("backup.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("VACUUM INTO ?1", [backup.to_str().unwrap()])
        .unwrap();
    let later = create_token(&config, &["--user", "frank", "--scopes", "read:data"]);
    assert_eq!(auth_status(&authgate, &kept).await, 200);
    assert_eq!(auth_status(&authgate, &later).await, 200);

    let staged = dir.path().join("authgate.db.restoring");
    std::fs::copy(&backup, &staged).unwrap();
    std::fs::rename(&staged, &db).unwrap();
    let followed = eventually(Duration::from_secs(10), async || {
        auth_status(&authgate, &later).await == 401
    })
    .await;
    assert!(
        followed,
        "a token the restored file lacks is still accepted"
    );
    assert_eq!(auth_status(&authgate, &kept).await, 200, "in the backup");

    let revoked = authgate.cli(&["token", "revoke", "--secret-stdin"], Some(&kept));
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let effective = eventually(Duration::from_secs(10), async || {
        auth_status(&authgate, &kept).await == 401
    })
    .await;
    assert!(effective, "the confirmed revoke did not take effect");
    let ready = reqwest::get(authgate.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
}

/// Bad start-up inputs: a clear message naming the key or file, and the documented exit code.
#[test]
fn start_up_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let run = |yaml: &str, args: &[&str]| {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = cli(&path, args, None);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run("server: { lisen: x }", &["serve"]);
    assert_eq!(code, Some(64));
    assert!(err.contains("lisen"), "{err}");
    let (code, err) = run("mint: { ttl: 1s }", &["check-config"]);
    assert_eq!(code, Some(64));
    assert!(err.contains("mint.ttl"), "{err}");
    let (code, err) = run("cache: { max_entries: lots }", &["serve"]);
    assert_eq!(code, Some(64));
    assert!(err.contains("cache.max_entries"), "{err}");
    let (code, err) = run(
        "server: { redirect_hosts: [api.example.org, \"*\"] }",
        &["serve"],
    );
    assert_eq!(code, Some(64));
    assert!(err.contains("server.redirect_hosts[1]"), "{err}");
    let (code, err) = run("server: { signin_url: /oauth2/start }", &["check-config"]);
    assert_eq!(code, Some(64));
    assert!(err.contains("server.signin_url"), "{err}");
    // An unreadable key file is named.
    // (The store in this test's own directory: a fixed path is shared with every other
    // checkout whose tests run on this machine, whatever schema version they write.)
    let (code, err) = run(
        &format!(
            "mint: {{ key_files: [/nonexistent/signing.pem] }}\nserver: {{ listen: \"127.0.0.1:0\" }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\nstore: {{ type: embedded, path: \"{}\" }}",
            dir.path().join("keyfile-test.db").display()
        ),
        &["serve"],
    );
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("/nonexistent/signing.pem"), "{err}");
    let (code, err) = run(
        "mint: { key_files: [/nonexistent/signing.pem] }",
        &["check-config"],
    );
    assert_eq!(code, Some(64));
    assert!(err.contains("/nonexistent/signing.pem"), "{err}");
    // A store that cannot be opened is named.
    let (code, err) = run(
        "store: { type: embedded, path: /proc/no/authgate.db }\nserver: { listen: \"127.0.0.1:0\" }\nadmin: { listen: \"127.0.0.1:0\" }",
        &["serve"],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot open the embedded store at '/proc/no/authgate.db'"),
        "{err}"
    );
    // A valid config passes check-config.
    let (code, _) = run("", &["check-config"]);
    assert_eq!(code, Some(0));
    // The example config is valid.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let out = cli(&example, &["check-config"], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The CLI: policy check, token list/revoke by secret, user management.
#[test]
fn cli_commands() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml"),
    )
    .unwrap();
    let example = example.replace(
        "/var/lib/authgate/authgate.db",
        &dir.path().join("a.db").display().to_string(),
    );
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, example).unwrap();
    add_user(
        &config,
        &["alice", "--roles", "editor", "--attr", "department=physics"],
        "alice-password",
    );
    let check = |args: &[&str]| {
        let mut all = vec!["policy", "check"];
        all.extend_from_slice(args);
        let out = cli(&config, &all, None);
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        )
    };
    assert_eq!(
        check(&["--user", "alice", "--url", "https://api.example.org/data"]),
        (Some(0), "allow (rule: data-read, audience: api)".into())
    );
    assert_eq!(
        check(&[
            "--user",
            "alice",
            "--scopes",
            "other",
            "--url",
            "https://api.example.org/data"
        ]),
        (
            Some(1),
            "deny (rule: data-read): missing scope read:data (403)".into()
        )
    );
    assert_eq!(
        check(&["--user", "alice", "--url", "https://x.example.org/admin"]),
        (
            Some(1),
            "deny (rule: admin): missing role admin (403)".into()
        )
    );
    assert_eq!(
        check(&[
            "--user",
            "alice",
            "--roles",
            "admin",
            "--url",
            "https://x.example.org/admin"
        ]),
        (Some(0), "allow (rule: admin, audience: admin-api)".into())
    );
    assert_eq!(
        check(&["--url", "https://api.example.org/data"]),
        (
            Some(1),
            "unauthenticated: a valid credential is needed (401)".into()
        )
    );
    assert_eq!(
        check(&["--url", "https://api.example.org/healthz"]),
        (Some(0), "allow anonymous (rule: health)".into())
    );
    assert_eq!(
        check(&["--user", "alice", "--url", "https://x.org/reports/2024/pdf"]),
        (Some(0), "allow (rule: reports, audience: api)".into())
    );
    assert_eq!(
        check(&[
            "--user",
            "alice",
            "--method",
            "POST",
            "--url",
            "https://api.example.org/data"
        ]),
        (Some(0), "allow (rule: data-write, audience: api)".into())
    );
    assert_eq!(
        check(&[
            "--user",
            "alice",
            "--scopes",
            "read:data",
            "--method",
            "POST",
            "--url",
            "https://api.example.org/data"
        ]),
        (
            Some(1),
            "deny (rule: data-write): missing scope write:data (403)".into()
        )
    );
    assert_eq!(
        cli(&config, &["policy", "check", "--url", "not a url"], None)
            .status
            .code(),
        Some(65)
    );

    let secret = create_token(&config, &["--user", "alice", "--name", "laptop"]);
    let out = cli(
        &config,
        &["token", "revoke", "--secret-stdin"],
        Some(&format!("{secret}\n")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(
        &config,
        &["token", "revoke", "--secret-stdin"],
        Some(&format!("{secret}\n")),
    );
    assert_eq!(out.status.code(), Some(65), "revoking twice says so");
    let listed = String::from_utf8(cli(&config, &["token", "list"], None).stdout).unwrap();
    assert!(
        listed.contains("laptop") && listed.contains("revoked"),
        "{listed}"
    );
    assert!(!listed.contains(&secret), "secrets are never listed");
    let db = std::fs::read(dir.path().join("a.db")).unwrap();
    assert!(
        !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is not stored"
    );

    assert_eq!(
        cli(
            &config,
            &["user", "add", "alice"],
            Some("another-password\n")
        )
        .status
        .code(),
        Some(65)
    );
    assert_eq!(
        cli(&config, &["user", "add", "bob"], Some("short\n"))
            .status
            .code(),
        Some(65)
    );
    assert!(
        cli(
            &config,
            &["user", "passwd", "alice"],
            Some("new-password-1\n")
        )
        .status
        .success()
    );
    let users = String::from_utf8(cli(&config, &["user", "list"], None).stdout).unwrap();
    assert!(
        users.contains("alice") && users.contains("editor"),
        "{users}"
    );
    assert!(!users.contains("argon2"), "hashes are not listed");
    let _t = create_token(&config, &["--user", "alice"]);
    assert!(
        cli(&config, &["user", "remove", "alice"], None)
            .status
            .success()
    );
    let tokens: Value =
        serde_json::from_slice(&cli(&config, &["token", "list", "--json"], None).stdout).unwrap();
    assert!(
        tokens
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["revoked_at"].is_i64()),
        "removing a user revokes their tokens"
    );
    assert_eq!(
        cli(&config, &["user", "remove", "alice"], None)
            .status
            .code(),
        Some(65)
    );
}

/// EdDSA and RS256 as well as ES256; generated keys and PEM files (PKCS#8 from openssl).
#[tokio::test(flavor = "multi_thread")]
async fn signing_algorithms_and_key_files() {
    use jsonwebtoken::Algorithm as A;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cases = [
        ("EdDSA", None, A::EdDSA),
        ("EdDSA", Some("ed25519-test-only.pem"), A::EdDSA),
        ("ES256", Some("es256-test-only.pem"), A::ES256),
        ("RS256", Some("rs256-test-only.pem"), A::RS256),
    ];
    for (alg, file, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let key_files = file.map_or(String::new(), |f| {
            format!(", key_files: [\"{}\"]", fixtures.join(f).display())
        });
        let sections = format!(
            "{POLICY}\nmint: {{ issuer: \"https://authgate.test\", algorithm: {alg}{key_files} }}\n"
        );
        let config = write_config(dir.path(), &sections);
        let token = create_token(&config, &["--user", "gina", "--scopes", "read:data"]);
        let authgate = Authgate::start(&config);
        let resp = reqwest::Client::new()
            .get(authgate.url("/auth/data"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{alg} {file:?}");
        let jwt = bearer_jwt(&resp);
        let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(authgate.url("/.well-known/jwks.json"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(jwks.keys.len(), 1);
        let claims = verify_with_alg(&jwks, &jwt, "api", expected);
        assert_eq!(claims["sub"], "gina", "{alg} {file:?}");
        // The metadata names every algorithm authgate may sign with, the configured one
        // first, so that a client which cached it takes JWTs after mint.algorithm changes.
        let discovery: Value = reqwest::get(authgate.url("/.well-known/openid-configuration"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let algs = &discovery["id_token_signing_alg_values_supported"];
        assert_eq!(algs[0], alg, "{alg} {file:?}");
        let mut algs: Vec<&str> = algs
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        algs.sort_unstable();
        assert_eq!(algs, ["ES256", "EdDSA", "RS256"], "{alg} {file:?}");
        // Every JWK names its algorithm, so the longer list admits no other key.
        assert!(jwks.keys.iter().all(|k| k.common.key_algorithm.is_some()));
        if file.is_some() {
            // File keys are rotated by editing mint.key_files, not in the store.
            let out = authgate.cli(&["keys", "rotate"], None);
            assert_eq!(out.status.code(), Some(1));
            assert!(String::from_utf8_lossy(&out.stderr).contains("mint.key_files"));
        }
    }
    // A PEM key of the wrong type for the algorithm names the file and the algorithm.
    let dir = tempfile::tempdir().unwrap();
    let sections = format!(
        "mint: {{ algorithm: ES256, key_files: [\"{}\"] }}\n",
        fixtures.join("rs256-test-only.pem").display()
    );
    let config = write_config(dir.path(), &sections);
    let out = cli(&config, &["check-config"], None);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rs256-test-only.pem") && err.contains("ES256"),
        "{err}"
    );
}
