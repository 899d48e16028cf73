//! A fake Astakos, written from ../shared/protocols/ASTAKOS.md (no Astakos can be installed
//! here): `POST /astakos/identity/v2.0/tokens` (0.14+) and `GET /astakos/im/authenticate`
//! (0.13), with their exact JSON shapes, error bodies, status codes and headers. It counts
//! calls, remembers the `X-Client-IP` it was sent, can fail the next N calls with 503, and can
//! be stopped (connections refused) and started again on the same address.
//!
//! Also a client, [`AstakosClient`], written from the same document and astakosclient's
//! behaviour: what a synnefo service does with `ASTAKOS_AUTH_URL` and its token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// A user as Astakos keeps it.
#[derive(Clone, Debug)]
pub struct AstakosUser {
    pub uuid: String,
    pub name: String,
    pub email: String,
    pub groups: Vec<String>,
    pub projects: Vec<String>,
    pub default_project: String,
    pub active: bool,
    pub signed_terms: bool,
    /// Unix seconds.
    pub token_expires: i64,
}

#[derive(Default)]
pub struct AstakosState {
    pub tokens: Mutex<HashMap<String, AstakosUser>>,
    /// Answer 503 to this many next calls.
    pub fail_next: AtomicU32,
    /// Answer 400 badRequest to this many next calls.
    pub bad_request_next: AtomicU32,
    /// Wait this many milliseconds before answering.
    pub delay_ms: AtomicU32,
    pub calls: AtomicU32,
    pub client_ips: Mutex<Vec<String>>,
}

pub struct FakeAstakos {
    pub addr: SocketAddr,
    pub state: Arc<AstakosState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAstakos {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeAstakos {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<AstakosState> = Arc::default();
        let task = serve(listener, state.clone());
        Self { addr, state, task }
    }

    /// Stops listening and closes every open connection: calls are refused.
    pub async fn stop(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Listens again on the same address, with the same state.
    pub async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.task = serve(listener, self.state.clone());
    }

    /// The base URL (`ASTAKOS_BASE_URL`).
    pub fn base_url(&self) -> String {
        format!("http://{}/astakos", self.addr)
    }

    pub fn add_token(&self, token: &str, user: AstakosUser) {
        self.state
            .tokens
            .lock()
            .unwrap()
            .insert(token.to_owned(), user);
    }

    pub fn calls(&self) -> u32 {
        self.state.calls.load(Ordering::SeqCst)
    }
}

/// Serves `listener`; aborting the task closes the connections too (they live in its
/// `JoinSet`).
fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AstakosState>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let state = state.clone();
            connections.spawn(async move {
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
            while connections.try_join_next().is_some() {}
        }
    })
}

fn service_catalog() -> Value {
    json!([
        {"name": "astakos_account", "type": "account", "endpoints_links": [],
         "endpoints": [{"versionId": "v1.0", "publicURL": "https://accounts.example.synnefo.org/astakos/account/v1.0",
                        "SNF:uiURL": "https://accounts.example.synnefo.org/astakos/ui", "region": "default"}]},
        {"name": "astakos_identity", "type": "identity", "endpoints_links": [],
         "endpoints": [{"versionId": "v2.0", "publicURL": "https://accounts.example.synnefo.org/astakos/identity/v2.0", "region": "default"}]}
    ])
}

/// `isoformat(dt.replace(tzinfo=UTC))` with microseconds.
fn isoformat(unix: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_micros(unix as u64 * 1_000_000 + 975_572);
    let s = humantime::format_rfc3339_micros(t).to_string();
    format!("{}+00:00", s.trim_end_matches('Z'))
}

/// snf_django render_fault + never-cache headers + Vary.
fn api_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        "content-type",
        "application/json; charset=UTF-8".parse().unwrap(),
    );
    h.insert(
        "cache-control",
        "no-cache, no-store, must-revalidate, max-age=0"
            .parse()
            .unwrap(),
    );
    h.insert("expires", "Thu, 01 Jan 1970 00:00:00 GMT".parse().unwrap());
    h.insert("vary", "X-Auth-Token".parse().unwrap());
    r
}

fn fault(status: StatusCode, key: &str, message: &str) -> Response<Full<Bytes>> {
    api_response(
        status,
        json!({ key: {"code": status.as_u16(), "message": message, "details": ""} }),
    )
}

/// 0.13 errors: text/plain `message\n\ndetails`.
fn text_fault(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{message}\n\n"))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    r
}

/// `validate_user`: the checks after the token is found, in Astakos's order.
fn user_problem(user: &AstakosUser) -> Option<&'static str> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if !user.active {
        Some("User inactive")
    } else if user.token_expires <= now {
        Some("Authentication expired")
    } else if !user.signed_terms {
        Some("Pending approval terms")
    } else {
        None
    }
}

