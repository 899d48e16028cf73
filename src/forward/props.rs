//! Property tests for the sub-request parsers, which read what the client controls: no
//! input panics them, an accepted path is a fixed point that an upstream which normalises
//! reads the same, a header of another family or a repeated header is refused, and an
//! accepted host is canonical.

use http::{HeaderName, HeaderValue, request::Parts};
use proptest::prelude::*;
use proptest::sample::select;

use super::names::*;
use super::target::{host_and_port, judged_path};
use super::{Family, ForwardError, OriginalRequest, TrustedProxies};

const CASES: u32 = 256;

const FAMILIES: [Family; 4] = [
    Family::Nginx,
    Family::IngressNginx,
    Family::ForwardAuth,
    Family::Envoy,
];

/// The family headers each family does not read, written out here rather than taken from
/// `Family::foreign`, so that a header dropped from that list is caught. `X-Forwarded-Proto`
/// is shared (nginx and Envoy read it too) and ingress-nginx takes the scheme from the URL,
/// so it is foreign to none.
fn foreign_names(family: Family) -> Vec<&'static HeaderName> {
    match family {
        Family::Nginx => vec![
            &X_ORIGINAL_URL,
            &X_FORWARDED_URI,
            &X_FORWARDED_METHOD,
            &X_FORWARDED_HOST,
        ],
        Family::IngressNginx => vec![&X_FORWARDED_URI, &X_FORWARDED_METHOD, &X_FORWARDED_HOST],
        Family::ForwardAuth => vec![&X_ORIGINAL_URI, &X_ORIGINAL_URL, &X_ORIGINAL_METHOD],
        Family::Envoy => vec![
            &X_ORIGINAL_URI,
            &X_ORIGINAL_URL,
            &X_ORIGINAL_METHOD,
            &X_FORWARDED_URI,
            &X_FORWARDED_METHOD,
            &X_FORWARDED_HOST,
        ],
    }
}

/// A valid sub-request of `family` with every header it reads, and the headers read as
/// one value (`X-Real-IP` is read when the peer is trusted and `X-Forwarded-For` absent).
fn valid_request(
    family: Family,
) -> (
    Vec<(&'static HeaderName, &'static [u8])>,
    Option<&'static str>,
) {
    let host = &http::header::HOST;
    match family {
        Family::Nginx => (
            vec![
                (host, b"api.example.org"),
                (&X_ORIGINAL_URI, b"/data/x?a=1"),
                (&X_ORIGINAL_METHOD, b"POST"),
                (&X_FORWARDED_PROTO, b"https"),
                (&X_REAL_IP, b"192.0.2.1"),
            ],
            None,
        ),
        Family::IngressNginx => (
            vec![
                (&X_ORIGINAL_URL, b"https://api.example.org/data/x?a=1"),
                (&X_ORIGINAL_URI, b"/data/x?a=1"),
                (&X_ORIGINAL_METHOD, b"POST"),
                (&X_REAL_IP, b"192.0.2.1"),
            ],
            None,
        ),
        Family::ForwardAuth => (
            vec![
                (&X_FORWARDED_HOST, b"api.example.org"),
                (&X_FORWARDED_PROTO, b"https"),
                (&X_FORWARDED_URI, b"/data/x?a=1"),
                (&X_FORWARDED_METHOD, b"POST"),
                (&X_REAL_IP, b"192.0.2.1"),
            ],
            None,
        ),
        Family::Envoy => (
            vec![
                (host, b"api.example.org"),
                (&X_FORWARDED_PROTO, b"https"),
                (&X_REAL_IP, b"192.0.2.1"),
            ],
            Some("data/x"),
        ),
    }
}

fn trusted() -> TrustedProxies {
    TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()])
}

const TRUSTED_PEER: &str = "10.0.0.1";
const STRANGER: &str = "192.0.2.9";

fn parts(method: &str, headers: &[(HeaderName, HeaderValue)]) -> Parts {
    let mut b = http::Request::builder().method(method).uri("/auth");
    for (k, v) in headers {
        b = b.header(k, v);
    }
    b.body(()).unwrap().into_parts().0
}

fn read(
    family: Family,
    method: &str,
    headers: &[(HeaderName, HeaderValue)],
    suffix: Option<&str>,
    peer: &str,
) -> Result<OriginalRequest, ForwardError> {
    let p = parts(method, headers);
    OriginalRequest::from_parts(&p, peer.parse().unwrap(), family, suffix, &trusted())
}

