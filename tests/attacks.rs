//! authgate tried as an attacker would, through a real nginx running the shipped
//! `deploy/nginx/authgate.conf` in front of an upstream that records what it served. For
//! every case the upstream either never sees the request, or sees exactly what authgate
//! judged.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const SECTIONS: &str = r#"
cache: { max_ttl: 2s, negative_ttl: 1s }
server: { listen: "127.0.0.1:0", trusted_proxies: ["127.0.0.1/32"], max_header_bytes: 4096 }
providers:
  - { type: api_token }
  - { type: basic, max_failures: 5, failure_window: 1m }
  - { type: jwt, issuer: "https://idp.test", jwks_uri: "http://127.0.0.1:9/jwks", audiences: [api], timeout: 1s }
policy:
  default: allow_authenticated
  rules:
    - { name: health, path: /healthz, allow: anonymous }
    - { name: data-read, host: api.example.org, path: /data, methods: [GET, HEAD], require: { scopes: ["read:data"] } }
    - { name: data-write, host: api.example.org, path: /data, methods: [POST, PUT, DELETE], require: { scopes: ["write:data"] } }
    - { name: compute, host: compute.example.org, allow: anonymous }
    - { name: admin, path: /admin, require: { roles: [admin] } }
    - { name: slow-glob, path: "/x/**/**/**/**/y", require: { roles: [admin] } }
"#;

/// authgate, nginx and the recording upstream, with a reader token (scope read:data) of
/// a user who is not an admin.
struct Site {
    authgate: Authgate,
    echo: Echo,
    nginx: Nginx,
    reader: String,
    _dir: tempfile::TempDir,
}

async fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SECTIONS);
    add_user(&config, &["bob", "--roles", "staff"], "bob-password");
    let reader = create_token(&config, &["--user", "bob", "--scopes", "read:data"]);
    let authgate = Authgate::start(&config);
    let echo = Echo::start().await;
    let nginx = Nginx::start(
        dir.path(),
        "deploy/nginx/authgate.conf",
        authgate.data,
        echo.addr,
    );
    Site {
        authgate,
        echo,
        nginx,
        reader,
        _dir: dir,
    }
}

impl Site {
    /// Sends `request_line` and `headers` raw to nginx; (status, head, body).
    async fn raw(&self, request_line: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
        let mut request = format!("{request_line}\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            request.push_str("Host: api.example.org\r\n");
        }
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("Connection: close\r\n\r\n");
        raw_request(self.nginx.addr, request.as_bytes()).await
    }

    /// Asserts that `request_line` with `headers` gets `status` and that the upstream did
    /// not see it.
    async fn refused(&self, request_line: &str, headers: &[(&str, &str)], status: u16) {
        let before = self.echo.served_count();
        let (got, head, body) = self.raw(request_line, headers).await;
        assert_eq!(got, status, "{request_line} {headers:?}\n{head}\n{body}");
        assert_eq!(
            self.echo.served_count(),
            before,
            "{request_line} {headers:?} reached the upstream"
        );
    }

    /// Asserts that `request_line` passes and the upstream served exactly it.
    async fn served(&self, request_line: &str, headers: &[(&str, &str)]) -> Value {
        let (status, head, body) = self.raw(request_line, headers).await;
        assert_eq!(status, 200, "{request_line} {headers:?}\n{head}\n{body}");
        let mut parts = request_line.split(' ');
        let (method, target) = (parts.next().unwrap(), parts.next().unwrap());
        assert_eq!(
            self.echo.last_served(),
            Some((method.to_owned(), target.to_owned())),
            "the upstream served something else than was judged"
        );
        serde_json::from_str(&body).unwrap()
    }

    /// authgate's own verdict for a target asked directly, as nginx would ask.
    async fn verdict(&self, method: &str, target: &str, token: Option<&str>) -> u16 {
        let mut req = reqwest::Client::new()
            .get(self.authgate.url("/auth"))
            .header("Host", "api.example.org")
            .header("X-Original-Method", method)
            .header("X-Original-URI", target);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap().status().as_u16()
    }
}

