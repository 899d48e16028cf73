//! The token portal and `/api/tokens` against the real binary: every status of the API,
//! the limits of `portal:`, admins, CSRF refusals (nothing changed), escaping, the
//! security headers of the pages, and a token that works on `/auth` at once and stops at
//! once when revoked. `portal_in_a_real_browser` drives Debian's chromium through the
//! pages (tests/peers/browser/portal.mjs).

mod common;

use std::time::Duration;

use common::*;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// authgate with the portal on; users alice and bob (staff), root (admin), carol (no
/// staff: the policy keeps her off /portal). /api/tokens is open to every authenticated
/// caller, so that the portal's own check of tokens:manage is what refuses a token.
fn start() -> (tempfile::TempDir, Authgate) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        r#"
policy:
  rules:
    - { name: token-portal, path: /portal, require: { roles: [staff] } }
    - { name: token-api, path: /api/tokens }
    - { name: data, path: /data, require: { scopes: ["read:data"] } }
portal:
  enabled: true
  grantable_scopes: ["read:data", "write:data", "tokens:manage"]
  max_lifetime: 30d
  max_tokens_per_user: 3
  admin_role: admin
"#,
    );
    for (user, roles) in [
        ("alice", "staff"),
        ("bob", "staff"),
        ("root", "staff,admin"),
        ("carol", "guest"),
    ] {
        add_user(&config, &[user, "--roles", roles], PASSWORD);
    }
    let authgate = Authgate::start(&config);
    (dir, authgate)
}

/// Who calls: a local user with Basic, or a Bearer token.
#[derive(Clone, Copy)]
enum As<'a> {
    User(&'a str),
    Token(&'a str),
    Nobody,
}

struct Api<'a> {
    authgate: &'a Authgate,
    client: Client,
}

