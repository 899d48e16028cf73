//! The one place where outcomes become HTTP answers: 200 with the JWT and identity headers
//! (default or keystonemiddleware's set), 401 with `WWW-Authenticate` (and, for a browser,
//! a `Location` to sign in, or a 302 there on `/forward-auth` and, with
//! `server.envoy_redirect`, on Envoy's `/auth/<path>`), 403, 400, 429, 431, 503.

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::json;

use std::sync::Arc;
use std::time::Duration;

use super::decide::{Endpoint, Outcome};
use super::{App, Body};
use crate::cache::Authenticated;
use crate::credential::CredentialError;
use crate::forward::ForwardError;
use crate::forward::OriginalRequest;
use crate::identity::Identity;
use crate::mint::Minted;
use crate::policy::HeaderMode;
use crate::providers::AuthError;
use crate::reply::{empty, json_response};

/// Every way a decision can say no.
#[derive(Debug)]
pub(super) enum Rejection {
    HeadersTooLarge(usize),
    BadRequest(ForwardError),
    BadCredential(CredentialError),
    NoCredential,
    Invalid(&'static str),
    Expired,
    RateLimited(Duration),
    Forbidden { rule: Arc<str>, missing: String },
    Unavailable(String),
}

impl Rejection {
    /// Whether this is "no valid credential" (what `delay_auth_decision` passes on).
    pub(super) fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            Self::BadCredential(_) | Self::NoCredential | Self::Invalid(_) | Self::Expired
        )
    }

    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::HeadersTooLarge(_) | Self::BadRequest(_) => "bad_request",
            Self::BadCredential(_) | Self::NoCredential | Self::Invalid(_) | Self::Expired => {
                "unauthenticated"
            }
            Self::RateLimited(_) => "rate_limited",
            Self::Forbidden { .. } => "deny",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// What a provider's refusal means for the answer.
impl From<&AuthError> for Rejection {
    fn from(error: &AuthError) -> Self {
        match error {
            AuthError::Invalid(reason) => Self::Invalid(reason),
            AuthError::Expired => Self::Expired,
            AuthError::Declined => Self::Invalid("no configured provider accepts this credential"),
            AuthError::RateLimited { retry_after } => Self::RateLimited(*retry_after),
            AuthError::Unavailable(why) => Self::Unavailable(why.clone()),
        }
    }
}

