//! Interned identities: equal identities are stored once ([`Known`]), for every entry that
//! holds one (the tokens of one owner, the renewed access tokens of one user, a user's Basic
//! credentials), with what is built for them and reused: response headers and minted JWTs.
//! A stored credential's id (an API token's) is not part of the identity: the JWTs minted
//! with it (its `token_id` claim) are kept by the entry ([`CredentialJwts`]). What they keep
//! is charged to one [`ReuseBudget`] (`cache.reuse_memory_mib`) and given back when the
//! identity or entry ends. Nothing is kept for a credential's first request: one seen once
//! (a crawler's random tokens, a batch of one-shot clients) leaves nothing behind in memory.

use std::borrow::Cow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwapOption;
use http::{HeaderName, HeaderValue};

use crate::identity::Identity;
use crate::mint::{KeyError, Minted, Minter};

/// Memory for what entries keep for reuse (minted JWTs, response headers), bounded by
/// `cache.reuse_memory_mib`: entries charge it for what they keep and give it back when
/// they end.
pub struct ReuseBudget {
    used: AtomicUsize,
    limit: usize,
}

/// What one holder (an identity, an entry) keeps of the budget; given back when it ends.
struct Charge {
    charged: AtomicUsize,
    budget: Arc<ReuseBudget>,
}

/// An identity as the cache keeps it: once for all the entries whose identity is equal
/// (the tokens of one owner, the renewed access tokens of one user), with what is built
/// for it and reused: minted JWTs and response headers.
pub struct Known {
    identity: Identity,
    /// The identity's response headers, kept from a credential's second request on (a
    /// credential seen once keeps nothing it will not use again).
    headers: OnceLock<Vec<(HeaderName, HeaderValue)>>,
    /// JWTs minted for this identity, kept from a credential's second request on.
    minted: KeptJwts,
    charge: Charge,
}

/// The JWTs minted for one stored credential (they carry its id), kept by its entry.
pub(super) struct CredentialJwts {
    minted: KeptJwts,
    charge: Charge,
}

/// The JWTs minted for one identity or credential, kept for reuse (one per audience, a few
/// audiences).
#[derive(Default)]
struct KeptJwts {
    kept: ArcSwapOption<Vec<Arc<Minted>>>,
    /// Taken to change `kept` (never to read it), so that charges add up.
    change: Mutex<()>,
}

/// Identities shared between entries: the tokens of one owner, or the access tokens one
/// user's client renews, all keep one [`Known`] and the JWTs minted for it.
#[derive(Default)]
pub(super) struct Interned {
    set: HashSet<ByIdentity>,
    /// Set size at which identities no entry holds any more are dropped.
    prune_at: usize,
}

/// A [`Known`] in the interned set, found by its identity.
struct ByIdentity(Arc<Known>);

/// What a kept response header costs besides its bytes.
const HEADER_OVERHEAD: usize = 64;

/// What a kept JWT costs besides its bytes.
const MINTED_OVERHEAD: usize = 160;

/// Audiences one identity keeps JWTs for (an identity used on more rules with distinct
/// audiences re-signs for the others).
const KEPT_AUDIENCES: usize = 4;

impl ReuseBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    fn reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|n| *n <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes in use.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl std::ops::Deref for Known {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        &self.identity
    }
}

impl Charge {
    fn new(budget: &Arc<ReuseBudget>) -> Self {
        Self {
            charged: AtomicUsize::new(0),
            budget: budget.clone(),
        }
    }

    /// Moves what is kept from `from` to `to` bytes in the budget; `false` (and nothing
    /// charged) when more does not fit.
    fn recharge(&self, from: usize, to: usize) -> bool {
        if to > from {
            if !self.budget.reserve(to - from) {
                return false;
            }
            self.charged.fetch_add(to - from, Ordering::AcqRel);
        } else {
            self.budget.release(from - to);
            self.charged.fetch_sub(from - to, Ordering::AcqRel);
        }
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(*self.charged.get_mut());
    }
}

