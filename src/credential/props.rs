//! Property tests for the credential parsers, which read what the client sends: no header
//! or query panics them, an accepted token is a token, and Basic credentials round-trip.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::sample::select;

use super::{Credential, MAX_CREDENTIAL_LEN, extract, from_query, service_token};
use crate::secret::Secret;

/// Arbitrary bytes that `HeaderValue` accepts, often after a scheme and near a token's
/// alphabet, now and then longer than the limit.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    let byte = prop_oneof![
        6 => 0x21u8..0x7f,
        2 => select(&b"-._~+/=:"[..]),
        1 => Just(b' '),
        1 => Just(b'\t'),
        1 => 0x80u8..=0xff,
    ];
    let body = prop_oneof![
        6 => proptest::collection::vec(byte, 0..48),
        6 => "[A-Za-z0-9._~+/-]{1,40}={0,2}".prop_map(String::into_bytes),
        1 => (MAX_CREDENTIAL_LEN - 8..MAX_CREDENTIAL_LEN + 24).prop_map(|n| vec![b'a'; n]),
    ];
    let scheme = prop_oneof![
        4 => select(&["Bearer ", "bearer  ", "BEARER "][..]),
        3 => select(&["", "BEARER\t", "Basic ", "Digest ", " "][..]),
    ];
    (scheme, body)
        .prop_map(|(scheme, body)| [scheme.as_bytes(), &body].concat())
        .prop_filter_map("not a header value", |v| HeaderValue::from_bytes(&v).ok())
}

fn credential_headers() -> impl Strategy<Value = HeaderMap> {
    let name = select(vec![
        http::header::AUTHORIZATION,
        HeaderName::from_static("x-auth-token"),
        HeaderName::from_static("x-storage-token"),
        HeaderName::from_static("x-service-token"),
        HeaderName::from_static("x-unrelated"),
    ]);
    proptest::collection::vec((name, header_value()), 0..3).prop_map(|pairs| {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(k, v);
        }
        headers
    })
}

/// What every accepted token is: non-empty, within the limit, visible ASCII.
fn assert_token_shape(token: &Secret) -> Result<(), TestCaseError> {
    let t = token.expose();
    prop_assert!(!t.is_empty());
    prop_assert!(t.len() <= MAX_CREDENTIAL_LEN, "{} bytes", t.len());
    prop_assert!(t.bytes().all(|b| (0x21..0x7f).contains(&b)), "{t:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn accepted_tokens_are_tokens(headers in credential_headers()) {
        match extract(&headers) {
            Ok(Some(Credential::Bearer(t) | Credential::AuthToken(t))) => assert_token_shape(&t)?,
            Ok(Some(Credential::Basic { username, .. })) => {
                prop_assert!(!username.is_empty() && !username.contains(':'));
            }
            Ok(Some(Credential::Session(_))) => prop_assert!(false, "extract read a cookie"),
            Ok(None) | Err(_) => {}
        }
        if let Ok(Some(t)) = service_token(&headers) {
            assert_token_shape(&t)?;
        }
    }

    /// Any `Cookie` header: no panic, and an accepted session cookie has exactly the shape
    /// authgate sets.
    #[test]
    fn session_cookies_have_their_shape(
        cookie in proptest::collection::vec(
            prop_oneof![
                select(&["__Host-authgate=", "; ", ";", "=", "\"", "a=b"][..]).prop_map(str::to_owned),
                "[A-Za-z0-9_-]{40,46}",
                "[ -~]{0,12}",
            ],
            0..6,
        ).prop_map(|p| p.concat()),
    ) {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            headers.insert(http::header::COOKIE, v);
        }
        if let Ok(Some(c)) = super::session_cookie(&headers, "__Host-authgate") {
            let Credential::Session(t) = c else {
                return Err(TestCaseError::fail("not a session"));
            };
            prop_assert_eq!(t.expose().len(), super::SESSION_COOKIE_LEN);
            prop_assert!(t.expose().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }

    #[test]
    fn query_tokens_are_tokens(
        query in proptest::collection::vec(
            prop_oneof![
                select(&["X-Auth-Token=", "x-auth-token=", "&", "=", "%", "%2B", "%20", "%ff"][..])
                    .prop_map(str::to_owned),
                "[ -~]{0,12}",
                any::<String>(),
            ],
            0..8,
        ).prop_map(|p| p.concat()),
    ) {
        if let Ok(Some(credential)) = from_query(&query) {
            match credential {
                Credential::AuthToken(t) => assert_token_shape(&t)?,
                other => prop_assert!(false, "{} from a query", other.kind()),
            }
        }
    }

    #[test]
    fn basic_round_trips(user in "[^:]{1,40}", password in any::<String>()) {
        let encoded = STANDARD.encode(format!("{user}:{password}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        prop_assert_eq!(
            extract(&headers),
            Ok(Some(Credential::Basic { username: user, password: Secret::new(password) }))
        );
    }
}
