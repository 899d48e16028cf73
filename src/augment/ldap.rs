//! `type: ldap`: the user's groups (and chosen attributes) in an LDAP directory (OpenLDAP,
//! Active Directory) become roles. The user is found with `user_filter`, the user name in it
//! escaped per RFC 4515 (so `*)(uid=*` finds nobody); the groups are the entry's
//! `group_attribute` (`memberOf`) or the entries a group search finds (`group_filter` with
//! `{user_dn}`), optionally followed through groups of groups. A directory that cannot be
//! reached, or refuses authgate's bind, fails the request closed (503); a user not in the
//! directory gets nothing, or a 403 with `required: true`. A few connections, each bound
//! once as `bind_dn`, are kept and reused.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, ldap_escape};

use super::dn::{common_name, path_below};
pub use super::ldap_config::{LdapConfig, RoleFrom};
use super::{Augmenter, applies};
use crate::identity::{AttributeValue, Identity};
use crate::providers::{AuthError, Health, Unhealthy};
use crate::secret::Secret;
use crate::setting::ConfigError;

/// How deep groups of groups are followed.
const MAX_NESTING: usize = 10;

/// What the directory says about a user.
struct Found {
    groups: BTreeSet<String>,
    attributes: Vec<(String, Vec<String>)>,
}

/// The `ldap` augmenter.
pub struct LdapAugmenter {
    config: LdapConfig,
    password: Option<Secret>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Bound connections, reused round robin; `None` until first used or after a failure.
    pool: Vec<tokio::sync::Mutex<Option<Ldap>>>,
    next: AtomicUsize,
    health: Health,
}

impl LdapAugmenter {
    /// Reads the bind password; connects on first use.
    pub fn new(config: &LdapConfig, key: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            password: config.password(key)?,
            tls: config.tls(key)?,
            pool: (0..config.pool_size.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            health: Health::default(),
            config: config.clone(),
        })
    }

    fn unavailable(&self, what: &str, e: impl std::fmt::Display) -> AuthError {
        AuthError::Unavailable(format!("directory {}: {what}: {e}", self.config.url))
    }

    /// A new connection, bound as `bind_dn`.
    async fn connect(&self) -> Result<Ldap, AuthError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.config.timeout)
            .set_starttls(self.config.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.config.url)
            .await
            .map_err(|e| self.unavailable("cannot connect", e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "directory connection ended");
            }
        });
        if let (Some(dn), Some(password)) = (&self.config.bind_dn, &self.password) {
            ldap.simple_bind(dn, password.expose())
                .await
                .and_then(|r| r.success())
                .map_err(|e| self.unavailable("the bind was refused", e))?;
        }
        Ok(ldap)
    }

    /// A bound connection of the pool (and whether it was made just now).
    async fn connection(&self) -> Result<(usize, Ldap, bool), AuthError> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        let mut held = self.pool[slot].lock().await;
        if let Some(ldap) = held.as_mut()
            && !ldap.is_closed()
        {
            return Ok((slot, ldap.clone(), false));
        }
        let ldap = self.connect().await?;
        *held = Some(ldap.clone());
        Ok((slot, ldap, true))
    }

    /// Forgets a connection that failed, so the next use makes a new one.
    async fn discard(&self, slot: usize) {
        if let Some(mut old) = self.pool[slot].lock().await.take() {
            let _ = old.unbind().await;
        }
    }

    /// Looks `username` up, retrying once on a fresh connection when a kept one failed
    /// (the directory restarted since).
    async fn lookup(&self, username: &str) -> Result<Option<Found>, AuthError> {
        let (slot, mut ldap, fresh) = self.connection().await?;
        match self.lookup_on(&mut ldap, username).await {
            Err(_) if !fresh => {
                self.discard(slot).await;
                let (slot, mut ldap, _) = self.connection().await?;
                let found = self.lookup_on(&mut ldap, username).await;
                if found.is_err() {
                    self.discard(slot).await;
                }
                found
            }
            Err(e) => {
                self.discard(slot).await;
                Err(e)
            }
            ok => ok,
        }
    }

    async fn search(
        &self,
        ldap: &mut Ldap,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: Vec<&str>,
    ) -> Result<Vec<SearchEntry>, AuthError> {
        let (entries, _) = ldap
            .search(base, scope, filter, attrs)
            .await
            .and_then(|r| r.success())
            .map_err(|e| self.unavailable("search failed", e))?;
        Ok(entries.into_iter().map(SearchEntry::construct).collect())
    }

    async fn lookup_on(&self, ldap: &mut Ldap, username: &str) -> Result<Option<Found>, AuthError> {
        let c = &self.config;
        let filter = c.user_filter.replace("{username}", &ldap_escape(username));
        let mut attrs: Vec<&str> = c.attributes.iter().map(String::as_str).collect();
        if c.group_filter.is_none() {
            attrs.push(&c.group_attribute);
        }
        if attrs.is_empty() {
            attrs.push("1.1");
        }
        let mut users = self
            .search(ldap, &c.base_dn, Scope::Subtree, &filter, attrs)
            .await?;
        let user = match users.len() {
            0 => return Ok(None),
            1 => users.remove(0),
            n => {
                return Err(AuthError::Unavailable(format!(
                    "directory {}: the user filter matched {n} entries",
                    c.url
                )));
            }
        };
        let mut groups = BTreeSet::new();
        let mut queue: VecDeque<(String, usize)> = VecDeque::new();
        match &c.group_filter {
            None => queue.extend(
                attribute(&user, &c.group_attribute)
                    .iter()
                    .map(|g| (g.clone(), 1)),
            ),
            Some(_) => queue.extend(
                self.groups_of(ldap, &user.dn)
                    .await?
                    .into_iter()
                    .map(|g| (g, 1)),
            ),
        }
        let mut seen: HashSet<String> = HashSet::new();
        while let Some((group, depth)) = queue.pop_front() {
            if !seen.insert(group.to_ascii_lowercase()) {
                continue;
            }
            groups.insert(group.clone());
            if c.nested_groups && depth < MAX_NESTING {
                let parents = match &c.group_filter {
                    Some(_) => self.groups_of(ldap, &group).await?,
                    None => self
                        .search(
                            ldap,
                            &group,
                            Scope::Base,
                            "(objectClass=*)",
                            vec![c.group_attribute.as_str()],
                        )
                        .await?
                        .first()
                        .map(|g| attribute(g, &c.group_attribute).to_vec())
                        .unwrap_or_default(),
                };
                queue.extend(parents.into_iter().map(|p| (p, depth + 1)));
            }
        }
        let attributes = c
            .attributes
            .iter()
            .map(|name| (name.clone(), attribute(&user, name).to_vec()))
            .filter(|(_, values)| !values.is_empty())
            .collect();
        Ok(Some(Found { groups, attributes }))
    }

    /// The DNs of the groups whose `group_filter` names `member_dn`.
    async fn groups_of(&self, ldap: &mut Ldap, member_dn: &str) -> Result<Vec<String>, AuthError> {
        let (Some(filter), Some(base)) = (&self.config.group_filter, &self.config.group_base_dn)
        else {
            return Ok(Vec::new());
        };
        let filter = filter.replace("{user_dn}", &ldap_escape(member_dn));
        let found = self
            .search(ldap, base, Scope::Subtree, &filter, vec!["1.1"])
            .await?;
        Ok(found.into_iter().map(|e| e.dn).collect())
    }

    /// The role a group's DN gives.
    fn role_of(&self, group_dn: &str) -> Option<String> {
        match self.config.role_from {
            RoleFrom::Cn => common_name(group_dn),
            RoleFrom::Path => path_below(group_dn, self.config.group_base_dn.as_deref()?),
        }
    }
}

