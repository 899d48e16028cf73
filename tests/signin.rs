//! Browser sign-in end to end: real nginx running `deploy/nginx/signin.conf` (and real
//! Caddy running `deploy/caddy/Caddyfile`), authgate with
//! a `login` section, the real OpenID provider (npm oidc-provider, its `web` client) and a
//! scripted browser (a cookie jar): protected URL -> IdP login and consent -> back at the
//! original URL with the minted JWT upstream; sign-out; back-channel logout; bad cookies,
//! a replayed `state`, open redirects; one refresh under 100 concurrent requests; two
//! issuers.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::cookie::{CookieStore, Jar};
use serde_json::{Value, json};

use common::caddy::Caddy;
use common::oidc::Oidc;
use common::{Authgate, Echo, Nginx, free_port, verify_jwt, write_config};

/// The proxy in front of the site.
enum Proxy {
    Nginx(Nginx),
    Caddy(Caddy),
}

impl Proxy {
    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Self::Nginx(n) => n.addr,
            Self::Caddy(c) => c.addr,
        }
    }
}

const HTML: &str = "text/html,application/xhtml+xml";

/// One protected site and what it takes.
struct Site {
    authgate: Authgate,
    echo: Echo,
    proxy: Proxy,
    idps: Vec<Oidc>,
    jar: Arc<Jar>,
    /// Follows every redirect (the browser).
    browser: reqwest::Client,
    /// Stops at every redirect (to look at each hop), same cookies.
    step: reqwest::Client,
}

impl Site {
    fn url(&self, path: &str) -> String {
        format!("http://api.example.org:{}{path}", self.proxy.addr().port())
    }