/// Issue 10 items 1-3 and issue 19 items 1-3: the client never chooses which header family,
/// host or method is judged.
#[tokio::test(flavor = "multi_thread")]
async fn client_headers_cannot_choose_what_is_judged() {
    let s = site().await;
    let reader = format!("Bearer {}", s.reader);
    let reader = reader.as_str();

    // Another family's URL, even one naming another host through userinfo.
    for url in [
        "http://x/healthz",
        "http://api.example.org@compute.example.org/healthz",
    ] {
        s.refused("GET /admin/users HTTP/1.1", &[("X-Original-URL", url)], 401)
            .await;
    }
    // X-Forwarded-Host does not outrank the host nginx routed on.
    s.refused(
        "DELETE /data/42 HTTP/1.1",
        &[("X-Forwarded-Host", "compute.example.org")],
        401,
    )
    .await;
    s.refused(
        "DELETE /data/42 HTTP/1.1",
        &[
            ("X-Forwarded-Host", "compute.example.org"),
            ("Authorization", reader),
        ],
        403,
    )
    .await;
    // The forward-auth family, and the nginx family itself, sent by the client.
    s.refused(
        "DELETE /admin HTTP/1.1",
        &[
            ("X-Forwarded-Uri", "/healthz"),
            ("X-Forwarded-Method", "GET"),
            ("X-Original-URI", "/healthz"),
            ("X-Original-Method", "GET"),
        ],
        401,
    )
    .await;
    s.refused(
        "DELETE /data HTTP/1.1",
        &[("X-Original-Method", "GET"), ("Authorization", reader)],
        403,
    )
    .await;
    // Method overrides naming another method: 400, not judged as the outer method.
    s.refused(
        "POST /data HTTP/1.1",
        &[
            ("X-HTTP-Method-Override", "DELETE"),
            ("Authorization", reader),
        ],
        400,
    )
    .await;
    s.refused(
        "GET /data?_method=DELETE HTTP/1.1",
        &[("Authorization", reader)],
        400,
    )
    .await;
    // Unknown hosts, absolute-form targets naming one, and userinfo in Host: the default
    // server refuses them before authgate or the app.
    s.refused(
        "GET /admin/users HTTP/1.1",
        &[("Host", "www.example.org")],
        421,
    )
    .await;
    s.refused(
        "GET http://www.example.org/admin/users HTTP/1.1",
        &[("Host", "api.example.org")],
        421,
    )
    .await;
    let before = s.echo.served_count();
    let (status, _, _) = s
        .raw(
            "GET /admin/users HTTP/1.1",
            &[("Host", "api.example.org:1@www.example.org")],
        )
        .await;
    assert!([400, 401, 421].contains(&status), "{status}");
    assert_eq!(s.echo.served_count(), before);
    // A trailing dot is the same host: the api.example.org rules apply.
    s.refused(
        "DELETE /data/42 HTTP/1.1",
        &[("Host", "api.example.org."), ("Authorization", reader)],
        403,
    )
    .await;
    // A host the example does not serve is refused even where a rule would let it pass.
    s.refused(
        "DELETE /data/42 HTTP/1.1",
        &[("Host", "compute.example.org")],
        421,
    )
    .await;

    // Every credential form authgate accepts stays at the edge.
    for name in ["X-Auth-Token", "X-Storage-Token"] {
        let seen = s
            .served(
                "GET /data/1 HTTP/1.1",
                &[(name, &s.reader), ("X-Service-Token", "agt_not-a-real-one")],
            )
            .await;
        for gone in ["x-auth-token", "x-storage-token", "x-service-token"] {
            assert!(
                seen.get(gone).is_none(),
                "{name}: {gone} reached the upstream"
            );
        }
        assert!(
            seen["authorization"][0]
                .as_str()
                .unwrap()
                .starts_with("Bearer ey")
        );
    }
}