impl App {
    /// The one place where outcomes become responses.
    pub(super) fn respond(
        &self,
        outcome: &Outcome,
        endpoint: Endpoint,
        parts: &http::request::Parts,
        original: Option<&OriginalRequest>,
        mode: HeaderMode,
    ) -> Response<Body> {
        let rejection = match outcome {
            Outcome::Allow {
                authenticated,
                minted,
                repeated,
            } => return self.allow(authenticated, minted, *repeated, mode),
            Outcome::AllowAnonymous => return self.without_identity("anonymous", mode),
            Outcome::IdentityInvalid => {
                let mut r = self.without_identity("invalid", mode);
                r.headers_mut()
                    .insert("x-identity-status", HeaderValue::from_static("Invalid"));
                return r;
            }
            Outcome::Reject(r) => r,
        };
        match rejection {
            Rejection::HeadersTooLarge(n) => json_response(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                json!({"error": "request_header_fields_too_large",
                       "reason": format!("the request headers take {n} bytes; the limit is {}", self.max_header_bytes)}),
            ),
            Rejection::BadRequest(e) => json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": "bad_request", "reason": e.to_string()}),
            ),
            Rejection::BadCredential(e) => {
                self.unauthorized(&e.to_string(), endpoint, parts, original, mode)
            }
            Rejection::NoCredential => self.unauthorized(
                "no credential was presented",
                endpoint,
                parts,
                original,
                mode,
            ),
            Rejection::Invalid(reason) => {
                self.unauthorized(reason, endpoint, parts, original, mode)
            }
            Rejection::Expired => self.unauthorized(
                "the credential has expired",
                endpoint,
                parts,
                original,
                mode,
            ),
            Rejection::RateLimited(retry_after) => {
                let mut r = json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    json!({"error": "too_many_requests",
                           "reason": "too many failed attempts for this user or address"}),
                );
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
                r
            }
            Rejection::Forbidden { rule, missing } => json_response(
                StatusCode::FORBIDDEN,
                json!({"error": "forbidden", "rule": &**rule, "reason": format!("missing {missing}")}),
            ),
            Rejection::Unavailable(why) => {
                tracing::error!(error = %why, "could not decide: failing closed");
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "unavailable", "reason": "the identity backend could not be asked"}),
                )
            }
        }
    }

    fn allow(
        &self,
        authenticated: &Authenticated,
        minted: &Minted,
        repeated: bool,
        mode: HeaderMode,
    ) -> Response<Body> {
        let mut response = empty(StatusCode::OK);
        let headers = response.headers_mut();
        headers.insert(
            HeaderName::from_static(ENVOY_HEADERS_TO_REMOVE),
            HeaderValue::from_static(RAW_CREDENTIAL_HEADERS),
        );
        headers.insert(self.jwt_header.clone(), minted.header.clone());
        headers.insert(
            HeaderName::from_static(STATUS_HEADER),
            HeaderValue::from_static("authenticated"),
        );
        for (name, value) in authenticated
            .identity
            .response_headers(repeated, identity_headers)
            .iter()
        {
            headers.insert(name.clone(), value.clone());
        }
        if mode == HeaderMode::Keystone {
            for (name, value) in keystone_headers(&authenticated.identity) {
                headers.insert(name, value);
            }
        }
        response
    }

    /// A 200 without an identity (`status`: `anonymous` route, or `invalid` credential under
    /// `delay_auth_decision`): every identity header is present and empty, because Envoy,
    /// Caddy and Traefik overwrite only the headers an answer carries and would otherwise
    /// pass the client's own on; `X-Auth-Request-Status` says why there is no identity.
    /// In keystone mode the keystonemiddleware set is there too, empty.
    fn without_identity(&self, status: &'static str, mode: HeaderMode) -> Response<Body> {
        let mut r = empty(StatusCode::OK);
        let headers = r.headers_mut();
        headers.insert(
            HeaderName::from_static(STATUS_HEADER),
            HeaderValue::from_static(status),
        );
        headers.insert(
            HeaderName::from_static(ENVOY_HEADERS_TO_REMOVE),
            HeaderValue::from_static(ANONYMOUS_HEADERS_TO_REMOVE),
        );
        headers.insert(self.jwt_header.clone(), HeaderValue::from_static(""));
        for name in IDENTITY_HEADERS {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static(""));
        }
        if mode == HeaderMode::Keystone {
            for name in KEYSTONE_HEADERS {
                headers.insert(HeaderName::from_static(name), HeaderValue::from_static(""));
            }
        }
        r
    }

    fn unauthorized(
        &self,
        reason: &str,
        endpoint: Endpoint,
        parts: &http::request::Parts,
        original: Option<&OriginalRequest>,
        mode: HeaderMode,
    ) -> Response<Body> {
        let signin = self
            .signin
            .as_ref()
            .zip(original)
            .filter(|(_, o)| is_browser_navigation(parts, o))
            .and_then(|(signin, o)| signin.location(o));
        let redirects = match endpoint {
            Endpoint::ForwardAuth => true,
            Endpoint::Envoy => self.envoy_redirect,
            Endpoint::Auth => false,
        };
        if redirects && let Some(location) = &signin {
            let mut r = empty(StatusCode::FOUND);
            r.headers_mut().insert(header::LOCATION, location.clone());
            return r;
        }
        let body = match mode {
            HeaderMode::Default => json!({"error": "unauthorized", "reason": reason}),
            // keystonemiddleware's error document: services and clients written for Keystone
            // read `error.message`; authgate's reason is in its log, as Keystone's is.
            HeaderMode::Keystone => {
                tracing::debug!(reason, "unauthenticated (keystone error document)");
                json!({"error": {"code": 401, "title": "Unauthorized",
                                 "message": KEYSTONE_UNAUTHORIZED}})
            }
        };
        let mut r = json_response(StatusCode::UNAUTHORIZED, body);
        if let Some(c) = &self.challenge {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, c.clone());
        }
        if let Some(location) = signin {
            r.headers_mut().insert(header::LOCATION, location);
        }
        r
    }
}

