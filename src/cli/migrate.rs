//! `authgate store migrate`.

use std::path::Path;

use super::{EXIT_CANTCREAT, EXIT_CONFIG, Failure};
use crate::config::Config;
use crate::secret::Secret;
use crate::store::{self, RedisStore, SqliteStore};

/// Exit code for a missing input file (EX_NOINPUT).
const EXIT_NOINPUT: u8 = 66;

/// Copies the embedded store at `from` into the Redis store at `to`, and prints the counts.
pub(super) async fn store_migrate(config: &Config, from: &Path, to: String) -> Result<u8, Failure> {
    if !from.is_file() {
        return Err(Failure::new(
            EXIT_NOINPUT,
            format!("--from: no store file at {}", from.display()),
        ));
    }
    let target = config.store.redis_at(Secret::new(to));
    target
        .validate()
        .map_err(|e| Failure::new(EXIT_CONFIG, format!("--to: {e}")))?;
    let source =
        SqliteStore::open(from).map_err(|e| Failure::new(EXIT_CANTCREAT, e.to_string()))?;
    let redis = RedisStore::open(&target)?;
    let done = store::migrate(&source, &redis, crate::unix_now()).await?;
    println!(
        "copied {} tokens, {} users, {} signing keys; {} already in the Redis store",
        done.tokens, done.users, done.keys, done.already_there
    );
    Ok(0)
}
