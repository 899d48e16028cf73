//! The `astakos` provider against a fake Astakos that follows ASTAKOS.md to the letter.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::astakos::{AstakosUser, FakeAstakos};
use common::*;
use serde_json::Value;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn user(uuid: &str) -> AstakosUser {
    AstakosUser {
        uuid: uuid.into(),
        name: "Firstname Lastname".into(),
        email: "user@example.com".into(),
        groups: vec!["default".into(), "academic".into()],
        projects: vec!["p-1".into(), "p-2".into()],
        default_project: "p-1".into(),
        active: true,
        signed_terms: true,
        token_expires: now() + 120,
    }
}

fn config_for(dir: &std::path::Path, astakos: &FakeAstakos, extra: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "cache: {{ max_ttl: 10s, negative_ttl: 1s }}\n\
             providers:\n  - {{ type: api_token }}\n  - {{ type: astakos, url: \"{}\"{extra} }}\n\
             policy: {{ default: allow_authenticated }}\n",
            astakos.base_url()
        ),
    )
}

/// The minted `sub` of the Astakos user `uuid`: qualified by Astakos's base URL (`%` and `:`
/// percent-encoded), whichever endpoint generation answered.
fn qualified(astakos: &FakeAstakos, uuid: &str) -> String {
    let base = astakos.base_url().replace('%', "%25").replace(':', "%3A");
    format!("astakos:{base}:{uuid}")
}