/// A GET or HEAD (of the original request, as judged) that asks for HTML.
fn is_browser_navigation(parts: &http::request::Parts, original: &OriginalRequest) -> bool {
    let method = original.method.as_str().as_bytes();
    let accepts_html = parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains("text/html")));
    (method == b"GET" || method == b"HEAD") && accepts_html
}

/// keystonemiddleware's 401 message.
const KEYSTONE_UNAUTHORIZED: &str = "The request you have made requires authentication.";

/// Envoy's ext_authz removes the headers this answer header names from the upstream request.
const ENVOY_HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";
/// The raw credentials that must stay at the edge (the JWT replaces `Authorization`).
const RAW_CREDENTIAL_HEADERS: &str = "x-auth-token, x-storage-token, x-service-token";
/// On a 200 without identity, the client's `Authorization` must not pass either.
const ANONYMOUS_HEADERS_TO_REMOVE: &str =
    "authorization, x-auth-token, x-storage-token, x-service-token";

/// On every 200: `authenticated`, `anonymous` (a rule that needs no credential) or `invalid`
/// (`delay_auth_decision`), so the upstream can tell an anonymous request from a proxy that
/// failed to copy the identity.
const STATUS_HEADER: &str = "x-auth-request-status";

/// The plain identity headers, in the order of every 200.
const IDENTITY_HEADERS: [&str; 4] = [
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-roles",
    "x-auth-request-scopes",
];

/// The plain identity headers of a 200: all of them, every time, empty where the identity
/// has no value (a proxy that copies only present headers must still overwrite the
/// client's). A value that is not valid header bytes is sent empty.
fn identity_headers(identity: &Identity) -> Vec<(HeaderName, HeaderValue)> {
    let values = [
        identity.username.clone(),
        identity.email.clone().unwrap_or_default(),
        join(identity.roles.iter()),
        identity
            .scopes
            .as_ref()
            .map(|s| join(s.iter()))
            .unwrap_or_default(),
    ];
    IDENTITY_HEADERS
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let value = HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(""));
            (HeaderName::from_static(name), value)
        })
        .collect()
}

/// The headers keystonemiddleware's auth_token sets for a confirmed identity (KEYSTONE.md),
/// for identities of any provider: an API token or Astakos user looks like a Keystone user.
fn keystone_headers(identity: &Identity) -> Vec<(HeaderName, HeaderValue)> {
    use crate::identity::AttributeValue;
    let attr = |name: &str| match identity.attributes.get(name) {
        Some(AttributeValue::One(v)) => Some(v.as_str()),
        _ => None,
    };
    let roles = keystone_roles(identity);
    let project_id = attr("project_id").or(attr("default_project"));
    let service = attr("service_user_id").is_some();
    let service_roles = match identity.attributes.get("service_roles") {
        Some(AttributeValue::Many(rs)) if service => join(rs.iter().map(String::as_str)),
        _ => String::new(),
    };
    let service_attr = |name: &str| if service { attr(name) } else { None };
    let values: [Option<&str>; KEYSTONE_HEADERS.len()] = [
        Some("Confirmed"),
        Some(keystone_user_id(identity)),
        Some(&identity.username),
        attr("user_domain_id"),
        attr("user_domain_name"),
        project_id,
        attr("project_name"),
        attr("project_domain_id"),
        attr("project_domain_name"),
        attr("domain_id"),
        attr("domain_name"),
        Some(&roles),
        attr("is_admin_project"),
        attr("service_catalog"),
        attr("system_scope"),
        project_id,
        attr("project_name"),
        attr("project_name"),
        Some(&identity.username),
        Some(&roles),
        service.then_some("Confirmed"),
        service_attr("service_user_id"),
        service_attr("service_user_name"),
        service_attr("service_user_domain_id"),
        service_attr("service_user_domain_name"),
        service_attr("service_project_id"),
        service_attr("service_project_name"),
        service_attr("service_project_domain_id"),
        service_attr("service_project_domain_name"),
        service.then_some(service_roles.as_str()),
    ];
    // Every header of the set, empty where there is no value: Envoy, Traefik and Caddy
    // overwrite only the headers the answer carries.
    KEYSTONE_HEADERS
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let value = value
                .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
                .unwrap_or(HeaderValue::from_static(""));
            (HeaderName::from_static(name), value)
        })
        .collect()
}

