//! Distinguished names (RFC 4514) as far as roles need them: the RDNs of a DN, unescaped,
//! and a group's role name from them (`cn` of the group, or its path below a base).

/// The RDNs of `dn`, first (most specific) first, each as (type, unescaped value); a
/// multi-valued RDN (`cn=a+sn=b`) keeps its first pair.
pub(super) fn rdns(dn: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in dn.chars() {
        if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' || c == ';' {
            out.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out.iter()
        .filter_map(|rdn| {
            let first = split_unescaped(rdn, '+');
            let (kind, value) = first.split_once('=')?;
            Some((kind.trim().to_ascii_lowercase(), unescape(value.trim())))
        })
        .collect()
}

/// The part of `s` before its first `sep` that is not escaped.
fn split_unescaped(s: &str, sep: char) -> &str {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == sep => return &s[..i],
            _ => {}
        }
    }
    s
}

/// Removes RFC 4514 escapes: `\,` and `\2C` both stand for `,`.
fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    out.push(bytes[i + 1]);
                    i += 2;
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of the group's own RDN (its `cn`, usually).
pub(super) fn common_name(dn: &str) -> Option<String> {
    rdns(dn)
        .into_iter()
        .next()
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// The group's path below `base` (`cn=Admin,ou=TeamA,<base>` -> `/TeamA/Admin`); `None`
/// for a group outside `base`.
pub(super) fn path_below(dn: &str, base: &str) -> Option<String> {
    let all = rdns(dn);
    let base = rdns(base);
    if all.len() <= base.len() {
        return None;
    }
    let (own, tail) = all.split_at(all.len() - base.len());
    let same = tail
        .iter()
        .zip(&base)
        .all(|((k1, v1), (k2, v2))| k1 == k2 && v1.eq_ignore_ascii_case(v2));
    if !same {
        return None;
    }
    Some(own.iter().rev().fold(String::new(), |mut path, (_, v)| {
        path.push('/');
        path.push_str(v);
        path
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_of_group_dns() {
        let base = "ou=groups,dc=example,dc=org";
        // (group DN, cn, path)
        let cases = [
            (
                "cn=admins,ou=groups,dc=example,dc=org",
                Some("admins"),
                Some("/admins"),
            ),
            (
                "CN=Admin,OU=TeamA,OU=Groups,DC=Example,DC=org",
                Some("Admin"),
                Some("/TeamA/Admin"),
            ),
            (
                r"cn=R\2CD,ou=Team\, B,ou=groups,dc=example,dc=org",
                Some("R,D"),
                Some("/Team, B/R,D"),
            ),
            ("cn=x+sn=y,dc=other,dc=org", Some("x"), None),
            ("ou=groups,dc=example,dc=org", Some("groups"), None),
            ("", None, None),
        ];
        for (dn, cn, path) in cases {
            assert_eq!(common_name(dn).as_deref(), cn, "{dn}");
            assert_eq!(path_below(dn, base).as_deref(), path, "{dn}");
        }
    }
}
