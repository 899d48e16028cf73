//! The password-check pool: a few OS threads of its own that verify argon2 PHC hashes, each
//! into one block buffer it allocates once and reuses for every check.
//!
//! `Argon2::verify_password` allocates the whole argon2 memory (19 MiB with the default
//! parameters) on every call and frees it afterwards. On tokio's blocking threads that meant
//! one 19 MiB block per thread that ever ran a check, kept by glibc in that thread's arena
//! after the first free had raised the mmap threshold: Basic-only traffic took a process from
//! 10 to 106 MiB in 90 s. Here the memory is `workers x` the largest hash's (one block
//! buffer per worker, allocated on its first check), whatever the traffic.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::secret::{Secret, constant_time_eq};

/// The most worker threads (and block buffers) a pool has, whatever the core count.
const MAX_WORKERS: usize = 4;

/// Worker threads verifying passwords; dropping the pool ends them once their queue is empty.
pub(super) struct PasswordPool {
    jobs: mpsc::Sender<Job>,
    /// How many times a worker (re)allocated its block buffer: once per worker, plus once
    /// per larger `m` it met. Read by the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    buffers_allocated: Arc<AtomicUsize>,
}

/// One check: the password, the PHC string to verify it against, the caller's permit (held
/// until the check has run, even if the caller has gone) and where the answer goes.
struct Job {
    password: Secret,
    phc: String,
    permit: OwnedSemaphorePermit,
    reply: oneshot::Sender<bool>,
}

/// The pool's workers are gone (each panicked); no check can be made.
#[derive(Debug, thiserror::Error)]
#[error("the password check workers have stopped")]
pub(super) struct PoolStopped;

impl PasswordPool {
    /// `min(cores, 4)` workers; at least one.
    pub(super) fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::with_workers(cores.clamp(1, MAX_WORKERS))
    }

    /// `workers` threads sharing one queue. The threads start now; their block buffers are
    /// allocated on their first check, so a process that never sees Basic auth never
    /// takes argon2's memory.
    pub(super) fn with_workers(workers: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let buffers_allocated = Arc::new(AtomicUsize::new(0));
        for i in 0..workers.max(1) {
            let (queue, allocated) = (queue.clone(), buffers_allocated.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("authgate-argon2-{i}"))
                .spawn(move || work(&queue, &allocated));
            if let Err(e) = spawned {
                // The workers already started serve the queue; with none, checks answer
                // `PoolStopped`.
                tracing::error!("cannot start a password check thread: {e}");
            }
        }
        Self {
            jobs,
            buffers_allocated,
        }
    }

    /// Whether `password` matches the PHC hash `phc`, computed on a worker. `permit` is
    /// released when the check has run.
    pub(super) async fn verify(
        &self,
        password: Secret,
        phc: String,
        permit: OwnedSemaphorePermit,
    ) -> Result<bool, PoolStopped> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                password,
                phc,
                permit,
                reply,
            })
            .map_err(|_| PoolStopped)?;
        answer.await.map_err(|_| PoolStopped)
    }

    /// Block buffers allocated so far by all workers.
    #[cfg(test)]
    pub(super) fn buffers_allocated(&self) -> usize {
        self.buffers_allocated.load(Ordering::Relaxed)
    }
}

/// A worker's loop: one job at a time until the pool is dropped, all into `blocks`.
fn work(queue: &Mutex<mpsc::Receiver<Job>>, allocated: &AtomicUsize) {
    let mut blocks: Vec<Block> = Vec::new();
    loop {
        // The lock is held only while waiting for the next job, not during the check.
        let next = queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .recv();
        let Ok(job) = next else {
            return;
        };
        // A panic in argon2 would leave this worker's buffer merely dirty (every check
        // writes each block before reading it): keep the worker, drop the reply so the
        // caller gets `PoolStopped` for this one check.
        let ok = std::panic::catch_unwind(AssertUnwindSafe(|| {
            verify_into(job.password.expose(), &job.phc, &mut blocks, allocated)
        }));
        drop(job.permit);
        if let Ok(ok) = ok {
            // The caller may have gone (request cancelled): nothing to tell then.
            let _ = job.reply.send(ok);
        }
    }
}

