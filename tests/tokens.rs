//! API tokens end to end: least-privilege roles of scoped tokens, the `token_id` claim of
//! minted JWTs, foreign JWTs past their own expiry but within the clock-skew leeway, and
//! the user names the CLI stores (NFKC, restricted), and one authgate's JWTs read by
//! another's `jwt` provider (scopes, "all scopes").

mod common;

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use serde_json::{Value, json};

const POLICY: &str = r#"
providers:
  - { type: api_token }
  - { type: basic }
policy:
  default: deny
  rules:
    - { name: admin, path: /admin, require: { roles: [admin] } }
    - { name: data-read, path: /data, methods: [GET], require: { scopes: ["read:data"] } }
"#;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `GET <uri>` asked at the nginx decision endpoint with `token`.
async fn decide(authgate: &Authgate, uri: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(authgate.url("/auth"))
        .header("X-Original-URI", uri)
        .header("X-Original-Method", "GET")
        .header("Host", "api.example.org")
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// The `roles` claim of the JWT minted for a 200.
async fn minted_roles(authgate: &Authgate, resp: &reqwest::Response) -> Value {
    verify_jwt(authgate, &bearer_jwt(resp), "api").await["roles"].clone()
}

/// Asserts a 403 from the rule `admin` for want of the role `admin`.
async fn assert_forbidden_admin(resp: reqwest::Response, what: &str) {
    assert_eq!(resp.status(), 403, "{what}");
    assert!(
        resp.headers().get("authorization").is_none(),
        "{what}: a 403 carries no JWT"
    );
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "forbidden", "rule": "admin", "reason": "missing role admin"}),
        "{what}"
    );
}

