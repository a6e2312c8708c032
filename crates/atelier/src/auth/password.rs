//! Argon2id password hashing, off the async workers, at low priority, a few at a
//! time.
//!
//! Hashing is deliberately expensive (tens of milliseconds, 19 MiB); run on the async
//! workers it would stall every other request, and run without a limit a burst of
//! logins would take all memory and cores. So hashes run on a small pool of threads
//! of their own (one per core but one, by default), scheduled as batch work at the
//! lowest priority: while anything else wants a core, it gets it first, and a login
//! storm cannot starve the requests being served (measured in bench/).
//!
//! Each hashing thread keeps its 19 MiB of argon2 memory from one hash to the
//! next and lets it go after a second without work. The argon2 crate's own
//! `hash_password` allocates it afresh each time: a fresh mapping, 4,864 page
//! faults to fill it and an unmap that zaps it again, a third of a hash's time
//! spent in the kernel, where a thread is not preempted on this kernel however
//! low its priority, and TLB shootdowns that interrupt the other core (ADR-0026).

use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::Context as _;
use argon2::password_hash::{self, Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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

type Job = Box<dyn FnOnce(&mut Memory) + Send>;

/// What new hashes use; a stored hash made otherwise still verifies, and is
/// redone at the next login.
const ALGORITHM: Algorithm = Algorithm::Argon2id;
const VERSION: Version = Version::V0x13;

/// How long a hashing thread keeps its memory without work.
const KEEP_MEMORY: Duration = Duration::from_secs(1);

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
        let argon2 = Argon2::new(ALGORITHM, VERSION, params);
        let dummy_password: [u8; 32] = rand::random();
        let dummy_hash = hash_with(&argon2, &dummy_password, &mut Memory::default())?;
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
                jobs: Mutex::new(start_pool(permits, KEEP_MEMORY)?),
                dummy_hash,
            }),
        })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        let inner = Arc::clone(&self.inner);
        self.limited(move |memory| hash_with(&inner.argon2, password.as_bytes(), memory))
            .await
    }

    /// Verifies `password` against `stored`, or against the dummy hash when there is no
    /// account (then it never matches, but takes the same time).
    pub async fn verify(&self, password: String, stored: Option<String>) -> anyhow::Result<Verified> {
        let inner = Arc::clone(&self.inner);
        self.limited(move |memory| {
            let (phc, real) = match &stored {
                Some(hash) => (hash.as_str(), true),
                None => (inner.dummy_hash.as_str(), false),
            };
            let parsed = PasswordHash::new(phc)
                .map_err(|e| anyhow::anyhow!("stored hash is not a PHC string: {e}"))?;
            let matches = verify_with(password.as_bytes(), &parsed, memory) && real;
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
        F: FnOnce(&mut Memory) -> anyhow::Result<T> + Send + 'static,
    {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .context("password hasher closed")?;
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = done.send(f(memory));
        });
        self.inner
            .jobs
            .lock()
            .send(job)
            .map_err(|_| anyhow::anyhow!("the password hashing threads have stopped"))?;
        result.await.context("password hashing failed")?
    }
}

