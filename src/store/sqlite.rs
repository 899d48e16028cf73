//! The embedded store: one SQLite file in WAL mode, so the CLI and the server can use it
//! at the same time: the schema, the queries and the mapping of rows to records. The
//! connections, and following the file at the path, are `pool`'s.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::file::ServerLock;
use super::pool::{Pool, create_parent, query_err};
use super::sessions_sql;
use super::sqlite_rows::{key_from_row, to_json, token_from_row, user_from_row};
use super::{
    KeyRecord, LAST_USE_RESOLUTION_SECS, SessionMatch, SessionRecord, Store, StoreError,
    TokenLookup, TokenRecord, TokenRef, UserRecord,
};

/// Schema migrations, applied in order; `PRAGMA user_version` counts the applied ones.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    email         TEXT,
    roles         TEXT NOT NULL,
    attributes    TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    hash         BLOB NOT NULL UNIQUE,
    owner        TEXT NOT NULL,
    name         TEXT NOT NULL,
    roles        TEXT NOT NULL,
    attributes   TEXT NOT NULL,
    scopes       TEXT,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX api_tokens_owner ON api_tokens (owner);
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    algorithm     TEXT NOT NULL,
    private_pkcs8 BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    retired_at    INTEGER,
    publish_until INTEGER
);
"#,
    r#"
ALTER TABLE signing_keys ADD COLUMN activates_at INTEGER;
UPDATE signing_keys SET activates_at = created_at;
"#,
    sessions_sql::MIGRATION,
];

/// The SQLite-backed [`Store`].
pub struct SqliteStore {
    pool: Arc<Pool>,
}

const TOKEN_COLUMNS: &str = "t.id, t.hash, t.owner, t.name, t.roles, t.attributes, t.scopes, \
     t.created_at, t.expires_at, t.last_used_at, t.revoked_at";
const USER_COLUMNS: &str =
    "u.username, u.password_hash, u.email, u.roles, u.attributes, u.created_at";
impl SqliteStore {
    /// Opens (creating when missing) the database at `path` and applies migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, None)
    }

    /// As [`SqliteStore::open`], for a server: holds a shared lock on `<path>.lock` while
    /// open, so that commands can tell that a server uses the store.
    pub fn open_serving(path: &Path) -> Result<Self, StoreError> {
        create_parent(path)?;
        let lock = ServerLock::acquire(path).map_err(|e| StoreError::Open {
            path: super::file::lock_path(path).display().to_string(),
            reason: e.to_string(),
        })?;
        Self::open_with(path, Some(lock))
    }

    fn open_with(path: &Path, lock: Option<ServerLock>) -> Result<Self, StoreError> {
        Ok(Self {
            pool: Arc::new(Pool::open(path, lock, migrate)?),
        })
    }

    /// Runs `f` on a pooled connection on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.pool.run(f).await
    }
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let applied: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied.max(0) as usize) {
        // Releases before key states set `user_version` back to 1 when they opened a newer
        // store, after this migration had run: its column is there already.
        if i == 1 && has_column(&tx, "signing_keys", "activates_at")? {
            continue;
        }
        tx.execute_batch(sql)?;
    }
    // Never lowered: an older authgate (a CLI during an upgrade, say) leaves the newer
    // schema as it is, and it reads the columns it knows.
    if applied < MIGRATIONS.len() as i64 {
        tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    }
    tx.commit()
}

