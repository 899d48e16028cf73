//! The request-target rules: what authgate refuses so that what it judges is exactly what
//! the upstream serves. A path is judged only when every reading of it (raw, decoded once,
//! decoded by a framework that trims, strips `;` parameters or resolves dot segments) leads
//! to the same resource; anything else is 400, never resolved into another path.
//!
//! Refused in a path: `#`, a `.`/`..` segment or any segment ending in `.` (raw or
//! `%2e`), an empty segment (`//`) except a single trailing `/`, and, after one
//! percent-decoding: `/` (`%2f`), `\`, `;`, `?`, `#`, `%` (so `%25` double encoding),
//! control characters, whitespace at either end of a segment, bytes that are not UTF-8
//! (overlong forms included), and Unicode look-alikes of those separators (fullwidth and
//! small forms, which NFKC folds to ASCII). Percent-encoded other characters are judged decoded
//! (`/%61dmin` is `/admin`), as the upstream decodes them.
//!
//! Hosts: lower-case, without port, without one trailing dot; userinfo (`@`) refused.

use super::ForwardError;

/// Checks a raw path (the part of the request target before `?`) and returns it decoded.
pub fn judged_path(raw: &str) -> Result<String, ForwardError> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(ForwardError::BadPath("it does not start with '/'"));
    };
    if raw.contains('#') {
        return Err(ForwardError::BadPath("it holds a fragment ('#')"));
    }
    let mut out = String::with_capacity(raw.len());
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        out.push('/');
        if segment.is_empty() {
            if i == last {
                // A single trailing slash (or the root itself).
                continue;
            }
            return Err(ForwardError::BadPath("it holds an empty segment ('//')"));
        }
        out.push_str(&judged_segment(segment)?);
    }
    Ok(out)
}

/// One segment, decoded, or why it cannot be judged.
fn judged_segment(raw: &str) -> Result<String, ForwardError> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ForwardError::BadPath("it is not UTF-8 once decoded"))?;
    for c in decoded.chars() {
        let why = match c {
            '/' => "it holds an encoded '/' (%2f)",
            '\\' => "it holds a backslash",
            ';' => "it holds ';' (path parameters)",
            '?' => "it holds an encoded '?'",
            '#' => "it holds an encoded '#'",
            '%' => "it holds '%' once decoded (double encoding)",
            c if c.is_control() => "it holds control characters",
            c if is_look_alike_separator(c) => {
                "it holds a look-alike of '/', '.', '\\', ';', '%', '?' or '#' (fullwidth or small forms)"
            }
            _ => continue,
        };
        return Err(ForwardError::BadPath(why));
    }
    if decoded.ends_with('.') {
        return Err(ForwardError::BadPath(
            "a segment is '.', '..' or ends with '.'",
        ));
    }
    if decoded.starts_with(char::is_whitespace) || decoded.ends_with(char::is_whitespace) {
        return Err(ForwardError::BadPath(
            "a segment starts or ends with whitespace",
        ));
    }
    Ok(decoded.into_owned())
}

/// Characters that Unicode compatibility normalisation (NFKC, which some upstreams and
/// file systems apply) turns into a path separator or one of the characters refused above:
/// the fullwidth and small forms of ASCII punctuation, one-dot leaders and division slashes.
fn is_look_alike_separator(c: char) -> bool {
    matches!(c,
        '\u{FF01}'..='\u{FF0F}'   // fullwidth ! " # $ % & ' ( ) * + , - . /
        | '\u{FF1A}'..='\u{FF20}' // fullwidth : ; < = > ? @
        | '\u{FF3B}'..='\u{FF40}' // fullwidth [ \ ] ^ _ `
        | '\u{FE50}'..='\u{FE6B}' // small form variants
        | '\u{2024}'..='\u{2026}' // one-dot leader, two-dot leader, ellipsis
        | '\u{2044}' | '\u{2215}' | '\u{29F5}' | '\u{29F8}' | '\u{29F9}' // slashes
    )
}

