//! The identity a provider answers with: who the caller is and what they may do.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// An attribute value: a single string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Stable subject identifier (`sub` of the minted JWT).
    pub subject: String,
    /// Which provider answered (`provider` claim, metric label).
    pub provider: &'static str,
    /// Human-readable login name.
    pub username: String,
    /// E-mail address, when known.
    pub email: Option<String>,
    /// Roles (groups) the identity holds.
    pub roles: BTreeSet<String>,
    /// Free-form attributes.
    pub attributes: Attributes,
    /// `None` for a user authenticated directly (all scopes); `Some` for a scoped token.
    pub scopes: Option<BTreeSet<String>>,
    /// Unix time at which the credential stops being valid; `None` when it does not expire.
    pub expires_at: Option<i64>,
    /// The id of the stored credential (an API token id), used to record its last use.
    pub credential_id: Option<String>,
}

impl Identity {
    /// Whether the identity holds `scope` (a directly authenticated user holds every scope).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.as_ref().is_none_or(|s| s.contains(scope))
    }
}

/// Parses `key=value` pairs (repeated keys make a list), as the CLI takes them.
pub fn attributes_from_pairs(pairs: &[String]) -> Result<Attributes, String> {
    let mut out = Attributes::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| format!("attribute '{pair}' is not of the form key=value"))?;
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
    fn unscoped_identity_holds_every_scope() {
        let mut id = Identity {
            subject: "alice".into(),
            provider: "basic",
            username: "alice".into(),
            email: None,
            roles: BTreeSet::new(),
            attributes: Attributes::new(),
            scopes: None,
            expires_at: None,
            credential_id: None,
        };
        assert!(id.has_scope("anything"));
        id.scopes = Some(BTreeSet::from(["read:data".to_owned()]));
        assert!(id.has_scope("read:data"));
        assert!(!id.has_scope("write:data"));
    }
}