/// An attribute's values, whatever the case of its name in the entry.
fn attribute<'a>(entry: &'a SearchEntry, name: &str) -> &'a [String] {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map_or(&[], |(_, v)| v.as_slice())
}

#[async_trait]
impl Augmenter for LdapAugmenter {
    fn name(&self) -> String {
        format!("ldap {}", self.config.url)
    }

    fn applies_to(&self, provider: &str) -> bool {
        applies(&self.config.providers, provider)
    }

    async fn augment(&self, identity: &mut Identity) -> Result<(), AuthError> {
        let found = match tokio::time::timeout(self.config.timeout, self.lookup(&identity.username))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(AuthError::Unavailable(format!(
                "directory {}: no answer within {} ms",
                self.config.url,
                self.config.timeout.as_millis()
            ))),
        };
        self.health.record(&found);
        let Some(found) = found? else {
            if self.config.required {
                tracing::info!(user = identity.username, "not in the directory: refused");
                return Err(AuthError::Forbidden("an entry in the directory".into()));
            }
            return Ok(());
        };
        let roles: Vec<String> = found
            .groups
            .iter()
            .filter_map(|g| self.role_of(g))
            .collect();
        identity.roles = identity
            .roles
            .iter()
            .chain(roles.iter().map(String::as_str))
            .collect();
        for (name, mut values) in found.attributes {
            let value = if values.len() == 1 {
                AttributeValue::One(values.remove(0))
            } else {
                AttributeValue::Many(values)
            };
            identity.attributes.insert(name, value);
        }
        Ok(())
    }

    fn cache_ttl(&self) -> Option<Duration> {
        self.config.cache_ttl
    }

    fn health(&self) -> Option<&Health> {
        Some(&self.health)
    }

    async fn check(&self) -> Result<(), Unhealthy> {
        self.health
            .check(async {
                let (slot, mut ldap, _) =
                    self.connection().await.map_err(|e| Unhealthy::from(&e))?;
                let probe = self
                    .search(
                        &mut ldap,
                        &self.config.base_dn,
                        Scope::Base,
                        "(objectClass=*)",
                        vec!["1.1"],
                    )
                    .await;
                if probe.is_err() {
                    self.discard(slot).await;
                }
                probe.map(|_| ()).map_err(|e| Unhealthy::from(&e))
            })
            .await
    }
}