/// A host as the proxy routed on: `host[:port]` or `[v6][:port]`, without userinfo.
/// Returns the lower-case host without its trailing dot, and the port.
pub fn host_and_port(raw: &str, name: &'static str) -> Result<(String, Option<u16>), ForwardError> {
    let bad = || ForwardError::Malformed(name);
    if raw.contains('@') {
        return Err(ForwardError::UserInfo(name));
    }
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(bad)?;
        if rest[..end].parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(bad)?),
        };
        (&raw[..end + 2], port)
    } else {
        match raw.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| bad())?)
        }
        Some(_) => return Err(bad()),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    // `a..` would otherwise come out as `a.`, which another parse reads as `a`.
    let plausible = !host.is_empty()
        && !host.starts_with('.')
        && !host.ends_with('.')
        && !host.contains("..")
        && (host.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'));
    if !plausible {
        return Err(bad());
    }
    Ok((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_paths_table() {
        for (raw, judged) in [
            ("/", "/"),
            ("/data", "/data"),
            ("/data/", "/data/"),
            ("/%61dmin/x", "/admin/x"),
            ("/files/my%20file.txt", "/files/my file.txt"),
            ("/caf%C3%A9", "/café"),
            ("/a.b/c.json", "/a.b/c.json"),
            ("/.well-known/x", "/.well-known/x"),
            ("/v1/items:batch", "/v1/items:batch"),
            ("/ADMIN", "/ADMIN"),
        ] {
            assert_eq!(judged_path(raw).as_deref(), Ok(judged), "{raw}");
        }
    }

    #[test]
    fn refused_paths_table() {
        for raw in [
            "data",
            "",
            "/healthz#/../admin",
            "/admin/..",
            "/admin/../healthz",
            "/admin/%2e%2e/healthz",
            "/admin/%2E%2e/healthz",
            "/admin/.%2e/healthz",
            "/admin/./x",
            "/admin/%2e/x",
            "/admin.",
            "/admin/x.",
            "/healthz/..;/admin",
            "/admin;x",
            "/admin%3bx",
            "/admin/users%2F..%2F..%2Fhealthz",
            "/admin%2fx",
            "/a%5c..%5cadmin",
            "/a\\b",
            "//admin",
            "/admin//x",
            "/admin//..//healthz",
            "/admin%20/x",
            "/%20admin",
            "/admin%09",
            "/a%00b",
            "/a%0d%0aX: y",
            "/%252e%252e/admin",
            "/admin%252f",
            "/100%",
            "/a%zz",
            "/admin%3f/x",
            "/admin%23x",
            "/%ff%fe",
            "/%c0%ae%c0%ae/admin",
            "/%e0%80%ae",
            "/admin%ef%bc%8e",
            "/admin%ef%bc%8f..%ef%bc%8fhealthz",
            "/admin%ef%b9%92",
            "/%e2%80%a5/admin",
            "/admin%e2%88%95x",
        ] {
            assert!(judged_path(raw).is_err(), "{raw:?} accepted");
        }
    }

    #[test]
    fn hosts_table() {
        let ok: &[(&str, &str, Option<u16>)] = &[
            ("api.example.org", "api.example.org", None),
            ("API.Example.org:8443", "api.example.org", Some(8443)),
            ("api.example.org.", "api.example.org", None),
            ("api.example.org.:80", "api.example.org", Some(80)),
            ("[::1]:8080", "[::1]", Some(8080)),
            ("[::1]", "[::1]", None),
            ("127.0.0.1", "127.0.0.1", None),
        ];
        for (raw, host, port) in ok {
            assert_eq!(
                host_and_port(raw, "Host"),
                Ok(((*host).to_owned(), *port)),
                "{raw}"
            );
        }
        for raw in [
            "",
            "bad host",
            "api.example.org:1@www.example.org",
            "user@api.example.org",
            "api.example.org:",
            "api.example.org:99999",
            "api.example.org:8x",
            "[::1",
            "[zz]:1",
            "[::1]x",
            "a..b",
            ".",
            "..",
            "a..",
            "80..",
            "api.example.org..:80",
            "a/b",
        ] {
            assert!(host_and_port(raw, "Host").is_err(), "{raw:?} accepted");
        }
    }
}