async fn handle(
    state: &AstakosState,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    state.calls.fetch_add(1, Ordering::SeqCst);
    if let Some(ip) = req.headers().get("x-client-ip") {
        state
            .client_ips
            .lock()
            .unwrap()
            .push(ip.to_str().unwrap().to_owned());
    }
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay.into())).await;
    }
    if state
        .bad_request_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return fault(StatusCode::BAD_REQUEST, "badRequest", "Malformed request");
    }
    if state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return fault(
            StatusCode::SERVICE_UNAVAILABLE,
            "serviceUnavailable",
            "Service Unavailable",
        );
    }
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let header_token = req
        .headers()
        .get("x-auth-token")
        .map(|v| v.to_str().unwrap().to_owned());
    match path.as_str() {
        "/astakos/identity/v2.0/tokens" => {
            if method != hyper::Method::POST {
                let mut r = fault(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "notAllowed",
                    "Method not allowed",
                );
                r.headers_mut().insert("allow", "POST".parse().unwrap());
                return r;
            }
            let body = req.into_body().collect().await.unwrap().to_bytes();
            if body.is_empty() {
                return api_response(
                    StatusCode::OK,
                    json!({"access": {"serviceCatalog": service_catalog()}}),
                );
            }
            let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
                return fault(
                    StatusCode::BAD_REQUEST,
                    "badRequest",
                    "Malformed request: invalid JSON",
                );
            };
            let auth = &doc["auth"];
            let (token, claimed_uuid) = if let Some(t) = auth.get("token") {
                match t["id"].as_str() {
                    Some(id) => (id.to_owned(), None),
                    None => {
                        return fault(
                            StatusCode::BAD_REQUEST,
                            "badRequest",
                            "Malformed request: missing token",
                        );
                    }
                }
            } else if let Some(pc) = auth.get("passwordCredentials") {
                (
                    pc["password"].as_str().unwrap_or("").to_owned(),
                    pc["username"].as_str().map(str::to_owned),
                )
            } else {
                return fault(
                    StatusCode::BAD_REQUEST,
                    "badRequest",
                    "Malformed request: missing credentials",
                );
            };
            let Some(user) = state.tokens.lock().unwrap().get(&token).cloned() else {
                return fault(StatusCode::UNAUTHORIZED, "unauthorized", "Invalid token");
            };
            if let Some(problem) = user_problem(&user) {
                return fault(StatusCode::UNAUTHORIZED, "unauthorized", problem);
            }
            if claimed_uuid.is_some_and(|u| u != user.uuid) {
                return fault(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Invalid credentials",
                );
            }
            if let Some(tenant) = auth["tenantName"].as_str()
                && tenant != user.uuid
            {
                return fault(
                    StatusCode::BAD_REQUEST,
                    "badRequest",
                    "Not conforming tenantName",
                );
            }
            let roles: Vec<Value> = user
                .groups
                .iter()
                .enumerate()
                .map(|(i, g)| json!({"id": (i + 1).to_string(), "name": g}))
                .collect();
            api_response(
                StatusCode::OK,
                json!({"access": {
                "token": {"id": token, "expires": isoformat(user.token_expires),
                          "tenant": {"id": user.default_project, "name": user.name}},
                "user": {"id": user.uuid, "name": user.name, "roles": roles, "roles_links": [],
                         "projects": user.projects},
                "serviceCatalog": service_catalog()}}),
            )
        }
        "/astakos/im/authenticate" => {
            if method != hyper::Method::GET {
                return text_fault(StatusCode::BAD_REQUEST, "Method not allowed.");
            }
            let Some(token) = header_token else {
                return text_fault(StatusCode::UNAUTHORIZED, "Access denied");
            };
            let Some(user) = state.tokens.lock().unwrap().get(&token).cloned() else {
                return text_fault(StatusCode::UNAUTHORIZED, "Invalid X-Auth-Token");
            };
            if let Some(problem) = user_problem(&user) {
                return text_fault(StatusCode::UNAUTHORIZED, problem);
            }
            let mut r = Response::new(Full::new(Bytes::from(
                json!({
                    "id": 12, "username": user.email, "uuid": user.uuid, "email": [user.email],
                    "name": user.name, "groups": user.groups, "auth_token": token,
                    "auth_token_created": (user.token_expires - 30 * 86400) * 1000,
                    "auth_token_expires": user.token_expires * 1000,
                })
                .to_string(),
            )));
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        }
        _ => fault(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "API endpoint not found",
        ),
    }
}

/// What an Astakos call failed with, as astakosclient raises it.
#[derive(Debug)]
pub enum AstakosError {
    /// A non-2xx answer (400 BadRequest, 401 Unauthorized, 403 Forbidden, 404 NotFound,
    /// other statuses AstakosClientException), with its body.
    Status(u16, Value),
    /// The catalog has no `astakos_account` v1.0 endpoint ("no endpoints").
    NoEndpoints,
    /// An unparsable body.
    InvalidResponse(String),
}