/// Issue 10 item 8: a scoped token never passes a rule its grant does not cover, even when
/// its owner would.
#[tokio::test(flavor = "multi_thread")]
async fn scoped_tokens_are_least_privilege_through_nginx() {
    let s = site().await;
    let config = s.authgate.config.clone();
    add_user(
        &config,
        &["carol", "--roles", "admin,staff"],
        "carol-password",
    );
    let scoped = create_token(&config, &["--user", "carol", "--scopes", "read:data"]);
    let full = create_token(&config, &["--user", "carol"]);
    let scoped = format!("Bearer {scoped}");
    let full = format!("Bearer {full}");
    s.refused(
        "GET /admin/users HTTP/1.1",
        &[("Authorization", &scoped)],
        403,
    )
    .await;
    s.served("GET /data/1 HTTP/1.1", &[("Authorization", &scoped)])
        .await;
    let seen = s
        .served("GET /admin/users HTTP/1.1", &[("Authorization", &full)])
        .await;
    assert_eq!(seen["x-auth-request-roles"][0], "admin,staff");
}

/// Issue 10 items 4-5 and issue 19 item 2: a target the upstream could route differently is
/// refused; what passes is served exactly as judged.
#[tokio::test(flavor = "multi_thread")]
async fn paths_are_refused_or_served_as_judged() {
    let s = site().await;
    let reader = format!("Bearer {}", s.reader);
    for target in [
        "/admin/%2e%2e/healthz",
        "/admin/%2E%2e/healthz",
        "/admin/users%2F..%2F..%2Fhealthz",
        "/admin/../healthz",
        "/admin/./users",
        "/healthz/..;/admin",
        "/healthz/%2e%2e;/admin",
        "/admin;x",
        "/admin%3bx",
        "/admin.",
        "/admin/users.",
        "/admin//..//healthz",
        "//admin",
        "/admin%20/users",
        "/%252e%252e/admin",
        "/healthz/%252e%252e/admin",
        "/admin%252fusers",
        "/admin%5cusers",
        "/healthz%23/../admin",
        "/admin%3f/x",
        "/%c0%ae%c0%ae/admin",
        "/%ff",
    ] {
        // Without a credential (where /healthz would pass anonymously) and with one (where
        // default allow_authenticated would pass): 400 both ways, never the upstream.
        s.refused(&format!("GET {target} HTTP/1.1"), &[], 400).await;
        s.refused(
            &format!("GET {target} HTTP/1.1"),
            &[("Authorization", &reader)],
            400,
        )
        .await;
    }
    // A raw '#' is not a fragment in a request line; nginx and authgate both refuse it.
    let before = s.echo.served_count();
    let (status, _, _) = s.raw("GET /healthz#/../admin/users HTTP/1.1", &[]).await;
    assert_eq!(status, 400);
    assert_eq!(s.echo.served_count(), before);

    // Paths are compared case-sensitively (policy.path_case: sensitive, the default), as
    // the upstream routes them: /ADMIN is another resource, judged and served as /ADMIN.
    s.served("GET /ADMIN HTTP/1.1", &[("Authorization", &reader)])
        .await;
    s.refused("GET /admin HTTP/1.1", &[("Authorization", &reader)], 403)
        .await;
    // Percent-encoded ordinary characters are judged decoded, as the upstream decodes them.
    s.refused("GET /%61dmin HTTP/1.1", &[("Authorization", &reader)], 403)
        .await;
    s.served("GET /%64ata/1 HTTP/1.1", &[("Authorization", &reader)])
        .await;
}