impl Known {
    /// The identity's response headers: kept ones when `repeated` (a cache hit) and the
    /// budget allows, else built for this answer alone.
    pub fn response_headers(
        &self,
        repeated: bool,
        build: impl FnOnce(&Identity) -> Vec<(HeaderName, HeaderValue)>,
    ) -> Cow<'_, [(HeaderName, HeaderValue)]> {
        if let Some(kept) = self.headers.get() {
            return kept.as_slice().into();
        }
        let built = build(&self.identity);
        if !repeated {
            return built.into();
        }
        let bytes = built
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + HEADER_OVERHEAD)
            .sum();
        if !self.charge.recharge(0, bytes) {
            return built.into();
        }
        match self.headers.set(built) {
            Ok(()) => self
                .headers
                .get()
                .map_or(Vec::new().into(), |k| k.as_slice().into()),
            // Another request kept them first.
            Err(built) => {
                self.charge.recharge(bytes, 0);
                built.into()
            }
        }
    }

    /// The JWT for this identity and `audience` (the default when `None`) at `now`, for the
    /// stored credential `own` (its id and the JWTs its entry keeps), if any: see
    /// [`KeptJwts::minted`]. A stored credential's JWTs carry its id (`token_id`), so its
    /// entry keeps them; any other is kept here, for every entry of this identity.
    pub(super) fn minted_for(
        &self,
        own: Option<(&str, &CredentialJwts)>,
        minter: &Minter,
        audience: Option<&Arc<str>>,
        now: i64,
        repeated: bool,
    ) -> Result<Arc<Minted>, KeyError> {
        let (kept, charge, token_id) = match own {
            Some((id, jwts)) => (&jwts.minted, &jwts.charge, Some(id)),
            None => (&self.minted, &self.charge, None),
        };
        let mint = |audience: &Arc<str>| minter.mint(&self.identity, token_id, Some(audience), now);
        kept.minted(minter, audience, now, repeated, charge, mint)
    }
}

impl CredentialJwts {
    /// Nothing kept yet; what will be is charged to `budget`.
    pub(super) fn new(budget: &Arc<ReuseBudget>) -> Self {
        Self {
            minted: KeptJwts::default(),
            charge: Charge::new(budget),
        }
    }
}

impl KeptJwts {
    /// The JWT for `audience` (the default when `None`) at `now`: a kept one while
    /// [`Minter::reusable`], else a new one from `mint`. The new one is kept when `repeated`
    /// (a cache hit) and `charge` allows, in place of the audience's stale one, beside the
    /// first others still reusable (a few audiences in all).
    fn minted(
        &self,
        minter: &Minter,
        audience: Option<&Arc<str>>,
        now: i64,
        repeated: bool,
        charge: &Charge,
        mint: impl FnOnce(&Arc<str>) -> Result<Arc<Minted>, KeyError>,
    ) -> Result<Arc<Minted>, KeyError> {
        let audience = minter.audience(audience);
        if let Some(kept) = &*self.kept.load()
            && let Some(m) = kept
                .iter()
                .find(|m| m.audience() == &**audience && minter.reusable(m, now))
        {
            return Ok(m.clone());
        }
        let minted = mint(audience)?;
        if repeated && let Ok(_changing) = self.change.lock() {
            let before = self.kept.load_full();
            let before = before.as_deref().map_or(&[][..], Vec::as_slice);
            let mut next: Vec<Arc<Minted>> = before
                .iter()
                .filter(|m| m.audience() != &**audience && minter.reusable(m, now))
                .take(KEPT_AUDIENCES - 1)
                .cloned()
                .collect();
            next.push(minted.clone());
            if charge.recharge(Self::weight(before), Self::weight(&next)) {
                self.kept.store(Some(Arc::new(next)));
            }
        }
        Ok(minted)
    }

    fn weight(kept: &[Arc<Minted>]) -> usize {
        kept.iter().map(|m| m.header.len() + MINTED_OVERHEAD).sum()
    }
}

impl PartialEq for ByIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.0.identity == other.0.identity
    }
}

impl Eq for ByIdentity {}

impl Hash for ByIdentity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.identity.hash(state);
    }
}

impl std::borrow::Borrow<Identity> for ByIdentity {
    fn borrow(&self) -> &Identity {
        &self.0.identity
    }
}

