//! The names that say who someone is: local user names (NFKC-normalised and restricted, so
//! that `ｒｏｏｔ` cannot pose as `root`), the user names providers map, and the
//! provider-qualified subject of an identity from a foreign provider.
//!
//! Why `<family>:<namespace>:<id>` for foreign subjects (and not the provider's id as is):
//! the minted `sub` is what upstreams key their users on, and DESIGN.md promises it is
//! unique across providers. A local user name (also the subject of the local user's API
//! tokens) can never contain [`SEPARATOR`], so no qualified subject equals a local one; the
//! namespace (the IdP's issuer, Keystone's or Astakos's URL) keeps two IdPs' subjects apart;
//! and the id comes last, as the provider gave it, so it may contain anything. The
//! namespace has `%` and `:` percent-encoded, so the first two separators split the subject
//! unambiguously. The scheme has no setting to get wrong, and it is stable: it changes only
//! when the issuer or URL itself changes, which for an OpenID provider means another IdP.

use unicode_normalization::UnicodeNormalization;

/// Separates the parts of a provider-qualified subject; refused in local user names.
pub const SEPARATOR: char = ':';

/// The subject family of the OAuth2/OIDC providers (`jwt`, `introspect`, `offline`): one
/// for all three, because an issuer's `sub` names the same user whichever kind of token
/// (access, opaque, refresh) they presented.
pub const OIDC: &str = "oidc";
/// The subject family of the `keystone` provider.
pub const KEYSTONE: &str = "keystone";
/// The subject family of the `astakos` provider.
pub const ASTAKOS: &str = "astakos";

/// Why a user name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserNameError {
    /// Nothing left.
    #[error("a user name must not be empty")]
    Empty,
    /// A control character, or one that is invisible (zero-width, bidirectional override):
    /// two names that differ only in those look alike in every log and listing.
    #[error("a user name must not contain control or invisible characters (U+{0:04X})")]
    Invisible(u32),
    /// Leading or trailing whitespace: `root ` looks like `root`.
    #[error("a user name must not begin or end with whitespace")]
    OuterWhitespace,
    /// `:` (it separates the parts of a provider-qualified subject) or `,` (it separates
    /// the items of list headers and the CLI's comma-separated options).
    #[error("a user name must not contain '{0}'")]
    Reserved(char),
}

/// A local user name (`user add`, the owner of `token create --user`, a Basic login) in its
/// NFKC form, or why it is refused: NFKC maps compatibility look-alikes (fullwidth
/// `ｒｏｏｔ`, ligatures, superscripts) onto the plain letters, so `ｒｏｏｔ` *is* `root`.
pub fn local_user_name(name: &str) -> Result<String, UserNameError> {
    let name = mapped_user_name(name)?;
    match name.chars().find(|&c| matches!(c, SEPARATOR | ',')) {
        Some(c) => Err(UserNameError::Reserved(c)),
        None => Ok(name),
    }
}

/// A user name a provider maps (an IdP's `preferred_username`, a Keystone or Astakos user
/// name) in its NFKC form, or why it is refused. It may contain `:` and `,`: it is a
/// display name, never a subject, and never a list item.
pub fn mapped_user_name(name: &str) -> Result<String, UserNameError> {
    let name: String = name.nfkc().collect();
    if name.is_empty() {
        return Err(UserNameError::Empty);
    }
    if let Some(c) = name.chars().find(|&c| is_invisible(c)) {
        return Err(UserNameError::Invisible(c.into()));
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err(UserNameError::OuterWhitespace);
    }
    Ok(name)
}

/// The subject of a user whom a foreign provider knows as `id`: `<family>:<namespace>:<id>`,
/// with `%` and `:` of the namespace percent-encoded (see the module documentation).
pub fn qualified_subject(family: &str, namespace: &str, id: &str) -> String {
    let mut out = String::with_capacity(family.len() + namespace.len() + id.len() + 8);
    out.push_str(family);
    out.push(SEPARATOR);
    for c in namespace.chars() {
        match c {
            '%' => out.push_str("%25"),
            SEPARATOR => out.push_str("%3A"),
            c => out.push(c),
        }
    }
    out.push(SEPARATOR);
    out.push_str(id);
    out
}

/// Control characters and the format characters that render as nothing (zero-width
/// spaces and joiners, bidirectional marks and overrides, fillers, variation selectors,
/// tags), which NFKC keeps.
fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFFB}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_user_names_are_nfkc_and_restricted() {
        // (given, stored or refused)
        let cases: [(&str, Result<&str, UserNameError>); 16] = [
            ("root", Ok("root")),
            ("ｒｏｏｔ", Ok("root")),
            ("ﬁle", Ok("file")),
            ("jos\u{0065}\u{0301}", Ok("jos\u{e9}")),
            ("Jane Doe", Ok("Jane Doe")),
            ("alice@example.org", Ok("alice@example.org")),
            ("", Err(UserNameError::Empty)),
            ("root\u{0}", Err(UserNameError::Invisible(0))),
            ("ro\u{200B}ot", Err(UserNameError::Invisible(0x200B))),
            ("root\u{202E}", Err(UserNameError::Invisible(0x202E))),
            ("root\u{FEFF}", Err(UserNameError::Invisible(0xFEFF))),
            (" root", Err(UserNameError::OuterWhitespace)),
            // NFKC turns a no-break space into a space.
            ("root\u{00A0}", Err(UserNameError::OuterWhitespace)),
            ("oidc:x:root", Err(UserNameError::Reserved(':'))),
            // The fullwidth colon is a colon after NFKC.
            ("a\u{FF1A}b", Err(UserNameError::Reserved(':'))),
            ("viewer,admin", Err(UserNameError::Reserved(','))),
        ];
        for (given, want) in cases {
            assert_eq!(local_user_name(given), want.map(str::to_owned), "{given:?}");
        }
    }

    #[test]
    fn mapped_user_names_keep_separators() {
        assert_eq!(mapped_user_name("ｒｏｏｔ").as_deref(), Ok("root"));
        assert_eq!(
            mapped_user_name("urn:x,y").as_deref(),
            Ok("urn:x,y"),
            "a display name, not a subject"
        );
        assert_eq!(
            mapped_user_name("ro\u{200D}ot"),
            Err(UserNameError::Invisible(0x200D))
        );
    }

    #[test]
    fn qualified_subjects_cannot_collide() {
        assert_eq!(
            qualified_subject(OIDC, "https://idp.example.org/realms/x", "root"),
            "oidc:https%3A//idp.example.org/realms/x:root"
        );
        assert_eq!(
            qualified_subject(KEYSTONE, "http://ks:5000/v3", "e08"),
            "keystone:http%3A//ks%3A5000/v3:e08"
        );
        // An issuer that is another's plus `:port` cannot meet a `sub` holding a colon.
        assert_ne!(
            qualified_subject(OIDC, "https://idp", "8443:u"),
            qualified_subject(OIDC, "https://idp:8443", "u")
        );
        assert_ne!(
            qualified_subject(OIDC, "https://idp%3A8443", "u"),
            qualified_subject(OIDC, "https://idp:8443", "u")
        );
        // No local name equals a qualified subject.
        let sub = qualified_subject(ASTAKOS, "https://a.example.org", "u");
        assert_eq!(local_user_name(&sub), Err(UserNameError::Reserved(':')));
    }
}
