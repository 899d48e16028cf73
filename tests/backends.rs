//! authgate's minted JWTs as backends see them, through their own libraries in other
//! languages: PyJWT (`PyJWKClient`) and node `jose` (`createRemoteJWKSet` + `jwtVerify`),
//! each a long-running peer that keeps its JWKS cache (tests/peers/backends). Every signing
//! algorithm, the audience of a route, the RFC 9068 profile, key rotation under a cached
//! JWKS, and discovery through a strict client (`oauth4webapi`).

mod common;

use std::time::{Duration, Instant};

use common::backends::{Library, Verifier, strict_discovery};
use common::*;
use serde_json::Value;

const ISSUER: &str = "https://authgate.test";

const POLICY: &str = r#"
cache: { max_ttl: 2s, negative_ttl: 1s }
providers:
  - { type: api_token }
  - { type: basic, max_failures: 3, failure_window: 1m }
policy:
  default: deny
  rules:
    - { name: data-read, path: /data, methods: [GET], require: { scopes: ["read:data"] } }
    - { name: admin, path: /admin, require: { scopes: ["admin"] }, audience: admin-api }
"#;

/// What RFC 9068 section 2.2 makes a resource server require.
const RFC9068_CLAIMS: [&str; 7] = ["iss", "exp", "aud", "sub", "iat", "jti", "client_id"];

