//! Host patterns of route rules: an exact name or `*.domain` (exactly one label more).
//! Request hosts reach the policy lower-case and without port, possibly with the trailing
//! dot of a fully qualified name, which names the same host.

/// Host part of a rule, or one entry of `server.redirect_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Every host.
    Any,
    /// One host name, lower-case, without trailing dot.
    Exact(String),
    /// `*.example.org`, stored as `.example.org`: one label in front of the domain, neither
    /// the apex nor deeper subdomains.
    OneLabel(String),
}

impl HostPattern {
    /// Parses the `host:` of a rule; the error is the reason, without the key.
    pub fn parse(host: Option<&str>) -> Result<Self, &'static str> {
        let host = match host {
            None | Some("*") => return Ok(Self::Any),
            Some(h) => h.to_ascii_lowercase(),
        };
        if host.contains(['[', ']']) || host.matches(':').count() > 1 {
            return Err("IPv6 literals are not supported in host rules; \
                        leave `host` out and match on the path");
        }
        if host.contains(':') {
            return Err(
                "ports are not part of host rules (requests are matched on the host \
                        without port); write the host name alone",
            );
        }
        let (wild, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host.as_str()),
        };
        // `api.example.org.` is the fully qualified spelling of `api.example.org`.
        let name = name.strip_suffix('.').unwrap_or(name);
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(
                "must be a host name or '*.domain': letters, digits, '-' and '.', \
                        no empty label, '*' only as the whole first label",
            );
        }
        Ok(if wild {
            Self::OneLabel(format!(".{name}"))
        } else {
            Self::Exact(name.to_owned())
        })
    }

    /// Parses one entry of `server.redirect_hosts`: the grammar of a rule's `host`, but a
    /// named host or domain only (`*` would let a sign-in return anywhere).
    pub fn parse_listed(host: &str) -> Result<Self, &'static str> {
        match Self::parse(Some(host))? {
            Self::Any => Err("'*' would allow every host; name the hosts (or '*.domain')"),
            named => Ok(named),
        }
    }

    /// Whether the request `host` (without port) is covered.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host).as_bytes();
        match self {
            Self::Any => true,
            Self::Exact(name) => host.eq_ignore_ascii_case(name.as_bytes()),
            Self::OneLabel(domain) => {
                let domain = domain.as_bytes();
                match host.len().checked_sub(domain.len()) {
                    Some(label_len) if label_len > 0 => {
                        let (label, rest) = host.split_at(label_len);
                        rest.eq_ignore_ascii_case(domain) && !label.contains(&b'.')
                    }
                    _ => false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_table() {
        let cases = [
            ("*.example.org", "a.example.org", true),
            ("*.example.org", "a.example.org.", true),
            ("*.example.org", "A.Example.ORG", true),
            ("*.example.org", "a.b.example.org", false),
            ("*.example.org", "a.b.example.org.", false),
            ("*.example.org", "example.org", false),
            ("*.example.org", "example.org.", false),
            ("*.example.org", ".example.org", false),
            ("*.example.org", "aexample.org", false),
            ("*.example.org", "a.example.org..", false),
            ("*.example.org.", "a.example.org", true),
            ("*.Example.org", "a.example.org", true),
            ("api.example.org", "api.example.org", true),
            ("api.example.org", "api.example.org.", true),
            ("api.example.org", "API.example.org", true),
            ("api.example.org.", "api.example.org", true),
            ("API.Example.Org", "api.example.org", true),
            ("api.example.org", "api.example.org..", false),
            ("api.example.org", "x.api.example.org", false),
            ("api.example.org", "api.example.or", false),
            ("api.example.org", "", false),
            ("*", "anything.at.all", true),
            ("10.0.0.1", "10.0.0.1", true),
        ];
        for (rule, host, expected) in cases {
            let pattern = HostPattern::parse(Some(rule)).unwrap();
            assert_eq!(pattern.matches(host), expected, "{rule} vs {host}");
        }
        assert!(HostPattern::parse(None).unwrap().matches(""));
    }

    #[test]
    fn listed_hosts_name_a_host_or_domain() {
        for (entry, host) in [
            ("api.example.org", "api.example.org"),
            ("API.Example.org.", "api.example.org"),
            ("*.example.org", "a.example.org"),
        ] {
            assert!(
                HostPattern::parse_listed(entry).unwrap().matches(host),
                "{entry}"
            );
        }
        for entry in [
            "*",
            "",
            "api.example.org:8443",
            "a.*.org",
            "[::1]",
            "*.example.org/x",
        ] {
            assert!(
                HostPattern::parse_listed(entry).is_err(),
                "{entry} accepted"
            );
        }
    }

    #[test]
    fn rejected_hosts() {
        let port = "ports are not part of host rules";
        let ipv6 = "IPv6 literals are not supported";
        let name = "must be a host name";
        let cases = [
            ("api.example.org:8443", port),
            ("*.example.org:443", port),
            ("localhost:80", port),
            ("[::1]", ipv6),
            ("::1", ipv6),
            ("[2001:db8::1]:443", ipv6),
            ("a.*.org", name),
            ("*a.example.org", name),
            ("*.*.example.org", name),
            ("*.", name),
            (".", name),
            ("", name),
            ("a..example.org", name),
            (".example.org", name),
            ("example.org..", name),
            ("exa_mple.org", name),
            ("exa mple.org", name),
            ("ex/ample.org", name),
            ("bücher.example", name),
        ];
        for (rule, reason) in cases {
            match HostPattern::parse(Some(rule)) {
                Ok(p) => panic!("{rule} accepted as {p:?}"),
                Err(e) => assert!(e.starts_with(reason), "{rule}: {e}"),
            }
        }
    }
}
