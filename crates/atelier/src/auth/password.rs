//! Argon2id password hashing, off the async workers, at low priority, a few at a
//! time.
//!
//! Hashing is deliberately expensive (tens of milliseconds, 19 MiB); run on the async
//! workers it would stall every other request, and run without a limit a burst of
//! logins would take all memory and cores. So hashes run on a small pool of threads
//! of their own (one per core but one, by default), scheduled as batch work at the
//! lowest priority: while anything else wants a core, it gets it first, and a login
//! storm cannot starve the requests being served (measured in bench/).

use std::sync::{Arc, mpsc};

use anyhow::Context as _;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use parking_lot::Mutex;
use tokio::sync::{Semaphore, oneshot};

/// The result of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub matches: bool,
    /// The stored hash uses other parameters than the configured ones.
    pub needs_rehash: bool,
}

#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

type Job = Box<dyn FnOnce() + Send>;

struct Inner {
    argon2: Argon2<'static>,
    permits: Semaphore,
    /// The hashing threads' queue; they end when it is dropped.
    jobs: Mutex<mpsc::Sender<Job>>,
    /// A hash of a random password, verified against when the account does not exist,
    /// so that an unknown email costs exactly what a wrong password costs.
    dummy_hash: String,
}

impl PasswordHasher {
    /// Builds the hasher; computes the dummy hash, so call it from a blocking context
    /// or accept one hash's worth of start-up time.
    pub fn new(
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        let params = Params::new(memory_kib, iterations, parallelism, None)
            .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_password: [u8; 32] = rand::random();
        let dummy_hash = hash_with(&argon2, &dummy_password)?;
        // By default one core is left to everything else: a login storm must not
        // starve the requests already being served (measured in bench/).
        let permits = if concurrency == 0 {
            std::thread::available_parallelism().map_or(1, |n| usize::from(n).saturating_sub(1).max(1))
        } else {
            concurrency
        };
        Ok(PasswordHasher {
            inner: Arc::new(Inner {
                argon2,
                permits: Semaphore::new(permits),
                jobs: Mutex::new(start_pool(permits)?),
                dummy_hash,
            }),
        })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        let inner = Arc::clone(&self.inner);
        self.limited(move || hash_with(&inner.argon2, password.as_bytes()))
            .await
    }

    /// Verifies `password` against `stored`, or against the dummy hash when there is no
    /// account (then it never matches, but takes the same time).
    pub async fn verify(&self, password: String, stored: Option<String>) -> anyhow::Result<Verified> {
        let inner = Arc::clone(&self.inner);
        self.limited(move || {
            let (phc, real) = match &stored {
                Some(hash) => (hash.as_str(), true),
                None => (inner.dummy_hash.as_str(), false),
            };
            let parsed = PasswordHash::new(phc)
                .map_err(|e| anyhow::anyhow!("stored hash is not a PHC string: {e}"))?;
            let matches = inner.argon2.verify_password(password.as_bytes(), &parsed).is_ok() && real;
            Ok(Verified {
                matches,
                needs_rehash: real && !uses_params(&parsed, inner.argon2.params()),
            })
        })
        .await
    }

    async fn limited<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> anyhow::Result<T> + Send + 'static,
    {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .context("password hasher closed")?;
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(f());
        });
        self.inner
            .jobs
            .lock()
            .send(job)
            .map_err(|_| anyhow::anyhow!("the password hashing threads have stopped"))?;
        result.await.context("password hashing failed")?
    }
}

/// Starts `threads` hashing threads at the lowest priority, fed by the returned queue.
fn start_pool(threads: usize) -> anyhow::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..threads {
        let rx = Arc::clone(&rx);
        std::thread::Builder::new()
            .name("atelier-hash".into())
            .spawn(move || {
                lower_priority();
                loop {
                    let job = rx.lock().recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            })
            .context("cannot start a password hashing thread")?;
    }
    Ok(tx)
}

/// Batch scheduling at the lowest niceness, for the calling thread. Best effort:
/// where it is refused, hashing still works, at normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
        if let Err(e) =
            set_thread_priority_and_policy(thread_native_id(), thread_priority::ThreadPriority::Min, policy)
        {
            tracing::debug!(error = ?e, "cannot lower the priority of password hashing");
        }
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &[u8]) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| anyhow::anyhow!("salt encoding failed: {e}"))?;
    argon2
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
}

/// Whether a stored hash was made with exactly these parameters (argon2id, v19).
fn uses_params(hash: &PasswordHash<'_>, params: &Params) -> bool {
    let Ok(stored) = Params::try_from(hash) else {
        return false;
    };
    hash.algorithm == Algorithm::Argon2id.ident()
        && hash.version == Some(Version::V0x13 as u32)
        && stored.m_cost() == params.m_cost()
        && stored.t_cost() == params.t_cost()
        && stored.p_cost() == params.p_cost()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The niceness of the thread that runs a hash (field 19 of its stat line).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashes_run_at_the_lowest_priority() {
        let hasher = PasswordHasher::new(19_456, 2, 1, 1).expect("hasher");
        let nice = hasher
            .limited(|| {
                let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
                let after_name = stat
                    .rsplit_once(')')
                    .map(|(_, rest)| rest.to_owned())
                    .unwrap_or_default();
                Ok(after_name
                    .split_whitespace()
                    .nth(16)
                    .unwrap_or_default()
                    .parse::<i32>()?)
            })
            .await
            .expect("ran");
        assert_eq!(nice, 19);
    }

    #[tokio::test]
    async fn hashes_verify_and_detect_old_parameters() {
        let hasher = PasswordHasher::new(19_456, 2, 1, 2).expect("hasher");
        let hash = hasher.hash("correct horse battery".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");

        let ok = hasher
            .verify("correct horse battery".into(), Some(hash.clone()))
            .await
            .expect("verify");
        assert_eq!(
            ok,
            Verified {
                matches: true,
                needs_rehash: false
            }
        );
        let wrong = hasher
            .verify("wrong horse battery".into(), Some(hash.clone()))
            .await
            .expect("verify");
        assert!(!wrong.matches);
        let absent = hasher
            .verify("correct horse battery".into(), None)
            .await
            .expect("verify");
        assert_eq!(
            absent,
            Verified {
                matches: false,
                needs_rehash: false
            }
        );

        let stronger = PasswordHasher::new(19_456, 3, 1, 2).expect("hasher");
        let upgrade = stronger
            .verify("correct horse battery".into(), Some(hash))
            .await
            .expect("verify");
        assert_eq!(
            upgrade,
            Verified {
                matches: true,
                needs_rehash: true
            }
        );
    }
}