/// Starts `threads` hashing threads at the lowest priority, fed by the returned
/// queue. Each keeps its argon2 memory while jobs keep coming, and frees it
/// after `keep` without one.
fn start_pool(threads: usize, keep: Duration) -> anyhow::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..threads {
        let rx = Arc::clone(&rx);
        std::thread::Builder::new()
            .name("atelier-hash".into())
            .spawn(move || {
                lower_priority();
                let mut memory = Memory::default();
                loop {
                    // A thread waiting for the queue while another holds it waits
                    // as long, so that both free their memory when work stops.
                    let job = match rx.try_lock_for(keep) {
                        Some(rx) => rx.recv_timeout(keep),
                        None => Err(mpsc::RecvTimeoutError::Timeout),
                    };
                    match job {
                        Ok(job) => job(&mut memory),
                        Err(mpsc::RecvTimeoutError::Timeout) => memory.release(),
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
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

/// The working memory of a hash, kept by its thread from one hash to the next.
#[derive(Default)]
struct Memory(Vec<Block>);

impl Memory {
    /// `count` blocks, reusing the last hash's when it needed as many. What
    /// they hold does not matter: argon2 writes every block before reading it.
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.0.len() != count {
            self.0 = Vec::new();
            self.0.resize(count, Block::default());
        }
        &mut self.0
    }

    fn release(&mut self) {
        self.0 = Vec::new();
    }
}

/// A new PHC string for `password` with a random salt: what the argon2 crate's
/// `hash_password` makes, computed in `memory`.
fn hash_with(argon2: &Argon2<'_>, password: &[u8], memory: &mut Memory) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| anyhow::anyhow!("salt encoding failed: {e}"))?;
    let hash = compute(argon2, password, salt.as_salt(), memory)
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    Ok(PasswordHash {
        algorithm: ALGORITHM.ident(),
        version: Some(VERSION.into()),
        params: ParamsString::try_from(argon2.params())
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(hash),
    }
    .to_string())
}

/// Whether `password` hashes to `stored`, with the stored hash's own algorithm,
/// version and parameters (what `PasswordVerifier` does), computed in `memory`.
/// A stored hash these cannot be read from matches nothing, as there.
fn verify_with(password: &[u8], stored: &PasswordHash<'_>, memory: &mut Memory) -> bool {
    let (Some(salt), Some(expected)) = (stored.salt, &stored.hash) else {
        return false;
    };
    // `Output` compares in constant time.
    rehash(password, stored, salt, memory).is_ok_and(|computed| &computed == expected)
}

/// `password` hashed as `stored` was: its algorithm, version and parameters
/// (the output length included) with `salt`.
fn rehash(
    password: &[u8],
    stored: &PasswordHash<'_>,
    salt: Salt<'_>,
    memory: &mut Memory,
) -> password_hash::Result<Output> {
    let algorithm = Algorithm::try_from(stored.algorithm)?;
    let version = stored
        .version
        .map(Version::try_from)
        .transpose()?
        .unwrap_or_default();
    let argon2 = Argon2::new(algorithm, version, Params::try_from(stored)?);
    compute(&argon2, password, salt, memory)
}

/// The raw argon2 output for `password` and `salt`, as long as the parameters
/// say (32 bytes unless they say otherwise).
fn compute(
    argon2: &Argon2<'_>,
    password: &[u8],
    salt: Salt<'_>,
    memory: &mut Memory,
) -> password_hash::Result<Output> {
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let params = argon2.params();
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let blocks = memory.blocks(params.block_count());
    Output::init_with(len, |out| {
        Ok(argon2.hash_password_into_with_memory(password, salt_bytes, out, &mut *blocks)?)
    })
}

/// Whether a stored hash was made with exactly these parameters (argon2id, v19).
fn uses_params(hash: &PasswordHash<'_>, params: &Params) -> bool {
    let Ok(stored) = Params::try_from(hash) else {
        return false;
    };
    hash.algorithm == ALGORITHM.ident()
        && hash.version == Some(VERSION as u32)
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
            .limited(|_| {
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

    /// The server starts the hashing threads from the blocking pool, whose long
    /// slice they must keep through their change of policy (ADR-0029).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_keep_the_slice_of_the_thread_that_started_them() {
        let slice = Duration::from_millis(3);
        let (hasher, default) = std::thread::spawn(move || {
            let default = crate::sys::thread_slice().expect("sched_getattr");
            crate::sys::set_thread_slice(slice).expect("sched_setattr");
            (PasswordHasher::new(8_192, 1, 1, 1).expect("hasher"), default)
        })
        .join()
        .expect("thread");
        let seen = hasher
            .limited(|_| Ok(crate::sys::thread_slice()?))
            .await
            .expect("ran");
        // Kernels before 6.12 report no slice for ordinary threads at all.
        if !default.is_zero() {
            assert_eq!(seen, slice);
        }
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

        // A stored hash of another algorithm matches nothing (no error).
        let foreign = hasher
            .verify(
                "correct horse battery".into(),
                Some("$scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into()),
            )
            .await
            .expect("verify");
        assert!(!foreign.matches);

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

    /// Stored hashes made by the argon2 crate's own `hash_password` (every hash
    /// before hashing threads kept their memory) verify here, and ours there.
    #[tokio::test]
    async fn hashes_are_the_argon2_crates_own() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let hasher = PasswordHasher::new(8_192, 1, 1, 1).expect("hasher");
        let theirs_argon2 = Argon2::new(
            ALGORITHM,
            VERSION,
            Params::new(8_192, 1, 1, None).expect("params"),
        );
        let salt = SaltString::encode_b64(b"sixteen byte salt").expect("salt");
        let theirs = theirs_argon2
            .hash_password(b"plum orchard", &salt)
            .expect("hash")
            .to_string();
        let ok = hasher
            .verify("plum orchard".into(), Some(theirs.clone()))
            .await
            .expect("verify");
        assert!(ok.matches && !ok.needs_rehash);
        assert!(
            !hasher
                .verify("plum orchards".into(), Some(theirs))
                .await
                .expect("verify")
                .matches
        );

        let ours = hasher.hash("plum orchard".into()).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("PHC string");
        assert!(theirs_argon2.verify_password(b"plum orchard", &parsed).is_ok());
        assert!(theirs_argon2.verify_password(b"plum orchards", &parsed).is_err());
        // Fed the same salt, both make the same string.
        let mut memory = Memory::default();
        let again = compute(&theirs_argon2, b"plum orchard", salt.as_salt(), &mut memory).expect("hash");
        let reference = theirs_argon2.hash_password(b"plum orchard", &salt).expect("hash");
        assert_eq!(Some(again), reference.hash);
    }

    /// A hashing thread hashes in the memory of its last hash while work keeps
    /// coming, and frees it once none has come for `keep`.
    #[test]
    fn a_hashing_thread_keeps_its_memory_while_busy_and_frees_it_when_idle() {
        let jobs = start_pool(1, Duration::from_millis(200)).expect("pool");
        let argon2 = Argon2::new(
            ALGORITHM,
            VERSION,
            Params::new(8_192, 1, 1, None).expect("params"),
        );
        let run = |job: Job| {
            jobs.send(job).expect("send");
        };
        // Each job reports where its memory was before and after it ran.
        let (report, reports) = mpsc::channel::<(usize, usize)>();
        for _ in 0..3 {
            let (argon2, report) = (argon2.clone(), report.clone());
            run(Box::new(move |memory| {
                let before = memory.0.as_ptr() as usize;
                hash_with(&argon2, b"quince", memory).expect("hash");
                let _ = report.send((before, memory.0.as_ptr() as usize));
            }));
        }
        let firsts: Vec<_> = (0..3).map(|_| reports.recv().expect("report")).collect();
        assert_eq!(
            firsts[1].0, firsts[0].1,
            "the second hash used the first one's memory"
        );
        assert_eq!(firsts[2].0, firsts[1].1, "and the third the second's");
        assert_eq!(firsts[2].1, firsts[0].1);

        std::thread::sleep(Duration::from_millis(600));
        let (len, lens) = mpsc::channel();
        run(Box::new(move |memory| {
            let _ = len.send(memory.0.capacity());
        }));
        assert_eq!(lens.recv().expect("report"), 0, "freed after a quiet spell");
    }
}