/// The keystonemiddleware header set (KEYSTONE.md), in the order of [`keystone_headers`]:
/// the identity, the deprecated names services still read, then the service token's.
const KEYSTONE_HEADERS: [&str; 30] = [
    "x-identity-status",
    "x-user-id",
    "x-user-name",
    "x-user-domain-id",
    "x-user-domain-name",
    "x-project-id",
    "x-project-name",
    "x-project-domain-id",
    "x-project-domain-name",
    "x-domain-id",
    "x-domain-name",
    "x-roles",
    "x-is-admin-project",
    "x-service-catalog",
    "openstack-system-scope",
    "x-tenant-id",
    "x-tenant-name",
    "x-tenant",
    "x-user",
    "x-role",
    "x-service-identity-status",
    "x-service-user-id",
    "x-service-user-name",
    "x-service-user-domain-id",
    "x-service-user-domain-name",
    "x-service-project-id",
    "x-service-project-name",
    "x-service-project-domain-id",
    "x-service-project-domain-name",
    "x-service-roles",
];

/// `X-Roles`: for an identity from Keystone, its roles in the order Keystone listed them
/// (the `roles` attribute the provider keeps beside the sorted set; only roles the identity
/// holds, any others after them); for any other identity, sorted.
fn keystone_roles(identity: &Identity) -> String {
    use crate::identity::AttributeValue;
    let listed = match (identity.provider, identity.attributes.get("roles")) {
        (crate::providers::KeystoneProvider::KIND, Some(AttributeValue::Many(listed))) => {
            listed.as_slice()
        }
        _ => &[],
    };
    let mut ordered: Vec<&str> = Vec::with_capacity(identity.roles.len());
    for role in listed
        .iter()
        .map(String::as_str)
        .chain(identity.roles.iter())
    {
        if identity.roles.contains(role) && !ordered.contains(&role) {
            ordered.push(role);
        }
    }
    join(ordered.into_iter())
}

/// `X-User-Id` is by contract a Keystone user id: Keystone's own for an identity from the
/// `keystone` provider (keystonemiddleware services look users up by it, so it is not
/// qualified as the minted `sub` is); for any other identity authgate's subject, the one
/// id that is unique across providers.
fn keystone_user_id(identity: &Identity) -> &str {
    match (&identity.native_id, identity.provider) {
        (Some(id), crate::providers::KeystoneProvider::KIND) => id,
        _ => &identity.subject,
    }
}

/// What a list header item has percent-encoded: `,` (the list separator: a group named
/// `viewer,admin` must not read as `viewer` and `admin`), `%` (so that decoding gives the
/// name back) and control characters; non-ASCII bytes are always encoded (UTF-8), which
/// also keeps such a name from emptying the whole header.
const LIST_ITEM: &AsciiSet = &CONTROLS.add(b'%').add(b',');