/// `authgate token list --json` (all owners).
fn token_list(config: &Path) -> Vec<Value> {
    let out = cli(config, &["token", "list", "--json"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    listed.as_array().unwrap().clone()
}

/// `user add` and `token create --user` store a name in its NFKC form (`ｒｏｏｔ` is `root`,
/// which then exists) and refuse, with exit 65 naming the problem, a name that could pass
/// for a provider-qualified subject (`:`), split into two list items (`,`), or look like
/// another (control or invisible characters, whitespace at the ends).
#[test]
fn user_names_are_nfkc_and_restricted() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POLICY);
    let out = cli(
        &config,
        &["user", "add", "ｒｏｏｔ"],
        Some("root-password\n"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("NFKC form 'root'"), "{stderr}");
    let out = cli(&config, &["user", "list"], None);
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(listed.lines().any(|l| l.starts_with("root ")), "{listed}");
    assert!(!listed.contains('ｒ'), "{listed}");
    // `root` is taken now, under either spelling.
    let out = cli(&config, &["user", "add", "root"], Some("root-password\n"));
    assert_eq!(out.status.code(), Some(65));

    // (name, what the refusal says)
    let refused = [
        ("oidc:https://idp.example.org:root", "must not contain ':'"),
        ("a\u{FF1A}b", "must not contain ':'"),
        ("viewer,admin", "must not contain ','"),
        ("ro\u{200B}ot", "control or invisible characters (U+200B)"),
        ("root\u{202E}", "control or invisible characters (U+202E)"),
        (" root", "must not begin or end with whitespace"),
        ("", "must not be empty"),
    ];
    for (name, says) in refused {
        let out = cli(&config, &["user", "add", name], Some("root-password\n"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{name:?}: {stderr}");
        assert!(stderr.contains(says), "{name:?}: {stderr}");
        let out = cli(&config, &["token", "create", "--user", name], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{name:?}: {stderr}");
        assert!(stderr.contains(says), "{name:?}: {stderr}");
        assert!(out.stdout.is_empty(), "no secret printed");
    }
    assert!(token_list(&config).is_empty(), "no token created");
    let out = cli(&config, &["user", "list"], None);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 2);

    // A service subject is normalised the same way.
    create_token(&config, &["--user", "ｓｖｃ"]);
    let owners: Vec<Value> = token_list(&config)
        .iter()
        .map(|t| t["owner"].clone())
        .collect();
    assert_eq!(owners, [json!("svc")]);
}

/// The id (`tok_...`) of the token named `name`.
fn token_id(config: &Path, name: &str) -> String {
    let rows: Vec<Value> = token_list(config)
        .into_iter()
        .filter(|t| t["name"] == name)
        .collect();
    assert_eq!(rows.len(), 1, "tokens named {name}: {rows:?}");
    let id = rows[0]["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("tok_"), "{id}");
    id
}

/// An unscoped token acts for its owner in full; a scoped one holds only the roles named at
/// its creation, and only those its owner holds; creating a token with a role the owner
/// lacks is refused.
#[tokio::test(flavor = "multi_thread")]
async fn scoped_tokens_hold_only_their_named_roles() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POLICY);
    add_user(
        &config,
        &["alice", "--roles", "admin,staff"],
        "alice-password",
    );
    let read_only = create_token(&config, &["--user", "alice", "--scopes", "read:data"]);
    let unscoped = create_token(&config, &["--user", "alice"]);
    let scoped_admin = create_token(
        &config,
        &[
            "--user",
            "alice",
            "--scopes",
            "read:data",
            "--roles",
            "admin",
        ],
    );
    // `user remove` revokes the user's tokens and there is no command that changes a
    // user's roles, so "the owner no longer holds the role" is reached the other way round:
    // a token granted `admin` while `bob` was not a local user (a service subject holds
    // what it is granted), then `bob` becomes a local user without `admin`.
    let bob_admin = create_token(
        &config,
        &["--user", "bob", "--scopes", "read:data", "--roles", "admin"],
    );
    add_user(&config, &["bob", "--roles", "staff"], "bob-password");
    // A service subject keeps exactly its grant.
    let service_admin = create_token(
        &config,
        &["--user", "svc", "--scopes", "read:data", "--roles", "admin"],
    );

    // A role the local user lacks: exit 65, the message names the role, nothing created.
    let before = token_list(&config).len();
    let out = cli(
        &config,
        &["token", "create", "--user", "alice", "--roles", "root"],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(out.stdout.is_empty(), "no secret printed");
    assert!(stderr.contains("root"), "{stderr}");
    assert_eq!(token_list(&config).len(), before);

    let authgate = Authgate::start(&config);

    // read:data only: the data route, not the admin route, and no role in the JWT.
    let resp = decide(&authgate, "/data", &read_only).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(minted_roles(&authgate, &resp).await, json!([]));
    assert_forbidden_admin(decide(&authgate, "/admin", &read_only).await, "read:data").await;

    // Unscoped: all of alice's roles.
    let resp = decide(&authgate, "/admin", &unscoped).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        minted_roles(&authgate, &resp).await,
        json!(["admin", "staff"])
    );

    // Scoped with --roles admin: admin, and not staff.
    let resp = decide(&authgate, "/admin", &scoped_admin).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(minted_roles(&authgate, &resp).await, json!(["admin"]));

    // Granted admin, but its owner does not hold admin.
    assert_forbidden_admin(
        decide(&authgate, "/admin", &bob_admin).await,
        "owner without admin",
    )
    .await;
    let resp = decide(&authgate, "/data", &bob_admin).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(minted_roles(&authgate, &resp).await, json!([]));

    let resp = decide(&authgate, "/admin", &service_admin).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(minted_roles(&authgate, &resp).await, json!(["admin"]));
}

/// Every JWT minted for an API token names it in `token_id`; two tokens of one owner get
/// different JWTs (`token_id`, `jti`) for the same `sub`; Basic auth has no `token_id`.
#[tokio::test(flavor = "multi_thread")]
async fn minted_jwts_name_their_api_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "providers: [ { type: api_token }, { type: basic } ]\npolicy: { default: allow_authenticated }\n",
    );
    add_user(&config, &["alice", "--roles", "staff"], "alice-password");
    let first = create_token(&config, &["--user", "alice", "--name", "first"]);
    let second = create_token(&config, &["--user", "alice", "--name", "second"]);
    let first_id = token_id(&config, "first");
    let second_id = token_id(&config, "second");
    assert_ne!(first_id, second_id);
    let authgate = Authgate::start(&config);

    let mut claims = Vec::new();
    // Each token twice: the second answer may come from the cache and its kept JWT.
    for token in [&first, &second, &first, &second] {
        let resp = decide(&authgate, "/x", token).await;
        assert_eq!(resp.status(), 200);
        claims.push(verify_jwt(&authgate, &bearer_jwt(&resp), "api").await);
    }
    for (c, id) in claims
        .iter()
        .zip([&first_id, &second_id, &first_id, &second_id])
    {
        assert_eq!(c["token_id"], id.as_str(), "{c}");
        assert_eq!(c["sub"], "alice", "{c}");
        assert_eq!(c["provider"], "api_token", "{c}");
    }
    for (a, b) in [(0, 1), (2, 3), (0, 3), (2, 1)] {
        assert_ne!(
            claims[a]["jti"], claims[b]["jti"],
            "{} / {}",
            claims[a], claims[b]
        );
    }

    let resp = reqwest::Client::new()
        .get(authgate.url("/auth"))
        .header("X-Original-URI", "/x")
        .header("X-Original-Method", "GET")
        .header("Host", "api.example.org")
        .basic_auth("alice", Some("alice-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let basic = verify_jwt(&authgate, &bearer_jwt(&resp), "api").await;
    assert_eq!(basic["sub"], "alice");
    assert_eq!(basic["provider"], "basic");
    assert!(basic.get("token_id").is_none(), "{basic}");
    for c in &claims {
        assert_ne!(basic["jti"], c["jti"]);
    }
}

const JWK_KID: &str = "idp-test-es256";

/// The ES256 test key as a public JWK.
fn test_jwk(pem_text: &[u8]) -> Value {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let der = pem::parse(pem_text).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        der.contents(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    // Uncompressed point: 0x04 || x || y.
    let point = pair.public_key().as_ref();
    json!({"kty": "EC", "crv": "P-256", "kid": JWK_KID, "use": "sig", "alg": "ES256",
           "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])})
}

/// A JWKS server on a free loopback port answering every request with `{"keys": [jwk]}`.
struct JwksServer {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(jwk: Value) -> Self {
        use http_body_util::Full;
        use hyper::server::conn::http1;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = bytes::Bytes::from(json!({"keys": [jwk]}).to_string());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                        let mut resp = hyper::Response::new(Full::new(body.clone()));
                        resp.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        async move { Ok::<_, std::convert::Infallible>(resp) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A foreign JWT still inside the leeway but past its own `exp` gets a 401 (nothing may be
/// minted that outlives it); a live one gets a JWT whose `exp` follows its `iat` and does
/// not pass the foreign token's own.
#[tokio::test(flavor = "multi_thread")]
async fn foreign_jwt_past_its_exp_within_leeway_is_refused() {
    let pem_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/es256-test-only.pem");
    let pem_text = std::fs::read(&pem_path).unwrap();
    let jwks = JwksServer::start(test_jwk(&pem_text)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
providers:
  - type: jwt
    issuer: "https://idp.test"
    jwks_uri: "http://{}/jwks"
    audiences: [api]
    leeway: 60s
policy: {{ default: allow_authenticated }}
"#,
            jwks.addr
        ),
    );
    let authgate = Authgate::start(&config);
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem_text).unwrap();
    let sign_dates = |iat: Value, exp: Value| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(JWK_KID.to_owned());
        let claims = json!({"iss": "https://idp.test", "aud": "api", "sub": "carol",
                            "iat": iat, "exp": exp});
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let sign = |exp: i64| sign_dates(json!(now() - 600), json!(exp));

    // 30 s past exp, well inside the 60 s leeway.
    let resp = decide(&authgate, "/x", &sign(now() - 30)).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("authorization").is_none());
    assert!(resp.headers().contains_key("www-authenticate"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized", "{body}");
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("expired"), "{body}");

    // The same as a fractional NumericDate (RFC 7519 section 2): `exp` is read as a number.
    let resp = decide(
        &authgate,
        "/x",
        &sign_dates(json!(now() - 600), json!(now() as f64 - 30.0)),
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("authorization").is_none());
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["reason"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // ... and so is `iat`: an hour in the future, beyond any leeway.
    let resp = decide(
        &authgate,
        "/x",
        &sign_dates(json!(now() as f64 + 3600.5), json!(now() + 300)),
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("authorization").is_none());
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("issued in the future"),
        "{body}"
    );

    // A live token with the same key: 200, and a well-formed minted JWT.
    let foreign_exp = now() + 300;
    let resp = decide(&authgate, "/x", &sign(foreign_exp)).await;
    assert_eq!(resp.status(), 200);
    let claims = verify_jwt(&authgate, &bearer_jwt(&resp), "api").await;
    // The IdP's `carol` is not the local user `carol`: her subject names the issuer.
    assert_eq!(claims["sub"], "oidc:https%3A//idp.test:carol");
    assert_eq!(claims["provider"], "jwt");
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(exp > iat, "{claims}");
    assert!(exp <= foreign_exp, "{claims}");
}

/// Two chained authgates: B's `jwt` provider verifies A's JWTs. A user who signed in to A
/// directly (Basic) holds every scope on B too, because A says so with `scope_all` and B's
/// mapping reads it (`claims.scopes_all`); a scoped token keeps exactly its scopes on B.
/// Without that mapping option the same JWT holds no scopes (the test that it matters).
#[tokio::test(flavor = "multi_thread")]
async fn a_chained_authgate_reads_all_scopes() {
    let (dir_a, dir_b, dir_c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let config_a = write_config(
        dir_a.path(),
        "providers: [ { type: api_token }, { type: basic } ]\n\
         policy: { default: allow_authenticated }\n\
         mint: { issuer: \"https://authgate-a.test\", audience: api }\n",
    );
    add_user(
        &config_a,
        &["alice", "--email", "alice@example.org"],
        "alice-password",
    );
    // One scope that would read as two in the space-separated `scope` claim is refused.
    let out = cli(
        &config_a,
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--scopes",
            "write:data read:data",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    let write_only = create_token(&config_a, &["--user", "alice", "--scopes", "write:data"]);
    let read_only = create_token(&config_a, &["--user", "alice", "--scopes", "read:data"]);
    let a = Authgate::start(&config_a);
    let behind = |dir: &Path, claims: &str| {
        write_config(
            dir,
            &format!(
                r#"
providers:
  - type: jwt
    issuer: "https://authgate-a.test"
    jwks_uri: "{}"
    audiences: [api]
    typ: at+jwt
    claims: {{ {claims} }}
policy:
  rules:
    - {{ name: data, path: /data, require: {{ scopes: ["read:data"] }} }}
"#,
                a.url("/.well-known/jwks.json")
            ),
        )
    };
    let b = Authgate::start(&behind(dir_b.path(), "scopes_all: scope_all"));
    let c = Authgate::start(&behind(dir_c.path(), ""));
    let http = reqwest::Client::new();
    let from_a = async |request: reqwest::RequestBuilder| {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        bearer_jwt(&resp)
    };
    let direct = from_a(
        http.get(a.url("/auth/x"))
            .basic_auth("alice", Some("alice-password")),
    )
    .await;
    let scoped = from_a(http.get(a.url("/auth/x")).bearer_auth(&read_only)).await;
    let other = from_a(http.get(a.url("/auth/x")).bearer_auth(&write_only)).await;
    let decide = async |gate: &Authgate, jwt: &str| decide(gate, "/data", jwt).await;
    let resp = decide(&b, &direct).await;
    assert_eq!(resp.status(), 200, "all scopes on B");
    let claims = verify_jwt(&b, &bearer_jwt(&resp), "api").await;
    assert_eq!(claims["scope_all"], true, "and B says so again: {claims}");
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["email"], "alice@example.org", "A marks it verified");
    assert_eq!(decide(&b, &scoped).await.status(), 200);
    assert_eq!(
        decide(&b, &other).await.status(),
        403,
        "a scoped token stays scoped"
    );
    // Read the way a foreign IdP's tokens are, "all scopes" is none.
    assert_eq!(decide(&c, &direct).await.status(), 403);
    assert_eq!(decide(&c, &scoped).await.status(), 200);
}
