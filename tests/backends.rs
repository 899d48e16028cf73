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

        let verdict = verifier.verify(&password_jwt, "api", Some(&["ES256"]), typ, &RFC9068_CLAIMS);
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
    assert_eq!(
        verdict["error"], "ERR_JWT_CLAIM_VALIDATION_FAILED",
        "{verdict}"
    );
    assert!(
        verdict["message"].as_str().unwrap().contains("\"typ\""),
        "{verdict}"
    );
    assert_eq!(
        jose.claims(&legacy_jwt, "api", "ES256")["scopes"][0],
        "read:data"
    );
}

/// The JWKS cache the verifiers of the rotation test keep: the test's scale of a backend's
/// 5-10 minutes, as `rotation_lead: 20s` is its scale of the default 15 minutes.
const SCALED_CACHE_SECONDS: u64 = 5;

/// One library's verdict on one JWT at one moment of a rotation.
struct Check {
    at: Duration,
    kid: String,
    library: Library,
    verdict: Value,
}

/// Mints a JWT and has both `verifiers` verify it, every 500 ms, until `done` says so (given
/// the checks so far) or `limit` passes; `at` counts from `start`.
async fn mint_and_verify_until(
    authgate: &Authgate,
    token: &str,
    verifiers: &mut [Verifier; 2],
    start: Instant,
    limit: Duration,
    mut done: impl FnMut(&[Check]) -> bool,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    while start.elapsed() < limit && !done(&checks) {
        ticks.tick().await;
        let jwt = mint(authgate, token, "/data").await;
        let at = start.elapsed();
        for verifier in verifiers.iter_mut() {
            checks.push(Check {
                at,
                kid: kid_of(&jwt),
                library: verifier.library,
                verdict: verifier.verify(&jwt, "api", Some(&["ES256"]), None, &[]),
            });
        }
    }
    checks
}

/// `keys rotate` under backends that cache the JWKS (for less than `mint.rotation_lead`):
/// minting and verifying every 500 ms from before the rotation, through the switch and past
/// it, no verification fails in either library, and each had fetched the new key before it
/// met the first JWT the key signed (not through a refetch on an unknown kid). JWTs the
/// previous key signed still verify after the switch.
#[tokio::test(flavor = "multi_thread")]
async fn rotation_never_refuses_a_cached_jwks_client() {
    let dir = tempfile::tempdir().unwrap();
    // 20 s exceeds the verifiers' cache (5 s) plus the servers' key reload interval (10 s).
    let sections =
        format!("{POLICY}\nmint: {{ issuer: \"{ISSUER}\", audience: api, rotation_lead: 20s }}\n");
    let config = write_config(dir.path(), &sections);
    let token = create_token(&config, &["--user", "jana", "--scopes", "read:data"]);
    let authgate = Authgate::start(&config);
    let first = mint(&authgate, &token, "/data").await;
    let old_kid = kid_of(&first);
    let mut verifiers = verifiers(&authgate, ISSUER, Some(SCALED_CACHE_SECONDS));
    for verifier in &mut verifiers {
        verifier.claims(&first, "api", "ES256");
    }

    let start = Instant::now();
    let new_kid = rotate(&authgate, &[]);
    assert_ne!(new_kid, old_kid);
    let is_new = |c: &Check| c.kid == new_kid;
    // Until the new key has signed for 5 s (the switch comes 20-30 s after the rotation).
    let checks = mint_and_verify_until(
        &authgate,
        &token,
        &mut verifiers,
        start,
        Duration::from_secs(60),
        |checks| {
            checks
                .iter()
                .find(|c| is_new(c))
                .is_some_and(|c| start.elapsed() > c.at + Duration::from_secs(5))
        },
    )
    .await;
    let switch = checks
        .iter()
        .find(|c| is_new(c))
        .expect("the next key did not sign within 60 s");
    let before = checks.iter().filter(|c| !is_new(c)).count();
    assert!(
        switch.at >= Duration::from_secs(19),
        "the next key signed {:?} after `keys rotate`, before its lead",
        switch.at
    );
    let refused: Vec<_> = checks
        .iter()
        .filter(|c| c.verdict["ok"] != true)
        .map(|c| format!("{:?} at {:?} ({}): {}", c.library, c.at, c.kid, c.verdict))
        .collect();
    assert!(
        refused.is_empty(),
        "refused during rotation:\n{}",
        refused.join("\n")
    );
    for library in [Library::PyJwt, Library::Jose] {
        let first_new = checks
            .iter()
            .find(|c| c.library == library && is_new(c))
            .unwrap();
        assert_eq!(
            first_new.verdict["known_before"], true,
            "{library:?} met the new key's first JWT before it had fetched the key: {}",
            first_new.verdict
        );
        assert!(
            checks
                .iter()
                .any(|c| c.library == library && is_new(c) && c.at > first_new.at)
        );
    }
    for verifier in &mut verifiers {
        assert_eq!(verifier.claims(&first, "api", "ES256")["sub"], "jana");
    }
    eprintln!(
        "rotation: {} checks, {before} with the old key; the new key signed {:?} after \
         `keys rotate`; no refusal",
        checks.len(),
        switch.at
    );
}

