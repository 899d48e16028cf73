//! The store test suite: backend-generic checks every [`Store`] implementation passes,
//! called by one test per backend (`sqlite`'s and `redis`'s unit tests).

use super::{
    KeyRecord, LAST_USE_RESOLUTION_SECS, SessionMatch, SessionRecord, Store, StoreError,
    TokenRecord, TokenRef, UserRecord,
};
use crate::identity::{AttributeValue, Attributes, Names};
use crate::secret::{Secret, sha256};

/// A token of `owner` whose secret is `secret`.
pub fn token(id: &str, owner: &str, secret: &str) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        hash: sha256(secret.as_bytes()),
        owner: owner.into(),
        name: "t".into(),
        roles: Names::from(["r"]),
        attributes: Attributes::new(),
        scopes: Some(Names::from(["read:data"])),
        created_at: 1,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    }
}

/// Tokens, users and the key ring: every method's answers.
pub async fn tokens_users_and_keys_round_trip(store: &dyn Store) {
    store.ping().await.unwrap();
    let user = UserRecord {
        username: "alice".into(),
        password_hash: "$argon2id$x".into(),
        email: Some("a@example.org".into()),
        roles: Names::from(["admin"]),
        attributes: Attributes::new(),
        created_at: 5,
    };
    store.insert_user(&user).await.unwrap();
    assert!(matches!(
        store.insert_user(&user).await,
        Err(StoreError::Exists(_))
    ));
    store
        .insert_token(&token("tok_1", "alice", "s1"))
        .await
        .unwrap();
    store
        .insert_token(&token("tok_2", "bob", "s2"))
        .await
        .unwrap();

    let found = store.lookup_token(&sha256(b"s1")).await.unwrap().unwrap();
    assert_eq!(found.token, token("tok_1", "alice", "s1"));
    assert_eq!(found.owner.as_ref(), Some(&user));
    let bob = store.lookup_token(&sha256(b"s2")).await.unwrap().unwrap();
    assert!(bob.owner.is_none());
    assert!(
        store
            .lookup_token(&sha256(b"nope"))
            .await
            .unwrap()
            .is_none()
    );

    store
        .record_last_used(&[("tok_1".into(), 42)])
        .await
        .unwrap();
    store
        .record_last_used(&[("tok_1".into(), 41)])
        .await
        .unwrap();
    let listed = store.list_tokens(Some("alice")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_used_at, Some(42));
    let got = store.get_token("tok_1").await.unwrap().unwrap();
    assert_eq!(got, listed[0]);
    assert!(store.get_token("tok_nope").await.unwrap().is_none());

    assert!(
        store
            .revoke_token(TokenRef::Hash(&sha256(b"s2")), 9)
            .await
            .unwrap()
    );
    assert!(!store.revoke_token(TokenRef::Id("tok_2"), 10).await.unwrap());
    assert!(store.remove_user("alice", 11).await.unwrap());
    let all = store.list_tokens(None).await.unwrap();
    assert_eq!(
        all.iter().map(|t| t.revoked_at).collect::<Vec<_>>(),
        vec![Some(11), Some(9)]
    );

    let key = |kid: &str, created_at, activates_at| KeyRecord {
        kid: kid.into(),
        algorithm: "ES256".into(),
        private_pkcs8: vec![1, 2],
        created_at,
        activates_at,
        retired_at: None,
        publish_until: None,
    };
    let kids = |keys: &[KeyRecord]| keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>();
    assert!(
        store
            .add_key(&key("k1", 100, 100), 100, 0, true)
            .await
            .unwrap()
    );
    assert!(
        !store
            .add_key(&key("k0", 100, 100), 100, 0, true)
            .await
            .unwrap(),
        "only_if_none"
    );
    assert_eq!(kids(&store.keys(100).await.unwrap()), ["k1"]);
    // Scheduled: k2 published at 200, signs from 300; k1 retires then, published to 700.
    assert!(
        store
            .add_key(&key("k2", 200, 300), 200, 700, false)
            .await
            .unwrap()
    );
    let keys = store.keys(200).await.unwrap();
    assert_eq!(kids(&keys), ["k2", "k1"]);
    assert_eq!(
        (keys[1].retired_at, keys[1].publish_until),
        (Some(300), Some(700))
    );
    assert_eq!((keys[0].activates_at, keys[0].retired_at), (300, None));
    assert!(
        !store
            .add_key(&key("k9", 250, 250), 250, 0, true)
            .await
            .unwrap(),
        "a scheduled key counts for only_if_none"
    );
    // Rotating again before k2 signs replaces k2 (it never signed), and k1 signs until
    // the new key's activation.
    assert!(
        store
            .add_key(&key("k3", 250, 350), 250, 750, false)
            .await
            .unwrap()
    );
    let keys = store.keys(250).await.unwrap();
    assert_eq!(kids(&keys), ["k3", "k1"]);
    assert_eq!(
        (keys[1].retired_at, keys[1].publish_until),
        (Some(350), Some(750))
    );
    // At once (k4 signs at 400): k3 signed since 350 and retires now; k1 stays as it was.
    assert!(
        store
            .add_key(&key("k4", 400, 400), 400, 800, false)
            .await
            .unwrap()
    );
    let keys = store.keys(400).await.unwrap();
    assert_eq!(kids(&keys), ["k4", "k3", "k1"]);
    assert_eq!(
        (keys[1].retired_at, keys[1].publish_until),
        (Some(400), Some(800))
    );
    assert_eq!(
        (keys[2].retired_at, keys[2].publish_until),
        (Some(350), Some(750))
    );
    assert_eq!(
        kids(&store.keys(750).await.unwrap()),
        ["k4", "k3"],
        "k1 unpublished"
    );
    assert_eq!(kids(&store.keys(800).await.unwrap()), ["k4"]);
    // Two keys activating in the same second: the one added last is listed first.
    assert!(
        store
            .add_key(&key("k5", 800, 800), 800, 900, false)
            .await
            .unwrap()
    );
    assert_eq!(kids(&store.keys(800).await.unwrap()), ["k5", "k4"]);
    assert!(format!("{:?}", keys[0]).contains("<redacted>"));
}

