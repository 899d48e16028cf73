//! The browser sign-in redirect: `<signin_url>?rd=<original URL>`. The return URL is the
//! original request as the endpoint's own header family described it (http(s) only, port
//! kept), fully percent-encoded, and only for a host in `server.redirect_hosts` (default:
//! the hosts the policy rules name): a browser on any other host is sent to sign in
//! without `rd`, so that authgate never sends anyone on to a host it was not told about.

use http::HeaderValue;

use super::ServerConfig;
use crate::forward::OriginalRequest;
use crate::policy::{HostPattern, Policy};
use crate::setting::ConfigError;

/// The hosts a sign-in may return to: `server.redirect_hosts`, or the policy's hosts.
pub(super) fn return_hosts(
    server: &ServerConfig,
    policy: &Policy,
) -> Result<Vec<HostPattern>, ConfigError> {
    match &server.redirect_hosts {
        None => Ok(policy.named_hosts()),
        Some(listed) => listed
            .iter()
            .enumerate()
            .map(|(i, h)| {
                HostPattern::parse_listed(h)
                    .map_err(|why| ConfigError::invalid(format!("server.redirect_hosts[{i}]"), why))
            })
            .collect(),
    }
}

/// The configured sign-in start and the hosts it may return to.
#[derive(Debug, Clone)]
pub(super) struct SignIn {
    url: String,
    return_hosts: Vec<HostPattern>,
}

impl SignIn {
    /// From `server.signin_url` and `server.redirect_hosts` (both validated at load);
    /// `None` when no sign-in page is configured.
    pub(super) fn new(server: &ServerConfig, policy: &Policy) -> Result<Option<Self>, ConfigError> {
        let Some(url) = &server.signin_url else {
            return Ok(None);
        };
        Ok(Some(Self {
            url: url.clone(),
            return_hosts: return_hosts(server, policy)?,
        }))
    }

    /// Where to send a browser that has no valid credential for `original`.
    pub(super) fn location(&self, original: &OriginalRequest) -> Option<HeaderValue> {
        let location = if self.return_hosts.iter().any(|h| h.matches(&original.host)) {
            let sep = if self.url.contains('?') { '&' } else { '?' };
            // Every byte but letters and digits escaped: the return URL stays one query
            // parameter whatever its own query holds (`&`, `=`, `#`, `+`).
            let url = original.url();
            let rd =
                percent_encoding::utf8_percent_encode(&url, percent_encoding::NON_ALPHANUMERIC);
            format!("{}{sep}rd={rd}", self.url)
        } else {
            tracing::debug!(host = %original.host, "host not in server.redirect_hosts: sign-in without rd");
            self.url.clone()
        };
        HeaderValue::from_str(&location).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use http::Method;

    use super::*;
    use crate::config::Config;

    fn sign_in(yaml: &str) -> SignIn {
        let config = Config::from_yaml(yaml).unwrap();
        let policy = config.policy.clone();
        SignIn::new(&config.server, &policy).unwrap().unwrap()
    }

    fn original(
        scheme: &str,
        host: &str,
        port: Option<u16>,
        path: &str,
        query: &str,
    ) -> OriginalRequest {
        OriginalRequest {
            method: Method::GET,
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            query: (!query.is_empty()).then(|| query.to_owned()),
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    fn rd_of(location: &str) -> Option<String> {
        let query = location.split_once('?')?.1;
        let rds: Vec<&str> = query
            .split('&')
            .filter_map(|p| p.strip_prefix("rd="))
            .collect();
        assert!(rds.len() <= 1, "{location}");
        rds.first().map(|rd| {
            percent_encoding::percent_decode_str(rd)
                .decode_utf8()
                .unwrap()
                .into_owned()
        })
    }

    const RULES: &str = "policy: { rules: [ \
        { name: api, host: api.example.org, path: /data }, \
        { name: tenants, host: \"*.tenants.example.org\" }, \
        { name: any, path: /healthz, allow: anonymous } ] }";

    /// Default allow-list = the rules' hosts; listed hosts keep scheme, port and the whole
    /// query as one `rd`; others get the sign-in URL without `rd`.
    #[test]
    fn return_url_table() {
        let default = sign_in(&format!(
            "server: {{ signin_url: \"https://auth.example.org/oauth2/start\" }}\n{RULES}"
        ));
        let listed = sign_in(&format!(
            "server: {{ signin_url: \"https://auth.example.org/start?client=gw\", redirect_hosts: [\"www.example.org\", \"*.Example.net\"] }}\n{RULES}"
        ));
        let start = "https://auth.example.org/oauth2/start";
        let cases: Vec<(&SignIn, OriginalRequest, &str, Option<&str>)> = vec![
            (
                &default,
                original("http", "api.example.org", Some(8443), "/data", "x=1&y=2"),
                start,
                Some("http://api.example.org:8443/data?x=1&y=2"),
            ),
            (
                &default,
                original("https", "a.tenants.example.org", None, "/p", "a=%26&b=c+d"),
                start,
                Some("https://a.tenants.example.org/p?a=%26&b=c+d"),
            ),
            (
                &default,
                original("https", "b.a.tenants.example.org", None, "/", ""),
                start,
                None,
            ),
            (
                &default,
                original("https", "www.example.org", None, "/", ""),
                start,
                None,
            ),
            (
                &listed,
                original("https", "www.example.org", Some(443), "/a", ""),
                "https://auth.example.org/start?client=gw",
                Some("https://www.example.org:443/a"),
            ),
            (
                &listed,
                original("http", "x.example.net", None, "/", "q"),
                "https://auth.example.org/start?client=gw",
                Some("http://x.example.net/?q"),
            ),
            (
                &listed,
                original("https", "api.example.org", None, "/data", ""),
                "https://auth.example.org/start?client=gw",
                None,
            ),
        ];
        for (signin, original, base, rd) in cases {
            let location = signin.location(&original).unwrap();
            let location = location.to_str().unwrap();
            assert!(location.starts_with(base), "{location}");
            assert_eq!(rd_of(location).as_deref(), rd, "{location}");
            if rd.is_none() {
                assert_eq!(location, base);
                assert!(!location.contains(&original.host), "{location}");
            } else {
                // Nothing but letters, digits and `%XX` after `rd=`.
                let raw = location.split("rd=").nth(1).unwrap();
                assert!(
                    raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'%'),
                    "{raw}"
                );
            }
        }
    }

    #[test]
    fn an_empty_list_never_returns() {
        let s = sign_in(&format!(
            "server: {{ signin_url: \"https://auth.example.org/s\", redirect_hosts: [] }}\n{RULES}"
        ));
        let location = s
            .location(&original("https", "api.example.org", None, "/data", ""))
            .unwrap();
        assert_eq!(location, "https://auth.example.org/s");
    }
}