/// Whether `password` matches `phc`, computing argon2 in `blocks` (grown when a hash needs
/// more memory than any before it; never shrunk). Any parse error is a mismatch.
///
/// What `PasswordVerifier::verify_password` does, minus its allocation: algorithm, version,
/// parameters, salt and output length all come from the PHC string.
pub(super) fn verify_into(
    password: &str,
    phc: &str,
    blocks: &mut Vec<Block>,
    allocated: &AtomicUsize,
) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) =
        (Algorithm::try_from(hash.algorithm), Params::try_from(&hash))
    else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let needed = params.block_count();
    if blocks.len() < needed {
        // Freed first: the old and the new buffer are never held together.
        *blocks = Vec::new();
        *blocks = vec![Block::default(); needed];
        allocated.fetch_add(1, Ordering::Relaxed);
    }
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut blocks[..])
        .is_ok()
        && constant_time_eq(out, expected.as_bytes())
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};

    use super::*;

    /// A PHC hash of `password` made by the argon2 crate itself.
    fn reference_hash(
        password: &str,
        algorithm: Algorithm,
        version: Version,
        params: Params,
    ) -> String {
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        Argon2::new(algorithm, version, params)
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    fn argon2id(m: u32, t: u32, p: u32) -> String {
        let params = Params::new(m, t, p, None).unwrap();
        reference_hash("pw", Algorithm::Argon2id, Version::V0x13, params)
    }

    /// Hashes made with other algorithms, versions, parameters and output lengths verify as
    /// the argon2 crate's own verifier says, all in one reused buffer: the largest first, so
    /// that the others run in a buffer left dirty by it.
    #[test]
    fn verifies_what_argon2_verifies_in_one_buffer() {
        let allocated = AtomicUsize::new(0);
        let mut blocks = Vec::new();
        let params = |m, t, p, out| Params::new(m, t, p, out).unwrap();
        let hashes = [
            argon2id(4096, 1, 2),
            argon2id(64, 3, 1),
            reference_hash(
                "pw",
                Algorithm::Argon2i,
                Version::V0x13,
                params(256, 2, 1, None),
            ),
            reference_hash(
                "pw",
                Algorithm::Argon2d,
                Version::V0x13,
                params(128, 1, 4, None),
            ),
            reference_hash(
                "pw",
                Algorithm::Argon2i,
                Version::V0x10,
                params(32, 2, 1, Some(16)),
            ),
            reference_hash(
                "pw",
                Algorithm::Argon2id,
                Version::V0x13,
                params(64, 1, 1, Some(64)),
            ),
        ];
        for phc in &hashes {
            let parsed = PasswordHash::new(phc).unwrap();
            for password in ["pw", "pW", "", "pw ", "pwpw"] {
                let expected = Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok();
                assert_eq!(
                    verify_into(password, phc, &mut blocks, &allocated),
                    expected,
                    "{password:?} against {phc}"
                );
                assert_eq!(expected, password == "pw", "{password:?} against {phc}");
            }
        }
        // The first (largest) hash sized the buffer; none after it needed more.
        assert_eq!(allocated.load(Ordering::Relaxed), 1);
        assert_eq!(blocks.len(), 4096);
    }

    #[test]
    fn malformed_hashes_never_match() {
        let allocated = AtomicUsize::new(0);
        let mut blocks = Vec::new();
        let good = argon2id(64, 1, 1);
        let body = good.trim_start_matches("$argon2id$v=19$m=64,t=1,p=1");
        for phc in [
            String::new(),
            "not a phc string".to_owned(),
            // No output; no salt.
            good[..good.rfind('$').unwrap()].to_owned(),
            format!(
                "$argon2id$v=19$m=64,t=1,p=1${}",
                body.rsplit('$').next().unwrap()
            ),
            // Another algorithm, an unknown version, an unknown parameter, too little memory.
            format!("$scrypt$ln=16,r=8,p=1{body}"),
            format!("$argon2id$v=18$m=64,t=1,p=1{body}"),
            format!("$argon2id$v=19$m=64,t=1,p=1,x=2{body}"),
            format!("$argon2id$v=19$m=4,t=1,p=1{body}"),
            // The right hash with its last character changed.
            format!("{}A", &good[..good.len() - 1]),
        ] {
            assert!(!verify_into("pw", &phc, &mut blocks, &allocated), "{phc}");
        }
        assert!(verify_into("pw", &good, &mut blocks, &allocated));
    }

    /// One worker: one buffer for any number of checks, grown once by a hash that needs more
    /// memory, and not again for either hash.
    #[tokio::test]
    async fn a_worker_allocates_its_buffer_once() {
        let pool = PasswordPool::with_workers(1);
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let (small, large) = (argon2id(256, 1, 1), argon2id(2048, 1, 1));
        let check = |password: &'static str, phc: &String| {
            let (permits, phc) = (permits.clone(), phc.clone());
            let pool = &pool;
            async move {
                let permit = permits.acquire_owned().await.unwrap();
                pool.verify(Secret::new(password), phc, permit)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            pool.buffers_allocated(),
            0,
            "nothing before the first check"
        );
        for _ in 0..10 {
            assert!(check("pw", &small).await);
            assert!(!check("no", &small).await);
        }
        assert_eq!(pool.buffers_allocated(), 1);
        for phc in [&large, &small, &large, &small] {
            assert!(check("pw", phc).await);
            assert!(!check("no", phc).await);
        }
        assert_eq!(pool.buffers_allocated(), 2);
        assert_eq!(permits.available_permits(), 1, "the permit is given back");
    }

    /// Parallel checks on two workers: every answer right, at most one buffer per worker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_checks_take_one_buffer_per_worker() {
        let pool = Arc::new(PasswordPool::with_workers(2));
        let permits = Arc::new(tokio::sync::Semaphore::new(4));
        let phc = argon2id(256, 1, 1);
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let (pool, permits, phc) = (pool.clone(), permits.clone(), phc.clone());
                tokio::spawn(async move {
                    let permit = permits.acquire_owned().await.unwrap();
                    let password = if i % 2 == 0 { "pw" } else { "wrong" };
                    let ok = pool
                        .verify(Secret::new(password), phc, permit)
                        .await
                        .unwrap();
                    (i, ok)
                })
            })
            .collect();
        for t in tasks {
            let (i, ok) = t.await.unwrap();
            assert_eq!(ok, i % 2 == 0, "check {i}");
        }
        let buffers = pool.buffers_allocated();
        assert!((1..=2).contains(&buffers), "{buffers} buffers");
        assert_eq!(permits.available_permits(), 4, "every permit given back");
    }
}
