//! `type: remote` against a real who-am-i service (tests/peers/whoami, Python's http.server
//! in its own process): every kind of answer, the token's encoding, one call for concurrent
//! first requests, revocation within `cache_ttl`, a slow and a stopped service, `/whoami`,
//! and one request through real nginx.

mod common;

use std::time::{Duration, Instant};

use common::whoami::WhoAmI;
use common::*;
use serde_json::{Value, json};

fn sections(service: &WhoAmI) -> String {
    format!(
        r#"
cache: {{ max_ttl: 10s, negative_ttl: 1s }}
providers:
  - type: remote
    url: "{}?token={{token}}"
    claims: {{ username: [uid], attributes: [email], roles: [groups] }}
    cache_ttl: 2s
    timeout: 700ms
augment:
  - type: static
    providers: [remote]
    when: {{ usernames: [alice] }}
    roles: [from-static]
policy:
  default: deny
  rules:
    - {{ name: data, path: /data, require: {{ roles: [staff] }} }}
"#,
        service.url()
    )
}

/// `/auth` for `GET /data` with `token` as a Bearer credential.
async fn auth(authgate: &Authgate, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(authgate.url("/auth"))
        .header("X-Original-URI", "/data")
        .header("X-Original-Method", "GET")
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn status(authgate: &Authgate, token: &str) -> u16 {
    auth(authgate, token).await.status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_tokens_are_asked_at_the_who_am_i_service() {
    let mut service = WhoAmI::start();
    service
        .set(json!({
            "tok-alice": {"body": {"uid": "alice", "email": "alice@example.org",
                                   "groups": ["staff"]}},
            "tok+odd/chars.~==": {"body": {"uid": "odd", "groups": ["staff"]}},
            "tok-403": {"status": 403, "body": {"error": "forbidden"}},
            "tok-404": {"status": 404, "body": {}},
            "tok-500": {"status": 500, "body": {"uid": "alice"}},
            "tok-html": {"body": "<html>not json</html>"},
            "tok-nouser": {"body": {"name": "alice", "groups": ["staff"]}},
            "tok-slow": {"delay": 3, "body": {"uid": "alice"}},
            "tok-many": {"delay": 0.5, "body": {"uid": "many", "groups": ["staff"]}},
            "tok-revoked": {"body": {"uid": "rev", "groups": ["staff"]}},
        }))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sections(&service));
    let authgate = Authgate::start(&config);

    // A valid token: 200, the identity from the answer and the static augmenter, in the
    // headers and the minted JWT.
    let resp = auth(&authgate, "tok-alice").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-auth-request-user"], "alice");
    assert_eq!(resp.headers()["x-auth-request-roles"], "from-static,staff");
    let jwt = bearer_jwt(&resp);
    let claims = verify_jwt(&authgate, &jwt, "api").await;
    let service_ns = format!(
        "remote:http%3A//127.0.0.1%3A{}/who-am-i:alice",
        service.addr.port()
    );
    assert_eq!(claims["sub"], service_ns.as_str());
    assert_eq!(claims["provider"], "remote");
    assert_eq!(claims["roles"], json!(["from-static", "staff"]));
    assert_eq!(claims["attributes"]["email"], "alice@example.org");

    // The token reaches the service unchanged, in `token` only, whatever its characters.
    assert_eq!(status(&authgate, "tok+odd/chars.~==").await, 200);
    let requests = service.requests().await;
    let last = requests.last().unwrap();
    assert_eq!(last["method"], "GET");
    assert_eq!(last["query"], json!({"token": ["tok+odd/chars.~=="]}));
    assert_eq!(last["path"], "/who-am-i?token=tok%2Bodd%2Fchars.~%3D%3D");

    // 401/403/404 are invalid tokens; anything else fails closed.
    for (token, want) in [
        ("tok-unknown", 401),
        ("tok-403", 401),
        ("tok-404", 401),
        ("tok-500", 503),
        ("tok-html", 503),
        ("tok-nouser", 503),
    ] {
        assert_eq!(status(&authgate, token).await, want, "{token}");
    }
    let resp = auth(&authgate, "tok-unknown").await;
    assert_eq!(
        resp.json::<Value>().await.unwrap()["reason"],
        "the token was not accepted"
    );
    // Lines reach the log a few milliseconds after the answer (written in batches).
    let logged = eventually(Duration::from_secs(5), async || {
        authgate
            .log_text()
            .contains("the who-am-i answer names no user")
    })
    .await;
    assert!(logged, "a missing user name is logged");

    // A service slower than `timeout`: 503, after about the timeout.
    let started = Instant::now();
    assert_eq!(status(&authgate, "tok-slow").await, 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Concurrent first requests with one token make one call.
    let before = service.requests().await.len();
    let calls = (0..8).map(|_| status(&authgate, "tok-many"));
    let statuses = futures_util::future::join_all(calls).await;
    assert_eq!(statuses, vec![200; 8]);
    let made = service.requests().await.len() - before;
    assert_eq!(made, 1, "concurrent first requests made {made} calls");

    // A token the service stops accepting stops working within cache_ttl (2 s).
    assert_eq!(status(&authgate, "tok-revoked").await, 200);
    service
        .set(json!({"tok-revoked": {"status": 401, "body": {}}}))
        .await;
    let revoked_at = Instant::now();
    assert!(
        eventually(Duration::from_secs(8), async || status(
            &authgate,
            "tok-revoked"
        )
        .await
            == 401)
        .await
    );
    assert!(
        revoked_at.elapsed() <= Duration::from_secs(4),
        "{:?}",
        revoked_at.elapsed()
    );

    // An answer's `expires` ends the identity earlier than cache_ttl.
    let soon = authgate_unix_now() + 2;
    service
        .set(
            json!({"tok-expiring": {"body": {"uid": "exp", "groups": ["staff"],
                                              "expires": soon}}}),
        )
        .await;
    assert_eq!(status(&authgate, "tok-expiring").await, 200);
    assert!(
        eventually(Duration::from_secs(8), async || status(
            &authgate,
            "tok-expiring"
        )
        .await
            == 401)
        .await
    );
    assert!(authgate_unix_now() >= soon);

    // /whoami: the identity as JSON, never the credential; 401 without one.
    let http = reqwest::Client::new();
    let resp = http
        .get(authgate.url("/whoami"))
        .bearer_auth("tok-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let text = resp.text().await.unwrap();
    assert!(!text.contains("tok-alice"));
    let me: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(me["subject"], service_ns.as_str());
    assert_eq!(me["provider"], "remote");
    assert_eq!(me["username"], "alice");
    assert_eq!(me["roles"], json!(["from-static", "staff"]));
    assert_eq!(me["attributes"], json!({"email": "alice@example.org"}));
    assert_eq!(me["scopes"], json!([]));
    assert_eq!(me["expires_at"], Value::Null);
    let resp = http.get(authgate.url("/whoami")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let resp = http
        .get(authgate.url("/whoami"))
        .bearer_auth("tok-403")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // `authgate whoami` asks the running server.
    let base = authgate.url("");
    let out = authgate.cli(
        &["whoami", "--token", "-", "--url", &base],
        Some("tok-alice\n"),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let me: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(me["username"], "alice");
    assert_eq!(me["roles"], json!(["from-static", "staff"]));
    let out = authgate.cli(&["whoami", "--token", "tok-403", "--url", &base], None);
    assert_eq!(out.status.code(), Some(1));

    // The URL with the token is never logged.
    // The service down: new tokens fail closed, /readyz says so.
    service.stop();
    assert_eq!(status(&authgate, "tok-new").await, 503);
    let ready = reqwest::get(authgate.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    let name = format!("remote http://{}/who-am-i", service.addr);
    assert_ne!(ready["providers"][&name], "ok", "{ready}");

    let logs = authgate.stop_and_log_text().await;
    for token in [
        "tok-alice",
        "tok-500",
        "tok-slow",
        "tok%2Bodd",
        "tok-html",
        "tok-new",
    ] {
        assert!(!logs.contains(token), "{token} is in the logs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_token_in_a_header_by_post() {
    let service = WhoAmI::start();
    service
        .set(json!({"key-1": {"body": {"user": {"name": "erin"}, "groups": ["staff"]}}}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let sections = format!(
        r#"
providers:
  - type: remote
    url: "{}"
    method: POST
    token_header: X-ECMWF-Key
    credential: [X-ECMWF-Key]
    claims: {{ username: [user.name], roles: [groups] }}
policy:
  default: deny
  rules:
    - {{ name: data, path: /data, require: {{ roles: [staff] }} }}
"#,
        service.url()
    );
    let authgate = Authgate::start(&write_config(dir.path(), &sections));
    let http = reqwest::Client::new();
    let resp = http
        .get(authgate.url("/auth"))
        .header("X-Original-URI", "/data")
        .header("X-Original-Method", "GET")
        .header("X-Auth-Token", "key-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-auth-request-user"], "erin");
    let requests = service.requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["method"], "POST");
    assert_eq!(requests[0]["path"], "/who-am-i");
    assert_eq!(requests[0]["headers"]["x-ecmwf-key"], "key-1");
    // Bearer is not a form this provider takes.
    assert_eq!(status(&authgate, "key-1").await, 401);
    assert_eq!(service.requests().await.len(), 1);
    // The token in X-ECMWF-Key (the form `credential:` names); sent twice: 401.
    service
        .set(json!({"key-2": {"body": {"user": {"name": "frank"}, "groups": ["staff"]}}}))
        .await;
    let with_key = |values: &[&str]| {
        let mut r = http
            .get(authgate.url("/auth"))
            .header("X-Original-URI", "/data")
            .header("X-Original-Method", "GET");
        for v in values {
            r = r.header("X-ECMWF-Key", *v);
        }
        r.send()
    };
    let resp = with_key(&["key-2"]).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-auth-request-user"], "frank");
    assert_eq!(
        service.requests().await.last().unwrap()["headers"]["x-ecmwf-key"],
        "key-2"
    );
    let resp = with_key(&["key-2", "key-1"]).await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["reason"], "more than one token header");
    let me: Value = http
        .get(authgate.url("/whoami"))
        .header("X-ECMWF-Key", "key-2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "frank");
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_token_through_nginx() {
    let service = WhoAmI::start();
    service
        .set(json!({"tok-nginx": {"body": {"uid": "alice", "groups": ["staff"]}}}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let sections = sections(&service).replace("path: /data", "path: /");
    let authgate = Authgate::start(&write_config(dir.path(), &sections));
    let echo = Echo::start().await;
    let nginx = Nginx::start(
        dir.path(),
        "deploy/nginx/authgate.conf",
        authgate.data,
        echo.addr,
    );
    let http = nginx.client();
    let resp = http
        .get(nginx.url("/items"))
        .bearer_auth("tok-nginx")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["x-auth-request-user"], json!(["alice"]));
    assert_eq!(seen["x-auth-request-roles"], json!(["from-static,staff"]));
    let jwt = seen["authorization"][0]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    assert_eq!(verify_jwt(&authgate, jwt, "api").await["username"], "alice");
    // A raw token in a provider's header never reaches the app: the example clears it.
    let resp = http
        .get(nginx.url("/items"))
        .bearer_auth("tok-nginx")
        .header("X-ECMWF-Key", "tok-nginx")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen.get("x-ecmwf-key"), None, "{seen}");
    let resp = http
        .get(nginx.url("/items"))
        .bearer_auth("tok-unknown")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

fn authgate_unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A service over TLS: trusted through `ca_file`; without it, its certificate is refused
/// and the request fails closed.
#[tokio::test(flavor = "multi_thread")]
async fn remote_service_over_tls_with_a_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    common::ldap::make_certificates(&certs);
    let service = WhoAmI::start_tls(&certs.join("cert.pem"), &certs.join("key.pem"));
    service
        .set(json!({"tok-tls": {"body": {"uid": "alice", "groups": ["staff"]}}}))
        .await;
    for (i, (ca, want)) in [(true, 200), (false, 503)].into_iter().enumerate() {
        let case = dir.path().join(format!("case{i}"));
        std::fs::create_dir_all(&case).unwrap();
        let mut sections = sections(&service);
        if ca {
            sections = sections.replace(
                "    timeout: 700ms\n",
                &format!(
                    "    timeout: 700ms\n    ca_file: \"{}\"\n",
                    certs.join("ca.pem").display()
                ),
            );
        }
        assert!(sections.contains("https://127.0.0.1"));
        let authgate = Authgate::start(&write_config(&case, &sections));
        assert_eq!(status(&authgate, "tok-tls").await, want, "ca_file: {ca}");
    }
}
