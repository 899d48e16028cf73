//! authgate's Astakos-compatible endpoints, checked by a client written from ASTAKOS.md.

mod common;

use common::astakos::{AstakosClient, AstakosError};
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

/// The Astakos fault a client got: status and body.
fn fault_of(result: Result<Value, AstakosError>) -> (u16, Value) {
    match result {
        Err(AstakosError::Status(status, body)) => (status, body),
        other => panic!("expected a fault, got {other:?}"),
    }
}

fn unauthorized(message: &str) -> Value {
    json!({"unauthorized": {"code": 401, "message": message, "details": ""}})
}

/// What a synnefo deployment does against authgate, under a prefix and without one: find
/// `astakos_account` v1.0 in the default catalog, validate tokens, and translate uuids and
/// display names through the user catalogs, with a user's token and with a service token.
#[tokio::test(flavor = "multi_thread")]
async fn user_catalogs_and_prefixes_as_a_synnefo_client_uses_them() {
    // (the astakos_api section, the ASTAKOS_AUTH_URL paths a client may use, the account
    // path the catalog names, a path that must not be served)
    let variants = [
        (
            "astakos_api: { enabled: true, public_url: \"https://cloud.example.org\" }",
            vec!["/identity/v2.0"],
            "/account/v1.0",
            "/astakos/identity/v2.0/tokens",
        ),
        (
            "astakos_api:\n  enabled: true\n  prefix: [/astakos, /_astakos/]\n  public_url: \"https://cloud.example.org/astakos\"\n  service_catalog:\n    - { name: pithos_object-store, type: object-store, endpoints: [] }",
            vec!["/astakos/identity/v2.0", "/_astakos/identity/v2.0"],
            "/astakos/account/v1.0",
            "/identity/v2.0/tokens",
        ),
    ];
    for (section, auth_paths, account_path, unserved) in variants {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(
            dir.path(),
            &format!("{section}\npolicy: {{ default: allow_authenticated }}\n"),
        );
        add_user(&config, &["alice", "--roles", "default"], "alice-password");
        add_user(&config, &["bob"], "bob-password");
        let alice = create_token(&config, &["--user", "alice"]);
        let alice_soon_expired = create_token(&config, &["--user", "alice", "--expires", "1s"]);
        let service = create_token(
            &config,
            &["--user", "pithos", "--scopes", "astakos:service"],
        );
        // A token of a former service: revoked, so `gone` is no longer in the directory.
        let gone = create_token(&config, &["--user", "gone", "--scopes", "astakos:service"]);
        let out = cli(&config, &["token", "list", "--user", "gone"], None);
        let listed = String::from_utf8_lossy(&out.stdout).to_string();
        let gone_id = listed
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .find(|w| w.starts_with("tok_"))
            .unwrap_or_else(|| panic!("token list: {listed}"))
            .to_owned();
        assert!(
            cli(&config, &["token", "revoke", &gone_id], None)
                .status
                .success()
        );
        let authgate = Authgate::start(&config);
        let base = format!("http://{}", authgate.data);
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let what = |s: &str| format!("{section}: {s}");

        for auth_path in &auth_paths {
            let auth_url = format!("{base}{auth_path}");
            let client = AstakosClient::new(&alice, &auth_url);
            let access = client.authenticate().await.unwrap();
            assert_eq!(
                access["access"]["user"]["id"],
                "alice",
                "{}",
                what(auth_path)
            );
            // The default catalog leads the client to the account service.
            assert_eq!(client.account_prefix().await.unwrap(), account_path);

            // uuid -> name and name -> uuid; unknown entries are absent.
            assert_eq!(
                client
                    .get_usernames(&["alice", "bob", "ghost", "gone"])
                    .await
                    .unwrap(),
                json!({"alice": "alice", "bob": "bob"}),
                "{}",
                what(auth_path)
            );
            assert_eq!(
                client
                    .get_uuids(&["bob", "pithos", "nobody"])
                    .await
                    .unwrap(),
                json!({"bob": "bob", "pithos": "pithos"})
            );
            assert_eq!(client.get_usernames(&[]).await.unwrap(), json!({}));
            // The service path with a service token.
            let pithos = AstakosClient::new(&service, &auth_url);
            assert_eq!(
                pithos
                    .service_get_usernames(&["alice", "ghost"])
                    .await
                    .unwrap(),
                json!({"alice": "alice"})
            );
            assert_eq!(
                pithos.service_get_uuids(&["bob", "pithos"]).await.unwrap(),
                json!({"bob": "bob", "pithos": "pithos"})
            );

            // Wrong and expired tokens: 401; a user's token on the service path: 403; a
            // service token is no user token.
            let (status, body) = fault_of(
                AstakosClient::new("agt_wrong", &auth_url)
                    .get_usernames(&["alice"])
                    .await,
            );
            assert_eq!((status, body), (401, unauthorized("Invalid X-Auth-Token")));
            let (status, body) = fault_of(
                AstakosClient::new(&alice_soon_expired, &auth_url)
                    .get_usernames(&["alice"])
                    .await,
            );
            assert_eq!(
                (status, body),
                (401, unauthorized("Authentication expired"))
            );
            let (status, body) = fault_of(
                AstakosClient::new(&gone, &auth_url)
                    .service_get_usernames(&["alice"])
                    .await,
            );
            assert_eq!((status, body), (401, unauthorized("Invalid X-Auth-Token")));
            let (status, body) = fault_of(client.service_get_usernames(&["alice"]).await);
            assert_eq!(
                (status, body),
                (
                    403,
                    json!({"forbidden": {"code": 403, "message": "Not a service token", "details": ""}})
                )
            );
            let (status, body) = fault_of(pithos.get_usernames(&["alice"]).await);
            assert_eq!((status, body), (401, unauthorized("Invalid X-Auth-Token")));
        }

        // Raw calls: `null` on the service path is the whole directory, on the user path
        // nothing; bad JSON 400; other methods 405; the 0.13 paths under the same prefix.
        let prefix = account_path.trim_end_matches("/account/v1.0");
        let pithos = AstakosClient::new(&service, &format!("{base}{}", auth_paths[0]));
        let post = reqwest::Method::POST;
        let all = pithos
            .call(
                post.clone(),
                &format!("{account_path}/service/user_catalogs"),
                Some(&json!({"uuids": null, "displaynames": ["bob"]})),
            )
            .await
            .unwrap();
        assert_eq!(
            all,
            json!({"uuid_catalog": {"alice": "alice", "bob": "bob", "pithos": "pithos"},
                   "displayname_catalog": {"bob": "bob"}})
        );
        let alice_client = AstakosClient::new(&alice, &format!("{base}{}", auth_paths[0]));
        let none = alice_client
            .call(
                post.clone(),
                &format!("{account_path}/user_catalogs"),
                Some(&json!({"uuids": null})),
            )
            .await
            .unwrap();
        assert_eq!(none, json!({"uuid_catalog": {}, "displayname_catalog": {}}));
        let legacy = alice_client
            .call(
                post.clone(),
                &format!("{prefix}/user_catalogs"),
                Some(&json!({"uuids": ["alice"]})),
            )
            .await
            .unwrap();
        assert_eq!(legacy["uuid_catalog"], json!({"alice": "alice"}));
        let legacy = pithos
            .call(
                post.clone(),
                &format!("{prefix}/service/api/user_catalogs"),
                Some(&json!({"displaynames": ["alice"]})),
            )
            .await
            .unwrap();
        assert_eq!(legacy["displayname_catalog"], json!({"alice": "alice"}));
        let (status, body) = fault_of(
            alice_client
                .call(
                    post.clone(),
                    &format!("{account_path}/user_catalogs"),
                    Some(&json!("[")),
                )
                .await,
        );
        assert_eq!(status, 400);
        assert_eq!(
            body["badRequest"]["message"],
            "Request body should be json formatted."
        );
        let (status, _) = fault_of(
            alice_client
                .call(
                    reqwest::Method::GET,
                    &format!("{account_path}/user_catalogs"),
                    None,
                )
                .await,
        );
        assert_eq!(status, 405);
        let (status, body) = fault_of(
            alice_client
                .call(post.clone(), &format!("{account_path}/quotas"), None)
                .await,
        );
        assert_eq!(status, 400);
        assert_eq!(body["badRequest"]["message"], "API endpoint not found");
        // 0.13's /im/authenticate under the prefix.
        let resp = reqwest::Client::new()
            .get(format!("{base}{prefix}/im/authenticate"))
            .header("X-Auth-Token", &alice)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.json::<Value>().await.unwrap()["uuid"], "alice");
        // Paths outside the configured prefixes are not Astakos's.
        let resp = reqwest::Client::new()
            .post(format!("{base}{unserved}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{}", what(unserved));
    }
}

