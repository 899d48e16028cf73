//! The `ldap` augmenter against a real OpenLDAP slapd (tests/common/ldap.rs), identities
//! coming from a real who-am-i service (`remote`) and from local users (`basic`): groups as
//! roles (memberOf and a group search, nested groups, cn and path roles), attributes, RFC
//! 4515 escaping, `required`, a refused bind, the directory down and back, `/readyz`, the
//! metric, `/whoami`, and one request through real nginx.

mod common;

use std::time::Duration;

use common::ldap::{BASE, READER_DN, READER_PASSWORD, Slapd};
use common::whoami::WhoAmI;
use common::*;
use serde_json::{Value, json};

/// Tokens of the who-am-i service: `tok-<uid>` is the user `<uid>`.
async fn users(service: &WhoAmI) {
    let mut tokens = serde_json::Map::new();
    for (token, uid) in [
        ("tok-alice", "alice"),
        ("tok-bob", "bob"),
        ("tok-carol", "carol"),
        ("tok-ann", "ann(x)*"),
        ("tok-nobody", "nobody"),
        ("tok-inject", "*)(uid=*"),
        ("tok-star", "*"),
    ] {
        tokens.insert(token.into(), json!({"body": {"uid": uid}}));
    }
    service.set(Value::Object(tokens)).await;
}

fn sections(
    service: &WhoAmI,
    slapd: &Slapd,
    password_file: &std::path::Path,
    ldap: &str,
) -> String {
    format!(
        r#"
cache: {{ max_ttl: 10s, negative_ttl: 1s }}
providers:
  - type: remote
    url: "{}?token={{token}}"
    claims: {{ username: [uid] }}
  - type: basic
augment:
  - type: ldap
    url: "{}"
    bind_dn: "{READER_DN}"
    bind_password_file: "{}"
    base_dn: "ou=people,{BASE}"
    user_filter: "(&(objectClass=inetOrgPerson)(uid={{username}}))"
    timeout: 2s
    cache_ttl: 1s
{ldap}
policy:
  default: deny
  rules:
    - {{ name: admin, path: /admin, require: {{ roles: [admins] }} }}
    - {{ name: any, path: / }}
"#,
        service.url(),
        slapd.url(),
        password_file.display(),
    )
}