/// Issue 10 "differential path test": several hundred generated request targets through
/// nginx. A refused target never reaches the upstream; a served one is served exactly as
/// sent, authgate's own verdict for it is the same, and no normalising upstream would
/// read it as a path under /admin (the reader is no admin).
#[tokio::test(flavor = "multi_thread")]
async fn differential_path_corpus() {
    let s = site().await;
    let reader = format!("Bearer {}", s.reader);
    let corpus = corpus();
    let (mut served, mut refused) = (0, 0);
    for target in &corpus {
        let before = s.echo.served_count();
        let line = format!("GET {target} HTTP/1.1");
        let (status, head, _) = s.raw(&line, &[("Authorization", &reader)]).await;
        match status {
            200 => {
                served += 1;
                assert_eq!(
                    s.echo.last_served(),
                    Some(("GET".to_owned(), target.clone())),
                    "{target}"
                );
                assert_eq!(
                    s.verdict("GET", target, Some(&s.reader)).await,
                    200,
                    "{target}"
                );
                let upstream_view = normalise_like_a_lenient_upstream(target);
                assert!(
                    !(upstream_view == "/admin" || upstream_view.starts_with("/admin/")),
                    "{target} passed but a lenient upstream serves {upstream_view}"
                );
            }
            400 | 403 | 404 => {
                refused += 1;
                assert_eq!(
                    s.echo.served_count(),
                    before,
                    "{target} reached the upstream"
                );
            }
            other => panic!("{target}: unexpected {other}\n{head}"),
        }
    }
    // The corpus exercises both sides.
    assert!(
        served >= 20 && refused >= 100,
        "{served} served, {refused} refused"
    );
}

/// Request targets built from pieces that proxies and frameworks are known to read
/// differently, plus pseudo-random ones from the same alphabet.
fn corpus() -> Vec<String> {
    let heads = ["/healthz", "/data", "/admin", "/static", ""];
    let joins = [
        "/",
        "//",
        "/./",
        "/../",
        "/%2e/",
        "/%2e%2e/",
        "/%2E%2E/",
        "/.%2e/",
        "%2f",
        "%2F",
        "%5c",
        "\\",
        ";",
        "/..;/",
        "%3b",
        "%00",
        "%0a",
        "%20",
        "%09",
        "%c0%af",
        "%c0%ae",
        "%25",
        "%252e",
        "%252f",
        "%23",
        "%3f",
        ".",
        "/.",
        "/..",
        "%ff",
        "/%61",
        "/~",
        "/%7e",
        "/a%2fb/",
        "/%2e%2e%2f",
    ];
    let tails = ["admin", "admin/users", "healthz", "data/1", "ADMIN", ""];
    let mut out = Vec::new();
    for head in heads {
        for join in joins {
            for tail in tails {
                let t = format!("{head}{join}{tail}");
                if t.starts_with('/') {
                    out.push(t);
                }
            }
        }
    }
    // xorshift: reproducible without a dependency.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let alphabet: Vec<&str> = [
        "/", ".", "%", "2", "e", "E", "f", "5", "c", ";", "a", "d", "m", "i", "n",
    ]
    .into_iter()
    .chain(joins)
    .collect();
    for _ in 0..300 {
        let mut t = String::from("/");
        for _ in 0..6 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            t.push_str(alphabet[(state % alphabet.len() as u64) as usize]);
        }
        out.push(t);
    }
    // nginx would answer some targets itself; keep only what fits a request line.
    out.retain(|t| !t.contains(' ') && !t.bytes().any(|b| b.is_ascii_control()));
    out.sort();
    out.dedup();
    out
}

/// What a lenient upstream (a framework that decodes repeatedly, treats `\` as `/`, drops
/// `;` parameters, trims and strips trailing dots, collapses `//` and resolves dot
/// segments) would route `target` to. Case is kept: for an upstream that ignores case,
/// authgate's `policy.path_case: insensitive` is the setting (tested in the policy tests).
fn normalise_like_a_lenient_upstream(target: &str) -> String {
    let mut path = target.split(['?', '#']).next().unwrap_or("").to_owned();
    for _ in 0..4 {
        path = percent_encoding::percent_decode_str(&path)
            .decode_utf8_lossy()
            .into_owned();
    }
    let path = path.replace('\\', "/");
    let mut segments: Vec<String> = Vec::new();
    for segment in path.split('/') {
        let segment = segment.split(';').next().unwrap_or("").trim();
        let segment = if segment.chars().all(|c| c == '.') {
            segment
        } else {
            segment.trim_end_matches('.')
        };
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s.to_owned()),
        }
    }
    format!("/{}", segments.join("/"))
}