    /// The browser's cookies for the site, as it would send them.
    fn cookies(&self) -> String {
        self.jar
            .cookies(&self.url("/").parse().unwrap())
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    /// The session cookie's `name=value`.
    fn session_cookie(&self) -> String {
        self.cookies()
            .split("; ")
            .find(|c| c.starts_with("authgate="))
            .unwrap_or_else(|| panic!("no session cookie in {:?}", self.cookies()))
            .to_owned()
    }

    /// `GET path` at nginx with `cookie` as the only cookie, as an API client (no
    /// redirect): the status.
    async fn status_with(&self, path: &str, cookie: &str) -> u16 {
        reqwest::Client::builder()
            .resolve("api.example.org", self.proxy.addr())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(self.url(path))
            .header("Cookie", cookie)
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// The site with `issuers` IdPs (named a, b, ...; the first is `main` when alone) and
/// `login_extra` added to the login section.
async fn site(dir: &Path, issuers: usize, login_extra: &str, access_ttl: Option<u64>) -> Site {
    site_behind(dir, false, issuers, login_extra, access_ttl, "", "").await
}

/// As [`site`], behind Caddy (`caddy`) or nginx, on the embedded store or on `store` (a
/// whole `store:` line).
async fn site_behind(
    dir: &Path,
    caddy: bool,
    issuers: usize,
    login_extra: &str,
    access_ttl: Option<u64>,
    issuer_extra: &str,
    store: &str,
) -> Site {
    let (ng_port, ag_port) = (free_port(), free_port());
    let base = format!("http://api.example.org:{ng_port}");
    let mut idps = Vec::new();
    let mut entries = String::new();
    for i in 0..issuers {
        let mut env = vec![
            ("OIDC_WEB_REDIRECT", format!("{base}/oauth2/callback")),
            ("OIDC_WEB_POST_LOGOUT", format!("{base}/")),
            (
                "OIDC_WEB_BACKCHANNEL",
                format!("http://127.0.0.1:{ag_port}/oauth2/backchannel-logout"),
            ),
        ];
        if let Some(ttl) = access_ttl {
            env.push(("OIDC_ACCESS_TTL", ttl.to_string()));
        }
        let idp = Oidc::start_env(free_port(), &dir.join(format!("idp{i}.json")), &env);
        let name = if issuers == 1 {
            "main".to_owned()
        } else {
            ((b'a' + i as u8) as char).to_string()
        };
        entries.push_str(&format!(
            "      - {{ name: {name}, display_name: \"IdP {name}\", issuer: \"{}\", client_id: web, client_secret: web-secret, scopes: [openid, offline_access]{} }}\n",
            idp.issuer, issuer_extra
        ));
        idps.push(idp);
    }
    let sections = format!(
        "server: {{ listen: \"127.0.0.1:{ag_port}\", trusted_proxies: [\"127.0.0.1/32\"], \
           signin_url: \"{base}/oauth2/start\", redirect_hosts: [api.example.org] }}\n\
         login:\n  redirect_url: \"{base}/oauth2/callback\"\n  cookie: {{ secure: false }}\n{login_extra}\
           \n  issuers:\n{entries}\
         policy:\n  default: allow_authenticated\n  rules:\n    - {{ name: admin, host: api.example.org, path: /admin, require: {{ roles: [admin] }} }}\n"
    );
    let config = write_config(dir, &format!("{store}{sections}"));
    let authgate = Authgate::start(&config);
    let echo = Echo::start().await;
    let proxy = if caddy {
        Proxy::Caddy(Caddy::start_on(
            dir,
            "deploy/caddy/Caddyfile",
            authgate.data,
            echo.addr,
            ng_port,
        ))
    } else {
        Proxy::Nginx(Nginx::start_on(
            dir,
            "deploy/nginx/signin.conf",
            authgate.data,
            echo.addr,
            ng_port,
        ))
    };
    let jar = Arc::new(Jar::default());
    let client = |redirect| {
        reqwest::Client::builder()
            .resolve("api.example.org", proxy.addr())
            .cookie_provider(jar.clone())
            .redirect(redirect)
            .build()
            .unwrap()
    };
    Site {
        browser: client(reqwest::redirect::Policy::limited(20)),
        step: client(reqwest::redirect::Policy::none()),
        authgate,
        echo,
        proxy,
        idps,
        jar,
    }
}

/// Logs `user` in on the IdP's pages that `page` (the login form) starts, with consent;
/// the browser's last answer (after every redirect).
async fn log_in_at_idp(site: &Site, page: reqwest::Response, user: &str) -> reqwest::Response {
    assert_eq!(page.status(), 200, "login page at {}", page.url());
    let login_url = page.url().clone();
    assert!(
        site.idps
            .iter()
            .any(|i| login_url.as_str().starts_with(&i.issuer)),
        "{login_url}"
    );
    let consent = site
        .browser
        .post(login_url)
        .form(&[("prompt", "login"), ("login", user), ("password", "x")])
        .send()
        .await
        .unwrap();
    if !consent.url().path().starts_with("/interaction/") {
        // Consent was given before: already back.
        return consent;
    }
    site.browser
        .post(consent.url().clone())
        .form(&[("prompt", "consent")])
        .send()
        .await
        .unwrap()
}

/// The browser opens `path`, signs in as `user`, and lands back on it: the upstream's echo.
async fn sign_in(site: &Site, path: &str, user: &str) -> Value {
    let page = site
        .browser
        .get(site.url(path))
        .header("Accept", HTML)
        .send()
        .await
        .unwrap();
    // Still signed in at the IdP: straight back, no login page.
    let back = if page.url().as_str() == site.url(path) {
        page
    } else {
        log_in_at_idp(site, page, user).await
    };
    assert_eq!(back.status(), 200, "back at {}", back.url());
    assert_eq!(back.url().as_str(), site.url(path));
    back.json().await.unwrap()
}

/// The JWT the upstream received, verified, with its claims.
async fn upstream_claims(site: &Site, echo: &Value) -> Value {
    let auth = echo["authorization"][0].as_str().expect("a JWT upstream");
    let jwt = auth.strip_prefix("Bearer ").unwrap();
    verify_jwt(&site.authgate, jwt, "api").await
}

/// Protected URL -> the IdP's login and consent -> back at the original URL (query kept),
/// where the upstream sees a JWT minted for that user and never the session cookie; the
/// cookie answers /oauth2/userinfo; a policy refusal is a 403, not a sign-in loop; sign-out
/// clears the cookie and ends the session at once: the same cookie is 401 and the next
/// navigation goes to sign in.
#[tokio::test(flavor = "multi_thread")]
async fn sign_in_through_nginx_then_sign_out() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path(), 1, "", None).await;

    // The first hops: 302 to /oauth2/start with the original URL, then 302 to the IdP with
    // PKCE S256, state and nonce, and a pre-login cookie.
    let original = "/data/x?a=1&b=%2F";
    let first = site
        .step
        .get(site.url(original))
        .header("Accept", HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 302);
    let start = first.headers()["location"].to_str().unwrap().to_owned();
    assert!(start.starts_with(&site.url("/oauth2/start?rd=")), "{start}");
    let to_idp = site.step.get(&start).send().await.unwrap();
    assert_eq!(to_idp.status(), 302);
    let authorize = to_idp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        authorize.starts_with(&format!("{}/auth?", site.idps[0].issuer)),
        "{authorize}"
    );
    let set_cookie = to_idp.headers()["set-cookie"].to_str().unwrap();
    assert!(set_cookie.starts_with("authgate-login="), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"));
    let params: Vec<(String, String)> = reqwest::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {authorize}"))
    };
    assert_eq!(param("code_challenge_method"), "S256");
    assert_eq!(param("code_challenge").len(), 43);
    assert_eq!(param("client_id"), "web");
    assert!(param("state").len() >= 43 && param("nonce").len() >= 43);