/// The subject directory: users and owners of tokens not revoked.
pub async fn subjects_are_users_and_owners_of_live_tokens(store: &dyn Store) {
    for name in ["carol", "alice"] {
        let user = UserRecord {
            username: name.into(),
            password_hash: "$argon2id$x".into(),
            email: None,
            roles: Names::default(),
            attributes: Attributes::new(),
            created_at: 1,
        };
        store.insert_user(&user).await.unwrap();
    }
    store
        .insert_token(&token("tok_1", "pithos", "s1"))
        .await
        .unwrap();
    store
        .insert_token(&token("tok_2", "pithos", "s2"))
        .await
        .unwrap();
    store
        .insert_token(&token("tok_3", "alice", "s3"))
        .await
        .unwrap();
    store
        .insert_token(&token("tok_4", "gone", "s4"))
        .await
        .unwrap();
    store.revoke_token(TokenRef::Id("tok_4"), 2).await.unwrap();
    assert_eq!(
        store.subjects(None).await.unwrap(),
        ["alice", "carol", "pithos"]
    );
    let among: Vec<String> = ["pithos", "gone", "nobody", "alice", "alice", "ALICE"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        store.subjects(Some(&among)).await.unwrap(),
        ["alice", "pithos"]
    );
    assert!(store.subjects(Some(&[])).await.unwrap().is_empty());
}