/// The JWT authgate mints for `token` on `path` (a 200 from `/auth<path>`).
async fn mint(authgate: &Authgate, token: &str, path: &str) -> String {
    let resp = reqwest::Client::new()
        .get(authgate.url(&format!("/auth{path}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    bearer_jwt(&resp)
}

fn kid_of(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap()
}

/// Both libraries' verifiers against `authgate`'s JWKS, with JWKS cache `cache`.
fn verifiers(authgate: &Authgate, issuer: &str, cache: Option<u64>) -> [Verifier; 2] {
    let jwks = authgate.url("/.well-known/jwks.json");
    [
        Verifier::start(Library::PyJwt, &jwks, issuer, cache),
        Verifier::start(Library::Jose, &jwks, issuer, cache),
    ]
}

/// Runs `keys rotate <extra>` and returns the new kid.
fn rotate(authgate: &Authgate, extra: &[&str]) -> String {
    let mut args = vec!["keys", "rotate"];
    args.extend_from_slice(extra);
    let out = authgate.cli(&args, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Every algorithm authgate mints (ES256 and EdDSA from the store or a PEM file, RS256 from
/// a PEM file) verifies in PyJWT and jose when the backend names the algorithm, and with
/// each library's default (both take the algorithm of the JWK the kid selects: PyJWT 2.15
/// with a `PyJWK` key, jose by the key's type). Neither refuses EdDSA: PyJWT has it with
/// `cryptography`, jose always. A backend that expects another algorithm refuses the JWT.
#[tokio::test(flavor = "multi_thread")]
async fn every_algorithm_verifies_in_pyjwt_and_jose() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cases = [
        ("ES256", None, "RS256"),
        ("ES256", Some("es256-test-only.pem"), "EdDSA"),
        ("EdDSA", None, "ES256"),
        ("EdDSA", Some("ed25519-test-only.pem"), "RS256"),
        ("RS256", Some("rs256-test-only.pem"), "ES256"),
    ];
    for (alg, file, other) in cases {
        let dir = tempfile::tempdir().unwrap();
        let key_files = file.map_or(String::new(), |f| {
            format!(", key_files: [\"{}\"]", fixtures.join(f).display())
        });
        let sections =
            format!("{POLICY}\nmint: {{ issuer: \"{ISSUER}\", algorithm: {alg}{key_files} }}\n");
        let config = write_config(dir.path(), &sections);
        let token = create_token(&config, &["--user", "gina", "--scopes", "read:data"]);
        let authgate = Authgate::start(&config);
        let jwt = mint(&authgate, &token, "/data").await;
        for mut verifier in verifiers(&authgate, ISSUER, None) {
            let case = format!("{alg} {file:?} {:?}", verifier.library);
            let verdict = verifier.verify(&jwt, "api", Some(&[alg]), None, &[]);
            assert_eq!(verdict["ok"], true, "{case}: {verdict}");
            assert_eq!(verdict["header"]["alg"], alg, "{case}");
            assert_eq!(verdict["claims"]["sub"], "gina", "{case}");
            assert_eq!(verdict["claims"]["iss"], ISSUER, "{case}");
            let default = verifier.verify(&jwt, "api", None, None, &[]);
            assert_eq!(default["ok"], true, "{case}, library default: {default}");
            let wrong = verifier.verify(&jwt, "api", Some(&[other]), None, &[]);
            assert_eq!(wrong["ok"], false, "{case} taken as {other}");
            let expected_error = match verifier.library {
                Library::PyJwt => "InvalidAlgorithmError",
                Library::Jose => "ERR_JOSE_ALG_NOT_ALLOWED",
            };
            assert_eq!(wrong["error"], expected_error, "{case}: {wrong}");
        }
    }
}

/// A route's `audience` is the JWT's `aud`: a backend verifying for `admin-api` takes the
/// admin route's JWT and refuses the default route's, and one verifying for the default
/// `api` refuses the admin route's.
#[tokio::test(flavor = "multi_thread")]
async fn audience_per_route_in_pyjwt_and_jose() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POLICY);
    let token = create_token(&config, &["--user", "hana", "--scopes", "read:data,admin"]);
    let authgate = Authgate::start(&config);
    let admin_jwt = mint(&authgate, &token, "/admin/users").await;
    let data_jwt = mint(&authgate, &token, "/data").await;
    for mut verifier in verifiers(&authgate, ISSUER, None) {
        let library = verifier.library;
        let claims = verifier.claims(&admin_jwt, "admin-api", "ES256");
        assert_eq!(claims["aud"], "admin-api", "{library:?}");
        let claims = verifier.claims(&data_jwt, "api", "ES256");
        assert_eq!(claims["aud"], "api", "{library:?}");
        let expected_error = match library {
            Library::PyJwt => "InvalidAudienceError",
            Library::Jose => "ERR_JWT_CLAIM_VALIDATION_FAILED",
        };
        for (jwt, audience) in [(&admin_jwt, "api"), (&data_jwt, "admin-api")] {
            let verdict = verifier.verify(jwt, audience, Some(&["ES256"]), None, &[]);
            assert_eq!(verdict["ok"], false, "{library:?} {audience}");
            assert_eq!(verdict["error"], expected_error, "{library:?}: {verdict}");
            if library == Library::Jose {
                assert!(
                    verdict["message"].as_str().unwrap().contains("\"aud\""),
                    "{verdict}"
                );
            }
        }
    }
}

/// The RFC 9068 profile (the default): jose requiring `typ: at+jwt` and both libraries
/// requiring the profile's claims take the JWT; `scope` is one space-separated string,
/// `client_id` the API token's id, `nbf` 30 s before `iat`; a password user gets
/// `scope_all: true` with an empty `scope`. The legacy profile (`typ: JWT`) is what jose
/// refuses when it requires `at+jwt`, so the `typ` check is real.
#[tokio::test(flavor = "multi_thread")]
async fn rfc9068_profile_in_pyjwt_and_jose() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POLICY);
    add_user(&config, &["ivan"], "ivan-password");
    let token = create_token(
        &config,
        &["--user", "ivan", "--scopes", "read:data,write:data"],
    );
    let authgate = Authgate::start(&config);
    let jwt = mint(&authgate, &token, "/data").await;
    let resp = reqwest::Client::new()
        .get(authgate.url("/auth/data"))
        .basic_auth("ivan", Some("ivan-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let password_jwt = bearer_jwt(&resp);
    for mut verifier in verifiers(&authgate, ISSUER, None) {
        let library = verifier.library;
        let typ = (library == Library::Jose).then_some("at+jwt");
        let verdict = verifier.verify(&jwt, "api", Some(&["ES256"]), typ, &RFC9068_CLAIMS);
        assert_eq!(verdict["ok"], true, "{library:?}: {verdict}");
        assert_eq!(verdict["header"]["typ"], "at+jwt", "{library:?}");
        let claims = &verdict["claims"];
        let mut scopes: Vec<&str> = claims["scope"].as_str().unwrap().split(' ').collect();
        scopes.sort_unstable();
        assert_eq!(scopes, ["read:data", "write:data"], "{library:?}: {claims}");
        assert!(claims.get("scope_all").is_none(), "{library:?}: {claims}");
        assert!(claims["client_id"].is_string(), "{library:?}: {claims}");
        assert_eq!(claims["client_id"], claims["token_id"], "{library:?}");
        assert_eq!(claims["preferred_username"], "ivan", "{library:?}");
        assert_eq!(
            claims["nbf"].as_i64().unwrap(),
            claims["iat"].as_i64().unwrap() - 30,
            "{library:?}"
        );

        let verdict = verifier.verify(
            &password_jwt,
            "api",
            Some(&["ES256"]),
            typ,
            &RFC9068_CLAIMS,
        );
        assert_eq!(verdict["ok"], true, "{library:?}: {verdict}");
        assert_eq!(verdict["claims"]["scope_all"], true, "{library:?}");
        assert_eq!(verdict["claims"]["scope"], "", "{library:?}");
        assert_eq!(verdict["claims"]["client_id"], "authgate", "{library:?}");
    }
    drop(authgate);

    let legacy_dir = tempfile::tempdir().unwrap();
    let sections =
        format!("{POLICY}\nmint: {{ issuer: \"{ISSUER}\", audience: api, profile: legacy }}\n");
    let config = write_config(legacy_dir.path(), &sections);
    let token = create_token(&config, &["--user", "ivan", "--scopes", "read:data"]);
    let authgate = Authgate::start(&config);
    let legacy_jwt = mint(&authgate, &token, "/data").await;
    let [_, mut jose] = verifiers(&authgate, ISSUER, None);
    let verdict = jose.verify(&legacy_jwt, "api", Some(&["ES256"]), Some("at+jwt"), &[]);
    assert_eq!(verdict["ok"], false, "{verdict}");
    assert_eq!(verdict["error"], "ERR_JWT_CLAIM_VALIDATION_FAILED", "{verdict}");
    assert!(
        verdict["message"].as_str().unwrap().contains("\"typ\""),
        "{verdict}"
    );
    assert_eq!(jose.claims(&legacy_jwt, "api", "ES256")["scopes"][0], "read:data");
}