    let echo = sign_in(&site, original, "alice").await;
    assert_eq!(echo[":path"], original);
    let claims = upstream_claims(&site, &echo).await;
    assert_eq!(claims["provider"], "session");
    assert_eq!(claims["username"], "alice");
    assert_eq!(
        claims["sub"],
        format!("oidc:{}:alice", site.idps[0].issuer.replace(':', "%3A"))
    );
    // The app never sees authgate's cookie.
    let upstream_cookies = echo["cookie"].to_string();
    assert!(
        !upstream_cookies.contains("authgate="),
        "{upstream_cookies}"
    );
    let cookie = site.session_cookie();
    assert_eq!(cookie.len(), "authgate=".len() + 43, "{cookie}");
    assert_eq!(site.status_with("/data", &cookie).await, 200);
    // Signed in, refused by the policy: 403, even for a browser navigation.
    let admin = site
        .step
        .get(site.url("/admin"))
        .header("Accept", HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 403);

    let me: Value = site
        .step
        .get(site.url("/oauth2/userinfo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "alice");
    assert_eq!(me["provider"], "session");

    // A cross-site sign-out is refused and changes nothing.
    let cross = site
        .step
        .get(site.url("/oauth2/sign_out"))
        .header("Sec-Fetch-Site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    assert_eq!(site.status_with("/data", &cookie).await, 200);

    let out = site
        .step
        .get(site.url("/oauth2/sign_out"))
        .header("Sec-Fetch-Site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 302);
    assert_eq!(out.headers()["location"], "/");
    let cleared = out.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("authgate=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    // At once (the cache entry went with the session), and for any replay of the cookie.
    assert_eq!(site.status_with("/data", &cookie).await, 401);
    let next = site
        .step
        .get(site.url("/data"))
        .header("Accept", HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), 302);
    assert!(
        next.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with(&site.url("/oauth2/start?rd="))
    );
    let served = site.echo.served_count();
    assert_eq!(site.status_with("/data", &cookie).await, 401);
    assert_eq!(
        site.echo.served_count(),
        served,
        "nothing served after sign-out"
    );
}

/// Tampered, unknown and malformed cookies are 401 and never reach the app.
#[tokio::test(flavor = "multi_thread")]
async fn bad_cookies_are_401() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path(), 1, "", None).await;
    sign_in(&site, "/", "carol").await;
    let cookie = site.session_cookie();
    assert_eq!(site.status_with("/data", &cookie).await, 200);
    let served = site.echo.served_count();
    let value = cookie.strip_prefix("authgate=").unwrap();
    let flipped: String = value
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 5 {
                if c == 'A' { 'B' } else { 'A' }
            } else {
                c
            }
        })
        .collect();
    for bad in [
        format!("authgate={flipped}"),
        format!("authgate={}", "A".repeat(43)),
        format!("authgate={value}x"),
        "authgate=".to_owned(),
        format!("authgate={value}; authgate={value}"),
    ] {
        assert_eq!(site.status_with("/data", &bad).await, 401, "{bad}");
    }
    assert_eq!(site.echo.served_count(), served);
}