/// Arbitrary bytes that `HeaderValue` accepts (no control characters but tab, no DEL),
/// visible ASCII most often.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    let byte = prop_oneof![
        6 => 0x21u8..0x7f,
        1 => Just(b' '),
        1 => Just(b'\t'),
        2 => 0x80u8..=0xff,
    ];
    prop_oneof![
        3 => proptest::collection::vec(byte, 0..48),
        1 => target_bytes(),
        1 => plausible_path().prop_map(String::into_bytes),
        1 => host_bytes(),
    ]
    .prop_filter_map("not a header value", |v| HeaderValue::from_bytes(&v).ok())
}

/// Request targets from an alphabet of what path confusion is made of, and random bytes.
fn target_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        8 => select(&[
            "/", "/", "/", ".", "..", "%", "2", "e", "E", "f", "F", "5", "c", "C", ";", "#",
            "?", "\\", " ", "a", "A", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "%25", "%3b",
            "%3f", "%23", "%20", "%09", "%00", "%0a", "%c0%ae", "%e0%80%ae", "%c3%a9", "%ff",
            "%c2%a0", "%e3%80%80", "é", "=", "&", "_method",
        ][..])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ];
    (any::<bool>(), proptest::collection::vec(piece, 0..24)).prop_map(|(slash, pieces)| {
        let mut raw = if slash { b"/".to_vec() } else { Vec::new() };
        raw.extend(pieces.concat());
        raw
    })
}

/// Paths that are often accepted, with the risky forms now and then, so that the
/// properties about accepted paths see many of them.
fn plausible_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        12 => select(&[
            "a", "B", "x9", "admin", "data", "%61", "%41dmin", "%7e", "~", "-", "_", ":",
            "@", "!", "$", "'", "(", ")", "*", "+", ",", "=", "&", "%20", "%c3%a9", "é",
            ".", ".a", "a.b", "%2ea", "%e2%80%8b", "%ef%bc%8e",
        ][..]),
        1 => select(&[
            ".", "..", "%2e", "%2E%2e", " ", "%20", "%c2%a0", "%25", "%2f", ";", "%3b",
            "\\", "%5c", "%", "%00", "%09", "?", "#",
        ][..]),
    ];
    let segment = proptest::collection::vec(piece, 1..4).prop_map(|p| p.concat());
    (proptest::collection::vec(segment, 0..6), any::<bool>()).prop_map(|(segments, trailing)| {
        let mut path = String::new();
        for s in &segments {
            path.push('/');
            path.push_str(s);
        }
        if trailing || path.is_empty() {
            path.push('/');
        }
        path
    })
}

/// Hosts from what hosts, ports, IPv6 literals and userinfo are made of.
fn host_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        8 => select(&[
            "a", "B", "example", "ORG", "0", "9", ".", ".", "-", "_", ":", "80", "65535",
            "65536", "[", "]", "::1", "::FFFF:1.2.3.4", "fe80::1%25eth0", "@", "%", " ",
            "1.2.3.4", "é",
        ][..])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ];
    proptest::collection::vec(piece, 0..10).prop_map(|p| p.concat())
}

/// Which of the family headers and others a header soup names.
fn header_name() -> impl Strategy<Value = HeaderName> {
    select(vec![
        http::header::HOST,
        X_ORIGINAL_URL.clone(),
        X_ORIGINAL_URI.clone(),
        X_ORIGINAL_METHOD.clone(),
        X_FORWARDED_URI.clone(),
        X_FORWARDED_METHOD.clone(),
        X_FORWARDED_PROTO.clone(),
        X_FORWARDED_HOST.clone(),
        X_FORWARDED_FOR.clone(),
        X_REAL_IP.clone(),
        METHOD_OVERRIDES[0].clone(),
        METHOD_OVERRIDES[1].clone(),
        METHOD_OVERRIDES[2].clone(),
        HeaderName::from_static("x-unrelated"),
    ])
}

/// A sub-request's headers: family headers and others, with arbitrary values.
fn header_soup() -> impl Strategy<Value = Vec<(HeaderName, HeaderValue)>> {
    proptest::collection::vec((header_name(), header_value()), 0..6)
}

fn sub_request_method() -> impl Strategy<Value = &'static str> {
    select(&["GET", "POST", "DELETE", "PATCH", "OPTIONS", "PROPFIND"][..])
}