/// Issue 19 item 4 and issue 10 item 6: statuses other than 2xx/401/403 reach the client as
/// authgate meant them (nginx would make them 500), and the Basic limit holds under 200
/// parallel guesses.
#[tokio::test(flavor = "multi_thread")]
async fn statuses_reach_the_client_through_nginx() {
    let s = site().await;
    let http = s.nginx.client();

    // 400: a target authgate refuses to judge.
    let (status, head, body) = s.raw("GET /data/../admin HTTP/1.1", &[]).await;
    assert_eq!(status, 400, "{head}");
    let v: Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(v["error"], "bad_request");
    // 431: headers larger than server.max_header_bytes (4096 here), which nginx accepts.
    let filler: Vec<(String, String)> = (0..20)
        .map(|i| (format!("X-Filler-{i}"), "v".repeat(250)))
        .collect();
    let filler: Vec<(&str, &str)> = filler
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    s.refused("GET /data HTTP/1.1", &filler, 431).await;
    // 503: the IdP's key set cannot be fetched, so a JWT from it cannot be checked.
    let header = base64url(br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#);
    let payload =
        base64url(br#"{"iss":"https://idp.test","sub":"x","aud":"api","exp":4102444800}"#);
    let jwt = format!("Bearer {header}.{payload}.c2ln");
    s.refused("GET /data HTTP/1.1", &[("Authorization", &jwt)], 503)
        .await;

    // 200 wrong passwords at once: at most max_failures (5) are checked (401); the rest
    // get 429 with Retry-After, none a 500 or a 200.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let http = http.clone();
        let url = s.nginx.url("/data");
        tasks.push(tokio::spawn(async move {
            let resp = http
                .get(url)
                .basic_auth("bob", Some(format!("guess-{i}")))
                .send()
                .await
                .unwrap();
            let retry = resp.headers().get("retry-after").is_some();
            (resp.status().as_u16(), retry)
        }));
    }
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    for t in tasks {
        let (status, retry) = t.await.unwrap();
        *counts.entry(status).or_default() += 1;
        if status == 429 {
            assert!(retry, "429 without Retry-After");
        }
    }
    let checked = counts.get(&401).copied().unwrap_or(0);
    assert!(checked <= 5, "{counts:?}");
    assert_eq!(
        checked + counts.get(&429).copied().unwrap_or(0),
        200,
        "{counts:?}"
    );
    // The right password is refused too while the window lasts, from this address (nginx
    // passes 127.0.0.1 for every client here); bob's own count across addresses (50 by
    // default) is far from full.
    let resp = http
        .get(s.nginx.url("/data"))
        .basic_auth("bob", Some("bob-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
}

/// Issue 10 item 7: a rule with nested `**` and a long path cannot freeze the listeners.
#[tokio::test(flavor = "multi_thread")]
async fn pathological_globs_answer_promptly() {
    let s = site().await;
    let http = reqwest::Client::builder()
        .resolve("api.example.org", s.nginx.addr)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let path = format!("/x/{}b", "a/".repeat(600));
    let reader = s.reader.clone();
    let one = http.get(s.nginx.url(&path)).bearer_auth(&reader).send();
    let two = http.get(s.nginx.url(&path)).bearer_auth(&reader).send();
    let (one, two) = tokio::join!(one, two);
    // The path matches no rule of the reader's (default allow_authenticated): 200.
    assert_eq!(one.unwrap().status(), 200);
    assert_eq!(two.unwrap().status(), 200);
    let live = reqwest::get(s.authgate.admin_url("/livez")).await.unwrap();
    assert_eq!(live.status(), 200);
    // And the glob rule itself still matches what it should.
    let resp = http
        .get(s.nginx.url("/x/a/b/c/y"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