/// Users changed and removed, and the optional fields of tokens and users kept as given.
pub async fn users_and_optional_fields_round_trip(store: &dyn Store) {
    let user = |name: &str, email: Option<&str>| UserRecord {
        username: name.into(),
        password_hash: "$argon2id$old".into(),
        email: email.map(String::from),
        roles: Names::default(),
        attributes: Attributes::from_iter([
            ("team".to_owned(), AttributeValue::One("ops".into())),
            (
                "projects".to_owned(),
                AttributeValue::Many(vec!["a".into(), "b".into()]),
            ),
        ]),
        created_at: 3,
    };
    store.insert_user(&user("zoe", None)).await.unwrap();
    store
        .insert_user(&user("bob", Some("b@example.org")))
        .await
        .unwrap();
    assert!(store.get_user("nobody").await.unwrap().is_none());
    assert_eq!(
        store.get_user("zoe").await.unwrap(),
        Some(user("zoe", None))
    );
    let names = |users: Vec<UserRecord>| users.into_iter().map(|u| u.username).collect::<Vec<_>>();
    assert_eq!(names(store.list_users().await.unwrap()), ["bob", "zoe"]);

    assert!(store.set_password("bob", "$argon2id$new").await.unwrap());
    assert!(!store.set_password("nobody", "$argon2id$new").await.unwrap());
    let bob = store.get_user("bob").await.unwrap().unwrap();
    assert_eq!(bob.password_hash, "$argon2id$new");
    assert_eq!(bob.email.as_deref(), Some("b@example.org"));

    let mut full = token("tok_9", "bob", "s9");
    full.scopes = None;
    full.expires_at = Some(99);
    store.insert_token(&full).await.unwrap();
    let found = store.lookup_token(&sha256(b"s9")).await.unwrap().unwrap();
    assert_eq!(found.token, full);
    assert_eq!(
        found.owner.map(|o| o.password_hash).as_deref(),
        Some("$argon2id$new")
    );

    assert!(!store.remove_user("nobody", 5).await.unwrap());
    assert!(store.remove_user("bob", 5).await.unwrap());
    assert!(
        !store.remove_user("bob", 6).await.unwrap(),
        "removed already"
    );
    assert!(store.get_user("bob").await.unwrap().is_none());
    assert_eq!(names(store.list_users().await.unwrap()), ["zoe"]);
    let found = store.lookup_token(&sha256(b"s9")).await.unwrap().unwrap();
    assert_eq!(found.token.revoked_at, Some(5));
    assert!(found.owner.is_none(), "the owner is gone");
    assert_eq!(store.subjects(None).await.unwrap(), ["zoe"]);
}

/// A batch of last uses larger than one script call: the latest use per token kept, to the
/// minute ([`LAST_USE_RESOLUTION_SECS`]), in any order, and uses of unknown tokens ignored.
pub async fn last_uses_in_large_batches(store: &dyn Store) {
    store
        .insert_token(&token("tok_1", "a", "s1"))
        .await
        .unwrap();
    store
        .insert_token(&token("tok_2", "b", "s2"))
        .await
        .unwrap();
    let mut uses: Vec<(String, i64)> = (0..1200).map(|i| ("tok_1".into(), 10_000 - i)).collect();
    uses.push(("tok_2".into(), 7));
    uses.push(("tok_unknown".into(), 9));
    // Uses further apart than the resolution: each written in turn.
    uses.extend((0..300).map(|i| ("tok_2".into(), i * LAST_USE_RESOLUTION_SECS)));
    store.record_last_used(&uses).await.unwrap();
    let last = |tokens: Vec<TokenRecord>| {
        tokens
            .into_iter()
            .map(|t| (t.id, t.last_used_at))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        last(store.list_tokens(None).await.unwrap()),
        [
            ("tok_1".into(), Some(10_000)),
            ("tok_2".into(), Some(299 * LAST_USE_RESOLUTION_SECS))
        ]
    );
    store.record_last_used(&[]).await.unwrap();

    // To the minute: a use less than the resolution after the recorded one is not written,
    // one that far or further is, an earlier one never.
    let r = LAST_USE_RESOLUTION_SECS;
    let at = 1_000_000;
    let cases = [
        (at, at, "the first use"),
        (at + r - 1, at, "within the resolution: not written"),
        (at + r, at + r, "the resolution later: written"),
        (at - 5 * r, at + r, "never an earlier one"),
        (at + 3 * r + 7, at + 3 * r + 7, "further: written"),
    ];
    store
        .insert_token(&token("tok_3", "c", "s3"))
        .await
        .unwrap();
    for (used, recorded, why) in cases {
        store
            .record_last_used(&[("tok_3".into(), used)])
            .await
            .unwrap();
        let got = store.get_token("tok_3").await.unwrap().unwrap();
        assert_eq!(got.last_used_at, Some(recorded), "{why}");
    }
}

