//! authgate's Astakos-compatible endpoints, checked by a client written from ASTAKOS.md.

mod common;

use common::*;
use serde_json::{Value, json};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn astakos_compatible_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        r#"
astakos_api:
  enabled: true
  service_catalog:
    - { name: cyclades_compute, type: compute, endpoints_links: [],
        endpoints: [ { versionId: v2.0, publicURL: "https://cyclades.example.org/compute/v2.0", region: default } ] }
policy: { default: allow_authenticated }
"#,
    );
    add_user(
        &config,
        &[
            "alice",
            "--roles",
            "default,academic",
            "--email",
            "alice@example.org",
        ],
        "alice-password",
    );
    let token = create_token(
        &config,
        &[
            "--user",
            "alice",
            "--expires",
            "1h",
            "--attr",
            "projects=p-1",
            "--attr",
            "projects=p-2",
        ],
    );
    let forever = create_token(&config, &["--user", "alice"]);
    let authgate = Authgate::start(&config);
    let http = reqwest::Client::new();
    let tokens_url = authgate.url("/identity/v2.0/tokens");
    let post = |body: Value| {
        http.post(&tokens_url)
            .header("X-Auth-Token", "x")
            .json(&body)
            .send()
    };

    // The access document, exactly as astakosclient reads it.
    let resp = post(json!({"auth": {"token": {"id": token}}}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json; charset=UTF-8"
    );
    assert_eq!(resp.headers()["vary"], "X-Auth-Token");
    assert_eq!(
        resp.headers()["cache-control"],
        "no-cache, no-store, must-revalidate, max-age=0"
    );
    // Expires is an HTTP date (IMF-fixdate), as Django's never_cache sends: now.
    let expires_header = resp.headers()["expires"].to_str().unwrap().to_owned();
    assert!(expires_header.ends_with(" GMT"), "{expires_header}");
    let at = httpdate::parse_http_date(&expires_header)
        .unwrap_or_else(|e| panic!("Expires '{expires_header}': {e}"))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((at - now()).abs() <= 5, "{expires_header}");
    let doc: Value = resp.json().await.unwrap();
    let access = &doc["access"];
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(access), ["serviceCatalog", "token", "user"]);
    assert_eq!(keys(&access["token"]), ["expires", "id", "tenant"]);
    assert_eq!(access["token"]["id"], token.as_str());
    assert_eq!(
        access["token"]["tenant"],
        json!({"id": "alice", "name": "alice"})
    );
    let expires = access["token"]["expires"].as_str().unwrap();
    assert!(expires.ends_with(".000000+00:00"), "{expires}");
    let expires_at = authgate::providers::parse_iso8601(expires).unwrap();
    assert!((expires_at - (now() + 3600)).abs() <= 5, "{expires}");
    assert_eq!(
        access["user"],
        json!({"id": "alice", "name": "alice",
        "roles": [{"id": "1", "name": "academic"}, {"id": "2", "name": "default"}],
        "roles_links": [], "projects": ["p-1", "p-2"]})
    );
    assert_eq!(access["serviceCatalog"][0]["name"], "cyclades_compute");
    // passwordCredentials: username is the user's uuid, password the token.
    let resp = post(json!({"auth": {"passwordCredentials": {"username": "alice", "password": forever}, "tenantName": "alice"}})).await.unwrap();
    assert_eq!(resp.status(), 200);

    // Errors, with Astakos's bodies and codes.
    let cases = [
        (
            json!({"auth": {"token": {"id": "agt_unknown"}}}),
            401,
            json!({"unauthorized": {"code": 401, "message": "Invalid token", "details": ""}}),
        ),
        (
            json!({"auth": {}}),
            400,
            json!({"badRequest": {"code": 400, "message": "Malformed request: missing credentials", "details": ""}}),
        ),
        (
            json!({"auth": {"token": {"id": null}}}),
            400,
            json!({"badRequest": {"code": 400, "message": "Malformed request: missing token", "details": ""}}),
        ),
        (
            json!({"auth": {"passwordCredentials": {"username": "bob", "password": forever}}}),
            401,
            json!({"unauthorized": {"code": 401, "message": "Invalid credentials", "details": ""}}),
        ),
        (
            json!({"auth": {"token": {"id": forever}, "tenantName": "other"}}),
            400,
            json!({"badRequest": {"code": 400, "message": "Not conforming tenantName", "details": ""}}),
        ),
    ];
    for (body, status, expected) in cases {
        let resp = post(body.clone()).await.unwrap();
        assert_eq!(resp.status(), status, "{body}");
        assert_eq!(resp.headers()["vary"], "X-Auth-Token");
        assert_eq!(resp.json::<Value>().await.unwrap(), expected, "{body}");
    }
    // Public mode: no body, the catalog only.
    let resp = http.post(&tokens_url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        keys(&resp.json::<Value>().await.unwrap()["access"]),
        ["serviceCatalog"]
    );
    // Other methods: 405 with Allow: POST.
    let resp = http.get(&tokens_url).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");

    // 0.13's /im/authenticate: flat JSON with epoch milliseconds; text/plain errors.
    let legacy = authgate.url("/im/authenticate");
    let resp = http
        .get(&legacy)
        .header("X-Auth-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let flat: Value = resp.json().await.unwrap();
    assert_eq!(flat["uuid"], "alice");
    assert_eq!(flat["username"], "alice");
    assert_eq!(flat["email"], json!(["alice@example.org"]));
    assert_eq!(flat["groups"], json!(["academic", "default"]));
    assert_eq!(flat["auth_token"], token.as_str());
    assert_eq!(
        flat["auth_token_expires"].as_i64().unwrap(),
        expires_at * 1000
    );
    assert!(flat["id"].is_u64());
    for (request, status, text) in [
        (http.get(&legacy), 401, "Access denied\n\n"),
        (
            http.get(&legacy).header("X-Auth-Token", "nope"),
            401,
            "Invalid X-Auth-Token\n\n",
        ),
        (
            http.post(&legacy).header("X-Auth-Token", &token),
            400,
            "Method not allowed.\n\n",
        ),
    ] {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), status);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        assert_eq!(resp.text().await.unwrap(), text);
    }

    // Round trip: another authgate whose astakos provider points at this one.
    let dir2 = tempfile::tempdir().unwrap();
    let config2 = write_config(
        dir2.path(),
        &format!(
            "providers: [ {{ type: astakos, url: \"http://{}\" }} ]\npolicy: {{ default: allow_authenticated }}\n",
            authgate.data
        ),
    );
    let edge = Authgate::start(&config2);
    let resp = http
        .get(edge.url("/auth/x"))
        .header("X-Auth-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let jwt = bearer_jwt(&resp);
    let claims = verify_jwt(&edge, &jwt, "api").await;
    // The edge's Astakos user `alice` is not a local `alice` there: the sub names the URL.
    assert_eq!(
        claims["sub"],
        format!(
            "astakos:http%3A//{}:alice",
            authgate.data.to_string().replace(':', "%3A")
        )
    );
    assert_eq!(claims["provider"], "astakos");
    assert_eq!(claims["roles"], json!(["academic", "default"]));
    assert_eq!(claims["attributes"]["default_project"], "alice");
    let resp = http
        .get(edge.url("/auth/x"))
        .header("X-Auth-Token", "agt_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["reason"],
        "invalid token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn astakos_endpoints_are_off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let authgate = Authgate::start(&write_config(dir.path(), ""));
    let resp = reqwest::Client::new()
        .post(authgate.url("/identity/v2.0/tokens"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

/// A scoped token is validated by the Astakos endpoints only when it holds
/// `astakos_api.scope` (default `astakos`): a service asking Astakos treats the token as its
/// owner in full. Unscoped tokens act for their owner and pass.
#[tokio::test(flavor = "multi_thread")]
async fn astakos_endpoints_need_their_scope_on_scoped_tokens() {
    for (astakos_api, passing_scope, failing_scope) in [
        ("astakos_api: { enabled: true }", "astakos", "pithos"),
        (
            "astakos_api: { enabled: true, scope: pithos }",
            "pithos",
            "astakos",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(
            dir.path(),
            &format!("{astakos_api}\npolicy: {{ default: allow_authenticated }}\n"),
        );
        add_user(&config, &["alice", "--roles", "default"], "alice-password");
        let read_only = create_token(&config, &["--user", "alice", "--scopes", "read:data"]);
        let failing = create_token(
            &config,
            &[
                "--user",
                "alice",
                "--scopes",
                &format!("{failing_scope},read:data"),
            ],
        );
        let passing = create_token(
            &config,
            &[
                "--user",
                "alice",
                "--scopes",
                &format!("{passing_scope},read:data"),
            ],
        );
        let unscoped = create_token(&config, &["--user", "alice"]);
        let authgate = Authgate::start(&config);
        let http = reqwest::Client::new();
        let cases = [
            (&read_only, "read:data", false),
            (&failing, failing_scope, false),
            (&passing, passing_scope, true),
            (&unscoped, "unscoped", true),
        ];
        for (token, what, valid) in cases {
            let what = format!("{astakos_api}: {what}");
            let resp = http
                .post(authgate.url("/identity/v2.0/tokens"))
                .json(&json!({"auth": {"token": {"id": token}}}))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let doc: Value = resp.json().await.unwrap();
            if valid {
                assert_eq!(status, 200, "{what}: {doc}");
                assert_eq!(doc["access"]["token"]["id"], token.as_str(), "{what}");
                assert_eq!(doc["access"]["user"]["id"], "alice", "{what}");
            } else {
                assert_eq!(status, 401, "{what}: {doc}");
                assert_eq!(
                    doc,
                    json!({"unauthorized": {"code": 401, "message": "Invalid token", "details": ""}}),
                    "{what}"
                );
            }

            let resp = http
                .get(authgate.url("/im/authenticate"))
                .header("X-Auth-Token", token.as_str())
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap();
            if valid {
                assert_eq!(status, 200, "{what}: {text}");
                let flat: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(flat["uuid"], "alice", "{what}");
                assert_eq!(flat["auth_token"], token.as_str(), "{what}");
            } else {
                assert_eq!(status, 401, "{what}: {text}");
                assert_eq!(text, "Invalid X-Auth-Token\n\n", "{what}");
            }
        }
    }
}