async fn decide(authgate: &Authgate, token: &str, header: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(authgate.url("/auth"))
        .header("X-Original-URI", "/anything")
        .header("X-Original-Method", "GET")
        .header("X-Forwarded-For", "203.0.113.7")
        .header(
            header,
            if header == "Authorization" {
                format!("Bearer {token}")
            } else {
                token.to_owned()
            },
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_endpoint_mapping_failures_and_retries() {
    let astakos = FakeAstakos::start().await;
    let dir = tempfile::tempdir().unwrap();
    let authgate = Authgate::start(&config_for(dir.path(), &astakos, ""));
    let valid = user("c18088be-16b1-4263-8180-043c54e22903");
    let expires = valid.token_expires;
    astakos.add_token("tok-valid", valid);

    // Mapping: uuid -> sub, name, groups -> roles, projects and tenant -> attributes, and the
    // JWT never outlives the Astakos token (expires in 120 s < 300 s).
    let resp = decide(&authgate, "tok-valid", "X-Auth-Token").await;
    assert_eq!(resp.status(), 200);
    let jwt = bearer_jwt(&resp);
    let claims = verify_jwt(&authgate, &jwt, "api").await;
    assert_eq!(
        claims["sub"],
        qualified(&astakos, "c18088be-16b1-4263-8180-043c54e22903")
    );
    assert_eq!(claims["username"], "Firstname Lastname");
    assert_eq!(claims["provider"], "astakos");
    assert_eq!(claims["roles"], serde_json::json!(["academic", "default"]));
    assert_eq!(
        claims["attributes"],
        serde_json::json!({"default_project": "p-1", "projects": ["p-1", "p-2"]})
    );
    assert_eq!(
        claims["exp"], expires,
        "the JWT ends with the Astakos token"
    );
    // The client address is passed on as synnefo services do.
    assert_eq!(
        astakos.state.client_ips.lock().unwrap().as_slice(),
        ["203.0.113.7"]
    );
    // Bearer works too. Each credential form is its own cache entry (providers accept
    // different forms): one more call, then the Bearer answer is cached as well.
    for _ in 0..2 {
        assert_eq!(
            decide(&authgate, "tok-valid", "Authorization")
                .await
                .status(),
            200
        );
    }
    assert_eq!(astakos.calls(), 2);

    // Astakos's 401 reasons are passed on; a 401 is never retried.
    let cases = [
        (
            "tok-inactive",
            AstakosUser {
                active: false,
                ..user("u-1")
            },
            "user inactive",
        ),
        (
            "tok-expired",
            AstakosUser {
                token_expires: now() - 10,
                ..user("u-2")
            },
            "authentication expired",
        ),
        (
            "tok-terms",
            AstakosUser {
                signed_terms: false,
                ..user("u-3")
            },
            "pending approval terms",
        ),
    ];
    for (token, u, reason) in cases {
        astakos.add_token(token, u);
        let before = astakos.calls();
        let resp = decide(&authgate, token, "X-Auth-Token").await;
        assert_eq!(resp.status(), 401, "{token}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["reason"], reason, "{token}");
        assert_eq!(astakos.calls() - before, 1, "{token}: no retry on 401");
    }
    let before = astakos.calls();
    let resp = decide(&authgate, "tok-unknown", "X-Auth-Token").await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["reason"],
        "invalid token"
    );
    assert_eq!(astakos.calls() - before, 1);

    // 503 twice, then the answer: retried like astakosclient (2 extra attempts).
    astakos.add_token("tok-retry", user("u-4"));
    astakos.state.fail_next.store(2, Ordering::SeqCst);
    let before = astakos.calls();
    assert_eq!(
        decide(&authgate, "tok-retry", "X-Auth-Token")
            .await
            .status(),
        200
    );
    assert_eq!(astakos.calls() - before, 3);
    // Three failures: 503 from /auth (fail closed), after exactly 3 calls.
    astakos.add_token("tok-down", user("u-5"));
    astakos.state.fail_next.store(3, Ordering::SeqCst);
    let before = astakos.calls();
    let resp = decide(&authgate, "tok-down", "X-Auth-Token").await;
    assert_eq!(resp.status(), 503);
    assert_eq!(astakos.calls() - before, 3);
    // Not cached: the next request asks again and passes.
    assert_eq!(
        decide(&authgate, "tok-down", "X-Auth-Token").await.status(),
        200
    );

    // 400 from Astakos: 401 at once, not retried.
    astakos.add_token("tok-400", user("u-6"));
    astakos.state.bad_request_next.store(1, Ordering::SeqCst);
    let before = astakos.calls();
    let resp = decide(&authgate, "tok-400", "X-Auth-Token").await;
    assert_eq!(resp.status(), 401);
    assert_eq!(astakos.calls() - before, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_astakos_times_out_and_fails_closed() {
    let astakos = FakeAstakos::start().await;
    let dir = tempfile::tempdir().unwrap();
    let authgate = Authgate::start(&config_for(
        dir.path(),
        &astakos,
        ", timeout: 300ms, retries: 2",
    ));
    astakos.add_token("tok-slow", user("u-7"));
    astakos.state.delay_ms.store(1000, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let resp = decide(&authgate, "tok-slow", "X-Auth-Token").await;
    assert_eq!(resp.status(), 503);
    // Time is the behaviour: three 300 ms attempts answer well before Astakos's 1 s
    // (at most ~0.9 s; the margin covers a slow machine).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Each timed-out attempt reached Astakos: one call and two retries, no more.
    let arrived = eventually(Duration::from_secs(5), async || astakos.calls() >= 3).await;
    assert!(arrived, "{} calls reached Astakos", astakos.calls());
    assert_eq!(astakos.calls(), 3);
    astakos.state.delay_ms.store(0, Ordering::SeqCst);
    assert_eq!(
        decide(&authgate, "tok-slow", "X-Auth-Token").await.status(),
        200
    );
    assert_eq!(
        astakos.calls(),
        4,
        "the 503 was not cached: asked once more"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_endpoint_and_query_token() {
    let astakos = FakeAstakos::start().await;
    let dir = tempfile::tempdir().unwrap();
    let authgate = Authgate::start(&config_for(
        dir.path(),
        &astakos,
        ", mode: legacy, query_token: true",
    ));
    let u = user("a9dc21d2-bcb2-4104-9a9e-402b7c70d6d8");
    let expires = u.token_expires;
    astakos.add_token("CDEe2k0T/HdiJWBMMbHyOA==", u);

    let resp = decide(&authgate, "CDEe2k0T/HdiJWBMMbHyOA==", "X-Auth-Token").await;
    assert_eq!(resp.status(), 200);
    let jwt = bearer_jwt(&resp);
    let claims = verify_jwt(&authgate, &jwt, "api").await;
    assert_eq!(
        claims["sub"],
        qualified(&astakos, "a9dc21d2-bcb2-4104-9a9e-402b7c70d6d8")
    );
    assert_eq!(claims["username"], "user@example.com");
    assert_eq!(claims["email"], "user@example.com");
    assert_eq!(claims["roles"], serde_json::json!(["academic", "default"]));
    assert_eq!(claims["exp"], expires, "epoch milliseconds read as such");

    let resp = decide(&authgate, "nope", "X-Auth-Token").await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["reason"],
        "invalid token"
    );
    astakos.add_token(
        "tok-inactive",
        AstakosUser {
            active: false,
            ..user("u-1")
        },
    );
    let resp = decide(&authgate, "tok-inactive", "X-Auth-Token").await;
    assert_eq!(
        resp.json::<Value>().await.unwrap()["reason"],
        "user inactive"
    );

    // ?X-Auth-Token= in the original URL, as Pithos clients send it.
    let resp = reqwest::Client::new()
        .get(authgate.url("/auth"))
        .header(
            "X-Original-URI",
            "/pithos/file?X-Auth-Token=CDEe2k0T%2FHdiJWBMMbHyOA%3D%3D&x=1",
        )
        .header("X-Original-Method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_astakos_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        &format!(
            "providers: [ {{ type: astakos, url: \"http://127.0.0.1:{port}/astakos\", timeout: 1s }} ]\npolicy: {{ default: allow_authenticated }}\n"
        ),
    );
    let authgate = Authgate::start(&config);
    let resp = decide(&authgate, "any-token", "X-Auth-Token").await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unavailable");
}

/// The same token as Bearer and as X-Auth-Token: with `bearer: false` Astakos takes only
/// the latter, and the answer cached for one form never decides the other, in either order,
/// within the cache lifetimes.
#[tokio::test(flavor = "multi_thread")]
async fn credential_forms_are_cached_apart() {
    let astakos = FakeAstakos::start().await;
    let dir = tempfile::tempdir().unwrap();
    let authgate = Authgate::start(&config_for(dir.path(), &astakos, ", bearer: false"));
    astakos.add_token(
        "tok-bearer-first",
        user("11111111-16b1-4263-8180-043c54e22903"),
    );
    astakos.add_token(
        "tok-header-first",
        user("22222222-16b1-4263-8180-043c54e22903"),
    );

    let bearer = decide(&authgate, "tok-bearer-first", "Authorization").await;
    assert_eq!(bearer.status(), 401);
    let header = decide(&authgate, "tok-bearer-first", "X-Auth-Token").await;
    assert_eq!(header.status(), 200, "the Bearer refusal was reused");

    let header = decide(&authgate, "tok-header-first", "X-Auth-Token").await;
    assert_eq!(header.status(), 200);
    let bearer = decide(&authgate, "tok-header-first", "Authorization").await;
    assert_eq!(bearer.status(), 401, "the X-Auth-Token answer was reused");
}