/// `keys rotate --now` (the emergency path) has a cost for backends that cached the JWKS:
/// the new key signs as soon as it is published (within the 10 s reload), so a library that
/// fetched the JWKS in the last 30 s refuses its JWTs as signed by an unknown key (PyJWT
/// `PyJWKClientError`, jose `ERR_JWKS_NO_MATCHING_KEY`) until that 30 s cooldown ends, then
/// refetches on the unknown kid and takes them. JWTs of the previous key keep verifying.
#[tokio::test(flavor = "multi_thread")]
async fn emergency_rotation_costs_a_cached_client_its_refetch_cooldown() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POLICY);
    let token = create_token(&config, &["--user", "kurt", "--scopes", "read:data"]);
    let authgate = Authgate::start(&config);
    let first = mint(&authgate, &token, "/data").await;
    // The libraries' default caches (PyJWT 300 s, jose 600 s, a 30 s refetch cooldown each);
    // each fetches the JWKS on its first verification, just before the rotation.
    let mut verifiers = verifiers(&authgate, ISSUER, None);
    for verifier in &mut verifiers {
        verifier.claims(&first, "api", "ES256");
    }
    let fetched = Instant::now();

    let now_kid = rotate(&authgate, &["--now"]);
    let accepted_new = |checks: &[Check], library: Library| {
        checks
            .iter()
            .any(|c| c.library == library && c.kid == now_kid && c.verdict["ok"] == true)
    };
    let checks = mint_and_verify_until(
        &authgate,
        &token,
        &mut verifiers,
        fetched,
        Duration::from_secs(60),
        |checks| accepted_new(checks, Library::PyJwt) && accepted_new(checks, Library::Jose),
    )
    .await;
    let mut report = Vec::new();
    for library in [Library::PyJwt, Library::Jose] {
        let mine: Vec<&Check> = checks.iter().filter(|c| c.library == library).collect();
        let (old, new): (Vec<&Check>, Vec<&Check>) = mine.iter().partition(|c| c.kid != now_kid);
        assert!(
            old.iter().all(|c| c.verdict["ok"] == true),
            "{library:?} refused a JWT of the previous key"
        );
        let first_new = new
            .first()
            .expect("keys rotate --now did not switch in 60 s");
        assert!(
            first_new.at < Duration::from_secs(20),
            "switched at {:?}",
            first_new.at
        );
        let accepted = new
            .iter()
            .position(|c| c.verdict["ok"] == true)
            .unwrap_or_else(|| panic!("{library:?} never took the new key's JWTs"));
        let (refused, taken) = new.split_at(accepted);
        assert!(
            !refused.is_empty(),
            "{library:?} took the new key's first JWT {:?} after its JWKS fetch, within its \
             refetch cooldown: {}",
            first_new.at,
            first_new.verdict
        );
        let expected_error = match library {
            Library::PyJwt => "PyJWKClientError",
            Library::Jose => "ERR_JWKS_NO_MATCHING_KEY",
        };
        for c in refused {
            assert_eq!(
                c.verdict["error"], expected_error,
                "{library:?}: {}",
                c.verdict
            );
            assert_eq!(
                c.verdict["known_before"], false,
                "{library:?}: {}",
                c.verdict
            );
            // No refetch while cooling down: still the one fetch before the rotation.
            assert_eq!(c.verdict["fetches"], 1, "{library:?}: {}", c.verdict);
        }
        // The cooldown ends 30 s after the fetch; then one refetch on the unknown kid.
        let recovered = taken[0];
        assert!(
            (Duration::from_secs(29)..Duration::from_secs(40)).contains(&recovered.at),
            "{library:?} took the new key {:?} after its fetch",
            recovered.at
        );
        assert_eq!(
            recovered.verdict["fetches"], 2,
            "{library:?}: {}",
            recovered.verdict
        );
        assert!(taken.iter().all(|c| c.verdict["ok"] == true), "{library:?}");
        report.push(format!(
            "{library:?} refused {} JWTs from {:?} to {:?} after its fetch",
            refused.len(),
            first_new.at,
            refused.last().unwrap().at
        ));
    }
    for verifier in &mut verifiers {
        assert_eq!(verifier.claims(&first, "api", "ES256")["sub"], "kurt");
    }
    eprintln!("keys rotate --now: {}", report.join("; "));
}