/// The comma-separated form of a list header (roles, scopes): each item percent-encoded
/// ([`LIST_ITEM`]), and a space at either end of an item too, because readers trim items
/// (keystonemiddleware, most `split(',')` code) and `" admin"` would become `admin`. The
/// minted JWT keeps the names as they are, in arrays.
fn join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let start = out.len();
        out.extend(utf8_percent_encode(item, LIST_ITEM));
        if out[start..].starts_with(' ') {
            out.replace_range(start..start + 1, "%20");
        }
        if out.len() > start && out.ends_with(' ') {
            out.pop();
            out.push_str("%20");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{AttributeValue, Names};

    fn identity(provider: &'static str, roles: &[&str], scopes: Option<&[&str]>) -> Identity {
        Identity {
            subject: "keystone:http%3A//ks%3A5000/v3:e08".into(),
            native_id: Some("e08".into()),
            provider,
            username: "alice".into(),
            email: None,
            roles: roles.iter().copied().collect(),
            attributes: Default::default(),
            scopes: scopes.map(|s| s.iter().copied().collect::<Names>()),
            expires_at: None,
            credential_id: None,
            client_id: None,
        }
    }

    fn get<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn list_items_with_separators_stay_one_item() {
        // (roles, the header)
        let cases: [(&[&str], &str); 7] = [
            (&["reader", "writer"], "reader,writer"),
            (&["viewer,admin"], "viewer%2Cadmin"),
            (&["reader", "viewer,admin"], "reader,viewer%2Cadmin"),
            (&["100%"], "100%25"),
            (&["a%2Cb"], "a%252Cb"),
            (&[" admin", "ops "], "%20admin,ops%20"),
            (
                &["Domain Admins", "r\u{e9}le", "x\ty"],
                "Domain Admins,r%C3%A9le,x%09y",
            ),
        ];
        for (roles, want) in cases {
            let headers = identity_headers(&identity("jwt", roles, Some(roles)));
            assert_eq!(
                get(&headers, "x-auth-request-roles"),
                Some(want),
                "{roles:?}"
            );
            assert_eq!(
                get(&headers, "x-auth-request-scopes"),
                Some(want),
                "{roles:?}"
            );
            // No item of the header is `admin`, however a reader splits and trims it.
            if !roles.contains(&"admin") {
                assert!(want.split(',').all(|r| r.trim() != "admin"), "{want}");
            }
        }
    }

    #[test]
    fn keystone_set_is_complete_and_empty_where_absent() {
        // An identity from another provider, with no service token: every header of the set
        // is there (Envoy, Traefik and Caddy overwrite only what the answer carries), the
        // ones without a value empty.
        let id = identity("api_token", &["member"], None);
        let headers = keystone_headers(&id);
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, KEYSTONE_HEADERS);
        assert_eq!(get(&headers, "x-identity-status"), Some("Confirmed"));
        assert_eq!(get(&headers, "x-roles"), Some("member"));
        for empty in [
            "x-project-id",
            "openstack-system-scope",
            "x-is-admin-project",
            "x-service-identity-status",
            "x-service-roles",
        ] {
            assert_eq!(get(&headers, empty), Some(""), "{empty}");
        }
    }

    #[test]
    fn keystone_headers_keep_keystones_user_id_and_encode_lists() {
        let mut id = identity("keystone", &["member", "viewer,admin"], None);
        id.attributes
            .insert("service_user_id".into(), AttributeValue::One("svc".into()));
        id.attributes.insert(
            "service_roles".into(),
            AttributeValue::Many(vec!["service".into(), "a,admin".into()]),
        );
        let headers = keystone_headers(&id);
        assert_eq!(get(&headers, "x-user-id"), Some("e08"));
        assert_eq!(get(&headers, "x-roles"), Some("member,viewer%2Cadmin"));
        assert_eq!(get(&headers, "x-role"), Some("member,viewer%2Cadmin"));
        assert_eq!(get(&headers, "x-service-roles"), Some("service,a%2Cadmin"));
        // Keystone's order of the roles, where the identity came from Keystone.
        let mut ordered = identity("keystone", &["reader", "admin", "member"], None);
        ordered.attributes.insert(
            "roles".into(),
            AttributeValue::Many(vec!["reader".into(), "admin".into(), "member".into()]),
        );
        let headers = keystone_headers(&ordered);
        assert_eq!(get(&headers, "x-roles"), Some("reader,admin,member"));
        assert_eq!(get(&headers, "x-role"), Some("reader,admin,member"));
        // Only roles the identity holds, and every one of them.
        ordered.roles = Names::from(["member", "reader", "zeta"]);
        let headers = keystone_headers(&ordered);
        assert_eq!(get(&headers, "x-roles"), Some("reader,member,zeta"));
        // Another provider's `roles` attribute orders nothing: sorted.
        ordered.provider = "jwt";
        let headers = keystone_headers(&ordered);
        assert_eq!(get(&headers, "x-roles"), Some("member,reader,zeta"));
        // Another provider's user in keystone mode: the unique subject, never the raw id.
        let mut other = identity("jwt", &[], None);
        other.subject = "oidc:https%3A//idp.example.org:e08".into();
        let headers = keystone_headers(&other);
        assert_eq!(
            get(&headers, "x-user-id"),
            Some("oidc:https%3A//idp.example.org:e08")
        );
    }
}