impl<'a> Api<'a> {
    fn new(authgate: &'a Authgate) -> Self {
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self { authgate, client }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.authgate.data)
    }

    fn request(&self, method: Method, path: &str, who: As<'_>) -> reqwest::RequestBuilder {
        let r = self.client.request(method, self.authgate.url(path));
        match who {
            As::User(u) => r.basic_auth(u, Some(PASSWORD)),
            As::Token(t) => r.bearer_auth(t),
            As::Nobody => r,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn list(&self, who: As<'_>, query: &str) -> (StatusCode, Value) {
        self.send(self.request(Method::GET, &format!("/api/tokens{query}"), who))
            .await
    }

    /// POST /api/tokens from the portal's own origin.
    async fn create(&self, who: As<'_>, body: Value) -> (StatusCode, Value) {
        self.send(
            self.request(Method::POST, "/api/tokens", who)
                .header("Origin", self.origin())
                .json(&body),
        )
        .await
    }

    async fn revoke(&self, who: As<'_>, id: &str) -> (StatusCode, Value) {
        self.send(
            self.request(Method::DELETE, &format!("/api/tokens/{id}"), who)
                .header("Origin", self.origin()),
        )
        .await
    }

    /// The decision of `/auth` for GET /data with `token`.
    async fn auth(&self, token: &str) -> StatusCode {
        self.client
            .get(self.authgate.url("/auth"))
            .header("X-Original-URI", "/data")
            .header("X-Original-Method", "GET")
            .header("Host", "api.example.org")
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }
}

fn reason(body: &Value) -> &str {
    body["reason"].as_str().unwrap_or("")
}

#[tokio::test]
async fn api_statuses_limits_and_admins() {
    let (_dir, authgate) = start();
    let api = Api::new(&authgate);
    let alice = As::User("alice");

    // No credential: 401 with the challenges; the policy's 403 for a user without the role.
    let resp = api
        .request(Method::GET, "/api/tokens", As::Nobody)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // One field per scheme: a browser finds Basic among them.
    let challenges: Vec<&str> = resp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        challenges,
        [
            "Bearer realm=\"authgate\"",
            "Basic realm=\"authgate\", charset=\"UTF-8\""
        ]
    );
    let (status, body) = api
        .send(api.request(Method::GET, "/portal", As::User("carol")))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["rule"], "token-portal");
    let (status, _) = api
        .send(
            api.request(Method::GET, "/api/tokens", As::User("alice"))
                .basic_auth("alice", Some("wrong")),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // An empty list; the headers a reverse proxy (Caddy, Traefik) adds do not matter.
    let (status, body) = api.list(alice, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"owner": "alice", "tokens": []}));
    let (status, body) = api
        .send(
            api.request(Method::GET, "/api/tokens", alice)
                .header("X-Forwarded-Host", "elsewhere.example")
                .header("X-Forwarded-Proto", "http")
                .header("X-Original-URI", "/data"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Created: the secret once, never a hash; it works on /auth at once.
    let (status, ci) = api
        .create(
            alice,
            json!({"name": "ci", "scopes": ["read:data", "tokens:manage"], "expires_in": "1d"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ci}");
    let ci_secret = ci["secret"].as_str().unwrap().to_owned();
    let ci_id = ci["id"].as_str().unwrap().to_owned();
    assert!(ci_secret.starts_with("agt_") && ci_secret.len() == 47);
    assert_eq!(ci["owner"], "alice");
    assert_eq!(ci["scopes"], json!(["read:data", "tokens:manage"]));
    assert_eq!(ci["status"], "active");
    assert_eq!(
        ci["expires_at"].as_i64().unwrap() - ci["created_at"].as_i64().unwrap(),
        86_400
    );
    assert!(ci.get("hash").is_none());
    assert_eq!(api.auth(&ci_secret).await, StatusCode::OK);
    assert_eq!(api.auth(&ci_secret).await, StatusCode::OK); // cached now

    // The list shows it without the secret; a token with tokens:manage may list too.
    let ci_token = As::Token(&ci_secret);
    let (status, listed) = api.list(ci_token, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["tokens"][0]["id"], ci_id.as_str());
    assert!(!listed.to_string().contains(&ci_secret));

    // A token with tokens:manage creates without Origin (a Bearer token is not ambient),
    // but never more than it holds.
    let (status, ro) = api
        .send(
            api.request(Method::POST, "/api/tokens", ci_token)
                .json(&json!({"name": "read-only", "scopes": ["read:data"], "expires_in": 3600})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ro}");
    let ro_secret = ro["secret"].as_str().unwrap().to_owned();
    let (status, body) = api
        .create(
            ci_token,
            json!({"name": "w", "scopes": ["write:data"], "expires_in": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reason(&body).contains("does not hold the scope 'write:data'"),
        "{body}"
    );
    let (status, body) = api
        .create(
            ci_token,
            json!({"name": "long", "scopes": ["read:data"], "expires_in": "2d"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reason(&body).contains("outlive the API token"), "{body}");

    // A token without tokens:manage: 403 from the portal itself.
    let (status, body) = api.list(As::Token(&ro_secret), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(reason(&body).contains("tokens:manage"), "{body}");

    // Limits name themselves: 422.
    let cases = [
        (
            json!({"name": "x", "scopes": ["admin:all"]}),
            "portal.grantable_scopes",
        ),
        (
            json!({"name": "x", "scopes": ["read:data"], "expires_in": "31d"}),
            "portal.max_lifetime",
        ),
        (json!({"name": "x", "scopes": []}), "at least one scope"),
    ];
    for (body, limit) in cases {
        let (status, answer) = api.create(alice, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(reason(&answer).contains(limit), "{body}: {answer}");
    }
    // Bad input: 400; not JSON: 415; a live name taken: 409.
    for body in [
        json!({"name": "", "scopes": ["read:data"]}),
        json!({"name": "x", "scopes": ["read:data"], "owner": "bob"}),
        json!({"name": "x", "scopes": ["read:data"], "expires_in": "soon"}),
        json!({"name": "x", "scopes": ["read data"]}),
        json!(["x"]),
    ] {
        let (status, answer) = api.create(alice, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"], "bad_request");
    }
    let (status, _) = api
        .send(
            api.request(Method::POST, "/api/tokens", alice)
                .header("Origin", api.origin())
                .header("Content-Type", "text/plain")
                .body(r#"{"name": "x", "scopes": ["read:data"]}"#),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, body) = api
        .create(alice, json!({"name": "ci", "scopes": ["read:data"]}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(reason(&body).contains("'ci'"), "{body}");
    // The third live token is the last one allowed.
    let (status, _) = api
        .create(alice, json!({"name": "third", "scopes": ["read:data"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = api
        .create(alice, json!({"name": "fourth", "scopes": ["read:data"]}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reason(&body).contains("portal.max_tokens_per_user"),
        "{body}"
    );

    // A body larger than the portal reads: 413.
    let (status, _) = api
        .send(
            api.request(Method::POST, "/api/tokens", alice)
                .header("Origin", api.origin())
                .header("Content-Type", "application/json")
                .body(format!(r#"{{"name": "{}"}}"#, "n".repeat(20_000))),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // One token by id: the owner's, not another user's (404), any for an admin.
    let path = format!("/api/tokens/{ci_id}");
    let (status, one) = api.send(api.request(Method::GET, &path, alice)).await;
    assert_eq!((status, &one["name"]), (StatusCode::OK, &json!("ci")));
    assert!(!one.to_string().contains(&ci_secret));
    let (status, _) = api
        .send(api.request(Method::GET, &path, As::User("bob")))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .send(api.request(Method::GET, &path, As::User("root")))
        .await;
    assert_eq!(status, StatusCode::OK);

    // Owners: a user sees only their own; an admin anyone's.
    let (status, body) = api.list(As::User("bob"), "?owner=alice").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(reason(&body).contains("portal.admin_role"), "{body}");
    assert_eq!(api.list(alice, "?owner=alice").await.0, StatusCode::OK);
    let (status, body) = api.list(As::User("root"), "?owner=alice").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["owner"], "alice");
    assert_eq!(body["tokens"].as_array().unwrap().len(), 3);
    let (status, body) = api.list(As::User("root"), "?owner=*").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["tokens"].as_array().unwrap().len(), 3);
    let (status, body) = api.list(As::User("root"), "").await;
    assert_eq!(
        (status, body["tokens"].as_array().unwrap().len()),
        (StatusCode::OK, 0)
    );
    assert_eq!(
        api.list(As::User("root"), "?owner=a&owner=b").await.0,
        StatusCode::BAD_REQUEST
    );

    // Revoking: another user's token is not found; Basic needs the portal's origin.
    assert_eq!(
        api.revoke(As::User("bob"), &ci_id).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = api
        .send(api.request(Method::DELETE, &format!("/api/tokens/{ci_id}"), alice))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(reason(&body).contains("Origin"), "{body}");
    let (status, body) = api
        .send(
            api.request(Method::DELETE, &format!("/api/tokens/{ci_id}"), alice)
                .header("Origin", "http://evil.example"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(api.auth(&ci_secret).await, StatusCode::OK);
    let (status, body) = api.revoke(alice, &ci_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "revoked");
    // At once: the cached answer is gone (cache.max_ttl is 10 s).
    assert_eq!(api.auth(&ci_secret).await, StatusCode::UNAUTHORIZED);
    assert_eq!(api.revoke(alice, &ci_id).await.0, StatusCode::CONFLICT);
    assert_eq!(
        api.revoke(alice, "tok_ffffffffffffffff").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(api.revoke(alice, "nonsense").await.0, StatusCode::NOT_FOUND);
    let (status, _) = api
        .send(
            api.request(Method::PUT, "/api/tokens", alice)
                .header("Origin", api.origin()),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // An admin revokes someone else's token.
    let third = api.list(alice, "").await.1["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "third")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(api.revoke(As::User("root"), &third).await.0, StatusCode::OK);

    // Audit lines: who, which token, never the secret.
    let audited = |action: &'static str, id: String, actor: &'static str| {
        let authgate = &authgate;
        async move {
            eventually(Duration::from_secs(5), async || {
                authgate.log_text().lines().any(|l| {
                    serde_json::from_str::<Value>(l).is_ok_and(|v| {
                        v["target"] == "authgate::audit"
                            && v["action"] == action
                            && v["token_id"] == id.as_str()
                            && v["actor"] == actor
                    })
                })
            })
            .await
        }
    };
    assert!(audited("token.create", ci_id.clone(), "alice").await);
    assert!(audited("token.revoke", ci_id.clone(), "alice").await);
    assert!(audited("token.revoke", third.clone(), "root").await);
    let logs = authgate.stop_and_log_text().await;
    for secret in [&ci_secret, &ro_secret] {
        assert!(!logs.contains(secret.as_str()), "a secret reached the log");
    }
}

/// The page's CSRF token (`name="csrf" value="..."`).
fn form_token(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn pages_refuse_forged_posts_and_escape_names() {
    let (_dir, authgate) = start();
    let api = Api::new(&authgate);
    let alice = As::User("alice");
    let resp = api
        .request(Method::GET, "/portal", alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    let html = resp.text().await.unwrap();
    let csrf = form_token(&html);
    let evil = "<script>alert(1)</script>";
    let form = |token: Option<&str>| {
        let mut f = vec![
            ("name", evil.to_owned()),
            ("scope", "read:data".to_owned()),
            ("expires", "86400".to_owned()),
        ];
        if let Some(t) = token {
            f.push(("csrf", t.to_owned()));
        }
        f
    };
    let post = |token: Option<&str>, origin: Option<&str>, site: Option<&str>| {
        let mut r = api
            .request(Method::POST, "/portal/tokens", alice)
            .form(&form(token));
        if let Some(o) = origin {
            r = r.header("Origin", o);
        }
        if let Some(s) = site {
            r = r.header("Sec-Fetch-Site", s);
        }
        r
    };
    let own = api.origin();
    // A bob's form token is not alice's.
    let bob_html = api
        .request(Method::GET, "/portal", As::User("bob"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let bob_csrf = form_token(&bob_html);
    assert_ne!(bob_csrf, csrf);
    let forged = [
        (
            post(Some(&csrf), Some("http://evil.example"), None),
            "cross-origin",
        ),
        (
            post(Some(&csrf), Some(&own), Some("cross-site")),
            "cross-site",
        ),
        (post(Some(&csrf), Some("null"), None), "cross-origin"),
        (post(Some(&csrf), None, None), "must send Origin"),
        (post(None, Some(&own), Some("same-origin")), "form token"),
        (post(Some("forged"), Some(&own), None), "form token"),
        (post(Some(&bob_csrf), Some(&own), None), "form token"),
    ];
    for (request, why) in forged {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{why}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(why), "{why}: {text}");
        assert!(text.contains("Nothing was changed"), "{text}");
    }
    assert_eq!(api.list(alice, "").await.1["tokens"], json!([]));

    // The real form post: the new token's page, with the secret and the curl line.
    let resp = post(Some(&csrf), Some(&own), Some("same-origin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let page = resp.text().await.unwrap();
    let secret_at = page.find("agt_").expect("the secret on the page");
    let secret = &page[secret_at..secret_at + 47];
    assert!(
        page.contains(&format!(
            "curl -H &#34;Authorization: Bearer {secret}&#34; {own}/"
        )),
        "{page}"
    );
    assert!(!page.contains(evil), "{page}");
    assert!(
        page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{page}"
    );
    assert_eq!(api.auth(secret).await, StatusCode::OK);
    let list = api
        .request(Method::GET, "/portal", alice)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !list.contains(evil) && list.contains("&#60;script&#62;"),
        "{list}"
    );
    assert!(!list.contains(secret), "the list shows no secret");

    // Revoking through the confirmation page's form: 303 back to the list, then 401.
    let id = api.list(alice, "").await.1["tokens"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let confirm = api
        .request(Method::GET, &format!("/portal/revoke?id={id}"), alice)
        .send()
        .await
        .unwrap();
    assert_eq!(confirm.status(), StatusCode::OK);
    let confirm = confirm.text().await.unwrap();
    assert!(confirm.contains("stops working at once"), "{confirm}");
    let resp = api
        .request(Method::POST, "/portal/revoke", alice)
        .header("Origin", &own)
        .form(&[("id", id.as_str()), ("csrf", &form_token(&confirm))])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        resp.headers()["location"],
        format!("/portal?revoked={id}").as_str()
    );
    assert_eq!(api.auth(secret).await, StatusCode::UNAUTHORIZED);

    // The static assets need no credential; the rest of /portal does.
    let css = api
        .request(Method::GET, "/portal/static/portal.css", As::Nobody)
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    let page = api
        .request(Method::GET, "/portal", As::Nobody)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
    let resp = api
        .request(Method::DELETE, "/portal", alice)
        .header("Origin", &own)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    assert_eq!(
        api.request(Method::GET, "/portal/nothing", alice)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}

/// Headless chromium signs in with Basic, creates a token through the form, reads the
/// secret off the page, uses it on /auth (200), revokes it through the page (401), and
/// cannot be made to post the form from another site.
#[tokio::test]
async fn portal_in_a_real_browser() {
    let (_dir, authgate) = start();
    let artifacts = browser::artifacts("portal_in_a_real_browser");
    let result = browser::run(
        "portal.mjs",
        &json!({
            "portal": authgate.url("/portal"),
            "auth": authgate.url("/auth"),
            "user": "alice",
            "password": PASSWORD,
            "artifacts": artifacts,
        }),
    )
    .await;
    let secret = result["secret"].as_str().unwrap();
    assert!(secret.starts_with("agt_") && secret.len() == 47, "{result}");
    assert_eq!(result["auth_before"], 200, "{result}");
    assert_eq!(result["auth_after"], 401, "{result}");
    assert_eq!(result["forged_status"], 403, "{result}");
    assert_eq!(result["dialogs"], 0, "{result}");
    let api = Api::new(&authgate);
    assert_eq!(api.auth(secret).await, StatusCode::UNAUTHORIZED);
    let (_, listed) = api.list(As::User("alice"), "").await;
    let names: Vec<&str> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    // The forged post created nothing; the escaped one was created by the real form.
    assert!(!names.contains(&"forged"), "{names:?}");
    assert!(names.contains(&"<script>alert(1)</script>"), "{names:?}");
    for shot in ["list.png", "new-token.png"] {
        let meta = std::fs::metadata(artifacts.join(shot)).unwrap();
        assert!(meta.len() > 1000, "{shot} is empty");
    }
    // Revocation through the page was logged as such.
    assert!(
        eventually(Duration::from_secs(5), async || authgate
            .log_text()
            .lines()
            .any(
                |l| l.contains("token.revoke") && l.contains("\"via\":\"portal\"")
            ))
        .await
    );
}

/// With the Redis store, a token revoked through one replica's API stops working on the
/// other replica as soon as it hears the revocation, far within its cache.max_ttl (60 s).
#[tokio::test]
async fn revocation_reaches_every_replica() {
    let redis = redis::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("authgate.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
store: {{ type: redis, url: "{}", prefix: "portal:", timeout: 1s }}
server: {{ listen: "127.0.0.1:0", trusted_proxies: ["127.0.0.1/32"] }}
admin: {{ listen: "127.0.0.1:0" }}
mint: {{ issuer: "https://authgate.test", audience: api }}
cache: {{ max_ttl: 60s }}
policy:
  rules:
    - {{ name: token-api, path: /api/tokens }}
    - {{ name: data, path: /data, require: {{ scopes: ["read:data"] }} }}
portal: {{ enabled: true, grantable_scopes: ["read:data"] }}
"#,
            redis.url(2)
        ),
    )
    .unwrap();
    add_user(&config, &["alice"], PASSWORD);
    let a = Authgate::start(&config);
    let b = Authgate::start(&config);
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    let (status, created) = api_a
        .create(
            As::User("alice"),
            json!({"name": "ci", "scopes": ["read:data"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().unwrap();
    // B has it cached (a second answer within max_ttl comes from the cache).
    assert_eq!(api_b.auth(secret).await, StatusCode::OK);
    assert_eq!(api_b.auth(secret).await, StatusCode::OK);
    let (status, _) = api_a
        .revoke(As::User("alice"), created["id"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api_a.auth(secret).await, StatusCode::UNAUTHORIZED);
    let started = std::time::Instant::now();
    assert!(
        eventually_every(
            Duration::from_millis(20),
            Duration::from_secs(5),
            async || { api_b.auth(secret).await == StatusCode::UNAUTHORIZED }
        )
        .await,
        "replica B still accepts the revoked token"
    );
    eprintln!(
        "replica B refused the revoked token after {:?}",
        started.elapsed()
    );
}

/// A rule that lets anyone through gives the portal nobody to act for: 401, not a page.
#[tokio::test]
async fn an_anonymous_rule_gives_the_portal_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        r#"
policy:
  rules:
    - { name: open, path: /portal, allow: anonymous }
portal: { enabled: true, grantable_scopes: ["read:data"] }
"#,
    );
    let authgate = Authgate::start(&config);
    let api = Api::new(&authgate);
    let (status, body) = api
        .send(api.request(Method::GET, "/portal", As::Nobody))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(reason(&body).contains("must not be anonymous"), "{body}");
    // No rule for the API: the default (deny) wants a credential first.
    let (status, body) = api
        .send(api.request(Method::GET, "/api/tokens", As::Nobody))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Off (the default): neither path exists.
    let off = tempfile::tempdir().unwrap();
    let authgate = Authgate::start(&write_config(off.path(), ""));
    let api = Api::new(&authgate);
    for path in ["/portal", "/api/tokens", "/portal/static/portal.js"] {
        let (status, body) = api.send(api.request(Method::GET, path, As::Nobody)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
}

/// Behind a real nginx (deploy/nginx/portal.conf): the policy's host rules and the CSRF
/// origin check read the Host nginx passes on (the client's, with its port).
#[tokio::test]
async fn behind_nginx() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        r#"
policy:
  rules:
    - { name: token-portal, host: auth.example.org, path: /portal }
    - { name: token-api, host: auth.example.org, path: /api/tokens }
portal: { enabled: true, grantable_scopes: ["read:data"] }
"#,
    );
    add_user(&config, &["alice"], PASSWORD);
    let authgate = Authgate::start(&config);
    let nginx = Nginx::start(
        dir.path(),
        "deploy/nginx/portal.conf",
        authgate.data,
        authgate.data,
    );
    let client = Client::builder()
        .resolve("auth.example.org", nginx.addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let origin = format!("http://auth.example.org:{}", nginx.addr.port());
    let at = |path: &str| format!("{origin}{path}");
    let resp = client
        .get(at("/api/tokens"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let create = |from: &str| {
        client
            .post(at("/api/tokens"))
            .basic_auth("alice", Some(PASSWORD))
            .header("Origin", from)
            .json(&json!({"name": from, "scopes": ["read:data"]}))
            .send()
    };
    assert_eq!(create(&origin).await.unwrap().status(), StatusCode::CREATED);
    for other in [
        "http://auth.example.org",
        "https://auth.example.org",
        "http://evil.example",
    ] {
        let other = other.to_owned();
        assert_eq!(
            create(&other).await.unwrap().status(),
            StatusCode::FORBIDDEN,
            "{other}"
        );
    }
    // The page's form, posted as a browser posts it; the curl line names this origin.
    let page = client
        .get(at("/portal"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csrf = form_token(&page.text().await.unwrap());
    let created = client
        .post(at("/portal/tokens"))
        .basic_auth("alice", Some(PASSWORD))
        .header("Origin", &origin)
        .form(&[("name", "web"), ("scope", "read:data"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::OK);
    let html = created.text().await.unwrap();
    assert!(html.contains(&format!("&#34; {origin}/</code>")), "{html}");
    // Another host name is not the portal's: the policy's default denies it.
    let resp = Client::builder()
        .resolve("other.example.org", nginx.addr)
        .build()
        .unwrap()
        .get(format!(
            "http://other.example.org:{}/api/tokens",
            nginx.addr.port()
        ))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}