/// With the default catalog (no `public_url`) a client finds no account endpoint, and
/// `check-config` says so; with `public_url` it is quiet.
#[test]
fn check_config_warns_without_astakos_account() {
    for (section, warns) in [
        ("astakos_api: { enabled: true }", true),
        (
            "astakos_api: { enabled: true, public_url: \"https://cloud.example.org/astakos\" }",
            false,
        ),
        (
            "astakos_api: { enabled: true, service_catalog: [ { name: astakos_account, type: account } ] }",
            false,
        ),
        ("astakos_api: { enabled: false }", false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), section);
        let out = cli(&config, &["check-config"], None);
        assert!(out.status.success(), "{section}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.contains("warning: astakos_api: the service catalog has no `astakos_account`"),
            warns,
            "{section}: {stderr}"
        );
    }
}

/// A second authgate's `astakos` provider validates against the first through its prefix
/// (`ASTAKOS_AUTH_URL=http://host/astakos/identity/v2.0`).
#[tokio::test(flavor = "multi_thread")]
async fn astakos_provider_round_trip_through_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "astakos_api: { enabled: true, prefix: /astakos, public_url: \"https://cloud.example.org/astakos\" }\n\
         policy: { default: allow_authenticated }\n",
    );
    add_user(
        &config,
        &["alice", "--roles", "default,academic"],
        "alice-password",
    );
    let token = create_token(&config, &["--user", "alice"]);
    let first = Authgate::start(&config);
    for url in [
        format!("http://{}/astakos/identity/v2.0", first.data),
        format!("http://{}/astakos", first.data),
    ] {
        let dir2 = tempfile::tempdir().unwrap();
        let config2 = write_config(
            dir2.path(),
            &format!(
                "providers: [ {{ type: astakos, url: \"{url}\" }} ]\npolicy: {{ default: allow_authenticated }}\n"
            ),
        );
        let edge = Authgate::start(&config2);
        let http = reqwest::Client::new();
        let resp = http
            .get(edge.url("/auth/x"))
            .header("X-Auth-Token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        let claims = verify_jwt(&edge, &bearer_jwt(&resp), "api").await;
        assert_eq!(
            claims["sub"],
            format!(
                "astakos:http%3A//{}/astakos:alice",
                first.data.to_string().replace(':', "%3A")
            )
        );
        assert_eq!(claims["roles"], json!(["academic", "default"]));
        let resp = http
            .get(edge.url("/auth/x"))
            .header("X-Auth-Token", "agt_nope")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{url}");
    }
}