/// A session of `sub` (at `issuer`, with `sid`) made at `now`, ending an hour later.
pub fn session(n: u8, issuer: &str, sub: &str, sid: Option<&str>, now: i64) -> SessionRecord {
    SessionRecord {
        hash: sha256(&[n]),
        issuer: issuer.into(),
        subject: sub.into(),
        sid: sid.map(Into::into),
        claims: format!(r#"{{"sub":"{sub}"}}"#),
        id_token: Secret::new(format!("id-token-{n}")),
        refresh_token: n
            .is_multiple_of(2)
            .then(|| Secret::new(format!("refresh-{n}"))),
        access_expires_at: Some(now + 60),
        created_at: now,
        last_seen_at: now,
        expires_at: now + 3600,
    }
}

/// Sessions: round trip, uses, replacement, the absolute end, deletion and back-channel
/// logout by `sid`, by `sub` and by both.
pub async fn sessions(store: &dyn Store) {
    let now = crate::unix_now();
    let a = session(1, "main", "alice", Some("sid-1"), now);
    store.insert_session(&a).await.unwrap();
    assert!(matches!(
        store.insert_session(&a).await,
        Err(StoreError::Exists(_))
    ));
    assert_eq!(
        store.get_session(&a.hash, now).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.get_session(&sha256(b"x"), now).await.unwrap(), None);
    // Past its absolute end, a session is not found.
    assert_eq!(store.get_session(&a.hash, now + 3600).await.unwrap(), None);

    assert!(store.touch_session(&a.hash, now + 5).await.unwrap());
    assert!(!store.touch_session(&a.hash, now + 4).await.unwrap());
    assert!(!store.touch_session(&sha256(b"x"), now).await.unwrap());
    let seen = store.get_session(&a.hash, now).await.unwrap().unwrap();
    assert_eq!(seen.last_seen_at, now + 5);

    let mut refreshed = seen.clone();
    refreshed.refresh_token = Some(Secret::new("refresh-new"));
    refreshed.access_expires_at = Some(now + 600);
    assert!(store.replace_session(&refreshed).await.unwrap());
    assert_eq!(
        store.get_session(&a.hash, now).await.unwrap(),
        Some(refreshed)
    );

    assert!(store.delete_session(&a.hash).await.unwrap());
    assert!(!store.delete_session(&a.hash).await.unwrap());
    assert_eq!(store.get_session(&a.hash, now).await.unwrap(), None);
    assert!(!store.replace_session(&a).await.unwrap());

    // Back-channel logout.
    let s2 = session(2, "main", "bob", Some("sid-2"), now);
    let s3 = session(3, "main", "bob", Some("sid-3"), now);
    let s4 = session(4, "main", "bob", None, now);
    let s5 = session(5, "other", "bob", Some("sid-2"), now);
    let s6 = session(6, "main", "carol", Some("sid-6"), now);
    for s in [&s2, &s3, &s4, &s5, &s6] {
        store.insert_session(s).await.unwrap();
    }
    let by = |subject, sid| SessionMatch {
        issuer: "main",
        subject,
        sid,
    };
    assert!(store.end_sessions(by(None, None)).await.unwrap().is_empty());
    assert_eq!(
        store.end_sessions(by(None, Some("sid-2"))).await.unwrap(),
        vec![s2.hash]
    );
    assert_eq!(
        store
            .end_sessions(by(Some("carol"), Some("sid-3")))
            .await
            .unwrap(),
        Vec::<[u8; 32]>::new(),
        "sid and sub must both match"
    );
    let mut ended = store.end_sessions(by(Some("bob"), None)).await.unwrap();
    ended.sort();
    let mut want = vec![s3.hash, s4.hash];
    want.sort();
    assert_eq!(ended, want);
    for s in [&s2, &s3, &s4] {
        assert_eq!(store.get_session(&s.hash, now).await.unwrap(), None);
    }
    // Another issuer's session of the same sub and sid, and another user's, remain.
    assert!(store.get_session(&s5.hash, now).await.unwrap().is_some());
    assert!(store.get_session(&s6.hash, now).await.unwrap().is_some());
}