/// `p` with `%` and every byte outside visible ASCII percent-encoded, nothing else.
fn encode_minimal(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for b in p.bytes() {
        if b == b'%' || !(0x21..0x7f).contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// The path as a lenient upstream reads it: percent-decoded until stable, `\` as `/`,
/// `;params` dropped, `//` collapsed, dot segments resolved (RFC 3986 5.2.4), whitespace
/// trimmed and trailing dots stripped per segment; all of it repeated until stable, so
/// that every order of these steps is covered.
fn upstream_reading(raw: &str) -> String {
    let mut path = raw.to_owned();
    for _ in 0..32 {
        let next = normalise_once(&path);
        if next == path {
            break;
        }
        path = next;
    }
    path
}

fn normalise_once(raw: &str) -> String {
    let mut bytes = raw.as_bytes().to_vec();
    loop {
        let next: Vec<u8> = percent_encoding::percent_decode(&bytes).collect();
        if next == bytes {
            break;
        }
        bytes = next;
    }
    let path = String::from_utf8_lossy(&bytes).replace('\\', "/");
    let path = map_segments(&path, |s| s.split(';').next().unwrap_or(""));
    let path = collapse_slashes(&path);
    let path = remove_dot_segments(&path);
    let path = map_segments(&path, str::trim);
    let path = map_segments(&path, |s| s.trim_end_matches('.'));
    collapse_slashes(&path)
}

fn map_segments(path: &str, f: impl Fn(&str) -> &str) -> String {
    path.split('/').map(f).collect::<Vec<_>>().join("/")
}

fn collapse_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// RFC 3986 section 5.2.4, step by step.
fn remove_dot_segments(path: &str) -> String {
    fn pop_last(output: &mut String) {
        match output.rfind('/') {
            Some(i) => output.truncate(i),
            None => output.clear(),
        }
    }
    let mut input = path.to_owned();
    let mut output = String::new();
    while !input.is_empty() {
        if input.starts_with("../") {
            input.drain(..3);
        } else if input.starts_with("./") {
            input.drain(..2);
        } else if input.starts_with("/./") {
            input.replace_range(..3, "/");
        } else if input == "/." {
            input = "/".to_owned();
        } else if input.starts_with("/../") {
            input.replace_range(..4, "/");
            pop_last(&mut output);
        } else if input == "/.." {
            input = "/".to_owned();
            pop_last(&mut output);
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input.drain(..end);
        }
    }
    output
}

/// What an accepted (judged) path never holds.
fn assert_judged_shape(p: &str) -> Result<(), TestCaseError> {
    prop_assert!(p.starts_with('/'), "{p:?}");
    for bad in ["//", "\\", ";", "#", "?", "%"] {
        prop_assert!(!p.contains(bad), "{p:?} holds {bad:?}");
    }
    let segments: Vec<&str> = p[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, s) in segments.into_iter().enumerate() {
        if s.is_empty() {
            prop_assert_eq!(i, last, "empty segment in {:?}", p);
            continue;
        }
        prop_assert!(s != "." && s != "..", "{p:?}");
        prop_assert!(!s.ends_with('.'), "{p:?}");
        prop_assert!(
            !s.starts_with(char::is_whitespace) && !s.ends_with(char::is_whitespace),
            "{p:?}"
        );
        prop_assert!(!s.chars().any(char::is_control), "{p:?}");
    }
    Ok(())
}

fn assert_canonical_host(host: &str, port: Option<u16>) -> Result<(), TestCaseError> {
    prop_assert_eq!(host, host.to_ascii_lowercase());
    prop_assert!(!host.ends_with('.'), "{host:?}");
    prop_assert!(!host.contains('@'), "{host:?}");
    let again = match port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    prop_assert_eq!(host_and_port(&again, "Host"), Ok((host.to_owned(), port)));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn judged_path_never_panics(raw in target_bytes()) {
        let _ = judged_path(&String::from_utf8_lossy(&raw));
    }

    #[test]
    fn accepted_path_is_a_fixed_point(
        raw in prop_oneof![
            3 => plausible_path(),
            1 => target_bytes().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ]
    ) {
        if let Ok(p) = judged_path(&raw) {
            assert_judged_shape(&p)?;
            prop_assert_eq!(judged_path(&encode_minimal(&p)), Ok(p.clone()), "from {:?}", raw);
            prop_assert_eq!(judged_path(&p), Ok(p.clone()), "from {:?}", raw);
        }
    }

    #[test]
    fn accepted_path_reads_the_same_upstream(
        raw in prop_oneof![
            3 => plausible_path(),
            1 => target_bytes().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ]
    ) {
        if let Ok(p) = judged_path(&raw) {
            prop_assert_eq!(&upstream_reading(&p), &p, "judged from {:?}", raw);
            prop_assert_eq!(&upstream_reading(&raw), &p, "raw {:?}", raw);
        }
    }

    #[test]
    fn from_parts_never_panics_and_accepts_only_canonical(
        family in select(&FAMILIES[..]),
        method in sub_request_method(),
        on_valid in any::<bool>(),
        soup in header_soup(),
        suffix in proptest::option::of(prop_oneof![
            plausible_path().prop_map(|p| p[1..].to_owned()),
            target_bytes().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ]),
        peer in select(&[TRUSTED_PEER, STRANGER][..]),
    ) {
        // On a valid request, the soup's values replace those of the same name, so that
        // many requests are accepted and the canonical forms are checked.
        let mut headers = Vec::new();
        if on_valid {
            for (k, v) in valid_request(family).0 {
                if !soup.iter().any(|(name, _)| name == k) {
                    headers.push((k.clone(), HeaderValue::from_bytes(v).unwrap()));
                }
            }
        }
        headers.extend(soup);
        if let Ok(r) = read(family, method, &headers, suffix.as_deref(), peer) {
            assert_canonical_host(&r.host, r.port)?;
            assert_judged_shape(&r.path)?;
            prop_assert!(r.scheme == "http" || r.scheme == "https");
        }
    }

    #[test]
    fn foreign_header_is_refused(
        family in select(&FAMILIES[..]),
        pick in any::<prop::sample::Index>(),
        value in header_value(),
        soup in header_soup(),
        first in any::<bool>(),
    ) {
        let names = foreign_names(family);
        let foreign = names[pick.index(names.len())].clone();
        let (valid, suffix) = valid_request(family);
        let mut headers: Vec<(HeaderName, HeaderValue)> = valid
            .into_iter()
            .map(|(k, v)| (k.clone(), HeaderValue::from_bytes(v).unwrap()))
            .collect();
        headers.extend(soup);
        if first {
            headers.insert(0, (foreign, value));
        } else {
            headers.push((foreign, value));
        }
        let r = read(family, "GET", &headers, suffix, TRUSTED_PEER);
        prop_assert!(matches!(r, Err(ForwardError::Foreign(..))), "{family:?} {headers:?}: {r:?}");
    }

    #[test]
    fn repeated_read_header_is_refused(
        family in select(&FAMILIES[..]),
        pick in any::<prop::sample::Index>(),
        value in header_value(),
        first in any::<bool>(),
    ) {
        let (valid, suffix) = valid_request(family);
        let mut headers: Vec<(HeaderName, HeaderValue)> = valid
            .iter()
            .map(|(k, v)| ((*k).clone(), HeaderValue::from_bytes(v).unwrap()))
            .collect();
        // The base request must pass, or the property would say nothing.
        prop_assert!(read(family, "GET", &headers, suffix, TRUSTED_PEER).is_ok());
        let repeated = valid[pick.index(valid.len())].0;
        if first {
            headers.insert(0, (repeated.clone(), value));
        } else {
            headers.push((repeated.clone(), value));
        }
        let r = read(family, "GET", &headers, suffix, TRUSTED_PEER);
        prop_assert_eq!(r, Err(ForwardError::Repeated(repeated.as_str())), "{:?}", family);
    }

    #[test]
    fn accepted_host_is_canonical(raw in host_bytes()) {
        let raw = String::from_utf8_lossy(&raw);
        if let Ok((host, port)) = host_and_port(&raw, "Host") {
            assert_canonical_host(&host, port)?;
        }
    }
}

#[test]
fn the_reference_normaliser_reads_what_upstreams_read() {
    // Guards the test itself: a normaliser that changed nothing would make the property
    // above hold for any parser.
    for (raw, read) in [
        ("/a/../b", "/b"),
        ("/a/%2e%2e/b", "/b"),
        ("/a/%252e%252e/b", "/b"),
        ("/a\\..\\b", "/b"),
        ("/a/..;/b", "/b"),
        ("/a//b", "/a/b"),
        ("/a/ b /", "/a/b/"),
        ("/a./b", "/a/b"),
        ("/a/./b/.", "/a/b/"),
        ("/a/b/", "/a/b/"),
        ("/../../a", "/a"),
    ] {
        assert_eq!(upstream_reading(raw), read, "{raw}");
    }
}