async fn auth(authgate: &Authgate, path: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(authgate.url("/auth"))
        .header("X-Original-URI", path)
        .header("X-Original-Method", "GET")
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn roles(resp: &reqwest::Response) -> String {
    resp.headers()["x-auth-request-roles"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn ldap_groups_by_member_of() {
    let dir = tempfile::tempdir().unwrap();
    let mut slapd = Slapd::start(dir.path());
    let service = WhoAmI::start();
    users(&service).await;
    let password = dir.path().join("bind-password");
    std::fs::write(&password, format!("{READER_PASSWORD}\n")).unwrap();
    let ldap = "    attributes: [mail, departmentNumber]\n    required: true\n";
    let config = write_config(dir.path(), &sections(&service, &slapd, &password, ldap));
    add_user(&config, &["carol"], "carol-password");
    add_user(&config, &["dave"], "dave-password");
    let authgate = Authgate::start(&config);

    // alice: her groups (memberOf, the overlay) are roles; attributes copied; the JWT too.
    let resp = auth(&authgate, "/admin", "tok-alice").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(roles(&resp), "Admin,admins");
    let attributes: Value = serde_json::from_str(
        resp.headers()["x-auth-request-attributes"]
            .to_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        attributes,
        json!({"departmentNumber": "physics", "mail": "alice@example.org"})
    );
    let claims = verify_jwt(&authgate, &bearer_jwt(&resp), "api").await;
    assert_eq!(claims["roles"], json!(["Admin", "admins"]));

    // A user name that needs escaping is found as itself.
    let resp = auth(&authgate, "/", "tok-ann").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(roles(&resp), "devs");
    // Filter syntax in a user name matches nobody: refused (required), not everybody.
    for token in ["tok-inject", "tok-star", "tok-nobody"] {
        let resp = auth(&authgate, "/", token).await;
        assert_eq!(resp.status(), 403, "{token}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body["reason"], "missing an entry in the directory",
            "{token}"
        );
    }
    // In the directory without groups: no extra roles, so the policy says no.
    let resp = auth(&authgate, "/admin", "tok-bob").await;
    assert_eq!(resp.status(), 403);
    assert_eq!(auth(&authgate, "/", "tok-bob").await.status(), 200);
    // Without nested_groups, memberOf is what the user's entry says.
    let resp = auth(&authgate, "/", "tok-carol").await;
    assert_eq!(roles(&resp), "devs");

    // Any provider: a local user (basic) is augmented the same way.
    let http = reqwest::Client::new();
    let resp = http
        .get(authgate.url("/auth"))
        .header("X-Original-URI", "/")
        .header("X-Original-Method", "GET")
        .basic_auth("carol", Some("carol-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(roles(&resp), "devs");
    let resp = http
        .get(authgate.url("/auth"))
        .header("X-Original-URI", "/")
        .header("X-Original-Method", "GET")
        .basic_auth("dave", Some("dave-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "dave is not in the directory");

    // /whoami shows the augmented identity.
    let me: Value = http
        .get(authgate.url("/whoami"))
        .bearer_auth("tok-alice")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["roles"], json!(["Admin", "admins"]));
    assert_eq!(me["attributes"]["mail"], "alice@example.org");

    // Through nginx: the upstream sees the directory's roles.
    let echo = Echo::start().await;
    let nginx = Nginx::start(
        dir.path(),
        "deploy/nginx/authgate.conf",
        authgate.data,
        echo.addr,
    );
    let resp = nginx
        .client()
        .get(nginx.url("/admin/x"))
        .bearer_auth("tok-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["x-auth-request-roles"], json!(["Admin,admins"]));
    let resp = nginx
        .client()
        .get(nginx.url("/admin/x"))
        .bearer_auth("tok-inject")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // `authgate policy check` sees the directory's roles too.
    let out = authgate.cli(
        &[
            "policy",
            "check",
            "--user",
            "alice",
            "--url",
            "http://h/admin/x",
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.starts_with("allow (rule: admin"),
        "{stdout} {stderr}"
    );
    assert!(
        stderr.contains("added by augment: Admin, admins"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(0));

    // The directory down: identities that need it fail closed (503), /readyz and the
    // metric say so; back up, it works again (its kept connections are replaced).
    let up_metric = format!(
        "authgate_provider_up{{provider=\"augment ldap {}\"}}",
        slapd.url()
    );
    assert_eq!(authgate.metric(&up_metric).await, 1.0);
    slapd.stop();
    let down = eventually(Duration::from_secs(8), async || {
        auth(&authgate, "/", "tok-alice").await.status() == 503
    })
    .await;
    assert!(down, "the directory down must fail closed");
    // bob's cached identity ends within cache_ttl (1 s); then he fails closed too.
    let bob_down = eventually(Duration::from_secs(8), async || {
        auth(&authgate, "/", "tok-bob").await.status() == 503
    })
    .await;
    assert!(bob_down);
    assert_eq!(authgate.metric(&up_metric).await, 0.0);
    let ready = reqwest::get(authgate.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    let name = format!("augment ldap {}", slapd.url());
    assert_ne!(ready["providers"][&name], "ok", "{ready}");
    slapd.restart();
    let back = eventually(Duration::from_secs(8), async || {
        auth(&authgate, "/admin", "tok-alice").await.status() == 200
    })
    .await;
    assert!(back, "the directory back up must work again");
    assert!(!authgate.stop_and_log_text().await.contains(READER_PASSWORD));
}

#[tokio::test(flavor = "multi_thread")]
async fn ldap_group_search_nested_paths_and_refused_bind() {
    let dir = tempfile::tempdir().unwrap();
    let slapd = Slapd::start(dir.path());
    let service = WhoAmI::start();
    users(&service).await;
    let password = dir.path().join("bind-password");
    std::fs::write(&password, READER_PASSWORD).unwrap();
    let ldap = format!(
        "    group_base_dn: \"ou=groups,{BASE}\"\n    group_filter: \"(&(objectClass=groupOfNames)(member={{user_dn}}))\"\n    nested_groups: true\n    role_from: path\n"
    );
    let config = write_config(dir.path(), &sections(&service, &slapd, &password, &ldap));
    let authgate = Authgate::start(&config);
    // Groups of groups, named by their path below group_base_dn.
    let resp = auth(&authgate, "/", "tok-carol").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(roles(&resp), "/devs,/staff");
    let resp = auth(&authgate, "/", "tok-alice").await;
    assert_eq!(roles(&resp), "/TeamA/Admin,/admins");
    let resp = auth(&authgate, "/", "tok-ann").await;
    assert_eq!(roles(&resp), "/devs,/staff");
    // Not required: a user not in the directory passes with no extra roles.
    let resp = auth(&authgate, "/", "tok-nobody").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(roles(&resp), "");
    let resp = auth(&authgate, "/", "tok-inject").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(roles(&resp), "");
    drop(authgate);

    // A bind the directory refuses fails closed.
    std::fs::write(&password, "wrong").unwrap();
    let authgate = Authgate::start(&config);
    assert_eq!(auth(&authgate, "/", "tok-alice").await.status(), 503);
    let logged = eventually(Duration::from_secs(5), async || {
        authgate.log_text().contains("the bind was refused")
    })
    .await;
    assert!(logged, "{}", authgate.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn ldap_over_tls_and_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let slapd = Slapd::start(dir.path());
    let service = WhoAmI::start();
    users(&service).await;
    let password = dir.path().join("bind-password");
    std::fs::write(&password, READER_PASSWORD).unwrap();
    let ca = format!("    ca_file: \"{}\"\n", slapd.ca_file().display());
    // (url, extra lines, status for alice)
    let cases = [
        (slapd.ldaps_url(), ca.clone(), 200),
        (slapd.url(), format!("{ca}    starttls: true\n"), 200),
        // The test CA is not among the system's roots: the certificate is refused.
        (slapd.ldaps_url(), String::new(), 503),
        (slapd.url(), "    starttls: true\n".to_owned(), 503),
    ];
    for (i, (url, extra, want)) in cases.into_iter().enumerate() {
        let case_dir = dir.path().join(format!("case{i}"));
        std::fs::create_dir_all(&case_dir).unwrap();
        let sections = sections(&service, &slapd, &password, &extra).replace(&slapd.url(), &url);
        let authgate = Authgate::start(&write_config(&case_dir, &sections));
        let resp = auth(&authgate, "/admin", "tok-alice").await;
        assert_eq!(resp.status(), want, "case {i}: {url} {extra}");
        if want == 200 {
            assert_eq!(roles(&resp), "Admin,admins");
        }
    }
}
