//! The identity header sets of a 200: authgate's own (`X-Auth-Request-*`, every one on
//! every 200, empty where there is no value), keystonemiddleware's and oauth2-proxy's
//! names, and how values are encoded into them (list items percent-encoded, attributes as
//! ASCII-only JSON). README "For backend developers" is the contract they implement.

use std::fmt::Write as _;

use http::header::{HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::identity::{Attributes, Identity};

/// The plain identity headers, in the order of every 200.
pub(super) const IDENTITY_HEADERS: [&str; 5] = [
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-roles",
    "x-auth-request-scopes",
    "x-auth-request-attributes",
];

/// What `headers: oauth2-proxy` adds: the names oauth2-proxy's `set_xauthrequest` answers
/// with where authgate's own differ (`-User` and `-Email` are the same).
pub(super) const OAUTH2_PROXY_HEADERS: [&str; 2] =
    ["x-auth-request-groups", "x-auth-request-preferred-username"];

/// The plain identity headers of a 200: all of them, every time, empty where the identity
/// has no value (a proxy that copies only present headers must still overwrite the
/// client's). A value that is not valid header bytes is sent empty.
pub(super) fn identity_headers(identity: &Identity) -> Vec<(HeaderName, HeaderValue)> {
    let values = [
        identity.username.clone(),
        identity.email.clone().unwrap_or_default(),
        join(identity.roles.iter()),
        identity
            .scopes
            .as_ref()
            .map(|s| join(s.iter()))
            .unwrap_or_default(),
        attributes_json(&identity.attributes),
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

/// The oauth2-proxy names for what `identity` (the built [`identity_headers`]) already
/// holds: `X-Auth-Request-Groups` is `-Roles` (oauth2-proxy's groups, comma-separated;
/// items encoded as in `-Roles`), `-Preferred-Username` is `-User` (the display name).
pub(super) fn oauth2_proxy_headers(
    identity: &[(HeaderName, HeaderValue)],
) -> [(HeaderName, HeaderValue); 2] {
    let value = |name: &str| {
        identity
            .iter()
            .find(|(n, _)| n == name)
            .map_or(HeaderValue::from_static(""), |(_, v)| v.clone())
    };
    [
        (
            HeaderName::from_static(OAUTH2_PROXY_HEADERS[0]),
            value("x-auth-request-roles"),
        ),
        (
            HeaderName::from_static(OAUTH2_PROXY_HEADERS[1]),
            value("x-auth-request-user"),
        ),
    ]
}

/// `X-Auth-Request-Attributes`: the attributes as the JWT's `attributes` claim holds them
/// (a JSON object, each value a string or an array of strings, keys sorted), on one line
/// and ASCII only: every character past `~` is a `\uXXXX` escape (UTF-16, as JSON has
/// it), so the value is valid header bytes that any JSON parser reads back unchanged.
/// Empty when there are none (as every list header is empty for "none").
fn attributes_json(attributes: &Attributes) -> String {
    if attributes.is_empty() {
        return String::new();
    }
    // serde_json escapes `"`, `\` and control characters, and writes no newline.
    let Ok(json) = serde_json::to_string(attributes) else {
        return String::new();
    };
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() && c != '\x7f' {
            out.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

/// The headers keystonemiddleware's auth_token sets for a confirmed identity (KEYSTONE.md),
/// for identities of any provider: an API token or Astakos user looks like a Keystone user.
pub(super) fn keystone_headers(identity: &Identity) -> Vec<(HeaderName, HeaderValue)> {
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
pub(super) const KEYSTONE_HEADERS: [&str; 30] = [
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
    fn attributes_are_ascii_json_that_reads_back_unchanged() {
        let one = |v: &str| AttributeValue::One(v.into());
        // (attributes, the header)
        let cases: [(Vec<(&str, AttributeValue)>, &str); 5] = [
            (vec![], ""),
            (
                vec![
                    ("dept", one("physics")),
                    (
                        "projects",
                        AttributeValue::Many(vec!["a".into(), "b,c".into()]),
                    ),
                ],
                r#"{"dept":"physics","projects":["a","b,c"]}"#,
            ),
            (
                vec![("name", one("Ren\u{e9}e \u{1f600}"))],
                r#"{"name":"Ren\u00e9e \ud83d\ude00"}"#,
            ),
            (
                vec![("q\"k", one("line\r\nX-Roles: admin\u{7f}\\"))],
                r#"{"q\"k":"line\r\nX-Roles: admin\u007f\\"}"#,
            ),
            (vec![("k\u{e9}", one(""))], r#"{"k\u00e9":""}"#),
        ];
        for (attributes, want) in cases {
            let mut id = identity("jwt", &[], None);
            id.attributes = attributes
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            let headers = identity_headers(&id);
            let got = get(&headers, "x-auth-request-attributes");
            assert_eq!(got, Some(want), "{:?}", id.attributes);
            if !want.is_empty() {
                let back: Attributes = serde_json::from_str(want).unwrap();
                assert_eq!(back, id.attributes);
            }
        }
    }

    #[test]
    fn oauth2_proxy_names_carry_the_roles_and_username() {
        let id = identity("jwt", &["viewer,admin", "ops"], None);
        let headers = identity_headers(&id);
        let extra = oauth2_proxy_headers(&headers);
        let names: Vec<&str> = extra.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, OAUTH2_PROXY_HEADERS);
        assert_eq!(
            get(&extra, "x-auth-request-groups"),
            Some("ops,viewer%2Cadmin")
        );
        assert_eq!(
            get(&extra, "x-auth-request-preferred-username"),
            Some("alice")
        );
        let none = identity_headers(&identity("jwt", &[], None));
        assert_eq!(
            get(&oauth2_proxy_headers(&none), "x-auth-request-groups"),
            Some("")
        );
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