/// astakosclient's `AstakosClient(token, auth_url)`: every call goes to the host of
/// `auth_url`; the account calls to the *path* of the catalog's `astakos_account` v1.0
/// `publicURL` on that host, discovered lazily from the public catalog (a `POST tokens`
/// without a body). It sends `X-Auth-Token` on every call.
pub struct AstakosClient {
    http: reqwest::Client,
    /// `scheme://netloc` of `auth_url`.
    origin: String,
    /// The path of `auth_url` (`/astakos/identity/v2.0`).
    auth_prefix: String,
    token: String,
}

impl AstakosClient {
    pub fn new(token: &str, auth_url: &str) -> Self {
        let url = reqwest::Url::parse(auth_url).unwrap();
        Self {
            http: reqwest::Client::new(),
            origin: url.origin().ascii_serialization(),
            auth_prefix: url.path().trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    /// `_call_astakos`: `method path` on the auth URL's host.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, AstakosError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.origin))
            .header("X-Auth-Token", &self.token);
        request = match body {
            Some(b) => request
                .header("content-type", "application/json")
                .body(b.to_string()),
            None => request
                .header("content-type", "application/json")
                .header("content-length", "0"),
        };
        let response = request
            .send()
            .await
            .map_err(|e| AstakosError::Status(500, json!(e.to_string())))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let parsed = if text.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_str(&text).map_err(|e| AstakosError::InvalidResponse(e.to_string()))
        };
        if !(200..300).contains(&status) {
            return Err(AstakosError::Status(
                status,
                parsed.unwrap_or(Value::String(text)),
            ));
        }
        parsed
    }

    /// `authenticate()`: the access document of the client's token.
    pub async fn authenticate(&self) -> Result<Value, AstakosError> {
        let body = json!({"auth": {"token": {"id": self.token}}});
        self.call(
            reqwest::Method::POST,
            &format!("{}/tokens", self.auth_prefix),
            Some(&body),
        )
        .await
    }

    /// `get_endpoints()`: the public catalog (no body).
    pub async fn get_endpoints(&self) -> Result<Value, AstakosError> {
        self.call(
            reqwest::Method::POST,
            &format!("{}/tokens", self.auth_prefix),
            None,
        )
        .await
    }

    /// `account_prefix`: the path of `astakos_account` v1.0's `publicURL` (its `SNF:uiURL`
    /// must be there too, as `_fill_endpoints` reads both).
    pub async fn account_prefix(&self) -> Result<String, AstakosError> {
        let doc = self.get_endpoints().await?;
        let endpoint = doc["access"]["serviceCatalog"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["name"] == "astakos_account")
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .find(|e| e["versionId"] == "v1.0")
            .ok_or(AstakosError::NoEndpoints)?;
        let (Some(public), Some(_ui)) = (
            endpoint["publicURL"].as_str(),
            endpoint["SNF:uiURL"].as_str(),
        ) else {
            return Err(AstakosError::NoEndpoints);
        };
        let url = reqwest::Url::parse(public)
            .map_err(|e| AstakosError::InvalidResponse(e.to_string()))?;
        Ok(url.path().trim_end_matches('/').to_owned())
    }

    async fn catalog(
        &self,
        service: bool,
        key: &str,
        names: &[&str],
    ) -> Result<Value, AstakosError> {
        let prefix = self.account_prefix().await?;
        let path = if service {
            format!("{prefix}/service/user_catalogs")
        } else {
            format!("{prefix}/user_catalogs")
        };
        let field = if key == "uuid_catalog" {
            "uuids"
        } else {
            "displaynames"
        };
        let doc = self
            .call(reqwest::Method::POST, &path, Some(&json!({ field: names })))
            .await?;
        doc.get(key)
            .cloned()
            .ok_or_else(|| AstakosError::InvalidResponse(format!("no {key} in {doc}")))
    }

    /// `get_usernames(uuids)`: uuid -> display name.
    pub async fn get_usernames(&self, uuids: &[&str]) -> Result<Value, AstakosError> {
        self.catalog(false, "uuid_catalog", uuids).await
    }

    /// `get_uuids(display_names)`: display name -> uuid.
    pub async fn get_uuids(&self, names: &[&str]) -> Result<Value, AstakosError> {
        self.catalog(false, "displayname_catalog", names).await
    }

    /// `service_get_usernames(uuids)`, with a service token.
    pub async fn service_get_usernames(&self, uuids: &[&str]) -> Result<Value, AstakosError> {
        self.catalog(true, "uuid_catalog", uuids).await
    }

    /// `service_get_uuids(display_names)`, with a service token.
    pub async fn service_get_uuids(&self, names: &[&str]) -> Result<Value, AstakosError> {
        self.catalog(true, "displayname_catalog", names).await
    }
}