/// authgate serving at `http://127.0.0.1:<port>` with that as its issuer (a strict client
/// requires the discovered `issuer` to be the URL it discovered from), a JWT it minted for
/// the default route, and what `oauth4webapi` made of it.
async fn strict_client_view() -> (String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let sections = format!(
        "{POLICY}\nserver: {{ listen: \"127.0.0.1:{port}\", trusted_proxies: [\"127.0.0.1/32\"] }}\n\
         mint: {{ issuer: \"{issuer}\", audience: api }}\n"
    );
    let config = write_config(dir.path(), &sections);
    let token = create_token(&config, &["--user", "lena", "--scopes", "read:data"]);
    let authgate = Authgate::start(&config);
    assert_eq!(authgate.url(""), issuer);
    let jwt = mint(&authgate, &token, "/data").await;
    let view = strict_discovery(&issuer, "api", &jwt);
    (issuer, view)
}

/// What a strict client needs of one discovery document: `oauth4webapi` accepts it (a 200
/// JSON object whose `issuer` is exactly the issuer discovered), its `jwks_uri` is
/// authgate's JWKS, and through it `validateJwtAccessToken` (RFC 9068: `typ: at+jwt`, `iss`,
/// `exp`, `aud`, `sub`, `iat`, `jti`, `client_id`, the signature) takes a minted JWT.
fn assert_strict_client_took(issuer: &str, result: &Value, path: &str) {
    assert_eq!(result["ok"], true, "{path}: {result}");
    let metadata = &result["metadata"];
    assert_eq!(metadata["issuer"], issuer, "{path}");
    assert_eq!(
        metadata["jwks_uri"],
        format!("{issuer}/.well-known/jwks.json"),
        "{path}"
    );
    assert_eq!(result["claims"]["sub"], "lena", "{path}");
    assert_eq!(result["claims"]["iss"], issuer, "{path}");
    assert_eq!(result["claims"]["aud"], "api", "{path}");
}

/// OpenID Connect Discovery (`/.well-known/openid-configuration`) through `oauth4webapi`;
/// an authgate whose issuer is not where it is reached is refused on `issuer`.
#[tokio::test(flavor = "multi_thread")]
async fn openid_configuration_through_a_strict_client() {
    let (issuer, view) = strict_client_view().await;
    assert_strict_client_took(&issuer, &view["oidc"], "/.well-known/openid-configuration");

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POLICY);
    let token = create_token(&config, &["--user", "lena", "--scopes", "read:data"]);
    let authgate = Authgate::start(&config);
    let jwt = mint(&authgate, &token, "/data").await;
    let view = strict_discovery(&authgate.url(""), "api", &jwt);
    assert_eq!(view["oidc"]["ok"], false, "{view}");
    assert_eq!(view["oidc"]["step"], "processDiscoveryResponse", "{view}");
    assert_eq!(
        view["oidc"]["error"], "OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED",
        "{view}"
    );
}

/// OAuth 2.0 Authorization Server Metadata (RFC 8414,
/// `/.well-known/oauth-authorization-server`) through `oauth4webapi`.
#[tokio::test(flavor = "multi_thread")]
async fn oauth_authorization_server_metadata_through_a_strict_client() {
    let (issuer, view) = strict_client_view().await;
    assert_strict_client_took(
        &issuer,
        &view["oauth2"],
        "/.well-known/oauth-authorization-server",
    );
}