/// The IdP's answer can be used once: the same callback URL again ends on the error page.
/// `rd` that would leave the allowed hosts ends at `/` after sign-in.
#[tokio::test(flavor = "multi_thread")]
async fn replayed_state_and_open_redirects() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path(), 1, "", None).await;
    sign_in(&site, "/", "dave").await;
    // Signed in at the IdP: a new sign-in goes straight back to the callback.
    let until_callback = reqwest::Client::builder()
        .resolve("api.example.org", site.proxy.addr())
        .cookie_provider(site.jar.clone())
        .redirect(reqwest::redirect::Policy::custom(|a| {
            if a.url().path() == "/oauth2/callback" {
                a.stop()
            } else {
                a.follow()
            }
        }))
        .build()
        .unwrap();
    let cases = [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "https://api.example.org@evil.example/",
        "HTTPS://EVIL.EXAMPLE/",
        "/\t/evil.example",
        "%2F%2Fevil.example",
    ];
    for (i, rd) in cases.iter().enumerate() {
        let start = format!(
            "/oauth2/start?rd={}",
            percent_encoding::utf8_percent_encode(rd, percent_encoding::NON_ALPHANUMERIC)
        );
        let at_callback = until_callback.get(site.url(&start)).send().await.unwrap();
        assert_eq!(at_callback.status(), 303, "{rd}: {}", at_callback.url());
        let callback = at_callback.headers()["location"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            callback.starts_with(&site.url("/oauth2/callback?")),
            "{callback}"
        );
        let back = site.step.get(&callback).send().await.unwrap();
        assert_eq!(back.status(), 302, "{rd}");
        assert_eq!(back.headers()["location"], "/", "{rd}");
        if i == 0 {
            // The same answer again: refused, on a readable page, no session made.
            let again = site.step.get(&callback).send().await.unwrap();
            assert_eq!(again.status(), 400);
            assert!(again.headers().get("set-cookie").is_none());
            let text = again.text().await.unwrap();
            assert!(text.contains("Sign-in failed"), "{text}");
        }
    }
    // An allowed host and a plain path are kept.
    for rd in [site.url("/kept?x=1"), "/plain/path".to_owned()] {
        let start = format!(
            "/oauth2/start?rd={}",
            percent_encoding::utf8_percent_encode(&rd, percent_encoding::NON_ALPHANUMERIC)
        );
        let at_callback = until_callback.get(site.url(&start)).send().await.unwrap();
        let callback = at_callback.headers()["location"]
            .to_str()
            .unwrap()
            .to_owned();
        let back = site.step.get(&callback).send().await.unwrap();
        assert_eq!(back.headers()["location"].to_str().unwrap(), rd);
    }
}