fn has_column(c: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    c.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
        .exists(params![table, column])
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.pool.follow_file(true).await?;
        self.run(|c| {
            c.query_row("SELECT count(*) FROM signing_keys", [], |_| Ok(()))
                .map_err(query_err)
        })
        .await
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let t = token.clone();
        let roles = to_json(&t.roles)?;
        let attributes = to_json(&t.attributes)?;
        let scopes = t.scopes.as_ref().map(to_json).transpose()?;
        self.run(move |c| {
            c.execute(
                "INSERT INTO api_tokens (id, hash, owner, name, roles, attributes, scopes, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![t.id, &t.hash[..], t.owner, t.name, roles, attributes, scopes, t.created_at, t.expires_at],
            )
            .map_err(query_err)?;
            Ok(())
        })
        .await
    }

    async fn lookup_token(&self, hash: &[u8; 32]) -> Result<Option<TokenLookup>, StoreError> {
        let hash = *hash;
        self.run(move |c| {
            let sql = format!(
                "SELECT {TOKEN_COLUMNS}, {USER_COLUMNS} FROM api_tokens t
                 LEFT JOIN users u ON u.username = t.owner WHERE t.hash = ?1"
            );
            let mut stmt = c.prepare_cached(&sql).map_err(query_err)?;
            stmt.query_row(params![&hash[..]], |row| {
                let token = token_from_row(row, 0)?;
                let owner = match row.get::<_, Option<String>>(11)? {
                    Some(_) => Some(user_from_row(row, 11)?),
                    None => None,
                };
                Ok(TokenLookup { token, owner })
            })
            .optional()
            .map_err(query_err)
        })
        .await
    }

    async fn list_tokens(&self, owner: Option<&str>) -> Result<Vec<TokenRecord>, StoreError> {
        let owner = owner.map(str::to_owned);
        self.run(move |c| {
            let sql = format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE ?1 IS NULL OR t.owner = ?1
                 ORDER BY t.created_at, t.id"
            );
            let mut stmt = c.prepare(&sql).map_err(query_err)?;
            let rows = stmt
                .query_map(params![owner], |r| token_from_row(r, 0))
                .map_err(query_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(query_err)
        })
        .await
    }

    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.id = ?1");
            c.query_row(&sql, params![id], |r| token_from_row(r, 0))
                .optional()
                .map_err(query_err)
        })
        .await
    }

    async fn revoke_token(&self, token: TokenRef<'_>, at: i64) -> Result<bool, StoreError> {
        let (by_id, id, hash) = match token {
            TokenRef::Id(id) => (true, id.to_owned(), Vec::new()),
            TokenRef::Hash(h) => (false, String::new(), h.to_vec()),
        };
        self.run(move |c| {
            let n = if by_id {
                c.execute(
                    "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    params![id, at],
                )
            } else {
                c.execute(
                    "UPDATE api_tokens SET revoked_at = ?2 WHERE hash = ?1 AND revoked_at IS NULL",
                    params![hash, at],
                )
            }
            .map_err(query_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn record_last_used(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        let uses = uses.to_vec();
        self.run(move |c| {
            let tx = c.transaction().map_err(query_err)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1
                         AND (last_used_at IS NULL OR last_used_at <= ?2 - ?3)",
                    )
                    .map_err(query_err)?;
                for (id, at) in &uses {
                    stmt.execute(params![id, at, LAST_USE_RESOLUTION_SECS])
                        .map_err(query_err)?;
                }
            }
            tx.commit().map_err(query_err)
        })
        .await
    }

    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let u = user.clone();
        let roles = to_json(&u.roles)?;
        let attributes = to_json(&u.attributes)?;
        self.run(move |c| {
            let result = c.execute(
                "INSERT INTO users (username, password_hash, email, roles, attributes, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    u.username,
                    u.password_hash,
                    u.email,
                    roles,
                    attributes,
                    u.created_at
                ],
            );
            match result {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::Exists(format!("user '{}'", u.username)))
                }
                Err(e) => Err(query_err(e)),
            }
        })
        .await
    }

    async fn get_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let username = username.to_owned();
        self.run(move |c| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.username = ?1");
            let mut stmt = c.prepare_cached(&sql).map_err(query_err)?;
            stmt.query_row(params![username], |r| user_from_row(r, 0))
                .optional()
                .map_err(query_err)
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.run(|c| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users u ORDER BY u.username");
            let mut stmt = c.prepare(&sql).map_err(query_err)?;
            let rows = stmt
                .query_map([], |r| user_from_row(r, 0))
                .map_err(query_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(query_err)
        })
        .await
    }

    async fn set_password(&self, username: &str, hash: &str) -> Result<bool, StoreError> {
        let (username, hash) = (username.to_owned(), hash.to_owned());
        self.run(move |c| {
            let n = c
                .execute(
                    "UPDATE users SET password_hash = ?2 WHERE username = ?1",
                    params![username, hash],
                )
                .map_err(query_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn remove_user(&self, username: &str, at: i64) -> Result<bool, StoreError> {
        let username = username.to_owned();
        self.run(move |c| {
            let tx = c.transaction().map_err(query_err)?;
            let n = tx
                .execute("DELETE FROM users WHERE username = ?1", params![username])
                .map_err(query_err)?;
            if n > 0 {
                tx.execute(
                    "UPDATE api_tokens SET revoked_at = ?2 WHERE owner = ?1 AND revoked_at IS NULL",
                    params![username, at],
                )
                .map_err(query_err)?;
            }
            tx.commit().map_err(query_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn subjects(&self, among: Option<&[String]>) -> Result<Vec<String>, StoreError> {
        // The names go in as one JSON array: any number of them in one statement.
        let among = among.map(|a| to_json(&a)).transpose()?;
        self.run(move |c| {
            let sql = match among {
                None => {
                    "SELECT username FROM users UNION
                     SELECT owner FROM api_tokens WHERE revoked_at IS NULL ORDER BY 1"
                }
                Some(_) => {
                    "SELECT DISTINCT n.value FROM json_each(?1) n
                     WHERE n.type = 'text' AND (
                       EXISTS (SELECT 1 FROM users u WHERE u.username = n.value)
                       OR EXISTS (SELECT 1 FROM api_tokens t
                                  WHERE t.owner = n.value AND t.revoked_at IS NULL))
                     ORDER BY 1"
                }
            };
            let mut stmt = c.prepare_cached(sql).map_err(query_err)?;
            let name: fn(&Row<'_>) -> rusqlite::Result<String> = |r| r.get(0);
            let rows = match &among {
                None => stmt.query_map([], name),
                Some(names) => stmt.query_map(params![names], name),
            }
            .map_err(query_err)?;
            rows.collect::<rusqlite::Result<Vec<String>>>()
                .map_err(query_err)
        })
        .await
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let s = session.clone();
        self.run(move |c| sessions_sql::insert(c, &s)).await
    }

    async fn get_session(
        &self,
        hash: &[u8; 32],
        now: i64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let hash = *hash;
        self.run(move |c| sessions_sql::get(c, hash, now)).await
    }

    async fn touch_session(&self, hash: &[u8; 32], at: i64) -> Result<bool, StoreError> {
        let hash = *hash;
        self.run(move |c| sessions_sql::touch(c, hash, at)).await
    }

    async fn replace_session(&self, session: &SessionRecord) -> Result<bool, StoreError> {
        let s = session.clone();
        self.run(move |c| sessions_sql::replace(c, &s)).await
    }

    async fn delete_session(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        let hash = *hash;
        self.run(move |c| sessions_sql::delete(c, hash)).await
    }

    async fn end_sessions(&self, which: SessionMatch<'_>) -> Result<Vec<[u8; 32]>, StoreError> {
        let (issuer, subject, sid) = (
            which.issuer.to_owned(),
            which.subject.map(str::to_owned),
            which.sid.map(str::to_owned),
        );
        self.run(move |c| {
            sessions_sql::end(
                c,
                SessionMatch {
                    issuer: &issuer,
                    subject: subject.as_deref(),
                    sid: sid.as_deref(),
                },
            )
        })
        .await
    }

    async fn keys(&self, now: i64) -> Result<Vec<KeyRecord>, StoreError> {
        self.run(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT kid, algorithm, private_pkcs8, created_at,
                            COALESCE(activates_at, created_at), retired_at, publish_until
                     FROM signing_keys WHERE publish_until IS NULL OR publish_until > ?1
                     ORDER BY COALESCE(activates_at, created_at) DESC, rowid DESC",
                )
                .map_err(query_err)?;
            let rows = stmt
                .query_map(params![now], key_from_row)
                .map_err(query_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(query_err)
        })
        .await
    }

    async fn add_key(
        &self,
        key: &KeyRecord,
        now: i64,
        publish_until: i64,
        only_if_none: bool,
    ) -> Result<bool, StoreError> {
        let key = key.clone();
        self.run(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(query_err)?;
            if only_if_none {
                let current: Option<String> = tx
                    .query_row(
                        "SELECT kid FROM signing_keys WHERE algorithm = ?1
                         AND (retired_at IS NULL OR retired_at > ?2) LIMIT 1",
                        params![key.algorithm, now],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(query_err)?;
                if current.is_some() {
                    return Ok(false);
                }
            }
            // A scheduled key that never signed is replaced, not kept beside the new one.
            tx.execute(
                "DELETE FROM signing_keys WHERE COALESCE(activates_at, created_at) > ?1",
                params![now],
            )
            .map_err(query_err)?;
            tx.execute(
                "UPDATE signing_keys SET retired_at = ?1, publish_until = ?2
                 WHERE retired_at IS NULL OR retired_at > ?3",
                params![key.activates_at, publish_until, now],
            )
            .map_err(query_err)?;
            tx.execute(
                "DELETE FROM signing_keys WHERE publish_until IS NOT NULL AND publish_until <= ?1",
                params![now],
            )
            .map_err(query_err)?;
            tx.execute(
                "INSERT INTO signing_keys (kid, algorithm, private_pkcs8, created_at, activates_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    key.kid,
                    key.algorithm,
                    key.private_pkcs8,
                    key.created_at,
                    key.activates_at
                ],
            )
            .map_err(query_err)?;
            tx.commit().map_err(query_err)?;
            Ok(true)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::sha256;
    use crate::store::suite::{self, token};

    #[tokio::test]
    async fn tokens_users_and_keys_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("sub/a.db")).unwrap();
        suite::tokens_users_and_keys_round_trip(&store).await;
    }

    #[tokio::test]
    async fn sessions() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        suite::sessions(&store).await;
    }

    /// A copy of the store at `path`, as a backup tool makes it (WAL content included).
    fn backup(path: &Path, to: &Path) {
        let db = Connection::open(path).unwrap();
        db.execute("VACUUM INTO ?1", params![to.to_str().unwrap()])
            .unwrap();
    }

    #[tokio::test]
    async fn the_store_follows_the_file_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = SqliteStore::open(&path).unwrap();
        store
            .insert_token(&token("tok_1", "alice", "s1"))
            .await
            .unwrap();
        let copy = dir.path().join("copy.db");
        backup(&path, &copy);
        store
            .insert_token(&token("tok_2", "alice", "s2"))
            .await
            .unwrap();

        // Deleted: nothing is answered from the unlinked file, and no new file is made.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(store.ping().await, Err(StoreError::Gone { .. })));
        assert!(matches!(
            store.lookup_token(&sha256(b"s1")).await,
            Err(StoreError::Gone { .. })
        ));
        assert!(!path.exists(), "the store does not create a new file");
        let wal = std::fs::metadata(dir.path().join("a.db-wal")).map_or(0, |m| m.len());
        assert_eq!(
            wal, 0,
            "the old file's WAL is emptied: its pages are not the next file's"
        );

        // A backup restored by renaming it into place: opened, and what it lacks is gone.
        let restored = dir.path().join("restored.db");
        std::fs::copy(&copy, &restored).unwrap();
        std::fs::rename(&restored, &path).unwrap();
        store.ping().await.unwrap();
        assert!(store.lookup_token(&sha256(b"s1")).await.unwrap().is_some());
        assert!(store.lookup_token(&sha256(b"s2")).await.unwrap().is_none());

        // Replaced while present by a copy revoked through another connection (the CLI's):
        // the store answers from the new file once it checks (`ping` checks at once).
        let copy = dir.path().join("copy2.db");
        backup(&path, &copy);
        let other = Connection::open(&copy).unwrap();
        other
            .execute(
                "UPDATE api_tokens SET revoked_at = 7 WHERE id = 'tok_1'",
                [],
            )
            .unwrap();
        drop(other);
        std::fs::rename(&copy, &path).unwrap();
        store.ping().await.unwrap();
        let found = store.lookup_token(&sha256(b"s1")).await.unwrap().unwrap();
        let revoked = found.token.revoked_at;
        assert_eq!(revoked, Some(7));
    }

    #[tokio::test]
    async fn a_serving_store_holds_its_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let command = SqliteStore::open(&path).unwrap();
        assert!(!crate::store::held_by_server(&path).unwrap());
        let server = SqliteStore::open_serving(&path).unwrap();
        assert!(crate::store::held_by_server(&path).unwrap());
        drop((server, command));
        assert!(!crate::store::held_by_server(&path).unwrap());
    }

    #[tokio::test]
    async fn subjects_are_users_and_owners_of_live_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("a.db")).unwrap();
        suite::subjects_are_users_and_owners_of_live_tokens(&store).await;
    }

    #[tokio::test]
    async fn users_and_optional_fields_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("a.db")).unwrap();
        suite::users_and_optional_fields_round_trip(&store).await;
    }

    #[tokio::test]
    async fn last_uses_in_large_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("a.db")).unwrap();
        suite::last_uses_in_large_batches(&store).await;
    }

    #[tokio::test]
    async fn keys_of_a_store_from_before_key_states_sign_since_their_creation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO signing_keys (kid, algorithm, private_pkcs8, created_at, retired_at, publish_until)
             VALUES ('old', 'ES256', x'01', 100, 200, 900), ('cur', 'ES256', x'01', 200, NULL, NULL)",
            [],
        )
        .unwrap();
        drop(conn);
        let store = SqliteStore::open(&path).unwrap();
        drop(store);
        // An older release set the version back (the column stays), then a newer opens it.
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        drop(conn);
        let store = SqliteStore::open(&path).unwrap();
        let keys = store.keys(300).await.unwrap();
        let rows: Vec<_> = keys
            .iter()
            .map(|k| (k.kid.as_str(), k.activates_at, k.retired_at))
            .collect();
        assert_eq!(rows, [("cur", 200, None), ("old", 100, Some(200))]);
        // A newer store is never set back to an older version.
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 9).unwrap();
        drop(conn);
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 9);
    }

    #[test]
    fn a_store_that_cannot_be_opened_names_the_path() {
        let err = SqliteStore::open(Path::new("/proc/authgate/x.db"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("/proc/authgate/x.db"), "{err}");
    }
}