impl Interned {
    /// The [`Known`] for `identity`: the one kept for an equal identity, or a new one that
    /// charges `budget` for what it keeps.
    pub(super) fn intern(&mut self, identity: Identity, budget: &Arc<ReuseBudget>) -> Arc<Known> {
        if let Some(found) = self.set.get(&identity) {
            return found.0.clone();
        }
        if self.set.len() >= self.prune_at {
            self.prune();
        }
        let known = Arc::new(Known {
            identity,
            headers: OnceLock::new(),
            minted: KeptJwts::default(),
            charge: Charge::new(budget),
        });
        self.set.insert(ByIdentity(known.clone()));
        known
    }

    /// Drops the identities only this set holds (and gives back what they kept).
    pub(super) fn prune(&mut self) {
        self.set.retain(|k| Arc::strong_count(&k.0) > 1);
        self.prune_at = (self.set.len() * 2).max(1024);
    }

    /// Identities kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{config, headers, identity, insert, key, valid};
    use super::super::{Authenticated, DecisionCache};
    use super::*;
    use crate::mint::{MintConfig, rotate};
    use crate::store::SqliteStore;

    /// A minter on a store of its own (kept with its directory while the test runs).
    async fn minter() -> (tempfile::TempDir, SqliteStore, Minter) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("k.db")).unwrap();
        let minter = Minter::new(&MintConfig::default(), &store, true)
            .await
            .unwrap();
        (dir, store, minter)
    }

    /// Part `index` of a JWT (0 the header, 1 the claims), decoded.
    fn jwt_part(jwt: &str, index: usize) -> serde_json::Value {
        let part = jwt.split('.').nth(index).unwrap();
        serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, part)
                .unwrap(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn kept_headers_are_charged_and_given_back() {
        let cache = DecisionCache::new(&config(10));
        let a = valid(&cache, 1, 1).await;
        assert!(matches!(
            a.identity.response_headers(false, headers),
            Cow::Owned(_)
        ));
        assert_eq!(cache.reuse_bytes(), 0, "a first request keeps nothing");
        assert!(matches!(
            a.identity.response_headers(true, headers),
            Cow::Borrowed(_)
        ));
        let one = "x-auth-request-user".len() + 1000 + HEADER_OVERHEAD;
        assert_eq!(cache.reuse_bytes(), one);
        assert!(matches!(
            a.identity.response_headers(true, headers),
            Cow::Borrowed(_)
        ));
        assert_eq!(cache.reuse_bytes(), one, "charged once");
        // 1 MiB of budget: an identity whose headers take ~1.1 MB is served, not kept.
        let big = valid(&cache, 2, 1100).await;
        let built = big.identity.response_headers(true, headers);
        assert!(matches!(built, Cow::Owned(_)));
        assert_eq!(built[0].1.len(), 1_100_000);
        assert_eq!(cache.reuse_bytes(), one);
        drop((a, big));
        cache.invalidate([1; 32]);
        cache.invalidate([2; 32]);
        cache.sweep_all();
        assert_eq!(cache.reuse_bytes(), 0, "given back when the entry ends");
    }

    #[tokio::test]
    async fn minted_jwts_are_kept_from_the_second_request_on_within_the_budget() {
        let (_dir, store, minter) = minter().await;
        let now = 1_000_000;
        let budget = Arc::new(ReuseBudget::new(1 << 20));
        let mut interned = Interned::default();
        let known = interned.intern(identity(None), &budget);
        let jwt = |known: &Known, repeated: bool, audience: Option<&Arc<str>>, at: i64| {
            known
                .minted_for(None, &minter, audience, at, repeated)
                .unwrap()
                .jwt()
                .to_owned()
        };
        assert_ne!(
            jwt(&known, false, None, now),
            jwt(&known, false, None, now),
            "not kept for a credential's first request"
        );
        assert_eq!(budget.used(), 0);
        let a = jwt(&known, true, None, now);
        assert_eq!(a, jwt(&known, true, None, now + 200), "reused while fresh");
        assert_eq!(
            a,
            jwt(&known, false, None, now + 200),
            "reused, not replaced"
        );
        let admin: Arc<str> = Arc::from("admin-api");
        let b = jwt(&known, true, Some(&admin), now);
        assert_eq!(
            b,
            jwt(&known, true, Some(&admin), now + 1),
            "one per audience"
        );
        assert_eq!(
            a,
            jwt(&known, true, None, now + 1),
            "the first one is still kept"
        );
        let weight = |m: &str| m.len() + "Bearer ".len() + MINTED_OVERHEAD;
        assert_eq!(budget.used(), weight(&a) + weight(&b));
        let a2 = jwt(&known, true, None, now + 260);
        assert_ne!(a, a2, "reissued near expiry");
        assert_eq!(
            a2,
            jwt(&known, true, None, now + 261),
            "and the new one kept"
        );
        assert_eq!(
            budget.used(),
            weight(&a2),
            "what is kept is charged; what is replaced or stale (b's) is given back"
        );
        // Audiences past the few kept: the new one takes the place of the last one kept.
        for (i, at) in (262..).take(KEPT_AUDIENCES).enumerate() {
            jwt(&known, true, Some(&Arc::from(format!("aud-{i}"))), now + at);
        }
        let kept = known.minted.kept.load_full().unwrap();
        let audiences: Vec<_> = kept.iter().map(|m| m.audience()).collect();
        assert_eq!(audiences, ["api", "aud-0", "aud-1", "aud-3"]);

        let full = Interned::default().intern(identity(None), &Arc::new(ReuseBudget::new(0)));
        let (first, second) = (jwt(&full, true, None, now), jwt(&full, true, None, now));
        assert_ne!(first, second, "nothing kept past the budget");
        assert!(full.minted.kept.load().is_none());

        // Rotation: JWTs of the old key are not handed out again.
        let record = rotate(&MintConfig::default(), &store, crate::unix_now(), true)
            .await
            .unwrap();
        assert!(minter.reload(&store).await.unwrap());
        let d = jwt(&known, true, Some(&Arc::from("aud-3")), now + 266);
        let header = jwt_part(&d, 0);
        assert_eq!(
            header["kid"],
            serde_json::json!(record.kid),
            "rotation drops reused JWTs of the old key"
        );
        drop(known);
        assert!(budget.used() > 0, "the set still holds the identity");
        interned.prune();
        assert_eq!(
            (interned.len(), budget.used()),
            (0, 0),
            "given back with it"
        );
    }

    #[tokio::test]
    async fn tokens_of_one_owner_share_the_identity_and_keep_jwts_of_their_own_id() {
        let (_dir, _store, minter) = minter().await;
        let cache = DecisionCache::new(&config(10));
        let mut second = identity(None);
        second.credential_id = Some("tok_2".into());
        let one = insert(&cache, key(1), identity(None)).await;
        let two = insert(&cache, key(2), second).await;
        assert!(Arc::ptr_eq(&one.identity, &two.identity));
        let now = crate::unix_now();
        let jwt = |a: &Authenticated, repeated: bool| {
            a.minted_for(&minter, None, now, repeated)
                .unwrap()
                .jwt()
                .to_owned()
        };
        assert_eq!(jwt_part(&jwt(&one, false), 1)["token_id"], "tok_1");
        assert_eq!(jwt_part(&jwt(&two, false), 1)["token_id"], "tok_2");
        assert_eq!(cache.reuse_bytes(), 0, "nothing kept for a first request");
        // From the second request on, each entry keeps its own, charged to the budget.
        let (kept_one, kept_two) = (jwt(&one, true), jwt(&two, true));
        assert_eq!(kept_one, jwt(&one, false), "kept");
        assert_eq!(kept_two, jwt(&two, false), "kept");
        assert_eq!(jwt_part(&kept_one, 1)["token_id"], "tok_1");
        assert_eq!(jwt_part(&kept_two, 1)["token_id"], "tok_2");
        let weight = |m: &str| m.len() + "Bearer ".len() + MINTED_OVERHEAD;
        assert_eq!(cache.reuse_bytes(), weight(&kept_one) + weight(&kept_two));
        // An identity without a stored credential keeps its JWT in the shared identity,
        // without a `token_id`.
        let mut user = identity(None);
        user.credential_id = None;
        user.subject = "basic-user".into();
        let three = insert(&cache, key(3), user).await;
        let shared = jwt(&three, true);
        assert_eq!(jwt_part(&shared, 1).get("token_id"), None);
        assert_eq!(shared, jwt(&three, false), "kept by the identity");
        drop((one, two, three));
        for i in 1..=3 {
            cache.invalidate(key(i));
        }
        cache.sweep_all();
        assert_eq!(cache.reuse_bytes(), 0, "given back when the entries end");
    }
}