/// The IdP refuses the sign-in (`error=access_denied`): a readable error page.
#[tokio::test(flavor = "multi_thread")]
async fn idp_error_ends_on_an_error_page() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path(), 1, "", None).await;
    let to_idp = site
        .step
        .get(site.url("/oauth2/start?rd=%2F"))
        .send()
        .await
        .unwrap();
    let authorize = reqwest::Url::parse(to_idp.headers()["location"].to_str().unwrap()).unwrap();
    let state = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let page = site
        .step
        .get(site.url(&format!(
            "/oauth2/callback?error=access_denied&error_description=%3Cscript%3E&state={state}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 403);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let text = page.text().await.unwrap();
    assert!(text.contains("access_denied"), "{text}");
    assert!(!text.contains("<script>"), "{text}");
}

/// Back-channel logout: ending the session at the IdP ends authgate's within a second; a
/// forged logout token (another key), one with a nonce, and a replayed one change nothing.
#[tokio::test(flavor = "multi_thread")]
async fn backchannel_logout() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path(), 1, "", None).await;
    let idp = &site.idps[0];
    sign_in(&site, "/", "erin").await;
    let cookie = site.session_cookie();
    assert_eq!(site.status_with("/data", &cookie).await, 200);

    let post = |token: String| {
        let url = site.authgate.url("/oauth2/backchannel-logout");
        async move {
            reqwest::Client::new()
                .post(url)
                .form(&[("logout_token", token)])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let event = json!({"http://schemas.openid.net/event/backchannel-logout": {}});
    let claims = |jti: &str| json!({"iss": idp.issuer, "aud": "web", "iat": now, "jti": jti, "sub": "erin", "events": event});
    // Signed by another key (a provider of its own), and valid but with a nonce.
    let other = Oidc::start(free_port(), &dir.path().join("other.json"));
    assert_eq!(post(other.sign(&claims("forged"))).await, 400);
    let mut with_nonce = claims("n1");
    with_nonce["nonce"] = json!("x");
    assert_eq!(post(idp.sign(&with_nonce)).await, 400);
    let mut no_event = claims("n2");
    no_event["events"] = json!({});
    assert_eq!(post(idp.sign(&no_event)).await, 400);
    assert_eq!(site.status_with("/data", &cookie).await, 200);

    // The IdP's own logout: its end-session page, confirmed.
    let end = site
        .browser
        .get(format!("{}/session/end", idp.issuer))
        .send()
        .await
        .unwrap();
    assert_eq!(end.status(), 200);
    let html = end.text().await.unwrap();
    let xsrf = html
        .split("name=\"xsrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no xsrf in {html}"))
        .to_owned();
    let confirmed = site
        .browser
        .post(format!("{}/session/end/confirm", idp.issuer))
        .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")])
        .send()
        .await
        .unwrap();
    let ended_at = Instant::now();
    assert!(confirmed.status().is_success(), "{}", confirmed.status());
    let mut status = 0;
    while ended_at.elapsed() < Duration::from_secs(1) {
        status = site.status_with("/data", &cookie).await;
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status,
        401,
        "session still valid 1 s after the IdP's logout; logs:\n{}",
        site.authgate.log_text()
    );

    // A fresh session, ended by a valid token; the same token again is a replay.
    sign_in(&site, "/", "erin").await;
    let cookie = site.session_cookie();
    assert_eq!(site.status_with("/data", &cookie).await, 200);
    let token = idp.sign(&claims("once"));
    assert_eq!(post(token.clone()).await, 200);
    assert_eq!(site.status_with("/data", &cookie).await, 401);
    sign_in(&site, "/", "erin").await;
    let cookie = site.session_cookie();
    assert_eq!(post(token).await, 400, "replayed jti");
    assert_eq!(site.status_with("/data", &cookie).await, 200);
}

/// Two issuers: a chooser page; each signs in its own users, whose subjects differ.
#[tokio::test(flavor = "multi_thread")]
async fn two_issuers() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path(), 2, "", None).await;
    let chooser = site
        .step
        .get(site.url("/oauth2/start?rd=%2Fhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(chooser.status(), 200);
    let html = chooser.text().await.unwrap();
    assert!(
        html.contains("/oauth2/start?issuer=a&amp;rd=%2Fhere"),
        "{html}"
    );
    assert!(
        html.contains("/oauth2/start?issuer=b&amp;rd=%2Fhere"),
        "{html}"
    );
    let mut subjects = Vec::new();
    for (issuer, user) in [("a", "frank"), ("b", "grace")] {
        let page = site
            .browser
            .get(site.url(&format!("/oauth2/start?issuer={issuer}&rd=%2Fp")))
            .send()
            .await
            .unwrap();
        let idp = &site.idps[(issuer == "b") as usize];
        assert!(
            page.url().as_str().starts_with(&idp.issuer),
            "{}",
            page.url()
        );
        let back = log_in_at_idp(&site, page, user).await;
        assert_eq!(back.url().as_str(), site.url("/p"));
        let echo: Value = back.json().await.unwrap();
        let claims = upstream_claims(&site, &echo).await;
        assert_eq!(claims["username"], user);
        assert!(
            claims["sub"]
                .as_str()
                .unwrap()
                .contains(&idp.issuer.replace(':', "%3A")),
            "{claims}"
        );
        subjects.push(claims["sub"].clone());
    }
    assert_ne!(subjects[0], subjects[1]);
}

/// With an access token about to expire, 100 concurrent requests refresh it once (counted
/// at the IdP), and all pass.
#[tokio::test(flavor = "multi_thread")]
async fn one_refresh_under_100_concurrent_requests() {
    let dir = tempfile::tempdir().unwrap();
    // Access tokens live 6 s; refreshed 2 s before: due 3 to 4 s after sign-in (the IdP's
    // expires_in and authgate's clock count whole seconds).
    let site = site(dir.path(), 1, "  refresh_before: 2s\n", Some(6)).await;
    sign_in(&site, "/", "heidi").await;
    let signed_in = Instant::now();
    let cookie = site.session_cookie();
    assert_eq!(site.idps[0].counts().await["refresh"], 0);
    // Until the refresh is due, the cached answer serves (no refresh).
    while signed_in.elapsed() < Duration::from_millis(2500) {
        assert_eq!(site.status_with("/data", &cookie).await, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(site.idps[0].counts().await["refresh"], 0);
    // Past the refresh time (a wait on the clock: the refresh is due by time alone).
    tokio::time::sleep(Duration::from_millis(4300).saturating_sub(signed_in.elapsed())).await;
    let client = reqwest::Client::builder()
        .resolve("api.example.org", site.proxy.addr())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (client, url, cookie) = (client.clone(), site.url("/data"), cookie.clone());
        requests.spawn(async move {
            client
                .get(url)
                .header("Cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let statuses = requests.join_all().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(site.idps[0].counts().await["refresh"], 1);
}

/// The same sign-in through real Caddy (`forward_auth` to `/forward-auth`, which answers the
/// browser with the 302 itself): back at the original URL with the minted JWT upstream;
/// sign-out; the next navigation goes to sign in.
#[tokio::test(flavor = "multi_thread")]
async fn sign_in_through_caddy_then_sign_out() {
    let dir = tempfile::tempdir().unwrap();
    let site = site_behind(dir.path(), true, 1, "", None, "", "").await;
    let first = site
        .step
        .get(site.url("/data?q=1"))
        .header("Accept", HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 302);
    assert!(
        first.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with(&site.url("/oauth2/start?rd=")),
        "{:?}",
        first.headers()["location"]
    );
    let echo = sign_in(&site, "/data?q=1", "ivan").await;
    let upstream_cookies = echo["cookie"].to_string();
    assert!(
        !upstream_cookies.contains("authgate="),
        "{upstream_cookies}"
    );
    let claims = upstream_claims(&site, &echo).await;
    assert_eq!(claims["provider"], "session");
    assert_eq!(claims["username"], "ivan");
    let cookie = site.session_cookie();
    assert_eq!(site.status_with("/data", &cookie).await, 200);
    let out = site
        .step
        .post(site.url("/oauth2/sign_out"))
        .header("Origin", site.url(""))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 302);
    assert_eq!(site.status_with("/data", &cookie).await, 401);
    let next = site
        .step
        .get(site.url("/data"))
        .header("Accept", HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), 302);
}

/// A real browser (headless Chromium): signs in through nginx at the IdP's pages, lands on
/// the protected page (screenshot saved as an artifact; the page shows the upstream's echo
/// with the minted JWT), reads /oauth2/userinfo from the page, then signs out.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_browser_signs_in_and_out() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path(), 1, "", None).await;
    let shot = common::browser::artifacts("signin").join("signed-in.png");
    let _ = std::fs::remove_file(&shot);
    let url = site.url("/app/page?x=1");
    let result = common::browser::run(
        "signin.mjs",
        &json!({
            "url": url,
            "user": "judy",
            "screenshot": shot,
            "signOut": site.url("/oauth2/sign_out?rd=%2F.well-known%2Fjwks.json"),
            "host": "api.example.org",
        }),
    )
    .await;
    assert_eq!(result["signedInUrl"], url.as_str(), "{result}");
    let text = result["text"].as_str().unwrap();
    let echo: Value = serde_json::from_str(text).unwrap_or_else(|_| panic!("{text}"));
    let claims = upstream_claims(&site, &echo).await;
    assert_eq!(claims["username"], "judy");
    assert_eq!(claims["provider"], "session");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 1000,
        "screenshot saved"
    );
    let session = result["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "authgate")
        .unwrap_or_else(|| panic!("{result}"));
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Lax");
    assert_eq!(session["path"], "/");
    assert_eq!(result["me"]["status"], 200);
    assert_eq!(result["me"]["body"]["username"], "judy");
    assert_eq!(
        result["afterSignOut"],
        site.url("/.well-known/jwks.json").as_str()
    );
    assert!(
        !result["left"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "authgate"),
        "{result}"
    );
    assert_eq!(result["meAfter"], 401);
}

/// RP-initiated logout (`end_session: true`): sign-out ends authgate's session and sends
/// the browser on to the IdP's end_session_endpoint with id_token_hint and the registered
/// post_logout_redirect_uri, which the IdP accepts.
#[tokio::test(flavor = "multi_thread")]
async fn sign_out_at_the_idp_too() {
    let dir = tempfile::tempdir().unwrap();
    let site = site_behind(dir.path(), false, 1, "", None, ", end_session: true", "").await;
    sign_in(&site, "/", "kim").await;
    let cookie = site.session_cookie();
    let out = site
        .step
        .get(site.url("/oauth2/sign_out"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 302);
    let location = reqwest::Url::parse(out.headers()["location"].to_str().unwrap()).unwrap();
    assert!(
        location
            .as_str()
            .starts_with(&format!("{}/session/end?", site.idps[0].issuer)),
        "{location}"
    );
    let q: std::collections::HashMap<String, String> =
        location.query_pairs().into_owned().collect();
    assert_eq!(q["post_logout_redirect_uri"], site.url("/"));
    assert_eq!(q["client_id"], "web");
    assert_eq!(q["id_token_hint"].split('.').count(), 3);
    assert_eq!(site.status_with("/data", &cookie).await, 401);
    // The IdP takes the request: its confirmation page.
    let confirm = site.browser.get(location).send().await.unwrap();
    assert_eq!(confirm.status(), 200);
    assert!(confirm.text().await.unwrap().contains("xsrf"));
}

/// A refresh the IdP refuses ends the session: the refresh token (read from authgate's
/// store, where it stays server-side) is revoked at the IdP, and once the access token is
/// due the next answer for the cookie is 401.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_refresh_ends_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path(), 1, "  refresh_before: 2s\n", Some(6)).await;
    sign_in(&site, "/", "leo").await;
    let signed_in = Instant::now();
    let cookie = site.session_cookie();
    let data: String = rusqlite::Connection::open(dir.path().join("authgate.db"))
        .unwrap()
        .query_row("SELECT data FROM sessions", [], |r| r.get(0))
        .unwrap();
    let stored: Value = serde_json::from_str(&data).unwrap();
    let refresh_token = stored["refresh_token"].as_str().expect("a refresh token");
    // Kept server-side only: not in the cookie.
    assert!(!cookie.contains(refresh_token));
    site.idps[0].revoke(refresh_token, "web").await;
    assert_eq!(site.status_with("/data", &cookie).await, 200);
    // Past the refresh time (3 to 4 s after sign-in).
    tokio::time::sleep(Duration::from_millis(4300).saturating_sub(signed_in.elapsed())).await;
    assert_eq!(site.status_with("/data", &cookie).await, 401);
    assert_eq!(
        site.idps[0].counts().await["refresh"],
        0,
        "no refresh granted"
    );
    assert_eq!(site.status_with("/data", &cookie).await, 401);
}

/// A session unused for longer than `idle_timeout` is over (401), while one in use lives on
/// until its absolute `lifetime`.
#[tokio::test(flavor = "multi_thread")]
async fn idle_and_absolute_ends() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path(), 1, "  idle_timeout: 2s\n  lifetime: 5s\n", None).await;
    sign_in(&site, "/", "mia").await;
    let signed_in = Instant::now();
    let cookie = site.session_cookie();
    // In use every 0.5 s: valid past the idle timeout, until the absolute end.
    while signed_in.elapsed() < Duration::from_millis(3500) {
        assert_eq!(site.status_with("/data", &cookie).await, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut status = 200;
    while signed_in.elapsed() < Duration::from_secs(7) && status == 200 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        status = site.status_with("/data", &cookie).await;
    }
    assert_eq!(status, 401, "past the absolute lifetime");
    assert!(
        signed_in.elapsed() >= Duration::from_secs(4),
        "not before its end"
    );

    // A new session left unused for longer than the idle timeout.
    sign_in(&site, "/", "mia").await;
    let cookie = site.session_cookie();
    assert_eq!(site.status_with("/data", &cookie).await, 200);
    // A wait on the clock: idleness is time passing without use.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(
        site.status_with("/data", &cookie).await,
        401,
        "idle past the timeout"
    );
}

/// Several replicas on one Redis store: a session made through one replica (behind nginx)
/// is honoured by another, and sign-out through the first is refused by the other at once
/// (the `session` event drops its cached entry, long before `cache.max_ttl`).
#[tokio::test(flavor = "multi_thread")]
async fn a_session_works_on_every_replica() {
    let redis = common::redis::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "store: {{ type: redis, url: \"{}\" }}\ncache: {{ max_ttl: 5m }}\n",
        redis.url(2)
    );
    let site = site_behind(dir.path(), false, 1, "", None, "", &store).await;
    sign_in(&site, "/data", "alice").await;
    let cookie = site.session_cookie();

    // Replica B: the same configuration on a port of its own, asked directly.
    let text = std::fs::read_to_string(&site.authgate.config).unwrap();
    let listen = format!("listen: \"{}\"", site.authgate.data);
    assert!(text.contains(&listen), "{text}");
    let b_dir = tempfile::tempdir().unwrap();
    let b_config = b_dir.path().join("authgate.yaml");
    std::fs::write(&b_config, text.replace(&listen, "listen: \"127.0.0.1:0\"")).unwrap();
    let b = Authgate::start(&b_config);
    let ask_b = || async {
        reqwest::Client::new()
            .get(b.url("/auth"))
            .header("X-Original-URI", "/data")
            .header("X-Original-Method", "GET")
            .header("Host", "api.example.org")
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap()
    };
    let first = ask_b().await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-auth-request-user"], "alice");

    let out = site
        .step
        .get(site.url("/oauth2/sign_out"))
        .header("Sec-Fetch-Site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 302);
    let signed_out = Instant::now();
    while ask_b().await.status() != 401 {
        assert!(
            signed_out.elapsed() < Duration::from_secs(1),
            "replica B still honours the ended session"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "sign-out seen by the other replica after {:?}",
        signed_out.elapsed()
    );
}

/// The token API takes the browser session as its caller (issue 14 on top of 13): the
/// signed-in user lists and creates their own tokens with the cookie, a cross-origin post
/// carried by the cookie is refused (it is an ambient credential), and the new token works.
#[tokio::test(flavor = "multi_thread")]
async fn the_session_is_a_portal_caller() {
    let dir = tempfile::tempdir().unwrap();
    let portal = "portal: { enabled: true, grantable_scopes: [\"read:data\"] }\n";
    let site = site_behind(dir.path(), false, 1, "", None, "", portal).await;
    sign_in(&site, "/data", "alice").await;
    let cookie = site.session_cookie();
    let origin = format!("http://{}", site.authgate.data);
    let api = reqwest::Client::new();
    let list: Value = api
        .get(site.authgate.url("/api/tokens"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The owner is the session's subject: the issuer's user, not a local one.
    let owner = list["owner"].as_str().unwrap().to_owned();
    assert!(
        owner.starts_with("oidc:") && owner.ends_with(":alice"),
        "{owner}"
    );
    assert_eq!(list["tokens"], json!([]));
    let body = json!({"name": "from-session", "scopes": ["read:data"], "expires_in": "1d"});
    let forged = api
        .post(site.authgate.url("/api/tokens"))
        .header("Cookie", &cookie)
        .header("Origin", "https://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let created = api
        .post(site.authgate.url("/api/tokens"))
        .header("Cookie", &cookie)
        .header("Origin", &origin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap();
    let decided = api
        .get(site.authgate.url("/auth"))
        .header("X-Original-URI", "/data")
        .header("X-Original-Method", "GET")
        .header("Host", "api.example.org")
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), 200);
    let jwt = decided.headers()["authorization"].to_str().unwrap();
    let claims = verify_jwt(&site.authgate, jwt.strip_prefix("Bearer ").unwrap(), "api").await;
    assert_eq!(claims["sub"], owner.as_str());
    let list: Value = api
        .get(site.authgate.url("/api/tokens"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["tokens"].as_array().unwrap().len(), 1, "{list}");
}
