//! The identity a provider answers with: who the caller is and what they may do.

mod subject;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use subject::{
    ASTAKOS, KEYSTONE, OIDC, SEPARATOR, UserNameError, local_user_name, mapped_user_name,
    qualified_subject,
};

/// A sorted set of names (roles, scopes), stored compactly: a decision-cache entry holds
/// two of these, and a one-element `BTreeSet<String>` allocates a whole 11-slot node
/// (~280 bytes), which multiplied by every cached credential dominated authgate's memory.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Names(Box<[Box<str>]>);

impl Names {
    /// Whether `name` is in the set.
    pub fn contains(&self, name: &str) -> bool {
        self.0.binary_search_by(|n| (**n).cmp(name)).is_ok()
    }

    /// The names, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + Clone {
        self.0.iter().map(|n| &**n)
    }

    /// How many names.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// This set and `other` together.
    pub fn union(&self, other: &Names) -> Names {
        self.iter().chain(other.iter()).collect()
    }
}

impl<S: Into<Box<str>>> FromIterator<S> for Names {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut names: Vec<Box<str>> = iter.into_iter().map(Into::into).collect();
        names.sort_unstable();
        names.dedup();
        Self(names.into_boxed_slice())
    }
}

impl<S: Into<Box<str>>, const N: usize> From<[S; N]> for Names {
    fn from(names: [S; N]) -> Self {
        names.into_iter().collect()
    }
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for Names {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<String>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

/// An attribute value: a single string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttributeValue {
    /// One value, e.g. `department: physics`.
    One(String),
    /// Several values, e.g. `projects: [a, b]`.
    Many(Vec<String>),
}

impl AttributeValue {
    /// Whether any of this attribute's values equals `wanted`.
    pub fn contains(&self, wanted: &str) -> bool {
        match self {
            Self::One(v) => v == wanted,
            Self::Many(vs) => vs.iter().any(|v| v == wanted),
        }
    }
}

/// Attribute map, ordered so that minted JWTs and logs are stable.
pub type Attributes = BTreeMap<String, AttributeValue>;

/// Who a credential belongs to, as one provider established it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Stable subject identifier, unique across providers (`sub` of the minted JWT): a
    /// local user's name (also for their API tokens), or for a foreign provider's user
    /// `<family>:<namespace>:<id>` (see [`qualified_subject`]).
    pub subject: String,
    /// The id the foreign provider itself knows the user by (the IdP's `sub`, Keystone's
    /// user id, Astakos's uuid), which `subject` qualifies; `None` for local users and API
    /// tokens, whose subject is their own name.
    pub native_id: Option<String>,
    /// Which provider answered (`provider` claim, metric label).
    pub provider: &'static str,
    /// Human-readable login name.
    pub username: String,
    /// E-mail address, when known.
    pub email: Option<String>,
    /// Roles (groups) the identity holds.
    pub roles: Names,
    /// Free-form attributes.
    pub attributes: Attributes,
    /// `None` for a user authenticated directly (all scopes); `Some` for a scoped token.
    pub scopes: Option<Names>,
    /// Unix time at which the credential stops being valid; `None` when it does not expire.
    pub expires_at: Option<i64>,
    /// The id of the stored credential (an API token id), used to record its last use.
    /// The decision cache moves it into its entry, so that the identity can be shared.
    pub credential_id: Option<String>,
    /// The OAuth client a foreign token was issued to (its `client_id` or `azp`): the
    /// minted JWT's `client_id`. Boxed: every cached identity carries the field.
    pub client_id: Option<Box<str>>,
}

impl Identity {
    /// Whether the identity holds `scope` (a directly authenticated user holds every scope).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.as_ref().is_none_or(|s| s.contains(scope))
    }
}

/// An attribute given as something other than `key=value`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attribute '{0}' is not of the form key=value")]
pub struct AttributeError(pub String);

/// Parses `key=value` pairs (repeated keys make a list), as the CLI takes them.
pub fn attributes_from_pairs(pairs: &[String]) -> Result<Attributes, AttributeError> {
    let mut out = Attributes::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| AttributeError(pair.clone()))?;
        match out.remove(k) {
            None => out.insert(k.to_owned(), AttributeValue::One(v.to_owned())),
            Some(AttributeValue::One(first)) => out.insert(
                k.to_owned(),
                AttributeValue::Many(vec![first, v.to_owned()]),
            ),
            Some(AttributeValue::Many(mut vs)) => {
                vs.push(v.to_owned());
                out.insert(k.to_owned(), AttributeValue::Many(vs))
            }
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_pairs_collect_repeated_keys() {
        let attrs = attributes_from_pairs(&[
            "dept=physics".into(),
            "project=a".into(),
            "project=b".into(),
        ])
        .unwrap();
        assert_eq!(attrs["dept"], AttributeValue::One("physics".into()));
        assert_eq!(
            attrs["project"],
            AttributeValue::Many(vec!["a".into(), "b".into()])
        );
        assert!(attrs["project"].contains("b"));
        assert!(attributes_from_pairs(&["novalue".into()]).is_err());
        assert!(attributes_from_pairs(&["=x".into()]).is_err());
    }

    #[test]
    fn names_are_a_sorted_set() {
        let names: Names = ["write", "read", "admin", "read"].into_iter().collect();
        assert_eq!(names.iter().collect::<Vec<_>>(), ["admin", "read", "write"]);
        assert_eq!(names.len(), 3);
        assert!(names.contains("read") && names.contains("admin") && names.contains("write"));
        assert!(!names.contains("reader") && !names.contains(""));
        assert!(Names::default().is_empty() && !Names::default().contains("x"));
        assert_eq!(
            serde_json::to_string(&names).unwrap(),
            r#"["admin","read","write"]"#
        );
        let back: Names = serde_json::from_str(r#"["write","admin","read","admin"]"#).unwrap();
        assert_eq!(back, names);
        assert_eq!(
            Names::from(["b"]).union(&Names::from(["a", "b"])),
            Names::from(["a", "b"])
        );
        assert_eq!(format!("{names:?}"), r#"{"admin", "read", "write"}"#);
    }

    #[test]
    fn unscoped_identity_holds_every_scope() {
        let mut id = Identity {
            subject: "alice".into(),
            native_id: None,
            provider: "basic",
            username: "alice".into(),
            email: None,
            roles: Names::default(),
            attributes: Attributes::new(),
            scopes: None,
            expires_at: None,
            credential_id: None,
            client_id: None,
        };
        assert!(id.has_scope("anything"));
        id.scopes = Some(Names::from(["read:data"]));
        assert!(id.has_scope("read:data"));
        assert!(!id.has_scope("write:data"));
    }
}
