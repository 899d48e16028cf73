//! Where a browser may be sent after sign-in or sign-out: `rd` as the browser gave it, only
//! when it is a plain path on this host or an absolute http(s) URL on a host of
//! `server.redirect_hosts`; anything else becomes `/`, so that authgate is never an open
//! redirect (`//evil`, `\\evil`, `/\evil`, `javascript:`, userinfo, encoded and control
//! characters, mixed-case schemes of hosts not listed).

use crate::policy::HostPattern;

/// Longest return URL kept.
const MAX_RETURN_LEN: usize = 4096;

/// `rd` when it is safe to send the browser there, else `/`.
pub fn safe_return(rd: &str, hosts: &[HostPattern]) -> String {
    if is_safe(rd, hosts) {
        rd.to_owned()
    } else {
        "/".to_owned()
    }
}

fn is_safe(rd: &str, hosts: &[HostPattern]) -> bool {
    // Visible ASCII only: no spaces, tabs, newlines (browsers drop those inside URLs, so
    // `/\t/evil` is `//evil` to them), no backslash (browsers read it as `/`), no `%`
    // sequences that decode to any of these are needed in a path authgate returns to.
    if rd.is_empty()
        || rd.len() > MAX_RETURN_LEN
        || !rd.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'\\')
    {
        return false;
    }
    if let Some(rest) = rd.strip_prefix('/') {
        // A path on this host; `//host` is another host.
        return !rest.starts_with('/');
    }
    let Ok(uri) = rd.parse::<http::Uri>() else {
        return false;
    };
    let scheme_ok = uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
    let Some(authority) = uri.authority() else {
        return false;
    };
    // The text after the scheme must be `//authority` exactly as parsed (no `http:evil`).
    let after_scheme = rd.split_once(':').map(|(_, r)| r).unwrap_or("");
    scheme_ok
        && after_scheme.starts_with("//")
        && !authority.as_str().contains('@')
        && !authority.host().is_empty()
        && uri.path().starts_with('/')
        && hosts.iter().any(|h| h.matches(authority.host()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_hosts_and_plain_paths() {
        let hosts = vec![
            HostPattern::parse_listed("app.example.org").unwrap(),
            HostPattern::parse_listed("*.tenants.example.org").unwrap(),
        ];
        let kept = [
            "/",
            "/a/b?c=d&e=%2F",
            "/%2F%2Fevil.example",
            "https://app.example.org/x?y=1",
            "http://app.example.org:8443/",
            "HTTPS://APP.example.org/",
            "https://a.tenants.example.org/p",
        ];
        for rd in kept {
            assert_eq!(safe_return(rd, &hosts), rd, "{rd}");
        }
        let refused = [
            "",
            "//evil.example",
            "///evil.example",
            "\\\\evil.example",
            "/\\evil.example",
            "\\/evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            " //evil.example",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,x",
            "%2F%2Fevil.example",
            "https:evil.example",
            "https:/evil.example",
            "https://evil.example/",
            "https://app.example.org@evil.example/",
            "https://evil.example\\@app.example.org/",
            "https://app.example.org.evil.example/",
            "https://b.a.tenants.example.org/",
            "https://tenants.example.org/",
            "ftp://app.example.org/",
            "app.example.org/x",
            "/caf\u{e9}",
        ];
        for rd in refused {
            assert_eq!(safe_return(rd, &hosts), "/", "{rd:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_RETURN_LEN));
        assert_eq!(safe_return(&long, &hosts), "/");
    }
}
